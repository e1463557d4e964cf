#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs the whole test suite: one build
# with warnings as errors and AddressSanitizer + UndefinedBehaviorSanitizer,
# the Debian package (Release), then every test through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

build=build/test
cmake -G Ninja -S . -B "$build" \
  -DCMAKE_BUILD_TYPE=Debug -DMAILKMS_WERROR=ON -DMAILKMS_SANITIZE=ON -DMAILKMS_BENCH=OFF
cmake --build "$build"
# The Debian package, in Release as administrators install it, lintian
# clean: the debian_package test installs and purges it.
./scripts/package.sh > /dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j 2 "$@"
