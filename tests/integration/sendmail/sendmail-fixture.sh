# A private Sendmail on loopback for integration tests, sourced by test
# scripts. Debian's Sendmail replaces Postfix when installed, so
# scripts/install-deps.sh unpacks its packages into a directory of their
# own instead ($MAILKMS_SENDMAIL_ROOT, /var/lib/mailkms-tests/sendmail).
# It runs from there with a sendmail.cf built here from a .mc, its queue,
# pid file and log in WORKDIR, on 127.0.0.1 on a port picked here, and
# relays everything to an smtp-sink on another.
#
# Sendmail looks up its own fully qualified name before it reads any
# configuration, and stalls 60 s when the machine's name has no dot; it
# logs only to syslog. So it runs in namespaces of its own (unshare): the
# host name sm.test, an /etc/hosts that names it, and a /dev whose log
# socket is ours, read into WORKDIR/maillog. Nothing outside WORKDIR
# changes.
#
#   sendmail_start WORKDIR   sets SENDMAIL_PORT, SINK_DIR; needs root; the
#                            lines of $SENDMAIL_EXTRA_MC go into the .mc
#                            before its mailers (a milter, say)
#   sendmail_wait_for N      waits until N messages reached the sink
#   sendmail_queue           the queue as `mailq` prints it
#   sendmail_queue_empty     true when Sendmail holds no message
#   log_mark                 where Sendmail's log ends now
#   logged_since MARK RE     waits (30 s at most) for a line after MARK
#                            that matches RE (extended regex)
#   sendmail_stop

# shellcheck source=../smtp-sink.sh
. "$(dirname "${BASH_SOURCE[0]}")/../smtp-sink.sh"

SENDMAIL_ROOT=${MAILKMS_SENDMAIL_ROOT:-/var/lib/mailkms-tests/sendmail}
SENDMAIL_DIR=
syslog_pid=

# sendmail_run ARG…: Sendmail from its unpacked root, in its namespaces.
sendmail_run() {
  local w=$SENDMAIL_DIR
  unshare --uts --mount sh -c '
    set -e
    w=$1; shift
    mount --bind "$w/hosts" /etc/hosts
    hostname sm.test
    for node in null zero random urandom; do
      [ -e "$w/dev/$node" ] || touch "$w/dev/$node"
      mount --bind "/dev/$node" "$w/dev/$node"
    done
    ln -sfn "$w/syslog.sock" "$w/dev/log"
    mount --rbind "$w/dev" /dev
    exec "$@"' sendmail_run "$w" "$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" -C "$w/sendmail.cf" "$@"
}

sendmail_start() {
  SENDMAIL_DIR=$1
  local w=$SENDMAIL_DIR m4dir=$SENDMAIL_ROOT/usr/share/sendmail/cf/m4
  if [ ! -x "$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" ] || [ ! -f "$m4dir/cf.m4" ]; then
    echo "sendmail fixture: no Sendmail in $SENDMAIL_ROOT: run scripts/install-deps.sh" >&2
    return 1
  fi
  mkdir -p "$w/queue" "$w/etc" "$w/dev" && chmod 700 "$w/queue" || return 1
  SENDMAIL_PORT=$(free_port) || return 1
  SINK_PORT=$(free_port) || return 1
  while [ "$SINK_PORT" = "$SENDMAIL_PORT" ]; do SINK_PORT=$(free_port) || return 1; done
  printf '%s\n' '127.0.0.1 sm.test localhost' '::1 sm.test localhost' > "$w/hosts"
  printf '%s\n' 'hosts files' 'aliases files' > "$w/etc/service.switch"
  printf '%s\n' 'postmaster: root' > "$w/etc/aliases"
  sendmail_mc > "$w/sendmail.mc"
  m4 "$m4dir/cf.m4" "$w/sendmail.mc" > "$w/sendmail.cf" || return 1

  python3 -c '
import os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "ab", buffering=0) as log:
    while True:
        log.write(sock.recv(65536).rstrip(b"\0\n") + b"\n")' "$w/syslog.sock" "$w/maillog" &
  syslog_pid=$!
  sink_start "$w/sink" "$SINK_PORT" || return 1
  local end=$((SECONDS + 30))
  until [ -S "$w/syslog.sock" ]; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
  sendmail_run -bi > /dev/null || { echo "sendmail fixture: newaliases failed" >&2; return 1; }
  sendmail_run -bd -q1s || { echo "sendmail fixture: sendmail -bd failed" >&2; return 1; }
  until ss -Hltn "sport = :$SENDMAIL_PORT" | grep -q .; do
    [ "$SECONDS" -lt "$end" ] || { echo "sendmail fixture: not listening after 30 s; its log:" >&2; cat "$w/maillog" >&2; return 1; }
    sleep 0.05
  done
}

# The .mc: Debian's m4 files, everything in WORKDIR, no DNS, every message
# relayed to the sink. 127.0.0.1 may relay (Sendmail's default for the
# local host); a sender's domain need not resolve.
sendmail_mc() {
  local w=$SENDMAIL_DIR
  cat <<MC
OSTYPE(\`linux')dnl
define(\`MAIL_SETTINGS_DIR', \`$w/etc/')dnl
define(\`ALIAS_FILE', \`$w/etc/aliases')dnl
define(\`QUEUE_DIR', \`$w/queue')dnl
define(\`confPID_FILE', \`$w/sendmail.pid')dnl
define(\`confSERVICE_SWITCH_FILE', \`$w/etc/service.switch')dnl
define(\`confDOMAIN_NAME', \`sm.test')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confDONT_BLAME_SENDMAIL', \`TrustStickyBit')dnl
define(\`confTO_IDENT', \`0')dnl
define(\`confBIND_OPTS', \`-DNSRCH -DEFNAMES')dnl
define(\`confAUTH_MECHANISMS', \`')dnl
define(\`SMART_HOST', \`[127.0.0.1]')dnl
define(\`RELAY_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`no_default_msa')dnl
DAEMON_OPTIONS(\`Port=$SENDMAIL_PORT, Addr=127.0.0.1, Name=MTA')dnl
${SENDMAIL_EXTRA_MC:-}
MAILER(\`local')dnl
MAILER(\`smtp')dnl
MC
}

sendmail_wait_for() { sink_wait_for "$1" "$SENDMAIL_DIR/maillog"; }

sendmail_queue() { sendmail_run -bp 2>&1; }

sendmail_queue_empty() { sendmail_queue | grep -q 'is empty'; }

log_mark() { wc -l < "$SENDMAIL_DIR/maillog"; }

logged_since() {
  local end=$((SECONDS + 30))
  until tail -n +"$(($1 + 1))" "$SENDMAIL_DIR/maillog" | grep -qE "$2"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}

sendmail_stop() {
  local pid
  if [ -n "$SENDMAIL_DIR" ] && pid=$(head -n 1 "$SENDMAIL_DIR/sendmail.pid" 2> /dev/null) && kill "$pid" 2> /dev/null; then
    local end=$((SECONDS + 30))
    while kill -0 "$pid" 2> /dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
  fi
  sink_stop
  if [ -n "$syslog_pid" ] && kill "$syslog_pid" 2> /dev/null; then wait "$syslog_pid" 2> /dev/null || true; fi
  syslog_pid=
  return 0
}
