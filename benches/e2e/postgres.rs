//! The PostgreSQL column of the end-to-end benchmark: the same workloads on a durable
//! PostgreSQL server this run starts for itself, with one node and with three.
//!
//! Nodes are engines built through the library (`Engine::builder().postgres(url)`), each with
//! its own node id, in this process: the cheaper of the two honest options (real `hookline
//! serve` processes would add an HTTP hop per publish that the SQLite column does not have).
//! The killed node of the takeover phase runs on a tokio runtime of its own, which is shut
//! down without a graceful stop: its tasks are dropped at once, its PostgreSQL and HTTP
//! connections closed, its leases left held in the database until they expire, as after a
//! `kill -9`.
//!
//! With no PostgreSQL server binaries installed, the column is left out with a SKIPPED line,
//! unless `HOOKLINE_REQUIRE_EXTERNAL=1` (CI), which makes that an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hookline::{Durability, NewSubscription, NewTenant};

use super::{BATCH, Journaled, PUBLISHERS, Receiver, Store, r2, round};

#[path = "../../src/testing/postgres.rs"]
#[allow(
    dead_code,
    reason = "the test harness's server; this bench uses only its durable form"
)]
mod harness;

/// The cluster's sealing key (every node must be given the same).
pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The lease TTL of every node of the bench. A renewal asks for at least an attempt's timeout
/// plus twice the lease margin (2 s), so with the takeover phase's 1 s timeout a lease runs
/// 5 s from its last renewal whatever is set below that: 5 s is the TTL in effect.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// Subscriptions of the takeover phase.
const TAKEOVER_SUBS: u32 = 10;

/// The run's durable PostgreSQL server.
pub struct PgBench {
    server: harness::PgServer,
}

impl PgBench {
    /// Starts the server (`initdb` and `pg_ctl`, a second or two); `None` when PostgreSQL is not
    /// installed and not required.
    pub async fn start() -> Option<PgBench> {
        tokio::task::spawn_blocking(|| harness::durable_server("e2e bench"))
            .await
            .expect("start PostgreSQL")
            .map(|server| PgBench { server })
    }

    /// A fresh, empty database; its URL.
    pub async fn fresh_database(&self) -> String {
        self.server.fresh_database().await
    }
}

/// What the takeover phase measured.
pub struct Takeover {
    /// Kill → first arrival from a surviving node, per subscription (ms, sorted).
    pub ms: Vec<f64>,
    /// Events received twice (the head in flight at the kill, sent again by its new holder).
    pub duplicates: u64,
    /// Arrivals behind a later event of the same subscription (expected 0).
    pub reordered: u64,
}

impl Takeover {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "subscriptions": self.ms.len(),
            "lease_ttl_ms": LEASE_TTL.as_millis() as u64,
            "p50_ms": r2(super::pct(&self.ms, 50.0)),
            "max_ms": r2(self.ms.last().copied().unwrap_or(f64::NAN)),
            "over_ttl_ms": r2(self.ms.last().copied().unwrap_or(f64::NAN)
                - LEASE_TTL.as_secs_f64() * 1e3),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
        })
    }
}

/// A node killed without warning takes `TAKEOVER_SUBS` busy subscriptions with it; the time
/// until each of them is delivered again by one of the two surviving nodes.
///
/// The victim node starts alone, creates the subscriptions (1 s attempt timeout, to the
/// receiver's slow paths, which answer after [`super::SLOW_DELAY`]) and a backlog that lasts
/// the whole phase, and delivers until every subscription has had a delivery (it holds every
/// lease). The two other nodes join, the victim's runtime is shut down, and each
/// subscription's first arrival later than 100 ms after the kill (the victim's own requests
/// arrive well within that on loopback; its successors cannot claim before its lease expires)
/// is the takeover.
pub async fn takeover(rx: &Receiver, addr: SocketAddr, pg: &PgBench, pad: &str) -> Takeover {
    let url = pg.fresh_database().await;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let per_sub = 1_000;
    let victim = {
        let url = url.clone();
        let pad = pad.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("victim")
                .enable_all()
                .build()
                .expect("the victim's runtime");
            let j = rt.block_on(victim_setup(&url, addr, per_sub, &pad));
            // Everything of the victim lives on its runtime: nothing outside holds its pool or
            // its client, so the shutdown drops them and closes their connections.
            rt.spawn(async move {
                let _node = j;
                std::future::pending::<()>().await
            });
            let _ = ready_tx.send(());
            let _ = kill_rx.blocking_recv();
            rt.shutdown_background();
        })
    };
    ready_rx.await.expect("the victim set up its subscriptions");
    let paths: Vec<u32> = (0..TAKEOVER_SUBS).map(|k| super::SLOW_BASE + k).collect();
    // Every subscription delivered once by the victim: it holds every lease.
    wait_until(Duration::from_secs(30), || {
        let seen = first_after(rx, &paths, 0);
        seen.len() == paths.len()
    })
    .await
    .then_some(())
    .expect("the victim delivers every subscription");
    let mut survivors = Vec::new();
    for n in ["s1", "s2"] {
        survivors.push(Journaled::start_pg(&url, n, Durability::Fsync, LEASE_TTL).await);
    }
    // Let the survivors settle (a claim round or two, finding every lease held).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = rx.now_ns();
    let _ = kill_tx.send(());
    victim.join().expect("the victim's thread");
    let guard = killed_at + 100_000_000;
    let limit = LEASE_TTL + Duration::from_secs(10);
    let all = wait_until(limit, || {
        first_after(rx, &paths, guard).len() == paths.len()
    })
    .await;
    let firsts = first_after(rx, &paths, guard);
    let mut ms: Vec<f64> = firsts
        .values()
        .map(|at| at.saturating_sub(killed_at) as f64 / 1e6)
        .collect();
    if !all {
        eprintln!(
            "e2e: WARNING: {} of {} subscriptions not taken over within {limit:?}",
            paths.len() - firsts.len(),
            paths.len()
        );
        ms.extend(std::iter::repeat_n(f64::NAN, paths.len() - firsts.len()));
    }
    for s in survivors {
        s.shutdown().await;
    }
    let arrivals = rx.take_arrivals();
    let (mut duplicates, mut reordered) = (0, 0);
    let mut last: HashMap<u32, u32> = HashMap::new();
    for a in arrivals.iter().filter(|a| a.path >= super::SLOW_BASE) {
        match last.insert(a.path, a.event) {
            Some(prev) if a.event == prev => duplicates += 1,
            Some(prev) if a.event < prev => reordered += 1,
            _ => {}
        }
    }
    Takeover {
        ms: super::sorted(ms),
        duplicates,
        reordered,
    }
}

/// The victim node, alone on a fresh database: the subscriptions, and `per_sub` events for
/// each of them, which it starts delivering at once.
async fn victim_setup(url: &str, addr: SocketAddr, per_sub: u32, pad: &str) -> Journaled {
    let j = Journaled::start_pg(url, "victim", Durability::Fsync, LEASE_TTL).await;
    j.engine
        .create_tenant(NewTenant {
            id: "takeover".into(),
            name: "takeover".into(),
            rate_limit: None,
        })
        .await
        .expect("create tenant");
    for k in 0..TAKEOVER_SUBS {
        let path = super::SLOW_BASE + k;
        let mut sub = NewSubscription::new("takeover", format!("http://{addr}/s/{path}"));
        sub.timeout_ms = Some(1_000);
        j.engine
            .create_subscription(sub)
            .await
            .expect("create subscription");
    }
    j.prepublish("takeover", 0..per_sub, TAKEOVER_SUBS, pad)
        .await;
    j
}

/// The first arrival at each of `paths` later than `after_ns`.
fn first_after(rx: &Receiver, paths: &[u32], after_ns: u64) -> HashMap<u32, u64> {
    let mut first = HashMap::new();
    for a in rx.arrivals.lock().expect("arrivals lock").iter() {
        if a.at_ns > after_ns && paths.contains(&a.path) {
            first.entry(a.path).or_insert(a.at_ns);
        }
    }
    first
}

/// Polls `done` every 10 ms for up to `limit`; whether it became true.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The PostgreSQL figures of one run, beside the SQLite ones.
pub struct Figures {
    pub ingest_per_s: f64,
    pub ingest_lat: Vec<f64>,
    pub batch_per_s: f64,
    pub batch_lat: Vec<f64>,
    /// Deliveries/s and CPU µs per delivery: 1 subscription with 1 and 3 nodes, then
    /// `--subs` subscriptions with 1 and 3 nodes.
    pub drains: Vec<(String, u32, u32, f64, f64)>,
    /// One subscription with ordering keys, 100 lanes over 1,000 keys, one node: deliveries/s
    /// and CPU µs per delivery.
    pub keyed: (f64, f64),
    pub order_violations: u64,
    pub takeover: Takeover,
}

/// Runs every PostgreSQL phase; `step` logs each.
pub async fn run(
    rx: &Receiver,
    addr: SocketAddr,
    pg: &PgBench,
    sz: &super::Sizes,
    pad: &str,
    step: &dyn Fn(&str),
) -> Figures {
    let store = Store::Postgres(pg);
    step("postgres: ingest: publish");
    let (ingest_per_s, ingest_lat) = super::ingest(store, addr, sz.events, None, pad).await;
    step("postgres: ingest: publish_batch");
    let (batch_per_s, batch_lat) = super::ingest(store, addr, sz.events, Some(BATCH), pad).await;
    let mut drains = Vec::new();
    let mut order_violations = 0;
    let fan_events = (sz.events / sz.subs).max(1);
    for (subs, events) in [(1, sz.single), (sz.subs, fan_events)] {
        for nodes in [1, 3] {
            let what = format!("{subs} subscription(s), {nodes} node(s)");
            step(&format!("postgres: deliveries: {what}"));
            let d =
                super::drain(rx, addr, store, Durability::Fsync, nodes, subs, events, pad).await;
            order_violations += d.order_violations;
            drains.push((what, subs, nodes, d.per_s, d.cpu_us));
            d.shutdown().await;
        }
    }
    step("postgres: deliveries: ordering keys, 100 lanes");
    let k = super::drain_keyed(rx, addr, store, 100, fan_events * sz.subs, pad).await;
    order_violations += k.order_violations;
    step("postgres: takeover of a killed node");
    let takeover = takeover(rx, addr, pg, pad).await;
    Figures {
        ingest_per_s,
        ingest_lat,
        batch_per_s,
        batch_lat,
        drains,
        keyed: (k.per_s, k.cpu_us),
        order_violations,
        takeover,
    }
}

impl Figures {
    /// The JSON of the PostgreSQL column.
    pub fn json(&self) -> serde_json::Value {
        let pct = super::pct;
        let mut drains = serde_json::Map::new();
        for (_, subs, nodes, per_s, cpu) in &self.drains {
            drains.insert(format!("deliveries_{subs}_nodes_{nodes}_per_s"), r2(*per_s));
            drains.insert(format!("deliveries_{subs}_nodes_{nodes}_cpu_us"), r2(*cpu));
        }
        serde_json::json!({
            "publishers": PUBLISHERS,
            "ingest_per_s": r2(self.ingest_per_s),
            "ingest_p50_ms": r2(pct(&self.ingest_lat, 50.0)),
            "ingest_p99_ms": r2(pct(&self.ingest_lat, 99.0)),
            "ingest_batch_per_s": r2(self.batch_per_s),
            "ingest_batch_p50_ms": r2(pct(&self.batch_lat, 50.0)),
            "ingest_batch_p99_ms": r2(pct(&self.batch_lat, 99.0)),
            "deliveries": serde_json::Value::Object(drains),
            "keys_lanes_100_per_s": r2(self.keyed.0),
            "keys_lanes_100_cpu_us": r2(self.keyed.1),
            "order_violations": self.order_violations,
            "takeover": self.takeover.json(),
            "takeover_max_over_ttl": round(
                self.takeover.ms.last().copied().unwrap_or(f64::NAN) / LEASE_TTL.as_secs_f64() / 1e3,
                3,
            ),
        })
    }
}
