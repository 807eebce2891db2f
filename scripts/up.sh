#!/usr/bin/env bash
# Brings the platform in gravity.toml up with `gravity up`, on a machine with the Rust
# toolchain and a running Docker Engine. Where no container registry is reachable, gravity
# builds PostgreSQL, Redis and the services' base image from Debian packages with mmdebstrap,
# which this script installs (apt) when it is missing. Arguments go to `gravity up`
# (e.g. `scripts/up.sh auth --json`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mmdebstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "installing mmdebstrap (builds images from Debian packages when no registry is reachable)" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mmdebstrap >/dev/null
fi
# Not quiet: on a first run this build takes minutes, and cargo's progress shows it moving.
cargo build -p gravity
exec target/debug/gravity up "$@"
