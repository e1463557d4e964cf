# OpenDKIM signing for corp.example on a loopback port of its own, for the
# tests that run mailkms beside a DKIM signer; sourced after lib.sh and
# smtp-sink.sh (free_port). The key record opendkim-genkey wrote stands in
# for DNS when dkim_verify.py checks what was delivered.
# shellcheck shell=bash

DKIM_PORT=
opendkim_pid=
opendkim_here=$(dirname "$(realpath "${BASH_SOURCE[0]}")")

# start_opendkim DIR: key, configuration and log in DIR; sets DKIM_PORT.
start_opendkim() {
  local dir=$1 end=$((SECONDS + 30))
  command -v opendkim > /dev/null && /usr/bin/python3 -c 'import dkim' 2> /dev/null ||
    { echo "opendkim or python3-dkim is missing: run scripts/install-deps.sh" >&2; return 1; }
  DKIM_PORT=$(free_port) || return 1
  mkdir -p "$dir"
  opendkim-genkey -D "$dir" -d corp.example -s mail -b 2048 || return 1
  cat > "$dir/opendkim.conf" <<CONF
Mode s
Domain corp.example
Selector mail
KeyFile $dir/mail.private
Socket inet:$DKIM_PORT@127.0.0.1
InternalHosts 127.0.0.1
RequireSafeKeys false
Syslog no
Background no
CONF
  opendkim -x "$dir/opendkim.conf" -f > "$dir/opendkim.log" 2>&1 &
  opendkim_pid=$!
  until ss -Hltn "sport = :$DKIM_PORT" | grep -q .; do
    kill -0 "$opendkim_pid" 2> /dev/null && [ "$SECONDS" -lt "$end" ] ||
      { echo "OpenDKIM does not listen" >&2; cat "$dir/opendkim.log" >&2; return 1; }
    sleep 0.05
  done
}

stop_opendkim() {
  [ -n "$opendkim_pid" ] && kill "$opendkim_pid" 2> /dev/null && wait "$opendkim_pid" 2> /dev/null
  opendkim_pid=
}

# dkim_verifies DIR MESSAGE: MESSAGE's DKIM signature verifies against DIR's key record.
dkim_verifies() { /usr/bin/python3 "$opendkim_here/dkim_verify.py" "$1/mail.txt" "$2"; }
# dkim_signed DIR MESSAGE: MESSAGE carries corp.example's signature, and it verifies.
dkim_signed() { grep -q '^DKIM-Signature: .*d=corp.example' "$2" && dkim_verifies "$1" "$2"; }
