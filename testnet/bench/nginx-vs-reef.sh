#!/usr/bin/env bash
# Issue 7: one Reef node's hit path beside nginx with proxy_cache, same origin, same objects,
# same load generator (wrk), measured side by side in one run; prints a markdown report with
# the ratios Reef / nginx. Arguments go to `reef-testnet bench-nginx` (see its --help), e.g.
#
#   testnet/bench/nginx-vs-reef.sh --rounds 2 --nice -10 --out /tmp/nginx-vs-reef.md
#
# Installs nginx and wrk from Debian when they are missing (as root), builds the release
# binaries, then runs the benchmark; every process it starts is stopped when it ends, fails
# or is interrupted (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v wrk >/dev/null 2>&1 || ! { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "nginx-vs-reef: nginx and wrk are needed (apt-get install nginx wrk, as root)" >&2
        exit 2
    fi
    echo "nginx-vs-reef: installing nginx and wrk from Debian (once)…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null
fi

cargo build --release --locked -p reef-node -p reef-testnet
exec target/release/reef-testnet bench-nginx --bin target/release/reef --no-install "$@"
