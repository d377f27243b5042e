//! Micro benchmarks (criterion): the costs one event and one delivery are made of.
//!
//! `cargo bench --bench micro [-- FILTER]`
//!
//! | group | what one iteration is |
//! |---|---|
//! | `journal_append/{1,100,1000}` | `publish_batch` of that many ~1 KiB events on a SQLite file (durability `fsync`), each fanned out to one paused subscription: event rows + delivery rows, durable on return (throughput in events) |
//! | `delivery_state/{fsync,os}` | one delivery of a resumed subscription to a loopback receiver answering 200: read from the journal, signed, POSTed, its state and attempt journaled (timed per delivery over a drained backlog) |
//! | `policy/*` | the status table, `Retry-After` parsing and the retry budget for one response |
//! | `signing/*` | the `webhook-signature` header of a ~1 KiB delivery: secrets decoded from their journaled text, HMAC-SHA256 (`v1`), and ed25519 (`v1a`) |
//! | `transform/mask_pii` | a fresh instance of the Rust `mask-pii` guest and one call on the ~1 KiB example event |
//!
//! Sample sizes and measurement times are set so the whole run stays within about three minutes
//! on a small machine; pass a filter (`-- signing`) to run one group.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookline::bench_support::{Judge, Keys};
use hookline::transform::{TransformInput, TransformLimits, TransformRuntime};
use hookline::{
    Durability, Engine, EngineHandle, EventInput, NewSubscription, NewTenant, NotificationType,
    RetryPolicy, SubscriptionId,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pad() -> String {
    "x".repeat(1000)
}

/// A ~1 KiB event with a unique id.
fn event(i: u64, pad: &str) -> EventInput {
    EventInput::new("bench", format!("tx-{i}"), NotificationType::NodeEvent)
        .id(format!("ev-{i}"))
        .payload(serde_json::json!({ "i": i, "pad": pad }))
}

/// An engine on a SQLite file in a fresh temporary directory, with tenant `bench` and one
/// subscription (paused) to `url`.
async fn engine(
    durability: Durability,
    url: String,
) -> (EngineHandle, SubscriptionId, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = Engine::builder()
        .path(dir.path().join("hookline.db"))
        .durability(durability)
        .shutdown_grace(Duration::from_secs(2))
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
    let sub = engine
        .create_subscription(NewSubscription::new("bench", url))
        .await
        .expect("subscription");
    engine.pause_subscription(&sub.id).await.expect("pause");
    (engine, sub.id, dir)
}

// ---- journal append --------------------------------------------------------------------------

fn journal_append(c: &mut Criterion) {
    let rt = runtime();
    // Nothing listens there: the subscription stays paused, deliveries are only journaled.
    let (engine, _sub, _dir) =
        rt.block_on(engine(Durability::Fsync, "http://127.0.0.1:9/never".into()));
    let pad = pad();
    let mut next = 0u64;
    let mut g = c.benchmark_group("journal_append");
    g.sample_size(20).measurement_time(Duration::from_secs(6));
    for n in [1u64, 100, 1000] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let batch: Vec<EventInput> = (next..next + n).map(|i| event(i, &pad)).collect();
                    next += n;
                    batch
                },
                |batch| {
                    let receipts = rt
                        .block_on(engine.publish_batch(batch))
                        .expect("publish batch");
                    assert!(
                        receipts
                            .iter()
                            .all(|r| matches!(r, Ok(r) if r.deliveries == 1))
                    );
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
    rt.block_on(engine.shutdown());
}

// ---- delivery-state updates ------------------------------------------------------------------

/// A loopback receiver that answers 200 at once and counts requests.
async fn receiver() -> (Arc<AtomicU64>, SocketAddr) {
    let count = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (count, addr)
}

fn delivery_state(c: &mut Criterion) {
    let rt = runtime();
    let (count, addr) = rt.block_on(receiver());
    let pad = pad();
    let mut g = c.benchmark_group("delivery_state");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    for (name, durability) in [("fsync", Durability::Fsync), ("os", Durability::Os)] {
        let (engine, sub, _dir) = rt.block_on(engine(durability, format!("http://{addr}/s/0")));
        let mut next = 0u64;
        g.bench_function(name, |b| {
            // `iters` deliveries are journaled while paused (not timed), then the subscription
            // is resumed and the time until the receiver has them all is the measurement.
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let events: Vec<u64> = (next..next + iters).collect();
                    next += iters;
                    for chunk in events.chunks(1000) {
                        let batch = chunk.iter().map(|i| event(*i, &pad)).collect();
                        engine.publish_batch(batch).await.expect("publish");
                    }
                    let target = count.load(Ordering::SeqCst) + iters;
                    let start = Instant::now();
                    engine.resume_subscription(&sub).await.expect("resume");
                    while count.load(Ordering::SeqCst) < target {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    let took = start.elapsed();
                    engine.pause_subscription(&sub).await.expect("pause");
                    took
                })
            });
        });
        rt.block_on(engine.shutdown());
    }
    g.finish();
}

// ---- policy, signing -------------------------------------------------------------------------

fn policy(c: &mut Criterion) {
    let mut judge = Judge::new(RetryPolicy {
        max_attempts: 8,
        backoff_ms: vec![1_000, 5_000, 30_000, 120_000],
    });
    let mut g = c.benchmark_group("policy");
    g.sample_size(30).measurement_time(Duration::from_secs(2));
    g.bench_function("delivered_200", |b| {
        b.iter(|| judge.judge(black_box(200), None, black_box(1)))
    });
    g.bench_function("retry_503", |b| {
        b.iter(|| judge.judge(black_box(503), None, black_box(2)))
    });
    g.bench_function("retry_429_retry_after_seconds", |b| {
        b.iter(|| judge.judge(black_box(429), Some(black_box("120")), black_box(2)))
    });
    g.bench_function("retry_503_retry_after_date", |b| {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        b.iter(|| judge.judge(black_box(503), Some(black_box(&date)), black_box(2)))
    });
    g.bench_function("fatal_404", |b| {
        b.iter(|| judge.judge(black_box(404), None, black_box(1)))
    });
    g.finish();
}

fn signing(c: &mut Criterion) {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "ev-0", "tenantId": "bench", "transactionId": "tx-0",
        "notificationType": "NODE_EVENT", "payLoad": { "i": 0, "pad": pad() },
        "timestamp": "2026-01-01T00:00:00.000Z",
    }))
    .expect("body");
    let ts = 1_790_000_000;
    let mut g = c.benchmark_group("signing");
    g.sample_size(30).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(body.len() as u64));
    let hmac = Keys::generate(false);
    g.bench_function("v1_hmac_sha256", |b| {
        b.iter(|| hmac.sign(black_box("ev-0"), ts, black_box(&body)))
    });
    let both = Keys::generate(true);
    g.bench_function("v1_and_v1a_ed25519", |b| {
        b.iter(|| both.sign(black_box("ev-0"), ts, black_box(&body)))
    });
    g.finish();
}

// ---- transform -------------------------------------------------------------------------------

fn transform(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wasm = std::fs::read(root.join("transforms/dist/mask-pii.wasm")).expect("mask-pii.wasm");
    let text = std::fs::read_to_string(root.join("transforms/examples/node-event.json"))
        .expect("node-event.json");
    let envelope: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let field = |k: &str| envelope[k].as_str().expect("string").to_owned();
    let input = TransformInput {
        id: field("id"),
        tenant_id: field("tenantId"),
        subscription_id: "sub-bench".into(),
        notification_type: field("notificationType"),
        headers: vec![(
            "content-type".into(),
            "application/json;charset=UTF-8".into(),
        )],
        body: serde_json::to_vec(&envelope).expect("body"),
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");
    let rt = TransformRuntime::new(TransformLimits::default()).expect("transform runtime");
    let compiled = rt.compile(&wasm).expect("mask-pii compiles");
    let mut g = c.benchmark_group("transform");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(input.body.len() as u64));
    g.bench_function("mask_pii", |b| {
        b.iter_batched(
            || input.clone(),
            |input| {
                let r = tokio.block_on(rt.call(&compiled, input));
                assert!(r.result.is_ok(), "{:?}", r.result);
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    policy,
    signing,
    transform,
    journal_append,
    delivery_state
);
criterion_main!(benches);
