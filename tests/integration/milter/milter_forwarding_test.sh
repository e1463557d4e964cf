#!/usr/bin/env bash
# Decryption and the MTA's own address expansion, through a real, private
# Postfix with the real keystore: virtual aliases that forward outside. The
# milter sees RCPT bob@ before Postfix expands it, so a copy decrypted there
# would leave for wherever bob@ forwards. The set-up of conf/postfix-main.cf:
# the entry smtpd runs the milter but never decrypts; mail for mailboxes,
# its recipients already expanded, is routed to a second smtpd on loopback
# (the final hop: {daemon_name} mailkms-final-hop, no address mappings),
# which decrypts and hands it to the mailbox. What leaves is checked to be
# the ciphertext as it came; what the mailbox gets, the plain text.
# Usage: milter_forwarding_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER PKI_DIR   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
[[ $# == 4 ]] || { echo "usage: milter_forwarding_test.sh KEYSTORED MAILKMSCTL MILTER PKI_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")
pki=$(realpath "$4")

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  postfix_stop
  stop_daemons
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# ---- The keystore: bob, carol and dave of corp.example -----------------------
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
spool_directory = "$work"
reinject_command = ["$(command -v sendmail)", "-C", "$work/postfix/conf", "-G", "-i"]

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter.pid"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore bob@corp.example dave@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
"$ctl" trust add "$pki/root.pem" > /dev/null  # the outside CA of alice@example.org
for user in bob dave; do
  "$ctl" recover "$user@corp.example" --out "$user.p12" --password-file p12.pw > /dev/null
  openssl pkcs12 -in "$user.p12" -passin file:p12.pw -nokeys -clcerts -out "$user.pem" 2> /dev/null
done

# Decrypt for every local user: the site wants its users to read their mail
# without keys of their own.
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[defaults]
decrypt = true
POLICY

# ---- Postfix, as conf/postfix-main.cf sets it up -------------------------------
# bob@ forwards outside; dave@ keeps a copy and forwards one. Mailboxes are
# Postfix's virtual(8) maildirs here; the sink plays the outside world.
start_milter || { echo "FAIL - the milter does not start"; cat milter.log; exit 1; }
final_port=$(free_port)
mkdir mail && chown postfix mail
postfix_uid=$(id -u postfix)
postfix_gid=$(id -g postfix)
export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock
non_smtpd_milters = unix:$work/milter.sock
milter_default_action = tempfail
milter_protocol = 6
virtual_alias_maps = inline:{ bob@corp.example=bob@partner.example, { dave@corp.example=dave@corp.example, dave@partner.example } }
virtual_mailbox_domains = corp.example
virtual_mailbox_base = $work/mail
virtual_mailbox_maps = inline:{ dave@corp.example=dave/ }
virtual_uid_maps = static:$postfix_uid
virtual_gid_maps = static:$postfix_gid
transport_maps = inline:{ corp.example=smtp:[127.0.0.1]:$final_port }"
# The final hop as conf/postfix-master.cf writes it, on a port of our own.
POSTFIX_EXTRA_MASTER=$(grep -v '^#' "$here/../../../conf/postfix-master.cf" | sed "s/^127.0.0.1:10026 /127.0.0.1:$final_port /")
export POSTFIX_EXTRA_MASTER
postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; cat "$work/postfix/maillog" 2> /dev/null; exit 1; }

# send FROM TO < message: one SMTP transaction to the entry smtpd
send() {
  swaks --server "127.0.0.1:${port:-$POSTFIX_PORT}" --from "$1" --to "$2" --data - > send.out 2>&1
}
message() {  # message FROM TO SUBJECT BODY   (swaks ends the last line)
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Thu, 26 Nov 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4"
}
# encrypted_to USER MESSAGE: MESSAGE signed by alice@example.org (the test
# PKI's), encrypted by openssl to USER's certificate (EnvelopedData,
# AES-256-CBC), its header fields but Content-* kept outside.
encrypted_to() {
  "$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" --in "$2" --out "$2.signed"
  openssl cms -encrypt -aes256 -in "$2.signed" -recip "$1.pem" -out "$2.p7m" 2> /dev/null
  { tr -d '\r' < "$2" | sed -n '1,/^$/p' | awk '/^[^ \t]/ { drop = tolower($0) ~ /^(mime-version|content-)/ } !drop && !/^$/'
    tr -d '\r' < "$2.p7m"; } | sed 's/$/\r/'
}
# body_lines MESSAGE: the non-empty lines of its body, without CRs
body_lines() {
  tr -d '\r' < "$1" | sed '1,/^$/d' | grep -v '^$'
}
export -f body_lines
# at_sink RCPT NAME: waits for the sink's message to RCPT; moves it to NAME
at_sink() {
  local f
  for _ in $(seq 150); do
    for f in $(sink_files); do
      grep -q "^X-Rcpt-Args: <$1>" "$f" && mv "$f" "$2" && return 0
    done
    sleep 0.2
  done
  echo "no message to $1 at the sink; the log follows" >&2
  cat postfix/maillog >&2
  return 1
}
# in_mailbox USER NAME: waits for USER's maildir to receive a message; moves it to NAME
in_mailbox() {
  local f
  for _ in $(seq 150); do
    for f in mail/"$1"/new/*; do
      [ -f "$f" ] && mv "$f" "$2" && return 0
    done
    sleep 0.2
  done
  echo "nothing in $1's mailbox; the log follows" >&2
  cat postfix/maillog >&2
  return 1
}
# still_ciphertext SENT ARRIVED BODY: ARRIVED is SENT's EnvelopedData, line
# for line, and shows nothing of BODY
still_ciphertext() {
  grep -qi '^Content-Type: application/pkcs7-mime; .*smime-type=enveloped-data' "$2" &&
    openssl cms -cmsout -print -in "$2" | grep -q 'contentType: pkcs7-envelopedData' &&
    cmp <(body_lines "$1") <(body_lines "$2") && ! grep -qF "$3" "$2" && ! grep -q '^X-Mailkms-Decrypted' "$2"
}
export -f still_ciphertext

# ---- bob@ forwards outside ----------------------------------------------------------
bob_body="Bob, the merger closes on Friday; tell no one."
message "Alice Outside <alice@example.org>" "bob@corp.example" "For bob" "$bob_body" > bob.eml
encrypted_to bob bob.eml > bob-mail.eml
send alice@example.org bob@corp.example < bob-mail.eml
check "mail encrypted to bob is accepted" grep -q "250 2.0.0 Ok: queued" send.out
at_sink bob@partner.example out-bob.eml
check "bob@ forwards to bob@partner.example: what leaves is the ciphertext as it came, nothing of the plain text" \
  still_ciphertext bob-mail.eml out-bob.eml "$bob_body"
check "the entry's log line says why it was not decrypted there" \
  grep -qF "encrypted, not decrypted here: decryption happens at the final hop" milter.log
check "and so does its Authentication-Results on the copy that left" \
  bash -c "tr -d '\r' < out-bob.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -qF 'smime=none reason=\"encrypted; decrypted only at the final hop\"'"

# ---- dave@ keeps a copy and forwards one ---------------------------------------------
dave_body="Dave, the figures: revenue up 4 %, costs down 2 %."
message "Alice Outside <alice@example.org>" "dave@corp.example" "For dave" "$dave_body" > dave.eml
encrypted_to dave dave.eml > dave-mail.eml
send alice@example.org dave@corp.example < dave-mail.eml
at_sink dave@partner.example out-dave.eml
check "dave@ also forwards to dave@partner.example: that copy is the ciphertext as it came" \
  still_ciphertext dave-mail.eml out-dave.eml "$dave_body"
in_mailbox dave mailbox-dave.eml
check "dave's mailbox copy arrives decrypted: alice's signature verifies, the body is the original" \
  bash -c "openssl cms -verify -in mailbox-dave.eml -CAfile '$pki/root.pem' -purpose smimesign -out mailbox-dave.txt 2> /dev/null &&
    [ \"\$(tr -d '\r' < mailbox-dave.txt | sed '1,/^$/d')\" = '$dave_body' ]"
check "and says who decrypted it, and that alice's signature passed" \
  bash -c "grep -q '^X-Mailkms-Decrypted: mx.corp.example; cipher=aes-256-cbc' mailbox-dave.eml &&
    tr -d '\r' < mailbox-dave.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=pass.*body.smime-identifier=alice@example.org'"

# ---- The path, from Postfix's log --------------------------------------------------
# The entry queue's dave@corp.example went to the final hop; the final hop's
# queue id, from its "queued as", was delivered to the maildir.
final_qid=$(grep -o "to=<dave@corp.example>, relay=127.0.0.1\[127.0.0.1\]:$final_port, .*status=sent (250 2.0.0 Ok: queued as [0-9A-F]*" postfix/maillog |
  grep -o '[0-9A-F]*$')
check "Postfix's log: dave@corp.example went from the entry queue to the final hop on 127.0.0.1:$final_port" test -n "$final_qid"
check "the final hop's smtpd took it, and virtual(8) delivered it to dave's maildir" \
  bash -c "grep -q 'postfix/final-hop/smtpd\[[0-9]*\]: $final_qid: client=localhost\[127.0.0.1\]' postfix/maillog &&
    grep -q 'postfix/virtual\[[0-9]*\]: $final_qid: to=<dave@corp.example>, relay=virtual, .*status=sent (delivered to maildir)' postfix/maillog"
check "the forwarded copies went out by smtp to the outside, their original recipient noted" \
  bash -c "grep -q 'to=<bob@partner.example>, orig_to=<bob@corp.example>, relay=127.0.0.1\[127.0.0.1\]:$SINK_PORT, .*status=sent' postfix/maillog &&
    grep -q 'to=<dave@partner.example>, orig_to=<dave@corp.example>, relay=127.0.0.1\[127.0.0.1\]:$SINK_PORT, .*status=sent' postfix/maillog"
check "the milter decrypted at the final hop, and only there" \
  bash -c "grep -F '$final_qid: ' milter.log | grep -qF 'decrypted (aes-256-cbc; this is the final hop ({daemon_name} mailkms-final-hop))' &&
    [ \$(grep -c 'decrypted (aes' milter.log) = 1 ]"

# ---- Nothing else left the site ----------------------------------------------------
postfix_queue_settles
left_at_sink=$(sink_files)
check "with the queue empty, the sink holds the two forwarded ciphertexts and nothing more" \
  bash -c "postqueue -c postfix/conf -p | grep -q '^Mail queue is empty' && [ -z '$left_at_sink' ] &&
    [ \$(grep -c 'relay=127.0.0.1\[127.0.0.1\]:$SINK_PORT, .*status=sent' postfix/maillog) = 2 ]"

# ---- The final hop is for mailboxes only --------------------------------------------
# Someone on the host who talks to the final hop directly cannot name an
# address that is only an alias: it has no mailbox there, and is refused
# before anything is decrypted for it.
port=$final_port send alice@example.org bob@corp.example < bob-mail.eml
check "straight to the final hop, RCPT bob@ (an alias, no mailbox): 550 5.1.1, nothing queued" \
  bash -c "grep -q '<\*\* 550 5.1.1 <bob@corp.example>: Recipient address rejected' send.out && ! grep -q 'Ok: queued' send.out"

check "no secret in the logs: no private key, no password, no plain text" \
  bash -c "! grep -qiE 'PRIVATE KEY|$(cat p12.pw)|merger closes|revenue up' milter.log keystore.log postfix/maillog"

finish
