#!/usr/bin/env bash
# Builds lmsvr (release) and runs the gateway on the SQLite default: ./data/lmsvr.db, port 8000.
# Installs the system libraries it needs first. Extra arguments go to `lmsvr serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_apt_packages libpq-dev libsqlite3-dev pkg-config
ensure_swift
swift build -c release --product lmsvr
exec .build/release/lmsvr serve "$@"
