#!/usr/bin/env bash
# What stands between mailkms-keystored and the other processes on the
# machine: it refuses to start when anyone else could change its database,
# key file or socket directory, or reach its socket; and mailkmsctl sends
# nothing (a passphrase, a password) to a socket someone else serves.
# Usage: keystore_boundaries_test.sh MAILKMS_KEYSTORED MAILKMSCTL (as root: a server runs as nobody)
# Test conditions are single-quoted on purpose: t() evaluates them later.
# shellcheck disable=SC2016
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$(dirname "$(realpath "$0")")/../mailkms-daemons.sh"
keystore_log=daemon.log
[[ $# == 2 ]] || { echo "usage: keystore_boundaries_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
work=$(mktemp -d)
keystore_pid=
foreign_pid=
trap '[ -n "$keystore_pid" ] && kill "$keystore_pid" 2>/dev/null; [ -n "$foreign_pid" ] && kill "$foreign_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work" || exit 2
mkdir db run

cat > mailkms.conf <<CONF
[keystore]
database = "$work/db/keystore.db"
socket = "$work/run/keystore.sock"
socket_mode = "0660"
lock_memory = false
CONF
export MAILKMS_CONFIG=$work/mailkms.conf
echo "the unseal passphrase of this keystore" > unseal.pw
echo "carol's long admin password" > carol.pw
chmod 600 ./*.pw
"$ctl" init --admin carol --admin-password-file carol.pw --passphrase-file unseal.pw > /dev/null

# The daemon must refuse at once; a daemon that starts is stopped by timeout.
refuses() { run timeout 20 "$keystored" --config "$1"; }

sed 's/^socket_mode = .*/socket_mode = "0666"/' mailkms.conf > open.conf
refuses open.conf
t "a socket_mode that lets others in is refused" \
  '[[ $rc == 1 ]] && grep -q "keystore.socket_mode at line 4, column 15: expected a mode that gives others nothing" err'

chmod 770 db
refuses mailkms.conf
t "a database directory its group can write is refused, saying which and how to fix it" \
  '[[ $rc == 1 ]] && grep -qF "the database'"'"'s directory $work/db is writable by its group: only mailkms-keystored'"'"'s user may write it (chmod go-w $work/db)" err'
chmod 700 db

chmod 664 db/keystore.db
refuses mailkms.conf
t "a database file its group can write is refused" '[[ $rc == 1 ]] && grep -qF "the database $work/db/keystore.db is writable by its group" err'
chmod 600 db/keystore.db

chmod 777 run
refuses mailkms.conf
t "a socket directory everyone can write is refused" '[[ $rc == 1 ]] && grep -qF "the socket'"'"'s directory $work/run is writable by everyone" err'
chmod 755 run

chown nobody db/keystore.db
refuses mailkms.conf
t "a database that belongs to someone else is refused" '[[ $rc == 1 ]] && grep -qF "the database $work/db/keystore.db belongs to nobody" err'
chown root db/keystore.db

check "the daemon starts when only it can write its files" start_keystore sealed
check "its socket has the configured mode, and nothing is left beside it" \
  bash -c '[ "$(stat -c %a run/keystore.sock)" = 660 ] && [ "$(ls -A run)" = keystore.sock ]'
check "mailkmsctl talks to it" bash -c "'$ctl' status | grep -qx sealed"

# Someone else's socket where mailkmsctl looks for the keystore: a server
# run as nobody that records whatever it is sent.
mkdir -m 755 foreign
chown nobody foreign
chmod 755 "$work"
cat > foreign/serve.py <<'PY'
import socket, sys
path, record = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    got = b""
    try:
        while not got.endswith(b"\n"):
            chunk = c.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    c.close()
    with open(record, "ab") as f:
        f.write(b"connection, %d bytes: %s\n" % (len(got), got.strip()))
PY
setpriv --reuid nobody --regid nogroup --clear-groups /usr/bin/python3 foreign/serve.py "$work/foreign/keystore.sock" "$work/foreign/received" &
foreign_pid=$!
for _ in $(seq 200); do [ -S foreign/keystore.sock ] && break; sleep 0.05; done
sed "s|^socket = .*|socket = \"$work/foreign/keystore.sock\"|" mailkms.conf > foreign.conf
run env MAILKMS_CONFIG="$work/foreign.conf" "$ctl" unseal --passphrase-file unseal.pw
for _ in $(seq 200); do [ -s foreign/received ] && break; sleep 0.05; done
t "mailkmsctl refuses a socket served by another user than keystore.user (mailkms-keystore) or root" \
  '[[ $rc != 0 ]] && grep -q "$work/foreign/keystore.sock is served by uid $(id -u nobody), not by mailkms-keystore (.*) or root: nothing was sent to it" err'
t "and sent it nothing: not the passphrase, not a byte" \
  'grep -qx "connection, 0 bytes: " foreign/received && ! grep -qF "$(cat unseal.pw)" foreign/received'

kill "$keystore_pid"
wait "$keystore_pid"
keystore_pid=
finish
