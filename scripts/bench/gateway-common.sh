# Shared by scripts/bench-gateway.sh and scripts/bench-gateway-instructions.sh (sourced, not
# run): package installation, waiting for a port, and the gateway configuration both measure.
# Reads UPSTREAM_PORT, GATEWAY_PORT and GATEWAY_ADMIN_PORT.

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# Installs the Debian packages given as "command:package" pairs whose command is missing.
install_missing() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null || [[ -x /usr/sbin/${pair%%:*} ]] || missing+=("${pair#*:}")
	done
	if ((${#missing[@]})); then
		as_root apt-get update -qq
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
}

wait_port() {
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on port $1" >&2
	return 1
}

# The gateway's configuration for a scenario, on standard output. plain: proxying only. edge:
# every request's token verified against the upstream's key set, per-client and per-user
# limits set far above the load so nothing is refused.
gateway_conf() { # $1: "plain" or "edge"
	cat <<TOML
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
admin_listen = "127.0.0.1:$GATEWAY_ADMIN_PORT"
TOML
	if [[ $1 == edge ]]; then
		cat <<TOML
[auth]
jwks_url = "http://127.0.0.1:$UPSTREAM_PORT/.well-known/jwks.json"
[rate_limit]
per_client = { requests = 100000000, period = "1s" }
per_user = { requests = 100000000, period = "1s" }
TOML
	fi
	cat <<TOML
[[route]]
name = "bench"
prefix = "/"
access = "$([[ $1 == edge ]] && echo token || echo public)"
upstreams = ["http://127.0.0.1:$UPSTREAM_PORT"]
TOML
}
