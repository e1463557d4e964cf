#!/usr/bin/env bash
# mailkms-proxy between swaks (or a raw socket client) and Postfix's
# smtp-sink, with the real mailkms-keystored behind it: mail policy leaves
# alone arrives with its body byte for byte; outbound mail arrives signed
# and encrypted (checked with openssl cms); the keystore down is 451 4.7.1
# and the next hop down, stalled or reset is 451 4.4.1, with nothing at the
# sink; a next hop's refusal reaches the client as it came;
# pipelining, commands out of order, a 1 MB line, bare LF and a client
# that leaves mid-DATA get their exact replies, and nothing is relayed for
# the last three; STARTTLS to a next hop verifies its certificate where
# next_hop_tls says so, and a reply forged in front of TLS is not believed.
# Usage: proxy_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_PROXY   (as root: smtp-sink drops to postfix)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../smtp-sink.sh
. "$here/../smtp-sink.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
[[ $# == 3 ]] || { echo "usage: proxy_test.sh KEYSTORED MAILKMSCTL PROXY" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
proxy=$(realpath "$3")
raw() { python3 "$here/raw_smtp.py" "$PROXY_PORT"; }

work=$(mktemp -d)
chmod 755 "$work"
stall_pid=
cleanup() {
  sink_stop
  [ -n "$stall_pid" ] && kill "$stall_pid" 2> /dev/null
  [ -s "$work/bg.pid" ] && kill "$(cat "$work/bg.pid")" 2> /dev/null
  stop_daemons
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

PROXY_PORT=$(free_port) || exit 2
SINK_PORT=$(free_port) || exit 2
while [ "$SINK_PORT" = "$PROXY_PORT" ]; do SINK_PORT=$(free_port) || exit 2; done
SINK_DIR=$work/sink

# The one message the sink has finished since the last call, moved to $1.
arrived() {
  local end=$((SECONDS + 30)) files
  until files=$(sink_files) && [ -n "$files" ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "nothing arrived at the sink" >&2; return 1; }
    sleep 0.05
  done
  mv $files "$1"
}
sink_empty() { [ -z "$(ls -A "$SINK_DIR")" ]; }

# ---- The keystore, the proxy, the sink --------------------------------------
# The proxy's own certificate for STARTTLS, which the raw client trusts.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=proxy.corp.example \
  -addext subjectAltName=DNS:proxy.corp.example -keyout proxy.key -out proxy.crt 2> /dev/null ||
  { echo "FAIL - openssl cannot make the proxy's certificate"; exit 1; }
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
max_message_size = 2000000

[proxy]
listen = "127.0.0.1:$PROXY_PORT"
next_hop = "127.0.0.1:$SINK_PORT"
hostname = "proxy.corp.example"
threads = 2
next_hop_timeout_seconds = 2
next_hop_idle_seconds = 60
command_timeout_seconds = 2
max_sessions = 3
max_sessions_per_client = 2
xclient_peers = ["127.0.0.3"]
tls_certificate = "$work/proxy.crt"
tls_key = "$work/proxy.key"
CONF
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
# Only 127.0.0.1 is internal: 127.0.0.2 stands for a client outside.
networks = ["127.0.0.1/32"]

[signing]
unauthenticated_networks = ["127.0.0.1/32"]

[defaults]
sign = "if-possible"
encrypt = "if-possible"

[[rule]]
name = "plain-partner"
direction = "outbound"
to = "*@plain.example"
sign = "never"
encrypt = "never"
POLICY
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
start_corp_keystore alice@corp.example bob@corp.example carol@corp.example || { echo "FAIL - the keystore cannot be set up"; exit 1; }
"$ctl" recover bob@corp.example --out bob.p12 --password-file p12.pw > /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -clcerts -out bob.pem 2> /dev/null
openssl pkcs12 -in bob.p12 -passin file:p12.pw -nokeys -cacerts -out corp-chain.pem 2> /dev/null
sink_start "$SINK_DIR" "$SINK_PORT" || { echo "FAIL - smtp-sink does not start"; exit 1; }
start_proxy "$PROXY_PORT" || { echo "FAIL - the proxy does not start"; cat proxy.log; exit 1; }

# send FROM TO < message: one transaction through the proxy; swaks's transcript in send.out
send() {
  swaks --server "127.0.0.1:$PROXY_PORT" --from "$1" --to "$2" --data - > send.out 2>&1
}
message() {  # message FROM TO SUBJECT BODY
  printf '%s\r\n' "From: $1" "To: $2" "Subject: $3" "Date: Thu, 26 Nov 2026 10:00:00 +0000" \
    "Message-ID: <$RANDOM.$RANDOM@test>" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" ""
  printf '%s' "$4"
}
body_of() { sed '1,/^\r\?$/d' "$1"; }  # after the first empty line

# ---- (a) Pass-through ---------------------------------------------------------
printf 'Line one.\r\n.A line that starts with a dot.\r\n..Two dots.\r\n\r\nLast line.\r\n' > plain.body
{ message "Alice <alice@corp.example>" "partner@plain.example" "Hello" ""; cat plain.body; } > plain.eml
send alice@corp.example partner@plain.example < plain.eml
check "pass-through: the sink's reply to the end of data reaches the client" grep -qx "<-  250 2.0.0 Ok" send.out
arrived out-plain.eml
# smtp-sink's dump has its own trace fields and line ends: the same message
# sent to it directly is what the proxy's copy must equal.
swaks --server "127.0.0.1:$SINK_PORT" --from alice@corp.example --to partner@plain.example --data - < plain.eml > direct.out 2>&1
arrived direct-plain.eml
check "pass-through: the body arrives byte for byte, dots and all, as sent directly" bash -c \
  "cmp <(body_of out-plain.eml) <(body_of direct-plain.eml) && grep -qx '..Two dots.' out-plain.eml"
check "pass-through: the envelope is the client's" bash -c "grep -qx 'X-Mail-Args: <alice@corp.example>' out-plain.eml &&
  grep -qx 'X-Rcpt-Args: <partner@plain.example>' out-plain.eml"
check "pass-through: the proxy logs the relay" grep -q "partner@plain.example: plain-partner, plain (encrypt never) => relayed: 250 2.0.0 Ok$" proxy.log

# ---- (b) Outbound sign and encrypt ----------------------------------------------
message "Alice <alice@corp.example>" "bob@corp.example" "Figures" "Bob, the figures: revenue up 4 %." > figures.eml
send alice@corp.example bob@corp.example < figures.eml
check "alice to bob is accepted with the sink's reply" grep -qx "<-  250 2.0.0 Ok" send.out
arrived out-1.eml
sed '1,/^X-Rcpt-Args/d' out-1.eml > out-1.msg
check "it arrives encrypted" grep -qi "^Content-Type: application/pkcs7-mime; .*smime-type=enveloped-data" out-1.msg
check "bob's key decrypts it (openssl cms)" openssl cms -decrypt -in out-1.msg -recip bob.pem -inkey bob.key -out out-1.signed
check "alice's signature verifies, and the text is hers (openssl cms)" bash -c \
  "openssl cms -verify -in out-1.signed -CAfile corp-chain.pem -purpose smimesign -signer signer.pem -out out-1.txt 2>/dev/null &&
   grep -q 'revenue up 4 %' out-1.txt && openssl x509 -in signer.pem -noout -ext subjectAltName | grep -q alice@corp.example"

# ---- (c) The keystore down --------------------------------------------------------
stop_keystore
message "Alice <alice@corp.example>" "carol@corp.example" "Down" "Carol, hello." > down.eml
send alice@corp.example carol@corp.example < down.eml
check "keystore down: 451 4.7.1" grep -q "<\*\* 451 4.7.1 " send.out
check "keystore down: nothing at the sink" sink_empty
start_keystore || { echo "FAIL - the keystore does not start again"; exit 1; }

# ---- (d) The next hop down, then stalled -------------------------------------------
sink_stop
send alice@corp.example partner@plain.example < plain.eml
check "next hop down: 451 4.4.1 at the end of data" \
  grep -q "<\*\* 451 4.4.1 The next hop cannot take the message now; try again later" send.out
check "next hop down: the proxy logs why" grep -q "connect: Connection refused, deferred" proxy.log
# A next hop that accepts the connection and never answers.
python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(5); c=[]
while True: c.append(s.accept())" "$SINK_PORT" &
stall_pid=$!
until ss -Hltn "sport = :$SINK_PORT" | grep -q .; do sleep 0.05; done
send alice@corp.example partner@plain.example < plain.eml
check "next hop stalled: 451 4.4.1 after next_hop_timeout" grep -q "<\*\* 451 4.4.1 " send.out
check "next hop stalled: the proxy logs the timeout" grep -q "next hop greeting: Connection timed out, deferred" proxy.log
kill "$stall_pid"; wait "$stall_pid" 2> /dev/null; stall_pid=
# A next hop that closes the connection mid-DATA, then one that refuses
# the message, then one that refuses the recipient.
fake_hop() {  # fake_hop MODE [PORT]: next_hop.py on PORT (the sink's), its output in hop.out
  rm -f hop.out  # the last one's "listening" must not pass for this one's
  python3 "$here/next_hop.py" "${2:-$SINK_PORT}" "$1" > hop.out 2>&1 &
  stall_pid=$!
  local end=$((SECONDS + 30))
  until grep -q listening hop.out 2> /dev/null; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}
stop_fake_hop() { kill "$stall_pid"; wait "$stall_pid" 2> /dev/null; stall_pid=; }
fake_hop reset
send alice@corp.example partner@plain.example < plain.eml
check "next hop reset mid-DATA: 451 4.4.1" grep -q "<\*\* 451 4.4.1 The next hop cannot take the message now" send.out
stop_fake_hop
fake_hop refuse
send alice@corp.example partner@plain.example < plain.eml
check "next hop refuses the message: its own 554 reaches the client" \
  grep -qx "<\*\* 554 5.7.1 hop.test does not want this message" send.out
stop_fake_hop
fake_hop rcpt
send alice@corp.example partner@plain.example < plain.eml
check "next hop refuses the only recipient: its 550 reaches the client at the end of data" \
  grep -qx "<\*\* 550 5.1.1 <nobody>: no such user here" send.out
swaks --server "127.0.0.1:$PROXY_PORT" --from alice@corp.example --to partner@plain.example,other@plain.example \
  --data - < plain.eml > send.out 2>&1
check "next hop refuses one of two recipients with 5xx: 451 4.4.1, so the other is not bounced" \
  grep -q "<\*\* 451 4.4.1 " send.out
stop_fake_hop
# bob's copy (encrypted) and partner's (plain) go as two transactions, both
# brought up to their end of data before either is ended: the next hop
# refusing partner leaves bob's copy unfinished, so nothing is delivered.
hop_said() {  # hop_said LINE: waits for the fake next hop to print LINE
  local end=$((SECONDS + 10))
  until grep -qx "$1" hop.out; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}
message "Alice <alice@corp.example>" "bob@corp.example, partner@plain.example" "Both" "Bob and partner, hello." > both.eml
fake_hop rcpt-plain
swaks --server "127.0.0.1:$PROXY_PORT" --from alice@corp.example --to bob@corp.example,partner@plain.example \
  --data - < both.eml > send.out 2>&1
check "split: the next hop refuses the plain copy's recipient: 451 4.4.1, so bob is not bounced" \
  grep -q "<\*\* 451 4.4.1 " send.out
hop_said ABANDONED
check "split: bob's encrypted copy reached its end of data and was abandoned there: nothing taken" bash -c \
  "grep -qx ABANDONED hop.out && grep -q '^DATA| Content-Type: application/pkcs7-mime' hop.out && ! grep -qx TAKEN hop.out"
stop_fake_hop
# A connection whose message the next hop took carries the next message
# (next_hop_idle_seconds); one the next hop closed meanwhile is replaced,
# and the message still goes.
fake_hop ok
send alice@corp.example partner@plain.example < plain.eml && send alice@corp.example partner@plain.example < plain.eml
check "two messages, one after the other: both taken, on one connection to the next hop" bash -c \
  "grep -qx '<-  250 2.0.0 Ok: taken by hop.test' send.out && [ \$(grep -cx TAKEN hop.out) = 2 ] && [ \$(grep -cx CONNECT hop.out) = 1 ]"
stop_fake_hop
fake_hop once
send alice@corp.example partner@plain.example < plain.eml && send alice@corp.example partner@plain.example < plain.eml
check "a kept connection the next hop closed: the next message goes on a new one, taken all the same" bash -c \
  "grep -qx '<-  250 2.0.0 Ok: taken by hop.test' send.out && [ \$(grep -cx TAKEN hop.out) = 2 ] && [ \$(grep -cx CONNECT hop.out) = 2 ]"
stop_fake_hop
sink_start "$SINK_DIR" "$SINK_PORT" || { echo "FAIL - smtp-sink does not start again"; exit 1; }
check "nothing reached the sink while it was down" sink_empty
swaks --server "127.0.0.1:$PROXY_PORT" --from alice@corp.example --to bob@corp.example,partner@plain.example \
  --data - < both.eml > send.out 2>&1
check "split: recipients that need different copies are both taken in one transaction, with the sink's 250" \
  grep -qx "<-  250 2.0.0 Ok" send.out
check "split: each copy reached the sink in its own transaction" sink_wait_for 2
for f in $(sink_files); do
  if grep -qx 'X-Rcpt-Args: <bob@corp.example>' "$f"; then mv "$f" split-bob.eml; else mv "$f" split-partner.eml; fi
done
sed '1,/^X-Rcpt-Args/d' split-bob.eml > split-bob.msg 2> /dev/null
check "split: bob's copy opens with his key, and alice's signature on it verifies (openssl cms)" bash -c \
  "openssl cms -decrypt -in split-bob.msg -recip bob.pem -inkey bob.key 2>/dev/null |
   openssl cms -verify -CAfile corp-chain.pem -purpose smimesign 2>/dev/null | grep -q 'Bob and partner, hello.'"
check "split: partner's copy is plain and unmarked, as policy says for plain.example" bash -c \
  "grep -q '^Bob and partner, hello.' split-partner.eml && ! grep -qi 'pkcs7' split-partner.eml &&
   ! grep -qi '^X-Mailkms-Reinjected' split-partner.eml"
check "split: the proxy logs one relay of two copies" grep -q "=> split into 2 copies => relayed: 250 2.0.0 Ok (and 1 more)$" proxy.log

# ---- (e) The protocol, from a raw socket --------------------------------------------
msg=$'Subject: raw\r\n\r\nraw body\r\n'
printf '[["EHLO raw.test\\r\\nMAIL FROM:<alice@corp.example>\\r\\nRCPT TO:<partner@plain.example>\\r\\nDATA\\r\\n", 4], [%s, 2]]' \
  "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1] + ".\r\nQUIT\r\n"))' "$msg")" | raw > pipelined.out
check "pipelined: one batch gets EHLO, MAIL, RCPT and DATA answered in order" bash -c \
  "sed -n '2,8p' pipelined.out | tr -d '\r' | diff - <(printf '%s\n' 250-proxy.corp.example 250-PIPELINING 250-SIZE\ 2000000 250-8BITMIME 250-STARTTLS 250\ ENHANCEDSTATUSCODES 250\ 2.1.0\ Ok) &&
   sed -n '9,10p' pipelined.out | diff - <(printf '%s\n' '250 2.1.5 Ok' '354 End data with <CR><LF>.<CR><LF>')"
check "pipelined: the message and QUIT in one write: the sink's 250, then 221" bash -c \
  "sed -n '11p' pipelined.out | grep -qx '250 2.0.0 Ok' && sed -n '12p' pipelined.out | grep -qx '221 2.0.0 Bye'"
arrived out-raw.eml
check "pipelined: the message arrived" grep -q '^raw body' out-raw.eml

echo '[["MAIL FROM:<a@corp.example>\r\n", 1], ["EHLO x\r\n", 1], ["RCPT TO:<b@plain.example>\r\n", 1], ["DATA\r\n", 1],
       ["MAIL FROM:<a@corp.example>\r\n", 1], ["DATA\r\n", 1], ["MAIL FROM:<a@corp.example>\r\n", 1], ["VRFY bob\r\n", 1],
       ["FOO\r\n", 1], ["QUIT\r\n", 1]]' | raw > order.out
check "out of order: MAIL before EHLO, RCPT and DATA before MAIL, DATA without RCPT, a nested MAIL" bash -c \
  "grep -c '^503 5.5.1 ' order.out | grep -qx 4 && grep -qx '554 5.5.1 Error: no valid recipients' order.out &&
   grep -qx '503 5.5.1 Error: send HELO/EHLO first' order.out && grep -qx '503 5.5.1 Error: nested MAIL command' order.out"
check "VRFY is refused politely: 252; an unknown command: 500 5.5.2" bash -c \
  "grep -q '^252 2.5.2 ' order.out && grep -qx '500 5.5.2 Error: command not recognized' order.out && grep -qx '221 2.0.0 Bye' order.out"

echo '[["EHLO x\r\n", 1], ["XFORWARD ADDR=192.0.2.7 IDENT=forged\r\n", 1], ["QUIT\r\n", 1]]' | raw > xforward.out
check "XFORWARD from a client not in xforward_peers: not announced, refused with 550 5.7.0" bash -c \
  "! grep -q '^250-XFORWARD' xforward.out && grep -qx '550 5.7.0 Error: insufficient XFORWARD authorization' xforward.out"

echo '[["EHLO x\r\n", 1], ["XCLIENT ADDR=127.0.0.1 LOGIN=alice@corp.example\r\n", 1], ["QUIT\r\n", 1]]' | raw > xclient.out
check "XCLIENT from a client not in xclient_peers: not announced, refused with 550 5.7.0" bash -c \
  "! grep -q '^250-XCLIENT' xclient.out && grep -qx '550 5.7.0 Error: insufficient XCLIENT authorization' xclient.out"
# A proxy in front (127.0.0.3, in xclient_peers) names its client and the
# login that client authenticated as: the session is that client's. From
# 127.0.0.3 itself, outside, alice's mail would be inbound and unsigned.
message "Alice <alice@corp.example>" "bob@corp.example" "Via XCLIENT" "Bob, sent through a proxy in front." > xclient.eml
swaks --server "127.0.0.1:$PROXY_PORT" --local-interface 127.0.0.3 --xclient-addr 198.51.100.7 \
  --xclient-login alice@corp.example --from alice@corp.example --to bob@corp.example --data - < xclient.eml > send.out 2>&1
check "XCLIENT from a peer: 220 again, and the message is taken" bash -c \
  "grep -qx '<-  220 proxy.corp.example ESMTP mailkms-proxy' send.out && grep -qx '<-  250 2.0.0 Ok' send.out"
arrived out-xclient.eml
sed '1,/^X-Rcpt-Args/d' out-xclient.eml > out-xclient.msg
check "XCLIENT LOGIN: alice's login signs as her from outside, and bob's copy is encrypted (openssl cms)" bash -c \
  "openssl cms -decrypt -in out-xclient.msg -recip bob.pem -inkey bob.key 2>/dev/null |
   openssl cms -verify -CAfile corp-chain.pem -purpose smimesign 2>/dev/null | grep -q 'sent through a proxy in front'"
check "XCLIENT: the proxy logs the claimed client and login, and signs by the login" bash -c \
  "grep -q 'XCLIENT from \\[127.0.0.3\\]: client \\[198.51.100.7\\], login alice@corp.example$' proxy.log &&
   grep -q 'signer alice@corp.example: login alice@corp.example signs as itself' proxy.log"
swaks --server "127.0.0.1:$PROXY_PORT" --local-interface 127.0.0.3 --xclient-addr 198.51.100.7 \
  --from alice@corp.example --to bob@corp.example --data - < xclient.eml > send.out 2>&1
arrived out-xclient-2.eml
check "XCLIENT without LOGIN, from outside: alice's mail is inbound to bob, not signed or encrypted" bash -c \
  "grep -q '^Bob, sent through a proxy in front' out-xclient-2.eml && ! grep -qi pkcs7 out-xclient-2.eml &&
   grep -q 'inbound (.*198.51.100.7' proxy.log"

# STARTTLS (RFC 3207). A command sent behind STARTTLS in the same packet
# must not run inside the TLS session (CVE-2011-0411): had it run, the
# first reply under TLS would be its 503, not the EHLO's 250.
export RAW_SMTP_CA=$work/proxy.crt RAW_SMTP_SERVER_NAME=proxy.corp.example
printf '[["EHLO x\\r\\n", 1], ["STARTTLS\\r\\nMAIL FROM:<evil@corp.example>\\r\\n", 1], ["@tls", 0], ["EHLO x\\r\\n", 1],
         ["STARTTLS\\r\\n", 1], ["MAIL FROM:<alice@corp.example>\\r\\nRCPT TO:<partner@plain.example>\\r\\nDATA\\r\\n", 3],
         [%s, 2]]' "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1] + ".\r\nQUIT\r\n"))' $'Subject: tls\r\n\r\nsent under TLS\r\n')" |
  raw > tls.out
check "STARTTLS is offered, and answered 220 2.0.0" bash -c "grep -qx '250-STARTTLS' tls.out && grep -qx '220 2.0.0 Ready to start TLS' tls.out"
check "the handshake verifies the proxy's certificate, TLS 1.2 or later" grep -qx "TLS TLSv1.[23]" tls.out
check "what was pipelined behind STARTTLS is discarded: the first reply under TLS is the EHLO's" bash -c \
  "sed -n '/^TLS TLSv/{n;p;q}' tls.out | grep -qx 250-proxy.corp.example && ! grep -q '^503' tls.out"
check "under TLS, STARTTLS is neither offered nor taken again" bash -c \
  "sed -n '/^TLS TLSv/,\$p' tls.out | grep -vq '^250-STARTTLS' && grep -qx '554 5.5.1 Error: TLS already active' tls.out"
check "a message sent under TLS is relayed, with the sink's 250, then 221" bash -c \
  "tail -n 2 tls.out | diff - <(printf '%s\n' '250 2.0.0 Ok' '221 2.0.0 Bye')"
arrived out-tls.eml
check "the message sent under TLS arrived" grep -q '^sent under TLS' out-tls.eml
check "the proxy logs the discarded bytes and the TLS session" bash -c \
  "grep -q 'byte(s) sent behind STARTTLS by \[127.0.0.1\], discarded' proxy.log && grep -q 'TLS from \[127.0.0.1\]: TLSv1.[23] with ' proxy.log"
echo '[["EHLO x\r\n", 1], ["STARTTLS\r\n", 1], ["this is not a TLS handshake\r\n", 1]]' | raw > notls.out
check "a client that says STARTTLS, then no TLS: the session ends" bash -c \
  "grep -qx '220 2.0.0 Ready to start TLS' notls.out && tail -n 1 notls.out | grep -qx CLOSED"

python3 -c 'import json; print(json.dumps([["EHLO x\r\n", 1], ["x" * (1 << 20) + "\r\n", 1], ["NOOP\r\n", 1], ["QUIT\r\n", 1]]))' | raw > long.out
check "a 1 MB line: 500 5.5.2, and the session goes on" bash -c \
  "grep -qx '500 5.5.2 Error: line too long' long.out && grep -qx '250 2.0.0 Ok' long.out && grep -qx '221 2.0.0 Bye' long.out"

echo '[["EHLO x\r\nMAIL FROM:<alice@corp.example>\r\nRCPT TO:<partner@plain.example>\r\nDATA\r\n", 4],
       ["Subject: smuggled\r\n\r\nhello\n.\r\nMAIL FROM:<evil@corp.example>\r\n", 1], ["NOOP\r\n", 1]]' | raw > bare.out
check "bare LF in DATA: 521 5.5.2 and the session ends" bash -c \
  "grep -qx '521 5.5.2 proxy.corp.example Error: bare <LF> received' bare.out && tail -n 1 bare.out | grep -qx CLOSED"

echo '[["EHLO x\r\nMAIL FROM:<a@corp.example> SIZE=2000001\r\nMAIL FROM:<alice@corp.example> SIZE=2000000\r\n", 3],
       ["RCPT TO:<partner@plain.example>\r\nDATA\r\n", 2]]' > size.json
python3 -c 'import json; s=json.load(open("size.json")); s.append(["Subject: big\r\n\r\n" + ("y" * 998 + "\r\n") * 2100 + ".\r\n", 1]);
s.append(["MAIL FROM:<alice@corp.example>\r\nRCPT TO:<partner@plain.example>\r\nDATA\r\n", 3]); s.append(["z" * 1001 + "\r\n.\r\nQUIT\r\n", 2]); print(json.dumps(s))' |
  raw > size.out
check "SIZE over max_message_size at MAIL: the gateway's 552 5.3.4; at the limit: 250" bash -c \
  "sed -n '8p' size.out | grep -qx '552 5.3.4 Message too big for the S/MIME gateway' && sed -n '9p' size.out | grep -qx '250 2.1.0 Ok'"
check "a message over max_message_size: 552 5.3.4 at the end of data, and the session goes on" \
  bash -c "sed -n '12p' size.out | grep -qx '552 5.3.4 Message too big for the S/MIME gateway' && sed -n '15p' size.out | grep -qx '354 End data with <CR><LF>.<CR><LF>'"
check "a text line over 1000 octets: 552 5.3.4 at the end of data; QUIT still answered" bash -c \
  "sed -n '16p' size.out | grep -q '^552 5.3.4 Error: a message line is longer than 1000 octets' && sed -n '17p' size.out | grep -qx '221 2.0.0 Bye'"

echo '[["EHLO x\r\n", 3]]' | raw > stall.out
check "a client silent past command_timeout_seconds: 421 4.4.2, then closed" bash -c \
  "tail -n 2 stall.out | diff - <(printf '%s\n' '421 4.4.2 proxy.corp.example Error: timeout exceeded' CLOSED)"

echo '[["EHLO x\r\nMAIL FROM:<alice@corp.example>\r\nRCPT TO:<partner@plain.example>\r\nDATA\r\n", 4],
       ["Subject: cut\r\n\r\nhalf a mess", -1]]' | raw > cut.out
wait_for_log() {
  local end=$((SECONDS + 30))
  until grep -q "$1" proxy.log; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}
hup_and_wait() {  # SIGHUP, then wait for one more log line that matches $1
  local before end=$((SECONDS + 30))
  before=$(grep -c "$1" proxy.log)
  kill -HUP "$proxy_pid"
  until [ "$(grep -c "$1" proxy.log)" -gt "$before" ]; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}
check "a client gone mid-DATA: the proxy says nothing was relayed" wait_for_log "lost connection in DATA"
check "nothing of the cut, bare-LF or refused sessions reached the sink" sink_empty

# Three sessions held open, once every earlier one has ended: a fourth is turned away.
sessions_ended() {
  local end=$((SECONDS + 30))
  until [ "$(grep -c ': connect from' proxy.log)" = "$(grep -c ': disconnect from' proxy.log)" ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}
sessions_ended
python3 - "$PROXY_PORT" > cap.out <<'PY'
import socket, sys
held = []
for _ in range(4):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    held.append(s)
    print(s.makefile("rb").readline().decode().rstrip())
PY
check "max_sessions: three served, the fourth told 421 4.3.2" bash -c \
  "grep -c '^220 proxy.corp.example ESMTP mailkms-proxy' cap.out | grep -qx 3 &&
   tail -n 1 cap.out | grep -qx '421 4.3.2 proxy.corp.example Error: too many sessions; try again later'"

# Past max_sessions_per_client (2), a client outside [local] networks is
# turned away; an internal one is not counted.
sessions_ended
python3 - "$PROXY_PORT" > per-client.out <<'PY'
import socket, sys
held = []
for source in ("127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.1"):
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
    print(source, s.makefile("rb").readline().decode().rstrip())
PY
check "max_sessions_per_client: a third session from 127.0.0.2 is told 421 4.7.0; 127.0.0.1 is still served" \
  bash -c "diff per-client.out - <<'EXPECTED'
127.0.0.2 220 proxy.corp.example ESMTP mailkms-proxy
127.0.0.2 220 proxy.corp.example ESMTP mailkms-proxy
127.0.0.2 421 4.7.0 proxy.corp.example Error: too many connections from [127.0.0.2]; try again later
127.0.0.1 220 proxy.corp.example ESMTP mailkms-proxy
EXPECTED"

# In the background, the pid file names the process that serves, and the log goes to log_file.
BG_PORT=$(free_port) || exit 2
sed -e "s|^listen = .*|listen = \"127.0.0.1:$BG_PORT\"|" mailkms.conf > bg.conf
printf 'pid_file = "%s"\nlog_file = "%s"\n' "$work/bg.pid" "$work/bg.log" >> bg.conf
"$proxy" --config bg.conf 2> bg.err
bg_listening() {
  local end=$((SECONDS + 30))
  until [ -s bg.pid ] && grep -q "listening on 127.0.0.1:$BG_PORT" bg.log 2> /dev/null; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}
bg_listening
check "detached: the pid file names the serving proxy, whose log is in log_file" bash -c \
  "grep -q 'listening on 127.0.0.1:$BG_PORT' bg.log && [ \"\$(readlink /proc/\$(cat bg.pid)/exe)\" = '$proxy' ] &&
   ss -Hltnp 'sport = :$BG_PORT' | grep -q \"pid=\$(cat bg.pid),\""

# SIGHUP reads the policy again: a rule added for later.example applies to
# the next transaction, without a restart.
message "alice@corp.example" "x@later.example" "Before" "text" | send alice@corp.example x@later.example
check "before the reload: no rule for later.example, relayed" grep -qx "<-  250 2.0.0 Ok" send.out
arrived out-later.eml
cat >> policy.toml <<'POLICY'

[[rule]]
name = "must-encrypt-later"
to = "*@later.example"
encrypt = "always"
on_missing_certificate = "reject"
POLICY
kill -HUP "$proxy_pid"
wait_for_log "policy reloaded from $work/policy.toml: 2 rule(s)"
message "alice@corp.example" "x@later.example" "After" "text" | send alice@corp.example x@later.example
check "after SIGHUP: the new rule refuses at RCPT with 550 5.7.1, naming the recipient" \
  grep -q "<\*\* 550 5.7.1 .*x@later.example" send.out
check "the proxy still serves after SIGHUP" kill -0 "$proxy_pid"

# SIGHUP empties the gateway's caches too: a certificate revoked after the
# proxy looked it up is used until certificate_ttl_seconds runs out (a
# limit, SECURITY.md), or until a reload.
# smtp-sink may still be writing a message it has let go of, so the
# header is read until it says enveloped-data or the sink has had 10 s.
enveloped() {  # enveloped FILE: the message at the sink is encrypted; if not, what it is and what the proxy said
  local end=$((SECONDS + 10))
  until sed '0,/^X-Rcpt-Args/d' "$1" | grep -qi "^Content-Type: application/pkcs7-mime; .*smime-type=enveloped-data"; do
    [ "$SECONDS" -lt "$end" ] || { grep -i '^Content-Type' "$1"; grep 'carol@corp.example' proxy.log | tail -n 2; return 1; }
    sleep 0.1
  done
}
message "alice@corp.example" "carol@corp.example" "Before the revocation" "For carol." > carol.eml
send alice@corp.example carol@corp.example < carol.eml
arrived out-carol-1.eml
check "before carol's certificate is revoked, mail to her is encrypted" enveloped out-carol-1.eml
"$ctl" revoke carol@corp.example --reason keyCompromise > /dev/null
send alice@corp.example carol@corp.example < carol.eml
arrived out-carol-2.eml
check "right after the revocation, within the cache's TTL: still encrypted to her certificate" enveloped out-carol-2.eml
check "SIGHUP: the proxy forgets what it kept from the keystore" hup_and_wait "caches forgotten: certificates, signing identities"
send alice@corp.example carol@corp.example < carol.eml
arrived out-carol-3.eml
check "after SIGHUP the keystore is asked again and has no certificate for carol: not encrypted (encrypt if-possible)" \
  bash -c "! sed '1,/^X-Rcpt-Args/d' out-carol-3.eml | grep -qi 'smime-type=enveloped-data' && grep -q 'For carol.' out-carol-3.eml"

# SIGHUP reads [proxy] again too: a smaller max_sessions_per_client counts
# for the sessions that start after it; a new listen waits for a restart;
# a value that does not parse is refused, and the running settings stay.
sed -i -e 's/^max_sessions_per_client = 2$/max_sessions_per_client = 1/' \
  -e "s/^listen = .*/listen = \"127.0.0.1:$((PROXY_PORT + 1))\"/" mailkms.conf
hup_and_wait "proxy settings reloaded from mailkms.conf"
sessions_ended
python3 - "$PROXY_PORT" > reload-cap.out <<'PY'
import socket, sys
held = []
for _ in range(2):
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
    print(s.makefile("rb").readline().decode().rstrip())
PY
check "after SIGHUP: max_sessions_per_client 1, so a second session from 127.0.0.2 is told 421 4.7.0" \
  bash -c "sed -n 2p reload-cap.out | grep -q '^421 4.7.0 '"
check "after SIGHUP: a new listen address is logged as waiting for a restart, and the old one still serves" \
  bash -c "grep -q '\\[proxy\\] listen changed in mailkms.conf: it takes effect at the next start' proxy.log &&
    sed -n 1p reload-cap.out | grep -q '^220 '"
sed -i 's/^max_sessions_per_client = 1$/max_sessions_per_client = 0/' mailkms.conf
check "a [proxy] that does not parse is refused on SIGHUP, naming the key, and the proxy still serves" \
  bash -c "$(declare -f hup_and_wait); proxy_pid=$proxy_pid; hup_and_wait 'proxy settings reload refused, the running ones stay: .*proxy.max_sessions_per_client' &&
    kill -0 $proxy_pid"
sed -i -e 's/^max_sessions_per_client = 0$/max_sessions_per_client = 2/' \
  -e "s/^listen = .*/listen = \"127.0.0.1:$PROXY_PORT\"/" mailkms.conf

# And [gateway]: a new max_message_size is what the next EHLO offers; one
# that does not parse is refused, naming the key, and the running one stays.
ehlo_size() { echo '[["EHLO x\r\n", 1], ["QUIT\r\n", 1]]' | raw | grep '^250-SIZE '; }
sed -i 's/^max_message_size = 2000000$/max_message_size = 1500000/' mailkms.conf
check "SIGHUP reads [gateway] again: EHLO offers the new max_message_size" bash -c \
  "$(declare -f hup_and_wait); proxy_pid=$proxy_pid; hup_and_wait 'gateway settings reloaded from mailkms.conf'"
check "  SIZE 1500000" bash -c "$(declare -f ehlo_size raw); here=$here PROXY_PORT=$PROXY_PORT; [ \"\$(ehlo_size)\" = '250-SIZE 1500000' ]"
sed -i 's/^max_message_size = 1500000$/max_message_size = "big"/' mailkms.conf
check "a [gateway] that does not parse is refused on SIGHUP, naming the key" bash -c \
  "$(declare -f hup_and_wait); proxy_pid=$proxy_pid; hup_and_wait 'gateway settings reload refused, the running ones stay: .*gateway.max_message_size'"
check "  and the running [gateway] stays: SIZE 1500000" bash -c \
  "$(declare -f ehlo_size raw); here=$here PROXY_PORT=$PROXY_PORT; [ \"\$(ehlo_size)\" = '250-SIZE 1500000' ]"
sed -i 's/^max_message_size = "big"$/max_message_size = 2000000/' mailkms.conf
hup_and_wait "gateway settings reloaded from mailkms.conf"

# ---- (f) STARTTLS to the next hop ----------------------------------------------------
# A CA of the test's own, and from it a certificate for hop.test, which
# next_hop.py presents. Each case sets next_hop_tls* in [proxy] (the last
# table of mailkms.conf) and reloads with SIGHUP; the next hop is
# next_hop.py on a port of its own, or the sink.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=hop-ca \
  -keyout hop-ca.key -out hop-ca.crt 2> /dev/null &&
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=hop.test -keyout hop.key -out hop.csr 2> /dev/null &&
  openssl x509 -req -in hop.csr -CA hop-ca.crt -CAkey hop-ca.key -CAcreateserial -days 2 \
    -extfile <(echo subjectAltName=DNS:hop.test) -out hop.crt 2> /dev/null ||
  { echo "FAIL - openssl cannot make the next hop's certificate"; exit 1; }
export HOP_CERT=$work/hop.crt HOP_KEY=$work/hop.key
HOP_PORT=$(free_port) || exit 2
while [ "$HOP_PORT" = "$PROXY_PORT" ] || [ "$HOP_PORT" = "$SINK_PORT" ]; do HOP_PORT=$(free_port) || exit 2; done
hop_tls() {  # hop_tls PORT KEY=VALUE...: the next hop and its TLS settings, then SIGHUP
  local port=$1 line
  shift
  sed -i -e '/^next_hop_tls/d' -e "s/^next_hop = .*/next_hop = \"127.0.0.1:$port\"/" mailkms.conf
  for line in "$@"; do printf '%s\n' "$line" >> mailkms.conf; done
  hup_and_wait "proxy settings reloaded from mailkms.conf"
}
tls_case() {  # tls_case MODE PORT KEY=VALUE...: a fresh next_hop.py in MODE, then alice's message to bob
  fake_hop "$1" "$HOP_PORT" || return 1
  local port=$2
  shift 2
  hop_tls "$port" "$@"
  send alice@corp.example partner@plain.example < plain.eml
}
verified=("next_hop_tls = \"verify\"" "next_hop_tls_ca = \"$work/hop-ca.crt\"" "next_hop_tls_name = \"hop.test\"")

tls_case tls "$HOP_PORT" "${verified[@]}"
check "verify: the message is relayed under TLS, with the next hop's 250" grep -qx "<-  250 2.0.0 Ok: taken by hop.test" send.out
check "verify: the envelope and the message (dot-stuffed) went only under TLS" bash -c \
  "grep -qx 'TLS MAIL FROM:<alice@corp.example>' hop.out && grep -qx 'TLS RCPT TO:<partner@plain.example>' hop.out &&
   grep -qx 'DATA| ..A line that starts with a dot.' hop.out && ! grep -Eq '^CLEAR (MAIL|RCPT|DATA)' hop.out"
check "verify: the proxy logs TLS and the name it verified" \
  grep -q "=> relayed: 250 2.0.0 Ok: taken by hop.test (TLSv1.[23] with .*, verified hop.test)$" proxy.log
stop_fake_hop

tls_case tls "$HOP_PORT" "next_hop_tls = \"verify\"" "next_hop_tls_ca = \"$work/hop-ca.crt\"" "next_hop_tls_name = \"other.test\""
check "verify: a certificate for another name: 451 4.4.1, and the proxy says why" bash -c \
  "grep -q '<\*\* 451 4.4.1 ' send.out && grep -q 'next hop TLS handshake: .*: hostname mismatch, deferred' proxy.log"
check "verify: nothing was sent to a next hop whose certificate did not verify" bash -c "! grep -Eq '^(TLS|CLEAR) MAIL' hop.out"
stop_fake_hop

tls_case tls "$HOP_PORT" "next_hop_tls = \"verify\"" "next_hop_tls_ca = \"$work/proxy.crt\"" "next_hop_tls_name = \"hop.test\""
check "verify: a certificate from a CA not in next_hop_tls_ca: 451 4.4.1, and the proxy says why" bash -c \
  "grep -q '<\*\* 451 4.4.1 ' send.out && grep -q 'next hop TLS handshake: .*: unable to get local issuer certificate, deferred' proxy.log &&
   ! grep -Eq '^(TLS|CLEAR) MAIL' hop.out"
stop_fake_hop

# A reply forged in the clear behind the 220 to STARTTLS must not pass for
# the first reply under TLS: were it read, every later reply would answer
# the command before, and DATA would get RCPT's 250, not 354.
tls_case tls-inject "$HOP_PORT" "${verified[@]}"
check "a reply injected behind the next hop's 220 is discarded: the message is relayed under TLS" bash -c \
  "grep -qx '<-  250 2.0.0 Ok: taken by hop.test' send.out && grep -qx 'TLS MAIL FROM:<alice@corp.example>' hop.out"
check "the proxy logs the bytes it discarded" \
  grep -q "relayed: 250 2.0.0 Ok: taken by hop.test (TLSv1.[23] with .*, verified hop.test, 31 byte(s) sent behind its 220 discarded)$" proxy.log
stop_fake_hop

tls_case tls "$HOP_PORT" "next_hop_tls = \"may\""
check "may: STARTTLS when offered, the certificate unchecked" bash -c \
  "grep -qx 'TLS MAIL FROM:<alice@corp.example>' hop.out && grep -q 'taken by hop.test (TLSv1.[23] with .*, unverified)$' proxy.log"
stop_fake_hop

hop_tls "$SINK_PORT" "next_hop_tls = \"encrypt\""
send alice@corp.example partner@plain.example < plain.eml
check "encrypt: a next hop that offers no STARTTLS (smtp-sink): the client is told 451 4.4.1, and the proxy says why" bash -c \
  "grep -q '<\*\* 451 4.4.1 ' send.out &&
   grep -q 'next hop does not offer STARTTLS, which next_hop_tls \"encrypt\" requires, deferred' proxy.log"
check "encrypt: nothing reached the sink in the clear" sink_empty
hop_tls "$SINK_PORT"

# ---- (g) SIGTERM: no new sessions, messages in flight finished, within a bound -------
# drain.py holds one session in DATA and one between commands, then sends it.
exited() {  # the proxy has ended with status 0; its pid is forgotten
  local end=$((SECONDS + 60)) status
  while kill -0 "$proxy_pid" 2> /dev/null; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
  wait "$proxy_pid"
  status=$?
  proxy_pid=
  return "$status"
}
python3 "$here/drain.py" "$PROXY_PORT" "$proxy_pid" > drain.out 2>&1
check "SIGTERM: a client between commands is told 421 4.3.2 at once" \
  grep -qx "B: 421 4.3.2 proxy.corp.example Service shutting down; try again later" drain.out
check "SIGTERM: a new client is refused" grep -qx "C: REFUSED" drain.out
check "SIGTERM: the message in DATA is finished: the next hop's 250, then 421 4.3.2" bash -c \
  "sed -n 3,4p drain.out | diff - <(printf '%s\n' 'A: 250 2.0.0 Ok' 'A: 421 4.3.2 proxy.corp.example Service shutting down; try again later')"
arrived out-drained.eml
check "SIGTERM: the message in flight reached the next hop whole" \
  bash -c "grep -q '^The first half of the message,' out-drained.eml && grep -q '^and the second half.' out-drained.eml"
check "SIGTERM: the proxy exits 0 once no session is left" exited
check "SIGTERM: its log says what it did" bash -c "grep -qE 'stopping: no new sessions; [0-9]+ in flight' proxy.log &&
  [ \$(grep -c 'shutting down; told \\[127.0.0.1\\] 421' proxy.log) -ge 2 ] && ! grep -q 'still open at shutdown_timeout' proxy.log"

# Past shutdown_timeout_seconds a session still in DATA is cut, and its
# client, told nothing, keeps the message.
sed -i 's/^max_sessions = 3$/max_sessions = 3\nshutdown_timeout_seconds = 2/' mailkms.conf
start_proxy "$PROXY_PORT" || { echo "FAIL - the proxy does not start again"; exit 1; }
python3 "$here/drain.py" "$PROXY_PORT" "$proxy_pid" cut > drain-cut.out 2>&1
check "past shutdown_timeout_seconds: the session in DATA is cut with no reply" grep -qx "A: CLOSED" drain-cut.out
cut_and_exited() { exited && grep -q '1 session(s) still open at shutdown_timeout: cut, nothing answered' proxy.log; }
check "past shutdown_timeout_seconds: the proxy exits 0, saying it cut one session" cut_and_exited
check "nothing of the cut message reached the next hop" sink_empty

finish
