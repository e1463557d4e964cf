#!/usr/bin/env bash
# Builds the benchmarks in Release and runs them: each prints its table next
# to a baseline measured in the same run. Pass --quick for a short run (the
# milter's, which needs root and takes about two minutes, is then left out).
#   ./scripts/bench.sh milter [--messages N] [--rounds N]   the milter's alone
#   ./scripts/bench.sh proxy [--messages N] [--with-milter]  the proxy's alone (root)
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
