#!/usr/bin/env bash
# The manual pages against the programs they describe: every mailkmsctl
# command (walked through --help) and every option it takes is in
# mailkmsctl(1), and each built page renders without a troff warning
# (groff -ww).
#   man_test.sh MAILKMSCTL MAN_SOURCE_DIR MAN_BUILD_DIR
set -uo pipefail
ctl=$1 sources=$2 built=$3
source "$(dirname "$0")/../lib.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

page=$sources/mailkmsctl.1.scd

# Each command's path ("ca export"), then its long options, one per line.
walk() {
  local help subcommands
  help=$("$ctl" "$@" --help 2>&1) || return 1
  subcommands=$(sed -n '/^Subcommands:/,$p' <<< "$help" | awk 'NR > 1 && /^  [a-z]/ { print $1 }')
  if [ -z "$subcommands" ]; then
    echo "command $*"
    sed -n '/^Options:/,$p' <<< "$help" | grep -oE -- '--[a-z][a-z0-9-]*' | grep -vxE -- '--(help|config)' | sort -u |
      sed 's/^/option /'
    return 0
  fi
  local s
  for s in $subcommands; do walk "$@" "$s" || return 1; done
}
walk > tree.txt
walked=$?
check "mailkmsctl's commands are walked through --help" bash -c "[ $walked = 0 ] && [ \$(grep -c '^command ' tree.txt) -gt 50 ]"

missing_commands=$(grep '^command ' tree.txt | sed 's/^command //' | while read -r path; do
  grep -qF "*$path*" "$page" || echo "$path"
done)
check "every command is in mailkmsctl(1)" test -z "$missing_commands"
[ -z "$missing_commands" ] || echo "  # not in mailkmsctl(1): $(tr '\n' ',' <<< "$missing_commands")"

missing_options=$(grep '^option ' tree.txt | sed 's/^option //' | sort -u | while read -r option; do
  grep -qF -- "$option" "$page" || echo "$option"
done)
check "every option is in mailkmsctl(1)" test -z "$missing_options"
[ -z "$missing_options" ] || echo "  # not in mailkmsctl(1): $(tr '\n' ' ' <<< "$missing_options")"

for built_page in "$built"/*.[1-8]; do
  name=$(basename "$built_page")
  check "$name renders without a warning" \
    bash -c "groff -man -Tutf8 -ww -z '$built_page' 2> warnings.txt && [ ! -s warnings.txt ] && groff -man -Tascii -P-cbou '$built_page' 2> /dev/null | grep -q '^NAME'"
done

finish
