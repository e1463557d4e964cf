#!/usr/bin/env bash
# Builds the benchmarks in Release and runs them: each prints its table next
# to a baseline measured in the same run. Pass --quick for a short run (the
# milter's, which needs root and takes about two minutes, is then left out).
#   ./scripts/bench.sh milter [--messages N] [--rounds N]   the milter's alone
#   ./scripts/bench.sh proxy [--messages N] [--with-milter]  the proxy's alone (root)
#   ./scripts/bench.sh keystore [--backend sqlite|postgresql] [--quick]
#                                      the keystore's alone; with postgresql, on
#                                      SQLite and on a private PostgreSQL cluster
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [ "${1:-}" = milter ]; then
  shift
  exec ./bench/milter/milter_bench.sh "$@"
fi
if [ "${1:-}" = proxy ]; then
  shift
  exec ./bench/proxy/proxy_bench.sh "$@"
fi
if [ "${1:-}" = keystore ]; then
  shift
  backend=sqlite
  args=()
  while [ $# -gt 0 ]; do
    case $1 in
      --backend) backend=${2:?--backend takes sqlite or postgresql}; shift 2 ;;
      --quick) args+=(--quick); shift ;;
      *) echo "bench.sh keystore: unknown option $1 (--backend sqlite|postgresql, --quick)" >&2; exit 2 ;;
    esac
  done
  case $backend in
    sqlite | postgresql) ;;
    *) echo "bench.sh keystore: --backend is sqlite or postgresql, not $backend" >&2; exit 2 ;;
  esac
  cmake -G Ninja -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=ON >/dev/null
  cmake --build build/bench --target keystore_bench
  if [ "$backend" = postgresql ]; then
    # The tests' own private cluster (its settings: initdb --no-sync, fsync
    # and full_page_writes off), stopped and removed however the benchmark
    # ends.
    state=$(mktemp -d /tmp/mailkms-bench-pg.XXXXXX)
    trap 'bash tests/integration/postgresql.sh stop "$state"; rm -rf "$state"' EXIT
    bash tests/integration/postgresql.sh start "$state"
    args+=(--postgresql "$(cat "$state/conninfo")")
  fi
  echo "== the keystore"
  ./build/bench/bench/keystore_bench "${args[@]}"
  exit 0
fi
cmake -G Ninja -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=ON >/dev/null
cmake --build build/bench --target smime_bench keystore_bench
echo "== the S/MIME engine"
./build/bench/bench/smime_bench "$@"
echo
echo "== the keystore"
./build/bench/bench/keystore_bench "$@"
case " $* " in *" --quick "*) exit 0 ;; esac
echo
if [ "$(id -u)" -eq 0 ]; then
  ./bench/milter/milter_bench.sh
else
  echo "== the milter: skipped, it needs root (sudo ./scripts/bench.sh milter)"
fi
