#!/usr/bin/env bash
# The test command from the README, and what CI runs: installs what the tests need, then runs
# every unit, in-process and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "installing cargo-nextest (once)…"
    cargo install --locked cargo-nextest
fi

# The DNS end-to-end tests ask the nodes with dig (Debian's dnsutils); CI runs as root on a
# clean machine.
if ! command -v dig >/dev/null 2>&1; then
    echo "installing dnsutils for dig (once)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq dnsutils >/dev/null
fi

# The dashboard's end-to-end test opens it in headless Chromium (Debian's chromium).
if [ ! -x /usr/bin/chromium ] && [ -z "${REEF_CHROMIUM:-}" ]; then
    echo "installing chromium for the dashboard test (once)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
fi

# One profile for everything (dev, see Cargo.toml) so nothing is built twice.
exec cargo nextest run --workspace --no-fail-fast "$@"
