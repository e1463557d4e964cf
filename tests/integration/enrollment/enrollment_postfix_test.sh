#!/usr/bin/env bash
# Enrollment and key recovery by mail, end to end, through a private Postfix
# with mailkms-milter and mailkms-keystored: an administrator enrolls alice
# and bob; each token mail arrives in the user's mailbox; the test replies as
# a mail client would (quoted, wrapped); the certificate mail arrives with a
# PKCS#12 that openssl opens with the user's password; alice mails bob
# encrypted and bob's key opens it. Then bob loses his key: a recovery with
# two approvals mails him a token, and the PKCS#12 it brings still opens
# that first message. Wrong, replayed and someone else's tokens are
# refused, and no password and no enrollment mail appears where it should not.
# Usage: enrollment_postfix_test.sh MAILKMS_KEYSTORED MAILKMSCTL MAILKMS_MILTER CONF_DIR   (as root)
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=../postfix/postfix-fixture.sh
. "$here/../postfix/postfix-fixture.sh"
# shellcheck source=../mailkms-daemons.sh
. "$here/../mailkms-daemons.sh"
# shellcheck source=../gpgsm.sh
. "$here/../gpgsm.sh"
[[ $# == 4 ]] || { echo "usage: enrollment_postfix_test.sh KEYSTORED MAILKMSCTL MILTER CONF_DIR" >&2; exit 2; }
keystored=$(realpath "$1")
ctl=$(realpath "$2")
milter=$(realpath "$3")
conf=$(realpath "$4")

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  postfix_stop
  stop_daemons
  gpgsm_stop
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 2

enroll_address=mailkms-enroll@corp.example
cat > mailkms.conf <<CONF
[keystore]
database = "$work/keystore.db"
socket = "$work/keystore.sock"
socket_mode = "0600"
unseal_key_file = "$work/master.key"
gateway_users = ["root"]
lock_memory = false
mail_command = ["$(command -v sendmail)", "-C", "$work/postfix/conf", "-i"]
mail_from = "$enroll_address"
enrollment_address = "$enroll_address"
templates = "$conf/templates"

[gateway]
policy = "$work/policy.toml"
authserv_id = "mx.corp.example"
enrollment_address = "$enroll_address"
spool_directory = "$work"
certificate_ttl_seconds = 1
missing_certificate_ttl_seconds = 1
# A redemption makes a PKCS#12 and mails it: under the sanitizers, on a
# busy machine, that can take longer than the default's 5 s.
keystore_timeout_ms = 30000

[milter]
socket = "unix:$work/milter.sock"
socket_mode = "0660"
group = "postfix"
pid_file = "$work/milter.pid"
CONF
cat > policy.toml <<'POLICY'
[local]
domains = ["corp.example"]
networks = ["127.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]
POLICY
export MAILKMS_CONFIG=$work/mailkms.conf MAILKMS_SESSION_FILE=$work/carol.session
for who in carol erin; do head -c 24 /dev/urandom | base64 > "$who.pw"; done
chmod 600 ./*.pw
"$ctl" init --admin carol --admin-password-file carol.pw --key-file master.key > /dev/null
start_keystore || { echo "FAIL - the keystore does not start"; cat keystore.log; exit 1; }
"$ctl" login carol --password-file carol.pw > /dev/null
"$ctl" ca init --id root --name "Corp Root CA" > /dev/null
"$ctl" ca add-subordinate --id issuing --parent root --name "Corp Issuing CA" > /dev/null
"$ctl" admin add erin --password-file erin.pw > /dev/null
"$ctl" approvals set recover 2 > /dev/null

start_milter || { echo "FAIL - the milter does not start"; cat milter.log; exit 1; }
export POSTFIX_EXTRA_CONF="smtpd_milters = unix:$work/milter.sock
non_smtpd_milters = unix:$work/milter.sock
milter_default_action = tempfail
milter_protocol = 6"
postfix_start "$work/postfix" || { echo "FAIL - cannot start Postfix"; exit 1; }

# mailbox OWNER: the messages delivered to OWNER so far, moved out of the sink
# into OWNER.N.eml; prints their names.
mailbox() {
  local owner=$1 n
  for f in $(sink_files); do
    if grep -q "^X-Rcpt-Args: <$owner>" "$f"; then
      n=$(find . -maxdepth 1 -name "$owner.*.eml" | wc -l)
      mv "$f" "$owner.$((n + 1)).eml"
    fi
  done
  find . -maxdepth 1 -name "$owner.*.eml" | sort -t. -k3 -n
}
# wait_mail OWNER N: until OWNER has N messages
wait_mail() {
  local end=$((SECONDS + 60))
  until [ "$(mailbox "$1" | wc -l)" -ge "$2" ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}
# sink_stays_empty: nothing reached the sink. The keystore hands its mail to
# Postfix before it answers: once the queue is empty again, whatever it sent
# has been delivered.
sink_stays_empty() { postfix_queue_settles && [ "$(find "$SINK_DIR" -type f | wc -l)" = 0 ]; }
# token_in FILE: the token an enrollment or recovery mail carries
token_in() { grep -o 'MKMS-[A-Z2-7-]*' "$1" | head -n 1; }
# reply FROM TOKEN PASSWORD [ORIGINAL]: what a mail client sends back:
# the password on a line of its own above the quoted original, wrapped at 40.
reply() {
  local from=$1 token=$2 password=$3
  {
    printf '%s\r\n' "From: $from" "To: $enroll_address" "Subject: Re: Your secure e-mail keys" \
      "MIME-Version: 1.0" "Content-Type: text/plain; charset=utf-8" "" "Password: $password" "" \
      "On Thursday, Mail Security wrote:"
    printf '> Token: %s\n' "$token" | fold -w 40 | sed 's/^\([^>]\)/> \1/; s/$/\r/'
    printf '> Add a line of your own that starts with "Password:"'
  } | swaks --server "127.0.0.1:$POSTFIX_PORT" --from "$from" --to "$enroll_address" --data - > reply.out 2>&1
}
# p12_of FILE OUT: the PKCS#12 attached to a certificate mail
p12_of() {
  python3 - "$1" "$2" <<'PY'
import email, sys
message = email.message_from_binary_file(open(sys.argv[1], "rb"))
for part in message.walk():
    if part.get_content_type() == "application/pkcs12" or (part.get_filename() or "").endswith(".p12"):
        open(sys.argv[2], "wb").write(part.get_payload(decode=True))
        sys.exit(0)
sys.exit(1)
PY
}

# ---- Enrollment ------------------------------------------------------------------
check "the administrator enrolls alice and bob" \
  bash -c "'$ctl' enroll alice@corp.example bob@corp.example | grep -q '2 sent'"
wait_mail alice@corp.example 1
wait_mail bob@corp.example 1
check "alice's token mail is in her mailbox, with a token" bash -c "[ -n \"\$(grep -o 'MKMS-[A-Z2-7-]*' alice@corp.example.1.eml)\" ]"
check "the token mail is not encrypted: she has no key yet" bash -c "! grep -qi 'application/pkcs7-mime' alice@corp.example.1.eml"
# Signed, so that a user can tell it from a phishing copy: by the sending
# address's certificate from the keystore's CA, whose root the mail names.
"$ctl" ca export root --out root.pem > /dev/null
check "the token mail is signed with a certificate for $enroll_address from the keystore's CA (openssl cms)" \
  bash -c "openssl cms -verify -purpose smimesign -CAfile root.pem -in alice@corp.example.1.eml -signer token-signer.pem -out /dev/null &&
           openssl x509 -in token-signer.pem -noout -ext subjectAltName | grep -q 'email:$enroll_address'"
check "gpgsm takes the root as a user would" gpgsm_home "$work/gnupg" root.pem
check "gpgsm finds the token mail's signature good, by $enroll_address" gpgsm_verify alice@corp.example.1.eml "$enroll_address"
check "the mail names the root's SHA-256 fingerprint" \
  bash -c "grep -qF \"\$(openssl x509 -in root.pem -noout -fingerprint -sha256 | cut -d= -f2)\" alice@corp.example.1.eml"
sed 's/^Token: MKMS-/Token: MKMS-A/' alice@corp.example.1.eml > forged.eml
python3 "$gpgsm_split" forged.eml forged.eml.content forged.eml.p7s
check "a token mail changed on its way fails (openssl cms)" \
  bash -c "! openssl cms -verify -CAfile root.pem -in forged.eml -out /dev/null"
check "and fails with gpgsm" bash -c "! gpgsm --batch --status-fd 1 --verify forged.eml.p7s forged.eml.content 2>&1 | grep -q GOODSIG" \
  < /dev/null

alice_token=$(token_in alice@corp.example.1.eml)
bob_token=$(token_in bob@corp.example.1.eml)
check "each user gets a different token" test "$alice_token" != "$bob_token"

alice_pw="alice chose this $RANDOM$RANDOM"
bob_pw="bob chose that $RANDOM$RANDOM"
reply alice@corp.example "$alice_token" "$alice_pw"
check "alice's reply is accepted by Postfix" grep -q "250 2.0.0 Ok: queued" reply.out
reply bob@corp.example "$bob_token" "$bob_pw"
wait_mail alice@corp.example 2
wait_mail bob@corp.example 2
check "alice's certificate mail carries a PKCS#12" p12_of alice@corp.example.2.eml alice.p12
check "the keys mail is signed by the same certificate (gpgsm)" gpgsm_verify alice@corp.example.2.eml "$enroll_address"
check "it opens with her password (openssl pkcs12)" \
  openssl pkcs12 -in alice.p12 -passin "pass:$alice_pw" -nodes -out alice.pem
p12_of bob@corp.example.2.eml bob.p12
openssl pkcs12 -in bob.p12 -passin "pass:$bob_pw" -nodes -nocerts -out bob.key 2> /dev/null
openssl pkcs12 -in bob.p12 -passin "pass:$bob_pw" -nokeys -clcerts -out bob.pem 2> /dev/null
check "bob's opens with his: his key and his certificate" \
  bash -c "openssl x509 -in bob.pem -noout -ext subjectAltName | grep -q bob@corp.example && [ -s bob.key ]"
check "no enrollment reply reached a mailbox" bash -c "! grep -l '^X-Rcpt-Args: <$enroll_address>' ./*.eml '$SINK_DIR'/* 2> /dev/null | grep -q ."

check "once enrolled, enrolling alice again says so" bash -c "'$ctl' enroll alice@corp.example | grep -q 'already'"
check "and sends nothing" sink_stays_empty

# ---- alice writes to bob; the gateway encrypts ----------------------------------------
printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: First" "MIME-Version: 1.0" \
  "Content-Type: text/plain" "" "The first secret." |
  swaks --server "127.0.0.1:$POSTFIX_PORT" --from alice@corp.example --to bob@corp.example --data - > send.out 2>&1
wait_mail bob@corp.example 3
first=bob@corp.example.3.eml
check "bob's key from his PKCS#12 decrypts alice's message (openssl cms)" \
  bash -c "openssl cms -decrypt -in $first -recip bob.pem -inkey bob.key | grep -q 'The first secret'"

# ---- Refusals -----------------------------------------------------------------------------
reply alice@corp.example "$alice_token" "another password 123"
check "a replayed token is refused" \
  bash -c "for _ in \$(seq 300); do '$ctl' audit show --limit 50 | grep -q 'redeem-token  alice@corp.example  refused  .*used' && exit 0; sleep 0.1; done; exit 1"
postfix_queue_settles  # an answer, had there been one, is at the sink now
check "unanswered: alice has no token pending" test "$(mailbox alice@corp.example | wc -l)" = 2
# A user with a token pending is answered.
"$ctl" enroll --reissue alice@corp.example > /dev/null
wait_mail alice@corp.example 3
reply alice@corp.example "MKMS-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-F" "another password 123"
wait_mail alice@corp.example 4
check "a wrong token is refused with a short reply to the sender" \
  bash -c "! grep -qi 'pkcs12' alice@corp.example.4.eml && ! grep -q 'MKMS-' alice@corp.example.4.eml"
"$ctl" enroll --reissue bob@corp.example > /dev/null
wait_mail bob@corp.example 4
stolen=$(token_in bob@corp.example.4.eml)
reply alice@corp.example "$stolen" "mallory's password 1"
wait_mail alice@corp.example 5
check "bob's token sent from alice's address is refused the same way" bash -c "! grep -qi 'pkcs12' alice@corp.example.5.eml"
check "the refusals are in the audit log, each with its reason" \
  bash -c "'$ctl' audit show --limit 50 > audit.txt; grep -q 'redeem-token  alice@corp.example  refused  .*used' audit.txt && grep -q 'refused  wrong token' audit.txt && grep -q 'refused  token of another address (bob@corp.example)' audit.txt"

# ---- bob loses his key: recovery by mail, with two approvals ---------------------------------
rm -f bob.key bob.p12
request=$("$ctl" recover bob@corp.example --by-mail | sed -n 's/^request \([^ ]*\) needs.*/\1/p')
check "a recovery waits for a second administrator" sink_stays_empty
MAILKMS_SESSION_FILE=$work/erin.session "$ctl" login erin --password-file erin.pw > /dev/null
check "erin approves it" env MAILKMS_SESSION_FILE="$work/erin.session" "$ctl" approve "$request"
wait_mail bob@corp.example 5
recovery_token=$(token_in bob@corp.example.5.eml)
check "the recovery token mail reaches bob" test -n "$recovery_token"
bob_pw2="bob's new password $RANDOM"
reply bob@corp.example "$recovery_token" "$bob_pw2"
wait_mail bob@corp.example 6
check "the recovered PKCS#12 arrives" p12_of bob@corp.example.6.eml bob-recovered.p12
openssl pkcs12 -in bob-recovered.p12 -passin "pass:$bob_pw2" -nodes -nocerts -out bob-recovered.key 2> /dev/null
openssl pkcs12 -in bob-recovered.p12 -passin "pass:$bob_pw2" -nokeys -clcerts -out bob-recovered.pem 2> /dev/null
check "and still decrypts alice's first message" \
  bash -c "openssl cms -decrypt -in $first -recip bob-recovered.pem -inkey bob-recovered.key | grep -q 'The first secret'"

# ---- A revoked certificate is never used to encrypt ---------------------------------------
"$ctl" revoke bob@corp.example --reason keyCompromise > /dev/null
# The milter kept bob's certificate: a reload makes it ask again.
check "a reload makes the milter forget the revoked certificate" reload_milter
printf '%s\r\n' "From: alice@corp.example" "To: bob@corp.example" "Subject: After the revocation" "MIME-Version: 1.0" \
  "Content-Type: text/plain" "" "Not for a revoked key." |
  swaks --server "127.0.0.1:$POSTFIX_PORT" --from alice@corp.example --to bob@corp.example --data - > send.out 2>&1
wait_mail bob@corp.example 7
check "once bob's certificate is revoked, mail to him is not encrypted to it" \
  bash -c "! grep -qi 'application/pkcs7-mime' bob@corp.example.7.eml && grep -q 'Not for a revoked key' bob@corp.example.7.eml"

# ---- Nothing leaked -------------------------------------------------------------------------------
printf '%s\n' "$alice_pw" "$bob_pw" "$bob_pw2" > passwords.txt
check "no user's password is in a log or a mailbox" \
  bash -c "! grep -rqF -f passwords.txt milter.log keystore.log postfix/maillog ./*.eml '$SINK_DIR'"
check "no mail to the enrollment address was delivered" \
  bash -c "! grep -rlq '^X-Rcpt-Args: <$enroll_address>' ./*.eml '$SINK_DIR' 2> /dev/null"
# The sink has the last message a moment before the queue manager deletes it.
check "nothing is left in Postfix's queue" \
  bash -c "for _ in \$(seq 100); do postqueue -c '$work/postfix/conf' -p | grep -q 'Mail queue is empty' && exit 0; sleep 0.1; done; exit 1"

finish
