#!/usr/bin/env bash
# Prometheus metrics on the HTTP port the configuration names: scraped with
# curl, read with prometheus_client's parser, and the counters move when
# requests are answered; nothing listens when the key is unset.
#   metrics_test.sh MAILKMS_KEYSTORED MAILKMSCTL
# Test conditions are single-quoted on purpose: t() evaluates them later.
# shellcheck disable=SC2016
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../smtp-sink.sh
. "$here/../smtp-sink.sh"
[[ $# == 2 ]] || { echo "usage: metrics_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
# What mailkms-daemons.sh's start functions run.
# shellcheck disable=SC2034
keystored=$(realpath "$1") ctl=$(realpath "$2")

work=$(mktemp -d)
cleanup() {
  stop_daemons
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

port=$(free_port)
cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false
metrics_listen = "127.0.0.1:$port"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/admin.session
start_corp_keystore alice@corp.example || { echo "FAIL - the keystore does not start"; exit 1; }

# scrape NAME: the metrics into NAME.txt, their samples into NAME.samples.
scrape() {
  curl -sf "http://127.0.0.1:$port/metrics" -D "$1.headers" -o "$1.txt" &&
    /usr/bin/python3 "$here/scrape.py" "$1.txt" > "$1.samples"  # Debian's Python, with its prometheus_client
}
# value NAME SAMPLE: the value of SAMPLE in NAME.samples ("absent" if none).
value() { awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print "absent" }' "$1.samples"; }

check "GET /metrics answers, in the text format prometheus_client reads" scrape first
check "as text/plain; version=0.0.4" grep -qi '^Content-Type: text/plain; version=0.0.4' first.headers
check "the keystore says it is not sealed" test "$(value first 'mailkms_keystore_sealed{}')" = 0
check "requests are counted by operation and result" \
  test "$(value first 'mailkms_keystore_requests_total{operation="user-add",result="ok"}')" = 1
"$ctl" status > /dev/null
"$ctl" status > /dev/null
"$ctl" user show nobody@corp.example > /dev/null 2>&1
python3 - "$work/keystore.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
for op in ["no-such-operation-1", "no-such-operation-2"]:
    s.sendall(('{"id": 1, "op": "%s", "params": {}}\n' % op).encode())
    s.recv(4096)
PY
scrape second
before=$(value first 'mailkms_keystore_requests_total{operation="status",result="ok"}')
check "two more status requests are two more" \
  test "$(value second 'mailkms_keystore_requests_total{operation="status",result="ok"}')" = "$((before + 2))"
check "a failed request is counted with its error's code" \
  test "$(value second 'mailkms_keystore_requests_total{operation="user-show",result="not_found"}')" = 1
check "operations no one serves are counted as unknown, never by the name a client chose" \
  bash -c "[ \"\$(awk '\$1 == \"mailkms_keystore_requests_total{operation=\\\"unknown\\\",result=\\\"invalid_argument\\\"}\" { print \$2 }' second.samples)\" = 2 ] &&
           ! grep -q 'no-such-operation' second.txt"
check "each request is timed: a histogram per operation" \
  bash -c "grep -q '^mailkms_keystore_request_duration_seconds_bucket{operation=\"status\",le=\"+Inf\"} ' second.txt &&
           grep -q '^mailkms_keystore_request_duration_seconds_count{operation=\"status\"} ' second.txt"
run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
t "anything but /metrics is 404" '[[ $(cat out) == 404 ]]'
run curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/metrics"
t "a POST is 405" '[[ $(cat out) == 405 ]]'

stop_keystore
sed -i '/^metrics_listen/d' mailkms.conf
start_keystore || { echo "FAIL - the keystore does not start again"; exit 1; }
check "without metrics_listen nothing listens" bash -c "! curl -sf http://127.0.0.1:$port/metrics > /dev/null"

finish
