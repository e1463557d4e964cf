#!/usr/bin/env bash
# Runs one fuzz target with libFuzzer for a while, on a copy of its corpus
# (fuzz/corpus/TARGET and the seeds made from the test PKI), and says what
# it did: executions, coverage, findings. Builds build/fuzz with clang
# first if needed.
#   ./scripts/fuzz.sh list
#   ./scripts/fuzz.sh TARGET MINUTES
# New inputs that reach new code stay in build/fuzz/run/TARGET/corpus; an
# input that crashes, leaks or times out is written to
# build/fuzz/run/TARGET/findings/, and the script exits 1. Copy a finding
# into fuzz/corpus/TARGET/ so the test suite replays it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build/fuzz

# Each target's largest input: enough for the shapes it parses.
declare -A max_len=(
  [smime_inbound]=65536 [signed_differential]=65536 [der_reader]=16384 [policy_file]=16384
  [mailkms_conf]=16384 [keystore_request]=65536 [enrollment_reply]=65536 [pkcs10_request]=16384
  [addresses]=16384 [smtp_session]=65536)

usage() {
  echo "usage: $0 list | TARGET MINUTES" >&2
  exit 2
}

if [ "${1:-}" = list ]; then
  printf '%s\n' "${!max_len[@]}" | sort
  exit 0
fi
[ $# -eq 2 ] || usage
target=$1
minutes=$2
[ -n "${max_len[$target]:-}" ] || { echo "no fuzz target \"$target\"; $0 list names them" >&2; exit 2; }
[[ $minutes =~ ^[0-9]+$ ]] && [ "$minutes" -gt 0 ] || usage

# libFuzzer comes with clang's runtime libraries, packaged apart on Debian.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/probe.cpp"
if ! command -v clang++ >/dev/null; then
  echo "$0: clang++ is missing: install Debian's clang and libclang-rt-14-dev (scripts/install-deps.sh does)" >&2
  exit 1
fi
if ! clang++ -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" 2>"$probe/err"; then
  echo "$0: clang++ cannot link libFuzzer: install Debian's libclang-rt-14-dev (scripts/install-deps.sh does)" >&2
  cat "$probe/err" >&2
  exit 1
fi

if [ ! -f "$build/build.ninja" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -G Ninja -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" \
    -DMAILKMS_FUZZ=ON -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=OFF >/dev/null
fi
cmake --build "$build" --target "fuzz_$target" mailkms_fuzz_seeds

run=$build/run/$target
mkdir -p "$run/corpus" "$run/findings"
cp -n "$here/fuzz/corpus/$target/"* "$build/fuzz/seeds/$target/"* "$run/corpus/" 2>/dev/null || true
log=$run/fuzz.log
echo "fuzzing $target for $minutes minute(s); log in $log"
cd "$run"
status=0
MAILKMS_TEST_PKI=$build/fuzz/pki "$build/fuzz/fuzz_$target" corpus \
  -max_len="${max_len[$target]}" -max_total_time=$((minutes * 60)) -timeout=10 -rss_limit_mb=2048 \
  -malloc_limit_mb=512 -artifact_prefix=findings/ -print_final_stats=1 >"$log" 2>&1 || status=$?

last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
findings=$(find findings -type f | wc -l)
echo "target:     $target"
echo "executions: ${executions:-unknown}"
echo "coverage:   $(grep -oE 'cov: [0-9]+' <<<"$last" | tail -1) edges, $(grep -oE 'ft: [0-9]+' <<<"$last" | tail -1) features, corpus $(find corpus -type f | wc -l) inputs"
echo "findings:   $findings"
if [ "$findings" -gt 0 ] || [ "$status" -ne 0 ]; then
  find findings -type f | sed 's/^/  /'
  grep -E '^==[0-9]+==ERROR|^SUMMARY|fuzz target:|ALARM|out-of-memory' "$log" | head -20 | sed 's/^/  /'
  exit 1
fi
