#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests (OMOP CDM reader, iop_research.datasets.omop).
#
#   .ci/postgres.sh start   # initdb + start; prints the URL to put in IOP_TEST_PG_URL
#   .ci/postgres.sh url     # print the URL of the running cluster
#   .ci/postgres.sh stop    # stop and delete the cluster
#
# The cluster lives in $IOP_PG_DIR (default: $TMPDIR/iop-research-pg-<port>) and listens on
# 127.0.0.1:$IOP_PG_PORT only (default 54329; its Unix socket stays inside the cluster directory),
# with trust authentication for user postgres and one database, iop_test. PostgreSQL refuses to
# run as root: as root, the directory is chowned to the postgres user and the server runs as it.
# Needs the Debian `postgresql` package (initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin).
set -euo pipefail

port="${IOP_PG_PORT:-54329}"
dir="${IOP_PG_DIR:-${TMPDIR:-/tmp}/iop-research-pg-$port}"
db=iop_test
url="postgresql://postgres@127.0.0.1:$port/$db"

bindir() {  # the server binaries (psql/createdb live beside initdb there, not always on PATH)
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ] && [ -x "$found/psql" ]; then echo "$found"; return; fi
  if command -v initdb >/dev/null 2>&1 && command -v psql >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return
  fi
  echo "postgres.sh: initdb/psql not found; install PostgreSQL (apt-get install postgresql)" >&2
  exit 2
}

as_pg() {  # run a command line as the cluster owner
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

case "${1:-}" in
  start)
    bin=$(bindir)
    mkdir -p "$dir/data" "$dir/sock"
    chmod 700 "$dir/data"
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "'$bin/initdb' -D '$dir/data' -U postgres --auth=trust -E UTF8 --locale=C >'$dir/initdb.log' 2>&1"
    fi
    if ! as_pg "'$bin/pg_ctl' -D '$dir/data' status" >/dev/null 2>&1; then
    as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 \
      -o \"-p $port -k '$dir/sock' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
          -c full_page_writes=off -c shared_buffers=256MB -c work_mem=64MB -c max_connections=20\" start" >/dev/null
    fi
    exists=$(as_pg "'$bin/psql' -h 127.0.0.1 -p $port -U postgres -d postgres -tAc \
      \"SELECT 1 FROM pg_database WHERE datname = '$db'\"")
    if [ "$exists" != 1 ]; then as_pg "'$bin/createdb' -h 127.0.0.1 -p $port -U postgres $db"; fi
    echo "$url"
    ;;
  url)
    echo "$url"
    ;;
  stop)
    bin=$(bindir)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_pg "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|url|stop" >&2
    exit 2
    ;;
esac
