//! Scale benchmark: many idle subscriptions, and a restart with a large backlog.
//!
//! `cargo bench --bench scale -- [--quick] [--subs N[,N…]] [--pending-events N]`
//!
//! | figure | how |
//! |---|---|
//! | `create_{N}.*` | `N` subscriptions created through `create_subscription` by 64 concurrent tasks on a SQLite file (100 per tenant, each filtering one `workflowIds` entry): time, created/s, VmRSS after minus VmRSS before, bytes per subscription; then one event delivered to 1% of them (so their actors exist, the rest stay idle) and VmRSS again |
//! | `restart.*` | `--pending-events` ~1 KiB events fanned out to 100 subscriptions (1,000,000 pending deliveries at full size) whose receiver holds every request unanswered, engine shut down, then a new engine on the same file with the receiver answering 200 at once: time from `build()` until `build()` returns, until the first delivery, and until steady state; deliveries/s over the first and the next 5 s |
//!
//! Why 10,000 events × 100 subscriptions rather than 1,000,000 events × 1: what a restart must
//! get through is the backlog of delivery rows (recovery, and each subscription's actor loading
//! its queue), not payload bytes; a million 1 KiB events would be a >1 GB journal that takes
//! minutes to write on this machine, and 100 subscriptions is the fan-out of the other targets.
//! The held receiver leaves one attempt per subscription in flight at shutdown, so the restart
//! also goes through crash recovery (`interrupted` attempts, retried at once).
//!
//! Each case runs in its own child process (this binary re-executed with `--phase`), so RSS
//! figures are not skewed by what an earlier case left in the allocator. The table goes to
//! stdout; the last stdout line is one JSON object with every figure. `--quick` (CI): 1,000
//! subscriptions and 20,000 pending deliveries.

#![allow(clippy::print_stdout, reason = "a benchmark's report is its stdout")]

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookline::{
    Durability, Engine, EngineHandle, EventInput, NewSubscription, NewTenant, NotificationType,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Subscriptions per tenant in the creation case.
const PER_TENANT: u32 = 100;
/// Concurrent creators.
const CREATORS: u32 = 64;
/// Subscriptions of the restart case.
const RESTART_SUBS: u32 = 100;
/// Events per `publish_batch` call when building the backlog.
const BATCH: u32 = 100;
/// Targets of the issue.
const TARGET_RSS_100K_MB: f64 = 1024.0;
const TARGET_FIRST_DELIVERY_S: f64 = 2.0;

// ---- process memory --------------------------------------------------------------------------

fn rss_mb() -> f64 {
    support::status_mb("VmRSS")
}

fn hwm_mb() -> f64 {
    support::status_mb("VmHWM")
}

fn r2(x: f64) -> Value {
    serde_json::Number::from_f64((x * 100.0).round() / 100.0).map_or(Value::Null, Value::Number)
}

// ---- the receiver ----------------------------------------------------------------------------

/// A loopback receiver answering 200 at once, or, while `hold` is set, never answering.
#[derive(Debug)]
struct Receiver {
    hold: AtomicBool,
    /// Requests answered 200.
    count: AtomicU64,
}

impl Receiver {
    async fn start(hold: bool) -> (Arc<Receiver>, SocketAddr) {
        let rx = Arc::new(Receiver {
            hold: AtomicBool::new(hold),
            count: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = rx.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let rx = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| rx.clone().handle(req));
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
        let _ = req.into_body().collect().await;
        if self.hold.load(Ordering::SeqCst) {
            // Dropped with its connection when the engine holding it goes away.
            std::future::pending::<()>().await;
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(Empty::new()))
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

async fn start_engine(path: &std::path::Path) -> EngineHandle {
    Engine::builder()
        .path(path)
        .durability(Durability::Fsync)
        .shutdown_grace(Duration::from_millis(500))
        .allow_networks(vec!["127.0.0.0/8".parse().expect("CIDR")])
        .build()
        .await
        .expect("engine starts")
}

async fn tenant(engine: &EngineHandle, id: &str) {
    engine
        .create_tenant(NewTenant {
            id: id.into(),
            name: id.into(),
            rate_limit: None,
        })
        .await
        .expect("create tenant");
}

fn step(begun: Instant, what: &str) {
    eprintln!("scale [{:>6.1}s] {what}", begun.elapsed().as_secs_f64());
}

// ---- phase: create ---------------------------------------------------------------------------

async fn phase_create(n: u32) -> Value {
    let begun = Instant::now();
    let (rx, addr) = Receiver::start(false).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = start_engine(&dir.path().join("hookline.db")).await;
    let tenants = n.div_ceil(PER_TENANT);
    for t in 0..tenants {
        tenant(&engine, &format!("t-{t}")).await;
    }
    let rss_before = rss_mb();
    step(begun, &format!("creating {n} subscriptions"));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..CREATORS {
        let engine = engine.clone();
        set.spawn(async move {
            let mut k = w;
            while k < n {
                let mut sub = NewSubscription::new(
                    format!("t-{}", k / PER_TENANT),
                    format!("http://{addr}/s/{k}"),
                );
                sub.workflow_ids = vec![format!("wf-{}", k % PER_TENANT)];
                engine
                    .create_subscription(sub)
                    .await
                    .expect("create subscription");
                k += CREATORS;
            }
        });
    }
    set.join_all().await;
    let create_s = start.elapsed().as_secs_f64();
    let rss_created = rss_mb();
    // 1% of them get one event each (workflow wf-0 of every tenant): their actors start,
    // deliver and go idle; the other 99% never had work.
    step(begun, "one delivery to 1% of them");
    let active = tenants;
    let pad = "x".repeat(1000);
    let events: Vec<EventInput> = (0..tenants)
        .map(|t| {
            EventInput::new(
                format!("t-{t}"),
                format!("tx-{t}"),
                NotificationType::NodeEvent,
            )
            .workflow_id("wf-0")
            .payload(json!({ "t": t, "pad": pad }))
        })
        .collect();
    let start = Instant::now();
    for chunk in events.chunks(BATCH as usize) {
        for r in engine.publish_batch(chunk.to_vec()).await.expect("publish") {
            assert_eq!(r.expect("accepted").deliveries, 1);
        }
    }
    while rx.count() < u64::from(active) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let active_s = start.elapsed().as_secs_f64();
    let rss_active = rss_mb();
    engine.shutdown().await;
    let delta = rss_created - rss_before;
    json!({
        "subs": n,
        "tenants": tenants,
        "create_s": r2(create_s),
        "create_per_s": r2(f64::from(n) / create_s),
        "rss_before_mb": r2(rss_before),
        "rss_after_mb": r2(rss_created),
        "rss_delta_mb": r2(delta),
        "bytes_per_sub": r2(delta * 1024.0 * 1024.0 / f64::from(n)),
        "active_subs": active,
        "active_s": r2(active_s),
        "rss_after_active_mb": r2(rss_active),
        "rss_delta_after_active_mb": r2(rss_active - rss_before),
        "peak_rss_mb": r2(hwm_mb()),
    })
}

// ---- phase: restart --------------------------------------------------------------------------

async fn phase_restart(events: u32, window: Duration) -> Value {
    let begun = Instant::now();
    let (rx, addr) = Receiver::start(true).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hookline.db");
    let pending = u64::from(events) * u64::from(RESTART_SUBS);
    {
        let engine = start_engine(&path).await;
        tenant(&engine, "restart").await;
        for k in 0..RESTART_SUBS {
            let sub = NewSubscription::new("restart", format!("http://{addr}/s/{k}"));
            engine
                .create_subscription(sub)
                .await
                .expect("create subscription");
        }
        step(
            begun,
            &format!("journaling {pending} deliveries (receiver holding)"),
        );
        let pad = "x".repeat(1000);
        let mut i = 0;
        while i < events {
            let batch = (i..(i + BATCH).min(events))
                .map(|i| {
                    EventInput::new("restart", format!("tx-{i}"), NotificationType::NodeEvent)
                        .id(format!("ev-{i}"))
                        .payload(json!({ "i": i, "pad": pad }))
                })
                .collect();
            for r in engine.publish_batch(batch).await.expect("publish") {
                assert_eq!(r.expect("accepted").deliveries, RESTART_SUBS);
            }
            i += BATCH;
        }
        step(begun, "shutting down");
        engine.shutdown().await;
    }
    let journal_mb = std::fs::metadata(&path).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    let rss_before = rss_mb();
    rx.hold.store(false, Ordering::SeqCst);
    assert_eq!(rx.count(), 0, "nothing was answered while holding");

    step(begun, "restarting");
    let start = Instant::now();
    let engine = start_engine(&path).await;
    let build_s = start.elapsed().as_secs_f64();
    let rss_built = rss_mb();
    // (seconds since build() began, deliveries received), every 50 ms.
    let mut samples = vec![(build_s, rx.count())];
    let first = loop {
        if rx.count() > 0 {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!("no delivery within 120 s of the restart");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    step(begun, "first delivery; observing the rate");
    let observe_until = first + 2.0 * window.as_secs_f64();
    loop {
        let t = start.elapsed().as_secs_f64();
        samples.push((t, rx.count()));
        if t >= observe_until || rx.count() >= pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count_at = |t: f64| {
        samples
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, c)| *c)
    };
    let w = window.as_secs_f64();
    // Where the observation ended: after two windows, or earlier when the backlog was drained.
    let end = samples.last().map_or(first, |(t, _)| *t);
    let drained = rx.count() >= pending;
    let rate = |from: f64, to: f64| {
        let to = to.min(end);
        if to > from {
            (count_at(to) - count_at(from)) as f64 / (to - from)
        } else {
            f64::NAN
        }
    };
    let first_rate = rate(first, first + w);
    let next_rate = rate(first + w, first + 2.0 * w);
    // The steady rate: the second window's, or the whole drain's when it ended early.
    let reference = if drained && end < first + 2.0 * w {
        rate(first, end)
    } else {
        next_rate
    };
    // Steady state: the end of the first 1 s window (sliding by 50 ms) whose rate reaches 90%
    // of the steady rate.
    let slide = 1.0_f64.min((end - first) / 2.0);
    let steady = samples
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= first && *t + slide <= end)
        .find(|t| rate(*t, *t + slide) >= 0.9 * reference)
        .map_or(f64::NAN, |t| t + slide);
    let rss_running = rss_mb();
    step(begun, "shutting down");
    engine.shutdown().await;
    json!({
        "subs": RESTART_SUBS,
        "events": events,
        "pending": pending,
        "journal_mb": r2(journal_mb),
        "build_s": r2(build_s),
        "first_delivery_s": round3(first),
        "steady_s": r2(steady),
        "window_s": w,
        "first_window_per_s": r2(first_rate),
        "next_window_per_s": r2(next_rate),
        "delivered": rx.count(),
        "drained_s": if drained { r2(end) } else { Value::Null },
        "steady_per_s": r2(reference),
        "rss_before_mb": r2(rss_before),
        "rss_after_build_mb": r2(rss_built),
        "rss_running_mb": r2(rss_running),
        "peak_rss_mb": r2(hwm_mb()),
    })
}

fn round3(x: f64) -> Value {
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

// ---- parent ----------------------------------------------------------------------------------

/// Runs this binary with `args` and returns the JSON of its last stdout line.
fn child(args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run a phase");
    assert!(
        out.status.success(),
        "phase {args:?} failed: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("phase {args:?} printed {last:?}: {e}"))
}

fn main() {
    let mut quick = false;
    let (mut subs, mut pending_events, mut phase) = (None, None, None);
    let mut window = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--subs" => subs = Some(value("--subs")),
            "--pending-events" => pending_events = Some(value("--pending-events")),
            "--phase" => phase = Some(value("--phase")),
            "--window" => window = Some(value("--window")),
            "--bench" => {}
            other => eprintln!("scale: ignoring unknown argument {other:?}"),
        }
    }
    let number = |v: &str| -> u32 { v.parse().unwrap_or_else(|_| panic!("not a number: {v:?}")) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match phase.as_deref() {
        Some("create") => {
            let n = number(subs.as_deref().expect("--subs"));
            println!("{}", runtime.block_on(phase_create(n)));
            return;
        }
        Some("restart") => {
            let e = number(pending_events.as_deref().expect("--pending-events"));
            let w = Duration::from_secs_f64(
                window
                    .as_deref()
                    .map_or(5.0, |w| w.parse().expect("--window seconds")),
            );
            println!("{}", runtime.block_on(phase_restart(e, w)));
            return;
        }
        Some(other) => panic!("unknown phase {other:?}"),
        None => {}
    }
    drop(runtime);

    let begun = Instant::now();
    let sizes: Vec<u32> = match subs {
        Some(list) => list.split(',').map(number).collect(),
        None if quick => vec![1_000],
        None => vec![10_000, 100_000],
    };
    let events = pending_events.map_or(if quick { 200 } else { 10_000 }, |e| number(&e));
    let window_s = if quick { 1.5 } else { 5.0 };

    let mut creates = Vec::new();
    for n in &sizes {
        step(begun, &format!("phase: create {n}"));
        creates.push(child(&[
            "--phase".into(),
            "create".into(),
            "--subs".into(),
            n.to_string(),
        ]));
    }
    step(begun, "phase: restart");
    let restart = child(&[
        "--phase".into(),
        "restart".into(),
        "--pending-events".into(),
        events.to_string(),
        "--window".into(),
        window_s.to_string(),
    ]);

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "hookline scale ({} run, {} cores, {:.0} s; shared machine: figures are noisy)",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        begun.elapsed().as_secs_f64()
    );
    let mut json = json!({ "quick": quick });
    for c in &creates {
        let n = f(c, "subs");
        let target = if n as u32 == 100_000 {
            let ok = f(c, "rss_after_active_mb").max(f(c, "rss_after_mb")) <= TARGET_RSS_100K_MB;
            json["rss_100k_pass"] = json!(ok);
            format!("  target ≤ 1 GiB: {}", if ok { "PASS" } else { "FAIL" })
        } else {
            String::new()
        };
        println!(
            "  {:<40} {:>7.1} s ({:.0}/s); RSS {:.0} → {:.0} MiB (+{:.0}, {:.0} B/sub); after 1% active {:.0} MiB{target}",
            format!("create {n} subscriptions"),
            f(c, "create_s"),
            f(c, "create_per_s"),
            f(c, "rss_before_mb"),
            f(c, "rss_after_mb"),
            f(c, "rss_delta_mb"),
            f(c, "bytes_per_sub"),
            f(c, "rss_after_active_mb"),
        );
        json[format!("create_{}", n as u32)] = c.clone();
    }
    let first = f(&restart, "first_delivery_s");
    let ok = first <= TARGET_FIRST_DELIVERY_S;
    println!(
        "  {:<40} build {:.2} s, first delivery {:.3} s (target ≤ 2 s: {}), steady after {:.2} s",
        format!("restart with {} pending", f(&restart, "pending")),
        f(&restart, "build_s"),
        first,
        if ok { "PASS" } else { "FAIL" },
        f(&restart, "steady_s"),
    );
    println!(
        "  {:<40} first {} s: {:.0}/s, next {} s: {:.0}/s; peak RSS {:.0} MiB, journal {:.0} MiB",
        "",
        f(&restart, "window_s"),
        f(&restart, "first_window_per_s"),
        f(&restart, "window_s"),
        f(&restart, "next_window_per_s"),
        f(&restart, "peak_rss_mb"),
        f(&restart, "journal_mb"),
    );
    json["first_delivery_pass"] = json!(ok);
    json["restart"] = restart;
    json["elapsed_s"] = r2(begun.elapsed().as_secs_f64());
    println!("{json}");
}
