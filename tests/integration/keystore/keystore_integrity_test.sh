#!/usr/bin/env bash
# A database writer without the master key, with the sqlite3 command line
# against the running keystore's database: rows forged (a session, an
# administrator's password, an approval count, a trust anchor), deleted (a
# revocation) or put back as older copies of themselves (a used token, the
# audit head). The keystore ignores or refuses each, and says so in its log
# and its audit log.
# Usage: keystore_integrity_test.sh MAILKMS_KEYSTORED MAILKMSCTL TEMPLATES_DIR
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
# shellcheck source=../mailkms-daemons.sh
. "$(dirname "$(realpath "$0")")/../mailkms-daemons.sh"
[[ $# == 3 ]] || { echo "usage: keystore_integrity_test.sh MAILKMS_KEYSTORED MAILKMSCTL TEMPLATES_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
templates=$(realpath "$3")
work=$(mktemp -d)
trap 'stop_daemons; rm -rf "$work"' EXIT
cd "$work" || exit 2

db() { sqlite3 -cmd ".timeout 5000" keystore.db "$@"; }
# value KEY: a row's value, as hex (values are blobs, some not text)
value() { db "SELECT hex(value) FROM kv WHERE key = '$1'"; }
# put_back KEY HEX: what a writer restoring a copy of a row does
put_back() { db "UPDATE kv SET value = X'$2' WHERE key = '$1'"; }
logged() { grep -qF "integrity check failed in $1" keystore.log; }
audited() { "$ctl" audit show --limit 100000 | grep -F " integrity " | grep -qF "$1"; }

# redeem.py SOCKET FROM TOKEN PASSWORD: a gateway passing on a reply to
# the enrollment address.
cat > redeem.py <<'PY'
import json, socket, sys
path, sender, token, password = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall((json.dumps({"id": 1, "op": "redeem-token",
                       "params": {"from": sender, "token": token, "password": password}}) + "\n").encode())
answer = b""
while not answer.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    answer += chunk
print(answer.decode().strip())
sys.exit(0 if json.loads(answer).get("result", {}).get("ok") is True else 1)
PY

mkdir "$work/outbox"
cat > capture-mail <<'SH'
#!/bin/sh
out=$1
shift
cat > "$out/$(date +%s%N)-$4.eml"
SH
chmod 755 capture-mail
token_to() { sed -n 's/^Token: \(MKMS-[-A-Z2-7]*\)$/\1/p' "$(find outbox -name "*-$1.eml" | sort | tail -n 1)"; }

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
mail_command = ["$work/capture-mail", "$work/outbox"]
mail_from = "mailkms@example.org"
enrollment_address = "enroll@example.org"
templates = "$templates"
CONF
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/carol.session
echo "carol's long admin password" > carol.pw
echo "erin's long admin password" > erin.pw
echo "alice's chosen password" > alice.pw
chmod 600 ./*.pw
"$ctl" init --admin carol --admin-password-file carol.pw --key-file master.key > /dev/null
start_keystore || { echo "FAIL - the keystore does not start"; cat keystore.log; exit 1; }
"$ctl" login carol --password-file carol.pw > /dev/null
"$ctl" ca init --id root --name "Example Root CA" --key-type ec-p256 > /dev/null
"$ctl" ca add-subordinate --id issuing --parent root --key-type ec-p256 > /dev/null
"$ctl" admin add erin --password-file erin.pw > /dev/null
"$ctl" approvals set recover 2 > /dev/null
"$ctl" user add alice@example.org bob@example.org > /dev/null

# 1. A session row inserted: a token of the writer's choosing for carol.
forged_token=forged-session-token-of-the-writer
db "INSERT INTO kv VALUES ('sessions/$(printf %s "$forged_token" | sha256sum | cut -c1-64)',
    '{\"admin\":\"carol\",\"expires\":4102444800}')"
echo "$forged_token" > forged.session
run env MAILKMS_SESSION_FILE=forged.session "$ctl" admin list
t "an inserted session row is no session" '[ $rc != 0 ] && grep -q "no valid session" err'
t "and the log says so" 'logged "admin-list: sessions/"'
t "and so does the audit log" 'audited "a row the manifest does not name"'

# 2. An administrator's row changed: erin's password hash replaced by
# carol's, which the writer knows.
db "UPDATE kv SET value = (SELECT value FROM kv WHERE key = 'admins/carol') WHERE key = 'admins/erin'"
run env MAILKMS_SESSION_FILE=erin.session "$ctl" login erin --password-file carol.pw
t "a changed administrator's row logs no one in" '[ $rc != 0 ] && ! grep -q "logged in" out'
t "and the log names the row" 'logged "login: admins/erin: the row was changed"'

# 3. An approval count set to 1: recovery would need one administrator.
approvals=$(value config/approvals)
db "UPDATE kv SET value = CAST(replace(CAST(value AS TEXT), '\"recover\":2', '\"recover\":1') AS BLOB)
    WHERE key = 'config/approvals'"
echo "a recovery password" > p12.pw
run "$ctl" recover alice@example.org --out alice.p12 --password-file p12.pw
t "a forged approval count recovers nothing" '[ $rc != 0 ] && [ ! -s alice.p12 ]'
t "and the log names the row" 'logged "recover: config/approvals: the row was changed"'
put_back config/approvals "$approvals"

# 4. A trust anchor inserted: the writer's own root.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout evil.key -out evil.pem \
  -subj "/CN=Evil Root" -days 30 -addext basicConstraints=critical,CA:TRUE 2> /dev/null
fingerprint=$(openssl x509 -in evil.pem -outform DER | sha256sum | cut -c1-64)
db "INSERT INTO kv VALUES ('trust/$fingerprint', CAST('$(cat evil.pem)' AS BLOB))"
run "$ctl" trust list
t "an inserted trust anchor is not trusted" '[ $rc = 0 ] && grep -q "^ours  CN=Example Root CA" out && ! grep -q "Evil Root" out'
t "and the log names the row" 'logged "trust-list: trust/$fingerprint: a row the manifest does not name"'

# 4b. A trust anchor's scope widened: its domains taken out of its row, or
# the row it had before it was scoped put back.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout partner.key -out partner.pem \
  -subj "/CN=Partner Root" -days 30 -addext basicConstraints=critical,CA:TRUE 2> /dev/null
partner=$(openssl x509 -in partner.pem -outform DER | sha256sum | cut -c1-64)
"$ctl" trust add partner.pem > /dev/null
unscoped=$(value "trust/$partner")
"$ctl" trust add partner.pem --domains partner.example > /dev/null
scoped=$(value "trust/$partner")
db "UPDATE kv SET value = CAST(replace(CAST(value AS TEXT), '[\"partner.example\"]', '[]') AS BLOB) WHERE key = 'trust/$partner'"
run "$ctl" trust list
t "a scope taken out of an anchor's row widens nothing: the trust list is refused" '[ $rc != 0 ] && ! grep -q "Partner Root" out'
t "and the log names the row" 'logged "trust-list: trust/$partner: the row was changed"'
put_back "trust/$partner" "$unscoped"
run "$ctl" trust list
t "nor does the unscoped row put back" '[ $rc != 0 ] && ! grep -q "Partner Root" out'
t "and the log names the row" 'logged "trust-list: trust/$partner: an older copy of the row was put back"'
put_back "trust/$partner" "$scoped"
run "$ctl" trust list
t "the scoped row as it was is trusted again, with its scope" '[ $rc = 0 ] && grep -q "^added  CN=Partner Root  sha256 $partner  for partner.example$" out'

# 5. A revocation undone: the revocation row deleted, the certificate's
# row put back as it was before.
serial=$("$ctl" user show bob@example.org | sed -n 's/^certificate: \([^ ]*\)  signing.*$/\1/p')
before=$(value "certs/$serial")
"$ctl" revoke --serial "$serial" --reason keyCompromise > /dev/null
revocation=$(db "SELECT key FROM kv WHERE key LIKE 'revoked/%/$serial'")
db "DELETE FROM kv WHERE key = '$revocation'"
put_back "certs/$serial" "$before"
run "$ctl" crl export --ca "$(echo "$revocation" | cut -d/ -f2)" --out crl.der
t "a deleted revocation row is refused, not left out of the CRL" \
  '[ $rc != 0 ] && ! { [ -s crl.der ] && ! openssl crl -inform DER -in crl.der -noout -text | grep -qi "$serial"; }'
t "and the log names the row" 'logged "crl: $revocation: the row was deleted"'

# 6. A used token put back as it was before it was used.
"$ctl" enroll alice@example.org > /dev/null 2>&1
token=$(token_to alice@example.org)
rows=$(db "SELECT key || ' ' || hex(value) FROM kv WHERE key LIKE 'token/%' OR key LIKE 'token-index/%'")
run python3 redeem.py keystore.sock alice@example.org "$token" "$(cat alice.pw)"
t "alice's token brings her keys" '[ $rc = 0 ]'
while read -r key hex; do put_back "$key" "$hex"; done <<< "$rows"
run python3 redeem.py keystore.sock alice@example.org "$token" "$(cat alice.pw)"
t "the token put back unused does not work twice" '[ $rc != 0 ]'
t "and the log names the row" 'logged "redeem-token: token/"'

# 7. The audit head put back as it was: the next record would overwrite
# history.
head=$(value core/audit-head)
"$ctl" user add carol@example.org > /dev/null
put_back core/audit-head "$head"
run "$ctl" user add dave@example.org
t "an older audit head stops what must be audited" '[ $rc != 0 ] && ! "$ctl" user show dave@example.org > /dev/null 2>&1'
t "and the log says why" 'logged "user-add: core/audit-head: the audit head says record"'

finish
