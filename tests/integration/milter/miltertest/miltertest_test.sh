#!/usr/bin/env bash
# The real mailkms-milter driven by miltertest, which plays the MTA's side
# of the milter protocol from Lua scripts: no MTA, exact replies and edits,
# with the keystore down. One script per case in this folder.
# Usage: miltertest_test.sh MAILKMS_MILTER
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../../lib.sh
. "$here/../../lib.sh"
[[ $# == 1 ]] || { echo "usage: miltertest_test.sh MAILKMS_MILTER" >&2; exit 2; }
milter=$(realpath "$1")
command -v miltertest > /dev/null || { echo "FAIL - miltertest is not installed (Debian package miltertest)"; exit 1; }

# A prefix of our own: nothing that cleans up /tmp/tmp.* takes it.
work=$(mktemp -d "${TMPDIR:-/tmp}/mailkms-miltertest.XXXXXXXX")
# shellcheck source=../../mailkms-daemons.sh
. "$here/../../mailkms-daemons.sh"
cleanup() {
  if [ -n "$milter_pid" ] && kill -0 "$milter_pid" 2> /dev/null; then kill -KILL "$milter_pid" 2> /dev/null; fi
  wait 2> /dev/null
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# The keystore socket names a path where nothing listens: the keystore is down.
cat > mailkms.conf <<CONF
[gateway]
policy = "$work/policy.toml"
authserv_id = "mx.corp.example"
enrollment_address = "mailkms-enroll@corp.example"
spool_directory = "$work"
max_message_size = 2048
inbound_memory_limit = 1024

[keystore]
socket = "$work/keystore.sock"

[milter]
socket = "unix:$work/milter.sock"
pid_file = "$work/milter.pid"
CONF
cat > policy.toml <<POLICY
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8", "10.0.0.0/8"]

# Who may sign as whom (case 11): logins as in signing-logins, and clients
# of 10.1/16 without authenticating, as their envelope sender.
[signing]
login_map = "signing-logins"
unauthenticated_networks = ["10.1.0.0/16"]

[[rule]]
name = "secret"
to = "*@secret.example"
encrypt = "always"

[[rule]]
name = "open-for-erin"
to = "erin@corp.example"
direction = "inbound"
decrypt = true

[[rule]]
name = "plain"
to = "*@plain.example"
encrypt = "never"

[[rule]]
name = "signed"
to = "*@signed.example"
sign = "always"
encrypt = "never"
POLICY
cat > signing-logins <<'MAP'
# Postfix's smtpd_sender_login_maps form: an address, the logins that own it.
ceo@corp.example    assistant, deputy
MAP

start_milter || { echo "FAIL - the milter does not start"; exit 1; }

export MILTER_SOCKET=$work/milter.sock CASES=$here
run_case() { miltertest -s "$here/$1"; }
in_log() { grep -qF -- "$1" milter.log; }

# ---- 1. Inbound: Authentication-Results -------------------------------------
check "1 inbound: forged A-R of ours deleted, other.example's kept, smime=none inserted at 0" \
  run_case 1-inbound-authentication-results.lua

# ---- 2, 3. Outbound with the keystore down -------------------------------------
check "2 outbound, encrypt always, keystore down: RCPT gets a reply code (SMFIR_REPLYCODE)" \
  run_case 2-outbound-always-keystore-down.lua
check "2 the milter logs the recipient as deferred for the keystore" \
  in_log "CASE2: carol@secret.example: deferred, keystore:"
check "3 outbound, encrypt if-possible, keystore down: RCPT gets a reply code (SMFIR_REPLYCODE)" \
  run_case 3-outbound-if-possible-keystore-down.lua
check "3 the milter logs the recipient as deferred for the keystore" \
  in_log "CASE3: dave@partner.example: deferred, keystore:"

# ---- 4, 5. The enrollment address ----------------------------------------------
# The keystore is down here: enrollment replies wait (451) rather than be
# lost or delivered; the Postfix tests cover the keystore taking them.
check "4 enrollment address alone, keystore down: accepted at RCPT, 451 4.7.1 at EOM, no edits" \
  run_case 4-enrollment-alone.lua
check "4 the milter logs it as deferred for the keystore" \
  in_log "CASE4: enrollment mail to mailkms-enroll@corp.example, deferred: keystore unavailable"
check "5 enrollment address and bob, keystore down: the whole message deferred, nothing delivered" \
  run_case 5-enrollment-and-recipient.lua

# ---- 6. max_message_size ----------------------------------------------------------
check "6 max_message_size 2048: 2048 bytes pass, 2049 and 200 kB are refused at end of message" \
  run_case 6-max-message-size.lua
check "6 the milter logs the refusal" in_log "CASE6: rejected: over max_message_size (2048 bytes)"

# ---- 7. Clients that vanish mid-message -----------------------------------------
check "7 disconnects and an abort mid-message; a fresh exchange passes afterwards" \
  run_case 7-disconnect-mid-message.lua
check "7 the milter is still running" kill -0 "$milter_pid"
check "7 no internal error in the milter's log" bash -c '! grep -n "internal error" milter.log'

# ---- 10. Inbound encrypted and signed-data mail over inbound_memory_limit --------
check "10 over inbound_memory_limit: encrypted mail left as it came (smime=none), signed-data not verified (neutral)" \
  run_case 10-inbound-over-memory-limit.lua
check "10 the milter logs both, with the size" \
  bash -c 'grep -q "CASE10E: .*encrypted, not decrypted: [0-9]* bytes, over inbound_memory_limit" milter.log &&
    grep -q "CASE10S: .*signed-data not verified: [0-9]* bytes, over inbound_memory_limit" milter.log'

# ---- 11. Who may sign as whom ------------------------------------------------------
check "11 each submission signs only as an author it is authorized for" \
  env PHASE=first miltertest -s "$here/11-signer-authorization.lua"
signer_log() {  # signer_log ID TEXT: the milter's line for ID says TEXT
  grep -F -- "$1: " milter.log | grep -qF -- "$2"
}
check "11 login bob@corp.example signs as itself" \
  signer_log SIGN1 "[signer bob@corp.example: login bob@corp.example signs as itself]"
check "11 login bob@corp.example may not sign as the CEO, and the log says why" \
  signer_log SIGN2 "[not signed as ceo@corp.example: login bob@corp.example does not own it]"
check "11 nor when MAIL FROM names the CEO" \
  signer_log SIGN3 "[not signed as ceo@corp.example: login bob@corp.example does not own it]"
check "11 the login map lets assistant sign as the CEO" \
  signer_log SIGN4 "[signer ceo@corp.example: $work/signing-logins gives it to login assistant]"
check "11 and only as the CEO" \
  signer_log SIGN5 "[not signed as bob@corp.example: login assistant does not own it]"
check "11 sign = always and a signer not authorized: 550 5.7.1 naming the reason" \
  signer_log SIGN6 "=> 550 5.7.1 Policy requires signing, and this submission may not sign as ceo@corp.example: login bob@corp.example does not own it"
check "11 an unauthenticated client of 10.1/16 signs as its envelope sender" \
  signer_log SIGN7 "[signer bob@corp.example: client 10.1.2.3 is in 10.1.0.0/16 of [signing] unauthenticated_networks and From is the envelope sender]"
check "11 but not as another author" \
  signer_log SIGN8 "[not signed as alice@corp.example: From alice@corp.example is not the envelope sender bob@corp.example]"
check "11 an internal client outside unauthenticated_networks does not sign" \
  signer_log SIGN9 "[not signed as bob@corp.example: client 10.2.0.5 is in none of [signing] unauthenticated_networks]"
check "11 Postfix's stand-in client without {mail_mailer} is local submission, which does not sign by default" \
  signer_log SIGN10 "outbound (sender domain corp.example is local and the message was submitted locally) [not signed as alice@corp.example: local submission signs only with [signing] local_submission = true]"
check "11 an unknown client address is not local submission (PROXY UNKNOWN, XCLIENT [UNAVAILABLE])" \
  bash -c 'grep -F "LOCAL1: " milter.log | grep -qF "inbound (sender domain corp.example is local but the client address is unknown, and the client neither internal nor authenticated)" &&
    grep -F "LOCAL2: " milter.log | grep -qF "inbound (sender domain corp.example is local but the client address is unknown"'
# The login map and the policy are read again on SIGHUP.
sed -i 's/^unauthenticated_networks = .*/&\nlocal_submission = true/' policy.toml
sed -i 's/^ceo@corp.example .*/ceo@corp.example    deputy/' signing-logins
reloads=$(grep -c "policy reloaded" milter.log)
kill -HUP "$milter_pid"
for _ in $(seq 300); do [ "$(grep -c "policy reloaded" milter.log)" -gt "$reloads" ] && break; sleep 0.05; done
check "11 after SIGHUP: local submission signs as its sender, the login map is read again" \
  env PHASE=reloaded miltertest -s "$here/11-signer-authorization.lua"
check "11 local submission signs as the envelope sender once local_submission = true" \
  signer_log SIGN11 "[signer alice@corp.example: submitted locally, [signing] local_submission = true, and From is the envelope sender]"
check "11 and only as the envelope sender" \
  signer_log SIGN12 "[not signed as bob@corp.example: From bob@corp.example is not the envelope sender alice@corp.example]"
check "11 assistant, out of the reloaded map, no longer signs as the CEO" \
  signer_log SIGN13 "[not signed as ceo@corp.example: login assistant does not own it]"

# ---- 12. Decryption only at the final hop ------------------------------------------
check "12 encrypted to erin (decrypt = true): left encrypted at the entry, tried only where {daemon_name} is mailkms-final-hop" \
  run_case 12-final-hop.lua
check "12 the entry's log line says why it did not decrypt" \
  grep -qF "CASE12E: inbound (sender domain partner.example is not local): erin@corp.example: open-for-erin; encrypted, not decrypted here: decryption happens at the final hop ({daemon_name} mailkms-final-hop), after the MTA has expanded aliases and forwarding; this connection is not it" milter.log
check "12 without {daemon_name} it is not the final hop either" \
  grep -qF "CASE12N: inbound (sender domain partner.example is not local): erin@corp.example: open-for-erin; encrypted, not decrypted here" milter.log
check "12 the final hop tries to decrypt, and defers for the keystore" \
  grep -qF "CASE12F: inbound (sender domain partner.example is not local): keystore unavailable, deferred" milter.log
check "12 the final hop signs nothing, not even for a client of unauthenticated_networks" \
  signer_log CASE12L "[not signed as bob@corp.example: the final hop signs nothing: its client is the MTA itself]"

# ---- 8. --check ---------------------------------------------------------------------
run "$milter" --check --config "$work/mailkms.conf"
t "8 --check: a good configuration exits 0 and prints OK for it and the policy" \
  '[[ $rc == 0 ]] && grep -qxF "$work/mailkms.conf: OK; policy $work/policy.toml: OK, 4 rule(s)" out'

# Line 6 has the error.
cat > broken-policy.toml <<'POLICY'
[local]
domains = ["corp.example"]

[[rule]]
to = "*@secret.example"
encrypt = "sometimes"
POLICY
sed "s|$work/policy.toml|$work/broken-policy.toml|" mailkms.conf > broken-policy.conf
run "$milter" --check --config "$work/broken-policy.conf"
t "8 --check: a broken policy exits 1, naming the file and line" \
  '[[ $rc == 1 ]] && grep -qF "$work/broken-policy.toml:6:" err'

sed 's|^pid_file = |pid_flie = |' mailkms.conf > unknown-key.conf
run "$milter" --check --config "$work/unknown-key.conf"
t "8 --check: an unknown [milter] key exits 1, naming the key and the file" \
  '[[ $rc == 1 ]] && grep -qF "unknown key milter.pid_flie" err && grep -qF "$work/unknown-key.conf" err'

# ---- 9. Mail taken without SMTP, keystore down -------------------------------------------
run_case9() { EXPECT_DAVE=$1 miltertest -s "$here/9-without-smtp-keystore-down.lua"; }
check "9 without SMTP: both taken at RCPT, both deferred at the end (on_keystore_unavailable tempfail)" \
  run_case9 deferred
check "9 the milter logs carol's message as deferred for the keystore" \
  bash -c 'grep -q "CASE9C: .*keystore unavailable, deferred" milter.log'
# on_keystore_unavailable = "accept" lets dave's go out as it came, never carol's.
stop_milter
sed -i 's|^\[gateway\]|[gateway]\non_keystore_unavailable = "accept"|' mailkms.conf
start_milter || { echo "FAIL - the milter does not restart"; exit 1; }
check "9 with accept: carol's (encrypt always) still deferred, dave's (if-possible) delivered" run_case9 delivered
check "9 the milter logs dave's as delivered unchanged, carol's as deferred" \
  bash -c 'grep -q "CASE9D: .*keystore unavailable, delivered unchanged" milter.log &&
    [ "$(grep -c "CASE9C: .*keystore unavailable, deferred" milter.log)" = 2 ]'

# ---- Shutdown ----------------------------------------------------------------------------
# libmilter notices SIGTERM only at its next poll timeout (~5 s).
check "the milter stops on SIGTERM within 10 s" stop_milter 10
check "and removes its pid file" test ! -e milter.pid

# ---- 13. In the background ------------------------------------------------------------
# Without --foreground the milter detaches: its pid file names the process
# that serves, not the parent that exited; its log goes to log_file, which
# SIGHUP reopens for logrotate. This is what is under test, so it starts
# the milter itself.
in_background() {  # waits for the detached milter's pid file and socket
  for _ in $(seq 600); do [ -s milter.pid ] && [ -S milter.sock ] && return 0; sleep 0.05; done
  return 1
}
logged_in() {  # logged_in FILE TEXT: a bounded wait for TEXT in FILE
  for _ in $(seq 300); do grep -qF -- "$2" "$1" 2> /dev/null && return 0; sleep 0.05; done
  return 1
}
rm -f milter.sock
sed -i "s|^pid_file = .*|&\nlog_file = \"$work/background.log\"|" mailkms.conf
run "$milter" --config "$work/mailkms.conf"
t "13 in the background: the command that starts it exits 0" '[[ $rc == 0 ]]'
check "13 the detached milter writes its pid file and listens" in_background
milter_pid=$(cat milter.pid 2> /dev/null)
check "13 the pid file names the process that serves, which is the milter" \
  test "$(readlink "/proc/$milter_pid/exe" 2> /dev/null)" = "$milter"
check "13 its log goes to log_file" logged_in background.log "serving unix:$work/milter.sock"
check "13 it answers the MTA" run_case 1-inbound-authentication-results.lua
mv background.log background.log.1
kill -HUP "$milter_pid" 2> /dev/null
check "13 SIGHUP reopens log_file (logrotate moved it away)" logged_in background.log "policy reloaded"
check "13 the pid file's process stops on SIGTERM within 10 s" stop_milter 10
check "13 and removes its pid file" test ! -e milter.pid
sed '/^log_file = /d' mailkms.conf > no-log.conf
if [ -S /dev/log ]; then
  echo "skip - 13 refusal without a place to log: this machine has a syslog socket, which the milter logs to"
else
  run "$milter" --config "$work/no-log.conf"
  t "13 in the background with no log_file and no syslog socket: refuses to start, saying why" \
    '[[ $rc == 1 ]] && grep -qF "in the background the milter'"'"'s log would go nowhere; set [milter] log_file" err'
fi

if [[ $failed != 0 ]]; then
  echo "---- milter.log"
  sed 's/^/       /' milter.log | tail -40
fi
finish
