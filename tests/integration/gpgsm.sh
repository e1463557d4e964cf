# GnuPG's gpgsm as a user's mail program reads what mailkms writes: a home
# of its own, the keystore's root trusted as a user trusts it by hand, CRL
# checks off (the test CAs publish no CRL at a URL).
# shellcheck shell=bash

gpgsm_split=$(dirname "$(realpath "${BASH_SOURCE[0]}")")/split_signed.py

# gpgsm_home DIR ROOT_PEM: a fresh GNUPGHOME in DIR that trusts ROOT_PEM.
gpgsm_home() {
  export GNUPGHOME=$1
  mkdir -p -m 0700 "$GNUPGHOME"
  printf '%s\n' disable-crl-checks disable-policy-checks > "$GNUPGHOME/gpgsm.conf"
  gpgsm --batch --import "$2" 2> "$GNUPGHOME/import.log" || return 1
  local fingerprint
  fingerprint=$(gpgsm --with-colons --list-keys 2> /dev/null | awk -F: '/^fpr:/ { print $10; exit }')
  [ -n "$fingerprint" ] && echo "$fingerprint S" > "$GNUPGHOME/trustlist.txt"
}

# gpgsm_verify MESSAGE SIGNER: gpgsm finds MESSAGE's multipart/signed
# signature good, from a certificate it trusts fully, naming SIGNER.
gpgsm_verify() {
  python3 "$gpgsm_split" "$1" "$1.content" "$1.p7s" || return 1
  gpgsm --batch --status-fd 1 --verify "$1.p7s" "$1.content" > "$1.gpgsm" 2>&1 || { cat "$1.gpgsm"; return 1; }
  grep -q '^\[GNUPG:\] GOODSIG ' "$1.gpgsm" && grep -q '^\[GNUPG:\] TRUST_FULLY' "$1.gpgsm" &&
    grep -qF "aka \"$2\"" "$1.gpgsm" || { cat "$1.gpgsm"; return 1; }
}

# gpgsm_import_p12 P12 PASSWORD_FILE: a user's keys, imported as they would
# import them (GnuPG 2.2 reads only the legacy profile, with a password of
# at most 31 characters); the key stays under that password.
gpgsm_import_p12() {
  gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --import "$1" < "$2" 2>> "$GNUPGHOME/import.log" &&
    gpgsm --list-secret-keys 2> /dev/null | grep -q 'S/N:' || { cat "$GNUPGHOME/import.log"; return 1; }
}

# gpgsm_decrypt MESSAGE PASSWORD_FILE OUT: MESSAGE's enveloped-data opened
# with an imported key, the inner message written to OUT.
gpgsm_decrypt() {
  python3 -c 'import email, sys
open(sys.argv[2], "wb").write(email.message_from_binary_file(open(sys.argv[1], "rb")).get_payload(decode=True))' \
    "$1" "$1.der" || return 1
  # Judged by its status line, not its exit code: gpgsm also fails when it
  # cannot name another recipient's certificate (the sender's own copy).
  gpgsm --batch --status-fd 2 --pinentry-mode loopback --passphrase-fd 0 --output "$3" --decrypt "$1.der" \
    < "$2" 2> "$1.gpgsm"
  grep -q '^\[GNUPG:\] DECRYPTION_OKAY' "$1.gpgsm" && [ -s "$3" ] || { cat "$1.gpgsm"; return 1; }
}

# gpgsm_stop: the agent the home started goes with it.
gpgsm_stop() { gpgconf --kill all 2> /dev/null || true; }
