#!/usr/bin/env bash
# What mailkms signs must still verify after a real Postfix has carried it
# over SMTP: header folding, Received lines, dot-stuffing, long lines and
# 8bit content must not break the signature. Signs with mailkmsctl, sends
# through a private Postfix on loopback, and verifies what arrives at the
# other side with mailkmsctl and with openssl.
# Usage: postfix_pass_test.sh MAILKMSCTL PKI_DIR   (as root)
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"
[[ $# == 2 ]] || { echo "usage: postfix_pass_test.sh MAILKMSCTL PKI_DIR" >&2; exit 2; }
ctl=$(realpath "$1")
pki=$(realpath "$2")
here=$(dirname "$(realpath "$0")")
# shellcheck source=postfix-fixture.sh
. "$here/postfix-fixture.sh"

work=$(mktemp -d)
chmod 755 "$work"  # Postfix runs as the postfix user
trap 'postfix_stop; rm -rf "$work"' EXIT
cd "$work" || exit 2

# A message with everything transports like to change.
long_line=$(printf 'y%.0s' $(seq 998))
attachment=$(head -c 3000 /dev/urandom | base64 -w 76)
printf '%s\r\n' \
  "From: =?utf-8?q?Alice_M=C3=BCller?= <alice@example.org>" \
  "To: bob@example.org" \
  "Subject: =?utf-8?b?w5xiZXJzaWNodA==?= of the quarter" \
  "Date: Wed, 25 Nov 2026 10:00:00 +0000" \
  "Message-ID: <postfix-pass@example.org>" \
  "MIME-Version: 1.0" \
  "Content-Type: multipart/mixed; boundary=\"outer\"" \
  "" \
  "--outer" \
  "Content-Type: text/plain; charset=utf-8" \
  "Content-Transfer-Encoding: 8bit" \
  "" \
  "Grüße aus Köln." \
  "$long_line" \
  "From the start of a line, as mbox files fear." \
  ".a line with a leading dot, as SMTP fears" \
  "." \
  "--outer" \
  "Content-Type: application/octet-stream; name=\"data.bin\"" \
  "Content-Transfer-Encoding: base64" \
  "" \
  "$attachment" \
  "--outer--" > message.eml

postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; exit 1; }

"$ctl" message sign --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" \
  --in message.eml --out detached.eml
"$ctl" message sign --opaque --cert "$pki/alice.pem" --key "$pki/alice.key" --chain "$pki/chain.pem" \
  --in message.eml --out opaque.eml
"$ctl" message encrypt --to "$pki/bob.pem" --in detached.eml --out encrypted.eml

for m in detached opaque encrypted; do
  check "Postfix accepts the $m message" \
    swaks --silent 2 --server "127.0.0.1:$POSTFIX_PORT" --from alice@example.org --to bob@example.org \
    --data "$work/$m.eml"
  postfix_wait_for 1 || { failed=$((failed + 1)); break; }
  mv "$(sink_files | head -n 1)" "arrived-$m.eml"
done

for m in detached opaque; do
  check "the $m signature verifies after the trip (mailkmsctl)" \
    bash -c "'$ctl' message verify --trust '$pki/root.pem' --in arrived-$m.eml | grep -qx 'status: pass'"
  check "the $m signature verifies after the trip (openssl)" \
    openssl cms -verify -in "arrived-$m.eml" -CAfile "$pki/root.pem" -purpose smimesign -out "content-$m.txt"
  check "the $m content arrives whole: the attachment" grep -qF "${attachment:0:76}" "content-$m.txt"
  check "the $m content arrives whole: the 8bit text as quoted-printable" grep -qF "Gr=C3=BC=C3=9Fe" "content-$m.txt"
done
check "Postfix added its Received line outside the signature" grep -q "by mailkms-test.localdomain (Postfix)" arrived-detached.eml
check "the encrypted message decrypts and verifies after the trip" \
  bash -c "'$ctl' message decrypt --cert '$pki/bob.pem' --key '$pki/bob.key' --in arrived-encrypted.eml |
           '$ctl' message verify --trust '$pki/root.pem' | grep -qx 'status: pass'"

finish
