#!/usr/bin/env bash
# Soak test: the release `hookline serve` on a fresh journal, loaded by `hookline load --rate`
# at a fixed rate for a long time, with a sample every minute of the server's RSS, open file
# descriptors, journal and WAL sizes, publish→receipt p50/p99 and backlog.
#
#   scripts/soak.sh                        1 h at 1,000 events/s over 100 subscriptions, 5 % of
#                                          attempts failing, a sample every 60 s
#   scripts/soak.sh --short                60 s, a sample every 10 s (what .ci/run does)
#   scripts/soak.sh --duration 10m --rate 500 --subs 50 --fail 5 --every 30s
#   scripts/soak.sh --no-build             use target/release/hookline (or $HOOKLINE_BIN) as it is
#
# The server and the load generator share the machine: run it when nothing else is building.
# The whole output goes to target/soak/soak-<UTC time>.log; its last line is the JSON report
# (every sample). Exit status: the load generator's (non-zero if an accepted event never
# arrived, or nothing was accepted), or 1 if the server died.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=1h
rate=1000
subs=100
fail=5
every=60s
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --short) duration=60s; every=10s ;;
        --duration) duration="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --subs) subs="$2"; shift ;;
        --fail) fail="$2"; shift ;;
        --every) every="$2"; shift ;;
        --no-build) build=0 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

target="${CARGO_TARGET_DIR:-target}"
if [ "$build" = 1 ]; then
    cargo build --release --locked --bin hookline
fi
bin="${HOOKLINE_BIN:-$target/release/hookline}"
[ -x "$bin" ] || { echo "no $bin (build it, or drop --no-build)" >&2; exit 1; }

work=$(mktemp -d)
mkdir -p "$target/soak"
log="$target/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key="soak-admin-key-$(date +%s%N)"
HOOKLINE_LISTEN="127.0.0.1:$port" HOOKLINE_DB="$work/soak.db" HOOKLINE_ADMIN_KEY="$key" \
    HOOKLINE_ALLOW_NETWORKS=127.0.0.0/8 RUST_LOG=warn \
    "$bin" serve >"$work/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done

echo "soak: $duration at $rate events/s over $subs subscriptions, $fail % failing; log $log"
status=0
"$bin" load --url "http://127.0.0.1:$port" --key "$key" --rate "$rate" --subs "$subs" \
    --fail-percent "$fail" --duration "$duration" --every "$every" --concurrency 64 \
    --server-pid "$server" --journal "$work/soak.db" --drain-timeout 5m 2>&1 | tee "$log" || status=$?
if ! kill -0 "$server" 2>/dev/null; then
    echo "soak: the server died" >&2
    tail -20 "$work/server.log" >&2
    exit 1
fi
exit "$status"
