//! Ordering keys at work (guarantee 12, docs/ordering.md): a subscription with
//! `ordering: {key: "/payLoad/loanId", lanes}` delivering to a real loopback receiver.
//!
//! What is checked, on what the receiver saw: per key, no request for event n+1 before event
//! n's 2xx was answered (and no duplicate); at most `lanes` requests in flight at once, and
//! more than one when several keys have work; a key failed under `onFailure: block` holds back
//! only that key, and a skip or resubmit frees it; `Retry-After` and rate limits pace every
//! key; a backlog queued before `ordering` changed keeps the stricter order of its time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hookline::{
    DeliveryStatus, EventInput, FailurePolicy, NewSubscription, NotificationType, Ordering,
    RateLimit, SubscriptionPatch, SubscriptionState,
};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{
    Receiver, Recorded, Reply, TENANT, TestEngine, WITHIN, assert_strict_order, consistently, dump,
    eventually_true, retry,
};

/// Event `id` of loan `loan` (`/payLoad/loanId`).
pub fn loan_event(id: &str, loan: &str) -> EventInput {
    EventInput::new(TENANT, format!("tx-{id}"), NotificationType::WorkflowEvent)
        .id(id)
        .payload(json!({ "loanId": loan }))
}

/// A subscription to `url` keyed by `/payLoad/loanId` with `lanes`.
pub fn keyed(url: String, lanes: u16) -> NewSubscription {
    let mut n = NewSubscription::new(TENANT, url);
    n.ordering = Some(Ordering {
        key: "/payLoad/loanId".into(),
        lanes,
    });
    n
}

/// `per_key` events for each of `keys`, interleaved (`k0-0, k1-0, …, k0-1, …`); returns them
/// and each key's event ids in publish order.
pub fn interleaved(
    keys: usize,
    per_key: usize,
) -> (Vec<EventInput>, BTreeMap<String, Vec<String>>) {
    let mut events = Vec::new();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..per_key {
        for k in 0..keys {
            let (key, id) = (format!("loan-{k}"), format!("k{k}-{i}"));
            events.push(loan_event(&id, &key));
            by_key.entry(key).or_default().push(id);
        }
    }
    (events, by_key)
}

/// Guarantee 11 on what the receiver saw: for each key, the 2xx receipts are its events in
/// publish order with at most `max_dups` repeats, and no request of the key's event n+1 came
/// before event n's 2xx was answered.
pub fn assert_order_per_key(
    reqs: &[Recorded],
    by_key: &BTreeMap<String, Vec<String>>,
    max_dups: usize,
) {
    for ids in by_key.values() {
        let mine: Vec<Recorded> = reqs
            .iter()
            .filter(|r| ids.iter().any(|i| i == r.webhook_id()))
            .cloned()
            .collect();
        assert_strict_order(&mine, ids, max_dups);
    }
}

/// The most requests in flight at once (from arrival to answer), and whether two requests of
/// one key ever were (`key_of` maps a webhook-id to its key).
fn overlap(reqs: &[Recorded], key_of: &HashMap<String, String>) -> (usize, bool) {
    let mut most = 0;
    let mut same_key = false;
    for r in reqs {
        let busy: Vec<&Recorded> = reqs
            .iter()
            .filter(|o| o.at <= r.at && o.answered_at.is_none_or(|a| a > r.at))
            .collect();
        most = most.max(busy.len());
        let key = key_of.get(r.webhook_id());
        same_key |= busy
            .iter()
            .any(|o| o.index != r.index && key_of.get(o.webhook_id()) == key);
    }
    (most, same_key)
}

fn key_map(by_key: &BTreeMap<String, Vec<String>>) -> HashMap<String, String> {
    by_key
        .iter()
        .flat_map(|(k, ids)| ids.iter().map(move |i| (i.clone(), k.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_side_by_side_in_order_per_key_across_retries() {
    let h = TestEngine::start().await;
    // Every request takes 40 ms; the first try of every third event fails with a 503.
    let rx = Receiver::with(|r: &Recorded| {
        let n: usize = r.webhook_id()[r.webhook_id().len() - 1..]
            .parse()
            .unwrap_or(0);
        if r.nth_for_id == 1 && n % 3 == 1 {
            Reply::status(503).delay(Duration::from_millis(40))
        } else {
            Reply::ok().delay(Duration::from_millis(40))
        }
    })
    .await;
    let sub = h.subscribe(keyed(rx.url("/loans"), 4)).await;
    let (events, by_key) = interleaved(6, 4);
    h.publish_all(events).await;
    h.wait_all_delivered(&sub.id, 24).await;
    let reqs = rx.requests();
    assert_order_per_key(&reqs, &by_key, 0);
    let (most, same_key) = overlap(&reqs, &key_map(&by_key));
    assert!(
        !same_key,
        "two requests of one key in flight\n{}",
        dump(&reqs)
    );
    assert!(
        (2..=4).contains(&most),
        "{most} requests in flight at once (lanes: 4)\n{}",
        dump(&reqs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_key_holds_only_itself_until_resubmitted_or_skipped() {
    let h = TestEngine::start().await;
    // a-1 and c-1 fail for good (400, no retry) the first time they are tried.
    let rx = Receiver::with(|r: &Recorded| match (r.webhook_id(), r.nth_for_id) {
        ("a-1" | "c-1", 1) => Reply::status(400),
        _ => Reply::ok(),
    })
    .await;
    let mut n = keyed(rx.url("/loans"), 2);
    n.on_failure = Some(FailurePolicy::Block);
    n.retry = Some(retry(1));
    let sub = h.subscribe(n).await;
    let plan = [
        ("a-1", "A"),
        ("b-1", "B"),
        ("a-2", "A"),
        ("c-1", "C"),
        ("b-2", "B"),
        ("c-2", "C"),
        ("a-3", "A"),
    ];
    h.publish_all(plan.iter().map(|(id, k)| loan_event(id, k)))
        .await;
    for id in ["b-1", "b-2"] {
        h.wait_status(&sub.id, id, DeliveryStatus::Delivered).await;
    }
    let a1 = h.wait_status(&sub.id, "a-1", DeliveryStatus::Failed).await;
    let c1 = h.wait_status(&sub.id, "c-1", DeliveryStatus::Failed).await;
    // The subscription is not blocked; the held keys are shown with their deliveries.
    let s = h.get_subscription(&sub.id).await.expect("subscription");
    assert_eq!(s.state, SubscriptionState::Active, "{s:?}");
    assert!(s.blocked_on.is_none());
    let held: Vec<(serde_json::Value, String)> = s
        .blocked_keys
        .iter()
        .map(|b| (b.key.clone(), b.delivery.to_string()))
        .collect();
    assert_eq!(
        held,
        [
            (json!("A"), a1.delivery.id.to_string()),
            (json!("C"), c1.delivery.id.to_string())
        ]
    );
    consistently(
        "a-2, a-3 and c-2 wait behind their keys",
        Duration::from_millis(200),
        || async {
            let ds = h.deliveries(&sub.id).await;
            ds.iter()
                .filter(|d| ["a-2", "a-3", "c-2"].contains(&d.event_id.as_str()))
                .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0)
        },
    )
    .await;

    // A resubmit frees key A (in order), a skip frees key C; B was never held.
    h.resubmit(a1.delivery.id).await.expect("resubmit");
    for id in ["a-1", "a-2", "a-3"] {
        h.wait_status(&sub.id, id, DeliveryStatus::Delivered).await;
    }
    assert_eq!(
        h.delivery_of(&sub.id, "c-2").await.status,
        DeliveryStatus::Pending
    );
    h.skip(c1.delivery.id).await.expect("skip");
    h.wait_status(&sub.id, "c-2", DeliveryStatus::Delivered)
        .await;
    let s = h.get_subscription(&sub.id).await.expect("subscription");
    assert!(s.blocked_keys.is_empty(), "{s:?}");
    let by_key: BTreeMap<String, Vec<String>> = [
        ("A", vec!["a-1", "a-2", "a-3"]),
        ("B", vec!["b-1", "b-2"]),
        ("C", vec!["c-2"]),
    ]
    .into_iter()
    .map(|(k, ids)| (k.to_owned(), ids.into_iter().map(String::from).collect()))
    .collect();
    let reqs: Vec<Recorded> = rx
        .requests()
        .into_iter()
        .filter(|r| r.webhook_id() != "c-1")
        .collect();
    assert_order_per_key(&reqs, &by_key, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_one_key_slows_every_key() {
    let h = TestEngine::start_with(|b| b.max_retry_after(Duration::from_millis(600))).await;
    let rx = Receiver::with(|r: &Recorded| {
        if r.webhook_id() == "a-1" && r.nth_for_id == 1 {
            Reply::retry_after(429, 1)
        } else {
            Reply::ok()
        }
    })
    .await;
    let sub = h.subscribe(keyed(rx.url("/loans"), 4)).await;
    h.publish_all([loan_event("a-1", "A")]).await;
    let reqs = rx
        .wait_for("a-1's 429", WITHIN, |reqs| {
            reqs.iter().any(|r| r.status == Some(429))
        })
        .await;
    let first = reqs
        .into_iter()
        .find(|r| r.status == Some(429))
        .expect("the 429");
    h.publish_all([loan_event("b-1", "B")]).await;
    h.wait_all_delivered(&sub.id, 2).await;
    let answered = first.answered_at.expect("answered");
    let reqs = rx.requests();
    let b1 = reqs
        .iter()
        .find(|r| r.webhook_id() == "b-1")
        .expect("b-1 was sent");
    // Clamped to 600 ms; the hold is taken from the engine's clock after the answer.
    assert!(
        b1.at >= answered + Duration::from_millis(550),
        "b-1 went {:?} after the 429 of another key\n{}",
        b1.at - answered,
        dump(&reqs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_paces_the_whole_subscription() {
    let h = TestEngine::start().await;
    let rx = Receiver::start().await;
    let mut n = keyed(rx.url("/loans"), 8);
    n.rate_limit = Some(RateLimit {
        per_second: 20.0,
        burst: 1,
    });
    let sub = h.subscribe(n).await;
    let (events, by_key) = interleaved(8, 2);
    let start = Instant::now();
    h.publish_all(events).await;
    h.wait_all_delivered(&sub.id, 16).await;
    let reqs = rx.requests();
    assert_order_per_key(&reqs, &by_key, 0);
    // 16 starts at 20/s with a burst of 1: the last one no sooner than 15 intervals in.
    let last = reqs.iter().map(|r| r.at).max().expect("requests");
    assert!(
        last - start >= Duration::from_millis(700),
        "16 requests in {:?} at 20/s\n{}",
        last - start,
        dump(&reqs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_keeps_the_order_it_was_queued_under() {
    let h = TestEngine::start().await;
    let rx = Receiver::with(|_: &Recorded| Reply::ok().delay(Duration::from_millis(30))).await;
    let sub = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/loans")))
        .await;
    h.pause_subscription(&sub.id).await.expect("pause");
    // Queued without ordering: one sequence for all of them.
    let old = ["o-1", "o-2", "o-3", "o-4"];
    h.publish_all(
        old.iter()
            .zip(["A", "B", "A", "B"])
            .map(|(id, k)| loan_event(id, k)),
    )
    .await;
    let patch = SubscriptionPatch {
        ordering: Some(Some(Ordering {
            key: "/payLoad/loanId".into(),
            lanes: 4,
        })),
        ..SubscriptionPatch::default()
    };
    h.update_subscription(&sub.id, patch)
        .await
        .expect("set ordering");
    let (events, by_key) = interleaved(4, 2);
    h.publish_all(events).await;
    h.resume_subscription(&sub.id).await.expect("resume");
    h.wait_all_delivered(&sub.id, 12).await;
    let reqs = rx.requests();
    // The old backlog strictly one at a time, in order, all before the first new one.
    let old_ids: Vec<String> = old.iter().map(|s| (*s).to_owned()).collect();
    let old_reqs: Vec<Recorded> = reqs
        .iter()
        .filter(|r| r.webhook_id().starts_with("o-"))
        .cloned()
        .collect();
    assert_strict_order(&old_reqs, &old_ids, 0);
    let old_done = old_reqs
        .iter()
        .filter_map(|r| r.answered_at)
        .max()
        .expect("answered");
    let new_reqs: Vec<Recorded> = reqs
        .iter()
        .filter(|r| !r.webhook_id().starts_with("o-"))
        .cloned()
        .collect();
    assert!(
        new_reqs.iter().all(|r| r.at >= old_done),
        "an event of the new ordering went before the old backlog ended\n{}",
        dump(&reqs)
    );
    assert_order_per_key(&new_reqs, &by_key, 0);
    let (most, _) = overlap(&new_reqs, &key_map(&by_key));
    assert!(
        most >= 2,
        "the new epoch runs keys side by side\n{}",
        dump(&reqs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_busy_counts_the_attempts_in_flight() {
    let h = TestEngine::start().await;
    let rx = Receiver::with(|_: &Recorded| Reply::ok().delay(Duration::from_millis(400))).await;
    let sub = h.subscribe(keyed(rx.url("/loans"), 3)).await;
    let (events, _) = interleaved(5, 1);
    h.publish_all(events).await;
    eventually_true("three lanes busy", WITHIN, || async {
        let s = h.get_subscription(&sub.id).await.expect("subscription");
        s.lanes_busy == Some(3)
    })
    .await;
    h.wait_all_delivered(&sub.id, 5).await;
    let s = h.get_subscription(&sub.id).await.expect("subscription");
    assert_eq!(s.lanes_busy, Some(0));
}

/// `kill -9` of the real binary while a keyed subscription delivers: after the last restart,
/// per key, first arrivals in publish order and nothing lost; a key repeats at most one
/// receipt per kill (the delivery of it in flight), so a kill repeats at most `lanes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_the_order_of_each_key() {
    use rand::Rng;

    use crate::crash::{
        ADMIN, Log, free_port, integrity_ok, post_json, spawn_server_with, start_receiver,
        wait_healthy,
    };
    const EVENTS: u64 = 300;
    const KEYS: u64 = 12;
    const LANES: usize = 6;
    const KILLS: usize = 8;

    let log: Log = std::sync::Arc::default();
    let receiver = start_receiver(log.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keys-crash.db");
    let port = free_port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let spawn = || spawn_server_with(&db, port, &[], std::process::Stdio::null());
    let mut server = spawn();
    let base = server.base.clone();
    wait_healthy(&client, &base).await;
    let (s, t) = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        ADMIN,
        &json!({"id": "acme", "name": "Acme"}),
    )
    .await
    .expect("create tenant");
    assert_eq!(s, 201, "{t}");
    let key = t["apiKey"].as_str().expect("api key").to_owned();
    let body = json!({
        "url": format!("http://{receiver}/loans"),
        "retry": {"maxAttempts": 20, "backoffMs": [5, 20]},
        "timeoutMs": 2000,
        "ordering": {"key": "/payLoad/loanId", "lanes": LANES}
    });
    let (s, v) = post_json(&client, &format!("{base}/v1/subscriptions"), &key, &body)
        .await
        .expect("create subscription");
    assert_eq!(s, 201, "{v}");

    // Published one at a time, each again until accepted (the same id: idempotent).
    let producer = {
        let (client, key, base) = (client.clone(), key.clone(), base.clone());
        tokio::spawn(async move {
            for n in 0..EVENTS {
                let ev = json!({
                    "id": format!("e{n:05}"),
                    "transactionId": format!("tx{n}"),
                    "notificationType": "TRANSACTION_EVENT",
                    "payLoad": {"n": n, "loanId": format!("L{}", n % KEYS)},
                    "timestamp": "2026-11-23T10:00:00Z"
                });
                loop {
                    match post_json(&client, &format!("{base}/v1/events"), &key, &ev).await {
                        Ok((202, _)) => break,
                        Ok((s, v)) if s < 500 => panic!("event {n} refused with {s}: {v}"),
                        _ => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for k in 0..KILLS {
        let wait = rand::rng().random_range(60..300);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        assert_eq!(
            integrity_ok(&db).await,
            "ok",
            "journal corrupt after kill {k}"
        );
        server = spawn();
        wait_healthy(&client, &server.base).await;
    }
    producer.await.expect("producer");

    let per_key = |log: &[(String, u64)]| -> Vec<Vec<u64>> {
        (0..KEYS)
            .map(|k| {
                log.iter()
                    .map(|(_, n)| *n)
                    .filter(|n| n % KEYS == k)
                    .collect()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: usize = {
            let log = log.lock().expect("log");
            per_key(&log)
                .iter()
                .map(|ns| ns.iter().collect::<std::collections::BTreeSet<_>>().len())
                .sum()
        };
        if got as u64 == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {EVENTS} delivered after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.child.kill();
    let _ = server.child.wait();

    let log = log.lock().expect("log").clone();
    let mut total = 0;
    for (k, seq) in per_key(&log).iter().enumerate() {
        assert_eq!(
            seq.first(),
            Some(&(k as u64)),
            "key L{k} starts with its first event"
        );
        let mut dups = 0;
        for w in seq.windows(2) {
            assert!(
                w[1] == w[0] || w[1] == w[0] + KEYS,
                "key L{k}: event {} came after {} (reordered or skipped)",
                w[1],
                w[0]
            );
            dups += usize::from(w[1] == w[0]);
        }
        assert!(
            dups <= KILLS,
            "key L{k}: {dups} duplicates for {KILLS} kills"
        );
        total += dups;
    }
    assert!(
        total <= KILLS * LANES,
        "{total} duplicates for {KILLS} kills of {LANES} lanes"
    );
    eprintln!(
        "keys crash test: {KILLS} kills, {EVENTS} events over {KEYS} keys, {total} duplicate receipts"
    );
}
