#!/usr/bin/env bash
# The audit chain anchored outside its database, and kept from outsiders'
# floods. A writer who puts back an older copy of the database, or cuts
# the chain's end and restores the head that went with it, leaves a chain
# that verifies on its own: the signed checkpoints in the keystore's file
# (and in a copy kept elsewhere) say it was rolled back. Events anyone can
# cause (mail to the enrollment address without a token, forged replies,
# requests from peers that are no gateway) are counted past a few a
# minute, not written one by one.
# Usage: keystore_audit_anchor_test.sh MAILKMS_KEYSTORED MAILKMSCTL TEMPLATES_DIR
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$(dirname "$(realpath "$0")")/../mailkms-daemons.sh"
[[ $# == 3 ]] || { echo "usage: keystore_audit_anchor_test.sh MAILKMS_KEYSTORED MAILKMSCTL TEMPLATES_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
templates=$(realpath "$3")
work=$(mktemp -d)
trap 'stop_daemons; rm -rf "$work"' EXIT
cd "$work" || exit 2

db() { sqlite3 -cmd ".timeout 5000" keystore.db "$@"; }
value() { db "SELECT hex(value) FROM kv WHERE key = '$1'"; }
last_record() { "$ctl" audit show --limit 100000 | tail -n 1 | cut -d' ' -f1; }
restart_keystore() {
  stop_daemons
  start_keystore
}

# flood.py SOCKET KIND COUNT: a gateway passing on COUNT replies to the
# enrollment address, each from another sender, as the gateway passes
# them on: KIND "bare" carries no token (""), "forged" a token-shaped string. Pipelined 32 at a time (the
# keystore reads no further ahead). Prints how many were refused.
cat > flood.py <<'PY'
import json, socket, sys
path, kind, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
reader = s.makefile("rb")
refused = 0
for start in range(0, count, 32):
    batch = range(start, min(count, start + 32))
    lines = []
    for i in batch:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        token = "MKMS-" + "".join(alphabet[(i >> (5 * k)) & 31] for k in range(26)) if kind == "forged" else ""
        params = {"from": f"sender{i}@flood.example", "token": token, "password": ""}
        lines.append(json.dumps({"id": i, "op": "redeem-token", "params": params}))
    s.sendall(("\n".join(lines) + "\n").encode())
    for _ in batch:
        answer = json.loads(reader.readline())
        if answer.get("result", {}).get("ok") is not True:
            refused += 1
print(refused)
PY

cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
lock_memory = false
gateway_users = [$(id -u)]
encryption_key_type = "ec-p256"
signing_key_type = "ec-p256"
mail_command = ["/bin/true"]
mail_from = "mailkms@example.org"
enrollment_address = "enroll@example.org"
templates = "$templates"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/carol.session
echo "carol's long admin password" > carol.pw
chmod 600 carol.pw
"$ctl" init --admin carol --admin-password-file carol.pw --key-file master.key > /dev/null
start_keystore || { echo "FAIL - the keystore does not start"; cat keystore.log; exit 1; }
"$ctl" login carol --password-file carol.pw > /dev/null
"$ctl" ca init --id root --name "Example Root CA" --key-type ec-p256 > /dev/null
"$ctl" ca add-subordinate --id issuing --parent root --key-type ec-p256 > /dev/null
"$ctl" user add alice@example.org > /dev/null

# ---- Checkpoints: written, and checkable by anyone with the public key ----
run "$ctl" audit checkpoint
cp out made.json
t "a checkpoint names the chain's newest record" \
  '[ $rc = 0 ] && grep -q "\"sequence\":$(last_record)," out'
t "and is appended to the file beside the database, as the log line says" \
  '[ "$(tail -n 1 audit-checkpoints)" = "$(cat made.json)" ] && grep -qF "audit checkpoint $(cat made.json)" keystore.log'
"$ctl" audit key > audit-key.pem
line=$(tail -n 1 audit-checkpoints)
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$line" "$1"; }
printf 'mailkms-audit-checkpoint-v1 %s %s %s' "$(field sequence)" "$(field hash)" "$(field time)" > signed.txt
field signature | base64 -d > signature.bin
run openssl pkeyutl -verify -pubin -inkey audit-key.pem -rawin -in signed.txt -sigfile signature.bin
t "openssl verifies a checkpoint with the key audit key prints" '[ $rc = 0 ] && grep -q "Signature Verified Successfully" out'
run "$ctl" audit verify
t "an untouched log holds its checkpoints" \
  '[ $rc = 0 ] && grep -q "^intact: .* holds the [0-9]* newest checkpoint(s) of $work/audit-checkpoints" out'

# ---- Floods of what anyone can send are counted, not written one by one ------
records_before=$(last_record)
log_before=$(stat -c %s keystore.log)
run python3 flood.py keystore.sock bare 10000
t "10,000 replies without a token are all refused" '[ $rc = 0 ] && [ "$(cat out)" = 10000 ]'
run python3 flood.py keystore.sock forged 2000
t "2,000 forged token-shaped replies from 2,000 senders are all refused" '[ $rc = 0 ] && [ "$(cat out)" = 2000 ]'
"$ctl" audit show --limit 100000 > records
records_after=$(tail -n 1 records | cut -d' ' -f1)
t "the audit log grows by 20 records of each kind and one count apiece" \
  '[ $((records_after - records_before)) -le 42 ] &&
   grep -q "redeem-token  1000 or more subject(s)  ignored  9980 more like this" records &&
   grep -q "redeem-token  1000 or more subject(s)  refused  1980 more like this" records'
t "and the daemon's log by a few lines at most" '[ $(($(stat -c %s keystore.log) - log_before)) -lt 4096 ]'
run "$ctl" status
t "status counts what was not recorded" '[ $rc = 0 ] && grep -q "^audit: 11960 event(s) anyone can cause counted" out'
run "$ctl" audit verify
t "and the chain stays whole" '[ $rc = 0 ] && grep -q "^intact" out'

# ---- A database writer cuts the chain's end and restores its head --------
sqlite3 keystore.db ".backup backup.db"  # taken as any administrator would, to be put back below
cut_at=$(last_record)
head=$(value core/audit-head)
"$ctl" user add bob@example.org > /dev/null
"$ctl" audit checkpoint > /dev/null
cp audit-checkpoints shipped-checkpoints  # the copy an administrator keeps elsewhere
sqlite3 keystore.db ".backup current.db"
db "DELETE FROM kv WHERE key LIKE 'audit/%' AND key > printf('audit/%020d', $cut_at)"
db "UPDATE kv SET value = X'$head' WHERE key = 'core/audit-head'"
run "$ctl" audit verify
t "a chain cut at its end, its head restored, is found by the checkpoints" \
  '[ $rc != 0 ] && grep -q "^BROKEN: the log ends at record $cut_at, but the checkpoint of record [0-9]* made .* names a later one" out'
put_back_database() {  # put_back_database COPY: stops the keystore, restores COPY whole, starts it
  stop_daemons
  rm -f keystore.db-wal keystore.db-shm
  cp "$1" keystore.db
  start_keystore && "$ctl" login carol --password-file carol.pw > /dev/null
}
put_back_database current.db || { echo "FAIL - the keystore does not start again"; cat keystore.log; exit 1; }
run "$ctl" audit verify
t "the chain put back as it was holds its checkpoints again" '[ $rc = 0 ] && grep -q "^intact" out'

# ---- An older copy of the whole database put back ---------------------------
put_back_database backup.db || { echo "FAIL - the keystore does not start on the older copy"; cat keystore.log; exit 1; }
t "at start the keystore says its database is older than its checkpoints" \
  'grep -q "integrity check failed: the audit log and $work/audit-checkpoints disagree: the log ends at record [0-9]*, but the checkpoint of record [0-9]* made .* names a later one" keystore.log'
run "$ctl" audit verify --checkpoint shipped-checkpoints
# (The restart and the login wrote records past some checkpoints again.)
t "so does a copy of the checkpoints kept elsewhere" \
  '[ $rc != 0 ] && grep -q "^BROKEN: .*checkpoint of record [0-9]* made .* names\(: the log was rolled back\| a later one\)" out'
for n in 1 2 3 4 5 6 7 8; do "$ctl" user add "user$n@example.org" > /dev/null; done
run "$ctl" audit verify --checkpoint shipped-checkpoints
t "a chain rolled back and written again is found too" \
  '[ $rc != 0 ] && grep -q "^BROKEN: record [0-9]* is not the one the checkpoint of record [0-9]* made .* names: the log was rolled back and written again" out'

# ---- A checkpoint line the audit key did not sign ------------------------------
tail -n 1 shipped-checkpoints | sed 's/"time":\([0-9]*\)/"time":1\1/' > forged-checkpoints  # signed for another time
run "$ctl" audit verify --checkpoint forged-checkpoints
t "is named as such" '[ $rc != 0 ] && grep -q "^BROKEN: the checkpoint of record [0-9]* made .* is not signed by this keystore.s audit key" out'

finish
