#!/usr/bin/env bash
# Builds a throw-away PKI for the tests and the demonstration, with the real openssl command:
#   root CA → issuing CA → users (RSA-2048, EC P-256, EC P-384), plus the
#   misfits the verifier must catch: an expired signer, a signer without
#   digitalSignature, and a root nobody trusts.
# Usage: make-throwaway-pki.sh OUTDIR
set -euo pipefail
out=${1:?usage: make-throwaway-pki.sh OUTDIR}
rm -rf "$out.tmp" && mkdir -p "$out.tmp" && cd "$out.tmp"

cat > ca.cnf <<'CNF'
[ ca ]
default_ca = issuing
[ issuing ]
dir = .
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = anything
copy_extensions = none
unique_subject = no
[ anything ]
commonName = supplied
emailAddress = optional
organizationName = optional
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = overridden by -subj
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_user ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:${ENV::EMAIL}
[ v3_user_ec ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation, keyAgreement
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:${ENV::EMAIL}
[ v3_encrypt_only ]
basicConstraints = critical, CA:false
keyUsage = critical, keyEncipherment
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:${ENV::EMAIL}
CNF
mkdir -p newcerts && : > index.txt && echo 1000 > serial
export EMAIL=unused@example.org

rsa() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
ec() { openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$2" -out "$1"; }

# CAs are valid from 2019 so that signatures can be judged at past dates.
ca_validity=(-startdate 20190101000000Z -enddate 20450101000000Z)

# Self-signed roots.
for root in root other-root; do
  rsa "$root.key"
  openssl req -new -key "$root.key" -subj "/O=mailkms tests/CN=$root" -config ca.cnf -out "$root.csr"
  openssl ca -batch -config ca.cnf -selfsign -keyfile "$root.key" -extensions v3_ca \
    -in "$root.csr" -out "$root.pem" -notext "${ca_validity[@]}" 2>/dev/null
done

# issue NAME KEYFILE ISSUER EXTENSIONS [ca args…]
issue() {
  local name=$1 key=$2 issuer=$3 ext=$4
  shift 4
  openssl req -new -key "$key" -subj "/O=mailkms tests/CN=$name" -config ca.cnf -out "$name.csr"
  openssl ca -batch -config ca.cnf -cert "$issuer.pem" -keyfile "$issuer.key" -extensions "$ext" \
    -in "$name.csr" -out "$name.pem" -notext "$@" 2>/dev/null
}

rsa issuing.key
issue issuing issuing.key root v3_ca "${ca_validity[@]}"

user() {  # user NAME KIND [ca args…]
  local name=$1 kind=$2
  shift 2
  export EMAIL="$name@example.org"
  case $kind in
    rsa) rsa "$name.key"; issue "$name" "$name.key" issuing v3_user "$@" ;;
    p256) ec "$name.key" P-256; issue "$name" "$name.key" issuing v3_user_ec "$@" ;;
    p384) ec "$name.key" P-384; issue "$name" "$name.key" issuing v3_user_ec "$@" ;;
    encrypt-only) rsa "$name.key"; issue "$name" "$name.key" issuing v3_encrypt_only "$@" ;;
  esac
}
user alice rsa -days 3650
user bob rsa -days 3650
user carol p256 -days 3650
user dave p384 -days 3650
user erin rsa -startdate 20200101000000Z -enddate 20210101000000Z   # expired
user frank encrypt-only -days 3650                                   # may not sign

# A correspondent outside our domains (the users above share example.org).
export EMAIL=zoe@partner.example
rsa zoe.key
issue zoe zoe.key issuing v3_user -days 3650

# A signer under a root nobody trusts.
export EMAIL=mallory@example.org
rsa mallory.key
openssl req -new -key mallory.key -subj "/O=mailkms tests/CN=mallory" -config ca.cnf -out mallory.csr
openssl ca -batch -config ca.cnf -cert other-root.pem -keyfile other-root.key -extensions v3_user \
  -in mallory.csr -out mallory.pem -notext -days 3650 2>/dev/null

cp issuing.pem chain.pem
cat issuing.pem root.pem > chain-with-root.pem
rm -f ./*.csr
rm -rf "$out" && mv "$out.tmp" "$out"
