#!/usr/bin/env bash
# mailkms-proxy in both of Postfix's placements, as conf/postfix-master.cf
# ships them, with the real mailkms-keystored behind it. After the queue
# (content_filter, FILTER_README) Postfix hands each message to the proxy;
# before it (smtpd_proxy_filter, SMTPD_PROXY_README) an smtpd passes each
# SMTP session through the proxy. Either way XFORWARD names the client
# Postfix served, and the proxy hands the message back to a second smtpd on
# loopback that filters nothing, which relays it to the sink. That client,
# not Postfix itself, decides direction and signing: mail from an internal
# client is signed and encrypted; mail from another client that claims an
# internal sender is not signed. Before the queue a refusal reaches the
# client in its session. With the proxy down, Postfix keeps an accepted
# message deferred and delivers it encrypted once the proxy is back, and
# before the queue tells the client 451. The proxy hands mail back under
# TLS, verifying the smtpd's certificate, and OpenDKIM signs there, after
# the proxy, so the delivered message's DKIM signature verifies.
# Usage: proxy_postfix_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_PROXY CONF_DIR   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../metrics/metrics.sh
. "$here/../metrics/metrics.sh"
# shellcheck source=../opendkim.sh
. "$here/../opendkim.sh"
[[ $# == 4 ]] || { echo "usage: proxy_postfix_test.sh KEYSTORED MAILKMSCTL PROXY CONF_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
proxy=$(realpath "$3")
conf=$(realpath "$4")

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

# A CA of the test's own, and from it the certificate of the smtpd that
# takes mail back from the proxy.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=reinject-ca \
  -keyout reinject-ca.key -out reinject-ca.crt 2> /dev/null &&
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=reinject.corp.example \
    -keyout reinject.key -out reinject.csr 2> /dev/null &&
  openssl x509 -req -in reinject.csr -CA reinject-ca.crt -CAkey reinject-ca.key -CAcreateserial -days 2 \
    -extfile <(echo subjectAltName=DNS:reinject.corp.example) -out reinject.crt 2> /dev/null ||
  { echo "FAIL - openssl cannot make the re-injecting smtpd's certificate"; exit 1; }

PROXY_PORT=$(free_port) || exit 2
REINJECT_PORT=$(free_port) || exit 2
while [ "$REINJECT_PORT" = "$PROXY_PORT" ]; do REINJECT_PORT=$(free_port) || exit 2; done
METRICS_PORT=$(free_port) || exit 2
while [ "$METRICS_PORT" = "$PROXY_PORT" ] || [ "$METRICS_PORT" = "$REINJECT_PORT" ]; do METRICS_PORT=$(free_port) || exit 2; done
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
next_hop = "127.0.0.1:$REINJECT_PORT"
hostname = "proxy.corp.example"
# The smtpd it hands mail back to offers STARTTLS with a certificate from
# the test's CA: the proxy insists on it, verified.
next_hop_tls = "verify"
next_hop_tls_ca = "$work/reinject-ca.crt"
next_hop_tls_name = "reinject.corp.example"
# Postfix's smtp client on this host, whose XFORWARD names the real client.
xforward_peers = ["127.0.0.1"]
metrics_listen = "127.0.0.1:$METRICS_PORT"
CONF
# 127.0.0.1 is the internal network; 127.0.0.2 stands for the Internet.
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

# Both placements as conf/postfix-master.cf ships them (its "#both> ",
# "#after> " and "#before> " lines), on the ports picked here: the smtpd
# the proxy hands mail back to, which filters nothing again; a transport to
# the proxy that sends XFORWARD (after the queue); and a second smtpd whose
# sessions pass through the proxy (before the queue), on BEFORE_PORT.
BEFORE_PORT=$(free_port) || exit 2
export POSTFIX_EXTRA_CONF="content_filter = mailkms-proxy:[127.0.0.1]:$PROXY_PORT"
# OpenDKIM signs on the smtpd the proxy hands mail back to, with its
# "#dkim> " lines in place of the one they replace.
start_opendkim "$work/dkim" || { echo "FAIL - OpenDKIM does not start"; exit 1; }
POSTFIX_EXTRA_MASTER=$(sed -n -e '/^#both> .*no_milters$/d' -e 's/^#both> //p' -e 's/^#dkim> //p' -e 's/^#after> //p' \
    -e 's/^#before> //p' "$conf/postfix-master.cf" |
  sed -e "s/^127.0.0.1:10027 /127.0.0.1:$REINJECT_PORT /" -e "s/^smtp      inet /127.0.0.1:$BEFORE_PORT inet /" \
      -e "s/smtpd_milters=inet:127.0.0.1:8891/smtpd_milters=inet:127.0.0.1:$DKIM_PORT/" \
      -e "s/smtpd_proxy_filter=127.0.0.1:10025/smtpd_proxy_filter=127.0.0.1:$PROXY_PORT/" \
      -e "s|^  -o syslog_name=postfix/mailkms-reinject\$|&\\n  -o smtpd_tls_security_level=may\\n  -o smtpd_tls_cert_file=$work/reinject.crt\\n  -o smtpd_tls_key_file=$work/reinject.key\\n  -o smtpd_tls_loglevel=1\\n  -o smtpd_tls_received_header=yes|")
export POSTFIX_EXTRA_MASTER
grep -q "^127.0.0.1:$REINJECT_PORT inet" <<< "$POSTFIX_EXTRA_MASTER" &&
  grep -q "smtp_send_xforward_command=yes" <<< "$POSTFIX_EXTRA_MASTER" &&
  grep -q "^127.0.0.1:$BEFORE_PORT inet" <<< "$POSTFIX_EXTRA_MASTER" &&
  grep -q "smtpd_proxy_filter=127.0.0.1:$PROXY_PORT" <<< "$POSTFIX_EXTRA_MASTER" &&
  grep -q "smtpd_milters=inet:127.0.0.1:$DKIM_PORT" <<< "$POSTFIX_EXTRA_MASTER" ||
  { echo "FAIL - conf/postfix-master.cf lacks a proxy placement"; exit 1; }
postfix_start "$work/postfix" || { echo "FAIL - Postfix does not start"; cat "$work/postfix/maillog" 2> /dev/null; exit 1; }

marker=SECRET-FIGURES
message() {  # message FROM TO SUBJECT CASE
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Fri, 04 Dec 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4: $marker, revenue up 4 %."
}
# send SOURCE FROM TO < message: from the client address SOURCE, to the
# smtpd whose mail goes through the proxy after the queue ($port to change)
port=
send() {
  swaks --server "127.0.0.1:${port:-$POSTFIX_PORT}" --local-interface "$1" --from "$2" --to "$3" --data - > send.out 2>&1
}
# signed_for_bob FILE CASE: FILE holds nothing in clear, bob's key opens
# it, and inside alice's signature verifies over that case's body
signed_for_bob() {
  ! grep -q "$marker" "$1" &&
    openssl cms -decrypt -in "$1" -recip bob.pem -inkey bob.key -out "$1.signed" &&
    openssl cms -verify -in "$1.signed" -CAfile corp-chain.pem -purpose smimesign -signer signer.pem -out "$1.txt" 2> /dev/null &&
    grep -q "$2: $marker" "$1.txt" && openssl x509 -in signer.pem -noout -ext subjectAltName | grep -q 'email:alice@corp.example'
}
# unsigned CASE FILE: FILE holds that case's body in clear, and no S/MIME
unsigned() { grep -q "$2: $marker" "$1" && ! grep -qiE 'pkcs7-(mime|signature)' "$1"; }
arrived() {
  postfix_wait_for 1 || return 1
  mv "$(sink_files | head -n 1)" "$1"
}
queued() { postqueue -c "$work/postfix/conf" -j 2> /dev/null; }

# ---- From an internal client: signed by alice, encrypted to bob ------------------------
metrics_scrape "$METRICS_PORT" m0
message alice@corp.example bob@corp.example "From inside" "inside" | send 127.0.0.1 alice@corp.example bob@corp.example
check "Postfix queues the message (250 at the end of data)" grep -q '<-  250 2.0.0 Ok: queued as' send.out
arrived inside.eml
# The proxy counts a message before its 250, which Postfix's smtp client logs.
check "Postfix logs the proxy's 250" logged_since 0 "relay=[^ ]*\[127\.0\.0\.1\]:$PROXY_PORT, .*status=sent"
check "metrics: the proxy serves them on metrics_listen" metrics_scrape "$METRICS_PORT" m1
check "metrics: one outbound message, signed and encrypted, with one signature and one encryption" \
  bash -c "metric_moved m0 m1 'mailkms_messages_total{action=\"signed_encrypted\",direction=\"outbound\"}' 1 &&
           metric_moved m0 m1 'mailkms_smime_operations_total{operation=\"sign\",result=\"ok\"}' 1 &&
           metric_moved m0 m1 'mailkms_smime_operations_total{operation=\"encrypt\",result=\"ok\"}' 1"
check "metrics: the proxy's open sessions are a gauge" grep -q '^mailkms_proxy_sessions{} ' m1.samples
check "through the proxy and back: nothing in clear, bob's key opens it, alice's signature verifies (openssl cms)" \
  signed_for_bob inside.eml inside
check "the proxy handed it back under TLS, having verified the smtpd's certificate" \
  grep -q "=> relayed: 250 2.0.0 Ok: queued as [0-9A-Za-z]* (TLSv1.3 with .*, verified reinject.corp.example)$" proxy.log
check "the smtpd that took it back logs TLS" \
  logged_since 0 'postfix/mailkms-reinject/smtpd\[[0-9]+\]: Anonymous TLS connection established from [^ ]*\[127\.0\.0\.1\]: TLSv1\.3'
check "the delivered message's Received line from that smtpd says TLS and ESMTPS" bash -c \
  "grep -q '(using TLSv1.3 with cipher' inside.eml && grep -qE '^[[:space:]]+by .* with ESMTPS id' inside.eml"
check "after the proxy, OpenDKIM signed what was delivered, and its signature verifies (python3-dkim)" \
  dkim_signed dkim inside.eml
check "the proxy read Postfix's XFORWARD: client [127.0.0.1] and Postfix's queue id" \
  grep -qE 'XFORWARD from \[127.0.0.1\]: client \[127.0.0.1\], queue id [0-9A-Za-z]+' proxy.log

# ---- From another client that claims alice: not signed as her -----------------------------
message alice@corp.example bob@corp.example "Claims to be alice" "outside" | send 127.0.0.2 alice@corp.example bob@corp.example
check "Postfix queues the message from 127.0.0.2" grep -q '<-  250 2.0.0 Ok: queued as' send.out
arrived outside.eml
check "the proxy judged it by the client Postfix served: 127.0.0.2 is not internal" \
  grep -q 'client 127.0.0.2 is neither internal nor authenticated' proxy.log
check "it is not signed as alice: no S/MIME in what was delivered" unsigned outside.eml outside
check "the proxy passed XFORWARD on: the smtpd it hands mail back to logs 127.0.0.2 as the message's client" \
  grep -qE 'postfix/mailkms-reinject/smtpd\[[0-9]+\]: [0-9A-Za-z]+: client=.*, orig_client=[^ ]*\[127.0.0.2\]' "$work/postfix/maillog"

# ---- Before the queue: the proxy answers in the client's own session ------------------
port=$BEFORE_PORT
message alice@corp.example bob@corp.example "Before the queue" "before" | send 127.0.0.1 alice@corp.example bob@corp.example
check "before the queue: the client's 250 is Postfix's, once the proxy has handed the message back" \
  grep -q '<-  250 2.0.0 Ok: queued as' send.out
arrived before.eml
check "before the queue: signed by alice, encrypted to bob (openssl cms)" signed_for_bob before.eml before
check "before the queue: OpenDKIM's signature, made after the proxy, verifies" dkim_signed dkim before.eml
message alice@corp.example nobody@corp.example "To nobody" "nobody" | send 127.0.0.1 alice@corp.example nobody@corp.example
check "before the queue: no certificate for nobody@: the proxy's 550 5.7.1 at RCPT, in the client's session" \
  bash -c "grep -A1 -- '-> RCPT TO:<nobody@corp.example>' send.out | grep -q '<\*\* 550 5.7.1 .*nobody@corp.example' &&
    ! grep -q 'queued as' send.out"
message alice@corp.example bob@corp.example "Claims to be alice" "claims" | send 127.0.0.2 alice@corp.example bob@corp.example
arrived before-outside.eml
check "before the queue: from 127.0.0.2, claiming alice: not signed" unsigned before-outside.eml claims
port=

# ---- The proxy down: Postfix defers, and delivers encrypted once it is back ------------------
stop_proxy
message alice@corp.example bob@corp.example "While the proxy is down" "deferred" | send 127.0.0.1 alice@corp.example bob@corp.example
deferred() {
  local end=$((SECONDS + 30))
  until queued | grep -q '"delay_reason": *"[^"]*127.0.0.1\[127.0.0.1\]:'"$PROXY_PORT"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}
check "proxy down: Postfix keeps the message, deferred because it cannot reach the proxy" deferred
check "proxy down: nothing reached the sink" bash -c "[ -z \"\$(find '$SINK_DIR' -type f)\" ]"
port=$BEFORE_PORT
message alice@corp.example bob@corp.example "Before the queue, while the proxy is down" "refused" |
  send 127.0.0.1 alice@corp.example bob@corp.example
port=
check "before the queue, proxy down: the client is told 451 4.3.0 at RCPT" \
  bash -c "grep -A1 -- '-> RCPT TO:<bob@corp.example>' send.out | grep -q '<\*\* 451 4.3.0 ' && ! grep -q 'queued as' send.out"
# Postfix tells its postmaster of the failure (notify_classes "resource"):
# a transcript of the commands, none of the message.
arrived notice.eml
check "before the queue, proxy down: only Postfix's notice to its postmaster arrives, with none of the message" \
  bash -c "grep -q '^To: Postmaster' notice.eml && grep -q 'Out: 451 4.3.0' notice.eml && ! grep -q '$marker' notice.eml"
start_proxy "$PROXY_PORT" || { echo "FAIL - the proxy does not start again"; exit 1; }
arrived later.eml
check "proxy back: the deferred message is delivered, encrypted to bob" \
  bash -c "! grep -q '$marker' later.eml && openssl cms -decrypt -in later.eml -recip bob.pem -inkey bob.key | grep -q 'deferred: $marker'"

finish
