//! Dashboard benchmark: how long each `/ui` page takes with a large journal, and what the
//! per-minute attempt rollup (migration 0008) costs the delivery path.
//!
//! `cargo bench --bench ui -- [--quick] [--events N] [--subs N] [--rounds N]
//!  [--trigger-events N] [--trigger-rounds N] [--no-pages] [--no-trigger]`
//!
//! **Pages.** Builds a journal of `--events` (10,000) events fanned out to `--subs` (10)
//! subscriptions of one tenant (100,000 deliveries), delivered to a loopback receiver that
//! answers 200 except every 10th event of one subscription (404; that subscription uses
//! `onFailure: skip` so the others keep going), with an operator notification receiver
//! configured (as `hookline serve` with `[notifications]`), so that the attempt log, the
//! statistics, the failing list and the notifications (a `delivery.exhausted` per 404) are not
//! empty. Then it serves the API and the dashboard on loopback, signs in as the admin and
//! fetches each page `--rounds` (30) times over keep-alive HTTP, reporting the median and p95
//! time to the full body, the ratio of the median to `GET /healthz` measured the same way in the
//! same run (the HTTP round trip itself), and to the JSON API's nearest equivalent where there
//! is one (the same data without the page). The target of the dashboard issue is each page
//! under 100 ms at 100,000 deliveries.
//!
//! **Rollup trigger.** In the same run, `--trigger-rounds` (3) rounds of: two fresh journals,
//! one as migrated and one with the rollup's trigger dropped (`attempt_minutes_count`), each
//! with `--subs` paused subscriptions to a loopback 200 receiver: `--trigger-events` (5,000)
//! events published (ingest, events/s: the trigger is not on this path), then the
//! subscriptions resumed and timed until the receiver has every delivery (deliveries/s: every
//! attempt's record fires the trigger). The order of the two alternates between rounds. Then
//! the statement alone: the writer's outcome statement (an insert into `attempt_outcomes`, WAL,
//! `synchronous=NORMAL`) on the last round's two journals, in alternating blocks, µs per
//! outcome, one per commit (a lone busy subscription) and ten per commit (the writer's group
//! commit with several subscriptions delivering).
//!
//! `--quick`: 1,000 events, 5 rounds, 1,000 trigger events, 1 trigger round. The table goes to
//! stdout; the last stdout line is one JSON object with every figure.

#![allow(clippy::print_stdout, reason = "a benchmark's report is its stdout")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use hookline::notify::NotificationEndpoint;
use hookline::{
    Durability, Engine, EngineHandle, EventInput, FailurePolicy, NewSubscription, NewTenant,
    NotificationType, SubscriptionId,
};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-for-the-ui-benchmark-0123456789";
const TARGET_MS: f64 = 100.0;

struct Args {
    events: usize,
    subs: usize,
    rounds: usize,
    trigger_events: usize,
    trigger_rounds: usize,
    pages: bool,
    trigger: bool,
}

fn args() -> Args {
    let mut a = Args {
        events: 10_000,
        subs: 10,
        rounds: 30,
        trigger_events: 5_000,
        trigger_rounds: 3,
        pages: true,
        trigger: true,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--quick" => {
                a.events = 1_000;
                a.rounds = 5;
                a.trigger_events = 1_000;
                a.trigger_rounds = 1;
            }
            "--trigger-events" => a.trigger_events = next.unwrap_or(a.trigger_events),
            "--trigger-rounds" => a.trigger_rounds = next.unwrap_or(a.trigger_rounds),
            "--no-pages" => a.pages = false,
            "--no-trigger" => a.trigger = false,
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

/// Median and p95 of `rounds` fetches of `url` with the session `cookie`, in ms.
async fn time_page(client: &reqwest::Client, url: &str, cookie: &str, rounds: usize) -> (f64, f64) {
    time_page_with(client, url, ("cookie", cookie), rounds).await
}

/// Median and p95 of `rounds` fetches of `url` with `header`, in ms; panics unless each
/// answers 200.
async fn time_page_with(
    client: &reqwest::Client,
    url: &str,
    header: (&str, &str),
    rounds: usize,
) -> (f64, f64) {
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = client
            .get(url)
            .header(header.0, header.1)
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
    let mut report = serde_json::Map::new();
    report.insert("bench".into(), json!("ui"));
    if a.pages {
        report.insert("pages".into(), pages(&a).await);
    }
    if a.trigger {
        report.insert("rollup_trigger".into(), trigger_cost(&a).await);
    }
    println!("{}", Value::Object(report));
}

/// The admin's session cookie, signed in through the form as a browser would.
async fn sign_in(client: &reqwest::Client, base: &str) -> String {
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
    cookie_header(&jar)
}

/// Waits until no subscription of `subs` has a pending delivery.
async fn drained(engine: &EngineHandle, subs: &[SubscriptionId]) {
    loop {
        let mut open = 0;
        for s in subs {
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
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pages over a journal of `events` × `subs` deliveries.
async fn pages(a: &Args) -> Value {
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
    // The operator's notification receiver, as `hookline serve` sets it up from `[notifications]`:
    // every 404 of the failing subscription (onFailure: skip) notifies `delivery.exhausted`.
    engine
        .configure_notifications(&[NotificationEndpoint {
            url: format!("{base_rx}/ops"),
            secret: None,
        }])
        .await
        .expect("notification receiver");
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
    // Wait until every delivery is finished (the notifications' too), so the journal holds
    // its attempt log.
    drained(&engine, &subs).await;
    drained(
        &engine,
        &engine
            .notification_receivers()
            .await
            .expect("receivers")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
    )
    .await;
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
    let cookie = sign_in(&client, &base).await;
    let bearer = format!("Bearer {ADMIN}");
    let failing = &subs[0];
    let some_delivery = engine
        .list_deliveries(failing, Default::default())
        .await
        .expect("deliveries")
        .items[0]
        .id;
    // (name, page, the JSON API's nearest equivalent)
    let pages: Vec<(&str, String, Option<String>)> = vec![
        ("overview", "/ui/".into(), None),
        (
            "subscriptions",
            "/ui/subscriptions".into(),
            Some("/v1/subscriptions".into()),
        ),
        (
            "subscription",
            format!("/ui/subscriptions/{failing}"),
            Some(format!("/v1/subscriptions/{failing}/deliveries?limit=50")),
        ),
        (
            "subscription, failed only",
            format!("/ui/subscriptions/{failing}?status=failed"),
            Some(format!(
                "/v1/subscriptions/{failing}/deliveries?limit=50&status=failed"
            )),
        ),
        (
            "delivery",
            format!("/ui/deliveries/{some_delivery}"),
            Some(format!("/v1/deliveries/{some_delivery}")),
        ),
        (
            "find by transactionId",
            "/ui/find?q=tx-4242&tenant=acme".into(),
            Some("/v1/events?tenantId=acme&transactionId=tx-4242".into()),
        ),
        ("notifications", "/ui/notifications".into(), None),
        ("transforms", "/ui/transforms?tenant=acme".into(), None),
    ];
    println!(
        "ui benchmark: {} events × {} subscriptions = {deliveries} deliveries (filled and delivered in {fill_secs:.1} s), {} rounds per page",
        a.events, a.subs, a.rounds
    );
    let (health, health_p95) = time_page(&client, &format!("{base}/healthz"), "", a.rounds).await;
    let baseline = health.max(1e-3);
    println!(
        "{:<28} {:>10} {:>8} {:>10} | {:>10} {:>8}",
        "page", "median ms", "p95 ms", "× healthz", "JSON ms", "× JSON"
    );
    println!(
        "{:<28} {health:>10.2} {health_p95:>8.2} {:>10.1} |",
        "GET /healthz (baseline)", 1.0
    );
    let mut figures = serde_json::Map::new();
    figures.insert(
        "healthz".into(),
        json!({"median_ms": health, "p95_ms": health_p95}),
    );
    let mut worst: f64 = 0.0;
    for (name, path, api) in &pages {
        let (p50, p95) = time_page(&client, &format!("{base}{path}"), &cookie, a.rounds).await;
        worst = worst.max(p95);
        let json_ms = match api {
            Some(api) => Some(
                time_page_with(
                    &client,
                    &format!("{base}{api}"),
                    ("authorization", &bearer),
                    a.rounds,
                )
                .await
                .0,
            ),
            None => None,
        };
        println!(
            "{name:<28} {p50:>10.2} {p95:>8.2} {:>10.1} | {:>10} {:>8}",
            p50 / baseline,
            json_ms.map_or_else(|| "".into(), |j| format!("{j:.2}")),
            json_ms.map_or_else(|| "".into(), |j| format!("{:.1}", p50 / j.max(1e-3))),
        );
        figures.insert(
            (*name).to_owned(),
            json!({"median_ms": p50, "p95_ms": p95, "ratio_to_healthz": p50 / baseline,
                   "json_median_ms": json_ms,
                   "ratio_to_json": json_ms.map(|j| p50 / j.max(1e-3))}),
        );
    }
    println!(
        "slowest page p95: {worst:.1} ms (target: under {TARGET_MS} ms at 100,000 deliveries): {}",
        if worst < TARGET_MS { "met" } else { "NOT met" }
    );
    engine.shutdown().await;
    json!({
        "deliveries": deliveries,
        "fill_secs": fill_secs,
        "pages": figures,
        "slowest_p95_ms": worst,
    })
}

/// A receiver answering 200 to everything, counting the requests and saying when `target`
/// of them have arrived.
struct Counter {
    url: String,
    seen: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    reached: Arc<tokio::sync::Notify>,
}

async fn counting_receiver() -> Counter {
    let seen = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let reached = Arc::new(tokio::sync::Notify::new());
    let app = {
        let (seen, target, reached) = (seen.clone(), target.clone(), reached.clone());
        Router::new().fallback(move || {
            let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
            if n == target.load(Ordering::Relaxed) {
                reached.notify_one();
            }
            async { StatusCode::OK }
        })
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    Counter {
        url: format!("http://{addr}/hook"),
        seen,
        target,
        reached,
    }
}

/// One journal's run: ingest events/s (subscriptions paused) and drain deliveries/s.
async fn trigger_round(a: &Args, rx: &Counter, with_trigger: bool, db: &Path) -> (f64, f64) {
    let open = || async {
        Engine::builder()
            .path(db)
            .durability(Durability::Os)
            .allow_networks(vec!["127.0.0.0/8".parse().expect("cidr")])
            .build()
            .await
            .expect("engine")
    };
    let engine = open().await;
    engine
        .create_tenant(NewTenant {
            id: "acme".into(),
            name: "Acme".into(),
            rate_limit: None,
        })
        .await
        .expect("tenant");
    let mut subs = Vec::new();
    for _ in 0..a.subs {
        let id = engine
            .create_subscription(NewSubscription::new("acme", rx.url.clone()))
            .await
            .expect("subscription")
            .id;
        engine.pause_subscription(&id).await.expect("pause");
        subs.push(id);
    }
    // Both journals are closed and reopened, so they differ only by the trigger.
    engine.shutdown().await;
    if !with_trigger {
        let conn = rusqlite::Connection::open(db).expect("side connection");
        conn.execute_batch("DROP TRIGGER attempt_minutes_count")
            .expect("drop the rollup trigger");
    }
    let engine = open().await;
    let t = Instant::now();
    for chunk in (0..a.trigger_events).collect::<Vec<_>>().chunks(100) {
        let batch = chunk
            .iter()
            .map(|i| {
                EventInput::new("acme", format!("tx-{i}"), NotificationType::NodeEvent)
                    .id(format!("ev-{i}"))
                    .payload(json!({"n": i, "loan": {"id": 28907, "status": "PASSED"}}))
            })
            .collect();
        for r in engine.publish_batch(batch).await.expect("publish") {
            r.expect("accepted");
        }
    }
    let ingest = a.trigger_events as f64 / t.elapsed().as_secs_f64();
    let want = (a.trigger_events * a.subs) as u64;
    rx.seen.store(0, Ordering::Relaxed);
    rx.target.store(want, Ordering::Relaxed);
    let reached = rx.reached.notified();
    tokio::pin!(reached);
    reached.as_mut().enable();
    let t = Instant::now();
    for s in &subs {
        engine.resume_subscription(s).await.expect("resume");
    }
    tokio::time::timeout(Duration::from_secs(600), reached)
        .await
        .expect("every delivery within 10 minutes");
    let drain = want as f64 / t.elapsed().as_secs_f64();
    // The last outcomes are recorded just after their request was answered.
    drained(&engine, &subs).await;
    engine.shutdown().await;
    (ingest, drain)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// µs per outcome statement (the journal writer's, for a delivered attempt) over `ids`, attempt
/// number `round`, committed `per_commit` at a time (1: autocommit, as one busy subscription
/// alone gets; more: the writer's group commit when several subscriptions deliver at once).
fn outcome_statement_us(
    conn: &rusqlite::Connection,
    ids: &[i64],
    round: i64,
    per_commit: usize,
) -> f64 {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO attempt_outcomes (delivery_id, n, started_at, duration_ms, status_code, \
             error_kind, error, response_snippet, transform_log, new_state, budget_used, next_at, \
             updated_at, next_id, next_n, next_started_at) \
             VALUES (?1, ?2, ?3, 3, 200, NULL, NULL, NULL, NULL, 'delivered', 1, NULL, ?3, \
             NULL, NULL, NULL)",
        )
        .expect("prepare");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let t = Instant::now();
    for chunk in ids.chunks(per_commit) {
        if per_commit > 1 {
            conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        }
        for id in chunk {
            stmt.execute(rusqlite::params![id, round, now])
                .expect("outcome");
        }
        if per_commit > 1 {
            conn.execute_batch("COMMIT").expect("commit");
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64
}

/// The rollup trigger's cost on the delivery path, end to end and statement alone.
async fn trigger_cost(a: &Args) -> Value {
    let rx = counting_receiver().await;
    let (mut ingest_with, mut ingest_without, mut drain_with, mut drain_without) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..a.trigger_rounds {
        for k in 0..2 {
            let with = (round + k) % 2 == 0;
            let db = dir.path().join(format!("r{round}-{with}.db"));
            let (i, d) = trigger_round(a, &rx, with, &db).await;
            if with {
                ingest_with.push(i);
                drain_with.push(d);
            } else {
                ingest_without.push(i);
                drain_without.push(d);
            }
        }
    }
    let (iw, io, dw, dn) = (
        median(ingest_with),
        median(ingest_without),
        median(drain_with),
        median(drain_without),
    );
    println!(
        "rollup trigger, {} events × {} subscriptions, median of {} rounds each:",
        a.trigger_events, a.subs, a.trigger_rounds
    );
    println!(
        "  ingest (publish_batch(100), paused):  with {iw:>9.0} events/s   without {io:>9.0}   with/without {:.3}",
        iw / io
    );
    println!(
        "  drain (deliveries to a 200 receiver): with {dw:>9.0} deliveries/s without {dn:>9.0}   with/without {:.3}",
        dw / dn
    );
    // The statement alone, on the last round's two journals.
    let last = a.trigger_rounds - 1;
    let conns: Vec<rusqlite::Connection> = [true, false]
        .iter()
        .map(|with| {
            let c = rusqlite::Connection::open(dir.path().join(format!("r{last}-{with}.db")))
                .expect("open");
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
                .expect("pragmas");
            c
        })
        .collect();
    let ids: Vec<i64> = conns[0]
        .prepare("SELECT id FROM deliveries ORDER BY id LIMIT 2000")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("ids")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut statement = serde_json::Map::new();
    for (per_commit, first_round) in [(1, 100), (10, 200)] {
        let (mut us_with, mut us_without) = (Vec::new(), Vec::new());
        for block in 0..10 {
            for k in 0..2 {
                let with = (block + k) % 2 == 0;
                let us = outcome_statement_us(
                    &conns[usize::from(!with)],
                    &ids,
                    first_round + block as i64,
                    per_commit,
                );
                if with {
                    us_with.push(us);
                } else {
                    us_without.push(us);
                }
            }
        }
        let (sw, sn) = (median(us_with), median(us_without));
        println!(
            "  the outcome statement alone, {per_commit} per commit ({} per block, 10 blocks each): with {sw:.1} µs, without {sn:.1} µs, +{:.1} µs ({:+.0} %)",
            ids.len(),
            sw - sn,
            (sw / sn - 1.0) * 100.0
        );
        statement.insert(
            format!("per_commit_{per_commit}"),
            json!({"with_us": sw, "without_us": sn}),
        );
    }
    json!({
        "events": a.trigger_events,
        "subs": a.subs,
        "rounds": a.trigger_rounds,
        "ingest_events_per_s": {"with": iw, "without": io, "ratio": iw / io},
        "drain_deliveries_per_s": {"with": dw, "without": dn, "ratio": dw / dn},
        "outcome_statement": statement,
    })
}
