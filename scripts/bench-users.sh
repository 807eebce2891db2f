#!/usr/bin/env bash
# Benchmarks the users service's GET /api/v1/users/me against a bare axum handler that
# answers a constant (services/service-kit/examples/bare_axum.rs), as the auth service's
# GET /api/v1/me is measured (scripts/bench-auth.sh): the same wrk load, the same caller
# headers on both (the identity the gateway signs, scripts/wrk/identity.lua), rounds
# alternated, medians reported.
#
# Needs PostgreSQL (scripts/dev-deps.sh starts it), psql, curl and wrk (installed with
# apt-get when missing). Creates a database of its own and drops it on exit.
#
# Tunables: USERS_PORT (8793), BARE_PORT (8790), LOAD_SECONDS (15), WARMUP_SECONDS (3),
# ROUNDS (3). Prints the figures and writes them to target/bench-users.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
USERS_PORT=${USERS_PORT:-8793}
BARE_PORT=${BARE_PORT:-8790}
LOAD_SECONDS=${LOAD_SECONDS:-15}
WARMUP_SECONDS=${WARMUP_SECONDS:-3}
ROUNDS=${ROUNDS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOG_DIR=$TARGET_DIR/bench-users
mkdir -p "$LOG_DIR"

eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
if ! command -v wrk >/dev/null; then
    if [[ $EUID -eq 0 ]]; then apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build --release -p users --bin users --example bench_identity
cargo build --release -p service-kit --example bare_axum

DB_NAME=bench_users_$(date -u +%Y%m%d%H%M%S)_$$
ADMIN_URL=$TEST_DATABASE_URL
DB_URL=${ADMIN_URL%/*}/$DB_NAME
USERS_PID= BARE_PID=
cleanup() {
    set +e
    for pid in $USERS_PID $BARE_PID; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT
psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null

# key=value lines; values hold `|`, so they are read, not evaluated.
while IFS='=' read -r key value; do
    export "$key=$value"
done < <("$TARGET_DIR/release/examples/bench_identity")

ready() {
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: $1 did not answer; see $LOG_DIR" >&2
    exit 1
}
DATABASE_URL=$DB_URL HOST=127.0.0.1 PORT=$USERS_PORT IDENTITY_PUBLIC_KEY=$IDENTITY_PUBLIC_KEY \
    "$TARGET_DIR/release/users" >"$LOG_DIR/users.log" 2>&1 &
USERS_PID=$!
BIND=127.0.0.1:$BARE_PORT "$TARGET_DIR/release/examples/bare_axum" >"$LOG_DIR/bare.log" 2>&1 &
BARE_PID=$!
ready "http://127.0.0.1:$USERS_PORT/health/ready"
ready "http://127.0.0.1:$BARE_PORT/me"
psql "$DB_URL" -X -q -v ON_ERROR_STOP=1 -c \
    "INSERT INTO profiles (user_id, email, display_name, locale, time_zone, created_at, updated_at)
     VALUES ('$BENCH_USER_ID', 'bench@example.com', 'Bench User', 'en-GB', 'Europe/London', now(), now())" >/dev/null

headers=()
IFS='|' read -ra pairs <<<"$BENCH_HEADERS"
for pair in "${pairs[@]}"; do headers+=(-H "${pair%%:*}: ${pair#*:}"); done
me_bytes=$(curl -fsS "${headers[@]}" "http://127.0.0.1:$USERS_PORT/api/v1/users/me" | wc -c)
bare_bytes=$(curl -fsS "http://127.0.0.1:$BARE_PORT/me" | wc -c)

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
errors() { awk '/Non-2xx|Socket errors/ {n++} END {print n+0}' "$1"; }
run() {
    local name=$1 url=$2
    wrk -d"${WARMUP_SECONDS}s" -t2 -c64 -s scripts/wrk/identity.lua "$url" >/dev/null
    wrk -d"${LOAD_SECONDS}s" -t2 -c64 --latency -s scripts/wrk/identity.lua "$url" >"$LOG_DIR/$name.txt"
}
users=() bare=() ratios=()
for round in $(seq 1 "$ROUNDS"); do
    run "users-$round" "http://127.0.0.1:$USERS_PORT/api/v1/users/me"
    run "bare-$round" "http://127.0.0.1:$BARE_PORT/me"
    u=$(rps "$LOG_DIR/users-$round.txt") b=$(rps "$LOG_DIR/bare-$round.txt")
    [[ $(errors "$LOG_DIR/users-$round.txt") == 0 ]] || { echo "error: non-2xx answers; see $LOG_DIR/users-$round.txt" >&2; exit 1; }
    users+=("$u") bare+=("$b") ratios+=("$(awk -v u="$u" -v b="$b" 'BEGIN {printf "%.1f", 100 * u / b}')")
    echo "round=$round users_me_per_s=$u bare_per_s=$b share=${ratios[-1]}%"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
{
    echo "users_me_bytes=$me_bytes bare_bytes=$bare_bytes rounds=$ROUNDS load_seconds=$LOAD_SECONDS"
    echo "median users_me_per_s=$(median "${users[@]}") bare_per_s=$(median "${bare[@]}") share=$(median "${ratios[@]}")% (per round: ${ratios[*]})"
} | tee "$TARGET_DIR/bench-users.txt"
