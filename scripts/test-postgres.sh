#!/usr/bin/env bash
# The engine's behaviour tests (tests/it/engine.rs, and tests/it/keys*.rs for ordering keys) on
# the PostgreSQL store instead of SQLite: every TestEngine gets a fresh database of the test binary's throwaway PostgreSQL server
# (HOOKLINE_TEST_STORE=postgres, see tests/it/support/mod.rs). The store-level suite runs on both
# backends in every `cargo test --all-features` already (src/store/suite.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
HOOKLINE_TEST_STORE=postgres cargo test --all-features --locked --test it -- engine:: keys "$@"
