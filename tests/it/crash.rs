//! Crash test: the real `hookline` binary is killed with SIGKILL at random moments, many times,
//! while a producer publishes through the HTTP API and deliveries flow to a loopback receiver.
//! After the last restart everything accepted must reach every subscription exactly in publish
//! order; the only duplicates allowed are of the delivery in flight at a kill (at most one per
//! subscription per kill, immediately repeating the previous receipt), and the journal must pass
//! `PRAGMA integrity_check` after every kill.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::Connection;

pub(super) const ADMIN: &str = "crash-test-admin-key-0123456789";
const EVENTS: u64 = 500;
const KILLS: usize = 25;
const SUBS: [&str; 3] = ["a", "b", "c"];

/// Every 2xx the receiver gave, in arrival order: (subscription path, event number).
pub(super) type Log = Arc<Mutex<Vec<(String, u64)>>>;

pub(super) async fn start_receiver(log: Log) -> SocketAddr {
    async fn hook(
        State(log): State<Log>,
        axum::extract::Path(sub): axum::extract::Path<String>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        // Some attempts fail so that retries, too, cross the kills.
        if rand::rng().random_bool(0.1) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        let Some(n) = v["payLoad"]["n"].as_u64() else {
            return StatusCode::BAD_REQUEST;
        };
        log.lock().expect("log lock").push((sub, n));
        StatusCode::OK
    }
    let app = Router::new().route("/{sub}", post(hook)).with_state(log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    addr
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub(super) struct Server {
    pub child: Child,
    pub base: String,
}

fn spawn_server(db: &Path, port: u16) -> Server {
    spawn_server_with(db, port, &[], Stdio::null())
}

/// Starts the real binary on `db` with `env` added and its stderr to `stderr`.
pub(super) fn spawn_server_with(
    db: &Path,
    port: u16,
    env: &[(&str, String)],
    stderr: Stdio,
) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DB", db)
        .env("HOOKLINE_ADMIN_KEY", ADMIN)
        .env("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn hookline");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

pub(super) async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hookline did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let r = client
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("json"))
        .send()
        .await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

pub(super) async fn integrity_ok(db: &Path) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_reorders_nothing() {
    let log: Log = Arc::default();
    let receiver = start_receiver(log.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let port = free_port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let mut server = spawn_server(&db, port);
    let base = server.base.clone();
    wait_healthy(&client, &base).await;
    let (s, t) = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        ADMIN,
        &json!({"id": "acme", "name": "Acme"}),
    )
    .await
    .expect("create tenant");
    assert_eq!(s, 201, "{t}");
    let tenant_key = t["apiKey"].as_str().expect("api key").to_owned();
    for sub in SUBS {
        let body = json!({
            "url": format!("http://{receiver}/{sub}"),
            "retry": {"maxAttempts": 20, "backoffMs": [5, 20]},
            "timeoutMs": 2000
        });
        let (s, v) = post_json(
            &client,
            &format!("{base}/v1/subscriptions"),
            &tenant_key,
            &body,
        )
        .await
        .expect("create subscription");
        assert_eq!(s, 201, "{v}");
    }

    // The producer publishes sequentially, retrying an event until it is accepted: an event
    // whose 202 was lost in a kill is published again with the same id (idempotent).
    let producer = {
        let client = client.clone();
        let key = tenant_key.clone();
        tokio::spawn(async move {
            let mut retries = 0u64;
            for n in 0..EVENTS {
                let ev = json!({
                    "id": format!("e{n:05}"),
                    "transactionId": format!("tx{n}"),
                    "notificationType": "TRANSACTION_EVENT",
                    "payLoad": {"n": n, "pad": "x".repeat(200)},
                    "timestamp": "2026-11-23T10:00:00Z"
                });
                loop {
                    match post_json(&client, &format!("{base}/v1/events"), &key, &ev).await {
                        Ok((202, _)) => break,
                        Ok((s, v)) if s < 500 => panic!("event {n} refused with {s}: {v}"),
                        _ => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            retries
        })
    };

    let mut kills = 0usize;
    for _ in 0..KILLS {
        let wait = rand::rng().random_range(60..350);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        kills += 1;
        assert_eq!(
            integrity_ok(&db).await,
            "ok",
            "journal corrupt after kill {kills}"
        );
        server = spawn_server(&db, port);
        wait_healthy(&client, &server.base).await;
    }
    let publish_retries = producer.await.expect("producer");

    // Everything accepted must arrive at every subscription.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let complete = {
            let log = log.lock().expect("log");
            SUBS.iter().all(|s| {
                log.iter()
                    .filter(|(p, _)| p == s)
                    .map(|(_, n)| *n)
                    .collect::<BTreeSet<_>>()
                    .len() as u64
                    == EVENTS
            })
        };
        if complete {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything was delivered after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert_eq!(integrity_ok(&db).await, "ok");

    let log = log.lock().expect("log").clone();
    let mut total_dups = 0;
    for sub in SUBS {
        let seq: Vec<u64> = log
            .iter()
            .filter(|(p, _)| p == sub)
            .map(|(_, n)| *n)
            .collect();
        let mut dups = 0;
        for w in seq.windows(2) {
            assert!(
                w[1] >= w[0],
                "subscription {sub}: event {} arrived after {} (reordered)",
                w[1],
                w[0]
            );
            assert!(
                w[1] <= w[0] + 1,
                "subscription {sub}: event {} skipped ahead of {}",
                w[1],
                w[0] + 1
            );
            if w[1] == w[0] {
                dups += 1;
            }
        }
        assert_eq!(seq.first(), Some(&0));
        assert!(
            dups <= kills,
            "subscription {sub}: {dups} duplicates for {kills} kills"
        );
        total_dups += dups;
    }
    eprintln!(
        "crash test: {kills} kills, {EVENTS} events x {} subscriptions, {total_dups} duplicate receipts, {publish_retries} publish retries",
        SUBS.len()
    );
}
