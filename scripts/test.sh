#!/usr/bin/env bash
# Runs the whole test suite: Swift tests on SQLite and on a throwaway PostgreSQL, then the
# end-to-end tests with the official Python SDKs, then a smoke run of the benchmark harness. Installs what it needs, starts PostgreSQL as
# the `postgres` user on a free port, and stops it afterwards. Fails (never skips) when
# PostgreSQL cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/lib.sh

ensure_apt_packages libpq-dev libsqlite3-dev pkg-config postgresql pgbouncer python3-venv shellcheck wrk nginx-light chromium chromium-driver
ensure_swift

# --- PostgreSQL -------------------------------------------------------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PGBIN/initdb" ] || { echo "error: PostgreSQL server binaries not found under /usr/lib/postgresql" >&2; exit 1; }
PGDIR=$(mktemp -d /tmp/lmsvr-pg.XXXXXX)
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDIR"
stop_postgres() {
    as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PGDIR"
}
trap stop_postgres EXIT
as_postgres "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
PGOPTS="-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c max_connections=400 -c fsync=off"
if ! as_postgres "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -t 30 -o "$PGOPTS" start >/dev/null; then
    echo "error: PostgreSQL did not start; its log follows" >&2
    cat "$PGDIR/log" >&2
    exit 1
fi
export LMSVR_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
export LMSVR_TEST_PG_BIN="$PGBIN"
export LMSVR_TEST_PG_DATA="$PGDIR/data"
export LMSVR_TEST_PG_OPTS="$PGOPTS"   # the outage test stops and restarts the server with these
echo "==> PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $PGPORT"

# --- Swift tests --------------------------------------------------------------------------------
swift build --build-tests
export LMSVR_BIN="$ROOT/.build/debug/lmsvr"
swift test --skip-build "$@"

# --- End-to-end tests with the official SDKs ----------------------------------------------------
if [ -d tests/e2e ] && [ $# -eq 0 ]; then
    VENV="$ROOT/.build/e2e-venv"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r tests/e2e/requirements.txt
    # The end-to-end tests run the gateway linked as the Docker image links it: the Swift
    # runtime in the binary (--static-swift-stdlib), where symbols that dlsym finds in a shared
    # runtime are hidden (docs/benchmarks.md, seventh pass). Its own scratch path: a static
    # build recompiles modules with other link entries, which would break the dynamic build.
    swift build --product lmsvr --static-swift-stdlib --scratch-path "$ROOT/.build-static"
    LMSVR_BIN="$(swift build --show-bin-path --scratch-path "$ROOT/.build-static")/lmsvr" \
        "$VENV/bin/python" -m pytest -q tests/e2e

    # --- Benchmark harness smoke run (seconds per phase; keeps bench/run.sh working) ------------
    bench/run.sh --smoke --bin-dir "$ROOT/.build/debug" --postgres-url "$LMSVR_TEST_POSTGRES_URL"
fi
