#!/usr/bin/env bash
# Runs the auth service on http://127.0.0.1:8000 against local PostgreSQL and Redis (started
# if needed), with its own database `gravity_auth`. Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
server=${TEST_DATABASE_URL%/*}
psql "$TEST_DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = 'gravity_auth'" | grep -q 1 \
    || psql "$TEST_DATABASE_URL" -qc 'CREATE DATABASE gravity_auth'
export DATABASE_URL="$server/gravity_auth"
export REDIS_URL="$TEST_REDIS_URL"
export PORT="${PORT:-8000}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
cargo build --release -p auth
echo "auth service on http://127.0.0.1:$PORT (API docs at /docs)" >&2
exec target/release/auth serve
