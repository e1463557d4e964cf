#!/usr/bin/env bash
# End-to-end tests of `mailkmsctl message`, with the openssl command line as
# the independent party: what mailkmsctl signs or encrypts, openssl must
# verify or decrypt, and the other way round, byte for byte.
# Usage: cli_test.sh MAILKMSCTL PKI_DIR
#   PKI_DIR: made by scripts/make-throwaway-pki.sh
#
# Test conditions are single-quoted on purpose: t() evaluates them later.
# shellcheck disable=SC2016
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"

[[ $# == 2 ]] || { echo "usage: cli_test.sh MAILKMSCTL PKI_DIR" >&2; exit 2; }
ctl=$(realpath "$1")
pki=$(realpath "$2")
[[ -x $ctl ]] || { echo "not executable: $ctl" >&2; exit 2; }
[[ -f $pki/root.pem ]] || { echo "no test PKI in $pki" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 2


# fixture CMD… : makes a test input with openssl; if that fails, say so.
fixture() {
  if ! "$@" >/dev/null 2>fixture.err; then
    failed=$((failed + 1))
    echo "FAIL - fixture: $*"
    sed -n '1,8s/^/       stderr: /p' fixture.err
  fi
}

skip() { echo "skip - $1"; }

has() { grep -qsE -- "$2" "$1"; }  # has FILE REGEX
# line FILE TEXT: TEXT is a whole line of FILE, line endings aside.
line() { [[ -f $1 ]] && tr -d '\r' <"$1" | grep -qxF -- "$2"; }
# The body of a message or entity: what follows the first empty line, LF.
body_of() { [[ -f $1 ]] && tr -d '\r' <"$1" | sed '1,/^$/d'; }
same_body() { body_of "$1" >got-body && cmp -s got-body body.txt; }  # same_body FILE

# ---- fixtures

cat >body.txt <<'EOF'
Dear Bob,
the CANARY sings at dawn.
Alice
EOF
{
  printf 'From: Alice <alice@example.org>\nTo: Bob <bob@example.org>\nSubject: mailkmsctl test\n'
  printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
  cat body.txt
} >msg.eml
sed 's/$/\r/' msg.eml >msg-crlf.eml  # what the engine writes
{ printf 'Content-Type: text/plain; charset=us-ascii\n\n'; cat body.txt; } >entity.txt
printf 'correct horse battery staple\n' >pw.txt
printf 'wrong\n' >wrong-pw.txt
cat "$pki/other-root.pem" "$pki/root.pem" >trust-bundle.pem  # our root second
# shellcheck disable=SC2034  # used in a test condition
bob_serial=$(openssl x509 -in "$pki/bob.pem" -noout -serial | sed 's/^serial=//')

# ---- general

run "$ctl" --version
t "--version prints the version" '[[ $rc == 0 ]] && has out "^mailkmsctl [0-9]+\.[0-9]+\.[0-9]+$"'

for cmd in "" "message" "message sign" "message encrypt" "message verify" "message decrypt" "message inspect"; do
  # shellcheck disable=SC2086  # $cmd is words on purpose
  run "$ctl" $cmd --help
  t "${cmd:-mailkmsctl} --help" '[[ $rc == 0 ]] && has out "^Usage: mailkmsctl${cmd:+ $cmd} " && [[ ! -s err ]]'
done
run "$ctl" message sign --help
t "sign --help lists its options" 'has out "--digest" && has out "--pss" && has out "--opaque" && has out "--chain"'

run "$ctl"
t "no command: usage error" '[[ $rc == 2 ]] && has err "^mailkmsctl: "'
run "$ctl" message frobnicate
t "unknown command: usage error" '[[ $rc == 2 ]] && has err "^mailkmsctl: "'

# ---- sign

run "$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" <msg.eml
cp out signed.eml
t "sign: multipart/signed, outer fields kept" \
  '[[ $rc == 0 ]] && has out "^Content-Type: multipart/signed" && has out "micalg=sha-256" &&
   line out "Subject: mailkmsctl test" && line out "From: Alice <alice@example.org>"'
run openssl cms -verify -CAfile "$pki/root.pem" -certfile "$pki/chain.pem" -in signed.eml
t "sign: openssl verifies it and gets the body" '[[ $rc == 0 ]] && same_body out'

run "$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" \
  --opaque --pss --digest sha512 --in msg.eml --out opaque.eml
t "sign --opaque --pss --digest sha512 --out: writes the file, not stdout" \
  '[[ $rc == 0 && ! -s out ]] && has opaque.eml "^Content-Type: application/pkcs7-mime; smime-type=signed-data"'
run openssl cms -verify -CAfile "$pki/root.pem" -in opaque.eml
t "sign --opaque --pss: openssl verifies it and gets the body" '[[ $rc == 0 ]] && same_body out'
run openssl cms -cmsout -print -in opaque.eml
t "sign --pss --digest sha512: RSASSA-PSS over SHA-512" 'has out "rsassaPss" && has out "sha512"'

run "$ctl" message sign --cert "$pki/carol.pem" --key "$pki/carol.key" --chain "$pki/chain.pem" <msg.eml
cp out signed-ec.eml
run openssl cms -verify -CAfile "$pki/root.pem" -in signed-ec.eml
t "sign with EC P-256: openssl verifies it" '[[ $rc == 0 ]] && same_body out'

run "$ctl" message sign --cert "$pki/carol.pem" --key "$pki/carol.key" --pss <msg.eml
t "sign --pss with an EC key: refused" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: "'
run "$ctl" message sign --cert "$pki/alice.pem" --key "$pki/bob.key" <msg.eml
t "sign with a key of another certificate: refused" '[[ $rc == 2 ]] && has err "does not belong"'
run "$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --digest sha1 <msg.eml
t "sign --digest sha1: usage error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: .*sha256"'

fixture openssl pkey -in "$pki/alice.key" -aes256 -passout file:pw.txt -out alice-enc.key
run "$ctl" message sign --cert "$pki/alice.pem" --key alice-enc.key --key-password-file pw.txt \
  --chain "$pki/chain.pem" <msg.eml
cp out signed-enc-key.eml
run openssl cms -verify -CAfile "$pki/root.pem" -certfile "$pki/chain.pem" -in signed-enc-key.eml
t "sign with an encrypted key and --key-password-file" '[[ $rc == 0 ]] && same_body out'
run "$ctl" message sign --cert "$pki/alice.pem" --key alice-enc.key <msg.eml
t "sign with an encrypted key, no password file: error, no prompt" \
  '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: .*--key-password-file"'
run "$ctl" message sign --cert "$pki/alice.pem" --key alice-enc.key --key-password-file wrong-pw.txt <msg.eml
t "sign with a wrong key password: error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: "'

# ---- verify

run "$ctl" message verify --trust "$pki/root.pem" <signed.eml
t "verify: pass, exit 0" \
  '[[ $rc == 0 ]] && line out "status: pass" && has out "^signer: .*CN=alice" &&
   line out "addresses: alice@example.org" && has out "^reason: " && ! has out "^weak:"'

sed 's/CANARY/CANARX/' signed.eml >tampered.eml
run "$ctl" message verify --trust "$pki/root.pem" <tampered.eml
t "verify a tampered body: fail, exit 1" '! cmp -s signed.eml tampered.eml && [[ $rc == 1 ]] && line out "status: fail"'

run "$ctl" message verify --trust "$pki/other-root.pem" <signed.eml
t "verify against another root: untrusted, exit 1" '[[ $rc == 1 ]] && line out "status: untrusted"'

run "$ctl" message verify --trust trust-bundle.pem <signed.eml
t "verify --trust with a bundle: every certificate is an anchor" '[[ $rc == 0 ]] && line out "status: pass"'
run "$ctl" message verify --trust "$pki/other-root.pem" --trust "$pki/root.pem" <signed.eml
t "verify --trust repeated" '[[ $rc == 0 ]] && line out "status: pass"'

run "$ctl" message verify --trust "$pki/root.pem" --from bob@example.org <signed.eml
t "verify --from another address: signer-mismatch, exit 1" '[[ $rc == 1 ]] && line out "status: signer-mismatch"'

run "$ctl" message verify --trust "$pki/root.pem" --in opaque.eml --out report.txt
t "verify opaque --in --out" '[[ $rc == 0 && ! -s out ]] && line report.txt "status: pass"'

run "$ctl" message verify --trust "$pki/root.pem" --from carol@example.org <signed-ec.eml
t "verify EC signature" '[[ $rc == 0 ]] && line out "status: pass" && line out "addresses: carol@example.org"'

run "$ctl" message sign --cert "$pki/erin.pem" --key "$pki/erin.key" --chain "$pki/chain.pem" <msg.eml
cp out signed-expired.eml
run "$ctl" message verify --trust "$pki/root.pem" --from erin@example.org <signed-expired.eml
t "verify an expired signer: expired, exit 1" '[[ $rc == 1 ]] && line out "status: expired"'

run "$ctl" message verify --trust "$pki/root.pem" <msg.eml
t "verify an unsigned message: no-signature, exit 1" '[[ $rc == 1 ]] && line out "status: no-signature"'

run "$ctl" message verify <signed.eml
t "verify without anchors: usage error" '[[ $rc == 2 ]] && has err "^mailkmsctl: "'
run "$ctl" message verify --trust does-not-exist.pem <signed.eml
t "verify with a missing trust file: usage error" '[[ $rc == 2 ]] && has err "^mailkmsctl: .*does-not-exist.pem"'

fixture openssl cms -sign -md sha1 -signer "$pki/alice.pem" -inkey "$pki/alice.key" -certfile "$pki/chain.pem" \
  -from alice@example.org -to bob@example.org -subject "old mail" -in entity.txt -out signed-sha1.eml
run "$ctl" message verify --trust "$pki/root.pem" <signed-sha1.eml
t "verify an openssl SHA-1 signature: pass but weak" '[[ $rc == 0 ]] && line out "status: pass" && line out "weak: yes"'

# ---- encrypt

run "$ctl" message encrypt --to "$pki/bob.pem" <msg.eml
cp out encrypted.eml
t "encrypt: enveloped-data, outer fields kept, no plaintext" \
  '[[ $rc == 0 ]] && has out "^Content-Type: application/pkcs7-mime; smime-type=enveloped-data" &&
   line out "Subject: mailkmsctl test" && ! has out CANARY'
run openssl cms -decrypt -recip "$pki/bob.pem" -inkey "$pki/bob.key" -in encrypted.eml
t "encrypt: openssl decrypts the exact entity" '[[ $rc == 0 ]] && has out "^Content-Type: text/plain" && same_body out'

run "$ctl" message encrypt --to "$pki/bob.pem" --oaep --cipher aes-256-gcm <msg.eml
cp out encrypted-gcm.eml
run openssl cms -decrypt -recip "$pki/bob.pem" -inkey "$pki/bob.key" -in encrypted-gcm.eml
t "encrypt --oaep --cipher aes-256-gcm: openssl decrypts it" '[[ $rc == 0 ]] && same_body out'
run openssl cms -cmsout -print -in encrypted-gcm.eml
t "encrypt --oaep --cipher aes-256-gcm: RSAES-OAEP, AES-256-GCM" 'has out "rsaesOaep" && has out "aes-256-gcm"'

run "$ctl" message encrypt --to "$pki/alice.pem" --to "$pki/bob.pem" --to "$pki/carol.pem" --cipher AES128-CBC <msg.eml
cp out encrypted-3.eml
run openssl cms -decrypt -recip "$pki/carol.pem" -inkey "$pki/carol.key" -in encrypted-3.eml
t "encrypt to three (one EC): openssl decrypts as the EC recipient" '[[ $rc == 0 ]] && same_body out'
run "$ctl" message decrypt --cert "$pki/alice.pem" --key "$pki/alice.key" <encrypted-3.eml
t "encrypt to three: mailkmsctl decrypts as another, the whole message exactly" '[[ $rc == 0 ]] && cmp -s out msg-crlf.eml'

run "$ctl" message encrypt --to "$pki/bob.pem" --cipher blowfish <msg.eml
t "encrypt --cipher blowfish: error listing the valid names" \
  '[[ $rc != 0 && ! -s out ]] && has err "^mailkmsctl: .*blowfish" && has err "aes-256-cbc"'
run "$ctl" message encrypt --to "$pki/bob.pem" --cipher rc2-40 <msg.eml
t "encrypt --cipher rc2-40: refused" '[[ $rc != 0 && ! -s out ]] && has err "^mailkmsctl: "'
run "$ctl" message encrypt <msg.eml
t "encrypt without --to: usage error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: .*--to"'
run "$ctl" message encrypt --to body.txt <msg.eml
t "encrypt to a file that is no certificate: usage error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: body.txt"'

# ---- decrypt

run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <encrypted.eml
t "decrypt mailkmsctl's own: the whole message exactly" '[[ $rc == 0 ]] && cmp -s out msg-crlf.eml'
run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <encrypted-gcm.eml
t "decrypt AES-GCM: the whole message exactly" '[[ $rc == 0 ]] && cmp -s out msg-crlf.eml'

fixture openssl cms -encrypt -aes256 -in entity.txt -out openssl-enc.p7m "$pki/bob.pem"
{ printf 'From: Alice <alice@example.org>\nTo: bob@example.org\nSubject: from openssl\n'; cat openssl-enc.p7m; } \
  >openssl-enc.eml
run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <openssl-enc.eml
t "decrypt openssl's: outer fields kept, entity in place, exact body" \
  '[[ $rc == 0 ]] && line out "Subject: from openssl" && line out "Content-Type: text/plain; charset=us-ascii" &&
   ! has out "pkcs7-mime" && same_body out'

fixture openssl cms -encrypt -aes128 -recip "$pki/bob.pem" -keyopt rsa_padding_mode:oaep -in entity.txt \
  -out openssl-oaep.eml
run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <openssl-oaep.eml
t "decrypt openssl's RSA-OAEP" '[[ $rc == 0 ]] && same_body out'
run "$ctl" message inspect <openssl-oaep.eml
t "inspect openssl's RSA-OAEP" '[[ $rc == 0 ]] && line out "  cipher: aes-128-cbc" && has out "\(RSA-OAEP\)$"'
fixture openssl cms -encrypt -aes256 -recip "$pki/carol.pem" -in entity.txt -out openssl-ec.eml
run "$ctl" message decrypt --cert "$pki/carol.pem" --key "$pki/carol.key" --in openssl-ec.eml --out decrypted.eml
t "decrypt openssl's ECDH --in --out" '[[ $rc == 0 && ! -s out ]] && same_body decrypted.eml'

fixture openssl pkcs12 -export -in "$pki/bob.pem" -inkey "$pki/bob.key" -certfile "$pki/chain.pem" \
  -passout file:pw.txt -out bob.p12
run "$ctl" message decrypt --p12 bob.p12 --password-file pw.txt <encrypted.eml
t "decrypt --p12 --password-file" '[[ $rc == 0 ]] && cmp -s out msg-crlf.eml'
run "$ctl" message decrypt --p12 bob.p12 --password-file wrong-pw.txt <encrypted.eml
t "decrypt --p12 with a wrong password: error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: bob.p12"'
run "$ctl" message decrypt --p12 bob.p12 <encrypted.eml
t "decrypt --p12 without --password-file: usage error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: "'
run "$ctl" message decrypt --p12 bob.p12 --password-file pw.txt --cert "$pki/bob.pem" --key "$pki/bob.key" <encrypted.eml
t "decrypt --p12 with --cert: usage error" '[[ $rc == 2 && ! -s out ]]'

fixture openssl pkey -in "$pki/bob.key" -aes256 -passout file:pw.txt -out bob-enc.key
run "$ctl" message decrypt --cert "$pki/bob.pem" --key bob-enc.key --key-password-file pw.txt <encrypted.eml
t "decrypt with an encrypted key and --key-password-file" '[[ $rc == 0 ]] && cmp -s out msg-crlf.eml'

run "$ctl" message decrypt --cert "$pki/alice.pem" --key "$pki/alice.key" <encrypted.eml
t "decrypt with a key that is no recipient: error" '[[ $rc == 1 && ! -s out ]] && has err "^mailkmsctl: .*recipient"'
run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <signed.eml
t "decrypt a signed message: error saying it is not encrypted" '[[ $rc == 1 && ! -s out ]] && has err "not encrypted"'
run "$ctl" message decrypt <encrypted.eml
t "decrypt without a key: usage error" '[[ $rc == 2 && ! -s out ]] && has err "^mailkmsctl: "'

if openssl cms -encrypt -rc2-40 -provider legacy -provider default -in entity.txt -out rc2.eml "$pki/bob.pem" 2>/dev/null; then
  run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <rc2.eml
  t "decrypt RC2 without --legacy: refused, naming --legacy" '[[ $rc == 1 && ! -s out ]] && has err "--legacy"'
  run "$ctl" message decrypt --legacy --cert "$pki/bob.pem" --key "$pki/bob.key" <rc2.eml
  t "decrypt RC2 with --legacy" '[[ $rc == 0 ]] && same_body out'
else
  skip "decrypt RC2 (openssl has no legacy provider here)"
fi

# ---- inspect

run "$ctl" message inspect <encrypted-gcm.eml
t "inspect: layer, cipher and recipient" \
  '[[ $rc == 0 ]] && line out "encrypted (authEnveloped-data)" && line out "  cipher: aes-256-gcm" &&
   has out "^  recipient: .*CN=issuing.*serial $bob_serial \(RSA-OAEP\)$"'
run "$ctl" message inspect --cert "$pki/bob.pem" --key "$pki/bob.key" <encrypted.eml
t "inspect with a key: opens the layer and shows the content" \
  '[[ $rc == 0 ]] && line out "  cipher: aes-256-cbc" && has out "^  opened with: .*CN=bob" &&
   line out "content" && line out "  type: text/plain"'
run "$ctl" message inspect <signed.eml
t "inspect a signed message: signer and certificates" \
  '[[ $rc == 0 ]] && line out "signed (multipart/signed)" && has out "^  signer: .*CN=alice \(digest sha256\)$" &&
   has out "^  certificate: .*CN=issuing" && line out "  signature: intact"'
"$ctl" message encrypt --to "$pki/bob.pem" --cipher aes-128-gcm <signed.eml >signed-encrypted.eml
run "$ctl" message inspect --cert "$pki/bob.pem" --key "$pki/bob.key" <signed-encrypted.eml
t "inspect signed then encrypted, with a key: both layers, outermost first" \
  '[[ $rc == 0 ]] && tr -d "\r" <out | grep -vE "^  " >titles &&
   printf "%s\n" "encrypted (authEnveloped-data)" "signed (multipart/signed)" content | cmp -s - titles'
run "$ctl" message decrypt --cert "$pki/bob.pem" --key "$pki/bob.key" <signed-encrypted.eml
cp out signed-decrypted.eml
run "$ctl" message verify --trust "$pki/root.pem" <signed-decrypted.eml
t "decrypt then verify a signed and encrypted message: pass" '[[ $rc == 0 ]] && line out "status: pass"'
run "$ctl" message inspect --in tampered.eml
t "inspect a tampered message: says so" '[[ $rc == 0 ]] && has out "^  signature: fail"'

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
