//! The API's input side through a real server on 127.0.0.1: every refusal of issue 5's list,
//! slow and abusive clients (raw TCP), the batch route, `Idempotency-Key`, and the OpenAPI
//! document against its committed copy.
//!
//! Each test serves `hookline::api::serve_with` over a real SQLite journal in a temporary
//! directory, with limits shrunk where a test needs to reach them quickly.

use std::net::SocketAddr;
use std::time::Duration;

use hookline::api::ApiConfig;
use hookline::{EngineConfig, EngineHandle};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support;

const ADMIN: &str = "admin-key-for-ingress-tests-0123";

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    base: String,
    client: reqwest::Client,
    engine: EngineHandle,
    db: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start() -> Server {
        Server::start_with(ApiConfig::default(), EngineConfig::default()).await
    }

    pub(crate) async fn start_with(api: ApiConfig, engine_cfg: EngineConfig) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ingress.db");
        let engine = support::builder(&db)
            .config(EngineConfig {
                allow_networks: vec!["127.0.0.0/8".parse().expect("a CIDR")],
                shutdown_grace: Duration::from_millis(200),
                ..engine_cfg
            })
            .build()
            .await
            .expect("engine starts");
        engine
            .ensure_admin_key(Some(ADMIN))
            .await
            .expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hookline::api::serve_with(
            listener,
            engine.clone(),
            api,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            engine,
            db,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops")
                .expect("no panic")
                .expect("clean stop");
        }
        self.engine.shutdown().await;
    }

    fn req(&self, method: Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    async fn post_raw(&self, path: &str, key: &str, body: impl Into<reqwest::Body>) -> Resp {
        self.send(
            self.req(Method::POST, path, Some(key))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.post_raw(path, key, serde_json::to_vec(body).expect("json"))
            .await
    }

    pub(crate) async fn tenant(&self, id: &str) -> String {
        let r = self
            .post("/v1/tenants", ADMIN, &json!({"id": id, "name": id}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["apiKey"].as_str().expect("apiKey").to_owned()
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    json: Value,
}

impl Resp {
    /// Asserts a JSON refusal with `status` and `code`; returns its `error` object.
    fn refused(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "unexpected status: {}", self.text);
        let err = &self.json["error"];
        assert_eq!(err["code"], code, "unexpected code: {}", self.text);
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {}",
            self.text
        );
        err
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn envelope(id: &str) -> Value {
    json!({
        "id": id,
        "transactionId": "tx-1",
        "notificationType": "TRANSACTION_EVENT",
        "payLoad": {"status": "PASSED"},
        "timestamp": "2026-11-23T10:12:16.827Z"
    })
}

/// Writes `head` on a raw connection and reads until the server closes it or `within` passes;
/// returns what was read and how long it took.
async fn raw_exchange(addr: SocketAddr, head: &[u8], within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

// ---- refusals ------------------------------------------------------------------------------

#[tokio::test]
async fn every_refusal_has_its_status_code_and_json_error() {
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    srv.tenant("globex").await;

    // Malformed JSON: 400, with the parser's position.
    srv.post_raw("/v1/events", &acme, r#"{"id": "x", "#)
        .await
        .refused(400, "malformed_json");
    // Schema violation: 400 naming the field as a JSON pointer.
    let mut e = envelope("e1");
    e["timestamp"] = json!("23/11/2026");
    let err = srv
        .post("/v1/events", &acme, &e)
        .await
        .refused(400, "schema_violation")
        .clone();
    assert_eq!(err["field"], "/timestamp", "{err}");
    let mut e = envelope("e1");
    e["payLoad"] = json!("not an object");
    let r = srv.post("/v1/events", &acme, &e).await;
    assert_eq!(r.refused(400, "schema_violation")["field"], "/payLoad");
    // Missing or unknown key: 401.
    srv.send(
        srv.req(Method::POST, "/v1/events", None)
            .header("content-type", "application/json")
            .body(envelope("e1").to_string()),
    )
    .await
    .refused(401, "unauthorized");
    srv.post("/v1/events", "hlk_not-a-key", &envelope("e1"))
        .await
        .refused(401, "unauthorized");
    // Another tenant's name in the body: 404, as if it did not exist.
    let mut e = envelope("e1");
    e["tenantId"] = json!("globex");
    srv.post("/v1/events", &acme, &e)
        .await
        .refused(404, "not_found");
    // Over the body limit (declared length): 413.
    let mut e = envelope("big");
    e["payLoad"]["pad"] = json!("x".repeat(1024 * 1024));
    srv.post("/v1/events", &acme, &e)
        .await
        .refused(413, "payload_too_large");
    // Wrong content type: 415.
    srv.send(
        srv.req(Method::POST, "/v1/events", Some(&acme))
            .header("content-type", "text/plain")
            .body(envelope("e1").to_string()),
    )
    .await
    .refused(415, "unsupported_media_type");
    // Conflicting state: 409.
    srv.post(
        "/v1/tenants",
        ADMIN,
        &json!({"id": "acme", "name": "again"}),
    )
    .await
    .refused(409, "conflict");
    // Nesting deeper than 64 levels: 400 before parsing.
    let mut e = envelope("deep");
    e["payLoad"]["deep"] = serde_json::from_str(&("[".repeat(70) + &"]".repeat(70))).unwrap();
    srv.post("/v1/events", &acme, &e)
        .await
        .refused(400, "nesting_too_deep");
    // 63 levels inside the envelope's own two are fine.
    let mut e = envelope("deep-ok");
    let inner = "[".repeat(62) + &"]".repeat(62);
    e["payLoad"]["deep"] = serde_json::from_str(&inner).unwrap();
    let r = srv.post("/v1/events", &acme, &e).await;
    assert_eq!(r.status, 202, "{}", r.text);

    // Nothing refused was journaled: republishing e1 is new, not a duplicate.
    let r = srv.post("/v1/events", &acme, &envelope("e1")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["duplicate"], false, "{}", r.text);
    // Every response carries a request id; a sane one from the caller is kept.
    let r = srv
        .send(
            srv.req(Method::GET, "/v1/tenants/acme", Some(&acme))
                .header("x-request-id", "trace-42"),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    // Otherwise one is generated.
    let r = srv.send(srv.req(Method::GET, "/healthz", None)).await;
    let generated = r.header("x-request-id").unwrap_or_default();
    assert!(
        generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "no generated request id: {:?}",
        r.headers
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_not_read_past_it() {
    // The batch limit shrunk to 2 MiB so that its drain bound (8 times that) is under the 64
    // MiB the client sends.
    let srv = Server::start_with(
        ApiConfig {
            batch_body_limit: 2 * 1024 * 1024,
            ..ApiConfig::default()
        },
        EngineConfig::default(),
    )
    .await;
    let acme = srv.tenant("acme").await;
    // With a valid key, buffering stops at the 1 MiB limit: 413, then the rest is read and
    // discarded up to 8 MiB (see refused_bodies.rs) and the connection is closed.
    let auth = format!("authorization: Bearer {acme}\r\n");
    let sent = stream_body(
        srv.addr,
        "/v1/events",
        &auth,
        "HTTP/1.1 413",
        "payload_too_large",
    )
    .await;
    eprintln!("413: the server closed after {} KiB were sent", sent / 1024);
    // Without a valid key, the body is not buffered at all: 401, then drained within the
    // same bound.
    let sent = stream_body(
        srv.addr,
        "/v1/events/batch",
        "authorization: Bearer hlk_wrong\r\n",
        "HTTP/1.1 401",
        "unauthorized",
    )
    .await;
    eprintln!("401: the server closed after {} KiB were sent", sent / 1024);
    srv.stop().await;
}

/// Streams up to 64 MiB of chunked body to `path`, far more than the socket buffers hold, and
/// asserts the answer starts with `status` and names `code`, and that the server closed the
/// connection before taking it all. Returns how much was sent.
async fn stream_body(addr: SocketAddr, path: &str, auth: &str, status: &str, code: &str) -> usize {
    const TOTAL: usize = 64 * 1024 * 1024;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        let mut sent = 0usize;
        while sent < TOTAL {
            if wr.write_all(&framed).await.is_err() {
                return sent;
            }
            sent += 64 * 1024;
        }
        sent
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with(status), "expected {status}, got: {text}");
    assert!(text.contains(code), "{text}");
    let sent = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("writer ends once the server closes")
        .expect("no panic");
    assert!(sent < TOTAL, "the server read the whole 64 MiB body");
    sent
}

// ---- slow and abusive clients --------------------------------------------------------------

#[tokio::test]
async fn slow_headers_slow_bodies_and_too_many_connections_are_cut_off() {
    let srv = Server::start_with(
        ApiConfig {
            header_read_timeout: Duration::from_millis(500),
            body_read_timeout: Duration::from_millis(500),
            max_connections: 3,
            ..ApiConfig::default()
        },
        EngineConfig::default(),
    )
    .await;
    let acme = srv.tenant("acme").await;

    // Slowloris: a header line every 100 ms never completes the request; the connection is
    // closed once the header timeout passes.
    let start = Instant::now();
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    s.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut closed = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(format!("x-slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            // Either EOF or an error response, then EOF: the server gave up on us.
            closed = true;
            eprintln!("slowloris got: {:?}", String::from_utf8_lossy(&buf[..n]));
            break;
        }
    }
    let took = start.elapsed();
    assert!(closed, "a slowloris connection stayed open for {took:?}");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");

    // A body that stalls: 408 once the body timeout passes, and the connection is closed.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {acme}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"id\":"
    );
    let (text, took) = raw_exchange(srv.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "expected 408, got: {text}"
    );
    assert!(text.contains("body_timeout"), "{text}");
    assert!(took < Duration::from_secs(3), "408 only after {took:?}");

    // Connection limit: three idle connections hold every slot; a fourth is answered 503.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(srv.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (text, _) = raw_exchange(
        srv.addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 503"),
        "expected 503, got: {text}"
    );
    assert!(text.contains("too_many_connections"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    // Once the idle ones are gone (closed by us, or by the header timeout), service resumes.
    drop(idle);
    support::eventually("a slot frees up", Duration::from_secs(5), || async {
        let (text, _) = raw_exchange(
            srv.addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        text.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    srv.stop().await;
}

// ---- overload and journal failure ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_intake_queue_answers_429_and_writes_nothing_of_the_refused() {
    let server = Server::start_with(
        ApiConfig::default(),
        EngineConfig {
            intake_queue: 1,
            intake_wait: Duration::ZERO,
            commit_batch_max: 1,
            ..EngineConfig::default()
        },
    )
    .await;
    overload_round_trips(&server).await;
    server.stop().await;
}

async fn overload_round_trips(srv: &Server) {
    let acme = srv.tenant("acme").await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for round in 0..20 {
        let calls = (0..64).map(|i| {
            let id = format!("r{round}-{i}");
            let body = envelope(&id).to_string();
            let rb = srv
                .req(Method::POST, "/v1/events", Some(&acme))
                .header("content-type", "application/json")
                .body(body);
            async move { (id, srv.send(rb).await) }
        });
        for (id, r) in futures_join(calls).await {
            match r.status {
                202 => accepted.push(id),
                429 => {
                    r.refused(429, "overloaded");
                    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
                    refused.push(id);
                }
                other => panic!("unexpected {other}: {}", r.text),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    eprintln!("accepted {}, refused {}", accepted.len(), refused.len());
    assert!(!refused.is_empty(), "no 429 from a one-slot intake queue");
    // Accepted ones are journaled (a retry is a duplicate); refused ones are not (a retry is
    // new). Sequential now, so the queue has room.
    for id in accepted.iter().take(5) {
        let r = srv.post("/v1/events", &acme, &envelope(id)).await;
        assert_eq!(r.json["duplicate"], true, "{id}: {}", r.text);
    }
    for id in &refused {
        let r = srv.post("/v1/events", &acme, &envelope(id)).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(
            r.json["duplicate"], false,
            "{id} was half-written: {}",
            r.text
        );
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

#[tokio::test]
async fn an_unavailable_journal_answers_an_opaque_503_and_accepts_nothing() {
    use sqlx::Connection;
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    // Another process holding the write lock: the writer's commits fail after its busy
    // timeout, as they would on an I/O error or a full disk.
    let mut locker =
        sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", srv.db.display()))
            .await
            .expect("open the journal");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let r = srv
        .send(
            srv.req(Method::POST, "/v1/events", Some(&acme))
                .header("content-type", "application/json")
                .header("x-request-id", "req-503")
                .body(envelope("during-outage").to_string()),
        )
        .await;
    let err = r.refused(503, "unavailable").clone();
    assert_eq!(err["requestId"], "req-503", "{}", r.text);
    assert_eq!(r.header("x-request-id"), Some("req-503"));
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(
        !r.text.contains("locked") && !r.text.contains("sqlite"),
        "the cause leaked: {}",
        r.text
    );
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    locker.close().await.expect("close");
    // Nothing of the refused event was written.
    let r = srv
        .post("/v1/events", &acme, &envelope("during-outage"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["duplicate"], false, "{}", r.text);
    srv.stop().await;
}

// ---- batch and idempotency -----------------------------------------------------------------

#[tokio::test]
async fn a_batch_journals_the_valid_items_and_names_the_invalid_ones() {
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    srv.tenant("globex").await;
    let first = srv.post("/v1/events", &acme, &envelope("b-dup")).await;
    assert_eq!(first.status, 202, "{}", first.text);

    let mut bad_time = envelope("b-bad");
    bad_time["timestamp"] = json!("never");
    let mut other = envelope("b-other");
    other["tenantId"] = json!("globex");
    let mut no_id = envelope("x");
    no_id.as_object_mut().unwrap().remove("id");
    // An item that breaks the event schema: the batch is not what the document describes (an
    // array of event envelopes), so all of it is refused, naming the item.
    let batch = json!([envelope("b-1"), bad_time, other.clone()]);
    let r = srv.post("/v1/events/batch", &acme, &batch).await;
    assert_eq!(r.refused(400, "schema_violation")["field"], "/1/timestamp");
    // What the document cannot say is refused item by item.
    let batch = json!([envelope("b-1"), other, envelope("b-dup"), no_id]);
    let r = srv.post("/v1/events/batch", &acme, &batch).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = &r.json;
    assert_eq!(body["accepted"], 3, "{body}");
    assert_eq!(body["rejected"], 1, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    for (i, item) in results.iter().enumerate() {
        assert_eq!(item["index"], i, "{item}");
    }
    assert_eq!(
        results[0]["status"], "accepted",
        "the refused batch wrote nothing"
    );
    assert_eq!(results[0]["id"], "b-1");
    assert!(results[0]["seq"].as_i64().is_some(), "{}", results[0]);
    assert_eq!(results[0]["deliveries"], 0);
    assert_eq!(results[1]["status"], "rejected");
    assert_eq!(results[1]["error"]["code"], "not_found");
    assert_eq!(results[2]["status"], "duplicate");
    assert_eq!(results[2]["seq"], first.json["seq"]);
    assert_eq!(results[3]["status"], "accepted");
    assert!(
        results[3]["id"]
            .as_str()
            .is_some_and(|s| s.starts_with("evt_")),
        "{}",
        results[3]
    );
    // Accepted items are journaled, rejected ones are not.
    let again = srv
        .post(
            "/v1/events/batch",
            &acme,
            &json!([envelope("b-1"), envelope("b-bad")]),
        )
        .await;
    assert_eq!(
        again.json["results"][0]["status"], "duplicate",
        "{}",
        again.text
    );
    assert_eq!(
        again.json["results"][1]["status"], "accepted",
        "{}",
        again.text
    );

    // Over 1000 items: 413; not an array or empty: 400.
    let many: Vec<Value> = (0..1001).map(|i| envelope(&format!("m{i}"))).collect();
    srv.post("/v1/events/batch", &acme, &Value::Array(many))
        .await
        .refused(413, "batch_size");
    srv.post("/v1/events/batch", &acme, &json!([]))
        .await
        .refused(400, "batch_size");
    srv.post("/v1/events/batch", &acme, &envelope("not-an-array"))
        .await
        .refused(400, "schema_violation");
    // None of the 1001 was journaled.
    let r = srv.post("/v1/events", &acme, &envelope("m0")).await;
    assert_eq!(r.json["duplicate"], false, "{}", r.text);
    srv.stop().await;
}

#[tokio::test]
async fn the_batch_body_limit_is_its_own() {
    let srv = Server::start_with(
        ApiConfig {
            batch_body_limit: 4096,
            ..ApiConfig::default()
        },
        EngineConfig::default(),
    )
    .await;
    let acme = srv.tenant("acme").await;
    let many: Vec<Value> = (0..40).map(|i| envelope(&format!("s{i}"))).collect();
    srv.post("/v1/events/batch", &acme, &Value::Array(many))
        .await
        .refused(413, "payload_too_large");
    let few: Vec<Value> = (0..3).map(|i| envelope(&format!("s{i}"))).collect();
    let r = srv
        .post("/v1/events/batch", &acme, &Value::Array(few))
        .await;
    assert_eq!(r.json["accepted"], 3, "{}", r.text);
    srv.stop().await;
}

#[tokio::test]
async fn idempotency_key_is_the_event_id_when_the_body_has_none() {
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    let mut body = envelope("x");
    body.as_object_mut().unwrap().remove("id");
    let publish = |key: &'static str, body: Value| {
        let rb = srv
            .req(Method::POST, "/v1/events", Some(&acme))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_string());
        srv.send(rb)
    };
    let first = publish("order-7-paid", body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.json["id"], "order-7-paid");
    assert_eq!(first.json["duplicate"], false);
    let second = publish("order-7-paid", body.clone()).await;
    assert_eq!(second.status, 202, "{}", second.text);
    assert_eq!(second.json["id"], "order-7-paid");
    assert_eq!(second.json["seq"], first.json["seq"]);
    assert_eq!(second.json["duplicate"], true);
    // The same id in both places is fine; different ones are refused.
    let same = publish("order-7-paid", envelope("order-7-paid")).await;
    assert_eq!(same.json["duplicate"], true, "{}", same.text);
    let r = publish("order-8", envelope("order-9")).await;
    assert_eq!(r.refused(422, "idempotency_key_mismatch")["field"], "/id");
    // `id: null` is not an id: the document says a string, with or without the header.
    let mut null_id = envelope("x");
    null_id["id"] = Value::Null;
    let r = publish("order-10", null_id).await;
    assert_eq!(r.refused(400, "schema_violation")["field"], "/id");
    let r = publish("not a key!", body).await;
    assert_eq!(r.refused(400, "invalid")["field"], "Idempotency-Key");
    srv.stop().await;
}

// ---- OpenAPI -------------------------------------------------------------------------------

/// The committed `schemas/openapi.json` is the document the server serves. After changing the
/// API, regenerate it with `HOOKLINE_UPDATE_OPENAPI=1 cargo test --all-features --test it openapi`.
#[tokio::test]
async fn openapi_document_matches_the_committed_file() {
    let srv = Server::start().await;
    let r = srv
        .send(srv.req(Method::GET, "/v1/openapi.json", None))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let served = r.json.clone();
    srv.stop().await;
    assert_eq!(served["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let paths = served["paths"].as_object().expect("paths");
    for p in [
        "/healthz",
        "/v1/openapi.json",
        "/v1/tenants",
        "/v1/tenants/{id}",
        "/v1/subscriptions",
        "/v1/subscriptions/{id}",
        "/v1/subscriptions/{id}/pause",
        "/v1/subscriptions/{id}/resume",
        "/v1/subscriptions/{id}/secret/rotate",
        "/v1/subscriptions/{id}/test",
        "/v1/subscriptions/{id}/deliveries",
        "/v1/events",
        "/v1/events/batch",
        "/v1/deliveries/{id}",
        "/v1/deliveries/{id}/resubmit",
        "/v1/deliveries/{id}/skip",
        "/v1/subscriptions/{id}/replay",
        "/v1/tenants/{tenant}/transforms",
        "/v1/tenants/{tenant}/transforms/{name}",
        "/v1/tenants/{tenant}/transforms/{name}/versions/{version}/test",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} is missing from the OpenAPI document"
        );
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json");
    let pretty = serde_json::to_string_pretty(&served).expect("json") + "\n";
    if std::env::var_os("HOOKLINE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, &pretty).expect("write schemas/openapi.json");
        eprintln!("rewrote {}", file.display());
        return;
    }
    let committed: Value = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert!(
        committed == served,
        "schemas/openapi.json differs from the document the server serves (GET /v1/openapi.json). \
         Regenerate it with: HOOKLINE_UPDATE_OPENAPI=1 cargo test --all-features --test it openapi"
    );
}
