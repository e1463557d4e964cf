#!/usr/bin/env bash
# The main job on embedded defaults. Until the milter lands, a
# demonstration: first the S/MIME engine on files with a throw-away CA,
# then the keystore — mailkms-keystored on SQLite with a fresh CA and two
# users, a message signed with alice's key inside the daemon and encrypted
# to bob's certificate, and bob's recovered keys opening it with openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -G Ninja -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=OFF >/dev/null
cmake --build build/release --target mailkmsctl mailkms-keystored >/dev/null
ctl=$PWD/build/release/cli/mailkmsctl
keystored=$PWD/build/release/keystore/daemon/mailkms-keystored

work=$(mktemp -d)
daemon_pid=
trap '[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }

step "A throw-away CA (root and issuing CA) and the users alice and bob"
scripts/make-throwaway-pki.sh "$work/pki"
cd "$work/pki"
for user in alice bob; do
  openssl x509 -in "$user.pem" -noout -subject -ext subjectAltName | paste -sd ' '
done

cat > message.eml <<'MAIL'
From: Alice <alice@example.org>
To: Bob <bob@example.org>
Subject: The quarterly figures
Date: Wed, 25 Nov 2026 10:00:00 +0000
Message-ID: <figures-1@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Bob,

the figures are in: revenue up 4 %, costs down 2 %.
Grüße, Alice
MAIL

step "mailkmsctl signs as alice, then encrypts to bob and to alice (so her sent copy stays readable)"
"$ctl" message sign --cert alice.pem --key alice.key --chain chain.pem --in message.eml |
  "$ctl" message encrypt --to bob.pem --to alice.pem --out secured.eml
sed -n '1,12p' secured.eml
echo "[… $(wc -c < secured.eml) bytes in all]"

step "What an administrator sees: mailkmsctl message inspect, with bob's key"
"$ctl" message inspect --in secured.eml --cert bob.pem --key bob.key

step "openssl cms decrypts it with bob's key and verifies alice's signature"
openssl cms -decrypt -in secured.eml -recip bob.pem -inkey bob.key -out signed.eml
openssl cms -verify -in signed.eml -CAfile root.pem -purpose smimesign -out content.txt
cat content.txt

step "mailkmsctl agrees"
"$ctl" message decrypt --in secured.eml --cert bob.pem --key bob.key |
  "$ctl" message verify --trust root.pem

step "Now the keystore: mailkms-keystored on SQLite, sealed with a key file"
mkdir "$work/keystore" && cd "$work/keystore"
cat > mailkms.conf <<CONF
[keystore]
database = "$PWD/keystore.db"
socket = "$PWD/keystore.sock"
unseal_key_file = "$PWD/master.key"
lock_memory = false
CONF
export MAILKMS_CONFIG=$PWD/mailkms.conf MAILKMS_SESSION_FILE=$PWD/session
head -c 24 /dev/urandom | base64 > admin.pw
"$ctl" init --admin demo --admin-password-file admin.pw --key-file master.key
"$keystored" --config mailkms.conf 2> daemon.log &
daemon_pid=$!
for _ in $(seq 100); do [ -S keystore.sock ] && break; sleep 0.05; done
"$ctl" status
"$ctl" login demo --password-file admin.pw

step "A fresh CA and two users, with keys made and escrowed by the keystore"
"$ctl" ca init --id root --name "Demo Root CA"
"$ctl" ca add-subordinate --id issuing --parent root --name "Demo Issuing CA"
"$ctl" user add alice@example.org bob@example.org
"$ctl" user show bob@example.org

step "alice's message, signed with her key inside the daemon, encrypted to bob's certificate"
"$ctl" message sign --as alice@example.org --in "$work/pki/message.eml" |
  "$ctl" message encrypt --to-user bob@example.org --out secured.eml
"$ctl" message inspect --in secured.eml

step "bob lost his key: an administrator recovers it as a PKCS#12, and openssl opens the mail with it"
head -c 24 /dev/urandom | base64 > p12.pw
"$ctl" recover bob@example.org --out bob.p12 --password-file p12.pw
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
openssl cms -decrypt -in secured.eml -recip bob.pem -inkey bob.key -out signed.eml
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -cacerts -out chain.pem 2> /dev/null
openssl cms -verify -in signed.eml -CAfile chain.pem -purpose smimesign -out content.txt
cat content.txt

step "Everything the administrators did is in the audit log, and it verifies"
"$ctl" audit show --limit 20 | cut -c1-120
"$ctl" audit verify
