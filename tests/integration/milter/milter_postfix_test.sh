#!/usr/bin/env bash
# mailkms-milter in a real, private Postfix on loopback, with the real
# mailkms-keystored behind it: outbound mail signed and encrypted per
# policy, each on_missing_certificate action with its exact SMTP reply,
# recipients that need different copies, inbound verification into
# Authentication-Results, decryption for local users, certificate
# harvesting, the keystore going away and coming back, and a broken
# policy on reload. What arrives is checked with openssl.
# Usage: milter_postfix_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER PKI_DIR   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../gpgsm.sh
. "$here/../gpgsm.sh"
# shellcheck source=../metrics/metrics.sh
. "$here/../metrics/metrics.sh"
[[ $# == 4 ]] || { echo "usage: milter_postfix_test.sh KEYSTORED MAILKMSCTL MILTER PKI_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")
pki=$(realpath "$4")

work=$(mktemp -d)
chmod 755 "$work"
crl_server=
cleanup() {
  gpgsm_stop
  [ -n "$crl_server" ] && kill "$crl_server" 2> /dev/null
  postfix_stop
  stop_daemons
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# ---- The keystore: a fresh CA, alice and bob of corp.example ---------------
metrics_port=$(free_port)
cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false

[gateway]
policy = "$work/policy.toml"
authserv_id = "mx.corp.example"
enrollment_address = "mailkms-enroll@corp.example"
spool_directory = "$work"
certificate_ttl_seconds = 2
missing_certificate_ttl_seconds = 1
reinject_command = ["$(command -v sendmail)", "-C", "$work/postfix/conf", "-G", "-i"]

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter.pid"
metrics_listen = "127.0.0.1:$metrics_port"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@corp.example bob@corp.example carol@corp.example dave@corp.example ceo@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
"$ctl" trust add "$pki/root.pem" > /dev/null  # an outside CA whose users write to us
# partner.example's own CA, trusted for partner.example alone.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout partner-root.key -out partner-root.pem \
  -subj "/CN=Partner Root" -days 30 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2> /dev/null
"$ctl" trust add partner-root.pem --domains partner.example > /dev/null

cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

# Unauthenticated clients here, and local submission, sign as their
# envelope sender when it is the author; authenticated ones (bob, SMTP
# AUTH) as their login.
[signing]
unauthenticated_networks = ["127.0.0.0/8"]
local_submission = true

# This Postfix expands no recipient to another address: every connection
# may decrypt (milter_forwarding covers the final hop).
[decryption]
at = "anywhere"

[defaults]
sign = "if-possible"
encrypt = "if-possible"
decrypt = true

# A rule on the subject, first: at RCPT TO it may still match these
# recipients, which must not keep their envelope differences from a 452.
[[rule]]
name = "plain-on-request"
direction = "outbound"
to = ["alice@corp.example", "*@nowhere.example"]
subject_tag = "[noencrypt]"
encrypt = "never"
on_missing_certificate = "send-plain"

# Inbound, a header can keep a message encrypted for its recipient.
[[rule]]
name = "keep-encrypted"
direction = "inbound"
header = { name = "X-Keep-Encrypted", contains = "yes" }
decrypt = false

# A tag asks for encryption where nothing else would.
[[rule]]
name = "secure-on-request"
direction = "outbound"
to = "*@secret.example"
subject_tag = "[secure]"
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
name = "must-encrypt-reject"
to = "*@reject.example"
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
name = "must-encrypt-tempfail"
to = "*@tempfail.example"
encrypt = "always"
on_missing_certificate = "tempfail"

[[rule]]
name = "must-encrypt-hold"
to = "*@hold.example"
encrypt = "always"
on_missing_certificate = "quarantine"

[[rule]]
name = "must-encrypt-or-plain"
to = "*@plain.example"
encrypt = "always"
on_missing_certificate = "send-plain"

[[rule]]
name = "must-sign"
to = "*@signed.example"
sign = "always"
encrypt = "never"
POLICY

# ---- The milter and Postfix --------------------------------------------------
start_milter || { echo "FAIL - the milter does not start"; cat milter.log; exit 1; }
export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock
non_smtpd_milters = unix:$work/milter.sock
milter_default_action = tempfail
milter_protocol = 6"
# bob submits with SMTP AUTH (Cyrus SASL, PLAIN), as a mail client would.
head -c 18 /dev/urandom | base64 > bob.sasl
chmod 600 bob.sasl
export POSTFIX_SASL_USERS="bob@corp.example $(cat bob.sasl)"
postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; exit 1; }

# send FROM TO… < message: one SMTP transaction; swaks's transcript in send.out
send() {
  local from=$1
  shift
  local to
  to=$(IFS=,; echo "$*")
  swaks --server "127.0.0.1:$POSTFIX_PORT" --from "$from" --to "$to" --data - > send.out 2>&1
}
# send_settled FROM TO… < message: as send, but again (5 times at most, a
# second apart) while smtpd processes from before a Postfix reload still
# answer with the milter they knew, which is gone (451 4.7.1 at MAIL FROM).
send_settled() {
  local message
  message=$(cat)
  for _ in 1 2 3 4 5; do
    printf '%s' "$message" | send "$@"
    grep -q '<-  250 2.0.0 Ok: queued' send.out && return 0
    sleep 1
  done
}
# arrived NAME: moves the oldest message at the sink to NAME
arrived() {
  postfix_wait_for 1 || return 1
  mv "$(sink_files | sort | head -n 1)" "$1"
}
# arrived_split NAME [OTHER]: bob's and the other recipient's copies of one
# message, to NAME-bob.eml and NAME-OTHER.eml (OTHER: y unless given)
arrived_split() {
  postfix_wait_for 2 || return 1
  local f
  for f in $(sink_files); do
    if grep -q '^X-Rcpt-Args: <bob@corp.example>' "$f"; then mv "$f" "$1-bob.eml"; else mv "$f" "$1-${2:-y}.eml"; fi
  done
}
message() {  # message FROM TO SUBJECT BODY   (swaks ends the last line)
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Thu, 26 Nov 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4"
}

# bob's and alice's keys, as their owners get them: a PKCS#12 each.
for user in alice bob dave; do
  "$ctl" recover "$user@corp.example" --out "$user.p12" --password-file p12.pw > /dev/null
  openssl pkcs12 -in "$user.p12" -passin file:p12.pw -nodes -nocerts -out "$user.key" 2> /dev/null
  openssl pkcs12 -in "$user.p12" -passin file:p12.pw -nokeys -clcerts -out "$user.pem" 2> /dev/null
  openssl pkcs12 -in "$user.p12" -passin file:p12.pw -nokeys -cacerts -out corp-chain.pem 2> /dev/null
done

# ---- Outbound ------------------------------------------------------------------
body="Bob, the figures: revenue up 4 %, costs down 2 %."
message "Alice <alice@corp.example>" "bob@corp.example" "Figures" "$body" > figures.eml
metrics_scrape "$metrics_port" m0
send alice@corp.example bob@corp.example < figures.eml
check "alice to bob is accepted" grep -q "250 2.0.0 Ok: queued" send.out
# Counted before the milter answered: no wait for the scrape.
check "metrics: served on metrics_listen, read by prometheus_client" metrics_scrape "$metrics_port" m1
check "metrics: one outbound message, signed and encrypted" \
  metric_moved m0 m1 'mailkms_messages_total{action="signed_encrypted",direction="outbound"}' 1
check "metrics: one signature and one encryption, both ok" \
  bash -c "metric_moved m0 m1 'mailkms_smime_operations_total{operation=\"sign\",result=\"ok\"}' 1 &&
           metric_moved m0 m1 'mailkms_smime_operations_total{operation=\"encrypt\",result=\"ok\"}' 1"
check "metrics: the keystore signed for it once, and the request was timed" \
  bash -c "metric_moved m0 m1 'mailkms_gateway_keystore_requests_total{operation=\"sign\",result=\"ok\"}' 1 &&
           metric_moved m0 m1 'mailkms_gateway_keystore_request_duration_seconds_count{operation=\"sign\"}' 1"
check "metrics: bob's certificate was looked up (a cache miss)" \
  bash -c "[ \$(metric_value m1 'mailkms_cache_lookups_total{cache=\"certificate\",result=\"miss\"}') -ge 1 ]"
check "metrics: what the spools hold is a gauge" grep -q '^mailkms_spool_memory_bytes{} ' m1.samples
check "metrics: no failure counted" bash -c "! grep -q '^mailkms_failures_total' m1.samples"
arrived out-1.eml
check "it arrives encrypted" grep -qi "^Content-Type: application/pkcs7-mime; .*smime-type=enveloped-data" out-1.eml
check "bob's key decrypts it (openssl cms)" openssl cms -decrypt -in out-1.eml -recip bob.pem -inkey bob.key -out out-1.signed
check "alice's signature verifies against our root (openssl cms)" \
  openssl cms -verify -in out-1.signed -CAfile corp-chain.pem -purpose smimesign -out out-1.txt
check "the body is the original, byte for byte" bash -c "printf '%s\r\n' '$body' | cmp - <(sed '1,/^\r\?$/d' out-1.txt)"
check "alice can read her own sent copy" openssl cms -decrypt -in out-1.eml -recip alice.pem -inkey alice.key -out /dev/null
check "the signer is alice" bash -c "openssl cms -verify -in out-1.signed -CAfile corp-chain.pem -purpose smimesign -signer signer.pem -out /dev/null 2>/dev/null && openssl x509 -in signer.pem -noout -ext subjectAltName | grep -q alice@corp.example"
# The same message in GnuPG's gpgsm, as bob's mail program: our root
# trusted, his keys from the legacy PKCS#12 that GnuPG 2.2 reads.
"$ctl" ca export root --out corp-root.pem > /dev/null
head -c 18 /dev/urandom | base64 > gpgsm.pw
"$ctl" recover bob@corp.example --legacy --out bob-legacy.p12 --password-file gpgsm.pw > /dev/null
check "gpgsm takes our root" gpgsm_home "$work/gnupg" corp-root.pem
check "gpgsm imports bob's legacy PKCS#12" gpgsm_import_p12 bob-legacy.p12 gpgsm.pw
check "gpgsm decrypts alice's message to bob" gpgsm_decrypt out-1.eml gpgsm.pw out-1.gpgsm-inner
check "and finds alice's signature inside good, from our CA" gpgsm_verify out-1.gpgsm-inner alice@corp.example
check "the body gpgsm read is the original" bash -c "grep -qF '$body' out-1.gpgsm-inner.content"

# ---- Who may sign as whom ----------------------------------------------------
# send_as_bob FROM TO < message: MAIL FROM FROM, authenticated as bob@corp.example
send_as_bob() {
  swaks --server "127.0.0.1:$POSTFIX_PORT" --auth PLAIN --auth-user bob@corp.example --auth-password "$(cat bob.sasl)" \
    --from "$1" --to "$2" --data - > send.out 2>&1
}
# signer_of FILE: the address in the certificate that signed FILE's inner message
signer_of() {
  openssl cms -verify -in "$1" -CAfile corp-chain.pem -purpose smimesign -signer "$1.signer" -out /dev/null 2> /dev/null &&
    openssl x509 -in "$1.signer" -noout -ext subjectAltName | grep -o 'email:[^, ]*'
}
export -f signer_of
message "Bob <bob@corp.example>" "alice@corp.example" "From bob" "$body" | send_as_bob bob@corp.example alice@corp.example
check "SMTP AUTH: bob authenticates and is accepted" \
  bash -c "grep -q '<-  235 2.7.0 Authentication successful' send.out && grep -q '250 2.0.0 Ok: queued' send.out"
arrived out-bob.eml
openssl cms -decrypt -in out-bob.eml -recip alice.pem -inkey alice.key -out out-bob.signed 2> /dev/null
check "authenticated bob, From: bob: signed by bob (openssl cms)" bash -c "[ \"\$(signer_of out-bob.signed)\" = email:bob@corp.example ]"
message "The CEO <ceo@corp.example>" "alice@corp.example" "Wire the money" "$body" | send_as_bob bob@corp.example alice@corp.example
arrived out-bob-as-ceo.eml
openssl cms -decrypt -in out-bob-as-ceo.eml -recip alice.pem -inkey alice.key -out out-bob-as-ceo.inner 2> /dev/null
check "authenticated bob, From: ceo@: delivered, but not signed as the CEO (not signed at all)" \
  bash -c "grep -q 'revenue up 4' out-bob-as-ceo.inner && ! grep -qi 'multipart/signed\|pkcs7-signature\|signed-data' out-bob-as-ceo.inner"
check "the milter's log line says why" \
  grep -qF "[not signed as ceo@corp.example: login bob@corp.example does not own it]" milter.log
message "The CEO <ceo@corp.example>" "x@signed.example" "Wire the money" "$body" | send_as_bob bob@corp.example x@signed.example
check "authenticated bob, From: ceo@, a rule says sign always: refused 550 5.7.1 naming the reason" \
  grep -q "<\*\*  *550 5.7.1 Policy requires signing, and this submission may not sign as ceo@corp.example: login bob@corp.example does not own it" send.out
message "Alice <alice@corp.example>" "bob@corp.example" "Not from alice" "$body" | send bob@corp.example bob@corp.example
arrived out-bob-as-alice.eml
openssl cms -decrypt -in out-bob-as-alice.eml -recip bob.pem -inkey bob.key -out out-bob-as-alice.inner 2> /dev/null
check "an internal client, MAIL FROM bob, From: alice: not signed as alice" \
  bash -c "grep -q 'revenue up 4' out-bob-as-alice.inner && ! grep -qi 'multipart/signed\|pkcs7-signature\|signed-data' out-bob-as-alice.inner"
check "the log line says From is not the envelope sender" \
  grep -qF "[not signed as alice@corp.example: From alice@corp.example is not the envelope sender bob@corp.example]" milter.log


# ---- on_missing_certificate --------------------------------------------------
message "alice@corp.example" "x@reject.example" "No certificate" "text" | send alice@corp.example x@reject.example
check "reject: 550 5.7.1 at RCPT, naming the recipient" grep -q "<\*\* 550 5.7.1 .*x@reject.example" send.out
message "alice@corp.example" "x@tempfail.example" "No certificate" "text" | send alice@corp.example x@tempfail.example
check "tempfail: 450 4.7.1 at RCPT" grep -q "<\*\* 450 4.7.1 " send.out
mark=$(log_mark)
metrics_scrape "$metrics_port" q0
message "alice@corp.example" "x@hold.example" "No certificate" "held text" | send alice@corp.example x@hold.example
check "quarantine: accepted" grep -q "250 2.0.0 Ok: queued" send.out
metrics_scrape "$metrics_port" q1
check "metrics: the message is counted as quarantined" \
  metric_moved q0 q1 'mailkms_messages_total{action="quarantined",direction="outbound"}' 1
check "quarantine: Postfix logs the milter's HOLD" logged_since "$mark" "milter-hold: END-OF-MESSAGE .*to=<x@hold.example>"
check "quarantine: in Postfix's hold queue, not delivered" \
  bash -c "[ \$(find '$work/postfix/queue/hold' -type f | wc -l) = 1 ] && [ \$(find '$SINK_DIR' -type f | wc -l) = 0 ]"
message "alice@corp.example" "x@plain.example" "No certificate" "plain text" | send alice@corp.example x@plain.example
arrived out-plain.eml
check "send-plain: delivered signed, not encrypted" \
  bash -c "grep -qi '^Content-Type: multipart/signed' out-plain.eml && openssl cms -verify -in out-plain.eml -CAfile corp-chain.pem -purpose smimesign -out /dev/null"

# ---- What the sender's own client already did is respected ----------------------------
message "alice@corp.example" "bob@corp.example" "Signed by her client" "$body" > own.eml
"$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" --in own.eml --out own-signed.eml
send alice@corp.example bob@corp.example < own-signed.eml
arrived out-own-signed.eml
openssl cms -decrypt -in out-own-signed.eml -recip bob.pem -inkey bob.key -out own-inner.eml 2> /dev/null
check "a message signed in the sender's client is encrypted but not signed again" \
  bash -c "[ \$(grep -ci '^Content-Type: multipart/signed' own-inner.eml) = 1 ] && openssl cms -verify -in own-inner.eml -CAfile '$pki/root.pem' -purpose smimesign -out /dev/null"
openssl cms -encrypt -aes256 -in own.eml -recip bob.pem -out own-encrypted.body 2> /dev/null
{ tr -d '\r' < own.eml | sed -n '1,/^$/p' | grep -v -i '^\(MIME-Version\|Content-\)' | grep -v '^$'
  tr -d '\r' < own-encrypted.body; } | sed 's/$/\r/' > own-encrypted.eml
send alice@corp.example bob@corp.example < own-encrypted.eml
arrived out-own-encrypted.eml
check "a message encrypted in the sender's client is never encrypted twice" \
  bash -c "openssl cms -decrypt -in out-own-encrypted.eml -recip bob.pem -inkey bob.key -out own-decrypted.eml && grep -q 'revenue up 4' own-decrypted.eml"
# Labelled as encrypted, but only base64 text: the label does not decide.
{ printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: Labelled" "MIME-Version: 1.0" \
    "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m" \
    "Content-Transfer-Encoding: base64" ""
  printf '%s' "$body" | base64; } | sed 's/$/\r/;s/\r\r$/\r/' > labelled.eml
send alice@corp.example bob@corp.example < labelled.eml
arrived out-labelled.eml
check "a message only labelled encrypted is encrypted all the same" \
  bash -c "openssl cms -decrypt -in out-labelled.eml -recip bob.pem -inkey bob.key -out labelled-inner.eml &&
    openssl cms -verify -in labelled-inner.eml -CAfile corp-chain.pem -purpose smimesign -out labelled.txt 2> /dev/null &&
    sed '1,/^\r\?$/d' labelled.txt | base64 -d | grep -q 'revenue up 4'"
# An enveloped-data beginning with the plain text behind it: only the
# whole CMS decides.
openssl cms -encrypt -in figures.eml -outform DER -out real.der bob.pem
{ printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: Prefixed" "MIME-Version: 1.0" \
    "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m" \
    "Content-Transfer-Encoding: base64" ""
  { head -c 64 real.der; printf '%s' "$body"; } | base64; } | sed 's/$/\r/;s/\r\r$/\r/' > prefixed.eml
send alice@corp.example bob@corp.example < prefixed.eml
arrived out-prefixed.eml
check "an enveloped-data prefix before plain text is encrypted all the same" \
  bash -c "openssl cms -decrypt -in out-prefixed.eml -recip bob.pem -inkey bob.key -out prefixed-inner.eml &&
    openssl cms -verify -in prefixed-inner.eml -CAfile corp-chain.pem -purpose smimesign -out /dev/null 2> /dev/null"

# Results in our name are ours to write, on the way out too.
{ printf 'Authentication-Results: mx.corp.example; smime=pass body.smime-identifier=ceo@corp.example\r\n'
  message "alice@corp.example" "bob@corp.example" "Internal" "$body"; } | send alice@corp.example bob@corp.example
arrived out-forged-results.eml
check "outbound, a forged Authentication-Results in our name is removed" \
  bash -c "openssl cms -decrypt -in out-forged-results.eml -recip bob.pem -inkey bob.key -out /dev/null &&
    ! grep -q 'ceo@corp.example' out-forged-results.eml"

# ---- Calendar invitations are signed, not encrypted (Outlook cannot read them) -------
printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: Meeting" "MIME-Version: 1.0" \
  "Content-Type: text/calendar; method=REQUEST; charset=utf-8" "" "BEGIN:VCALENDAR" "METHOD:REQUEST" \
  "BEGIN:VEVENT" "SUMMARY:Figures" "END:VEVENT" > invite.eml
printf 'END:VCALENDAR' >> invite.eml
send alice@corp.example bob@corp.example < invite.eml
arrived out-invite.eml
check "a calendar invitation goes out signed and readable" \
  bash -c "grep -qi '^Content-Type: multipart/signed' out-invite.eml && openssl cms -verify -in out-invite.eml -CAfile corp-chain.pem -purpose smimesign -out invite.txt && grep -q 'METHOD:REQUEST' invite.txt"

# ---- Mixed recipients: one copy per treatment -------------------------------------
message "alice@corp.example" "bob@corp.example, y@plain.example" "Two kinds" "mixed" |
  send alice@corp.example bob@corp.example y@nowhere.example
check "the first recipient is accepted" grep -q "250 2.1.5 Ok" send.out
check "the one needing a different copy gets 452 4.5.3" grep -q "<\*\* 452 4.5.3 " send.out
arrived out-mixed.eml
check "bob's copy is encrypted to bob" openssl cms -decrypt -in out-mixed.eml -recip bob.pem -inkey bob.key -out /dev/null
check "and went to bob alone" bash -c "grep -c '^X-Rcpt-Args:' out-mixed.eml | grep -qx 1"
# Known only from the subject, too late for a 452: send-plain lets each
# recipient have their own copy, alice's re-injected signed and readable.
message "alice@corp.example" "bob@corp.example, alice@corp.example" "[noencrypt] Minutes" "$body" |
  send alice@corp.example bob@corp.example alice@corp.example
check "a difference the subject makes: both accepted at RCPT" bash -c "[ \$(grep -c '<-  250 2.1.5 Ok' send.out) = 2 ]"
arrived_split tagged
check "bob's copy is still encrypted to him" \
  openssl cms -decrypt -in tagged-bob.eml -recip bob.pem -inkey bob.key -out /dev/null
check "alice's copy is re-injected to her alone, signed, not encrypted, the tag removed" \
  bash -c "[ \$(grep -c '^X-Rcpt-Args:' tagged-y.eml) = 1 ] && grep -q '^X-Rcpt-Args: <alice@corp.example>' tagged-y.eml &&
    grep -q '^Subject: Minutes' tagged-y.eml && openssl cms -verify -in tagged-y.eml -CAfile corp-chain.pem -purpose smimesign -out tagged.txt 2> /dev/null &&
    grep -q 'revenue up 4' tagged.txt"

# The tag as a reader sees it: in a Subject of RFC 2047 encoded-words,
# "[secure]" still asks for encryption, which x@secret.example cannot have.
message "alice@corp.example" "x@secret.example" "=?UTF-8?B?$(printf '[secure] Gehälter' | base64)?=" "salaries" |
  send alice@corp.example x@secret.example
check "an encoded [secure] tag is honoured: 550 5.7.1 at end of data, nothing queued" \
  bash -c "grep -q '<\*\* 550 5.7.1 Policy requires encryption; no usable certificate for x@secret.example' send.out &&
    ! grep -q 'Ok: queued' send.out"

# Addresses the MTA may route past the domain rules: the percent hack, a
# bang path, a trailing dot. Each is refused at RCPT.
message "alice@corp.example" "x@reject.example" "Routed" "text" |
  send alice@corp.example 'x%reject.example@corp.example' 'reject.example!x@corp.example' 'x@reject.example.'
check "routing syntax in a recipient gets 553 5.1.3 at RCPT, each time" \
  bash -c "[ \$(grep -c '<\*\* 553 5.1.3 .* not accepted here' send.out) = 3 ] && ! grep -q 'Ok: queued' send.out"

# A blind copy: bob's copy must not name dave's certificate, so dave gets
# one of his own (each readable by the sender too).
message "alice@corp.example" "bob@corp.example" "Board minutes" "$body" |
  send alice@corp.example bob@corp.example dave@corp.example
arrived_split bcc
check "To bob, Bcc dave: bob's copy opens for bob and alice, not for dave" \
  bash -c "openssl cms -decrypt -in bcc-bob.eml -recip bob.pem -inkey bob.key -out /dev/null &&
    openssl cms -decrypt -in bcc-bob.eml -recip alice.pem -inkey alice.key -out /dev/null &&
    ! openssl cms -decrypt -in bcc-bob.eml -recip dave.pem -inkey dave.key -out /dev/null 2> /dev/null"
check "dave's copy is his alone (and alice's), signed by alice" \
  bash -c "grep -q '^X-Rcpt-Args: <dave@corp.example>' bcc-y.eml && [ \$(grep -c '^X-Rcpt-Args:' bcc-y.eml) = 1 ] &&
    openssl cms -decrypt -in bcc-y.eml -recip dave.pem -inkey dave.key -out bcc-dave.signed &&
    ! openssl cms -decrypt -in bcc-y.eml -recip bob.pem -inkey bob.key -out /dev/null 2> /dev/null &&
    openssl cms -verify -in bcc-dave.signed -CAfile corp-chain.pem -purpose smimesign -out /dev/null 2> /dev/null"

# ---- Inbound -----------------------------------------------------------------------
# An outside party (alice@example.org, under a CA our trust list holds) writes to bob.
message "Alice Outside <alice@example.org>" "bob@corp.example" "Signed from outside" "Hello from outside." > outside.eml
"$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" --in outside.eml --out outside-signed.eml
metrics_scrape "$metrics_port" i0
send alice@example.org bob@corp.example < outside-signed.eml
metrics_scrape "$metrics_port" i1
arrived in-pass.eml
check "metrics: one inbound message verified, its signature passing" \
  bash -c "metric_moved i0 i1 'mailkms_messages_total{action=\"verified\",direction=\"inbound\"}' 1 &&
           metric_moved i0 i1 'mailkms_smime_operations_total{operation=\"verify\",result=\"pass\"}' 1"
check "inbound signed mail arrives with smime=pass and the signer" \
  bash -c "tr -d '\r' < in-pass.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' | grep -q 'smime=pass.*body.smime-identifier=alice@example.org'"
check "the signed message itself is untouched and still verifies (openssl)" \
  openssl cms -verify -in in-pass.eml -CAfile "$pki/root.pem" -purpose smimesign -out /dev/null

# The same message altered on the way, with a forged result in our name.
{ printf 'Authentication-Results: mx.corp.example; smime=pass body.smime-identifier=alice@example.org\r\n'
  sed 's/Hello from outside\./Hello from Mallory./' outside-signed.eml; } > altered.eml
send alice@example.org bob@corp.example < altered.eml
arrived in-fail.eml
check "altered mail arrives with smime=fail" bash -c "grep -A1 '^Authentication-Results: mx.corp.example;' in-fail.eml | grep -q 'smime=fail'"
check "the forged Authentication-Results is gone" \
  bash -c "[ \$(grep -c '^Authentication-Results: mx.corp.example;' in-fail.eml) = 1 ] && ! grep -q 'smime=pass' in-fail.eml"

# alice@example.org's certificate was harvested from her signature: our
# next message to her is encrypted to it.
message "alice@corp.example" "alice@example.org" "Reply" "Thanks, noted." | send alice@corp.example alice@example.org
arrived out-harvested.eml
check "mail to a harvested correspondent is encrypted to her certificate" \
  openssl cms -decrypt -in out-harvested.eml -recip "$pki/alice.pem" -inkey "$pki/alice.key" -out /dev/null

check "policy explain shows the cipher chosen from her harvested capabilities" \
  bash -c "'$ctl' policy explain --policy policy.toml --from alice@corp.example --to alice@example.org --client 127.0.0.1 |
           grep -q 'cipher used: *aes-256-cbc — the first allowed one they can read (from their signed mail)'"
"$ctl" policy explain --json --policy policy.toml --from alice@corp.example --to alice@example.org --client 127.0.0.1 \
  > explain.json
check "policy explain --json names her certificate and the cipher" python3 -c 'import json, sys
r = json.load(open("explain.json"))["recipients"][0]
sys.exit(0 if r["certificate"]["status"] == "found" and r["certificate"]["subject"] == "O=mailkms tests,CN=alice" and r["cipher_used"] == {"name": "aes-256-cbc", "capabilities_known": True} else 1)'

# Encrypted to bob from outside (AES-GCM, which authenticates it): policy
# says decrypt for local users.
message "carol@example.org" "bob@corp.example" "For your eyes" "The secret is 42." > secret.eml
# Inside, a forged result of our own; outside, a forged claim of decryption.
{ printf 'Authentication-Results: mx.corp.example; smime=pass body.smime-identifier=ceo@corp.example\r\n'
  cat secret.eml; } > secret-inner.eml
openssl cms -encrypt -aes-256-gcm -in secret-inner.eml -recip bob.pem -out secret-encrypted.eml 2> /dev/null
{ echo "X-Mailkms-Decrypted: mx.corp.example; cipher=forged"
  tr -d '\r' < secret.eml | sed -n '1,/^$/p' | grep -v -i '^\(MIME-Version\|Content-\)' | grep -v '^$'
  tr -d '\r' < secret-encrypted.eml; } | sed 's/$/\r/' > secret-mail.eml
metrics_scrape "$metrics_port" d0
send carol@example.org bob@corp.example < secret-mail.eml
metrics_scrape "$metrics_port" d1
arrived in-decrypted.eml
check "metrics: one inbound message decrypted, with the keystore's unwrap" \
  bash -c "metric_moved d0 d1 'mailkms_messages_total{action=\"decrypted\",direction=\"inbound\"}' 1 &&
           metric_moved d0 d1 'mailkms_smime_operations_total{operation=\"decrypt\",result=\"ok\"}' 1 &&
           metric_moved d0 d1 'mailkms_gateway_keystore_requests_total{operation=\"unwrap\",result=\"ok\"}' 1"
check "inbound mail encrypted to bob arrives decrypted" grep -q "^The secret is 42" in-decrypted.eml
check "a header records that the gateway decrypted it" grep -q "^X-Mailkms-Decrypted: mx.corp.example; cipher=aes-256-gcm" in-decrypted.eml
check "the original subject and sender are kept" bash -c "grep -q '^Subject: For your eyes' in-decrypted.eml && grep -q '^From: carol@example.org' in-decrypted.eml"
{ echo "X-Keep-Encrypted: yes"; cat secret-mail.eml; } | sed 's/^X-Keep-Encrypted: yes$/&\r/' |
  send carol@example.org bob@corp.example
arrived in-kept.eml
check "inbound, a rule on a header applies: the message stays encrypted" \
  bash -c "grep -qi '^Content-Type: application/pkcs7-mime' in-kept.eml && ! grep -q '^X-Mailkms-Decrypted' in-kept.eml &&
    grep -q 'keep-encrypted' milter.log"
check "of the encrypted part's fields only its Content-* come out; forged claims are gone" \
  bash -c "[ \$(grep -c '^From:' in-decrypted.eml) = 1 ] && [ \$(grep -c '^Subject:' in-decrypted.eml) = 1 ] &&
    [ \$(grep -c '^X-Mailkms-Decrypted:' in-decrypted.eml) = 1 ] && ! grep -q 'ceo@corp.example\|cipher=forged' in-decrypted.eml"

# encrypted_mail MESSAGE CIPHER: MESSAGE with its content encrypted to bob by
# openssl with CIPHER (an openssl cms option), its other header fields kept.
encrypted_mail() {
  openssl cms -encrypt "-$2" -in "$1" -recip bob.pem -out "$1.p7m" 2> /dev/null
  with_encrypted_content "$1" "$1.p7m"
}
# with_encrypted_content MESSAGE P7M: MESSAGE's header fields but its
# Content-*, then the S/MIME entity P7M
with_encrypted_content() {
  { tr -d '\r' < "$1" | sed -n '1,/^$/p' | awk '/^[^ \t]/ { drop = tolower($0) ~ /^(mime-version|content-)/ } !drop && !/^$/'
    tr -d '\r' < "$2"; } | sed 's/$/\r/'
}

# body_lines MESSAGE: the non-empty lines of its body, without CRs (the
# transport may add empty lines at the end)
body_lines() {
  tr -d '\r' < "$1" | sed '1,/^$/d' | grep -v '^$'
}
export -f body_lines

# ---- Who may read what -----------------------------------------------------------------
# Encrypted to bob alone, sent to bob and carol, who both have keys here:
# bob's key must not open it for carol. bob's copy is decrypted, carol's is
# re-injected as it came.
message "carol@example.org" "bob@corp.example, carol@corp.example" "For bob only" "Only bob may read this." > bob-only.eml
encrypted_mail bob-only.eml aes-256-gcm > bob-only-mail.eml
send carol@example.org bob@corp.example carol@corp.example < bob-only-mail.eml
arrived_split only carol
check "encrypted to bob alone, sent to bob and carol: bob's copy arrives decrypted, for him alone" \
  bash -c "grep -q '^Only bob may read this' only-bob.eml && [ \$(grep -c '^X-Rcpt-Args:' only-bob.eml) = 1 ]"
check "carol's copy is the ciphertext as it came, line for line, for her alone" \
  bash -c "grep -q '^X-Rcpt-Args: <carol@corp.example>' only-carol.eml && [ \$(grep -c '^X-Rcpt-Args:' only-carol.eml) = 1 ] &&
    grep -qi '^Content-Type: application/pkcs7-mime' only-carol.eml && ! grep -q '^X-Mailkms-Decrypted' only-carol.eml &&
    cmp <(body_lines bob-only-mail.eml) <(body_lines only-carol.eml)"

# EFAIL: content encrypted without integrity protection (CBC in
# EnvelopedData) is decrypted only where a signature that passes vouches for
# it; by default the rest is delivered still encrypted, saying why.
message "carol@example.org" "bob@corp.example" "Unsigned CBC" "Unsigned and unauthenticated." > cbc-unsigned.eml
encrypted_mail cbc-unsigned.eml aes256 > cbc-unsigned-mail.eml
send carol@example.org bob@corp.example < cbc-unsigned-mail.eml
arrived in-cbc-unsigned.eml
check "unsigned CBC-encrypted mail stays encrypted, the reason in Authentication-Results" \
  bash -c "grep -qi '^Content-Type: application/pkcs7-mime' in-cbc-unsigned.eml && ! grep -q '^X-Mailkms-Decrypted' in-cbc-unsigned.eml &&
    tr -d '\r' < in-cbc-unsigned.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=none reason=\"[^\"]*left encrypted[^\"]*decrypt_unauthenticated'"
# The IV changed on the way so that the first block decrypts to what an
# attacker chose, as EFAIL's CBC gadgets do.
openssl cms -encrypt -aes256 -in cbc-unsigned.eml -recip bob.pem -outform DER -out cbc.der 2> /dev/null
perl -e '
  my ($der, $known) = map { open my $f, "<:raw", $_ or die; local $/; scalar <$f> } @ARGV;
  my $xor = substr($known, 0, 16) ^ "X-Efail-Attack: ";
  $der =~ s/(\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2a\x04\x10)(.{16})/$1 . ($2 ^ $xor)/se or die "no IV\n";
  binmode STDOUT; print $der' cbc.der cbc-unsigned.eml > cbc-flipped.der
openssl cms -cmsout -inform DER -in cbc-flipped.der -outform SMIME -out cbc-flipped.p7m
with_encrypted_content cbc-unsigned.eml cbc-flipped.p7m > cbc-flipped-mail.eml
check "flipped IV bytes make the first block what the attacker chose (openssl)" \
  bash -c "openssl cms -decrypt -in cbc-flipped-mail.eml -recip bob.pem -inkey bob.key | head -n 1 | grep -q '^X-Efail-Attack: '"
send carol@example.org bob@corp.example < cbc-flipped-mail.eml
arrived in-cbc-flipped.eml
check "CBC mail with its IV changed is not delivered decrypted" \
  bash -c "grep -qi '^Content-Type: application/pkcs7-mime' in-cbc-flipped.eml && ! grep -q '^X-Mailkms-Decrypted' in-cbc-flipped.eml &&
    cmp <(body_lines cbc-flipped-mail.eml) <(body_lines in-cbc-flipped.eml)"
# Signed by its author, under an anchor we trust: decrypted as before.
encrypted_mail outside-signed.eml aes256 > cbc-signed-mail.eml
send alice@example.org bob@corp.example < cbc-signed-mail.eml
arrived in-cbc-signed.eml
check "CBC-encrypted mail whose content its author signed (smime=pass) is decrypted" \
  bash -c "grep -q '^Hello from outside' in-cbc-signed.eml && grep -q '^X-Mailkms-Decrypted: mx.corp.example; cipher=aes-256-cbc' in-cbc-signed.eml &&
    tr -d '\r' < in-cbc-signed.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=pass.*body.smime-identifier=alice@example.org'"

# ---- Signers and authors ---------------------------------------------------------------
# Two signers: first a self-signed one for ceo@bank.example, then alice, who
# wrote it. Authentication-Results names alice, whose signature passed.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ceo.key -out ceo.pem -days 30 \
  -subj "/CN=CEO" -addext "subjectAltName=email:ceo@bank.example" -addext "keyUsage=digitalSignature" \
  -addext "extendedKeyUsage=emailProtection" 2> /dev/null
printf '%s\r\n' "Content-Type: text/plain; charset=us-ascii" "" "Wire the money today." > two-signers.txt
openssl cms -sign -in two-signers.txt -binary -signer ceo.pem -inkey ceo.key -signer "$pki/alice.pem" -inkey "$pki/alice.key" \
  -certfile "$pki/chain.pem" -out two-signers.p7s 2> /dev/null
{ printf '%s\r\n' "From: alice@example.org" "To: bob@corp.example" "Subject: Two signers" "Date: Thu, 26 Nov 2026 10:00:00 +0000"
  tr -d '\r' < two-signers.p7s | sed 's/$/\r/'; } > two-signers.eml
check "the self-signed signer comes first in the signature" \
  bash -c "openssl cms -cmsout -print -in two-signers.eml | sed -n '/signerInfos:/,\$p' | grep -m1 'issuer:' | grep -q 'CN=CEO'"
send alice@example.org bob@corp.example < two-signers.eml
arrived in-two-signers.eml
check "two signers: Authentication-Results names the one that passed and wrote it, not the first" \
  bash -c "tr -d '\r' < in-two-signers.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=pass.*body.smime-identifier=alice@example.org' && ! grep -q 'smime-identifier=ceo@bank.example' in-two-signers.eml"

# An address is compared without regard to case (docs/ARCHITECTURE.md): a
# From in capitals signed by bob@example.org passes, and his certificate is
# harvested.
message "Bob Outside <Bob@Example.ORG>" "bob@corp.example" "Capitals" "Hello in capitals." > capitals.eml
"$ctl" message sign --cert "$pki/bob.pem" --key "$pki/bob.key" --chain "$pki/chain.pem" --in capitals.eml --out capitals-signed.eml
send bob@example.org bob@corp.example < capitals-signed.eml
arrived in-capitals.eml
check "From: Bob@Example.ORG signed by bob@example.org: smime=pass" \
  bash -c "tr -d '\r' < in-capitals.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' | grep -q 'smime=pass'"
check "and bob@example.org's certificate is harvested from it" bash -c "'$ctl' harvested list | grep -q '^bob@example.org '"

# A certificate an outside CA issued for an address in one of our own
# domains passes, but is never harvested: our users' certificates come from
# our CA, and a harvested one would be encrypted to.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dana.key 2> /dev/null
openssl req -new -key dana.key -subj "/CN=Dana" -out dana.csr
printf '%s\n' "subjectAltName=email:dana@corp.example" "keyUsage=digitalSignature,keyEncipherment" \
  "extendedKeyUsage=emailProtection" "basicConstraints=CA:FALSE" > dana.ext
openssl x509 -req -in dana.csr -CA "$pki/issuing.pem" -CAkey "$pki/issuing.key" -set_serial 4242 -days 30 \
  -extfile dana.ext -out dana.pem 2> /dev/null
message "Dana <dana@corp.example>" "bob@corp.example" "From inside?" "Trust me." > dana.eml
"$ctl" message sign --cert dana.pem --key dana.key --chain "$pki/chain.pem" --in dana.eml --out dana-signed.eml
send dana@example.org bob@corp.example < dana-signed.eml
arrived in-dana.eml
check "a signature under an outside CA for an address in a local domain passes, but is not harvested" \
  bash -c "tr -d '\r' < in-dana.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=pass.*body.smime-identifier=dana@corp.example' && ! '$ctl' harvested list | grep -q '^dana@corp.example ' &&
    grep -q 'not harvested: dana@corp.example is in a local domain' milter.log"

# ---- Trust anchors scoped to domains ------------------------------------------------
# partner_signed ADDRESS OUT.eml: a message from ADDRESS to bob, signed
# with a certificate partner.example's CA issued for ADDRESS.
partner_signed() {
  local name=${1%@*}-${1#*@}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -subj "/CN=$1" -out "$name.csr" 2> /dev/null
  printf '%s\n' "subjectAltName=email:$1" "keyUsage=digitalSignature,keyEncipherment" \
    "extendedKeyUsage=emailProtection" "basicConstraints=CA:FALSE" ${CDP:+"crlDistributionPoints=URI:$CDP"} > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA partner-root.pem -CAkey partner-root.key -CAcreateserial -days 30 \
    -extfile "$name.ext" -out "$name.pem" 2> /dev/null
  message "$1" "bob@corp.example" "From a partner?" "Signed under partner.example's CA." > "$name.eml"
  "$ctl" message sign --cert "$name.pem" --key "$name.key" --chain partner-root.pem --in "$name.eml" --out "$2"
}
partner_signed someone@evil.example evil-signed.eml
send someone@evil.example bob@corp.example < evil-signed.eml
arrived in-evil.eml
check "a CA scoped to partner.example signing for someone@evil.example: not smime=pass, and not harvested" \
  bash -c "tr -d '\r' < in-evil.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' > ar.txt &&
    grep -q 'smime=' ar.txt && ! grep -q 'smime=pass' ar.txt && grep -q 'vouches only for partner.example' ar.txt &&
    ! '$ctl' harvested list | grep -q '^someone@evil.example '"
partner_signed alice@partner.example partner-signed.eml
send alice@partner.example bob@corp.example < partner-signed.eml
arrived in-partner.eml
check "the same CA signing for alice@partner.example: smime=pass, and her certificate is harvested" \
  bash -c "tr -d '\r' < in-partner.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=pass.*body.smime-identifier=alice@partner.example' && '$ctl' harvested list | grep -q '^alice@partner.example '"

# ---- Revocation of harvested certificates --------------------------------------------
# partner.example's CA publishes its CRL at an http URL its certificates
# name, served here on loopback; the CRL revokes carol@partner.example's.
# The gateway fetches it, the keystore checks it: a revoked certificate is
# not harvested, one the CRL does not revoke is, and one whose CRL cannot
# be had is not.
crl_port=$(free_port)
mkdir crl-www partner-ca && : > partner-ca/index.txt && echo 01 > partner-ca/crlnumber
python3 -m http.server "$crl_port" --bind 127.0.0.1 --directory crl-www > http.log 2>&1 &
crl_server=$!
for _ in $(seq 100); do ss -Hltn "sport = :$crl_port" | grep -q . && break; sleep 0.1; done
cat > partner-ca.cnf <<CNF
[ ca ]
default_ca = partner
[ partner ]
database = $work/partner-ca/index.txt
crlnumber = $work/partner-ca/crlnumber
certificate = $work/partner-root.pem
private_key = $work/partner-root.key
default_md = sha256
default_crl_days = 1
CNF
CDP="http://127.0.0.1:$crl_port/partner.crl" partner_signed carol@partner.example carol-signed.eml
CDP="http://127.0.0.1:$crl_port/partner.crl" partner_signed dan@partner.example dan-signed.eml
CDP="http://127.0.0.1:$crl_port/gone.crl" partner_signed erin@partner.example erin-signed.eml
openssl ca -config partner-ca.cnf -batch -revoke carol-partner.example.pem 2> /dev/null
openssl ca -config partner-ca.cnf -batch -gencrl 2> /dev/null | openssl crl -outform DER -out crl-www/partner.crl
send carol@partner.example bob@corp.example < carol-signed.eml
arrived in-carol.eml
check "a certificate its CRL revokes is not harvested, and the log says why" \
  bash -c "! '$ctl' harvested list | grep -q '^carol@partner.example ' &&
    grep -q 'not harvested: .*carol@partner.example fails its revocation check: certificate revoked' milter.log"
check "the keystore's audit log records the refusal" \
  bash -c "'$ctl' audit show --limit 100000 | grep -q 'remember-certificate  carol@partner.example  refused  .*certificate revoked'"
send dan@partner.example bob@corp.example < dan-signed.eml
arrived in-dan.eml
check "one the same CRL does not revoke is harvested" bash -c "'$ctl' harvested list | grep -q '^dan@partner.example '"
check "the CRL was fetched once, then kept until its nextUpdate" bash -c "[ \$(grep -c 'GET /partner.crl' http.log) = 1 ]"
send erin@partner.example bob@corp.example < erin-signed.eml
arrived in-erin.eml
check "one whose CRL cannot be had is not harvested, and the log says why" \
  bash -c "! '$ctl' harvested list | grep -q '^erin@partner.example ' &&
    grep -q 'the CRL at http://127.0.0.1:$crl_port/gone.crl cannot be had: HTTP status 404' milter.log &&
    grep -q 'not harvested: .*erin@partner.example fails its revocation check: unable to get certificate CRL' milter.log"
send erin@partner.example bob@corp.example < erin-signed.eml
arrived in-erin-again.eml
check "a CRL that could not be had is not asked for again at once: a slow server delays one message, not each" \
  bash -c "[ \$(grep -c 'GET /gone.crl' http.log) = 1 ] && [ \$(grep -c 'gone.crl cannot be had: HTTP status 404' milter.log) = 2 ]"

# ---- The enrollment address -----------------------------------------------------------
mark=$(log_mark)
message "alice@corp.example" "mailkms-enroll@corp.example" "Re: your enrollment" "token and password" |
  send alice@corp.example mailkms-enroll@corp.example
check "mail to the enrollment address is accepted" grep -q "250 2.0.0 Ok: queued" send.out
check "and never delivered: Postfix logs the milter's DISCARD" \
  logged_since "$mark" "milter-discard: END-OF-MESSAGE .*to=<mailkms-enroll@corp.example>"
check "and nothing reached the sink" bash -c "[ \$(find '$SINK_DIR' -type f | wc -l) = 0 ]"
# Only the keystore's own local submissions go out as they are: over SMTP,
# the enrollment address as sender is a sender like any other.
message "mailkms-enroll@corp.example" "bob@corp.example" "Not the keystore" "$body" |
  send mailkms-enroll@corp.example bob@corp.example
arrived out-enrollment-sender.eml
check "mail over SMTP from the enrollment address is still encrypted" \
  openssl cms -decrypt -in out-enrollment-sender.eml -recip bob.pem -inkey bob.key -out /dev/null
# Locally too: anyone on the host may give sendmail -f the enrollment
# address, and write a mark; only the keystore's own mark passes.
{ printf 'X-Mailkms-Keystore-Mark: 1.%s.%064d\r\n' "$(date +%s)" 0
  message "mailkms-enroll@corp.example" "bob@corp.example" "Not the keystore either" "$body"; } |
  sendmail -C "$work/postfix/conf" -f mailkms-enroll@corp.example bob@corp.example
arrived out-enrollment-local.eml
check "local mail from the enrollment address with a forged mark is encrypted like any other" \
  openssl cms -decrypt -in out-enrollment-local.eml -recip bob.pem -inkey bob.key -out /dev/null

# ---- A broken policy on reload leaves the running one in force ----------------------
cp policy.toml policy.good
printf '[[rule]]\nto = "*@reject.example"\nencrypt = "alwayz"\n' > policy.toml
reload_milter
check "the broken policy is refused, with file, line and column" grep -q "reload refused.*policy.toml:3:11" milter.log
check "the milter survived the signal" kill -0 "$milter_pid"
message "alice@corp.example" "x@reject.example" "Still refused" "text" | send alice@corp.example x@reject.example
check "the old policy still applies (550 5.7.1)" grep -q "<\*\* 550 5.7.1 " send.out
sed 's/on_missing_certificate = "reject"/on_missing_certificate = "tempfail"/' policy.good > policy.toml
check "a good policy is reloaded" reload_milter
message "alice@corp.example" "x@reject.example" "Now deferred" "text" | send alice@corp.example x@reject.example
check "a good policy takes effect on reload (450 4.7.1)" grep -q "<\*\* 450 4.7.1 " send.out
# A burst of reloads (say, a log rotation and an administrator at once):
# those that come while one is being read must not reach libmilter, which
# takes SIGHUP for "stop".
# Then one more, for a policy with a rule more: once it is read, every
# signal of the burst has been taken by whichever thread it reached.
cp policy.good policy.toml
for _ in $(seq 40); do kill -HUP "$milter_pid"; sleep 0.002; done
rules=$(grep -c '^\[\[rule\]\]' policy.good)
printf '[[rule]]\nname = "after-the-burst"\nto = "*@burst.example"\nencrypt = "never"\n' >> policy.toml
kill -HUP "$milter_pid"
check "after the burst, a last reload is read" \
  bash -c "for _ in \$(seq 600); do grep -q 'policy reloaded from .*: $((rules + 1)) rule(s)' milter.log && exit 0; sleep 0.05; done; exit 1"
message "alice@corp.example" "bob@corp.example" "After the reloads" "$body" | send alice@corp.example bob@corp.example
arrived out-reloads.eml
check "after a burst of 40 reloads the milter still serves: the message arrives encrypted" \
  bash -c "kill -0 $milter_pid && openssl cms -decrypt -in out-reloads.eml -recip bob.pem -inkey bob.key -out /dev/null"

# ---- The keystore goes away, and comes back ---------------------------------------------
stop_keystore
# What the milter kept from the keystore (bob's certificate, alice's
# signer) would serve until its TTL: a reload forgets it.
check "a reload makes the milter forget what it cached" reload_milter
message "alice@corp.example" "bob@corp.example" "While the keystore is down" "$body" > down.eml
send alice@corp.example bob@corp.example < down.eml
check "with the keystore down, mail that may be encrypted gets 451 4.7.1" grep -q "<\*\* 451 4.7.1 " send.out
# Submitted locally instead, it waits in Postfix's queue: the milter defers it.
mark=$(log_mark)
sendmail -C "$work/postfix/conf" -f alice@corp.example bob@corp.example < down.eml
check "submitted locally, Postfix logs the milter's temporary refusal" \
  logged_since "$mark" "milter-reject: END-OF-MESSAGE .*4\.7\.1.*to=<bob@corp.example>"
metrics_scrape "$metrics_port" k1
check "metrics: the deferral is counted, as a keystore failure" \
  bash -c "[ \$(metric_value k1 'mailkms_messages_total{action=\"deferred\",direction=\"outbound\"}') -ge 1 ] &&
           [ \$(metric_value k1 'mailkms_failures_total{class=\"keystore\"}') -ge 1 ]"
check "nothing was delivered meanwhile" bash -c "[ \$(find '$SINK_DIR' -type f | wc -l) = 0 ]"
start_keystore || { echo "FAIL - the keystore does not restart"; exit 1; }
postkick -c "$work/postfix/conf" public pickup W 2> /dev/null
postqueue -c "$work/postfix/conf" -f 2> /dev/null
arrived out-retried.eml
check "once the keystore is back, Postfix's retry delivers it encrypted" \
  openssl cms -decrypt -in out-retried.eml -recip bob.pem -inkey bob.key -out /dev/null

# ---- Mail Postfix takes without SMTP (sendmail) ------------------------------------
# Postfix cannot refuse one recipient of it: the milter decides at the end of
# the message, and splits a mixed one by re-injection even in defer mode.
message "alice@corp.example" "bob@corp.example, y@nowhere.example" "Local split" "$body" |
  sendmail -C "$work/postfix/conf" -f alice@corp.example bob@corp.example y@nowhere.example
arrived_split local
check "sendmail to bob and y: bob's copy is encrypted to him alone" \
  bash -c "openssl cms -decrypt -in local-bob.eml -recip bob.pem -inkey bob.key -out /dev/null && [ \$(grep -c '^X-Rcpt-Args:' local-bob.eml) = 1 ]"
check "and y's copy, re-injected, is signed and readable" \
  bash -c "grep -q '^X-Rcpt-Args: <y@nowhere.example>' local-y.eml && openssl cms -verify -in local-y.eml -CAfile corp-chain.pem -purpose smimesign -out /dev/null 2> /dev/null"
message "alice@corp.example" "x@reject.example" "Local refused" "text" |
  sendmail -C "$work/postfix/conf" -f alice@corp.example x@reject.example
arrived local-bounce.eml
check "sendmail to a recipient policy refuses: alice gets a bounce naming him, 5.7.1" \
  bash -c "grep -q '^To: alice@corp.example' local-bounce.eml && grep -q '5.7.1' local-bounce.eml && grep -q 'x@reject.example' local-bounce.eml"
check "Postfix logged no milter configuration error" bash -c "! grep -q 'milter configuration error' postfix/maillog"

# ---- Mixed recipients, the other way: split at end of message -----------------------
stop_milter
check "the milter takes its socket away when it stops" test ! -e milter.sock
# With a size limit the original is under and the signed copy over: our own
# copy is not refused for what signing added.
sed -i 's|^\[gateway\]|[gateway]\nmixed_recipients = "reinject"\nmax_message_size = 4096|' mailkms.conf
start_milter || { echo "FAIL - the milter does not restart"; exit 1; }
long_body="$body$(printf '\r\nline %04d of the appendix, to be long enough' $(seq 40))"
message "alice@corp.example" "bob@corp.example, y@nowhere.example" "Split" "$long_body" > split.eml
send alice@corp.example bob@corp.example y@nowhere.example < split.eml
check "both recipients are accepted in one transaction" bash -c "[ \$(grep -c '<-  250 2.1.5 Ok' send.out) = 2 ]"
arrived_split split
check "bob's copy is encrypted to him, and his alone" \
  bash -c "openssl cms -decrypt -in split-bob.eml -recip bob.pem -inkey bob.key -out /dev/null && [ \$(grep -c '^X-Rcpt-Args:' split-bob.eml) = 1 ]"
check "the original was under max_message_size, y's signed copy over it" \
  bash -c "[ \$(wc -c < split.eml) -lt 4096 ] && [ \$(sed '/^X-Rcpt-Args:/,/^Received:/d' split-y.eml | wc -c) -gt 4096 ]"
check "y's copy was re-injected for y alone, signed but not encrypted" \
  bash -c "grep -q '^X-Rcpt-Args: <y@nowhere.example>' split-y.eml && [ \$(grep -c '^X-Rcpt-Args:' split-y.eml) = 1 ] && grep -qi '^Content-Type: multipart/signed' split-y.eml"
check "y's copy verifies, and its body is the original" \
  bash -c "openssl cms -verify -in split-y.eml -CAfile corp-chain.pem -purpose smimesign -out split-y.txt && grep -q 'revenue up 4' split-y.txt"
check "the re-injected copy was recognized, not processed twice, and lost its mark" \
  bash -c "! grep -q '^X-Mailkms-Reinjected' split-y.eml && [ \$(grep -ci '^Content-Type: multipart/signed' split-y.eml) = 1 ]"
{ printf 'X-Mailkms-Reinjected: v=1; t=%s; m=%064d\r\n' "$(date +%s)" 0
  message "alice@corp.example" "bob@corp.example" "Forged mark" "$body"; } | send alice@corp.example bob@corp.example
arrived forged-mark.eml
check "a forged re-injection mark is not honoured: the message is still encrypted" \
  openssl cms -decrypt -in forged-mark.eml -recip bob.pem -inkey bob.key -out /dev/null

# ---- Over TCP ------------------------------------------------------------------------
# The same service on an inet socket, where the milter also answers the DATA
# step (milter/callbacks.cpp says why); then back to the unix socket.
use_milter_socket() {  # use_milter_socket MILTER-SPEC POSTFIX-SPEC
  stop_milter
  sed -i "s#^socket = \"\(unix\|inet\):.*\"#socket = \"$1\"#" mailkms.conf
  start_milter || { echo "FAIL - the milter does not start on $1"; exit 1; }
  postconf -c "$work/postfix/conf" -e "smtpd_milters = $2" "non_smtpd_milters = $2" &&
    postfix -c "$work/postfix/conf" reload > /dev/null 2>&1
}
milter_port=$(free_port)
use_milter_socket "inet:$milter_port@127.0.0.1" "inet:127.0.0.1:$milter_port"
message "alice@corp.example" "bob@corp.example" "Over TCP" "$body" | send_settled alice@corp.example bob@corp.example
arrived out-tcp.eml
check "over TCP: alice to bob arrives encrypted, signed by alice, with the original body" \
  bash -c "openssl cms -decrypt -in out-tcp.eml -recip bob.pem -inkey bob.key -out tcp.signed &&
    openssl cms -verify -in tcp.signed -CAfile corp-chain.pem -purpose smimesign -out tcp.txt 2> /dev/null &&
    printf '%s\r\n' '$body' | cmp - <(sed '1,/^\r\?$/d' tcp.txt)"
use_milter_socket "unix:$work/milter.sock" "unix:$work/milter.sock"

# ---- As an unprivileged user --------------------------------------------------------
# As in production: the milter opens its socket as root, hands it to its
# user and the MTA's group, and drops privileges before it serves.
stop_milter
sed -i 's|^gateway_users = \["root"\]|gateway_users = ["root", "nobody"]|; s|^\[milter\]|[milter]\nuser = "nobody"|; s|^spool_directory = .*|spool_directory = "/var/tmp"|' mailkms.conf
check "the keystore re-reads who counts as a gateway" reload_keystore
chmod 666 keystore.sock    # socket_mode here was for root alone; peer credentials still decide
start_milter || { echo "FAIL - the milter does not restart"; exit 1; }
check "the milter serves as the unprivileged user" \
  bash -c "for _ in \$(seq 300); do [ \"\$(ps -o user= -p $milter_pid)\" = nobody ] && exit 0; sleep 0.1; done; exit 1"
check "its socket belongs to that user and the MTA's group" bash -c "[ \"\$(stat -c '%U:%G %a' milter.sock)\" = 'nobody:postfix 660' ]"
message "alice@corp.example" "bob@corp.example" "Unprivileged" "$body" | send_settled alice@corp.example bob@corp.example
arrived out-unprivileged.eml
check "and still signs and encrypts through the keystore" \
  bash -c "openssl cms -decrypt -in out-unprivileged.eml -recip bob.pem -inkey bob.key -out unpriv.signed && openssl cms -verify -in unpriv.signed -CAfile corp-chain.pem -purpose smimesign -out /dev/null"

check "no secret in the logs: no private key, no password" \
  bash -c "! grep -qiE 'PRIVATE KEY|$(cat p12.pw)' milter.log keystore.log postfix/maillog"

finish
