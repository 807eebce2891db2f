#!/usr/bin/env bash
# Counts the instructions the gateway executes per proxied request, under valgrind's
# callgrind: unlike requests per second on shared cores, the count repeats to within a few
# tenths of a percent from run to run, so it shows whether a change to the request path made
# it cheaper even when throughput figures are lost in scheduling noise.
#
# Same upstream, token list and scenarios as scripts/bench-gateway.sh (plain proxying; edge:
# JWT verification and per-client and per-user limits). The gateway runs under callgrind with
# instrumentation off while it starts and warms up (connections opened, every token verified
# once per serving thread), then counts during a fixed-length load from wrk. Only user-space
# instructions of the gateway process are counted (not the kernel's, not the load tool's).
#
# Each scenario is counted twice: `off` (no OTLP endpoint, as by default) and `traced` (every
# request's span exported over OTLP/HTTP to a real receiver on this machine, each request
# starting a sampled trace: the worst case), so what tracing costs the gateway is a count too.
#
# Needs cargo and apt-get (valgrind and wrk are installed when missing). Prints a Markdown
# table and writes it to target/bench-gateway-instructions.md.
#
# Tunables: SECONDS_PER_RUN (10), CONNECTIONS (16), GATEWAY (a gateway binary to measure
# instead of building this checkout's), UPSTREAM_PORT (8811), GATEWAY_PORT (8813),
# GATEWAY_ADMIN_PORT (8814), OTLP_PORT (8815), KEEP (a directory to keep the callgrind
# profiles in, for callgrind_annotate).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-16}
UPSTREAM_PORT=${UPSTREAM_PORT:-8811}
GATEWAY_PORT=${GATEWAY_PORT:-8813}
GATEWAY_ADMIN_PORT=${GATEWAY_ADMIN_PORT:-8814}
OTLP_PORT=${OTLP_PORT:-8815}

# shellcheck source=scripts/bench/gateway-common.sh
. scripts/bench/gateway-common.sh
# shellcheck source=scripts/bench/otlp.sh
. scripts/bench/otlp.sh
install_missing valgrind:valgrind wrk:wrk

echo "--- building (release)" >&2
cargo build --release --locked -p gateway --bin gateway --example bench_upstream >&2
GATEWAY=${GATEWAY:-target/release/gateway}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	# The receiver may have stopped already (it exits once it printed its count).
	if [[ -n ${OTLP_PID:-} ]]; then kill "$OTLP_PID" 2>/dev/null || :; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

target/release/examples/bench_upstream "$UPSTREAM_PORT" "$WORK/tokens.txt" 1000 >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT"

export TOKENS_FILE=$WORK/tokens.txt
start_otlp_receiver "$OTLP_PORT" "$WORK/otlp-receiver.log"

measure() { # $1: scenario, $2: off or traced -> "requests instructions"
	local scenario=$1 out="$WORK/callgrind.$1-$2" otlp=""
	[[ $2 == traced ]] && otlp=http://127.0.0.1:$OTLP_PORT
	gateway_conf "$scenario" >"$WORK/gateway.toml"
	GATEWAY_CONFIG=$WORK/gateway.toml RUST_LOG=warn \
		OTEL_EXPORTER_OTLP_ENDPOINT=$otlp OTEL_SERVICE_NAME=gateway valgrind --tool=callgrind \
		--instr-atstart=no --callgrind-out-file="$out" "$GATEWAY" >"$WORK/gateway.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	for _ in $(seq 1 300); do
		curl -fsS "http://127.0.0.1:$GATEWAY_ADMIN_PORT/health/ready" >/dev/null 2>&1 && break
		sleep 0.2
	done
	local script=()
	[[ $scenario == edge ]] && script=(-s scripts/wrk/tokens.lua)
	local url="http://127.0.0.1:$GATEWAY_PORT/bench"
	# Warm-up long enough for every token to be verified on every serving thread.
	wrk -t2 -c"$CONNECTIONS" -d20s "${script[@]}" "$url" >/dev/null
	callgrind_control -i on "$pid" >/dev/null
	wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "${script[@]}" "$url" >"$WORK/wrk.$scenario"
	callgrind_control -i off "$pid" >/dev/null
	callgrind_control -d "$pid" >/dev/null
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	local requests instructions
	requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.$scenario")
	# The dump taken on request (`.1`), not the one written at exit.
	instructions=$(callgrind_annotate "$out.1" 2>/dev/null |
		awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
	[[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$out.1" "$KEEP/callgrind.$scenario-$2"
	echo "$requests $instructions"
}

{
	echo "### Gateway instructions per request (callgrind, wrk -t2 -c$CONNECTIONS, ${SECONDS_PER_RUN}s)"
	echo
	echo "| scenario | spans | requests counted | instructions | instructions/request |"
	echo "|---|---|---:|---:|---:|"
	for scenario in plain edge; do
		for variant in off traced; do
			echo "--- $scenario, $variant" >&2
			read -r requests instructions < <(measure "$scenario" "$variant")
			echo "| $scenario | $variant | $requests | $instructions | $((instructions / requests)) |"
		done
	done
	echo
	echo "spans the receiver decoded: $(stop_otlp_receiver "$WORK/otlp-receiver.log")"
} >target/bench-gateway-instructions.md
cat target/bench-gateway-instructions.md
