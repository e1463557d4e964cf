#!/usr/bin/env bash
# Rotating the master key of a running keystore (`mailkmsctl rekey`): after
# it everything works as before, the same key file unseals after a restart,
# the rotation is audited, and rows copied from a backup taken before it (a
# barrier record, authenticated rows) are refused.
# Usage: keystore_rekey_test.sh MAILKMS_KEYSTORED MAILKMSCTL
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$(dirname "$(realpath "$0")")/../mailkms-daemons.sh"
[[ $# == 2 ]] || { echo "usage: keystore_rekey_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
# A prefix of our own: nothing that cleans up /tmp/tmp.* takes it.
work=$(mktemp -d "${TMPDIR:-/tmp}/mailkms-rekey.XXXXXXXX")
trap 'stop_daemons; rm -rf "$work"' EXIT
cd "$work" || exit 2

db() { sqlite3 -cmd ".timeout 5000" keystore.db "$@"; }
# copy_from_backup KEY: what a writer restoring one row of an old backup does
copy_from_backup() {
  db "ATTACH 'backup.db' AS old; UPDATE kv SET value = (SELECT value FROM old.kv WHERE key = '$1') WHERE key = '$1'"
}
# unchanged_since_backup LIKE: how many rows under LIKE still hold what they held in the backup
unchanged_since_backup() {
  db "ATTACH 'backup.db' AS old; SELECT count(*) FROM kv JOIN old.kv AS o USING (key) WHERE kv.value = o.value AND kv.key LIKE '$1'"
}
logged() { grep -qF "integrity check failed in $1" keystore.log; }

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
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/carol.session
echo "carol's long admin password" > carol.pw
echo "alice's recovery password" > p12.pw
chmod 600 ./*.pw
"$ctl" init --admin carol --admin-password-file carol.pw --key-file master.key > /dev/null
cp master.key master.key.before
start_keystore || { echo "FAIL - the keystore does not start"; cat keystore.log; exit 1; }
"$ctl" login carol --password-file carol.pw > /dev/null
"$ctl" ca init --id root --name "Example Root CA" --key-type ec-p256 > /dev/null
"$ctl" ca add-subordinate --id issuing --parent root --key-type ec-p256 > /dev/null
"$ctl" user add alice@example.org bob@example.org > /dev/null

run "$ctl" status
t "a new keystore's master key is generation 1" '[ $rc = 0 ] && grep -qx "master key generation 1, never rotated" out'
alice_key=$(db "SELECT key FROM kv WHERE key LIKE 'keys/alice@example.org/enc-%' LIMIT 1")
db ".backup backup.db"

run "$ctl" rekey
t "rekey rotates the master key" '[ $rc = 0 ] && grep -q "^master key rotated: generation 2" out'
run "$ctl" status
t "status shows the new generation and when" '[ $rc = 0 ] && grep -qE "^master key generation 2, rotated 20[0-9-]+ [0-9:]+Z$" out'
t "the key file is the same" 'cmp -s master.key master.key.before'
t "every barrier record was encrypted again" '[ "$(unchanged_since_backup "keys/%")" = 0 ] && [ -n "$alice_key" ]'
t "every authenticated row was tagged again" \
  '[ "$(unchanged_since_backup "users/%")" = 0 ] && [ "$(unchanged_since_backup "admins/%")" = 0 ] && [ "$(unchanged_since_backup "%manifest%")" = 0 ]'
run "$ctl" audit show --limit 1000
t "the rotation is audited with its administrator and generation" \
  '[ $rc = 0 ] && grep -E " admin:carol +rekey +master key +ok " out | grep -q "generation 2"'

check_everything_works() {
  run "$ctl" user show alice@example.org
  t "$1: users are found" '[ $rc = 0 ] && grep -q "^certificate: .* encryption" out'
  rm -f alice.p12
  run "$ctl" recover alice@example.org --out alice.p12 --password-file p12.pw
  t "$1: a private key is recovered" '[ $rc = 0 ] && [ -s alice.p12 ]'
  t "$1: and openssl opens the PKCS#12" \
    'openssl pkcs12 -in alice.p12 -passin file:p12.pw -nodes -nocerts 2> /dev/null | grep -q "BEGIN PRIVATE KEY"'
  run "$ctl" audit verify
  t "$1: the audit log verifies" '[ $rc = 0 ] && grep -q "intact" out'
}
check_everything_works "after the rotation"

stop_daemons
start_keystore || { echo "FAIL - the keystore does not start again"; cat keystore.log; exit 1; }
t "the same key file unseals after a restart" '"$ctl" status | grep -qx "master key generation 2, rotated .*"'
run "$ctl" login carol --password-file carol.pw
t "and carol logs in" '[ $rc = 0 ]'
check_everything_works "after a restart"

# Rows copied back from the backup taken before the rotation.
copy_from_backup "$alice_key"
rm -f alice.p12
run "$ctl" recover alice@example.org --out alice.p12 --password-file p12.pw
t "a barrier record from before the rotation opens nothing" '[ $rc != 0 ] && [ ! -s alice.p12 ]'
copy_from_backup "users/alice@example.org"
run "$ctl" user show alice@example.org
t "a user's row from before the rotation is refused" '[ $rc != 0 ] && logged "user-show: users/alice@example.org: the row was changed"'
copy_from_backup "admins/carol"
run "$ctl" login carol --password-file carol.pw
t "an administrator's row from before the rotation logs no one in" '[ $rc != 0 ] && logged "login: admins/carol: the row was changed"'

# The seal from before the rotation opens the old key, which opens nothing.
stop_daemons
current_seal=$(db "SELECT hex(value) FROM kv WHERE key = 'core/seal'")
copy_from_backup "core/seal"
t "the seal from before the rotation does not unseal" \
  '! start_keystore && grep -q "cannot unseal with .*: core/audit-head: sealed record failed authentication" keystore.log'
stop_daemons
db "UPDATE kv SET value = X'$current_seal' WHERE key = 'core/seal'"

finish
