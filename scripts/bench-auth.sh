#!/usr/bin/env bash
# Benchmarks the auth service on this machine against its targets:
#   - POST /api/v1/login reaches at least 90% of the argon2id verifications per second the
#     machine manages alone (a login costs one verification, so that is its ceiling);
#   - GET /api/v1/me reaches at least 70% of the requests per second of a bare axum handler
#     that returns a constant;
#   - 2,000 registrations from 50 concurrent clients all reach the database (nothing lost
#     under load), with no 5xx;
# and reports the service's resident memory, idle and under load.
# What tracing costs, side by side with the same service without: a second auth service
# exports every /me request's span (and its Redis and database children) over OTLP/HTTP to a
# real receiver on this machine (service-kit's, counting what it decodes), in the same
# alternating rounds; target under 5 % of throughput lost. The service's own CPU time per
# request is reported beside, for both: the collector decodes on the same cores, which
# throughput counts against the service and CPU per request does not.
#
# Starts PostgreSQL and Redis with scripts/dev-deps.sh unless ADMIN_DATABASE_URL (a role allowed
# to create databases) and REDIS_URL are given; needs cargo, curl, psql, python3 and wrk (installed with apt-get when
# missing). Creates a database of its own and drops it on exit; keys in Redis carry a prefix
# unique to the run. Other auth settings (DATABASE_MAX_CONNECTIONS, ...) are taken from the
# environment as the service would take them.
#
# Prints a Markdown summary and writes it to target/bench-auth.md; the reports of each step
# and the servers' logs are kept in target/bench-auth/. Exits 1 when a target is missed or a
# check fails.
#
# Tunables: AUTH_PORT (8791), BARE_PORT (8790), TRACED_PORT (8793), OTLP_PORT (8794),
# ARGON2_SECONDS (10), LOAD_SECONDS (15),
# WARMUP_SECONDS (3), ROUNDS (3: rounds of the /me comparison, medians reported),
# REGISTER_CLIENTS (50), REGISTER_PER_CLIENT (40).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [[ -z ${ADMIN_DATABASE_URL:-} || -z ${REDIS_URL:-} ]]; then
	eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
	ADMIN_DATABASE_URL=${ADMIN_DATABASE_URL:-$TEST_DATABASE_URL}
	REDIS_URL=${REDIS_URL:-$TEST_REDIS_URL}
fi
AUTH_PORT=${AUTH_PORT:-8791}
BARE_PORT=${BARE_PORT:-8790}
STACK_PORT=${STACK_PORT:-8792}
TRACED_PORT=${TRACED_PORT:-8793}
OTLP_PORT=${OTLP_PORT:-8794}
ARGON2_SECONDS=${ARGON2_SECONDS:-10}
LOAD_SECONDS=${LOAD_SECONDS:-15}
WARMUP_SECONDS=${WARMUP_SECONDS:-3}
ROUNDS=${ROUNDS:-3}
REGISTER_CLIENTS=${REGISTER_CLIENTS:-50}
REGISTER_PER_CLIENT=${REGISTER_PER_CLIENT:-40}

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOG_DIR=$TARGET_DIR/bench-auth
SUMMARY=$TARGET_DIR/bench-auth.md
AUTH_URL=http://127.0.0.1:$AUTH_PORT
BARE_URL=http://127.0.0.1:$BARE_PORT
STACK_URL=http://127.0.0.1:$STACK_PORT
TRACED_URL=http://127.0.0.1:$TRACED_PORT

# Digits and dashes only: the run id ends up in a database name, a Redis prefix and emails
# matched with LIKE, where `_` would be a wildcard.
RUN_ID=$(date -u +%Y%m%d%H%M%S)-$$
DB_NAME=bench_auth_${RUN_ID//-/_}
REDIS_KEY_PREFIX=bench-auth-$RUN_ID:

AUTH_PID=
BARE_PID=
STACK_PID=
TRACED_PID=
OTLP_PID=
SAMPLER_PID=
DB_CREATED=0
COMMANDS=()

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

as_root() {
	if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

psql_admin() { psql "$ADMIN_DATABASE_URL" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
psql_bench() { psql "$BENCH_DATABASE_URL" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

# Stops a process this script started: SIGTERM, up to 10 s to drain, then SIGKILL.
stop_pid() {
	local pid=$1
	if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local status=$?
	set +e
	stop_pid "$SAMPLER_PID"
	stop_pid "$BARE_PID"
	stop_pid "$STACK_PID"
	stop_pid "$AUTH_PID"
	stop_pid "$TRACED_PID"
	stop_pid "$OTLP_PID"
	if [[ $DB_CREATED == 1 ]]; then
		# FORCE (PostgreSQL 13+) ends connections a stuck server might still hold.
		psql_admin -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 ||
			psql_admin -c "DROP DATABASE IF EXISTS \"$DB_NAME\"" >/dev/null ||
			printf 'warning: could not drop database %s; drop it by hand\n' "$DB_NAME" >&2
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until `url` answers 2xx, giving up early if the process behind it has exited.
wait_until_ready() {
	local name=$1 pid=$2 url=$3 logfile=$4
	local deadline=$((SECONDS + 60))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$logfile" >&2 || true
			die "$name exited during start-up; its log is $logfile"
		fi
		if ((SECONDS >= deadline)); then
			die "$name did not answer $url within 60 s; its log is $logfile"
		fi
		sleep 0.5
	done
}

# A field of /proc/<pid>/status, in KiB.
proc_kib() {
	local key value _
	while read -r key value _; do
		if [[ $key == "$2:" ]]; then
			echo "$value"
			return 0
		fi
	done <"/proc/$1/status"
	echo 0
}

mib() { awk -v kib="$1" 'BEGIN { printf "%.1f MiB", kib / 1024 }'; }

# Polls VmRSS of `pid` in the background and keeps the highest value seen in `file`. VmHWM
# alone cannot say which phase of the run the peak belongs to.
start_rss_sampler() {
	local pid=$1 file=$2
	echo 0 >"$file"
	(
		peak=0
		while kill -0 "$pid" 2>/dev/null; do
			now=$(proc_kib "$pid" VmRSS) || break
			if ((now > peak)); then
				peak=$now
				echo "$peak" >"$file"
			fi
			sleep 0.25
		done
	) &
	SAMPLER_PID=$!
}

stop_rss_sampler() {
	stop_pid "$SAMPLER_PID"
	SAMPLER_PID=
}

# Runs wrk once to warm up (connection pools, caches) and once to measure, keeping the
# measured report in $LOG_DIR/<name>.txt. Arguments after the name are wrk's, without -d.
run_wrk() {
	local name=$1
	shift
	if ((WARMUP_SECONDS > 0)); then
		wrk -d"${WARMUP_SECONDS}s" "$@" >/dev/null
	fi
	COMMANDS+=("wrk -d${LOAD_SECONDS}s $*   # after a ${WARMUP_SECONDS} s warm-up")
	log "wrk -d${LOAD_SECONDS}s $*"
	wrk -d"${LOAD_SECONDS}s" "$@" | tee "$LOG_DIR/$name.txt" >&2
}

# CPU time (user + system, clock ticks) process $1 has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU µs per request over the wrk report $1, from the ticks before ($2) and after ($3) it.
cpu_per_request() {
	local requests
	requests=$(awk '/requests in/ {print $1}' "$1")
	awk -v t=$(($3 - $2)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }

# wrk prints latencies with a unit (us, ms, s, m, h); this gives the 99th percentile in ms.
wrk_p99_ms() {
	awk '$1 == "99%" {
		v = $2; n = v + 0
		if (v ~ /us$/) n /= 1000
		else if (v ~ /ms$/) n = n
		else if (v ~ /[0-9]s$/) n *= 1000
		else if (v ~ /m$/) n *= 60000
		else if (v ~ /h$/) n *= 3600000
		printf "%.2f", n
	}' "$1"
}

# Non-2xx/3xx answers plus connect, read, write and timeout errors.
wrk_errors() {
	awk '/Non-2xx or 3xx responses:/ { e += $NF }
		/Socket errors:/ { for (i = 3; i <= NF; i++) { gsub(",", "", $i); if ($i ~ /^[0-9]+$/) e += $i } }
		END { print e + 0 }' "$1"
}

# `key=value` lines, as argon2_bound and register_load.py print them.
kv() { awk -F= -v key="$1" '$1 == key { print $2 }' "$2"; }

is_number() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }

# The first number as a percentage of the second, to one decimal.
percent() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }

verdict() { awk -v v="$1" -v t="$2" 'BEGIN { if (v != "n/a" && v + 0 >= t) print "PASS"; else print "FAIL" }'; }

for tool in cargo curl psql python3; do
	command -v "$tool" >/dev/null || die "$tool is not installed; install it and run again"
done
if ! command -v wrk >/dev/null; then
	log "installing wrk"
	as_root apt-get install -y wrk || { as_root apt-get update && as_root apt-get install -y wrk; } ||
		die "cannot install wrk; install it (apt-get install -y wrk) and run again"
fi
for port in "$AUTH_PORT" "$BARE_PORT" "$STACK_PORT"; do
	if port_in_use "$port"; then
		die "something already listens on 127.0.0.1:$port; stop it or set AUTH_PORT/BARE_PORT"
	fi
done
psql_admin -c 'SELECT 1' >/dev/null ||
	die "cannot reach PostgreSQL at ADMIN_DATABASE_URL; is it running, and are the credentials right?"

# The service's database sits next to the admin database on the same server.
admin_base=${ADMIN_DATABASE_URL%%\?*}
admin_query=${ADMIN_DATABASE_URL:${#admin_base}}
[[ $admin_base =~ ^postgres(ql)?://[^/]+/[^/]*$ ]] ||
	die "ADMIN_DATABASE_URL must look like postgres://user:password@host:5432/postgres"
BENCH_DATABASE_URL=${admin_base%/*}/$DB_NAME$admin_query

mkdir -p "$LOG_DIR"

# One invocation, so features are unified once: the auth binary and service-kit's examples.
# (`-p auth --example ...` would build the examples but not the auth binary, since naming
# targets builds only those.)
BUILD=(cargo build --release -p auth -p service-kit --bins --examples)
COMMANDS+=("${BUILD[*]}")
log "${BUILD[*]}"
"${BUILD[@]}"
AUTH_BIN=$TARGET_DIR/release/auth
BARE_BIN=$TARGET_DIR/release/examples/bare_axum
ARGON2_BIN=$TARGET_DIR/release/examples/argon2_bound
for bin in "$AUTH_BIN" "$BARE_BIN" "$ARGON2_BIN"; do
	[[ -x $bin ]] || die "$bin was not built; check the cargo output above"
done

log "creating database $DB_NAME"
psql_admin -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null
DB_CREATED=1

log "starting the auth service on $AUTH_URL"
# Exported in a subshell rather than passed on the command line, so the database password is
# not visible in `ps`. RUST_LOG is unset so the service logs at its default level, as deployed.
(
	export DATABASE_URL=$BENCH_DATABASE_URL REDIS_URL REDIS_KEY_PREFIX
	export HOST=127.0.0.1 PORT=$AUTH_PORT
	# Every request of the run comes from 127.0.0.1; the per-client limit must not get in the way.
	export LOGIN_MAX_FAILURES_PER_CLIENT=1000000
	# Every wrk connection logs in to the one bench account at once; concurrent attempts
	# reserve throttle slots, so the per-account limit is lifted like the per-client one.
	export LOGIN_MAX_FAILURES_PER_ACCOUNT=1000000
	unset RUST_LOG
	exec "$AUTH_BIN"
) >"$LOG_DIR/auth.log" 2>&1 &
AUTH_PID=$!
COMMANDS+=("DATABASE_URL=<fresh database> REDIS_URL=<REDIS_URL> HOST=127.0.0.1 PORT=$AUTH_PORT REDIS_KEY_PREFIX=$REDIS_KEY_PREFIX LOGIN_MAX_FAILURES_PER_CLIENT=1000000 LOGIN_MAX_FAILURES_PER_ACCOUNT=1000000 ${AUTH_BIN#"$ROOT"/}   # RUST_LOG unset")
wait_until_ready "the auth service" "$AUTH_PID" "$AUTH_URL/health/ready" "$LOG_DIR/auth.log"

# shellcheck source=scripts/bench/otlp.sh
. scripts/bench/otlp.sh
log "starting an OTLP receiver on 127.0.0.1:$OTLP_PORT and a second auth service exporting its spans there, on $TRACED_URL"
start_otlp_receiver "$OTLP_PORT" "$LOG_DIR/otlp-receiver.log"
(
	export DATABASE_URL=$BENCH_DATABASE_URL REDIS_URL REDIS_KEY_PREFIX
	export HOST=127.0.0.1 PORT=$TRACED_PORT
	export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$OTLP_PORT OTEL_SERVICE_NAME=auth
	unset RUST_LOG
	exec "$AUTH_BIN"
) >"$LOG_DIR/auth-traced.log" 2>&1 &
TRACED_PID=$!
COMMANDS+=("python3 services/service-kit/src/otlp_receiver.py --port $OTLP_PORT --count   # a Python with opentelemetry-proto")
COMMANDS+=("(the same auth service) PORT=$TRACED_PORT OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$OTLP_PORT OTEL_SERVICE_NAME=auth ${AUTH_BIN#"$ROOT"/}")
wait_until_ready "the traced auth service" "$TRACED_PID" "$TRACED_URL/health/ready" "$LOG_DIR/auth-traced.log"

log "starting bare axum on $BARE_URL"
BIND=127.0.0.1:$BARE_PORT "$BARE_BIN" >"$LOG_DIR/bare_axum.log" 2>&1 &
BARE_PID=$!
COMMANDS+=("BIND=127.0.0.1:$BARE_PORT ${BARE_BIN#"$ROOT"/}")
wait_until_ready "bare axum" "$BARE_PID" "$BARE_URL/me" "$LOG_DIR/bare_axum.log"

# The same constant handler behind service-kit's standard stack: tells what the stack every
# service runs costs, apart from what the auth service's own work costs.
log "starting bare axum behind the standard stack on $STACK_URL"
BIND=127.0.0.1:$STACK_PORT STANDARD_LAYERS=1 "$BARE_BIN" >"$LOG_DIR/stack_axum.log" 2>&1 &
STACK_PID=$!
COMMANDS+=("BIND=127.0.0.1:$STACK_PORT STANDARD_LAYERS=1 ${BARE_BIN#"$ROOT"/}")
wait_until_ready "bare axum behind the standard stack" "$STACK_PID" "$STACK_URL/me" "$LOG_DIR/stack_axum.log"

# Let start-up allocations settle before calling the service idle.
sleep 2
RSS_IDLE=$(proc_kib "$AUTH_PID" VmRSS)

# Measured while the servers sit idle, so argon2 has the cores to itself.
log "measuring argon2id alone for ${ARGON2_SECONDS} s per measurement"
COMMANDS+=("${ARGON2_BIN#"$ROOT"/} $ARGON2_SECONDS")
# The duration is passed as an argument: SECONDS is a bash variable that counts up.
"$ARGON2_BIN" "$ARGON2_SECONDS" | tee "$LOG_DIR/argon2.txt" >&2
HASH_BOUND=$(kv argon2id_hashes_per_sec "$LOG_DIR/argon2.txt")
VERIFY_BOUND=$(kv argon2id_verifies_per_sec "$LOG_DIR/argon2.txt")
is_number "$VERIFY_BOUND" || die "argon2_bound printed no verification rate; see $LOG_DIR/argon2.txt"

log "registering the benchmark user and logging in"
BENCH_EMAIL=bench-$RUN_ID@example.com
BENCH_PASSWORD=bench-$RUN_ID-passphrase
export BENCH_EMAIL BENCH_PASSWORD
# Bodies go through standard input so the password stays off curl's command line.
status=$(printf '{"email":"%s","password":"%s"}' "$BENCH_EMAIL" "$BENCH_PASSWORD" |
	curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
		--data-binary @- "$AUTH_URL/api/v1/register")
[[ $status == 201 ]] || die "registering the benchmark user answered $status, not 201; see $LOG_DIR/auth.log"
response=$(printf 'grant_type=password&username=%s&password=%s' "${BENCH_EMAIL/@/%40}" "$BENCH_PASSWORD" |
	curl -sS -w '\n%{http_code}' -H 'Content-Type: application/x-www-form-urlencoded' \
		--data-binary @- "$AUTH_URL/api/v1/login")
status=${response##*$'\n'}
[[ $status == 200 ]] || die "logging in answered $status, not 200; see $LOG_DIR/auth.log"
ACCESS_TOKEN=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' \
	<<<"${response%$'\n'*}") || die "the login answer carries no access_token"
export ACCESS_TOKEN
unset response
status=$(printf 'Authorization: Bearer %s\n' "$ACCESS_TOKEN" |
	curl -sS -o /dev/null -w '%{http_code}' -H @- "$AUTH_URL/api/v1/me")
[[ $status == 200 ]] || die "GET /api/v1/me with the new token answered $status, not 200"

log "load: POST /api/v1/login"
start_rss_sampler "$AUTH_PID" "$LOG_DIR/rss-login.kib"
# A longer timeout than wrk's 2 s: logins queue behind argon2 by design, and a slow login is
# still a login, not an error.
run_wrk login -t2 -c16 --timeout 10s -s scripts/wrk/login.lua "$AUTH_URL/api/v1/login"
stop_rss_sampler
LOGIN_RPS=$(wrk_rps "$LOG_DIR/login.txt")
LOGIN_ERRORS=$(wrk_errors "$LOG_DIR/login.txt")
LOGIN_STATUSES=$(awk '/^status [0-9]+:/ { printf "%s%s %s", sep, $2, $3; sep = ", " }' "$LOG_DIR/login.txt")
RSS_LOGIN=$(cat "$LOG_DIR/rss-login.kib")
is_number "$LOGIN_RPS" || die "no requests/s in the login report; see $LOG_DIR/login.txt"

log "load: GET /api/v1/me, then bare axum GET /me"
start_rss_sampler "$AUTH_PID" "$LOG_DIR/rss-me.kib"
# Rounds alternate the three servers, so a slow spell of the machine hits them alike; each
# figure is the median of its rounds. The same request, token included, goes to all three.
me_rps=() me_p99=() bare_rps=() bare_p99=() stack_rps=() stack_p99=() me_pct=()
traced_rps=() traced_p99=() traced_pct=() me_cpu=() traced_cpu=()
ME_ERRORS=0 BARE_ERRORS=0
for round in $(seq 1 "$ROUNDS"); do
	before=$(cpu_ticks "$AUTH_PID")
	run_wrk "me-$round" -t2 -c64 --latency -s scripts/wrk/bearer.lua "$AUTH_URL/api/v1/me"
	me_cpu+=("$(cpu_per_request "$LOG_DIR/me-$round.txt" "$before" "$(cpu_ticks "$AUTH_PID")")")
	run_wrk "bare-$round" -t2 -c64 --latency -s scripts/wrk/bearer.lua "$BARE_URL/me"
	run_wrk "stack-$round" -t2 -c64 --latency -s scripts/wrk/bearer.lua "$STACK_URL/me"
	before=$(cpu_ticks "$TRACED_PID")
	run_wrk "traced-$round" -t2 -c64 --latency -s scripts/wrk/bearer.lua "$TRACED_URL/api/v1/me"
	traced_cpu+=("$(cpu_per_request "$LOG_DIR/traced-$round.txt" "$before" "$(cpu_ticks "$TRACED_PID")")")
	traced_rps+=("$(wrk_rps "$LOG_DIR/traced-$round.txt")")
	traced_p99+=("$(wrk_p99_ms "$LOG_DIR/traced-$round.txt")")
	traced_pct+=("$(percent "${traced_rps[-1]}" "$(wrk_rps "$LOG_DIR/me-$round.txt")")")
	ME_ERRORS=$((ME_ERRORS + $(wrk_errors "$LOG_DIR/traced-$round.txt")))
	me_rps+=("$(wrk_rps "$LOG_DIR/me-$round.txt")")
	me_p99+=("$(wrk_p99_ms "$LOG_DIR/me-$round.txt")")
	bare_rps+=("$(wrk_rps "$LOG_DIR/bare-$round.txt")")
	bare_p99+=("$(wrk_p99_ms "$LOG_DIR/bare-$round.txt")")
	stack_rps+=("$(wrk_rps "$LOG_DIR/stack-$round.txt")")
	stack_p99+=("$(wrk_p99_ms "$LOG_DIR/stack-$round.txt")")
	me_pct+=("$(percent "${me_rps[-1]}" "${bare_rps[-1]}")")
	ME_ERRORS=$((ME_ERRORS + $(wrk_errors "$LOG_DIR/me-$round.txt")))
	BARE_ERRORS=$((BARE_ERRORS + $(wrk_errors "$LOG_DIR/bare-$round.txt")))
done
stop_rss_sampler
ME_RPS=$(median "${me_rps[@]}")
ME_P99=$(median "${me_p99[@]}")
BARE_RPS=$(median "${bare_rps[@]}")
BARE_P99=$(median "${bare_p99[@]}")
STACK_RPS=$(median "${stack_rps[@]}")
STACK_P99=$(median "${stack_p99[@]}")
TRACED_RPS=$(median "${traced_rps[@]}")
TRACED_P99=$(median "${traced_p99[@]}")
TRACED_PCT=$(median "${traced_pct[@]}")
TRACED_PCTS="${traced_pct[*]}"
# The service's own CPU per request (the collector's, on the same cores, not counted).
ME_CPU=$(median "${me_cpu[@]}")
TRACED_CPU=$(median "${traced_cpu[@]}")
SPANS_RECEIVED=$(stop_otlp_receiver "$LOG_DIR/otlp-receiver.log")
OTLP_PID=
TRACED_VERDICT=$(verdict "$TRACED_PCT" 95)
ME_ROUNDS="${me_rps[*]}"
BARE_ROUNDS="${bare_rps[*]}"
RSS_ME=$(cat "$LOG_DIR/rss-me.kib")
for value in "$ME_RPS" "$BARE_RPS"; do
	is_number "$value" || die "a /me report has no requests/s; see $LOG_DIR/me.txt and $LOG_DIR/bare.txt"
done

REGISTRATIONS=$((REGISTER_CLIENTS * REGISTER_PER_CLIENT))
log "load: $REGISTRATIONS registrations from $REGISTER_CLIENTS concurrent clients"
REGISTER=(python3 scripts/bench/register_load.py --base-url "$AUTH_URL"
	--clients "$REGISTER_CLIENTS" --per-client "$REGISTER_PER_CLIENT" --run-id "$RUN_ID")
COMMANDS+=("${REGISTER[*]}")
"${REGISTER[@]}" | tee "$LOG_DIR/register.txt" >&2
REG_SENT=$(kv requests "$LOG_DIR/register.txt")
REG_CREATED=$(kv status_201 "$LOG_DIR/register.txt")
REG_CREATED=${REG_CREATED:-0}
REG_5XX=$(kv status_5xx "$LOG_DIR/register.txt")
REG_TRANSPORT=$(kv transport_errors "$LOG_DIR/register.txt")
REG_RATE=$(kv per_sec "$LOG_DIR/register.txt")
REG_OTHER=$(awk -F= '$1 ~ /^status_[0-9]+$/ && $1 != "status_201" { printf "%s%s: %s", sep, substr($1, 8), $2; sep = ", " }' \
	"$LOG_DIR/register.txt")
COUNT_SQL="SELECT count(*) FROM users WHERE email LIKE 'load-$RUN_ID-%'"
COMMANDS+=("psql <fresh database> -c \"$COUNT_SQL\"")
REG_ROWS=$(psql_bench -c "$COUNT_SQL")

RSS_HWM=$(proc_kib "$AUTH_PID" VmHWM)

LOGIN_PCT=$(percent "$LOGIN_RPS" "$VERIFY_BOUND")
# The verdict uses each round's own ratio (the two servers ran back to back), then the median.
ME_PCT=$(median "${me_pct[@]}")
ME_PCTS="${me_pct[*]}"
LOGIN_VERDICT=$(verdict "$LOGIN_PCT" 90)
ME_VERDICT=$(verdict "$ME_PCT" 70)
# Every email is new, so anything but a 201 is a registration lost; the rows must match the
# 201s exactly (more rows would mean a success reported as a failure).
if [[ $REG_SENT == "$REGISTRATIONS" && $REG_CREATED == "$REGISTRATIONS" && $REG_ROWS == "$REG_CREATED" &&
	$REG_5XX == 0 && $REG_TRANSPORT == 0 ]]; then
	REG_VERDICT=PASS
else
	REG_VERDICT=FAIL
fi
if [[ $LOGIN_ERRORS == 0 && $ME_ERRORS == 0 && $BARE_ERRORS == 0 ]]; then
	ERRORS_VERDICT=PASS
else
	ERRORS_VERDICT=FAIL
fi

THREADS=$(nproc)
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEMORY=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
PG_VERSION=$(psql_admin -c 'SHOW server_version')
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null) ]]; then
	COMMIT="$COMMIT (with uncommitted changes)"
fi

{
	printf '# Auth service benchmark\n\n'
	printf 'Run %s, %s, commit %s.\n\n' "$RUN_ID" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$COMMIT"
	printf 'Machine: %s CPUs (%s), %s memory, Linux %s; PostgreSQL %s; wrk %s.\n' \
		"$THREADS" "${CPU_MODEL:-unknown model}" "$MEMORY" "$(uname -r)" "$PG_VERSION" "$WRK_VERSION"
	printf 'wrk, the servers, PostgreSQL and Redis share these CPUs, so absolute numbers are lower\n'
	printf 'than with a separate load generator; the ratios compare like with like.\n\n'
	printf '| Measurement | Result | Target | Verdict |\n'
	printf '|---|---|---|---|\n'
	printf '| argon2id hashes/s alone, %s threads | %s | | |\n' "$THREADS" "$HASH_BOUND"
	printf '| argon2id verifications/s alone, %s threads | %s | | |\n' "$THREADS" "$VERIFY_BOUND"
	printf '| POST /api/v1/login, -t2 -c16 | %s req/s, %s%% of the verification bound; statuses %s | ≥ 90%% | %s |\n' \
		"$LOGIN_RPS" "$LOGIN_PCT" "${LOGIN_STATUSES:-no statuses}" "$LOGIN_VERDICT"
	printf '| GET /api/v1/me, -t2 -c64, median of %s rounds | %s req/s, p99 %s ms (rounds: %s) | | |\n' "$ROUNDS" "$ME_RPS" "$ME_P99" "$ME_ROUNDS"
	printf '| bare axum GET /me, -t2 -c64, median of %s rounds | %s req/s, p99 %s ms (rounds: %s) | | |\n' "$ROUNDS" "$BARE_RPS" "$BARE_P99" "$BARE_ROUNDS"
	printf '| bare axum GET /me behind the standard stack, -t2 -c64 | %s req/s, p99 %s ms, %s%% of bare | | |\n' "$STACK_RPS" "$STACK_P99" "$(percent "$STACK_RPS" "$BARE_RPS")"
	printf '| GET /api/v1/me exporting its spans over OTLP, -t2 -c64, median of %s rounds | %s req/s, p99 %s ms; %s%% of /api/v1/me without (rounds: %s); %s spans received; the service'"'"'s CPU %s µs/request against %s without | ≥ 95%% | %s |\n' \
		"$ROUNDS" "$TRACED_RPS" "$TRACED_P99" "$TRACED_PCT" "$TRACED_PCTS" "$SPANS_RECEIVED" "$TRACED_CPU" "$ME_CPU" "$TRACED_VERDICT"
	printf '| /api/v1/me against bare axum, median of per-round ratios | %s%% of its req/s (rounds: %s) | ≥ 70%% | %s |\n' "$ME_PCT" "$ME_PCTS" "$ME_VERDICT"
	printf '| Errors under wrk (non-2xx/3xx, socket) | login %s, me %s, bare %s | 0 | %s |\n' \
		"$LOGIN_ERRORS" "$ME_ERRORS" "$BARE_ERRORS" "$ERRORS_VERDICT"
	printf '| %s registrations, %s clients | %s sent, %s × 201%s, %s rows, %s 5xx, %s transport errors, %s/s | all 201, rows = 201s, no 5xx | %s |\n' \
		"$REGISTRATIONS" "$REGISTER_CLIENTS" "$REG_SENT" "$REG_CREATED" "${REG_OTHER:+ (others: $REG_OTHER)}" \
		"$REG_ROWS" "$REG_5XX" "$REG_TRANSPORT" "$REG_RATE" "$REG_VERDICT"
	printf '| Auth RSS idle | %s | | |\n' "$(mib "$RSS_IDLE")"
	printf '| Auth RSS peak, login load | %s | | |\n' "$(mib "$RSS_LOGIN")"
	printf '| Auth RSS peak, /me load | %s | | |\n' "$(mib "$RSS_ME")"
	printf '| Auth RSS high-water mark, whole run | %s | | |\n\n' "$(mib "$RSS_HWM")"
	printf '## Commands\n\n'
	printf '```sh\n'
	printf '%s\n' "${COMMANDS[@]}"
	printf '```\n'
} >"$SUMMARY"

cat "$SUMMARY"
log "summary written to ${SUMMARY#"$ROOT"/}; reports and logs in ${LOG_DIR#"$ROOT"/}/"

for v in "$LOGIN_VERDICT" "$ME_VERDICT" "$ERRORS_VERDICT" "$REG_VERDICT" "$TRACED_VERDICT"; do
	[[ $v == PASS ]] || exit 1
done
