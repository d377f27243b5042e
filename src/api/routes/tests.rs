//! Router tests: requests through the whole router (guard, extractors, handlers) over an
//! in-memory engine, without a socket. They cover what the integration tests (`tests/it`,
//! through a real server) do not reach: secret rotation's optional body, a tenant key reading
//! another tenant, a batch refused item by item without reaching the journal, and the
//! fallbacks' JSON bodies.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower_service::Service;

use crate::api::{ApiConfig, router_with};
use crate::domain::{NewSubscription, NewTenant};
use crate::engine::{Engine, EngineHandle};

const ADMIN: &str = "admin-key-for-router-tests-0123";

struct Fixture {
    engine: EngineHandle,
    router: Router,
    /// The API key of tenant `acme`.
    acme: String,
    /// A subscription of tenant `acme`.
    sub: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let engine = Engine::builder().in_memory().build().await.expect("engine");
        engine
            .ensure_admin_key(Some(ADMIN))
            .await
            .expect("admin key");
        let mut keys = Vec::new();
        for id in ["acme", "globex"] {
            let t = NewTenant {
                id: id.into(),
                name: id.into(),
                rate_limit: None,
            };
            keys.push(engine.create_tenant(t).await.expect("tenant").api_key);
        }
        let sub = engine
            .create_subscription(NewSubscription::new("acme", "https://acme.example/hooks"))
            .await
            .expect("subscription");
        Fixture {
            router: router_with(engine.clone(), ApiConfig::default()),
            engine,
            acme: keys.swap_remove(0),
            sub: sub.id.to_string(),
        }
    }

    /// Sends one request; a JSON `body` goes with `content-type: application/json`.
    async fn send(&self, method: Method, path: &str, key: &str, body: Option<&str>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_owned()));
        let req = req.body(body).expect("request");
        let resp = self.router.clone().call(req).await.expect("infallible");
        let status = resp.status();
        let request_id = resp.headers().contains_key("x-request-id");
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Resp {
            status,
            request_id,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

struct Resp {
    status: StatusCode,
    request_id: bool,
    json: Value,
}

impl Resp {
    fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }
}

#[tokio::test]
async fn secret_rotation_takes_an_empty_or_a_json_body() {
    let f = Fixture::new().await;
    let path = format!("/v1/subscriptions/{}/secret/rotate", f.sub);

    let generated = f.send(Method::POST, &path, &f.acme, None).await;
    assert_eq!(generated.status, StatusCode::OK, "{}", generated.json);
    let first = generated.json["secret"].as_str().expect("shown once");
    assert!(first.starts_with("whsec_"), "{first}");

    let body = json!({"graceSeconds": 60}).to_string();
    let again = f.send(Method::POST, &path, &f.acme, Some(&body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_ne!(again.json["secret"], generated.json["secret"]);

    let unknown = f
        .send(Method::POST, &path, &f.acme, Some(r#"{"grace": 1}"#))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error_code(), "schema_violation");
    assert_eq!(unknown.json["error"]["field"], "/grace");

    let broken = f.send(Method::POST, &path, &f.acme, Some("{")).await;
    assert_eq!(broken.error_code(), "malformed_json");
    f.engine.shutdown().await;
}

#[tokio::test]
async fn another_tenants_resources_are_missing() {
    let f = Fixture::new().await;
    let theirs = f
        .send(Method::GET, "/v1/tenants/globex", &f.acme, None)
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.error_code(), "not_found");
    let own = f.send(Method::GET, "/v1/tenants/acme", &f.acme, None).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json["id"], "acme");

    let rotate = format!("/v1/subscriptions/{}/secret/rotate", f.sub);
    let admin = f.send(Method::POST, &rotate, ADMIN, None).await;
    assert_eq!(admin.status, StatusCode::OK);
    let transforms = f
        .send(Method::GET, "/v1/tenants/globex/transforms", &f.acme, None)
        .await;
    assert_eq!(transforms.status, StatusCode::NOT_FOUND);
    f.engine.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_refused_items_answers_item_by_item() {
    let f = Fixture::new().await;
    // An item that breaks the event schema refuses the batch (it is not an array of events),
    // naming the item; nothing reaches the engine.
    let ok = json!({"transactionId": "t0", "notificationType": "NODE_EVENT", "payLoad": {},
        "timestamp": "2026-11-23T10:12:16.827Z"});
    let body = json!([ok, {"transactionId": "t1", "unknown": 1}]).to_string();
    let r = f
        .send(Method::POST, "/v1/events/batch", &f.acme, Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.error_code(), "schema_violation");
    assert_eq!(
        r.json["error"]["field"], "/1/notificationType",
        "{}",
        r.json
    );
    let listed = f
        .send(
            Method::GET,
            &format!("/v1/subscriptions/{}/deliveries", f.sub),
            &f.acme,
            None,
        )
        .await;
    assert_eq!(listed.json["items"], json!([]), "nothing was journaled");

    // Items the document allows are refused one by one for what it cannot say.

    let mixed = json!([
        {"transactionId": "t1", "notificationType": "NODE_EVENT", "payLoad": {},
         "timestamp": "2026-11-23T10:12:16.827Z"},
        {"tenantId": "globex", "transactionId": "t2", "notificationType": "NODE_EVENT",
         "payLoad": {}, "timestamp": "2026-11-23T10:12:16.827Z"},
    ])
    .to_string();
    let r = f
        .send(Method::POST, "/v1/events/batch", &f.acme, Some(&mixed))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["results"][0]["status"], "accepted");
    assert_eq!(r.json["results"][0]["deliveries"], 1);
    assert_eq!(r.json["results"][1]["error"]["code"], "not_found");
    f.engine.shutdown().await;
}

#[tokio::test]
async fn fallbacks_answer_json_with_a_request_id() {
    let f = Fixture::new().await;
    let missing = f.send(Method::GET, "/v1/nothing-here", ADMIN, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    assert!(missing.request_id);
    let wrong = f.send(Method::PUT, "/v1/tenants", ADMIN, None).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.error_code(), "method_not_allowed");
    let health = f.send(Method::GET, "/healthz", "", None).await;
    assert_eq!(health.json["status"], "ok");
    f.engine.shutdown().await;
}
