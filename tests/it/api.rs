//! HTTP API tests: the real axum server over loopback HTTP, driven with `reqwest`.
//!
//! Every test starts its own engine on a SQLite file in a temporary directory, serves
//! `hookline::api` on `127.0.0.1:0`, and, where deliveries matter, a small recording receiver.
//! The last tests run the real `hookline` binary. Eventual conditions are polled with a
//! deadline ([`eventually`]); nothing sleeps to assert.
//!
//! Self-contained on purpose: the helpers below are private to this module.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hookline::{Durability, Engine, EngineHandle, RetryPolicy};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The admin key every in-process server is configured with.
pub(crate) const ADMIN: &str = "admin-key-for-tests-0123456789";
/// Deadline of eventual conditions (most hold within milliseconds).
const WITHIN: Duration = Duration::from_secs(10);
/// Poll interval of eventual conditions.
const POLL: Duration = Duration::from_millis(10);
/// The content type every delivery must carry (callback contract).
const DELIVERY_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

// ---- helpers -------------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        // A transform upload compiles its component before answering: over 10 s in a debug
        // build on a 2-core machine at load 13.
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Polls `f` until it yields `Some`, or panics naming `what` after [`WITHIN`].
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WITHIN:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    content_type: Option<String>,
    pub(crate) text: String,
    /// The body as JSON; `Null` when empty or not JSON.
    pub(crate) json: Value,
}

impl Resp {
    async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = r.bytes().await.expect("response body");
        Resp {
            status,
            content_type,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Asserts the status, returning the JSON body.
    #[track_caller]
    pub(crate) fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        &self.json
    }

    /// Asserts an API error: this status, a JSON body `{"error": {"code", "message", ...}}` with
    /// this code and a non-empty message. Returns the `error` object.
    #[track_caller]
    pub(crate) fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "error without a JSON content type ({:?}): {}",
            self.content_type,
            self.text
        );
        let err = &self.json["error"];
        assert_eq!(err["code"], code, "unexpected error code: {}", self.text);
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.text
        );
        err
    }

    /// Asserts a 422 `invalid` naming `field`: a request that matches the OpenAPI document,
    /// refused by the engine's rules.
    #[track_caller]
    fn invalid_field(&self, field: &str) {
        let err = self.error(422, "invalid");
        assert_eq!(err["field"], field, "unexpected field: {}", self.text);
    }

    /// Asserts a 400 `invalid` naming `field`: a parameter that does not match the document.
    #[track_caller]
    fn bad_parameter(&self, field: &str) {
        let err = self.error(400, "invalid");
        assert_eq!(err["field"], field, "unexpected field: {}", self.text);
    }

    /// A 400 `schema_violation` whose `field` is the JSON pointer `pointer`.
    fn schema_violation(&self, pointer: &str) {
        let err = self.error(400, "schema_violation");
        assert_eq!(err["field"], pointer, "unexpected field: {}", self.text);
    }
}

/// An engine served over loopback HTTP.
pub(crate) struct Api {
    pub(crate) base: String,
    client: reqwest::Client,
    pub(crate) engine: EngineHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Api {
    pub(crate) async fn start() -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::builder()
            .path(dir.path().join("api.db"))
            .durability(Durability::Os)
            .default_retry(RetryPolicy {
                max_attempts: 3,
                backoff_ms: vec![10],
            })
            .default_timeout(Duration::from_secs(5))
            .allow_networks(vec!["127.0.0.0/8".parse().expect("a CIDR")])
            .shutdown_grace(Duration::from_millis(200))
            .build()
            .await
            .expect("engine starts");
        let generated = engine
            .ensure_admin_key(Some(ADMIN))
            .await
            .expect("admin key accepted");
        assert_eq!(generated, None, "a configured admin key is not generated");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind API listener");
        let addr = listener.local_addr().expect("API address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(hookline::api::serve(listener, engine.clone(), async move {
            let _ = rx.await;
        }));
        Api {
            base: format!("http://{addr}"),
            client: client(),
            engine,
            stop: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    /// Stops the server (gracefully) and the engine.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let served = tokio::time::timeout(WITHIN, server)
                .await
                .expect("server stops within the deadline")
                .expect("server task did not panic");
            served.expect("server ended cleanly");
        }
        self.engine.shutdown().await;
    }

    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(k) => rb.header("authorization", format!("Bearer {k}")),
            None => rb,
        }
    }

    pub(crate) async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        Resp::read(rb.send().await.expect("request sent")).await
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut rb = self.request(method, path, key);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("serialise body"));
        }
        self.send(rb).await
    }

    pub(crate) async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub(crate) async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// A POST without a body (pause, resume, resubmit, skip).
    pub(crate) async fn post_empty(&self, path: &str, key: &str) -> Resp {
        self.call(Method::POST, path, Some(key), None).await
    }

    pub(crate) async fn patch(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call(Method::PATCH, path, Some(key), Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates a tenant with the admin key; returns its API key.
    pub(crate) async fn tenant(&self, id: &str) -> String {
        let r = self
            .post(
                "/v1/tenants",
                ADMIN,
                &json!({"id": id, "name": format!("Tenant {id}")}),
            )
            .await;
        r.ok(201)["apiKey"]
            .as_str()
            .expect("apiKey is a string")
            .to_owned()
    }

    /// Creates a subscription; returns it.
    pub(crate) async fn subscribe(&self, key: &str, body: Value) -> Value {
        self.post("/v1/subscriptions", key, &body)
            .await
            .ok(201)
            .clone()
    }

    /// Publishes an event; returns the receipt.
    pub(crate) async fn publish(&self, key: &str, event: Value) -> Value {
        self.post("/v1/events", key, &event).await.ok(202).clone()
    }

    /// One page of a subscription's deliveries (`query` without the `?`).
    pub(crate) async fn deliveries(&self, key: &str, sub: &str, query: &str) -> Value {
        self.get(&format!("/v1/subscriptions/{sub}/deliveries?{query}"), key)
            .await
            .ok(200)
            .clone()
    }

    /// Every delivery of a subscription, following `next` with pages of `limit`; also returns
    /// the number of pages. Asserts every page but the last is full and none is empty.
    async fn walk(&self, key: &str, sub: &str, limit: u32) -> (Vec<Value>, usize) {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &cursor {
                None => format!("limit={limit}"),
                Some(c) => format!("limit={limit}&after={c}"),
            };
            let page = self.deliveries(key, sub, &q).await;
            pages += 1;
            assert!(pages <= 100, "pagination does not end: {page}");
            let items = page["items"].as_array().expect("items");
            assert!(
                !items.is_empty() && items.len() <= limit as usize,
                "limit={limit}: {page}"
            );
            all.extend(items.iter().cloned());
            match &page["next"] {
                Value::Null => break,
                Value::String(c) => {
                    assert_eq!(items.len(), limit as usize, "a page with a next is full");
                    cursor = Some(c.clone());
                }
                other => panic!("next is neither null nor a string: {other}"),
            }
        }
        (all, pages)
    }

    /// Waits until the subscription has a delivery of `event_id` in `status`; returns it.
    pub(crate) async fn delivery_of(&self, sub: &str, event_id: &str, status: &str) -> Value {
        eventually(
            &format!("delivery of {event_id} to be {status}"),
            async || {
                let page = self.deliveries(ADMIN, sub, "limit=1000").await;
                page["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .find(|d| d["eventId"] == event_id && d["status"] == status)
                    .cloned()
            },
        )
        .await
    }
}

/// An event envelope as the callback contract has it.
fn envelope(id: &str, transaction: &str) -> Value {
    json!({
        "id": id,
        "referenceId": "user-17",
        "transactionId": transaction,
        "notificationType": "NODE_EVENT",
        "workflowId": "104",
        "payLoad": {"id": 28907, "status": "PASSED", "nested": {"list": [1, 2, 3]}},
        "timestamp": "2022-08-12T10:12:16.827Z"
    })
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: BTreeMap<String, String>,
    body: Value,
    status: u16,
}

impl Got {
    fn webhook_id(&self) -> &str {
        self.headers.get("webhook-id").map_or("", String::as_str)
    }
}

#[derive(Debug, Default)]
struct RecvState {
    got: Mutex<Vec<Got>>,
    /// Status answered per `transactionId`; 200 for any other.
    status_by_transaction: Mutex<HashMap<String, u16>>,
}

/// A loopback receiver that records every request and answers 200, or the status set for the
/// event's `transactionId`.
#[derive(Debug, Clone)]
struct Receiver {
    url: String,
    state: Arc<RecvState>,
}

impl Receiver {
    async fn start() -> Receiver {
        async fn record(
            State(s): State<Arc<RecvState>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let body: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let status = body["transactionId"]
                .as_str()
                .and_then(|t| {
                    s.status_by_transaction
                        .lock()
                        .expect("receiver lock")
                        .get(t)
                        .copied()
                })
                .unwrap_or(200);
            let headers = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            s.got.lock().expect("receiver lock").push(Got {
                headers,
                body,
                status,
            });
            StatusCode::from_u16(status).expect("valid status")
        }
        let state = Arc::new(RecvState::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn answer(&self, transaction: &str, status: u16) {
        self.state
            .status_by_transaction
            .lock()
            .expect("receiver lock")
            .insert(transaction.to_owned(), status);
    }

    fn got(&self) -> Vec<Got> {
        self.state.got.lock().expect("receiver lock").clone()
    }

    fn ids(&self) -> Vec<String> {
        self.got()
            .iter()
            .map(|g| g.webhook_id().to_owned())
            .collect()
    }

    /// Waits until a request for `event_id` was answered with a 2xx.
    async fn wait_delivered(&self, event_id: &str) {
        eventually(&format!("receiver to get {event_id}"), async || {
            self.got()
                .iter()
                .any(|g| g.webhook_id() == event_id && (200..300).contains(&g.status))
                .then_some(())
        })
        .await;
    }
}

// ---- 1. tenants and keys -------------------------------------------------------------------

#[tokio::test]
async fn tenant_creation_needs_the_admin_key() {
    let api = Api::start().await;
    let body = json!({"id": "acme", "name": "Acme Lending"});

    // No key, a wrong key, a malformed header: 401 with our JSON error.
    let r = api
        .call(Method::POST, "/v1/tenants", None, Some(&body))
        .await;
    r.error(401, "unauthorized");
    let r = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some("not-a-key-of-anyone-0000"),
            Some(&body),
        )
        .await;
    r.error(401, "unauthorized");
    for header in ["Basic YWRtaW46YWRtaW4=", "Bearer ", ADMIN] {
        let r = api
            .send(
                api.request(Method::POST, "/v1/tenants", None)
                    .header("authorization", header)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).expect("json")),
            )
            .await;
        r.error(401, "unauthorized");
    }

    // The admin key creates it: 201 with the tenant and its key, shown only here.
    let r = api.post("/v1/tenants", ADMIN, &body).await;
    let created = r.ok(201);
    assert_eq!(created["id"], "acme");
    assert_eq!(created["name"], "Acme Lending");
    assert!(
        created["createdAt"].as_str().is_some_and(|s| !s.is_empty()),
        "{created}"
    );
    let key = created["apiKey"].as_str().expect("apiKey").to_owned();
    assert!(key.len() >= 16, "a real key: {key}");

    // A tenant key may not create tenants.
    let r = api
        .post(
            "/v1/tenants",
            &key,
            &json!({"id": "other", "name": "Other"}),
        )
        .await;
    r.error(403, "forbidden");

    // The tenant is readable by the admin and by itself, without its key.
    for k in [ADMIN, key.as_str()] {
        let t = api.get("/v1/tenants/acme", k).await;
        let t = t.ok(200);
        assert_eq!(t["id"], "acme");
        assert_eq!(t["name"], "Acme Lending");
        assert!(t.get("apiKey").is_none(), "the key is shown only once: {t}");
        assert!(!t.to_string().contains(&key));
    }
    api.get("/v1/tenants/nobody", ADMIN)
        .await
        .error(404, "not_found");

    // Same id again: 409; the original key still works.
    api.post(
        "/v1/tenants",
        ADMIN,
        &json!({"id": "acme", "name": "Again"}),
    )
    .await
    .error(409, "conflict");
    api.get("/v1/tenants/acme", &key).await.ok(200);

    // Invalid ids: 400 naming the field.
    for bad in ["a b", "", "é", &"x".repeat(129)] {
        api.post("/v1/tenants", ADMIN, &json!({"id": bad, "name": "Bad"}))
            .await
            .schema_violation("/id");
    }
    api.post("/v1/tenants", ADMIN, &json!({"id": "noname", "name": " "}))
        .await
        .schema_violation("/name");
    api.stop().await;
}

// ---- 2. tenant isolation -------------------------------------------------------------------

#[tokio::test]
async fn tenants_cannot_reach_each_others_resources() {
    let api = Api::start().await;
    let recv = Receiver::start().await;
    let a = api.tenant("tenant-a").await;
    let b = api.tenant("tenant-b").await;
    let sub_a = api.subscribe(&a, json!({"url": recv.url})).await;
    let sub_a = sub_a["id"].as_str().expect("id").to_owned();
    // B's subscription blocks on a failed delivery, so that a leaked resubmit or skip would work.
    let sub_b = api
        .subscribe(&b, json!({"url": recv.url, "onFailure": "block"}))
        .await;
    let sub_b = sub_b["id"].as_str().expect("id").to_owned();
    recv.answer("b-fails", 400);
    let receipt = api.publish(&b, envelope("b-evt-1", "b-fails")).await;
    assert_eq!(receipt["deliveries"], 1);
    let dlv_b = api.delivery_of(&sub_b, "b-evt-1", "failed").await;
    let dlv_b = dlv_b["id"].as_str().expect("delivery id").to_owned();
    let blocked = api.get(&format!("/v1/subscriptions/{sub_b}"), &b).await;
    assert_eq!(blocked.ok(200)["state"], "blocked");

    // Every route naming one of B's resources answers A with 404, exactly as a missing one.
    let sub_path = format!("/v1/subscriptions/{sub_b}");
    let dlv_path = format!("/v1/deliveries/{dlv_b}");
    let patch = json!({"url": "http://127.0.0.1:9/stolen"});
    let attempts: Vec<(&str, Resp)> = vec![
        ("GET sub", api.get(&sub_path, &a).await),
        ("PATCH sub", api.patch(&sub_path, &a, &patch).await),
        ("DELETE sub", api.delete(&sub_path, &a).await),
        (
            "pause",
            api.post_empty(&format!("{sub_path}/pause"), &a).await,
        ),
        (
            "resume",
            api.post_empty(&format!("{sub_path}/resume"), &a).await,
        ),
        (
            "list deliveries",
            api.get(&format!("{sub_path}/deliveries"), &a).await,
        ),
        ("GET delivery", api.get(&dlv_path, &a).await),
        (
            "resubmit",
            api.post_empty(&format!("{dlv_path}/resubmit"), &a).await,
        ),
        (
            "skip",
            api.post_empty(&format!("{dlv_path}/skip"), &a).await,
        ),
        (
            "publish into B",
            api.post("/v1/events", &a, &{
                let mut e = envelope("a-into-b", "t");
                e["tenantId"] = json!("tenant-b");
                e
            })
            .await,
        ),
        (
            "subscribe for B",
            api.post(
                "/v1/subscriptions",
                &a,
                &json!({"tenantId": "tenant-b", "url": recv.url}),
            )
            .await,
        ),
        ("GET tenant B", api.get("/v1/tenants/tenant-b", &a).await),
        (
            "list B's subscriptions",
            api.get("/v1/subscriptions?tenantId=tenant-b", &a).await,
        ),
    ];
    for (what, r) in &attempts {
        assert_eq!(r.status, 404, "{what} with A's key: {}", r.text);
        r.error(404, "not_found");
    }
    // Indistinguishable from ids that do not exist.
    api.get("/v1/subscriptions/sub_doesnotexist", &a)
        .await
        .error(404, "not_found");
    api.get("/v1/deliveries/dlv_999999", &a)
        .await
        .error(404, "not_found");

    // Nothing A tried had an effect on B.
    let sub = api.get(&sub_path, ADMIN).await;
    let sub = sub.ok(200);
    assert_eq!(sub["state"], "blocked", "{sub}");
    assert_eq!(sub["url"], recv.url.as_str());
    assert_eq!(sub["blockedOn"], dlv_b.as_str());
    let d = api.get(&dlv_path, ADMIN).await;
    assert_eq!(d.ok(200)["status"], "failed");
    let b_page = api.deliveries(ADMIN, &sub_b, "").await;
    assert_eq!(
        b_page["items"].as_array().expect("items").len(),
        1,
        "{b_page}"
    );

    // Listing: A sees only its own; the admin sees both and can filter.
    let ids = |r: &Resp| -> HashSet<String> {
        r.ok(200)["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let mine = api.get("/v1/subscriptions", &a).await;
    assert_eq!(ids(&mine), HashSet::from([sub_a.clone()]));
    let own_filter = api.get("/v1/subscriptions?tenantId=tenant-a", &a).await;
    assert_eq!(ids(&own_filter), HashSet::from([sub_a.clone()]));
    let all = api.get("/v1/subscriptions", ADMIN).await;
    assert_eq!(ids(&all), HashSet::from([sub_a.clone(), sub_b.clone()]));
    let only_b = api.get("/v1/subscriptions?tenantId=tenant-b", ADMIN).await;
    assert_eq!(ids(&only_b), HashSet::from([sub_b.clone()]));
    let only_a = api.get("/v1/subscriptions?tenantId=tenant-a", ADMIN).await;
    assert_eq!(ids(&only_a), HashSet::from([sub_a.clone()]));

    // Event ids are per tenant: A may use the id B used, and gets its own event.
    let r = api.publish(&a, envelope("b-evt-1", "a-tx")).await;
    assert_eq!(r["duplicate"], false, "{r}");
    assert_eq!(r["deliveries"], 1, "{r}");
    recv.wait_delivered("b-evt-1").await;
    api.stop().await;
}

// ---- 3. subscription CRUD ------------------------------------------------------------------

#[tokio::test]
async fn subscription_crud_round_trips() {
    let api = Api::start().await;
    let key = api.tenant("acme").await;
    let secret = "s3cr3t-access-key-never-shown";

    // Create with a tenant key, tenantId omitted.
    let r = api
        .post(
            "/v1/subscriptions",
            &key,
            &json!({
                "url": "http://127.0.0.1:9/hooks",
                "notificationTypes": ["NODE_EVENT", "CASE_EVENT"],
                "workflowIds": ["104"],
                "accessKey": secret,
                "headers": {"entityId": "E1"},
                "retry": {"maxAttempts": 5, "backoffMs": [100, 200]},
                "timeoutMs": 2000,
                "onFailure": "skip"
            }),
        )
        .await;
    assert!(
        !r.text.contains(secret),
        "the access key leaked: {}",
        r.text
    );
    let mut sub = r.ok(201).clone();
    // The signing secret is shown in full once, at creation; later reads show it masked.
    let secret_text = sub["secret"]
        .as_str()
        .expect("secret at creation")
        .to_owned();
    assert!(secret_text.starts_with("whsec_"), "{sub}");
    sub.as_object_mut().expect("object").remove("secret");
    assert!(
        sub["secretMasked"]
            .as_str()
            .is_some_and(|m| m.starts_with("whsec_") && !m.contains(&secret_text[10..]))
    );
    let id = sub["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("sub_"), "{id}");
    assert_eq!(sub["tenantId"], "acme");
    assert_eq!(sub["state"], "active");
    assert_eq!(sub["accessKeySet"], true);
    assert_eq!(sub["url"], "http://127.0.0.1:9/hooks");
    assert_eq!(
        sub["notificationTypes"],
        json!(["NODE_EVENT", "CASE_EVENT"])
    );
    assert_eq!(sub["workflowIds"], json!(["104"]));
    assert_eq!(sub["headers"], json!({"entityId": "E1"}));
    assert_eq!(
        sub["retry"],
        json!({"maxAttempts": 5, "backoffMs": [100, 200]})
    );
    assert_eq!(sub["timeoutMs"], 2000);
    assert_eq!(sub["onFailure"], "skip");
    assert!(
        sub["createdAt"].is_string() && sub["updatedAt"].is_string(),
        "{sub}"
    );

    // The admin must name the tenant; a tenant key may name its own.
    api.post(
        "/v1/subscriptions",
        ADMIN,
        &json!({"url": "http://127.0.0.1:9/"}),
    )
    .await
    .schema_violation("/tenantId");
    let own = api
        .subscribe(
            &key,
            json!({"tenantId": "acme", "url": "http://127.0.0.1:9/own"}),
        )
        .await;
    assert_eq!(own["tenantId"], "acme");
    assert_eq!(own["accessKeySet"], false);
    let by_admin = api
        .subscribe(
            ADMIN,
            json!({"tenantId": "acme", "url": "http://127.0.0.1:9/adm"}),
        )
        .await;
    assert_eq!(by_admin["tenantId"], "acme");
    api.post(
        "/v1/subscriptions",
        ADMIN,
        &json!({"tenantId": "nobody", "url": "http://127.0.0.1:9/"}),
    )
    .await
    .error(404, "not_found");
    api.post(
        "/v1/subscriptions",
        &key,
        &json!({"url": "ftp://example.com/"}),
    )
    .await
    .schema_violation("/url");

    // GET, by the tenant and by the admin.
    let path = format!("/v1/subscriptions/{id}");
    for k in [key.as_str(), ADMIN] {
        let r = api.get(&path, k).await;
        assert!(
            !r.text.contains(secret),
            "the access key leaked: {}",
            r.text
        );
        assert_eq!(r.ok(200), &sub);
    }
    let listed = api.get("/v1/subscriptions", &key).await;
    assert!(!listed.text.contains(secret), "leaked: {}", listed.text);
    assert_eq!(listed.ok(200)["items"].as_array().expect("items").len(), 3);

    // PATCH: changes are reflected, in the answer and afterwards.
    let r = api
        .patch(
            &path,
            &key,
            &json!({"url": "http://127.0.0.1:9/v2", "retry": {"maxAttempts": 2, "backoffMs": [50]}}),
        )
        .await;
    assert!(!r.text.contains(secret), "leaked: {}", r.text);
    let patched = r.ok(200).clone();
    assert_eq!(patched["url"], "http://127.0.0.1:9/v2");
    assert_eq!(
        patched["retry"],
        json!({"maxAttempts": 2, "backoffMs": [50]})
    );
    assert_eq!(patched["timeoutMs"], 2000, "untouched fields stay");
    assert_eq!(patched["accessKeySet"], true);
    assert_eq!(api.get(&path, &key).await.ok(200), &patched);

    // An invalid PATCH names the field and changes nothing.
    api.patch(&path, &key, &json!({"timeoutMs": 1}))
        .await
        .schema_violation("/timeoutMs");
    api.patch(
        &path,
        &key,
        &json!({"retry": {"maxAttempts": 0, "backoffMs": [1]}}),
    )
    .await
    .schema_violation("/retry/maxAttempts");
    api.patch(&path, &key, &json!({"headers": {"webhook-id": "x"}}))
        .await
        .invalid_field("headers.webhook-id");
    let after = api.get(&path, &key).await;
    assert_eq!(after.ok(200)["timeoutMs"], 2000);
    assert_eq!(after.ok(200)["url"], "http://127.0.0.1:9/v2");

    // Pause and resume.
    let r = api.post_empty(&format!("{path}/pause"), &key).await;
    assert_eq!(r.ok(200)["state"], "paused");
    assert_eq!(api.get(&path, &key).await.ok(200)["state"], "paused");
    let r = api.post_empty(&format!("{path}/resume"), &key).await;
    assert_eq!(r.ok(200)["state"], "active");
    assert_eq!(api.get(&path, &key).await.ok(200)["state"], "active");

    // accessKey: null removes the key.
    let r = api.patch(&path, &key, &json!({"accessKey": null})).await;
    assert_eq!(r.ok(200)["accessKeySet"], false);

    // DELETE: 204 with no body, then gone.
    let r = api.delete(&path, &key).await;
    r.ok(204);
    assert!(r.text.is_empty(), "204 has no body: {}", r.text);
    api.get(&path, &key).await.error(404, "not_found");
    api.get(&path, ADMIN).await.error(404, "not_found");
    api.delete(&path, &key).await.error(404, "not_found");
    api.post_empty(&format!("{path}/pause"), &key)
        .await
        .error(404, "not_found");
    let listed = api.get("/v1/subscriptions", &key).await;
    let items = listed.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|s| s["id"] != id.as_str()));
    api.stop().await;
}

// ---- 4. publish ----------------------------------------------------------------------------

#[tokio::test]
async fn publish_delivers_the_envelope_once() {
    let api = Api::start().await;
    let recv = Receiver::start().await;
    let key = api.tenant("acme").await;
    let sub = api
        .subscribe(
            &key,
            json!({"url": recv.url, "accessKey": "s3cr3t", "headers": {"entityId": "E1"}}),
        )
        .await;
    let sub = sub["id"].as_str().expect("id").to_owned();

    let event = envelope("evt-1", "84e32dcfecc9f4dc");
    let receipt = api.publish(&key, event.clone()).await;
    assert_eq!(receipt["id"], "evt-1");
    assert_eq!(receipt["deliveries"], 1);
    assert_eq!(receipt["duplicate"], false);
    let seq = receipt["seq"].as_i64().expect("seq is a number");

    recv.wait_delivered("evt-1").await;
    let got = recv.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let g = &got[0];
    assert_eq!(
        g.headers.get("access-key").map(String::as_str),
        Some("s3cr3t")
    );
    assert_eq!(
        g.headers.get("content-type").map(String::as_str),
        Some(DELIVERY_CONTENT_TYPE)
    );
    assert_eq!(g.headers.get("entityid").map(String::as_str), Some("E1"));
    assert_eq!(g.webhook_id(), "evt-1");
    let mut expected = event.clone();
    expected["tenantId"] = json!("acme");
    assert_eq!(g.body, expected, "the receiver gets the envelope");

    // The same id again: 202, the same seq, nothing new.
    let again = api.publish(&key, event.clone()).await;
    assert_eq!(again["id"], "evt-1");
    assert_eq!(again["seq"].as_i64(), Some(seq));
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["deliveries"], 1, "{again}");
    // A later event goes out after anything the duplicate could have caused (strict order), so
    // once it is in, a second delivery of evt-1 would be too.
    let later = api.publish(&key, envelope("evt-2", "tx-2")).await;
    assert!(later["seq"].as_i64().expect("seq") > seq);
    recv.wait_delivered("evt-2").await;
    assert_eq!(recv.ids(), vec!["evt-1", "evt-2"]);
    let page = api.deliveries(&key, &sub, "").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 2, "{page}");

    // Without an id, one is generated; the admin names the tenant.
    let mut anon = envelope("x", "tx-3");
    anon.as_object_mut().expect("object").remove("id");
    anon["tenantId"] = json!("acme");
    let r = api.publish(ADMIN, anon).await;
    assert!(
        r["id"].as_str().is_some_and(|s| s.starts_with("evt_")),
        "{r}"
    );
    // An event no subscription wants: accepted, zero deliveries.
    let lonely = api.tenant("lonely").await;
    let r = api.publish(&lonely, envelope("evt-none", "tx-4")).await;
    assert_eq!(r["deliveries"], 0, "{r}");
    assert_eq!(r["duplicate"], false, "{r}");
    // The admin must name an existing tenant.
    let mut nobody = envelope("evt-x", "tx-5");
    nobody["tenantId"] = json!("nobody");
    api.post("/v1/events", ADMIN, &nobody)
        .await
        .error(404, "not_found");
    api.post("/v1/events", ADMIN, &envelope("evt-y", "tx-6"))
        .await
        .schema_violation("/tenantId");

    // Deleting the subscription deletes its deliveries.
    let first = page["items"][0]["id"].as_str().expect("id").to_owned();
    api.get(&format!("/v1/deliveries/{first}"), &key)
        .await
        .ok(200);
    api.delete(&format!("/v1/subscriptions/{sub}"), &key)
        .await
        .ok(204);
    api.get(&format!("/v1/deliveries/{first}"), &key)
        .await
        .error(404, "not_found");
    api.get(&format!("/v1/subscriptions/{sub}/deliveries"), &key)
        .await
        .error(404, "not_found");
    api.stop().await;
}

// ---- 5. errors -----------------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_get_exact_statuses_and_json_errors() {
    let api = Api::start().await;
    let key = api.tenant("acme").await;
    let sub = api
        .subscribe(&key, json!({"url": "http://127.0.0.1:9/"}))
        .await;
    let sub = sub["id"].as_str().expect("id").to_owned();

    // Body problems.
    let r = api
        .send(
            api.request(Method::POST, "/v1/events", Some(&key))
                .header("content-type", "application/json")
                .body("{\"transactionId\": "),
        )
        .await;
    r.error(400, "malformed_json");
    let r = api
        .send(
            api.request(Method::POST, "/v1/tenants", Some(ADMIN))
                .header("content-type", "application/json")
                .body("not json"),
        )
        .await;
    r.error(400, "malformed_json");
    let event_bytes = serde_json::to_vec(&envelope("e", "t")).expect("json");
    let r = api
        .send(
            api.request(Method::POST, "/v1/events", Some(&key))
                .body(event_bytes.clone()),
        )
        .await;
    r.error(415, "unsupported_media_type");
    let r = api
        .send(
            api.request(Method::POST, "/v1/events", Some(&key))
                .header("content-type", "text/plain")
                .body(event_bytes),
        )
        .await;
    r.error(415, "unsupported_media_type");
    let mut huge = envelope("big", "t");
    huge["payLoad"]["pad"] = json!("x".repeat(hookline::api::MAX_BODY_BYTES));
    let r = api.post("/v1/events", &key, &huge).await;
    r.error(413, "payload_too_large");
    api.post("/v1/events", &key, &json!([1, 2]))
        .await
        .schema_violation("");

    // Envelope problems.
    let mut e = envelope("e1", "t");
    e["notificationType"] = json!("SOMETHING_ELSE");
    api.post("/v1/events", &key, &e)
        .await
        .schema_violation("/notificationType");
    let mut e = envelope("e2", "t");
    e.as_object_mut().expect("object").remove("transactionId");
    api.post("/v1/events", &key, &e)
        .await
        .schema_violation("/transactionId");
    api.post("/v1/events", &key, &envelope("e3", ""))
        .await
        .schema_violation("/transactionId");
    let mut e = envelope("e4", "t");
    e["timestamp"] = json!("yesterday");
    api.post("/v1/events", &key, &e)
        .await
        .schema_violation("/timestamp");
    let mut e = envelope("e5", "t");
    e["payLoad"] = json!([1, 2]);
    api.post("/v1/events", &key, &e)
        .await
        .schema_violation("/payLoad");
    api.post("/v1/events", &key, &envelope("bad id", "t"))
        .await
        .schema_violation("/id");
    let mut e = envelope("e6", "t");
    e["unexpected"] = json!(1);
    api.post("/v1/events", &key, &e)
        .await
        .schema_violation("/unexpected");
    api.post("/v1/subscriptions", &key, &json!({"url": 5}))
        .await
        .schema_violation("/url");
    api.post(
        "/v1/subscriptions",
        &key,
        &json!({"url": "http://127.0.0.1:9/", "bogus": 1}),
    )
    .await
    .schema_violation("/bogus");
    api.post(
        "/v1/subscriptions",
        &key,
        &json!({"url": "http://127.0.0.1:9/", "tenantId": 7}),
    )
    .await
    .schema_violation("/tenantId");
    // A JSON content type with parameters is fine.
    let r = api
        .send(
            api.request(Method::POST, "/v1/events", Some(&key))
                .header("content-type", "application/json; charset=utf-8")
                .body(serde_json::to_vec(&envelope("charset", "t")).expect("json")),
        )
        .await;
    r.ok(202);
    // None of the refused events was journaled: only `charset` is there.
    let page = api.deliveries(&key, &sub, "").await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["eventId"], "charset");

    // Routing.
    for k in [Some(key.as_str()), None] {
        api.call(Method::GET, "/v1/nothing-here", k, None)
            .await
            .error(404, "not_found");
    }
    api.call(Method::PUT, "/v1/subscriptions", Some(&key), None)
        .await
        .error(405, "method_not_allowed");
    api.call(Method::DELETE, "/v1/events", Some(&key), None)
        .await
        .error(405, "method_not_allowed");
    api.call(
        Method::GET,
        &format!("/v1/subscriptions/{sub}/pause"),
        Some(&key),
        None,
    )
    .await
    .error(405, "method_not_allowed");

    // Unknown ids.
    for path in [
        "/v1/subscriptions/sub_nope".to_owned(),
        "/v1/subscriptions/sub_nope/deliveries".to_owned(),
    ] {
        api.get(&path, &key).await.error(404, "not_found");
    }
    api.patch(
        "/v1/subscriptions/sub_nope",
        &key,
        &json!({"url": "http://127.0.0.1:9/"}),
    )
    .await
    .error(404, "not_found");
    api.post_empty("/v1/subscriptions/sub_nope/resume", &key)
        .await
        .error(404, "not_found");
    for bad in ["dlv_x", "123", "dlv_0", "dlv_-1", "dlv_", "dlv_99999999"] {
        let path = format!("/v1/deliveries/{bad}");
        api.get(&path, &key).await.error(404, "not_found");
        api.get(&path, ADMIN).await.error(404, "not_found");
        api.post_empty(&format!("{path}/resubmit"), &key)
            .await
            .error(404, "not_found");
        api.post_empty(&format!("{path}/skip"), &key)
            .await
            .error(404, "not_found");
    }

    // Query parameters of the deliveries list.
    let list = format!("/v1/subscriptions/{sub}/deliveries");
    api.get(&format!("{list}?status=bogus"), &key)
        .await
        .bad_parameter("status");
    api.get(&format!("{list}?limit=0"), &key)
        .await
        .bad_parameter("limit");
    api.get(&format!("{list}?limit=1001"), &key)
        .await
        .bad_parameter("limit");
    api.get(&format!("{list}?limit=abc"), &key)
        .await
        .error(400, "invalid");
    api.get(&format!("{list}?after=zzz"), &key)
        .await
        .invalid_field("after");
    api.get(&format!("{list}?status=delivered&limit=1000"), &key)
        .await
        .ok(200);
    api.stop().await;
}

// ---- 6. deliveries -------------------------------------------------------------------------

#[tokio::test]
async fn deliveries_page_in_order_and_operators_unblock_them() {
    let api = Api::start().await;
    let recv = Receiver::start().await;
    let key = api.tenant("acme").await;
    let sub = api
        .subscribe(
            &key,
            json!({"url": recv.url, "onFailure": "block",
                   "retry": {"maxAttempts": 1, "backoffMs": [10]}}),
        )
        .await;
    let sub = sub["id"].as_str().expect("id").to_owned();
    let sub_path = format!("/v1/subscriptions/{sub}");

    // e1..e3 go through, e4 is refused with 400, e5 waits behind it.
    recv.answer("tx-bad", 400);
    let mut seqs = Vec::new();
    for (id, tx) in [
        ("e1", "tx-1"),
        ("e2", "tx-2"),
        ("e3", "tx-3"),
        ("e4", "tx-bad"),
        ("e5", "tx-5"),
    ] {
        let r = api.publish(&key, envelope(id, tx)).await;
        seqs.push(r["seq"].as_i64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let failed = api.delivery_of(&sub, "e4", "failed").await;
    let e4 = failed["id"].as_str().expect("id").to_owned();
    let s = api.get(&sub_path, &key).await;
    let s = s.ok(200);
    assert_eq!(s["state"], "blocked", "{s}");
    assert_eq!(s["blockedOn"], e4.as_str(), "{s}");
    assert_eq!(recv.ids(), vec!["e1", "e2", "e3", "e4"], "e5 waits");

    // Status filter.
    let count = |page: &Value| page["items"].as_array().expect("items").len();
    let delivered = api.deliveries(&key, &sub, "status=delivered").await;
    assert_eq!(count(&delivered), 3, "{delivered}");
    assert!(
        delivered["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|d| d["status"] == "delivered")
    );
    let f = api.deliveries(&key, &sub, "status=failed").await;
    assert_eq!(count(&f), 1, "{f}");
    assert_eq!(f["items"][0]["id"], e4.as_str());
    assert_eq!(f["items"][0]["lastStatusCode"], 400);
    let p = api.deliveries(&key, &sub, "status=pending").await;
    assert_eq!(count(&p), 1, "{p}");
    assert_eq!(p["items"][0]["eventId"], "e5");
    assert_eq!(
        count(&api.deliveries(&key, &sub, "status=skipped").await),
        0
    );

    // Pagination: following `next` until null covers every delivery once, in order, in full
    // pages and without a trailing empty one (a full last page has no `next`).
    let (all, pages) = api.walk(&key, &sub, 2).await;
    assert_eq!(pages, 3);
    for limit in [1u32, 3, 4, 5, 1000] {
        let (again, pages) = api.walk(&key, &sub, limit).await;
        assert_eq!(again, all, "limit={limit}");
        assert_eq!(pages, 5usize.div_ceil(limit as usize), "limit={limit}");
    }
    let beyond = api
        .deliveries(&key, &sub, &format!("after={}", seqs[4]))
        .await;
    assert_eq!(beyond, json!({"items": [], "next": null}));
    let page_seqs: Vec<i64> = all
        .iter()
        .map(|d| d["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(page_seqs, seqs, "every delivery once, in seq order");
    let events: Vec<&str> = all
        .iter()
        .map(|d| d["eventId"].as_str().expect("eventId"))
        .collect();
    assert_eq!(events, ["e1", "e2", "e3", "e4", "e5"]);
    let unique: HashSet<&str> = all.iter().map(|d| d["id"].as_str().expect("id")).collect();
    assert_eq!(unique.len(), 5);
    // Filter and pagination together.
    let first = api.deliveries(&key, &sub, "status=delivered&limit=2").await;
    assert_eq!(count(&first), 2);
    let next = first["next"].as_str().expect("a next page").to_owned();
    let rest = api
        .deliveries(
            &key,
            &sub,
            &format!("status=delivered&limit=2&after={next}"),
        )
        .await;
    assert_eq!(count(&rest), 1);
    assert_eq!(rest["items"][0]["eventId"], "e3");
    assert_eq!(rest["next"], Value::Null);

    // The attempt log.
    let d = api.get(&format!("/v1/deliveries/{e4}"), &key).await;
    let d = d.ok(200).clone();
    assert_eq!(d["id"], e4.as_str());
    assert_eq!(d["status"], "failed");
    assert_eq!(d["subscriptionId"], sub.as_str());
    assert_eq!(d["attemptCount"], 1);
    let attempts = d["attempts"].as_array().expect("attempts is an array");
    assert_eq!(attempts.len(), 1, "{d}");
    let a = &attempts[0];
    assert_eq!(a["n"], 1);
    assert!(
        a["startedAt"].as_str().is_some_and(|s| !s.is_empty()),
        "{a}"
    );
    assert!(a["durationMs"].is_u64(), "{a}");
    assert_eq!(a["statusCode"], 400);
    assert!(a["error"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
    let e1 = all[0]["id"].as_str().expect("id").to_owned();
    let d1 = api.get(&format!("/v1/deliveries/{e1}"), &key).await;
    let d1 = d1.ok(200);
    assert_eq!(d1["status"], "delivered");
    assert_eq!(d1["attemptCount"], 1);
    assert_eq!(d1["attempts"][0]["statusCode"], 200);
    assert!(d1["attempts"][0].get("error").is_some(), "{d1}");
    assert_eq!(d1["attempts"][0]["error"], Value::Null);

    // Only failed deliveries are resubmitted, only pending or failed ones skipped.
    api.post_empty(&format!("/v1/deliveries/{e1}/skip"), &key)
        .await
        .error(409, "conflict");
    api.post_empty(&format!("/v1/deliveries/{e1}/resubmit"), &key)
        .await
        .error(409, "conflict");

    // Resubmit after the receiver is fixed: e4 then e5 are delivered, in order.
    recv.answer("tx-bad", 200);
    let r = api
        .post_empty(&format!("/v1/deliveries/{e4}/resubmit"), &key)
        .await;
    let r = r.ok(200);
    assert_eq!(r["id"], e4.as_str());
    assert!(
        r["status"] == "pending" || r["status"] == "in_flight" || r["status"] == "delivered",
        "{r}"
    );
    api.delivery_of(&sub, "e4", "delivered").await;
    api.delivery_of(&sub, "e5", "delivered").await;
    recv.wait_delivered("e5").await;
    assert_eq!(recv.ids(), vec!["e1", "e2", "e3", "e4", "e4", "e5"]);
    let s = api.get(&sub_path, &key).await;
    let s = s.ok(200);
    assert_eq!(s["state"], "active", "{s}");
    assert!(s.get("blockedOn").is_none_or(Value::is_null), "{s}");
    let d = api.get(&format!("/v1/deliveries/{e4}"), &key).await;
    let d = d.ok(200);
    assert_eq!(d["attemptCount"], 2);
    let ns: Vec<&Value> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["n"])
        .collect();
    assert_eq!(ns, [&json!(1), &json!(2)]);
    assert_eq!(d["attempts"][1]["statusCode"], 200);
    api.post_empty(&format!("/v1/deliveries/{e4}/skip"), &key)
        .await
        .error(409, "conflict");

    // Skip: a failed delivery is passed over and the queue moves on.
    recv.answer("tx-bad-2", 422);
    api.publish(&key, envelope("e6", "tx-bad-2")).await;
    api.publish(&key, envelope("e7", "tx-7")).await;
    let f6 = api.delivery_of(&sub, "e6", "failed").await;
    let e6 = f6["id"].as_str().expect("id").to_owned();
    let s = api.get(&sub_path, &key).await;
    assert_eq!(s.ok(200)["blockedOn"], e6.as_str());
    let r = api
        .post_empty(&format!("/v1/deliveries/{e6}/skip"), &key)
        .await;
    assert_eq!(r.ok(200)["status"], "skipped");
    recv.wait_delivered("e7").await;
    api.delivery_of(&sub, "e7", "delivered").await;
    assert_eq!(api.get(&sub_path, &key).await.ok(200)["state"], "active");
    let skipped = api.deliveries(&key, &sub, "status=skipped").await;
    assert_eq!(skipped["items"][0]["id"], e6.as_str());
    api.post_empty(&format!("/v1/deliveries/{e6}/resubmit"), &key)
        .await
        .error(409, "conflict");
    assert_eq!(
        recv.ids(),
        vec!["e1", "e2", "e3", "e4", "e4", "e5", "e6", "e7"]
    );
    api.stop().await;
}

// ---- 7. health -----------------------------------------------------------------------------

#[tokio::test]
async fn healthz_needs_no_key() {
    let api = Api::start().await;
    let r = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.ok(200)["status"], "ok");
    let r = api
        .call(Method::GET, "/healthz", Some("whatever-invalid-key"), None)
        .await;
    r.ok(200);
    // Everything else does.
    api.call(Method::GET, "/v1/subscriptions", None, None)
        .await
        .error(401, "unauthorized");
    api.stop().await;
}

// ---- 8. the binary -------------------------------------------------------------------------

const GENERATED_MARKER: &str = "generated admin API key";

/// A running `hookline serve`, its output collected by reader threads. Killed if dropped while
/// running (a failing test leaves no server behind).
struct Bin {
    child: Child,
    base: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Bin {
    async fn start(db: &Path, admin_key: Option<&str>) -> Bin {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookline"));
        cmd.arg("serve")
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_DB", db)
            .env("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match admin_key {
            Some(k) => cmd.env("HOOKLINE_ADMIN_KEY", k),
            None => cmd.env_remove("HOOKLINE_ADMIN_KEY"),
        };
        let mut child = cmd.spawn().expect("spawn hookline");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out_pipe = child.stdout.take().expect("stdout piped");
        let err_pipe = child.stderr.take().expect("stderr piped");
        let out = stdout.clone();
        let err = stderr.clone();
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(out_pipe).lines() {
                    let Ok(line) = line else { break };
                    out.lock().expect("stdout lock").push(line);
                }
            }),
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut pipe = err_pipe;
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    *err.lock().expect("stderr lock") = String::from_utf8_lossy(&buf).into_owned();
                }
            }),
        ];
        let mut bin = Bin {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
            readers,
        };
        bin.wait_healthy().await;
        bin
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().expect("stdout lock").join("\n"),
            self.stderr.lock().expect("stderr lock")
        )
    }

    async fn wait_healthy(&mut self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("hookline exited early ({status}):\n{}", self.output());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hookline did not become healthy:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin key printed on the line after the "generated" notice, if any.
    fn generated_key(&self) -> Option<String> {
        let lines = self.stdout.lock().expect("stdout lock");
        let at = lines.iter().position(|l| l.contains(GENERATED_MARKER))?;
        lines.get(at + 1).map(|k| k.trim().to_owned())
    }

    /// Sends SIGTERM and waits for a clean exit; returns everything it printed on stdout.
    ///
    /// The package forbids `unsafe` (so no `libc::kill`), hence the `kill` utility.
    async fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "hookline did not exit within 10 s of SIGTERM:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM must end in exit 0 ({status}):\n{}",
            self.output()
        );
        self.stdout.lock().expect("stdout lock").clone()
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn create_tenant_via(base: &str, key: &str, id: &str) -> Resp {
    let r = client()
        .post(format!("{base}/v1/tenants"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"id": id, "name": id})).expect("json"))
        .send()
        .await
        .expect("request sent");
    Resp::read(r).await
}

#[tokio::test]
async fn binary_generates_an_admin_key_once_and_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("h.db");

    let first = Bin::start(&db, None).await;
    let key = eventually("the generated admin key on stdout", async || {
        first.generated_key()
    })
    .await;
    assert!(key.len() >= 16, "a real key: {key:?}\n{}", first.output());
    create_tenant_via(&first.base, &key, "acme").await.ok(201);
    create_tenant_via(&first.base, "not-the-admin-key-000", "x")
        .await
        .error(401, "unauthorized");
    let printed = first.terminate().await;
    assert_eq!(
        printed
            .iter()
            .filter(|l| l.contains(GENERATED_MARKER))
            .count(),
        1,
        "{printed:?}"
    );
    assert!(
        !dir.path().read_dir().expect("read dir").any(|e| {
            let p = e.expect("dir entry").path();
            std::fs::read(&p)
                .map(|b| b.windows(key.len()).any(|w| w == key.as_bytes()))
                .unwrap_or(false)
        }),
        "the admin key itself is never stored"
    );

    // Second start on the same journal: no new key, the first one still works.
    let second = Bin::start(&db, None).await;
    create_tenant_via(&second.base, &key, "globex")
        .await
        .ok(201);
    create_tenant_via(&second.base, &key, "acme")
        .await
        .error(409, "conflict");
    let printed = second.terminate().await;
    assert!(
        printed
            .iter()
            .all(|l| !l.contains(GENERATED_MARKER) && !l.contains(&key)),
        "no key is printed on the second start: {printed:?}"
    );
}

#[tokio::test]
async fn binary_accepts_a_configured_admin_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("h.db");
    let configured = "configured-admin-key-0123456789";
    let bin = Bin::start(&db, Some(configured)).await;
    create_tenant_via(&bin.base, configured, "acme")
        .await
        .ok(201);
    create_tenant_via(&bin.base, "configured-admin-key-wrong", "other")
        .await
        .error(401, "unauthorized");
    let printed = bin.terminate().await;
    assert!(
        printed
            .iter()
            .all(|l| !l.contains(GENERATED_MARKER) && !l.contains(configured)),
        "nothing is generated or printed with a configured key: {printed:?}"
    );
}

// ---- shutdown and known bugs ---------------------------------------------------------------

/// An engine shut down under a running server refuses every request with 503 and a JSON error
/// (which code: see `requests_after_engine_shutdown_say_shutting_down`); `/healthz` does not
/// touch the engine.
#[tokio::test]
async fn requests_after_engine_shutdown_get_503() {
    let api = Api::start().await;
    let key = api.tenant("acme").await;
    api.engine.shutdown().await;
    for r in [
        api.post("/v1/events", &key, &envelope("late", "t")).await,
        api.get("/v1/subscriptions", &key).await,
        api.post("/v1/tenants", ADMIN, &json!({"id": "late", "name": "Late"}))
            .await,
    ] {
        assert_eq!(r.status, 503, "{}", r.text);
        let code = r.json["error"]["code"].as_str().unwrap_or("");
        assert!(
            ["shutting_down", "unavailable"].contains(&code),
            "{}",
            r.text
        );
    }
    api.call(Method::GET, "/healthz", None, None).await.ok(200);
    api.stop().await;
}

/// Wrong types, missing and unknown fields in the bodies of POST /v1/tenants and
/// PATCH /v1/subscriptions/{id} are schema violations (400) naming the field.
#[tokio::test]
async fn type_errors_in_typed_bodies_are_400_schema_violations() {
    let api = Api::start().await;
    let key = api.tenant("acme").await;
    let sub = api
        .subscribe(&key, json!({"url": "http://127.0.0.1:9/"}))
        .await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    for (body, pointer) in [
        (json!({"id": 5, "name": "x"}), "/id"),
        (json!({"id": "noname"}), "/name"),
        (json!({"id": "extra", "name": "x", "extra": 1}), "/extra"),
    ] {
        api.post("/v1/tenants", ADMIN, &body)
            .await
            .schema_violation(pointer);
    }
    for (body, pointer) in [
        (json!({"timeoutMs": "fast"}), "/timeoutMs"),
        (json!({"bogus": 1}), "/bogus"),
        (
            json!({"retry": {"maxAttempts": 2, "backoffMs": [1], "x": 1}}),
            "/retry/x",
        ),
    ] {
        api.patch(&path, &key, &body)
            .await
            .schema_violation(pointer);
    }
    api.stop().await;
}

/// After `EngineHandle::shutdown` every authenticated request first looks its key up in the
/// closed journal (`EngineHandle::authenticate`, src/engine.rs, does not check `closed`), so it
/// answers `503 unavailable` ("the journal is unavailable"), logged as an error, instead of
/// `503 shutting_down`.
#[tokio::test]
async fn requests_after_engine_shutdown_say_shutting_down() {
    let api = Api::start().await;
    let key = api.tenant("acme").await;
    api.engine.shutdown().await;
    api.post("/v1/events", &key, &envelope("late", "t"))
        .await
        .error(503, "shutting_down");
    api.post("/v1/tenants", ADMIN, &json!({"id": "late", "name": "Late"}))
        .await
        .error(503, "shutting_down");
    api.stop().await;
}
