#!/usr/bin/env bash
# `mailkmsctl storage migrate`: an SQLite keystore copied into PostgreSQL,
# checked, and served from there; the source left byte for byte as it was.
# Usage: keystore_migrate_test.sh MAILKMS_KEYSTORED MAILKMSCTL
# Needs MAILKMS_TEST_POSTGRESQL, the test cluster's conninfo file
# (tests/integration/postgresql.sh; CTest starts the cluster).
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../postgresql.sh
. "$here/../postgresql.sh"
[[ $# == 2 ]] || { echo "usage: keystore_migrate_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
[ -n "${MAILKMS_TEST_POSTGRESQL:-}" ] || { echo "MAILKMS_TEST_POSTGRESQL is not set: run it through ctest" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
work=$(mktemp -d)
trap 'stop_keystore; rm -rf "$work"' EXIT
cd "$work" || exit 2

dbname=mailkms_migrate_$$
target=$(pg_test_database "$dbname") || exit 1
cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
lock_memory = false
gateway_users = [$(id -u)]
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
head -c 24 /dev/urandom | base64 > admin.pw
echo "the unseal passphrase of this keystore" > unseal.pw
echo "not the passphrase" > wrong.pw
chmod 600 ./*.pw
# Rows in the target; none while the schema is not even there.
rows() { pg_sql "$dbname" "SELECT count(*) FROM kv" 2> /dev/null || echo 0; }

"$ctl" init --admin admin --admin-password-file admin.pw --passphrase-file unseal.pw > /dev/null
start_keystore sealed && "$ctl" unseal --passphrase-file unseal.pw > /dev/null &&
  "$ctl" login admin --password-file admin.pw > /dev/null &&
  "$ctl" ca init --id root --name "Corp Root CA" > /dev/null &&
  "$ctl" ca add-subordinate --id issuing --parent root --name "Corp Issuing CA" > /dev/null &&
  "$ctl" user add alice@example.org bob@example.org > /dev/null &&
  "$ctl" revoke bob@example.org --reason keyCompromise > /dev/null || { echo "setting up the SQLite keystore failed" >&2; exit 1; }
"$ctl" user show alice@example.org | grep '^certificate: ' | sort > alice.before
stop_keystore
sha256sum keystore.db* > source.sha256

run "$ctl" storage migrate --to "$target" --passphrase-file wrong.pw
t "a wrong passphrase is refused before anything is copied" \
  '[[ $rc == 1 ]] && grep -q "the secret given: that does not open the seal" err && [ "$(rows)" = 0 ]'
run "$ctl" storage migrate --to "$target" --passphrase-file unseal.pw
t "the keystore is copied into PostgreSQL, each row read back equal, and its audit chain verifies there" \
  '[[ $rc == 0 ]] && grep -Eq "^copied [0-9]+ rows \([0-9]+ bytes\) from $work/keystore.db to PostgreSQL database $dbname on 127.0.0.1 port [0-9]+; each read back equal$" out &&
   grep -Eq "^audit chain intact in the copy: [0-9]+ records$" out'
check "the source is byte for byte as it was" sha256sum -c source.sha256
run "$ctl" storage migrate --to "$target" --passphrase-file unseal.pw
t "a second copy into the same database is refused" '[[ $rc == 1 ]] && grep -q "already holds records" err'
run "$ctl" storage migrate --to "$work/keystore.db" --passphrase-file unseal.pw
t "a copy onto the source itself is refused" '[[ $rc == 2 ]] && grep -q "the database the configuration uses" err'
run "$ctl" storage migrate --to "$work/copy.db" --passphrase-file unseal.pw
t "a copy into a new SQLite file works too" '[[ $rc == 0 ]] && grep -q "^audit chain intact" out && [ "$(stat -c %a copy.db)" = 600 ]'

# Served from PostgreSQL: what the SQLite keystore held, all of it.
sed -i "s|^database = .*|database = \"$target\"|" mailkms.conf
check "keystored starts on the copy" start_keystore sealed
check "and unseals with the same passphrase" "$ctl" unseal --passphrase-file unseal.pw
check "the administrator logs in" "$ctl" login admin --password-file admin.pw
"$ctl" user show alice@example.org | grep '^certificate: ' | sort > alice.after
check "alice's certificates are the ones she had" bash -c "[ -s alice.before ] && cmp alice.before alice.after"
printf 'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nsigned from the copy\r\n' > note.eml
check "alice's key signs from the copy, and openssl verifies it" bash -c "
  '$ctl' message sign --as alice@example.org --in note.eml > signed.eml &&
  openssl cms -verify -noverify -in signed.eml | grep -q 'signed from the copy'"
check "bob is still revoked" bash -c "! '$ctl' message sign --as bob@example.org --in note.eml > /dev/null"
check "the audit chain is intact" bash -c "'$ctl' audit verify | grep -q '^intact'"
check "and holds the source's history" bash -c "'$ctl' audit show > audit.out && grep -q 'revoke  bob@example.org' audit.out"
stop_keystore
sed -i "s|^database = .*|database = \"$work/keystore.db\"|" mailkms.conf
check "the source starts again" start_keystore sealed
check "and serves what it held" bash -c "'$ctl' unseal --passphrase-file unseal.pw && '$ctl' login admin --password-file admin.pw &&
  '$ctl' user show alice@example.org > /dev/null"

finish
