#!/usr/bin/env bash
# The soak: mailkms-milter and mailkms-keystored in a private Postfix on
# loopback under a steady load for MINUTES, then every message accounted
# for, and the daemons' memory and file descriptors compared (see
# tests/integration/soak/soak_test.sh for what is checked). Builds the
# daemons in Release (build/bench) unless told otherwise. Needs root.
#   sudo ./scripts/soak.sh MINUTES [--rate MSG_PER_S] [--max-size BYTES]
#        [--rss-slope KB_PER_MIN] [--sample-seconds N]
#        [--build-dir DIR] [--no-build]
# --build-dir build/test soaks the sanitizer build (slower: lower the rate).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '7,10s/^# \?//p' "$0" >&2; exit 2; }
[ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ] || usage
minutes=$1
shift
build_dir=$root/build/bench
build=1
# Ten a second, most small, one in fifty from 2 MB up to 10 MB: about
# 2 MB/s of mail to sign and encrypt, which a release build on two cores
# sustains beside Postfix, its sink and the sender.
args=(--rate 10 --max-size 10000000 --sample-seconds 5 --rss-slope 512)
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$(realpath "$2"); shift 2 ;;
    --no-build) build=; shift ;;
    --rate | --max-size | --rss-slope | --sample-seconds) args+=("$1" "$2"); shift 2 ;;
    *) usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "soak: needs root (a private Postfix, which runs as its own user)" >&2; exit 1; }
if [ -n "$build" ]; then
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -G Ninja -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMAILKMS_TESTS=OFF > /dev/null
  fi
  cmake --build "$build_dir" --target mailkms-milter mailkms-keystored mailkmsctl
fi
exec "$root/tests/integration/soak/soak_test.sh" "$build_dir/keystore/daemon/mailkms-keystored" \
  "$build_dir/cli/mailkmsctl" "$build_dir/milter/mailkms-milter" --seconds $((minutes * 60)) "${args[@]}"
