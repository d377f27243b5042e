//! The dashboard end to end in a real browser: the real `hookline serve` binary, a loopback
//! receiver, and headless Chromium driven by `tests/browser/dashboard.mjs` (playwright-core,
//! pinned in `tests/browser/package.json`).
//!
//! This test needs three things outside Rust: Node (20+), Debian's `chromium` at
//! `/usr/bin/chromium`, and `npm ci` run in `tests/browser`. Without them it says so loudly and
//! passes as skipped, so that `cargo test` runs anywhere; with `HOOKLINE_REQUIRE_EXTERNAL=1`
//! (set by `.ci/run`, which installs all three) a missing one fails the test instead.
//! Screenshots of every page the script visits land in `target/ui-shots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Receiver, Reply, eventually};

const ADMIN: &str = "admin-key-for-the-browser-test-0123456789";
const ACCESS_KEY: &str = "browser-test-access-key-4e1d";
const CHROMIUM: &str = "/usr/bin/chromium";
const EVENTS: usize = 5;
/// The operator's notification receiver's signing secret (`[notifications]`).
const OPS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing to run the browser test, if anything.
fn missing_prerequisite() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    if node.is_none() {
        return Some("node (20+) is not on PATH".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is missing (apt-get install -y chromium)"
        ));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci --prefix tests/browser)".into());
    }
    None
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn call(client: &reqwest::Client, key: &str, path: &str, url: &str, body: Value) -> Value {
    let r = client
        .post(format!("{url}{path}"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("API call");
    let status = r.status();
    let text = r.text().await.expect("API body");
    assert!(status.is_success(), "POST {path}: {status} {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() {
    if let Some(what) = missing_prerequisite() {
        let required = std::env::var("HOOKLINE_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "browser test: {what}, and HOOKLINE_REQUIRE_EXTERNAL=1"
        );
        eprintln!(
            "\n==== SKIPPED the_dashboard_in_a_real_browser: {what}. ====\n\
             ==== Install Node 20+, Debian chromium and `npm ci --prefix tests/browser` to run it. ====\n"
        );
        return;
    }
    // The first attempt of the first event gets 404: the subscription blocks on it.
    let receiver = Receiver::with(|r| {
        if r.webhook_id() == "e2e-0" && r.nth_for_id == 1 {
            Reply::status(404)
        } else {
            Reply::ok()
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let ops_url = receiver.url("/ops");
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .arg("serve")
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_DB", dir.path().join("journal.db"))
            .env("HOOKLINE_ADMIN_KEY", ADMIN)
            .env("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8")
            // Operational notifications to the same receiver: the system tenant `_hookline`
            // has a subscription, as in production.
            .env("HOOKLINE_NOTIFICATIONS__URLS", &ops_url)
            .env("HOOKLINE_NOTIFICATIONS__SECRET", OPS_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hookline"),
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually("hookline to be ready", Duration::from_secs(20), || async {
        let r = client.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let acme = call(
        &client,
        ADMIN,
        "/v1/tenants",
        &base,
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    let globex = call(
        &client,
        ADMIN,
        "/v1/tenants",
        &base,
        json!({"id": "globex", "name": "Globex"}),
    )
    .await;
    let acme_key = acme["apiKey"].as_str().unwrap().to_owned();
    let sub_url = receiver.url("/acme/hooks");
    let sub = call(
        &client,
        &acme_key,
        "/v1/subscriptions",
        &base,
        json!({"url": sub_url, "accessKey": ACCESS_KEY, "retry": {"maxAttempts": 2, "backoffMs": [10]}}),
    )
    .await;
    let other = call(
        &client,
        globex["apiKey"].as_str().unwrap(),
        "/v1/subscriptions",
        &base,
        json!({"url": receiver.url("/globex/hooks")}),
    )
    .await;
    for i in 0..EVENTS {
        call(
            &client,
            &acme_key,
            "/v1/events",
            &base,
            json!({"id": format!("e2e-{i}"), "transactionId": format!("tx-{i}"),
                   "notificationType": "NODE_EVENT", "payLoad": {"n": i},
                   "timestamp": "2026-12-02T10:00:00Z"}),
        )
        .await;
    }
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    eventually(
        "the subscription to block on the 404",
        Duration::from_secs(10),
        || async {
            let r = client
                .get(format!("{base}/v1/subscriptions/{sub_id}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .ok()?;
            let v: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            (v["state"] == "blocked").then_some(())
        },
    )
    .await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/")
        .join("ui-shots");
    let profile = tempfile::tempdir().expect("a fresh browser profile");
    let secrets = json!([
        ADMIN,
        acme_key,
        globex["apiKey"],
        ACCESS_KEY,
        OPS_SECRET,
        OPS_SECRET.trim_start_matches("whsec_"),
        sub["secret"],
        other["secret"]
    ]);
    let out = tokio::task::spawn_blocking({
        let (base, sub_id, shots) = (base.clone(), sub_id.clone(), shots.clone());
        let profile = profile.path().to_owned();
        move || {
            Command::new("node")
                .arg("dashboard.mjs")
                .current_dir(browser_dir())
                .env("BASE", base)
                .env("ADMIN_KEY", ADMIN)
                .env("TENANT_KEY", acme_key)
                .env("SUB_URL", sub_url)
                .env("OPS_URL", ops_url)
                .env("SUB_ID", sub_id)
                .env("OTHER_SUB_ID", other["id"].as_str().unwrap())
                .env("EVENTS", EVENTS.to_string())
                .env("SECRETS", secrets.to_string())
                .env("SHOTS", shots)
                .env("USER_DATA_DIR", profile)
                .env("CHROMIUM", CHROMIUM)
                .output()
                .expect("run node")
        }
    })
    .await
    .expect("the browser script's task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the browser script failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    // What the browser saw, the receiver confirms: every event once 2xx, in order.
    let want: Vec<String> = (0..EVENTS).map(|i| format!("e2e-{i}")).collect();
    receiver
        .wait_delivered_at("/acme/hooks", &want, Duration::from_secs(10))
        .await;
    assert_eq!(receiver.delivered_ids_at("/acme/hooks"), want);
    for name in [
        "login",
        "overview",
        "subscriptions",
        "subscription-blocked",
        "delivery",
        "notifications",
        "system-receiver",
        "tenant-notifications",
        "transforms",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
}
