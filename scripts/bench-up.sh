#!/usr/bin/env bash
# Benchmarks `gravity up` against `docker-compose up` of the file `gravity export compose`
# writes, side by side on this machine, with every image already present:
#   - cold start to all-healthy from no containers and no data, PostgreSQL, Redis, RabbitMQ
#     and the auth service: `gravity up` (which also creates the service's database and role,
#     its Redis and broker users, and applies migrations) against `docker-compose up -d` plus
#     waiting until every container's health check passes (the exported file provisions with
#     one-shot postgres-init and rabbitmq-init services and lets the services migrate
#     themselves). Target: gravity no slower.
#   - warm `gravity up` on the running, unchanged platform. Target: under 0.5 s.
#
# Uses its own platform (target/bench-up/gravity.toml, name gbench, ports 25432, 26379, 25672,
# 28000)
# and removes it, and the compose project gbench-compose, when done. Needs cargo, Docker,
# docker-compose and mmdebstrap when no registry is reachable (scripts/dev-deps.sh installs it).
#
# Prints a Markdown summary and writes it to target/bench-up.md. Exits 1 when a target is
# missed. Tunables: ROUNDS (5: cold-start rounds, each tool once per round, medians reported),
# WARM_RUNS (10).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-5}
WARM_RUNS=${WARM_RUNS:-10}
DIR=target/bench-up
COMPOSE_PROJECT=gbench-compose
mkdir -p "$DIR"

cat > "$DIR/gravity.toml" <<TOML
[platform]
name = "gbench"
workspace = "../.."

[infrastructure.postgres]
image = "postgres"
version = "15"
port = 25432

[infrastructure.redis]
image = "redis"
version = "7"
port = 26379

[infrastructure.rabbitmq]
port = 25672

[services.auth]
crate = "auth"
port = 28000
database = "auth"
depends_on = ["postgres", "redis", "rabbitmq"]
TOML

cargo build -q -p gravity -p auth
G="$ROOT/target/debug/gravity"
gravity() { "$G" --file "$DIR/gravity.toml" "$@"; }
compose() { docker-compose -p "$COMPOSE_PROJECT" -f "$DIR/docker-compose.yml" "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }
leq() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }
cleanup() {
    gravity down --volumes --yes >/dev/null 2>&1 || true
    [[ -f $DIR/docker-compose.yml ]] && compose down -v >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "preparing: images present, compose file exported" >&2
gravity up >/dev/null 2>&1
gravity export compose -o "$DIR/docker-compose.yml" 2>/dev/null
gravity down --volumes --yes >/dev/null 2>&1

# Waits until every container of the compose project that has a health check is healthy.
wait_compose_healthy() {
    local deadline=$(( $(date +%s) + 120 ))
    while (( $(date +%s) < deadline )); do
        local ids states
        ids=$(compose ps -q postgres redis rabbitmq auth 2>/dev/null || true)
        if [[ $(wc -w <<<"$ids") -eq 4 ]]; then
            # shellcheck disable=SC2086
            states=$(docker inspect -f '{{.State.Health.Status}}' $ids | sort -u)
            [[ $states == healthy ]] && return 0
        fi
        sleep 0.05
    done
    echo "compose platform never became healthy" >&2
    return 1
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$DIR/gravity-cold.txt"; : > "$DIR/compose-cold.txt"; : > "$DIR/gravity-warm.txt"
for round in $(seq 1 "$ROUNDS"); do
    t0=$(now); gravity up >/dev/null 2>&1; t1=$(now)
    elapsed "$t0" "$t1" >> "$DIR/gravity-cold.txt"
    curl -fsS http://127.0.0.1:28000/health/ready >/dev/null
    if (( round == 1 )); then
        for _ in $(seq 1 "$WARM_RUNS"); do
            t0=$(now); gravity up >/dev/null 2>&1; t1=$(now)
            elapsed "$t0" "$t1" >> "$DIR/gravity-warm.txt"
        done
    fi
    gravity down --volumes --yes >/dev/null 2>&1

    t0=$(now); compose up -d >/dev/null 2>&1; wait_compose_healthy; t1=$(now)
    elapsed "$t0" "$t1" >> "$DIR/compose-cold.txt"
    curl -fsS http://127.0.0.1:28000/health/ready >/dev/null
    compose down -v >/dev/null 2>&1
    echo "round $round: gravity $(tail -1 "$DIR/gravity-cold.txt" | cut -c1-5) s, compose $(tail -1 "$DIR/compose-cold.txt" | cut -c1-5) s" >&2
done

g_cold=$(median < "$DIR/gravity-cold.txt")
c_cold=$(median < "$DIR/compose-cold.txt")
g_warm=$(median < "$DIR/gravity-warm.txt")
g_warm_max=$(sort -g "$DIR/gravity-warm.txt" | tail -1)
cold_ok=$(leq "$g_cold" "$c_cold")
warm_ok=$(leq "$g_warm_max" 0.499)
verdict() { [[ $1 == 1 ]] && echo met || echo MISSED; }

{
    echo "| measure | gravity | docker-compose | target |"
    echo "|---|---|---|---|"
    printf '| cold start to all-healthy, median of %s (s) | %.2f | %.2f | gravity no slower: %s |\n' \
        "$ROUNDS" "$g_cold" "$c_cold" "$(verdict "$cold_ok")"
    printf '| warm `gravity up`, median of %s (max) (s) | %.3f (%.3f) | - | < 0.5 s: %s |\n' \
        "$WARM_RUNS" "$g_warm" "$g_warm_max" "$(verdict "$warm_ok")"
    echo
    echo "cold rounds, gravity (s): $(paste -sd' ' "$DIR/gravity-cold.txt" | awk '{for(i=1;i<=NF;i++) printf "%.2f ", $i}')"
    echo
    echo "cold rounds, docker-compose (s): $(paste -sd' ' "$DIR/compose-cold.txt" | awk '{for(i=1;i<=NF;i++) printf "%.2f ", $i}')"
} | tee target/bench-up.md

[[ $cold_ok == 1 && $warm_ok == 1 ]]
