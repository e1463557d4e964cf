#!/usr/bin/env bash
# mailkms-proxy behind a real Exim, the MTA without milter support the
# proxy is for: Exim sends every message through the proxy, with the real
# mailkms-keystored behind it, to an smtp-sink. alice's mail to bob arrives
# signed and encrypted; a recipient without a certificate is refused by the
# proxy and bounced by Exim; with the proxy down Exim keeps the message and
# delivers it encrypted once the proxy is back. What Exim did is read from
# its log and queue, what arrived from the sink.
# Usage: proxy_exim_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_PROXY   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=exim-fixture.sh
. "$here/exim-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
[[ $# == 3 ]] || { echo "usage: proxy_exim_test.sh KEYSTORED MAILKMSCTL PROXY" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
proxy=$(realpath "$3")

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  exim_stop
  stop_daemons
  sink_stop
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

sink_start "$work/sink" || { echo "FAIL - smtp-sink does not start"; exit 1; }
PROXY_PORT=$(free_port) || exit 2
while [ "$PROXY_PORT" = "$SINK_PORT" ]; do PROXY_PORT=$(free_port) || exit 2; done
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

[proxy]
listen = "127.0.0.1:$PROXY_PORT"
next_hop = "127.0.0.1:$SINK_PORT"
hostname = "proxy.corp.example"
CONF
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.1/32"]

[signing]
unauthenticated_networks = ["127.0.0.1/32"]

[defaults]
sign = "if-possible"
encrypt = "if-possible"

[[rule]]
name = "corp-must-encrypt"
direction = "outbound"
to = "*@corp.example"
encrypt = "always"
on_missing_certificate = "reject"
POLICY
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@corp.example bob@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
"$ctl" recover bob@corp.example --out bob.p12 --password-file p12.pw > /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -cacerts -out corp-chain.pem 2> /dev/null
start_proxy "$PROXY_PORT" || { echo "FAIL - the proxy does not start"; exit 1; }
EXIM_ROUTE_PORT=$PROXY_PORT
exim_start "$work/exim" || { echo "FAIL - Exim does not start"; exit 1; }

marker=SECRET-FIGURES
message() {  # message FROM TO SUBJECT CASE
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Fri, 04 Dec 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4: $marker, revenue up 4 %."
}
send() {  # send FROM TO < message
  swaks --server "127.0.0.1:$EXIM_PORT" --from "$1" --to "$2" --data - > send.out 2>&1
}
arrived() {
  sink_wait_for 1 "$EXIM_DIR/log/mainlog" || return 1
  mv "$(sink_files | head -n 1)" "$1"
}
# signed_for_bob FILE CASE: nothing in clear, bob's key opens FILE, and
# inside alice's signature verifies over that case's body
signed_for_bob() {
  ! grep -q "$marker" "$1" &&
    openssl cms -decrypt -in "$1" -recip bob.pem -inkey bob.key -out "$1.signed" &&
    openssl cms -verify -in "$1.signed" -CAfile corp-chain.pem -purpose smimesign -signer signer.pem -out "$1.txt" 2> /dev/null &&
    grep -q "$2: $marker" "$1.txt" && openssl x509 -in signer.pem -noout -ext subjectAltName | grep -q 'email:alice@corp.example'
}
queue_empty() { [ -z "$(exim_queue)" ]; }

# ---- alice to bob: through Exim and the proxy, signed and encrypted -------------------
message alice@corp.example bob@corp.example "Through Exim" "exim" | send alice@corp.example bob@corp.example
check "Exim takes the message" grep -q '<-  250 OK id=' send.out
check "Exim delivered it to the proxy, which answered with the next hop's 250" \
  exim_logged "=> bob@corp.example R=through_proxy T=proxy_smtp H=127.0.0.1 \[127.0.0.1\] .*C=\"250 2.0.0 Ok"
arrived out.eml
check "what arrived: nothing in clear, bob's key opens it, alice's signature verifies (openssl cms)" \
  signed_for_bob out.eml exim

# ---- No certificate: the proxy refuses the recipient, Exim bounces ----------------------
message alice@corp.example nobody@corp.example "To nobody" "nobody" | send alice@corp.example nobody@corp.example
check "no certificate for nobody@corp.example: the proxy's 550 5.7.1, and Exim gives the recipient up" \
  exim_logged "\*\* nobody@corp.example R=through_proxy T=proxy_smtp H=127.0.0.1 \[127.0.0.1\]: SMTP error from remote mail server after RCPT TO:<nobody@corp.example>: 550 5.7.1 "
arrived bounce.eml
check "what arrived is Exim's bounce to alice, not the message" \
  bash -c "grep -q '^X-Rcpt-Args: <alice@corp.example>' bounce.eml && grep -q '^X-Mail-Args: <>' bounce.eml"

# ---- The proxy down: Exim keeps the message, and delivers it encrypted later --------------
stop_proxy
message alice@corp.example bob@corp.example "While the proxy is down" "later" | send alice@corp.example bob@corp.example
check "proxy down: Exim takes the message, then defers it: connection refused" \
  exim_logged "== bob@corp.example R=through_proxy T=proxy_smtp defer \(111\): Connection refused"
queued_for_bob() { exim_queue | grep -q 'bob@corp.example'; }
check "proxy down: the message waits in Exim's queue" queued_for_bob
check "proxy down: nothing arrived" bash -c "[ -z \"\$(find '$SINK_DIR' -type f)\" ]"
start_proxy "$PROXY_PORT" || { echo "FAIL - the proxy does not start again"; exit 1; }
exim_run -qff
arrived later.eml
check "proxy back: the message is delivered, signed and encrypted" signed_for_bob later.eml later
check "proxy back: Exim's queue is empty" queue_empty

finish
