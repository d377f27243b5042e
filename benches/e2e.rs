//! End-to-end benchmark: hookline embedded on a SQLite file, and on PostgreSQL, delivering to
//! loopback receivers.
//!
//! `cargo bench --bench e2e -- [--quick] [--events N] [--single N] [--subs N] [--fixed-secs N]
//! [--big N] [--runs N] [--only PHASE,…] [--keys-only]`
//!
//! `--runs N` (or `HOOKLINE_BENCH_RUNS=N`) repeats the whole run N times in one process; the
//! last line is then `{"runs", "median", "min", "max", "each"}` over every numeric figure, and
//! a table of the headline figures' medians and ranges comes before it. `--only` runs some of
//! the phases `ceilings`, `ingest`, `single`, `fan`, `keys`, `fixed`, `fixed_big`, `postgres` (a
//! ratio needs its ceiling: `--only ceilings,single`); the figures of the others are `null`.
//! `--keys-only` is `--only ceilings,fan,keys` (what the `keys_*` ratios need).
//!
//! Everything runs in one process on one tokio runtime: a bare hyper receiver that answers 200
//! at once, the ceilings (a bare `reqwest::Client` posting the same ~1 KiB envelopes to it), and
//! hookline. The machine this runs on is shared and small, so every hookline figure is printed
//! next to a ceiling measured in the same run, and the ratio is the number to watch:
//!
//! | figure | how |
//! |---|---|
//! | `fsync_p50_ms` | 1 KiB write + `fsync` on the journal's disk: the floor of one durable commit |
//! | `ceiling_seq_rps` | one request at a time to one receiver path for ~2 s |
//! | `ceiling_conc_rps` | `--subs` streams, each one request at a time, for ~2 s |
//! | `ingest_per_s` | `--events` events through `publish` by 64 publisher tasks, to a paused subscription |
//! | `ingest_batch_per_s` | the same through `publish_batch` in batches of 100 |
//! | `deliveries_1_per_s` | `--single` events pre-published to a paused subscription, then resumed: time until the receiver has them all |
//! | `deliveries_1_os_per_s` | the same with durability `os` (no fsync): what the fsyncs cost |
//! | `*_cpu_us` | CPU time (user + system, whole process, from /proc/self/stat) per request of a ceiling or per delivery of a drain: less noisy than rates on a shared machine; `conc_cpu_ratio` is `ceiling_conc_cpu_us / deliveries_100_cpu_us` |
//! | `deliveries_100_per_s` | `--events / --subs` events fanned out to `--subs` paused subscriptions, then all resumed |
//! | `latency_idle_*` | one subscription, one event at a time: publish call → receipt |
//! | `latency_100_sweep` | `--subs` active subscriptions, events published open-loop at shares of `deliveries_100_per_s` (10 to 80%): scheduled publish instant → receipt, and whether the engine kept up |
//! | `latency_100_*` | the sweep point at the highest load the engine kept up with |
//! | `p50_ms_at_1k`, `p99_ms_at_1k` | a fixed offered load of 1,000 events/s for `--fixed-secs` (5 s; 1.5 s with `--quick`), open loop, spread over 100 active subscriptions (subscription `k` filters `workflowIds: ["wf-k"]`, events go round-robin over `wf-0`…`wf-99`, so each event is one delivery): scheduled publish instant → receipt |
//! | `publishes_over_50ms_at_1k`, `receipts_over_50ms_at_1k` | of the fixed load: how many publishes returned, and how many receipts came, more than 50 ms after their scheduled instant |
//! | `*_at_1k_big` | the fixed load again on a journal that already holds `--big` (2,000,000; 100,000 with `--quick`) delivered deliveries with their attempts, bulk-inserted with SQL before the engine opens it (built once per process, `big_journal_build_s`) |
//! | `run_delay_ms_per_s` | time this process's threads spent runnable but waiting for a CPU (schedstat), per second of the run: how much of a latency the machine took, not the engine |
//! | `peak_rss_mb`, `rss_mb` | VmHWM of the process at the end; VmRSS at the start of each phase (from /proc/self/status) |
//! | `keys_lanes_{1,16,100}_per_s` | ordering keys: `--events` events over 1,000 keys (`payLoad.k = i % 1000`) pre-published to ONE paused subscription with `ordering: {key: "/payLoad/k", lanes}`, then resumed: time until the receiver has them all; `keys_lanes_*_vs_100_subs` divides by `deliveries_100_per_s` (100 separate subscriptions, same run, same receiver, same number of deliveries), `keys_lanes_*_vs_ceiling` by `ceiling_conc_rps`; `keys_order_violations` counts arrivals not after an earlier event of their key (expected 0) |
//! | `postgres.*` | the ingest and drain figures again on a durable PostgreSQL server this run starts, with 1 and 3 nodes, one subscription with 100 ordering-key lanes (`keys_lanes_100_per_s`), and the takeover of a killed node (see `e2e/postgres.rs`); `null` when PostgreSQL is not installed |
//!
//! The receiver records, per subscription path, the arrival of each event id, which gives the
//! latencies and a check of the strict per-subscription order (`order_violations`, expected 0).
//! The table goes to stdout; the last stdout line is one JSON object with every figure.

#![allow(clippy::print_stdout, reason = "a benchmark's report is its stdout")]
#![recursion_limit = "256"]

#[path = "support/mod.rs"]
mod support;

#[path = "e2e/postgres.rs"]
mod postgres;

/// The allocator `hookline serve` runs with (src/main.rs), so the engine is measured as shipped;
/// the ceilings in the same process use it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline::{
    Durability, Engine, EngineHandle, EventInput, NewSubscription, NewTenant, NotificationType,
    SubscriptionId,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Concurrent publisher tasks of the ingest figures.
const PUBLISHERS: usize = 64;
/// Events per `publish_batch` call.
const BATCH: usize = 100;
/// Longest wait for a phase's deliveries before the run is declared broken.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);
/// Receiver paths `/s/k` with `k` from this on answer after [`SLOW_DELAY`] (the takeover
/// phase's subscriptions, which must stay busy).
const SLOW_BASE: u32 = 1_000_000;
/// How long a slow path takes to answer, after recording the arrival.
const SLOW_DELAY: Duration = Duration::from_millis(20);

// ---- command line ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sizes {
    quick: bool,
    /// Ingest events (each way) and total deliveries of the fan-out case.
    events: u32,
    /// Deliveries of the one-subscription case.
    single: u32,
    /// Subscriptions of the fan-out case and streams of the concurrent ceiling.
    subs: u32,
    /// How long each ceiling runs.
    ceiling_for: Duration,
    /// Samples of the idle latency.
    idle_samples: u32,
    /// Offered loads of the latency sweep, as shares of the measured fan-out drain rate.
    latency_loads: Vec<f64>,
    /// How long events are published at each load of the sweep.
    latency_for: Duration,
    /// Samples of the raw fsync probe.
    fsync_samples: u32,
    /// How long the fixed 1,000 events/s load runs.
    fixed_for: Duration,
    /// Finished deliveries the large journal of the `fixed_big` phase holds before it starts.
    big_deliveries: u32,
    /// Full runs in this process (`--runs N`, or `HOOKLINE_BENCH_RUNS`): with more than one,
    /// the last line reports each figure's median, minimum and maximum.
    runs: u32,
    /// The phases to run (`--only a,b`); all when `None`.
    only: Option<Vec<String>>,
}

/// The phases `--only` can name, in the order they run.
const PHASES: &[&str] = &[
    "ceilings",
    "ingest",
    "single",
    "fan",
    "keys",
    "fixed",
    "fixed_big",
    "postgres",
];

impl Sizes {
    fn from_args() -> Sizes {
        let mut quick = false;
        let (mut events, mut single, mut subs, mut fixed) = (None, None, None, None);
        let (mut big, mut only) = (None, None);
        let mut runs = std::env::var("HOOKLINE_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n > 0);
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut number = |name: &str| -> u32 {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| panic!("{name} needs a positive number"))
            };
            match a.as_str() {
                "--quick" => quick = true,
                "--keys-only" => {
                    only = Some(["ceilings", "fan", "keys"].map(str::to_owned).to_vec());
                }
                "--events" => events = Some(number("--events")),
                "--single" => single = Some(number("--single")),
                "--subs" => subs = Some(number("--subs")),
                "--fixed-secs" => fixed = Some(number("--fixed-secs")),
                "--big" => big = Some(number("--big")),
                "--runs" => runs = Some(number("--runs")),
                "--only" => {
                    let list: Vec<String> = args
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned)
                        .collect();
                    if let Some(bad) = list.iter().find(|p| !PHASES.contains(&p.as_str())) {
                        panic!(
                            "--only: unknown phase {bad:?} (phases: {})",
                            PHASES.join(",")
                        );
                    }
                    only = Some(list);
                }
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                other => eprintln!("e2e: ignoring unknown argument {other:?}"),
            }
        }
        let events = events.unwrap_or(if quick { 2_000 } else { 20_000 });
        Sizes {
            quick,
            events,
            single: single.unwrap_or(if quick { 500 } else { 5_000 }),
            subs: subs.unwrap_or(100),
            ceiling_for: Duration::from_secs(if quick { 1 } else { 2 }),
            idle_samples: if quick { 30 } else { 200 },
            latency_loads: if quick {
                vec![0.25, 0.8]
            } else {
                vec![0.1, 0.25, 0.5, 0.8]
            },
            latency_for: Duration::from_millis(if quick { 1_500 } else { 4_000 }),
            fsync_samples: if quick { 30 } else { 200 },
            fixed_for: fixed.map_or(
                Duration::from_millis(if quick { 1_500 } else { 5_000 }),
                |s| Duration::from_secs(u64::from(s)),
            ),
            big_deliveries: big.unwrap_or(if quick { 100_000 } else { 2_000_000 }),
            runs: runs.unwrap_or(1),
            only,
        }
    }

    /// Whether `phase` runs.
    fn wants(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }
}

// ---- the receiver ----------------------------------------------------------------------------

/// One hookline delivery as the receiver saw it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// `k` of the path `/s/k`: the subscription.
    path: u32,
    /// `i` of the event id `ev-i`.
    event: u32,
    /// Nanoseconds since [`Receiver::base`], once the whole body was read.
    at_ns: u64,
}

/// A loopback receiver: bare hyper, 200 with an empty body for everything, counting requests.
#[derive(Debug)]
struct Receiver {
    base: Instant,
    count: AtomicU64,
    /// `reached` is notified by every request that brings `count` to at least this.
    target: AtomicU64,
    reached: Notify,
    arrivals: Mutex<Vec<Arrival>>,
}

impl Receiver {
    async fn start(base: Instant) -> (Arc<Receiver>, SocketAddr) {
        let rx = Arc::new(Receiver {
            base,
            count: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
            arrivals: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = rx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let rx = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| rx.clone().handle(req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (rx, addr)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, Infallible> {
        let path = req
            .uri()
            .path()
            .strip_prefix("/s/")
            .and_then(|k| k.parse::<u32>().ok());
        let event = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|id| id.strip_prefix("ev-"))
            .and_then(|i| i.parse::<u32>().ok());
        // Read the whole body, as a real receiver would, before it counts as received.
        let _ = req.into_body().collect().await;
        if let (Some(path), Some(event)) = (path, event) {
            let at_ns = self.now_ns();
            self.arrivals
                .lock()
                .expect("arrivals lock")
                .push(Arrival { path, event, at_ns });
            if path >= SLOW_BASE {
                tokio::time::sleep(SLOW_DELAY).await;
            }
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
        Ok(Response::new(Empty::new()))
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `count` reaches `target`; panics after `limit` (the run is broken).
    async fn wait_for(&self, target: u64, limit: Duration) {
        self.target.store(target, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() < target {
            // A permit left by an earlier phase only causes one more look at the count.
            if tokio::time::timeout_at(deadline, self.reached.notified())
                .await
                .is_err()
            {
                panic!(
                    "the receiver got {} of {target} requests within {limit:?}",
                    self.count()
                );
            }
        }
        self.target.store(u64::MAX, Ordering::SeqCst);
    }

    fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.arrivals.lock().expect("arrivals lock"))
    }
}

/// Deliveries that arrived at a path not after an earlier event of the same path (a duplicate
/// or a reordering). Valid when events were published in id order.
fn order_violations(arrivals: &[Arrival]) -> u64 {
    order_violations_by(arrivals, i64::from)
}

/// The same against the journal's order, `seq_of(event)`: for events published concurrently,
/// whose commits may land in another order than their ids.
fn order_violations_by(arrivals: &[Arrival], seq_of: impl Fn(u32) -> i64) -> u64 {
    let mut last: std::collections::HashMap<u32, i64> = Default::default();
    let mut bad = 0;
    for a in arrivals {
        let seq = seq_of(a.event);
        if let Some(prev) = last.insert(a.path, seq)
            && seq <= prev
        {
            bad += 1;
        }
    }
    bad
}

// ---- payloads --------------------------------------------------------------------------------

/// About 1 KiB of `payLoad`: `{"i": i, "pad": "xxx…"}`.
fn pad() -> String {
    "x".repeat(1000)
}

fn event(tenant: &str, i: u32, pad: &str) -> EventInput {
    EventInput::new(tenant, format!("tx-{i}"), NotificationType::NodeEvent)
        .id(format!("ev-{i}"))
        .payload(serde_json::json!({ "i": i, "pad": pad }))
}

/// The body the ceilings send: an envelope shaped like the one hookline posts.
fn ceiling_body(pad: &str) -> Bytes {
    let v = serde_json::json!({
        "id": "ev-0",
        "tenantId": "bench",
        "transactionId": "tx-0",
        "notificationType": "NODE_EVENT",
        "payLoad": { "i": 0, "pad": pad },
        "timestamp": "2026-01-01T00:00:00.000Z",
    });
    Bytes::from(serde_json::to_vec(&v).expect("serialise the envelope"))
}

// ---- statistics ------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Rounds to `digits` decimals for the JSON line (NaN becomes null).
fn round(x: f64, digits: i32) -> serde_json::Value {
    let scale = 10f64.powi(digits);
    serde_json::Number::from_f64((x * scale).round() / scale)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// Two decimals: rates and milliseconds.
fn r2(x: f64) -> serde_json::Value {
    round(x, 2)
}

// ---- floor and ceilings ----------------------------------------------------------------------

/// Median and p99 (ms) of a 1 KiB append + `fsync` in a temporary directory (SQLite with
/// `synchronous=FULL` calls `fsync` on the WAL at every commit).
async fn fsync_probe(samples: u32) -> (f64, f64) {
    let times = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut f = std::fs::File::create(dir.path().join("probe")).expect("probe file");
        let block = [b'x'; 1024];
        (0..samples)
            .map(|_| {
                f.write_all(&block).expect("probe write");
                let t = Instant::now();
                f.sync_all().expect("probe fsync");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("fsync probe");
    let s = sorted(times);
    (pct(&s, 50.0), pct(&s, 99.0))
}

/// A client set up like hookline's sender (no proxy, no redirects, `TCP_NODELAY`).
fn ceiling_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .expect("HTTP client")
}

async fn post(client: &reqwest::Client, url: &str, body: &Bytes) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let resp = client
        .post(url)
        .header("content-type", "application/json;charset=UTF-8")
        .header("user-agent", "hookline-bench")
        .header("webhook-id", "c-0")
        .header("webhook-timestamp", ts)
        .body(body.clone())
        .send()
        .await
        .expect("ceiling request");
    assert!(
        resp.status().is_success(),
        "receiver answered {}",
        resp.status()
    );
    resp.bytes().await.expect("ceiling response body");
}

/// `streams` tasks, each posting one request at a time to its own path, for `dur`; requests/s.
/// Requests per second, and CPU µs of the whole process per request.
async fn ceiling(addr: SocketAddr, streams: u32, dur: Duration, body: &Bytes) -> (f64, f64) {
    let client = ceiling_client();
    let run = |dur: Duration| {
        let mut set = JoinSet::new();
        let deadline = Instant::now() + dur;
        for k in 0..streams {
            let (client, body) = (client.clone(), body.clone());
            let url = format!("http://{addr}/c/{k}");
            set.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    post(&client, &url, &body).await;
                    n += 1;
                }
                n
            });
        }
        async move {
            let (start, cpu) = (Instant::now(), support::cpu_secs());
            let total: u64 = set.join_all().await.into_iter().sum();
            let cpu_us = (support::cpu_secs() - cpu) * 1e6 / total.max(1) as f64;
            (total as f64 / start.elapsed().as_secs_f64(), cpu_us)
        }
    };
    run(Duration::from_millis(300)).await; // warm-up: connections, allocator, caches
    run(dur).await
}

// ---- hookline --------------------------------------------------------------------------------

/// Where a phase's engines keep their journal.
#[derive(Clone, Copy)]
enum Store<'a> {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the run's durable PostgreSQL server.
    Postgres(&'a postgres::PgBench),
}

/// An engine on a fresh journal, and its directory (SQLite).
struct Journaled {
    engine: EngineHandle,
    _dir: Option<tempfile::TempDir>,
}

impl Journaled {
    /// One engine on a fresh journal of `store`.
    async fn open(store: Store<'_>, durability: Durability) -> Journaled {
        match store {
            Store::Sqlite => Journaled::start(durability).await,
            Store::Postgres(pg) => {
                let url = pg.fresh_database().await;
                Journaled::start_pg(&url, "n0", durability, postgres::LEASE_TTL).await
            }
        }
    }

    /// Node `node` of a cluster on the PostgreSQL database at `url`.
    async fn start_pg(url: &str, node: &str, durability: Durability, ttl: Duration) -> Journaled {
        let engine = Engine::builder()
            .postgres(url)
            .secret_key(postgres::KEY)
            .node_id(node)
            .lease_ttl(ttl)
            .durability(durability)
            .shutdown_grace(Duration::from_secs(5))
            .allow_networks(vec!["127.0.0.0/8".parse().expect("CIDR")])
            .build()
            .await
            .expect("engine starts on PostgreSQL");
        Journaled { engine, _dir: None }
    }

    async fn start(durability: Durability) -> Journaled {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut j = Journaled::at(&dir.path().join("hookline.db"), durability).await;
        j._dir = Some(dir);
        j
    }

    /// An engine on the journal at `path` (created if missing), which the caller keeps.
    async fn at(path: &std::path::Path, durability: Durability) -> Journaled {
        let engine = Engine::builder()
            .path(path)
            .durability(durability)
            .shutdown_grace(Duration::from_secs(5))
            // The receivers are on loopback, which the SSRF guard refuses by default.
            .allow_networks(vec!["127.0.0.0/8".parse().expect("CIDR")])
            .build()
            .await
            .expect("engine starts");
        Journaled { engine, _dir: None }
    }

    /// A tenant with `subs` subscriptions to `/s/0`…, paused when `paused`.
    async fn tenant(
        &self,
        tenant: &str,
        addr: SocketAddr,
        subs: u32,
        paused: bool,
    ) -> Vec<SubscriptionId> {
        self.engine
            .create_tenant(NewTenant {
                id: tenant.into(),
                name: tenant.into(),
                rate_limit: None,
            })
            .await
            .expect("create tenant");
        let mut ids = Vec::with_capacity(subs as usize);
        for k in 0..subs {
            let sub = NewSubscription::new(tenant, format!("http://{addr}/s/{k}"));
            let sub = self
                .engine
                .create_subscription(sub)
                .await
                .expect("create subscription");
            if paused {
                self.engine
                    .pause_subscription(&sub.id)
                    .await
                    .expect("pause subscription");
            }
            ids.push(sub.id);
        }
        ids
    }

    /// A tenant with `subs` active subscriptions to `/s/0`…, subscription `k` filtering
    /// `workflowIds: ["wf-k"]`.
    async fn routed_tenant(&self, tenant: &str, addr: SocketAddr, subs: u32) {
        self.engine
            .create_tenant(NewTenant {
                id: tenant.into(),
                name: tenant.into(),
                rate_limit: None,
            })
            .await
            .expect("create tenant");
        for k in 0..subs {
            let mut sub = NewSubscription::new(tenant, format!("http://{addr}/s/{k}"));
            sub.workflow_ids = vec![format!("wf-{k}")];
            self.engine
                .create_subscription(sub)
                .await
                .expect("create subscription");
        }
    }

    /// Publishes `range` in batches of [`BATCH`], in order, each fanning out to `subs`.
    async fn prepublish(&self, tenant: &str, range: std::ops::Range<u32>, subs: u32, pad: &str) {
        let ids: Vec<u32> = range.collect();
        for chunk in ids.chunks(BATCH) {
            let batch = chunk.iter().map(|i| event(tenant, *i, pad)).collect();
            for r in self
                .engine
                .publish_batch(batch)
                .await
                .expect("publish batch")
            {
                let r = r.expect("event accepted");
                assert_eq!(r.deliveries, subs, "fan-out of {}", r.id);
            }
        }
    }

    async fn shutdown(self) {
        self.engine.shutdown().await;
    }
}

/// Durable events/s through `publish` (batch `None`) or `publish_batch`, by [`PUBLISHERS`]
/// tasks, to one paused subscription; with the per-call latencies (ms).
async fn ingest(
    store: Store<'_>,
    addr: SocketAddr,
    n: u32,
    batch: Option<usize>,
    pad: &str,
) -> (f64, Vec<f64>) {
    let j = Journaled::open(store, Durability::Fsync).await;
    j.tenant("ingest", addr, 1, true).await;
    let mut lanes: Vec<Vec<Vec<EventInput>>> = vec![Vec::new(); PUBLISHERS];
    let events: Vec<EventInput> = (0..n).map(|i| event("ingest", i, pad)).collect();
    for (k, call) in events.chunks(batch.unwrap_or(1)).enumerate() {
        lanes[k % PUBLISHERS].push(call.to_vec());
    }
    let single = batch.is_none();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for lane in lanes {
        let engine = j.engine.clone();
        set.spawn(async move {
            let mut times = Vec::with_capacity(lane.len());
            for mut call in lane {
                let t = Instant::now();
                let receipts = if single {
                    let one = call.pop().expect("one event per call");
                    vec![engine.publish(one).await]
                } else {
                    engine.publish_batch(call).await.expect("publish batch")
                };
                times.push(t.elapsed().as_secs_f64() * 1e3);
                for r in receipts {
                    let r = r.expect("event accepted");
                    assert!(
                        r.deliveries == 1 && !r.duplicate,
                        "unexpected receipt {r:?}"
                    );
                }
            }
            times
        });
    }
    let times: Vec<f64> = set.join_all().await.into_iter().flatten().collect();
    let rate = f64::from(n) / start.elapsed().as_secs_f64();
    j.shutdown().await;
    (rate, sorted(times))
}

/// What a drain phase measured, with the engines left running (all subscriptions active).
struct Drained {
    j: Journaled,
    /// The other nodes of a PostgreSQL cluster.
    others: Vec<Journaled>,
    per_s: f64,
    /// CPU µs of the whole process per delivery.
    cpu_us: f64,
    order_violations: u64,
}

impl Drained {
    async fn shutdown(&self) {
        for o in &self.others {
            o.engine.shutdown().await;
        }
        self.j.engine.shutdown().await;
    }
}

/// Pre-publishes `events` events to `subs` paused subscriptions, resumes them all at once and
/// times until the receiver has every delivery. With PostgreSQL and `nodes` > 1, that many
/// engines share the database, and subscription `k` is resumed through node `k % nodes` (a
/// resume takes the subscription's lease on the node that carries it out), so each node
/// delivers its share.
#[allow(
    clippy::too_many_arguments,
    reason = "one phase, its knobs spelled out"
)]
async fn drain(
    rx: &Receiver,
    addr: SocketAddr,
    store: Store<'_>,
    durability: Durability,
    nodes: u32,
    subs: u32,
    events: u32,
    pad: &str,
) -> Drained {
    let (j, others) = match store {
        Store::Postgres(pg) if nodes > 1 => {
            let url = pg.fresh_database().await;
            let ttl = postgres::LEASE_TTL;
            let j = Journaled::start_pg(&url, "n0", durability, ttl).await;
            let mut others = Vec::new();
            for k in 1..nodes {
                others.push(Journaled::start_pg(&url, &format!("n{k}"), durability, ttl).await);
            }
            (j, others)
        }
        _ => (Journaled::open(store, durability).await, Vec::new()),
    };
    let ids = j.tenant("drain", addr, subs, true).await;
    j.prepublish("drain", 0..events, subs, pad).await;
    rx.take_arrivals();
    let expected = u64::from(events) * u64::from(subs);
    let target = rx.count() + expected;
    let (start, cpu) = (Instant::now(), support::cpu_secs());
    let mut set = JoinSet::new();
    for (k, id) in ids.into_iter().enumerate() {
        let engine = match k % (others.len() + 1) {
            0 => j.engine.clone(),
            n => others[n - 1].engine.clone(),
        };
        set.spawn(async move { engine.resume_subscription(&id).await.expect("resume") });
    }
    rx.wait_for(target, DRAIN_LIMIT).await;
    let per_s = expected as f64 / start.elapsed().as_secs_f64();
    let cpu_us = (support::cpu_secs() - cpu) * 1e6 / expected as f64;
    set.join_all().await;
    let arrivals = rx.take_arrivals();
    Drained {
        j,
        others,
        per_s,
        cpu_us,
        order_violations: order_violations(&arrivals),
    }
}

/// Keys of the ordering-keys phase.
const KEYS: u32 = 1_000;

/// Lanes of the ordering-keys phase, each a run of its own.
const KEY_LANES: [u16; 3] = [1, 16, 100];

/// What one ordering-keys drain measured.
struct KeyedDrain {
    lanes: u16,
    per_s: f64,
    cpu_us: f64,
    order_violations: u64,
}

/// `events` events over [`KEYS`] keys pre-published to one paused subscription with
/// `ordering: {key: "/payLoad/k", lanes}` (on a fresh journal of `store`, fsync), then
/// resumed: time until the receiver has every delivery, and the order violations per key.
async fn drain_keyed(
    rx: &Receiver,
    addr: SocketAddr,
    store: Store<'_>,
    lanes: u16,
    events: u32,
    pad: &str,
) -> KeyedDrain {
    let j = Journaled::open(store, Durability::Fsync).await;
    j.engine
        .create_tenant(NewTenant {
            id: "keys".into(),
            name: "keys".into(),
            rate_limit: None,
        })
        .await
        .expect("create tenant");
    let mut sub = NewSubscription::new("keys", format!("http://{addr}/s/0"));
    sub.ordering = Some(hookline::Ordering {
        key: "/payLoad/k".into(),
        lanes,
    });
    let sub = j
        .engine
        .create_subscription(sub)
        .await
        .expect("create subscription");
    j.engine
        .pause_subscription(&sub.id)
        .await
        .expect("pause subscription");
    let ids: Vec<u32> = (0..events).collect();
    for chunk in ids.chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|i| {
                EventInput::new("keys", format!("tx-{i}"), NotificationType::NodeEvent)
                    .id(format!("ev-{i}"))
                    .payload(serde_json::json!({ "i": i, "k": i % KEYS, "pad": pad }))
            })
            .collect();
        for r in j.engine.publish_batch(batch).await.expect("publish batch") {
            r.expect("event accepted");
        }
    }
    rx.take_arrivals();
    let target = rx.count() + u64::from(events);
    let (start, cpu) = (Instant::now(), support::cpu_secs());
    j.engine.resume_subscription(&sub.id).await.expect("resume");
    rx.wait_for(target, DRAIN_LIMIT).await;
    let per_s = f64::from(events) / start.elapsed().as_secs_f64();
    let cpu_us = (support::cpu_secs() - cpu) * 1e6 / f64::from(events);
    // Order per key: the key plays the part of the path.
    let by_key: Vec<Arrival> = rx
        .take_arrivals()
        .into_iter()
        .map(|a| Arrival {
            path: a.event % KEYS,
            ..a
        })
        .collect();
    j.shutdown().await;
    KeyedDrain {
        lanes,
        per_s,
        cpu_us,
        order_violations: order_violations(&by_key),
    }
}

/// Publish-call-start → receipt (ms) with one active subscription, one event at a time.
async fn idle_latency(
    rx: &Receiver,
    j: &Journaled,
    first: u32,
    samples: u32,
    pad: &str,
) -> Vec<f64> {
    rx.take_arrivals();
    let mut sent = Vec::with_capacity(samples as usize);
    for i in first..first + samples {
        let target = rx.count() + 1;
        sent.push(rx.now_ns());
        j.engine
            .publish(event("drain", i, pad))
            .await
            .expect("publish");
        rx.wait_for(target, DRAIN_LIMIT).await;
    }
    let lat = rx
        .take_arrivals()
        .iter()
        .map(|a| a.at_ns.saturating_sub(sent[(a.event - first) as usize]) as f64 / 1e6)
        .collect();
    sorted(lat)
}

/// One point of the loaded-latency sweep.
struct Loaded {
    /// Share of the measured fan-out drain rate offered.
    load: f64,
    events_per_s: f64,
    /// Deliveries offered per second (`events_per_s` × subscriptions).
    offered_per_s: f64,
    /// Deliveries received / (last receipt − first scheduled publish).
    delivered_per_s: f64,
    /// Whether the engine kept up: the last receipt came within a fifth of the publishing
    /// window after the last scheduled publish (else a backlog built up and the latencies
    /// mostly measure how long the window was).
    kept_up: bool,
    /// Sorted latencies, ms.
    lat: Vec<f64>,
}

impl Loaded {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "load": self.load,
            "events_per_s": r2(self.events_per_s),
            "offered_per_s": r2(self.offered_per_s),
            "delivered_per_s": r2(self.delivered_per_s),
            "kept_up": self.kept_up,
            "p50_ms": r2(pct(&self.lat, 50.0)),
            "p99_ms": r2(pct(&self.lat, 99.0)),
            "max_ms": r2(self.lat.last().copied().unwrap_or(f64::NAN)),
        })
    }
}

/// Publishes open-loop at `load` × `drain_per_s` deliveries/s for `dur` to `subs` active
/// subscriptions (events `first`…); latency is scheduled publish instant → receipt (ms), so a
/// stalled publisher does not hide its delay.
async fn loaded_latency(
    rx: &Receiver,
    j: &Journaled,
    subs: u32,
    first: u32,
    (load, drain_per_s): (f64, f64),
    dur: Duration,
    pad: &str,
) -> Loaded {
    let rate = (load * drain_per_s / f64::from(subs)).clamp(1.0, 10_000.0);
    rx.take_arrivals();
    let n = ((rate * dur.as_secs_f64()).round() as u32).max(10);
    let target = rx.count() + u64::from(n) * u64::from(subs);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut scheduled = Vec::with_capacity(n as usize);
    let mut set = JoinSet::new();
    for i in first..first + n {
        let at = ticks.tick().await.into_std();
        scheduled.push(at.saturating_duration_since(rx.base).as_nanos() as u64);
        let (engine, ev) = (j.engine.clone(), event("drain", i, pad));
        set.spawn(async move { engine.publish(ev).await.expect("publish") });
    }
    set.join_all().await;
    rx.wait_for(target, DRAIN_LIMIT).await;
    let arrivals = rx.take_arrivals();
    let first_ns = scheduled.first().copied().unwrap_or(0);
    let last_sched = scheduled.last().copied().unwrap_or(0);
    let last_ns = arrivals.iter().map(|a| a.at_ns).max().unwrap_or(first_ns);
    let lat = arrivals
        .iter()
        .map(|a| {
            a.at_ns
                .saturating_sub(scheduled[(a.event - first) as usize]) as f64
                / 1e6
        })
        .collect();
    Loaded {
        load,
        events_per_s: rate,
        offered_per_s: rate * f64::from(subs),
        delivered_per_s: arrivals.len() as f64 / ((last_ns - first_ns) as f64 / 1e9),
        kept_up: last_ns.saturating_sub(last_sched) as f64 <= dur.as_nanos() as f64 / 5.0,
        lat: sorted(lat),
    }
}

/// What the fixed-load phase measured.
struct Fixed {
    loaded: Loaded,
    /// Scheduled instant → `publish` returned (durable), ms, sorted: the journal's part of the
    /// latency (the rest is the delivery path's).
    publish: Vec<f64>,
    violations: u64,
}

impl Fixed {
    /// Publishes that returned more than `ms` after their scheduled instant.
    fn publishes_over(&self, ms: f64) -> usize {
        self.publish.iter().filter(|t| **t > ms).count()
    }

    /// Receipts that came more than `ms` after their event's scheduled instant.
    fn receipts_over(&self, ms: f64) -> usize {
        self.loaded.lat.iter().filter(|t| **t > ms).count()
    }
}

/// Publishes open-loop at `rate` events/s for `dur` to `tenant` (a
/// [`Journaled::routed_tenant`] of `subs` subscriptions), events `first`…, event `i` to
/// workflow `wf-{i % subs}` (so to exactly one subscription); latency is scheduled publish
/// instant → receipt (ms).
#[allow(
    clippy::too_many_arguments,
    reason = "one phase, its knobs spelled out"
)]
async fn fixed_load(
    rx: &Receiver,
    j: &Journaled,
    tenant: &str,
    subs: u32,
    first: u32,
    rate: f64,
    dur: Duration,
    pad: &str,
) -> Fixed {
    rx.take_arrivals();
    let n = ((rate * dur.as_secs_f64()).round() as u32).max(10);
    let target = rx.count() + u64::from(n);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut scheduled = Vec::with_capacity(n as usize);
    let mut set = JoinSet::new();
    for i in first..first + n {
        let at = ticks.tick().await.into_std();
        scheduled.push(at.saturating_duration_since(rx.base).as_nanos() as u64);
        let ev = event(tenant, i, pad).workflow_id(format!("wf-{}", i % subs));
        let (engine, base) = (j.engine.clone(), rx.base);
        set.spawn(async move {
            let r = engine.publish(ev).await.expect("publish");
            assert_eq!(r.deliveries, 1, "event {} is for one subscription", r.id);
            (i - first, r.seq, base.elapsed().as_nanos() as u64)
        });
    }
    let published = set.join_all().await;
    // Concurrent publishes may commit out of id order: the order to check is the journal's.
    let mut seqs = vec![0i64; n as usize];
    for (i, seq, _) in &published {
        seqs[*i as usize] = *seq;
    }
    let publish_lat = published
        .iter()
        .map(|(i, _, done)| done.saturating_sub(scheduled[*i as usize]) as f64 / 1e6)
        .collect();
    rx.wait_for(target, DRAIN_LIMIT).await;
    let arrivals = rx.take_arrivals();
    let first_ns = scheduled.first().copied().unwrap_or(0);
    let last_sched = scheduled.last().copied().unwrap_or(0);
    let last_ns = arrivals.iter().map(|a| a.at_ns).max().unwrap_or(first_ns);
    let lat = arrivals
        .iter()
        .map(|a| {
            a.at_ns
                .saturating_sub(scheduled[(a.event - first) as usize]) as f64
                / 1e6
        })
        .collect();
    let loaded = Loaded {
        load: 1.0,
        events_per_s: rate,
        offered_per_s: rate,
        delivered_per_s: arrivals.len() as f64 / ((last_ns - first_ns) as f64 / 1e9),
        kept_up: last_ns.saturating_sub(last_sched) as f64 <= dur.as_nanos() as f64 / 5.0,
        lat: sorted(lat),
    };
    let violations = order_violations_by(&arrivals, |event| seqs[(event - first) as usize]);
    Fixed {
        loaded,
        publish: sorted(publish_lat),
        violations,
    }
}

/// A journal that already holds many finished deliveries, for the fixed load on a large
/// journal. Built once per bench process and reused by every run (each run adds its own
/// events, numbered from `next_event`).
struct BigJournal {
    dir: tempfile::TempDir,
    /// Delivered deliveries (with their attempts) written by the bulk insert.
    deliveries: u64,
    /// The journal file's size after the build, MiB.
    size_mb: f64,
    build_s: f64,
    next_event: u32,
}

/// Tenant of the fixed-load phases.
const FIXED_TENANT: &str = "fixed";
/// Subscriptions of the fixed-load phases.
const FIXED_SUBS: u32 = 100;

impl BigJournal {
    /// A journal with the routed tenant's [`FIXED_SUBS`] subscriptions, then `deliveries`
    /// events written straight into the file with SQL, each with one delivered delivery (to
    /// subscription `seq % subs`) and its one attempt, accepted over the last six hours (inside
    /// retention: nothing is pruned during the run). Much faster than publishing and
    /// delivering them (a bulk insert runs a few hundred thousand rows a second); the rows are
    /// the ones the engine would have written, except for a shorter payload (about 200 bytes,
    /// to keep the file near a gigabyte).
    async fn build(addr: SocketAddr, deliveries: u32) -> BigJournal {
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("hookline.db");
        let j = Journaled::at(&path, Durability::Fsync).await;
        j.routed_tenant(FIXED_TENANT, addr, FIXED_SUBS).await;
        j.shutdown().await;
        let p = path.clone();
        tokio::task::spawn_blocking(move || bulk_insert(&p, deliveries))
            .await
            .expect("bulk insert task")
            .expect("bulk insert");
        let size_mb = std::fs::metadata(&path).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
        BigJournal {
            dir,
            deliveries: u64::from(deliveries),
            size_mb,
            build_s: started.elapsed().as_secs_f64(),
            next_event: 0,
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("hookline.db")
    }
}

/// The bulk insert of [`BigJournal::build`], on the closed journal file.
fn bulk_insert(path: &std::path::Path, n: u32) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    // Nothing here must survive a crash of the bench: no fsync, a large page cache.
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let six_hours = 6 * 3_600_000i64;
    let t0 = now - six_hours;
    let step = (six_hours / i64::from(n.max(1))).max(1);
    let pad = "p".repeat(120);
    conn.execute(
        "CREATE TEMP TABLE subs_k AS SELECT id, ROW_NUMBER() OVER (ORDER BY id) - 1 AS k \
         FROM subscriptions WHERE tenant_id = ?1",
        [FIXED_TENANT],
    )?;
    conn.execute_batch("CREATE UNIQUE INDEX temp.subs_k_by_k ON subs_k(k); BEGIN;")?;
    conn.execute(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ?1 - 1) \
         INSERT INTO events (tenant_id, id, notification_type, body, created_at) \
         SELECT ?2, 'old-' || i, 'NODE_EVENT', \
           json_object('id', 'old-' || i, 'tenantId', ?2, 'transactionId', 'tx-old-' || i, \
             'notificationType', 'NODE_EVENT', 'workflowId', 'wf-' || (i % ?3), \
             'payLoad', json_object('i', i, 'pad', ?4), \
             'timestamp', '2026-01-01T00:00:00.000Z'), \
           ?5 + i * ?6 \
         FROM c",
        rusqlite::params![n, FIXED_TENANT, FIXED_SUBS, pad, t0, step],
    )?;
    conn.execute(
        "INSERT INTO deliveries (subscription_id, event_seq, state, attempts, last_status, \
           updated_at) \
         SELECT s.id, e.seq, 'delivered', 1, 200, e.created_at + 2 \
         FROM events e JOIN subs_k s ON s.k = e.seq % ?2 WHERE e.tenant_id = ?1",
        rusqlite::params![FIXED_TENANT, FIXED_SUBS],
    )?;
    conn.execute(
        "INSERT INTO attempts (delivery_id, n, started_at, duration_ms, status_code) \
         SELECT id, 1, updated_at - 1, 1, 200 FROM deliveries WHERE state = 'delivered'",
        [],
    )?;
    conn.execute_batch("COMMIT;")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    // The file stands for a journal that grew over months, not one just written: without
    // this, the kernel writes back the gigabyte of dirty pages during the measured run, and
    // every fsync of the engine's WAL queues behind that (measured: fsyncs of 25-146 ms and
    // 430 publishes over 50 ms in the run right after the build, none in the next ones).
    let flushed = std::fs::File::open(path).and_then(|f| f.sync_all());
    flushed.map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

// ---- main ------------------------------------------------------------------------------------

fn main() {
    // Off by default: logging costs CPU the figures would carry. `HOOKLINE_BENCH_LOG=debug`
    // (an env filter) shows what the engines do, e.g. while profiling a phase.
    if let Ok(filter) = std::env::var("HOOKLINE_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let sizes = Sizes::from_args();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // `HOOKLINE_BENCH_WORKERS=N`: the runtime's worker threads (default: one per core), to see
    // what spreading one subscription's loop over several workers costs on a given machine.
    if let Some(n) = std::env::var("HOOKLINE_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build().expect("tokio runtime");
    runtime.block_on(run_all(sizes));
}

/// `--runs` runs, each printing its table; the last stdout line is the one run's JSON object,
/// or with several runs the summary's.
async fn run_all(sz: Sizes) {
    let begun = Instant::now();
    let (rx, addr) = Receiver::start(begun).await;
    let mut big = None;
    let mut each = Vec::new();
    for r in 0..sz.runs {
        if sz.runs > 1 {
            eprintln!("e2e: run {} of {}", r + 1, sz.runs);
        }
        each.push(run(&sz, &rx, addr, begun, &mut big).await);
    }
    let last = if each.len() == 1 {
        each.pop().unwrap_or_default()
    } else {
        summary(&each)
    };
    println!("{last}");
}

/// Figures shown in the summary of several runs (median, then the range), in this order.
const HEADLINE: &[&str] = &[
    "seq_ratio",
    "conc_ratio",
    "conc_cpu_ratio",
    "keys_lanes_100_vs_100_subs",
    "keys_lanes_100_vs_ceiling",
    "deliveries_1_cpu_us",
    "deliveries_100_cpu_us",
    "ingest_per_s",
    "ingest_batch_per_s",
    "latency_idle_p99_ms",
    "sweep_p99_ms_at_10",
    "sweep_p99_ms_at_25",
    "sweep_p99_ms_at_50",
    "sweep_p99_ms_at_80",
    "p99_ms_at_1k",
    "publish_p99_ms_at_1k",
    "publishes_over_50ms_at_1k",
    "p99_ms_at_1k_big",
    "publish_p99_ms_at_1k_big",
    "publishes_over_50ms_at_1k_big",
    "run_delay_ms_per_s",
];

/// Median, minimum and maximum of every numeric figure over `runs`, with the runs themselves.
fn summary(runs: &[serde_json::Value]) -> serde_json::Value {
    let mut keys: Vec<&str> = Vec::new();
    for r in runs {
        for (k, v) in r.as_object().into_iter().flatten() {
            if v.is_number() && !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let (mut median, mut min, mut max) = Default::default();
    let spread = |map: &mut serde_json::Map<String, serde_json::Value>, k: &str, x: f64| {
        map.insert(k.to_owned(), round(x, 4));
    };
    let mut table = Vec::new();
    for k in keys {
        let v = sorted(runs.iter().filter_map(|r| r.get(k)?.as_f64()).collect());
        if v.is_empty() {
            continue;
        }
        let mid = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        spread(&mut median, k, mid);
        spread(&mut min, k, v[0]);
        spread(&mut max, k, v[v.len() - 1]);
        if HEADLINE.contains(&k) {
            table.push((k, mid, v));
        }
    }
    table.sort_by_key(|(k, ..)| HEADLINE.iter().position(|h| h == k));
    println!();
    println!(
        "hookline e2e: {} runs, median (min – max) and each run",
        runs.len()
    );
    for (k, mid, v) in table {
        let each: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
        println!(
            "  {k:<32} {mid:>10.3}  ({:.3} – {:.3})   [{}]",
            v[0],
            v[v.len() - 1],
            each.join(", ")
        );
    }
    serde_json::json!({
        "runs": runs.len(),
        "median": median,
        "min": min,
        "max": max,
        "each": runs,
    })
}

/// The figures of a drain, once its engines are shut down (NaN when the phase did not run).
struct DrainFigures {
    per_s: f64,
    cpu_us: f64,
    order_violations: u64,
}

impl DrainFigures {
    const NONE: DrainFigures = DrainFigures {
        per_s: f64::NAN,
        cpu_us: f64::NAN,
        order_violations: 0,
    };

    async fn of(d: Drained) -> DrainFigures {
        d.shutdown().await;
        DrainFigures {
            per_s: d.per_s,
            cpu_us: d.cpu_us,
            order_violations: d.order_violations,
        }
    }
}

/// Milliseconds this process's threads spent runnable but waiting for a CPU (the kernel's
/// schedstat run delay, summed over its threads), so far. On a shared machine, the part of a
/// latency that was the machine's rather than the engine's.
fn run_delay_ms() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e6
}

/// One full run (or the phases `--only` names); prints its table and returns its JSON object.
async fn run(
    sz: &Sizes,
    rx: &Receiver,
    addr: SocketAddr,
    begun: Instant,
    big: &mut Option<BigJournal>,
) -> serde_json::Value {
    let started = Instant::now();
    let delay_at_start = run_delay_ms();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pad = pad();
    let body = ceiling_body(&pad);
    // VmRSS at the start of each phase: cheap, and shows which phase holds memory.
    let rss = Mutex::new(serde_json::Map::new());
    let step = |what: &str| {
        let mb = support::status_mb("VmRSS");
        eprintln!(
            "e2e [{:>5.1}s] {what} (RSS {mb:.0} MiB)",
            begun.elapsed().as_secs_f64()
        );
        rss.lock()
            .expect("rss lock")
            .insert(what.to_owned(), r2(mb));
    };
    let nan2 = (f64::NAN, f64::NAN);

    let (mut fsync_p50, mut fsync_p99) = nan2;
    let (mut ceiling_seq, mut ceiling_seq_cpu) = nan2;
    let (mut ceiling_conc, mut ceiling_conc_cpu) = nan2;
    if sz.wants("ceilings") {
        step("fsync probe");
        (fsync_p50, fsync_p99) = fsync_probe(sz.fsync_samples).await;
        step("ceiling: sequential");
        (ceiling_seq, ceiling_seq_cpu) = ceiling(addr, 1, sz.ceiling_for, &body).await;
        step("ceiling: concurrent");
        (ceiling_conc, ceiling_conc_cpu) = ceiling(addr, sz.subs, sz.ceiling_for, &body).await;
    }

    let sq = Store::Sqlite;
    let (mut ingest_rate, mut ingest_lat) = (f64::NAN, Vec::new());
    let (mut batch_rate, mut batch_lat) = (f64::NAN, Vec::new());
    if sz.wants("ingest") {
        step("ingest: publish");
        (ingest_rate, ingest_lat) = ingest(sq, addr, sz.events, None, &pad).await;
        step("ingest: publish_batch");
        (batch_rate, batch_lat) = ingest(sq, addr, sz.events, Some(BATCH), &pad).await;
    }

    let fsync = Durability::Fsync;
    let (mut one, mut one_os, mut idle) = (DrainFigures::NONE, DrainFigures::NONE, Vec::new());
    if sz.wants("single") {
        step("deliveries: 1 subscription");
        let drained = drain(rx, addr, sq, fsync, 1, 1, sz.single, &pad).await;
        step("latency: idle");
        idle = idle_latency(rx, &drained.j, sz.single, sz.idle_samples, &pad).await;
        one = DrainFigures::of(drained).await;
        step("deliveries: 1 subscription, durability os");
        let drained = drain(rx, addr, sq, Durability::Os, 1, 1, sz.single, &pad).await;
        one_os = DrainFigures::of(drained).await;
    }

    let (mut fan, mut sweep) = (DrainFigures::NONE, Vec::new());
    if sz.wants("fan") {
        let fan_events = (sz.events / sz.subs).max(1);
        step("deliveries: fan-out");
        let drained = drain(rx, addr, sq, fsync, 1, sz.subs, fan_events, &pad).await;
        let mut next = fan_events;
        for &load in &sz.latency_loads {
            step(&format!("latency: fan-out at {:.0}% load", load * 100.0));
            let point = (load, drained.per_s);
            let l =
                loaded_latency(rx, &drained.j, sz.subs, next, point, sz.latency_for, &pad).await;
            next += (l.events_per_s * sz.latency_for.as_secs_f64())
                .round()
                .max(10.0) as u32;
            sweep.push(l);
        }
        fan = DrainFigures::of(drained).await;
    }

    let mut keyed = Vec::new();
    if sz.wants("keys") {
        let deliveries = (sz.events / sz.subs).max(1) * sz.subs;
        for lanes in KEY_LANES {
            step(&format!("deliveries: ordering keys, {lanes} lanes"));
            keyed.push(drain_keyed(rx, addr, Store::Sqlite, lanes, deliveries, &pad).await);
        }
    }

    let mut fixed = None;
    if sz.wants("fixed") {
        step("latency: fixed 1,000 events/s over 100 subscriptions");
        let j = Journaled::start(fsync).await;
        j.routed_tenant(FIXED_TENANT, addr, FIXED_SUBS).await;
        let (subs, rate) = (FIXED_SUBS, 1_000.0);
        fixed = Some(fixed_load(rx, &j, FIXED_TENANT, subs, 0, rate, sz.fixed_for, &pad).await);
        j.shutdown().await;
    }
    let mut fixed_big = None;
    if sz.wants("fixed_big") {
        if big.is_none() {
            step(&format!(
                "latency: building a journal of {} deliveries",
                sz.big_deliveries
            ));
            *big = Some(BigJournal::build(addr, sz.big_deliveries).await);
        }
        if let Some(b) = big.as_mut() {
            step("latency: fixed 1,000 events/s over 100 subscriptions, large journal");
            let j = Journaled::at(&b.path(), fsync).await;
            let (subs, rate, first) = (FIXED_SUBS, 1_000.0, b.next_event);
            let f = fixed_load(rx, &j, FIXED_TENANT, subs, first, rate, sz.fixed_for, &pad).await;
            j.shutdown().await;
            b.next_event += f.publish.len() as u32;
            fixed_big = Some(f);
        }
    }

    let mut pg = None;
    if sz.wants("postgres") {
        step("postgres: starting a durable server");
        if let Some(server) = postgres::PgBench::start().await {
            pg = Some(postgres::run(rx, addr, &server, sz, &pad, &step).await);
        }
    }
    step("done");
    let elapsed = started.elapsed().as_secs_f64();
    let run_delay = (run_delay_ms() - delay_at_start) / elapsed;
    let peak_rss = support::status_mb("VmHWM");
    // The headline latency: the highest load the engine kept up with (else the lowest tried).
    let headline = sweep.iter().rev().find(|l| l.kept_up).or(sweep.first());

    let seq_ratio = one.per_s / ceiling_seq;
    let conc_ratio = fan.per_s / ceiling_conc;
    let keys_violations: u64 = keyed.iter().map(|k| k.order_violations).sum();
    let violations = one.order_violations
        + one_os.order_violations
        + fan.order_violations
        + keys_violations
        + fixed.as_ref().map_or(0, |f| f.violations)
        + fixed_big.as_ref().map_or(0, |f| f.violations)
        + pg.as_ref().map_or(0, |p| p.order_violations);
    let s = sz.subs;
    let ms = |v: &[f64]| format!("p50 {:.2} ms, p99 {:.2} ms", pct(v, 50.0), pct(v, 99.0));
    let row = |label: String, value: String| println!("  {label:<44} {value}");

    println!();
    println!(
        "hookline e2e ({} run: events {}, single {}, subs {s}, {cores} cores, {elapsed:.0} s{})",
        if sz.quick { "quick" } else { "full" },
        sz.events,
        sz.single,
        match &sz.only {
            Some(o) => format!(", only {}", o.join(",")),
            None => String::new(),
        }
    );
    row(
        "run queue wait of this process".into(),
        format!("{run_delay:.1} ms per second (a CPU was not free for its runnable threads)"),
    );
    if sz.wants("ceilings") {
        println!("floor and ceilings (same process, loopback, bare hyper receiver answering 200)");
        row(
            "fsync: 1 KiB append + fsync".into(),
            format!("p50 {fsync_p50:.3} ms, p99 {fsync_p99:.3} ms"),
        );
        row(
            "reqwest, 1 request at a time".into(),
            format!(
                "{ceiling_seq:>8.0} req/s   {:.0} µs/request, cpu {ceiling_seq_cpu:.0} µs",
                1e6 / ceiling_seq
            ),
        );
        row(
            format!("reqwest, {s} sequential streams"),
            format!("{ceiling_conc:>8.0} req/s   cpu {ceiling_conc_cpu:.0} µs/request"),
        );
    }
    println!("hookline (SQLite file in a temp dir, durability fsync unless noted)");
    if sz.wants("ingest") {
        row(
            format!("ingest: publish, {PUBLISHERS} publishers"),
            format!("{ingest_rate:>8.0} ev/s    per call {}", ms(&ingest_lat)),
        );
        row(
            format!("ingest: publish_batch({BATCH}), {PUBLISHERS} publishers"),
            format!("{batch_rate:>8.0} ev/s    per call {}", ms(&batch_lat)),
        );
    }
    if sz.wants("single") {
        row(
            "deliveries, 1 subscription".into(),
            format!(
                "{:>8.0} /s       seq_ratio  {seq_ratio:.3}   {:.0} µs/delivery, cpu {:.0} µs",
                one.per_s,
                1e6 / one.per_s,
                one.cpu_us
            ),
        );
        row(
            "deliveries, 1 subscription, durability os".into(),
            format!(
                "{:>8.0} /s       seq_ratio  {:.3}   {:.0} µs/delivery",
                one_os.per_s,
                one_os.per_s / ceiling_seq,
                1e6 / one_os.per_s
            ),
        );
        row("latency, 1 subscription, idle".into(), ms(&idle));
    }
    if sz.wants("fan") {
        row(
            format!("deliveries, {s} subscriptions"),
            format!(
                "{:>8.0} /s       conc_ratio {conc_ratio:.3}   cpu {:.0} µs/delivery",
                fan.per_s, fan.cpu_us
            ),
        );
    }
    for k in &keyed {
        row(
            format!("deliveries, 1 subscription, {} lanes, {KEYS} keys", k.lanes),
            format!(
                "{:>8.0} /s       vs {s} subs {:.3}   vs ceiling {:.3}   cpu {:.0} µs/delivery",
                k.per_s,
                k.per_s / fan.per_s,
                k.per_s / ceiling_conc,
                k.cpu_us
            ),
        );
    }
    for l in &sweep {
        row(
            format!(
                "latency, {s} subs, {:.0}% load ({:.0} ev/s)",
                l.load * 100.0,
                l.events_per_s
            ),
            format!(
                "{}, max {:.2} ms; offered {:.0}, delivered {:.0} /s{}",
                ms(&l.lat),
                l.lat.last().copied().unwrap_or(f64::NAN),
                l.offered_per_s,
                l.delivered_per_s,
                if l.kept_up { "" } else { "  FELL BEHIND" }
            ),
        );
    }
    let fixed_rows = |label: String, f: &Fixed| {
        row(
            label,
            format!(
                "{}, max {:.2} ms; delivered {:.0} /s{}",
                ms(&f.loaded.lat),
                f.loaded.lat.last().copied().unwrap_or(f64::NAN),
                f.loaded.delivered_per_s,
                if f.loaded.kept_up {
                    ""
                } else {
                    "  FELL BEHIND"
                }
            ),
        );
        row(
            "  of which scheduled → publish returned".into(),
            format!(
                "{}, max {:.2} ms; {} of {} over 50 ms",
                ms(&f.publish),
                f.publish.last().copied().unwrap_or(f64::NAN),
                f.publishes_over(50.0),
                f.publish.len()
            ),
        );
    };
    let secs = sz.fixed_for.as_secs_f64();
    if let Some(f) = &fixed {
        fixed_rows(
            format!("latency, 1,000 ev/s over 100 subs ({secs:.1} s)"),
            f,
        );
    }
    if let (Some(f), Some(b)) = (&fixed_big, big.as_ref()) {
        fixed_rows(
            format!(
                "the same, journal of {:.1} M deliveries",
                b.deliveries as f64 / 1e6
            ),
            f,
        );
        row(
            "  journal built in".into(),
            format!("{:.1} s, {:.0} MiB", b.build_s, b.size_mb),
        );
    }
    if let Some(p) = &pg {
        let keyed_100 = keyed
            .iter()
            .find(|k| k.lanes == 100)
            .map_or(f64::NAN, |k| k.per_s);
        postgres_rows(
            p,
            (ingest_rate, batch_rate, one.per_s, fan.per_s, keyed_100),
        );
    }
    row("peak RSS (VmHWM)".into(), format!("{peak_rss:.0} MiB"));
    row(
        "per-subscription order violations".into(),
        violations.to_string(),
    );
    if violations > 0 {
        eprintln!("e2e: WARNING: {violations} deliveries arrived duplicated or out of order");
    }

    let mut json = serde_json::json!({
        "quick": sz.quick,
        "cores": cores,
        "events": sz.events,
        "single_events": sz.single,
        "subs": s,
        "only": sz.only,
        "run_delay_ms_per_s": r2(run_delay),
        "fsync_p50_ms": round(fsync_p50, 3),
        "fsync_p99_ms": round(fsync_p99, 3),
        "ceiling_seq_rps": r2(ceiling_seq),
        "ceiling_conc_rps": r2(ceiling_conc),
        "ingest_per_s": r2(ingest_rate),
        "ingest_p50_ms": r2(pct(&ingest_lat, 50.0)),
        "ingest_p99_ms": r2(pct(&ingest_lat, 99.0)),
        "ingest_batch_per_s": r2(batch_rate),
        "ingest_batch_p50_ms": r2(pct(&batch_lat, 50.0)),
        "ingest_batch_p99_ms": r2(pct(&batch_lat, 99.0)),
        "deliveries_1_per_s": r2(one.per_s),
        "deliveries_1_os_per_s": r2(one_os.per_s),
        "deliveries_100_per_s": r2(fan.per_s),
        "ceiling_seq_cpu_us": r2(ceiling_seq_cpu),
        "ceiling_conc_cpu_us": r2(ceiling_conc_cpu),
        "deliveries_1_cpu_us": r2(one.cpu_us),
        "deliveries_100_cpu_us": r2(fan.cpu_us),
        "conc_cpu_ratio": round(ceiling_conc_cpu / fan.cpu_us, 4),
        "seq_ratio": round(seq_ratio, 4),
        "conc_ratio": round(conc_ratio, 4),
        "latency_idle_p50_ms": r2(pct(&idle, 50.0)),
        "latency_idle_p99_ms": r2(pct(&idle, 99.0)),
        "latency_100_p50_ms": r2(headline.map_or(f64::NAN, |h| pct(&h.lat, 50.0))),
        "latency_100_p99_ms": r2(headline.map_or(f64::NAN, |h| pct(&h.lat, 99.0))),
        "latency_100_max_ms": r2(headline
            .and_then(|h| h.lat.last().copied())
            .unwrap_or(f64::NAN)),
        "latency_100_load": headline.map(|h| h.load),
        "latency_100_events_per_s": r2(headline.map_or(f64::NAN, |h| h.events_per_s)),
        "latency_100_kept_up": headline.map(|h| h.kept_up),
        "latency_100_sweep": sweep.iter().map(Loaded::json).collect::<Vec<_>>(),
        "fixed_secs": r2(sz.fixed_for.as_secs_f64()),
        "peak_rss_mb": r2(peak_rss),
        "rss_mb": serde_json::Value::Object(rss.into_inner().expect("rss lock")),
        "order_violations": violations,
        "keys": KEYS,
        "keys_events": (sz.events / s).max(1) * s,
        "keys_lanes_1_per_s": keyed.first().map(|k| r2(k.per_s)),
        "keys_lanes_16_per_s": keyed.get(1).map(|k| r2(k.per_s)),
        "keys_lanes_100_per_s": keyed.get(2).map(|k| r2(k.per_s)),
        "keys_lanes_1_vs_100_subs": keyed.first().map(|k| round(k.per_s / fan.per_s, 4)),
        "keys_lanes_16_vs_100_subs": keyed.get(1).map(|k| round(k.per_s / fan.per_s, 4)),
        "keys_lanes_100_vs_100_subs": keyed.get(2).map(|k| round(k.per_s / fan.per_s, 4)),
        "keys_lanes_100_vs_ceiling": keyed.get(2).map(|k| round(k.per_s / ceiling_conc, 4)),
        "keys_cpu_us": keyed.iter().map(|k| r2(k.cpu_us)).collect::<Vec<_>>(),
        "keys_order_violations": keys_violations,
        "postgres": pg.as_ref().map(postgres::Figures::json),
        "elapsed_s": r2(elapsed),
    });
    if let Some(obj) = json.as_object_mut() {
        // Each sweep point's p99 as a figure of its own, so several runs can be summarised.
        for l in &sweep {
            let key = format!("sweep_p99_ms_at_{:.0}", l.load * 100.0);
            obj.insert(key, r2(pct(&l.lat, 99.0)));
        }
        for (suffix, f) in [("", &fixed), ("_big", &fixed_big)] {
            let Some(f) = f else { continue };
            let figures = [
                ("p50_ms_at_1k", r2(pct(&f.loaded.lat, 50.0))),
                ("p99_ms_at_1k", r2(pct(&f.loaded.lat, 99.0))),
                (
                    "max_ms_at_1k",
                    r2(f.loaded.lat.last().copied().unwrap_or(f64::NAN)),
                ),
                ("publish_p50_ms_at_1k", r2(pct(&f.publish, 50.0))),
                ("publish_p99_ms_at_1k", r2(pct(&f.publish, 99.0))),
                (
                    "publish_max_ms_at_1k",
                    r2(f.publish.last().copied().unwrap_or(f64::NAN)),
                ),
                ("publishes_over_50ms_at_1k", f.publishes_over(50.0).into()),
                ("receipts_over_50ms_at_1k", f.receipts_over(50.0).into()),
                ("kept_up_at_1k", f.loaded.kept_up.into()),
                ("order_violations_at_1k", f.violations.into()),
            ];
            for (k, v) in figures {
                obj.insert(format!("{k}{suffix}"), v);
            }
        }
        if let Some(b) = big.as_ref().filter(|_| fixed_big.is_some()) {
            obj.insert("big_journal_deliveries".into(), b.deliveries.into());
            obj.insert("big_journal_mb".into(), r2(b.size_mb));
            obj.insert("big_journal_build_s".into(), r2(b.build_s));
        }
    }
    json
}

/// The PostgreSQL column: each figure beside the SQLite one of the same run (`sqlite`: ingest,
/// `publish_batch`, 1 subscription, `--subs` subscriptions).
fn postgres_rows(p: &postgres::Figures, sqlite: (f64, f64, f64, f64, f64)) {
    let row = |label: String, value: String| println!("  {label:<44} {value}");
    let ms = |v: &[f64]| format!("p50 {:.2} ms, p99 {:.2} ms", pct(v, 50.0), pct(v, 99.0));
    println!(
        "hookline on PostgreSQL (its own server: fsync=on, synchronous_commit=on; nodes are \
         engines in this process), SQLite of this run beside"
    );
    row(
        format!("pg ingest: publish, {PUBLISHERS} publishers"),
        format!(
            "{:>8.0} ev/s    sqlite {:.0}, ratio {:.3}; per call {}",
            p.ingest_per_s,
            sqlite.0,
            p.ingest_per_s / sqlite.0,
            ms(&p.ingest_lat)
        ),
    );
    row(
        format!("pg ingest: publish_batch({BATCH})"),
        format!(
            "{:>8.0} ev/s    sqlite {:.0}, ratio {:.3}; per call {}",
            p.batch_per_s,
            sqlite.1,
            p.batch_per_s / sqlite.1,
            ms(&p.batch_lat)
        ),
    );
    for (what, subs, nodes, per_s, cpu) in &p.drains {
        let base = if *subs == 1 { sqlite.2 } else { sqlite.3 };
        row(
            format!("pg deliveries, {what}"),
            format!(
                "{per_s:>8.0} /s       sqlite {base:.0}, ratio {:.3}; cpu {cpu:.0} µs/delivery{}",
                per_s / base,
                if *nodes > 1 { " (all nodes)" } else { "" }
            ),
        );
    }
    let (per_s, cpu) = p.keyed;
    row(
        format!("pg deliveries, 1 subscription, 100 lanes, {KEYS} keys"),
        format!(
            "{per_s:>8.0} /s       sqlite {:.0}, ratio {:.3}; cpu {cpu:.0} µs/delivery",
            sqlite.4,
            per_s / sqlite.4
        ),
    );
    let t = &p.takeover;
    row(
        format!("pg takeover of a killed node ({} subs)", t.ms.len()),
        format!(
            "p50 {:.0} ms, max {:.0} ms (lease TTL {} ms); duplicates {}, reordered {}",
            pct(&t.ms, 50.0),
            t.ms.last().copied().unwrap_or(f64::NAN),
            postgres::LEASE_TTL.as_millis(),
            t.duplicates,
            t.reordered
        ),
    );
}
