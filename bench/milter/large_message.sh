#!/usr/bin/env bash
# Peak memory of mailkms-milter for one message with a 100 MB attachment
# through a private Postfix: signed and encrypted on its way out, then the
# same content signed outside and verified on its way in. The body is
# spooled to a file and streamed through CMS either way, so the milter's
# peak RSS must stay far below the message's size. Prints each peak next
# to the target (64 MiB) and the milter's RSS when idle.
# Usage: bench/milter/large_message.sh BUILD_DIR [SIZE_MB]   (as root)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(realpath "$1")
size_mb=${2:-100}
ctl=$build/cli/mailkmsctl
keystored=$build/keystore/daemon/mailkms-keystored
milter=$build/milter/mailkms-milter
# shellcheck source=../../tests/integration/postfix/postfix-fixture.sh
. "$root/tests/integration/postfix/postfix-fixture.sh"
# shellcheck source=../../tests/integration/mailkms-daemons.sh
. "$root/tests/integration/mailkms-daemons.sh"

work=$(mktemp -d /var/tmp/mailkms-large.XXXXXX)
chmod 755 "$work"
cleanup() {
  postfix_stop
  stop_daemons
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false
[gateway]
policy = "$work/policy.toml"
spool_directory = "$work"
max_message_size = $(((size_mb + 50) * 1024 * 1024))
[milter]
socket = "unix:$work/milter.sock"
group = "postfix"
CONF
printf '[local]\ndomains = ["corp.example"]\nnetworks = ["127.0.0.0/8"]\n[signing]\nunauthenticated_networks = ["127.0.0.0/8"]\n' > policy.toml
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
head -c 24 /dev/urandom | base64 > admin.pw
"$ctl" init --admin admin --admin-password-file admin.pw --key-file master.key > /dev/null
start_keystore
"$ctl" login admin --password-file admin.pw > /dev/null
"$ctl" ca init --id root > /dev/null
"$ctl" ca add-subordinate --id issuing --parent root > /dev/null
"$ctl" user add alice@corp.example bob@corp.example > /dev/null
start_milter
export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock
milter_default_action = tempfail
milter_protocol = 6
message_size_limit = 0
milter_content_timeout = 600s"
postfix_start "$work/postfix"

{
  printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: The archive" "MIME-Version: 1.0" \
    "Content-Type: multipart/mixed; boundary=\"b\"" "" "--b" "Content-Type: text/plain" "" "The archive is attached." \
    "--b" "Content-Type: application/octet-stream; name=\"archive.bin\"" "Content-Transfer-Encoding: base64" ""
  head -c $((size_mb * 1024 * 1024)) /dev/urandom | base64 -w 76 | sed 's/$/\r/'
  printf '%s\r\n' "--b--"
} > large.eml
# send FROM FILE: through Postfix to bob, on a freshly started milter; sets
# idle, peak (KiB), elapsed (s) and delivered (the file at the sink).
send() {
  stop_milter
  start_milter
  idle=$(awk '/VmRSS/ {print $2}' "/proc/$milter_pid/status")
  rm -f "$SINK_DIR"/*
  local start
  start=$(date +%s.%N)
  swaks --server "127.0.0.1:$POSTFIX_PORT" --from "$1" --to bob@corp.example --data @"$2" \
    --timeout 600 > swaks.out 2>&1 || { echo "sending failed:"; tail -5 swaks.out; exit 1; }
  elapsed=$(echo "$(date +%s.%N) - $start" | bc)
  postfix_wait_for 1 > /dev/null || { echo "nothing arrived"; tail milter.log; exit 1; }
  # Delivered once the queue is empty (the sink writes as it receives).
  for _ in $(seq 600); do postqueue -c "$work/postfix/conf" -p | grep -q 'Mail queue is empty' && break; sleep 0.2; done
  sleep 0.5
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$milter_pid/status")
  delivered=$(find "$SINK_DIR" -type f | head -n 1)
}
rss() { printf 'milter RSS:  idle %.1f MiB, peak %.1f MiB (target < 64 MiB)\n' "$(echo "$idle / 1024" | bc -l)" "$(echo "$peak / 1024" | bc -l)"; }

echo "== outbound: alice to bob, signed and encrypted"
send alice@corp.example large.eml
encrypted=no
grep -qi '^Content-Type: application/pkcs7-mime; .*enveloped-data' "$delivered" && encrypted=yes
printf 'message in:  %s MB (%d bytes)\n' "$size_mb" "$(stat -c %s large.eml)"
printf 'delivered:   %d bytes, signed and encrypted: %s; accepted by Postfix in %.1f s\n' "$(stat -c %s "$delivered")" "$encrypted" "$elapsed"
rss

echo "== inbound: carol of partner.example to bob, signed by carol (multipart/signed), verified"
# A throwaway certificate: our root does not vouch for it, so the result is
# smime=fail (untrusted); the whole signed part is digested all the same.
openssl req -x509 -newkey rsa:2048 -nodes -keyout carol.key -out carol.pem -days 2 -subj "/CN=carol" \
  -addext "subjectAltName=email:carol@partner.example" 2> /dev/null
sed '1,4d' large.eml > entity.eml  # the multipart/mixed entity, without From, To, Subject, MIME-Version
{
  printf '%s\r\n' "From: carol@partner.example" "To: bob@corp.example" "Subject: The archive, signed"
  openssl smime -sign -binary -in entity.eml -signer carol.pem -inkey carol.key
} > inbound.eml
send carol@partner.example inbound.eml
verified=$(grep -m1 -o 'smime=[a-z]*' "$delivered" || echo "no result")
printf 'message in:  %d bytes; delivered with %s; accepted by Postfix in %.1f s\n' "$(stat -c %s inbound.eml)" "$verified" "$elapsed"
rss
