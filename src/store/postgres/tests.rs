//! What only a shared store must do, on the test binary's throwaway PostgreSQL server: refuse
//! a node with another sealing key, migrate safely when several nodes start at once, fence a
//! holder across nodes, carry wakes from one node to another, and keep one commit order per
//! subscription under concurrent publishers. (The store-level behaviour it shares with SQLite
//! is tested by `store::suite` on both backends.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{PgOptions, PgStore};
use crate::domain::{DeliveryStatus, NotificationType};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::security::secretbox::{MasterKey, SecretBox};
use crate::store::suite::{
    Backend, WAIT, event, open_ids, options, outcome, publish, subscription, tenant,
};

async fn url(test: &str) -> Option<String> {
    match Backend::postgres(test).await? {
        Backend::Postgres { url } => Some(url),
        Backend::Sqlite { .. } => None,
    }
}

#[tokio::test]
async fn a_node_with_another_key_is_refused() {
    let Some(url) = url("a_node_with_another_key_is_refused").await else {
        return;
    };
    let b = Backend::Postgres { url: url.clone() };
    let first = b.open().await.store;
    tenant(&first, "t1").await;
    let other = SecretBox::new(MasterKey::generate());
    let pg = PgOptions {
        node_id: "node-b".into(),
        lease_ttl: Duration::from_secs(30),
    };
    let refused = PgStore::open(&url, &options(), other, Arc::new(Metrics::new(10)), pg).await;
    match refused {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "secretKey");
            assert!(message.contains("cluster"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same key opens it.
    let second = b.open_as("node-c").await.store;
    assert!(
        second
            .get_tenant(&"t1".into())
            .await
            .expect("read")
            .is_some()
    );
    second.close().await;
    first.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let Some(url) = url("nodes_starting_at_once_migrate_once").await else {
        return;
    };
    let b = Backend::Postgres { url };
    // Four nodes start at once on an empty database: one migrates, the others wait for its
    // advisory lock and find the schema done.
    let (n0, n1, n2, n3) = tokio::join!(
        b.open_as("node-0"),
        b.open_as("node-1"),
        b.open_as("node-2"),
        b.open_as("node-3")
    );
    let stores = [n0.store, n1.store, n2.store, n3.store];
    tenant(&stores[0], "t1").await;
    for s in &stores {
        assert!(s.get_tenant(&"t1".into()).await.expect("read").is_some());
    }
    for s in stores {
        s.close().await;
    }
}

#[tokio::test]
async fn a_takeover_by_another_node_fences_the_first_and_wakes_cross_nodes() {
    let Some(url) = url("a_takeover_by_another_node_fences_the_first").await else {
        return;
    };
    let b = Backend::Postgres { url };
    let a = b.open_as("node-a").await.store;
    let crate::store::Opened {
        store: other,
        wakes: mut other_wakes,
        ..
    } = b.open_as("node-b").await;
    let t = tenant(&a, "t1").await;
    let sub = subscription(&a, &t, &[]).await;
    publish(&a, &["e1", "e2"]).await;
    // Published on node a, woken on node b (LISTEN/NOTIFY).
    let woken = tokio::time::timeout(Duration::from_secs(10), other_wakes.recv())
        .await
        .expect("a wake within 10 s")
        .expect("wakes");
    assert_eq!(woken, vec![sub.clone()]);

    let ids = open_ids(&a, &sub).await;
    let held = a.acquire(&sub).await.expect("lease on a");
    a.mark_in_flight(&held, ids[0], 1, crate::domain::clock::now_ms())
        .await
        .expect("mark");
    let taken = other.acquire(&sub).await.expect("lease on b");
    assert!(taken.token() > held.token());
    // The takeover interrupted a's attempt, and a can write nothing more.
    assert_eq!(
        a.get_delivery(ids[0])
            .await
            .expect("read")
            .expect("d")
            .status,
        DeliveryStatus::Pending
    );
    let late = a
        .record_attempt(&held, outcome(&sub, ids[0], 1, DeliveryStatus::Delivered))
        .await;
    assert!(matches!(late, Err(Error::LeaseLost { .. })), "{late:?}");
    other
        .record_attempt(&taken, outcome(&sub, ids[0], 2, DeliveryStatus::Delivered))
        .await
        .expect("b records");
    let log = a.attempts(ids[0]).await.expect("attempts");
    assert_eq!(log.len(), 2, "the interrupted attempt and b's");
    assert_eq!(log[0].error_kind.as_deref(), Some("interrupted"));
    a.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_give_every_subscription_one_commit_order() {
    let Some(url) = url("concurrent_publishers_give_every_subscription_one_commit_order").await
    else {
        return;
    };
    let b = Backend::Postgres { url };
    let store = b.open().await.store;
    let other = b.open_as("node-b").await.store;
    let t = tenant(&store, "t1").await;
    let subs = [
        subscription(&store, &t, &[]).await,
        subscription(&store, &t, &[]).await,
        subscription(&store, &t, &[]).await,
    ];
    let (publishers, each) = (8, 25);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let s = if p % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let e = event("t1", &format!("p{p}-{i}"), NotificationType::WorkflowEvent);
                for r in s.publish(vec![e], WAIT).await.expect("publish") {
                    r.expect("receipt");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let total = publishers * each;
    let mut orders: Vec<Vec<String>> = Vec::new();
    for sub in &subs {
        let q = store.next_deliveries(sub, 0, 10_000).await.expect("queue");
        let seqs: Vec<i64> = q.iter().map(|d| d.seq).collect();
        assert_eq!(
            seqs,
            (1..=total as i64).collect::<Vec<_>>(),
            "gapless, unique"
        );
        orders.push(q.iter().map(|d| d.event_id.to_string()).collect());
    }
    assert_eq!(
        orders[0], orders[1],
        "one commit order for all subscriptions"
    );
    assert_eq!(
        orders[0], orders[2],
        "one commit order for all subscriptions"
    );
    // Each publisher's own events keep its order.
    let mut last: HashMap<String, usize> = HashMap::new();
    for id in &orders[0] {
        let (p, i) = id.split_once('-').expect("p-i");
        let i: usize = i.parse().expect("i");
        if let Some(prev) = last.insert(p.to_owned(), i) {
            assert!(prev < i, "{id} after {p}-{prev}");
        }
    }
    store.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_disjoint_expire_renew_release_and_take_over() {
    use crate::store::NodeId;
    let Some(url) = url("claims_are_disjoint_expire_renew_release_and_take_over").await else {
        return;
    };
    let b = Backend::Postgres { url };
    let a = b.open_as("node-a").await.store;
    let other = b.open_as("node-b").await.store;
    let (na, nb) = (NodeId::new("node-a"), NodeId::new("node-b"));
    a.register(&na, "test").await.expect("register a");
    other.register(&nb, "test").await.expect("register b");
    let t = tenant(&a, "t1").await;
    let mut subs = Vec::new();
    for _ in 0..10 {
        subs.push(subscription(&a, &t, &[]).await);
    }
    let idle = subscription(&a, &t, &[NotificationType::CaseEvent]).await;
    publish(&a, &["e1"]).await;
    let ttl = Duration::from_secs(30);

    // Racing claims take disjoint parts; nothing without open work is claimed.
    let (ca, cb) = tokio::join!(a.claim_due(&na, 6, ttl), other.claim_due(&nb, 6, ttl));
    let (ca, cb) = (ca.expect("claim a"), cb.expect("claim b"));
    assert_eq!(ca.len() + cb.len(), 10, "{} + {}", ca.len(), cb.len());
    let mut all: Vec<_> = ca
        .iter()
        .chain(&cb)
        .map(|l| l.subscription().clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 10, "no subscription claimed twice");
    assert!(!all.contains(&idle));
    assert!(ca.iter().chain(&cb).all(|l| l.deadline().is_some()));
    assert!(
        a.claim_due(&na, 100, ttl).await.expect("again").is_empty(),
        "all held"
    );
    let held = a.nodes().await.expect("nodes");
    assert_eq!(held.len(), 2);
    assert_eq!(held.iter().map(|n| n.leases).sum::<u64>(), 10);

    // Renew keeps the token; a release with a due time hides the subscription until then.
    let lease = ca.first().or(cb.first()).expect("a lease").clone();
    let owner = if ca.iter().any(|l| l.subscription() == lease.subscription()) {
        (&a, &other, &na, &nb)
    } else {
        (&other, &a, &nb, &na)
    };
    let (mine, theirs, me, them) = owner;
    let renewed = mine.renew(&lease, ttl).await.expect("renew");
    assert_eq!(renewed.token(), lease.token());
    mine.release(&renewed, Duration::from_secs(3600), Duration::ZERO)
        .await
        .expect("release");
    assert!(
        theirs
            .claim_due(them, 100, ttl)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(matches!(
        mine.renew(&renewed, ttl).await,
        Err(Error::LeaseLost { .. })
    ));

    // A takeover fences the holder of a live lease and says how long it may still be sending.
    let live = ca
        .iter()
        .chain(&cb)
        .find(|l| l.subscription() != lease.subscription())
        .expect("another lease")
        .clone();
    let a_holds = ca.iter().any(|l| l.subscription() == live.subscription());
    let (holder, taker, taker_id, holder_id) = if a_holds {
        (&a, &other, &nb, &na)
    } else {
        (&other, &a, &na, &nb)
    };
    let forced = taker
        .take_over(taker_id, live.subscription(), ttl)
        .await
        .expect("take over");
    assert!(forced.token() > live.token());
    assert!(forced.quiet_until().is_some(), "the fenced lease was live");
    assert!(matches!(
        holder.renew(&live, ttl).await,
        Err(Error::LeaseLost { .. })
    ));
    // Taking back a lease this node holds (an actor restarted after a panic) does not wait for
    // itself, but still for the holder its first takeover fenced: that one may be sending yet,
    // and the restarted actor has lost the first lease's memory of it.
    let again = taker
        .take_over(taker_id, live.subscription(), ttl)
        .await
        .expect("take over again");
    let (first, second) = (
        forced.quiet_until().expect("quiet"),
        again
            .quiet_until()
            .expect("the fenced holder is still waited for"),
    );
    assert!(
        second + Duration::from_secs(1) > first && second < first + Duration::from_secs(1),
        "the same window"
    );

    // An expired lease is claimed by the other node with a higher token.
    let spare = if a_holds { &cb } else { &ca }
        .iter()
        .find(|l| l.subscription() != lease.subscription())
        .expect("the taker holds another")
        .clone();
    let quick = taker
        .renew(&spare, Duration::from_millis(200))
        .await
        .expect("short renew");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stolen = holder
        .claim_due(holder_id, 100, ttl)
        .await
        .expect("claim expired");
    assert_eq!(stolen.len(), 1);
    assert_eq!(stolen[0].subscription(), spare.subscription());
    assert!(stolen[0].token() > quick.token());
    let _ = (me, them);

    // A clean shutdown hands everything over at once.
    let released = a.release_all(&na).await.expect("release all");
    assert!(released > 0);
    assert_eq!(other.nodes().await.expect("nodes").len(), 1);
    a.close().await;
    other.close().await;
}

/// An operator's takeover of a live lease (a pause on node b) followed at once by a release, then
/// another node's claim or takeover (a resume on node c): the fenced holder (node a) may still
/// be sending until its lease would have expired, and the third node must wait for that too.
/// Before the window was stored, only the taker's lease knew it, and the release dropped it:
/// a cluster test once saw node c send the head 29 ms after node a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_holders_window_outlives_the_release_of_the_takeover() {
    use crate::store::NodeId;
    let Some(url) = url("a_fenced_holders_window_outlives_the_release").await else {
        return;
    };
    let b = Backend::Postgres { url };
    let (a, nb_store, c) = (
        b.open_as("node-a").await.store,
        b.open_as("node-b").await.store,
        b.open_as("node-c").await.store,
    );
    let (na, nb, nc) = (
        NodeId::new("node-a"),
        NodeId::new("node-b"),
        NodeId::new("node-c"),
    );
    let t = tenant(&a, "t1").await;
    let sub = subscription(&a, &t, &[]).await;
    publish(&a, &["e1"]).await;
    let window = Duration::from_secs(3);
    let held = a.claim_due(&na, 10, window).await.expect("claim");
    assert_eq!(held.len(), 1);
    let taken = nb_store
        .take_over(&nb, &sub, Duration::from_secs(30))
        .await
        .expect("take over");
    let quiet = taken.quiet_until().expect("a's lease was live");
    nb_store
        .release(&taken, Duration::ZERO, Duration::ZERO)
        .await
        .expect("release");
    assert!(
        c.claim_due(&nc, 10, window)
            .await
            .expect("claim")
            .is_empty(),
        "nothing is claimed while a may still be sending"
    );
    let resumed = c
        .take_over(&nc, &sub, Duration::from_secs(30))
        .await
        .expect("take over");
    let waits = resumed
        .quiet_until()
        .expect("a's window is still waited for");
    assert!(
        waits + Duration::from_secs(1) > quiet && waits < quiet + Duration::from_secs(1),
        "the same window"
    );
    c.release(&resumed, Duration::ZERO, Duration::ZERO)
        .await
        .expect("release");
    // Once it has passed, the subscription is claimed and taken over as before.
    tokio::time::sleep_until(quiet + Duration::from_millis(300)).await;
    let claimed = c.claim_due(&nc, 10, window).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let last = a.take_over(&na, &sub, window).await.expect("take over");
    assert!(
        last.quiet_until().is_some(),
        "c's claimed lease is live: a waits for c"
    );
    a.close().await;
    nb_store.close().await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_slots_are_granted_once_cluster_wide_and_limit_changes_reach_every_node() {
    use crate::policy::ratelimit::RateLimit;
    let Some(url) = url("tenant_slots_are_granted_once_cluster_wide").await else {
        return;
    };
    let b = Backend::Postgres { url };
    let a = b.open_as("node-a").await.store;
    let crate::store::Opened {
        store: other,
        tenant_limits,
        ..
    } = b.open_as("node-b").await;
    let mut changes = tenant_limits.expect("a shared store announces limit changes");
    let t = tenant(&a, "t1").await;
    let limit = RateLimit {
        per_second: 10.0,
        burst: 2,
    };
    let horizon = Duration::from_secs(1);

    // Both nodes ask for far more than the horizon holds at once: together they get the burst
    // plus one second of the rate (2 + 10 + the slot at the horizon itself), once.
    let (ga, gb) = tokio::join!(
        a.reserve_tenant_slots(&t, &limit, 50, horizon),
        other.reserve_tenant_slots(&t, &limit, 50, horizon)
    );
    let (ga, gb) = (ga.expect("reserve a"), gb.expect("reserve b"));
    let granted = ga.offsets.len() + gb.offsets.len();
    assert!(
        (12..=13).contains(&granted),
        "{} + {} slots",
        ga.offsets.len(),
        gb.offsets.len()
    );
    assert!(ga.retry_in.is_some() || gb.retry_in.is_some());
    // The first grant starts with the burst, then one slot per 100 ms.
    let first = if ga.offsets.len() >= gb.offsets.len() {
        &ga
    } else {
        &gb
    };
    assert_eq!(first.offsets[0], first.offsets[1], "the burst: {first:?}");
    for w in first.offsets[1..].windows(2) {
        let gap = w[1] - w[0];
        assert_eq!(gap, Duration::from_millis(100), "{first:?}");
    }
    // Another tenant has its own schedule.
    let t2 = tenant(&a, "t2").await;
    let g = other
        .reserve_tenant_slots(&t2, &limit, 2, horizon)
        .await
        .expect("reserve t2");
    assert_eq!(g.offsets, vec![Duration::ZERO; 2]);
    // A changed limit starts a fresh schedule.
    let faster = RateLimit {
        per_second: 1000.0,
        burst: 5,
    };
    let g = a
        .reserve_tenant_slots(&t, &faster, 5, horizon)
        .await
        .expect("reserve at the new limit");
    assert_eq!(g.offsets, vec![Duration::ZERO; 5]);

    // A limit set on node a is announced to node b.
    changes.borrow_and_update();
    a.set_tenant_rate_limit(t.clone(), Some(limit.clone()))
        .await
        .expect("set limit");
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("announced within 10 s")
        .expect("listener alive");
    let limits = other.tenant_rate_limits().await.expect("limits");
    assert_eq!(limits, vec![(t.clone(), limit)]);
    a.close().await;
    other.close().await;
}

#[tokio::test]
async fn a_released_subscription_carries_its_pace_to_the_next_holder() {
    use crate::store::NodeId;
    let Some(url) = url("a_released_subscription_carries_its_pace").await else {
        return;
    };
    let b = Backend::Postgres { url };
    let a = b.open_as("node-a").await.store;
    let other = b.open_as("node-b").await.store;
    let (na, nb) = (NodeId::new("node-a"), NodeId::new("node-b"));
    let t = tenant(&a, "t1").await;
    let sub = subscription(&a, &t, &[]).await;
    publish(&a, &["e1"]).await;
    let ttl = Duration::from_secs(30);
    let first = a.claim_due(&na, 10, ttl).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].pace_ahead(), Duration::ZERO, "never paced");
    a.release(&first[0], Duration::ZERO, Duration::from_secs(5))
        .await
        .expect("release");
    let next = other.claim_due(&nb, 10, ttl).await.expect("claim on b");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].subscription(), &sub);
    let pace = next[0].pace_ahead();
    assert!(
        pace > Duration::from_secs(4) && pace <= Duration::from_secs(5),
        "{pace:?}"
    );
    // A release with a full bucket clears it; a takeover reads it too.
    other
        .release(&next[0], Duration::ZERO, Duration::ZERO)
        .await
        .expect("release b");
    let taken = a.take_over(&na, &sub, ttl).await.expect("take over");
    assert_eq!(taken.pace_ahead(), Duration::ZERO);
    a.close().await;
    other.close().await;
}
