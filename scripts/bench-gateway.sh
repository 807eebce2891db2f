#!/usr/bin/env bash
# Benchmarks the gateway side by side with nginx (Debian's package) on this machine.
#
# One upstream (services/gateway/examples/bench_upstream.rs, a constant 13-byte answer), one
# load tool (wrk, same threads and connections for every target), three targets measured in
# alternating rounds:
#   - the upstream directly (the limit);
#   - nginx, `proxy_pass` to an `upstream` block with `keepalive` connections, sending the
#     upstream what the gateway sends it: the client's Host, X-Forwarded-For/-Proto/-Host and a
#     fresh X-Request-Id, with any identity headers the client sent cleared (target `nginx`,
#     the one the targets are judged against: the same job on the same upstream);
#   - the same nginx with only the required `proxy_pass` lines (target `nginx-bare`: the
#     upstream parses fewer headers, on the same cores, so it is reported beside);
#   - the gateway (release build).
# Two scenarios:
#   - plain: proxying only;
#   - edge: the gateway verifies a JWT (EdDSA, 1,000 distinct users' tokens, sent in turn by a
#     wrk script) and applies per-client and per-user limits (local GCRA, limits set far above
#     the load so nothing is refused); nginx applies `limit_req` per client address. Open-source
#     nginx cannot verify a JWT (auth_jwt is NGINX Plus only), so in this scenario nginx does
#     strictly less work than the gateway.
# Targets: the gateway's requests per second at least nginx's, and its p99 no worse, in both.
# The gateway also writes a W3C traceparent, which open-source nginx cannot make; nginx is not
# asked to.
# Also reported: CPU time (user + system) the target used per request during the measured run,
# which depends less than throughput on how the shared cores happened to be scheduled.
#
# The gateway signs each verified caller's identity assertion (once per token, remembered with
# it) and sends it upstream in X-Identity-Assertion, as under `gravity up`, with a key made
# for the run; IDENTITY=0 runs it without a key (no assertion: the gateway before signed
# identities), to measure what they cost.
#
# Needs cargo, openssl and apt-get (nginx and wrk are installed when missing). Prints a Markdown summary
# and writes it to target/bench-gateway.md; wrk reports and logs go to target/bench-gateway/.
# Exits 1 when a target is missed.
#
# What tracing costs, side by side: `gateway-traced` is the same gateway exporting every
# request's span over OTLP/HTTP to a real receiver on this machine (service-kit's, counting
# what it decodes; each request starts a sampled trace, the worst case), and
# `gateway-nobackend` exports to an endpoint where nothing listens (a collector that is down),
# and `gateway-sampled` exports one new trace in ten (OTEL_TRACES_SAMPLER=
# parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1; the callee services follow the
# gateway's decision), as a busy production platform would.
# The plain `gateway` has no endpoint, as under `gravity up` without a trace backend.
#
# Tunables: ROUNDS (3, medians reported), SECONDS_PER_RUN (10), CONNECTIONS (64),
# THREADS (2), UPSTREAM_PORT (8801), NGINX_PORT (8802), GATEWAY_PORT (8803),
# GATEWAY_ADMIN_PORT (8804), OTLP_PORT (8805; 8806 is left closed), GATEWAY (a gateway
# binary to measure instead of building this checkout's), TARGETS (all five by default).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
UPSTREAM_PORT=${UPSTREAM_PORT:-8801}
NGINX_PORT=${NGINX_PORT:-8802}
GATEWAY_PORT=${GATEWAY_PORT:-8803}
GATEWAY_ADMIN_PORT=${GATEWAY_ADMIN_PORT:-8804}
OTLP_PORT=${OTLP_PORT:-8805}
TARGETS=${TARGETS:-direct nginx-bare nginx gateway gateway-traced gateway-sampled gateway-nobackend}
IDENTITY=${IDENTITY:-1}
IDENTITY_KEY=""
if [[ $IDENTITY == 1 ]]; then
	# An Ed25519 PKCS#8 document, unpadded base64url, as GATEWAY_IDENTITY_KEY takes it.
	IDENTITY_KEY=$(openssl genpkey -algorithm ed25519 -outform DER | basenc --base64url | tr -d '=\n')
fi

# shellcheck source=scripts/bench/gateway-common.sh
. scripts/bench/gateway-common.sh
# shellcheck source=scripts/bench/otlp.sh
. scripts/bench/otlp.sh
install_missing nginx:nginx-light wrk:wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

OUT=target/bench-gateway
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}" ${OTLP_PID:-}; do kill "$pid" 2>/dev/null || true; done
	if [[ -f $WORK/nginx.pid ]]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "--- building (release)" >&2
cargo build --release --locked -p gateway --bin gateway --example bench_upstream >&2
BIN=target/release
GATEWAY=${GATEWAY:-$BIN/gateway}

"$BIN/examples/bench_upstream" "$UPSTREAM_PORT" "$WORK/tokens.txt" 1000 >"$OUT/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT"

start_otlp_receiver "$OTLP_PORT" "$OUT/otlp-receiver.log"

# wrk sends the tokens in turn, one per request.
export TOKENS_FILE=$WORK/tokens.txt

# What nginx sets on the way upstream to do the gateway's job (see the header comment).
NGINX_EDGE_HEADERS='proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-User-Id "";
      proxy_set_header X-User-Roles "";
      proxy_set_header X-Session-Id "";'

nginx_conf() { # $1: extra http-level directives, $2: extra location directives
	cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $1
  upstream bench { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    location / {
      $2
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
}

start_target() { # $1: target, $2: scenario
	case $1 in
	direct) ;;
	nginx | nginx-bare)
		local headers=""
		[[ $1 == nginx ]] && headers=$NGINX_EDGE_HEADERS
		if [[ $2 == edge ]]; then
			nginx_conf "limit_req_zone \$binary_remote_addr zone=perclient:10m rate=100000000r/s;" \
				"limit_req zone=perclient burst=100000000 nodelay;
      $headers"
		else
			nginx_conf "" "$headers"
		fi
		"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
		wait_port "$NGINX_PORT"
		;;
	gateway | gateway-traced | gateway-sampled | gateway-nobackend)
		gateway_conf "$2" >"$WORK/gateway.toml"
		local otlp="" sampler="" ratio=""
		[[ $1 == gateway-traced || $1 == gateway-sampled ]] && otlp=http://127.0.0.1:$OTLP_PORT
		[[ $1 == gateway-nobackend ]] && otlp=http://127.0.0.1:$((OTLP_PORT + 1))
		[[ $1 == gateway-sampled ]] && sampler=parentbased_traceidratio ratio=0.1
		GATEWAY_CONFIG=$WORK/gateway.toml GATEWAY_IDENTITY_KEY=$IDENTITY_KEY RUST_LOG=warn \
			OTEL_EXPORTER_OTLP_ENDPOINT=$otlp OTEL_SERVICE_NAME=gateway \
			OTEL_TRACES_SAMPLER=$sampler OTEL_TRACES_SAMPLER_ARG=$ratio \
			"$GATEWAY" >>"$OUT/gateway.log" 2>&1 &
		GATEWAY_PID=$!
		wait_port "$GATEWAY_PORT"
		if [[ $2 == edge ]]; then
			for _ in $(seq 1 100); do
				curl -fsS "http://127.0.0.1:$GATEWAY_ADMIN_PORT/health/ready" >/dev/null 2>&1 && break
				sleep 0.1
			done
		fi
		;;
	esac
}

stop_target() {
	case $1 in
	nginx | nginx-bare)
		kill "$(cat "$WORK/nginx.pid")"
		while [[ -f $WORK/nginx.pid ]]; do sleep 0.1; done
		;;
	gateway*)
		kill "$GATEWAY_PID"
		wait "$GATEWAY_PID" 2>/dev/null || true
		;;
	esac
}

port_of() {
	case $1 in direct) echo "$UPSTREAM_PORT" ;; nginx | nginx-bare) echo "$NGINX_PORT" ;; gateway*) echo "$GATEWAY_PORT" ;; esac
}

# Converts wrk's latency ("812.00us", "1.20ms", "2.01s") to milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else { printf "%s", v } }'
}

# CPU time (user + system, in clock ticks) the target's processes have used so far.
cpu_ticks() { # $1: target
	local pids=()
	case $1 in
	direct) pids=("${PIDS[0]}") ;;
	nginx | nginx-bare) mapfile -t pids < <(pgrep -P "$(cat "$WORK/nginx.pid")") ;;
	gateway*) pids=("$GATEWAY_PID") ;;
	esac
	local total=0 pid
	for pid in "${pids[@]}"; do
		total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$total"
}

run() { # $1: target, $2: scenario, $3: round -> "rps p50 p99 non2xx cpu_us_per_request"
	local target=$1 scenario=$2 round=$3 report
	report="$OUT/$scenario-$target-$round.txt"
	local script=()
	[[ $scenario == edge ]] && script=(-s scripts/wrk/tokens.lua)
	start_target "$target" "$scenario"
	# Warm-up: connections opened, caches filled.
	wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${script[@]}" "http://127.0.0.1:$(port_of "$target")/bench" >/dev/null
	local before after
	before=$(cpu_ticks "$target")
	wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "${script[@]}" \
		"http://127.0.0.1:$(port_of "$target")/bench" >"$report"
	after=$(cpu_ticks "$target")
	stop_target "$target"
	local rps p50 p99 bad
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$report")
	p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$report")")
	p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$report")")
	bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$report")
	local requests cpu
	requests=$(awk '/requests in/ {print $1}' "$report")
	cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
		'BEGIN {printf "%.1f", t * 1000000 / hz / n}')
	echo "$rps $p50 $p99 ${bad:-0} $cpu"
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A RESULTS
for scenario in plain edge; do
	for round in $(seq 1 "$ROUNDS"); do
		for target in $TARGETS; do
			echo "--- $scenario, round $round: $target" >&2
			read -r rps p50 p99 bad cpu < <(run "$target" "$scenario" "$round")
			if [[ $bad != 0 ]]; then
				echo "$target answered $bad requests with a non-2xx status in $scenario" >&2
				exit 1
			fi
			RESULTS[$scenario,$target,rps]+="$rps "
			RESULTS[$scenario,$target,p50]+="$p50 "
			RESULTS[$scenario,$target,p99]+="$p99 "
			RESULTS[$scenario,$target,cpu]+="$cpu "
		done
	done
done

m() { tr ' ' '\n' <<<"${RESULTS[$1]}" | grep -v '^$' | median; }

{
	echo "### Gateway against nginx ($(nproc) CPUs, wrk -t$THREADS -c$CONNECTIONS, ${SECONDS_PER_RUN}s runs, median of $ROUNDS rounds)"
	echo
	echo "| scenario | target | requests/s | p50 ms | p99 ms | CPU µs/request |"
	echo "|---|---|---:|---:|---:|---:|"
	for scenario in plain edge; do
		for target in $TARGETS; do
			echo "| $scenario | $target | $(m "$scenario,$target,rps") | $(m "$scenario,$target,p50") | $(m "$scenario,$target,p99") | $(m "$scenario,$target,cpu") |"
		done
	done
	echo
	for scenario in plain edge; do
		g_rps=$(m "$scenario,gateway,rps")
		for traced in gateway-traced gateway-sampled gateway-nobackend; do
			[[ " $TARGETS " == *" $traced "* ]] || continue
			change=$(awk -v t="$(m "$scenario,$traced,rps")" -v g="$g_rps" 'BEGIN {printf "%+.1f", 100 * (t - g) / g}')
			verdict=$(awk -v c="$change" 'BEGIN {print (c > -5) ? "met" : "MISSED"}')
			echo "- $scenario: $traced: throughput $change % against the gateway without an endpoint (target: under 5 % lost, $verdict), CPU $(m "$scenario,$traced,cpu") against $(m "$scenario,gateway,cpu") µs/request"
		done
		# The targets against nginx, when it ran.
		[[ " $TARGETS " == *" nginx "* && " $TARGETS " == *" nginx-bare "* ]] || continue
		n_rps=$(m "$scenario,nginx,rps")
		g_p99=$(m "$scenario,gateway,p99")
		n_p99=$(m "$scenario,nginx,p99")
		verdict_rps=$(awk -v g="$g_rps" -v n="$n_rps" 'BEGIN {print (g >= n) ? "met" : "MISSED"}')
		verdict_p99=$(awk -v g="$g_p99" -v n="$n_p99" 'BEGIN {print (g <= n) ? "met" : "MISSED"}')
		ratio=$(awk -v g="$g_rps" -v n="$n_rps" 'BEGIN {printf "%.1f", 100 * g / n}')
		bare=$(awk -v g="$g_rps" -v n="$(m "$scenario,nginx-bare,rps")" 'BEGIN {printf "%.1f", 100 * g / n}')
		echo "- $scenario: gateway throughput $ratio % of nginx's ($verdict_rps); p99 $g_p99 ms against $n_p99 ms ($verdict_p99); against nginx-bare: $bare %, p99 $g_p99 ms against $(m "$scenario,nginx-bare,p99") ms"
	done
	if [[ " $TARGETS " == *" gateway-traced "* ]]; then
		echo "- spans the receiver decoded over the whole run: $(stop_otlp_receiver "$OUT/otlp-receiver.log")"
	fi
} >target/bench-gateway.md
cat target/bench-gateway.md
if grep -q MISSED target/bench-gateway.md; then exit 1; fi
