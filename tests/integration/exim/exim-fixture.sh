# A private Exim on loopback for integration tests, sourced by test
# scripts. Debian's Exim replaces Postfix when installed, so
# scripts/install-deps.sh unpacks its packages into a directory of their
# own instead ($MAILKMS_EXIM_ROOT, /var/lib/mailkms-tests/exim). It runs
# from there with a configuration written here, its spool and logs in
# WORKDIR, on 127.0.0.1 on a port picked here, and sends everything to
# $EXIM_ROUTE_PORT on 127.0.0.1 (the proxy, say).
#
# The binary looks up its user, Debian-exim, before it reads any
# configuration, so it runs in a mount namespace of its own (unshare) whose
# /etc/passwd and /etc/group are copies that add that user. Started by root
# with a configuration of its own, Exim gives up root for delivery and logs
# "exim user lost privilege for using -C option" each time it runs: that
# is expected, and the log lines the tests read are its deliveries.
#
#   exim_start WORKDIR   sets EXIM_PORT; needs root and $EXIM_ROUTE_PORT
#   exim_run ARG…        Exim (exim4 -C the configuration) with ARG…
#   exim_queue           the queue as `exim -bp` lists it (empty: nothing)
#   exim_logged RE       waits (30 s at most) for a mainlog line matching RE
#   exim_stop

# shellcheck source=../smtp-sink.sh
. "$(dirname "${BASH_SOURCE[0]}")/../smtp-sink.sh"

EXIM_ROOT=${MAILKMS_EXIM_ROOT:-/var/lib/mailkms-tests/exim}
EXIM_DIR=
exim_user_id=64000  # Debian's fixed uid for Debian-exim

exim_run() {
  unshare --mount sh -c '
    set -e
    w=$1; shift
    mount --bind "$w/passwd" /etc/passwd
    mount --bind "$w/group" /etc/group
    exec "$@"' exim_run "$EXIM_DIR" "$EXIM_ROOT/usr/sbin/exim4" -C "$EXIM_DIR/exim.conf" "$@"
}

exim_start() {
  EXIM_DIR=$1
  local w=$EXIM_DIR
  if [ ! -x "$EXIM_ROOT/usr/sbin/exim4" ]; then
    echo "exim fixture: no Exim in $EXIM_ROOT: run scripts/install-deps.sh" >&2
    return 1
  fi
  [ -n "${EXIM_ROUTE_PORT:-}" ] || { echo "exim fixture: EXIM_ROUTE_PORT is not set" >&2; return 1; }
  mkdir -p "$w/spool" "$w/log" || return 1
  chown -R "$exim_user_id:$exim_user_id" "$w/spool" "$w/log" || return 1
  { grep -v '^Debian-exim:' /etc/passwd; echo "Debian-exim:x:$exim_user_id:$exim_user_id::$w/spool:/usr/sbin/nologin"; } > "$w/passwd"
  { grep -v '^Debian-exim:' /etc/group; echo "Debian-exim:x:$exim_user_id:"; } > "$w/group"
  EXIM_PORT=$(free_port) || return 1
  exim_conf > "$w/exim.conf"
  exim_run -bd -oP "$w/exim.pid" || { echo "exim fixture: exim -bd failed" >&2; return 1; }
  local end=$((SECONDS + 30))
  until ss -Hltn "sport = :$EXIM_PORT" | grep -q .; do
    [ "$SECONDS" -lt "$end" ] || { echo "exim fixture: not listening after 30 s; its log:" >&2; cat "$w/log/mainlog" >&2; return 1; }
    sleep 0.05
  done
}

# Mail from 127.0.0.1 and 127.0.0.2 for anyone, sent on to the route port
# (self = send: the route is this host, on purpose); deferred mail is tried
# again when the test says so (exim_run -qff), not by a queue runner.
exim_conf() {
  cat <<CONF
primary_hostname = ex.test
local_interfaces = <; 127.0.0.1
daemon_smtp_ports = $EXIM_PORT
spool_directory = $EXIM_DIR/spool
log_file_path = $EXIM_DIR/log/%slog
pid_file_path = $EXIM_DIR/exim.pid
exim_user = Debian-exim
exim_group = Debian-exim
exim_path = $EXIM_ROOT/usr/sbin/exim4
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept hosts = 127.0.0.1 : 127.0.0.2
  deny   message = relay not permitted
begin routers
through_proxy:
  driver = manualroute
  route_list = * 127.0.0.1::$EXIM_ROUTE_PORT
  self = send
  transport = proxy_smtp
  no_more
begin transports
proxy_smtp:
  driver = smtp
begin retry
*  *  F,2h,1m
CONF
}

exim_queue() { exim_run -bp 2>&1; }

exim_logged() {
  local end=$((SECONDS + 30))
  until grep -qE "$1" "$EXIM_DIR/log/mainlog" 2> /dev/null; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}

exim_stop() {
  local pid
  if [ -n "$EXIM_DIR" ] && pid=$(cat "$EXIM_DIR/exim.pid" 2> /dev/null) && kill "$pid" 2> /dev/null; then
    local end=$((SECONDS + 30))
    while kill -0 "$pid" 2> /dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
  fi
  return 0
}
