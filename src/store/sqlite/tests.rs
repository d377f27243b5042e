//! The journal's own internals, against a real SQLite file: a batch that SQLite fails is
//! replayed one operation per transaction, and a writer command stays small. The store-level
//! behaviour (shared with PostgreSQL) is tested by `store::suite` on both backends.

use crate::domain::NotificationType;
use crate::error::Error;
use crate::store::suite::{Backend, WAIT, event, open_ids, publish, subscription, tenant};

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
