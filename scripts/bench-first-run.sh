#!/usr/bin/env bash
# A first run as a new user has it: a fresh clone of REV (default HEAD), an empty target
# directory and none of Gravity's images (those labelled dev.gravity.managed are removed
# first), then the README's run command until the platform is healthy. Reports the time to
# build `gravity` alone and the whole first run. Crates already in cargo's download cache are
# not downloaded again (a new machine would also fetch them).
#
# Stops the shipped platform of this checkout first (`gravity down`, data kept), as the clone
# uses the same ports. The clone's platform is renamed (gravity-first-run) so it starts with
# no data of its own, and is removed with its data at the end.
#
#   scripts/bench-first-run.sh [REV]     # writes target/bench-first-run-<REV>.md
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REV=${1:-HEAD}
WORK=$(mktemp -d)
LOG=$ROOT/target/bench-first-run.log
mkdir -p "$ROOT/target"
cleanup() {
    if [[ -x $WORK/src/target/debug/gravity ]]; then
        (cd "$WORK/src" && target/debug/gravity down --volumes --yes >/dev/null 2>&1) || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f\n", b - a }'; }

if [[ -x $ROOT/target/debug/gravity ]]; then
    (cd "$ROOT" && target/debug/gravity down >/dev/null 2>&1) || true
fi
git clone -q "$ROOT" "$WORK/src"
git -C "$WORK/src" checkout -q "$REV"
commit=$(git -C "$WORK/src" rev-parse --short HEAD)
sed -i 's/^name = "gravity"$/name = "gravity-first-run"/' "$WORK/src/gravity.toml"
images=$(docker images -q --filter label=dev.gravity.managed=true | sort -u)
if [[ -n $images ]]; then
    # shellcheck disable=SC2086
    docker rmi -f $images >/dev/null
fi

cd "$WORK/src"
t0=$(now)
cargo build -q -p gravity
t1=$(now)
scripts/up.sh > "$LOG" 2>&1
t2=$(now)

build=$(elapsed "$t0" "$t1")
total=$(elapsed "$t0" "$t2")
{
    echo "| commit | \`cargo build -p gravity\` (s) | fresh clone to healthy platform (s) |"
    echo "|---|---|---|"
    echo "| $commit | $build | $total |"
    echo
    echo "Last lines of scripts/up.sh:"
    echo
    tail -n 12 "$LOG" | sed 's/^/    /'
} | tee "$ROOT/target/bench-first-run-$commit.md"
