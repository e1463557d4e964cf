#!/usr/bin/env bash
# The main job on embedded defaults. Until the keystore and the milter land,
# that is a demonstration of the S/MIME engine: a throw-away CA and two
# users, a message from alice to bob signed and encrypted by mailkmsctl, and
# the real openssl command decrypting and verifying it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -G Ninja -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=OFF >/dev/null
cmake --build build/release --target mailkmsctl >/dev/null
ctl=$PWD/build/release/cli/mailkmsctl

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
