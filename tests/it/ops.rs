//! The operator surface: layered configuration (through the real binary), `/metrics`,
//! `/readyz`, structured logs with a span per attempt, replay, and retention.
//!
//! In-process servers serve `hookline::api` on `127.0.0.1:0` over an engine on a SQLite file in
//! a temporary directory; binary tests spawn `hookline serve`. Nothing sleeps to assert.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline::{
    DeliveryStatus, EngineBuilder, EngineHandle, MetricsSettings, NewSubscription,
    NotificationType, ReplayWindow, Retention,
};
use serde_json::{Value, json};

use crate::support::{
    self, Receiver, TENANT, TestEngine, WITHIN, assert_strict_order, event, eventually,
    eventually_true, ids,
};

const ADMIN: &str = "admin-key-for-ops-tests-0123456789";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// An engine with the HTTP API on a loopback port.
struct Api {
    t: TestEngine,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Api {
    async fn start(tweak: impl FnOnce(EngineBuilder) -> EngineBuilder) -> Api {
        let t = TestEngine::start_with(tweak).await;
        t.ensure_admin_key(Some(ADMIN)).await.expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let engine = t.engine.clone();
        let server = tokio::spawn(async move {
            let _ = hookline::api::serve(listener, engine, std::future::pending()).await;
        });
        Api { t, base, server }
    }

    fn engine(&self) -> &EngineHandle {
        &self.t.engine
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut req = client().get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The value of one sample line of `/metrics` (`name{labels}` exactly), if present.
    async fn sample(&self, series: &str) -> Option<f64> {
        let (status, text) = self.get("/metrics", Some(ADMIN)).await;
        assert_eq!(status, 200, "{text}");
        sample(&text, series)
    }
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

fn subscription(url: &str) -> NewSubscription {
    NewSubscription::new(TENANT, url)
}

// ---- metrics -------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_are_exposed_and_move() {
    let api = Api::start(|b| b).await;
    let rx = Receiver::start().await;
    let sub = api.t.subscribe(subscription(&rx.url("/m"))).await;

    let (status, _) = api.get("/metrics", None).await;
    assert_eq!(status, 401, "metrics need the admin key by default");
    let r = client()
        .get(format!("{}/metrics", api.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        r.headers()["content-type"],
        hookline::api::ops::METRICS_CONTENT_TYPE
    );
    let before = r.text().await.expect("text");
    assert_eq!(sample(&before, "hookline_events_accepted_total"), Some(0.0));

    api.t.publish_all(support::events("m", 3)).await;
    api.t.wait_all_delivered(&sub.id, 3).await;
    assert_eq!(
        api.sample("hookline_events_accepted_total").await,
        Some(3.0)
    );
    assert_eq!(
        api.sample("hookline_deliveries_total{outcome=\"delivered\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        api.sample("hookline_attempt_duration_seconds_count").await,
        Some(3.0)
    );
    let commits = api
        .sample("hookline_journal_commit_duration_seconds_count")
        .await
        .expect("commit histogram");
    assert!(commits >= 1.0);
    assert!(
        api.sample("hookline_journal_commit_operations_sum")
            .await
            .expect("batch size histogram")
            >= 3.0
    );

    // Queue gauges: a paused subscription accumulates; they are read from the journal.
    api.engine()
        .pause_subscription(&sub.id)
        .await
        .expect("pause");
    api.t.publish_all(support::events("q", 2)).await;
    let series = format!("hookline_queue_depth{{subscription=\"{}\"}}", sub.id);
    assert_eq!(api.sample(&series).await, Some(2.0));
    assert_eq!(api.sample("hookline_queue_depth_all").await, Some(2.0));
    assert_eq!(
        api.sample("hookline_subscriptions_with_backlog").await,
        Some(1.0)
    );
    let age_series = format!(
        "hookline_queue_oldest_age_seconds{{subscription=\"{}\"}}",
        sub.id
    );
    assert!(api.sample(&age_series).await.expect("age gauge") >= 0.0);
    api.engine()
        .resume_subscription(&sub.id)
        .await
        .expect("resume");
    api.t.wait_all_delivered(&sub.id, 5).await;
    assert_eq!(
        api.sample(&series).await,
        None,
        "an empty queue is not labelled"
    );
    assert_eq!(api.sample("hookline_queue_depth_all").await, Some(0.0));

    // Retried attempts are counted apart from final outcomes.
    rx.set_behaviour(support::fail_first(1, 503));
    api.t.publish_all([event("r-1")]).await;
    api.t.wait_all_delivered(&sub.id, 6).await;
    assert_eq!(
        api.sample("hookline_deliveries_total{outcome=\"retried\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_can_be_opened_to_scrapers_without_a_key() {
    let api = Api::start(|b| {
        b.metrics(MetricsSettings {
            require_admin: false,
            max_subscription_labels: 1,
        })
    })
    .await;
    let rx = Receiver::start().await;
    let a = api.t.subscribe(subscription(&rx.url("/a"))).await;
    let b = api.t.subscribe(subscription(&rx.url("/b"))).await;
    api.engine().pause_subscription(&a.id).await.expect("pause");
    api.engine().pause_subscription(&b.id).await.expect("pause");
    api.t.publish_all(support::events("x", 2)).await;
    let (status, text) = api.get("/metrics", None).await;
    assert_eq!(status, 200);
    // Two subscriptions have a backlog, only one is labelled; the totals cover both.
    assert_eq!(text.matches("hookline_queue_depth{").count(), 1, "{text}");
    assert_eq!(sample(&text, "hookline_queue_depth_all"), Some(4.0));
    assert_eq!(
        sample(&text, "hookline_subscriptions_with_backlog"),
        Some(2.0)
    );
}

// ---- replay --------------------------------------------------------------------------------

/// The current time as RFC 3339 with milliseconds, as the journal sees it.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Waits until the wall clock has moved past the millisecond `t` was taken in, so events
/// published afterwards fall on the far side of a window boundary.
async fn next_millisecond() {
    let start = time::OffsetDateTime::now_utc();
    eventually_true("the clock to tick", WITHIN, || async {
        time::OffsetDateTime::now_utc() - start >= time::Duration::milliseconds(2)
    })
    .await;
}

#[tokio::test]
async fn replay_resends_the_window_in_order() {
    let api = Api::start(|b| b).await;
    let rx = Receiver::start().await;
    let sub = api.t.subscribe(subscription(&rx.url("/r"))).await;
    let all = ids("ev", 10);
    let events = support::events("ev", 10);
    let mut events = events.into_iter();
    api.t.publish_all(events.by_ref().take(3)).await;
    next_millisecond().await;
    let since = now_rfc3339();
    next_millisecond().await;
    api.t.publish_all(events.by_ref().take(4)).await;
    next_millisecond().await;
    let until = now_rfc3339();
    next_millisecond().await;
    api.t.publish_all(events).await;
    api.t.wait_all_delivered(&sub.id, 10).await;
    rx.wait_delivered_at("/r", &all, WITHIN).await;

    // Refusals name the field.
    let tenant_key = api
        .engine()
        .create_tenant(hookline::NewTenant {
            id: "other".into(),
            name: "Other".into(),
            rate_limit: None,
        })
        .await
        .expect("tenant")
        .api_key;
    let path = format!("/v1/subscriptions/{}/replay", sub.id);
    let (status, body) = api.post(&path, ADMIN, json!({"since": "yesterday"})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("/since"))
    );
    let (status, body) = api
        .post(&path, ADMIN, json!({"since": until, "until": since}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("until"))
    );
    let (status, _) = api.post(&path, &tenant_key, json!({"since": since})).await;
    assert_eq!(status, 404, "another tenant's subscription is invisible");

    let (status, body) = api
        .post(&path, ADMIN, json!({"since": since, "until": until}))
        .await;
    assert_eq!((status, &body), (200, &json!({"replayed": 4})));
    let window: Vec<String> = all[3..7].to_vec();
    let mut expected = all.clone();
    expected.extend(window.iter().cloned());
    let reqs = rx
        .wait_for("the window again", WITHIN, |r| r.len() >= 14)
        .await;
    let got: Vec<String> = support::delivered_ids(&reqs);
    assert_eq!(
        got, expected,
        "the window is sent again, in order, after the rest"
    );
    let d = api
        .t
        .wait_status(&sub.id, "ev-004", DeliveryStatus::Delivered)
        .await;
    assert_eq!(d.attempt_log.len(), 2, "the attempt log continues");
    assert_eq!(d.attempt_log[1].n, 2);

    // The library door: the whole history since the start, as one more pass, in order.
    let r = api
        .engine()
        .replay(
            &sub.id,
            ReplayWindow {
                since: "2000-01-01T00:00:00Z".into(),
                until: None,
            },
        )
        .await
        .expect("replay");
    assert_eq!(r.replayed, 10);
    let reqs = rx
        .wait_for("the full replay", WITHIN, |r| r.len() >= 24)
        .await;
    assert_strict_order(&reqs[14..], &all, 0);
}

#[tokio::test]
async fn replay_goes_ahead_of_pending_deliveries_and_unblocks() {
    let t = TestEngine::start().await;
    let rx = Receiver::start().await;
    let mut n = subscription(&rx.url("/b"));
    n.retry = Some(support::retry(1));
    let sub = t.subscribe(n).await;
    t.publish_all(support::events("p", 3)).await;
    t.wait_all_delivered(&sub.id, 3).await;
    // The next event fails for good and blocks the subscription; two more wait behind it.
    rx.set_behaviour(support::receiver::always(500));
    t.publish_all([event("p-003")]).await;
    t.wait_state(&sub.id, hookline::SubscriptionState::Blocked)
        .await;
    t.publish_all([event("p-004"), event("p-005")]).await;
    rx.set_behaviour(support::receiver::always(200));
    let r = t
        .replay(
            &sub.id,
            ReplayWindow {
                since: "2000-01-01T00:00:00Z".into(),
                until: None,
            },
        )
        .await
        .expect("replay");
    assert_eq!(r.replayed, 4, "three delivered and the failed one");
    t.wait_all_delivered(&sub.id, 6).await;
    let got = support::delivered_ids(&rx.requests());
    let mut expected = ids("p", 3);
    expected.extend(ids("p", 6));
    assert_eq!(
        got, expected,
        "replayed in seq order, ahead of the pending ones"
    );
}

// ---- retention -----------------------------------------------------------------------------

fn fast_retention() -> Retention {
    Retention {
        enabled: true,
        delivered_after: Duration::ZERO,
        failed_after: Duration::ZERO,
        interval: Duration::from_millis(50),
        batch_size: 100,
    }
}

#[tokio::test]
async fn pruning_leaves_pending_work_intact() {
    let t = TestEngine::start_with(|b| b.retention(fast_retention())).await;
    let rx = Receiver::start().await;
    let a = t.subscribe(subscription(&rx.url("/a"))).await;
    let mut nb = subscription(&rx.url("/b"));
    nb.notification_types = vec![NotificationType::NodeEvent];
    let b = t.subscribe(nb).await;
    t.pause_subscription(&b.id).await.expect("pause");
    // Shared events go to both (b holds them pending); A-only events are workflow events.
    let shared = ids("shared", 5);
    t.publish_all(support::events("shared", 5)).await;
    let only_a: Vec<_> = (0..5)
        .map(|i| {
            hookline::EventInput::new(TENANT, format!("tx-{i}"), NotificationType::WorkflowEvent)
                .id(format!("only-a-{i:03}"))
                .payload(json!({"i": i}))
        })
        .collect();
    t.publish_all(only_a).await;
    rx.wait_delivered_at("/a", &ids("only-a", 5), WITHIN).await;

    // A's deliveries of the A-only events are pruned; those of shared events stay (b pending).
    let kept = eventually("the A-only events to be pruned", WITHIN, || async {
        let left = t.deliveries(&a.id).await;
        (left.len() == 5).then_some(left)
    })
    .await;
    let kept_ids: Vec<String> = kept.iter().map(|d| d.event_id.to_string()).collect();
    assert_eq!(kept_ids, shared);
    assert_eq!(t.deliveries(&b.id).await.len(), 5, "pending work is intact");

    t.resume_subscription(&b.id).await.expect("resume");
    rx.wait_delivered_at("/b", &shared, WITHIN).await;
    assert_strict_order(&rx.requests_at("/b"), &shared, 0);
    eventually_true("everything to be pruned once delivered", WITHIN, || async {
        t.deliveries(&a.id).await.is_empty() && t.deliveries(&b.id).await.is_empty()
    })
    .await;
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wal(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

#[tokio::test]
async fn retention_keeps_the_file_bounded_under_steady_load() {
    let t = TestEngine::start_with(|b| b.retention(fast_retention())).await;
    let rx = Receiver::start().await;
    let sub = t.subscribe(subscription(&rx.url("/load"))).await;
    let payload = "x".repeat(2048);
    const ROUNDS: usize = 16;
    const PER_ROUND: usize = 200;
    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        let batch: Vec<_> = (0..PER_ROUND)
            .map(|i| event(&format!("l{round:02}-{i:03}")).payload(json!({"pad": payload, "i": i})))
            .collect();
        for r in t.publish_batch(batch).await.expect("publish") {
            r.expect("accepted");
        }
        eventually_true("the round to be delivered and pruned", WITHIN, || async {
            t.deliveries(&sub.id).await.is_empty()
        })
        .await;
        sizes.push((file_size(&t.db), file_size(&wal(&t.db))));
    }
    let written = (ROUNDS * PER_ROUND * payload.len()) as u64;
    eprintln!(
        "retention under load: {ROUNDS} rounds x {PER_ROUND} events of 2 KiB ({} KiB of payload); \
         db/wal KiB after each round: {:?}",
        written / 1024,
        sizes
            .iter()
            .map(|(d, w)| (d / 1024, w / 1024))
            .collect::<Vec<_>>()
    );
    let (mid, _) = sizes[ROUNDS / 4];
    let (last, _) = sizes[ROUNDS - 1];
    assert!(
        last <= mid + mid / 2,
        "the journal kept growing: {} KiB after round {}, {} KiB at the end",
        mid / 1024,
        ROUNDS / 4,
        last / 1024
    );
    // The WAL is written over from its start once a checkpoint copied all of it (a round that
    // leaves its size unchanged wrote inside it), and the journal makes it start over past
    // 64 MiB (`sqlite/checkpoint.rs`), so it stays under that plus what one round writes.
    let wal_sizes: Vec<u64> = sizes.iter().map(|(_, w)| *w).collect();
    assert!(
        wal_sizes
            .windows(2)
            .skip(1)
            .any(|w| w[0] > 0 && w[1] == w[0]),
        "the WAL is checkpointed and written over, not only appended to: {wal_sizes:?}"
    );
    let (_, last_wal) = sizes[ROUNDS - 1];
    assert!(
        last_wal <= 80 << 20,
        "the WAL starts over before it grows past 64 MiB and a round: {last_wal} bytes"
    );
    assert!(
        last < written / 4,
        "the journal holds most of what was ever written ({last} of {written} bytes)"
    );
    assert_eq!(rx.delivered_ids().len(), ROUNDS * PER_ROUND);
}

// ---- the binary ----------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `hookline serve` process, killed on drop, with its stderr collected.
struct Bin {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bin {
    fn spawn(cmd: &mut Command) -> Bin {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookline");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Bin { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits for the process to exit by itself; returns its code and stderr.
    async fn exit(mut self) -> (Option<i32>, String) {
        let status = eventually("hookline to exit", WITHIN, || {
            let s = self.child.try_wait().expect("try_wait");
            async move { s }
        })
        .await;
        // Let the reader thread drain the pipe.
        eventually_true("stderr to be read", WITHIN, || {
            let done = !self.stderr().is_empty();
            async move { done }
        })
        .await;
        (status.code(), self.stderr())
    }
}

fn serve_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookline"));
    cmd.arg("serve")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("HOOKLINE_ADMIN_KEY", ADMIN)
        .env("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8");
    cmd
}

async fn status_of(url: &str) -> Option<u16> {
    client()
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn invalid_config_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hookline.toml");
    std::fs::write(&file, "[limits]\nmaxEventBytes = \"lots\"\n").expect("write");
    let (code, err) = Bin::spawn(serve_cmd(dir.path()).arg("--config").arg(&file))
        .exit()
        .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("limits.maxEventBytes"), "{err}");
    assert!(err.contains("hookline.toml"), "the source is named: {err}");

    let (code, err) = Bin::spawn(serve_cmd(dir.path()).env("HOOKLINE_RETENTION__INTERVAL", "soon"))
        .exit()
        .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("retention.interval"), "{err}");
    assert!(err.contains("HOOKLINE_RETENTION__INTERVAL"), "{err}");

    std::fs::write(&file, "[retention]\nintervall = \"1m\"\n").expect("write");
    let (code, err) = Bin::spawn(serve_cmd(dir.path()).arg("-c").arg(&file))
        .exit()
        .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("retention.intervall"),
        "a typo is refused: {err}"
    );

    let (code, err) = Bin::spawn(serve_cmd(dir.path()).args(["--set", "durability=sometimes"]))
        .exit()
        .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("durability"), "{err}");
}

#[tokio::test]
async fn flags_beat_env_which_beats_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file = dir.path().join("hookline.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{file_port}\"\ndb = \"from-file.db\"\n\
             secretKeyFile = \"master.key\"\n[log]\nformat = \"json\"\n"
        ),
    )
    .expect("write");
    let bin = Bin::spawn(
        serve_cmd(dir.path())
            .arg("--config")
            .arg(&file)
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{env_port}"))
            .args(["--listen", &format!("127.0.0.1:{flag_port}")]),
    );
    let ready = format!("http://127.0.0.1:{flag_port}/readyz");
    eventually_true("the server on the flag's port", WITHIN, || async {
        status_of(&ready).await == Some(200)
    })
    .await;
    assert!(dir.path().join("from-file.db").exists(), "db from the file");
    assert!(
        dir.path().join("master.key").exists(),
        "secretKeyFile from the file"
    );
    assert!(!dir.path().join("from-file.db.key").exists());
    assert_eq!(
        status_of(&format!("http://127.0.0.1:{env_port}/healthz")).await,
        None
    );
    assert_eq!(
        status_of(&format!("http://127.0.0.1:{file_port}/healthz")).await,
        None
    );
    let err = bin.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("hookline serving"))
        .unwrap_or_else(|| panic!("no serving line: {err}"));
    serde_json::from_str::<Value>(line).expect("log.format from the file: JSON lines");
}

#[cfg(feature = "test-hooks")] // the start-up delay is a test hook
#[tokio::test]
async fn readyz_is_503_until_recovery_is_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _bin = Bin::spawn(
        serve_cmd(dir.path())
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_TEST_START_DELAY_MS", "1500"),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually_true("liveness while starting", WITHIN, || async {
        status_of(&format!("{base}/healthz")).await == Some(200)
    })
    .await;
    let r = client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status().as_u16(), 503, "not ready during recovery");
    let r = client()
        .get(format!("{base}/v1/tenants/acme"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("api");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    eventually_true("ready after recovery", WITHIN, || async {
        status_of(&format!("{base}/readyz")).await == Some(200)
    })
    .await;
    assert_eq!(
        status_of(&format!("{base}/v1/tenants/acme")).await,
        Some(401),
        "the API answers once ready"
    );
}

#[tokio::test]
async fn json_logs_carry_the_attempt_span_and_no_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let rx = Receiver::with(support::fail_first(1, 503)).await;
    let bin = Bin::spawn(
        serve_cmd(dir.path())
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .args(["--log-format", "json", "--log-level", "hookline=debug,info"])
            .args(["--set", "retry.backoffMs=10"]),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually_true("ready", WITHIN, || async {
        status_of(&format!("{base}/readyz")).await == Some(200)
    })
    .await;
    let post = |path: &str, key: &str, body: Value| {
        client()
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let tenant: Value = post("/v1/tenants", ADMIN, json!({"id": "acme", "name": "Acme"}))
        .await
        .expect("tenant")
        .text()
        .await
        .map(|t| serde_json::from_str::<Value>(&t).expect("json"))
        .expect("body");
    let key = tenant["apiKey"].as_str().expect("key").to_owned();
    let access_key = "very-secret-access-key-42";
    let sub: Value = post(
        "/v1/subscriptions",
        &key,
        json!({"url": rx.url("/log"), "accessKey": access_key}),
    )
    .await
    .expect("sub")
    .text()
    .await
    .map(|t| serde_json::from_str::<Value>(&t).expect("json"))
    .expect("body");
    let secret = sub["secret"].as_str().expect("secret").to_owned();
    let r = post(
        "/v1/events",
        &key,
        json!({"id": "log-1", "transactionId": "t", "notificationType": "NODE_EVENT",
               "payLoad": {}, "timestamp": "2022-08-12T10:12:16.827Z"}),
    )
    .await
    .expect("publish");
    assert_eq!(r.status().as_u16(), 202);
    rx.wait_delivered_at("/log", &["log-1".to_string()], WITHIN)
        .await;
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    let lines = eventually("both attempts logged", WITHIN, || {
        let err = bin.stderr();
        let lines: Vec<Value> = err
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["span"]["name"] == "delivery_attempt")
            .collect();
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await;
    for (n, line) in lines.iter().take(2).enumerate() {
        let span = &line["span"];
        assert_eq!(span["tenant"], "acme", "{line}");
        assert_eq!(span["subscription"], sub_id.as_str(), "{line}");
        assert_eq!(span["event_id"], "log-1", "{line}");
        assert_eq!(span["attempt"], n as u64 + 1, "{line}");
    }
    let err = bin.stderr();
    assert!(!err.contains(access_key), "the access key was logged");
    assert!(!err.contains(&secret), "the signing secret was logged");
    assert!(!err.contains(&key), "the tenant key was logged");
    assert!(!err.contains(ADMIN), "the admin key was logged");
}

/// Issue 16, item 1: a log that cannot be written (here every write fails with ENOSPC, as on a
/// full disk) must never stop the engine. Before the log sink, the first log line panicked the
/// server at start-up, and a line logged by the journal writer left it answering
/// `shutting_down` until restarted.
#[tokio::test]
async fn an_unwritable_log_never_stops_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    let rx = Receiver::with(support::fail_first(2, 503)).await;
    /// Killed on drop, whatever the test's outcome.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Killed(
        serve_cmd(dir.path())
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("HOOKLINE_ADMIN_KEY")
            .args(["--admin-key", ADMIN, "--log-level", "debug"])
            .args(["--set", "retry.backoffMs=10"])
            .stdin(Stdio::null())
            .stdout(full())
            .stderr(full())
            .spawn()
            .expect("spawn hookline"),
    );
    let child = &mut server.0;
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually("ready, or exited", WITHIN, || {
        let exited = child.try_wait().expect("try_wait");
        let base = base.clone();
        async move {
            match exited {
                Some(status) => Some(Err(status)),
                None => (status_of(&format!("{base}/readyz")).await == Some(200)).then_some(Ok(())),
            }
        }
    })
    .await;
    let post = |path: &str, key: &str, body: Value| {
        client()
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let run = async {
        up.map_err(|s| format!("the server exited at start-up: {s}"))?;
        let tenant: Value = post("/v1/tenants", ADMIN, json!({"id": "acme", "name": "Acme"}))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))?;
        let key = tenant["apiKey"].as_str().ok_or("no tenant key")?.to_owned();
        let sub = post("/v1/subscriptions", &key, json!({"url": rx.url("/full")}))
            .await
            .map_err(|e| e.to_string())?;
        if sub.status().as_u16() != 201 {
            return Err(format!("subscription: {}", sub.status()));
        }
        let mut ids = Vec::new();
        for n in 0..20 {
            let id = format!("full-{n}");
            let r = post(
                "/v1/events",
                &key,
                json!({"id": id, "transactionId": "t", "notificationType": "NODE_EVENT",
                       "payLoad": {}, "timestamp": "2022-08-12T10:12:16.827Z"}),
            )
            .await
            .map_err(|e| e.to_string())?;
            if r.status().as_u16() != 202 {
                return Err(format!("publish {id}: {}", r.status()));
            }
            ids.push(id);
        }
        Ok::<_, String>(ids)
    };
    let ids = run
        .await
        .expect("the server kept serving with an unwritable log");
    // Retries (logged at info and warn) and deliveries (debug) all went through the sink.
    rx.wait_delivered_at("/full", &ids, WITHIN).await;
    assert_strict_order(&rx.requests_at("/full"), &ids, 0);
    assert!(
        server.0.try_wait().expect("try_wait").is_none(),
        "the server is still running"
    );
}
