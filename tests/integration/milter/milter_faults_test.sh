#!/usr/bin/env bash
# The fault matrix: mailkms-milter in a private Postfix, with the real
# mailkms-keystored behind it, while things break: the keystore down at
# start, killed with -9 in the middle of a message and of an enrollment,
# sealed, its database's disk full; Postfix reloaded, and stopped and
# started, in the middle of a message; the milter killed with -9 in the
# middle of one; a certificate revoked between two messages; a certificate
# not yet valid by our clock; the spool directory unwritable. For each:
# what the SMTP client was told, what Postfix queued, what was delivered,
# and that nothing policy encrypts ever reached the sink in clear.
# "The middle of a message" is found, not guessed: the keystore is stopped
# (SIGSTOP) and the fault strikes once the milter's request waits unread in
# its socket. "Not yet valid" is a certificate openssl issues with a
# notBefore of tomorrow; no daemon's clock is changed.
# Usage: milter_faults_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER CONF_DIR   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
[[ $# == 4 ]] || { echo "usage: milter_faults_test.sh KEYSTORED MAILKMSCTL MILTER CONF_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")
conf=$(realpath "$4")

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  [ -n "$keystore_pid" ] && kill -CONT "$keystore_pid" 2> /dev/null
  postfix_stop
  stop_daemons
  for m in "$work/db" "$work/spool"; do mountpoint -q "$m" && umount -l "$m"; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# The database and the spool on small file systems of their own: one to
# fill, one to make read-only. Root writes through any mode bits; not
# through a read-only mount.
mkdir -p db spool delivered
if ! mount -t tmpfs -o size=16m,mode=0700 tmpfs db || ! mount -t tmpfs -o size=16m,mode=0755 tmpfs spool; then
  echo "FAIL - cannot mount a tmpfs (this test needs root)"
  echo "0 passed, 1 failed"
  exit 1
fi

enroll_address=mailkms-enroll@corp.example
cat > mailkms.conf <<CONF
[keystore]
database = "$work/db/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false
mail_command = ["$(command -v sendmail)", "-C", "$work/postfix/conf", "-i"]
mail_from = "$enroll_address"
enrollment_address = "$enroll_address"
templates = "$conf/templates"

[gateway]
policy = "$work/policy.toml"
authserv_id = "mx.corp.example"
enrollment_address = "$enroll_address"
spool_directory = "$work/spool"
spool_memory_limit = 4096
# Long enough that a case decides when the keystore is asked again (a
# reload empties the certificate cache), never the clock.
certificate_ttl_seconds = 3600
missing_certificate_ttl_seconds = 3600
# A redemption makes a PKCS#12 and mails it: under the sanitizers, on a
# busy machine, that can take longer than the default's 5 s.
keystore_timeout_ms = 30000

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter.pid"
CONF
# Our domain must be signed and encrypted, and a missing certificate is
# refused for good (5.7.1): a keystore fault the gateway took for a missing
# certificate or signing identity would show as a 5xx where a 4xx is due.
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]
local_submission = true

[defaults]
sign = "if-possible"
encrypt = "if-possible"

[[rule]]
name = "corp-must-encrypt"
to = "*@corp.example"
sign = "always"
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
name = "partner-must-encrypt"
to = "*@partner.example"
encrypt = "always"
on_missing_certificate = "tempfail"
POLICY
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@corp.example bob@corp.example carol@corp.example dave@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
for user in bob dave; do
  "$ctl" recover "$user@corp.example" --out "$user.p12" --password-file p12.pw > /dev/null
  openssl pkcs12 -in "$user.p12" -passin file:p12.pw -nodes -nocerts -out "$user.key" 2> /dev/null
  openssl pkcs12 -in "$user.p12" -passin file:p12.pw -nokeys -clcerts -out "$user.pem" 2> /dev/null
done
# partner.example's CA, trusted for partner.example alone.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout partner-root.key -out partner-root.pem \
  -subj "/CN=Partner Root" -days 30 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2> /dev/null
"$ctl" trust add partner-root.pem --domains partner.example > /dev/null

export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock
non_smtpd_milters = unix:$work/milter.sock
milter_default_action = tempfail
milter_protocol = 6"

# ---- Helpers -------------------------------------------------------------------
# Every body carries a marker: none may ever be found in clear at the sink.
marker=SECRET-FIGURES
message() {  # message FROM TO SUBJECT CASE   (swaks ends the last line)
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Thu, 26 Nov 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4: $marker, revenue up 4 %."
}
# send FROM TO < message: one SMTP transaction; swaks's transcript in send.out
send() {
  swaks --server "127.0.0.1:$POSTFIX_PORT" --from "$1" --to "$2" --data - > send.out 2>&1
}
# queued: Postfix's queue, one JSON object a message (postqueue -j)
queued() { postqueue -c "$work/postfix/conf" -j 2> /dev/null; }
# nothing_reached_sink: no message file at the sink, nor one being written
nothing_reached_sink() { [ -z "$(find "$SINK_DIR" -type f)" ]; }
# arrived NAME: moves the oldest message at the sink to delivered/NAME
arrived() {
  postfix_wait_for 1 || return 1
  mv "$(sink_files | sort | head -n 1)" "delivered/$1"
}
# encrypted_to WHO FILE CASE: FILE opens with WHO's key to that case's body,
# and holds none of it in clear
encrypted_to() {
  ! grep -q "$marker" "$2" &&
    openssl cms -decrypt -in "$2" -recip "$1.pem" -inkey "$1.key" 2> /dev/null | grep -q "$3: $marker"
}
# rejected_since MARK STAGE CODE: Postfix logged the milter's refusal of
# the message at STAGE (RCPT, END-OF-MESSAGE) with CODE, and no queue
# file is left of it (cleanup removes its file as it answers)
rejected_since() {
  logged_since "$1" "milter-reject: $2 from .*: $3 " && postfix_queue_settles
}
# kept_in_maildrop_since MARK STAGE: mail taken without SMTP that the
# milter deferred (at STAGE: END-OF-MESSAGE, or CONNECT when there was no
# milter to connect to): Postfix logged the 4.7.1, and the message waits in
# the maildrop queue for pickup to try again
kept_in_maildrop_since() {
  logged_since "$1" "milter-reject: $2 from .*: 4\.7\.1 .*from=<alice@corp.example>" &&
    queued | grep -q '"queue_name": *"maildrop"'
}
# The keystore stopped with SIGSTOP answers nothing, but the kernel still
# takes what the milter writes to it: a request of the milter's, unread in
# a socket of the keystore's, says the milter is waiting on the keystore in
# the middle of a message. Then the fault comes at a known point, not after
# a guessed delay. (A connection not yet accepted counts too: the milter
# opened it for a request it is about to write. The sockets are found by
# the keystore's pid: ss shows the name the listener was bound to before it
# was renamed into place.)
keystore_has_unread_request() {
  ss -xHnp state all | awk -v pid="pid=$keystore_pid," '($2 == "ESTAB" || $2 == "LISTEN") && $3 > 0 && index($0, pid) { found = 1 }
    END { exit !found }'
}
wait_keystore_request() {
  local end=$((SECONDS + 30))
  until keystore_has_unread_request; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.02
  done
}
# while_keystore_waits COMMAND…: runs COMMAND (an SMTP client) in the
# background with the keystore stopped, and returns once the milter is
# waiting on the keystore for it; send_pid is COMMAND's pid
send_pid=
while_keystore_waits() {
  kill -STOP "$keystore_pid"
  "$@" &
  send_pid=$!
  wait_keystore_request
}
# sending FROM TO SUBJECT CASE: that message, sent
sending() { message "$1" "$2" "$3" "$4" | send "$1" "$2"; }
# ---- 1. The keystore down when the milter starts --------------------------------
stop_keystore
start_milter || { echo "FAIL - the milter does not start without the keystore"; cat milter.log; exit 1; }
postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; exit 1; }
mark=$(log_mark)
message alice@corp.example bob@corp.example "Down at start" case1 | send alice@corp.example bob@corp.example
check "keystore down at start: 451 4.7.1 at RCPT" \
  grep -q "<\*\* 451 4.7.1 Cannot look up the recipient's certificate now; try again later" send.out
check "keystore down at start: nothing queued, Postfix logged the milter's refusal" \
  rejected_since "$mark" RCPT "451 4.7.1"
mark=$(log_mark)
message alice@corp.example bob@corp.example "Down at start, local" case1-local |
  sendmail -C "$work/postfix/conf" -f alice@corp.example bob@corp.example
check "submitted locally, Postfix logs the milter's 4.7.1 and keeps it in the maildrop queue" \
  kept_in_maildrop_since "$mark" END-OF-MESSAGE
check "keystore down at start: nothing delivered" nothing_reached_sink
start_keystore || { echo "FAIL - the keystore does not restart"; exit 1; }
postkick -c "$work/postfix/conf" public pickup W 2> /dev/null
arrived case1-local.eml
check "once the keystore is back, the local one is delivered encrypted to bob" encrypted_to bob delivered/case1-local.eml case1-local
check "and the queue is empty" postfix_queue_settles

# ---- 2. The keystore killed with -9 in the middle of a message ------------------
# A first message fills the milter's caches (bob's certificate, alice's
# signer): the next one needs the keystore only to sign, at end of data.
message alice@corp.example bob@corp.example "Warm" case2-warm | send alice@corp.example bob@corp.example
arrived case2-warm.eml
check "with the keystore up, alice to bob arrives encrypted" encrypted_to bob delivered/case2-warm.eml case2-warm
mark=$(log_mark)
check "the milter waits on the stopped keystore at end of data" \
  while_keystore_waits sending alice@corp.example bob@corp.example "Mid-message" case2
kill_keystore
wait "$send_pid"
check "keystore kill -9 mid-message: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "keystore kill -9 mid-message: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
check "keystore kill -9 mid-message: nothing delivered" nothing_reached_sink
start_keystore || { echo "FAIL - the keystore does not restart"; exit 1; }

# ---- 3. The keystore killed with -9 in the middle of an enrollment -------------
# reply WHO TOKEN PASSWORD: WHO's answer to a token mail, as a client sends it
reply() {
  printf '%s\r\n' "From: $1" "To: $enroll_address" "Subject: Re: Your secure e-mail keys" \
    "MIME-Version: 1.0" "Content-Type: text/plain; charset=utf-8" "" "Password: $3" "" "> Token: $2" |
    swaks --server "127.0.0.1:$POSTFIX_PORT" --from "$1" --to "$enroll_address" --data - > send.out 2>&1
}
# arrived_for WHO NAME: moves the message at the sink for WHO to delivered/NAME
arrived_for() {
  local end=$((SECONDS + 60)) f
  while [ "$SECONDS" -lt "$end" ]; do
    for f in $(sink_files); do
      grep -q "^X-Rcpt-Args: <$1>" "$f" && mv "$f" "delivered/$2" && return 0
    done
    sleep 0.1
  done
  return 1
}
# erin's enrollment meets a keystore killed here; gina's, one sealed and
# one out of disk (cases 4 and 5).
check "erin and gina are enrolled by mail" bash -c "'$ctl' enroll erin@corp.example gina@corp.example | grep -q '2 sent'"
arrived_for erin@corp.example case3-token-erin.eml
arrived_for gina@corp.example case3-token-gina.eml
token=$(grep -o 'MKMS-[A-Z2-7-]*' delivered/case3-token-erin.eml | head -n 1)
gina_token=$(grep -o 'MKMS-[A-Z2-7-]*' delivered/case3-token-gina.eml | head -n 1)
erin_pw="erin chose this $RANDOM$RANDOM"
gina_pw="gina chose that $RANDOM$RANDOM"
mark=$(log_mark)
check "the milter waits on the stopped keystore with erin's reply" \
  while_keystore_waits reply erin@corp.example "$token" "$erin_pw"
kill_keystore
wait "$send_pid"
check "keystore kill -9 mid-enrollment: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "keystore kill -9 mid-enrollment: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
check "keystore kill -9 mid-enrollment: nothing delivered" nothing_reached_sink
start_keystore || { echo "FAIL - the keystore does not restart"; exit 1; }
mark=$(log_mark)
reply erin@corp.example "$token" "$erin_pw"
check "erin's reply sent again is taken (250)" grep -q "<-  250 2.0.0 Ok: queued" send.out
check "and discarded, never delivered" logged_since "$mark" "milter-discard: END-OF-MESSAGE .*to=<$enroll_address>"
arrived case3-p12.eml
# p12_of FILE: the PKCS#12 attached to a certificate mail
p12_of() {
  python3 - "$1" <<'PY'
import email, sys
message = email.message_from_binary_file(open(sys.argv[1], "rb"))
for part in message.walk():
    if (part.get_filename() or "").endswith(".p12"):
        sys.stdout.buffer.write(part.get_payload(decode=True))
        sys.exit(0)
sys.exit(1)
PY
}
p12_of delivered/case3-p12.eml > erin.p12
check "her token was not used up: her PKCS#12 arrives, and opens with her password (openssl)" \
  bash -c "grep -q '^X-Rcpt-Args: <erin@corp.example>' delivered/case3-p12.eml &&
    openssl pkcs12 -in erin.p12 -passin 'pass:$erin_pw' -nokeys -clcerts | openssl x509 -noout -ext subjectAltName | grep -q erin@corp.example"

# ---- 4. The keystore sealed ------------------------------------------------------
stop_keystore
cp mailkms.conf mailkms.conf.unsealing
sed -i '/^unseal_key_file = /d' mailkms.conf
start_keystore sealed || { echo "FAIL - the keystore does not start sealed"; exit 1; }
mark=$(log_mark)
sending alice@corp.example bob@corp.example "Sealed" case4
check "keystore sealed, bob's certificate cached: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "keystore sealed: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
mark=$(log_mark)
sending alice@corp.example carol@corp.example "Sealed" case4-carol
check "keystore sealed, carol's certificate never looked up: 451 4.7.1 at RCPT" \
  grep -q "<\*\* 451 4.7.1 Cannot look up the recipient's certificate now; try again later" send.out
check "keystore sealed: nothing queued for carol" rejected_since "$mark" RCPT "451 4.7.1"
mark=$(log_mark)
reply gina@corp.example "$gina_token" "$gina_pw"
check "keystore sealed, gina's enrollment reply: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "keystore sealed: gina's reply is not queued, nor discarded" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
check "keystore sealed: nothing delivered" nothing_reached_sink
stop_keystore
mv mailkms.conf.unsealing mailkms.conf
start_keystore || { echo "FAIL - the keystore does not restart"; exit 1; }

# ---- 5. The database's disk full ---------------------------------------------------
# audit_answer: the keystore's answer to a gateway's request it audits (a
# signing identity), as the milter would ask it; "storage_failed" once its
# audit log cannot be written, until it can again.
audit_answer() {
  python3 - "$work/keystore.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"id": 1, "op": "signing-identity", "params": {"address": "alice@corp.example"}}).encode() + b"\n")
answer = json.loads(s.makefile().readline())
print(answer.get("error", {}).get("code", "ok"))
PY
}
# until_audit_answer WANT: asks until the keystore answers WANT (30 s at most)
until_audit_answer() {
  local end=$((SECONDS + 30))
  until [ "$(audit_answer)" = "$1" ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}
# SQLite writes into room its write-ahead log already has: that log is
# emptied first, so the next write needs room the disk no longer has. The
# checkpoint says "busy" while the keystore writes (its audit batches);
# then it is asked again.
wal_emptied() {
  local end=$((SECONDS + 30))
  until [ "$(sqlite3 db/keystore.db 'PRAGMA wal_checkpoint(TRUNCATE);')" = "0|0|0" ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}
check "the keystore's write-ahead log is emptied (sqlite3)" wal_emptied
dd if=/dev/zero of=db/filler bs=64k 2> /dev/null
check "disk full: the keystore refuses what it cannot audit" until_audit_answer storage_failed
mark=$(log_mark)
sending alice@corp.example bob@corp.example "Disk full" case5
check "disk full: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "disk full: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
mark=$(log_mark)
reply gina@corp.example "$gina_token" "$gina_pw"
check "disk full, gina's enrollment reply: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "disk full: gina's reply is not queued, nor discarded" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
check "disk full: nothing delivered" nothing_reached_sink
rm -f db/filler
check "with room again, the keystore writes what it held and serves" until_audit_answer ok
mark=$(log_mark)
reply gina@corp.example "$gina_token" "$gina_pw"
check "with room again, gina's reply is taken and discarded" \
  logged_since "$mark" "milter-discard: END-OF-MESSAGE .*to=<$enroll_address>"
arrived_for gina@corp.example case5-p12-gina.eml
p12_of delivered/case5-p12-gina.eml > gina.p12
check "her token outlived the sealed keystore and the full disk: her PKCS#12 opens with her password" \
  bash -c "openssl pkcs12 -in gina.p12 -passin 'pass:$gina_pw' -nokeys -clcerts | openssl x509 -noout -ext subjectAltName | grep -q gina@corp.example"
sending alice@corp.example bob@corp.example "Disk full no more" case5-after
arrived case5-after.eml
check "with room again, alice to bob arrives encrypted" encrypted_to bob delivered/case5-after.eml case5-after
check "the audit log verifies after the full disk" bash -c "'$ctl' audit verify | grep -q '^intact'"

# ---- 6. Postfix reloaded in the middle of a message ---------------------------------
mark=$(log_mark)
check "the milter waits on the stopped keystore at end of data" \
  while_keystore_waits sending alice@corp.example bob@corp.example "Reload" case6
postfix -c "$work/postfix/conf" reload > /dev/null 2>&1
check "Postfix reloads meanwhile" logged_since "$mark" "postfix/master\[[0-9]+\]: reload -- version"
kill -CONT "$keystore_pid"
wait "$send_pid"
check "Postfix reload mid-message: the client is told 250 2.0.0 queued" grep -q "<-  250 2.0.0 Ok: queued" send.out
arrived case6.eml
check "Postfix reload mid-message: delivered encrypted to bob" encrypted_to bob delivered/case6.eml case6
check "Postfix reload mid-message: the queue empties" postfix_queue_settles

# ---- 7. Postfix stopped and started in the middle of a message ------------------------
postfix_down() {
  local end=$((SECONDS + 30))
  while postfix -c "$work/postfix/conf" status > /dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}
mark=$(log_mark)
check "the milter waits on the stopped keystore at end of data" \
  while_keystore_waits sending alice@corp.example bob@corp.example "Stop and start" case7
postfix -c "$work/postfix/conf" stop > /dev/null 2>&1
check "Postfix stops meanwhile" postfix_down
# Mail submitted while Postfix is down waits in the maildrop queue.
message alice@corp.example bob@corp.example "While Postfix is down" case7-local |
  sendmail -C "$work/postfix/conf" -f alice@corp.example bob@corp.example
postfix -c "$work/postfix/conf" start > /dev/null 2>&1
check "and starts again" logged_since "$mark" "postfix/master\[[0-9]+\]: daemon started"
kill -CONT "$keystore_pid"
wait "$send_pid"
# Stopping kills smtpd and cleanup: the client gets no reply at all, and
# cleanup removes the message's file, so the client still holds it.
check "Postfix stop mid-message: the client is told nothing; its connection closes" \
  bash -c "grep -q '^\*\*\* Remote host closed connection unexpectedly' send.out && ! grep -q '<-  250 2.0.0 Ok: queued' send.out"
arrived case7-local.eml
check "the message submitted while Postfix was down is delivered encrypted once it is up" \
  encrypted_to bob delivered/case7-local.eml case7-local
check "Postfix stop mid-message: then the queue is empty" postfix_queue_settles
check "Postfix stop mid-message: and nothing else was delivered" nothing_reached_sink

# ---- 8. The milter killed with -9 in the middle of a message ----------------------
mark=$(log_mark)
check "the milter waits on the stopped keystore at end of data" \
  while_keystore_waits sending alice@corp.example bob@corp.example "Milter killed" case8
kill_milter
wait "$send_pid"
kill -CONT "$keystore_pid"
check "milter kill -9 mid-message: Postfix's milter_default_action, 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 Service unavailable - try again later" send.out
check "milter kill -9 mid-message: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
mark=$(log_mark)
message alice@corp.example bob@corp.example "While the milter is down" case8-local |
  sendmail -C "$work/postfix/conf" -f alice@corp.example bob@corp.example
check "milter down, submitted locally: Postfix logs its 4.7.1 and keeps the message in the maildrop queue" \
  kept_in_maildrop_since "$mark" CONNECT
check "milter kill -9 mid-message: nothing delivered" nothing_reached_sink
start_milter || { echo "FAIL - the milter does not restart"; exit 1; }
postkick -c "$work/postfix/conf" public pickup W 2> /dev/null
arrived case8-local.eml
check "the milter started again: the kept message arrives encrypted" encrypted_to bob delivered/case8-local.eml case8-local
check "and the queue is empty" postfix_queue_settles

# ---- 9. A certificate revoked between two messages -----------------------------------
sending alice@corp.example dave@corp.example "Before the revocation" case9-before
arrived case9-before.eml
check "before dave's certificate is revoked, mail to him is encrypted to it" encrypted_to dave delivered/case9-before.eml case9-before
"$ctl" revoke dave@corp.example --reason keyCompromise > /dev/null
sending alice@corp.example dave@corp.example "Right after the revocation" case9-cached
arrived case9-cached.eml
# A limit, not a leak: until certificate_ttl_seconds runs out the gateway
# still encrypts to the certificate it looked up before the revocation.
check "right after the revocation, within the cache's TTL: still encrypted to dave's revoked certificate" \
  encrypted_to dave delivered/case9-cached.eml case9-cached
check "a reload empties the milter's caches, as their TTL running out does" reload_milter
mark=$(log_mark)
sending alice@corp.example dave@corp.example "After the revocation" case9-after
check "once asked again, the keystore hands out no revoked certificate: 550 5.7.1 at RCPT, as policy says" \
  grep -q "<\*\* 550 5.7.1 Policy requires encryption; no usable certificate for dave@corp.example" send.out
check "revoked: nothing queued" rejected_since "$mark" RCPT "550 5.7.1"
check "revoked: nothing delivered" nothing_reached_sink

# ---- 10. A certificate not yet valid by our clock --------------------------------------
# frank@partner.example's certificate starts tomorrow (his CA's clock, or
# ours, is off by a day): his signed mail is not a pass, his certificate is
# not harvested, and mail to him is not encrypted to it.
mkdir partner-ca && : > partner-ca/index.txt && echo 1000 > partner-ca/serial
cat > partner-ca.cnf <<CNF
[ ca ]
default_ca = partner
[ partner ]
database = $work/partner-ca/index.txt
serial = $work/partner-ca/serial
new_certs_dir = $work/partner-ca
certificate = $work/partner-root.pem
private_key = $work/partner-root.key
default_md = sha256
policy = any
[ any ]
commonName = supplied
CNF
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout frank.key -subj "/CN=frank@partner.example" \
  -out frank.csr 2> /dev/null
printf '%s\n' "subjectAltName=email:frank@partner.example" "keyUsage=digitalSignature,keyAgreement" \
  "extendedKeyUsage=emailProtection" "basicConstraints=CA:FALSE" > frank.ext
openssl ca -config partner-ca.cnf -batch -notext -extfile frank.ext -in frank.csr -out frank.pem \
  -startdate "$(date -u -d '+1 day' +%Y%m%d%H%M%SZ)" -enddate "$(date -u -d '+30 days' +%Y%m%d%H%M%SZ)" 2> /dev/null
not_yet_valid() { [ "$(date -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s)" -gt "$(date +%s)" ]; }
check "frank's certificate is not valid before tomorrow (openssl)" not_yet_valid frank.pem
printf '%s\r\n' "Content-Type: text/plain; charset=us-ascii" "" "Frank writes a day early." > frank.txt
openssl cms -sign -binary -in frank.txt -signer frank.pem -inkey frank.key -certfile partner-root.pem \
  -from frank@partner.example -to bob@corp.example -subject "Early" 2> /dev/null | tr -d '\r' | sed 's/$/\r/' > frank-signed.eml
swaks --server "127.0.0.1:$POSTFIX_PORT" --from frank@partner.example --to bob@corp.example --data - < frank-signed.eml > send.out 2>&1
check "frank's signed mail is accepted" grep -q "<-  250 2.0.0 Ok: queued" send.out
arrived case10-in.eml
check "and delivered with smime=fail, saying the certificate is not yet valid" \
  bash -c "tr -d '\r' < delivered/case10-in.eml | sed -n '/^Authentication-Results: mx.corp.example;/,/^[^ \t]/p' | tr -d '\n\t' |
    grep -q 'smime=fail reason=\"expired: certificate is not yet valid\"'"
check "his certificate is not harvested" bash -c "! '$ctl' harvested list | grep -q '^frank@partner.example '"
mark=$(log_mark)
sending alice@corp.example frank@partner.example "To frank" case10-out
check "mail to him, which policy encrypts: 450 4.7.1 at RCPT" \
  grep -q "<\*\* 450 4.7.1 Policy requires encryption; no usable certificate yet for frank@partner.example" send.out
check "not yet valid: nothing queued" rejected_since "$mark" RCPT "450 4.7.1"
check "not yet valid: nothing delivered" nothing_reached_sink

# ---- 11. The spool directory unwritable ------------------------------------------------
mount -o remount,ro spool
mark=$(log_mark)
{ message alice@corp.example bob@corp.example "Large" case11-large
  for i in $(seq 100); do printf '\r\nline %03d of the appendix, long enough to need the spool on disk' "$i"; done; } |
  send alice@corp.example bob@corp.example
check "spool unwritable, a message over spool_memory_limit: 451 4.3.0 at end of data" \
  grep -q "<\*\* 451 4.3.0 The S/MIME gateway cannot store the message now; try again later" send.out
check "spool unwritable, large: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.3.0"
mark=$(log_mark)
sending alice@corp.example bob@corp.example "Small" case11-small
check "spool unwritable, a small message whose encrypted copy needs the spool: 451 4.7.1 at end of data" \
  grep -q "<\*\* 451 4.7.1 The S/MIME gateway cannot process this message now; try again later" send.out
check "spool unwritable, small: nothing queued" rejected_since "$mark" END-OF-MESSAGE "4.7.1"
check "spool unwritable: nothing delivered" nothing_reached_sink
mount -o remount,rw spool
sending alice@corp.example bob@corp.example "Spool back" case11-after
arrived case11-after.eml
check "with the spool writable again, alice to bob arrives encrypted" encrypted_to bob delivered/case11-after.eml case11-after

check "nothing policy encrypts ever reached the sink in clear" bash -c "! grep -rl '$marker' '$SINK_DIR' delivered"
check "erin's and gina's passwords are in no log and at no mailbox" \
  bash -c "! grep -rqF -e '$erin_pw' -e '$gina_pw' milter.log keystore.log postfix/maillog delivered '$SINK_DIR'"

finish
