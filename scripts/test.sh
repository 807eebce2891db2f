#!/usr/bin/env bash
# Runs every test of the workspace against real PostgreSQL and Redis, starting them first.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
cargo test --workspace --locked "$@"
