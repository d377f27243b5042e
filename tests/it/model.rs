//! Model-based test of one subscription's queue at the engine level: proptest generates sequences
//! of operations (publish, every kind of receiver answer, pause, resume, skip, resubmit, replay,
//! `kill -9`, graceful restart) and runs each against the real `hookline` binary on a real
//! SQLite file, delivering to a loopback receiver whose every answer the sequence scripts, and
//! against a reference model of the queue. After every operation and at the end of the sequence
//! the numbered guarantees of `ARCHITECTURE.md` are checked against the model.
//!
//! The receiver runs in lockstep: it parks every request it gets until the sequence answers it,
//! so at any moment the model knows exactly which delivery is in flight. After each operation
//! the test waits for the request the model says must come (the head, if the subscription is
//! runnable), and fails if any other request arrives: that is guarantee 3 (n+1 never before n is
//! terminal) checked on every single request. A kill right after an answer leaves the model
//! unsure whether the engine committed that outcome; after the restart it reads the attempt log
//! to learn which of the two allowed histories happened, and the checks at the end allow exactly
//! the duplicates those histories explain (at most one per kill, always the head's).
//!
//! What is checked: every request is for the model's head (order, one in flight, nothing while
//! paused, blocked or disabled); a retry never comes before its backoff or its clamped
//! `Retry-After`; after every operation each delivery's status and the subscription's state
//! equal the model's (nothing acknowledged is lost: every 202 has its delivery); at the end,
//! first arrivals in `seq` order, 2xx receipts per event equal to the model's deliveries plus
//! the duplicates its kills explain, each attempt log equal to the answers given (plus at most
//! one `interrupted` entry per stop), and `PRAGMA integrity_check` after every kill.
//!
//! Cases: 32 by default, `PROPTEST_CASES` for more. Schedules are shrunk through configuration
//! (10 ms backoff, `Retry-After` clamped to 300 ms, 2.5 s attempt timeout, 100 ms shutdown grace).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response};
use proptest::prelude::*;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const ADMIN: &str = "model-test-admin-key-0123456789";
/// Every subscription's retry budget (attempts, the first included).
const MAX_ATTEMPTS: u32 = 3;
const BACKOFF_MS: u64 = 10;
/// The server's `delivery.maxRetryAfter`: every `Retry-After` of a second or more is clamped.
const RETRY_AFTER_CLAMP_MS: u64 = 300;
/// Long enough that a parked request never times out while other operations run: 1 s was
/// not, on a 2-core machine at load 13 (the engine retried the parked head, a request the
/// model did not expect).
const TIMEOUT_MS: u64 = 2500;
/// Deadline of every wait for something the model says must happen.
const WITHIN: Duration = Duration::from_secs(10);

// ---- the operations and the model -----------------------------------------------------------

/// What the receiver answers to the request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Status(u16),
    /// This status (429 or 503) with `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// This status with `webhook-delivery: disable`.
    Disable(u16),
    /// No answer until the engine gives up.
    Timeout,
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Answer(Answer),
    /// Answer, then `kill -9` the server at once (before or after it commits the outcome).
    AnswerThenKill(Answer),
    Pause,
    Resume,
    /// Skip the delivery at this index (modulo the number published).
    Skip(usize),
    Resubmit(usize),
    Replay,
    Kill,
    /// SIGTERM, then start again.
    Restart,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => prop_oneof![Just(200u16), Just(201), Just(204)].prop_map(Answer::Status),
        3 => prop_oneof![Just(500u16), Just(503), Just(502), Just(408), Just(425)].prop_map(Answer::Status),
        1 => prop_oneof![Just(400u16), Just(404), Just(422), Just(302)].prop_map(Answer::Status),
        1 => Just(Answer::Status(410)),
        1 => (prop_oneof![Just(429u16), Just(503)], 0u64..3).prop_map(|(s, r)| Answer::RetryAfter(s, r)),
        1 => prop_oneof![Just(200u16), Just(500)].prop_map(Answer::Disable),
        1 => Just(Answer::Timeout),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..4).prop_map(Op::Publish),
        10 => answer().prop_map(Op::Answer),
        1 => answer().prop_map(Op::AnswerThenKill),
        1 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => (0usize..16).prop_map(Op::Skip),
        2 => (0usize..16).prop_map(Op::Resubmit),
        1 => Just(Op::Replay),
        1 => Just(Op::Kill),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Pending,
    Delivered,
    Failed,
    Skipped,
}

impl St {
    fn api(self) -> &'static str {
        match self {
            St::Pending => "pending",
            St::Delivered => "delivered",
            St::Failed => "failed",
            St::Skipped => "skipped",
        }
    }
}

/// One attempt as its log entry shows it: status code and error kind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Logged {
    code: Option<u16>,
    kind: Option<String>,
}

impl Logged {
    fn of(a: Answer) -> Logged {
        let code = match a {
            Answer::Status(c) | Answer::RetryAfter(c, _) | Answer::Disable(c) => c,
            // A timeout is logged as the seeds do: status 500.
            Answer::Timeout => 500,
        };
        let kind = match a {
            Answer::Timeout => Some("timeout".to_owned()),
            _ if (200..300).contains(&code) => None,
            _ => Some("http_status".to_owned()),
        };
        Logged {
            code: Some(code),
            kind,
        }
    }

    fn from_api(v: &Value) -> Logged {
        Logged {
            code: v["statusCode"].as_u64().map(|c| c as u16),
            kind: v["errorKind"].as_str().map(str::to_owned),
        }
    }
}

#[derive(Debug)]
struct MDelivery {
    event: String,
    id: String,
    status: St,
    /// Attempts counted against the retry budget since the last fresh budget.
    budget: u32,
    /// Every committed attempt but `interrupted` ones, in order.
    log: Vec<Logged>,
    /// 2xx answers the engine committed (a replay can deliver twice).
    delivered: usize,
    /// 2xx answers lost in a kill before their commit: duplicates the engine may send.
    lost_2xx: usize,
}

#[derive(Debug)]
struct Model {
    block: bool,
    ds: Vec<MDelivery>,
    paused: bool,
    disabled: bool,
    blocked_on: Option<usize>,
    /// The delivery whose request is parked at the receiver.
    in_flight: Option<usize>,
    /// Kills and restarts so far: each may interrupt one attempt.
    stops: usize,
}

enum Verdict {
    Delivered { disable: bool },
    Retry,
    Fatal,
    Gone,
}

fn verdict(a: Answer) -> Verdict {
    match a {
        Answer::Status(c) if (200..300).contains(&c) => Verdict::Delivered { disable: false },
        Answer::Disable(c) if (200..300).contains(&c) => Verdict::Delivered { disable: true },
        Answer::Disable(_) | Answer::Status(410) => Verdict::Gone,
        Answer::Status(c) if matches!(c, 408 | 425 | 429) || c >= 500 => Verdict::Retry,
        Answer::Status(_) => Verdict::Fatal,
        Answer::RetryAfter(..) | Answer::Timeout => Verdict::Retry,
    }
}

impl Model {
    fn runnable(&self) -> bool {
        !self.paused && !self.disabled && self.blocked_on.is_none()
    }

    /// The first pending delivery not in flight: the next one the engine may attempt.
    fn head(&self) -> Option<usize> {
        (0..self.ds.len()).find(|&i| self.ds[i].status == St::Pending && self.in_flight != Some(i))
    }

    /// The delivery whose request must come next, if one must.
    fn expected(&self) -> Option<usize> {
        if self.in_flight.is_none() && self.runnable() {
            self.head()
        } else {
            None
        }
    }

    /// The engine committed answer `a` to delivery `i`'s attempt.
    fn apply(&mut self, i: usize, a: Answer) {
        self.in_flight = None;
        let block = self.block;
        let d = &mut self.ds[i];
        d.budget += 1;
        d.log.push(Logged::of(a));
        let fail = match verdict(a) {
            Verdict::Delivered { disable } => {
                d.status = St::Delivered;
                d.delivered += 1;
                self.disabled |= disable;
                return;
            }
            Verdict::Retry if d.budget < MAX_ATTEMPTS => return,
            Verdict::Retry | Verdict::Fatal => false,
            Verdict::Gone => true,
        };
        d.status = St::Failed;
        self.disabled |= fail;
        if block {
            self.blocked_on = Some(i);
        }
    }

    fn api_state(&self) -> &'static str {
        if self.disabled {
            "disabled"
        } else if self.paused {
            "paused"
        } else if self.blocked_on.is_some() {
            "blocked"
        } else {
            "active"
        }
    }
}

// ---- the lockstep receiver ------------------------------------------------------------------

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Arrival {
    webhook_id: String,
    /// The status answered, once answered.
    status: Option<u16>,
}

/// A request waiting for the sequence to answer it.
struct Parked {
    index: usize,
    webhook_id: String,
    at: Instant,
    reply: oneshot::Sender<Answer>,
}

#[derive(Clone)]
struct Rx {
    log: Arc<Mutex<Vec<Arrival>>>,
    parked: mpsc::UnboundedSender<Parked>,
}

async fn hook(State(rx): State<Rx>, headers: HeaderMap) -> Response<Body> {
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let at = Instant::now();
    let (tx, answer) = oneshot::channel();
    let index = {
        let mut log = rx.log.lock().expect("log");
        log.push(Arrival {
            webhook_id: webhook_id.clone(),
            status: None,
        });
        log.len() - 1
    };
    let _ = rx.parked.send(Parked {
        index,
        webhook_id,
        at,
        reply: tx,
    });
    let (status, header) = match answer.await {
        Ok(Answer::Status(s)) => (s, None),
        Ok(Answer::RetryAfter(s, secs)) => (s, Some(("retry-after", secs.to_string()))),
        Ok(Answer::Disable(s)) => (s, Some(("webhook-delivery", "disable".to_owned()))),
        // Never answer: the engine's timeout (or its death) ends the exchange.
        Ok(Answer::Timeout) | Err(_) => std::future::pending().await,
    };
    if let Some(a) = rx.log.lock().expect("log").get_mut(index) {
        a.status = Some(status);
    }
    let mut resp = Response::builder().status(status);
    if status / 100 == 3 {
        resp = resp.header("location", "http://127.0.0.1:9/elsewhere");
    }
    if let Some((name, value)) = header {
        resp = resp.header(name, value);
    }
    resp.body(Body::empty()).expect("response")
}

async fn start_receiver() -> (SocketAddr, Rx, mpsc::UnboundedReceiver<Parked>) {
    let (tx, parked) = mpsc::unbounded_channel();
    let rx = Rx {
        log: Arc::default(),
        parked: tx,
    };
    let app = Router::new().fallback(hook).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (addr, rx, parked)
}

// ---- the server -----------------------------------------------------------------------------

/// The real binary; killed when dropped (a failing case must not leave it running).
struct Server {
    child: Child,
    db: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(db: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("serve")
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DB", db)
        .env("HOOKLINE_ADMIN_KEY", ADMIN)
        .env("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8")
        .env(
            "HOOKLINE_DELIVERY__MAX_RETRY_AFTER",
            format!("{RETRY_AFTER_CLAMP_MS}ms"),
        )
        .env("HOOKLINE_SHUTDOWN_GRACE", "100ms")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hookline")
}

async fn integrity(db: &Path) -> String {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open journal for integrity check");
    let r: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check");
    let _ = conn.close().await;
    r
}

// ---- one case -------------------------------------------------------------------------------

struct Case {
    model: Model,
    server: Server,
    client: reqwest::Client,
    base: String,
    key: String,
    sub: String,
    rx: Rx,
    parked: mpsc::UnboundedReceiver<Parked>,
    /// The request in flight, held until answered.
    holding: Option<Parked>,
    /// Operations so far, for failure messages.
    trace: String,
    published: usize,
    /// The receiver's record of the request answered just before a kill: the kill may close
    /// the connection before the receiver sends that answer, and then no receipt happened.
    killed_arrival: Option<usize>,
    /// Deliveries skipped before they were ever sent: a replay may send them after later ones
    /// (skipped is terminal, so the next may go), so they are outside the first-arrival order.
    skipped_unsent: Vec<usize>,
}

impl Case {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().await.expect("the API answers");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("the API's body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        let log = self.rx.log.lock().expect("log").clone();
        let mut s = String::new();
        for (i, a) in log.iter().enumerate() {
            let _ = writeln!(s, "  #{i} {} -> {:?}", a.webhook_id, a.status);
        }
        panic!(
            "{what}\n-- operations --\n{}-- model --\n{:#?}\n-- receiver --\n{s}",
            self.trace, self.model
        );
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                self.fail("hookline did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the request the model says must come, and refuses any other.
    /// `retry_after_ms`: the delivery just answered with a retry, when, and its least delay.
    async fn settle(&mut self, retry_after_ms: Option<(usize, Instant, u64)>) {
        if let Some(head) = self.model.expected() {
            let p = match tokio::time::timeout(WITHIN, self.parked.recv()).await {
                Ok(Some(p)) => p,
                _ => self.fail(format!(
                    "no request for {} (delivery {head}) within {WITHIN:?}",
                    self.model.ds[head].event
                )),
            };
            if p.webhook_id != self.model.ds[head].event {
                self.fail(format!(
                    "request #{} for {:?}, but the head is {}",
                    p.index, p.webhook_id, self.model.ds[head].event
                ));
            }
            // Only a retry of the same delivery waits; a replayed earlier one may go at once.
            if let Some((i, answered, min_ms)) = retry_after_ms.filter(|r| r.0 == head) {
                // The engine's clock starts after the answer; 2 ms of rounding allowed.
                let gap = p.at.duration_since(answered);
                if gap + Duration::from_millis(2) < Duration::from_millis(min_ms) {
                    self.fail(format!(
                        "retry of {} (delivery {i}) after {gap:?}, before its {min_ms} ms delay",
                        p.webhook_id
                    ));
                }
            }
            self.model.in_flight = Some(head);
            self.holding = Some(p);
        }
        self.refuse_unexpected();
    }

    fn refuse_unexpected(&mut self) {
        if let Ok(p) = self.parked.try_recv() {
            self.fail(format!(
                "unexpected request #{} for {:?} (in flight: {:?}, runnable: {})",
                p.index,
                p.webhook_id,
                self.model.in_flight,
                self.model.runnable()
            ));
        }
    }

    /// The non-interrupted attempt log of delivery `i` and how many were interrupted.
    async fn attempt_log(&self, i: usize) -> (Vec<Logged>, usize, Value) {
        let path = format!("/v1/deliveries/{}", self.model.ds[i].id);
        let (s, v) = self.call(reqwest::Method::GET, &path, None).await;
        if s != 200 {
            self.fail(format!("GET {path}: {s} {v}"));
        }
        let all = v["attempts"].as_array().cloned().unwrap_or_default();
        let interrupted = all
            .iter()
            .filter(|a| a["errorKind"] == "interrupted")
            .count();
        let log = all
            .iter()
            .filter(|a| a["errorKind"] != "interrupted")
            .map(Logged::from_api)
            .collect();
        (log, interrupted, v)
    }

    /// Waits until delivery `i`'s attempt log has `n` committed attempts.
    async fn wait_logged(&self, i: usize, n: usize) -> Vec<Logged> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let (log, _, _) = self.attempt_log(i).await;
            if log.len() >= n {
                return log;
            }
            if Instant::now() > deadline {
                self.fail(format!(
                    "delivery {i}'s attempt was not journaled within {WITHIN:?} ({} of {n})",
                    log.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn answer(&mut self, a: Answer) {
        let Some(i) = self.model.in_flight else {
            return;
        };
        let p = self.holding.take().expect("a parked request");
        let answered = Instant::now();
        let _ = p.reply.send(a);
        let committed = self.model.ds[i].log.len() + 1;
        let log = self.wait_logged(i, committed).await;
        let want = Logged::of(a);
        if log.len() != committed || log[committed - 1] != want {
            self.fail(format!(
                "delivery {i} answered {a:?}: attempt log {log:?}, expected it to end with {want:?}"
            ));
        }
        self.model.apply(i, a);
        let min_ms = match a {
            Answer::RetryAfter(_, secs) => (secs * 1000).clamp(BACKOFF_MS, RETRY_AFTER_CLAMP_MS),
            _ => BACKOFF_MS,
        };
        let retrying = self.model.ds[i].status == St::Pending;
        self.settle(retrying.then_some((i, answered, min_ms))).await;
    }

    /// Stops the server (SIGKILL, or SIGTERM when `graceful`), checks the journal, starts it
    /// again and learns what the stop did to the attempt in flight.
    async fn stop_and_start(&mut self, graceful: bool, answered: Option<Answer>) {
        if graceful {
            // The package denies `unsafe` (so no `libc::kill`), hence the `kill` utility.
            let pid = self.server.child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        } else {
            let _ = self.server.child.kill();
        }
        let _ = self.server.child.wait();
        self.model.stops += 1;
        let killed = self.killed_arrival.take();
        let ok = integrity(&self.server.db).await;
        if ok != "ok" {
            self.fail(format!("journal corrupt after a stop: {ok}"));
        }
        // Requests the dead process sent after the last one the model saw.
        let mut stale = Vec::new();
        while let Ok(p) = self.parked.try_recv() {
            stale.push(p);
        }
        self.holding = None;
        self.server.child = spawn(&self.server.db, self.server.port);
        self.wait_ready().await;

        if let Some(i) = self.model.in_flight {
            let before = self.model.ds[i].log.len();
            let (log, _, _) = self.attempt_log(i).await;
            let Some(added) = log.len().checked_sub(before) else {
                self.fail(format!(
                    "delivery {i} lost committed attempts in a stop: {log:?}"
                ));
            };
            match added {
                0 => {
                    // Not committed: the attempt is interrupted and goes out again.
                    self.model.in_flight = None;
                    // A 2xx the receiver really sent (the kill can drop the connection first,
                    // and the answer with it).
                    let sent_2xx = killed.is_some_and(|k| {
                        let log = self.rx.log.lock().expect("log");
                        log.get(k)
                            .is_some_and(|a| a.status.is_some_and(|s| s / 100 == 2))
                    });
                    if sent_2xx
                        && answered.is_some_and(|a| matches!(verdict(a), Verdict::Delivered { .. }))
                    {
                        self.model.ds[i].lost_2xx += 1;
                    }
                }
                1 => {
                    let got = &log[before];
                    // A graceful stop may let the attempt run into its timeout.
                    let a = answered.unwrap_or(Answer::Timeout);
                    if *got != Logged::of(a) {
                        self.fail(format!(
                            "after the stop delivery {i} logged {got:?}, but it was answered {answered:?}"
                        ));
                    }
                    self.model.apply(i, a);
                }
                n => self.fail(format!("{n} attempts of delivery {i} logged by one stop")),
            }
        }
        // What the dead process sent after its last commit must be the head of the history
        // that commit chose.
        for p in stale {
            let head = self
                .model
                .expected()
                .map(|h| self.model.ds[h].event.as_str());
            if head != Some(p.webhook_id.as_str()) {
                self.fail(format!(
                    "before the stop, request #{} for {:?}, but the head was {head:?}",
                    p.index, p.webhook_id
                ));
            }
        }
        self.settle(None).await;
    }

    async fn op(&mut self, op: &Op) {
        use reqwest::Method;
        let _ = writeln!(self.trace, "{op:?}");
        match *op {
            Op::Publish(k) => {
                for _ in 0..k {
                    let n = self.published;
                    self.published += 1;
                    let id = format!("m{n:03}");
                    let ev = json!({
                        "id": id, "transactionId": format!("tx{n}"),
                        "notificationType": "NODE_EVENT", "payLoad": {"n": n},
                        "timestamp": "2026-12-05T10:00:00Z"
                    });
                    let (s, v) = self.call(Method::POST, "/v1/events", Some(ev)).await;
                    if s != 202 || v["deliveries"] != 1 {
                        self.fail(format!("publish {id}: {s} {v}"));
                    }
                    let list = self.deliveries().await;
                    let Some(d) = list.iter().find(|d| d["eventId"] == id.as_str()) else {
                        self.fail(format!("no delivery of the accepted {id}"));
                    };
                    let dlv = d["id"].as_str().unwrap_or_default().to_owned();
                    self.model.ds.push(MDelivery {
                        event: id,
                        id: dlv,
                        status: St::Pending,
                        budget: 0,
                        log: Vec::new(),
                        delivered: 0,
                        lost_2xx: 0,
                    });
                }
                self.settle(None).await;
            }
            Op::Answer(a) => self.answer(a).await,
            Op::AnswerThenKill(a) => {
                if let Some(p) = self.holding.take() {
                    self.killed_arrival = Some(p.index);
                    let _ = p.reply.send(a);
                }
                let answered = (a != Answer::Timeout).then_some(a);
                let answered = self.model.in_flight.and(answered);
                self.stop_and_start(false, answered).await;
            }
            Op::Kill => self.stop_and_start(false, None).await,
            Op::Restart => self.stop_and_start(true, None).await,
            Op::Pause | Op::Resume => {
                let verb = if matches!(op, Op::Pause) {
                    "pause"
                } else {
                    "resume"
                };
                let path = format!("/v1/subscriptions/{}/{verb}", self.sub);
                let (s, v) = self.call(Method::POST, &path, None).await;
                if s != 200 {
                    self.fail(format!("{verb}: {s} {v}"));
                }
                if matches!(op, Op::Pause) {
                    self.model.paused = true;
                } else {
                    self.model.paused = false;
                    self.model.disabled = false;
                }
                self.settle(None).await;
            }
            Op::Skip(k) | Op::Resubmit(k) if !self.model.ds.is_empty() => {
                let i = k % self.model.ds.len();
                let skip = matches!(op, Op::Skip(_));
                let verb = if skip { "skip" } else { "resubmit" };
                let st = self.model.ds[i].status;
                let allowed = if skip {
                    self.model.in_flight != Some(i) && matches!(st, St::Pending | St::Failed)
                } else {
                    st == St::Failed
                };
                let path = format!("/v1/deliveries/{}/{verb}", self.model.ds[i].id);
                let (s, v) = self.call(Method::POST, &path, None).await;
                let want = if allowed { 200 } else { 409 };
                if s != want {
                    self.fail(format!("{verb} of delivery {i}: {s} {v}, expected {want}"));
                }
                if allowed {
                    let sent = {
                        let log = self.rx.log.lock().expect("log");
                        log.iter().any(|a| a.webhook_id == self.model.ds[i].event)
                    };
                    if skip && !sent && !self.skipped_unsent.contains(&i) {
                        self.skipped_unsent.push(i);
                    }
                    let d = &mut self.model.ds[i];
                    if skip {
                        d.status = St::Skipped;
                    } else {
                        d.status = St::Pending;
                        d.budget = 0;
                    }
                    if self.model.blocked_on == Some(i) {
                        self.model.blocked_on = None;
                    }
                }
                self.settle(None).await;
            }
            Op::Skip(_) | Op::Resubmit(_) => {}
            Op::Replay => {
                let path = format!("/v1/subscriptions/{}/replay", self.sub);
                let body = json!({"since": "2000-01-01T00:00:00Z"});
                let (s, v) = self.call(Method::POST, &path, Some(body)).await;
                let finished = self
                    .model
                    .ds
                    .iter()
                    .filter(|d| d.status != St::Pending)
                    .count();
                if s != 200 || v["replayed"] != finished {
                    self.fail(format!("replay: {s} {v}, expected {finished} replayed"));
                }
                for d in &mut self.model.ds {
                    if d.status != St::Pending {
                        d.status = St::Pending;
                        d.budget = 0;
                    }
                }
                self.model.blocked_on = None;
                self.settle(None).await;
            }
        }
        self.check_state().await;
    }

    async fn deliveries(&self) -> Vec<Value> {
        let path = format!("/v1/subscriptions/{}/deliveries?limit=1000", self.sub);
        let (s, v) = self.call(reqwest::Method::GET, &path, None).await;
        if s != 200 {
            self.fail(format!("list deliveries: {s} {v}"));
        }
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Every delivery's status and the subscription's state are the model's.
    async fn check_state(&mut self) {
        let list = self.deliveries().await;
        if list.len() != self.model.ds.len() {
            self.fail(format!(
                "{} deliveries journaled, {} accepted",
                list.len(),
                self.model.ds.len()
            ));
        }
        let by_event: HashMap<&str, &Value> = list
            .iter()
            .map(|d| (d["eventId"].as_str().unwrap_or_default(), d))
            .collect();
        for (i, d) in self.model.ds.iter().enumerate() {
            let got = by_event
                .get(d.event.as_str())
                .map(|v| v["status"].as_str().unwrap_or_default())
                .unwrap_or("missing");
            // The mark in flight may still be on its way to the journal when the request lands.
            let ok = got == d.status.api()
                || (self.model.in_flight == Some(i) && matches!(got, "in_flight" | "pending"));
            if !ok {
                self.fail(format!(
                    "delivery {i} ({}) is {got}, the model says {}",
                    d.event,
                    d.status.api()
                ));
            }
        }
        let path = format!("/v1/subscriptions/{}", self.sub);
        let (_, v) = self.call(reqwest::Method::GET, &path, None).await;
        let want = self.model.api_state();
        if v["state"] != want {
            self.fail(format!(
                "subscription is {}, the model says {want}",
                v["state"]
            ));
        }
        let blocked = self.model.blocked_on.map(|i| self.model.ds[i].id.as_str());
        if v["blockedOn"].as_str() != blocked {
            self.fail(format!(
                "blockedOn {}, the model says {blocked:?}",
                v["blockedOn"]
            ));
        }
    }

    /// The guarantees over the whole history.
    async fn check_end(&mut self) {
        // Nothing more may arrive once the model expects nothing.
        let quiet = Instant::now() + Duration::from_millis(100);
        while Instant::now() < quiet {
            self.refuse_unexpected();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let arrivals = self.rx.log.lock().expect("log").clone();
        // First arrivals in publish (seq) order, but for deliveries skipped before they were
        // sent: a replay sends those after later ones, as it should (each step of that was
        // checked against the model as it happened).
        let mut first: Vec<usize> = Vec::new();
        for a in &arrivals {
            let Some(i) = self.model.ds.iter().position(|d| d.event == a.webhook_id) else {
                self.fail(format!("a request for an unknown event {:?}", a.webhook_id));
            };
            if !first.contains(&i) && !self.skipped_unsent.contains(&i) {
                first.push(i);
            }
        }
        if first.windows(2).any(|w| w[0] > w[1]) {
            self.fail(format!("first arrivals out of order: {first:?}"));
        }
        // 2xx receipts: the model's deliveries plus the duplicates its kills explain.
        let mut dups = 0;
        for (i, d) in self.model.ds.iter().enumerate() {
            let ok = arrivals
                .iter()
                .filter(|a| a.webhook_id == d.event && a.status.is_some_and(|s| s / 100 == 2))
                .count();
            if ok != d.delivered + d.lost_2xx {
                self.fail(format!(
                    "delivery {i}: {ok} 2xx receipts, the model has {} delivered + {} lost in kills",
                    d.delivered, d.lost_2xx
                ));
            }
            dups += d.lost_2xx;
        }
        if dups > self.model.stops {
            self.fail(format!("{dups} duplicates for {} stops", self.model.stops));
        }
        // Attempt logs: exactly the answers committed, plus at most one interrupted per stop.
        let mut interrupted = 0;
        for i in 0..self.model.ds.len() {
            let (log, n_int, v) = self.attempt_log(i).await;
            if log != self.model.ds[i].log {
                self.fail(format!(
                    "delivery {i}'s attempt log {log:?}, the model's {:?}",
                    self.model.ds[i].log
                ));
            }
            let ns: Vec<u64> = v["attempts"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["n"].as_u64()).collect())
                .unwrap_or_default();
            if ns.windows(2).any(|w| w[0] >= w[1]) {
                self.fail(format!("delivery {i}'s attempt numbers {ns:?}"));
            }
            interrupted += n_int;
        }
        if interrupted > self.model.stops {
            self.fail(format!(
                "{interrupted} interrupted attempts for {} stops",
                self.model.stops
            ));
        }
    }
}

async fn run(block: bool, ops: Vec<Op>) {
    let (addr, rx, parked) = start_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("model.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let server = Server {
        child: spawn(&db, port),
        db,
        port,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(WITHIN)
        .build()
        .expect("client");
    let mut case = Case {
        model: Model {
            block,
            ds: Vec::new(),
            paused: false,
            disabled: false,
            blocked_on: None,
            in_flight: None,
            stops: 0,
        },
        server,
        client,
        base: format!("http://127.0.0.1:{port}"),
        key: ADMIN.to_owned(),
        sub: String::new(),
        rx,
        parked,
        holding: None,
        trace: format!("onFailure: {}\n", if block { "block" } else { "skip" }),
        published: 0,
        killed_arrival: None,
        skipped_unsent: Vec::new(),
    };
    case.wait_ready().await;
    let (s, t) = case
        .call(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(s, 201, "create tenant: {t}");
    case.key = t["apiKey"].as_str().expect("api key").to_owned();
    let body = json!({
        "url": format!("http://{addr}/hook"),
        "retry": {"maxAttempts": MAX_ATTEMPTS, "backoffMs": [BACKOFF_MS]},
        "timeoutMs": TIMEOUT_MS,
        "onFailure": if block { "block" } else { "skip" },
    });
    let (s, v) = case
        .call(reqwest::Method::POST, "/v1/subscriptions", Some(body))
        .await;
    assert_eq!(s, 201, "create subscription: {v}");
    case.sub = v["id"].as_str().expect("subscription id").to_owned();
    for op in &ops {
        case.op(op).await;
    }
    case.check_end().await;
    let arrivals = case.rx.log.lock().expect("log").clone();
    let dups: usize = case.model.ds.iter().map(|d| d.lost_2xx).sum();
    eprintln!(
        "model case: {} ops, {} events, {} requests, {} stops, {dups} duplicates",
        ops.len(),
        case.model.ds.len(),
        arrivals.len(),
        case.model.stops
    );
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // A case starts a process; shrinking stays bounded.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_queue_follows_its_model(block in any::<bool>(), ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(block, ops));
    }
}
