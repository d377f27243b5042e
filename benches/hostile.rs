//! Slow and hostile receivers at scale (guarantee 6, isolation): does a crowd of bad receivers
//! slow down the good ones?
//!
//! `cargo bench --bench hostile -- [--quick] [--secs N] [--rounds N] [--good N] [--hang N]
//! [--slow N] [--rate N]`
//!
//! Everything runs in one process: hookline embedded on a SQLite file (fsync), and one bare hyper
//! receiver on loopback whose answer depends on the path: `/ok/k` answers 200 at once, `/hang/k`
//! never answers (the attempt runs into the subscription's timeout, then is retried), `/slow/k`
//! answers 200 after a delay. Each round runs two phases on fresh journals, in alternating order
//! so that drift on the shared machine falls on both:
//!
//! - **baseline**: `--good` (800) subscriptions to `/ok/k`;
//! - **hostile**: the same 800, plus `--hang` (100) to `/hang/k` and `--slow` (100) to `/slow/k`.
//!
//! In both phases the same open-loop stream of events is published for `--secs` seconds at
//! `--rate` (1 event/s per subscription, 1,000 events/s in all) over 1,000 workflow ids, one per
//! subscription (subscription `k` filters `workflowIds: ["wf-k"]`), so ingest is identical and
//! only the receivers differ: in the baseline the hostile workflows' events match nothing. The
//! hostile subscriptions get their events from the start, so during the measured window the
//! hanging ones always hold an open attempt and keep timing out (timeout 2 s, retried after
//! 10 ms, 20 attempts) and the slow ones are always busy (answer after 500 ms). The figure is the
//! good subscriptions' p99 publish→receipt (scheduled publish instant → body read at the
//! receiver), hostile over baseline; the target is ≤ 1.2. `--quick` (CI): 3 s phases, one round.
//!
//! The table goes to stdout; the last stdout line is one JSON object with every figure.

#![allow(clippy::print_stdout, reason = "a benchmark's report is its stdout")]

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline::{
    Durability, Engine, EngineHandle, EventInput, FailurePolicy, NewSubscription, NewTenant,
    NotificationType, RetryPolicy,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The hanging subscriptions' attempt timeout.
const HANG_TIMEOUT_MS: u64 = 2_000;
/// How long a slow receiver takes to answer.
const SLOW: Duration = Duration::from_millis(500);
/// Longest wait for the good deliveries of a phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct Sizes {
    secs: f64,
    rounds: u32,
    good: u32,
    hang: u32,
    slow: u32,
    rate: f64,
}

impl Sizes {
    fn from_args() -> Sizes {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut s = Sizes {
            secs: if quick { 3.0 } else { 10.0 },
            rounds: if quick { 1 } else { 3 },
            good: 800,
            hang: 100,
            slow: 100,
            rate: 1000.0,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || -> f64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{a} needs a number"))
            };
            match a.as_str() {
                "--secs" => s.secs = val(),
                "--rounds" => s.rounds = val() as u32,
                "--good" => s.good = val() as u32,
                "--hang" => s.hang = val() as u32,
                "--slow" => s.slow = val() as u32,
                "--rate" => s.rate = val(),
                // `cargo bench` passes `--bench`; `--quick` is read above.
                _ => {}
            }
        }
        s
    }

    fn total(&self) -> u32 {
        self.good + self.hang + self.slow
    }
}

/// What the receiver saw: the good paths' arrivals, and the hostile requests.
#[derive(Debug)]
struct Receiver {
    base: Instant,
    /// (subscription k, event i, ns since `base`) for `/ok/k`.
    arrivals: Mutex<Vec<(u32, u32, u64)>>,
    hung: AtomicU64,
    slow: AtomicU64,
}

impl Receiver {
    async fn start(base: Instant) -> (Arc<Receiver>, SocketAddr) {
        let rx = Arc::new(Receiver {
            base,
            arrivals: Mutex::new(Vec::new()),
            hung: AtomicU64::new(0),
            slow: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
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
        let path = req.uri().path().to_owned();
        let event = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|id| id.strip_prefix("ev-"))
            .and_then(|i| i.parse::<u32>().ok());
        let _ = req.into_body().collect().await;
        if let Some(k) = path.strip_prefix("/ok/").and_then(|k| k.parse().ok()) {
            let at = self.base.elapsed().as_nanos() as u64;
            if let Some(i) = event {
                self.arrivals.lock().expect("arrivals").push((k, i, at));
            }
        } else if path.starts_with("/hang/") {
            self.hung.fetch_add(1, Ordering::Relaxed);
            // Far past the attempt timeout: the engine gives up first.
            tokio::time::sleep(Duration::from_secs(600)).await;
        } else {
            tokio::time::sleep(SLOW).await;
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Response::new(Empty::new()))
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn r2(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64((x * 100.0).round() / 100.0)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// One phase's figures.
#[derive(Debug)]
struct Phase {
    p50: f64,
    p99: f64,
    max: f64,
    good_deliveries: usize,
    order_violations: u64,
    hung: u64,
    slow: u64,
    peak_rss_mb: f64,
}

async fn engine(dir: &tempfile::TempDir) -> EngineHandle {
    let engine = Engine::builder()
        .path(dir.path().join("hookline.db"))
        .durability(Durability::Fsync)
        .shutdown_grace(Duration::from_millis(500))
        .allow_networks(vec!["127.0.0.0/8".parse().expect("CIDR")])
        .build()
        .await
        .expect("engine starts");
    engine
        .create_tenant(NewTenant {
            id: "bench".into(),
            name: "bench".into(),
            rate_limit: None,
        })
        .await
        .expect("tenant");
    engine
}

async fn subscribe(engine: &EngineHandle, addr: SocketAddr, kind: &str, k: u32, wf: u32) {
    let mut sub = NewSubscription::new("bench", format!("http://{addr}/{kind}/{k}"));
    sub.workflow_ids = vec![format!("wf-{wf}")];
    if kind != "ok" {
        // Keep the bad ones bad for the whole phase: quick retries, many of them, never blocked.
        sub.timeout_ms = Some(HANG_TIMEOUT_MS);
        sub.on_failure = Some(FailurePolicy::Skip);
        sub.retry = Some(RetryPolicy {
            max_attempts: 20,
            backoff_ms: vec![10],
        });
    }
    engine.create_subscription(sub).await.expect("subscription");
}

async fn phase(rx: &Receiver, addr: SocketAddr, sz: &Sizes, hostile: bool) -> Phase {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(&dir).await;
    for k in 0..sz.good {
        subscribe(&engine, addr, "ok", k, k).await;
    }
    if hostile {
        for k in 0..sz.hang {
            subscribe(&engine, addr, "hang", k, sz.good + k).await;
        }
        for k in 0..sz.slow {
            subscribe(&engine, addr, "slow", k, sz.good + sz.hang + k).await;
        }
    }
    rx.arrivals.lock().expect("arrivals").clear();
    let (hung0, slow0) = (
        rx.hung.load(Ordering::Relaxed),
        rx.slow.load(Ordering::Relaxed),
    );
    let total = sz.total();
    let n = (sz.rate * sz.secs).round() as u32;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / sz.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut scheduled = vec![0u64; n as usize];
    let mut good_events = 0usize;
    let mut set = JoinSet::new();
    for i in 0..n {
        let at = ticks.tick().await.into_std();
        scheduled[i as usize] = at.saturating_duration_since(rx.base).as_nanos() as u64;
        let wf = i % total;
        if wf < sz.good {
            good_events += 1;
        }
        let ev = EventInput::new("bench", format!("tx-{i}"), NotificationType::NodeEvent)
            .id(format!("ev-{i}"))
            .workflow_id(format!("wf-{wf}"))
            .payload(serde_json::json!({ "i": i, "pad": "x".repeat(1000) }));
        let engine = engine.clone();
        set.spawn(async move { engine.publish(ev).await.expect("publish").seq });
    }
    set.join_all().await;
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while rx.arrivals.lock().expect("arrivals").len() < good_events {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good subscriptions got {} of {good_events} deliveries within {DRAIN_LIMIT:?}",
            rx.arrivals.lock().expect("arrivals").len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrivals = std::mem::take(&mut *rx.arrivals.lock().expect("arrivals"));
    let (hung, slow) = (
        rx.hung.load(Ordering::Relaxed) - hung0,
        rx.slow.load(Ordering::Relaxed) - slow0,
    );
    engine.shutdown().await;
    // Each good subscription gets its events in publish order (one publisher per event, so
    // ids are only roughly in order across subscriptions, but per subscription they are one
    // second apart).
    let mut last: Vec<Option<u32>> = vec![None; sz.good as usize];
    let mut violations = 0;
    for (k, i, _) in &arrivals {
        let slot = &mut last[*k as usize];
        if slot.is_some_and(|p| p >= *i) {
            violations += 1;
        }
        *slot = Some(*i);
    }
    let mut lat: Vec<f64> = arrivals
        .iter()
        .map(|(_, i, at)| at.saturating_sub(scheduled[*i as usize]) as f64 / 1e6)
        .collect();
    lat.sort_by(f64::total_cmp);
    Phase {
        p50: pct(&lat, 50.0),
        p99: pct(&lat, 99.0),
        max: lat.last().copied().unwrap_or(f64::NAN),
        good_deliveries: arrivals.len(),
        order_violations: violations,
        hung,
        slow,
        peak_rss_mb: support::status_mb("VmHWM"),
    }
}

fn main() {
    let sz = Sizes::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(sz));
}

async fn run(sz: Sizes) {
    let base = Instant::now();
    let (rx, addr) = Receiver::start(base).await;
    println!(
        "hostile: {} good + {} hanging + {} slow subscriptions, {} events/s for {} s per phase, {} round(s)",
        sz.good, sz.hang, sz.slow, sz.rate, sz.secs, sz.rounds
    );
    println!(
        "{:>5} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6} {:>6} {:>6}",
        "round", "phase", "p50_ms", "p99_ms", "max_ms", "good", "hung", "slow", "order"
    );
    let mut rounds = Vec::new();
    let mut ratios = Vec::new();
    for r in 0..sz.rounds {
        // Alternate which phase goes first, so drift on a shared machine falls on both.
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut got: [Option<Phase>; 2] = [None, None];
        for hostile in order {
            let p = phase(&rx, addr, &sz, hostile).await;
            println!(
                "{:>5} {:>9} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>6} {:>6} {:>6}",
                r,
                if hostile { "hostile" } else { "baseline" },
                p.p50,
                p.p99,
                p.max,
                p.good_deliveries,
                p.hung,
                p.slow,
                p.order_violations
            );
            got[usize::from(hostile)] = Some(p);
        }
        let [Some(b), Some(h)] = got else {
            unreachable!("both phases ran")
        };
        let ratio = h.p99 / b.p99;
        ratios.push(ratio);
        rounds.push(serde_json::json!({
            "baselineP50Ms": r2(b.p50), "baselineP99Ms": r2(b.p99), "baselineMaxMs": r2(b.max),
            "hostileP50Ms": r2(h.p50), "hostileP99Ms": r2(h.p99), "hostileMaxMs": r2(h.max),
            "p99Ratio": r2(ratio), "p50Ratio": r2(h.p50 / b.p50),
            "goodDeliveries": [b.good_deliveries, h.good_deliveries],
            "hungAttempts": h.hung, "slowAnswers": h.slow,
            "orderViolations": b.order_violations + h.order_violations,
            "peakRssMb": r2(h.peak_rss_mb.max(b.peak_rss_mb)),
        }));
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = pct(&sorted, 50.0);
    println!(
        "p99 ratio hostile/baseline per round: {}; median {median:.2} (target <= 1.2)",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "hostile", "good": sz.good, "hang": sz.hang, "slow": sz.slow,
            "rate": sz.rate, "secs": sz.secs,
            "p99RatioMedian": r2(median), "rounds": rounds,
        })
    );
}
