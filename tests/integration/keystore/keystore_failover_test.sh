#!/usr/bin/env bash
# mailkms-keystored on PostgreSQL through its failover: a primary and a
# synchronous streaming-replication standby (pg_basebackup on loopback), and
# a libpq multi-host connection string that asks for the one taking writes.
# The primary is stopped as a crash would, the standby promoted: the
# keystored that kept running serves again within seconds, from the new
# primary, and has lost nothing it acknowledged; the audit chain, and the
# checkpoint signed before the failover, verify there.
# Usage: keystore_failover_test.sh MAILKMS_KEYSTORED MAILKMSCTL
# Starts its own two clusters (tests/integration/postgresql.sh).
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../postgresql.sh
. "$here/../postgresql.sh"
[[ $# == 2 ]] || { echo "usage: keystore_failover_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
work=$(mktemp -d)
trap 'kill_keystore; (cd / && pg_stop "$work/primary"; pg_stop "$work/standby"); rm -rf "$work"' EXIT
cd "$work" || exit 2

# A request that hangs is a failure, not a hung test.
ctl() { timeout 20 "$ctl" "$@"; }
# The clusters' owner may not enter the work directory (0700, root's).
pg() { (cd / && "$@"); }
port_of() { sed -n 's/.*port=\([0-9]*\).*/\1/p' "$1/conninfo"; }
# on_primary|on_standby SQL [DATABASE]: the rows SQL gives there.
on_primary() { psql "$(cat primary/conninfo) dbname=${2:-postgres}" -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
on_standby() { psql "$(cat standby/conninfo) dbname=${2:-postgres}" -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# The end of keystored's log, for a failure to be understood.
show_log() { echo "  the end of keystore.log:" >&2; tail -n 15 keystore.log | sed 's/^/    /' >&2; }

pg pg_start "$work/primary" || exit 1
on_primary "CREATE DATABASE mailkms" || exit 1
pg pg_standby "$work/primary" "$work/standby" mailkms-standby || exit 1
# Synchronous from here on: a commit is acknowledged once the standby has
# its WAL. Set on the primary only, after the base backup: the promoted
# standby, with no standby of its own, must not wait for one.
on_primary "ALTER SYSTEM SET synchronous_standby_names = '*'" && on_primary "SELECT pg_reload_conf()" > /dev/null || exit 1
replication() { on_primary "SELECT application_name, state, sync_state FROM pg_stat_replication"; }
end=$((SECONDS + 30))
until [ "$(replication)" = "mailkms-standby|streaming|sync" ] || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
check "the standby streams from the primary, synchronously" test "$(replication)" = "mailkms-standby|streaming|sync"
check "and is in recovery" test "$(on_standby "SELECT pg_is_in_recovery()")" = t

p1=$(port_of primary)
p2=$(port_of standby)
cat > mailkms.conf <<CONF
[keystore]
database = "host=127.0.0.1,127.0.0.1 port=$p1,$p2 dbname=mailkms user=postgres target_session_attrs=read-write connect_timeout=2"
socket = "$work/keystore.sock"
socket_mode = "0600"
lock_memory = false
gateway_users = [$(id -u)]
unseal_key_file = "$work/master.key"
audit_checkpoint_file = "$work/audit-checkpoints"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@example.org bob@example.org || exit 1
check "keystored serves from the two servers' string" \
  grep -q "records in PostgreSQL database mailkms on 127.0.0.1,127.0.0.1 port $p1,$p2\$" keystore.log

printf 'From: alice@example.org\r\nTo: carol@example.org\r\nSubject: hi\r\n\r\nsigned after the failover\r\n' > note.eml
ctl recover alice@example.org --out alice.p12 --password-file p12.pw > /dev/null 2>&1
openssl pkcs12 -in alice.p12 -passin file:p12.pw -nokeys -cacerts -out chain.pem 2> /dev/null
check "the issuing chain exported, for openssl to verify with" grep -q 'BEGIN CERTIFICATE' chain.pem

# Acknowledged before the failover: each of these answered success. The
# last ones come just before the crash: only synchronous replication keeps
# them (a commit is acknowledged once the standby has flushed its WAL, not
# once it has replayed it).
before=(alice@example.org bob@example.org)
for i in 1 2 3 4 5; do
  ctl user add "user$i@example.org" > /dev/null && before+=("user$i@example.org")
done
check "five more users added" test "${#before[@]}" = 7
check "bob revoked" bash -c "'$ctl' revoke bob@example.org --reason keyCompromise | grep -q '^revoked '"
check "an audit checkpoint signed, of the chain's newest record" bash -c "'$ctl' audit checkpoint > checkpoint.json"
signed=$(sed -n 's/.*"sequence":\([0-9]*\).*/\1/p' checkpoint.json)
# The primary dies; until the standby is promoted no server takes writes.
pg pg_shutdown "$work/primary" immediate
check "the primary is down" bash -c "! psql '$(cat primary/conninfo)' -qXAt -c 'SELECT 1' 2> /dev/null"
run "$ctl" user add lost@example.org
echo "  # a write meanwhile: exit code $rc, $(head -c 300 err 2> /dev/null | tr '\n' ' ')"
t "a write while no server takes writes is refused, not acknowledged" '[[ $rc == 1 ]] && grep -q . err'
promoted=$(now)
check "the standby is promoted" pg pg_promote "$work/standby"
echo "  # the promotion took $(elapsed "$promoted" "$(now)") s"
check "and takes writes" test "$(on_standby "SELECT pg_is_in_recovery()")" = f

# keystored, still running, finds the new primary by itself.
served=
tries=0
end=$((SECONDS + 30))
while [ "$SECONDS" -lt "$end" ] && kill -0 "$keystore_pid" 2> /dev/null; do
  tries=$((tries + 1))
  if ctl user list > users.after 2> users.err; then served=$(now); break; fi
  sleep 0.2
done
if [ -n "$served" ]; then
  echo "  # first request served $(elapsed "$promoted" "$served") s after the promotion began (request $tries)"
else
  echo "  # no request served within 30 s of the promotion; the last error: $(head -c 300 users.err | tr '\n' ' ')"
  show_log
fi
check "keystored serves again within 30 s of the promotion" test -n "$served"
check "its log says it lost the database and which server it reached again" \
  bash -c "grep -q 'lost the connection to the database; opening it again' keystore.log && grep -q 'connected to the database again: 127.0.0.1 port $p2\$' keystore.log && [ \$(grep -c 'lost the connection to the database' keystore.log) = 1 ]"
check "keystored never exited" kill -0 "$keystore_pid"
check "every user acknowledged before the failover is listed" bash -c '
  for user in "$@"; do grep -qF "$user" users.after || { echo "missing: $user"; exit 1; }; done' - "${before[@]}"
check "the refused write left nothing behind" bash -c '! grep -q lost@example.org users.after'
check "a user added after the failover" ctl user add carol@example.org
check "and written to the promoted standby" \
  test "$(on_standby "SELECT count(*) FROM kv WHERE key = convert_to('users/carol@example.org', 'UTF8')" mailkms)" = 1
check "bob is still revoked: no signature as him" bash -c "
  ! '$ctl' message sign --as bob@example.org --in note.eml > /dev/null 2> bob.err && grep -q 'signing certificate is revoked' bob.err"
check "alice signs after the failover, and openssl verifies it" bash -c "
  '$ctl' message sign --as alice@example.org --in note.eml |
    openssl cms -verify -CAfile chain.pem -purpose smimesign | grep -q 'signed after the failover'"
ctl audit verify > verify.out 2>&1
echo "  # $(head -n 1 verify.out)"
check "the audit chain, and the checkpoint of record ${signed:-?} signed before the failover, verify" \
  grep -Eq "^intact: [0-9]+ records; holds the [0-9]+ newest checkpoint\(s\) of $work/audit-checkpoints, the last at record ([0-9]*)$" verify.out
check "the chain goes on past that record" bash -c "[ '$(sed -n 's/^intact: \([0-9]*\) records.*/\1/p' verify.out)' -gt '${signed:-0}' ]"
check "the audit log holds the revocation and the new user" bash -c "
  '$ctl' audit show > audit.out && grep -q 'revoke  bob@example.org' audit.out && grep -q 'carol@example.org' audit.out"

finish
