//! Dashboard benchmark: how long each `/ui` page takes with a large journal.
//!
//! `cargo bench --bench ui -- [--quick] [--events N] [--subs N] [--rounds N]`
//!
//! Builds a journal of `--events` (10,000) events fanned out to `--subs` (10) subscriptions of one
//! tenant (100,000 deliveries), delivered to a loopback receiver that answers 200 except every
//! 10th event of one subscription (404; that subscription uses `onFailure: skip` so the others
//! keep going), so that the attempt log, the statistics and the failing list are not empty. Then
//! it serves the API and the dashboard on loopback, signs in as the admin and fetches each page
//! `--rounds` (30) times over keep-alive HTTP, reporting the median and p95 time to the full
//! body, and the ratio of the median to `GET /healthz` measured the same way in the same run
//! (the cost of the HTTP round trip itself). The target of the dashboard issue is each page
//! under 100 ms at 100,000 deliveries. `--quick`: 1,000 events, 5 rounds.
//!
//! The table goes to stdout; the last stdout line is one JSON object with every figure.

#![allow(clippy::print_stdout, reason = "a benchmark's report is its stdout")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use hookline::{
    Durability, Engine, EventInput, FailurePolicy, NewSubscription, NewTenant, NotificationType,
    SubscriptionId,
};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-for-the-ui-benchmark-0123456789";
const TARGET_MS: f64 = 100.0;

struct Args {
    events: usize,
    subs: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        events: 10_000,
        subs: 10,
        rounds: 30,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--quick" => {
                a.events = 1_000;
                a.rounds = 5;
            }
            "--events" => a.events = next.unwrap_or(a.events),
            "--subs" => a.subs = next.unwrap_or(a.subs),
            "--rounds" => a.rounds = next.unwrap_or(a.rounds),
            _ => {}
        }
        i += 1;
    }
    a
}

/// A receiver answering 200, or 404 to the events whose id ends in `-fail` on `/failing`.
async fn receiver() -> String {
    let app = Router::new().fallback(|req: axum::extract::Request| async move {
        let failing = req.uri().path() == "/failing"
            && req
                .headers()
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|id| id.ends_with("-fail"));
        if failing {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// The cookies of a response's `Set-Cookie` headers, added to `jar`.
fn keep_cookies(jar: &mut HashMap<String, String>, r: &reqwest::Response) {
    for c in r.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap_or_default();
        if let Some((k, v)) = c.split(';').next().and_then(|kv| kv.split_once('=')) {
            jar.insert(k.to_owned(), v.to_owned());
        }
    }
}

fn cookie_header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Median and p95 of `rounds` fetches of `url`, in ms; panics unless each answers 200.
async fn time_page(client: &reqwest::Client, url: &str, cookie: &str, rounds: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = client
            .get(url)
            .header("cookie", cookie)
            .send()
            .await
            .expect("GET");
        let status = r.status();
        let body = r.bytes().await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.95))
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::builder()
        .path(dir.path().join("ui-bench.db"))
        .durability(Durability::Os)
        .allow_networks(vec!["127.0.0.0/8".parse().expect("cidr")])
        .build()
        .await
        .expect("engine");
    engine.ensure_admin_key(Some(ADMIN)).await.expect("admin");
    engine
        .create_tenant(NewTenant {
            id: "acme".into(),
            name: "Acme".into(),
            rate_limit: None,
        })
        .await
        .expect("tenant");
    let base_rx = receiver().await;
    let mut subs: Vec<SubscriptionId> = Vec::new();
    for i in 0..a.subs {
        let path = if i == 0 {
            "/failing".to_owned()
        } else {
            format!("/ok/{i}")
        };
        let mut n = NewSubscription::new("acme", format!("{base_rx}{path}"));
        n.on_failure = Some(FailurePolicy::Skip);
        subs.push(
            engine
                .create_subscription(n)
                .await
                .expect("subscription")
                .id,
        );
    }
    let built = Instant::now();
    for chunk in (0..a.events).collect::<Vec<_>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|i| {
                let id = if i % 10 == 0 {
                    format!("ev-{i}-fail")
                } else {
                    format!("ev-{i}")
                };
                EventInput::new("acme", format!("tx-{i}"), NotificationType::NodeEvent)
                    .id(id)
                    .payload(json!({"n": i, "loan": {"id": 28907, "status": "PASSED"}}))
            })
            .collect();
        for r in engine.publish_batch(batch).await.expect("publish") {
            r.expect("accepted");
        }
    }
    let deliveries = a.events * a.subs;
    // Wait until every delivery is finished, so the journal holds its attempt log.
    loop {
        let mut open = 0;
        for s in &subs {
            let page = engine
                .list_deliveries(
                    s,
                    hookline::DeliveryQuery {
                        status: Some(hookline::DeliveryStatus::Pending),
                        limit: Some(1),
                        after: None,
                    },
                )
                .await
                .expect("list");
            open += page.items.len();
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fill_secs = built.elapsed().as_secs_f64();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(hookline::api::serve(
        listener,
        engine.clone(),
        std::future::pending(),
    ));
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // Sign in through the form, as a browser would.
    let mut jar = HashMap::new();
    let form = client
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("login page");
    keep_cookies(&mut jar, &form);
    let html = form.text().await.expect("login html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_owned();
    let r = client
        .post(format!("{base}/ui/login"))
        .header("cookie", cookie_header(&jar))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={ADMIN}&csrf={csrf}&next=%2Fui%2F"))
        .send()
        .await
        .expect("sign in");
    keep_cookies(&mut jar, &r);
    let cookie = cookie_header(&jar);
    let failing = &subs[0];
    let some_delivery = engine
        .list_deliveries(failing, Default::default())
        .await
        .expect("deliveries")
        .items[0]
        .id;
    let pages: Vec<(&str, String)> = vec![
        ("healthz (baseline)", "/healthz".into()),
        ("overview", "/ui/".into()),
        ("subscriptions", "/ui/subscriptions".into()),
        ("subscription", format!("/ui/subscriptions/{failing}")),
        (
            "subscription, failed only",
            format!("/ui/subscriptions/{failing}?status=failed"),
        ),
        ("delivery", format!("/ui/deliveries/{some_delivery}")),
        (
            "find by transactionId",
            "/ui/find?q=tx-4242&tenant=acme".into(),
        ),
        ("transforms", "/ui/transforms?tenant=acme".into()),
    ];
    println!(
        "ui benchmark: {} events × {} subscriptions = {deliveries} deliveries (filled and delivered in {fill_secs:.1} s), {} rounds per page",
        a.events, a.subs, a.rounds
    );
    println!(
        "{:<28} {:>10} {:>10} {:>12}",
        "page", "median ms", "p95 ms", "× healthz"
    );
    let mut figures = serde_json::Map::new();
    let mut baseline = 0.0;
    let mut worst: f64 = 0.0;
    for (name, path) in &pages {
        let (p50, p95) = time_page(&client, &format!("{base}{path}"), &cookie, a.rounds).await;
        if baseline == 0.0 {
            baseline = p50.max(1e-3);
        } else {
            worst = worst.max(p95);
        }
        println!(
            "{name:<28} {p50:>10.2} {p95:>10.2} {:>12.1}",
            p50 / baseline
        );
        figures.insert(
            (*name).to_owned(),
            json!({"median_ms": p50, "p95_ms": p95, "ratio_to_healthz": p50 / baseline}),
        );
    }
    println!(
        "slowest page p95: {worst:.1} ms (target: under {TARGET_MS} ms at 100,000 deliveries): {}",
        if worst < TARGET_MS { "met" } else { "NOT met" }
    );
    let report: Value = json!({
        "bench": "ui",
        "deliveries": deliveries,
        "pages": figures,
        "slowest_p95_ms": worst,
    });
    println!("{report}");
    engine.shutdown().await;
}
