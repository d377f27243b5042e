//! The journal's own internals, against a real SQLite file: a batch that SQLite fails is
//! replayed one operation per transaction, a writer command stays small, promises are answered
//! through the sync thread under `Durability::Fsync`, and the WAL stays bounded under a steady
//! stream of writes. The store-level behaviour (shared with PostgreSQL) is tested by
//! `store::suite` on both backends.

use std::sync::Arc;

use crate::domain::NotificationType;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::suite::{
    Backend, WAIT, event, open_ids, options, outcome, publish, publish_keyed, sealer, spec,
    subscription, tenant,
};
use crate::store::{Durability, StoreOptions};

/// Opens the journal at `path` with durability `fsync` (the suite uses `os`).
async fn open_fsync(path: &std::path::Path, metrics: Arc<Metrics>) -> crate::store::SharedStore {
    let cfg = StoreOptions {
        durability: Durability::Fsync,
        ..options()
    };
    super::Journal::open(path, &cfg, sealer(), metrics)
        .await
        .expect("open journal")
        .store
}

#[tokio::test]
async fn a_failed_batch_is_replayed_one_by_one_and_fails_only_the_bad_write() {
    let f = Backend::sqlite();
    let store = f.open().await.store;
    let Backend::Sqlite { path, .. } = &f else {
        unreachable!("a SQLite backend")
    };
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    // A write SQLite itself refuses (as a full disk would), out of reach of the writer's checks.
    let conn = rusqlite::Connection::open(path).expect("side connection");
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.id = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    )
    .expect("trigger");
    drop(conn);
    let one = |id: &str| vec![event("t1", id, NotificationType::WorkflowEvent)];
    // Joined on this (current-thread) runtime, the three are queued before the writer runs, so
    // they share one batch.
    let (a, b, c) = tokio::join!(
        store.publish(one("ok1"), WAIT),
        store.publish(one("boom"), WAIT),
        store.publish(one("ok2"), WAIT),
    );
    assert!(a.expect("ok1")[0].is_ok());
    assert!(matches!(b, Err(Error::Unavailable { .. })), "{b:?}");
    assert!(c.expect("ok2")[0].is_ok());
    assert_eq!(open_ids(&store, &sub).await.len(), 2);
    // The writer goes on.
    publish(&store, &["ok3"]).await;
    assert_eq!(open_ids(&store, &sub).await.len(), 3);
    store.close().await;
}

#[test]
fn a_write_stays_small_in_the_intake_channel() {
    // Every slot of the intake channel is as large as the largest write; the publish and the
    // outcome paths move one per call. Large parts (a spec, an attempt record) are boxed.
    let size = std::mem::size_of::<super::writer::Command>();
    assert!(size <= 256, "a writer command takes {size} bytes");
}

/// The dashboard's newest notifications read the partial indexes of migration 0009, so they
/// cost `limit` rows whatever the journal holds: the plans name the indexes and sort nothing,
/// and the SQL names the system tenant exactly as `notify` and the indexes do.
#[tokio::test]
async fn the_newest_notifications_are_read_through_their_partial_indexes() {
    use super::insight::{RECENT_NOTIFICATIONS, RECENT_NOTIFICATIONS_ABOUT};
    let f = Backend::sqlite();
    let store = f.open().await.store;
    let Backend::Sqlite { path, .. } = &f else {
        unreachable!("a SQLite backend")
    };
    let system = format!("'{}'", crate::notify::SYSTEM_TENANT);
    let migration = include_str!("../../../schemas/migrations/0009_notification_lookup.sql");
    for sql in [RECENT_NOTIFICATIONS, RECENT_NOTIFICATIONS_ABOUT, migration] {
        assert!(sql.contains(&system), "{sql}");
    }
    let conn = rusqlite::Connection::open(path).expect("side connection");
    let plan = |sql: &str, bind: &[&dyn rusqlite::ToSql]| -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let rows = stmt
            .query_map(bind, |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows.join(" | ")
    };
    let all = plan(RECENT_NOTIFICATIONS, &[&10]);
    assert!(all.contains("USING INDEX events_of_system"), "{all}");
    let about = plan(RECENT_NOTIFICATIONS_ABOUT, &[&"acme", &10]);
    assert!(
        about.contains("USING INDEX events_of_system_by_about"),
        "{about}"
    );
    for p in [&all, &about] {
        assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
    }
    drop(conn);
    store.close().await;
}

#[tokio::test]
async fn under_fsync_promises_are_answered_after_an_fsync_and_their_deliveries_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let metrics = Arc::new(Metrics::new(10));
    let store = open_fsync(&path, metrics.clone()).await;
    let t = tenant(&store, "t1").await;
    let sub = subscription(&store, &t, &[]).await;
    let before = metrics.fsyncs();
    publish(&store, &["a", "b", "c"]).await;
    assert!(
        metrics.fsyncs() > before,
        "the publish was answered through the sync thread"
    );
    // The refill reads them (after their fsync) in order.
    assert_eq!(open_ids(&store, &sub).await.len(), 3);
    store.close().await;
    // And they are there after a reopen.
    let store = open_fsync(&path, Arc::new(Metrics::new(10))).await;
    assert_eq!(open_ids(&store, &sub).await.len(), 3);
    store.close().await;
}

/// A publish is visible to readers once committed, before its fsync: no queue read hands its
/// deliveries out before then (they would be sent, and a power failure could take the event
/// back). The one-at-a-time refill always waited; the reads of keyed subscriptions, and the
/// next of a key read by the writer after a record, wait too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_reads_hand_out_nothing_before_its_event_is_durable() {
    use crate::domain::{DeliveryStatus, Ordering, SubscriptionId};
    use crate::store::KeyFollow;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let store = open_fsync(&path, Arc::new(Metrics::new(10))).await;
    let t = tenant(&store, "t1").await;
    let mut keyed = spec(&[]);
    keyed.ordering = Some(Ordering {
        key: "/transactionId".into(),
        lanes: 4,
    });
    let sub = store
        .create_subscription(SubscriptionId::generate(), t, keyed)
        .await
        .expect("subscription")
        .id;
    publish_keyed(&store, &[("e1", "T1")]).await;
    let e1 = store.next_heads(&sub, 0, 10).await.expect("heads")[0].clone();
    let lease = store.acquire(&sub).await.expect("lease");
    let at = crate::domain::clock::now_ms();
    store
        .mark_in_flight(&lease, e1.id, 1, at)
        .await
        .expect("mark");

    // The next publish commits (its deliveries are in the file) but its fsync waits.
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    super::durable::HELD.lock().expect("held").push(wal.clone());
    let publishing = {
        let store = store.clone();
        tokio::spawn(async move { publish_keyed(&store, &[("e2", "T1"), ("e3", "T2")]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !publishing.is_finished(),
        "a publish is answered after its fsync"
    );
    let soon = Duration::from_millis(300);
    let heads = tokio::time::timeout(soon, store.next_heads(&sub, e1.seq, 10)).await;
    assert!(heads.is_err(), "heads handed out before durable: {heads:?}");
    let next = tokio::time::timeout(soon, store.next_in_group(&sub, 0, "\"T1\"", e1.seq)).await;
    assert!(
        next.is_err(),
        "a key's next handed out before durable: {next:?}"
    );
    let follow = KeyFollow {
        order_epoch: 0,
        order_key: e1.order_key.clone().expect("keyed"),
        after_seq: e1.seq,
    };
    let rec = outcome(&sub, e1.id, 1, DeliveryStatus::Delivered);
    let recorded = store.record_attempt_following(&lease, rec, Some(follow));
    let recorded = tokio::time::timeout(soon, recorded).await;
    assert!(
        recorded.is_err(),
        "the writer's read handed out before durable"
    );

    // Once synced, the same reads answer.
    super::durable::HELD
        .lock()
        .expect("held")
        .retain(|p| p != &wal);
    publishing.await.expect("published");
    let heads = store.next_heads(&sub, e1.seq, 10).await.expect("heads");
    assert_eq!(heads.len(), 2, "e2 and e3 head their keys");
    let next = store
        .next_in_group(&sub, 0, "\"T1\"", e1.seq)
        .await
        .expect("read")
        .expect("e2 follows e1");
    assert_eq!(next.id, heads[0].id);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_a_steady_stream_of_writes() {
    // Publishers that never let the writer idle: without the checkpoint thread's restarts (the
    // writer holding still between two batches) the WAL only grows, since SQLite starts it
    // over only when a write begins with the whole WAL copied.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let metrics = Arc::new(Metrics::new(10));
    let store = open_fsync(&path, metrics.clone()).await;
    let t = tenant(&store, "t1").await;
    subscription(&store, &t, &[]).await;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let mut largest = 0;
    let mut set = tokio::task::JoinSet::new();
    for p in 0..8 {
        let store = store.clone();
        set.spawn(async move {
            for i in 0..150 {
                let id = format!("p{p}-{i}");
                let events = vec![event("t1", &id, NotificationType::WorkflowEvent)];
                for r in store.publish(events, WAIT).await.expect("publish") {
                    r.expect("receipt");
                }
            }
        });
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    while !set.is_empty() {
        if tokio::time::timeout(std::time::Duration::from_millis(5), set.join_next())
            .await
            .is_ok_and(|r| r.is_some_and(|r| r.is_err()))
        {
            panic!("a publisher failed");
        }
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    store.close().await;
    // 1,200 publish commits write several thousand frames; the WAL is made to start over past
    // 400 (test-sized, see `checkpoint`).
    assert!(
        metrics.wal_restarts() > 0,
        "the checkpoint thread never started the WAL over (largest WAL {} frames)",
        largest / 4_120
    );
}
