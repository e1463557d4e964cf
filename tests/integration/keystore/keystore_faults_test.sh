#!/usr/bin/env bash
# The keystore under faults: the daemon killed with -9 in the middle of a
# bulk add, a full disk, a read-only file system. After each, the database
# opens, every user is either fully enrolled or absent, and the audit log
# verifies. Needs root (it mounts small tmpfs file systems).
# Usage: keystore_faults_test.sh MAILKMS_KEYSTORED MAILKMSCTL
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$(dirname "$(realpath "$0")")/../mailkms-daemons.sh"
keystore_log=daemon.log
[[ $# == 2 ]] || { echo "usage: keystore_faults_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
work=$(mktemp -d)
mnt=$work/disk
keystore_pid=
cleanup() {
  [ -n "$keystore_pid" ] && kill -9 "$keystore_pid" 2>/dev/null
  wait 2>/dev/null
  mountpoint -q "$mnt" && umount -l "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2


mkdir -p "$mnt"
if ! mount -t tmpfs -o size=64m,mode=0700 tmpfs "$mnt"; then
  echo "FAIL - cannot mount a tmpfs (this test needs root)"
  echo "0 passed, 1 failed"
  exit 1
fi
cat > mailkms.conf <<CONF
[keystore]
database = "$mnt/keystore.db"
socket = "$work/keystore.sock"
lock_memory = false
encryption_key_type = "ec-p256"
signing_key_type = "ec-p256"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
echo "carol's long admin password" > admin.pw
echo "the unseal passphrase of this keystore" > unseal.pw

ready() { start_keystore sealed && "$ctl" unseal --passphrase-file unseal.pw > /dev/null && "$ctl" login carol --password-file admin.pw > /dev/null; }

"$ctl" init --admin carol --admin-password-file admin.pw --passphrase-file unseal.pw > /dev/null
check "the daemon starts" ready
"$ctl" ca init --id root > /dev/null && "$ctl" ca add-subordinate --id issuing --parent root > /dev/null

# 1. kill -9 in the middle of a bulk add of 1,000 users.
seq -f "user%g@example.org" 1 1000 > users.txt
"$ctl" user add --file users.txt > bulk.out 2>&1 &
bulk_pid=$!
for _ in $(seq 100); do
  [ "$("$ctl" user list --limit 100000 2>/dev/null | wc -l)" -ge 50 ] && break
  sleep 0.1
done
kill_keystore
wait "$bulk_pid"
check "the bulk add saw the daemon die" grep -q "unavailable" bulk.out
check "the daemon starts again after kill -9" ready
"$ctl" user list --limit 100000 > listed.txt
enrolled=$(wc -l < listed.txt)
check "some users were enrolled, not all ($enrolled)" test "$enrolled" -ge 50 -a "$enrolled" -lt 1000
incomplete=0
while read -r address; do
  shown=$("$ctl" user show "$address")
  [ "$(grep -c '^certificate:' <<< "$shown")" = 2 ] || incomplete=$((incomplete + 1))
done < <(shuf -n 25 listed.txt)
check "every enrolled user has both certificates (25 sampled)" test "$incomplete" = 0
check "the audit log verifies after kill -9" bash -c "'$ctl' audit verify | grep -q '^intact'"
check "the rest of the bulk add completes" bash -c "'$ctl' user add --file users.txt | grep -q '$((1000 - enrolled)) added, $enrolled already present, 0 failed'"

# 2. A full disk: a clear error, nothing half-written. SQLite reuses the
# room its journal already has, so users are added until the disk says no.
dd if=/dev/zero of="$mnt/filler" bs=64k 2> /dev/null
victim=
for i in $(seq 2000); do
  if ! "$ctl" user add "full$i@example.org" > out 2>&1; then
    victim="full$i@example.org"
    break
  fi
done
check "on a full disk a user is refused, and the error says why" bash -c "[ -n '$victim' ] && grep -qi 'disk is full' out"
check "nothing of the refused user was written" bash -c "! '$ctl' user show '$victim'"
check "the audit log verifies after the full disk" bash -c "'$ctl' audit verify | grep -q '^intact'"
rm -f "$mnt/filler"
check "with room again, the user is added" "$ctl" user add "$victim"

# 3. A read-only file system: the daemon refuses to start, saying why.
stop_keystore
mount -o remount,ro "$mnt"
"$keystored" --config mailkms.conf > /dev/null 2> readonly.log
check "on a read-only database the daemon exits with a clear error" grep -qiE "read-?only" readonly.log
mount -o remount,rw "$mnt"
check "back on a writable disk it serves again" ready
check "and the audit log still verifies" bash -c "'$ctl' audit verify | grep -q '^intact'"

finish
