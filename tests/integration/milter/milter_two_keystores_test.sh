#!/usr/bin/env bash
# Many MTAs, one keystore: two keystored instances on one PostgreSQL
# database, each listening on TLS; two private Postfix instances, each with
# its own milter on its own gateway certificate, both milters naming both
# keystores. Mail flows through both Postfix instances, every message
# encrypted by policy; one keystored is killed with -9 in the middle of the
# traffic. No message is lost or refused, none leaves in clear, the milters
# go on through the other keystore, and the audit chain verifies.
# Usage: milter_two_keystores_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER   (as root)
# Needs MAILKMS_TEST_POSTGRESQL (CTest starts the cluster).
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../postgresql.sh
. "$here/../postgresql.sh"
[[ $# == 3 ]] || { echo "usage: milter_two_keystores_test.sh KEYSTORED MAILKMSCTL MILTER" >&2; exit 2; }
[ -n "${MAILKMS_TEST_POSTGRESQL:-}" ] || { echo "MAILKMS_TEST_POSTGRESQL is not set: run it through ctest" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")

work=$(mktemp -d)
chmod 755 "$work"
pid_a= pid_b= milter_1= milter_2= postfix_1= postfix_2=
cleanup() {
  for instance in 1 2; do
    eval "POSTFIX_DIR=\$postfix_$instance SINK_PID=\$sink_$instance"
    [ -z "$POSTFIX_DIR" ] || postfix_stop
    eval "milter_pid=\$milter_$instance"
    stop_milter 10 > /dev/null 2>&1
  done
  kill $pid_a $pid_b 2> /dev/null
  wait 2> /dev/null
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# ---- The keystore: one database, instances a and b --------------------------------
database=$(pg_test_database "mailkms_pair_$$") || exit 1
port_a=$(free_port) || exit 2
port_b=$(free_port) || exit 2
while [ "$port_b" = "$port_a" ]; do port_b=$(free_port) || exit 2; done
keystore_conf() { # INSTANCE [TLS PORT]
  mkdir -p "$work/$1"
  cat > "$work/$1/mailkms.conf" <<CONF
[keystore]
database = "$database"
socket = "$work/$1/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/a/master.key"
audit_checkpoint_file = "$work/$1/audit-checkpoints"
gateway_users = ["root"]
lock_memory = false
CONF
  [ -z "${2:-}" ] || cat >> "$work/$1/mailkms.conf" <<CONF
tls_listen = ["127.0.0.1:$2"]
tls_certificate = "$work/tls/127.0.0.1.pem"
tls_key = "$work/tls/127.0.0.1.key"
service_ca = "$work/tls/service-ca.pem"
CONF
}
# start INSTANCE: keystored for INSTANCE, unsealed with the shared key file.
start() {
  keystore_config=$work/$1/mailkms.conf keystore_log=$work/$1/keystore.log MAILKMS_CONFIG=$work/$1/mailkms.conf \
    start_keystore || return 1
  eval "pid_$1=$keystore_pid"
}
keystore_conf a
export MAILKMS_CONFIG=$work/a/mailkms.conf MAILKMS_SESSION_FILE=$work/session
cd a || exit 2
start_corp_keystore alice@corp.example bob@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
cd "$work" || exit 2
mkdir -m 700 tls
for host in "127.0.0.1 --role keystore" mx1.example.org mx2.example.org; do
  # shellcheck disable=SC2086 # the role goes with the name
  "$ctl" gateway add $host --out tls > /dev/null || { echo "FAIL - gateway add $host"; exit 1; }
done
stop_keystore
keystore_conf a "$port_a"
keystore_conf b "$port_b"
check "keystored a listens on TLS" start a
check "keystored b listens on TLS, on the same database" start b
"$ctl" recover bob@corp.example --out bob.p12 --password-file a/p12.pw > /dev/null
openssl pkcs12 -in bob.p12 -passin file:a/p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:a/p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null

# Every message to corp.example must leave encrypted; signing as the sender
# takes the keystore too.
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]

[defaults]
sign = "if-possible"
encrypt = "always"
decrypt = false
POLICY

# ---- Two MTAs, each with its milter on its own gateway certificate --------------
for instance in 1 2; do
  mkdir -p "mx$instance"
  cat > "mx$instance/mailkms.conf" <<CONF
[keystore]
endpoints = ["tls://127.0.0.1:$port_a", "tls://127.0.0.1:$port_b"]
client_certificate = "$work/tls/mx$instance.example.org.pem"
client_key = "$work/tls/mx$instance.example.org.key"
service_ca = "$work/tls/service-ca.pem"

[gateway]
policy = "$work/policy.toml"
authserv_id = "mx$instance.corp.example"
spool_directory = "$work/mx$instance"
# Looked up afresh for nearly every message: the keystores are exercised.
certificate_ttl_seconds = 1
keystore_timeout_ms = 5000
reinject_command = ["$(command -v sendmail)", "-C", "$work/mx$instance/postfix/conf", "-G", "-i"]

[milter]
socket = "unix:$work/mx$instance/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/mx$instance/milter.pid"
CONF
  milter_config=$work/mx$instance/mailkms.conf milter_log=$work/mx$instance/milter.log start_milter ||
    { echo "FAIL - milter $instance does not start"; cat "mx$instance/milter.log"; exit 1; }
  eval "milter_$instance=$milter_pid"
  POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/mx$instance/milter.sock
milter_default_action = tempfail
milter_protocol = 6" postfix_start "$work/mx$instance/postfix" || { echo "FAIL - cannot start Postfix $instance"; exit 1; }
  eval "postfix_$instance=$POSTFIX_DIR port_$instance=$POSTFIX_PORT sink_$instance=$SINK_PID sinkdir_$instance=$SINK_DIR"
done

# use N: the fixture's functions act on Postfix instance N.
use() { eval "POSTFIX_DIR=\$postfix_$1 POSTFIX_PORT=\$port_$1 SINK_PID=\$sink_$1 SINK_DIR=\$sinkdir_$1"; }
# send N I: message I (its body says I) from alice to bob through Postfix N.
send() {
  printf '%s\r\n' "From: Alice <alice@corp.example>" "To: bob@corp.example" "Subject: figures $2" \
    "Message-ID: <figures.$2.$$@corp.example>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" "" \
    "Bob, the figures of message $2." |
    swaks --server "127.0.0.1:$(eval echo "\$port_$1")" --from alice@corp.example --to bob@corp.example --data - \
      > "sent/$2.out" 2>&1
}

# ---- Traffic; keystored a killed with -9 in the middle ------------------------------
mkdir sent
total=40
for i in $(seq 1 "$total"); do
  send $(((i % 2) + 1)) "$i"
  if [ "$i" = 14 ]; then
    ss -Htnp state established "( dport = :$port_a )" > to-a.before
    kill -KILL "$pid_a"
    wait "$pid_a" 2> /dev/null
    pid_a=
  fi
done
check "before the kill, both milters were talking to keystore a" \
  bash -c "grep -q 'pid=$milter_1,' to-a.before && grep -q 'pid=$milter_2,' to-a.before"
accepted=$(grep -l '<-  250 2.0.0 Ok: queued' sent/*.out | wc -l)
check "all $total messages accepted through both MTAs, keystore a killed after 14 ($accepted accepted)" \
  test "$accepted" = "$total"
for instance in 1 2; do
  use "$instance"
  postfix_queue_settles
done
delivered=0 encrypted=0 decrypted=0
for instance in 1 2; do
  use "$instance"
  eval "carried_$instance=$(sink_files | wc -l)"
  for f in $(sink_files); do
    delivered=$((delivered + 1))
    grep -qi '^Content-Type: application/pkcs7-mime; .*smime-type=enveloped-data' "$f" && encrypted=$((encrypted + 1))
    n=$(openssl cms -decrypt -in "$f" -recip bob.pem -inkey bob.key 2> /dev/null | grep -o 'figures of message [0-9]*')
    [ -n "$n" ] && echo "${n##* }" >> decrypted.list && decrypted=$((decrypted + 1))
    grep -q 'figures of message' "$f" && echo "$f" >> in-clear.list
  done
done
check "every one delivered ($delivered of $total)" test "$delivered" = "$total"
check "every one encrypted ($encrypted)" test "$encrypted" = "$total"
check "none in clear" test ! -s in-clear.list
check "bob's key opens each, and each message came once" \
  test "$(sort -n decrypted.list | uniq | wc -l)" = "$total" -a "$decrypted" = "$total"
check "each MTA carried half ($carried_1 and $carried_2)" test "$carried_1" = $((total / 2)) -a "$carried_2" = $((total / 2))
MAILKMS_CONFIG=$work/b/mailkms.conf "$ctl" audit show > audit.out
check "both gateways signed through the keystore, named by their certificates" bash -c "
  grep 'tls mx1.example.org (gateway' audit.out | grep -q sign && grep 'tls mx2.example.org (gateway' audit.out | grep -q sign"
check "the audit chain verifies through b" bash -c "MAILKMS_CONFIG='$work/b/mailkms.conf' '$ctl' audit verify | grep -q '^intact'"
check "a starts again" start a
check "and the chain verifies through a too" bash -c "'$ctl' audit verify | grep -q '^intact'"

# A gateway revoked through a is refused by b within a second.
sed "s|^endpoints = .*|endpoints = [\"tls://127.0.0.1:$port_b\"]|" mx2/mailkms.conf > mx2-via-b.conf
printf 'From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: x\r\n\r\nx\r\n' > note.eml
check "mx2 signs through b" bash -c "MAILKMS_CONFIG=mx2-via-b.conf '$ctl' message sign --as alice@corp.example --in note.eml > /dev/null"
"$ctl" gateway revoke mx2.example.org > /dev/null
revoked_at=$(date +%s%N)
until ! MAILKMS_CONFIG=mx2-via-b.conf "$ctl" message sign --as alice@corp.example --in note.eml > /dev/null 2> refused.err &&
  grep -q "is revoked" refused.err; do
  [ $(($(date +%s%N) - revoked_at)) -lt 3000000000 ] || break
done
elapsed_ms=$((($(date +%s%N) - revoked_at) / 1000000))
echo "  # the last answer: $(head -c 300 refused.err | tr '\n' ' ')"
check "revoked through a, mx2 is refused by b within a second or so ($elapsed_ms ms)" test "$elapsed_ms" -lt 2000
finish
