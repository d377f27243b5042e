//! Tests through the library API ([`hookline::EngineHandle`]): each one runs an engine on a real
//! SQLite file and delivers to a real loopback [`Receiver`], and defends one of the guarantees of
//! `ARCHITECTURE.md` (request shape, strict order, the status table, failure policies, operator
//! actions, filters, fan-out, idempotent publish, pause/update, the attempt log, actor restarts,
//! recovery across a restart, validation).
//!
//! Schedules are shrunk through configuration (10 ms backoffs, 100 ms timeouts) rather than by
//! sleeping; eventual conditions poll with deadlines. Where a test must show that something did
//! *not* happen, it uses a barrier when it can: under strict order, once a later event is
//! delivered to a subscription, every earlier delivery of it is provably terminal.

use std::time::{Duration, SystemTime};

use hookline::{
    DeliveryId, DeliveryStatus, Error, EventInput, FailurePolicy, NewSubscription,
    NotificationType, RetryPolicy, Subscription, SubscriptionPatch, SubscriptionState,
};
use serde_json::json;

use crate::support::{
    Receiver, Recorded, Reply, TENANT, TestEngine, WITHIN, assert_never_interleaved,
    assert_strict_order, closed_port_url, consistently, event, event_for, events, fail_first, ids,
    retry,
};

fn sub(url: String) -> NewSubscription {
    NewSubscription::new(TENANT, url)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---- 1. request shape ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shape_matches_the_callback_contract() {
    // Every event fails once, so each is sent twice: the retry must carry the same webhook-id.
    let rx = Receiver::with(fail_first(1, 500)).await;
    let h = TestEngine::start().await;
    let mut keyed = sub(rx.url("/keyed"));
    keyed.access_key = Some("s3cr3t-key".into());
    keyed.headers.insert("entityId".into(), "E-17".into());
    keyed.headers.insert("X-Trace".into(), "trace-1".into());
    h.subscribe(keyed).await;
    h.subscribe(sub(rx.url("/plain"))).await;

    let full = EventInput::new(
        TENANT,
        "84e32dcfecc9f4dc",
        NotificationType::TransactionEvent,
    )
    .id("shape-1")
    .reference_id("user-9")
    .workflow_id("wf-104")
    .payload(json!({"status": "PASSED", "nested": {"n": 1}}));
    let minimal = event("shape-2");
    let generated =
        EventInput::new(TENANT, "tx-gen", NotificationType::CaseEvent).payload(json!({"k": "v"}));
    let mut expected = vec![
        json!({
            "id": "shape-1", "tenantId": TENANT, "referenceId": "user-9",
            "transactionId": "84e32dcfecc9f4dc", "notificationType": "TRANSACTION_EVENT",
            "workflowId": "wf-104", "payLoad": {"status": "PASSED", "nested": {"n": 1}},
            "timestamp": full.timestamp,
        }),
        json!({
            "id": "shape-2", "tenantId": TENANT, "transactionId": "tx-shape-2",
            "notificationType": "NODE_EVENT", "payLoad": {"id": "shape-2"},
            "timestamp": minimal.timestamp,
        }),
    ];
    let gen_timestamp = generated.timestamp.clone();
    let mut order = Vec::new();
    for e in [full, minimal, generated] {
        let r = h.publish(e).await.expect("publish");
        assert_eq!(r.deliveries, 2, "fanned out to both subscriptions");
        assert!(!r.duplicate);
        order.push(r.id.to_string());
    }
    assert!(order[2].starts_with("evt_"), "generated id: {}", order[2]);
    expected.push(json!({
        "id": order[2], "tenantId": TENANT, "transactionId": "tx-gen",
        "notificationType": "CASE_EVENT", "payLoad": {"k": "v"}, "timestamp": gen_timestamp,
    }));

    for path in ["/keyed", "/plain"] {
        rx.wait_delivered_at(path, &order, WITHIN).await;
    }
    let now = unix_now();
    for path in ["/keyed", "/plain"] {
        let reqs = rx.requests_at(path);
        assert_eq!(reqs.len(), 6, "each event tried twice at {path}");
        assert_strict_order(&reqs, &order, 0);
        for r in &reqs {
            let k = order
                .iter()
                .position(|id| id == r.webhook_id())
                .expect("webhook-id is an event id");
            assert_eq!(r.method, "POST");
            assert_eq!(r.json(), expected[k], "body of {} at {path}", order[k]);
            assert_eq!(
                r.header("content-type"),
                Some("application/json;charset=UTF-8")
            );
            let ua = r.header("user-agent").expect("user-agent");
            assert!(ua.starts_with("hookline/"), "user-agent {ua}");
            let ts: u64 = r
                .header("webhook-timestamp")
                .expect("webhook-timestamp")
                .parse()
                .expect("webhook-timestamp is unix seconds");
            assert!(
                ts.abs_diff(now) <= 30,
                "webhook-timestamp {ts} vs now {now}"
            );
            if path == "/keyed" {
                assert_eq!(r.header("access-key"), Some("s3cr3t-key"));
                assert_eq!(r.header("entityid"), Some("E-17"));
                assert_eq!(r.header("x-trace"), Some("trace-1"));
            } else {
                assert_eq!(r.header("access-key"), None, "no access key configured");
                assert_eq!(r.header("entityid"), None);
            }
        }
        // The retry is the same message: same id and body, timestamp not earlier.
        for id in &order {
            let tries: Vec<&Recorded> = reqs.iter().filter(|r| r.webhook_id() == id).collect();
            assert_eq!(tries.len(), 2);
            assert_eq!(tries[0].status, Some(500));
            assert_eq!(tries[1].status, Some(200));
            assert_eq!(tries[0].body, tries[1].body);
            assert!(tries[1].header("webhook-timestamp") >= tries[0].header("webhook-timestamp"));
        }
    }
}

// ---- 2. strict order under retries --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_holds_under_retries() {
    const N: usize = 30;
    // Event i fails (i % 4) times (500 or 503) before it is accepted.
    let fails = |id: &str| -> usize {
        let i: usize = id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        i % 4
    };
    let rx = Receiver::with(move |r| {
        if r.nth_for_id <= fails(r.webhook_id()) {
            Reply::status(if r.nth_for_id % 2 == 0 { 503 } else { 500 })
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = sub(rx.url("/ordered"));
    n.retry = Some(retry(5));
    let s = h.subscribe(n).await;
    let expected = h.publish_all(events("ord", N)).await;
    assert_eq!(expected, ids("ord", N));

    rx.wait_delivered_at("/ordered", &expected, WITHIN).await;
    let reqs = rx.requests();
    assert_eq!(
        rx.delivered_ids(),
        expected,
        "2xx sequence is publish order"
    );
    assert_strict_order(&reqs, &expected, 0);
    assert_never_interleaved(&reqs, &expected);
    let total: usize = expected.iter().map(|id| fails(id) + 1).sum();
    assert_eq!(reqs.len(), total, "one request per attempt, no more");
    for d in h.wait_all_delivered(&s.id, N).await {
        assert_eq!(d.attempts as usize, fails(d.event_id.as_str()) + 1);
    }
}

// ---- 3. the status table ------------------------------------------------------------------

/// One subscription per status code, each at `/s<code>`, under `onFailure: skip`; the event
/// `probe` is answered by `reply(code, request)`, then `sentinel` (always 200) is the barrier:
/// once it is delivered, the probe's delivery is terminal and will see no more attempts.
struct Probe {
    code: u16,
    sub: Subscription,
    /// Requests for `probe` at this subscription's path.
    reqs: Vec<Recorded>,
    detail: hookline::DeliveryDetail,
}

async fn probe_statuses(
    codes: &[u16],
    max_attempts: u32,
    reply: impl Fn(u16, &Recorded) -> Reply + Send + Sync + 'static,
) -> (TestEngine, Receiver, Vec<Probe>) {
    let rx = Receiver::with(move |r| {
        let code = r
            .path
            .strip_prefix("/s")
            .and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(code) if r.webhook_id() == "probe" => reply(code, r),
            _ => Reply::ok(),
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut subs = Vec::new();
    for code in codes {
        let mut n = sub(rx.url(&format!("/s{code}")));
        n.retry = Some(retry(max_attempts));
        n.on_failure = Some(FailurePolicy::Skip);
        subs.push((*code, h.subscribe(n).await));
    }
    let r = h.publish(event("probe")).await.expect("publish probe");
    assert_eq!(r.deliveries as usize, codes.len());
    h.publish(event("sentinel"))
        .await
        .expect("publish sentinel");
    for code in codes {
        rx.wait_delivered_at(&format!("/s{code}"), &["sentinel".to_string()], WITHIN)
            .await;
    }
    let mut probes = Vec::new();
    for (code, s) in subs {
        let detail = h.detail_of(&s.id, "probe").await;
        let reqs = rx
            .requests_at(&format!("/s{code}"))
            .into_iter()
            .filter(|r| r.webhook_id() == "probe")
            .collect();
        probes.push(Probe {
            code,
            sub: s,
            reqs,
            detail,
        });
    }
    (h, rx, probes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_2xx_is_delivered_on_the_first_attempt() {
    let (_h, _rx, probes) =
        probe_statuses(&[200, 201, 202, 204, 299], 3, |code, _| Reply::status(code)).await;
    for p in probes {
        let c = p.code;
        assert_eq!(p.detail.delivery.status, DeliveryStatus::Delivered, "{c}");
        assert_eq!(p.reqs.len(), 1, "{c}: one request");
        assert_eq!(p.detail.attempt_log.len(), 1, "{c}: one attempt");
        let a = &p.detail.attempt_log[0];
        assert_eq!(
            (a.n, a.status_code, a.error_kind.as_deref()),
            (1, Some(c), None)
        );
        assert_eq!(p.detail.delivery.last_status_code, Some(c));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_3xx_fails_at_once_and_is_never_followed() {
    let (_h, rx, probes) = probe_statuses(&[301, 302, 303, 307, 308], 3, |code, r| {
        let target = format!("http://{}/followed-{code}", r.header("host").unwrap_or(""));
        Reply::redirect(code, target)
    })
    .await;
    for p in probes {
        let c = p.code;
        assert_eq!(p.detail.delivery.status, DeliveryStatus::Failed, "{c}");
        assert_eq!(p.reqs.len(), 1, "{c}: exactly one attempt");
        assert_eq!(p.detail.attempt_log.len(), 1, "{c}");
        assert_eq!(p.detail.attempt_log[0].status_code, Some(c));
        assert!(
            rx.requests_at(&format!("/followed-{c}")).is_empty(),
            "{c}: the Location target must never be requested"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_statuses_are_retried_until_max_attempts() {
    let (_h, _rx, probes) = probe_statuses(&[408, 425, 429, 500, 502, 503, 504], 3, |code, _| {
        Reply::status(code)
    })
    .await;
    for p in probes {
        let c = p.code;
        let d = &p.detail.delivery;
        assert_eq!(d.status, DeliveryStatus::Failed, "{c}");
        assert_eq!(d.attempts, 3, "{c}");
        assert_eq!(d.last_status_code, Some(c));
        assert_eq!(
            p.reqs.len(),
            3,
            "{c}: maxAttempts requests reached the receiver"
        );
        let log = &p.detail.attempt_log;
        assert_eq!(
            log.iter().map(|a| a.n).collect::<Vec<_>>(),
            [1, 2, 3],
            "{c}"
        );
        for a in log {
            assert_eq!(a.status_code, Some(c));
            assert_eq!(a.error_kind.as_deref(), Some("http_status"));
        }
        assert_eq!(p.sub.on_failure, FailurePolicy::Skip);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_fail_without_retry() {
    let (h, _rx, probes) =
        probe_statuses(&[400, 401, 403, 404, 405, 409, 413, 422], 3, |code, _| {
            Reply::status(code)
        })
        .await;
    for p in probes {
        let c = p.code;
        assert_eq!(p.detail.delivery.status, DeliveryStatus::Failed, "{c}");
        assert_eq!(p.reqs.len(), 1, "{c}: no retry");
        assert_eq!(p.detail.attempt_log.len(), 1, "{c}");
        assert_eq!(p.detail.attempt_log[0].status_code, Some(c));
        // Not 410: the subscription stays active.
        let s = h.get_subscription(&p.sub.id).await.expect("get");
        assert_eq!(s.state, SubscriptionState::Active, "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_even_with_a_short_backoff() {
    let (_h, _rx, probes) = probe_statuses(&[429, 503], 3, |code, r| {
        if r.nth_for_id == 1 {
            Reply::retry_after(code, 1)
        } else {
            Reply::ok()
        }
    })
    .await;
    for p in probes {
        let c = p.code;
        assert_eq!(p.detail.delivery.status, DeliveryStatus::Delivered, "{c}");
        assert_eq!(p.reqs.len(), 2, "{c}");
        let answered = p.reqs[0].answered_at.expect("first answered");
        let gap = p.reqs[1].at.duration_since(answered);
        assert!(
            gap >= Duration::from_millis(950),
            "{c}: retried {gap:?} after a Retry-After: 1 (backoff is 10 ms)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_clamped_to_the_configured_maximum() {
    let rx = Receiver::with(|r| {
        if r.nth_for_id == 1 {
            Reply::retry_after(503, 3600)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start_with(|b| b.max_retry_after(Duration::from_millis(300))).await;
    let s = h.subscribe(sub(rx.url("/clamp"))).await;
    h.publish(event("c-1")).await.expect("publish");
    h.wait_status(&s.id, "c-1", DeliveryStatus::Delivered).await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1]
        .at
        .duration_since(reqs[0].answered_at.expect("answered"));
    assert!(
        gap >= Duration::from_millis(250) && gap < Duration::from_secs(5),
        "an hour-long Retry-After clamped to 300 ms, got {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_retried_and_logged_as_500() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "slow" {
            Reply::ok().delay(Duration::from_millis(1000))
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = sub(rx.url("/slow"));
    n.timeout_ms = Some(100);
    n.retry = Some(retry(2));
    n.on_failure = Some(FailurePolicy::Skip);
    let s = h.subscribe(n).await;
    h.publish_all([event("slow"), event("sentinel")]).await;
    rx.wait_delivered_at("/slow", &["sentinel".to_string()], WITHIN)
        .await;
    let d = h.detail_of(&s.id, "slow").await;
    assert_eq!(d.delivery.status, DeliveryStatus::Failed);
    assert_eq!(
        rx.requests_for("slow").len(),
        2,
        "retried once (maxAttempts 2)"
    );
    assert_eq!(
        d.attempt_log.iter().map(|a| a.n).collect::<Vec<_>>(),
        [1, 2]
    );
    for a in &d.attempt_log {
        assert_eq!(a.status_code, Some(500), "a timeout is logged as 500");
        assert_eq!(a.error_kind.as_deref(), Some("timeout"));
        assert!(
            (100..900).contains(&a.duration_ms),
            "cut at the 100 ms timeout, took {} ms",
            a.duration_ms
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried() {
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(closed_port_url("/nobody"))).await;
    h.publish(event("refused")).await.expect("publish");
    let d = h
        .wait_status(&s.id, "refused", DeliveryStatus::Failed)
        .await;
    assert_eq!(d.delivery.attempts, 3);
    assert_eq!(
        d.attempt_log.iter().map(|a| a.n).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for a in &d.attempt_log {
        assert_eq!(a.error_kind.as_deref(), Some("connect"), "{a:?}");
        assert_eq!(a.status_code, None);
        assert!(a.error.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_410_disables_and_blocks_until_resumed_and_resubmitted() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "g-001" && r.nth_for_id == 1 {
            Reply::status(410)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/gone"))).await;
    h.publish_all([event("g-000"), event("g-001")]).await;
    let disabled = h.wait_state(&s.id, SubscriptionState::Disabled).await;
    assert!(
        disabled
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("410")),
        "{:?}",
        disabled.state_reason
    );
    let gone = h.detail_of(&s.id, "g-001").await;
    assert_eq!(gone.delivery.status, DeliveryStatus::Failed);
    assert_eq!(gone.attempt_log.len(), 1, "410 is not retried");
    assert_eq!(gone.attempt_log[0].status_code, Some(410));
    assert_eq!(rx.requests_for("g-001").len(), 1);

    // Later events accumulate.
    h.publish_all([event("g-002"), event("g-003")]).await;
    consistently(
        "nothing sent while disabled",
        Duration::from_millis(300),
        || async { rx.requests().len() == 2 },
    )
    .await;
    for id in ["g-002", "g-003"] {
        let d = h.delivery_of(&s.id, id).await;
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0), "{id}");
    }

    // Resume re-enables it; under the default `onFailure: block` the 410'd delivery still
    // holds the queue until it is resubmitted (or skipped).
    let resumed = h.resume_subscription(&s.id).await.expect("resume");
    assert_eq!(resumed.state, SubscriptionState::Blocked);
    assert_eq!(resumed.blocked_on, Some(gone.delivery.id));
    h.resubmit(gone.delivery.id).await.expect("resubmit");
    let expected = vec![
        "g-000".to_string(),
        "g-001".into(),
        "g-002".into(),
        "g-003".into(),
    ];
    rx.wait_delivered_at("/gone", &expected, WITHIN).await;
    assert_strict_order(&rx.requests(), &expected, 0);
    assert_eq!(
        h.get_subscription(&s.id).await.expect("get").state,
        SubscriptionState::Active
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_410_under_skip_policy_resumes_with_the_next_event() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "g-001" {
            Reply::status(410)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = sub(rx.url("/gone"));
    n.on_failure = Some(FailurePolicy::Skip);
    let s = h.subscribe(n).await;
    h.publish_all([event("g-000"), event("g-001")]).await;
    h.wait_state(&s.id, SubscriptionState::Disabled).await;
    h.publish_all([event("g-002"), event("g-003")]).await;
    consistently(
        "nothing sent while disabled",
        Duration::from_millis(300),
        || async { rx.requests().len() == 2 },
    )
    .await;
    for id in ["g-002", "g-003"] {
        let d = h.delivery_of(&s.id, id).await;
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0), "{id}");
    }
    let resumed = h.resume_subscription(&s.id).await.expect("resume");
    assert_eq!(resumed.state, SubscriptionState::Active);
    let expected = vec!["g-000".to_string(), "g-002".into(), "g-003".into()];
    rx.wait_delivered_at("/gone", &expected, WITHIN).await;
    assert_eq!(rx.delivered_ids(), expected);
    assert_never_interleaved(
        &rx.requests(),
        &[
            "g-000".into(),
            "g-001".into(),
            "g-002".into(),
            "g-003".into(),
        ],
    );
    let gone = h.detail_of(&s.id, "g-001").await;
    assert_eq!(
        gone.delivery.status,
        DeliveryStatus::Failed,
        "stays failed, visible"
    );
    assert_eq!(gone.attempt_log.len(), 1);
}

// ---- 4. failure policies ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_stops_the_queue_until_resubmit() {
    // blk-002 fails its first 3 requests: 2 exhaust the budget, the resubmitted one needs a
    // fresh budget to survive the third.
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "blk-002" && r.nth_for_id <= 3 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = sub(rx.url("/blk"));
    n.retry = Some(retry(2));
    let s = h.subscribe(n).await;
    assert_eq!(s.on_failure, FailurePolicy::Block, "block is the default");
    let expected = h.publish_all(events("blk", 5)).await;

    let blocked = h.wait_state(&s.id, SubscriptionState::Blocked).await;
    let failed = h.detail_of(&s.id, "blk-002").await;
    assert_eq!(blocked.blocked_on, Some(failed.delivery.id));
    assert!(blocked.state_reason.is_some());
    assert_eq!(failed.delivery.status, DeliveryStatus::Failed);
    assert_eq!(failed.delivery.attempts, 2);
    consistently(
        "later events are not sent",
        Duration::from_millis(300),
        || async { rx.requests_for("blk-003").is_empty() && rx.requests_for("blk-004").is_empty() },
    )
    .await;
    for id in ["blk-003", "blk-004"] {
        let d = h.delivery_of(&s.id, id).await;
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0), "{id}");
    }

    let d = h.resubmit(failed.delivery.id).await.expect("resubmit");
    assert_eq!(d.status, DeliveryStatus::Pending);
    rx.wait_delivered_at("/blk", &expected, WITHIN).await;
    assert_strict_order(&rx.requests(), &expected, 0);
    assert_never_interleaved(&rx.requests(), &expected);
    let log = h.detail_of(&s.id, "blk-002").await.attempt_log;
    assert_eq!(
        log.iter().map(|a| (a.n, a.status_code)).collect::<Vec<_>>(),
        [
            (1, Some(500)),
            (2, Some(500)),
            (3, Some(500)),
            (4, Some(200))
        ],
        "resubmitted with a fresh budget of 2"
    );
    let s = h.get_subscription(&s.id).await.expect("get");
    assert_eq!((s.state, s.blocked_on), (SubscriptionState::Active, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_the_blocking_delivery_moves_the_queue_on() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "blk-002" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = sub(rx.url("/blk"));
    n.retry = Some(retry(2));
    let s = h.subscribe(n).await;
    let all = h.publish_all(events("blk", 5)).await;
    let blocked = h.wait_state(&s.id, SubscriptionState::Blocked).await;
    let failed = h.delivery_of(&s.id, "blk-002").await;
    assert_eq!(blocked.blocked_on, Some(failed.id));

    let skipped = h.skip(failed.id).await.expect("skip");
    assert_eq!(skipped.status, DeliveryStatus::Skipped);
    let expected: Vec<String> = all.iter().filter(|id| *id != "blk-002").cloned().collect();
    rx.wait_delivered_at("/blk", &expected, WITHIN).await;
    assert_eq!(rx.delivered_ids(), expected);
    assert_never_interleaved(&rx.requests(), &all);
    assert_eq!(
        rx.requests_for("blk-002").len(),
        2,
        "not retried after the skip"
    );
    assert_eq!(
        h.delivery_of(&s.id, "blk-002").await.status,
        DeliveryStatus::Skipped
    );
    assert_eq!(
        h.get_subscription(&s.id).await.expect("get").state,
        SubscriptionState::Active
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_leaves_the_failure_visible_and_moves_on() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "blk-002" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = sub(rx.url("/skip"));
    n.retry = Some(retry(2));
    n.on_failure = Some(FailurePolicy::Skip);
    let s = h.subscribe(n).await;
    let all = h.publish_all(events("blk", 5)).await;
    let expected: Vec<String> = all.iter().filter(|id| *id != "blk-002").cloned().collect();
    rx.wait_delivered_at("/skip", &expected, WITHIN).await;
    assert_eq!(rx.delivered_ids(), expected);
    assert_never_interleaved(&rx.requests(), &all);
    let d = h.detail_of(&s.id, "blk-002").await;
    assert_eq!(d.delivery.status, DeliveryStatus::Failed);
    assert_eq!(d.attempt_log.len(), 2);
    let s = h.get_subscription(&s.id).await.expect("get");
    assert_eq!((s.state, s.blocked_on), (SubscriptionState::Active, None));
}

// ---- 5. operator action errors ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_and_skip_refuse_what_they_cannot_do() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/ops"))).await;
    h.publish(event("op-0")).await.expect("publish");
    let delivered = h
        .wait_status(&s.id, "op-0", DeliveryStatus::Delivered)
        .await;
    let id = delivered.delivery.id;
    assert!(matches!(h.resubmit(id).await, Err(Error::Conflict(_))));
    assert!(matches!(h.skip(id).await, Err(Error::Conflict(_))));
    assert_eq!(
        h.get_delivery(id).await.expect("get").delivery.status,
        DeliveryStatus::Delivered,
        "refused actions change nothing"
    );

    let unknown: DeliveryId = "dlv_999999".parse().expect("a delivery id");
    for r in [h.resubmit(unknown).await, h.skip(unknown).await] {
        assert!(
            matches!(
                r,
                Err(Error::NotFound {
                    kind: "delivery",
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert!(matches!(
        h.get_delivery(unknown).await,
        Err(Error::NotFound {
            kind: "delivery",
            ..
        })
    ));

    // A pending delivery cannot be resubmitted, but it can be skipped (and is then never sent).
    h.pause_subscription(&s.id).await.expect("pause");
    h.publish_all([event("op-1"), event("op-2"), event("op-3")])
        .await;
    let pending = h.delivery_of(&s.id, "op-2").await;
    assert!(matches!(
        h.resubmit(pending.id).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        h.skip(pending.id).await.expect("skip pending").status,
        DeliveryStatus::Skipped
    );
    h.resume_subscription(&s.id).await.expect("resume");
    let expected = vec!["op-0".to_string(), "op-1".into(), "op-3".into()];
    rx.wait_delivered_at("/ops", &expected, WITHIN).await;
    assert_eq!(rx.delivered_ids(), expected);
    assert!(rx.requests_for("op-2").is_empty());
}

// ---- 6. filters ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_route_each_subscription_exactly_its_matches() {
    use NotificationType::*;
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let specs: [(&str, Vec<NotificationType>, Vec<&str>); 4] = [
        ("/nodes", vec![NodeEvent], vec![]),
        ("/wf1", vec![], vec!["wf1"]),
        (
            "/both",
            vec![CaseEvent, TransactionEvent],
            vec!["wf1", "wf2"],
        ),
        ("/all", vec![], vec![]),
    ];
    let mut subs = Vec::new();
    for (path, types, wfs) in &specs {
        let mut n = sub(rx.url(path));
        n.notification_types = types.clone();
        n.workflow_ids = wfs.iter().map(|w| w.to_string()).collect();
        subs.push(h.subscribe(n).await);
    }
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); specs.len()];
    for i in 0..24 {
        let ty = NotificationType::ALL[i % 4];
        let wf = ["wf1", "wf2", "wf3", ""][(i / 4) % 4];
        let id = format!("f-{i:02}");
        let mut e = EventInput::new(TENANT, format!("tx-{i}"), ty).id(&id);
        if !wf.is_empty() {
            e = e.workflow_id(wf);
        }
        let mut matching = 0u32;
        for (k, (_, types, wfs)) in specs.iter().enumerate() {
            let type_ok = types.is_empty() || types.contains(&ty);
            let wf_ok = wfs.is_empty() || wfs.contains(&wf);
            if type_ok && wf_ok {
                expected[k].push(id.clone());
                matching += 1;
            }
        }
        let r = h.publish(e).await.expect("publish");
        assert_eq!(r.deliveries, matching, "{id} fanned out to its matches");
    }
    for (k, (path, _, _)) in specs.iter().enumerate() {
        assert!(!expected[k].is_empty(), "{path} expects something");
        rx.wait_delivered_at(path, &expected[k], WITHIN).await;
    }
    for (k, (path, _, _)) in specs.iter().enumerate() {
        assert_eq!(rx.delivered_ids_at(path), expected[k], "{path}");
        assert_eq!(rx.requests_at(path).len(), expected[k].len(), "{path}");
        let journaled: Vec<String> = h
            .deliveries(&subs[k].id)
            .await
            .iter()
            .map(|d| d.event_id.to_string())
            .collect();
        assert_eq!(journaled, expected[k], "{path}: deliveries journaled");
    }
    assert_eq!(expected[3].len(), 24, "an empty filter matches everything");
}

// ---- 7. fan-out ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscription_of_the_tenant_only() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    h.add_tenant("globex").await;
    for path in ["/a1", "/a2", "/a3"] {
        h.subscribe(sub(rx.url(path))).await;
    }
    h.subscribe(NewSubscription::new("globex", rx.url("/g")))
        .await;
    let r = h.publish(event("fan-1")).await.expect("publish");
    assert_eq!(r.deliveries, 3);
    // Barrier for the other tenant: its own event, published after.
    let r = h
        .publish(event_for("globex", "globex-1"))
        .await
        .expect("publish");
    assert_eq!(r.deliveries, 1);
    let one = vec!["fan-1".to_string()];
    for path in ["/a1", "/a2", "/a3"] {
        rx.wait_delivered_at(path, &one, WITHIN).await;
    }
    rx.wait_delivered_at("/g", &["globex-1".to_string()], WITHIN)
        .await;
    for path in ["/a1", "/a2", "/a3"] {
        assert_eq!(rx.delivered_ids_at(path), one, "{path}");
        assert_eq!(rx.requests_at(path)[0].json()["tenantId"], TENANT);
    }
    assert_eq!(
        rx.delivered_ids_at("/g"),
        ["globex-1"],
        "nothing crosses tenants"
    );
}

// ---- 8. idempotent publish ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_idempotent_per_tenant() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    h.add_tenant("globex").await;
    let s = h.subscribe(sub(rx.url("/acme"))).await;
    h.subscribe(NewSubscription::new("globex", rx.url("/globex")))
        .await;

    let first = h
        .publish(event("dup-1").payload(json!({"v": 1})))
        .await
        .expect("publish");
    let again = h
        .publish(event("dup-1").payload(json!({"v": 2})))
        .await
        .expect("publish again");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!((again.id.as_str(), again.seq), ("dup-1", first.seq));
    let other = h
        .publish(event_for("globex", "dup-1"))
        .await
        .expect("publish for globex");
    assert!(
        !other.duplicate,
        "the same id under another tenant is another event"
    );
    assert_ne!(other.seq, first.seq);

    h.publish(event("after-1")).await.expect("barrier");
    rx.wait_delivered_at("/acme", &["after-1".to_string()], WITHIN)
        .await;
    rx.wait_delivered_at("/globex", &["dup-1".to_string()], WITHIN)
        .await;
    assert_eq!(rx.delivered_ids_at("/acme"), ["dup-1", "after-1"]);
    let acme = rx.requests_at("/acme");
    assert_eq!(acme.len(), 2, "the duplicate was sent once");
    assert_eq!(
        acme[0].json()["payLoad"],
        json!({"v": 1}),
        "the original wins"
    );
    assert_eq!(h.deliveries(&s.id).await.len(), 2);
    let globex = rx.requests_at("/globex");
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0].json()["tenantId"], "globex");
}

// ---- 9. pause, resume, update -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_subscription_accumulates_and_resume_delivers_in_order() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/p"))).await;
    let paused = h.pause_subscription(&s.id).await.expect("pause");
    assert_eq!(paused.state, SubscriptionState::Paused);
    let expected = h.publish_all(events("pz", 6)).await;
    consistently(
        "nothing sent while paused",
        Duration::from_millis(300),
        || async { rx.requests().is_empty() },
    )
    .await;
    let pending = h.deliveries(&s.id).await;
    assert_eq!(pending.len(), 6);
    assert!(pending.iter().all(|d| d.status == DeliveryStatus::Pending));
    let resumed = h.resume_subscription(&s.id).await.expect("resume");
    assert_eq!(resumed.state, SubscriptionState::Active);
    rx.wait_delivered_at("/p", &expected, WITHIN).await;
    assert_strict_order(&rx.requests(), &expected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_a_new_url_sends_subsequent_deliveries_there() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/old"))).await;
    let before = h.publish_all(events("u1", 3)).await;
    rx.wait_delivered_at("/old", &before, WITHIN).await;
    let patch = SubscriptionPatch {
        url: Some(rx.url("/new")),
        ..Default::default()
    };
    let updated = h.update_subscription(&s.id, patch).await.expect("update");
    assert_eq!(updated.url, rx.url("/new"));
    assert_eq!(
        h.get_subscription(&s.id).await.expect("get").url,
        rx.url("/new")
    );
    let after = h.publish_all(events("u2", 3)).await;
    rx.wait_delivered_at("/new", &after, WITHIN).await;
    assert_eq!(rx.delivered_ids_at("/old"), before);
    assert_eq!(rx.delivered_ids_at("/new"), after);
    assert_eq!(rx.requests().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_during_a_retry_wait_sends_the_retry_to_the_new_url() {
    let rx = Receiver::with(|r| {
        if r.path == "/old" {
            Reply::retry_after(503, 1)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/old"))).await;
    let expected = h.publish_all(events("mv", 3)).await;
    rx.wait_for("the first attempt at /old", WITHIN, |r| {
        r.iter().any(|r| r.status.is_some())
    })
    .await;
    let patch = SubscriptionPatch {
        url: Some(rx.url("/new")),
        ..Default::default()
    };
    h.update_subscription(&s.id, patch).await.expect("update");
    rx.wait_delivered_at("/new", &expected, WITHIN).await;
    let reqs = rx.requests();
    assert_eq!(
        rx.requests_at("/old").len(),
        1,
        "only the first attempt went to /old"
    );
    assert_eq!(reqs[0].webhook_id(), "mv-000");
    assert_strict_order(&reqs, &expected, 0);
    let log = h.detail_of(&s.id, "mv-000").await.attempt_log;
    assert_eq!(
        log.iter().map(|a| (a.n, a.status_code)).collect::<Vec<_>>(),
        [(1, Some(503)), (2, Some(200))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_lets_the_attempt_in_flight_finish_and_starts_no_other() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "pf-002" {
            Reply::ok().delay(Duration::from_millis(300))
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/pf"))).await;
    let expected = h.publish_all(events("pf", 6)).await;
    rx.wait_for("pf-002 in flight", WITHIN, |r| {
        r.iter().any(|r| r.webhook_id() == "pf-002")
    })
    .await;
    h.pause_subscription(&s.id).await.expect("pause");
    h.wait_status(&s.id, "pf-002", DeliveryStatus::Delivered)
        .await;
    consistently(
        "nothing else sent while paused",
        Duration::from_millis(300),
        || async { rx.requests().len() == 3 },
    )
    .await;
    let d = h.delivery_of(&s.id, "pf-003").await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0));
    h.resume_subscription(&s.id).await.expect("resume");
    rx.wait_delivered_at("/pf", &expected, WITHIN).await;
    assert_strict_order(&rx.requests(), &expected, 0);
}

// ---- 10. attempt log ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_log_records_every_attempt_with_a_capped_snippet() {
    let big: String = (0..10_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let body = big.clone();
    let rx = Receiver::with(move |r| {
        let reply = if r.nth_for_id <= 2 {
            Reply::status(500).body(body.clone())
        } else {
            Reply::ok().body("thanks")
        };
        reply.delay(Duration::from_millis(30))
    })
    .await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/log"))).await;
    h.publish(event("log-1")).await.expect("publish");
    let d = h
        .wait_status(&s.id, "log-1", DeliveryStatus::Delivered)
        .await;
    assert_eq!(d.delivery.attempts, 3);
    assert_eq!(d.delivery.last_status_code, Some(200));
    let log = &d.attempt_log;
    assert_eq!(log.iter().map(|a| a.n).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        log.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(200)]
    );
    assert_eq!(
        log.iter()
            .map(|a| a.error_kind.as_deref())
            .collect::<Vec<_>>(),
        [Some("http_status"), Some("http_status"), None]
    );
    for a in &log[..2] {
        let snippet = a.response_snippet.as_deref().expect("snippet of a 500");
        assert_eq!(snippet.len(), 4096, "capped at 4 KiB");
        assert_eq!(snippet, &big[..4096]);
        assert!(a.error.is_some());
    }
    assert_eq!(log[2].response_snippet.as_deref(), Some("thanks"));
    assert_eq!(log[2].error, None);
    for a in log {
        assert!(
            (25..5000).contains(&a.duration_ms),
            "the receiver took 30 ms, logged {} ms",
            a.duration_ms
        );
    }
    let starts: Vec<time::OffsetDateTime> = log
        .iter()
        .map(|a| {
            time::OffsetDateTime::parse(
                &a.started_at.to_string(),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("started_at is RFC 3339")
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_cap_holds_for_multibyte_bodies() {
    // 1 + 2k bytes: the 4096-byte cut falls inside a two-byte character.
    let body: String = std::iter::once('x')
        .chain(std::iter::repeat_n('é', 5000))
        .collect();
    let b = body.clone();
    let rx = Receiver::with(move |_| Reply::status(400).body(b.clone())).await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/utf8"))).await;
    h.publish(event("utf8-1")).await.expect("publish");
    let d = h.wait_status(&s.id, "utf8-1", DeliveryStatus::Failed).await;
    let snippet = d.attempt_log[0]
        .response_snippet
        .as_deref()
        .expect("snippet");
    assert!(
        snippet.len() <= 4096,
        "snippet is {} bytes, more than 4096 (ends with {:?})",
        snippet.len(),
        snippet.chars().last()
    );
    assert!(
        body.starts_with(snippet),
        "the snippet is a prefix of the body"
    );
    assert!(snippet.len() >= 4095, "cut at the last whole character");
}

// ---- 11. actor restarts (fault injection) -------------------------------------------------

/// Holds the first request of `pan-010` and `pan-025` for 3 s (then 503), so a panic injected
/// when it arrives finds it in flight; everything else is accepted after 5 ms.
#[cfg(feature = "test-hooks")]
fn hold_first_of(held: &'static [&'static str]) -> impl Fn(&Recorded) -> Reply + Send + Sync {
    move |r| {
        if held.contains(&r.webhook_id()) && r.nth_for_id == 1 {
            Reply::status(503).delay(Duration::from_secs(3))
        } else {
            Reply::ok().delay(Duration::from_millis(5))
        }
    }
}

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_panic_mid_stream_loses_and_reorders_nothing() {
    const HELD: &[&str] = &["pan-010", "pan-025"];
    let rx = Receiver::with(hold_first_of(HELD)).await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/panic"))).await;
    let expected = h.publish_all(events("pan", 40)).await;
    for id in HELD {
        rx.wait_for(&format!("{id} in flight"), WITHIN, |r| {
            r.iter().any(|r| r.webhook_id() == *id)
        })
        .await;
        h.inject_actor_panic(&s.id).await.expect("inject a panic");
    }
    rx.wait_delivered_at("/panic", &expected, WITHIN).await;
    // Only the delivery in flight at each panic may be repeated.
    let reqs = rx.requests();
    assert_strict_order(&reqs, &expected, 2);
    // Each held attempt was abandoned and sent again by the restarted actor long before the
    // receiver would have answered it (a plain retry would have waited for the answer).
    for id in HELD {
        let tries: Vec<&Recorded> = reqs.iter().filter(|r| r.webhook_id() == *id).collect();
        assert_eq!(
            tries.len(),
            2,
            "{id}: the abandoned attempt and its re-send"
        );
        assert!(
            tries[0].answered_at.is_none_or(|t| t > tries[1].at),
            "{id} was re-sent only after its first attempt was answered: no restart"
        );
    }
    h.wait_all_delivered(&s.id, expected.len()).await;
    if h.postgres.is_none() {
        assert_eq!(
            h.live_actors().await.expect("count"),
            1,
            "the actor came back"
        );
    } else {
        // On a shared store the actor that came back gives the lease up once the queue is
        // empty, and stops: nothing else may be holding the subscription.
        crate::support::eventually_true("the restarted actor went idle", WITHIN, || async {
            h.live_actors().await.expect("count") == 0
        })
        .await;
    }
    assert_eq!(
        h.get_subscription(&s.id).await.expect("get").state,
        SubscriptionState::Active
    );
}

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_abandoned_by_an_actor_restart_is_logged() {
    let rx = Receiver::with(hold_first_of(&["ab-001"])).await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/ab"))).await;
    let expected = h.publish_all(events("ab", 3)).await;
    rx.wait_for("ab-001 in flight", WITHIN, |r| {
        r.iter().any(|r| r.webhook_id() == "ab-001")
    })
    .await;
    h.inject_actor_panic(&s.id).await.expect("inject a panic");
    rx.wait_delivered_at("/ab", &expected, WITHIN).await;
    h.wait_all_delivered(&s.id, expected.len()).await;
    let d = h.detail_of(&s.id, "ab-001").await;
    assert_eq!(rx.requests_for("ab-001").len(), 2);
    assert_eq!(d.delivery.attempts, 2, "two HTTP tries");
    assert_eq!(
        d.attempt_log
            .iter()
            .map(|a| (a.n, a.error_kind.as_deref(), a.status_code))
            .collect::<Vec<_>>(),
        [(1, Some("interrupted"), None), (2, None, Some(200))],
        "every attempt is in the log, the abandoned one as interrupted (as after a crash)"
    );
}

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_panics_fault_the_subscription_until_resumed() {
    // The receiver holds every request, so each restarted actor re-sends the delivery in
    // flight: one new request per restart tells us the new actor is up before the next panic.
    let rx = Receiver::with(|_| Reply::status(503).delay(Duration::from_secs(20))).await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/fault"))).await;
    let expected = h.publish_all(events("flt", 5)).await;
    rx.wait_for("the first attempt", WITHIN, |r| r.len() == 1)
        .await;
    // restart_limit is 5 per 60 s: the 6th failure faults the subscription.
    for k in 1..=6 {
        h.inject_actor_panic(&s.id).await.expect("inject a panic");
        if k <= 5 {
            rx.wait_for(&format!("restart {k} re-sending"), WITHIN, |r| {
                r.len() == k + 1
            })
            .await;
        }
    }
    let faulted = h.wait_state(&s.id, SubscriptionState::Faulted).await;
    assert!(
        faulted
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("failed")),
        "{:?}",
        faulted.state_reason
    );
    crate::support::eventually_true("the faulted actor to stay down", WITHIN, || async {
        h.live_actors().await.expect("count") == 0
    })
    .await;
    assert!(rx.requests().iter().all(|r| r.webhook_id() == "flt-000"));

    rx.set_behaviour(|_| Reply::ok());
    let resumed = h.resume_subscription(&s.id).await.expect("resume");
    assert_eq!(resumed.state, SubscriptionState::Active);
    rx.wait_delivered_at("/fault", &expected, WITHIN).await;
    assert_strict_order(&rx.requests(), &expected, 0);
    if h.postgres.is_none() {
        assert_eq!(h.live_actors().await.expect("count"), 1);
    } else {
        // On a shared store the resumed actor gives the lease up once the queue is empty and
        // stops (seen failing about one run in four when the release beat this count).
        crate::support::eventually_true("the resumed actor went idle", WITHIN, || async {
            h.live_actors().await.expect("count") == 0
        })
        .await;
    }
}

// ---- 12. recovery across an engine restart ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_every_subscription_in_order() {
    // rec-003's first request is held past the shutdown grace, so it is in flight at shutdown.
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "rec-003" && r.nth_for_id == 1 {
            Reply::status(503).delay(Duration::from_secs(5))
        } else {
            Reply::ok().delay(Duration::from_millis(20))
        }
    })
    .await;
    let mut h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/rec"))).await;
    let mut expected = h.publish_all(events("rec", 10)).await;
    rx.wait_for("rec-003 in flight", WITHIN, |r| {
        r.iter().any(|r| r.webhook_id() == "rec-003")
    })
    .await;
    h.restart().await;
    // Publishing continues on the new engine, behind what was recovered.
    let later = h.publish_all(events("rec2", 3)).await;
    expected.extend(later);
    rx.wait_delivered_at("/rec", &expected, WITHIN).await;
    assert_strict_order(&rx.requests(), &expected, 0);
    let d = h.detail_of(&s.id, "rec-003").await;
    assert_eq!(d.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(
        d.attempt_log
            .iter()
            .map(|a| (a.n, a.error_kind.as_deref(), a.status_code))
            .collect::<Vec<_>>(),
        [(1, Some("interrupted"), None), (2, None, Some(200))],
        "the attempt cut by the shutdown is logged as interrupted, then retried"
    );
    h.wait_all_delivered(&s.id, expected.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_engine_refuses_new_work() {
    let h = TestEngine::start().await;
    let clone = h.engine.clone();
    h.shutdown().await;
    assert!(matches!(
        clone.publish(event("late")).await,
        Err(Error::ShuttingDown)
    ));
    assert!(matches!(
        clone
            .create_subscription(sub("http://127.0.0.1:9/x".into()))
            .await,
        Err(Error::ShuttingDown)
    ));
}

// ---- 13. validation -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_refused_with_typed_errors_and_journal_nothing() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let s = h.subscribe(sub(rx.url("/v"))).await;

    let mut bad_ts = event("v-1");
    bad_ts.timestamp = "yesterday".into();
    let mut empty_tx = event("v-2");
    empty_tx.transaction_id.clear();
    let cases = [
        (bad_ts, "timestamp"),
        (empty_tx, "transactionId"),
        (event("has space"), "id"),
        (event("v-4").payload(json!([1, 2])), "payLoad"),
    ];
    for (e, field) in cases {
        match h.publish(e).await {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected Invalid {{ field: {field} }}, got {other:?}"),
        }
    }
    match h.publish(event_for("nobody", "v-5")).await {
        Err(Error::NotFound { kind, id }) => assert_eq!((kind, id.as_str()), ("tenant", "nobody")),
        other => panic!("expected NotFound tenant, got {other:?}"),
    }
    assert!(h.deliveries(&s.id).await.is_empty(), "nothing journaled");
    // The refused ids were not taken: publishing them properly is not a duplicate.
    for id in ["v-1", "v-2"] {
        let r = h.publish(event(id)).await.expect("valid publish");
        assert!(!r.duplicate, "{id} was never journaled");
    }
    rx.wait_delivered_at("/v", &["v-1".to_string(), "v-2".into()], WITHIN)
        .await;
    assert_eq!(rx.requests().len(), 2, "only the valid events were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_subscriptions_are_refused_with_typed_errors() {
    let h = TestEngine::start().await;
    let ok = || sub("http://127.0.0.1:9/hook".into());
    let mut cases: Vec<(NewSubscription, &str)> = Vec::new();
    cases.push((sub("ftp://example.com/hook".into()), "url"));
    cases.push((sub("not a url".into()), "url"));
    let mut n = ok();
    n.retry = Some(RetryPolicy {
        max_attempts: 0,
        backoff_ms: vec![10],
    });
    cases.push((n, "retry.maxAttempts"));
    let mut n = ok();
    n.retry = Some(RetryPolicy {
        max_attempts: 3,
        backoff_ms: vec![],
    });
    cases.push((n, "retry.backoffMs"));
    let mut n = ok();
    n.timeout_ms = Some(99);
    cases.push((n, "timeoutMs"));
    let mut n = ok();
    n.headers.insert("webhook-id".into(), "forged".into());
    cases.push((n, "headers.webhook-id"));
    for (n, field) in cases {
        match h.create_subscription(n).await {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected Invalid {{ field: {field} }}, got {other:?}"),
        }
    }
    assert!(matches!(
        h.create_subscription(NewSubscription::new("nobody", "http://127.0.0.1:9/x"))
            .await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    assert!(
        h.list_subscriptions(None).await.expect("list").is_empty(),
        "nothing created"
    );
    h.create_subscription(ok())
        .await
        .expect("the valid one is accepted");
}
