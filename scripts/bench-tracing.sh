#!/usr/bin/env bash
# What traces cost on a service's hot path: service-kit's standard stack in front of a
# constant `GET /me` (services/service-kit/examples/bare_axum.rs with STANDARD_LAYERS=1, the
# stack every service runs), every request carrying a caller's `traceparent`, measured
#   - "spans":        as services run by default: a span per request (its ids drawn, the
#                     caller's parsed), nothing logged;
#   - "spans logged": as under `gravity up` (ACCESS_LOG=true): each request's line written
#                     with its trace, span and parent ids;
#   - "spans exported": each request's span sent over OTLP/HTTP (batched, protobuf) to a
#                     real receiver on this machine (service-kit's, counting what it
#                     decodes), nothing logged; its batch thread and HTTP client counted by
#                     callgrind with the rest;
#   - "before":       with BEFORE=<bare_axum binary> built from a revision without spans
#                     (the tracing-off baseline), when given.
# Rounds run the variants back to back (same machine state); the verdict is the median of
# the per-round ratios against the baseline ("before" if given, else "spans"). Then each
# variant's instructions per request under valgrind's callgrind (every thread of the
# server, its log writer's included; not the kernel's, not wrk's), which repeat to within
# tenths of a percent where requests per second on two shared cores vary by tens.
#
# Prints a Markdown summary and writes it to target/bench-tracing.md; wrk's reports are kept in
# target/bench-tracing/. Tunables: ROUNDS (3), LOAD_SECONDS (10), WARMUP_SECONDS (2), PORT (8793),
# OTLP_PORT (8795).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
LOAD_SECONDS=${LOAD_SECONDS:-10}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
PORT=${PORT:-8793}
OTLP_PORT=${OTLP_PORT:-8795}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOG_DIR=$TARGET_DIR/bench-tracing
mkdir -p "$LOG_DIR"
for tool in wrk valgrind; do
	command -v $tool >/dev/null || { echo "$tool is needed: apt-get install -y $tool" >&2; exit 1; }
done

cargo build -q --release -p service-kit --example bare_axum
CURRENT=$TARGET_DIR/release/examples/bare_axum
TRACEPARENT="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

SERVER_PID=
OTLP_PID=
stop() { [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; SERVER_PID=; return 0; }
# The receiver may have stopped already (it exits once it printed its count).
trap 'stop; if [[ -n $OTLP_PID ]]; then kill "$OTLP_PID" 2>/dev/null || :; fi' EXIT
# shellcheck source=scripts/bench/otlp.sh
. scripts/bench/otlp.sh
start_otlp_receiver "$OTLP_PORT" "$LOG_DIR/otlp-receiver.log"
# The collector a variant exports to: only "spans exported" has one.
otlp_of() { [[ $1 == spans-exported* ]] && echo "http://127.0.0.1:$OTLP_PORT"; return 0; }

# Runs one variant: binary, ACCESS_LOG value; prints requests per second.
measure() {
	local name=$1 binary=$2 access_log=$3
	BIND=127.0.0.1:$PORT STANDARD_LAYERS=1 ACCESS_LOG=$access_log \
		OTEL_EXPORTER_OTLP_ENDPOINT=$(otlp_of "$name") OTEL_SERVICE_NAME=bare_axum \
		"$binary" >"$LOG_DIR/$name.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 100); do
		curl -fs "http://127.0.0.1:$PORT/me" >/dev/null 2>&1 && break
		sleep 0.05
	done
	wrk -d"${WARMUP_SECONDS}s" -t2 -c64 -H "traceparent: $TRACEPARENT" "http://127.0.0.1:$PORT/me" >/dev/null
	wrk -d"${LOAD_SECONDS}s" -t2 -c64 --latency -H "traceparent: $TRACEPARENT" "http://127.0.0.1:$PORT/me" >"$LOG_DIR/$name.txt"
	stop
	awk '/Requests\/sec/ {print $2}' "$LOG_DIR/$name.txt"
}

declare -a VARIANTS=("spans" "spans-logged" "spans-exported")
[[ -n ${BEFORE:-} ]] && VARIANTS=("before" "${VARIANTS[@]}")
declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
	for variant in "${VARIANTS[@]}"; do
		case $variant in
		before) rps=$(measure "before-$round" "$BEFORE" false) ;;
		spans) rps=$(measure "spans-$round" "$CURRENT" false) ;;
		spans-logged) rps=$(measure "spans-logged-$round" "$CURRENT" true) ;;
		spans-exported) rps=$(measure "spans-exported-$round" "$CURRENT" false) ;;
		esac
		RESULTS[$variant,$round]=$rps
		echo "round $round $variant: $rps req/s" >&2
	done
done

# Instructions per request of one variant under callgrind: binary, ACCESS_LOG value.
instructions() {
	local name=$1 binary=$2 access_log=$3 out="$LOG_DIR/callgrind.$1"
	rm -f "$out" "$out".*
	BIND=127.0.0.1:$PORT STANDARD_LAYERS=1 ACCESS_LOG=$access_log \
		OTEL_EXPORTER_OTLP_ENDPOINT=$(otlp_of "$name") OTEL_SERVICE_NAME=bare_axum valgrind --tool=callgrind \
		--instr-atstart=no --callgrind-out-file="$out" "$binary" >"$LOG_DIR/$name.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 300); do
		curl -fs "http://127.0.0.1:$PORT/me" >/dev/null 2>&1 && break
		sleep 0.1
	done
	wrk -d5s -t2 -c16 -H "traceparent: $TRACEPARENT" "http://127.0.0.1:$PORT/me" >/dev/null
	callgrind_control -i on "$SERVER_PID" >/dev/null 2>&1
	wrk -d"${LOAD_SECONDS}s" -t2 -c16 -H "traceparent: $TRACEPARENT" "http://127.0.0.1:$PORT/me" >"$LOG_DIR/$name.txt"
	callgrind_control -i off "$SERVER_PID" >/dev/null 2>&1
	callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
	stop
	local requests total
	requests=$(awk '/requests in/ {print $1}' "$LOG_DIR/$name.txt")
	total=$(callgrind_annotate "$out.1" 2>/dev/null |
		awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
	echo $((total / requests))
}

declare -A COUNTS
for variant in "${VARIANTS[@]}"; do
	case $variant in
	before) COUNTS[$variant]=$(instructions before "$BEFORE" false) ;;
	spans) COUNTS[$variant]=$(instructions spans "$CURRENT" false) ;;
	spans-logged) COUNTS[$variant]=$(instructions spans-logged "$CURRENT" true) ;;
	spans-exported) COUNTS[$variant]=$(instructions spans-exported "$CURRENT" false) ;;
	esac
	echo "$variant: ${COUNTS[$variant]} instructions per request" >&2
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
BASE=${VARIANTS[0]}
{
	echo "| variant | req/s per round | median req/s | median ratio to $BASE |"
	echo "|---|---|---|---|"
	for variant in "${VARIANTS[@]}"; do
		rounds=$(for r in $(seq 1 "$ROUNDS"); do printf '%s ' "${RESULTS[$variant,$r]}"; done)
		med=$(for r in $(seq 1 "$ROUNDS"); do echo "${RESULTS[$variant,$r]}"; done | median)
		ratio=$(for r in $(seq 1 "$ROUNDS"); do
			awk -v a="${RESULTS[$variant,$r]}" -v b="${RESULTS[$BASE,$r]}" 'BEGIN {printf "%.4f\n", a / b}'
		done | median)
		echo "| $variant | $rounds| $med | $ratio |"
	done
	echo
	echo "wrk -d${LOAD_SECONDS}s -t2 -c64 --latency -H 'traceparent: ...' http://127.0.0.1:$PORT/me (after ${WARMUP_SECONDS} s warm-up), $ROUNDS rounds"
	echo
	echo "| variant | instructions per request (callgrind) | ratio to $BASE |"
	echo "|---|---|---|"
	for variant in "${VARIANTS[@]}"; do
		echo "| $variant | ${COUNTS[$variant]} | $(awk -v a="${COUNTS[$variant]}" -v b="${COUNTS[$BASE]}" 'BEGIN {printf "%.4f", a / b}') |"
	done
	echo
	echo "valgrind --tool=callgrind --instr-atstart=no, counting during wrk -d${LOAD_SECONDS}s -t2 -c16 after a 5 s warm-up"
	echo
	echo "spans the receiver decoded: $(stop_otlp_receiver "$LOG_DIR/otlp-receiver.log")"
	OTLP_PID=
} | tee "$TARGET_DIR/bench-tracing.md"
