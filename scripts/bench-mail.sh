#!/usr/bin/env bash
# Benchmarks mail throughput (services/notifications/examples/mail_bench.rs): mails per second
# the SMTP server accepts from the notifications service (a queue of MAILS welcome mails
# drained by the running service, every outcome recorded) against a bare lettre client
# sending the same message to the same server over the same number of connections (the
# bound). The server is the platform's offline mail catcher, started fresh for the run on
# SMTP_PORT with its mail on a tmpfs, and stopped after.
#
# Needs PostgreSQL (scripts/dev-deps.sh starts it, and installs python3-aiosmtpd). Tunables:
# MAILS (5000), ROUNDS (3), SMTP_PORT (2525). Prints the figures and writes them to
# target/bench-mail.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MAILS=${MAILS:-5000}
ROUNDS=${ROUNDS:-3}
SMTP_PORT=${SMTP_PORT:-2525}
HTTP_PORT=${HTTP_PORT:-8026}
eval "$(scripts/dev-deps.sh | sed 's/^/export /')"
cargo build --release -p notifications --example mail_bench

mail_dir=$(mktemp -d /dev/shm/gravity-bench-mail.XXXXXX)
MAIL_DIR="$mail_dir" SMTP_PORT="$SMTP_PORT" HTTP_PORT="$HTTP_PORT" \
    /usr/bin/python3 cli/src/infra/mail_catcher.py >/dev/null 2>&1 &
catcher=$!
trap 'kill "$catcher" 2>/dev/null; rm -rf "$mail_dir"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break
    sleep 0.1
done
BENCH_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT" target/release/examples/mail_bench "$MAILS" "$ROUNDS" \
    | tee target/bench-mail.txt
