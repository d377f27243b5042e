//! A programmable loopback HTTP receiver that records every request it gets.
//!
//! [`Receiver::start`] binds a real axum server on `127.0.0.1:0`. Every request, whatever its
//! method or path, is recorded as a [`Recorded`] (arrival index and time, method, path, headers
//! with lowercased names, body) and answered by the current [`Behaviour`]: a closure from the
//! request to a [`Reply`] (status, headers, body, delay). The status is recorded once the reply
//! is handed back to hyper, after its delay, so `status == None` means "still being answered (or
//! abandoned by the client)".
//!
//! Eventual conditions are awaited with [`Receiver::wait_for`], which polls every 10 ms up to a
//! deadline and then panics with a dump of everything received.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(10);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival order across all paths, from 0.
    pub index: usize,
    /// When the request (with its whole body) arrived.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Request path (no query).
    pub path: String,
    /// Headers, names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Bytes,
    /// 1 for the first request with this `webhook-id` on this path, 2 for the second, …
    pub nth_for_id: usize,
    /// The status answered; `None` while the reply is delayed (or if the client gave up first).
    pub status: Option<u16>,
    /// When the reply was handed back to hyper.
    pub answered_at: Option<Instant>,
}

impl Recorded {
    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `webhook-id` header, or `""`.
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id").unwrap_or("")
    }

    /// The body parsed as JSON (panics if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request #{} body is not JSON ({e}): {:?}",
                self.index,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Whether it was answered with a 2xx.
    pub fn answered_2xx(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Waited before answering (to provoke timeouts, or to keep an attempt in flight).
    pub delay: Duration,
}

impl Reply {
    /// An empty reply with this status.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// `200 OK`.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// This status with a `Retry-After` of `secs` seconds.
    pub fn retry_after(status: u16, secs: u64) -> Reply {
        Reply::status(status).header("retry-after", secs.to_string())
    }

    /// A redirect (3xx) to `location`.
    pub fn redirect(status: u16, location: impl Into<String>) -> Reply {
        Reply::status(status).header("location", location)
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// How the receiver answers: called once per request, with the request already recorded.
pub type Behaviour = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// Always answers `status`.
pub fn always(status: u16) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |_| Reply::status(status)
}

/// Answers `status` to the first `n` requests of each `webhook-id` (per path), then 200.
pub fn fail_first(n: usize, status: u16) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        if r.nth_for_id <= n {
            Reply::status(status)
        } else {
            Reply::ok()
        }
    }
}

struct Inner {
    log: Mutex<Vec<Recorded>>,
    behaviour: Mutex<Behaviour>,
}

/// Stops the server when the last [`Receiver`] clone is dropped.
struct Guard {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: AbortHandle,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A recording, programmable HTTP receiver on loopback. Cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    guard: Arc<Guard>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.guard.addr)
            .finish()
    }
}

impl Receiver {
    /// Starts a receiver answering 200 to everything.
    pub async fn start() -> Receiver {
        Receiver::with(always(200)).await
    }

    /// Starts a receiver with a behaviour.
    pub async fn with(behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Receiver {
        let inner = Arc::new(Inner {
            log: Mutex::new(Vec::new()),
            behaviour: Mutex::new(Arc::new(behaviour)),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("test receiver");
        });
        Receiver {
            guard: Arc::new(Guard {
                addr,
                inner,
                server: server.abort_handle(),
            }),
        }
    }

    /// Replaces the behaviour for requests arriving from now on.
    pub fn set_behaviour(&self, behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.guard.inner.behaviour.lock().expect("behaviour lock") = Arc::new(behaviour);
    }

    /// The receiver's address.
    pub fn addr(&self) -> SocketAddr {
        self.guard.addr
    }

    /// A URL on this receiver; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.guard.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.guard.inner.log.lock().expect("log lock").clone()
    }

    /// The requests to one path, in arrival order.
    pub fn requests_at(&self, path: &str) -> Vec<Recorded> {
        at_path(&self.requests(), path)
    }

    /// The requests carrying one `webhook-id` (any path), in arrival order.
    pub fn requests_for(&self, webhook_id: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.webhook_id() == webhook_id)
            .collect()
    }

    /// The `webhook-id`s answered 2xx, in arrival order (repeats included).
    pub fn delivered_ids(&self) -> Vec<String> {
        delivered_ids(&self.requests())
    }

    /// The `webhook-id`s answered 2xx on one path, in arrival order (repeats included).
    pub fn delivered_ids_at(&self, path: &str) -> Vec<String> {
        delivered_ids(&self.requests_at(path))
    }

    /// Polls every 10 ms until `cond` holds for the requests received, or panics after `within`
    /// with `what` and a dump of the requests. Returns the requests that satisfied it.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let deadline = Instant::now() + within;
        loop {
            // Checked under the lock, without copying the log: a copy of thousands of recorded
            // bodies every 10 ms starved the receiver itself on a loaded machine (2,500 ordered
            // deliveries took over 240 s at load 12).
            let met = {
                let log = self.guard.inner.log.lock().expect("log lock");
                cond(&log).then(|| log.clone())
            };
            if let Some(reqs) = met {
                return reqs;
            }
            if Instant::now() >= deadline {
                let reqs = self.requests();
                panic!(
                    "receiver: timed out after {within:?} waiting for {what}\n{}",
                    dump(&reqs)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every id in `ids` was answered 2xx on `path`.
    pub async fn wait_delivered_at(&self, path: &str, ids: &[String], within: Duration) {
        let what = format!("{} ids delivered at {path}", ids.len());
        self.wait_for(&what, within, |reqs| {
            let got: std::collections::HashSet<&str> = reqs
                .iter()
                .filter(|r| r.path == path && r.answered_2xx())
                .map(Recorded::webhook_id)
                .collect();
            ids.iter().all(|id| got.contains(id.as_str()))
        })
        .await;
    }
}

/// The requests to one path.
pub fn at_path(reqs: &[Recorded], path: &str) -> Vec<Recorded> {
    reqs.iter().filter(|r| r.path == path).cloned().collect()
}

/// The `webhook-id`s answered 2xx, in arrival order.
pub fn delivered_ids(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.answered_2xx())
        .map(|r| r.webhook_id().to_owned())
        .collect()
}

/// One line per request, for failure messages.
pub fn dump(reqs: &[Recorded]) -> String {
    let mut s = format!("{} requests:\n", reqs.len());
    for r in reqs {
        let _ = writeln!(
            s,
            "  #{} {} {} webhook-id={} nth={} status={:?}",
            r.index,
            r.method,
            r.path,
            r.webhook_id(),
            r.nth_for_id,
            r.status
        );
    }
    s
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let mut lowered: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        lowered
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&v);
            })
            .or_insert(v);
    }
    let (rec, behaviour) = {
        let mut log = inner.log.lock().expect("log lock");
        let path = uri.path().to_owned();
        let id = lowered.get("webhook-id").cloned().unwrap_or_default();
        let nth_for_id = 1 + log
            .iter()
            .filter(|r| r.path == path && r.webhook_id() == id)
            .count();
        let rec = Recorded {
            index: log.len(),
            at: Instant::now(),
            method: method.to_string(),
            path,
            headers: lowered,
            body,
            nth_for_id,
            status: None,
            answered_at: None,
        };
        log.push(rec.clone());
        let behaviour = inner.behaviour.lock().expect("behaviour lock").clone();
        (rec, behaviour)
    };
    let reply = behaviour(&rec);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(r) = inner.log.lock().expect("log lock").get_mut(rec.index) {
        r.status = Some(reply.status);
        r.answered_at = Some(Instant::now());
    }
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(reply.status).expect("a valid status code"));
    for (name, value) in &reply.headers {
        resp = resp.header(name.as_str(), value.as_str());
    }
    resp.body(Body::from(reply.body)).expect("a valid response")
}
