# A private Postfix on loopback for integration tests, sourced by test
# scripts. It never touches /etc/postfix: its configuration, queue and log
# live in a temporary directory, it listens on 127.0.0.1 only, on a port
# picked here, and relays everything to an smtp-sink on another free port,
# which dumps each message it receives into a file.
#
#   postfix_start WORKDIR   sets POSTFIX_PORT, SINK_DIR; needs root, and every
#                           directory above WORKDIR open to the postfix user;
#                           lines in $POSTFIX_EXTRA_CONF are added to main.cf
#                           (a milter, say), and lines in
#                           $POSTFIX_EXTRA_MASTER to master.cf (a second
#                           smtpd, say); with $POSTFIX_SASL_USERS
#                           ("login password" lines) smtpd offers SMTP AUTH
#                           (PLAIN, LOGIN) to those logins (Cyrus SASL with
#                           a sasldb of this instance's own)
#   postfix_wait_for N      waits until N messages reached the sink
#   sink_files              the messages the sink has finished writing
#                           (../smtp-sink.sh)
#   postfix_queue_settles   waits (30 s at most) until Postfix's queue is
#                           empty: whatever was submitted has been delivered
#                           or refused, so the sink holds all it will
#   log_mark                where Postfix's log ends now
#   logged_since MARK RE    waits (30 s at most) for a line after MARK that
#                           matches RE (extended regex): what Postfix did
#                           with a message is read from its log, never
#                           assumed after a sleep
#   postfix_stop

# shellcheck source=../smtp-sink.sh
. "$(dirname "${BASH_SOURCE[0]}")/../smtp-sink.sh"

postfix_start() {
  POSTFIX_DIR=$1
  local conf=$POSTFIX_DIR/conf
  mkdir -p "$conf" "$POSTFIX_DIR/queue" "$POSTFIX_DIR/data" "$POSTFIX_DIR/sink"
  # Postfix and the sink run as the postfix user: let it in.
  chmod 755 "$POSTFIX_DIR"
  chown postfix "$POSTFIX_DIR/data" "$POSTFIX_DIR/sink"
  SINK_DIR=$POSTFIX_DIR/sink
  POSTFIX_PORT=$(free_port) || return 1
  SINK_PORT=$(free_port) || return 1
  while [ "$SINK_PORT" = "$POSTFIX_PORT" ]; do SINK_PORT=$(free_port) || return 1; done

  local sasl_conf=
  if [ -n "${POSTFIX_SASL_USERS:-}" ]; then
    sasl_conf=$(postfix_sasl "$conf/sasl") || return 1
  fi

  cat > "$conf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $POSTFIX_DIR/queue
data_directory = $POSTFIX_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mailkms-test.localdomain
mydomain = localdomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$SINK_PORT
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = $POSTFIX_DIR/maillog
maillog_file_prefixes = $POSTFIX_DIR
# A delivery deferred by chance is retried within seconds, not minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
${sasl_conf}
${POSTFIX_EXTRA_CONF:-}
CONF
  # Debian's services, with our smtpd port instead of 25 and no chroot
  # (a chroot would need copies of /etc files in the queue directory).
  awk -v port="127.0.0.1:$POSTFIX_PORT" '
    /^#/ || /^[ \t]/ || NF < 8 { print; next }
    { if ($1 == "smtp" && $2 == "inet") $1 = port; $5 = "n"; print }
  ' /etc/postfix/master.cf > "$conf/master.cf"
  [ -z "${POSTFIX_EXTRA_MASTER:-}" ] || printf '%s\n' "$POSTFIX_EXTRA_MASTER" >> "$conf/master.cf"

  sink_start "$SINK_DIR" "$SINK_PORT" || return 1
  postfix -c "$conf" check && postfix -c "$conf" start > /dev/null 2>&1
}

# postfix_sasl DIR: a Cyrus SASL set-up in DIR for smtpd alone, its users
# in a sasldb of their own (from $POSTFIX_SASL_USERS); prints the main.cf
# lines that use it. Nothing outside DIR changes: not /etc/sasldb2, not
# /etc/postfix/sasl. DIR is the instance's conf/sasl: Debian's Postfix
# looks for smtpd.conf in $config_directory/sasl whatever
# cyrus_sasl_config_path says (which names the same place, for other
# builds). smtpd runs unchrooted here (see master.cf below), as the
# postfix user, which must read the sasldb.
postfix_sasl() {
  local dir=$1 login password
  mkdir -p "$dir"
  cat > "$dir/smtpd.conf" <<SASL
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $dir/sasldb2
mech_list: PLAIN LOGIN
SASL
  # A login without a domain lives in smtpd's realm, its myhostname.
  while read -r login password; do
    [ -n "$login" ] || continue
    local realm=()
    [[ $login == *@* ]] || realm=(-u mailkms-test.localdomain)
    printf '%s' "$password" | saslpasswd2 -f "$dir/sasldb2" "${realm[@]}" -c -p "$login" || return 1
  done <<< "$POSTFIX_SASL_USERS"
  chown root:postfix "$dir/sasldb2" && chmod 640 "$dir/sasldb2" || return 1
  printf '%s\n' "smtpd_sasl_auth_enable = yes" "smtpd_sasl_type = cyrus" "smtpd_sasl_path = smtpd" \
    "cyrus_sasl_config_path = $dir" "smtpd_sasl_security_options = noanonymous"
}

postfix_wait_for() { sink_wait_for "$1" "$POSTFIX_DIR/maillog"; }

postfix_queue_settles() {
  local end=$((SECONDS + 30))
  until postqueue -c "$POSTFIX_DIR/conf" -p 2> /dev/null | grep -q '^Mail queue is empty'; do
    [ "$SECONDS" -lt "$end" ] || { echo "postfix fixture: the queue is not empty after 30 s" >&2; return 1; }
    sleep 0.05
  done
}

log_mark() { wc -l < "$POSTFIX_DIR/maillog"; }

logged_since() {
  local end=$((SECONDS + 30))
  until tail -n +"$(($1 + 1))" "$POSTFIX_DIR/maillog" | grep -qE "$2"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}

postfix_stop() {
  [ -n "${POSTFIX_DIR:-}" ] && postfix -c "$POSTFIX_DIR/conf" stop > /dev/null 2>&1
  sink_stop
  return 0
}
