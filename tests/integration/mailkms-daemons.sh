# mailkms-keystored, mailkms-milter and mailkms-proxy for integration tests
# and benchmarks, sourced by their scripts: the one way tests start them.
# They run from the current directory's mailkms.conf (or $keystore_config,
# $milter_config), their logs beside it in keystore.log, milter.log and
# proxy.log (or $keystore_log, $milter_log); the caller sets $keystored,
# $ctl, $milter and $proxy to the binaries. A start that does not become
# ready within 30 s fails, saying which daemon and showing the end of its
# log.
#
#   start_keystore [sealed]  starts keystored; waits until `mailkmsctl
#                    status` answers unsealed (key file), or with "sealed",
#                    sealed
#   start_milter     starts the milter; waits until its socket (unix or
#                    inet, from the config) takes connections
#   reload_milter    SIGHUP; waits until the milter logged the reload
#   reload_keystore  SIGHUP; waits until keystored logged the reload
#   stop_milter [SECONDS]  stops it (libmilter takes a few seconds after
#                    SIGTERM); after SECONDS (30) kills it and returns 1
#   start_proxy PORT starts the proxy ($proxy), which mailkms.conf has
#                    listen on 127.0.0.1:PORT; waits until it listens
#   stop_proxy       stops it
#   start_corp_keystore USER…  a new keystore from mailkms.conf, whose
#                    unseal_key_file must be master.key here: administrator
#                    "admin" (password in admin.pw), started, logged in, a
#                    root and an issuing CA ("Corp"), USER… added; p12.pw
#                    holds a password for PKCS#12 files. Says why it fails.
#   stop_keystore    stops keystored (SIGTERM: it finishes what is in flight)
#   kill_keystore, kill_milter   kill -9, as a crash would, and reap it
#   stop_daemons     stops both

keystore_pid=
milter_pid=
proxy_pid=

# Waits are counted in seconds, not tries: under a sanitizer, on a busy
# machine, a daemon can take a while to start.
start_keystore() {
  local state=${1:-unsealed} log=${keystore_log:-keystore.log}
  "$keystored" --config "${keystore_config:-mailkms.conf}" > /dev/null 2>> "$log" &
  keystore_pid=$!
  local end=$((SECONDS + 30))
  until "$ctl" status 2> /dev/null | grep -qx "$state"; do
    kill -0 "$keystore_pid" 2> /dev/null || { not_ready keystored "exited" "$log"; return 1; }
    [ "$SECONDS" -lt "$end" ] || { not_ready keystored "did not answer status \"$state\" within 30 s" "$log"; return 1; }
    sleep 0.05
  done
}

start_corp_keystore() {
  head -c 24 /dev/urandom | base64 > admin.pw
  head -c 24 /dev/urandom | base64 > p12.pw
  chmod 600 admin.pw p12.pw
  "$ctl" init --admin admin --admin-password-file admin.pw --key-file master.key > /dev/null &&
    start_keystore &&
    "$ctl" login admin --password-file admin.pw > /dev/null &&
    "$ctl" ca init --id root --name "Corp Root CA" > /dev/null &&
    "$ctl" ca add-subordinate --id issuing --parent root --name "Corp Issuing CA" > /dev/null &&
    "$ctl" user add "$@" > /dev/null
}

# not_ready DAEMON WHY LOG: says on stderr why a start failed, with the
# end of the daemon's log.
not_ready() {
  echo "$1 $2; the end of $3:" >&2
  tail -n 20 "$3" 2> /dev/null | sed 's/^/  /' >&2
}

# The milter renames its unix socket into place once it listens: wait for
# one that is not a socket an earlier run left behind. An inet socket takes
# connections once it is listening.
start_milter() {
  local config=${milter_config:-mailkms.conf} log=${milter_log:-milter.log}
  local socket path= port= stale=
  socket=$(awk -F'"' '/^\[/ { table = $0 } table == "[milter]" && /^socket *=/ { print $2 }' "$config")
  case $socket in
    inet:*) port=${socket#inet:}; port=${port%@*} ;;
    *) path=${socket#unix:}; path=${path#local:}; path=${path:-milter.sock} ;;
  esac
  [ -z "$path" ] || stale=$(stat -c %i "$path" 2> /dev/null)
  "$milter" --config "$config" --foreground > /dev/null 2>> "$log" &
  milter_pid=$!
  local end=$((SECONDS + 30))
  until if [ -n "$port" ]; then ss -Hltn "sport = :$port" | grep -q .
        else [ -S "$path" ] && [ "$(stat -c %i "$path" 2> /dev/null)" != "$stale" ]; fi; do
    kill -0 "$milter_pid" 2> /dev/null || { not_ready mailkms-milter "exited" "$log"; return 1; }
    [ "$SECONDS" -lt "$end" ] || { not_ready mailkms-milter "did not listen on ${socket:-milter.sock} within 30 s" "$log"; return 1; }
    sleep 0.05
  done
}

# Every reload logs whether the policy was taken or refused; the caches
# are forgotten either way.
reload_milter() {
  local log=${milter_log:-milter.log} before
  before=$(grep -cE 'policy (reloaded|reload refused)' "$log")
  kill -HUP "$milter_pid" || return 1
  local end=$((SECONDS + 30))
  until [ "$(grep -cE 'policy (reloaded|reload refused)' "$log")" -gt "$before" ]; do
    [ "$SECONDS" -lt "$end" ] || { not_ready mailkms-milter "did not log a reload within 30 s" "$log"; return 1; }
    sleep 0.05
  done
}

reload_keystore() {
  local log=${keystore_log:-keystore.log} before
  before=$(grep -cE 'configuration reloaded|reload refused' "$log")
  kill -HUP "$keystore_pid" || return 1
  local end=$((SECONDS + 30))
  until [ "$(grep -cE 'configuration reloaded|reload refused' "$log")" -gt "$before" ]; do
    [ "$SECONDS" -lt "$end" ] || { not_ready keystored "did not log a reload within 30 s" "$log"; return 1; }
    sleep 0.05
  done
}

# libmilter looks for SIGTERM between polls of its socket: give it time,
# then make sure.
stop_milter() {
  local limit=${1:-30} stopped=0
  if [ -n "$milter_pid" ] && kill "$milter_pid" 2> /dev/null; then
    local end=$((SECONDS + limit))
    while kill -0 "$milter_pid" 2> /dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    if kill -0 "$milter_pid" 2> /dev/null; then
      echo "the milter did not stop on SIGTERM within $limit s; killed" >&2
      kill -KILL "$milter_pid" 2> /dev/null
      stopped=1
    fi
    wait "$milter_pid" 2> /dev/null || true
  fi
  milter_pid=
  return "$stopped"
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
    if [ "$SECONDS" -ge "$end" ] || ! kill -0 "$proxy_pid" 2> /dev/null; then
      not_ready mailkms-proxy "did not listen on 127.0.0.1:$port within 30 s, or exited" proxy.log
      return 1
    fi
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
