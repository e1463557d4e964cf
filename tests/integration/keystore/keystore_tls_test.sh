#!/usr/bin/env bash
# mailkms-keystored over TLS: certificates from the service CA (`mailkmsctl
# gateway add`), a gateway that signs and an administrator who works over
# TLS, each held to its role; foreign, revoked and mis-named certificates
# refused on both sides, and clients that send nothing to a server they
# cannot verify.
# Usage: keystore_tls_test.sh MAILKMS_KEYSTORED MAILKMSCTL
# With MAILKMS_TEST_POSTGRESQL set, the keystore lives in PostgreSQL.
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../smtp-sink.sh
. "$here/../smtp-sink.sh"
[[ $# == 2 ]] || { echo "usage: keystore_tls_test.sh MAILKMS_KEYSTORED MAILKMSCTL" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
work=$(mktemp -d)
fake=
trap 'stop_daemons; kill $fake 2> /dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work" || exit 2

database="$work/keystore.db"
if [ -n "${MAILKMS_TEST_POSTGRESQL:-}" ]; then
  # shellcheck source=../postgresql.sh
  . "$here/../postgresql.sh"
  database=$(pg_test_database "mailkms_tls_$$") || exit 1
fi
cat > mailkms.conf <<CONF
[keystore]
database = "$database"
socket = "$work/keystore.sock"
socket_mode = "0600"
lock_memory = false
gateway_users = [$(id -u)]
unseal_key_file = "$work/master.key"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
check "a keystore with alice, on its Unix socket" start_corp_keystore alice@example.org
mkdir -m 700 tls
check "the keystore's own certificate, for 127.0.0.1" "$ctl" gateway add 127.0.0.1 --role keystore --out tls
check "a gateway's, for mx1.example.org" "$ctl" gateway add mx1.example.org --out tls
check "an administrator's host's" "$ctl" gateway add admin1.example.org --role admin --out tls
check "keys are written 0600 and stay here" test "$(stat -c %a tls/mx1.example.org.key)" = 600
check "openssl: the keystore's is a TLS server's, the gateway's a TLS client's" bash -c '
  openssl verify -purpose sslserver -CAfile tls/service-ca.pem tls/127.0.0.1.pem &&
  openssl verify -purpose sslclient -CAfile tls/service-ca.pem tls/mx1.example.org.pem &&
  ! openssl verify -purpose sslserver -CAfile tls/service-ca.pem tls/mx1.example.org.pem 2> /dev/null'
check "the service CA is not the users' CA" bash -c "! openssl x509 -in tls/service-ca.pem -noout -subject | grep -q Corp"

port=$(free_port) || exit 2
stop_keystore
cat >> mailkms.conf <<CONF
tls_listen = ["127.0.0.1:$port"]
tls_certificate = "$work/tls/127.0.0.1.pem"
tls_key = "$work/tls/127.0.0.1.key"
service_ca = "$work/tls/service-ca.pem"
CONF
check "keystored listens on TLS as well" start_keystore
check "and says where" grep -q "and TLS on 127.0.0.1:$port" keystore.log

# A host's mailkms.conf: the keystore only over TLS, with its certificate.
client_conf() { # NAME CERT [ENDPOINT] [CA]
  cat > "$1.conf" <<CONF
[keystore]
endpoints = ["${3:-tls://127.0.0.1:$port}"]
client_certificate = "$work/tls/$2.pem"
client_key = "$work/tls/$2.key"
service_ca = "${4:-$work/tls/service-ca.pem}"
CONF
}
as_host() { # CONF CMD…
  local conf=$1
  shift
  MAILKMS_CONFIG=$work/$conf.conf MAILKMS_SESSION_FILE=$work/$conf.session "$@"
}
export -f as_host
export work ctl
client_conf mx mx1.example.org
client_conf admin admin1.example.org
printf 'From: alice@example.org\r\nTo: bob@example.net\r\nSubject: over TLS\r\n\r\nsigned over TLS\r\n' > note.eml
"$ctl" recover alice@example.org --out alice.p12 --password-file p12.pw > /dev/null
openssl pkcs12 -in alice.p12 -passin file:p12.pw -nokeys -cacerts -out chain.pem 2> /dev/null

check "the gateway signs as alice over TLS, and openssl verifies it" bash -c '
  as_host mx "$ctl" message sign --as alice@example.org --in note.eml > signed.eml &&
  openssl cms -verify -CAfile chain.pem -purpose smimesign -in signed.eml | grep -q "signed over TLS"'
check "the audit names the gateway by its certificate" bash -c '"$ctl" audit show | grep sign | grep -q "tls mx1.example.org (gateway"'
check "the administrator logs in over TLS" as_host admin "$ctl" login admin --password-file admin.pw
check "and lists users" bash -c 'as_host admin "$ctl" user list | grep -q alice@example.org'

as_host mx "$ctl" login admin --password-file admin.pw > mx-login.out 2>&1
check "a gateway's certificate does not log in as an administrator" \
  grep -q "its certificate is for the gateway role, and login is for the admin role" mx-login.out
as_host admin "$ctl" message sign --as alice@example.org --in note.eml > admin-sign.out 2>&1
check "an administrator's host does not sign" grep -q "is for the gateway role" admin-sign.out

# A CA of someone else's, with certificates for the same names.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls/rogue-ca.key -out tls/rogue-ca.pem \
  -subj "/CN=mailkms service CA" -days 30 -addext basicConstraints=critical,CA:TRUE 2> /dev/null
rogue() { # NAME ROLE EKU
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "tls/$1.key" -subj "/OU=$2/CN=$1" 2> /dev/null |
    openssl x509 -req -CA tls/rogue-ca.pem -CAkey tls/rogue-ca.key -days 30 -out "tls/$1.pem" \
      -extfile <(printf 'extendedKeyUsage=%s\nsubjectAltName=IP:127.0.0.1,DNS:%s\n' "$3" "$1") 2> /dev/null
}
rogue mx9.example.org gateway clientAuth
client_conf rogue mx9.example.org
as_host rogue "$ctl" message sign --as alice@example.org --in note.eml > rogue.out 2>&1
check "a gateway certificate from another CA is refused in the handshake" \
  grep -Eq "alert (unknown ca|certificate required|bad certificate|decrypt error)" rogue.out

"$ctl" gateway revoke mx1.example.org > revoke.out
check "revoking the gateway says so" grep -q "mx1.example.org: 1 certificate(s) revoked" revoke.out
as_host mx "$ctl" message sign --as alice@example.org --in note.eml > revoked.out 2>&1
check "the revoked gateway is refused" grep -q "certificate (serial .*) is revoked" revoked.out
check "gateway list shows it revoked, the others in force" bash -c '
  "$ctl" gateway list > list.out && grep "^mx1.example.org" list.out | grep -q revoked &&
  grep "^admin1.example.org" list.out | grep -q "in force"'

# The clients' side: nothing is sent to a server they cannot verify.
client_conf pinned-elsewhere admin1.example.org "" "$work/tls/rogue-ca.pem"
as_host pinned-elsewhere "$ctl" login admin --password-file admin.pw > pinned.out 2>&1
check "an administrator pinned to another CA refuses the keystore" \
  grep -q "it does not chain to the service CA or does not name 127.0.0.1; nothing was sent to it" pinned.out
client_conf misnamed admin1.example.org "tls://localhost:$port"
as_host misnamed "$ctl" login admin --password-file admin.pw > misnamed.out 2>&1
check "and one that dialled a name the certificate does not hold" grep -q "does not name localhost" misnamed.out
fake_port=$(free_port) || exit 2
openssl s_server -quiet -accept "127.0.0.1:$fake_port" -cert tls/admin1.example.org.pem -key tls/admin1.example.org.key \
  -CAfile tls/service-ca.pem > fake.out 2>&1 &
fake=$!
end=$((SECONDS + 10))
until (: > "/dev/tcp/127.0.0.1/$fake_port") 2> /dev/null || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
client_conf impostor admin1.example.org "tls://127.0.0.1:$fake_port"
as_host impostor "$ctl" login admin --password-file admin.pw > impostor.out 2>&1
check "a server with a certificate from the same CA, but a host's, not a keystore's, is refused" \
  grep -q "nothing was sent to it" impostor.out
check "and heard no password" bash -c "! grep -q password fake.out"

check "adds and the revocation are in the audit" bash -c '
  "$ctl" audit show > audit.out && grep -q "gateway-add.*mx1.example.org" audit.out &&
  grep -q "gateway-revoke.*mx1.example.org" audit.out && grep -q "denied" audit.out'
check "the audit chain verifies" bash -c '"$ctl" audit verify | grep -q "^intact"'
finish
