#!/usr/bin/env bash
# A long random crash campaign against the real binary: each crash is an abort at a named crash
# point (HOOKLINE_CRASH_AT, feature test-hooks; the points are listed in src/crashpoint.rs) or a
# `kill -9` at a random moment, while events are published, delivered to a loopback receiver
# that fails 10% of attempts, replayed, pruned by retention and transforms uploaded. After every
# crash: `PRAGMA integrity_check`, and the receipts so far keep the order/loss/duplicate rules
# (tests/it/crash_points.rs says which). It prints one line with the figures at the end.
#
#   scripts/crash-campaign.sh               200 crashes
#   scripts/crash-campaign.sh --crashes 1000
#   scripts/crash-campaign.sh --hits 50     instead: every crash point 50 times (CI does 20)
#
# Exit status: 0 when every check held.
set -euo pipefail
cd "$(dirname "$0")/.."

crashes=200
hits=
while [ $# -gt 0 ]; do
    case "$1" in
        --crashes) crashes="$2"; shift ;;
        --hits) hits="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "crash-campaign: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

start=$(date +%s)
set +e
if [ -n "$hits" ]; then
    HOOKLINE_CRASH_HITS="$hits" cargo test --all-features --test it -- \
        crash_points:: --nocapture 2>&1 | grep -E '^(crash point|test result)|panicked'
else
    HOOKLINE_CAMPAIGN_CRASHES="$crashes" cargo test --all-features --test it -- \
        --ignored crash_points::crash_campaign --exact --nocapture 2>&1 |
        grep -E '^(crash campaign|test result)|panicked'
fi
status=${PIPESTATUS[0]}
set -e
echo "crash-campaign: $(( $(date +%s) - start )) s in all (build included)"
exit "$status"
