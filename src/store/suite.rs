//! One suite, two backends: every store-level test runs on a real SQLite file and on a real
//! PostgreSQL database (the test binary's throwaway server): fan-out and order, the hot outcome
//! path, recovery, lease fencing, typed refusals, replay, retention, and a model-based property
//! test of one queue. Tests of one implementation's internals stay beside it
//! (`sqlite/tests.rs`, `postgres/tests.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::sqlite::Journal;
use crate::domain::{
    DeliveryId, DeliveryStatus, Event, EventInput, NewSubscription, NotificationType, Principal,
    RetryPolicy, SubscriptionDefaults, SubscriptionId, SubscriptionSpec, TenantId, TransformRef,
};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::security::secretbox::{MasterKey, SecretBox};
use crate::security::ssrf::IpPolicy;
use crate::store::{
    AttemptRecord, Durability, FlagChange, Lease, NewTransformRow, Opened, Retention, SharedStore,
    StoreOptions,
};

pub(in crate::store) const KEY: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub(in crate::store) const WAIT: Duration = Duration::from_secs(5);

/// Where a test's store lives: a SQLite file in a temporary directory, or a fresh database on
/// the test binary's throwaway PostgreSQL server (see [`crate::testing::postgres`]).
pub(in crate::store) enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
    },
}

impl Backend {
    pub(in crate::store) fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.db");
        Backend::Sqlite { _dir: dir, path }
    }

    /// `None` (after a loud SKIPPED line) when PostgreSQL is not installed.
    pub(in crate::store) async fn postgres(test: &str) -> Option<Backend> {
        let server = crate::testing::postgres::server(test)?;
        Some(Backend::Postgres {
            url: server.fresh_database().await,
        })
    }

    /// Opens the store (as node `node-a` on PostgreSQL).
    pub(in crate::store) async fn open(&self) -> Opened {
        self.open_as("node-a").await
    }

    /// Opens the store as node `node` (PostgreSQL: several nodes may share the database).
    pub(in crate::store) async fn open_as(&self, node: &str) -> Opened {
        match self {
            Backend::Sqlite { path, .. } => open(path).await,
            Backend::Postgres { url } => {
                let pg = crate::store::postgres::PgOptions {
                    node_id: node.to_owned(),
                    lease_ttl: Duration::from_secs(30),
                };
                crate::store::postgres::PgStore::open(
                    url,
                    &options(),
                    sealer(),
                    Arc::new(Metrics::new(10)),
                    pg,
                )
                .await
                .expect("open the PostgreSQL store")
            }
        }
    }
}

pub(in crate::store) fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Os,
        reader_connections: 2,
        intake_queue: 64,
        commit_batch_max: 64,
    }
}

pub(in crate::store) fn sealer() -> SecretBox {
    SecretBox::new(MasterKey::parse(KEY).expect("key"))
}

pub(in crate::store) async fn open(path: &Path) -> Opened {
    Journal::open(path, &options(), sealer(), Arc::new(Metrics::new(10)))
        .await
        .expect("open journal")
}

pub(in crate::store) fn spec(types: &[NotificationType]) -> SubscriptionSpec {
    let defaults = SubscriptionDefaults {
        retry: RetryPolicy::default(),
        timeout_ms: 30_000,
        ip_policy: IpPolicy::new(Vec::new()),
    };
    let mut n = NewSubscription::new("t1", "https://example.com/hook");
    n.notification_types = types.to_vec();
    SubscriptionSpec::from_new(n, &defaults).expect("spec")
}

pub(in crate::store) fn event(tenant: &str, id: &str, ty: NotificationType) -> Event {
    EventInput::new(tenant, "tx", ty)
        .id(id)
        .validate()
        .expect("event")
}

pub(in crate::store) async fn tenant(store: &SharedStore, id: &str) -> TenantId {
    let id = TenantId::from(id);
    store
        .create_tenant(id.clone(), "T".into(), None, format!("hash-{id}"))
        .await
        .expect("tenant");
    id
}

pub(in crate::store) async fn subscription(
    store: &SharedStore,
    t: &TenantId,
    types: &[NotificationType],
) -> SubscriptionId {
    store
        .create_subscription(SubscriptionId::generate(), t.clone(), spec(types))
        .await
        .expect("subscription")
        .id
}

/// Publishes `ids` (WORKFLOW_EVENT) for tenant t1; panics on any refusal.
pub(in crate::store) async fn publish(store: &SharedStore, ids: &[&str]) {
    let events = ids
        .iter()
        .map(|id| event("t1", id, NotificationType::WorkflowEvent))
        .collect();
    for r in store.publish(events, WAIT).await.expect("publish") {
        r.expect("receipt");
    }
}

pub(in crate::store) async fn open_ids(
    store: &SharedStore,
    sub: &SubscriptionId,
) -> Vec<DeliveryId> {
    store
        .next_deliveries(sub, 0, 1000)
        .await
        .expect("queue")
        .iter()
        .map(|d| d.id)
        .collect()
}

pub(in crate::store) async fn status(store: &SharedStore, id: DeliveryId) -> DeliveryStatus {
    store
        .get_delivery(id)
        .await
        .expect("read")
        .expect("delivery exists")
        .status
}

pub(in crate::store) fn outcome(
    sub: &SubscriptionId,
    delivery: DeliveryId,
    n: u32,
    new_status: DeliveryStatus,
) -> AttemptRecord {
    AttemptRecord {
        delivery,
        subscription: sub.clone(),
        n,
        started_at: crate::domain::clock::now_ms(),
        duration_ms: 3,
        status_code: Some(if new_status == DeliveryStatus::Delivered {
            200
        } else {
            500
        }),
        error_kind: None,
        error: None,
        snippet: None,
        transform_log: None,
        new_status,
        budget_used: n,
        next_at: None,
        flags: None,
        next_in_flight: None,
        holds_key: false,
        notices: Vec::new(),
    }
}

/// Sends one attempt through the queue: marked in flight, then its outcome recorded.
pub(in crate::store) async fn attempt(
    store: &SharedStore,
    lease: &Lease,
    delivery: DeliveryId,
    n: u32,
    to: DeliveryStatus,
) {
    let at = crate::domain::clock::now_ms();
    store
        .mark_in_flight(lease, delivery, n, at)
        .await
        .expect("mark");
    store
        .record_attempt(lease, outcome(lease.subscription(), delivery, n, to))
        .await
        .expect("record");
}

/// For each suite test `name`, a module `name` with one test per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(b) = super::Backend::postgres(stringify!($name)).await {
                    super::$name(b).await
                }
            }
        }
    )*};
}

on_both_backends!(
    publish_fans_out_to_matching_subscriptions_in_seq_order_and_wakes_them,
    an_outcome_and_the_next_in_flight_mark_commit_together,
    reopening_logs_attempts_left_in_flight_as_interrupted,
    a_stale_lease_is_fenced_and_writes_nothing,
    refusals_are_typed_and_touch_nothing_else,
    replay_reopens_finished_deliveries_and_retention_prunes_only_finished_events,
    a_closed_journal_refuses_writes,
    ordering_keys_are_stored_at_fan_out_and_heads_skip_a_keys_later_events,
    a_record_that_ends_a_keys_head_reads_the_keys_next_delivery,
    an_outcomes_notifications_commit_with_it_and_fan_out,
    an_api_keys_hash_names_its_principal,
);

/// The lookup behind every authenticated API request: a tenant's key hash names the tenant,
/// the stored admin key's the admin, anything else nobody; a key added after the read is
/// found by the next one (SQLite reads it on an inline reader, not sqlx's pool).
async fn an_api_keys_hash_names_its_principal(f: Backend) {
    let store = f.open().await.store;
    assert_eq!(
        store.principal_for_key_hash("hash-t1").await.expect("read"),
        None
    );
    let t = tenant(&store, "t1").await;
    assert_eq!(
        store.principal_for_key_hash("hash-t1").await.expect("read"),
        Some(Principal::Tenant(t))
    );
    assert!(!store.has_admin_key().await.expect("read"));
    store
        .insert_admin_key("admin-hash".into())
        .await
        .expect("admin key");
    assert_eq!(
        store
            .principal_for_key_hash("admin-hash")
            .await
            .expect("read"),
        Some(Principal::Admin)
    );
    assert!(store.has_admin_key().await.expect("read"));
    for other in ["", "hash-t2", "admin-hash ", "HASH-T1"] {
        assert_eq!(
            store.principal_for_key_hash(other).await.expect("read"),
            None,
            "{other:?}"
        );
    }
    store.close().await;
}

async fn publish_fans_out_to_matching_subscriptions_in_seq_order_and_wakes_them(f: Backend) {
    let Opened {
        store, mut wakes, ..
    } = f.open().await;
    let t = tenant(&store, "t1").await;
    let all = subscription(&store, &t, &[]).await;
    let cases = subscription(&store, &t, &[NotificationType::CaseEvent]).await;

    let receipts = store
        .publish(
            vec![
                event("t1", "e1", NotificationType::WorkflowEvent),
                event("t1", "e2", NotificationType::CaseEvent),
                event("nobody", "e3", NotificationType::CaseEvent),
            ],
            WAIT,
        )
        .await
        .expect("publish");
    let r1 = receipts[0].as_ref().expect("e1 accepted");
    let r2 = receipts[1].as_ref().expect("e2 accepted");
    assert_eq!((r1.deliveries, r2.deliveries), (1, 2));
    assert!(r1.seq < r2.seq, "seq follows arrival order");
    assert!(matches!(
        receipts[2],
        Err(Error::NotFound { kind: "tenant", .. })
    ));

    let mut woken = wakes.recv().await.expect("wakes");
    woken.sort();
    let mut expected = vec![all.clone(), cases.clone()];
    expected.sort();
    assert_eq!(
        woken, expected,
        "each subscription with new deliveries is woken once"
    );

    // seq is per subscription (or global): only its order within the subscription counts.
    let queue = store.next_deliveries(&all, 0, 10).await.expect("queue");
    let events: Vec<&str> = queue.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(events, ["e1", "e2"]);
    assert!(queue[0].seq < queue[1].seq);
    let after = store
        .next_deliveries(&all, queue[0].seq, 10)
        .await
        .expect("after");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event_id.as_str(), "e2");
    assert_eq!(open_ids(&store, &cases).await.len(), 1);

    // Publishing the same id again creates nothing and reports the first receipt.
    let again = store
        .publish(
            vec![event("t1", "e1", NotificationType::WorkflowEvent)],
            WAIT,
        )
        .await
        .expect("publish");
    let dup = again[0].as_ref().expect("duplicate accepted");
    assert!(dup.duplicate);
    assert_eq!((dup.seq, dup.deliveries), (r1.seq, 1));
    assert_eq!(open_ids(&store, &all).await.len(), 2);
    store.close().await;
}

async fn an_outcome_and_the_next_in_flight_mark_commit_together(f: Backend) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    publish(&store, &["e1", "e2"]).await;
    let ids = open_ids(&store, &sub).await;
    let lease = store.acquire(&sub).await.expect("lease");
    let at = crate::domain::clock::now_ms();
    store
        .mark_in_flight(&lease, ids[0], 1, at)
        .await
        .expect("mark");
    let mut rec = outcome(&sub, ids[0], 1, DeliveryStatus::Delivered);
    rec.next_in_flight = Some((ids[1], 1, at));
    store.record_attempt(&lease, rec).await.expect("record");

    assert_eq!(status(&store, ids[0]).await, DeliveryStatus::Delivered);
    let next = store
        .get_delivery(ids[1])
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((next.status, next.attempts), (DeliveryStatus::InFlight, 1));
    let log = store.attempts(ids[0]).await.expect("attempts");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status_code, Some(200));
    assert_eq!(open_ids(&store, &sub).await, vec![ids[1]]);

    // An outcome with flags goes the long way and changes the subscription in the same commit.
    let mut rec = outcome(&sub, ids[1], 1, DeliveryStatus::Failed);
    rec.flags = Some(FlagChange {
        blocked_on: Some(Some(ids[1].raw())),
        ..FlagChange::default()
    });
    store.record_attempt(&lease, rec).await.expect("record");
    let row = store
        .get_subscription(&sub)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(row.blocked_on, Some(ids[1].raw()));
    assert_eq!(status(&store, ids[1]).await, DeliveryStatus::Failed);
    store.close().await;
}

async fn reopening_logs_attempts_left_in_flight_as_interrupted(f: Backend) {
    let sub = {
        let store = f.open().await.store;
        let t = tenant(&store, "t1").await;
        let sub = subscription(&store, &t, &[]).await;
        publish(&store, &["e1", "e2"]).await;
        let ids = open_ids(&store, &sub).await;
        let lease = store.acquire(&sub).await.expect("lease");
        store
            .mark_in_flight(&lease, ids[0], 1, crate::domain::clock::now_ms())
            .await
            .expect("mark");
        store.close().await;
        sub
    };
    let Opened {
        store, recovery, ..
    } = f.open().await;
    assert_eq!(recovery.interrupted, 1);
    assert_eq!(recovery.open_subscriptions, vec![sub.clone()]);
    let ids = open_ids(&store, &sub).await;
    assert_eq!(ids.len(), 2, "both deliveries are open again");
    let d = store
        .get_delivery(ids[0])
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 1));
    let log = store.attempts(ids[0]).await.expect("attempts");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].error_kind.as_deref(), Some("interrupted"));
    // The queue still resumes in order: the interrupted delivery is the head.
    let queue = store.next_deliveries(&sub, 0, 10).await.expect("queue");
    assert_eq!((queue[0].id, queue[0].attempts), (ids[0], 1));
    store.close().await;
}

async fn a_stale_lease_is_fenced_and_writes_nothing(f: Backend) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    publish(&store, &["e1", "e2"]).await;
    let ids = open_ids(&store, &sub).await;

    let old = store.acquire(&sub).await.expect("lease");
    store
        .mark_in_flight(&old, ids[0], 1, crate::domain::clock::now_ms())
        .await
        .expect("mark");
    let new = store.acquire(&sub).await.expect("lease");
    assert!(new.token() > old.token(), "tokens only grow");
    // Acquiring took over the old holder's attempt: logged as interrupted, delivery pending.
    assert_eq!(status(&store, ids[0]).await, DeliveryStatus::Pending);
    assert_eq!(store.attempts(ids[0]).await.expect("attempts").len(), 1);

    let fenced = |r: crate::error::Result<()>| matches!(r, Err(Error::LeaseLost { .. }));
    let late = outcome(&sub, ids[0], 1, DeliveryStatus::Delivered);
    assert!(fenced(store.record_attempt(&old, late).await));
    let mut flagged = outcome(&sub, ids[0], 1, DeliveryStatus::Failed);
    flagged.flags = Some(FlagChange {
        paused: Some(true),
        ..FlagChange::default()
    });
    assert!(fenced(store.record_attempt(&old, flagged).await));
    assert!(fenced(
        store
            .set_delivery_status(&old, ids[1], DeliveryStatus::Skipped, false, false)
            .await
    ));
    assert!(matches!(
        store.replay(&old, 0, i64::MAX).await,
        Err(Error::LeaseLost { .. })
    ));
    let pause = FlagChange {
        paused: Some(true),
        ..FlagChange::default()
    };
    assert!(matches!(
        store.set_queue_flags(&old, pause.clone()).await,
        Err(Error::LeaseLost { .. })
    ));
    // SQLite does not wait for it (only its effect can be checked: none); PostgreSQL does and
    // reports the refusal.
    let late_mark = store
        .mark_in_flight(&old, ids[1], 1, crate::domain::clock::now_ms())
        .await;
    assert!(late_mark.is_ok() || fenced(late_mark));

    // The new holder's write commits after all of the above: nothing of the old one's landed.
    let row = store.set_queue_flags(&new, pause).await.expect("pause");
    assert!(row.paused);
    for id in &ids {
        assert_eq!(status(&store, *id).await, DeliveryStatus::Pending);
    }
    assert_eq!(
        store.attempts(ids[0]).await.expect("attempts").len(),
        1,
        "only the interrupted one"
    );
    assert_eq!(store.attempts(ids[1]).await.expect("attempts").len(), 0);
    attempt(&store, &new, ids[0], 2, DeliveryStatus::Delivered).await;
    assert_eq!(status(&store, ids[0]).await, DeliveryStatus::Delivered);

    // A deleted subscription's lease is gone with it.
    store
        .delete_subscription(sub.clone())
        .await
        .expect("delete");
    assert!(fenced(
        store
            .set_delivery_status(&new, ids[1], DeliveryStatus::Skipped, false, false)
            .await
    ));
    store.close().await;
}

async fn refusals_are_typed_and_touch_nothing_else(f: Backend) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let dup = store
        .create_tenant(t.clone(), "again".into(), None, "another-hash".into())
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    let nobody = store
        .create_subscription(
            SubscriptionId::generate(),
            TenantId::from("nobody"),
            spec(&[]),
        )
        .await;
    assert!(matches!(
        nobody,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    let ghost = SubscriptionId::from("sub_ghost");
    assert!(matches!(
        store.set_flags(ghost.clone(), FlagChange::default()).await,
        Err(Error::NotFound {
            kind: "subscription",
            ..
        })
    ));
    assert!(matches!(
        store.delete_subscription(ghost.clone()).await,
        Err(Error::NotFound {
            kind: "subscription",
            ..
        })
    ));
    assert!(matches!(
        store
            .set_tenant_rate_limit(TenantId::from("nobody"), None)
            .await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    let mut bound = spec(&[]);
    bound.transform = Some(TransformRef {
        name: "shape".into(),
        version: 1,
    });
    let unbound = store
        .create_subscription(SubscriptionId::generate(), t.clone(), bound.clone())
        .await;
    assert!(matches!(unbound, Err(Error::Invalid { .. })), "{unbound:?}");

    let row = |sha: &str| NewTransformRow {
        tenant: t.clone(),
        name: "shape".into(),
        sha256: sha.into(),
        wasm: vec![0, 97, 115, 109],
        artifact: None,
        at: crate::domain::clock::now_ms(),
    };
    let (v1, created) = store.insert_transform(row("aa")).await.expect("v1");
    assert!(created && v1.version == 1);
    let (same, created) = store.insert_transform(row("aa")).await.expect("same bytes");
    assert!(!created && same.version == 1);
    assert_eq!(
        store
            .insert_transform(row("bb"))
            .await
            .expect("v2")
            .0
            .version,
        2
    );
    let sub = store
        .create_subscription(SubscriptionId::generate(), t.clone(), bound)
        .await
        .expect("bound subscription");
    assert!(matches!(
        store.delete_transform(t.clone(), "shape".into()).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.list_transform_versions(&t).await.expect("list").len(),
        2
    );
    assert_eq!(
        store.list_subscriptions(Some(&t)).await.expect("list")[0].id,
        sub.id,
        "the refused writes left the tenant as it was"
    );
    store.close().await;
}

async fn replay_reopens_finished_deliveries_and_retention_prunes_only_finished_events(f: Backend) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    publish(&store, &["e1", "e2"]).await;
    let ids = open_ids(&store, &sub).await;
    let lease = store.acquire(&sub).await.expect("lease");
    attempt(&store, &lease, ids[0], 1, DeliveryStatus::Delivered).await;

    assert_eq!(store.replay(&lease, 0, i64::MAX).await.expect("replay"), 1);
    let d = store
        .get_delivery(ids[0])
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (d.status, d.attempts),
        (DeliveryStatus::Pending, 1),
        "same row, log kept"
    );
    assert_eq!(
        open_ids(&store, &sub).await,
        ids,
        "back in its place in the order"
    );

    let now = Retention {
        delivered_after: Duration::ZERO,
        failed_after: Duration::ZERO,
        ..Retention::default()
    };
    // Pending events are never pruned; a brief pause lets `updated_at` fall behind the cutoff.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.prune(&now).await.expect("prune"), 0);
    attempt(&store, &lease, ids[0], 2, DeliveryStatus::Delivered).await;
    store
        .set_delivery_status(&lease, ids[1], DeliveryStatus::Skipped, false, false)
        .await
        .expect("skip");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.prune(&now).await.expect("prune"), 2);
    assert!(store.get_delivery(ids[0]).await.expect("read").is_none());
    assert!(store.attempts(ids[0]).await.expect("attempts").is_empty());
    assert!(store.queue_stats().await.expect("stats").is_empty());
    store.close().await;
}

async fn a_closed_journal_refuses_writes(f: Backend) {
    let store = f.open().await.store;
    store.close().await;
    assert!(matches!(
        store.insert_admin_key("h".into()).await,
        Err(Error::ShuttingDown)
    ));
}

// ---- a queue against a model ---------------------------------------------------------------

/// What the subscription's holder (or an operator through it) does next.
#[derive(Debug, Clone)]
enum QueueOp {
    Publish(u8),
    /// The head's attempt ends with this status (Delivered, Pending for a retry, Failed).
    Attempt(DeliveryStatus),
    Skip(usize),
    Resubmit(usize),
    Replay,
    /// A restarted actor takes the queue over.
    Reacquire,
}

fn queue_op() -> impl Strategy<Value = QueueOp> {
    prop_oneof![
        (1u8..4).prop_map(QueueOp::Publish),
        prop_oneof![
            Just(DeliveryStatus::Delivered),
            Just(DeliveryStatus::Pending),
            Just(DeliveryStatus::Failed),
        ]
        .prop_map(QueueOp::Attempt),
        (0usize..12).prop_map(QueueOp::Skip),
        (0usize..12).prop_map(QueueOp::Resubmit),
        Just(QueueOp::Replay),
        Just(QueueOp::Reacquire),
    ]
}

/// The model: every delivery of the subscription in `seq` order, with its status and attempts.
#[derive(Debug, Default)]
struct Model {
    deliveries: Vec<(DeliveryStatus, u32)>,
}

impl Model {
    fn open(&self) -> Vec<usize> {
        (0..self.deliveries.len())
            .filter(|i| self.deliveries[*i].0 == DeliveryStatus::Pending)
            .collect()
    }
}

async fn run_queue(f: Backend, ops: Vec<QueueOp>) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    let mut lease = store.acquire(&sub).await.expect("lease");
    let mut model = Model::default();
    let mut ids: Vec<DeliveryId> = Vec::new();
    let mut published = 0;
    for op in ops {
        match op {
            QueueOp::Publish(k) => {
                let names: Vec<String> = (0..k)
                    .map(|_| {
                        published += 1;
                        format!("e{published}")
                    })
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                publish(&store, &refs).await;
                let all = store
                    .list_deliveries(&sub, &Default::default())
                    .await
                    .expect("list");
                ids = all.items.iter().map(|d| d.id).collect();
                model
                    .deliveries
                    .resize(ids.len(), (DeliveryStatus::Pending, 0));
            }
            QueueOp::Attempt(to) => {
                let Some(&head) = model.open().first() else {
                    continue;
                };
                let n = model.deliveries[head].1 + 1;
                attempt(&store, &lease, ids[head], n, to).await;
                model.deliveries[head] = (to, n);
            }
            QueueOp::Skip(i) if i < ids.len() => {
                let r = store
                    .set_delivery_status(&lease, ids[i], DeliveryStatus::Skipped, false, true)
                    .await;
                r.expect("skip");
                model.deliveries[i].0 = DeliveryStatus::Skipped;
            }
            QueueOp::Resubmit(i) if i < ids.len() => {
                store
                    .set_delivery_status(&lease, ids[i], DeliveryStatus::Pending, true, true)
                    .await
                    .expect("resubmit");
                model.deliveries[i].0 = DeliveryStatus::Pending;
            }
            QueueOp::Skip(_) | QueueOp::Resubmit(_) => {}
            QueueOp::Replay => {
                let n = store.replay(&lease, 0, i64::MAX).await.expect("replay");
                let finished = model
                    .deliveries
                    .iter()
                    .filter(|d| d.0 != DeliveryStatus::Pending)
                    .count();
                assert_eq!(n as usize, finished);
                for d in &mut model.deliveries {
                    d.0 = DeliveryStatus::Pending;
                }
            }
            QueueOp::Reacquire => {
                let stale = lease;
                lease = store.acquire(&sub).await.expect("lease");
                assert!(matches!(
                    store.replay(&stale, 0, i64::MAX).await,
                    Err(Error::LeaseLost { .. })
                ));
            }
        }
        let open: Vec<DeliveryId> = model.open().into_iter().map(|i| ids[i]).collect();
        assert_eq!(
            open_ids(&store, &sub).await,
            open,
            "the queue is the model's, in order"
        );
        let page = store
            .list_deliveries(&sub, &Default::default())
            .await
            .expect("list");
        let got: Vec<(DeliveryStatus, u32)> =
            page.items.iter().map(|d| (d.status, d.attempts)).collect();
        assert_eq!(got, model.deliveries);
    }
    store.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_queue_follows_its_model(ops in proptest::collection::vec(queue_op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run_queue(Backend::sqlite(), ops));
    }

    #[test]
    fn a_queue_follows_its_model_on_postgres(ops in proptest::collection::vec(queue_op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            if let Some(b) = Backend::postgres("a_queue_follows_its_model").await {
                run_queue(b, ops).await;
            }
        });
    }
}

/// Publishes one WORKFLOW_EVENT of tenant t1 per `(id, transactionId)`.
pub(in crate::store) async fn publish_keyed(store: &SharedStore, events: &[(&str, &str)]) {
    let events = events
        .iter()
        .map(|(id, tx)| {
            EventInput::new("t1", *tx, NotificationType::WorkflowEvent)
                .id(*id)
                .validate()
                .expect("event")
        })
        .collect();
    for r in store.publish(events, WAIT).await.expect("publish") {
        r.expect("receipt");
    }
}

async fn heads(store: &SharedStore, sub: &SubscriptionId) -> Vec<DeliveryId> {
    let found = store.next_heads(sub, 0, 100).await.expect("heads");
    found.iter().map(|d| d.id).collect()
}

async fn ordering_keys_are_stored_at_fan_out_and_heads_skip_a_keys_later_events(f: Backend) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let plain = subscription(&store, &t, &[]).await;
    let mut keyed_spec = spec(&[]);
    keyed_spec.ordering = Some(crate::domain::Ordering {
        key: "/transactionId".into(),
        lanes: 4,
    });
    let keyed = store
        .create_subscription(SubscriptionId::generate(), t.clone(), keyed_spec.clone())
        .await
        .expect("subscription")
        .id;
    publish_keyed(
        &store,
        &[
            ("e1", "T1"),
            ("e2", "T2"),
            ("e3", "T1"),
            ("e4", "T3"),
            ("e5", "T2"),
        ],
    )
    .await;

    // Keys are the value's JSON text; a subscription without ordering gets none.
    let queued = store.next_deliveries(&keyed, 0, 10).await.expect("queue");
    let keys: Vec<Option<&str>> = queued.iter().map(|d| d.order_key.as_deref()).collect();
    let want = ["\"T1\"", "\"T2\"", "\"T1\"", "\"T3\"", "\"T2\""];
    assert_eq!(keys, want.map(Some));
    let plain_q = store.next_deliveries(&plain, 0, 10).await.expect("queue");
    assert!(plain_q.iter().all(|d| d.order_key.is_none()));
    let e: Vec<DeliveryId> = queued.iter().map(|d| d.id).collect();
    assert_eq!(
        heads(&store, &keyed).await,
        [e[0], e[1], e[3]],
        "one head per key"
    );
    assert_eq!(
        heads(&store, &plain).await.len(),
        5,
        "NULL keys have no group: each is a barrier for the caller"
    );
    let after_first = store
        .next_heads(&keyed, queued[1].seq, 100)
        .await
        .expect("heads");
    assert_eq!(after_first.iter().map(|d| d.id).collect::<Vec<_>>(), [e[3]]);

    // The head of T1 ends: the next of its key follows.
    let lease = store.acquire(&keyed).await.expect("lease");
    attempt(&store, &lease, e[0], 1, DeliveryStatus::Delivered).await;
    let next = store
        .next_in_group(&keyed, 0, "\"T1\"", queued[0].seq)
        .await
        .expect("read")
        .expect("e3 follows e1");
    assert_eq!(next.id, e[2]);
    assert_eq!(heads(&store, &keyed).await, [e[1], e[2], e[3]]);

    // T2's head fails holding its key: only T2 waits, and the hold is visible.
    let mut rec = outcome(&keyed, e[1], 1, DeliveryStatus::Failed);
    rec.holds_key = true;
    store.record_attempt(&lease, rec).await.expect("record");
    assert_eq!(
        heads(&store, &keyed).await,
        [e[2], e[3]],
        "e5 waits behind e2"
    );
    let held = store.held_keys(&keyed).await.expect("held");
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].delivery, &*held[0].order_key, held[0].order_epoch),
        (e[1], "\"T2\"", 0)
    );
    assert_eq!(
        store.held_key_counts().await.expect("counts"),
        [(keyed.as_str().to_owned(), 1)],
        "the lists' count of held keys"
    );
    let behind = store
        .next_in_group(&keyed, 0, "\"T2\"", 0)
        .await
        .expect("read")
        .expect("the holding delivery");
    assert!(behind.id == e[1] && behind.holds_key);
    // Skipping it ends the hold; T2 moves on.
    store
        .set_delivery_status(&lease, e[1], DeliveryStatus::Skipped, false, false)
        .await
        .expect("skip");
    assert!(store.held_keys(&keyed).await.expect("held").is_empty());
    assert!(store.held_key_counts().await.expect("counts").is_empty());
    assert_eq!(heads(&store, &keyed).await, [e[2], e[3], e[4]]);

    // A changed key starts a new epoch; removing ordering gives NULL keys again.
    let mut other = keyed_spec.clone();
    other.ordering = Some(crate::domain::Ordering {
        key: "/payLoad/loanId".into(),
        lanes: 4,
    });
    other.order_epoch = 1;
    store
        .update_spec(keyed.clone(), other.clone())
        .await
        .expect("update");
    publish_keyed(&store, &[("e6", "T1")]).await;
    let mut none = other.clone();
    none.ordering = None;
    none.order_epoch = 2;
    store
        .update_spec(keyed.clone(), none)
        .await
        .expect("update");
    publish_keyed(&store, &[("e7", "T1")]).await;
    let queued = store.next_deliveries(&keyed, 0, 10).await.expect("queue");
    let tail: Vec<(Option<&str>, u32)> = queued
        .iter()
        .skip(3)
        .map(|d| (d.order_key.as_deref(), d.order_epoch))
        .collect();
    assert_eq!(
        tail,
        [(Some(""), 1), (None, 2)],
        "no loanId: the no-key sequence"
    );
    store.close().await;
}

/// `record_attempt_following`: the record commits as `record_attempt` would, and the read
/// answers what `next_in_group` answers after that commit (SQLite makes it on the writer's
/// connection, PostgreSQL with a second call); nothing is read for a refused record or when
/// no read is asked for.
async fn a_record_that_ends_a_keys_head_reads_the_keys_next_delivery(f: Backend) {
    let store = f.open().await.store;
    let t = tenant(&store, "t1").await;
    let mut keyed_spec = spec(&[]);
    keyed_spec.ordering = Some(crate::domain::Ordering {
        key: "/transactionId".into(),
        lanes: 4,
    });
    let keyed = store
        .create_subscription(SubscriptionId::generate(), t.clone(), keyed_spec)
        .await
        .expect("subscription")
        .id;
    publish_keyed(&store, &[("e1", "T1"), ("e2", "T2"), ("e3", "T1")]).await;
    let queued = store.next_deliveries(&keyed, 0, 10).await.expect("queue");
    let e: Vec<DeliveryId> = queued.iter().map(|d| d.id).collect();
    let key = queued[0].order_key.clone().expect("keyed");
    let follow = |after: i64| crate::store::KeyFollow {
        order_epoch: 0,
        order_key: key.clone(),
        after_seq: after,
    };
    let lease = store.acquire(&keyed).await.expect("lease");
    let at = crate::domain::clock::now_ms();
    store
        .mark_in_flight(&lease, e[0], 1, at)
        .await
        .expect("mark");

    // With another key's head marked in flight in the same commit, as the actor does.
    let mut rec = outcome(&keyed, e[0], 1, DeliveryStatus::Delivered);
    rec.next_in_flight = Some((e[1], 1, at));
    let (result, next) = store
        .record_attempt_following(&lease, rec, Some(follow(queued[0].seq)))
        .await;
    result.expect("recorded");
    let next = next.expect("asked").expect("read").expect("e3 follows e1");
    assert_eq!((next.id, next.order_key.as_deref()), (e[2], Some("\"T1\"")));
    let marked = store.get_delivery(e[1]).await.expect("read").expect("e2");
    assert_eq!(
        marked.status,
        DeliveryStatus::InFlight,
        "e2 marked with the record"
    );
    assert_eq!(
        heads(&store, &keyed).await,
        [e[1], e[2]],
        "e1 is no longer open"
    );

    // The last of its key: nothing follows. No read asked: none made.
    store
        .mark_in_flight(&lease, e[2], 1, at)
        .await
        .expect("mark");
    let rec = outcome(&keyed, e[2], 1, DeliveryStatus::Delivered);
    let (result, next) = store
        .record_attempt_following(&lease, rec, Some(follow(queued[2].seq)))
        .await;
    result.expect("recorded");
    assert!(next.expect("asked").expect("read").is_none());
    store
        .mark_in_flight(&lease, e[1], 1, at)
        .await
        .expect("mark");
    let rec = outcome(&keyed, e[1], 1, DeliveryStatus::Delivered);
    let (result, next) = store.record_attempt_following(&lease, rec, None).await;
    result.expect("recorded");
    assert!(next.is_none());

    // A fenced record writes nothing and reads nothing.
    publish_keyed(&store, &[("e4", "T1"), ("e5", "T1")]).await;
    let stale = lease.clone();
    let newer = store.acquire(&keyed).await.expect("lease");
    assert!(newer.token() > stale.token());
    let e4 = store.next_deliveries(&keyed, 0, 10).await.expect("queue")[0].clone();
    let rec = outcome(&keyed, e4.id, 1, DeliveryStatus::Delivered);
    let (result, next) = store
        .record_attempt_following(&stale, rec, Some(follow(queued[2].seq)))
        .await;
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
    assert!(next.is_none());
    assert_eq!(heads(&store, &keyed).await, [e4.id], "e4 still open");
    store.close().await;
}

/// Operational notifications (`notify`) ride on the outcome's commit: the system tenant's
/// event and its deliveries to the matching receivers exist once the record answers, on both
/// plain outcomes and outcomes with flags, and receivers are woken. Without a system tenant
/// the notice is dropped and the outcome still records.
async fn an_outcomes_notifications_commit_with_it_and_fan_out(f: Backend) {
    use crate::notify::{self, About, Attempted, NoticeKind, SYSTEM_TENANT};
    let Opened {
        store, mut wakes, ..
    } = f.open().await;
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    publish(&store, &["e1", "e2", "e3"]).await;
    let _ = wakes.recv().await;
    let ids = open_ids(&store, &sub).await;
    let lease = store.acquire(&sub).await.expect("lease");
    let url = "https://example.com/hook".to_string();
    let body =
        serde_json::to_string(&event("t1", "e1", NotificationType::WorkflowEvent)).expect("json");
    let e1 = crate::domain::EventId::from("e1");
    let notice = |kind, d: DeliveryId| {
        let a = Attempted {
            delivery: d,
            attempt: 1,
            status: "failed",
            http_status: Some(404),
            error_kind: None,
            error: None,
            event_id: &e1,
            notification_type: NotificationType::WorkflowEvent,
            body: &body,
        };
        let about = About {
            tenant: &t,
            subscription: &sub,
            url: &url,
        };
        notify::notice(kind, about, Some(&a), None, 0)
    };

    // No system tenant yet: the outcome records, the notice is dropped.
    let mut rec = outcome(&sub, ids[0], 1, DeliveryStatus::Failed);
    rec.notices = vec![notice(NoticeKind::Exhausted, ids[0])];
    store.record_attempt(&lease, rec).await.expect("record");
    assert_eq!(status(&store, ids[0]).await, DeliveryStatus::Failed);

    let system = tenant(&store, SYSTEM_TENANT).await;
    let mut every = spec(&[NotificationType::OperationalEvent]);
    every.on_failure = crate::domain::FailurePolicy::Skip;
    let ops = store
        .create_subscription(SubscriptionId::generate(), system.clone(), every)
        .await
        .expect("operator receiver")
        .id;
    let mut only_t2 = spec(&[NotificationType::OperationalEvent]);
    only_t2.workflow_ids = vec!["t2".into()];
    let other = store
        .create_subscription(SubscriptionId::generate(), system.clone(), only_t2)
        .await
        .expect("another tenant's receiver")
        .id;

    // A plain outcome (no flags) with a notice, then one with flags.
    let mut rec = outcome(&sub, ids[1], 1, DeliveryStatus::Failed);
    rec.notices = vec![notice(NoticeKind::Exhausted, ids[1])];
    store.record_attempt(&lease, rec).await.expect("record");
    let mut rec = outcome(&sub, ids[2], 1, DeliveryStatus::Failed);
    rec.flags = Some(FlagChange {
        blocked_on: Some(Some(ids[2].raw())),
        ..FlagChange::default()
    });
    rec.notices = vec![notice(NoticeKind::Blocked, ids[2])];
    store.record_attempt(&lease, rec).await.expect("record");

    let queued = store.next_deliveries(&ops, 0, 10).await.expect("queue");
    let got: Vec<String> = queued.iter().map(|d| d.event_id.to_string()).collect();
    let want = [
        format!("ntf_exhausted_{}_1", ids[1].raw()),
        format!("ntf_blocked_{}_1", ids[2].raw()),
    ];
    assert_eq!(
        got, want,
        "the operator's receiver gets both, in commit order"
    );
    assert_eq!(
        queued[1].notification_type,
        NotificationType::OperationalEvent
    );
    assert!(
        open_ids(&store, &other).await.is_empty(),
        "a receiver filtered on another tenant gets nothing"
    );
    let row = store
        .get_subscription(&sub)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(row.blocked_on, Some(ids[2].raw()));
    let mut woken = Vec::new();
    while let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(200), wakes.recv()).await {
        woken.extend(w);
    }
    assert!(woken.contains(&ops), "the receiver is woken: {woken:?}");

    // The dashboard's newest notifications: newest first, each with its delivery to the
    // receivers; about one tenant's subscriptions only when asked.
    let newest = store.recent_notifications(None, 10).await.expect("recent");
    let got: Vec<&str> = newest.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, [want[1].as_str(), want[0].as_str()]);
    assert_eq!(newest[0].tenant_id.as_str(), SYSTEM_TENANT);
    assert_eq!(newest[0].transaction_id, sub.as_str());
    let to: Vec<&SubscriptionId> = newest[0]
        .deliveries
        .iter()
        .map(|d| &d.subscription_id)
        .collect();
    assert_eq!(to, [&ops]);
    let one = store.recent_notifications(None, 1).await.expect("recent");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id.as_str(), want[1]);
    let about_t1 = store
        .recent_notifications(Some(&t), 10)
        .await
        .expect("about t1");
    assert_eq!(about_t1.len(), 2);
    let about_t2 = store
        .recent_notifications(Some(&TenantId::from("t2")), 10)
        .await
        .expect("about t2");
    assert!(about_t2.is_empty(), "none is about t2: {about_t2:?}");
    store.close().await;
}
