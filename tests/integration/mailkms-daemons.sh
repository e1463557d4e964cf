# mailkms-keystored, mailkms-milter and mailkms-proxy for integration tests
# and benchmarks, sourced by their scripts. They run from the current
# directory's mailkms.conf, with their sockets and logs beside it; the
# caller sets $keystored, $ctl, $milter and $proxy to the binaries.
#
#   start_keystore [sealed]  starts keystored; waits until it is unsealed
#                    (key file), or with "sealed", until it answers sealed
#   start_milter     starts the milter; waits for its socket
#   stop_milter      stops it (libmilter takes a few seconds after SIGTERM)
#   start_proxy PORT starts the proxy, which mailkms.conf has listen on
#                    127.0.0.1:PORT; waits until it listens
#   stop_proxy       stops it
#   stop_keystore    stops keystored (SIGTERM: it finishes what is in flight)
#   kill_keystore, kill_milter   kill -9, as a crash would, and reap it
#   stop_daemons     stops both

keystore_pid=
milter_pid=
proxy_pid=

# Waits are counted in seconds, not tries: under a sanitizer, on a busy
# machine, a daemon can take a while to start.
start_keystore() {
  local state=${1:-unsealed}
  "$keystored" --config mailkms.conf > /dev/null 2>> keystore.log &
  keystore_pid=$!
  local end=$((SECONDS + 30))
  until [ -S keystore.sock ] && "$ctl" status 2> /dev/null | grep -qx "$state"; do
    [ "$SECONDS" -lt "$end" ] && kill -0 "$keystore_pid" 2> /dev/null || return 1
    sleep 0.05
  done
}

# The milter renames its socket into place once it listens: wait for one that
# is not a socket an earlier run left behind.
start_milter() {
  local stale
  stale=$(stat -c %i milter.sock 2> /dev/null)
  "$milter" --config mailkms.conf --foreground > /dev/null 2>> milter.log &
  milter_pid=$!
  local end=$((SECONDS + 30))
  until [ -S milter.sock ] && [ "$(stat -c %i milter.sock 2> /dev/null)" != "$stale" ]; do
    [ "$SECONDS" -lt "$end" ] && kill -0 "$milter_pid" 2> /dev/null || return 1
    sleep 0.05
  done
}

# libmilter looks for SIGTERM between polls of its socket: give it time,
# then make sure.
stop_milter() {
  if [ -n "$milter_pid" ] && kill "$milter_pid" 2> /dev/null; then
    local end=$((SECONDS + 30))
    while kill -0 "$milter_pid" 2> /dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    if kill -0 "$milter_pid" 2> /dev/null; then
      echo "the milter did not stop on SIGTERM within 30 s; killed" >&2
      kill -KILL "$milter_pid" 2> /dev/null
    fi
    wait "$milter_pid" 2> /dev/null || true
  fi
  milter_pid=
}

# A daemon killed with -9 leaves its socket behind; the start functions
# above do not mistake it for a new one.
kill_keystore() {
  [ -n "$keystore_pid" ] && kill -KILL "$keystore_pid" 2> /dev/null && wait "$keystore_pid" 2> /dev/null
  keystore_pid=
}

kill_milter() {
  [ -n "$milter_pid" ] && kill -KILL "$milter_pid" 2> /dev/null && wait "$milter_pid" 2> /dev/null
  milter_pid=
}

stop_keystore() {
  if [ -n "$keystore_pid" ] && kill "$keystore_pid" 2> /dev/null; then wait "$keystore_pid" 2> /dev/null || true; fi
  keystore_pid=
}

start_proxy() {
  local port=$1
  "$proxy" --config mailkms.conf --foreground > /dev/null 2>> proxy.log &
  proxy_pid=$!
  local end=$((SECONDS + 30))
  until ss -Hltn "sport = :$port" | grep -q .; do
    [ "$SECONDS" -lt "$end" ] && kill -0 "$proxy_pid" 2> /dev/null || return 1
    sleep 0.05
  done
}

stop_proxy() {
  if [ -n "$proxy_pid" ] && kill "$proxy_pid" 2> /dev/null; then wait "$proxy_pid" 2> /dev/null || true; fi
  proxy_pid=
}

stop_daemons() {
  stop_proxy
  stop_milter
  stop_keystore
}
