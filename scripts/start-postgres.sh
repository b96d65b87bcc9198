#!/usr/bin/env bash
# Starts Debian's PostgreSQL 15 (installing it if missing) with a role for Berth's tests, and prints
# an admin URL for BERTH_TEST_POSTGRES. Idempotent: a running server and an existing role are kept.
set -euo pipefail
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
if ! command -v pg_ctlcluster >/dev/null || [ ! -d /usr/lib/postgresql/15 ]; then
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15 >/dev/null
fi
if ! pg_lsclusters --no-header 2>/dev/null | grep -q '^15 *main'; then
    $SUDO pg_createcluster 15 main >&2
fi
if ! pg_lsclusters --no-header | grep -q '^15 *main .* online'; then
    $SUDO pg_ctlcluster 15 main start >&2
fi
for _ in $(seq 1 30); do
    $SUDO runuser -u postgres -- pg_isready -q && break
    sleep 1
done
$SUDO runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 >&2 <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'berth_test') THEN
        CREATE ROLE berth_test LOGIN CREATEDB PASSWORD 'berth_test';
    END IF;
END $$;
SQL
# Databases earlier test runs left behind.
$SUDO runuser -u postgres -- psql -qAt >&2 <<'SQL'
SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database WHERE datname LIKE 'berth\_%' \gexec
SQL
echo "postgres://berth_test:berth_test@127.0.0.1:5432/postgres"
