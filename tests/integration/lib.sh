# Shared by the integration test scripts: a check that runs a command and
# counts it, and the closing tally that CTest and CI read.
# shellcheck shell=bash

passed=0
failed=0

# check NAME COMMAND… : passes when COMMAND exits 0; shows its output if not.
check() {
  local name=$1
  shift
  if "$@" > check.out 2>&1; then
    passed=$((passed + 1))
    echo "ok   - $name"
  else
    failed=$((failed + 1))
    echo "FAIL - $name"
    sed 's/^/       /' check.out | head -20
  fi
}

# The last line: "N passed, M failed"; the exit status says the same.
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed == 0 ]]
}
