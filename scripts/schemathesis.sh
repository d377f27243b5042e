#!/usr/bin/env bash
# OpenAPI conformance run: Schemathesis (pinned, from PyPI) against the real `hookline serve`
# binary on 127.0.0.1, with a real admin key and tenant, every phase (examples, coverage,
# fuzzing, stateful through the document's OpenAPI links), every check. Exits non-zero on any
# failure. See docs/testing.md.
#
#   scripts/schemathesis.sh              short form (CI): 25 examples per operation, seed 1
#   scripts/schemathesis.sh --long       long form: 300 examples per operation, a random seed
#   options: --examples N, --seed N, --binary PATH (default: cargo builds target/debug/hookline)
#
# Callback URLs it generates go nowhere: as root the server and Schemathesis run in a network
# namespace of their own holding only loopback (unshare --net), so no name resolves and no
# packet leaves; elsewhere every delivery goes through a proxy address where nothing listens.
# The SSRF guard stays on (its default) either way.
#
# Installs Schemathesis once into a project-local virtualenv under the target directory
# (never into the system's Python); reports go to <target>/tmp/schemathesis-report/.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
EXAMPLES=25
SEED=1
BIN=
INNER=
while [ $# -gt 0 ]; do
    case "$1" in
        --long) EXAMPLES=300; SEED=$((RANDOM * 32768 + RANDOM)) ;;
        --examples) EXAMPLES=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --binary) BIN=$2; shift ;;
        --inner) INNER=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
VENV=$TARGET/tmp/schemathesis-$VERSION
REPORT=$TARGET/tmp/schemathesis-report

if [ -z "$INNER" ]; then
    command -v python3 >/dev/null || { echo "python3 is needed (with venv and pip)" >&2; exit 1; }
    mkdir -p "$TARGET/tmp"
    (
        flock 9
        if [ ! -f "$VENV/.complete" ]; then
            echo "== installing schemathesis $VERSION into $VENV"
            rm -rf "$VENV"
            python3 -m venv "$VENV"
            "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
            touch "$VENV/.complete"
        fi
    ) 9>"$TARGET/tmp/schemathesis.lock"
    if [ -z "$BIN" ]; then
        # --all-features: the artifacts `cargo test --all-features` built already.
        cargo build --locked --all-features --bin hookline --quiet
        BIN=$TARGET/debug/hookline
    fi
    case "$BIN" in /*) ;; *) BIN=$PWD/$BIN ;; esac
    args=(--examples "$EXAMPLES" --seed "$SEED" --binary "$BIN")
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
        && unshare --net true 2>/dev/null; then
        exec unshare --net -- "$0" "${args[@]}" --inner netns
    fi
    echo "== no network namespace here (needs root, unshare and ip): deliveries go to a dead proxy"
    exec "$0" "${args[@]}" --inner proxy
fi

# ---- inside: the server, a tenant, Schemathesis ------------------------------------------------
WORK=$(mktemp -d)
PORT=8080
serve_args=()
if [ "$INNER" = netns ]; then
    ip link set lo up
else
    # Port 9 (discard) on loopback, where nothing listens: every delivery fails to connect.
    serve_args+=(--proxy http://127.0.0.1:9)
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
ADMIN=hla_conformance_$(python3 -c 'import secrets; print(secrets.token_hex(16))')
"$BIN" serve --listen "127.0.0.1:$PORT" --db "$WORK/conformance.db" --admin-key "$ADMIN" \
    --durability os --log-level warn "${serve_args[@]}" >"$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

BASE=http://127.0.0.1:$PORT
TENANT_KEY=$(BASE=$BASE ADMIN=$ADMIN python3 - <<'EOF'
import json, os, time, urllib.request
base, admin = os.environ["BASE"], os.environ["ADMIN"]
for _ in range(300):
    try:
        if urllib.request.urlopen(base + "/readyz", timeout=1).status == 200:
            break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("hookline did not get ready within 30 s")
req = urllib.request.Request(base + "/v1/tenants", method="POST",
    data=json.dumps({"id": "acme", "name": "Acme"}).encode(),
    headers={"authorization": "Bearer " + admin, "content-type": "application/json"})
print(json.load(urllib.request.urlopen(req))["apiKey"])
EOF
)
[ -n "$TENANT_KEY" ] || { cat "$WORK/server.log"; exit 1; }

echo "== schemathesis $VERSION: $EXAMPLES examples per operation, seed $SEED, network: $INNER"
rm -rf "$REPORT"
status=0
# --request-timeout: a transform upload compiles its component before answering, which took
# over schemathesis's default 10 s in a debug build on a 2-core machine at load 12.
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=$PWD/scripts \
    "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml --no-color run \
    "$BASE/v1/openapi.json" \
    --header "Authorization: Bearer $ADMIN" \
    --checks all \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 2 \
    --request-timeout 60 \
    --generation-database none \
    --report "${REPORTS:-junit,ndjson}" --report-dir "$REPORT" || status=$?
if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "hookline died during the run:" >&2
    cat "$WORK/server.log" >&2
    status=1
fi
if grep -qE '(ERROR|panicked)' "$WORK/server.log"; then
    echo "== server log (errors):"
    grep -E '(ERROR|panicked)' "$WORK/server.log" | head -20
fi
exit $status
