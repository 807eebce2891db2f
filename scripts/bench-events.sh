#!/usr/bin/env bash
# Benchmarks the event backbone end to end against the raw bound of the same broker, in one
# run on this machine (services/service-kit/examples/events_bench.rs):
#   - raw bound: a bare publisher with publisher confirms (500 in flight) and a bare consumer
#     with manual acks (prefetch 64), no database;
#   - Gravity: 16 writers each committing one change with its event per transaction into the
#     outbox, the relay publishing with confirms, a consumer handling each event in one
#     transaction with its inbox row and its effect (prefetch 64, 16 lanes).
# Target: Gravity at least 60% of the raw bound, every effect exactly once. Also the resident
# memory of the broker and of the process relaying and consuming, idle and under the load.
#
# Needs PostgreSQL and RabbitMQ on loopback (scripts/dev-deps.sh starts them). Tunables:
# EVENTS (20000 per round), ROUNDS (3). Prints every round's figures and writes them to
# target/bench-events.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
EVENTS=${EVENTS:-20000}
ROUNDS=${ROUNDS:-3}
eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
cargo build --release -p service-kit --example events_bench
out=target/bench-events.txt
: > "$out"
for round in $(seq 1 "$ROUNDS"); do
    echo "--- round $round ($EVENTS events)" | tee -a "$out"
    target/release/examples/events_bench "$EVENTS" | tee -a "$out"
done
