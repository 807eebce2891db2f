#!/usr/bin/env bash
# Installs (Debian/Ubuntu) and starts PostgreSQL, Redis, RabbitMQ and a mail catcher on loopback for local runs and
# tests, and creates the `gravity` database role they use; installs mmdebstrap, with which
# gravity builds images when no registry can be reached, tmux, in which the dashboard's
# test runs, promtool (Debian's prometheus), which checks the rules Gravity ships, and schemathesis (from PyPI, in a virtualenv under target/), with which every
# service's tests check its answers against its OpenAPI document, and opentelemetry-proto (same
# virtualenv), with which the tests' OTLP receiver decodes spans. Safe to run again: it only does what is missing. Prints the URLs to use.
set -euo pipefail

PG_USER=gravity
PG_PASSWORD=gravity
REDIS_PORT=${REDIS_PORT:-6379}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v pg_lsclusters >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Builds container images from Debian packages when no registry can be reached.
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
# The dashboard's end-to-end test drives `gravity status` in a tmux pane.
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
# The event backbone's tests run against a real broker.
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
# The notifications service's tests send mail to the platform's mail catcher, run here.
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
# The CLI's tests check the Prometheus configuration and rules Gravity writes with promtool.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL: start the first cluster if it is down.
read -r pg_version pg_cluster pg_port pg_status _ < <(pg_lsclusters -h | head -n1)
if [ "$pg_status" != "online" ]; then
    as_root pg_ctlcluster "$pg_version" "$pg_cluster" start
fi
for _ in $(seq 1 50); do
    if as_root su postgres -c "psql -p $pg_port -tAc 'SELECT 1'" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
as_root su postgres -c "psql -p $pg_port -v ON_ERROR_STOP=1 -q" <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
        CREATE ROLE $PG_USER LOGIN CREATEDB CREATEROLE PASSWORD '$PG_PASSWORD';
    END IF;
END
\$\$;
SQL

# Redis: start one in the background if nothing answers on the port.
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no >/dev/null
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

# RabbitMQ: start it in the background if nothing answers on its port (its default `guest`
# user may connect from loopback only).
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    as_root rabbitmq-server -detached >/dev/null 2>&1
    for _ in $(seq 1 240); do
        (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break
        sleep 0.25
    done
    as_root rabbitmqctl await_startup --timeout 60 >/dev/null
fi

# The mail catcher gravity runs offline (SMTP, and Mailpit's HTTP API), unless something
# answers on its SMTP port already (a Mailpit, say: it answers the same API).
MAIL_SMTP_PORT=${MAIL_SMTP_PORT:-1025}
MAIL_HTTP_PORT=${MAIL_HTTP_PORT:-8025}
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$MAIL_SMTP_PORT") 2>/dev/null; then
    mail_dir="$root/target/tools/mail"
    rm -rf "$mail_dir" && mkdir -p "$mail_dir"
    MAIL_DIR="$mail_dir" SMTP_PORT="$MAIL_SMTP_PORT" HTTP_PORT="$MAIL_HTTP_PORT" \
        setsid /usr/bin/python3 "$root/cli/src/infra/mail_catcher.py" >"$root/target/tools/mail-catcher.log" 2>&1 < /dev/null &
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$MAIL_HTTP_PORT") 2>/dev/null && break
        sleep 0.1
    done
fi

# schemathesis: a pinned version, so that a run checks the same things everywhere.
SCHEMATHESIS_VERSION=4.32.5
venv="$(cd "$(dirname "$0")/.." && pwd)/target/tools/schemathesis"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION" >&2
    if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv --clear "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
# opentelemetry-proto: the OTLP receiver the tests send spans to decodes them with it.
OTLP_PROTO_VERSION=1.45.2
# Read whole (grep -q would close the pipe early, and pipefail count that as a failure).
if [[ $("$venv/bin/pip" show opentelemetry-proto 2>/dev/null) != *$'\n'"Version: $OTLP_PROTO_VERSION"$'\n'* ]]; then
    echo "installing opentelemetry-proto $OTLP_PROTO_VERSION" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "opentelemetry-proto==$OTLP_PROTO_VERSION" >&2
fi

echo "TEST_DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$pg_port/postgres"
echo "TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
echo "TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
echo "SCHEMATHESIS=$venv/bin/schemathesis"
echo "OTLP_PYTHON=$venv/bin/python"
echo "TEST_SMTP_URL=smtp://127.0.0.1:$MAIL_SMTP_PORT"
echo "TEST_MAIL_API=http://127.0.0.1:$MAIL_HTTP_PORT"
