#!/usr/bin/env bash
# Static checks on the whole tree: clang-tidy, with the checks .clang-tidy
# names (bugprone-*, cert-*, concurrency-*, performance-*), and cppcheck
# (warnings, performance, portability). Both must be clean; a finding
# that is not a fault is suppressed where it is, with the reason beside it.
#   ./scripts/lint.sh           every source the build compiles
#   ./scripts/lint.sh FILE...   those sources only
# Configures build/lint (no build: only its compile commands) the first
# time. clang-tidy is slow: about 40 minutes of CPU for the whole tree,
# spread over every core.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build/lint

for tool in clang-tidy run-clang-tidy cppcheck; do
  command -v "$tool" > /dev/null || {
    echo "$0: $tool is missing: install Debian's clang-tidy and cppcheck (scripts/install-deps.sh does)" >&2
    exit 1
  }
done
if [ ! -f "$build/compile_commands.json" ]; then
  cmake -G Ninja -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    -DMAILKMS_TESTS=ON -DMAILKMS_BENCH=ON -DMAILKMS_FUZZ=OFF > /dev/null
fi

# The project's own sources (what the compile commands list, absolute).
if [ $# -gt 0 ]; then
  files=()
  for f in "$@"; do files+=("$(realpath "$f")"); done
else
  mapfile -t files < <(python3 -c '
import json, sys
for entry in json.load(open(sys.argv[1])):
    print(entry["file"])' "$build/compile_commands.json" | grep "^$here/" | grep -v "^$here/build/" | sort -u)
fi
[ ${#files[@]} -gt 0 ] || { echo "$0: no sources to check" >&2; exit 1; }

status=0
echo "clang-tidy: ${#files[@]} source(s)"
regex=$(printf '%s\n' "${files[@]}" | sed 's/[][\.*^$+?(){}|]/\\&/g' | paste -sd'|')
if ! run-clang-tidy -quiet -p "$build" -j "$(nproc)" "^($regex)\$" > "$build/clang-tidy.log" 2>&1; then
  status=1
fi
# Each finding once (a header's shows for every source that includes it).
sed 's/\x1b\[[0-9;]*m//g' "$build/clang-tidy.log" | { grep -E '^/.*: (warning|error): ' || true; } | sort -u |
  tee "$build/clang-tidy.findings"
[ -s "$build/clang-tidy.findings" ] && status=1
echo "clang-tidy: $(wc -l < "$build/clang-tidy.findings") finding(s); the whole output is in $build/clang-tidy.log"

echo "cppcheck: ${#files[@]} source(s)"
includes=()
for dir in common/include smime/include keystore/include gateway/include policy/include tests/support smtp-proxy fuzz; do
  includes+=(-I "$here/$dir")
done
if ! cppcheck --std=c++20 --language=c++ --enable=warning,performance,portability --inline-suppr \
  --suppress=missingIncludeSystem --error-exitcode=1 --quiet -j "$(nproc)" "${includes[@]}" "${files[@]}"; then
  status=1
fi
[ $status = 0 ] && echo "lint: clean" || echo "lint: findings above" >&2
exit $status
