#!/usr/bin/env bash
# Two mailkms-keystored instances on one PostgreSQL database, both serving:
# what one does, the other sees; one killed with -9 in the middle of a bulk
# add leaves nothing half-done and the audit chain whole; the connection
# string's password is never logged.
# Usage: keystore_instances_test.sh MAILKMS_KEYSTORED MAILKMSCTL
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
[[ $# == 2 ]] || { echo "usage: keystore_instances_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
[ -n "${MAILKMS_TEST_POSTGRESQL:-}" ] || { echo "MAILKMS_TEST_POSTGRESQL is not set: run it through ctest" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
work=$(mktemp -d)
pid_a= pid_b= bulk=
trap 'kill -KILL $pid_a $pid_b $bulk 2> /dev/null; wait 2> /dev/null; rm -rf "$work"' EXIT
cd "$work" || exit 2

dbname=mailkms_instances_$$
database=$(pg_test_database "$dbname") || exit 1
# A password in the string, as a careless administrator would write it: the
# test cluster trusts loopback and ignores it, and no log may show it.
secret=Pw$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
for instance in a b; do
  mkdir "$instance"
  cat > "$instance/mailkms.conf" <<CONF
[keystore]
database = "$database password=$secret"
socket = "$work/$instance/keystore.sock"
socket_mode = "0600"
lock_memory = false
gateway_users = [$(id -u)]
unseal_key_file = "$work/master.key"
audit_checkpoint_file = "$work/$instance/audit-checkpoints"
CONF
done

# on INSTANCE CMD…: CMD with mailkmsctl talking to INSTANCE, as its own
# administrator's session.
on() {
  local instance=$1
  shift
  MAILKMS_CONFIG=$work/$instance/mailkms.conf MAILKMS_SESSION_FILE=$work/$instance/session "$@"
}
# start INSTANCE: keystored for INSTANCE, unsealed with the shared key file.
start() {
  keystore_config=$work/$1/mailkms.conf keystore_log=$work/$1/keystore.log MAILKMS_CONFIG=$work/$1/mailkms.conf \
    start_keystore || return 1
  eval "pid_$1=$keystore_pid"
}
users_on() { on "$1" "$ctl" user list 2> /dev/null | grep -c '@'; }
export -f on
export work ctl

head -c 24 /dev/urandom | base64 > admin.pw
head -c 24 /dev/urandom | base64 > p12.pw
chmod 600 admin.pw p12.pw
check "init fills the PostgreSQL database" on a "$ctl" init --admin admin --admin-password-file admin.pw --key-file master.key
check "init refuses a database that holds a keystore" \
  bash -c '! on b "$ctl" init --admin admin --admin-password-file admin.pw --key-file other.key 2> init.err && grep -q "already holds records" init.err'
check "instance a starts and unseals on its own" start a
check "instance b starts and unseals on its own" start b
check "an administrator logs in to each" \
  bash -c 'on a "$ctl" login admin --password-file admin.pw && on b "$ctl" login admin --password-file admin.pw'
check "a CA made through a" bash -c 'on a "$ctl" ca init --id root --name "Corp Root CA" &&
  on a "$ctl" ca add-subordinate --id issuing --parent root --name "Corp Issuing CA"'
check "users added through a" on a "$ctl" user add alice@example.org bob@example.org
check "are listed by b at once" test "$(users_on b)" = 2
on b "$ctl" user show alice@example.org > alice.b
check "b shows alice's certificates as a issued them" bash -c "grep -q encryption alice.b && grep -q signing alice.b"

on b "$ctl" recover alice@example.org --out alice.p12 --password-file p12.pw > recover.out 2>&1
check "alice's key recovered through b opens with her password" \
  openssl pkcs12 -in alice.p12 -passin file:p12.pw -nokeys -clcerts -out alice.pem
serial=$(openssl x509 -in alice.pem -noout -serial 2> /dev/null | sed 's/^serial=//')
check "it is the certificate a issued" grep -qi "$serial" alice.b

printf 'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nsigned through b\r\n' > note.eml
openssl pkcs12 -in alice.p12 -passin file:p12.pw -nokeys -cacerts -out chain.pem 2> /dev/null
check "b signs as alice, and openssl verifies it" \
  bash -c 'on b "$ctl" message sign --as alice@example.org --in note.eml |
    openssl cms -verify -CAfile chain.pem -purpose smimesign | grep -q "signed through b"'
check "bob revoked through a" bash -c 'on a "$ctl" revoke bob@example.org --reason keyCompromise | grep -q "^revoked "'
check "b no longer signs as bob" \
  bash -c '! on b "$ctl" message sign --as bob@example.org --in note.eml > /dev/null'

# kill -9 of a in the middle of a bulk add: each user is whole or absent.
for i in $(seq 1 200); do echo "bulk$i@example.org"; done > bulk.list
on a "$ctl" user add $(cat bulk.list) > bulk.out 2>&1 &
bulk=$!
end=$((SECONDS + 60))
until [ "$(users_on b)" -ge 5 ] || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
kill -KILL "$pid_a"
wait "$pid_a" 2> /dev/null
pid_a=
wait "$bulk" 2> /dev/null
bulk=
listed=$(users_on b)
check "a was killed mid-way (2 < $listed users < 202)" test "$listed" -gt 2 -a "$listed" -lt 202
check "every user b lists is whole: both certificates" bash -c '
  for u in $(on b "$ctl" user list | grep -o "bulk[0-9]*@example.org"); do
    on b "$ctl" user show "$u" > show.out || exit 1
    grep -q encryption show.out && grep -q signing show.out || exit 1
  done'
check "b serves on: a user added through it" on b "$ctl" user add carol@example.org
check "the audit chain verifies through b" bash -c 'on b "$ctl" audit verify | grep -q "^intact"'
check "a starts again" start a
check "and sees what b did" on a "$ctl" user show carol@example.org
check "the audit chain verifies through a" bash -c 'on a "$ctl" audit verify | grep -q "^intact"'
check "one chain: both instances' records in it" bash -c "
  on a '$ctl' audit show > audit.out &&
  grep -q 'carol@example.org' audit.out && grep -q 'bob@example.org' audit.out"
# The master key rotated through a: b holds the old one, and must neither
# write under it (what it wrote would open and authenticate nowhere) nor
# take the new tags for tampering. It seals itself, and unseals again from
# its key file (the same secret), under the new key.
check "the master key rotated through a" bash -c 'on a "$ctl" rekey | grep -q "^master key rotated: generation 2"'
run bash -c 'on b "$ctl" user add dave@example.org'
t "b refuses to write under the old key" '[ $rc != 0 ] && grep -q "rotated through another instance" err'
t "dave was not written" '! on a "$ctl" user show dave@example.org > /dev/null 2>&1'
t "b says why, and unsealed again with its key file" \
  'grep -q "no longer the database.s (rotated through another instance); unsealed again with .*master.key, under the new key" b/keystore.log'
t "b reported no tampering" '! grep -q "integrity check failed" b/keystore.log'
check "b writes under the new key" on b "$ctl" user add dave@example.org
check "which a reads: dave's key recovered through a" bash -c '
  on a "$ctl" recover dave@example.org --out dave.p12 --password-file p12.pw > /dev/null &&
  openssl pkcs12 -in dave.p12 -passin file:p12.pw -nokeys -clcerts | grep -q "BEGIN CERTIFICATE"'
check "b's status shows the new generation" bash -c 'on b "$ctl" status | grep -q "^master key generation 2"'
check "the audit chain verifies after the rotation" bash -c 'on b "$ctl" audit verify | grep -q "^intact"'
check "the connection string's password is in no log" bash -c "! grep -rqF '$secret' a/keystore.log b/keystore.log recover.out bulk.out"
check "the log names the database without it" grep -q "records in PostgreSQL database $dbname on 127.0.0.1 port" a/keystore.log

finish
