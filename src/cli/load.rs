//! `hookline load`: an HTTP load generator for a running server.
//!
//! `--concurrency` workers share one keep-alive connection pool and publish events of `--size`
//! bytes (1 KiB by default), each worker one request at a time: `POST /v1/events` with
//! `--batch 1`, `POST /v1/events/batch` with N events per request otherwise. The run stops after
//! `--events` events or after `--duration`. Every request's latency (send to the whole answer
//! read, i.e. until the durable commit) goes into an HDR histogram.
//!
//! Unless `--tenant` names one, the run creates its own tenant `load-<random>` with the admin
//! key and publishes with that tenant's key. With `--sink` it also starts a receiver on
//! 127.0.0.1 that answers 200 at once (see [`receiver`](super::receiver)) and subscribes it
//! `--subs` times (default 1), event `n` going to subscription `n % subs` by its workflow id, so
//! deliveries are part of the load: the run reports how fast they arrived and each event's
//! publish→receipt latency (the server must allow loopback destinations:
//! `HOOKLINE_ALLOW_NETWORKS=127.0.0.0/8`); the subscriptions are deleted at the end.
//!
//! The report ends with one JSON object on its own line (the last line of stdout), for scripts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::client::{Api, CallError, Conn};
use super::receiver::{self, Receiver};

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub(super) conn: Conn,
    /// Events to publish (unless --duration is given).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Publish for this long instead of a number of events (e.g. `10s`, `1m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(super) duration: Option<Duration>,
    /// Requests in flight at once, each on its own kept-alive connection.
    #[arg(long, short = 'c', default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(super) concurrency: u32,
    /// Events per request: 1 posts to /v1/events, more post arrays to /v1/events/batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Size of each event envelope in bytes (padded in its payload).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(200..=1_048_576))]
    pub(super) size: u32,
    /// Publish as this existing tenant (with the admin key or its own key) instead of creating
    /// a fresh one with the admin key.
    #[arg(long)]
    pub(super) tenant: Option<String>,
    /// Start a 200-OK receiver on 127.0.0.1 and subscribe it --subs times, to load the delivery
    /// path too.
    #[arg(long)]
    sink: bool,
    /// Subscriptions the events are spread over (event n to subscription n % subs, by workflow
    /// id): with --sink (default 1) and with --rate (default 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(super) subs: Option<u32>,
    /// With --sink: how long to wait, after publishing, for every delivery to arrive.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(super) drain_timeout: Duration,
    /// Soak mode: publish at this fixed rate (events/s) for --duration (default 1h), spread
    /// over --subs subscriptions of a local receiver that fails --fail-percent of attempts, and
    /// report the server's health every --every (see `hookline load --help` and docs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(super) rate: Option<u32>,
    #[command(flatten)]
    pub(super) soak: super::soak::SoakArgs,
}

/// What the workers add up.
#[derive(Debug)]
struct Totals {
    latency_us: Histogram<u64>,
    requests: u64,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Totals {
    fn new() -> anyhow::Result<Totals> {
        Ok(Totals {
            // 1 µs to 10 min, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            requests: 0,
            accepted: 0,
            duplicates: 0,
            rejected: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn merge(&mut self, other: &Totals) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.requests += other.requests;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        Ok(())
    }
}

/// Builds the event envelopes of a run: unique ids, a fixed size, spread over `subs`
/// subscriptions, stamped with their send time on `origin`'s clock (the receiver's).
#[derive(Debug, Clone)]
struct EventMaker {
    run: String,
    tenant: String,
    size: usize,
    subs: u64,
    origin: Instant,
}

impl EventMaker {
    fn event(&self, n: u64) -> String {
        let sent_us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        receiver::event(
            &format!("ld-{}", self.run),
            &self.tenant,
            n,
            self.subs,
            sent_us,
            self.size,
        )
    }
}

fn conn_with_key(conn: &Conn, key: Option<String>) -> Conn {
    Conn {
        key,
        ..conn.clone()
    }
}

/// The load generator's HTTP client: keep-alive with as many idle connections as workers, so
/// every request reuses one; no proxy, so the figures are the server's; Nagle off as any
/// latency-minded client does.
pub(super) fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("hookline-load/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A short random id naming this run's tenant and events.
pub(super) fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// The tenant to publish as and a client with the key to publish with: `--tenant` with the
/// given key, or a fresh tenant `load-<run>` created with the admin key.
pub(super) async fn tenant_and_publisher(
    args: &LoadArgs,
    http: &reqwest::Client,
    run_id: &str,
) -> anyhow::Result<(String, Api)> {
    let admin = Api::with_client(&args.conn, http.clone())?;
    Ok(match &args.tenant {
        Some(t) => (t.clone(), admin),
        None => {
            let id = format!("load-{run_id}");
            let created = admin
                .post(
                    &["v1", "tenants"],
                    &json!({"id": id, "name": "hookline load"}),
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!("creating the load tenant (needs the admin key): {e}")
                })?;
            let key = created
                .get("apiKey")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("the tenant creation answer has no apiKey"))?;
            let api = Api::with_client(&conn_with_key(&args.conn, Some(key)), http.clone())?;
            (id, api)
        }
    })
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    if let Some(rate) = args.rate {
        return super::soak::run(args, rate).await;
    }
    let quiet = args.conn.json;
    let concurrency = args.concurrency as usize;
    let http = http_client(concurrency)?;
    let run_id = run_id();
    let (tenant, publisher) = tenant_and_publisher(&args, &http, &run_id).await?;

    let subs = args.subs.unwrap_or(1);
    let sink = if args.sink {
        Some(Receiver::start(&publisher, &tenant, subs, 0.0, None).await?)
    } else {
        None
    };

    let maker = EventMaker {
        run: run_id,
        tenant: tenant.clone(),
        size: args.size as usize,
        subs: u64::from(subs),
        origin: sink.as_ref().map_or_else(Instant::now, |s| s.seen.origin),
    };
    if !quiet {
        let until = match args.duration {
            Some(d) => format!("for {}", humantime::format_duration(d)),
            None => format!("{} events", args.events),
        };
        println!(
            "hookline load: {until} of {} B, {} per request, concurrency {}, tenant {tenant}, against {}{}",
            args.size,
            args.batch,
            args.concurrency,
            args.conn.url,
            if sink.is_some() {
                format!(", delivering to a local sink through {subs} subscription(s)")
            } else {
                String::new()
            }
        );
    }

    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let w = Worker {
            api: publisher.clone(),
            maker: maker.clone(),
            next: next.clone(),
            stop: stop.clone(),
            total: args.duration.is_none().then_some(args.events),
            deadline,
            batch: u64::from(args.batch),
        };
        workers.push(tokio::spawn(w.run()));
    }
    let mut totals = Totals::new()?;
    for w in workers {
        totals.merge(&w.await??)?;
    }
    let elapsed = started.elapsed();

    let mut delivered = None;
    let mut deliveries_per_s = None;
    let mut receipt = None;
    if let Some(sink) = &sink {
        let got = sink
            .drain(totals.accepted, Instant::now() + args.drain_timeout)
            .await;
        delivered = Some(got);
        // From the first publish to the last first receipt.
        let last_us = sink.seen.last_receipt_us.load(Ordering::Relaxed);
        let from_start = started.saturating_duration_since(sink.seen.origin);
        let secs = (last_us as f64 / 1e6 - from_start.as_secs_f64()).max(1e-9);
        deliveries_per_s = (got > 0).then(|| got as f64 / secs);
        receipt = Some((
            sink.seen.overall(),
            sink.seen.duplicates.load(Ordering::Relaxed),
        ));
        sink.unsubscribe(&publisher).await;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| totals.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let report = json!({
        "url": args.conn.url,
        "mode": if args.batch > 1 { "batch" } else { "single" },
        "batch": args.batch,
        "concurrency": args.concurrency,
        "sizeBytes": args.size,
        "tenant": tenant,
        "requests": totals.requests,
        "events": totals.accepted,
        "duplicates": totals.duplicates,
        "rejected": totals.rejected,
        "errors": totals.errors,
        "elapsedS": round(secs),
        "eventsPerS": round(totals.accepted as f64 / secs),
        "requestsPerS": round(totals.requests as f64 / secs),
        "p50Ms": round(ms(0.5)),
        "p90Ms": round(ms(0.9)),
        "p99Ms": round(ms(0.99)),
        "maxMs": round(totals.latency_us.max() as f64 / 1000.0),
        "subs": sink.as_ref().map(|_| subs),
        "delivered": delivered,
        "deliveriesPerS": deliveries_per_s.map(round),
        "receiptP50Ms": receipt.as_ref().map(|(h, _)| round(h.value_at_quantile(0.5) as f64 / 1000.0)),
        "receiptP99Ms": receipt.as_ref().map(|(h, _)| round(h.value_at_quantile(0.99) as f64 / 1000.0)),
        "receiptMaxMs": receipt.as_ref().map(|(h, _)| round(h.max() as f64 / 1000.0)),
        "duplicateReceipts": receipt.as_ref().map(|(_, d)| *d),
    });
    if !quiet {
        println!(
            "published {} events in {:.2} s: {:.0} events/s, {:.0} requests/s; {} rejected, {} failed requests",
            totals.accepted,
            secs,
            totals.accepted as f64 / secs,
            totals.requests as f64 / secs,
            totals.rejected,
            totals.errors
        );
        println!(
            "latency per request: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            totals.latency_us.max() as f64 / 1000.0
        );
        if let Some(n) = delivered {
            println!(
                "delivered {n} of {} to the sink over {subs} subscription(s): {:.0} deliveries/s \
                 (from the first publish to the last receipt)",
                totals.accepted,
                deliveries_per_s.unwrap_or(0.0)
            );
        }
        if let Some((h, dups)) = &receipt {
            println!(
                "publish→receipt: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {dups} duplicate receipts",
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
        }
    }
    println!("{report}");
    if let Some(e) = &totals.first_error {
        eprintln!("hookline load: first failure: {e}");
    }
    if totals.accepted == 0 {
        anyhow::bail!("no event was accepted");
    }
    if stop.load(Ordering::Relaxed) {
        anyhow::bail!("the run stopped early on an error");
    }
    Ok(())
}

/// One publishing loop: claims the next event numbers, sends them, records the latency.
struct Worker {
    api: Api,
    maker: EventMaker,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Events to publish in all, or `None` when running until `deadline`.
    total: Option<u64>,
    deadline: Option<Instant>,
    batch: u64,
}

impl Worker {
    async fn run(self) -> anyhow::Result<Totals> {
        let mut t = Totals::new()?;
        let route: &[&str] = if self.batch > 1 {
            &["v1", "events", "batch"]
        } else {
            &["v1", "events"]
        };
        loop {
            if self.stop.load(Ordering::Relaxed)
                || self.deadline.is_some_and(|d| Instant::now() >= d)
            {
                break;
            }
            let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
            let count = match self.total {
                Some(total) if first >= total => break,
                Some(total) => self.batch.min(total - first),
                None => self.batch,
            };
            let body = if self.batch > 1 {
                let events: Vec<String> = (first..first + count)
                    .map(|n| self.maker.event(n))
                    .collect();
                format!("[{}]", events.join(","))
            } else {
                self.maker.event(first)
            };
            let sent = Instant::now();
            let answer = self
                .api
                .call(Method::POST, route, &[], Some(body.into_bytes()))
                .await;
            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            t.latency_us.saturating_record(us.max(1));
            t.requests += 1;
            match answer {
                Ok(v) if self.batch > 1 => {
                    for r in v
                        .get("results")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        match r.get("status").and_then(Value::as_str) {
                            Some("accepted") => t.accepted += 1,
                            Some("duplicate") => t.duplicates += 1,
                            _ => t.rejected += 1,
                        }
                    }
                }
                Ok(v) if v.get("duplicate").and_then(Value::as_bool) == Some(true) => {
                    t.duplicates += 1;
                }
                Ok(_) => t.accepted += 1,
                Err(e) => {
                    t.errors += 1;
                    let overload = matches!(
                        &e,
                        CallError::Refused(r) if matches!(
                            r.status,
                            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                        )
                    );
                    if t.first_error.is_none() {
                        t.first_error = Some(e.to_string());
                    }
                    if overload {
                        // Counted and paced; overload is a result of the run, not its end.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_asked_size_and_unique_ids() {
        let m = EventMaker {
            run: "r1".into(),
            tenant: "acme".into(),
            size: 1024,
            subs: 10,
            origin: Instant::now(),
        };
        let (a, b) = (m.event(1), m.event(123_456));
        assert_eq!(a.len(), 1024);
        assert_eq!(b.len(), 1024);
        let (a, b): (Value, Value) = (
            serde_json::from_str(&a).unwrap(),
            serde_json::from_str(&b).unwrap(),
        );
        assert_ne!(a["id"], b["id"]);
        assert_eq!(a["tenantId"], "acme");
        assert!(a["payLoad"].is_object());
        // Spread over the subscriptions by workflow id, stamped for the receiver.
        assert_eq!(a["workflowId"], "w1");
        assert_eq!(b["workflowId"], "w6");
        assert!(a["payLoad"]["sentUs"].is_u64());
    }
}
