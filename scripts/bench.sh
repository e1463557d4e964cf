#!/usr/bin/env bash
# Builds the benchmarks in Release and runs them: each prints its table next
# to a baseline measured in the same run. Pass --quick for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -G Ninja -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF -DMAILKMS_BENCH=ON >/dev/null
cmake --build build/bench --target smime_bench keystore_bench
echo "== the S/MIME engine"
./build/bench/bench/smime_bench "$@"
echo
echo "== the keystore"
./build/bench/bench/keystore_bench "$@"
