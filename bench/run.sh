#!/usr/bin/env bash
# The benchmark harness in one command: installs wrk, nginx and PostgreSQL from Debian, builds
# lmsvr, the mock upstream and the drivers in release mode, runs every rung interleaved on
# 127.0.0.1 (bench/run.py) and writes bench/results/<date>-<sha>.json plus the table in
# docs/benchmarks.md. A full run takes about ten minutes; every phase is bounded in time.
#
#   bench/run.sh                       full run (by hand)
#   bench/run.sh --smoke [--bin-dir D] a few seconds per phase, to keep the harness working (CI)
#   bench/run.sh --help                every option of bench/run.py
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ARGS=()
BIN_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) ARGS+=(--profile smoke --no-report) ;;
        --bin-dir) BIN_DIR="$2"; ARGS+=(--bin-dir "$2"); shift ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done

ensure_apt_packages wrk nginx-light postgresql libpq-dev libsqlite3-dev pkg-config util-linux
ensure_swift
# The LiteLLM proxy as a peer rung (full runs only: it is a large install). Pinned for
# comparable runs; a failed install only drops the peer rung, loudly.
if [[ " ${ARGS[*]} " != *" smoke "* ]]; then
    VENV=.build/bench-venv
    if [ ! -x "$VENV/bin/litellm" ]; then
        python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]==1.108.7' \
            || echo "warning: could not install the LiteLLM proxy; running without the peer rung" >&2
    fi
    [ -x "$VENV/bin/litellm" ] && ARGS+=(--litellm "$VENV/bin/litellm")
fi
if [ -z "$BIN_DIR" ]; then
    for product in lmsvr lmsvr-fake-upstream bench-driver store-bench; do
        swift build -c release --product "$product" >/dev/null
    done
fi
exec python3 bench/run.py "${ARGS[@]}"
