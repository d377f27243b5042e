//! Every kind of attempt outcome through [`record`]: status table, retry budget and schedule,
//! `Retry-After`, disabling, blocking, transforms.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const NOW: i64 = 1_700_000_000_000;
const CAP: Duration = Duration::from_secs(3600);

fn sub() -> SubscriptionId {
    SubscriptionId::from("sub_test")
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        backoff_ms: vec![1_000, 10_000, 60_000],
    }
}

/// Judges `outcome` as attempt `budget_used + 1` of delivery 7 under `on_failure`.
fn judge_with(
    outcome: AttemptOutcome,
    budget_used: u32,
    on_failure: FailurePolicy,
) -> AttemptRecord {
    judge_under(&StatusRules::default(), outcome, budget_used, on_failure)
}

/// [`judge_with`] under a subscription's own status rules.
fn judge_under(
    statuses: &StatusRules,
    outcome: AttemptOutcome,
    budget_used: u32,
    on_failure: FailurePolicy,
) -> AttemptRecord {
    let (sub, retry) = (sub(), retry());
    let at = Attempted {
        delivery: DeliveryId(7),
        subscription: &sub,
        n: budget_used + 1,
        budget_used,
        retry: &retry,
        statuses,
        on_failure,
        max_retry_after: CAP,
        now: NOW,
    };
    let result = AttemptResult {
        started_at: NOW - 250,
        duration: Duration::from_millis(250),
        outcome,
        transform_log: None,
    };
    record(&at, result, &mut StdRng::seed_from_u64(11))
}

fn judge(outcome: AttemptOutcome) -> AttemptRecord {
    judge_with(outcome, 0, FailurePolicy::Skip)
}

fn response(status: u16) -> AttemptOutcome {
    AttemptOutcome::Response {
        status,
        retry_after: None,
        snippet: Some(format!("answer {status}")),
        disable: false,
    }
}

fn asking_to_disable(status: u16) -> AttemptOutcome {
    AttemptOutcome::Response {
        status,
        retry_after: None,
        snippet: None,
        disable: true,
    }
}

fn failed(kind: ErrorKind) -> AttemptOutcome {
    AttemptOutcome::Failed {
        kind,
        message: format!("{} happened", kind.as_str()),
    }
}

fn disabled_reason(r: &AttemptRecord) -> Option<&str> {
    r.flags
        .as_ref()
        .and_then(|f| f.disabled_reason.as_ref())
        .and_then(|d| d.as_deref())
}

fn blocked_on(r: &AttemptRecord) -> Option<i64> {
    r.flags.as_ref().and_then(|f| f.blocked_on).flatten()
}

/// A retry is due after the schedule's first delay plus at most 10 % of jitter.
fn assert_first_retry(r: &AttemptRecord) {
    assert_eq!(r.new_status, DeliveryStatus::Pending);
    let wait = r.next_at.expect("due time") - NOW;
    assert!((1_000..=1_100).contains(&wait), "waits {wait} ms");
    assert!(r.flags.is_none());
}

#[test]
fn a_2xx_is_delivered_with_no_error() {
    for status in [200, 201, 204, 299] {
        let r = judge(response(status));
        assert_eq!(r.new_status, DeliveryStatus::Delivered, "{status}");
        assert_eq!(r.status_code, Some(status));
        assert_eq!((r.error_kind, r.error.as_deref()), (None, None));
        assert_eq!(r.snippet, Some(format!("answer {status}")));
        assert_eq!((r.next_at, r.budget_used), (None, 1));
        assert!(r.flags.is_none());
        assert!(r.next_in_flight.is_none());
    }
}

#[test]
fn the_record_carries_the_attempt_as_it_happened() {
    let r = judge_with(response(200), 2, FailurePolicy::Block);
    assert_eq!(r.delivery, DeliveryId(7));
    assert_eq!(r.subscription, sub());
    assert_eq!((r.n, r.budget_used), (3, 3));
    assert_eq!((r.started_at, r.duration_ms), (NOW - 250, 250));
}

#[test]
fn a_3xx_fails_at_once_because_redirects_are_never_followed() {
    for status in [300, 301, 302, 304, 307, 308] {
        let r = judge(response(status));
        assert_eq!(r.new_status, DeliveryStatus::Failed, "{status}");
        assert_eq!(r.status_code, Some(status));
        assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus));
        assert_eq!(r.error, Some(format!("receiver answered {status}")));
        assert_eq!(r.snippet, Some(format!("answer {status}")));
        assert!(r.next_at.is_none() && r.flags.is_none());
    }
}

/// The lending table counts a 3xx as delivered (logged with its status, without an error);
/// the other rows stay hookline's.
#[test]
fn under_the_lending_table_a_3xx_is_delivered() {
    let lending = StatusRules {
        table: policy::StatusTable::Lending,
        ..StatusRules::default()
    };
    for status in [300, 301, 302, 304, 307, 308] {
        let r = judge_under(&lending, response(status), 0, FailurePolicy::Block);
        assert_eq!(r.new_status, DeliveryStatus::Delivered, "{status}");
        assert_eq!(r.status_code, Some(status));
        assert_eq!((r.error_kind, r.error.as_deref()), (None, None));
        assert!(r.flags.is_none(), "{status}: blocks nothing");
    }
    let r = judge_under(&lending, response(404), 0, FailurePolicy::Block);
    assert_eq!(
        (r.new_status, blocked_on(&r)),
        (DeliveryStatus::Failed, Some(7))
    );
    assert_first_retry(&judge_under(
        &lending,
        response(500),
        0,
        FailurePolicy::Skip,
    ));
    // A delivered 3xx that asks for no more is delivered, then the subscription disabled.
    let r = judge_under(&lending, asking_to_disable(302), 0, FailurePolicy::Block);
    assert_eq!(r.new_status, DeliveryStatus::Delivered);
    assert_eq!(disabled_reason(&r), Some(RECEIVER_ASKED));
}

/// Listed codes override the table: a retried 409 follows the schedule and the budget, a
/// listed 410 is retried instead of disabling, a listed 304 is delivered.
#[test]
fn listed_codes_are_retried_or_delivered() {
    let rules = StatusRules {
        retry_on: vec![409, 410],
        delivered_on: vec![304],
        ..StatusRules::default()
    };
    for status in [409, 410] {
        let r = judge_under(&rules, response(status), 0, FailurePolicy::Block);
        assert_first_retry(&r);
        assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus), "{status}");
        let last = judge_under(&rules, response(status), 3, FailurePolicy::Block);
        assert_eq!(last.new_status, DeliveryStatus::Failed, "{status}: budget");
        assert_eq!(blocked_on(&last), Some(7));
        assert_eq!(disabled_reason(&last), None, "{status}: not disabled");
    }
    let r = judge_under(&rules, response(304), 0, FailurePolicy::Block);
    assert_eq!(r.new_status, DeliveryStatus::Delivered);
    assert_eq!(r.error, None);
    // Unlisted codes keep hookline's table.
    let r = judge_under(&rules, response(302), 0, FailurePolicy::Skip);
    assert_eq!((r.new_status, r.next_at), (DeliveryStatus::Failed, None));
}

#[test]
fn retriable_statuses_follow_the_schedule() {
    for status in [408, 425, 429, 500, 502, 503, 504, 599] {
        let r = judge(response(status));
        assert_first_retry(&r);
        assert_eq!(r.status_code, Some(status));
        assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus));
        assert_eq!(r.error, Some(format!("receiver answered {status}")));
    }
}

#[test]
fn retry_after_is_honoured_up_to_the_cap_and_never_shortens_the_schedule() {
    let with = |status, secs| AttemptOutcome::Response {
        status,
        retry_after: Some(Duration::from_secs(secs)),
        snippet: None,
        disable: false,
    };
    for status in [429, 503] {
        assert_eq!(judge(with(status, 30)).next_at, Some(NOW + 30_000));
        assert_eq!(
            judge(with(status, 999_999)).next_at,
            Some(NOW + CAP.as_millis() as i64)
        );
        assert_first_retry(&judge(with(status, 0)));
    }
    // Retry-After does not make a final status retriable.
    assert_eq!(judge(with(404, 5)).new_status, DeliveryStatus::Failed);
}

#[test]
fn a_410_fails_and_disables_the_subscription() {
    let r = judge(response(410));
    assert_eq!(r.new_status, DeliveryStatus::Failed);
    assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus));
    assert_eq!(disabled_reason(&r), Some(GONE));
    assert_eq!(blocked_on(&r), None, "onFailure skip");
    let r = judge_with(response(410), 0, FailurePolicy::Block);
    assert_eq!(disabled_reason(&r), Some(GONE));
    assert_eq!(blocked_on(&r), Some(7));
    // 410 is named as such even when the receiver also asked to be disabled.
    assert_eq!(disabled_reason(&judge(asking_to_disable(410))), Some(GONE));
}

#[test]
fn disable_on_a_2xx_delivers_and_then_disables() {
    let r = judge_with(asking_to_disable(200), 0, FailurePolicy::Block);
    assert_eq!(r.new_status, DeliveryStatus::Delivered);
    assert_eq!((r.error_kind, r.error.as_deref()), (None, None));
    assert_eq!(disabled_reason(&r), Some(RECEIVER_ASKED));
    assert_eq!(blocked_on(&r), None, "a delivered delivery blocks nothing");
}

#[test]
fn disable_on_a_failure_fails_at_once_and_disables() {
    for status in [404, 429, 500, 503] {
        let r = judge_with(asking_to_disable(status), 0, FailurePolicy::Block);
        assert_eq!(r.new_status, DeliveryStatus::Failed, "{status}: no retry");
        assert_eq!(r.next_at, None);
        assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus));
        assert_eq!(disabled_reason(&r), Some(RECEIVER_ASKED));
        assert_eq!(blocked_on(&r), Some(7));
    }
}

#[test]
fn other_4xx_fail_and_wait_for_an_operator() {
    for status in [400, 401, 403, 404, 405, 409, 413, 422, 451] {
        let r = judge(response(status));
        assert_eq!(r.new_status, DeliveryStatus::Failed, "{status}");
        assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus));
        assert!(r.flags.is_none(), "onFailure skip: nothing changes");
        let r = judge_with(response(status), 0, FailurePolicy::Block);
        assert_eq!(blocked_on(&r), Some(7));
        assert_eq!(disabled_reason(&r), None);
    }
}

#[test]
fn a_timeout_is_logged_as_500_and_retried() {
    let r = judge(failed(ErrorKind::Timeout));
    assert_first_retry(&r);
    assert_eq!(r.status_code, Some(500));
    assert_eq!(r.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(r.error.as_deref(), Some("timeout happened"));
    assert_eq!(r.snippet, None);
}

#[test]
fn network_and_token_server_trouble_is_retried_without_a_status() {
    for kind in [
        ErrorKind::Connect,
        ErrorKind::Dns,
        ErrorKind::Reset,
        ErrorKind::Interrupted,
        ErrorKind::TokenUnavailable,
    ] {
        let r = judge(failed(kind));
        assert_first_retry(&r);
        assert_eq!((r.status_code, r.error_kind), (None, Some(kind)));
    }
}

#[test]
fn refused_requests_fail_at_once() {
    for kind in [
        ErrorKind::BlockedAddress,
        ErrorKind::InvalidRequest,
        ErrorKind::TokenRefused,
    ] {
        let r = judge_with(failed(kind), 0, FailurePolicy::Block);
        assert_eq!(r.new_status, DeliveryStatus::Failed, "{kind:?}");
        assert_eq!((r.status_code, r.error_kind), (None, Some(kind)));
        assert_eq!(blocked_on(&r), Some(7));
        assert_eq!(disabled_reason(&r), None);
    }
}

#[test]
fn a_dropped_delivery_is_done_and_blocks_nothing() {
    let outcome = AttemptOutcome::Dropped {
        reason: "not for this receiver".into(),
    };
    let r = judge_with(outcome, 0, FailurePolicy::Block);
    assert_eq!(r.new_status, DeliveryStatus::Dropped);
    assert_eq!(r.error_kind, Some(ErrorKind::Dropped));
    assert_eq!(r.error.as_deref(), Some("not for this receiver"));
    assert_eq!((r.status_code, r.next_at), (None, None));
    assert!(r.flags.is_none());
}

#[test]
fn a_failed_transform_is_not_retried() {
    for kind in [
        ErrorKind::TransformTrap,
        ErrorKind::TransformTimeout,
        ErrorKind::TransformMissing,
        ErrorKind::TransformError,
    ] {
        let outcome = AttemptOutcome::TransformFailed {
            kind,
            message: "transform crashed".into(),
        };
        let r = judge_with(outcome.clone(), 0, FailurePolicy::Block);
        assert_eq!(r.new_status, DeliveryStatus::Failed, "{kind:?}");
        assert_eq!((r.status_code, r.error_kind), (None, Some(kind)));
        assert_eq!(r.error.as_deref(), Some("transform crashed"));
        assert_eq!(blocked_on(&r), Some(7));
        assert!(judge(outcome).flags.is_none());
    }
}

#[test]
fn an_unavailable_transform_is_retried() {
    let r = judge(failed(ErrorKind::TransformUnavailable));
    assert_first_retry(&r);
    assert_eq!(r.error_kind, Some(ErrorKind::TransformUnavailable));
}

#[test]
fn the_retry_budget_counts_this_attempt_and_ends_in_failure() {
    // Attempts 2 and 3 wait for the schedule's next entries; the 4th of 4 fails.
    let r = judge_with(response(503), 1, FailurePolicy::Skip);
    assert_eq!(r.budget_used, 2);
    let wait = r.next_at.expect("due") - NOW;
    assert!((10_000..=11_000).contains(&wait), "{wait}");
    let r = judge_with(response(503), 2, FailurePolicy::Skip);
    let wait = r.next_at.expect("due") - NOW;
    assert!((60_000..=66_000).contains(&wait), "{wait}");
    let r = judge_with(response(503), 3, FailurePolicy::Skip);
    assert_eq!((r.new_status, r.budget_used), (DeliveryStatus::Failed, 4));
    assert_eq!(
        (r.next_at, r.error_kind),
        (None, Some(ErrorKind::HttpStatus))
    );
    assert!(r.flags.is_none());
    let r = judge_with(failed(ErrorKind::Connect), 3, FailurePolicy::Block);
    assert_eq!(r.new_status, DeliveryStatus::Failed);
    assert_eq!(blocked_on(&r), Some(7));
    assert_eq!(disabled_reason(&r), None);
}

fn any_outcome() -> impl Strategy<Value = AttemptOutcome> {
    let kinds = prop::sample::select(vec![
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Dns,
        ErrorKind::Reset,
        ErrorKind::BlockedAddress,
        ErrorKind::InvalidRequest,
        ErrorKind::TokenUnavailable,
        ErrorKind::TokenRefused,
        ErrorKind::TransformUnavailable,
    ]);
    prop_oneof![
        (100u16..600, prop::option::of(0u64..100_000), any::<bool>()).prop_map(
            |(status, secs, disable)| AttemptOutcome::Response {
                status,
                retry_after: secs.map(Duration::from_secs),
                snippet: None,
                disable,
            }
        ),
        kinds.prop_map(failed),
        Just(AttemptOutcome::Dropped { reason: "r".into() }),
        Just(AttemptOutcome::TransformFailed {
            kind: ErrorKind::TransformTrap,
            message: "m".into(),
        }),
    ]
}

proptest! {
    /// Whatever happened, the record is consistent: pending exactly when it is retried (due
    /// after now, within the cap, with budget left); an error kind exactly when not a 2xx;
    /// a block only on failure under `onFailure: block`; and this attempt always counts.
    #[test]
    fn every_record_is_consistent(
        outcome in any_outcome(),
        budget_used in 0u32..4,
        block in any::<bool>(),
    ) {
        let on_failure = if block { FailurePolicy::Block } else { FailurePolicy::Skip };
        let delivered_2xx = matches!(
            outcome,
            AttemptOutcome::Response { status: 200..=299, .. }
        );
        let r = judge_with(outcome, budget_used, on_failure);
        prop_assert_eq!(r.budget_used, budget_used + 1);
        prop_assert!(r.budget_used <= retry().max_attempts);
        prop_assert_eq!(r.new_status == DeliveryStatus::Pending, r.next_at.is_some());
        if let Some(due) = r.next_at {
            prop_assert!(due > NOW && due <= NOW + CAP.as_millis() as i64);
            prop_assert!(r.budget_used < retry().max_attempts);
        }
        prop_assert_eq!(r.error_kind.is_none(), delivered_2xx);
        prop_assert_eq!(r.error.is_none(), delivered_2xx);
        prop_assert_eq!(
            blocked_on(&r).is_some(),
            block && r.new_status == DeliveryStatus::Failed
        );
        if disabled_reason(&r).is_some() {
            prop_assert!(matches!(
                r.new_status,
                DeliveryStatus::Failed | DeliveryStatus::Delivered
            ));
        }
        prop_assert!(r.next_in_flight.is_none());
    }
}
