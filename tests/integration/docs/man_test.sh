#!/usr/bin/env bash
# The manual pages against the programs they describe, so that neither can
# change without the other: every mailkmsctl command (walked through
# --help) and every option it takes is in mailkmsctl(1); every option of
# each daemon in its page (8); every key each section of mailkms.conf
# accepts in mailkms.conf(5), and every key of policy.toml in
# mailkms-policy.toml(5), both read from the programs' own "expected one of"
# answer to an unknown key; and each built page renders without a troff
# warning (groff -ww).
#   man_test.sh MAILKMSCTL KEYSTORED MILTER PROXY MAN_SOURCE_DIR MAN_BUILD_DIR
set -uo pipefail
ctl=$1 keystored=$2 milter=$3 proxy=$4 sources=$5 built=$6
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

# The keys a program accepts where it met "zz_unknown", one per line: the
# list in its error "...; expected one of a, b, c" (or "expected a").
accepted_keys() {
  "$@" > /dev/null 2> refusal.txt
  grep -oE 'expected (one of )?[a-z0-9_, ]+$' refusal.txt | sed -E 's/^expected (one of )?//' | tr ',' '\n' | tr -d ' ' |
    grep .
}

# The lines of a page between the heading that names SECTION and the next.
section_of() {
  awk -v heading="$2" 'index($0, "# ") == 1 { inside = index($0, heading) > 0; next } inside' "$1"
}

conf_page=$sources/mailkms.conf.5.scd
for pair in keystore:"$keystored" gateway:"$milter" milter:"$milter" proxy:"$proxy"; do
  section=${pair%%:*} program=${pair#*:}
  printf '[%s]\nzz_unknown = 1\n' "$section" > unknown.conf
  accepted_keys "$program" --check --config unknown.conf > "keys-$section.txt"
  check "the [$section] keys are read from $(basename "$program")'s answer to an unknown one" \
    test "$(wc -l < "keys-$section.txt")" -gt 3
  section_of "$conf_page" "[$section]" > "page-$section.txt"
  missing=$(while read -r key; do grep -qF "*$key* =" "page-$section.txt" || echo "$key"; done < "keys-$section.txt")
  check "every key of [$section] is in mailkms.conf(5), in its section" test -z "$missing"
  [ -z "$missing" ] || echo "  # not in [$section] of mailkms.conf(5): $(tr '\n' ' ' <<< "$missing")"
done

policy_page=$sources/mailkms-policy.toml.5.scd
printf '[gateway]\npolicy = "%s/policy.toml"\n' "$work" > policy.conf
policy_keys() {
  printf '%s\n' "$1" > policy.toml
  accepted_keys "$milter" --check --config policy.conf
}
policy_keys 'zz_unknown = 1' > tables.txt
missing=$(while read -r table; do
  grep -qE "^# \[{1,2}$table\]{1,2}" "$policy_page" || echo "$table"
done < tables.txt)
check "every table of policy.toml has its part of mailkms-policy.toml(5)" \
  bash -c "[ \$(wc -l < tables.txt) -ge 5 ] && [ -z '$missing' ]"
{
  for table in local signing decryption defaults; do policy_keys "[$table]"$'\n''zz_unknown = 1'; done
  policy_keys $'[[rule]]\nname = "a"\nzz_unknown = 1'
  policy_keys $'[[rule]]\nname = "a"\nheader = { name = "X-A", contains = "b", zz_unknown = 1 }'
} | sort -u > policy-keys.txt
missing=$(while read -r key; do grep -qF "*$key* =" "$policy_page" || echo "$key"; done < policy-keys.txt)
check "every key of policy.toml is in mailkms-policy.toml(5)" \
  bash -c "[ \$(wc -l < policy-keys.txt) -gt 15 ] && [ -z '$missing' ]"
[ -z "$missing" ] || echo "  # not in mailkms-policy.toml(5): $(tr '\n' ' ' <<< "$missing")"

for daemon in "$keystored" "$milter" "$proxy"; do
  name=$(basename "$daemon")
  "$daemon" --help | grep -oE -- '--[a-z][a-z0-9-]*' | grep -vx -- '--help' | sort -u > options.txt
  missing=$(while read -r option; do grep -qF -- "*$option*" "$sources/$name.8.scd" || echo "$option"; done < options.txt)
  check "every option of $name is in $name(8)" bash -c "[ -s options.txt ] && [ -z '$missing' ]"
done

for page in mailkmsctl.1 mailkms.conf.5 mailkms-policy.toml.5 mailkms-keystored.8 mailkms-milter.8 mailkms-proxy.8; do
  check "$page is built" test -s "$built/$page"
done
for built_page in "$built"/*.[1-8]; do
  name=$(basename "$built_page")
  check "$name renders without a warning" \
    bash -c "groff -man -Tutf8 -ww -z '$built_page' 2> warnings.txt && [ ! -s warnings.txt ] && groff -man -Tascii -P-cbou '$built_page' 2> /dev/null | grep -q '^NAME'"
done

finish
