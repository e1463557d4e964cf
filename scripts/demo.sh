#!/usr/bin/env bash
# The main job on embedded defaults: mailkms-keystored on SQLite with a
# fresh CA and two users (alice and bob of demo.example), mailkms-milter,
# and a private Postfix on a loopback port wired to the milter. One message
# from alice to bob goes through; what Postfix delivers is shown signed and
# encrypted, and bob's key (recovered from the keystore as a PKCS#12) opens
# it with openssl. The services keep running until `scripts/demo.sh stop`.
#
#   scripts/demo.sh          set up, start, send the demo message
#   scripts/demo.sh stop     stop everything the demo started
#
# State lives in /var/lib/mailkms-demo (MAILKMS_DEMO_DIR to change it), not
# in the clone: Postfix runs as its own user, which cannot enter a clone
# under /root or a 0700 home. It is made afresh at each start. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=${MAILKMS_DEMO_DIR:-/var/lib/mailkms-demo}

stop() {
  [ -d "$state" ] || return 0
  [ -f "$state/postfix/conf/main.cf" ] && postfix -c "$state/postfix/conf" stop > /dev/null 2>&1 || true
  local pids=()
  for pidfile in "$state"/*.pid; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2> /dev/null || true
  # libmilter finishes its connections before it exits: give it time.
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  done
  rm -f "$state"/*.pid
}
if [ "${1:-}" = stop ]; then
  stop
  echo "mailkms demo stopped (its state is in $state)"
  exit 0
fi

step() { printf '\n== %s\n' "$*"; }

step "Installing packages and building mailkms (Release)"
./scripts/install-deps.sh
cmake -G Ninja -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=OFF > /dev/null
cmake --build build/release --target mailkmsctl mailkms-keystored mailkms-milter > /dev/null
ctl=$root/build/release/cli/mailkmsctl
keystored=$root/build/release/keystore/daemon/mailkms-keystored
milter=$root/build/release/milter/mailkms-milter

stop
rm -rf "$state"
mkdir -p "$state"
chmod 755 "$state"
# Every directory above the state must let the postfix user through.
if ! runuser -u postfix -- test -x "$state"; then
  echo "demo: the postfix user cannot enter $state (a directory above it is closed to others, like /root" >&2
  echo "demo: or a 0700 home); set MAILKMS_DEMO_DIR to a directory under one it can, e.g. /var/lib/mailkms-demo" >&2
  exit 1
fi
cd "$state"

step "The keystore: SQLite in $state, unsealed by a key file"
cat > mailkms.conf <<CONF
[keystore]
database = "$state/keystore.db"
socket = "$state/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$state/master.key"
gateway_users = ["root"]
lock_memory = false

[gateway]
policy = "$state/policy.toml"
authserv_id = "mx.demo.example"
enrollment_address = "mailkms-enroll@demo.example"
spool_directory = "$state"

[milter]
socket = "unix:$state/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$state/milter.pid"
CONF
export MAILKMS_CONFIG=$state/mailkms.conf MAILKMS_SESSION_FILE=$state/admin.session
head -c 24 /dev/urandom | base64 > admin.pw
chmod 600 admin.pw
"$ctl" init --admin demo --admin-password-file admin.pw --key-file master.key
"$keystored" --config mailkms.conf > /dev/null 2> keystore.log &
echo $! > keystore.pid
for _ in $(seq 100); do [ -S keystore.sock ] && "$ctl" status 2> /dev/null | grep -qx unsealed && break; sleep 0.05; done
"$ctl" status
"$ctl" login demo --password-file admin.pw

step "A fresh CA, and alice and bob with keys made and escrowed by the keystore"
"$ctl" ca init --id root --name "Demo Root CA"
"$ctl" ca add-subordinate --id issuing --parent root --name "Demo Issuing CA"
"$ctl" user add alice@demo.example bob@demo.example

step "The policy: sign and encrypt whatever can be, decrypt for our users"
cat > policy.toml <<'POLICY'
[local]
domains = ["demo.example"]
networks = ["127.0.0.0/8", "::1/128"]

# Clients on this machine sign as their envelope sender when it is the
# author; elsewhere users would authenticate (SMTP AUTH) and sign as their login.
[signing]
unauthenticated_networks = ["127.0.0.0/8", "::1/128"]

[defaults]
sign = "if-possible"
encrypt = "if-possible"
decrypt = true
POLICY
"$ctl" policy explain --policy policy.toml --from alice@demo.example --to bob@demo.example --client 127.0.0.1

step "mailkms-milter, and a private Postfix on loopback wired to it"
"$milter" --config mailkms.conf --foreground > /dev/null 2> milter.log &
for _ in $(seq 100); do [ -S milter.sock ] && break; sleep 0.05; done
export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$state/milter.sock
non_smtpd_milters = unix:$state/milter.sock
milter_default_action = tempfail
milter_protocol = 6"
# shellcheck source=../tests/integration/postfix/postfix-fixture.sh
. "$root/tests/integration/postfix/postfix-fixture.sh"
postfix_start "$state/postfix"
echo "$SINK_PID" > sink.pid
echo "Postfix listens on 127.0.0.1:$POSTFIX_PORT; what it delivers lands in $SINK_DIR"

step "alice writes to bob through Postfix"
printf '%s\r\n' "From: Alice <alice@demo.example>" "To: Bob <bob@demo.example>" "Subject: The quarterly figures" \
  "Date: $(date -R)" "Message-ID: <figures-$$@demo.example>" "MIME-Version: 1.0" \
  "Content-Type: text/plain; charset=us-ascii" "" "Bob," "" "the figures are in: revenue up 4 %, costs down 2 %." \
  "" "Alice" > message.eml
swaks --server "127.0.0.1:$POSTFIX_PORT" --from alice@demo.example --to bob@demo.example --data @message.eml |
  grep -E "queued|<\\*\\*"
postfix_wait_for 1
delivered=$(find "$SINK_DIR" -type f | head -n 1)
cp "$delivered" delivered.eml
tail -n 2 milter.log | cut -c1-200

step "What Postfix delivered to bob: encrypted"
sed -n '/^Received: from vm\|^From:/,/^$/p' delivered.eml | head -20
echo "[… $(wc -c < delivered.eml) bytes in all]"

step "bob's key, recovered from the keystore as a PKCS#12, decrypts it (openssl cms); alice's signature verifies"
head -c 24 /dev/urandom | base64 > p12.pw
chmod 600 p12.pw
"$ctl" recover bob@demo.example --out bob.p12 --password-file p12.pw
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -cacerts -out chain.pem 2> /dev/null
openssl cms -decrypt -in delivered.eml -recip bob.pem -inkey bob.key -out signed.eml
openssl cms -verify -in signed.eml -CAfile chain.pem -purpose smimesign -text -out content.txt
cat content.txt

step "Everything the administrators did is in the audit log, and it verifies"
"$ctl" audit verify

cat <<DONE

mailkms is running:
  Postfix (private)   127.0.0.1:$POSTFIX_PORT, config in $state/postfix/conf
  mailkms-milter      $state/milter.sock    (log: $state/milter.log)
  mailkms-keystored   $state/keystore.sock  (log: $state/keystore.log)
Send more mail:   swaks --server 127.0.0.1:$POSTFIX_PORT --from alice@demo.example --to bob@demo.example
Administer:       MAILKMS_CONFIG=$state/mailkms.conf MAILKMS_SESSION_FILE=$state/admin.session $ctl user list
Stop it all:      ./scripts/demo.sh stop
Attach a system Postfix or Sendmail instead: see conf/postfix-main.cf and conf/sendmail.mc.
DONE
