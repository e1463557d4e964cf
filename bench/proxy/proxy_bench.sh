#!/usr/bin/env bash
# mailkms-proxy's throughput, latency and CPU on loopback, against its
# baseline in the same run: smtp-source straight to an smtp-sink, then
# smtp-source → mailkms-proxy → the same sink with nothing to sign or
# encrypt (pass-through) and signing and encrypting (a real
# mailkms-keystored behind it), each at 1, 10 and 100 sessions; then the
# proxy's peak RSS with 100 sessions of one 10 MB message each.
#
# Usage (as root): bench/proxy/proxy_bench.sh [--messages N] [--quick]
#   [--build-dir DIR] [--no-build] [--keep] [--with-milter | --no-milter]
#   --messages N   10 KB messages per timed run (2000; --quick: 500)
#   --quick        500 messages, shorter latency samples, no milter run
#   --with-milter  run bench/milter/milter_bench.sh --only both-unix too,
#                  for the milter's CPU per message doing the same work
#                  (about a minute; on by default, off with --quick);
#                  --no-milter: not, and that target says n/a
#   --keep         keep the work directory, for a look at the logs
# shellcheck disable=SC2317  # functions called through trap and wait_for
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/proxy

messages=2000
size=10240
session_counts=(1 10 100)
sample=400         # latency: at most this many messages per set-up,
sample_seconds=6   # or this long
big_size=10485760  # the RSS run: one message this size per session
big_sessions=100
build_dir=$root/build/bench
build=1
keep=
with_milter=auto
while [ $# -gt 0 ]; do
  case $1 in
    --messages) messages=$2; shift 2 ;;
    --quick) messages=500 sample=150 sample_seconds=3 quick=1; shift ;;
    --build-dir) build_dir=$(realpath "$2"); shift 2 ;;
    --no-build) build=; shift ;;
    --keep) keep=1; shift ;;
    --with-milter) with_milter=1; shift ;;
    --no-milter) with_milter=; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "proxy_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$with_milter" = auto ]; then
  with_milter=1
  [ -n "${quick:-}" ] && with_milter=
fi

die() { echo "proxy_bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (smtp-sink drops to the postfix user)"
[[ $messages =~ ^[1-9][0-9]*$ ]] || die "--messages wants a positive number"

# ---- Prerequisites -----------------------------------------------------------
for c in smtp-source smtp-sink ss python3 cmake ninja; do
  command -v "$c" > /dev/null || die "$c is missing: run scripts/install-deps.sh"
done
id postfix > /dev/null 2>&1 || die "no postfix user (smtp-sink runs as it)"
if [ -n "$build" ]; then
  targets=(mailkms-proxy mailkms-keystored mailkmsctl)
  [ -n "$with_milter" ] && targets+=(mailkms-milter)
  cmake -G Ninja -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=ON > /dev/null ||
    die "cmake failed"
  cmake --build "$build_dir" --target "${targets[@]}" || die "build failed"
fi
proxy=$build_dir/smtp-proxy/mailkms-proxy
keystored=$build_dir/keystore/daemon/mailkms-keystored
ctl=$build_dir/cli/mailkmsctl
for b in "$proxy" "$keystored" "$ctl"; do [ -x "$b" ] || die "$b is not built"; done

# ---- State and clean-up ----------------------------------------------------------
work=$(mktemp -d /tmp/mailkms-proxy-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$work"
pids=()  # every daemon started here
load_pid=
watch_pid=
cleanup() {
  trap - EXIT INT TERM
  [ -n "$load_pid" ] && kill "$load_pid" 2> /dev/null
  [ -n "$watch_pid" ] && kill "$watch_pid" 2> /dev/null
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  for _ in $(seq 100); do
    local alive=
    for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null; done
  wait 2> /dev/null
  if [ -n "$keep" ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work" || exit 1

# Listening ports on 127.0.0.1 below the ephemeral range, which
# smtp-source's and the proxy's own connections keep cycling through.
read -r ephemeral _ < /proc/sys/net/ipv4/ip_local_port_range
free_port() {  # free_port VARIABLE
  local port
  for _ in $(seq 200); do
    port=$((10000 + RANDOM % (ephemeral - 10000)))
    case " ${used_ports:-} " in *" $port "*) continue ;; esac
    if ! (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
      used_ports="${used_ports:-} $port"
      printf -v "$1" %s "$port"
      return 0
    fi
  done
  return 1
}
listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_for() {  # wait_for SECONDS COMMAND…
  local tries=$(($1 * 20))
  shift
  for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.05; done
  return 1
}
proxy_port='' sink_port='' probe_port=''
for p in proxy_port sink_port probe_port; do free_port "$p" || die "no free port"; done

# ---- The keystore, as milter_bench.sh's: a CA, and alice and bob of corp.example ----
# proxy_conf NEXT_HOP_PORT: mailkms.conf, the proxy relaying there. The
# caps are raised past the 100 sessions (and the latency sampler's) of a run.
proxy_conf() {
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
spool_directory = "$work/spool"

[proxy]
listen = "127.0.0.1:$proxy_port"
next_hop = "127.0.0.1:$1"
hostname = "proxy.corp.example"
threads = 0
max_sessions = 1000
max_sessions_per_client = 1000
CONF
}
proxy_conf "$sink_port"
mkdir -p spool
head -c 24 /dev/urandom | base64 > admin.pw
chmod 600 admin.pw
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/session
"$ctl" init --admin admin --admin-password-file admin.pw --key-file master.key > /dev/null || die "mailkmsctl init failed"
"$keystored" --config mailkms.conf 2>> keystore.log &
keystore_pid=$!
pids+=("$keystore_pid")
keystore_up() { [ -S keystore.sock ] && "$ctl" status 2> /dev/null | grep -qx unsealed; }
wait_for 10 keystore_up || die "the keystore does not start: $(cat keystore.log)"
{
  "$ctl" login admin --password-file admin.pw &&
    "$ctl" ca init --id root --name "Bench Root CA" &&
    "$ctl" ca add-subordinate --id issuing --parent root --name "Bench Issuing CA" &&
    "$ctl" user add alice@corp.example bob@corp.example
} > /dev/null || die "keystore set-up failed"

policy() {  # policy SIGN ENCRYPT
  cat > policy.toml <<POLICY
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]

[defaults]
sign = "$1"
encrypt = "$2"
decrypt = true
POLICY
}
policy never never

# ---- The sinks and the proxy -------------------------------------------------------
# The sink counts with -c and keeps nothing; the probe sink keeps what it
# takes, to check what the proxy did.
mkdir -p probes
chown postfix probes
smtp-sink -u postfix -c "127.0.0.1:$sink_port" 1024 > sink.out 2>&1 &
sink_pid=$!
pids+=("$sink_pid")
smtp-sink -u postfix -d "$work/probes/%H%M%S." "127.0.0.1:$probe_port" 16 > probe-sink.log 2>&1 &
probe_sink_pid=$!
pids+=("$probe_sink_pid")
for p in "$sink_port" "$probe_port"; do wait_for 5 listening "$p" || die "smtp-sink does not listen on $p"; done
"$proxy" --config mailkms.conf --foreground > /dev/null 2>> proxy.log &
proxy_pid=$!
pids+=("$proxy_pid")
wait_for 30 listening "$proxy_port" || die "the proxy does not listen: $(tail -n 20 proxy.log)"

# reload_proxy: SIGHUP; the policy and [proxy] again. Dies when refused.
reloads=0
reload_proxy() {
  reloads=$((reloads + 1))
  kill -HUP "$proxy_pid" || die "the proxy is gone"
  reloaded() { [ "$(grep -c "proxy settings reloaded" proxy.log)" -ge "$reloads" ]; }
  wait_for 10 reloaded || die "the proxy did not reload: $(grep -i "refused" proxy.log | tail -n 2)"
  grep -q "reload refused" proxy.log && die "a reload was refused: $(grep "reload refused" proxy.log | tail -n 1)"
}

# ---- Measuring ------------------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
sunk() {  # messages the sink has counted so far
  local tail
  tail=$(tail -c 64 sink.out 2> /dev/null)
  tail=${tail##*mesg=}
  tail=${tail%%[!0-9]*}
  echo "${tail:-0}"
}
ticks() {  # utime+stime of a process, all its threads
  local stat
  stat=$(< "/proc/$1/stat") 2> /dev/null || { echo 0; return; }
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $((${12} + ${13}))
}
machine() {  # busy and total jiffies, all CPUs
  local _ user nice system idle iowait irq softirq steal
  read -r _ user nice system idle iowait irq softirq steal _ < /proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }  # status_kb PID VmRSS|VmHWM
# quiet: no session open at the proxy, nor at the sinks but those the
# proxy keeps for its next messages (next_hop_idle_seconds): a killed
# load's last messages have gone wherever they go. The proxy relays only
# inside a client's session, so with none left nothing is in flight.
quiet() {
  ss -Htn state established "( sport = :$proxy_port )" | grep -q . && return 1
  local p kept
  for p in "$sink_port" "$probe_port"; do
    kept=$(ss -Htnp state established "( dport = :$p )" | grep -c '"mailkms-proxy"')
    [ "$(ss -Htn state established "( sport = :$p )" | wc -l)" -gt "$kept" ] && return 1
  done
  return 0
}
settle() { wait_for 60 quiet || die "sessions still open a minute after the load stopped"; }

# send SESSIONS COUNT PORT [SIZE]: smtp-source from alice to bob, one
# message a connection, as milter_bench.sh sends. Nothing polls meanwhile.
send() {
  timeout $((120 + $2 / 5)) smtp-source -4 -s "$1" -m "$2" -l "${4:-$size}" \
    -f alice@corp.example -t bob@corp.example "127.0.0.1:$3" > source.log 2>&1 &
  load_pid=$!
  wait "$load_pid"
  local rc=$?
  load_pid=
  [ "$rc" = 0 ] && [ ! -s source.log ] && return 0
  die "smtp-source failed (exit $rc) sending $2 to port $3: $(tail -n 3 source.log)"
}
# arrived WANT: waits until the sink has counted WANT messages in all;
# then, nothing in flight, dies unless it counted exactly that.
counted() { [ "$(sunk)" -ge "$1" ]; }
arrived() {
  wait_for 60 counted "$1" || die "the sink counted $(sunk) messages, $1 expected"
  settle
  [ "$(sunk)" = "$1" ] || die "the sink counted $(sunk) messages, exactly $1 expected"
}

declare -A rate pcpu kcpu busy samples p50 p99
# timed ID SESSIONS PORT: a warm-up, then the timed run, from the first
# connection until the sink has counted every message (the proxy answers
# the end of data only once the sink has taken the message).
timed() {
  local id=$1 n=$2 port=$3 warm want
  warm=$((messages / 20 > n ? messages / 20 : n))
  want=$(($(sunk) + warm))
  send "$n" "$warm" "$port"
  arrived "$want"
  want=$((want + messages))
  local p0 k0 m0 t0 p1 k1 m1 t1
  p0=$(ticks "$proxy_pid"); k0=$(ticks "$keystore_pid"); m0=$(machine); t0=$EPOCHREALTIME
  send "$n" "$messages" "$port"
  wait_for 60 counted "$want" || die "the sink counted $(sunk) messages, $want expected"
  t1=$EPOCHREALTIME; p1=$(ticks "$proxy_pid"); k1=$(ticks "$keystore_pid"); m1=$(machine)
  arrived "$want"
  local r p k b
  read -r r p k b < <(
    awk -v t0="$t0" -v t1="$t1" -v n="$messages" -v hz="$clk_tck" -v p="$((p1 - p0))" -v k="$((k1 - k0))" \
      -v m0="$m0" -v m1="$m1" 'BEGIN { e = t1 - t0; split(m0, a, " "); split(m1, b, " ")
        printf "%.0f %.3f %.3f %.0f\n", n / e, 1000 * p / hz / n, 1000 * k / hz / n, 100 * (b[1] - a[1]) / (b[2] - a[2]) }')
  rate[$id,$n]=$r pcpu[$id,$n]=$p kcpu[$id,$n]=$k busy[$id,$n]=$b
  printf '  %-14s %3d session(s): %d messages in %.2f s, %d msg/s\n' "$id" "$n" "$messages" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$r"
}

# latency ID SESSIONS PORT: each message's time from connect to the reply
# to its end of data, with SESSIONS busy: a tenth of them (one at least)
# smtp_latency.py's, which times its messages, the rest smtp-source's.
latency() {
  local id=$1 n=$2 port=$3 mine rest out rc
  mine=$((n / 10 > 1 ? n / 10 : 1))
  rest=$((n - mine))
  if [ "$rest" -gt 0 ]; then
    smtp-source -4 -s "$rest" -m 100000000 -l "$size" -f alice@corp.example -t bob@corp.example \
      "127.0.0.1:$port" > load.log 2>&1 &
    load_pid=$!
    sleep 0.5
  fi
  out=$(python3 "$here/smtp_latency.py" "127.0.0.1:$port" --sessions "$mine" --count "$sample" \
    --seconds "$sample_seconds" --size "$size" 2> latency.err)
  rc=$?
  if [ -n "$load_pid" ]; then
    kill -0 "$load_pid" 2> /dev/null || die "the load beside the latency sample stopped early: $(tail -n 3 load.log)"
    kill "$load_pid"
    wait "$load_pid" 2> /dev/null
    load_pid=
  fi
  settle
  [ "$rc" = 0 ] || die "the latency sample ($id, $n sessions) failed: $(cat latency.err)"
  local s a b
  read -r s a b _ <<< "$out"
  samples[$id,$n]=$s p50[$id,$n]=$a p99[$id,$n]=$b
}

# probe plain|enveloped: one message through the proxy to the probe sink
# (next_hop there and back by SIGHUP); dies unless it arrived so.
probe() {
  rm -f probes/*
  proxy_conf "$probe_port"
  reload_proxy
  smtp-source -4 -m 1 -l "$size" -f alice@corp.example -t bob@corp.example "127.0.0.1:$proxy_port" > probe.log 2>&1 ||
    die "the probe was refused: $(tail -n 2 probe.log)"
  local file=
  closed() {  # a file the probe sink has finished (no longer holds open)
    file=$(compgen -G "$work/probes/*" | head -n 1) && [ -n "$file" ] || return 1
    local fd
    for fd in "/proc/$probe_sink_pid/fd"/*; do [ "$(readlink "$fd")" = "$file" ] && return 1; done
    return 0
  }
  wait_for 20 closed || die "the probe never arrived"
  proxy_conf "$sink_port"
  reload_proxy
  local bytes
  bytes=$(wc -c < "$file")
  case $1 in
    enveloped)
      if ! grep -qi '^Content-Type: application/pkcs7-mime' "$file" || ! grep -qi 'enveloped-data' "$file"; then
        die "the probe was not signed and encrypted ($bytes bytes, $(grep -i -m1 '^Content-Type' "$file"))"
      fi ;;
    plain)
      grep -qi 'pkcs7\|multipart/signed' "$file" && die "the pass-through probe came out S/MIME" ;;
  esac
  local type
  type=$(grep -i -m1 '^Content-Type:' "$file" | tr -d '\r')
  echo "  probe: $1 as expected, $bytes bytes (${type:-no Content-Type})"
}

# peak_rss: pass-through, BIG_SESSIONS sessions of one BIG_SIZE message
# each at once; the proxy's VmHWM, its high-water mark reset first. A
# watcher samples VmRSS and the sessions open at the proxy meanwhile.
peak_rss() {
  echo 5 > "/proc/$proxy_pid/clear_refs" || die "cannot reset the proxy's VmHWM"
  rss_idle=$(status_kb "$proxy_pid" VmRSS)
  local want t0
  want=$(($(sunk) + big_sessions))
  while :; do
    echo "$(status_kb "$proxy_pid" VmRSS) $(ss -Htn state established "( sport = :$proxy_port )" | wc -l)"
    sleep 0.05
  done > rss.log 2> /dev/null &
  watch_pid=$!
  t0=$EPOCHREALTIME
  send "$big_sessions" "$big_sessions" "$proxy_port" "$big_size"
  arrived "$want"
  kill "$watch_pid"
  wait "$watch_pid" 2> /dev/null
  watch_pid=
  rss_peak=$(status_kb "$proxy_pid" VmHWM)
  big_open=$(awk '$2 > s { s = $2 } END { print s + 0 }' rss.log)
  printf '  %d x %d MB: %.1f s, at most %d sessions open at once; VmRSS before %.1f MiB, VmHWM %.1f MiB\n' \
    "$big_sessions" $((big_size >> 20)) "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" \
    "$big_open" "$(kib_mib "$rss_idle")" "$(kib_mib "$rss_peak")"
}
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---- The runs --------------------------------------------------------------------------
echo "== mailkms-proxy against smtp-source straight to smtp-sink: $messages messages of $size bytes a run"
echo "   (sessions ${session_counts[*]}; a warm-up before each run; $(nproc) CPUs)"
# idle_check WHEN: over a second with nothing of ours at work, how busy
# the machine is with other work (our idle daemons' ticks aside); says so
# past 10%. (During the runs it cannot be told: loopback TCP's kernel work
# is not all charged to the processes that cause it.)
idle_check() {
  local m0 m1 o0 o1 p busy
  own() { local t=0; for p in "${pids[@]}"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
  m0=$(machine); o0=$(own); sleep 1; m1=$(machine); o1=$(own)
  busy=$(awk -v m0="$m0" -v m1="$m1" -v o=$((o1 - o0)) 'BEGIN { split(m0, a, " "); split(m1, b, " ")
    printf "%.0f", 100 * (b[1] - a[1] - o) / (b[2] - a[2]) }')
  [ "$busy" -gt 10 ] && echo "   note: the machine was ${busy}% busy with other work $1"
  other_work=$((${other_work:-0} > busy ? ${other_work:-0} : busy))
}
idle_check "before the first run"
setups=(direct pass both)
declare -A label=([direct]="smtp-sink alone (direct)" [pass]="proxy, pass-through" [both]="proxy, sign+encrypt")
# verdicts ID LOG_LINES SUNK: every message the sink took since then came
# through the proxy (one "=> relayed" line each) with ID's verdict.
verdicts() {
  local want=$(($(sunk) - $3)) pattern relayed others
  case $1 in
    pass) pattern='plain \(encrypt never\) => relayed: ' ;;
    both) pattern='sign [^ ]+ \+ encrypt [^ ]+ \(certificate found\) => relayed: ' ;;
  esac
  tail -n +$(($2 + 1)) proxy.log | grep ' => relayed: ' > relayed.log
  relayed=$(wc -l < relayed.log)
  others=$(grep -cvE -- "$pattern" relayed.log)
  [ "$relayed" = "$want" ] || die "${label[$1]}: the sink took $want messages, the proxy's log says $relayed relayed"
  [ "$others" = 0 ] || die "${label[$1]}: $others of $relayed relayed otherwise: $(grep -m1 -vE -- "$pattern" relayed.log)"
  echo "  the proxy's log: all $relayed messages relayed, each $(grep -m1 -oE -- "${pattern% => *}" relayed.log)"
}
run_setup() {  # run_setup ID: its probe, then each session count
  local id=$1 port=$proxy_port lines sunk0
  echo "-- ${label[$id]}"
  case $id in
    direct) port=$sink_port ;;
    pass) policy never never; reload_proxy; probe plain ;;
    both) policy if-possible if-possible; reload_proxy; probe enveloped ;;
  esac
  lines=$(wc -l < proxy.log)
  sunk0=$(sunk)
  for n in "${session_counts[@]}"; do
    timed "$id" "$n" "$port"
    latency "$id" "$n" "$port"
  done
  [ "$id" = direct ] || verdicts "$id" "$lines" "$sunk0"
}
for id in "${setups[@]}"; do run_setup "$id"; done
echo "-- peak RSS, proxy pass-through"
policy never never
reload_proxy
peak_rss
idle_check "after the last run"

milter_cpu=
if [ -n "$with_milter" ]; then
  echo "-- the milter, sign+encrypt: bench/milter/milter_bench.sh --only both-unix --messages $messages"
  "$root/bench/milter/milter_bench.sh" --no-build --build-dir "$build_dir" --only both-unix --messages "$messages" \
    > milter.log 2>&1 || die "milter_bench.sh failed: $(tail -n 5 milter.log)"
  milter_cpu=$(awk -F'|' '$2 ~ /sign\+encrypt, unix/ { gsub(/ /, "", $5); print $5 }' milter.log)
  [[ $milter_cpu =~ ^[0-9.]+$ ]] || die "no milter CPU in milter_bench.sh's table: $(tail -n 15 milter.log)"
  grep -E '^\| Postfix \+ mailkms sign\+encrypt' milter.log | sed 's/^/  /'
  grep 'note:' milter.log | sed 's/^ */  milter_bench.sh: /'
fi

# ---- The table, and the targets ------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
row() { printf '| %-24s | %8s | %6s | %9s | %6s | %15s | %12s | %12s | %4s |\n' "$@"; }
row "set-up" "sessions" "msg/s" "vs direct" "p50 ms" "p99 ms (n)" "proxy CPU ms" "keystored ms" "busy"
echo "|--------------------------|---------:|-------:|----------:|-------:|----------------:|-------------:|-------------:|-----:|"
for n in "${session_counts[@]}"; do
  for id in "${setups[@]}"; do
    if [ "$id" = direct ]; then
      row "${label[$id]}" "$n" "${rate[$id,$n]}" "1" "${p50[$id,$n]}" "${p99[$id,$n]} (${samples[$id,$n]})" - - "${busy[$id,$n]}%"
    else
      row "${label[$id]}" "$n" "${rate[$id,$n]}" "$(ratio "${rate[$id,$n]}" "${rate[direct,$n]}")" "${p50[$id,$n]}" \
        "${p99[$id,$n]} (${samples[$id,$n]})" "${pcpu[$id,$n]}" "${kcpu[$id,$n]}" "${busy[$id,$n]}%"
    fi
  done
done
spool_limit=1048576  # [gateway] spool_memory_limit, left at its default in mailkms.conf
bound_kb=$(((big_sessions * spool_limit >> 10) + rss_idle))
printf '| %-24s | %8s | %-74s |\n' "proxy, 100 x 10 MB" "$big_sessions" \
  "peak RSS (VmHWM) $(kib_mib "$rss_peak") MiB; before $(kib_mib "$rss_idle") MiB; bound $(kib_mib "$bound_kb") MiB"
echo "msg/s: from the first connection until the sink counted the last message. p50/p99: one message, connect"
echo "to the reply to its end of data, n of them sent by smtp_latency.py as a tenth of the sessions (one at"
echo "least) while smtp-source keeps the rest busy. CPU: utime+stime from /proc/PID/stat over the timed run,"
echo "ms per message (proxy: mailkms-proxy's own process; keystored: where it signs). busy: all CPUs."
echo "Bound: spool_memory_limit (1 MiB, the default) x $big_sessions sessions, over the RSS before the run."
[ "$other_work" -gt 10 ] && echo "WARNING: other work kept the machine up to ${other_work}% busy (before or after the runs): the numbers shared it."

echo
echo "== targets"
target() {  # target TEXT AWK-CONDITION A B: holds, MISSED, or n/a when a value is missing
  if [ -z "$3" ] || [ -z "$4" ]; then
    printf '  %-78s n/a\n' "$1"
  elif awk -v a="$3" -v b="$4" "BEGIN { exit !($2) }"; then
    printf '  %-78s holds\n' "$1"
  else
    printf '  %-78s MISSED\n' "$1"
  fi
}
for n in "${session_counts[@]}"; do
  target "pass-through >= 0.83x direct, $n session(s): $(ratio "${rate[pass,$n]}" "${rate[direct,$n]}")x" \
    "a >= 0.83 * b" "${rate[pass,$n]}" "${rate[direct,$n]}"
done
if [ -n "$milter_cpu" ]; then
  target "sign+encrypt proxy CPU <= 1.2x the milter's, 10 sessions: ${pcpu[both,10]} ms against $milter_cpu ms ($(ratio "${pcpu[both,10]}" "$milter_cpu")x)" \
    "a <= 1.2 * b" "${pcpu[both,10]}" "$milter_cpu"
else
  target "sign+encrypt proxy CPU <= 1.2x the milter's: ${pcpu[both,10]} ms; the milter's not measured (--no-milter or --quick)" \
    "a <= 1.2 * b" "${pcpu[both,10]}" ""
fi
target "peak RSS, $big_sessions x 10 MB pass-through, within spool_memory_limit x $big_sessions: $(kib_mib "$rss_peak") <= $(kib_mib "$bound_kb") MiB" \
  "a <= b" "$rss_peak" "$bound_kb"
exit 0
