#!/usr/bin/env bash
# The Debian package on this machine, as an administrator meets it:
# `apt-get install ./mailkms_*.deb` makes the accounts and the state
# directory and starts nothing; the README's path then runs against the
# installed files (init as mailkms-keystore, keystored as its own user with
# the unit's groups and capability, unsealed by a key file, a CA, users,
# the milter as mailkms wired to a private Postfix, one message encrypted);
# `dpkg -P` then leaves nothing of the package, only the keystore the
# administrator made. Everything it adds to the machine goes at the end.
#   package_test.sh PACKAGE_DIR   (as root; PACKAGE_DIR holds the .deb that
#   scripts/package.sh built)
# Test conditions are single-quoted on purpose: t() evaluates them later.
# shellcheck disable=SC2016
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
[[ $# == 1 ]] || { echo "usage: package_test.sh PACKAGE_DIR" >&2; exit 2; }
deb=$(ls "$1"/mailkms_*.deb 2> /dev/null | head -n 1)
if [ -z "$deb" ]; then
  echo "FAIL - no mailkms_*.deb in $1: build it first with ./scripts/package.sh (scripts/test.sh does)"
  exit 1
fi
if dpkg-query -W -f='${Status}' mailkms 2> /dev/null | grep -q installed; then
  echo "FAIL - a mailkms package is installed already: this test installs and purges its own"
  exit 1
fi

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  postfix_stop
  stop_daemons
  dpkg -P mailkms > /dev/null 2>&1
  rm -rf /var/lib/mailkms /etc/mailkms /run/mailkms-keystore /run/mailkms-milter
  for account in mailkms mailkms-keystore; do
    getent passwd "$account" > /dev/null && userdel "$account" 2> /dev/null
    getent group "$account" > /dev/null && groupdel "$account" 2> /dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

# ---- Install ------------------------------------------------------------------
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$(realpath "$deb")"
t "apt-get installs the package" '[[ $rc == 0 ]]'
check "the daemons in /usr/sbin, mailkmsctl in /usr/bin, the units, the man pages" \
  bash -c "[ -x /usr/sbin/mailkms-keystored ] && [ -x /usr/sbin/mailkms-milter ] && [ -x /usr/sbin/mailkms-proxy ] &&
           [ -x /usr/bin/mailkmsctl ] && [ -f /lib/systemd/system/mailkms-keystored.service ] &&
           grep -qx 'ExecStart=/usr/sbin/mailkms-keystored --config /etc/mailkms/mailkms.conf --foreground' /lib/systemd/system/mailkms-keystored.service &&
           man -w mailkmsctl > /dev/null"
check "the accounts: mailkms-keystore and mailkms, system users without a shell" \
  bash -c "[ \$(id -u mailkms-keystore) -lt 1000 ] && [ \$(id -u mailkms) -lt 1000 ] &&
           getent passwd mailkms-keystore | grep -q ':/usr/sbin/nologin$' && [ \$(id -gn mailkms) = mailkms ]"
check "the state directory is the keystore's alone (0700)" \
  bash -c "[ \"\$(stat -c '%U:%G %a' /var/lib/mailkms)\" = 'mailkms-keystore:mailkms-keystore 700' ]"
check "/etc/mailkms holds the configuration as conffiles" \
  bash -c "dpkg-query -W -f='\${Conffiles}' mailkms | grep -q '/etc/mailkms/mailkms.conf' &&
           dpkg-query -W -f='\${Conffiles}' mailkms | grep -q '/etc/mailkms/templates/enrollment.txt'"
check "nothing is enabled or started" \
  bash -c "! ls /etc/systemd/system/*.wants/mailkms-* 2> /dev/null && ! pgrep -f '^/usr/sbin/mailkms-'"

# ---- The administrator's path, on the installed files ------------------------------
milter_port=$(free_port)
cp /etc/mailkms/mailkms.conf "$work/shipped.conf"
cat > /etc/mailkms/mailkms.conf <<CONF
[keystore]
unseal_key_file = "/var/lib/mailkms/master.key"
gateway_users = ["mailkms"]

[gateway]
authserv_id = "mx.corp.example"

[milter]
socket = "inet:$milter_port@127.0.0.1"
CONF
cat > /etc/mailkms/policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]
POLICY
# As the units run them: keystored as mailkms-keystore with the postdrop
# group and CAP_IPC_LOCK, the milter as mailkms with the keystore socket's
# group, each in its own runtime directory.
install -d -o mailkms-keystore -g mailkms-keystore -m 0750 /run/mailkms-keystore
install -d -o mailkms -g mailkms -m 0750 /run/mailkms-milter
as_keystore=(setpriv --reuid=mailkms-keystore --regid=mailkms-keystore --groups=mailkms-keystore,postdrop
             --inh-caps=+ipc_lock --ambient-caps=+ipc_lock --)
printf '#!/bin/sh\nexec %s /usr/sbin/mailkms-keystored "$@"\n' "${as_keystore[*]}" > run-keystored
printf '#!/bin/sh\nexec setpriv --reuid=mailkms --regid=mailkms --groups=mailkms,mailkms-keystore -- /usr/sbin/mailkms-milter "$@"\n' \
  > run-milter
chmod 755 run-keystored run-milter
# What mailkms-daemons.sh's start functions run.
# shellcheck disable=SC2034
keystored=$work/run-keystored milter=$work/run-milter ctl=/usr/bin/mailkmsctl
# shellcheck disable=SC2034
keystore_config=/etc/mailkms/mailkms.conf milter_config=/etc/mailkms/mailkms.conf
export MAILKMS_SESSION_FILE=$work/carol.session
head -c 24 /dev/urandom | base64 > carol.pw
head -c 18 /dev/urandom | base64 > p12.pw
chown mailkms-keystore carol.pw
chmod 600 carol.pw p12.pw

run "${as_keystore[@]}" /usr/bin/mailkmsctl init --admin carol --admin-password-file "$work/carol.pw" \
  --key-file /var/lib/mailkms/master.key
t "mailkmsctl init, as mailkms-keystore, makes the keystore in /var/lib/mailkms" \
  '[[ $rc == 0 ]] && [ "$(stat -c "%U %a" /var/lib/mailkms/keystore.db)" = "mailkms-keystore 600" ] &&
   [ "$(stat -c "%U %a" /var/lib/mailkms/master.key)" = "mailkms-keystore 600" ]'
run /usr/sbin/mailkms-keystored --check
t "mailkms-keystored --check, run by root, judges the layout as mailkms-keystore will find it" \
  '[[ $rc == 0 ]] && grep -q "^/etc/mailkms/mailkms.conf: OK; database /var/lib/mailkms/keystore.db" out'
check "mailkms-keystored starts as mailkms-keystore, unsealed by its key file" start_keystore
check "it runs as mailkms-keystore" bash -c "[ \"\$(ps -o user= -p $keystore_pid)\" = mailkms-keystore ]"
check "the administrator logs in, makes a CA and adds alice and bob" \
  bash -c "mailkmsctl login carol --password-file carol.pw > /dev/null && mailkmsctl ca init --id root --name 'Corp Root CA' > /dev/null &&
           mailkmsctl ca add-subordinate --id issuing --parent root --name 'Corp Issuing CA' > /dev/null &&
           mailkmsctl user add alice@corp.example bob@corp.example > /dev/null &&
           mailkmsctl recover bob@corp.example --out bob.p12 --password-file p12.pw > /dev/null"
check "mailkms-milter starts as mailkms, reaching the keystore through its group" start_milter
export POSTFIX_EXTRA_CONF="smtpd_milters = inet:127.0.0.1:$milter_port
milter_default_action = tempfail
milter_protocol = 6"
postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; exit 1; }
printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: Installed" "MIME-Version: 1.0" \
  "Content-Type: text/plain" "" "Sent through the installed package." |
  swaks --server "127.0.0.1:$POSTFIX_PORT" --from alice@corp.example --to bob@corp.example --data - > send.out 2>&1
check "Postfix takes alice's message" grep -q "250 2.0.0 Ok: queued" send.out
postfix_wait_for 1
mv "$(sink_files | head -n 1)" delivered.eml 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
check "it arrives encrypted, and bob's key opens it (openssl cms)" \
  bash -c "grep -qi '^Content-Type: application/pkcs7-mime' delivered.eml &&
           openssl cms -decrypt -in delivered.eml -recip bob.pem -inkey bob.key | openssl cms -verify -noverify -out - 2> /dev/null |
           grep -q 'Sent through the installed package.'"
postfix_stop
stop_milter
stop_keystore

# ---- Purge --------------------------------------------------------------------
run dpkg -P mailkms
t "dpkg -P purges it, saying what it keeps" '[[ $rc == 0 ]] && grep -q "/var/lib/mailkms kept" err'
check "nothing of the package is left: programs, units, man pages, configuration" \
  bash -c "! [ -e /usr/sbin/mailkms-keystored ] && ! [ -e /usr/bin/mailkmsctl ] && ! [ -e /lib/systemd/system/mailkms-milter.service ] &&
           ! [ -e /usr/share/man/man1/mailkmsctl.1.gz ] && ! [ -e /etc/mailkms/mailkms.conf ] && ! [ -e /etc/mailkms/templates ] &&
           ! dpkg-query -W mailkms 2> /dev/null | grep -q ."
check "only the keystore the administrator made is left, as it was" \
  bash -c "[ -s /var/lib/mailkms/keystore.db ] && [ -s /var/lib/mailkms/master.key ] &&
           [ -z \"\$(find /var/lib/mailkms -mindepth 1 ! -user mailkms-keystore)\" ] && [ ! -e /etc/mailkms ]"

finish
