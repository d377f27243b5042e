#!/usr/bin/env bash
# A longer kill -9 campaign on a 3-node cluster (tests/it/cluster.rs, `campaign`, ignored in the
# normal run): CLUSTER_KILLS kills (default 20), at random moments, of the node holding the most
# subscriptions while events are published and delivered (about 12 s per kill: 20 kills took
# 4 min on the 2-core machine), each node taken over within the lease TTL and restarted, then
# the same checks as
# the short scenarios (nothing acknowledged lost, order, one request in flight per
# subscription, duplicates within one per subscription per kill). Prints its counts.
# Needs PostgreSQL's server binaries (the test starts its own throwaway server).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER_KILLS="${CLUSTER_KILLS:-20}" nice -n 19 cargo test --all-features --locked --test it \
  cluster::campaign -- --ignored --nocapture "$@"
