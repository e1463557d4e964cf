#!/usr/bin/env bash
# The systemd units in conf/systemd and the daemons' word to systemd:
# systemd-analyze verifies each unit (with ExecStart pointed at the built
# daemon) and scores its sandbox; each daemon, started as the tests start
# it with NOTIFY_SOCKET set, says READY=1 only once its socket answers,
# RELOADING=1 then READY=1 on SIGHUP, and STOPPING=1 on SIGTERM.
#   units_test.sh KEYSTORED MAILKMSCTL MILTER PROXY CONF_DIR
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
[[ $# == 5 ]] || { echo "usage: units_test.sh KEYSTORED MAILKMSCTL MILTER PROXY CONF_DIR" >&2; exit 2; }
keystored=$(realpath "$1") ctl=$(realpath "$2") milter=$(realpath "$3") proxy=$(realpath "$4") conf=$(realpath "$5")

work=$(mktemp -d)
listeners=()
cleanup() {
  stop_daemons
  for pid in "${listeners[@]}"; do kill "$pid" 2> /dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# ---- The units ----------------------------------------------------------------
mkdir units
for daemon in keystored milter proxy; do
  case $daemon in keystored) built=$keystored ;; milter) built=$milter ;; proxy) built=$proxy ;; esac
  sed "s|^ExecStart=/usr/sbin/mailkms-$daemon |ExecStart=$built |" "$conf/systemd/mailkms-$daemon.service" \
    > "units/mailkms-$daemon.service"
done
run systemd-analyze verify units/mailkms-keystored.service units/mailkms-milter.service units/mailkms-proxy.service
t "systemd-analyze verify finds nothing wrong with the three units" '[[ $rc == 0 ]] && ! [ -s err ] && ! [ -s out ]'
for daemon in keystored milter proxy; do
  score=$(systemd-analyze security --offline=true "units/mailkms-$daemon.service" 2> /dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
  check "mailkms-$daemon.service's sandbox leaves exposure ${score:-?} (under 2.0 of 10)" \
    python3 -c "import sys; sys.exit(0 if '$score' and float('$score') < 2.0 else 1)"
  check "mailkms-$daemon.service is Type=notify" grep -qx 'Type=notify' "units/mailkms-$daemon.service"
done

# ---- The daemons' notifications ----------------------------------------------------
# listen NAME PROBE: a listener on $work/NAME.notify, its log NAME.log.
listen() {
  python3 "$here/notify_listener.py" "$work/$1.notify" "$1.log" "$2" &
  listeners+=($!)
  local end=$((SECONDS + 10))
  until [ -S "$work/$1.notify" ]; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}
# said NAME TEXT: the listener NAME logged a line that begins with TEXT (within 30 s).
said() {
  local end=$((SECONDS + 30))
  until grep -q "^$2" "$1.log" 2> /dev/null; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}

port=$(free_port)
next_hop=$(free_port)
cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false

[gateway]
policy = "$conf/policy.toml"
spool_directory = "$work"

[milter]
socket = "unix:$work/milter.sock"

[proxy]
listen = "127.0.0.1:$port"
next_hop = "127.0.0.1:$next_hop"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/admin.session

listen keystore "unix:$work/keystore.sock" || { echo "FAIL - no notify listener"; exit 1; }
export NOTIFY_SOCKET=$work/keystore.notify
start_corp_keystore alice@corp.example || { echo "FAIL - the keystore does not start"; exit 1; }
check "keystored says READY=1, unsealed, once its socket answers" said keystore 'READY=1|STATUS=serving probe ok'
reload_keystore
check "on SIGHUP keystored says RELOADING=1, then READY=1 again" \
  bash -c "for _ in \$(seq 300); do grep -q '^RELOADING=1' keystore.log && [ \$(grep -c '^READY=1' keystore.log) = 2 ] && exit 0; sleep 0.1; done; exit 1"

listen milter "unix:$work/milter.sock" || { echo "FAIL - no notify listener"; exit 1; }
export NOTIFY_SOCKET=$work/milter.notify
start_milter || { echo "FAIL - the milter does not start"; exit 1; }
check "the milter says READY=1 once its socket answers" said milter "READY=1|STATUS=serving unix:$work/milter.sock probe ok"
reload_milter
check "on SIGHUP the milter says RELOADING=1, then READY=1 again" \
  bash -c "grep -q '^RELOADING=1' milter.log && for _ in \$(seq 300); do [ \$(grep -c '^READY=1' milter.log) = 2 ] && exit 0; sleep 0.1; done; exit 1"

listen proxy "tcp:127.0.0.1:$port" || { echo "FAIL - no notify listener"; exit 1; }
export NOTIFY_SOCKET=$work/proxy.notify
start_proxy "$port" || { echo "FAIL - the proxy does not start"; exit 1; }
check "the proxy says READY=1 once it listens" said proxy "READY=1|STATUS=serving probe ok"
unset NOTIFY_SOCKET

stop_proxy
check "on SIGTERM the proxy says STOPPING=1" said proxy 'STOPPING=1'
stop_milter
check "on SIGTERM the milter says STOPPING=1" said milter 'STOPPING=1'
stop_keystore
check "on SIGTERM keystored says STOPPING=1" said keystore 'STOPPING=1'
check "nothing said READY=1 before its socket answered" bash -c "! grep -h 'probe failed' ./*.log"

finish
