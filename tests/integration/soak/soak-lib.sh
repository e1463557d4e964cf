# The soak's parts, sourced by soak_test.sh: the messages and their steady
# sending, what Postfix's log says became of each, the mailbox checker, the
# memory and file descriptor measures, and the checker's own test. Runs in
# the soak's work directory: messages under outbox/, what was sent under
# sent/ (manifest: "N RECIPIENT KIND SIZE SHA256-OF-BODY" a line).
# shellcheck shell=bash

soak_recipients=(bob carol dave)
# One message in twenty is malformed, each kind in turn.
soak_malformed_kinds=(bad-boundary truncated-smime garbage-cms bad-base64 many-headers long-header)

# soak_make_payload MAX_SIZE FILE: random base64 in 76-character lines
# (never a line starting with a dot), enough for the largest message from
# any starting line soak_message picks.
soak_make_payload() {
  head -c $(($1 * 3 / 4 + 65536)) /dev/urandom | base64 -w 76 > "$2"
}

# soak_kind N: the kind of message N: plain, multipart, or a malformed kind
soak_kind() {
  local n=$1
  if ((n % 20 == 19)); then
    echo "${soak_malformed_kinds[$((n / 20 % ${#soak_malformed_kinds[@]}))]}"
  elif ((n % 3 == 0)); then
    echo multipart
  else
    echo plain
  fi
}

# soak_size N MAX: message N's payload size, the same on every run: most
# small, some large, one in fifty from 2 MB up, none over MAX (nor under 1 KB).
soak_size() {
  awk -v n="$1" -v max="$2" 'BEGIN {
    u = (n * 2654435761 % 4294967296) / 4294967296
    v = (n * 40503 % 65536) / 65536
    if (u < 0.70) { lo = 1024; hi = 16384 }
    else if (u < 0.90) { lo = 16384; hi = 262144 }
    else if (u < 0.98) { lo = 262144; hi = 2097152 }
    else { lo = 2097152; hi = 10485760 }
    s = int(lo * exp(v * log(hi / lo)))
    if (s > max) s = max
    print (s < 1024 ? 1024 : s) }'
}

# soak_lines N SIZE: about SIZE bytes of the payload, from a line N picks
soak_lines() {
  tail -n +$((1 + $1 * 13 % 800)) payload.b64 | head -n $(($2 / 77 + 1))
}

# soak_body N KIND RECIPIENT SIZE: message N's Content-Type (first line,
# "" for none: plain text) and body. Every body but the CMS ones carries
# "soak-clear-marker N", which must never reach the sink in clear.
soak_body() {
  local n=$1 kind=$2 rcpt=$3 size=$4
  case $kind in
    plain)
      echo "Content-Type: text/plain; charset=us-ascii"
      printf 'soak-clear-marker %s for %s\n\n' "$n" "$rcpt"
      soak_lines "$n" "$size" ;;
    multipart)
      echo "Content-Type: multipart/mixed; boundary=\"=-soak-$n\""
      printf '%s\n' "This is a multi-part message in MIME format." "" "--=-soak-$n" \
        "Content-Type: text/plain; charset=us-ascii" "" "soak-clear-marker $n for $rcpt, the figures attached." "" \
        "--=-soak-$n" "Content-Type: application/octet-stream; name=\"figures-$n.bin\"" \
        "Content-Disposition: attachment; filename=\"figures-$n.bin\"" "Content-Transfer-Encoding: base64" ""
      soak_lines "$n" "$size"
      printf '%s\n' "--=-soak-$n--" ;;
    bad-boundary)  # the parts' boundary is not the one declared, and never closes
      echo "Content-Type: multipart/mixed; boundary=\"declared-$n\""
      printf '%s\n' "--actual-$n" "Content-Type: text/plain" "" "soak-clear-marker $n for $rcpt" "--actual-$n" \
        "Content-Type: application/octet-stream" "Content-Transfer-Encoding: base64" ""
      soak_lines "$n" 4096 ;;
    truncated-smime)  # a real enveloped-data, cut in half
      echo "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\""
      echo "Content-Transfer-Encoding: base64"
      echo
      head -n $(($(wc -l < enveloped.b64) / 2)) enveloped.b64 ;;
    garbage-cms)  # DER's first bytes, then noise
      echo "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\""
      echo "Content-Transfer-Encoding: base64"
      echo
      { printf '\x30\x82\x7f\xff\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03'; head -c 3000 /dev/urandom; } | base64 -w 76 ;;
    bad-base64)  # characters outside the alphabet, padding in the middle
      echo "Content-Type: text/plain; charset=us-ascii"
      echo "Content-Transfer-Encoding: base64"
      echo
      printf '%s\n' "c29hay1jbGVhci1tYXJrZXI=!!!*** soak-clear-marker $n" "QUJD=REVG==R0hJ" "%%%%" "////" ;;
    many-headers)  # 3000 header lines, 330 KB: the body after them is plain
      echo "Content-Type: text/plain; charset=us-ascii"
      printf 'soak-clear-marker %s for %s\n' "$n" "$rcpt" ;;
    long-header)  # one header line of 200 KB
      echo "Content-Type: text/plain; charset=us-ascii"
      printf 'soak-clear-marker %s for %s\n' "$n" "$rcpt" ;;
  esac
}

# soak_message N FILE: writes message N to FILE (LF line ends: smtp-source
# sends them as CRLF) and records it in the manifest; prints the recipient.
soak_message() {
  local n=$1 file=$2 kind rcpt size body
  kind=$(soak_kind "$n")
  rcpt=${soak_recipients[$((n % ${#soak_recipients[@]}))]}
  size=$(soak_size "$n" "$max_size")
  body=$file.body
  soak_body "$n" "$kind" "$rcpt" "$size" > "$body"
  {
    printf '%s\n' "From: Alice <alice@corp.example>" "To: <$rcpt@corp.example>" "Subject: soak $n ($kind)" \
      "Date: $(date -R)" "Message-ID: <soak-$n@corp.example>" "MIME-Version: 1.0"
    case $kind in
      many-headers) for i in $(seq 3000); do printf 'X-Filler-%s: %0100d\n' "$i" 0; done ;;
      long-header) printf 'X-Long: %s\n' "$(head -c 204800 /dev/zero | tr '\0' a)" ;;
    esac
    head -n 1 "$body"
    [[ $kind == truncated-smime || $kind == garbage-cms || $kind == bad-base64 ]] || echo
    tail -n +2 "$body"
  } > "$file"
  # What the recipient must read once it is decrypted: everything after
  # the blank line, line ends aside, and the empty line smtp-source sends
  # after the file's last.
  printf '%s %s %s %s %s\n' "$n" "$rcpt" "$kind" "$(stat -c %s "$file")" \
    "$({ sed '1,/^$/d' "$file"; echo; } | tr -d '\r' | sha256sum | cut -c1-64)" >> sent/manifest
  rm -f "$body"
  echo "$rcpt"
}

# soak_send_one N: message N from alice to its recipient, one SMTP session;
# the client's view (smtp-source's complaints, its exit code) in sent/N
soak_send_one() {
  local n=$1 rcpt
  rcpt=$(soak_message "$n" "outbox/$n.eml")
  smtp-source -m 1 -s 1 -M client.corp.example -f alice@corp.example -t "$rcpt@corp.example" \
    -F "outbox/$n.eml" "127.0.0.1:$POSTFIX_PORT" > "sent/$n" 2>&1
  echo "exit $?" >> "sent/$n"
  # The first few are kept: the checker's own test sends one in clear.
  if ((n < 30)); then mv "outbox/$n.eml" outbox-kept/; else rm -f "outbox/$n.eml"; fi
}

# soak_send_steady FIRST COUNT RATE: messages FIRST… FIRST+COUNT-1, one
# every 1/RATE seconds whatever the earlier ones are doing (at most 64 in
# flight: past that the rate is not being sustained, and the table's
# elapsed time shows it); returns once all are sent.
soak_send_steady() {
  local first=$1 count=$2 rate=$3 start i delay
  local -a senders=()
  start=$EPOCHREALTIME
  # The same enveloped-data for every truncated S/MIME message.
  [ -f enveloped.b64 ] || { echo "not sent" | openssl cms -encrypt -aes256 -outform DER keys/bob.pem | base64 -w 64 > enveloped.b64; }
  for ((i = 0; i < count; i++)); do
    delay=$(awk -v s="$start" -v i="$i" -v r="$rate" -v now="$EPOCHREALTIME" 'BEGIN { d = s + i / r - now; printf "%.3f", (d > 0 ? d : 0) }')
    [ "$delay" = 0.000 ] || sleep "$delay"
    if [ ${#senders[@]} -ge 64 ]; then
      wait "${senders[0]}"
      senders=("${senders[@]:1}")
    fi
    soak_send_one $((first + i)) &
    senders+=($!)
  done
  for i in "${senders[@]}"; do wait "$i"; done
}

# soak_drain SECONDS: Postfix's queue is empty and the sink has finished
# every file, within SECONDS
soak_drain() {
  local end=$((SECONDS + $1))
  until [ -z "$(postqueue -c "$POSTFIX_DIR/conf" -j 2> /dev/null)" ] &&
    [ "$(sink_files | wc -l)" = "$(find "$SINK_DIR" -type f | wc -l)" ]; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}

# soak_fds PID LIST: how many file descriptors PID holds; what each is, in LIST
soak_fds() {
  find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -printf '%f %l
' 2> /dev/null | sort -n > "$2"
  wc -l < "$2"
}

# soak_keystore_connections: how many connections keystored has open (the
# milter's pooled ones, at a quiet point)
soak_keystore_connections() { ss -xHnp state established | grep -c "pid=$keystore_pid,"; }

# soak_sample_rss INTERVAL PID… : "SECONDS RSS_KB…" a line, every INTERVAL
soak_sample_rss() {
  local interval=$1 start=$EPOCHREALTIME line p
  shift
  while :; do
    line=$(awk -v s="$start" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - s }')
    for p in "$@"; do line+=" $(awk '$1 == "VmRSS:" { print $2 }' "/proc/$p/status" 2> /dev/null || echo 0)"; done
    echo "$line"
    sleep "$interval"
  done
}

# soak_rss_report SAMPLES LIMIT: each daemon's RSS at the start, middle and
# end of the load and its least-squares slope over the second half, in KB
# a minute; "flat NAME yes" when that slope is under LIMIT
soak_rss_report() {
  awk -v limit="$2" '
    { t[NR] = $1; ks[NR] = $2; mi[NR] = $3 }
    function slope(v, from,   i, n, st, sv, stt, stv) {
      for (i = from; i <= NR; i++) { n++; st += t[i] / 60; sv += v[i]; stt += (t[i] / 60) ^ 2; stv += t[i] / 60 * v[i] }
      return n < 2 ? 0 : (n * stv - st * sv) / (n * stt - st * st)
    }
    END {
      if (NR < 2) { print "too few RSS samples"; print "flat keystored no"; print "flat milter no"; exit }
      for (m = 1; m < NR && t[m] < t[NR] / 2; m++) ;
      sk = slope(ks, m); sm = slope(mi, m)
      printf "%-10s %9s %9s %9s %22s\n", "RSS KB", "start", "mid", "end", "slope KB/min (2nd half)"
      printf "%-10s %9d %9d %9d %22.1f\n", "keystored", ks[1], ks[m], ks[NR], sk
      printf "%-10s %9d %9d %9d %22.1f\n", "milter", mi[1], mi[m], mi[NR], sm
      printf "(%d samples over %.0f s; flat: a slope under %d KB/min)\n", NR, t[NR], limit
      print "flat keystored " (sk < limit ? "yes" : "no")
      print "flat milter " (sm < limit ? "yes" : "no")
    }' "$1"
}

# soak_outcomes MAILLOG: "N OUTCOME QUEUE_ID" for every soak message
# Postfix logged: delivered (status=sent), deferred (a 4xx from the milter
# or a deferred delivery), refused (a 5xx), bounced, held, or accepted (in
# the queue, and nothing since)
soak_outcomes() {
  awk '
    match($0, /: [0-9A-Za-z]+: message-id=<soak-[0-9]+@/) {
      split(substr($0, RSTART + 2, RLENGTH - 2), f, /: message-id=<soak-|@/); id[f[1]] = f[2]
    }
    match($0, /: [0-9A-Za-z]+: (milter-)?reject: [^;]*: [45]\.[0-9]+\.[0-9]+ /) {
      s = substr($0, RSTART + 2, RLENGTH - 2); q = s; sub(/:.*/, "", q)
      c = s; sub(/ $/, "", c); sub(/.* /, "", c)
      out[q] = (c ~ /^4/ ? "deferred" : "refused") " " c
    }
    match($0, /: [0-9A-Za-z]+: milter-(hold|discard): /) {
      s = substr($0, RSTART + 2, RLENGTH - 2); q = s; sub(/:.*/, "", q); out[q] = "held"
    }
    match($0, /qmgr\[[0-9]+\]: [0-9A-Za-z]+: from=.*\(queue active\)/) {
      s = $0; sub(/.*qmgr\[[0-9]+\]: /, "", s); sub(/:.*/, "", s); if (!(s in out)) out[s] = "accepted"
    }
    / status=(sent|deferred|bounced) / {
      s = $0; sub(/.*\]: /, "", s); sub(/:.*/, "", s)
      st = $0; sub(/.* status=/, "", st); sub(/ .*/, "", st)
      out[s] = (st == "sent" ? "delivered" : st)
    }
    END { for (q in id) print id[q], (q in out ? out[q] : "logged-only"), q }' "$1"
}

# soak_inspect FILE KEYS: "N RECIPIENT STATE SHA256" for one file at the
# sink: STATE is ok (decrypted by its recipient's key, signed by alice),
# clear (not an enveloped-data, or a body marker in clear), undecryptable
# or unsigned; SHA256 is that of the decrypted body, line ends aside
soak_inspect() {
  local file=$1 keys=$2 n rcpt tmp state=ok sha=-
  n=$(sed -n 's/^Message-ID: <soak-\([0-9]*\)@.*/\1/p' "$file" | head -n 1)
  rcpt=$(sed -n 's/^X-Rcpt-Args: <\([^@]*\)@.*/\1/p' "$file" | head -n 1)
  tmp=$(mktemp)
  if grep -q 'soak-clear-marker' "$file" ||
    ! grep -qiE '^Content-Type: application/(x-)?pkcs7-mime;.*smime-type=enveloped-data' "$file"; then
    state=clear
  elif ! openssl cms -decrypt -in "$file" -recip "$keys/$rcpt.pem" -inkey "$keys/$rcpt.key" -out "$tmp" 2> /dev/null; then
    state=undecryptable
  elif ! openssl cms -verify -in "$tmp" -CAfile "$keys/chain.pem" -purpose smimesign \
    -verify_email alice@corp.example -out "$tmp.inner" 2> /dev/null; then
    state=unsigned
  else
    sha=$(sed '1,/^\r\?$/d' "$tmp.inner" | tr -d '\r' | sha256sum | cut -c1-64)
  fi
  rm -f "$tmp" "$tmp.inner"
  echo "${n:-none} ${rcpt:-none} $state $sha"
}

# soak_check_mailbox MANIFEST OUTCOMES SINK_DIR KEYS: "NAME COUNT" lines
# (sent, malformed_sent, accepted, delivered, deferred, refused, undefined,
# wellformed_not_delivered, lost, duplicated, clear, undecryptable,
# unsigned, mismatch, unknown), then a "problem …" line for each problem
soak_check_mailbox() {
  local manifest=$1 outcomes=$2 sink=$3 keys=$4 inspected
  inspected=$(mktemp)
  export -f soak_inspect
  find "$sink" -type f -print0 | xargs -0 -r -P 2 -I{} bash -c 'soak_inspect "$1" "$2"' _ {} "$keys" > "$inspected"
  awk '
    FILENAME == ARGV[1] { rcpt[$1] = $2; kind[$1] = $3; sha[$1] = $5; sent++; if ($3 != "plain" && $3 != "multipart") malformed++; next }
    FILENAME == ARGV[2] { out[$1] = $2; code[$1] = $3; next }
    {
      if (!($1 in rcpt)) { unknown++; print "problem: at the sink, not sent: message " $1; next }
      if ($2 != rcpt[$1]) { print "problem: message " $1 " reached " $2 ", not " rcpt[$1] }
      copies[$1]++
      if ($3 != "ok") { bad[$3]++; print "problem: message " $1 " (" kind[$1] ") at the sink " $3; next }
      if ($4 != sha[$1]) { mismatch++; print "problem: message " $1 " (" kind[$1] ") decrypts to another body" }
    }
    END {
      for (n in rcpt) {
        o = (n in out) ? out[n] : "none"
        taken = (o == "delivered" || o == "accepted" || o == "bounced" || o == "held")
        if (taken) accepted++
        if (o == "delivered") delivered++
        else if (o == "deferred") deferred++
        else if (o == "refused") refused++
        else { undefined++; print "problem: message " n " (" kind[n] "): no defined outcome in the log (" o ")" }
        if ((kind[n] == "plain" || kind[n] == "multipart") && o != "delivered") {
          wellformed_not_delivered++; print "problem: message " n " (" kind[n] ") not delivered: " o " " code[n]
        }
        if (taken && !(n in copies)) {
          lost++; print "problem: message " n " (" kind[n] ") accepted, not at the sink"
        }
        if (copies[n] > 1) { duplicated++; print "problem: message " n " at the sink " copies[n] " times" }
      }
      printf "sent %d\nmalformed_sent %d\naccepted %d\ndelivered %d\ndeferred %d\nrefused %d\nundefined %d\n", sent, malformed, accepted, delivered, deferred, refused, undefined
      printf "wellformed_not_delivered %d\nlost %d\nduplicated %d\nclear %d\nundecryptable %d\n", wellformed_not_delivered, lost, duplicated, bad["clear"], bad["undecryptable"]
      printf "unsigned %d\nmismatch %d\nunknown %d\n", bad["unsigned"], mismatch, unknown
    }' "$manifest" "$outcomes" "$inspected"
  rm -f "$inspected"
}

# soak_check_the_checker: the checker, given a mailbox of three messages
# delivered in this run, finds nothing wrong with it as it is, and finds a
# message duplicated, one lost, one delivered in clear, and one that
# arrived with another message's body (encrypted to the same recipient and
# signed by alice: only the checksum tells them apart).
soak_check_the_checker() {
  local picked=() n dir other=
  for n in $(awk '$3 == "plain" || $3 == "multipart" { print $1 }' sent/manifest | sort -n); do
    [ -f "outbox-kept/$n.eml" ] && [ "$(awk -v n="$n" '$1 == n { print $2 }' outcomes)" = delivered ] || continue
    if [ ${#picked[@]} -lt 3 ]; then
      picked+=("$n")
    elif [ "$(soak_recipient_of "$n")" = "$(soak_recipient_of "${picked[2]}")" ]; then
      other=$n
      break
    fi
  done
  if [ -z "$other" ]; then
    check "the checker's own test has four delivered messages to work on" false
    return
  fi
  rm -rf checker && mkdir -p checker/intact
  for n in "${picked[@]}"; do
    awk -v n="$n" '$1 == n' sent/manifest >> checker/manifest
    awk -v n="$n" '$1 == n' outcomes >> checker/outcomes
    cp "$(soak_sink_file "$n")" "checker/intact/$n"
  done
  local a=${picked[0]} b=${picked[1]} c=${picked[2]}
  for dir in duplicated lost swapped clear; do cp -r checker/intact "checker/$dir"; done
  cp "checker/intact/$a" "checker/duplicated/$a.again"
  rm "checker/lost/$b"
  soak_swap_body "checker/intact/$c" "$(soak_sink_file "$other")" > "checker/swapped/$c"
  # The message as it was sent, under the sink's envelope headers.
  { sed -n '/^X-/p; /^\r\?$/q' "checker/intact/$c"; sed 's/$/\r/' "outbox-kept/$c.eml"; } > "checker/clear/$c"
  for dir in intact duplicated lost swapped clear; do
    soak_check_mailbox checker/manifest checker/outcomes "checker/$dir" keys > "checker/$dir.report"
  done
  problems() { grep -c '^problem' "checker/$1.report"; }
  count_of() { awk -v k="$2" '$1 == k { print $2 }' "checker/$1.report"; }
  check "the checker finds nothing wrong with three messages as delivered" test "$(problems intact)" = 0
  check "the checker finds a message delivered twice" \
    bash -c "[ $(count_of duplicated duplicated) = 1 ] && grep -qx 'problem: message $a at the sink 2 times' checker/duplicated.report"
  check "the checker finds an accepted message missing" \
    bash -c "[ $(count_of lost lost) = 1 ] && grep -q '^problem: message $b (.*) accepted, not at the sink' checker/lost.report"
  check "the checker finds a message with another's body, encrypted and signed as it should be" \
    bash -c "[ $(count_of swapped mismatch) = 1 ] && grep -q '^problem: message $c (.*) decrypts to another body' checker/swapped.report"
  check "the checker finds a message delivered in clear" \
    bash -c "[ $(count_of clear clear) = 1 ] && grep -q '^problem: message $c (.*) at the sink clear' checker/clear.report"
}

soak_recipient_of() { awk -v n="$1" '$1 == n { print $2 }' sent/manifest; }
soak_sink_file() { grep -l "^Message-ID: <soak-$1@" "$SINK_DIR"/* | head -n 1; }

# soak_swap_body FILE OTHER: FILE's headers, but OTHER's MIME headers and
# body (what the milter made of it)
soak_swap_body() {
  awk '/^\r?$/ { exit } /^[ \t]/ { if (keep) print; next } { keep = $0 !~ /^(MIME-Version|Content-)/; if (keep) print }' "$1"
  awk 'body { print; next } /^\r?$/ { body = 1; print; next } /^[ \t]/ { if (keep) print; next }
    { keep = $0 ~ /^(MIME-Version|Content-)/; if (keep) print }' "$2"
}
