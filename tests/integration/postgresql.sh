#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests, made by initdb in a temporary
# directory and served on 127.0.0.1 at a port picked here: the one way the
# tests start PostgreSQL. Nothing of the system's clusters is touched.
#
#   postgresql.sh start STATE   start a cluster; STATE/conninfo is then a libpq
#                               connection string to its maintenance database
#   postgresql.sh stop STATE    stop it and remove its files
#
# Sourced, it gives the same as functions: pg_start STATE, pg_stop STATE,
# pg_as_owner CMD… (runs CMD as the cluster's owner), and for a test that
# CTest runs beside the cluster (MAILKMS_TEST_POSTGRESQL names its conninfo
# file): pg_test_database NAME (a new, empty database NAME; prints its
# connection string) and pg_sql NAME SQL (runs SQL in it, prints the rows).
# For a failover, beside a cluster started by pg_start:
#
#   pg_standby PRIMARY STATE [NAME]  a streaming-replication standby of the
#                               running cluster PRIMARY (its state directory),
#                               made by pg_basebackup on loopback and started
#                               at a port picked here; NAME (default
#                               "standby") is its application_name in the
#                               primary's pg_stat_replication and
#                               synchronous_standby_names. STATE as pg_start's.
#   pg_promote STATE            promotes the standby; waits until it is one no
#                               more and takes writes
#   pg_shutdown STATE [MODE]    stops the cluster (pg_ctl -m MODE, fast by
#                               default; immediate is a crash) and keeps its
#                               files: pg_stop still removes them
#
# initdb refuses to run as root, so as root the cluster belongs to the
# postgres user (Debian's postgresql package makes it), and lives under
# /tmp, which that user can reach (a 0700 home may hold the build).

pg_bin() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2> /dev/null | sort -V | tail -n 1)
  if [ -z "$initdb" ]; then
    echo "postgresql.sh: no PostgreSQL server (initdb) installed; run scripts/install-deps.sh" >&2
    return 1
  fi
  dirname "$initdb"
}

pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_start() {
  local state=$1 bin cluster
  bin=$(pg_bin) || return 1
  mkdir -p "$state"
  cluster=$(mktemp -d /tmp/mailkms-pg.XXXXXX) || return 1
  [ "$(id -u)" -ne 0 ] || chown postgres: "$cluster"
  echo "$cluster" > "$state/cluster"
  # Test data only: no fsync, so that each test's CREATE DATABASE is cheap.
  pg_as_owner "$bin/initdb" -D "$cluster/data" -A trust -U postgres -E UTF8 --locale=C --no-sync \
    > "$cluster/initdb.log" 2>&1 || { cat "$cluster/initdb.log" >&2; return 1; }
  pg_serve "$state"
}

# pg_serve STATE: starts the cluster in STATE/cluster's data directory on
# 127.0.0.1 at a free port, and writes STATE/conninfo.
pg_serve() {
  local state=$1 bin cluster port
  bin=$(pg_bin) || return 1
  cluster=$(cat "$state/cluster") || return 1
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 12000))
    (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && continue
    if pg_as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 \
      -o "-p $port -h 127.0.0.1 -k $cluster -c fsync=off -c full_page_writes=off -c max_connections=200" \
      start > /dev/null; then
      echo "host=127.0.0.1 port=$port user=postgres dbname=postgres" > "$state/conninfo"
      return 0
    fi
  done
  echo "postgresql.sh: the cluster in $cluster did not start:" >&2
  tail -n 20 "$cluster/server.log" >&2
  return 1
}

# The base backup copies the primary's configuration (its
# postgresql.auto.conf too) and, with -R, writes standby.signal and a
# primary_conninfo that carries the application_name given in -d.
pg_standby() {
  local primary=$1 state=$2 name=${3:-standby} bin cluster port
  bin=$(pg_bin) || return 1
  port=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' "$primary/conninfo") || return 1
  [ -n "$port" ] || { echo "postgresql.sh: no running cluster in $primary" >&2; return 1; }
  mkdir -p "$state"
  cluster=$(mktemp -d /tmp/mailkms-pg.XXXXXX) || return 1
  [ "$(id -u)" -ne 0 ] || chown postgres: "$cluster"
  echo "$cluster" > "$state/cluster"
  pg_as_owner "$bin/pg_basebackup" -d "host=127.0.0.1 port=$port user=postgres application_name=$name" \
    -D "$cluster/data" -R -X stream -c fast --no-sync > "$cluster/basebackup.log" 2>&1 ||
    { cat "$cluster/basebackup.log" >&2; return 1; }
  pg_serve "$state"
}

pg_promote() {
  local state=$1 bin cluster
  bin=$(pg_bin) || return 1
  cluster=$(cat "$state/cluster") || return 1
  pg_as_owner "$bin/pg_ctl" -D "$cluster/data" -w -t 60 promote > /dev/null ||
    { tail -n 20 "$cluster/server.log" >&2; return 1; }
}

pg_shutdown() {
  local state=$1 mode=${2:-fast} bin cluster
  bin=$(pg_bin) || return 1
  cluster=$(cat "$state/cluster") || return 1
  pg_as_owner "$bin/pg_ctl" -D "$cluster/data" -m "$mode" -w -t 60 stop > /dev/null
}

pg_stop() {
  local state=$1 bin cluster
  [ -f "$state/cluster" ] || return 0
  cluster=$(cat "$state/cluster")
  bin=$(pg_bin) || return 1
  [ ! -d "$cluster/data" ] || pg_as_owner "$bin/pg_ctl" -D "$cluster/data" -m immediate -w stop > /dev/null 2>&1 || true
  rm -rf "$cluster" "$state/cluster" "$state/conninfo"
}

pg_server() {
  local server
  server=$(cat "${MAILKMS_TEST_POSTGRESQL:?names the conninfo file of the test cluster}") || return 1
  [ -n "$server" ] || { echo "postgresql.sh: $MAILKMS_TEST_POSTGRESQL is empty" >&2; return 1; }
  echo "$server"
}

pg_test_database() {
  local server
  server=$(pg_server) || return 1
  PGOPTIONS="-c client_min_messages=warning" psql "$server" -qX -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" \
    > /dev/null || return 1
  echo "$server dbname=$1"
}

pg_sql() {
  local server
  server=$(pg_server) || return 1
  psql "$server dbname=$1" -qXAt -v ON_ERROR_STOP=1 -c "$2"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case ${1:-} in
    start) pg_stop "$2" && pg_start "$2" ;;
    stop) pg_stop "$2" ;;
    *) echo "usage: $0 start|stop STATE" >&2; exit 2 ;;
  esac
fi
