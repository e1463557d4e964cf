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

# run CMD… : stdout to ./out, stderr to ./err, exit code to $rc. The
# timeout turns a hang (say, a passphrase prompt) into a failure.
rc=0
run() {
  timeout 60 "$@" >out 2>err
  rc=$?
}

# t NAME CONDITION : CONDITION is shell code, true when the test passes;
# on failure it shows the condition and what the last run() printed.
t() {
  if eval "$2"; then
    passed=$((passed + 1))
    echo "ok   - $1"
  else
    failed=$((failed + 1))
    echo "FAIL - $1"
    echo "       condition: $2"
    echo "       exit code: $rc"
    sed -n '1,20s/^/       stdout: /p' out 2>/dev/null
    sed -n '1,8s/^/       stderr: /p' err 2>/dev/null
  fi
  # A later run whose input redirection fails never starts: leave nothing
  # behind that its test could mistake for its own result.
  rc=none
  rm -f out err
}

# The last line: "N passed, M failed"; the exit status says the same.
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed == 0 ]]
}
