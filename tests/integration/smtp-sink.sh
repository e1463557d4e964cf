# The next hop of integration tests: Postfix's smtp-sink on loopback, which
# writes each message it takes into a file of its own. Sourced by the MTA
# fixtures and the proxy's tests; needs root (smtp-sink drops to postfix).
#
#   free_port            prints a free loopback port below the ephemeral
#                        range, where outgoing connections cannot take it
#                        between this check and the bind
#   sink_start DIR [PORT]  starts smtp-sink on 127.0.0.1:PORT (a free port
#                        if none; again on the same one after sink_stop),
#                        its messages in DIR, its log in DIR.log; sets
#                        SINK_DIR, SINK_PORT, SINK_PID; waits until it listens
#   sink_files           the messages the sink has finished writing
#   sink_wait_for N [LOG]  waits (60 s at most) until N messages are there;
#                        if they never come, says so and shows LOG (the MTA's)
#   sink_stop

SINK_PID=

free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

sink_start() {
  SINK_DIR=$1
  SINK_PORT=${2:-${SINK_PORT:-}}
  [ -n "$SINK_PORT" ] || SINK_PORT=$(free_port) || return 1
  mkdir -p "$SINK_DIR" && chown postfix "$SINK_DIR" || return 1
  smtp-sink -u postfix -d "$SINK_DIR/%Y%m%d%H%M%S." -c "127.0.0.1:$SINK_PORT" 50 >> "$SINK_DIR.log" 2>&1 &
  SINK_PID=$!
  local end=$((SECONDS + 30))
  until ss -Hltn "sport = :$SINK_PORT" | grep -q .; do
    kill -0 "$SINK_PID" 2> /dev/null && [ "$SECONDS" -lt "$end" ] || {
      echo "smtp-sink did not listen on 127.0.0.1:$SINK_PORT; its log:" >&2
      sed 's/^/  /' "$SINK_DIR.log" >&2
      return 1
    }
    sleep 0.05
  done
}

# The sink creates a message's file at MAIL FROM and writes it as the data
# comes: a file counts once the sink no longer holds it open.
sink_files() {
  local open f
  open=$(ls -l "/proc/$SINK_PID/fd" 2> /dev/null | grep -o "$SINK_DIR/[^ ]*")
  for f in "$SINK_DIR"/*; do
    [ -f "$f" ] || continue
    grep -qxF -- "$f" <<< "$open" || echo "$f"
  done
}

sink_wait_for() {
  local want=$1 log=${2:-}
  local end=$((SECONDS + 60))
  until [ "$(sink_files | wc -l)" -ge "$want" ]; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "smtp-sink: $want message(s) expected, $(sink_files | wc -l) came${log:+; $log follows}" >&2
      [ -z "$log" ] || cat "$log" >&2 2> /dev/null
      return 1
    fi
    sleep 0.1
  done
}

sink_stop() {
  if [ -n "$SINK_PID" ] && kill "$SINK_PID" 2> /dev/null; then wait "$SINK_PID" 2> /dev/null || true; fi
  SINK_PID=
}
