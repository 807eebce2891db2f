#!/usr/bin/env bash
# Benchmarks the audit log (services/audit/examples/audit_bench.rs), in one run on this machine:
#   - records ingested per second from events: EVENTS events published with confirms to the
#     exchange every event passes through, from the first publish to the last record
#     committed by the running service (one batched subscription, the chain's head locked
#     per transaction);
#   - the time to verify a chain of CHAIN records (GET /api/v1/verify's walk: read, parse,
#     canonicalise, hash, compare) beside `sha256sum` of the same bytes (the bound).
#
# Needs PostgreSQL and RabbitMQ on loopback (scripts/dev-deps.sh starts them). Tunables:
# EVENTS (20000), CHAIN (1000000). Prints the figures and writes them to
# target/bench-audit.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
EVENTS=${EVENTS:-20000}
CHAIN=${CHAIN:-1000000}
eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
cargo build --release -p audit --example audit_bench
target/release/examples/audit_bench "$EVENTS" "$CHAIN" | tee target/bench-audit.txt
