#!/usr/bin/env bash
# mailkms-milter beside OpenDKIM in one private Postfix, with the real
# keystore behind it. Listed first in smtpd_milters, mailkms signs and
# encrypts before OpenDKIM signs, so what is delivered carries a DKIM
# signature over the encrypted message that verifies (python3-dkim, the
# key record opendkim-genkey wrote standing in for DNS) and an S/MIME
# message bob's key opens. Listed the other way round, OpenDKIM signs the
# plain text that mailkms then replaces, and the DKIM signature breaks:
# the order conf/postfix-main.cf gives is the one that works.
# Usage: milter_dkim_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../opendkim.sh
. "$here/../opendkim.sh"
[[ $# == 3 ]] || { echo "usage: milter_dkim_test.sh KEYSTORED MAILKMSCTL MILTER" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  postfix_stop
  stop_daemons
  stop_opendkim
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false

[gateway]
policy = "$work/policy.toml"
authserv_id = "mx.corp.example"
spool_directory = "$work"
keystore_timeout_ms = 30000

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter.pid"
CONF
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]

[defaults]
sign = "if-possible"
encrypt = "if-possible"

[[rule]]
name = "corp-must-encrypt"
to = "*@corp.example"
encrypt = "always"
on_missing_certificate = "reject"
POLICY
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@corp.example bob@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
"$ctl" recover bob@corp.example --out bob.p12 --password-file p12.pw > /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
start_milter || { echo "FAIL - the milter does not start"; exit 1; }

start_opendkim "$work/dkim" || { echo "FAIL - OpenDKIM does not start"; exit 1; }

export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock, inet:127.0.0.1:$DKIM_PORT
milter_default_action = tempfail
milter_protocol = 6"
postfix_start "$work/postfix" || { echo "FAIL - Postfix does not start"; exit 1; }

marker=SECRET-FIGURES
send() {  # send SUBJECT CASE: alice to bob through Postfix
  printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: $1" "Date: Fri, 04 Dec 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" "" "$2: $marker" |
    swaks --server "127.0.0.1:$POSTFIX_PORT" --from alice@corp.example --to bob@corp.example --data - > send.out 2>&1
}
arrived() {
  postfix_wait_for 1 || return 1
  mv "$(sink_files | head -n 1)" "$1"
}

# ---- mailkms first, as conf/postfix-main.cf says --------------------------------
send "mailkms, then OpenDKIM" first
arrived first.eml
check "mailkms first: OpenDKIM signed what was delivered, and the DKIM signature verifies" dkim_signed dkim first.eml
check "mailkms first: the S/MIME message opens with bob's key, nothing in clear" \
  bash -c "! grep -q '$marker' first.eml && openssl cms -decrypt -in first.eml -recip bob.pem -inkey bob.key | grep -q 'first: $marker'"

# ---- The other order: OpenDKIM signs the plain text mailkms then replaces ---------------
postconf -c "$work/postfix/conf" -e "smtpd_milters = inet:127.0.0.1:$DKIM_PORT, unix:$work/milter.sock"
mark=$(log_mark)
postfix -c "$work/postfix/conf" reload > /dev/null 2>&1
logged_since "$mark" 'reload -- version' || { echo "FAIL - Postfix does not reload"; exit 1; }
send "OpenDKIM, then mailkms" second
arrived second.eml
check "OpenDKIM first: the message is signed and encrypted all the same" \
  bash -c "openssl cms -decrypt -in second.eml -recip bob.pem -inkey bob.key | grep -q 'second: $marker'"
check "OpenDKIM first: its signature no longer verifies, which is why mailkms goes first" \
  bash -c "grep -q '^DKIM-Signature: ' second.eml && ! /usr/bin/python3 '$here/../dkim_verify.py' dkim/mail.txt second.eml"

finish
