#!/usr/bin/env bash
# `mailkmsctl policy check` and `policy explain` on real files, without a
# keystore: the messages administrators read, line by line, and the exit
# codes scripts rely on.
# Usage: policy_cli_test.sh MAILKMSCTL CONF_DIR
#
# Test conditions are single-quoted on purpose: t() evaluates them later.
# shellcheck disable=SC2016
set -uo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$(realpath "$0")")/../lib.sh"

[[ $# == 2 ]] || { echo "usage: policy_cli_test.sh MAILKMSCTL CONF_DIR" >&2; exit 2; }
ctl=$(realpath "$1")
conf=$(realpath "$2")
[[ -x $ctl ]] || { echo "not executable: $ctl" >&2; exit 2; }
[[ -f $conf/policy.toml ]] || { echo "no policy.toml in $conf" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 2
# No keystore: explain must say that it did not look up certificates.
unset MAILKMS_CONFIG


# line FILE TEXT: TEXT is a whole line of FILE.
line() { [[ -f $1 ]] && grep -qxF -- "$2" "$1"; }
# only FILE TEXT: TEXT is all of FILE.
only() { [[ -f $1 ]] && [[ $(cat "$1") == "$2" ]]; }

# ---- check

run "$ctl" policy check "$conf/policy.toml"
t "the example policy passes" '[[ $rc == 0 ]] && only out "$conf/policy.toml: OK: 4 rules, local domains: example.org" && [[ ! -s err ]]'

: > empty.toml
run "$ctl" policy check empty.toml
t "an empty file is a valid policy" '[[ $rc == 0 ]] && only out "empty.toml: OK: 0 rules, local domains: none"'

cat > one.toml <<'TOML'
[local]
domains = ["example.org", "Example.NET"]
[[rule]]
to = "*"
TOML
run "$ctl" policy check one.toml
t "one rule, domains in lower case" '[[ $rc == 0 ]] && only out "one.toml: OK: 1 rule, local domains: example.org, example.net"'

# refused FILE LINE: `policy check FILE` fails with exactly LINE on stderr.
refused() {
  want=$2
  run "$ctl" policy check "$1"
  t "refused: $want" '[[ $rc == 1 ]] && [[ ! -s out ]] && only err "$want"'
}

printf '[local]\ndomains = ["example.org"]\n\n[defaults]\nsign = "always"\nsigned = "always"\n' > unknown-default.toml
refused unknown-default.toml 'unknown-default.toml:6:1: [defaults]: unknown key "signed"; expected one of sign, encrypt, cipher, digest, on_missing_certificate, encrypt_to_sender, exempt_calendar, verify, decrypt, decrypt_unauthenticated, harvest'

printf '[locals]\ndomains = ["example.org"]\n' > unknown-top.toml
refused unknown-top.toml 'unknown-top.toml:1:2: unknown key "locals"; expected one of local, signing, decryption, defaults, rule'

printf '[[rule]]\nname = "partners"\n  encrypted = "always"\n' > unknown-rule.toml
refused unknown-rule.toml 'unknown-rule.toml:3:3: rule "partners": unknown key "encrypted"; expected one of name, direction, from, to, subject_tag, header, sign, encrypt, cipher, digest, on_missing_certificate, encrypt_to_sender, exempt_calendar, verify, decrypt, decrypt_unauthenticated, harvest'

printf '[[rule]]\nheader = { name = "X-Secure", value = "yes" }\n' > unknown-header.toml
refused unknown-header.toml 'unknown-header.toml:2:31: rule 1: header: unknown key "value"; expected one of name, contains'

printf '[defaults]\nverify = "yes"\n' > wrong-type.toml
refused wrong-type.toml 'wrong-type.toml:2:10: [defaults]: verify: expected true or false'

printf '[[rule]]\nname = "p"\nencrypt = "sometimes"\n' > bad-enum.toml
refused bad-enum.toml 'bad-enum.toml:3:11: rule "p": encrypt: expected never, if-possible or always, not "sometimes"'

printf '[[rule]]\nname = "p"\nto = ["*@partner.example", "a@*"]\n' > bad-pattern.toml
refused bad-pattern.toml 'bad-pattern.toml:3:28: rule "p": to: "a@*" is not an address pattern; expected alice@example.org, *@example.org, *@*.example.org or *'

printf '[local]\nnetworks = ["10.0.0.0/8", "fd00::/129"]\n' > bad-cidr.toml
refused bad-cidr.toml 'bad-cidr.toml:2:27: [local]: networks: "fd00::/129": the prefix length must be 0 to 128'

printf '[defaults]\ncipher = ["aes-256-cbc", "rc2-40"]\n' > decrypt-only.toml
refused decrypt-only.toml 'decrypt-only.toml:2:26: [defaults]: cipher: rc2-40 is only used to read old mail; expected aes-256-gcm, aes-128-gcm, aes-256-cbc, aes-192-cbc, aes-128-cbc or 3des'

printf '[defaults]\ndigest = "sha1"\n' > sha1.toml
refused sha1.toml 'sha1.toml:2:10: [defaults]: digest: sha1 is too weak to sign with; expected sha256, sha384 or sha512'

printf '[defaults]\nsign = \n' > syntax.toml
refused syntax.toml "syntax.toml:2:8: Error while parsing key-value pair: expected value, saw '\\n'"

run "$ctl" policy check missing.toml
t "a missing file is an error" '[[ $rc == 1 ]] && only err "missing.toml: cannot read: No such file or directory"'

run "$ctl" policy check
t "no file is a usage error" '[[ $rc == 2 ]]'

# ---- explain

cat > policy.toml <<'TOML'
[local]
domains = ["example.org"]
networks = ["10.0.0.0/8", "2001:db8::/32"]

[defaults]
encrypt = "if-possible"

[[rule]]
name = "secure tag"
direction = "outbound"
subject_tag = "[secure]"
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
name = "partners"
to = ["*@partner.example"]
encrypt = "always"
cipher = ["aes-256-gcm", "aes-256-cbc"]
digest = "sha384"

[[rule]]
name = "inbound"
direction = "inbound"
decrypt = true
harvest = false
TOML

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to bob@partner.example --client 10.1.2.3
t "explain: a rule matches" '[[ $rc == 0 ]] && only out "policy:       policy.toml
sender:       alice@example.org
direction:    outbound (sender domain example.org is local and client 10.1.2.3 is in 10.0.0.0/8)
signer:       none: not authorized to sign as alice@example.org (client 10.1.2.3 is in none of [signing] unauthenticated_networks)
certificates: not checked (no keystore configured)

recipient bob@partner.example
  policy:                 rule \"partners\" (line 15): to matches *@partner.example
  decided:                at end of message, when the headers are known
  sign:                   if-possible
  encrypt:                always
  ciphers:                aes-256-gcm, aes-256-cbc
  digest:                 sha384
  on_missing_certificate: tempfail
  encrypt_to_sender:      yes
  exempt_calendar:        no"'

# ---- explain: who may sign as whom
cat > signing.toml <<'TOML'
[local]
domains = ["example.org"]
networks = ["10.0.0.0/8"]

[signing]
login_map = "signing-logins"
unauthenticated_networks = ["10.1.0.0/16"]
TOML
printf '%s\n' '# shared and delegated addresses' 'ceo@example.org      assistant' '@sales.example.org   assistant' > signing-logins
run "$ctl" policy explain --policy signing.toml --from assistant@example.org --author ceo@example.org --login assistant --client 203.0.113.9 --to x@gmail.com
t "explain: a login the map lets sign as the CEO, and all it owns" '[[ $rc == 0 ]] &&
  line out "signer:       ceo@example.org (signing-logins gives it to login assistant)" &&
  line out "login owns:   @sales.example.org, ceo@example.org"'
run "$ctl" policy explain --policy signing.toml --from bob@example.org --author ceo@example.org --login bob@example.org --client 203.0.113.9 --to x@gmail.com
t "explain: a login that does not own the author" '[[ $rc == 0 ]] &&
  line out "signer:       none: not authorized to sign as ceo@example.org (login bob@example.org does not own it)" &&
  line out "login owns:   bob@example.org"'
run "$ctl" policy explain --policy signing.toml --from bob@example.org --client 10.1.2.3 --to x@gmail.com
t "explain: an unauthenticated client of unauthenticated_networks signs as its envelope sender" '[[ $rc == 0 ]] &&
  line out "signer:       bob@example.org (client 10.1.2.3 is in 10.1.0.0/16 of [signing] unauthenticated_networks and From is the envelope sender)"'
run "$ctl" policy explain --policy signing.toml --from bob@example.org --to x@gmail.com
t "explain: local submission does not sign unless local_submission = true" '[[ $rc == 0 ]] &&
  line out "signer:       none: not authorized to sign as bob@example.org (local submission signs only with [signing] local_submission = true)"'
printf '%s\n' 'ceo@example.org  assistant' 'ceo  deputy' > signing-logins
run "$ctl" policy check signing.toml
t "check: a bad login map line is refused with its file and line" \
  '[[ $rc == 1 ]] && grep -qF "signing-logins:2: \"ceo\" is not an address such as \"sales@example.org\" or a domain such as \"@example.org\"" err'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to x@gmail.com --to Bob@Partner.Example --authenticated --client 203.0.113.9
t "explain: defaults, and one section per recipient" '[[ $rc == 0 ]] &&
  line out "direction:    outbound (sender domain example.org is local and client authenticated)" &&
  line out "recipient x@gmail.com" && line out "  policy:                 no rule matched; defaults apply" &&
  line out "  encrypt:                if-possible" && line out "  ciphers:                aes-256-cbc, aes-128-cbc" &&
  line out "recipient Bob@Partner.Example" &&
  line out "  policy:                 rule \"partners\" (line 15): to matches *@partner.example"'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to x@gmail.com --client 203.0.113.9
t "explain: a local sender from outside is inbound" '[[ $rc == 0 ]] &&
  line out "direction:    inbound (sender domain example.org is local but client 203.0.113.9 is neither internal nor authenticated)"'

run "$ctl" policy explain --policy policy.toml --from friend@gmail.com --to alice@example.org --client 2001:db8::25
t "explain: inbound settings" '[[ $rc == 0 ]] && only out "policy:       policy.toml
sender:       friend@gmail.com
direction:    inbound (sender domain gmail.com is not local)
decryption:   not here: decryption happens at the final hop ({daemon_name} mailkms-final-hop), after the MTA has expanded aliases and forwarding; this connection is not it

recipient alice@example.org
  policy:                 rule \"inbound\" (line 22): inbound
  verify:                 yes
  decrypt:                yes, but not in this connection (see decryption)
  decrypt_unauthenticated: no — CBC-encrypted mail without a signature that passes stays encrypted
  harvest:                no"'

# The final hop ({daemon_name} mailkms-final-hop): mail is decrypted there,
# and nothing is signed, its client being the MTA itself.
run "$ctl" policy explain --policy policy.toml --from friend@gmail.com --to alice@example.org --client 127.0.0.1 --final-hop
t "explain --final-hop: decrypted there" '[[ $rc == 0 ]] &&
  line out "decryption:   here: this is the final hop ({daemon_name} mailkms-final-hop)" && line out "  decrypt:                yes"'
run "$ctl" policy explain --policy policy.toml --from alice@example.org --to bob@partner.example --client 10.0.0.25 --final-hop
t "explain --final-hop: nothing signed there" '[[ $rc == 0 ]] &&
  line out "signer:       none: not authorized to sign as alice@example.org (the final hop signs nothing: its client is the MTA itself)"'
printf '[decryption]\nat = "anywhere"\n' | cat - policy.toml > policy-anywhere.toml
run "$ctl" policy explain --policy policy-anywhere.toml --from friend@gmail.com --to alice@example.org --client 2001:db8::25
t "explain: [decryption] at = anywhere decrypts in any connection" '[[ $rc == 0 ]] &&
  line out "decryption:   here: [decryption] at = \"anywhere\"" && line out "  decrypt:                yes"'

# --json: the same findings as one document, values typed for scripts.
json_holds() {  # json_holds EXPRESSION COMMAND...: EXPRESSION over the document `d` is true
  local expression=$1
  shift
  "$@" > json.out && python3 -c 'import json, sys; d = json.load(open("json.out")); sys.exit(0 if eval(sys.argv[1]) else 1)' "$expression"
}
check "explain --json, outbound: direction, signer, and each recipient's rule and settings" json_holds \
  'd["direction"] == {"value": "outbound", "reason": "sender domain example.org is local and client 10.1.2.3 is in 10.0.0.0/8"} and d["signer"]["authorized"] is False and d["signer"]["identity"] == "alice@example.org" and d["certificates"] == {"checked": False} and [r["recipient"] for r in d["recipients"]] == ["bob@partner.example", "carol@example.org"] and d["recipients"][0]["policy"]["rule"] == "partners" and d["recipients"][0]["encrypt"] == "always" and d["recipients"][0]["ciphers"] == ["aes-256-gcm", "aes-256-cbc"] and d["recipients"][0]["digest"] == "sha384" and d["recipients"][0]["encrypt_to_sender"] is True and d["recipients"][0]["decided"] == "end-of-message" and d["recipients"][1]["policy"]["rule"] == "defaults" and d["recipients"][1]["encrypt"] == "if-possible"' \
  "$ctl" policy explain --json --policy policy.toml --from alice@example.org --to bob@partner.example carol@example.org --client 10.1.2.3
check "explain --json, inbound: where decryption happens, and booleans" json_holds \
  'd["direction"]["value"] == "inbound" and d["decryption"]["here"] is False and "signer" not in d and d["recipients"][0]["verify"] is True and d["recipients"][0]["decrypt"] == {"policy": True, "here": False} and d["recipients"][0]["decrypt_unauthenticated"] is False and d["recipients"][0]["harvest"] is False and d["recipients"][0]["decided"] == "rcpt"' \
  "$ctl" policy explain --json --policy policy.toml --from friend@gmail.com --to alice@example.org --client 2001:db8::25
check "explain --json with a subject tag: the subject sent, the tag removed" json_holds \
  'd["recipients"][0]["policy"]["rule"] == "secure tag" and d["recipients"][0]["subject"] == {"sent": "Plans", "tag_removed": "[secure]"} and d["recipients"][0]["on_missing_certificate"] == "reject" and d["login_owns"] == []' \
  "$ctl" policy explain --json --policy policy.toml --from alice@example.org --to x@gmail.com --subject "[secure] Plans" --login alice
run "$ctl" policy explain --json --policy missing.toml --from a@example.org --to b@example.org
t "explain --json: an unreadable policy is an error on stderr, nothing on stdout" '[[ $rc == 2 ]] && [[ ! -s out ]] && grep -q "missing.toml" err'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to bob@partner.example --inbound
t "explain: --inbound overrides the direction" '[[ $rc == 0 ]] && line out "direction:    inbound (given with --inbound)" &&
  line out "  policy:                 rule \"partners\" (line 15): to matches *@partner.example" && line out "  harvest:                yes"'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to x@gmail.com --subject "Re: [SECURE] Plans"
t "explain: the subject tag matches and is removed" '[[ $rc == 0 ]] &&
  line out "direction:    outbound (sender domain example.org is local and the message was submitted locally)" &&
  line out "  policy:                 rule \"secure tag\" (line 8): outbound, subject has [secure]" &&
  line out "  subject:                \"Re: Plans\" (tag [secure] removed)" &&
  line out "  encrypt:                always" && line out "  on_missing_certificate: reject"'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to x@gmail.com --header "X-Other: 1" --outbound
t "explain: --outbound, and without the tag the defaults" '[[ $rc == 0 ]] && line out "direction:    outbound (given with --outbound)" &&
  line out "  policy:                 no rule matched; defaults apply" && ! grep -q "^  subject:" out'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to x@gmail.com --inbound --outbound
t "explain: --inbound and --outbound exclude each other" '[[ $rc == 2 ]]'

run "$ctl" policy explain --policy policy.toml --from alice@example.org --to x@gmail.com --header "no colon"
t "explain: a header without a colon is a usage error" '[[ $rc == 2 ]] && only err "mailkmsctl: --header \"no colon\": expected \"Name: value\""'

run "$ctl" policy explain --policy sha1.toml --from alice@example.org --to x@gmail.com
t "explain: an invalid policy is a usage error that names the line" '[[ $rc == 2 ]] &&
  only err "mailkmsctl: sha1.toml:2:10: [defaults]: digest: sha1 is too weak to sign with; expected sha256, sha384 or sha512"'

run "$ctl" policy explain --policy policy.toml --from alice@example.org
t "explain: --to is required" '[[ $rc == 2 ]]'

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
