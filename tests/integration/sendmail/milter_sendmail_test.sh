#!/usr/bin/env bash
# mailkms-milter in a real Sendmail, wired by the lines of conf/sendmail.mc
# as an administrator adds them, with the real mailkms-keystored behind it:
# outbound mail signed and encrypted, inbound signatures verified, a
# missing certificate refused at RCPT, and the keystore or the milter down
# answered 4xx with nothing queued or delivered. What Sendmail did is read
# from its log and its queue, what it delivered from the sink.
# Usage: milter_sendmail_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER CONF_DIR   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=sendmail-fixture.sh
. "$here/sendmail-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
[[ $# == 4 ]] || { echo "usage: milter_sendmail_test.sh KEYSTORED MAILKMSCTL MILTER CONF_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")
conf=$(realpath "$4")

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  sendmail_stop
  stop_daemons
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# ---- The keystore: a CA, alice and bob of corp.example; a partner's CA -------
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
# Under the sanitizers, on a busy machine, the keystore can be slow.
keystore_timeout_ms = 30000

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0600"
pid_file = "$work/milter.pid"
CONF
# Sendmail hands its own local mail to itself over SMTP from 127.0.0.1,
# which conf/sendmail.mc says to list here to have it signed.
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]

[defaults]
sign = "if-possible"
encrypt = "if-possible"

[[rule]]
name = "corp-must-encrypt"
to = "*@corp.example"
sign = "always"
encrypt = "always"
on_missing_certificate = "reject"
POLICY
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@corp.example bob@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
"$ctl" recover bob@corp.example --out bob.p12 --password-file p12.pw > /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -cacerts -out corp-chain.pem 2> /dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout partner-root.key -out partner-root.pem \
  -subj "/CN=Partner Root" -days 30 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2> /dev/null
"$ctl" trust add partner-root.pem --domains partner.example > /dev/null
start_milter || { echo "FAIL - the milter does not start"; exit 1; }

# Sendmail, with conf/sendmail.mc's lines as shipped but for the socket.
SENDMAIL_EXTRA_MC=$(sed "s|unix:/run/mailkms-milter/milter.sock|unix:$work/milter.sock|" "$conf/sendmail.mc")
grep -q "unix:$work/milter.sock" <<< "$SENDMAIL_EXTRA_MC" || { echo "FAIL - conf/sendmail.mc names no milter socket"; exit 1; }
sendmail_start "$work/sendmail" || { echo "FAIL - Sendmail does not start"; exit 1; }

# ---- Helpers -----------------------------------------------------------------------
# Every body carries a marker: none may ever be found in clear at the sink.
marker=SECRET-FIGURES
message() {  # message FROM TO SUBJECT CASE   (swaks ends the last line)
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Fri, 04 Dec 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4: $marker, revenue up 4 %."
}
# send FROM TO < message: one SMTP transaction; swaks's transcript in send.out
send() {
  swaks --server "127.0.0.1:$SENDMAIL_PORT" --from "$1" --to "$2" --data - > send.out 2>&1
}
# arrived NAME: waits for the one message at the sink, moves it to NAME
arrived() {
  sendmail_wait_for 1 || return 1
  mv "$(sink_files | head -n 1)" "$1"
}
nothing_reached_sink() { [ -z "$(find "$SINK_DIR" -type f)" ]; }
# authentication_results FILE: our Authentication-Results header, unfolded
authentication_results() {
  tr -d '\r' < "$1" | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t'
}
export -f authentication_results

# ---- Outbound: signed by alice, encrypted to bob -------------------------------------
message alice@corp.example bob@corp.example "Quarterly figures" "outbound" | send alice@corp.example bob@corp.example
check "alice to bob: Sendmail accepts the message" grep -q '<-  250 2.0.0 .* Message accepted for delivery' send.out
arrived out.eml
check "what Sendmail delivered holds nothing in clear" bash -c "! grep -q '$marker' out.eml"
check "bob's key opens it (openssl cms)" \
  bash -c "openssl cms -decrypt -in out.eml -recip bob.pem -inkey bob.key -out out.signed"
check "inside, alice's signature verifies under the corp CA, over the exact body" \
  bash -c "openssl cms -verify -in out.signed -CAfile corp-chain.pem -purpose smimesign -signer signer.pem -out out.txt 2> /dev/null &&
    grep -q 'outbound: $marker, revenue up 4 %.' out.txt &&
    openssl x509 -in signer.pem -noout -ext subjectAltName | grep -q 'email:alice@corp.example'"

# ---- Missing certificate: refused at RCPT, as Sendmail can refuse one recipient -------
message alice@corp.example nobody@corp.example "To nobody" "missing" | send alice@corp.example nobody@corp.example
check "no certificate for nobody@corp.example: 550 5.7.1 at RCPT, nothing accepted" \
  bash -c "grep -q '<\*\* 550 5.7.1 .*nobody@corp.example' send.out && ! grep -q 'Message accepted' send.out"

# ---- Inbound: a partner's signature verified --------------------------------------------
openssl req -new -newkey rsa:2048 -nodes -keyout partner.key -subj "/CN=carol@partner.example" -out partner.csr 2> /dev/null
printf '%s\n' "subjectAltName=email:carol@partner.example" "keyUsage=digitalSignature,keyEncipherment" \
  "extendedKeyUsage=emailProtection" "basicConstraints=CA:FALSE" > partner.ext
openssl x509 -req -in partner.csr -CA partner-root.pem -CAkey partner-root.key -CAcreateserial -days 30 \
  -extfile partner.ext -out partner.pem 2> /dev/null
message carol@partner.example bob@corp.example "Signed by a partner" "inbound" > in.eml
"$ctl" message sign --cert partner.pem --key partner.key --chain partner-root.pem --in in.eml --out in-signed.eml
send carol@partner.example bob@corp.example < in-signed.eml
arrived in-pass.eml
check "a partner's signed mail arrives with smime=pass and its signer" \
  bash -c "authentication_results in-pass.eml | grep -q 'smime=pass.*body.smime-identifier=carol@partner.example'"
check "the signed message itself still verifies (openssl)" \
  openssl cms -verify -in in-pass.eml -CAfile partner-root.pem -purpose smimesign -out /dev/null

# Mail encrypted to bob stays encrypted: Sendmail expands aliases after
# the milter, and no Sendmail daemon is the final hop (conf/sendmail.mc).
message carol@partner.example bob@corp.example "Encrypted by a partner" "kept" |
  openssl cms -encrypt -aes256 -recip bob.pem > in-enveloped.eml
send carol@partner.example bob@corp.example < in-enveloped.eml
arrived in-kept.eml
check "mail encrypted to bob is delivered still encrypted, and opens with his key" \
  bash -c "! grep -q '$marker' in-kept.eml && grep -qi '^Content-Type: application/.*pkcs7-mime' in-kept.eml &&
    openssl cms -decrypt -in in-kept.eml -recip bob.pem -inkey bob.key | grep -q 'kept: $marker'"

# ---- The keystore down: 4xx, nothing queued, nothing delivered --------------------------
# The milter forgets what it looked up (SIGHUP), so it must ask at RCPT.
reload_milter
stop_keystore
mark=$(log_mark)
message alice@corp.example bob@corp.example "While the keystore is down" "down" | send alice@corp.example bob@corp.example
check "keystore down: 451 4.7.1 at RCPT" \
  bash -c "grep -A1 -- '-> RCPT TO:<bob@corp.example>' send.out |
    grep -q \"<\*\* 451 4.7.1 Cannot look up the recipient's certificate now; try again later\""
check "keystore down: Sendmail logged the milter's refusal" logged_since "$mark" 'Milter: to=<bob@corp.example>, reject=451 4.7.1'
check "keystore down: nothing queued" sendmail_queue_empty
check "keystore down: nothing delivered" nothing_reached_sink
start_keystore || { echo "FAIL - the keystore does not start again"; exit 1; }

# ---- The milter down: F=T makes Sendmail answer 4xx -------------------------------------
stop_milter
mark=$(log_mark)
message alice@corp.example bob@corp.example "While the milter is down" "milter down" | send alice@corp.example bob@corp.example
check "milter down: 451 4.3.2 at MAIL FROM (F=T in conf/sendmail.mc)" \
  bash -c "grep -A1 -- '-> MAIL FROM:<alice@corp.example>' send.out | grep -q '<\*\* 451 4.3.2 Please try again later'"
check "milter down: Sendmail logged that it could not reach it" \
  logged_since "$mark" 'Milter: initialization failed, temp failing commands'
check "milter down: nothing queued" sendmail_queue_empty
check "milter down: nothing delivered" nothing_reached_sink

finish
