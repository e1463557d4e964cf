#!/usr/bin/env bash
# mailkms-milter's throughput in a private Postfix on loopback, against its
# baselines in the same run: Postfix alone and Postfix + OpenDKIM (RSA-2048
# signing). smtp-source sends to Postfix, which relays to an smtp-sink; a
# run is timed from the first connection until the sink has every message
# and Postfix's queue is empty.
#
# Usage (as root): bench/milter/milter_bench.sh [--messages N] [--rounds N]
#   [--sessions N] [--size BYTES] [--build-dir DIR] [--no-build] [--keep] [--quick]
#   [--only ID,ID…]  (postfix dkim-unix dkim-inet pass-unix sign-unix sign-inet both-unix both-inet)
#   [--baseline REV]  also sign-unix and both-unix with mailkms-keystored and
#                     mailkmsctl built from git revision REV (the same milter):
#                     what the keystore's changes since REV cost the mail path
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

messages=2000
sessions=10
size=10240
rounds=1
build_dir=$root/build/bench
build=1
keep=
only=
baseline=
while [ $# -gt 0 ]; do
  case $1 in
    --messages) messages=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --build-dir) build_dir=$(realpath "$2"); shift 2 ;;
    --no-build) build=; shift ;;
    --keep) keep=1; shift ;;  # keep the work directory, for a look at the logs
    --rounds) rounds=$2; shift 2 ;;  # the table keeps each set-up's fastest round
    --quick) messages=500; shift ;;
    --only) only=",$2,"; shift 2 ;;  # some set-ups only; their targets say n/a
    --baseline) baseline=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "milter_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
warmup=$((messages / 20 > 20 ? messages / 20 : 20))

die() { echo "milter_bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (a private Postfix, OpenDKIM under its own user)"

# ---- Prerequisites -----------------------------------------------------------
for c in postfix postconf postqueue smtp-source smtp-sink ss cmake ninja; do
  command -v "$c" > /dev/null || die "$c is missing: run scripts/install-deps.sh"
done
missing=()
for p in opendkim opendkim-tools; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null ||
    die "cannot install ${missing[*]}"
fi
id opendkim > /dev/null 2>&1 || die "no opendkim user"

if [ -n "$build" ]; then
  cmake -G Ninja -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=ON > /dev/null ||
    die "cmake failed"
  cmake --build "$build_dir" --target mailkms-milter mailkms-keystored mailkmsctl || die "build failed"
fi
milter=$build_dir/milter/mailkms-milter
keystored=$build_dir/keystore/daemon/mailkms-keystored
ctl=$build_dir/cli/mailkmsctl
for b in "$milter" "$keystored" "$ctl"; do [ -x "$b" ] || die "$b is not built"; done
# The baseline's keystore: REV's sources, exported (no work tree of ours is
# touched), built in Release beside ours.
if [ -n "$baseline" ]; then
  base_rev=$(git -C "$root" rev-parse --short "$baseline^{commit}") || die "no revision $baseline"
  base_src=$build_dir-baseline-src/$base_rev
  base_build=$build_dir-baseline/$base_rev
  if [ ! -f "$base_src/CMakeLists.txt" ]; then
    mkdir -p "$base_src" && git -C "$root" archive "$base_rev" | tar -x -C "$base_src" || die "cannot export $base_rev"
  fi
  cmake -G Ninja -S "$base_src" -B "$base_build" -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF > /dev/null &&
    cmake --build "$base_build" --target mailkms-keystored mailkmsctl || die "the baseline $base_rev does not build"
  base_keystored=$base_build/keystore/daemon/mailkms-keystored
  base_ctl=$base_build/cli/mailkmsctl
fi

# ---- State and clean-up ----------------------------------------------------------
# Under /var/lib: OpenDKIM refuses keys under world-writable directories.
work=$(mktemp -d /var/lib/mailkms-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$work"
pids=()  # every daemon started here
postfix_conf=
source_pid=
cleanup() {
  trap - EXIT INT TERM
  [ -n "$source_pid" ] && kill "$source_pid" 2> /dev/null
  [ -n "$postfix_conf" ] && postfix -c "$postfix_conf" stop > /dev/null 2>&1
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  # libmilter notices SIGTERM only at its next poll timeout (~5 s).
  for _ in $(seq 150); do
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

# Listening ports below the ephemeral range, which Postfix's and
# smtp-source's own connections keep cycling through.
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
postfix_port='' sink_port='' probe_port='' milter_port='' dkim_port=''
for p in postfix_port sink_port probe_port milter_port dkim_port; do free_port "$p" || die "no free port"; done

# ---- The keystore: a CA, and alice, bob and probe of corp.example ------------------
mailkms_conf() {  # mailkms_conf SOCKET NAME [KEYSTORE_DIR]
  local ks=${3:-$work}
  cat <<CONF
[keystore]
database = "$ks/keystore.db"
socket = "$ks/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$ks/master.key"
gateway_users = ["root"]
lock_memory = false

[gateway]
policy = "$work/policy.toml"
authserv_id = "mx.corp.example"
spool_directory = "$work"

[milter]
socket = "$1"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter-$2.pid"
CONF
}
mailkms_conf "unix:$work/milter.sock" unix > mailkms-unix.conf
mailkms_conf "inet:$milter_port@127.0.0.1" inet > mailkms-inet.conf
head -c 24 /dev/urandom | base64 > admin.pw
chmod 600 admin.pw
# start_keystore KEYSTORED CTL CONF: a new keystore (database, CA, users) in
# the directory of CONF's database; sets keystore_pid.
start_keystore() {
  local daemon=$1 tool=$2 conf=$3 dir
  dir=$(sed -n 's/^database = "\(.*\)\/keystore.db"$/\1/p' "$conf")
  (
    export MAILKMS_CONFIG=$conf MAILKMS_SESSION_FILE=$dir/session
    cd "$dir" || exit 1
    "$tool" init --admin admin --admin-password-file "$work/admin.pw" --key-file master.key > /dev/null || exit 1
  ) || die "mailkmsctl init failed ($conf)"
  "$daemon" --config "$conf" 2>> "$dir/keystore.log" &
  keystore_pid=$!
  pids+=("$keystore_pid")
  keystore_up() { [ -S "$dir/keystore.sock" ] && MAILKMS_CONFIG=$conf "$tool" status 2> /dev/null | grep -qx unsealed; }
  wait_for 10 keystore_up || die "the keystore does not start: $(cat "$dir/keystore.log")"
  (
    export MAILKMS_CONFIG=$conf MAILKMS_SESSION_FILE=$dir/session
    "$tool" login admin --password-file "$work/admin.pw" &&
      "$tool" ca init --id root --name "Bench Root CA" &&
      "$tool" ca add-subordinate --id issuing --parent root --name "Bench Issuing CA" &&
      "$tool" user add alice@corp.example bob@corp.example probe@corp.example
  ) > /dev/null || die "keystore set-up failed ($conf)"
}
if [ -n "$baseline" ]; then
  mkdir -p "$work/base"
  mailkms_conf "unix:$work/milter-base.sock" base "$work/base" > mailkms-base.conf
  start_keystore "$base_keystored" "$base_ctl" "$work/mailkms-base.conf"
  base_keystore_pid=$keystore_pid
fi
start_keystore "$keystored" "$ctl" "$work/mailkms-unix.conf"

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
policy if-possible never

# ---- OpenDKIM: an RSA-2048 key, one instance per socket kind -----------------------
mkdir -p dkim/keys dkim/run
opendkim-genkey -b 2048 -d corp.example -s bench -D dkim/keys || die "opendkim-genkey failed"
chown -R opendkim:opendkim dkim/keys dkim/run
chmod 700 dkim/keys
chmod 600 dkim/keys/bench.private
chmod 755 dkim dkim/run
dkim_conf() {  # dkim_conf SOCKET
  cat <<CONF
Syslog no
Mode s
Domain corp.example
Selector bench
KeyFile $work/dkim/keys/bench.private
Socket $1
UserID opendkim
UMask 000
CONF
}
dkim_conf "local:$work/dkim/run/opendkim.sock" > dkim/unix.conf
dkim_conf "inet:$dkim_port@127.0.0.1" > dkim/inet.conf

# ---- Postfix, relaying to a counting sink ----------------------------------------------
# The sink counts with -c and keeps nothing. Mail from probe@corp.example
# goes to a second sink that keeps it, to check what each set-up did.
mkdir -p postfix/conf postfix/queue postfix/data probes
chown postfix postfix/data probes
postfix_conf=$work/postfix/conf
cat > "$postfix_conf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $work/postfix/queue
data_directory = $work/postfix/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mailkms-bench.localdomain
mydomain = localdomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$sink_port
sender_dependent_relayhost_maps = inline:{ probe@corp.example=[127.0.0.1]:$probe_port }
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = $work/postfix/maillog
maillog_file_prefixes = $work
default_process_limit = 100
milter_protocol = 6
milter_default_action = tempfail
smtpd_milters =
CONF
# Debian's services, smtpd on our port, nothing chrooted.
awk -v port="127.0.0.1:$postfix_port" '
  /^#/ || /^[ \t]/ || NF < 8 { print; next }
  { if ($1 == "smtp" && $2 == "inet") $1 = port; $5 = "n"; print }
' /etc/postfix/master.cf > "$postfix_conf/master.cf"
smtp-sink -u postfix -c "127.0.0.1:$sink_port" 256 > sink.out 2>&1 &
pids+=($!)
smtp-sink -u postfix -d "$work/probes/%H%M%S." "127.0.0.1:$probe_port" 16 > probe-sink.log 2>&1 &
pids+=($!)
postfix -c "$postfix_conf" check && postfix -c "$postfix_conf" start > /dev/null 2>&1 || die "Postfix does not start"
wait_for 10 listening "$postfix_port" || die "Postfix does not listen"
wait_for 5 listening "$sink_port" && wait_for 5 listening "$probe_port" || die "smtp-sink does not listen"

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
  [ -n "$1" ] && stat=$(< "/proc/$1/stat") 2> /dev/null || { echo 0; return; }
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
queue_empty() { postqueue -c "$postfix_conf" -p 2> /dev/null | grep -q "Mail queue is empty"; }

# send COUNT: smtp-source from alice to bob, then waits until the sink has
# them all and the queue is empty. Nothing polls while smtp-source runs.
send() {
  local count=$1 want
  want=$(($(sunk) + count))
  timeout $((60 + count / 5)) smtp-source -4 -s "$sessions" -m "$count" -l "$size" \
    -f alice@corp.example -t bob@corp.example "127.0.0.1:$postfix_port" > source.log 2>&1 &
  source_pid=$!
  if ! wait "$source_pid"; then
    echo "smtp-source failed or timed out: $(tail -n 3 source.log)" >&2
    return 1
  fi
  drained() { [ "$(sunk)" -ge "$want" ] && queue_empty; }
  wait_for 60 drained || { echo "timed out: $(($(sunk) - want + count)) of $count at the sink" >&2; return 1; }
}

# probe KIND: one message from probe@corp.example to bob; says what arrived.
probe() {
  rm -f probes/*
  smtp-source -4 -m 1 -l "$size" -f probe@corp.example -t bob@corp.example "127.0.0.1:$postfix_port" > probe.log 2>&1 ||
    { echo "probe refused: $(tail -n 2 probe.log)"; return 1; }
  arrived() { compgen -G "$work/probes/*" > /dev/null; }
  wait_for 20 arrived || { echo "probe never arrived"; return 1; }
  sleep 0.1
  local f
  f=$(compgen -G "$work/probes/*" | head -n 1)
  local bytes
  bytes=$(wc -c < "$f")
  if grep -qi 'application/pkcs7-mime.*enveloped-data\|smime-type=enveloped-data' "$f"; then
    echo "signed and encrypted (S/MIME), $bytes bytes"
  elif grep -qi 'multipart/signed' "$f"; then
    echo "signed (S/MIME), $bytes bytes"
  elif grep -qi '^DKIM-Signature:' "$f"; then
    echo "signed (DKIM), $bytes bytes"
  else
    echo "unchanged, $bytes bytes"
  fi
}

use_milter() {  # use_milter SPEC  (empty: none)
  postconf -c "$postfix_conf" -e "smtpd_milters = $1" && postfix -c "$postfix_conf" reload > /dev/null 2>&1
  sleep 0.5
}

declare -A rate latency fcpu kcpu busy what
order=()
# measure ID LABEL EXPECTED FILTER_PID: one timed run; with --rounds, the
# table keeps each set-up's fastest.
measure() {  # measure ID LABEL EXPECTED FILTER_PID [KEYSTORE_PID]
  local id=$1 label=$2 expected=$3 filter_pid=$4 ks_pid=${5:-$keystore_pid}
  [ -z "$only" ] || [[ $only == *",$id,"* ]] || return 0
  [ -n "${what[$id]:-}" ] || order+=("$id")
  what[$id]=$label
  local seen
  seen=$(probe)
  printf '%-52s probe: %s\n' "$label" "$seen"
  case $seen in "$expected"*) ;; *) echo "  expected: $expected" >&2; rate[$id]=failed; return 1 ;; esac
  send "$warmup" || { rate[$id]=failed; return 1; }
  local f0 k0 m0 t0 f1 k1 m1 t1 r l f k b
  f0=$(ticks "$filter_pid"); k0=$(ticks "$ks_pid"); m0=$(machine); t0=$EPOCHREALTIME
  send "$messages" || { rate[$id]=failed; return 1; }
  t1=$EPOCHREALTIME; f1=$(ticks "$filter_pid"); k1=$(ticks "$ks_pid"); m1=$(machine)
  read -r r l f k b < <(
    awk -v t0="$t0" -v t1="$t1" -v n="$messages" -v s="$sessions" -v hz="$clk_tck" \
      -v f="$((f1 - f0))" -v k="$((k1 - k0))" -v m0="$m0" -v m1="$m1" -v fp="$filter_pid" 'BEGIN {
        e = t1 - t0; split(m0, a, " "); split(m1, b, " ")
        printf "%.0f %.1f %s %.3f %.0f\n", n / e, 1000 * e * s / n,
          fp == "" ? "-" : sprintf("%.3f", 1000 * f / hz / n), 1000 * k / hz / n,
          100 * (b[1] - a[1]) / (b[2] - a[2]) }')
  case $id in sign-* | both-*) ;; *) k=- ;; esac
  printf '%-52s %d messages in %.2f s: %d msg/s\n' "" "$messages" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$r"
  [ "${rate[$id]:-0}" = failed ] && return 0  # a failed round spoils the set-up
  if [ "$r" -gt "${rate[$id]:-0}" ]; then
    rate[$id]=$r latency[$id]=$l fcpu[$id]=$f kcpu[$id]=$k busy[$id]=$b
  fi
}

start_milter() {  # start_milter unix|inet: sets milter_pid
  "$milter" --config "mailkms-$1.conf" --foreground 2>> "milter-$1.log" &
  milter_pid=$!
  pids+=("$milter_pid")
  wait_for 10 grep -q "serving" "milter-$1.log" || die "the milter ($1) does not start: $(cat "milter-$1.log")"
}
start_dkim() {  # start_dkim unix|inet: sets dkim_pid
  opendkim -f -x "dkim/$1.conf" 2>> "dkim-$1.log" &
  dkim_pid=$!
  pids+=("$dkim_pid")
}
reloads=0
switch_policy() {  # switch_policy SIGN ENCRYPT: every milter reloads it
  policy "$1" "$2"
  reloads=$((reloads + 1))
  kill -HUP "$unix_pid" "$inet_pid" ${base_pid:+"$base_pid"}
  local kind
  for kind in unix inet ${base_pid:+base}; do
    reloaded() { [ "$(grep -c "policy reloaded" "milter-$kind.log")" -ge "$reloads" ]; }
    wait_for 10 reloaded || die "the milter ($kind) did not reload its policy"
  done
}

# Every filter starts now and idles until its turn.
start_dkim unix
dkim_unix_pid=$dkim_pid
wait_for 10 test -S dkim/run/opendkim.sock || die "OpenDKIM (unix) does not start: $(cat dkim-unix.log)"
start_dkim inet
dkim_inet_pid=$dkim_pid
wait_for 10 listening "$dkim_port" || die "OpenDKIM (inet) does not start: $(cat dkim-inet.log)"
start_milter unix
unix_pid=$milter_pid
start_milter inet
inet_pid=$milter_pid
base_pid=
if [ -n "$baseline" ]; then
  start_milter base
  base_pid=$milter_pid
fi
# measure_baseline ID LABEL EXPECTED: the same set-up, the milter talking
# to the baseline's keystore.
measure_baseline() {
  [ -n "$baseline" ] || return 0
  use_milter "unix:$work/milter-base.sock"
  measure "$1-base" "$2, keystore $base_rev" "$3" "$base_pid" "$base_keystore_pid"
}

echo "== mailkms-milter against Postfix alone and OpenDKIM: $messages messages of $size bytes, $sessions sessions"
echo "   ($warmup warm-up messages before each run; $(nproc) CPUs; $rounds round(s))"
m0=$(machine); sleep 1; m1=$(machine)
idle_busy=$(awk -v m0="$m0" -v m1="$m1" 'BEGIN { split(m0, a, " "); split(m1, b, " "); printf "%.0f", 100 * (b[1] - a[1]) / (b[2] - a[2]) }')
[ "$idle_busy" -gt 10 ] && echo "   note: the machine was ${idle_busy}% busy with other work before the first run"

for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "-- round $round"
  use_milter ""
  measure postfix "Postfix alone" "unchanged" ""
  use_milter "unix:$work/dkim/run/opendkim.sock"
  measure dkim-unix "Postfix + OpenDKIM, unix" "signed (DKIM)" "$dkim_unix_pid"
  use_milter "inet:127.0.0.1:$dkim_port"
  measure dkim-inet "Postfix + OpenDKIM, inet" "signed (DKIM)" "$dkim_inet_pid"
  # The floor under every mailkms set-up: the milter protocol, spooling
  # and the policy decision, with nothing to sign or encrypt.
  if [ -z "$only" ] || [[ $only == *,pass-unix,* ]]; then
    switch_policy never never
    use_milter "unix:$work/milter.sock"
    measure pass-unix "Postfix + mailkms pass-through, unix" "unchanged" "$unix_pid"
  fi
  switch_policy if-possible never
  use_milter "unix:$work/milter.sock"
  measure sign-unix "Postfix + mailkms sign, unix" "signed (S/MIME)" "$unix_pid"
  measure_baseline sign-unix "Postfix + mailkms sign, unix" "signed (S/MIME)"
  use_milter "inet:127.0.0.1:$milter_port"
  measure sign-inet "Postfix + mailkms sign, inet" "signed (S/MIME)" "$inet_pid"
  switch_policy if-possible if-possible
  use_milter "unix:$work/milter.sock"
  measure both-unix "Postfix + mailkms sign+encrypt, unix" "signed and encrypted (S/MIME)" "$unix_pid"
  measure_baseline both-unix "Postfix + mailkms sign+encrypt, unix" "signed and encrypted (S/MIME)"
  use_milter "inet:127.0.0.1:$milter_port"
  measure both-inet "Postfix + mailkms sign+encrypt, inet" "signed and encrypted (S/MIME)" "$inet_pid"
done
use_milter ""

# ---- The table, and the targets ------------------------------------------------------
echo
row() { printf '| %-52s | %7s | %11s | %13s | %14s | %7s |\n' "$@"; }
row "set-up" "msg/s" "latency ms" "filter CPU ms" "keystored ms" "busy"
echo "|------------------------------------------------------|--------:|------------:|--------------:|---------------:|--------:|"
for id in "${order[@]}"; do
  if [ "${rate[$id]}" = failed ]; then
    row "${what[$id]}" failed - - - -
  else
    row "${what[$id]}" "${rate[$id]}" "${latency[$id]}" "${fcpu[$id]}" "${kcpu[$id]}" "${busy[$id]}%"
  fi
done
echo "ms per message. latency: elapsed x sessions / messages; CPU: utime+stime from /proc/PID/stat"
echo "over the timed run (filter: the milter's own process; keystored: where mailkms signs); busy: all CPUs"

echo
echo "== targets"
target() {  # target TEXT AWK-CONDITION VALUES…
  local text=$1 cond=$2
  shift 2
  local v
  for v in "$@"; do [ "$v" = failed ] || [ -z "$v" ] && { printf '  %-64s n/a\n' "$text"; return; }; done
  if awk -v a="${1:-0}" -v b="${2:-0}" "BEGIN { exit !($cond) }"; then
    printf '  %-64s holds\n' "$text"
  else
    printf '  %-64s MISSED\n' "$text"
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'; }
r() { echo "${rate[$1]:-failed}"; }
target "sign+encrypt keeps >= 75% of Postfix alone (unix): $(ratio "$(r both-unix)" "$(r postfix)")" \
  "a >= 0.75 * b" "$(r both-unix)" "$(r postfix)"
target "sign-only >= 1.5x OpenDKIM's rate (unix): $(ratio "$(r sign-unix)" "$(r dkim-unix)")x" \
  "a >= 1.5 * b" "$(r sign-unix)" "$(r dkim-unix)"
target "milter CPU <= 0.8 ms per message, sign+encrypt (unix): ${fcpu[both-unix]:-?} ms" \
  "a <= 0.8" "${fcpu[both-unix]:-failed}"
target "milter CPU <= 0.8 ms per message, sign+encrypt (inet): ${fcpu[both-inet]:-?} ms" \
  "a <= 0.8" "${fcpu[both-inet]:-failed}"
target "inet within 10% of unix, sign-only: $(ratio "$(r sign-inet)" "$(r sign-unix)")" \
  "a >= 0.9 * b" "$(r sign-inet)" "$(r sign-unix)"
target "inet within 10% of unix, sign+encrypt: $(ratio "$(r both-inet)" "$(r both-unix)")" \
  "a >= 0.9 * b" "$(r both-inet)" "$(r both-unix)"
if [ -n "$baseline" ]; then
  target "sign, unix: >= 95% of the rate with keystore $base_rev: $(ratio "$(r sign-unix)" "$(r sign-unix-base)")" \
    "a >= 0.95 * b" "$(r sign-unix)" "$(r sign-unix-base)"
  target "sign+encrypt, unix: >= 95% of the rate with keystore $base_rev: $(ratio "$(r both-unix)" "$(r both-unix-base)")" \
    "a >= 0.95 * b" "$(r both-unix)" "$(r both-unix-base)"
fi
echo "  (keystored's CPU, where the signing happens, is reported apart: ${kcpu[both-unix]:-?} ms per message, sign+encrypt, unix)"

for id in "${order[@]}"; do [ "${rate[$id]}" = failed ] && exit 1; done
exit 0
