# Shared by the benchmarks that measure what exporting spans costs (sourced, not run): a
# real OTLP/HTTP receiver (service-kit's, decoding with opentelemetry-proto) that counts the
# spans it gets. Installs opentelemetry-proto through scripts/dev-deps.sh when OTLP_PYTHON
# names no interpreter that has it.

# Starts the receiver on 127.0.0.1:$1, counting only; sets OTLP_PID. $2: its log.
start_otlp_receiver() {
	if [[ -z ${OTLP_PYTHON:-} ]]; then
		OTLP_PYTHON=$(scripts/dev-deps.sh | sed -n 's/^OTLP_PYTHON=//p')
	fi
	"$OTLP_PYTHON" services/service-kit/src/otlp_receiver.py --port "$1" --count >"$2" 2>&1 &
	OTLP_PID=$!
	for _ in $(seq 1 100); do
		grep -q listening "$2" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "the OTLP receiver did not start; see $2" >&2
	return 1
}

# Stops the receiver; prints how many spans it received (its last line, once written: this
# may run in a subshell, which cannot wait for it).
stop_otlp_receiver() {
	kill -INT "$OTLP_PID" 2>/dev/null || true
	for _ in $(seq 1 100); do
		grep -q '^{"received"' "$1" 2>/dev/null && break
		sleep 0.05
	done
	sed -n 's/^{"received": \([0-9]*\)}$/\1/p' "$1"
}
