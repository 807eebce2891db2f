#!/usr/bin/env bash
# Benchmarks the event backbone end to end against the raw bound of the same broker, in one
# run on this machine (services/service-kit/examples/events_bench.rs):
#   - raw bound: a bare publisher with publisher confirms (500 in flight) and a bare consumer
#     with manual acks (prefetch 64), persistent messages through a durable queue (as every
#     subscription's queue is), no database; the same through a transient queue is printed
#     for reference;
#   - Gravity: 16 writers committing changes with their events into the outbox
#     (EVENTS_PER_CHANGE per transaction), the relay publishing with confirms, a consumer
#     handling the events with their inbox rows and effects (the defaults: prefetch 256, 2
#     lanes for a batched subscription, up to 64 deliveries of a lane per transaction).
# Each round runs once with one event per change, once with EVENTS_PER_CHANGE_BIG (10), and
# once draining (DRAIN=1): the relay starts after every change committed, which measures how
# fast relay, broker and consumer empty a full outbox, apart from the commit rate.
# Knobs for exploring (environment): LANES (of the batched subscription), PREFETCH, BATCH,
# RELAY_BATCH.
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
EVENTS_PER_CHANGE_BIG=${EVENTS_PER_CHANGE_BIG:-10}
eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
cargo build --release -p service-kit --example events_bench
out=target/bench-events.txt
: > "$out"
for round in $(seq 1 "$ROUNDS"); do
    for per in 1 "$EVENTS_PER_CHANGE_BIG"; do
        echo "--- round $round ($EVENTS events, $per per change)" | tee -a "$out"
        EVENTS_PER_CHANGE=$per target/release/examples/events_bench "$EVENTS" | tee -a "$out"
    done
    echo "--- round $round ($EVENTS events, $EVENTS_PER_CHANGE_BIG per change, drained)" | tee -a "$out"
    DRAIN=1 EVENTS_PER_CHANGE=$EVENTS_PER_CHANGE_BIG target/release/examples/events_bench "$EVENTS" \
        | tee -a "$out"
done
