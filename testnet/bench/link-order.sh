#!/usr/bin/env bash
# Regenerates node/link-order.txt, the order in which the linker lays out the release `reef`
# binary's functions (node/build.rs says why).
#
#   testnet/bench/link-order.sh [NODES]  # default 100; about 4 minutes; installs valgrind and
#                                        # perf if missing (root)
#
# How: two testnets on loopback, one after the other.
# - 30 nodes, two of them under callgrind, which records every function that runs:
#   - node-7, restarted with the arguments it had. Its profile is dumped once the node has
#     joined (start), after 60 s of idling (idle) and after a round of requests through it
#     (requests).
#   - a new node beside them, with node-8's arguments but an empty data directory: a first
#     start makes the node's key and its databases, code a restart never runs (and every node
#     of a fresh testnet does). Dumped like node-7, without requests.
#   Past a dozen nodes gossipsub prunes its mesh and Kademlia's buckets fill, code a 10-node
#   testnet never runs; beyond 30, valgrind's slowdown keeps a node from joining at all.
# - NODES nodes, natively, while `perf record -e page-faults` records the function behind
#   every page of code faulted in. This adds what callgrind cannot see:
#   the variants a library picks for the real CPU (AVX-512 AES-GCM, SHA extensions) where
#   valgrind's virtual CPU makes it pick others, and what only a larger overlay runs (the
#   connection budget's pruning, fuller routing tables), which the DHT benchmark's 100 nodes
#   otherwise fault in 64 KiB at a time. They idle for 90 s, as that benchmark lets them, then
#   serve a round of requests. A fault maps the 64 KiB around it, so a function next to a
#   faulting one is missed; those found by earlier runs that the binary still has are kept,
#   so running the script twice, rebuilding in between, fills the gaps.
#
# Only names the binary's symbol table holds are written. Run it again after changes to the
# code or to Cargo.lock: names that changed are skipped at link time, so an old file only
# costs memory. The binary must be built the way it is shipped (`cargo build --release` of
# the whole workspace, or `-p reef-node -p reef-testnet` as the benchmarks build it): symbol
# names depend on the features the build unifies, and `-p reef-node` alone unifies others,
# which renames every function of our node crate.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODES=${1:-100}
if ! [[ "$NODES" =~ ^[0-9]+$ ]] || [ "$NODES" -lt 10 ]; then
    echo "link-order: NODES must be a number of at least 10, not '$NODES'" >&2
    exit 2
fi

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v perf >/dev/null || missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "link-order: needs ${missing[*]} (apt-get install ${missing[*]}, as root)" >&2
        exit 2
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build -q --release --locked
BIN=$PWD/target/release/reef
OUT=node/link-order.txt
WORK=$(mktemp -d)
UP=""
PROFILED=()
cleanup() {
    for pid in "${PROFILED[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    # callgrind takes seconds to write its last dump; let it, before its directory goes
    for pid in "${PROFILED[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "$UP" ] && kill -INT "$UP" 2>/dev/null && wait "$UP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

json_field() { # FILE FIELD: the first string or number value of FIELD
    grep -o "\"$2\": *\"\?[^\",}]*" "$1" | head -1 | sed 's/^"[^"]*": *"\?//'
}
wait_for() { # SECONDS COMMAND...
    local until=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$until" ] || { echo "link-order: timed out waiting for: $*" >&2; exit 1; }
        sleep 0.5
    done
}
# profiled DIR COMMAND...: COMMAND in the background, logging to DIR/profiled.log; sets PID.
profiled() {
    local dir=$1
    shift
    "$@" >"$dir/profiled.log" 2>&1 &
    PID=$!
    PROFILED+=("$PID")
}
# restart N PROFILER...: node-N again, with the arguments it had, under PROFILER; sets PID.
restart() {
    local dir=$WORK/net/node-$1 old args
    shift
    old=$(json_field "$dir/runtime.json" pid)
    mapfile -d '' args <"/proc/$old/cmdline"
    kill "$old"
    wait_for 30 bash -c "! kill -0 $old"
    rm -f "$dir/runtime.json"
    profiled "$dir" "$@" "${args[@]}"
}
# fresh N PROFILER...: a new node with node-N's arguments but the empty data directory
# node-fresh, under PROFILER; sets PID.
fresh() {
    local dir=$WORK/net/node-fresh args i
    mapfile -d '' args <"/proc/$(json_field "$WORK/net/node-$1/runtime.json" pid)/cmdline"
    shift
    for i in "${!args[@]}"; do
        [ "${args[$i]}" = --data-dir ] && args[i + 1]=$dir
    done
    mkdir -p "$dir"
    profiled "$dir" "$@" "${args[@]}"
}
joined() { # N: node-N's address for ADMIN and HTTP, once it has joined
    local dir=$WORK/net/node-$1
    wait_for 240 test -f "$dir/runtime.json"
    ADMIN=$(json_field "$dir/runtime.json" admin)
    HTTP=$(json_field "$dir/runtime.json" http)
    wait_for 240 bash -c "curl -sf http://$ADMIN/api/status | grep -q '\"joined\": *true'"
}

# up N BIN NAME: a testnet of N nodes of BIN in $WORK/NAME, once every node has joined; sets UP
# and ORIGIN.
up() {
    target/release/reef-testnet up --bin "$2" --nodes "$1" --providers 2 --dir "$WORK/$3" \
        >"$WORK/$3.log" 2>&1 &
    UP=$!
    wait_for 600 test -f "$WORK/$3/manifest.json"
    ORIGIN=$(json_field "$WORK/$3/manifest.json" origin)
}
down() { # stops the testnet UP and waits until its nodes have exited
    kill -INT "$UP"
    wait "$UP" || true
    UP=""
}
requests() { # HTTP OTHER: misses, hits, a peer fetch, a range, a HEAD, a 404
    curl -sf -o /dev/null -x "http://$2" "http://$ORIGIN/bytes/7777"
    for n in 1000 100000 3000000 7777; do
        for _ in 1 2 3; do curl -sf -o /dev/null -x "http://$1" "http://$ORIGIN/bytes/$n"; done
    done
    curl -sf -o /dev/null -r 0-99 -x "http://$1" "http://$ORIGIN/bytes/100000"
    curl -sf -o /dev/null -I -x "http://$1" "http://$ORIGIN/bytes/1000"
    curl -s -o /dev/null -x "http://$1" "http://$ORIGIN/missing" || true
}

# callgrind, on 30 nodes
up 30 "$BIN" net
OTHER=$(json_field "$WORK/net/node-0/runtime.json" http)
restart 7 valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/cg.out"
CALLGRIND=$PID
fresh 8 valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/cg-fresh.out"
FRESH=$PID
joined fresh
joined 7
sleep 5
callgrind_control -d "$CALLGRIND" >/dev/null 2>&1 # cg.out.1: start and join
callgrind_control -d "$FRESH" >/dev/null 2>&1     # cg-fresh.out.1
sleep 60
callgrind_control -d "$CALLGRIND" >/dev/null 2>&1 # cg.out.2: idle
callgrind_control -d "$FRESH" >/dev/null 2>&1     # cg-fresh.out.2
requests "$HTTP" "$OTHER"
curl -sf -o /dev/null "http://$ADMIN/metrics"
callgrind_control -d "$CALLGRIND" >/dev/null 2>&1 # cg.out.3: requests
for pid in "${PROFILED[@]}"; do kill -INT "$pid"; done
for pid in "${PROFILED[@]}"; do wait "$pid" || true; done
PROFILED=()
down

# perf, on NODES nodes, every one watched from its first start: system-wide, since the
# testnet wants its own children to be the nodes
perf record -a -q -e page-faults -c 1 -o "$WORK/faults" >"$WORK/perf.log" 2>&1 &
PERF=$!
PROFILED+=("$PERF")
up "$NODES" "$BIN" big
sleep 90
requests "$(json_field "$WORK/big/node-5/runtime.json" http)" \
    "$(json_field "$WORK/big/node-0/runtime.json" http)"
down
kill -INT "$PERF"
wait "$PERF" || true

nm --defined-only "$BIN" | awk '{ print $3 }' | sort -u >"$WORK/symbols"
callgrind_functions() { # FILE...: functions callgrind saw run in the reef binary itself
    # "ob=" names the object, "fn=" the function, in full the first time and as "(id)"
    # afterwards; the first time may also be a call's "cob=" or "cfn=". A trailing "'2"
    # marks a recursive call.
    awk -v bin="$BIN" '
        function value(line,   v) { v = substr(line, index(line, "=") + 1); return v }
        FNR == 1 { split("", ob); split("", fn); cur = "" } # each file names its own ids
        /^c?ob=/ { v = value($0); id = v; sub(/ .*/, "", id)
                   if (v ~ / /) { sub(/^[^ ]* /, "", v); ob[id] = v }
                   if ($0 ~ /^ob=/) cur = ob[id] }
        /^c?fn=/ { v = value($0); id = v; sub(/ .*/, "", id)
                   if (v ~ / /) { sub(/^[^ ]* /, "", v); fn[id] = v }
                   if ($0 ~ /^fn=/ && cur == bin) { name = fn[id]; sub(/'"'"'[0-9]+$/, "", name); print name } }
    ' "$@" | sort -u | grep -Fxf "$WORK/symbols" || true
}
{
    perf script -i "$WORK/faults" --no-demangle -F ip,sym,dso 2>/dev/null |
        awk -v bin="($BIN)" '$NF == bin { print $2 }'
    # what earlier runs found
    [ -f "$OUT" ] && awk '/^# / { keep = ($2 == "native") } keep && !/^#/' "$OUT"
} | sort -u | grep -Fxf "$WORK/symbols" >"$WORK/native" || true

{
    echo "# Made by testnet/bench/link-order.sh on $(date -u '+%Y-%m-%d') from $(git rev-parse --short HEAD); see node/build.rs."
    echo "# idle"
    callgrind_functions "$WORK/cg.out.2" "$WORK/cg-fresh.out.2"
    echo "# native"
    cat "$WORK/native"
    echo "# start"
    callgrind_functions "$WORK/cg.out.1" "$WORK/cg-fresh.out.1"
    echo "# requests"
    callgrind_functions "$WORK/cg.out.3"
} | awk '/^#/ || !seen[$0]++' >"$OUT.new"
mv "$OUT.new" "$OUT"
echo "link-order: wrote $OUT: $(grep -vc '^#' "$OUT") functions, $(wc -l <"$WORK/native") of them found natively; rebuild with cargo build --release"
