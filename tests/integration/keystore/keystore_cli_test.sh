#!/usr/bin/env bash
# An administrator's day with mailkmsctl against the real mailkms-keystored:
# init, unseal, CA, users, enrollment by mail, approvals, recovery,
# revocation, CRL, trust, harvested certificates, audit.
# Usage: keystore_cli_test.sh MAILKMS_KEYSTORED MAILKMSCTL TEMPLATES_DIR
# On SQLite files, or on PostgreSQL when MAILKMS_TEST_POSTGRESQL names the
# test cluster's conninfo file (tests/integration/postgresql.sh).
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$(dirname "$(realpath "$0")")/../mailkms-daemons.sh"
# shellcheck source=../postgresql.sh
. "$(dirname "$(realpath "$0")")/../postgresql.sh"
keystore_log=daemon.log
[[ $# == 3 ]] || { echo "usage: keystore_cli_test.sh MAILKMS_KEYSTORED MAILKMSCTL TEMPLATES_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
templates=$(realpath "$3")
work=$(mktemp -d)
keystore_pid=
trap '[ -n "$keystore_pid" ] && kill "$keystore_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work" || exit 2

restart_keystore_sealed() {
  kill "$keystore_pid" && wait "$keystore_pid"
  start_keystore sealed
}

# remember ADDRESS CERT.pem [SIGNING-TIME]: what a gateway sends after a
# signature from ADDRESS verified (mailkmsctl has no command for it:
# gateways do it).
remember() {
  python3 - keystore.sock "$@" <<'PY'
import json, socket, sys
path, address, pem = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
signing_time = int(sys.argv[4]) if len(sys.argv) > 4 else 1700000000
request = {"id": 1, "op": "remember-certificate",
           "params": {"address": address, "certificate": pem, "chain": [], "signing_time": signing_time,
                      "capabilities": {"ciphers": ["aes-256-gcm", "aes-128-cbc"], "rsa_oaep": True}}}
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall((json.dumps(request) + "\n").encode())
answer = b""
while not answer.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    answer += chunk
print(answer.decode().strip())
sys.exit(0 if json.loads(answer).get("result", {}).get("stored") is True else 1)
PY
}
export -f remember

# redeem FROM TOKEN PASSWORD: what a gateway sends for a user's reply to
# the enrollment address; succeeds when the keystore mailed the keys.
redeem() {
  python3 - keystore.sock "$1" "$2" "$3" <<'PY'
import json, socket, sys
path, sender, token, password = sys.argv[1:5]
request = {"id": 1, "op": "redeem-token", "params": {"from": sender, "token": token, "password": password}}
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall((json.dumps(request) + "\n").encode())
answer = b""
while not answer.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    answer += chunk
print(answer.decode().strip())
sys.exit(0 if json.loads(answer).get("result", {}).get("ok") is True else 1)
PY
}

# database_for NAME: where keystore NAME keeps its records: a file in the
# current directory, or a database of its own on the test cluster.
database_for() {
  if [ -n "${MAILKMS_TEST_POSTGRESQL:-}" ]; then
    pg_test_database "mailkms_cli_$$_$1"
  else
    echo "$PWD/keystore.db"
  fi
}
database=$(database_for main) || exit 1

# The keystore's mails land in outbox/, one file each, named in sending
# order and by recipient.
mkdir outbox
cat > capture-mail <<'SH'
#!/bin/sh
out=$1
shift
cat > "$out/$(date +%s%N)-$4.eml"
SH
chmod 755 capture-mail
last_mail_to() { find outbox -name "*-$1.eml" | sort | tail -n 1; }
token_to() { sed -n 's/^Token: \(MKMS-[-A-Z2-7]*\)$/\1/p' "$(last_mail_to "$1")"; }
export -f redeem last_mail_to token_to

cat > mailkms.conf <<CONF
[keystore]
database = "$database"
socket = "$work/keystore.sock"
socket_mode = "0600"
lock_memory = false
gateway_users = [$(id -u)]
mail_command = ["$work/capture-mail", "$work/outbox"]
mail_from = "mailkms@example.org"
enrollment_address = "enroll@example.org"
templates = "$templates"
local_domains = ["corp.example"]
CONF
export MAILKMS_CONFIG=$work/mailkms.conf
export MAILKMS_SESSION_FILE=$work/carol.session
echo "carol's long admin password" > carol.pw
echo "erin's long admin password" > erin.pw
echo "the unseal passphrase of this keystore" > unseal.pw
echo "alice's recovery password" > p12.pw
chmod 600 ./*.pw

check "init creates the keystore" "$ctl" init --admin carol --admin-password-file carol.pw --passphrase-file unseal.pw
if [ -z "${MAILKMS_TEST_POSTGRESQL:-}" ]; then
  check "the database is private" bash -c "[ \"\$(stat -c %a keystore.db)\" = 600 ]"
else
  seals=$(pg_sql "mailkms_cli_$$_main" "SELECT count(*) FROM kv WHERE key = 'core/seal'")
  check "the database holds the sealed keystore" test "$seals" = 1
fi
check "init never runs twice" bash -c "! '$ctl' init --admin carol --admin-password-file carol.pw --passphrase-file unseal.pw"

check "the daemon starts sealed" start_keystore sealed
check "a login is refused while sealed" bash -c "! '$ctl' login carol --password-file carol.pw"
echo "wrong passphrase" > wrong.pw
check "a wrong passphrase does not unseal" bash -c "! '$ctl' unseal --passphrase-file wrong.pw"
check "the next try waits, and says how long" \
  bash -c "! '$ctl' unseal --passphrase-file unseal.pw 2> soon.err && grep -Eq 'try again in [12] s' soon.err"
# The wait itself is tested on a moved clock (unseal_throttle_test.cpp),
# since a loaded machine may take a second between the two tries (1 s left);
# it is kept in memory, so a restarted daemon starts without it.
check "a restarted daemon starts sealed again" restart_keystore_sealed
check "the right one does" "$ctl" unseal --passphrase-file unseal.pw
check "carol logs in" "$ctl" login carol --password-file carol.pw
check "the session file is private" bash -c "[ \"\$(stat -c %a carol.session)\" = 600 ]"

check "a root CA" "$ctl" ca init --id root --name "Example Root CA" --key-type ec-p384
check "an issuing CA under it" "$ctl" ca add-subordinate --id issuing --parent root --key-type ec-p256 --priority 10
check "both are listed" bash -c "'$ctl' ca list > check.out && grep -q '^root  root' check.out && grep -q '^issuing  issuing' check.out"
check "ca export writes the root's certificate alone" \
  bash -c "'$ctl' ca export root --out root.pem && [ \$(grep -c 'BEGIN CERTIFICATE' root.pem) = 1 ] && openssl x509 -in root.pem -noout -subject | grep -q 'CN *= *Example Root CA'"
check "ca export --chain writes the issuing CA, then the root, and it verifies against the root" \
  bash -c "'$ctl' ca export issuing --chain --out issuing-chain.pem && [ \$(grep -c 'BEGIN CERTIFICATE' issuing-chain.pem) = 2 ] && openssl x509 -in issuing-chain.pem -noout -subject | grep -q 'CN *= *issuing' && openssl verify -CAfile root.pem issuing-chain.pem | grep -q ': OK'"
check "ca export --der writes the same certificate in DER" \
  bash -c "'$ctl' ca export root --der --out root.der && [ \"\$(openssl x509 -inform DER -in root.der -outform PEM)\" = \"\$(openssl x509 -in root.pem -outform PEM)\" ]"
check "ca export --chain --der writes a PKCS#7 bundle of both" \
  bash -c "'$ctl' ca export issuing --chain --der --out issuing.p7b && [ \$(openssl pkcs7 -inform DER -in issuing.p7b -print_certs | grep -c '^subject=') = 2 ]"
check "ca export of an unknown CA fails, naming it" \
  bash -c "! '$ctl' ca export nosuch > check.out 2> check.err && [ ! -s check.out ] && grep -q 'no CA nosuch' check.err"

check "users added" "$ctl" user add alice@example.org bob@example.org
printf 'carol@example.org\nnot an address\n# a comment\ndave@example.org\n' > users.txt
"$ctl" user add --file users.txt > bulk.out 2> bulk.err
check "bulk add reports each outcome" grep -qx "2 added, 0 already present, 1 failed" bulk.out
check "and names the bad address" grep -q "not added: not an address" bulk.err
check "a user shows both certificates" bash -c "'$ctl' user show alice@example.org > check.out && grep -q encryption check.out && grep -q signing check.out"

"$ctl" enroll alice@example.org > enroll.out 2>&1
first_token=$(token_to alice@example.org)
check "enroll mails alice a token" bash -c "grep -qx '1 sent, 0 already enrolled, 0 failed' enroll.out && [ -n '$first_token' ]"
echo "alice's chosen password" > enroll.pw
check "alice's reply with the token brings her keys" \
  bash -c "redeem alice@example.org '$first_token' \"\$(cat enroll.pw)\" && grep -q 'filename=\"alice.p12\"' \"\$(last_mail_to alice@example.org)\""
check "user show says she is enrolled" bash -c "'$ctl' user show alice@example.org | grep -q '^enrolled by mail: 20'"
"$ctl" enroll alice@example.org > enroll.out 2>&1
check "enrolling her again does nothing" bash -c "grep -qx '0 sent, 1 already enrolled, 0 failed' enroll.out && grep -q -- --reissue enroll.out"
"$ctl" enroll --reissue alice@example.org > enroll.out 2>&1
check "--reissue mails her a new token" bash -c "grep -qx '1 sent, 0 already enrolled, 0 failed' enroll.out && [ -n \"\$(token_to alice@example.org)\" ] && [ \"\$(token_to alice@example.org)\" != '$first_token' ]"
printf 'erin@example.org\nnot an address\nalice@example.org\n# a comment\nfrank@example.org\n' > enroll.txt
"$ctl" enroll --file enroll.txt > enroll.out 2> enroll.err
enroll_rc=$?
check "enroll --file adds new users, mails them and sums up" \
  bash -c "[ $enroll_rc = 1 ] && grep -qx '2 sent, 1 already enrolled, 1 failed' enroll.out && grep -q 'not sent: not an address' enroll.err && [ -n \"\$(token_to frank@example.org)\" ] && '$ctl' user show erin@example.org > /dev/null"

check "two approvals with one administrator are refused, saying what to do" \
  bash -c "! '$ctl' approvals set recover 2 2> check.err && grep -q 'recover cannot need 2 approvals with 1 administrator: add administrators first (mailkmsctl admin add NAME)' check.err"
MAILKMS_SESSION_FILE=$work/carol.session check "erin becomes an administrator" "$ctl" admin add erin --password-file erin.pw
check "recovery needs two approvals" "$ctl" approvals set recover 2
"$ctl" recover alice@example.org --out alice.p12 --password-file p12.pw > recover.out
check "recovery waits for approval" grep -q "needs 2 approvals" recover.out
request=$(sed -n 's/^request \([^ ]*\) needs.*/\1/p' recover.out)
check "requests shows what an approval would run, without the password" \
  bash -c "'$ctl' requests > requests.out && grep -q '\"address\":\"alice@example.org\"' requests.out && ! grep -qF \"\$(cat p12.pw)\" requests.out"
check "carol cannot approve her own request" bash -c "! '$ctl' approve '$request'"
check "erin approves" env MAILKMS_SESSION_FILE="$work/erin.session" bash -c "'$ctl' login erin --password-file erin.pw && '$ctl' approve '$request' | grep -q done"
check "carol fetches the PKCS#12" "$ctl" fetch "$request" --out alice.p12
check "it is private" bash -c "[ \"\$(stat -c %a alice.p12)\" = 600 ]"
check "it opens with alice's password" openssl pkcs12 -info -noout -in alice.p12 -passin file:p12.pw
"$ctl" recover bob@example.org --by-mail > recover.out
request=$(sed -n 's/^request \([^ ]*\) needs.*/\1/p' recover.out)
check "recovery by mail waits for approval too" bash -c "grep -q 'once approved, the keystore mails bob@example.org' recover.out && [ -z \"\$(last_mail_to bob@example.org)\" ]"
check "once erin approves, bob gets a recovery token" \
  bash -c "MAILKMS_SESSION_FILE='$work/erin.session' '$ctl' approve '$request' | grep -q done && grep -q '^Subject: Recovering' \"\$(last_mail_to bob@example.org)\" && [ -n \"\$(token_to bob@example.org)\" ]"

printf 'From: alice@example.org\r\nTo: alice@example.org\r\nSubject: note to self\r\nContent-Type: text/plain\r\n\r\nkept in the keystore\r\n' > note.eml
openssl pkcs12 -in alice.p12 -passin file:p12.pw -nokeys -cacerts -out chain.pem 2> /dev/null
openssl pkcs12 -in alice.p12 -passin file:p12.pw -nodes -nocerts -out alice.key 2> /dev/null
openssl pkcs12 -in alice.p12 -passin file:p12.pw -nokeys -clcerts -out alice.pem 2> /dev/null
check "mailkmsctl signs with alice's key inside the daemon, and openssl verifies it" \
  bash -c "'$ctl' message sign --as alice@example.org --in note.eml | openssl cms -verify -CAfile chain.pem -purpose smimesign | grep -q 'kept in the keystore'"
check "mailkmsctl encrypts to alice's certificate from the keystore, and her recovered key opens it" \
  bash -c "'$ctl' message encrypt --to-user alice@example.org --in note.eml | openssl cms -decrypt -recip alice.pem -inkey alice.key | grep -q 'kept in the keystore'"
check "encrypting to someone without a certificate is refused, naming them" \
  bash -c "! '$ctl' message encrypt --to-user nobody@example.org --in note.eml 2> err && grep -q 'nobody@example.org' err"
check "bob's certificates are revoked" bash -c "'$ctl' revoke bob@example.org --reason keyCompromise > check.out && [ \$(grep -c '^revoked ' check.out) = 2 ]"
serial=$(sed -n 's/^revoked \(.*\)$/\1/p' check.out | head -n 1)
check "the CRL lists them" bash -c "'$ctl' crl export --ca issuing --out crl.der && openssl crl -inform DER -in crl.der -noout -text | grep -q '$serial'"
check "our root is a trust anchor" bash -c "'$ctl' trust list | grep -q '^ours  CN=Example Root CA'"
# --json: one JSON document per call, read here with Python's parser.
json_holds() {  # json_holds EXPRESSION COMMAND...: EXPRESSION over the document `d` is true
  local expression=$1
  shift
  "$@" > json.out && python3 -c 'import json, sys; d = json.load(open("json.out")); sys.exit(0 if eval(sys.argv[1]) else 1)' "$expression"
}
export -f json_holds
check "status --json says unsealed" json_holds 'd["sealed"] is False and d["key_generation"] >= 1' "$ctl" status --json
check "status --json, logged in, has the keystore's health" \
  json_holds '" pid " in d["health"]["instance"] and d["health"]["audit_head"]["sequence"] > 10 and d["health"]["pending_requests"] == 0 and d["health"]["expiring"]["count"] == 0 and [c["ca"] for c in d["health"]["crls"]] == ["issuing"] and d["health"]["crls"][0]["next_update"] > d["health"]["crls"][0]["made"]' "$ctl" status --json
check "status shows it on one screen" \
  bash -c "'$ctl' status > status.out && grep -q '^unsealed$' status.out && grep -q '^database: ' status.out && grep -q '^pending requests: 0$' status.out && grep -q '^certificates in use expiring within 30 days: 0$' status.out && grep -q '^CRL of issuing: made .*, next update ' status.out"
check "status without a session says how to see the rest" \
  bash -c "MAILKMS_SESSION_FILE=$work/nobody.session '$ctl' status > status.out 2> status.err && ! grep -q '^database: ' status.out && grep -q 'not logged in: mailkmsctl login shows' status.err"
check "ca list --json names both CAs" json_holds 'sorted(c["id"] for c in d) == ["issuing", "root"] and all("BEGIN CERTIFICATE" in c["certificate"] for c in d)' "$ctl" ca list --json
check "user list --json lists alice and bob" json_holds '{"alice@example.org", "bob@example.org"} <= {u["address"] for u in d}' "$ctl" user list --json
check "user show --json shows alice's certificates" json_holds 'd["address"] == "alice@example.org" and {c["profile"] for c in d["certificates"]} >= {"encryption", "signing"}' "$ctl" user show alice@example.org --json
check "admin list --json names carol and erin" json_holds 'sorted(a["name"] for a in d) == ["carol", "erin"]' "$ctl" admin list --json
check "approvals show --json has recover at 2" json_holds 'd["recover"] == 2' "$ctl" approvals show --json
check "requests --json has the approved recovery, without its password" json_holds 'any(r["id"] == "'"$request"'" and r["op"] == "recover" for r in d) and "'"$(cat p12.pw)"'" not in json.dumps(d)' "$ctl" requests --json
check "trust list --json has our root first" json_holds 'd["anchors"][0]["source"] == "ours" and d["system_roots"] in (True, False)' "$ctl" trust list --json
check "audit show --json gives records in order" json_holds 'len(d) == 3 and [r["sequence"] for r in d] == sorted(r["sequence"] for r in d) and all("action" in r for r in d)' "$ctl" audit show --limit 3 --json
check "gateway list and harvested list --json are lists" bash -c "json_holds 'isinstance(d, list)' '$ctl' gateway list --json && json_holds 'isinstance(d, list)' '$ctl' harvested list --json"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout partner.key -out partner.pem \
  -subj "/CN=Partner Root" -days 30 -addext basicConstraints=critical,CA:TRUE 2> /dev/null
check "a partner's root is added" bash -c "'$ctl' trust add partner.pem | grep -q '^trusted sha256'"
fingerprint=$("$ctl" trust list | sed -n 's/^added  CN=Partner Root  sha256 //p')
check "and listed with its fingerprint" test -n "$fingerprint"
openssl req -new -newkey rsa:2048 -nodes -keyout zoe.key -subj "/CN=Zoe Partner" -out zoe.csr 2> /dev/null
printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:zoe@partner.example\n' > zoe.ext
openssl x509 -req -in zoe.csr -CA partner.pem -CAkey partner.key -CAcreateserial -days 30 -extfile zoe.ext -out zoe.pem 2> /dev/null
check "a gateway's harvested certificate under the partner's root is kept" remember zoe@partner.example zoe.pem
check "an address of a local user is never harvested" bash -c "remember alice@example.org zoe.pem | grep -q 'alice@example.org is a local user'"
# partner_cert ADDRESS OUT.pem [CA]: a certificate the partner root (or
# CA) issued for ADDRESS, fit to encrypt to.
partner_cert() {
  local ca=${3:-partner}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$2.key" -subj "/CN=$1" -out "$2.csr" 2> /dev/null &&
  printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:%s\n' "$1" > "$2.ext" &&
  openssl x509 -req -in "$2.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 30 -extfile "$2.ext" -out "$2" 2> /dev/null
}
# A gateway (misconfigured, or in an attacker's hands) must not plant a
# certificate that mail to one of our own addresses would be encrypted to,
# however trusted its CA: the domains of our users and [keystore]
# local_domains, and the domains below them, are the keystore's own.
for address in ceo@example.org ceo@corp.example ceo@hr.corp.example; do
  partner_cert "$address" "planted-$address.pem"
  domain=${address#*@}
  served=example.org; [ "$domain" = example.org ] || served=corp.example
  check "a harvested certificate for $address, in a domain the keystore serves, is refused" \
    bash -c "! remember '$address' 'planted-$address.pem' > answer.out && grep -q '\"code\":\"permission_denied\"' answer.out &&
      grep -q '$address is in $served, a domain this keystore serves' answer.out && ! '$ctl' harvested list | grep -q '^$address '"
done
# An anchor scoped to domains vouches for addresses there alone: a
# partner's CA speaks for the partner's people, not for everyone.
# "partner2.example" is that domain, ".partner2.example" those below it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout scoped.key -out scoped.pem \
  -subj "/CN=Scoped Root" -days 30 -addext basicConstraints=critical,CA:TRUE 2> /dev/null
check "a partner's root is trusted for its own domains" \
  bash -c "'$ctl' trust add scoped.pem --domains Partner2.example,.partner2.example | grep -q '^trusted sha256 [0-9a-f]*  for partner2.example, .partner2.example\$'"
check "trust list shows the scope" \
  bash -c "'$ctl' trust list | grep -q '^added  CN=Scoped Root  sha256 [0-9a-f]*  for partner2.example, .partner2.example\$'"
check "a domain that is not one is refused as a scope" bash -c "! '$ctl' trust add scoped.pem --domains 'evil..example' 2> err && grep -q 'evil..example' err"
partner_cert yan@partner2.example yan.pem scoped
partner_cert yan@mx.partner2.example yan-mx.pem scoped
partner_cert someone@evil.example someone.pem scoped
check "a certificate under the scoped root for its domain is harvested" remember yan@partner2.example yan.pem
check "and one for a domain below it" remember yan@mx.partner2.example yan-mx.pem
check "one under it for another domain is refused, naming the scope" \
  bash -c "! remember someone@evil.example someone.pem > answer.out && grep -q 'vouches only for partner2.example, .partner2.example' answer.out &&
    ! '$ctl' harvested list | grep -q '^someone@evil.example '"
# The signing time is the sender's to write: one ahead of now would keep
# the certificate against every later message's for as long.
check "a signing time ahead of now is taken as now" remember zoe@partner.example zoe.pem $(($(date +%s) + 20 * 3600))
check "so a message signed now still brings its certificate" remember zoe@partner.example zoe.pem "$(date +%s)"
check "harvested list shows it with what the sender can read" \
  bash -c "'$ctl' harvested list | grep -q '^zoe@partner.example  CN=Zoe Partner  until .*  ciphers aes-256-gcm,aes-128-cbc  rsa-oaep\$'"
check "mailkmsctl encrypts to the harvested certificate" \
  bash -c "'$ctl' message encrypt --to-user zoe@partner.example --in note.eml | openssl cms -decrypt -recip zoe.pem -inkey zoe.key | grep -q 'kept in the keystore'"
check "harvested remove forgets it" bash -c "'$ctl' harvested remove zoe@partner.example && ! '$ctl' harvested list | grep -q zoe"
check "and removing it again says there is none" bash -c "! '$ctl' harvested remove zoe@partner.example 2> err && grep -q 'no harvested certificate for zoe@partner.example' err"
check "system roots can be switched on" bash -c "'$ctl' trust system on && '$ctl' trust list | grep -qx 'system roots: on'"
check "the partner's root is removed" bash -c "'$ctl' trust remove '$fingerprint' && ! '$ctl' trust list | grep -q Partner"
check "a leaf certificate is refused as an anchor" bash -c "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.pem -subj /CN=leaf -days 1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null && ! '$ctl' trust add leaf.pem"
echo "a bundle password long enough" > bundle.pw
"$ctl" user export alice@example.org --out alice.bundle --password-file bundle.pw > export.out
export_request=$(sed -n 's/^request \([^ ]*\) needs.*/\1/p' export.out)
check "an export of keys needs the approvals a recovery needs" test -n "$export_request"
check "erin approves the export" env MAILKMS_SESSION_FILE="$work/erin.session" "$ctl" approve "$export_request"
check "carol fetches the bundle" "$ctl" fetch "$export_request" --out alice.bundle
check "the bundle is private" bash -c "[ \"\$(stat -c %a alice.bundle)\" = 600 ]"
"$ctl" user import alice.bundle --password-file bundle.pw > import.out
import_request=$(sed -n 's/^request \([^ ]*\) needs 2 approvals.*/\1/p' import.out)
check "an import of users with keys needs the approvals a recovery needs" \
  bash -c "[ -n '$import_request' ] && ! grep -q imported import.out && '$ctl' requests | grep -q 'users-import'"
check "once erin approves, the import runs" \
  bash -c "MAILKMS_SESSION_FILE='$work/erin.session' '$ctl' approve '$import_request' | grep -qx '$import_request: done (2 of 2)' && '$ctl' requests | grep -q '^$import_request  users-import .* done  by carol  approvals 2/2'"
check "the audit log is intact" bash -c "'$ctl' audit verify | grep -q '^intact'"
"$ctl" audit show --limit 1000 > audit.out 2>&1
for action in unseal login ca-create-root user-add enroll redeem-token admin-add approvals-set request approve recover revoke harvested-remove; do
  check "the audit log records $action" grep -q "  $action  " audit.out
done
check "the audit log records each harvested certificate, with the gateway that offered it" \
  grep -q "  gateway:uid [0-9]* (pid [0-9]*)  remember-certificate  zoe@partner.example  ok  CN=Zoe Partner" audit.out
check "and each one refused for a domain the keystore serves, with the gateway that offered it" \
  grep -q "  gateway:uid [0-9]* (pid [0-9]*)  remember-certificate  ceo@hr.corp.example  refused  ceo@hr.corp.example is in corp.example, a domain this keystore serves" audit.out
check "no password reached the daemon's log" bash -c "! grep -qF -e \"\$(cat carol.pw)\" -e \"\$(cat p12.pw)\" -e \"\$(cat unseal.pw)\" -e \"\$(cat enroll.pw)\" daemon.log"
check "nor a token the log or the audit log" bash -c "! grep -qF -e '$first_token' -e \"\$(token_to frank@example.org)\" daemon.log audit.out"
check "logout ends the session" bash -c "'$ctl' logout && ! '$ctl' user list"

kill "$keystore_pid"
wait "$keystore_pid"
check "SIGTERM stops the daemon cleanly" test $? -eq 0
keystore_pid=

# A second keystore, sealed with Shamir shares: any 3 of 5 unseal it.
mkdir shares && cd shares || exit 2
db=$(database_for shares) || exit 1
sed -e "s|$work/keystore|$work/shares/keystore|" -e "s|^database = .*|database = \"$db\"|" ../mailkms.conf > mailkms.conf
export MAILKMS_CONFIG=$work/shares/mailkms.conf
"$ctl" init --admin carol --admin-password-file ../carol.pw --shares 5 --threshold 3 > init.out
grep -o 'mailkms-share-1-[0-9]*-[0-9a-f]*' init.out > all.shares
check "init prints five shares" test "$(wc -l < all.shares)" = 5
start_keystore sealed || { echo "FAIL - the second keystore does not start"; exit 1; }
sed -n '1p;3p' all.shares > two.shares
sed -n '2p;4p;5p' all.shares > three.shares
check "two shares do not unseal" bash -c "! '$ctl' unseal --shares-file two.shares"
check "a restarted daemon starts sealed again" restart_keystore_sealed
check "three other shares do" "$ctl" unseal --shares-file three.shares
kill "$keystore_pid"
wait "$keystore_pid"
keystore_pid=
cd .. || exit 2

# A third, sealed with a key file: created 0600 whatever the umask, never
# through a symbolic link, never over a file that is there.
mkdir keyfile && cd keyfile || exit 2
db=$(database_for keyfile) || exit 1
sed -e "s|$work/keystore|$work/keyfile/keystore|" -e "s|^database = .*|database = \"$db\"|" ../mailkms.conf > mailkms.conf
export MAILKMS_CONFIG=$work/keyfile/mailkms.conf
ln -s "$work/keyfile/elsewhere.key" link.key
check "init does not write the key file through a symbolic link" \
  bash -c "! '$ctl' init --admin carol --admin-password-file ../carol.pw --key-file link.key && [ ! -e elsewhere.key ] && [ ! -e keystore.db ]"
echo "not a key file" > taken.key
check "nor over a file that is there" \
  bash -c "! '$ctl' init --admin carol --admin-password-file ../carol.pw --key-file taken.key 2> err && grep -q 'taken.key exists' err && grep -qx 'not a key file' taken.key"
check "the key file is private even under umask 000" \
  bash -c "umask 000 && '$ctl' init --admin carol --admin-password-file ../carol.pw --key-file master.key && [ \"\$(stat -c %a master.key)\" = 600 ]"
cd .. || exit 2

finish
