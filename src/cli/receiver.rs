//! The local receiver of `hookline load`, with `--sink` and in soak mode (`--rate`): an HTTP
//! server on 127.0.0.1 in the load generator's process, subscribed `--subs` times (subscription
//! `k` filters `workflowIds: ["w{k}"]`), that records each event's first 2xx receipt.
//!
//! Every event the load generator publishes carries, in its payload, its number `n` and the
//! microsecond it was sent at (`sentUs`, on this process's clock), so the receiver measures
//! publish→receipt latency against the same clock. Receipts are counted once per event (a
//! bitmap by `n`); a repeat is a duplicate. `--fail-percent` of attempts are answered 500 at
//! random, so retries can be part of the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::client::Api;

/// What the receiver has seen; shared with its handler.
#[derive(Debug)]
pub(super) struct Seen {
    pub origin: Instant,
    fail: f64,
    /// One bit per event number: first 2xx receipt already counted.
    received: Mutex<Vec<u64>>,
    pub first_receipts: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed_answers: AtomicU64,
    /// Microseconds since `origin` of the latest first receipt.
    pub last_receipt_us: AtomicU64,
    /// Publish→receipt of the events first received in the current interval, and overall.
    pub interval: Mutex<Histogram<u64>>,
    pub overall: Mutex<Histogram<u64>>,
}

/// A latency histogram: 1 µs to 1 h, 3 significant digits.
pub(super) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

impl Seen {
    /// Microseconds since the origin: what events carry as `sentUs`.
    pub(super) fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records a 2xx for event `n` sent at `sent_us` (since the origin); false for a repeat.
    fn receipt(&self, n: u64, sent_us: u64) -> bool {
        {
            let mut bits = self.received.lock().unwrap_or_else(|p| p.into_inner());
            let (word, bit) = ((n / 64) as usize, n % 64);
            if bits.len() <= word {
                bits.resize(word + 1, 0);
            }
            if bits[word] & (1 << bit) != 0 {
                return false;
            }
            bits[word] |= 1 << bit;
        }
        let now_us = self.now_us();
        let us = now_us.saturating_sub(sent_us).max(1);
        for h in [&self.interval, &self.overall] {
            h.lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_record(us);
        }
        self.first_receipts.fetch_add(1, Ordering::Relaxed);
        self.last_receipt_us.fetch_max(now_us, Ordering::Relaxed);
        true
    }

    /// The overall publish→receipt histogram, copied.
    pub(super) fn overall(&self) -> Histogram<u64> {
        self.overall
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current interval's histogram, copied, and a fresh one started.
    pub(super) fn take_interval(&self) -> Histogram<u64> {
        let mut h = self.interval.lock().unwrap_or_else(|p| p.into_inner());
        let copy = h.clone();
        h.reset();
        copy
    }
}

async fn receive(seen: Arc<Seen>, body: axum::body::Bytes) -> StatusCode {
    if seen.fail > 0.0 && rand::rng().random_bool(seen.fail) {
        seen.failed_answers.fetch_add(1, Ordering::Relaxed);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(n), Some(sent)) = (v["payLoad"]["n"].as_u64(), v["payLoad"]["sentUs"].as_u64())
    else {
        // Not one of ours: say so, the run's counts would not add up otherwise.
        return StatusCode::BAD_REQUEST;
    };
    if !seen.receipt(n, sent) {
        seen.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::OK
}

/// The running receiver and its subscriptions; dropping it stops the server.
#[derive(Debug)]
pub(super) struct Receiver {
    pub seen: Arc<Seen>,
    pub subscriptions: Vec<String>,
    task: tokio::task::AbortHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts the server and subscribes it `subs` times as `tenant` through `publisher`,
    /// subscription `k` to `http://…/s/k` with `workflowIds: ["w{k}"]`, `onFailure: skip`,
    /// and `retry` (a JSON retry policy) when given.
    pub(super) async fn start(
        publisher: &Api,
        tenant: &str,
        subs: u32,
        fail_percent: f64,
        retry: Option<Value>,
    ) -> anyhow::Result<Receiver> {
        let seen = Arc::new(Seen {
            origin: Instant::now(),
            fail: fail_percent / 100.0,
            received: Mutex::new(Vec::new()),
            first_receipts: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed_answers: AtomicU64::new(0),
            last_receipt_us: AtomicU64::new(0),
            interval: Mutex::new(histogram()?),
            overall: Mutex::new(histogram()?),
        });
        let app = {
            let seen = seen.clone();
            axum::Router::new().fallback(move |body: axum::body::Bytes| receive(seen.clone(), body))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("hookline load: the receiver stopped: {e}");
            }
        });
        let mut rx = Receiver {
            seen,
            subscriptions: Vec::new(),
            task: task.abort_handle(),
        };
        for k in 0..subs {
            let mut body = json!({
                "tenantId": tenant, "url": format!("http://{addr}/s/{k}"),
                "workflowIds": [format!("w{k}")], "onFailure": "skip",
            });
            if let Some(r) = &retry {
                body["retry"] = r.clone();
            }
            let sub = publisher
                .post(&["v1", "subscriptions"], &body)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "subscribing the receiver (the server must allow 127.0.0.0/8: \
                         HOOKLINE_ALLOW_NETWORKS): {e}"
                    )
                })?;
            let id = sub["id"].as_str().unwrap_or_default().to_owned();
            rx.subscriptions.push(id);
        }
        Ok(rx)
    }

    /// Waits until `want` events were received, at most until `until`; returns how many were.
    pub(super) async fn drain(&self, want: u64, until: Instant) -> u64 {
        let got = || self.seen.first_receipts.load(Ordering::Relaxed);
        while got() < want && Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        got()
    }

    /// Deletes the receiver's subscriptions (reporting, not failing, on an error).
    pub(super) async fn unsubscribe(&self, publisher: &Api) {
        for id in &self.subscriptions {
            if let Err(e) = publisher.delete(&["v1", "subscriptions", id]).await {
                eprintln!("hookline load: could not delete subscription {id}: {e}");
            }
        }
    }
}

/// One event of a run: number `n`, to subscription `n % subs` (workflow `w{n % subs}`), sent at
/// `sent_us`, padded to `size` bytes.
pub(super) fn event(
    id_prefix: &str,
    tenant: &str,
    n: u64,
    subs: u64,
    sent_us: u64,
    size: usize,
) -> String {
    let make = |pad: &str| {
        json!({
            "id": format!("{id_prefix}-{n}"),
            "tenantId": tenant,
            "transactionId": format!("tx-{n}"),
            "notificationType": "NODE_EVENT",
            "workflowId": format!("w{}", n % subs.max(1)),
            "payLoad": {"n": n, "sentUs": sent_us, "pad": pad},
            "timestamp": "2026-12-05T10:00:00Z",
        })
        .to_string()
    };
    let bare = make("");
    match size.checked_sub(bare.len()) {
        Some(pad) if pad > 0 => make(&"x".repeat(pad)),
        _ => bare,
    }
}
