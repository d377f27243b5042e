//! A full disk, for real: the binary's journal and its log on a 24 MiB tmpfs that the test
//! mounts (root only: elsewhere the test says so and passes, unless
//! `HOOKLINE_REQUIRE_EXTERNAL=1`, as in CI, makes it fail). The disk is filled while events are
//! published; then publishes must answer 503 with a JSON body and `Retry-After`, reads must go
//! on, `/readyz` and the metrics must say why; once the filler is removed hookline must take
//! events again by itself (no restart), and every event it answered 202 for must reach the
//! receiver, in order.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::crash::{ADMIN, Log, free_port, post_json, spawn_server_with, wait_healthy};

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn mount_tmpfs(dir: &Path) -> Option<Mount> {
    let required = std::env::var("HOOKLINE_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
    let why = if !is_root() {
        "it is not running as root".to_owned()
    } else {
        match Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(dir)
            .status()
        {
            Ok(s) if s.success() => return Some(Mount(dir.to_owned())),
            Ok(s) => format!("mount -t tmpfs failed ({s})"),
            Err(e) => format!("mount could not run ({e})"),
        }
    };
    assert!(
        !required,
        "full-disk test: {why}, and HOOKLINE_REQUIRE_EXTERNAL=1 requires it"
    );
    eprintln!("SKIPPED full-disk test: {why} (it mounts a small tmpfs; run it as root)");
    None
}

/// Writes into `path` until the file system refuses (ENOSPC).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() || f.sync_data().is_err() {
            return;
        }
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client
        .get(url)
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn metrics(client: &reqwest::Client, base: &str) -> String {
    match get(client, &format!("{base}/metrics")).await {
        (200, Value::String(text)) => text,
        other => panic!("GET /metrics: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_cleanly_and_recovers_by_itself() {
    let outer = tempfile::tempdir().expect("tempdir");
    let disk = outer.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let Some(_mount) = mount_tmpfs(&disk) else {
        return;
    };
    let log: Log = Arc::default();
    let receiver = start_receiver_ok(log.clone()).await;
    let db = disk.join("journal.db");
    let port = free_port();
    let stderr = std::fs::File::create(disk.join("hookline.log")).expect("log file");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut server = spawn_server_with(
        &db,
        port,
        &[("RUST_LOG", "info".into())],
        Stdio::from(stderr),
    );
    let base = server.base.clone();
    wait_healthy(&client, &base).await;
    let (s, t) = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        ADMIN,
        &json!({"id": "acme", "name": "Acme"}),
    )
    .await
    .expect("tenant");
    assert_eq!(s, 201, "{t}");
    let key = t["apiKey"].as_str().expect("key").to_owned();
    let (s, sub) = post_json(
        &client,
        &format!("{base}/v1/subscriptions"),
        &key,
        &json!({"url": format!("http://{receiver}/a"), "retry": {"maxAttempts": 20, "backoffMs": [5, 20]}}),
    )
    .await
    .expect("subscription");
    assert_eq!(s, 201, "{sub}");
    let sub_id = sub["id"].as_str().expect("id").to_owned();

    let mut accepted: Vec<u64> = Vec::new();
    let mut n = 0u64;
    let publish = async |n: u64| -> (u16, Value, Option<String>) {
        let ev = json!({
            "id": format!("e{n:06}"),
            "transactionId": format!("tx{n}"),
            "notificationType": "TRANSACTION_EVENT",
            "payLoad": {"n": n, "pad": "x".repeat(2000)},
            "timestamp": "2026-11-23T10:00:00Z"
        });
        let r = client
            .post(format!("{base}/v1/events"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&ev).expect("json"))
            .send()
            .await
            .expect("publish answered (no dropped connection)");
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = r.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry,
        )
    };
    for _ in 0..20 {
        let (s, v, _) = publish(n).await;
        assert_eq!(s, 202, "{v}");
        accepted.push(n);
        n += 1;
    }

    // Fill the disk, then publish until the journal runs out of room.
    fill(&disk.join("filler"));
    let mut refused = None;
    for _ in 0..2000 {
        let (s, v, retry) = publish(n).await;
        match s {
            202 => accepted.push(n),
            503 => {
                refused = Some((v, retry));
                break;
            }
            other => panic!("publish on a full disk answered {other}: {v}"),
        }
        n += 1;
    }
    let (body, retry) = refused.expect("publishes kept succeeding on a full disk");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        retry.as_deref().is_some_and(|r| r.parse::<u64>().is_ok()),
        "a 503 without Retry-After: {retry:?}"
    );
    let (s, ready) = get(&client, &format!("{base}/readyz")).await;
    assert_eq!(s, 503, "{ready}");
    assert_eq!(ready["status"], "journal_unwritable", "{ready}");
    assert_eq!(ready["reason"], "disk_full", "{ready}");
    let text = metrics(&client, &base).await;
    assert!(text.contains("hookline_journal_writable 0"), "{text}");
    assert!(
        text.contains("hookline_journal_failed_commits_total{reason=\"disk_full\"}"),
        "{text}"
    );
    // Reads go on.
    let (s, v) = get(&client, &format!("{base}/v1/subscriptions/{sub_id}")).await;
    assert_eq!(s, 200, "{v}");
    // The process stays up and keeps answering, for a while, with the disk still full.
    for _ in 0..5 {
        let (s, v, _) = publish(n).await;
        if s == 202 {
            accepted.push(n);
        } else {
            assert_eq!(s, 503, "{v}");
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "hookline exited"
    );

    // Space returns: hookline notices by itself.
    std::fs::remove_file(disk.join("filler")).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, v) = get(&client, &format!("{base}/readyz")).await;
        if s == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not ready after space returned: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics(&client, &base)
            .await
            .contains("hookline_journal_writable 1")
    );
    for _ in 0..20 {
        let (s, v, _) = publish(n).await;
        assert_eq!(s, 202, "after space returned: {v}");
        accepted.push(n);
        n += 1;
    }

    // Every 202'd event arrives, in order (a repeat of the one just before is the only
    // duplicate allowed).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<u64> = log.lock().expect("log").iter().map(|(_, n)| *n).collect();
        let mut firsts = got.clone();
        firsts.dedup();
        if accepted.iter().all(|a| firsts.contains(a)) {
            let expected: Vec<u64> = firsts
                .iter()
                .copied()
                .filter(|f| accepted.contains(f))
                .collect();
            assert_eq!(expected, accepted, "receipts out of order");
            let mut sorted = firsts.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, firsts, "receipts out of order: {got:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every accepted event arrived: {} of {}",
            firsts.len(),
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log_text = std::fs::read_to_string(disk.join("hookline.log")).unwrap_or_default();
    let _ = server.child.kill();
    let _ = server.child.wait();
    eprintln!(
        "full disk: {} events accepted around the fill, {} publishes in all; log:\n{}",
        accepted.len(),
        n,
        log_text
            .lines()
            .filter(|l| l.contains("journal"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A receiver that always answers 2xx (the crash tests' one fails some attempts on purpose).
async fn start_receiver_ok(log: Log) -> std::net::SocketAddr {
    async fn hook(
        axum::extract::State(log): axum::extract::State<Log>,
        body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        let n = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["payLoad"]["n"].as_u64());
        match n {
            Some(n) => {
                log.lock().expect("log").push(("a".into(), n));
                axum::http::StatusCode::OK
            }
            None => axum::http::StatusCode::BAD_REQUEST,
        }
    }
    let app = axum::Router::new()
        .route("/a", axum::routing::post(hook))
        .with_state(log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    addr
}
