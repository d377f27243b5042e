//! Engine metrics in the Prometheus (OpenMetrics text) format, served at `GET /metrics`.
//!
//! One [`Metrics`] per engine, with its own registry (no process-wide recorder: several engines
//! in one process, as in the tests, keep separate counts). Call sites elsewhere are one-liners
//! on the engine's shared `Ctx::metrics`; every name and label is defined here.
//!
//! Label cardinality is bounded: outcomes are a fixed set, and the per-subscription queue
//! gauges carry a `subscription` label only for the `max_subscription_labels` subscriptions with
//! the deepest queues (computed from the journal at scrape time); the `_total` gauges and the
//! oldest-age gauge cover every subscription.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::DeliveryStatus;

/// How a delivery (or one attempt of it) ended, for `hookline_deliveries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The receiver took it (2xx).
    Delivered,
    /// Given up on: failed for good.
    Failed,
    /// An attempt failed and the delivery will be retried.
    Retried,
    /// Filtered out by a transform.
    #[allow(dead_code)] // counted by the transform wiring
    Dropped,
    /// Skipped by an operator.
    Skipped,
    /// Cut short by a stop or an actor failure; retried without using the retry budget.
    Interrupted,
    /// Put back to pending by a replay.
    Replayed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
            Outcome::Dropped => "dropped",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
            Outcome::Replayed => "replayed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabel {
    subscription: String,
}

/// One subscription's open queue, as the journal reports it at scrape time.
#[derive(Debug, Clone)]
pub(crate) struct QueueStat {
    pub subscription: String,
    /// Pending and in-flight deliveries.
    pub depth: u64,
    /// Age of its oldest open delivery's event (since the event was accepted).
    pub oldest_age: Duration,
}

/// Every metric of one engine.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    events_accepted: Counter,
    deliveries: Family<OutcomeLabel, Counter>,
    attempt_seconds: Histogram,
    transform_seconds: Histogram,
    actor_restarts: Counter,
    actors_faulted: Counter,
    commit_seconds: Histogram,
    commit_ops: Histogram,
    fsync_seconds: Histogram,
    wal_restarts: Counter,
    pruned_events: Counter,
    queue_depth: Family<SubscriptionLabel, Gauge>,
    queue_oldest: Family<SubscriptionLabel, Gauge<f64, AtomicU64>>,
    queue_depth_total: Gauge,
    queue_oldest_total: Gauge<f64, AtomicU64>,
    subscriptions_backlogged: Gauge,
    max_labels: usize,
    /// Whether the journal writes, and whether the engine can go on.
    pub(crate) health: crate::health::Health,
}

impl Metrics {
    pub(crate) fn new(max_subscription_labels: usize) -> Metrics {
        let mut registry = Registry::with_prefix("hookline");
        let m = Metrics {
            events_accepted: Counter::default(),
            deliveries: Family::default(),
            // 1 ms to ~65 s.
            attempt_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 50 µs to ~1.6 s.
            transform_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            actor_restarts: Counter::default(),
            actors_faulted: Counter::default(),
            // 100 µs to ~3.3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            // 1 to 4096 operations.
            commit_ops: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 100 µs to ~3.3 s.
            fsync_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            wal_restarts: Counter::default(),
            pruned_events: Counter::default(),
            queue_depth: Family::default(),
            queue_oldest: Family::default(),
            queue_depth_total: Gauge::default(),
            queue_oldest_total: Gauge::default(),
            subscriptions_backlogged: Gauge::default(),
            max_labels: max_subscription_labels,
            health: crate::health::Health::new(&mut registry),
            registry: Registry::default(),
        };
        registry.register(
            "events_accepted",
            "Events journaled (idempotent duplicates excluded)",
            m.events_accepted.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery outcomes: delivered, failed, retried, dropped, skipped, interrupted, replayed",
            m.deliveries.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Duration of delivery attempts, whatever their outcome",
            m.attempt_seconds.clone(),
        );
        registry.register(
            "transform_duration_seconds",
            "Duration of transform calls",
            m.transform_seconds.clone(),
        );
        registry.register(
            "actor_restarts",
            "Subscriber actors restarted after a failure",
            m.actor_restarts.clone(),
        );
        registry.register(
            "subscriptions_faulted",
            "Subscriptions marked faulted after too many actor failures",
            m.actors_faulted.clone(),
        );
        registry.register(
            "journal_commit_duration_seconds",
            "Duration of journal write transactions (group commits); their fsyncs are journal_fsync_duration_seconds",
            m.commit_seconds.clone(),
        );
        registry.register(
            "journal_commit_operations",
            "Operations grouped into one journal commit",
            m.commit_ops.clone(),
        );
        registry.register(
            "journal_fsync_duration_seconds",
            "Duration of the fsyncs that make journal commits durable (durability fsync)",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "journal_wal_restarts",
            "Times the checkpoint thread started the WAL over while the writer held still",
            m.wal_restarts.clone(),
        );
        registry.register(
            "retention_pruned_events",
            "Events pruned by retention",
            m.pruned_events.clone(),
        );
        registry.register(
            "queue_depth",
            "Open (pending or in-flight) deliveries of the subscriptions with the deepest queues",
            m.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest open delivery's event, per labelled subscription",
            m.queue_oldest.clone(),
        );
        registry.register(
            "queue_depth_all",
            "Open deliveries of all subscriptions",
            m.queue_depth_total.clone(),
        );
        registry.register(
            "queue_oldest_age_all_seconds",
            "Age of the oldest open delivery's event over all subscriptions",
            m.queue_oldest_total.clone(),
        );
        registry.register(
            "subscriptions_with_backlog",
            "Subscriptions with at least one open delivery",
            m.subscriptions_backlogged.clone(),
        );
        Metrics { registry, ..m }
    }

    /// `n` new events were journaled.
    pub(crate) fn events_accepted(&self, n: u64) {
        self.events_accepted.inc_by(n);
    }

    /// `n` deliveries ended (or moved) this way.
    pub(crate) fn deliveries(&self, outcome: Outcome, n: u64) {
        self.deliveries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc_by(n);
    }

    /// An attempt ended and left its delivery in `status` (pending: it will be retried).
    pub(crate) fn attempt(&self, status: DeliveryStatus, took: Duration) {
        self.attempt_seconds.observe(took.as_secs_f64());
        let outcome = match status {
            DeliveryStatus::Delivered => Outcome::Delivered,
            DeliveryStatus::Failed => Outcome::Failed,
            DeliveryStatus::Dropped => Outcome::Dropped,
            DeliveryStatus::Skipped => Outcome::Skipped,
            DeliveryStatus::Pending | DeliveryStatus::InFlight => Outcome::Retried,
        };
        self.deliveries(outcome, 1);
    }

    /// One transform call took `took`.
    #[allow(dead_code)] // called by the transform wiring
    pub(crate) fn transform_time(&self, took: Duration) {
        self.transform_seconds.observe(took.as_secs_f64());
    }

    /// A subscriber actor was restarted after a failure.
    pub(crate) fn actor_restart(&self) {
        self.actor_restarts.inc();
    }

    /// A subscription was marked faulted.
    pub(crate) fn faulted(&self) {
        self.actors_faulted.inc();
    }

    /// The journal writer committed `ops` operations in `took`.
    pub(crate) fn commit(&self, ops: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_ops.observe(ops as f64);
    }

    /// One fsync of the journal took `took`.
    pub(crate) fn fsync(&self, took: Duration) {
        self.fsync_seconds.observe(took.as_secs_f64());
    }

    /// The checkpoint thread started the WAL over.
    pub(crate) fn wal_restarted(&self) {
        self.wal_restarts.inc();
    }

    /// How many times the checkpoint thread started the WAL over.
    #[cfg(test)]
    pub(crate) fn wal_restarts(&self) -> u64 {
        self.wal_restarts.get()
    }

    /// How many fsyncs made commits durable.
    #[cfg(test)]
    pub(crate) fn fsyncs(&self) -> u64 {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text.lines()
            .find_map(|l| l.strip_prefix("hookline_journal_fsync_duration_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Retention pruned `n` events.
    pub(crate) fn pruned(&self, n: u64) {
        self.pruned_events.inc_by(n);
    }

    /// Replaces the queue gauges with a fresh reading of every open queue.
    pub(crate) fn set_queues(&self, mut stats: Vec<QueueStat>) {
        self.queue_depth_total
            .set(stats.iter().map(|s| s.depth as i64).sum());
        self.queue_oldest_total.set(
            stats
                .iter()
                .map(|s| s.oldest_age.as_secs_f64())
                .fold(0.0, f64::max),
        );
        self.subscriptions_backlogged.set(stats.len() as i64);
        stats.sort_by(|a, b| b.depth.cmp(&a.depth).then(b.oldest_age.cmp(&a.oldest_age)));
        stats.truncate(self.max_labels);
        self.queue_depth.clear();
        self.queue_oldest.clear();
        for s in stats {
            let label = SubscriptionLabel {
                subscription: s.subscription,
            };
            self.queue_depth.get_or_create(&label).set(s.depth as i64);
            self.queue_oldest
                .get_or_create(&label)
                .set(s.oldest_age.as_secs_f64());
        }
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_bounded_labels() {
        let m = Metrics::new(2);
        m.events_accepted(3);
        m.attempt(DeliveryStatus::Delivered, Duration::from_millis(5));
        m.attempt(DeliveryStatus::Pending, Duration::from_millis(5));
        m.commit(7, Duration::from_millis(2));
        m.set_queues(
            (0..5)
                .map(|i| QueueStat {
                    subscription: format!("sub_{i}"),
                    depth: i,
                    oldest_age: Duration::from_secs(i),
                })
                .collect(),
        );
        let text = m.encode();
        assert!(text.contains("hookline_events_accepted_total 3"), "{text}");
        assert!(
            text.contains("hookline_deliveries_total{outcome=\"delivered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hookline_deliveries_total{outcome=\"retried\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hookline_journal_commit_operations_count 1"),
            "{text}"
        );
        assert!(text.contains("hookline_queue_depth_all 10"), "{text}");
        assert!(
            text.contains("hookline_subscriptions_with_backlog 5"),
            "{text}"
        );
        // Only the two deepest queues are labelled.
        assert!(
            text.contains("hookline_queue_depth{subscription=\"sub_4\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("hookline_queue_depth{subscription=\"sub_3\"} 3"),
            "{text}"
        );
        assert!(!text.contains("subscription=\"sub_2\""), "{text}");
    }
}
