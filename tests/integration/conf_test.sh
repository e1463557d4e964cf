#!/usr/bin/env bash
# The example files in conf/ are what administrators start from: they must
# be read without an error by the programs they are for.
# Usage: conf_test.sh CONF_DIR MAILKMS_MILTER MAILKMSCTL MAILKMS_PROXY MAILKMS_KEYSTORED
# Test conditions are single-quoted on purpose: t() evaluates them later.
# shellcheck disable=SC2016
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(realpath "$0")")/lib.sh"
[[ $# == 5 ]] || { echo "usage: conf_test.sh CONF_DIR MAILKMS_MILTER MAILKMSCTL MAILKMS_PROXY MAILKMS_KEYSTORED" >&2; exit 2; }
conf=$(realpath "$1")
milter=$(realpath "$2")
ctl=$(realpath "$3")
proxy=$(realpath "$4")
keystored=$(realpath "$5")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 2

# The example points at /etc/mailkms/policy.toml: use the example policy.
sed "s|/etc/mailkms/policy.toml|$conf/policy.toml|" "$conf/mailkms.conf" > mailkms.conf
check "mailkms-milter reads the example mailkms.conf and policy.toml" \
  bash -c "'$milter' --check --config mailkms.conf | grep -q ': OK; policy .*: OK'"
# mailkmsctl reads [keystore]; with no daemon it reports the socket (exit 1),
# where a configuration error would exit 2.
run env MAILKMS_CONFIG="$work/mailkms.conf" "$ctl" status
t "mailkmsctl reads the example [keystore] table" '[[ $rc == 1 ]] && grep -q "keystore unavailable" err'
# keystored --check reads [keystore] and checks the paths it names, as at
# start: the example's database does not exist here, and it says how to make it.
run "$keystored" --check --config mailkms.conf
t "mailkms-keystored reads the example [keystore] table, and names the missing database's remedy" \
  '[[ $rc == 1 ]] && grep -qF "the database /var/lib/mailkms/keystore.db does not exist: make it with \`mailkmsctl init\`" err'
mkdir -m 0700 state
install -m 0600 /dev/null state/keystore.db
printf '[keystore]\ndatabase = "%s/state/keystore.db"\nsocket = "%s/state/keystore.sock"\n' "$work" "$work" > keystore.conf
run "$keystored" --check --config keystore.conf
t "mailkms-keystored --check passes a configuration it would start with" \
  '[[ $rc == 0 ]] && [[ $(cat out) == "keystore.conf: OK; database $work/state/keystore.db, socket $work/state/keystore.sock" ]]'
chmod 0770 state
run "$keystored" --check --config keystore.conf
t "mailkms-keystored --check refuses a database directory others can write" \
  '[[ $rc == 1 ]] && grep -q "the database.s directory $work/state" err'
check "mailkms-proxy reads the example mailkms.conf, [proxy] and all" \
  bash -c "'$proxy' --check --config mailkms.conf | grep -q ': OK; policy .*: OK'"
printf '[proxy]\nnext_hop = "mx.example.org:25"\n' > hop.conf
run "$proxy" --check --config hop.conf
t "the proxy refuses a next hop that is no IP address, naming the key" \
  '[[ $rc == 1 ]] && grep -q "proxy.next_hop at line 2, column 12: expected \"IP:PORT\" or \"\[IPv6\]:PORT\"" err'
printf '[gateway]\nmixed_recipients = "sometimes"\n' > bad.conf
run "$milter" --check --config bad.conf
t "a wrong value is refused, naming the key" '[[ $rc == 1 ]] && grep -q "gateway.mixed_recipients at line 2, column 20: expected defer or reinject" err'
printf '[milter]\nsockett = "unix:/x"\n' > unknown.conf
run "$milter" --check --config unknown.conf
t "an unknown key is refused, naming it" '[[ $rc == 1 ]] && grep -q "unknown key milter.sockett" err'

# The Postfix snippet: every line a parameter Postfix knows, with a valid value.
mkdir postfix
grep -v '^#' "$conf/postfix-main.cf" | grep -v '^$' > postfix/main.cf
cp /etc/postfix/master.cf postfix/
run postconf -c postfix -n
t "Postfix accepts the main.cf snippet" '[[ $rc == 0 ]] && ! [ -s err ] && grep -qx "milter_default_action = tempfail" out && grep -qx "smtpd_milters = unix:/run/mailkms-milter/milter.sock" out'
# The final hop: a second smtpd that says so to the milter, expands nothing
# again, and delivers only to mailboxes.
grep -v '^#' "$conf/postfix-master.cf" >> postfix/master.cf
final_hop=127.0.0.1:10026/inet
run postconf -c postfix -P "$final_hop/milter_macro_daemon_name" "$final_hop/receive_override_options" \
  "$final_hop/virtual_alias_maps" "$final_hop/content_filter"
t "Postfix reads the final hop of the master.cf snippet: daemon name, no address mappings, mailboxes only" \
  '[[ $rc == 0 ]] && ! [ -s err ] && [[ $(cat out) == "$final_hop/milter_macro_daemon_name = mailkms-final-hop
$final_hop/receive_override_options = no_address_mappings
$final_hop/virtual_alias_maps =
$final_hop/content_filter = virtual:localhost" ]]'
check "the policy example decrypts only at the final hop" grep -qx 'at = "final-hop"' "$conf/policy.toml"
check "the Sendmail line declares the milter with tempfail on failure" \
  grep -q "^INPUT_MAIL_FILTER(\`mailkms', \`S=unix:/run/mailkms-milter/milter.sock, F=T" "$conf/sendmail.mc"
# Each daemon owns its runtime directory: systemd gives a directory two
# units name to whichever starts last, and the owner of the keystore
# socket's directory could serve its own socket there.
unit_setting() { sed -n "s/^$1=//p" "$conf/systemd/$2.service"; }
keystore_dir=$(unit_setting RuntimeDirectory mailkms-keystored)
milter_dir=$(unit_setting RuntimeDirectory mailkms-milter)
t "each daemon has a runtime directory of its own, and its socket is in it" \
  '[ -n "$keystore_dir" ] && [ -n "$milter_dir" ] && [ "$keystore_dir" != "$milter_dir" ] &&
   grep -qx "socket = \"/run/$keystore_dir/keystore.sock\"" "$conf/mailkms.conf" &&
   grep -qx "socket = \"unix:/run/$milter_dir/milter.sock\"" "$conf/mailkms.conf"'
keystore_group=$(unit_setting Group mailkms-keystored)
milter_group=$(unit_setting Group mailkms-milter)
t "the MTA joins the milter socket's group, never the keystore's" \
  '[ "$keystore_group" != "$milter_group" ] && grep -qx "#   usermod -aG $milter_group postfix" "$conf/postfix-main.cf" &&
   grep -qx "SupplementaryGroups=$keystore_group" "$conf/systemd/mailkms-milter.service" &&
   [ "$(unit_setting User mailkms-keystored)" = "$(sed -n "s/^user = \"\(.*\)\"$/\1/p" "$conf/mailkms.conf" | head -n 1)" ]'
for unit in "$conf"/systemd/*.service; do
  check "$(basename "$unit") starts its daemon in the foreground with the shared config" \
    grep -q '^ExecStart=/usr/sbin/mailkms-[a-z]* --config /etc/mailkms/mailkms.conf --foreground$' "$unit"
done
finish
