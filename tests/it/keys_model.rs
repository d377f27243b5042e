//! Model-based test of ordering keys at the engine level (guarantee 12): proptest generates
//! sequences of operations (publish an event of one of four keys, or of no key; answer one of
//! the requests in flight with a 2xx, a 503, a 400 or a 429 with `Retry-After`; skip or
//! resubmit a delivery that holds its key) and runs each against an engine on a real SQLite
//! file (or PostgreSQL, `HOOKLINE_TEST_STORE=postgres`) with a keyed subscription of 1 to 4
//! lanes, and against a reference model of the keys.
//!
//! The receiver runs in lockstep: it parks every request until the sequence answers it, so at
//! any moment the test knows every request in flight. What is checked:
//! - on every arrival, read from the store before the request is parked: every earlier
//!   delivery of the same key (events without a key share one sequence) is terminal
//!   (delivered or skipped): guarantee 12, n+1 never before n is terminal, committed;
//! - after every operation, once the engine settled: each delivery's status and attempt count
//!   equal the model's, and the requests in flight are exactly as many as the model's
//!   startable key heads allow (`min(lanes, heads)`), each one of those heads (at most one per
//!   key, never a held key), so a retrying or held key never stalls the others;
//! - at the end, the first 2xx of each key's events in publish order, and no request beyond
//!   the model's attempts (nothing lost, nothing sent twice).
//!
//! Cases: 8 by default (a few seconds), `PROPTEST_CASES` for more. Schedules are shrunk
//! through configuration (10 ms backoff, `Retry-After` clamped to 100 ms).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response};
use hookline::{
    DeliveryStatus, EngineHandle, EventInput, FailurePolicy, NotificationType, RetryPolicy,
    SubscriptionId,
};
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::keys::keyed;
use crate::support::{TENANT, TestEngine, WITHIN};

const MAX_ATTEMPTS: u32 = 3;
const KEYS: [&str; 4] = ["A", "B", "C", "D"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    /// 503: retried.
    Retry,
    /// 400: failed at once, holding its key (`onFailure: block`).
    Fail,
    /// 429 with `Retry-After: 1` (clamped to 100 ms): retried, and every key waits.
    Slow,
}

#[derive(Debug, Clone)]
enum Op {
    /// An event of `KEYS[k]`, or with no key.
    Publish(Option<u8>),
    /// Answer the i-th request in flight (modulo how many).
    Answer(u8, Answer),
    Skip(u8),
    Resubmit(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let answer = prop_oneof![
        6 => Just(Answer::Ok),
        2 => Just(Answer::Retry),
        1 => Just(Answer::Fail),
        1 => Just(Answer::Slow),
    ];
    prop_oneof![
        4 => proptest::option::weighted(0.9, 0u8..4).prop_map(Op::Publish),
        6 => (any::<u8>(), answer).prop_map(|(i, a)| Op::Answer(i, a)),
        1 => any::<u8>().prop_map(Op::Skip),
        1 => any::<u8>().prop_map(Op::Resubmit),
    ]
}

// ---- the model ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Pending,
    Delivered,
    /// Failed under `onFailure: block`: holds its key.
    Held,
    Skipped,
}

#[derive(Debug, Clone)]
struct Md {
    event: String,
    key: Option<&'static str>,
    st: St,
    attempts: u32,
    /// Attempts counted against the budget since the last resubmit.
    budget: u32,
}

#[derive(Debug, Default)]
struct Model {
    ds: Vec<Md>,
}

impl Model {
    fn open(d: &Md) -> bool {
        matches!(d.st, St::Pending | St::Held)
    }

    /// The deliveries that may be in flight now: the first open delivery of each key (the
    /// events without a key share one sequence), when it is pending.
    fn startable(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, d) in self.ds.iter().enumerate() {
            if d.st != St::Pending {
                continue;
            }
            let blocked = self.ds[..i]
                .iter()
                .any(|p| Model::open(p) && p.key == d.key);
            if !blocked {
                out.push(i);
            }
        }
        out
    }

    fn index_of(&self, event: &str) -> usize {
        self.ds
            .iter()
            .position(|d| d.event == event)
            .unwrap_or_else(|| panic!("unknown event {event}"))
    }
}

// ---- the lockstep receiver ------------------------------------------------------------------

struct Parked {
    event: String,
    reply: oneshot::Sender<Answer>,
}

/// Every event requested, in arrival order, with the status it was answered (once answered).
type Log = Arc<Mutex<Vec<(String, Option<u16>)>>>;

/// What the receiver needs to check an arrival against the store.
#[derive(Clone)]
struct Rx {
    engine: Arc<Mutex<Option<(EngineHandle, SubscriptionId)>>>,
    keys: Arc<Mutex<HashMap<String, Option<&'static str>>>>,
    /// Order violations seen on arrival.
    violations: Arc<Mutex<Vec<String>>>,
    /// Every event requested, in arrival order.
    log: Log,
    parked: mpsc::UnboundedSender<Parked>,
}

async fn hook(State(rx): State<Rx>, headers: HeaderMap) -> Response<Body> {
    let event = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    check_arrival(&rx, &event).await;
    let index = {
        let mut log = rx.log.lock().expect("log");
        log.push((event.clone(), None));
        log.len() - 1
    };
    let (tx, answer) = oneshot::channel();
    let _ = rx.parked.send(Parked { event, reply: tx });
    let Ok(answer) = answer.await else {
        return std::future::pending().await;
    };
    let (status, retry_after) = match answer {
        Answer::Ok => (200, None),
        Answer::Retry => (503, None),
        Answer::Fail => (400, None),
        Answer::Slow => (429, Some("1")),
    };
    if let Some(e) = rx.log.lock().expect("log").get_mut(index) {
        e.1 = Some(status);
    }
    let mut resp = Response::builder().status(status);
    if let Some(secs) = retry_after {
        resp = resp.header("retry-after", secs);
    }
    resp.body(Body::empty()).expect("response")
}

/// Guarantee 11 on arrival: every earlier delivery that conflicts with this one is terminal in
/// the store now.
async fn check_arrival(rx: &Rx, event: &str) {
    let Some((engine, sub)) = rx.engine.lock().expect("engine").clone() else {
        return;
    };
    let keys = rx.keys.lock().expect("keys").clone();
    let Ok(page) = engine.list_deliveries(&sub, Default::default()).await else {
        return;
    };
    let key = keys.get(event).copied().flatten();
    for d in &page.items {
        if d.event_id.as_str() == event {
            return;
        }
        let other = keys.get(d.event_id.as_str()).copied().flatten();
        let conflicts = key == other;
        let terminal = matches!(
            d.status,
            DeliveryStatus::Delivered | DeliveryStatus::Skipped
        );
        if conflicts && !terminal {
            rx.violations.lock().expect("violations").push(format!(
                "{event} ({key:?}) requested while {} ({other:?}) is {:?}",
                d.event_id, d.status
            ));
        }
    }
}

async fn start_receiver() -> (SocketAddr, Rx, mpsc::UnboundedReceiver<Parked>) {
    let (tx, parked) = mpsc::unbounded_channel();
    let rx = Rx {
        engine: Arc::default(),
        keys: Arc::default(),
        violations: Arc::default(),
        log: Arc::default(),
        parked: tx,
    };
    let app = Router::new().fallback(hook).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (addr, rx, parked)
}

// ---- one case -------------------------------------------------------------------------------

struct Case {
    h: TestEngine,
    sub: SubscriptionId,
    rx: Rx,
    incoming: mpsc::UnboundedReceiver<Parked>,
    parked: Vec<Parked>,
    model: Model,
    lanes: usize,
}

impl Case {
    fn trace(&self) -> String {
        let log = self.rx.log.lock().expect("log").clone();
        format!(
            "lanes {}\nmodel {:?}\nparked {:?}\nrequests {log:?}",
            self.lanes,
            self.model.ds,
            self.parked.iter().map(|p| &p.event).collect::<Vec<_>>()
        )
    }

    /// Waits until the engine agrees with the model: every delivery's status and attempts, and
    /// exactly the startable heads the lanes allow in flight.
    async fn settle(&mut self) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            while let Ok(p) = self.incoming.try_recv() {
                self.parked.push(p);
            }
            let violations = self.rx.violations.lock().expect("violations").clone();
            assert!(violations.is_empty(), "{violations:?}\n{}", self.trace());
            let startable = self.model.startable();
            let want = startable.len().min(self.lanes);
            for p in &self.parked {
                let i = self.model.index_of(&p.event);
                assert!(
                    startable.contains(&i),
                    "{} in flight but not a startable head\n{}",
                    p.event,
                    self.trace()
                );
            }
            assert!(
                self.parked.len() <= want,
                "too many in flight\n{}",
                self.trace()
            );
            if self.parked.len() == want && self.store_agrees().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the engine never settled to the model\n{}\nstore {:?}",
                self.trace(),
                self.h.deliveries(&self.sub).await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn store_agrees(&self) -> bool {
        let ds = self.h.deliveries(&self.sub).await;
        ds.len() == self.model.ds.len()
            && ds.iter().zip(&self.model.ds).all(|(d, m)| {
                let st = match d.status {
                    DeliveryStatus::Pending | DeliveryStatus::InFlight => St::Pending,
                    DeliveryStatus::Delivered => St::Delivered,
                    DeliveryStatus::Failed => St::Held,
                    DeliveryStatus::Skipped => St::Skipped,
                    DeliveryStatus::Dropped => return false,
                };
                // The store counts an attempt from its start: those in flight are counted.
                let in_flight = self.parked.iter().filter(|p| p.event == m.event).count();
                d.event_id.as_str() == m.event
                    && st == m.st
                    && d.attempts as usize == m.attempts as usize + in_flight
            })
    }

    async fn apply(&mut self, op: &Op, n: usize) {
        match *op {
            Op::Publish(k) => {
                let key = k.map(|k| KEYS[usize::from(k)]);
                let event = format!("e{n:03}");
                self.rx
                    .keys
                    .lock()
                    .expect("keys")
                    .insert(event.clone(), key);
                let payload = match key {
                    Some(k) => json!({ "loanId": k }),
                    None => json!({}),
                };
                let input = EventInput::new(TENANT, format!("tx-{n}"), NotificationType::NodeEvent)
                    .id(&event)
                    .payload(payload);
                self.h.publish(input).await.expect("publish");
                self.model.ds.push(Md {
                    event,
                    key,
                    st: St::Pending,
                    attempts: 0,
                    budget: 0,
                });
            }
            Op::Answer(i, a) => {
                if self.parked.is_empty() {
                    return;
                }
                let p = self.parked.remove(usize::from(i) % self.parked.len());
                let at = self.model.index_of(&p.event);
                let d = &mut self.model.ds[at];
                d.attempts += 1;
                d.budget += 1;
                d.st = match a {
                    Answer::Ok => St::Delivered,
                    Answer::Fail => St::Held,
                    Answer::Retry | Answer::Slow if d.budget >= MAX_ATTEMPTS => St::Held,
                    Answer::Retry | Answer::Slow => St::Pending,
                };
                let _ = p.reply.send(a);
            }
            Op::Skip(i) | Op::Resubmit(i) => {
                let held: Vec<usize> = (0..self.model.ds.len())
                    .filter(|j| self.model.ds[*j].st == St::Held)
                    .collect();
                if held.is_empty() {
                    return;
                }
                let j = held[usize::from(i) % held.len()];
                let id = self
                    .h
                    .delivery_of(&self.sub, &self.model.ds[j].event)
                    .await
                    .id;
                if matches!(op, Op::Skip(_)) {
                    self.h.skip(id).await.expect("skip");
                    self.model.ds[j].st = St::Skipped;
                } else {
                    self.h.resubmit(id).await.expect("resubmit");
                    self.model.ds[j].st = St::Pending;
                    self.model.ds[j].budget = 0;
                }
            }
        }
    }
}

async fn run(lanes: u16, ops: Vec<Op>) {
    let (addr, rx, incoming) = start_receiver().await;
    let h = TestEngine::start_with(|b| {
        b.default_retry(RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            backoff_ms: vec![10],
        })
        .max_retry_after(Duration::from_millis(100))
        // Longer than any wait of the test: a parked request is never given up by the engine.
        .default_timeout(Duration::from_secs(30))
    })
    .await;
    let mut n = keyed(format!("http://{addr}/loans"), lanes);
    n.on_failure = Some(FailurePolicy::Block);
    let sub = h.subscribe(n).await.id;
    *rx.engine.lock().expect("engine") = Some((h.engine.clone(), sub.clone()));
    let mut case = Case {
        h,
        sub,
        rx,
        incoming,
        parked: Vec::new(),
        model: Model::default(),
        lanes: usize::from(lanes),
    };
    for (n, op) in ops.iter().enumerate() {
        case.apply(op, n).await;
        case.settle().await;
    }
    // Everything ends: held keys resubmitted, every request answered 2xx.
    loop {
        let held: Vec<usize> = (0..case.model.ds.len())
            .filter(|j| case.model.ds[*j].st == St::Held)
            .collect();
        for j in held {
            let id = case
                .h
                .delivery_of(&case.sub, &case.model.ds[j].event)
                .await
                .id;
            case.h.resubmit(id).await.expect("resubmit");
            case.model.ds[j].st = St::Pending;
            case.model.ds[j].budget = 0;
        }
        case.settle().await;
        if case.parked.is_empty() {
            break;
        }
        case.apply(&Op::Answer(0, Answer::Ok), 0).await;
        case.settle().await;
    }
    assert!(
        case.model
            .ds
            .iter()
            .all(|d| matches!(d.st, St::Delivered | St::Skipped)),
        "{}",
        case.trace()
    );
    // First 2xx per key in publish order; exactly as many requests as attempts.
    let log = case.rx.log.lock().expect("log").clone();
    for key in KEYS.iter().map(|k| Some(*k)).chain([None]) {
        let want: Vec<&str> = case
            .model
            .ds
            .iter()
            .filter(|d| d.key == key && d.st == St::Delivered)
            .map(|d| d.event.as_str())
            .collect();
        let got: Vec<&str> = log
            .iter()
            .filter(|(e, s)| s == &Some(200) && want.contains(&e.as_str()))
            .map(|(e, _)| e.as_str())
            .collect();
        assert_eq!(got, want, "key {key:?}\n{}", case.trace());
    }
    let attempts: u32 = case.model.ds.iter().map(|d| d.attempts).sum();
    assert_eq!(log.len(), attempts as usize, "{}", case.trace());
    case.h.engine.shutdown().await;
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 100,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_outcomes_across_keys_follow_the_model(
        lanes in 1u16..5,
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(lanes, ops));
    }
}
