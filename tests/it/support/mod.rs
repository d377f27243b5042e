//! Shared fixtures of the integration tests: a recording test [`Receiver`], engines on real
//! SQLite files in temporary directories with test-friendly settings, event builders, polling
//! helpers with deadlines, and the strict-order check of guarantee 3.
//!
//! One suite, two backends: with `HOOKLINE_TEST_STORE=postgres` (and the `test-hooks`
//! feature), every [`TestEngine`] runs on a fresh database of the test binary's throwaway
//! PostgreSQL server instead (`hookline::testing::postgres`); `scripts/test-postgres.sh` runs
//! the engine's behaviour tests that way.
//!
//! Nothing here sleeps to assert: [`eventually`] polls until a condition holds or a deadline
//! passes; [`consistently`] polls that a condition keeps holding for a window.

#![allow(dead_code)] // not every test module uses every fixture

pub mod http;
pub mod receiver;

use std::future::Future;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookline::{
    Delivery, DeliveryDetail, DeliveryStatus, Engine, EngineBuilder, EngineHandle, EventInput,
    NewSubscription, NewTenant, NotificationType, RetryPolicy, Subscription, SubscriptionId,
    SubscriptionState,
};
use tokio::time::Instant;

pub use receiver::{Receiver, Recorded, Reply, delivered_ids, dump, fail_first};

/// The tenant every [`TestEngine`] starts with.
pub const TENANT: &str = "acme";
/// Default deadline of eventual conditions: generous, since most hold within milliseconds.
pub const WITHIN: Duration = Duration::from_secs(10);

/// A retry policy with `max_attempts` and a 10 ms backoff.
pub fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff_ms: vec![10],
    }
}

/// An engine builder on `db` with test-friendly settings: 3 attempts 10 ms apart, 5 s attempt
/// timeout, loopback allowed as a destination, 200 ms shutdown grace.
pub fn builder(db: &Path) -> EngineBuilder {
    Engine::builder()
        .path(db)
        .default_retry(retry(3))
        .default_timeout(Duration::from_secs(5))
        .allow_networks(vec!["127.0.0.0/8".parse().expect("a CIDR")])
        .shutdown_grace(Duration::from_millis(200))
}

/// The sealing key of engines on PostgreSQL (a cluster needs a configured key).
const PG_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A fresh PostgreSQL database when `HOOKLINE_TEST_STORE=postgres`, else `None` (SQLite).
///
/// # Panics
/// With `HOOKLINE_TEST_STORE=postgres` but no `test-hooks` feature, or no PostgreSQL installed.
pub async fn postgres_url() -> Option<String> {
    if std::env::var("HOOKLINE_TEST_STORE").ok().as_deref() != Some("postgres") {
        return None;
    }
    #[cfg(feature = "test-hooks")]
    {
        let server = hookline::testing::postgres::server("HOOKLINE_TEST_STORE=postgres")
            .expect("HOOKLINE_TEST_STORE=postgres needs PostgreSQL's server binaries");
        Some(server.fresh_database().await)
    }
    #[cfg(not(feature = "test-hooks"))]
    panic!("HOOKLINE_TEST_STORE=postgres needs --features test-hooks")
}

/// `b` on the PostgreSQL database `url` (with the cluster's key), or unchanged.
pub fn on_store(b: EngineBuilder, url: Option<&str>) -> EngineBuilder {
    match url {
        Some(url) => b.postgres(url).secret_key(PG_KEY).node_id("it-node"),
        None => b,
    }
}

/// An engine on a real SQLite file in its own temporary directory (or a PostgreSQL database,
/// see the module docs), with tenant [`TENANT`].
/// Derefs to [`EngineHandle`].
#[derive(Debug)]
pub struct TestEngine {
    pub engine: EngineHandle,
    pub db: PathBuf,
    /// The PostgreSQL database the engine runs on instead of `db` (`HOOKLINE_TEST_STORE`).
    pub postgres: Option<String>,
    _dir: tempfile::TempDir,
}

impl Deref for TestEngine {
    type Target = EngineHandle;

    fn deref(&self) -> &EngineHandle {
        &self.engine
    }
}

impl TestEngine {
    /// An engine with [`builder`]'s settings and tenant [`TENANT`].
    pub async fn start() -> TestEngine {
        TestEngine::start_with(|b| b).await
    }

    /// An engine with [`builder`]'s settings changed by `tweak`, and tenant [`TENANT`].
    pub async fn start_with(tweak: impl FnOnce(EngineBuilder) -> EngineBuilder) -> TestEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("journal.db");
        let postgres = postgres_url().await;
        let engine = tweak(on_store(builder(&db), postgres.as_deref()))
            .build()
            .await
            .expect("engine starts");
        let t = TestEngine {
            engine,
            db,
            postgres,
            _dir: dir,
        };
        t.add_tenant(TENANT).await;
        t
    }

    /// Creates another tenant.
    pub async fn add_tenant(&self, id: &str) {
        self.engine
            .create_tenant(NewTenant {
                id: id.into(),
                name: format!("Tenant {id}"),
                rate_limit: None,
            })
            .await
            .expect("create tenant");
    }

    /// Creates a subscription.
    pub async fn subscribe(&self, n: NewSubscription) -> Subscription {
        self.engine
            .create_subscription(n)
            .await
            .expect("create subscription")
    }

    /// Publishes events in order, returning their ids.
    pub async fn publish_all(&self, events: impl IntoIterator<Item = EventInput>) -> Vec<String> {
        let mut ids = Vec::new();
        for e in events {
            let r = self.engine.publish(e).await.expect("publish");
            ids.push(r.id.to_string());
        }
        ids
    }

    /// Shuts the engine down and starts a new one on the same file ([`builder`]'s settings).
    pub async fn restart(&mut self) {
        self.engine.shutdown().await;
        self.engine = on_store(builder(&self.db), self.postgres.as_deref())
            .build()
            .await
            .expect("engine restarts on the same journal");
    }

    /// All deliveries of a subscription, in order.
    pub async fn deliveries(&self, sub: &SubscriptionId) -> Vec<Delivery> {
        self.engine
            .list_deliveries(sub, Default::default())
            .await
            .expect("list deliveries")
            .items
    }

    /// The delivery of event `event_id` to `sub`.
    pub async fn delivery_of(&self, sub: &SubscriptionId, event_id: &str) -> Delivery {
        self.deliveries(sub)
            .await
            .into_iter()
            .find(|d| d.event_id.as_str() == event_id)
            .unwrap_or_else(|| panic!("no delivery of {event_id} to {sub}"))
    }

    /// The delivery of `event_id` to `sub` with its attempt log.
    pub async fn detail_of(&self, sub: &SubscriptionId, event_id: &str) -> DeliveryDetail {
        let d = self.delivery_of(sub, event_id).await;
        self.engine.get_delivery(d.id).await.expect("get delivery")
    }

    /// Waits until the delivery of `event_id` to `sub` has `status`; returns it with its log.
    pub async fn wait_status(
        &self,
        sub: &SubscriptionId,
        event_id: &str,
        status: DeliveryStatus,
    ) -> DeliveryDetail {
        let what = format!("delivery of {event_id} to {sub} to be {status:?}");
        eventually(&what, WITHIN, || async {
            let d = self.detail_of(sub, event_id).await;
            (d.delivery.status == status).then_some(d)
        })
        .await
    }

    /// Waits until all `n` deliveries of `sub` are journaled `delivered` (a receiver records its
    /// 2xx a moment before the engine commits it); returns them.
    pub async fn wait_all_delivered(&self, sub: &SubscriptionId, n: usize) -> Vec<Delivery> {
        let what = format!("all {n} deliveries to {sub} to be journaled delivered");
        eventually(&what, WITHIN, || async {
            let all = self.deliveries(sub).await;
            (all.len() == n && all.iter().all(|d| d.status == DeliveryStatus::Delivered))
                .then_some(all)
        })
        .await
    }

    /// Waits until subscription `sub` is in `state`; returns it.
    pub async fn wait_state(&self, sub: &SubscriptionId, state: SubscriptionState) -> Subscription {
        let what = format!("subscription {sub} to be {state:?}");
        eventually(&what, WITHIN, || async {
            let s = self
                .engine
                .get_subscription(sub)
                .await
                .expect("get subscription");
            (s.state == state).then_some(s)
        })
        .await
    }
}

/// A `NODE_EVENT` of tenant [`TENANT`] with id `id`, transaction `tx-<id>` and payload
/// `{"id": id}`.
pub fn event(id: &str) -> EventInput {
    event_for(TENANT, id)
}

/// Like [`event`], for another tenant.
pub fn event_for(tenant: &str, id: &str) -> EventInput {
    EventInput::new(tenant, format!("tx-{id}"), NotificationType::NodeEvent)
        .id(id)
        .payload(serde_json::json!({ "id": id }))
}

/// `n` events `<prefix>-000`, `<prefix>-001`, ….
pub fn events(prefix: &str, n: usize) -> Vec<EventInput> {
    (0..n).map(|i| event(&format!("{prefix}-{i:03}"))).collect()
}

/// The ids of [`events`]`(prefix, n)`.
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Polls `f` every 10 ms until it yields `Some`, or panics after `within` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(receiver::POLL).await;
    }
}

/// Polls `f` every 10 ms until it is true, or panics after `within` naming `what`.
pub async fn eventually_true<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `f` every 10 ms for `window` and panics naming `what` the first time it is false.
pub async fn consistently<F, Fut>(what: &str, window: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + window;
    loop {
        assert!(
            f().await,
            "expected {what} to hold for {window:?}, but it broke"
        );
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(receiver::POLL).await;
    }
}

/// A URL whose port nothing listens on (bound, then released).
pub fn closed_port_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

/// Requests (of every outcome) never interleave: in arrival order, their ids never go back to
/// an earlier position of `order`, and every request's id is in `order`.
pub fn assert_never_interleaved(reqs: &[Recorded], order: &[String]) {
    let mut last = 0usize;
    for r in reqs {
        let pos = order
            .iter()
            .position(|e| e == r.webhook_id())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected request #{} for {:?}\n{}",
                    r.index,
                    r.webhook_id(),
                    dump(reqs)
                )
            });
        assert!(
            pos >= last,
            "request #{} for {} came after a request for the later {}\n{}",
            r.index,
            order[pos],
            order[last],
            dump(reqs)
        );
        last = pos;
    }
}

/// Guarantee 3 on what a receiver saw for one subscription (`reqs` filtered to it):
/// - only ids of `expected` were requested;
/// - the 2xx receipts, immediate repeats collapsed, are exactly `expected`;
/// - at most `max_dups` immediate repeats (a duplicate may only repeat the previous receipt);
/// - no request for `expected[k + 1]` arrived before `expected[k]`'s first 2xx was answered.
pub fn assert_strict_order(reqs: &[Recorded], expected: &[String], max_dups: usize) {
    for r in reqs {
        assert!(
            expected.iter().any(|e| e == r.webhook_id()),
            "unexpected request #{} for {:?}\n{}",
            r.index,
            r.webhook_id(),
            dump(reqs)
        );
    }
    let acked = delivered_ids(reqs);
    let mut collapsed: Vec<String> = Vec::new();
    let mut dups = 0;
    for id in acked {
        if collapsed.last() == Some(&id) {
            dups += 1;
        } else {
            collapsed.push(id);
        }
    }
    assert_eq!(
        collapsed,
        expected,
        "2xx receipts out of publish order\n{}",
        dump(reqs)
    );
    assert!(
        dups <= max_dups,
        "{dups} duplicate receipts, at most {max_dups} allowed\n{}",
        dump(reqs)
    );
    for pair in expected.windows(2) {
        let first_ok = reqs
            .iter()
            .find(|r| r.webhook_id() == pair[0] && r.answered_2xx())
            .expect("every expected id was answered 2xx");
        let answered = first_ok.answered_at.expect("answered");
        for r in reqs.iter().filter(|r| r.webhook_id() == pair[1]) {
            assert!(
                r.index > first_ok.index && r.at >= answered,
                "request #{} for {} arrived before {}'s 2xx (request #{}) was answered\n{}",
                r.index,
                pair[1],
                pair[0],
                first_ok.index,
                dump(reqs)
            );
        }
    }
}
