#!/usr/bin/env bash
# Runs every benchmark and writes what each printed into docs/benchmarks.md.
#
#   testnet/bench/all.sh                # all of them: about 45 minutes on 2 cores
#   testnet/bench/all.sh nginx cold     # only these; the others' reports stay as they were
#   testnet/bench/all.sh --list         # the names
#
# Each benchmark's report goes between the markers `<!-- bench:NAME -->` and
# `<!-- /bench:NAME -->` in docs/benchmarks.md (appended at the end when the markers are
# missing); the text around the markers is written by people and says what the figures mean.
# Every report carries the command that reproduces it and the machine it ran on. The raw
# reports (and the flash experiment's CSV and plots) stay in target/bench-all/.
#
# Builds the release binaries first. bench-nginx installs nginx and wrk from Debian when they
# are missing (as root). Everything runs on loopback; each benchmark stops what it started,
# also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."

DOC=docs/benchmarks.md
OUT=target/bench-all
T=target/release/reef-testnet
BIN=target/release/reef

# name | command (run from the repository's root; its standard output is the report)
BENCHES=(
    "foundation|$T bench --bin $BIN"
    "eviction|cargo run -q --release --locked -p reef-cache --example hit_ratio"
    "store|cargo run -q --release --locked -p reef-cache --example store_throughput"
    "records|cargo run -q --release --locked -p reef-proto --example sign_verify"
    "discovery|$T bench-discovery --bin $BIN --nodes 20 --providers 4 --lookups 200"
    "load|$T bench-load --bin $BIN --nodes 10,20,50"
    "peering|$T bench-peering --bin $BIN --runs 5 --trigger-window 3"
    "dns|$T bench-dns --bin $BIN"
    "metrics|$T bench-metrics --bin $BIN --rounds 5"
    "nginx|$T bench-nginx --bin $BIN --rounds 2"
    "cold|$T bench-cold --bin $BIN"
    "cold-without-homes|$T bench-cold --bin $BIN --home-routing false --runs 1"
    "dht|$T bench-dht --bin $BIN --nodes 10,50,100"
    "flash|$T flash --bin $BIN --out $OUT/flash"
)

# The machine, as every report states it.
machine() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "$(nproc) cores ($cpu), $mem, $(uname -sr)"
}

names() { for b in "${BENCHES[@]}"; do echo "${b%%|*}"; done; }

if [ "${1:-}" = --list ]; then
    names
    exit 0
fi
wanted=("$@")
for w in "${wanted[@]}"; do
    if ! names | grep -qx -- "$w"; then
        echo "all.sh: no benchmark called '$w' (see --list)" >&2
        exit 2
    fi
done

# Replaces the block of benchmark $1 in $DOC by the file $2 (appends it if absent).
splice() {
    local name=$1 report=$2 begin="<!-- bench:$1 -->" end="<!-- /bench:$1 -->"
    if grep -qxF -- "$begin" "$DOC" && grep -qxF -- "$end" "$DOC"; then
        awk -v begin="$begin" -v end="$end" -v report="$report" '
            $0 == begin { print; while ((getline line < report) > 0) print line; skip = 1; next }
            $0 == end { skip = 0 }
            !skip { print }
        ' "$DOC" >"$DOC.new"
        mv "$DOC.new" "$DOC"
    else
        { printf '\n### Report: %s\n\n%s\n' "$name" "$begin"; cat "$report"; echo "$end"; } >>"$DOC"
    fi
}

cargo build --release --locked -p reef-node -p reef-testnet
mkdir -p "$OUT"
failed=()
for b in "${BENCHES[@]}"; do
    name=${b%%|*}
    cmd=${b#*|}
    if [ ${#wanted[@]} -gt 0 ] && ! printf '%s\n' "${wanted[@]}" | grep -qx -- "$name"; then
        continue
    fi
    echo "all.sh: $name: $cmd" >&2
    started=$(date +%s)
    if ! $cmd >"$OUT/$name.out" 2>"$OUT/$name.log"; then
        echo "all.sh: $name failed; its log is $OUT/$name.log" >&2
        failed+=("$name")
        continue
    fi
    report=$OUT/$name.md
    {
        echo
        echo "Run by \`testnet/bench/all.sh $name\` on $(date -u '+%Y-%m-%d %H:%M UTC') in" \
            "$(($(date +%s) - started)) s: \`$cmd\`"
        echo
        echo "Machine: $(machine)."
        echo
        # The plots stay beside the CSV in target/bench-all/flash (not in git).
        if [ "$name" = flash ]; then
            grep -v '^!\[' "$OUT/flash/summary.md" |
                sed "s|^Plots (SVG and PNG beside this file):|Plots (SVG and PNG) are written beside the summary, in \`$OUT/flash/\`:|"
        else
            cat "$OUT/$name.out"
        fi
        echo
    } >"$report"
    splice "$name" "$report"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "all.sh: failed: ${failed[*]} (their reports in $DOC are unchanged)" >&2
    exit 1
fi
echo "all.sh: reports written to $DOC" >&2
