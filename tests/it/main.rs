//! hookline's integration tests: one binary, real SQLite files, real loopback receivers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use hookline::{Engine, EventInput, NewSubscription, NewTenant, NotificationType, RetryPolicy};

#[tokio::test]
async fn smoke() {
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let app = Router::new().route(
        "/hook",
        post(|State(g): State<Arc<Mutex<Vec<(String, String)>>>>, h: HeaderMap, body: String| async move {
            let id = h.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            g.lock().unwrap().push((id, body));
            "ok"
        }),
    ).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder().path(dir.path().join("j.db")).build().await.unwrap();
    engine.create_tenant(NewTenant { id: "acme".into(), name: "Acme".into() }).await.unwrap();
    let mut n = NewSubscription::new("acme", format!("http://{addr}/hook"));
    n.retry = Some(RetryPolicy { max_attempts: 3, backoff_ms: vec![10] });
    let sub = engine.create_subscription(n).await.unwrap();
    for i in 0..20 {
        engine.publish(EventInput::new("acme", format!("t{i}"), NotificationType::NodeEvent).payload(serde_json::json!({"i": i}))).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g = got.lock().unwrap().clone();
    assert_eq!(g.len(), 20);
    for (i, (_, b)) in g.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        assert_eq!(v["payLoad"]["i"], i);
    }
    let page = engine.list_deliveries(&sub.id, Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 20);
    engine.shutdown().await;
}
