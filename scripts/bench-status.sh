#!/usr/bin/env bash
# Measures `gravity status` while idle (a platform with a gateway, so the routes pane is
# read from its admin endpoint every refresh too): its refresh interval, the CPU it uses (target: under 2%
# of one core) and its memory. Brings up its own platform (target/bench-status/gravity.toml,
# name gstatus), runs the dashboard in a 150x40 tmux pane for MEASURE_SECONDS (30) after a
# 5 s settle, reads the process's CPU time and resident memory from /proc, then removes the
# platform. Needs tmux, cargo and Docker. Writes target/bench-status.md; exits 1 when the CPU
# target is missed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MEASURE_SECONDS=${MEASURE_SECONDS:-30}
DIR=target/bench-status
SESSION=gravity-bench-status-$$
mkdir -p "$DIR"
cat > "$DIR/gravity.toml" <<TOML
[platform]
name = "gstatus"
workspace = "../.."

[infrastructure.postgres]
image = "postgres"
version = "15"
port = 35432

[infrastructure.redis]
image = "redis"
version = "7"
port = 36379

[services.auth]
crate = "auth"
port = 38000
database = "auth"
depends_on = ["postgres", "redis"]

[services.auth.route]
prefix = "/auth"

[services.gateway]
crate = "gateway"
port = 38080
depends_on = ["auth", "redis"]
TOML

cargo build -q -p gravity -p auth -p gateway
G="$ROOT/target/debug/gravity"
cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    "$G" --file "$DIR/gravity.toml" down --volumes --yes >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$G" --file "$DIR/gravity.toml" up >/dev/null 2>&1
tmux new-session -d -s "$SESSION" -x 150 -y 40 -c "$ROOT/$DIR" "exec $G status"
sleep 5
pid=$(tmux display -p -t "$SESSION" '#{pane_pid}')
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(cpu_ticks)
sleep "$MEASURE_SECONDS"
t1=$(cpu_ticks)
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
screen=$(tmux capture-pane -p -t "$SESSION")
grep -q "4/4 up" <<<"$screen" && grep -q "gateway routes" <<<"$screen" || { echo "dashboard did not show the platform up:" >&2; echo "$screen" >&2; exit 1; }
cpu_pct=$(awk -v a="$t0" -v b="$t1" -v hz="$ticks" -v s="$MEASURE_SECONDS" 'BEGIN { printf "%.2f", (b - a) / hz / s * 100 }')
ok=$(awk -v c="$cpu_pct" 'BEGIN { print (c < 2.0) ? 1 : 0 }')
{
    echo "| measure | value | target |"
    echo "|---|---|---|"
    echo "| refresh interval | 1 s, and at once on a container start/stop/die event | |"
    echo "| CPU while idle, ${MEASURE_SECONDS} s, 4 resources | ${cpu_pct}% of one core | < 2%: $([[ $ok == 1 ]] && echo met || echo MISSED) |"
    echo "| resident memory (high-water mark) | $((rss_kib / 1024)) MiB ($((hwm_kib / 1024)) MiB) | |"
} | tee target/bench-status.md
[[ $ok == 1 ]]
