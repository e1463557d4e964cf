# mailkms-keystored and mailkms-milter for integration tests and benchmarks,
# sourced by their scripts. Both run from the current directory's
# mailkms.conf, with their sockets and logs beside it; the caller sets
# $keystored, $ctl and $milter to the binaries.
#
#   start_keystore   starts keystored; waits until it is unsealed (key file)
#   start_milter     starts the milter; waits for its socket
#   stop_milter      stops it (libmilter takes a few seconds after SIGTERM)
#   stop_daemons     stops both

keystore_pid=
milter_pid=

start_keystore() {
  "$keystored" --config mailkms.conf > /dev/null 2>> keystore.log &
  keystore_pid=$!
  for _ in $(seq 100); do
    [ -S keystore.sock ] && "$ctl" status 2> /dev/null | grep -qx unsealed && return 0
    sleep 0.05
  done
  return 1
}

# The milter renames its socket into place once it listens: wait for one that
# is not a socket an earlier run left behind.
start_milter() {
  local stale
  stale=$(stat -c %i milter.sock 2> /dev/null)
  "$milter" --config mailkms.conf --foreground > /dev/null 2>> milter.log &
  milter_pid=$!
  for _ in $(seq 100); do
    [ -S milter.sock ] && [ "$(stat -c %i milter.sock 2> /dev/null)" != "$stale" ] && return 0
    sleep 0.05
  done
  return 1
}

stop_milter() {
  if [ -n "$milter_pid" ] && kill "$milter_pid" 2> /dev/null; then
    for _ in $(seq 100); do
      kill -0 "$milter_pid" 2> /dev/null || break
      sleep 0.1
    done
  fi
  milter_pid=
}

stop_daemons() {
  stop_milter
  if [ -n "$keystore_pid" ] && kill "$keystore_pid" 2> /dev/null; then wait "$keystore_pid" 2> /dev/null || true; fi
  keystore_pid=
}
