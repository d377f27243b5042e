#!/usr/bin/env bash
# Builds hookline's example transform guests into transforms/dist/, or checks that the committed
# artifacts there still match their sources.
#
#   transforms/build.sh           build every guest, copy it to dist/<name>.wasm, rewrite
#                                 dist/SOURCES.sha256 (the Python guest only when its sources or
#                                 componentize-py changed, as its bytes differ on every build)
#   transforms/build.sh --force   the same, rebuilding the Python guest regardless
#   transforms/build.sh --check   rebuild everything into a temporary directory and fail unless
#                                 * every Rust artifact in dist/ is byte-identical to the rebuild
#                                   (the Rust builds are reproducible, see below),
#                                 * dist/SOURCES.sha256 matches the current sources, toolchain
#                                   versions and artifacts (this is what covers the Python and
#                                   JavaScript guests, whose builds are not byte-reproducible),
#                                 * dist/ holds exactly the expected artifacts,
#                                 * the guests' unit tests pass, and
#                                 * (when node is installed) every example in examples/ run
#                                   through the committed artifacts gives examples/expected/.
#
# It installs what it needs: the wasm32-wasip2 Rust target (rustup), a virtualenv at
# transforms/.venv with a pinned componentize-py (pip), the componentize-js locked in
# transforms/js/package-lock.json (npm ci in transforms/js/; needs node and npm), and the pinned
# jco for the example runs (npm install in transforms/test/). Everything it installs or builds
# is git-ignored.
#
# Reproducibility: the Rust guests are built with --locked, codegen-units = 1, no debug info, and
# the local paths that end up in panic messages remapped (--remap-path-prefix), so the same
# sources built with the same rustc give the same bytes wherever the checkout, the cargo home
# and the target directory are.
# componentize-py snapshots a CPython heap, which differs between runs, so the Python guest is
# checked through the source-hash manifest instead. So is the JavaScript guest: componentize-js
# snapshots a SpiderMonkey heap with wizer, which differs between runs too.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
RUST_TARGET=wasm32-wasip2
# Rust crates in transforms/rust; each is built to dist/<crate>.wasm.
RUST_GUESTS=(
    mask-pii to-xml drop-by-rule
    evil-loop evil-memory evil-recursion evil-output evil-trap evil-header evil-error
)
# Python apps in transforms/python/<dir>, built to dist/<name>.wasm.
PYTHON_GUESTS=("mask_pii:mask-pii-py")
# JavaScript apps in transforms/js/<dir>/app.js, built to dist/<name>.wasm.
JS_GUESTS=("mask-pii:mask-pii-js")

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

usage() {
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 2
}

MODE=build
PY_IF_CHANGED=--if-changed
case "${1:-}" in
    "") ;;
    --force) PY_IF_CHANGED= ;;
    --check) MODE=check ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
esac

log() { printf '== %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------

ensure_rust_target() {
    command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
    if ! rustup target list --installed 2>/dev/null | grep -qx "$RUST_TARGET"; then
        log "installing the $RUST_TARGET Rust target"
        rustup target add "$RUST_TARGET"
    fi
}

VENV="$HERE/.venv"
COMPONENTIZE_PY="$VENV/bin/componentize-py"

ensure_componentize_py() {
    if [[ "$("$COMPONENTIZE_PY" --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
        log "installing componentize-py $COMPONENTIZE_PY_VERSION into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --disable-pip-version-check -q "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
}

JS_DIR="$HERE/js"
COMPONENTIZE_JS="$JS_DIR/node_modules/@bytecodealliance/componentize-js/src/cli.js"

# The componentize-js version the lock file pins (what the manifest records).
componentize_js_version() {
    node -e 'const l = require(process.argv[1]);
        console.log(l.packages["node_modules/@bytecodealliance/componentize-js"].version)' \
        "$JS_DIR/package-lock.json"
}

ensure_componentize_js() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "node and npm are required to build the JavaScript guests (https://nodejs.org)" >&2
        exit 1
    fi
    local want installed
    want="$(componentize_js_version)"
    installed="$(node -p 'require(process.argv[1]).version' \
        "$JS_DIR/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null || true)"
    if [[ "$installed" != "$want" || ! -f "$JS_DIR/node_modules/.package-lock.json" ||
        "$JS_DIR/package-lock.json" -nt "$JS_DIR/node_modules/.package-lock.json" ]]; then
        log "installing componentize-js $want (npm ci in $JS_DIR)"
        (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

rustc_version() { rustc -V; }

# --- builds ------------------------------------------------------------------------------------

# build_rust OUT_DIR TARGET_DIR
build_rust() {
    local out="$1" target_dir="$2" cargo_home="${CARGO_HOME:-$HOME/.cargo}" sep=$'\x1f'
    log "building ${#RUST_GUESTS[@]} Rust guests ($(rustc_version))"
    # Remap the paths rustc records (panic locations) so the bytes do not depend on where the
    # checkout, the cargo registry or the target directory are. This replaces any RUSTFLAGS.
    local flags="--remap-path-prefix=$HERE/rust=/hookline/transforms/rust"
    flags+="${sep}--remap-path-prefix=$cargo_home=/cargo"
    flags+="${sep}--remap-path-prefix=$target_dir=/target"
    local pkgs=()
    for g in "${RUST_GUESTS[@]}"; do pkgs+=(-p "$g"); done
    (
        cd rust
        unset RUSTFLAGS
        CARGO_ENCODED_RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target_dir" \
            cargo build --release --locked --target "$RUST_TARGET" "${pkgs[@]}"
    )
    for g in "${RUST_GUESTS[@]}"; do
        cp "$target_dir/$RUST_TARGET/release/${g//-/_}.wasm" "$out/$g.wasm"
    done
}

# build_python OUT_DIR [--if-changed]
build_python() {
    local out="$1" spec dir name work
    for spec in "${PYTHON_GUESTS[@]}"; do
        dir="${spec%%:*}" name="${spec#*:}"
        if [[ "${2:-}" == --if-changed ]] && python_up_to_date "$spec"; then
            log "$name is up to date with its sources (--force rebuilds it anyway)"
            continue
        fi
        log "building $name with componentize-py $COMPONENTIZE_PY_VERSION"
        # Build from a copy so no __pycache__ or bindings land in the source tree.
        work="$(mktemp -d)"
        cp -R "python/$dir/." "$work/"
        (
            cd "$work"
            unset VIRTUAL_ENV
            PYTHONDONTWRITEBYTECODE=1 "$COMPONENTIZE_PY" -q -d "$HERE/wit" -w transformer \
                componentize --stub-wasi app -o "$out/$name.wasm"
        )
        rm -rf "$work"
    done
}

# build_js OUT_DIR [--if-changed]
build_js() {
    local out="$1" spec dir name
    for spec in "${JS_GUESTS[@]}"; do
        dir="${spec%%:*}" name="${spec#*:}"
        if [[ "${2:-}" == --if-changed ]] && js_up_to_date "$spec"; then
            log "$name is up to date with its sources (--force rebuilds it anyway)"
            continue
        fi
        log "building $name with componentize-js $(componentize_js_version)"
        # http and fetch-event are StarlingMonkey's HTTP server features: a transform needs
        # neither, and without them the component imports no wasi:http.
        (
            cd "js/$dir"
            node "$COMPONENTIZE_JS" app.js --wit "$HERE/wit" -n transformer \
                -d http fetch-event -o "$out/$name.wasm" >/dev/null
        )
    done
}

# --- the manifest ------------------------------------------------------------------------------

sha() { sha256sum "$1" | cut -d' ' -f1; }

# Source files (relative to transforms/) a guest's artifact depends on, sorted.
rust_sources() {
    local crate_dir="rust/$1"
    [[ -d "$crate_dir" ]] || crate_dir="rust/evil/$1"
    {
        echo wit/transform.wit
        echo rust/Cargo.toml
        echo rust/Cargo.lock
        find "$crate_dir" rust/common -type f \( -name '*.rs' -o -name Cargo.toml \)
    } | LC_ALL=C sort -u
}

python_sources() {
    {
        echo wit/transform.wit
        find "python/$1" -type f -not -path '*/__pycache__/*' -not -name '*.pyc'
    } | LC_ALL=C sort -u
}

# manifest_rust GUEST ARTIFACT_DIR / manifest_python SPEC ARTIFACT_DIR: one artifact's section.
manifest_rust() {
    local g="$1" art="$2" f
    echo "[$g.wasm] $(rustc_version); --target $RUST_TARGET --release --locked; byte-reproducible"
    echo "$(sha "$art/$g.wasm")  dist/$g.wasm"
    while read -r f; do echo "$(sha "$f")  $f"; done < <(rust_sources "$g")
}

js_sources() {
    {
        echo wit/transform.wit
        echo js/package.json
        echo js/package-lock.json
        find "js/$1" -type f
    } | LC_ALL=C sort -u
}

manifest_js() {
    local dir="${1%%:*}" name="${1#*:}" art="$2" f
    echo "[$name.wasm] componentize-js $(componentize_js_version) -d http fetch-event; not byte-reproducible"
    echo "$(sha "$art/$name.wasm")  dist/$name.wasm"
    while read -r f; do echo "$(sha "$f")  $f"; done < <(js_sources "$dir")
}

manifest_python() {
    local dir="${1%%:*}" name="${1#*:}" art="$2" f
    echo "[$name.wasm] componentize-py $COMPONENTIZE_PY_VERSION componentize --stub-wasi; not byte-reproducible"
    echo "$(sha "$art/$name.wasm")  dist/$name.wasm"
    while read -r f; do echo "$(sha "$f")  $f"; done < <(python_sources "$dir")
}

# write_manifest ARTIFACT_DIR PYTHON_ARTIFACT_DIR > manifest
# Rust artifacts are hashed in ARTIFACT_DIR; Python ones in PYTHON_ARTIFACT_DIR (the committed
# dist/ when checking, since a rebuild never has the same bytes).
write_manifest() {
    local art="$1" py_art="$2" g spec
    echo "# Written by transforms/build.sh and verified by transforms/build.sh --check."
    echo "# For each artifact: its sha256, the tool that built it, and the sha256 of every source"
    echo "# file it was built from (paths relative to transforms/). Do not edit by hand."
    for g in "${RUST_GUESTS[@]}"; do
        echo
        manifest_rust "$g" "$art"
    done
    for spec in "${PYTHON_GUESTS[@]}"; do
        echo
        manifest_python "$spec" "$py_art"
    done
    for spec in "${JS_GUESTS[@]}"; do
        echo
        manifest_js "$spec" "$py_art"
    done
}

# True when dist/ already holds this Python guest built from the current sources and tools
# (its manifest section is unchanged), so `build` need not churn an 18 MB artifact.
python_up_to_date() {
    local name="${1#*:}" section
    [[ -f "dist/$name.wasm" && -f dist/SOURCES.sha256 ]] || return 1
    section="$(manifest_python "$1" dist)"
    [[ "$(cat dist/SOURCES.sha256)" == *"$section"* ]]
}

# The same for a JavaScript guest (12 MB: StarlingMonkey is inside).
js_up_to_date() {
    local name="${1#*:}" section
    [[ -f "dist/$name.wasm" && -f dist/SOURCES.sha256 ]] || return 1
    section="$(manifest_js "$1" dist)"
    [[ "$(cat dist/SOURCES.sha256)" == *"$section"* ]]
}

expected_artifacts() {
    local spec
    for g in "${RUST_GUESTS[@]}"; do echo "$g.wasm"; done
    for spec in "${PYTHON_GUESTS[@]}"; do echo "${spec#*:}.wasm"; done
    for spec in "${JS_GUESTS[@]}"; do echo "${spec#*:}.wasm"; done
}

# --- example runs (node + jco) -----------------------------------------------------------------

run_examples() {
    local dist="$1"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "node/npm not found: skipping the example runs"
        return 0
    fi
    log "running examples/ through the artifacts (jco, node $(node --version))"
    # Not `npm ci`: npm rejects this lock file there because some of jco's optional per-platform
    # packages were never published. `install --no-save` still installs the locked versions and
    # leaves package-lock.json alone.
    (cd test && npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null) || return 1
    node test/run-examples.mjs "$dist"
}

# --- main --------------------------------------------------------------------------------------

ensure_rust_target
ensure_componentize_py
ensure_componentize_js

if [[ "$MODE" == build ]]; then
    mkdir -p dist
    build_rust "$HERE/dist" "$HERE/rust/target"
    build_python "$HERE/dist" $PY_IF_CHANGED
    build_js "$HERE/dist" $PY_IF_CHANGED
    write_manifest dist dist > dist/SOURCES.sha256.tmp
    mv dist/SOURCES.sha256.tmp dist/SOURCES.sha256
    log "artifacts:"
    (cd dist && ls -l -- *.wasm) >&2
    exit 0
fi

start=$SECONDS
TMP="$(mktemp -d "${TMPDIR:-/tmp}/hookline-transforms-check.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/out"
failed=0
fail() { echo "CHECK FAILED: $*" >&2; failed=1; }

build_rust "$TMP/out" "$TMP/target"
build_python "$TMP/out"
js_start=$SECONDS
build_js "$TMP/out"
js_seconds=$((SECONDS - js_start))

log "comparing"
# The set of artifacts.
diff <(expected_artifacts | LC_ALL=C sort) <(cd dist && ls -1 -- *.wasm | LC_ALL=C sort) >&2 ||
    fail "dist/ does not hold exactly the expected artifacts (< expected, > present)"
# Rust: byte for byte.
for g in "${RUST_GUESTS[@]}"; do
    if [[ ! -f "dist/$g.wasm" ]]; then
        continue
    elif cmp -s "$TMP/out/$g.wasm" "dist/$g.wasm"; then
        echo "ok        dist/$g.wasm ($(stat -c %s "dist/$g.wasm") bytes) is byte-identical to the rebuild"
    else
        fail "dist/$g.wasm differs from a rebuild of its sources ($(rustc_version))"
    fi
done
# Everything: the manifest (sources, tool versions, artifact hashes).
write_manifest "$TMP/out" dist > "$TMP/SOURCES.sha256"
if diff -u dist/SOURCES.sha256 "$TMP/SOURCES.sha256" >&2; then
    echo "ok        dist/SOURCES.sha256 matches the sources, tools and artifacts"
else
    fail "dist/SOURCES.sha256 is stale (- committed, + now)"
fi
# The Python rebuild succeeded; its bytes are not comparable, but its size should be close.
for spec in "${PYTHON_GUESTS[@]}"; do
    name="${spec#*:}"
    echo "ok        $name.wasm rebuilt ($(stat -c %s "$TMP/out/$name.wasm") bytes; committed $(stat -c %s "dist/$name.wasm" 2>/dev/null || echo 0))"
done
for spec in "${JS_GUESTS[@]}"; do
    name="${spec#*:}"
    echo "ok        $name.wasm rebuilt in ${js_seconds} s ($(stat -c %s "$TMP/out/$name.wasm") bytes; committed $(stat -c %s "dist/$name.wasm" 2>/dev/null || echo 0))"
done

log "unit tests of the Rust guests (native)"
(cd rust && CARGO_TARGET_DIR="$TMP/target" cargo test --locked --quiet) || fail "unit tests"

run_examples "$HERE/dist" || fail "example runs with the committed artifacts"
run_examples "$TMP/out" || fail "example runs with the rebuilt artifacts"

if [[ $failed -ne 0 ]]; then
    echo "transforms/build.sh --check failed after $((SECONDS - start)) s: run transforms/build.sh and commit dist/" >&2
    exit 1
fi
echo "transforms/build.sh --check passed in $((SECONDS - start)) s"
