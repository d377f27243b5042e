//! `hookline load --rate R`: the soak mode of the load generator. It publishes at a fixed rate
//! for a long time (`--duration`, default 1 h) and reports, every `--every` (default 1 min),
//! what would show a leak or a slow drift: the server's RSS and open file descriptors (from
//! `/proc/<--server-pid>`), the journal's and its WAL's sizes (`--journal`), publish→receipt
//! latency (p50, p99, max) of the events first received in that interval, and the backlog
//! (accepted but not yet received).
//!
//! Each event goes to exactly one of `--subs` subscriptions (by `workflowIds`), all pointing at
//! a receiver on 127.0.0.1 in this process (see [`receiver`](super::receiver)) that answers 500
//! to `--fail-percent` of the attempts at random and 200 to the others, so retries are part of
//! the load. An event's payload carries
//! its send time, so latency is measured by the receiver against the same clock. Publishing is
//! open-loop: event n is due at `n / rate` seconds and is sent then, whatever the answers to
//! earlier ones, by up to `--concurrency` workers; if the server falls behind, the interval's
//! published count shows it.
//!
//! At the end it stops publishing, waits up to `--drain-timeout` for every accepted event to be
//! received, deletes its subscriptions, and prints one JSON object (the last line of stdout)
//! with every sample. It exits non-zero if an accepted event never arrived.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::client::Api;
use super::load::{LoadArgs, http_client, run_id, tenant_and_publisher};
use super::receiver::{self, Receiver, Seen};

/// The soak mode's own flags (used with `--rate`).
#[derive(Args, Debug)]
pub struct SoakArgs {
    /// With --rate: percentage of attempts the local receiver answers with 500.
    #[arg(long, default_value_t = 5.0)]
    fail_percent: f64,
    /// With --rate: how often to report.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// With --rate: the server's process id, to report its RSS and open file descriptors.
    #[arg(long)]
    server_pid: Option<u32>,
    /// With --rate: the server's journal file, to report its size and its WAL's.
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// The server's health from outside: `/proc` and the journal's files.
#[derive(Debug)]
struct Probe {
    pid: Option<u32>,
    journal: Option<PathBuf>,
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0
}

impl Probe {
    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(mib(kib * 1024))
    }

    fn open_fds(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.pid?))
                .ok()?
                .count(),
        )
    }

    fn file_mib(&self, suffix: &str) -> Option<f64> {
        let journal = self.journal.as_deref()?;
        let mut path = journal.as_os_str().to_owned();
        path.push(suffix);
        // A missing WAL (checkpointed and removed) is an empty one.
        Some(mib(
            std::fs::metadata(Path::new(&path)).map_or(0, |m| m.len())
        ))
    }
}

/// Publishers' shared counters.
#[derive(Debug, Default)]
struct Published {
    next: AtomicU64,
    accepted: AtomicU64,
    errors: AtomicU64,
}

pub(super) async fn run(args: LoadArgs, rate: u32) -> anyhow::Result<()> {
    let soak = &args.soak;
    anyhow::ensure!(
        (0.0..100.0).contains(&soak.fail_percent),
        "--fail-percent must be at least 0 and below 100"
    );
    let duration = args.duration.unwrap_or(Duration::from_secs(3600));
    let http = http_client(args.concurrency as usize)?;
    let run = run_id();
    let (tenant, publisher) = tenant_and_publisher(&args, &http, &run).await?;

    let subs_n = args.subs.unwrap_or(100);
    // Short backoffs so a failed attempt costs latency, not minutes.
    let retry = json!({"maxAttempts": 20, "backoffMs": [100, 500, 1000]});
    let rx = Receiver::start(&publisher, &tenant, subs_n, soak.fail_percent, Some(retry)).await?;
    let seen = rx.seen.clone();

    let probe = Probe {
        pid: soak.server_pid,
        journal: soak.journal.clone(),
    };
    println!(
        "hookline load: soak at {rate} events/s for {} over {} subscriptions, {}% of attempts \
         failing, reporting every {}",
        humantime::format_duration(duration),
        subs_n,
        soak.fail_percent,
        humantime::format_duration(soak.every)
    );
    println!(
        "{:>7} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>5} {:>8} {:>9}",
        "t_s",
        "published",
        "ev/s",
        "backlog",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "rss_mib",
        "fds",
        "wal_mib",
        "db_mib"
    );

    let published = Arc::new(Published::default());
    let start = Instant::now();
    let end = start + duration;
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let w = SoakWorker {
            api: publisher.clone(),
            published: published.clone(),
            seen: seen.clone(),
            start,
            end,
            rate: f64::from(rate),
            run: run.clone(),
            tenant: tenant.clone(),
            subs: u64::from(subs_n),
            size: args.size as usize,
        };
        workers.push(tokio::spawn(w.run()));
    }

    let mut samples = Vec::new();
    let mut last_published = 0;
    let mut last_at = start;
    let mut sample = |at: Instant, samples: &mut Vec<Value>| {
        let accepted = published.accepted.load(Ordering::Relaxed);
        let received = seen.first_receipts.load(Ordering::Relaxed);
        let h = seen.take_interval();
        let ms = |q: f64| (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
        let secs = at.duration_since(last_at).as_secs_f64().max(1e-9);
        let s = json!({
            "tS": at.duration_since(start).as_secs(),
            "published": accepted,
            "eventsPerS": ((accepted - last_published) as f64 / secs).round(),
            "received": received,
            "backlog": accepted.saturating_sub(received),
            "p50Ms": (!h.is_empty()).then(|| ms(0.5)),
            "p99Ms": (!h.is_empty()).then(|| ms(0.99)),
            "maxMs": (!h.is_empty()).then(|| (h.max() as f64 / 10.0).round() / 100.0),
            "rssMiB": probe.rss_mib(),
            "fds": probe.open_fds(),
            "walMiB": probe.file_mib("-wal"),
            "journalMiB": probe.file_mib(""),
            "errors": published.errors.load(Ordering::Relaxed),
        });
        let show = |k: &str| s[k].as_f64().map_or("-".into(), |v| format!("{v}"));
        println!(
            "{:>7} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>5} {:>8} {:>9}",
            show("tS"),
            show("published"),
            show("eventsPerS"),
            show("backlog"),
            show("p50Ms"),
            show("p99Ms"),
            show("maxMs"),
            show("rssMiB"),
            show("fds"),
            show("walMiB"),
            show("journalMiB")
        );
        last_published = accepted;
        last_at = at;
        samples.push(s);
    };
    let mut next = start + soak.every;
    while next < end {
        tokio::time::sleep_until(next).await;
        sample(next, &mut samples);
        next += soak.every;
    }
    for w in workers {
        w.await?;
    }
    let accepted = published.accepted.load(Ordering::Relaxed);
    let drain_until = Instant::now() + args.drain_timeout;
    rx.drain(accepted, drain_until).await;
    sample(Instant::now(), &mut samples);
    rx.unsubscribe(&publisher).await;

    let received = seen.first_receipts.load(Ordering::Relaxed);
    let lost = accepted.saturating_sub(received);
    let overall = seen.overall();
    let ms = |v: u64| (v as f64 / 10.0).round() / 100.0;
    let report = json!({
        "mode": "soak",
        "rate": rate,
        "subs": subs_n,
        "failPercent": soak.fail_percent,
        "durationS": duration.as_secs(),
        "events": accepted,
        "received": received,
        "notReceived": lost,
        "duplicates": seen.duplicates.load(Ordering::Relaxed),
        "failedAnswers": seen.failed_answers.load(Ordering::Relaxed),
        "errors": published.errors.load(Ordering::Relaxed),
        "p50Ms": ms(overall.value_at_quantile(0.5)),
        "p99Ms": ms(overall.value_at_quantile(0.99)),
        "maxMs": ms(overall.max()),
        "samples": samples,
    });
    println!(
        "published {accepted} events, received {received} ({lost} not received after the \
         drain), publish→receipt p50 {} ms, p99 {} ms",
        report["p50Ms"], report["p99Ms"]
    );
    println!("{report}");
    anyhow::ensure!(accepted > 0, "no event was accepted");
    anyhow::ensure!(
        lost == 0,
        "{lost} accepted events were not received within --drain-timeout"
    );
    Ok(())
}

/// One open-loop publisher: claims the next event number and sends it when it is due.
struct SoakWorker {
    api: Api,
    published: Arc<Published>,
    /// The receiver, whose clock events are stamped on.
    seen: Arc<Seen>,
    start: Instant,
    end: Instant,
    rate: f64,
    run: String,
    tenant: String,
    subs: u64,
    size: usize,
}

impl SoakWorker {
    async fn run(self) {
        loop {
            let n = self.published.next.fetch_add(1, Ordering::Relaxed);
            let due = self.start + Duration::from_secs_f64(n as f64 / self.rate);
            if due >= self.end {
                return;
            }
            tokio::time::sleep_until(due).await;
            let sent_us = self.seen.now_us();
            let prefix = format!("soak-{}", self.run);
            let body = receiver::event(&prefix, &self.tenant, n, self.subs, sent_us, self.size);
            // An event refused for overload is sent again (same id: idempotent) until accepted,
            // so every number is eventually published and the receiver's counts add up.
            loop {
                let answer = self
                    .api
                    .call(
                        Method::POST,
                        &["v1", "events"],
                        &[],
                        Some(body.clone().into_bytes()),
                    )
                    .await;
                match answer {
                    Ok(_) => {
                        self.published.accepted.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => {
                        let n = self.published.errors.fetch_add(1, Ordering::Relaxed);
                        if n == 0 {
                            eprintln!("hookline load: first publish failure: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}
