#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster on loopback and creates the role the tests use
# (`scaivault`, password `scaivault`, allowed to create databases: every test makes its own).
# Prints the admin URL the tests read from SCAIVAULT_TEST_PG. Idempotent.
set -euo pipefail
# Only the URL goes to stdout (the caller captures it): pg_ctlcluster, for one, prints notes such as
# "Removed stale pid file." on stdout, which once ended up in front of the URL.
{
    ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
    if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main"' | grep -q .; then
        pg_createcluster "$ver" main >/dev/null
    fi
    conf=/etc/postgresql/$ver/main
    # Loopback only; enough connections for two daemons per test and tests running in parallel.
    sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
    sed -i "s/^#\?max_connections.*/max_connections = 500/" "$conf/postgresql.conf"
    if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
        pg_ctlcluster "$ver" main start
    fi
    for _ in $(seq 1 50); do
        runuser -u postgres -- pg_isready -q -h 127.0.0.1 && break
        sleep 0.2
    done
    runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scaivault') THEN
    CREATE ROLE scaivault LOGIN CREATEDB PASSWORD 'scaivault';
  END IF;
END $$;
SQL
} >&2
echo "postgres://scaivault:scaivault@127.0.0.1:5432/postgres"
