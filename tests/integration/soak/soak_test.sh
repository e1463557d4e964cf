#!/usr/bin/env bash
# The soak: mailkms-milter in a private Postfix, with the real
# mailkms-keystored behind it, under a steady load for a while. alice sends
# to bob, carol and dave, who all have certificates, under a policy that
# signs and encrypts everything to corp.example; sizes from 1 KB to
# --max-size, some multipart with an attachment, and one message in twenty
# malformed (a broken MIME boundary, a truncated S/MIME body, garbage
# where CMS should be, bad base64, thousands of headers, a 200 KB header
# line). Afterwards:
#   - every message Postfix accepted is at the sink exactly once, for its
#     recipient, encrypted to them, signed by alice, and its decrypted body
#     has the checksum of what was sent;
#   - nothing reached the sink in clear;
#   - every message has an outcome in Postfix's log: delivered, deferred
#     (4xx) or refused (5xx); none is lost between the two;
#   - the resident memory of each daemon, sampled every few seconds, grows
#     over the second half by less than --rss-slope KB a minute (a
#     least-squares slope), and neither holds more file descriptors at the
#     end than at a quiet point after the warm-up;
#   - the checker itself fails on a mailbox with a message duplicated,
#     altered, lost or delivered in clear.
# Usage (as root): soak_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER
#   [--seconds N] [--rate MSG_PER_S] [--max-size BYTES] [--rss-slope KB_PER_MIN]
#   [--sample-seconds N]
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=soak-lib.sh
. "$here/soak-lib.sh"
usage() { sed -n '22,24s/^# \?//p' "$0" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")
shift 3
seconds=60
rate=4
max_size=1048576
rss_slope_limit=1024
sample_seconds=2
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --max-size) max_size=$2; shift 2 ;;
    --rss-slope) rss_slope_limit=$2; shift 2 ;;
    --sample-seconds) sample_seconds=$2; shift 2 ;;
    *) usage ;;
  esac
done

# Under AddressSanitizer freed memory waits in a quarantine, 256 MB by
# default, that fills over minutes: the daemons' memory would grow for that
# alone. A small one still catches a use after free of the last messages.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8

work=$(mktemp -d)
chmod 755 "$work"
sampler_pid=
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2> /dev/null
  postfix_stop
  stop_daemons
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2
mkdir -p spool outbox outbox-kept sent keys

# ---- The keystore, the milter and Postfix ----------------------------------------
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
spool_directory = "$work/spool"
# Under the sanitizers, with both cores busy, a keystore answer can be slow:
# a timeout here would be the load's doing, not the gateway's.
keystore_timeout_ms = 30000

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter.pid"
CONF
# Everything to corp.example is signed and encrypted; a missing
# certificate is refused for good, so none may pass unencrypted.
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
start_corp_keystore alice@corp.example bob@corp.example carol@corp.example dave@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
# Each recipient's key as its owner gets it: a PKCS#12, opened by openssl.
for user in "${soak_recipients[@]}"; do
  "$ctl" recover "$user@corp.example" --out "keys/$user.p12" --password-file p12.pw > /dev/null
  openssl pkcs12 -in "keys/$user.p12" -passin file:p12.pw -nodes -nocerts -out "keys/$user.key" 2> /dev/null
  openssl pkcs12 -in "keys/$user.p12" -passin file:p12.pw -nokeys -clcerts -out "keys/$user.pem" 2> /dev/null
  openssl pkcs12 -in "keys/$user.p12" -passin file:p12.pw -nokeys -cacerts -out keys/chain.pem 2> /dev/null
done

start_milter || { echo "FAIL - the milter does not start"; cat milter.log; exit 1; }
# A signed and encrypted copy is about twice the size of what was sent:
# Postfix's own limit (10 MB by default) must leave room for it, or the
# body the milter hands back is refused.
export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock
non_smtpd_milters = unix:$work/milter.sock
milter_default_action = tempfail
milter_protocol = 6
message_size_limit = $((max_size * 4 + 1048576))"
postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; exit 1; }
maillog=$work/postfix/maillog

soak_make_payload "$max_size" payload.b64
phase_setup=$SECONDS

# ---- Warm-up, then a quiet point: the file descriptors to compare with ----------
warmup=$((rate * 5 > 20 ? rate * 5 : 20))
soak_send_steady 0 "$warmup" "$rate" warmup
soak_drain 120 || { echo "FAIL - the warm-up does not drain"; tail -20 "$maillog"; exit 1; }
fds_start_keystore=$(soak_fds "$keystore_pid" fds-keystored.start)
fds_start_milter=$(soak_fds "$milter_pid" fds-milter.start)
pooled_start=$(soak_keystore_connections)

# ---- The load, with the daemons' memory sampled --------------------------------------
soak_sample_rss "$sample_seconds" "$keystore_pid" "$milter_pid" > rss.samples &
sampler_pid=$!
count=$(awk -v s="$seconds" -v r="$rate" 'BEGIN { print int(s * r) }')
load_start=$EPOCHREALTIME
soak_send_steady "$warmup" "$count" "$rate" load
load_seconds=$(awk -v a="$load_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
kill "$sampler_pid" 2> /dev/null
wait "$sampler_pid" 2> /dev/null
sampler_pid=
phase_load=$SECONDS
# Large messages under the sanitizers take a while to go through.
soak_drain $((120 + max_size / 65536)) || echo "the queue did not drain; what is left counts as lost"
fds_end_keystore=$(soak_fds "$keystore_pid" fds-keystored.end)
fds_end_milter=$(soak_fds "$milter_pid" fds-milter.end)
pooled_end=$(soak_keystore_connections)

# ---- What happened to each message, from Postfix's log; what arrived ---------------
phase_drain=$SECONDS
soak_outcomes "$maillog" > outcomes
soak_check_mailbox sent/manifest outcomes "$SINK_DIR" keys > check.report
summary() { awk -v k="$1" '$1 == k { print $2 }' check.report; }

check "both daemons are still running" kill -0 "$keystore_pid" "$milter_pid"
check "Postfix logged no failure to talk to the milter (timeout, reset, no reply)" \
  bash -c "! grep -E 'warning: milter .*(timeout|error|reset|can.t read|unexpected)' '$maillog'"
check "every message has a defined outcome in Postfix's log (delivered, 4xx, 5xx)" \
  bash -c "[ \"\$(awk '\$1 == \"undefined\" { print \$2 }' '$work/check.report')\" = 0 ]"
check "every well-formed message was delivered" \
  bash -c "[ \"\$(awk '\$1 == \"wellformed_not_delivered\" { print \$2 }' '$work/check.report')\" = 0 ]"
check "every accepted message is at the sink exactly once, none lost" \
  bash -c "[ \"\$(awk '\$1 == \"lost\" || \$1 == \"duplicated\" { n += \$2 } END { print n + 0 }' '$work/check.report')\" = 0 ]"
check "nothing reached the sink in clear, or not encrypted to its recipient" \
  bash -c "[ \"\$(awk '\$1 == \"clear\" || \$1 == \"undecryptable\" { n += \$2 } END { print n + 0 }' '$work/check.report')\" = 0 ]"
check "every decrypted body has the checksum of what was sent, signed by alice" \
  bash -c "[ \"\$(awk '\$1 == \"mismatch\" || \$1 == \"unsigned\" { n += \$2 } END { print n + 0 }' '$work/check.report')\" = 0 ]"
check "the sink holds nothing that was not sent" \
  bash -c "[ \"\$(awk '\$1 == \"unknown\" { print \$2 }' '$work/check.report')\" = 0 ]"
grep '^problem' check.report | head -20 | sed 's/^/       /'

soak_rss_report rss.samples "$rss_slope_limit" > rss.report
check "keystored's RSS is flat over the second half (slope under $rss_slope_limit KB/min)" \
  grep -q '^flat keystored yes' rss.report
check "the milter's RSS is flat over the second half (slope under $rss_slope_limit KB/min)" \
  grep -q '^flat milter yes' rss.report
# The milter keeps up to 8 idle connections to the keystore (KeystoreClient's
# pool_size): more concurrent messages than in the warm-up open more, one
# file descriptor at each end. That, and nothing else, may grow.
check "the milter keeps at most 8 idle connections to the keystore ($pooled_start after the warm-up, $pooled_end at the end)" \
  test "$pooled_end" -le 8
check "keystored holds no file descriptor but those for more pooled connections ($fds_start_keystore after the warm-up, $fds_end_keystore at the end)" \
  test $((fds_end_keystore - fds_start_keystore)) -le $((pooled_end - pooled_start))
check "the milter holds no file descriptor but those for more pooled connections ($fds_start_milter after the warm-up, $fds_end_milter at the end)" \
  test $((fds_end_milter - fds_start_milter)) -le $((pooled_end - pooled_start))
for d in keystored milter; do
  diff "fds-$d.start" "fds-$d.end" | sed -n "s/^[<>]/       $d: &/p"
done

# ---- The daemons stop cleanly: under the sanitizers, the leak checker runs now -----
stop_daemons
check "neither daemon reported a memory error or a leak (sanitizer builds)" \
  bash -c "! grep -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:' '$work/keystore.log' '$work/milter.log'"

# ---- The checker fails where it should -------------------------------------------------
soak_check_the_checker

# ---- The table -------------------------------------------------------------------------------
echo
printf '%s messages in %s s (%s msg/s asked), sizes 1 KB to %s bytes, %s malformed\n' \
  "$count" "$load_seconds" "$rate" "$max_size" "$(summary malformed_sent)"
printf '%-26s %10s\n' sent "$(summary sent)" accepted "$(summary accepted)" delivered "$(summary delivered)" \
  "deferred (4xx)" "$(summary deferred)" "refused (5xx)" "$(summary refused)" \
  "lost" "$(summary lost)" "duplicated" "$(summary duplicated)" "in clear" "$(summary clear)" \
  "checksum mismatches" "$(summary mismatch)" "no defined outcome" "$(summary undefined)"
echo
grep -v '^flat' rss.report
printf '%-26s %8s %8s\n' "file descriptors" start end keystored "$fds_start_keystore" "$fds_end_keystore" \
  milter "$fds_start_milter" "$fds_end_milter" "pooled keystore connections" "$pooled_start" "$pooled_end"
echo "set-up $phase_setup s, warm-up and load $((phase_load - phase_setup)) s, drain $((phase_drain - phase_load)) s, checks $((SECONDS - phase_drain)) s"
echo
finish
