#!/usr/bin/env bash
# Runs hookline's fuzz targets (fuzz/, cargo fuzz + libFuzzer) one after the other, each for a
# fixed time, and prints one line per target: executions, speed, corpus size, result.
#
#   scripts/fuzz.sh                      every target, 300 s each
#   scripts/fuzz.sh --seconds 3600 ssrf  one target for an hour
#   scripts/fuzz.sh --ci                 every target, 30 s each (what .ci/run does)
#   scripts/fuzz.sh --minimize           after the runs, rewrite fuzz/corpus/<target> as the
#                                        hand-written seeds plus a minimized corpus (to commit);
#                                        with --seconds 0, minimize without fuzzing
#   scripts/fuzz.sh --list               the targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked --version 0.13.2`). Builds on stable
# Rust without a sanitizer (`-s none`: the sanitizers need a nightly compiler), with debug
# assertions and overflow checks (`-a`). Inputs libFuzzer finds go to fuzz/corpus-work/<target>
# (not committed); the committed corpus fuzz/corpus/<target> is read, and only rewritten by
# --minimize. A crash, a panic, an input running over 10 s, an allocation over 512 MiB or an RSS
# over 2 GiB fails the run; the input is saved under fuzz/artifacts/<target>/ and the line to
# replay it is printed. Exit status: 0 when every target ran clean.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=300
minimize=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ci) seconds=30 ;;
        --seconds) seconds="$2"; shift ;;
        --minimize) minimize=1 ;;
        --list) grep -o '^name = "[a-z_]*"' fuzz/Cargo.toml | cut -d'"' -f2; exit 0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("$0" --list)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked --version 0.13.2" >&2
    exit 1
fi

# One target dir with the root build: the instrumented artifacts live under
# <target>/x86_64-unknown-linux-gnu/release and never collide with target/{debug,release}, and
# build scripts and proc macros (built without the fuzzing flags) are shared.
target_dir="${CARGO_TARGET_DIR:-$root/target}"
build=(-s none -a --target-dir "$target_dir" --fuzz-dir "$root/fuzz")
limits=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10)

# The fuzz package has its own lock file, a copy of the root's plus libfuzzer-sys: refuse to
# build with versions other than the ones committed.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

start=$(date +%s)
cargo fuzz build "${build[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s"
bin="$target_dir/x86_64-unknown-linux-gnu/release"

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-work/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # libFuzzer reads -max_total_time=0 as "no limit": 0 here means "do not fuzz".
    [ "$seconds" -gt 0 ] || continue
    log="fuzz/artifacts/$t/last-run.log"
    echo "== $t: ${seconds} s"
    status=ok
    if ! "$bin/$t" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" "fuzz/corpus-work/$t" "fuzz/corpus/$t" \
        >"$log" 2>&1; then
        status=FAILED
        failed+=("$t")
        grep -v '^#\|^INFO\|^WARNING' "$log" | tail -40
        for a in $(grep -o 'fuzz/artifacts/[^ ]*' "$log" | sort -u); do
            echo "replay: $bin/$t $a"
        done
    fi
    execs=$(grep -o 'number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
    speed=$(grep -o 'average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
    corpus=$(ls "fuzz/corpus-work/$t" "fuzz/corpus/$t" | grep -vc ':$\|^$' || true)
    summary+=("$(printf '%-18s %6s s %12s execs %8s/s %6s inputs  %s' \
        "$t" "$seconds" "${execs:-?}" "${speed:-?}" "$corpus" "$status")")
done

if [ "$minimize" = 1 ]; then
    for t in "${targets[@]}"; do
        fresh=$(mktemp -d)
        cp fuzz/corpus/"$t"/seed-* "$fresh"/ 2>/dev/null || true
        # Small on purpose: a set of inputs covering every edge (hit counts ignored); the
        # whole working corpus stays in fuzz/corpus-work for the next long run.
        "$bin/$t" -set_cover_merge=1 -use_counters=0 "$fresh" "fuzz/corpus-work/$t" \
            "fuzz/corpus/$t" >/dev/null 2>&1
        rm -rf "fuzz/corpus/$t"
        mv "$fresh" "fuzz/corpus/$t"
        echo "minimized $t: $(ls "fuzz/corpus/$t" | wc -l) inputs"
    done
fi

echo "== fuzz summary ($(( $(date +%s) - start )) s in all)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
