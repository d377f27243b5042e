//! An attempt's outcome turned into its journal record: the attempt log entry, the delivery's
//! new state, and what changes on the subscription.
//!
//! Pure: no I/O, no clock, no shared state. The caller passes `now` and the random source of the
//! retry jitter, so every rule below is unit-tested. What it decides, in order:
//! 1. the subscription's status table ([`StatusRules::classify`], [`policy::classify_error`])
//!    judges the outcome (a 3xx it counts as delivered is still never followed); a receiver that answers `webhook-delivery: disable` on anything but a 2xx is
//!    treated as 410 Gone; a transform that failed is never retried, one that dropped the
//!    delivery ends it as `dropped`;
//! 2. the retry budget and schedule ([`policy::decide`]) turn the verdict into a decision; this
//!    attempt counts against the budget;
//! 3. the decision becomes the delivery's new state; a failure blocks the subscription on this
//!    delivery when its `onFailure` is `block`, and 410 (or the receiver's request) disables it,
//!    even after a 2xx that the receiver still took.
//!
//! The record it returns marks nothing in flight: whether the next delivery can go in the same
//! commit depends on the queue and the rate limiter, which the actor checks.

use std::time::Duration;

use rand::Rng;

use crate::domain::{DeliveryId, DeliveryStatus, FailurePolicy, SubscriptionId};
use crate::outbound::{AttemptOutcome, AttemptResult, status_error};
use crate::policy::{self, Decision, ErrorKind, RetryPolicy, StatusRules, Verdict};
use crate::store::{AttemptRecord, FlagChange};

/// Why a subscription is disabled after a 410.
pub(super) const GONE: &str = "receiver answered 410 Gone";
/// Why a subscription is disabled after `webhook-delivery: disable`.
pub(super) const RECEIVER_ASKED: &str = "receiver asked to be disabled (webhook-delivery: disable)";

/// The delivery an attempt was for, and the rules it is judged by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempted<'a> {
    pub delivery: DeliveryId,
    pub subscription: &'a SubscriptionId,
    /// The attempt's number (1 = the first try).
    pub n: u32,
    /// Attempts counted against the retry budget before this one.
    pub budget_used: u32,
    pub retry: &'a RetryPolicy,
    /// The subscription's status table.
    pub statuses: &'a StatusRules,
    pub on_failure: FailurePolicy,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Now, in ms since the Unix epoch: a retry is due this long after it.
    pub now: i64,
}

/// The journal record of an attempt with `result`, with no next delivery marked in flight.
pub(super) fn record<R: Rng + ?Sized>(
    at: &Attempted<'_>,
    result: AttemptResult,
    rng: &mut R,
) -> AttemptRecord {
    let counted = at.budget_used + 1;
    let seen = classify(result.outcome, at.statuses);
    let decision = policy::decide(
        seen.verdict,
        seen.retry_after,
        counted,
        at.retry,
        at.max_retry_after,
        rng,
    );
    let (new_status, next_at, flags) = settle(decision, &seen, at);
    AttemptRecord {
        delivery: at.delivery,
        subscription: at.subscription.clone(),
        n: at.n,
        started_at: result.started_at,
        duration_ms: result.duration.as_millis() as u64,
        status_code: seen.status_code,
        error_kind: seen.error_kind,
        error: seen.error,
        snippet: seen.snippet,
        transform_log: result.transform_log,
        new_status,
        budget_used: counted,
        next_at,
        flags,
        next_in_flight: None,
        holds_key: false,
        notices: Vec::new(),
    }
}

/// An attempt's outcome as the status table sees it, with what its log entry keeps.
struct Seen {
    verdict: Verdict,
    retry_after: Option<Duration>,
    status_code: Option<u16>,
    error_kind: Option<ErrorKind>,
    error: Option<String>,
    snippet: Option<String>,
    /// The receiver asked to be disabled (`webhook-delivery: disable`).
    disable_requested: bool,
}

impl Seen {
    /// An outcome without a response to keep.
    fn unanswered(verdict: Verdict, status_code: Option<u16>, kind: ErrorKind, e: String) -> Seen {
        Seen {
            verdict,
            retry_after: None,
            status_code,
            error_kind: Some(kind),
            error: Some(e),
            snippet: None,
            disable_requested: false,
        }
    }
}

fn classify(outcome: AttemptOutcome, statuses: &StatusRules) -> Seen {
    let status_code = outcome.logged_status();
    match outcome {
        AttemptOutcome::Response {
            status,
            retry_after,
            snippet,
            disable,
        } => {
            let mut verdict = statuses.classify(status);
            // A status the table counts as delivered is logged without an error, 2xx or not.
            let failed = verdict != Verdict::Delivered;
            if disable && failed {
                verdict = Verdict::Gone;
            }
            Seen {
                verdict,
                retry_after,
                status_code,
                error_kind: failed.then_some(ErrorKind::HttpStatus),
                error: failed.then(|| status_error(status)),
                snippet,
                disable_requested: disable,
            }
        }
        AttemptOutcome::Dropped { reason } => {
            Seen::unanswered(Verdict::Dropped, status_code, ErrorKind::Dropped, reason)
        }
        AttemptOutcome::TransformFailed { kind, message } => {
            Seen::unanswered(Verdict::Fatal, status_code, kind, message)
        }
        AttemptOutcome::Failed { kind, message } => {
            Seen::unanswered(policy::classify_error(kind), status_code, kind, message)
        }
    }
}

/// The delivery's new state and due time after `decision`, and the subscription's changes.
fn settle(
    decision: Decision,
    seen: &Seen,
    at: &Attempted<'_>,
) -> (DeliveryStatus, Option<i64>, Option<FlagChange>) {
    match decision {
        Decision::Dropped => (DeliveryStatus::Dropped, None, None),
        Decision::Delivered => {
            // A receiver may take this delivery and still ask for no more.
            let flags = seen.disable_requested.then(|| FlagChange {
                disabled_reason: Some(Some(RECEIVER_ASKED.to_string())),
                ..FlagChange::default()
            });
            (DeliveryStatus::Delivered, None, flags)
        }
        Decision::RetryIn(d) => {
            let due = at.now + d.as_millis() as i64;
            (DeliveryStatus::Pending, Some(due), None)
        }
        Decision::Failed { disable } => {
            let mut f = FlagChange::default();
            if disable {
                let why = if seen.status_code == Some(410) {
                    GONE
                } else {
                    RECEIVER_ASKED
                };
                f.disabled_reason = Some(Some(why.to_string()));
            }
            if at.on_failure == FailurePolicy::Block {
                f.blocked_on = Some(Some(at.delivery.raw()));
            }
            let changed = f.disabled_reason.is_some() || f.blocked_on.is_some();
            (DeliveryStatus::Failed, None, changed.then_some(f))
        }
    }
}

#[cfg(test)]
mod tests;
