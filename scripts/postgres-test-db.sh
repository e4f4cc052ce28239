#!/usr/bin/env bash
# Prepares the local PostgreSQL 15 cluster for Drover's tests: starts it if it
# is not running and makes sure role `drover` (password `drover`, CREATEDB)
# exists. Idempotent; run as root. Prints the variable the tests read:
#
#   eval "$(scripts/postgres-test-db.sh)"
#   cargo test -p drover-manager
#
# Progress goes to stderr so that stdout is only the export line.
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=main
PG_PORT=5432

if [ "$(id -u)" -ne 0 ]; then
    echo "postgres-test-db.sh: run as root (it starts the cluster and runs psql as user postgres)" >&2
    exit 1
fi

status_of() {
    pg_lsclusters --no-header | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $4 }'
}

status="$(status_of)"
if [ -z "$status" ]; then
    echo "postgres-test-db.sh: no PostgreSQL cluster $PG_VERSION/$PG_CLUSTER (pg_lsclusters lists none)" >&2
    exit 1
fi
if [ "$status" != "online" ]; then
    echo "postgres-test-db.sh: starting PostgreSQL $PG_VERSION/$PG_CLUSTER" >&2
    # pg_ctlcluster may print notes such as "Removed stale pid file" on stdout.
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2
fi

# Wait until the server accepts connections (start returns early on some systems).
for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
        break
    fi
    sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
    echo "postgres-test-db.sh: PostgreSQL is not accepting connections on 127.0.0.1:$PG_PORT" >&2
    exit 1
fi

# Create or update the role; running it again just resets the password.
su postgres -c "psql -v ON_ERROR_STOP=1 -q -p $PG_PORT" >&2 <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drover') THEN
        CREATE ROLE drover LOGIN PASSWORD 'drover' CREATEDB;
    ELSE
        ALTER ROLE drover LOGIN PASSWORD 'drover' CREATEDB;
    END IF;
END
$$;
SQL

echo "export DROVER_TEST_POSTGRES_URL=postgres://drover:drover@127.0.0.1:$PG_PORT/postgres"
