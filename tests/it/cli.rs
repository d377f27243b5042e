//! The CLI client and the load generator, as an operator runs them: the real `hookline serve`
//! binary on a real journal, a real loopback receiver, and the real `hookline` binary for every
//! client command, its output parsed (`--json`) or read (tables), its effects checked at the
//! receiver and through the API.
//!
//! A few tests drive the client against a stub server (real HTTP on loopback, canned answers)
//! to provoke what a healthy hookline does not do on demand: no batch route, a body limit, and
//! overload.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{Receiver, Reply, WITHIN};

const ADMIN: &str = "admin-key-for-cli-tests-0123456789";

// ---- a running server ----------------------------------------------------------------------

/// A `hookline serve` child on a temporary journal, loopback receivers allowed. Killed on drop.
struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<Vec<String>>>,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .arg("serve")
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_DB", dir.path().join("h.db"))
            .env("HOOKLINE_ADMIN_KEY", ADMIN)
            .env("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookline serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr piped");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("stderr lock").push(line);
            }
        });
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            stderr,
            db: dir.path().join("h.db"),
            _dir: dir,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "hookline serve exited early ({status}):\n{}",
                    self.stderr.lock().expect("stderr lock").join("\n")
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "hookline serve not healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- running the CLI -----------------------------------------------------------------------

/// What one CLI run printed, and how it ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Succeeded; its stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "the CLI failed: {self:#?}");
        &self.stdout
    }

    /// Succeeded with `--json`; its stdout parsed.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Failed (exit 1) with every piece of `expected` in its stderr; its stderr.
    fn failed_with(&self, expected: &[&str]) -> &str {
        assert_eq!(self.code, Some(1), "expected a failure: {self:#?}");
        for e in expected {
            assert!(self.stderr.contains(e), "stderr lacks {e:?}: {self:#?}");
        }
        &self.stderr
    }
}

/// Runs `hookline <args>` against `url` with `key` (none: no key at all), feeding `stdin`.
async fn cli(url: &str, key: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookline"));
    cmd.args(args)
        .env("HOOKLINE_URL", url)
        .env_remove("HOOKLINE_KEY")
        .env_remove("RUST_BACKTRACE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = key {
        cmd.env("HOOKLINE_KEY", k);
    }
    let input = stdin.map(<[u8]>::to_vec);
    // The receivers of a test live on its runtime: wait for the child off that thread.
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn the hookline CLI");
        if let Some(bytes) = input {
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(&bytes).expect("write stdin");
        }
        child.wait_with_output().expect("CLI output")
    })
    .await
    .expect("join");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An event envelope of the callback contract with producer id `id`.
fn envelope(id: &str) -> Value {
    json!({
        "id": id,
        "transactionId": format!("tx-{id}"),
        "notificationType": "NODE_EVENT",
        "workflowId": "104",
        "payLoad": {"id": id},
        "timestamp": "2022-08-12T10:12:16.827Z",
    })
}

fn json_lines(ids: &[String]) -> Vec<u8> {
    let mut s = String::new();
    for id in ids {
        s.push_str(&envelope(id).to_string());
        s.push('\n');
    }
    s.into_bytes()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// Creates tenant `id` through the CLI; returns its key.
async fn tenant(server: &Server, id: &str) -> String {
    let created = cli(
        &server.url,
        Some(ADMIN),
        &["tenants", "create", "--id", id, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(created["id"], id);
    created["apiKey"]
        .as_str()
        .expect("the answer holds the tenant's key")
        .to_owned()
}

/// Creates a subscription to `endpoint` through the CLI with `extra` flags; returns it.
async fn subscribe(server: &Server, key: &str, endpoint: &str, extra: &[&str]) -> Value {
    let mut args = vec!["subscriptions", "create", "--endpoint", endpoint, "--json"];
    args.extend_from_slice(extra);
    cli(&server.url, Some(key), &args, None).await.json()
}

/// `deliveries list` of a subscription, every page.
async fn deliveries(server: &Server, key: &str, sub: &str) -> Vec<Value> {
    let page = cli(
        &server.url,
        Some(key),
        &["deliveries", "list", sub, "--all", "--json"],
        None,
    )
    .await
    .json();
    page["items"].as_array().expect("items").clone()
}

/// Polls `deliveries show` until the delivery has `status`; returns it.
async fn wait_delivery(server: &Server, key: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let d = cli(
            &server.url,
            Some(key),
            &["deliveries", "show", id, "--json"],
            None,
        )
        .await
        .json();
        if d["status"] == status {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "delivery {id} never became {status}: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- tenants and subscriptions -------------------------------------------------------------

#[tokio::test]
async fn tenants_and_subscriptions_round_trip_through_the_cli() {
    let server = Server::start().await;
    let receiver = Receiver::start().await;

    // Tenants: created with the admin key (its key shown once), shown as a table.
    let key = tenant(&server, "acme").await;
    assert!(key.starts_with("hlk_"), "{key}");
    let shown = cli(&server.url, Some(&key), &["tenants", "show", "acme"], None).await;
    let text = shown.ok();
    assert!(
        text.lines()
            .any(|l| l.starts_with("id") && l.ends_with("acme")),
        "{text}"
    );

    // Create from flags.
    let a = subscribe(
        &server,
        &key,
        &receiver.url("/a"),
        &[
            "--type",
            "NODE_EVENT,CASE_EVENT",
            "--header",
            "entityId=E01",
            "--max-attempts",
            "2",
            "--backoff-ms",
            "10,20",
            "--on-failure",
            "skip",
            "--timeout-ms",
            "5000",
        ],
    )
    .await;
    let a_id = a["id"].as_str().expect("id").to_owned();
    assert_eq!(a["tenantId"], "acme");
    assert_eq!(a["state"], "active");
    assert_eq!(a["notificationTypes"], json!(["NODE_EVENT", "CASE_EVENT"]));
    assert_eq!(a["headers"], json!({"entityId": "E01"}));
    assert_eq!(a["retry"], json!({"maxAttempts": 2, "backoffMs": [10, 20]}));
    assert_eq!(a["onFailure"], "skip");
    assert_eq!(a["timeoutMs"], 5000);
    assert!(
        a["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{a:#}"
    );

    // Create from a spec file, a flag overriding one of its fields; the admin names the tenant.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "url": receiver.url("/from-file"),
            "workflowIds": ["104"],
            "timeoutMs": 1000,
            "accessKey": "receiver-key",
        })
        .to_string(),
    )
    .expect("write spec");
    let b = cli(
        &server.url,
        Some(ADMIN),
        &[
            "subscriptions",
            "create",
            "--file",
            spec.to_str().expect("utf-8 path"),
            "--tenant",
            "acme",
            "--timeout-ms",
            "2500",
            "--json",
        ],
        None,
    )
    .await
    .json();
    let b_id = b["id"].as_str().expect("id").to_owned();
    assert_eq!(b["url"], receiver.url("/from-file"));
    assert_eq!(b["workflowIds"], json!(["104"]));
    assert_eq!(b["timeoutMs"], 2500, "the flag wins over the file");
    assert_eq!(b["accessKeySet"], true);

    // List: JSON and table.
    let listed = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "list", "--json"],
        None,
    )
    .await
    .json();
    let mut listed_ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    listed_ids.sort_unstable();
    let mut want = vec![a_id.as_str(), b_id.as_str()];
    want.sort_unstable();
    assert_eq!(listed_ids, want);
    let table = cli(&server.url, Some(ADMIN), &["subscriptions", "list"], None).await;
    let text = table.ok();
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    assert!(
        header.starts_with("ID") && header.contains("STATE") && header.contains("URL"),
        "{text}"
    );
    for id in [&a_id, &b_id] {
        assert!(
            lines
                .clone()
                .any(|l| l.starts_with(id.as_str()) && l.contains("active")),
            "{text}"
        );
    }

    // Show, pause, resume.
    let shown = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "show", &a_id, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(shown["id"], a_id.as_str());
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    let paused = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "pause", &a_id, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(paused["state"], "paused");
    let resumed = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "resume", &a_id],
        None,
    )
    .await;
    let text = resumed.ok();
    assert!(
        text.lines()
            .any(|l| l.starts_with("state") && l.ends_with("active")),
        "{text}"
    );

    // Delete; then it is gone, and the CLI says so readably with a non-zero exit.
    let deleted = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "delete", &b_id, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(deleted, json!({"id": b_id, "deleted": true}));
    cli(
        &server.url,
        Some(&key),
        &["subscriptions", "show", &b_id],
        None,
    )
    .await
    .failed_with(&["404", "not_found", &b_id]);
}

// ---- events and deliveries -----------------------------------------------------------------

#[tokio::test]
async fn published_events_reach_the_receiver_in_input_order() {
    let server = Server::start().await;
    let receiver = Receiver::start().await;
    let key = tenant(&server, "acme").await;
    let sub = subscribe(&server, &key, &receiver.url("/hook"), &[]).await;
    let sub_id = sub["id"].as_str().expect("id").to_owned();

    // JSON lines on stdin, then a JSON array in a file, then one object.
    let first = ids("lines", 30);
    let out = cli(
        &server.url,
        Some(&key),
        &["events", "publish", "--json"],
        Some(&json_lines(&first)),
    )
    .await
    .json();
    assert_eq!(
        (&out["total"], &out["accepted"], &out["rejected"]),
        (&json!(30), &json!(30), &json!(0)),
        "{out:#}"
    );
    let results = out["results"].as_array().expect("results");
    let seqs: Vec<i64> = results.iter().filter_map(|r| r["seq"].as_i64()).collect();
    assert_eq!(seqs.len(), 30);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "input order: {seqs:?}"
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["id"], first[i].as_str());
        assert_eq!(r["status"], "accepted");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.json");
    let second = ids("array", 20);
    let array: Vec<Value> = second.iter().map(|id| envelope(id)).collect();
    std::fs::write(&file, serde_json::to_vec(&array).expect("json")).expect("write events");
    let text = cli(
        &server.url,
        Some(&key),
        &[
            "events",
            "publish",
            file.to_str().expect("utf-8 path"),
            "--batch-size",
            "7",
        ],
        None,
    )
    .await;
    assert!(
        text.ok()
            .contains("20 events: 20 accepted, 0 duplicates, 0 rejected"),
        "{text:#?}"
    );

    let single = cli(
        &server.url,
        Some(&key),
        &["events", "publish"],
        Some(envelope("single").to_string().as_bytes()),
    )
    .await;
    let text = single.ok();
    assert!(
        text.lines()
            .any(|l| l.starts_with("id") && l.ends_with("single")),
        "{text}"
    );

    // The receiver got every event once, in input order.
    let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
    all.push("single".into());
    receiver.wait_delivered_at("/hook", &all, WITHIN).await;
    assert_eq!(receiver.delivered_ids_at("/hook"), all);

    // Publishing the same events again: duplicates, nothing new delivered.
    let again = cli(
        &server.url,
        Some(&key),
        &["events", "publish", "--json"],
        Some(&json_lines(&first[..3])),
    )
    .await
    .json();
    assert_eq!(again["duplicates"], 3, "{again:#}");
    assert_eq!(again["accepted"], 0, "{again:#}");

    // Deliveries: every one listed in order, delivered, and readable as a table.
    let listed = deliveries(&server, &key, &sub_id).await;
    let listed_events: Vec<&str> = listed
        .iter()
        .filter_map(|d| d["eventId"].as_str())
        .collect();
    assert_eq!(listed_events, all);
    let table = cli(
        &server.url,
        Some(&key),
        &["deliveries", "list", &sub_id, "--limit", "5"],
        None,
    )
    .await;
    let text = table.ok();
    assert!(text.starts_with("ID"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("dlv_")).count(),
        5,
        "{text}"
    );
    assert!(text.contains("more: --after "), "{text}");
}

#[tokio::test]
async fn a_rejected_event_is_reported_and_does_not_stop_the_others() {
    let server = Server::start().await;
    let receiver = Receiver::start().await;
    let key = tenant(&server, "acme").await;
    subscribe(&server, &key, &receiver.url("/hook"), &[]).await;

    let mut input = json_lines(&ids("ok", 2));
    input.extend_from_slice(
        br#"{"id":"bad","transactionId":"t","payLoad":{},"timestamp":"2022-08-12T10:12:16.827Z"}"#,
    );
    input.push(b'\n');
    input.extend_from_slice(&json_lines(&ids("after", 2)));

    let run = cli(
        &server.url,
        Some(&key),
        &["events", "publish", "--json"],
        Some(&input),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("1 of 5 events were rejected"),
        "{run:#?}"
    );
    let out: Value = serde_json::from_str(&run.stdout).expect("the summary is still printed");
    assert_eq!((&out["accepted"], &out["rejected"]), (&json!(4), &json!(1)));
    let bad = &out["results"][2];
    assert_eq!(bad["index"], 2);
    assert_eq!(bad["status"], "rejected");
    // The server's refusal of that event, as it gave it (`invalid` or `schema_violation`).
    assert!(
        bad["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{bad:#}"
    );
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("notificationType")),
        "{bad:#}"
    );

    let mut want = ids("ok", 2);
    want.extend(ids("after", 2));
    receiver.wait_delivered_at("/hook", &want, WITHIN).await;
    assert_eq!(receiver.delivered_ids_at("/hook"), want);

    // Table mode names the rejected line.
    let run = cli(
        &server.url,
        Some(&key),
        &["events", "publish"],
        Some(&input),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stdout
            .contains("5 events: 0 accepted, 4 duplicates, 1 rejected"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains("notificationType")),
        "{run:#?}"
    );
}

#[tokio::test]
async fn operators_resubmit_and_skip_failed_deliveries() {
    let server = Server::start().await;
    let receiver = Receiver::with(|r| {
        if r.json()["payLoad"]["id"] == "ok-0000" {
            Reply::ok()
        } else {
            Reply::status(500)
        }
    })
    .await;
    let key = tenant(&server, "acme").await;
    let sub = subscribe(
        &server,
        &key,
        &receiver.url("/hook"),
        &["--max-attempts", "1", "--on-failure", "block"],
    )
    .await;
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    let events = vec!["ok-0000".to_owned(), "x-1".to_owned(), "y-2".to_owned()];
    cli(
        &server.url,
        Some(&key),
        &["events", "publish", "--quiet"],
        Some(&json_lines(&events)),
    )
    .await
    .ok();

    // The second fails and blocks the queue.
    let listed = deliveries(&server, &key, &sub_id).await;
    let dlv: Vec<String> = listed
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(dlv.len(), 3);
    let failed = wait_delivery(&server, &key, &dlv[1], "failed").await;
    assert_eq!(failed["attempts"][0]["statusCode"], 500, "{failed:#}");
    assert_eq!(failed["attempts"][0]["n"], 1, "{failed:#}");
    let shown = cli(
        &server.url,
        Some(&key),
        &["deliveries", "show", &dlv[1]],
        None,
    )
    .await;
    let text = shown.ok();
    assert!(text.contains("attempts:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("1 ") && l.contains("500")),
        "{text}"
    );
    let blocked = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "show", &sub_id, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(blocked["state"], "blocked");
    assert_eq!(blocked["blockedOn"], dlv[1].as_str());

    // Resubmitted once the receiver is fixed for it: delivered, and the queue moves on to the
    // third, which fails in turn; skipping it leaves nothing pending.
    receiver.set_behaviour(|r| {
        if r.json()["payLoad"]["id"] == "y-2" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let resubmitted = cli(
        &server.url,
        Some(&key),
        &["deliveries", "resubmit", &dlv[1], "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(resubmitted["id"], dlv[1].as_str());
    wait_delivery(&server, &key, &dlv[1], "delivered").await;
    wait_delivery(&server, &key, &dlv[2], "failed").await;
    let skipped = cli(
        &server.url,
        Some(&key),
        &["deliveries", "skip", &dlv[2], "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(skipped["status"], "skipped");
    let statuses: Vec<String> = deliveries(&server, &key, &sub_id)
        .await
        .iter()
        .filter_map(|d| d["status"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(statuses, ["delivered", "delivered", "skipped"]);
    assert_eq!(receiver.delivered_ids_at("/hook").len(), 2);
}

// ---- errors --------------------------------------------------------------------------------

#[tokio::test]
async fn refusals_and_bad_input_are_readable_and_exit_non_zero() {
    let server = Server::start().await;
    let key = tenant(&server, "acme").await;

    cli(&server.url, None, &["subscriptions", "list"], None)
        .await
        .failed_with(&["401", "unauthorized", "HOOKLINE_KEY"]);
    cli(
        &server.url,
        Some("hlk_not-a-key"),
        &["tenants", "show", "acme"],
        None,
    )
    .await
    .failed_with(&["401", "unknown API key"]);
    cli(
        &server.url,
        Some(&key),
        &["tenants", "create", "--id", "globex"],
        None,
    )
    .await
    .failed_with(&["403", "forbidden"]);
    cli(
        &server.url,
        Some(&key),
        &["subscriptions", "create", "--endpoint", "ftp://x.example/"],
        None,
    )
    .await
    // `invalid` or `schema_violation` (JSON Schema validation), the field named either way.
    .failed_with(&["400", "[field: ", "url]"]);
    cli(
        &server.url,
        Some(&key),
        &["deliveries", "show", "dlv_999999"],
        None,
    )
    .await
    .failed_with(&["404", "not_found"]);
    cli(&server.url, Some(&key), &["subscriptions", "create"], None)
        .await
        .failed_with(&["--endpoint"]);

    // Malformed input: nothing is sent.
    let mut input = json_lines(&ids("fine", 2));
    input.extend_from_slice(b"{\"id\": oops}\n");
    cli(
        &server.url,
        Some(&key),
        &["events", "publish"],
        Some(&input),
    )
    .await
    .failed_with(&["not JSON", "line 3"]);
    cli(
        &server.url,
        Some(&key),
        &["events", "publish"],
        Some(b"[1]"),
    )
    .await
    .failed_with(&["expected an event object"]);
    let listed = cli(
        &server.url,
        Some(&key),
        &["subscriptions", "list", "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(listed["items"], json!([]));
    let sub = subscribe(&server, &key, "http://127.0.0.1:9/never", &[]).await;
    let sub_id = sub["id"].as_str().expect("id");
    assert!(
        deliveries(&server, &key, sub_id).await.is_empty(),
        "nothing of the malformed input was published"
    );

    // No server there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        drop(l);
        format!("http://{a}")
    };
    cli(&closed, Some(&key), &["subscriptions", "list"], None)
        .await
        .failed_with(&["cannot reach", &closed]);
    cli("not a url", Some(&key), &["subscriptions", "list"], None)
        .await
        .failed_with(&["HOOKLINE_URL"]);
}

// ---- the batch route, and servers that refuse it --------------------------------------------

/// Canned answers of the stub server.
#[derive(Clone, Copy, Debug)]
enum Stub {
    /// An older server: 404 on the batch route; one 429 (`Retry-After: 0`) on the first
    /// single publish, then 202 receipts.
    NoBatch,
    /// A batch server whose body limit fits `max` events: 413 above it, results below.
    Limit { max: usize },
}

#[derive(Debug)]
struct StubLog {
    mode: Stub,
    /// Per request: path and the ids it carried.
    requests: Vec<(String, Vec<String>)>,
    seq: u64,
}

async fn stub(State(log): State<Arc<Mutex<StubLog>>>, uri: Uri, body: Bytes) -> impl IntoResponse {
    let mut log = log.lock().expect("stub lock");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let items: Vec<Value> = match &body {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let ids: Vec<String> = items
        .iter()
        .map(|e| e["id"].as_str().unwrap_or("").to_owned())
        .collect();
    let first_single = !log.requests.iter().any(|(p, _)| p == "/v1/events");
    log.requests.push((uri.path().to_owned(), ids.clone()));
    let error = |status: StatusCode, code: &str| {
        (
            status,
            [("retry-after", "0")],
            axum::Json(json!({"error": {"code": code, "message": code}})),
        )
            .into_response()
    };
    match (log.mode, uri.path()) {
        (Stub::NoBatch, "/v1/events/batch") => error(StatusCode::NOT_FOUND, "not_found"),
        (Stub::NoBatch, "/v1/events") if first_single => {
            error(StatusCode::TOO_MANY_REQUESTS, "overloaded")
        }
        (Stub::NoBatch, "/v1/events") => {
            log.seq += 1;
            (
                StatusCode::ACCEPTED,
                axum::Json(
                    json!({"id": ids[0], "seq": log.seq, "deliveries": 1, "duplicate": false}),
                ),
            )
                .into_response()
        }
        (Stub::Limit { max }, "/v1/events/batch") if items.len() > max => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        }
        (Stub::Limit { .. }, "/v1/events/batch") => {
            let mut results = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                log.seq += 1;
                results.push(json!({"index": i, "status": "accepted", "id": id, "seq": log.seq, "deliveries": 0}));
            }
            (
                StatusCode::OK,
                axum::Json(json!({"accepted": ids.len(), "rejected": 0, "results": results})),
            )
                .into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

async fn start_stub(mode: Stub) -> (SocketAddr, Arc<Mutex<StubLog>>) {
    let log = Arc::new(Mutex::new(StubLog {
        mode,
        requests: Vec::new(),
        seq: 0,
    }));
    let app = Router::new().fallback(stub).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stub");
    let addr = listener.local_addr().expect("stub addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("stub server") });
    (addr, log)
}

#[tokio::test]
async fn publish_falls_back_to_single_events_when_the_server_has_no_batch_route() {
    let (addr, log) = start_stub(Stub::NoBatch).await;
    let want = ids("old", 12);
    let run = cli(
        &format!("http://{addr}"),
        Some("k"),
        &["events", "publish", "--json"],
        Some(&json_lines(&want)),
    )
    .await;
    let out = run.json();
    assert_eq!(out["accepted"], 12, "{out:#}");
    assert!(
        run.stderr.contains("publishing one event at a time"),
        "{run:#?}"
    );
    let log = log.lock().expect("stub lock");
    // One batch try, one 429 retried after Retry-After, then every event alone, in order.
    assert_eq!(log.requests[0].0, "/v1/events/batch");
    let singles: Vec<String> = log.requests[1..]
        .iter()
        .inspect(|(path, _)| assert_eq!(path, "/v1/events"))
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    let mut expected = vec![want[0].clone()];
    expected.extend(want.iter().cloned());
    assert_eq!(
        singles, expected,
        "the overloaded first event is sent again"
    );
}

#[tokio::test]
async fn publish_splits_batches_the_server_finds_too_large() {
    let (addr, log) = start_stub(Stub::Limit { max: 300 }).await;
    let want = ids("big", 1100);
    let out = cli(
        &format!("http://{addr}"),
        Some("k"),
        &["events", "publish", "--json"],
        Some(&json_lines(&want)),
    )
    .await
    .json();
    assert_eq!(out["accepted"], 1100, "{out:#}");
    let seqs: Vec<i64> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["seq"].as_i64())
        .collect();
    assert_eq!(seqs, (1..=1100).collect::<Vec<i64>>());
    let log = log.lock().expect("stub lock");
    let sizes: Vec<usize> = log.requests.iter().map(|(_, ids)| ids.len()).collect();
    // 1000 → 413, 500 → 413, then chunks of 250 within the limit, in input order.
    assert_eq!(sizes, [1000, 500, 250, 250, 250, 250, 100], "{sizes:?}");
    let accepted: Vec<String> = log
        .requests
        .iter()
        .filter(|(_, ids)| ids.len() <= 300)
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    assert_eq!(accepted, want);
}

#[tokio::test]
async fn large_inputs_go_through_the_batch_route_in_order() {
    let server = Server::start().await;
    let receiver = Receiver::start().await;
    let key = tenant(&server, "acme").await;
    subscribe(&server, &key, &receiver.url("/hook"), &[]).await;
    let want = ids("bulk", 2500);
    let run = cli(
        &server.url,
        Some(&key),
        &["events", "publish", "--json"],
        Some(&json_lines(&want)),
    )
    .await;
    assert!(
        !run.stderr.contains("one event at a time"),
        "the batch route was used: {run:#?}"
    );
    let out = run.json();
    assert_eq!(out["accepted"], 2500, "{out:#}");
    // 2,500 ordered deliveries through a debug build: about 10 s alone, but a shared 2-core CI
    // machine at load 10+ was seen to deliver 2,306 in 60 s. The wait ends as soon as all arrive.
    receiver
        .wait_delivered_at("/hook", &want, Duration::from_secs(240))
        .await;
    assert_eq!(receiver.delivered_ids_at("/hook"), want);
}

// ---- the load generator --------------------------------------------------------------------

async fn load(server: &Server, extra: &[&str]) -> Value {
    let mut args = vec![
        "load",
        "--concurrency",
        "4",
        "--sink",
        "--drain-timeout",
        "30s",
    ];
    args.extend_from_slice(extra);
    let run = cli(&server.url, Some(ADMIN), &args, None).await;
    let last = run.ok().lines().last().unwrap_or_default().to_owned();
    serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {run:#?}"))
}

fn check_report(report: &Value, events: u64) {
    assert_eq!(report["events"], events, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["rejected"], 0, "{report:#}");
    assert_eq!(
        report["delivered"], events,
        "every event reached the sink: {report:#}"
    );
    for k in [
        "eventsPerS",
        "p50Ms",
        "p90Ms",
        "p99Ms",
        "maxMs",
        "deliveriesPerS",
    ] {
        assert!(
            report[k].as_f64().is_some_and(|v| v > 0.0),
            "{k}: {report:#}"
        );
    }
    for (p50, p99, max) in [
        ("p50Ms", "p99Ms", "maxMs"),
        ("receiptP50Ms", "receiptP99Ms", "receiptMaxMs"),
    ] {
        let (p50, p99, max) = (
            report[p50].as_f64().unwrap_or(0.0),
            report[p99].as_f64().unwrap_or(0.0),
            report[max].as_f64().unwrap_or(0.0),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report:#}");
    }
    assert_eq!(report["duplicateReceipts"], 0, "{report:#}");
}

#[tokio::test]
async fn load_publishes_single_events_and_reports_a_json_line() {
    let server = Server::start().await;
    let report = load(&server, &["--events", "300"]).await;
    check_report(&report, 300);
    assert_eq!(report["mode"], "single");
    assert_eq!(report["requests"], 300);
    assert_eq!(report["sizeBytes"], 1024);
}

#[tokio::test]
async fn load_spreads_events_over_several_sink_subscriptions() {
    let server = Server::start().await;
    let report = load(&server, &["--events", "300", "--subs", "5"]).await;
    check_report(&report, 300);
    assert_eq!(report["subs"], 5, "{report:#}");
}

#[tokio::test]
async fn load_publishes_batches_and_reports_a_json_line() {
    let server = Server::start().await;
    let report = load(&server, &["--events", "400", "--batch", "50"]).await;
    check_report(&report, 400);
    assert_eq!(report["mode"], "batch");
    assert_eq!(report["requests"], 8);
}

#[tokio::test]
async fn soak_mode_publishes_at_a_fixed_rate_and_samples_the_server() {
    // The short form of `scripts/soak.sh`: 200 events/s over 10 subscriptions for 6 s, a
    // sample every 2 s, 5 % of attempts failing. Every field of every sample must be read from
    // the real server process and journal, and nothing accepted may be missing at the end.
    let server = Server::start().await;
    let pid = server.child.id().to_string();
    let db = server.db.display().to_string();
    let args = [
        "load",
        "--rate",
        "200",
        "--subs",
        "10",
        "--duration",
        "6s",
        "--every",
        "2s",
        "--concurrency",
        "16",
        "--server-pid",
        &pid,
        "--journal",
        &db,
        "--drain-timeout",
        "60s",
    ];
    let run = cli(&server.url, Some(ADMIN), &args, None).await;
    let last = run.ok().lines().last().unwrap_or_default().to_owned();
    let report: Value = serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {run:#?}"));
    assert_eq!(report["mode"], "soak");
    let events = report["events"].as_u64().unwrap_or(0);
    // Open loop: 1,200 due; the debug build on a loaded machine may lag a little.
    assert!((1000..=1200).contains(&events), "{report:#}");
    assert_eq!(report["notReceived"], 0, "{report:#}");
    assert_eq!(report["received"], events, "{report:#}");
    assert!(report["failedAnswers"].as_u64() > Some(0), "{report:#}");
    let samples = report["samples"].as_array().cloned().unwrap_or_default();
    assert!(samples.len() >= 3, "{report:#}");
    for s in &samples {
        for k in ["rssMiB", "journalMiB"] {
            assert!(s[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {s:#}");
        }
        assert!(s["fds"].as_u64().is_some_and(|n| n > 3), "fds: {s:#}");
        assert!(s["walMiB"].as_f64().is_some(), "walMiB: {s:#}");
    }
    let last = samples.last().cloned().unwrap_or_default();
    assert_eq!(last["backlog"], 0, "drained: {report:#}");
    let p99 = report["p99Ms"].as_f64().unwrap_or(0.0);
    assert!(
        p99 > 0.0 && p99 >= report["p50Ms"].as_f64().unwrap_or(0.0),
        "{report:#}"
    );
}
