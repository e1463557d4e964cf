#!/usr/bin/env bash
# Seeds for the fuzz targets made from the test PKI with the real openssl
# command, as real clients write them: signed (detached and opaque, RSA and
# EC), encrypted to bob (AES-CBC, AES-GCM, OAEP), signed then encrypted,
# enrollment replies with a PKCS#10 request, and DER. Made at build time,
# so the corpus in the repository stays small and the signatures verify
# against the PKI the targets trust.
# Usage: make-seeds.sh PKI_DIR OUT_DIR
set -euo pipefail
pki=$1
out=$2
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cd "$out.tmp"
for t in smime_inbound signed_differential der_reader policy_file mailkms_conf keystore_request \
         enrollment_reply pkcs10_request addresses smtp_session; do
  mkdir -p "$t"
done

cat > plain.eml <<'MSG'
From: Alice <alice@example.org>
To: Bob <bob@example.org>
Subject: =?UTF-8?Q?quarterly_figures_=E2=82=AC?=
Date: Wed, 25 Nov 2026 10:00:00 +0000
Message-ID: <figures-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain; charset=us-ascii

The figures are attached in spirit.
--outer
Content-Type: application/octet-stream; name="figures.bin"
Content-Transfer-Encoding: base64

AAECAwQFBgcICQ==
--outer--
MSG
sed -i 's/$/\r/' plain.eml
cp plain.eml smime_inbound/plain.eml

headers() { printf 'From: Alice <%s>\r\nTo: Bob <bob@example.org>\r\nSubject: seed\r\n' "$1"; }
sign() {  # sign NAME SIGNER [openssl cms options…]
  local name=$1 signer=$2
  shift 2
  { headers "$signer@example.org"
    openssl cms -sign -in plain.eml -signer "$pki/$signer.pem" -inkey "$pki/$signer.key" \
      -certfile "$pki/chain.pem" -crlfeol "$@"; } > "$name"
}
sign signed-rsa.eml alice
sign signed-ec.eml carol -md sha384
sign signed-pss.eml alice -keyopt rsa_padding_mode:pss
sign signed-opaque.eml alice -nodetach
sign signed-untrusted.eml mallory
# Every line ended by CRLF, as the milter hands messages over: the streamed
# verifier reads these from the spool rather than falling back to memory.
sed 's/\r*$/\r/' signed-rsa.eml > signed-rsa-crlf.eml
sed 's/\r*$/\r/' signed-ec.eml > signed-ec-crlf.eml
for f in signed-*.eml; do
  cp "$f" smime_inbound/
  cp "$f" signed_differential/
done

encrypt() {  # encrypt NAME INPUT [openssl cms options…]
  local name=$1 input=$2
  shift 2
  { headers alice@example.org
    openssl cms -encrypt -in "$input" "$@" "$pki/bob.pem"; } > "smime_inbound/$name"
}
encrypt enveloped-aes256.eml plain.eml -aes256
encrypt enveloped-oaep.eml plain.eml -aes128 -recip "$pki/bob.pem" -keyopt rsa_padding_mode:oaep
openssl cms -encrypt -in plain.eml -aes-256-gcm "$pki/bob.pem" > gcm.body 2>/dev/null &&
  { headers alice@example.org; cat gcm.body; } > smime_inbound/auth-enveloped.eml
encrypt signed-then-encrypted.eml signed-rsa.eml -aes256
{ headers alice@example.org
  openssl cms -encrypt -in plain.eml -aes256 "$pki/carol.pem"; } > smime_inbound/enveloped-ecdh.eml

# DER as the engine's own reader meets it: CMS, a certificate, a request.
openssl cms -encrypt -in plain.eml -outform DER -aes256 "$pki/bob.pem" > der_reader/enveloped.der
openssl cms -sign -in plain.eml -outform DER -signer "$pki/carol.pem" -inkey "$pki/carol.key" -nodetach \
  > der_reader/signed.der
openssl x509 -in "$pki/alice.pem" -outform DER > der_reader/alice.der

# Users' own requests, as PEM (what the keystore reads) and attached to a reply.
openssl req -new -key "$pki/alice.key" -subj "/CN=alice" > pkcs10_request/rsa.pem
openssl req -new -key "$pki/carol.key" -subj "/CN=carol" > pkcs10_request/p256.pem
openssl req -new -key "$pki/dave.key" -subj "/CN=dave" -addext "subjectAltName=email:dave@example.org" \
  > pkcs10_request/p384.pem
openssl req -in pkcs10_request/rsa.pem -outform DER > der_reader/request.der
openssl req -in pkcs10_request/rsa.pem -outform DER > request.der
{ printf 'From: alice@example.org\r\nTo: mailkms-enroll@example.org\r\nSubject: Re: your certificate\r\n'
  printf 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
  printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
  printf 'Password: correct horse=20battery\r\n\r\n> Your token: MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z\r\n'
  printf '\r\n--b\r\nContent-Type: application/pkcs10; name="alice.p10"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
  base64 -w 76 request.der | sed 's/$/\r/'
  printf '\r\n--b--\r\n'; } > enrollment_reply/reply-with-request.eml

# Every target has seeds here, so the replay always reads this directory.
cp "$pki/alice.pem" policy_file/certificate.pem
cp "$pki/alice.pem" mailkms_conf/certificate.pem
printf '{"id":1,"op":"status"}' > keystore_request/status.json
headers alice@example.org > addresses/headers.txt
# A pipelined session whose DATA is a signed message, dot-stuffed as sent.
for seed in smime_inbound/*; do
  { printf 'EHLO client.example.org\r\nMAIL FROM:<alice@example.org> SIZE=9000 BODY=8BITMIME\r\n'
    printf 'RCPT TO:<bob@example.org>\r\nDATA\r\n'
    sed 's/^\./../' "$seed"
    printf '.\r\nQUIT\r\n'; } > "smtp_session/session-$(basename "$seed")"
  break
done
rm -f ./*.eml ./*.der ./*.body
touch made
cd ..
rm -rf "$out" && mv "$out.tmp" "$out"
