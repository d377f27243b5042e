//! Named crash points (`HOOKLINE_CRASH_AT`, feature `test-hooks`): for each point of
//! `hookline::crashpoint::POINTS`, the real binary is made to abort there [`HITS`] times,
//! restarted after each abort, while a producer publishes and a loopback receiver takes
//! deliveries (failing some). After every restart the journal passes `PRAGMA integrity_check`
//! and the receipts so far keep the rules: per subscription, first arrivals in publish order,
//! nothing skipped, and at most one duplicate per crash, always a repeat of the receipt just
//! before it (the head in flight at the crash). At the end every accepted event has arrived.
//!
//! `scripts/crash-campaign.sh` runs the same rounds at random points for as long as asked.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::crash::{
    ADMIN, Log, Server, free_port, integrity_ok, post_json, spawn_server_with, start_receiver,
    wait_healthy,
};

/// Aborts per crash point in CI; `HOOKLINE_CRASH_HITS` asks for more (the campaign script).
const HITS: usize = 20;
/// Subscriptions whose receipts are checked for order; `r` is replayed and only checked for loss.
const ORDERED: [&str; 2] = ["a", "b"];
const SIGABRT: i32 = 6;

fn hits_wanted() -> usize {
    std::env::var("HOOKLINE_CRASH_HITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(HITS)
}

/// Checks the receipts so far against the rules; returns the duplicates of each ordered
/// subscription.
fn check_receipts(log: &Log, crashes: usize) -> usize {
    let log = log.lock().expect("log").clone();
    let mut total = 0;
    for sub in ORDERED {
        let seq: Vec<u64> = log
            .iter()
            .filter(|(p, _)| p == sub)
            .map(|(_, n)| *n)
            .collect();
        if let Some(first) = seq.first() {
            assert_eq!(
                *first, 0,
                "subscription {sub}: first receipt is event {first}"
            );
        }
        let mut dups = 0;
        for w in seq.windows(2) {
            assert!(
                w[1] == w[0] || w[1] == w[0] + 1,
                "subscription {sub}: event {} arrived right after {} (reordered, skipped, or a \
                 duplicate that is not the head)",
                w[1],
                w[0]
            );
            dups += usize::from(w[1] == w[0]);
        }
        assert!(
            dups <= crashes,
            "subscription {sub}: {dups} duplicates for {crashes} crashes"
        );
        total += dups;
    }
    total
}

/// A transform upload that is new to the journal each time: the same component with a custom
/// section holding `n` appended (a component may carry custom sections anywhere at top level).
fn fresh_component(base: &[u8], n: u64) -> Vec<u8> {
    let name = b"hookline-crash-test";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = base.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits in one LEB128 byte
    out.extend_from_slice(&section);
    out
}

struct Rig {
    db: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    client: reqwest::Client,
    log: Log,
    key: String,
    replay_sub: String,
}

impl Rig {
    async fn start() -> (Rig, Server) {
        let log: Log = Arc::default();
        let receiver = start_receiver(log.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("points.db");
        let port = free_port();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let server = spawn_server_with(&db, port, &retention_env(), Stdio::null());
        wait_healthy(&client, &server.base).await;
        let base = server.base.clone();
        let (s, t) = post_json(
            &client,
            &format!("{base}/v1/tenants"),
            ADMIN,
            &json!({"id": "acme", "name": "Acme"}),
        )
        .await
        .expect("create tenant");
        assert_eq!(s, 201, "{t}");
        let key = t["apiKey"].as_str().expect("api key").to_owned();
        let mut replay_sub = String::new();
        for sub in ORDERED.iter().chain(["r"].iter()) {
            let body = json!({
                "url": format!("http://{receiver}/{sub}"),
                "retry": {"maxAttempts": 20, "backoffMs": [5, 20]},
                "timeoutMs": 2000
            });
            let (s, v) = post_json(&client, &format!("{base}/v1/subscriptions"), &key, &body)
                .await
                .expect("create subscription");
            assert_eq!(s, 201, "{v}");
            if *sub == "r" {
                replay_sub = v["id"].as_str().expect("subscription id").to_owned();
            }
        }
        let rig = Rig {
            db,
            dir,
            port,
            client,
            log,
            key,
            replay_sub,
        };
        (rig, server)
    }

    fn spawn(&self, crash_at: Option<String>) -> Server {
        let mut env = retention_env();
        if let Some(c) = crash_at {
            env.push(("HOOKLINE_CRASH_AT", c));
        }
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        spawn_server_with(&self.db, self.port, &env, stderr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Retention that prunes delivered events two seconds old, often: the `prune` point needs it,
/// and the others run beside it. Two seconds leave a producer's retry of an event whose 202 was
/// lost in a crash time to find it (idempotency) before it is pruned.
fn retention_env() -> Vec<(&'static str, String)> {
    vec![
        ("HOOKLINE_RETENTION__ENABLED", "true".into()),
        ("HOOKLINE_RETENTION__DELIVERED_AFTER", "2s".into()),
        ("HOOKLINE_RETENTION__INTERVAL", "200ms".into()),
    ]
}

/// Publishes events 0, 1, 2, … in order until stopped, each until accepted (an event whose 202
/// was lost in a crash is published again with the same id). Returns how many were accepted.
fn producer(rig: &Rig, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let (client, key, base) = (
        rig.client.clone(),
        rig.key.clone(),
        format!("http://127.0.0.1:{}", rig.port),
    );
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            let ev = json!({
                "id": format!("e{n:06}"),
                "transactionId": format!("tx{n}"),
                "notificationType": "TRANSACTION_EVENT",
                "payLoad": {"n": n},
                "timestamp": "2026-11-23T10:00:00Z"
            });
            loop {
                match post_json(&client, &format!("{base}/v1/events"), &key, &ev).await {
                    Ok((202, _)) => break,
                    Ok((s, v)) if s < 500 && s != 429 => {
                        panic!("event {n} refused with {s}: {v}")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        n
    })
}

/// What the points need besides publishing, run until stopped: replays of `r` (for
/// `replay`), transform uploads (for `transform.journal`, every `upload_every` rounds of 50 ms:
/// each upload compiles a component, which takes a while in a debug build).
fn side_load(
    rig: &Rig,
    points: &[&str],
    upload_every: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (client, key, base) = (
        rig.client.clone(),
        rig.key.clone(),
        format!("http://127.0.0.1:{}", rig.port),
    );
    let replay_url = format!("{base}/v1/subscriptions/{}/replay", rig.replay_sub);
    let replays = points.contains(&"replay");
    let uploads = points.contains(&"transform.journal");
    tokio::spawn(async move {
        let component = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("transforms/dist/drop-by-rule.wasm"),
        )
        .expect("read a transform component");
        let mut round = 0u64;
        while !stop.load(Ordering::Acquire) && (replays || uploads) {
            if replays {
                let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
                let since = since
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("format");
                let answer =
                    post_json(&client, &replay_url, &key, &json!({ "since": since })).await;
                if let Ok(mut last) = LAST_SIDE_ANSWER.lock() {
                    *last = format!("{answer:?}");
                }
            }
            if uploads && round.is_multiple_of(upload_every) {
                let answer = client
                    .put(format!("{base}/v1/tenants/acme/transforms/t{}", round % 3))
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", "application/wasm")
                    .body(fresh_component(&component, round))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if let Ok(mut last) = LAST_SIDE_ANSWER.lock() {
                    *last = format!("upload: {answer:?}");
                }
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The side load's last answer, for a failure's message.
static LAST_SIDE_ANSWER: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// What a run did.
#[derive(Debug, Default)]
struct Figures {
    /// Aborts at each crash point.
    aborts: std::collections::BTreeMap<String, usize>,
    /// `kill -9`s (at random moments, or to restart a server).
    kills: usize,
    accepted: u64,
    duplicates: usize,
}

/// Runs `rounds` crashes: round `i` aborts at `pick(i)` (a crash point, reached the
/// `nth`..=3rd time), or, for `None`, `kill -9`s the server at a random moment. After every
/// crash it checks the journal's integrity and the receipts so far, restarts, and at the end
/// waits for every accepted event at every subscription.
async fn crash_rounds(
    label: &str,
    rounds: usize,
    points: &[&str],
    upload_every: u64,
    pick: impl Fn(usize) -> Option<&'static str>,
) -> Figures {
    let started = Instant::now();
    let (rig, server) = Rig::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let produced = producer(&rig, stop.clone());
    let side = side_load(&rig, points, upload_every, stop.clone());
    let mut fig = Figures::default();
    let mut running = Some(server);
    for round in 0..rounds {
        let Some(point) = pick(round) else {
            let mut s = match running.take() {
                Some(s) => s,
                None => {
                    let s = rig.spawn(None);
                    wait_healthy(&rig.client, &s.base).await;
                    s
                }
            };
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(50..400))).await;
            let _ = s.child.kill();
            let _ = s.child.wait();
            fig.kills += 1;
            assert_eq!(
                integrity_ok(&rig.db).await,
                "ok",
                "journal corrupt after a kill"
            );
            fig.duplicates =
                check_receipts(&rig.log, fig.kills + fig.aborts.values().sum::<usize>());
            continue;
        };
        if let Some(mut s) = running.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
            fig.kills += 1;
        }
        // Recovery runs once per start: it aborts at the first. Elsewhere the point is reached
        // a few times before the abort, so the process does some work first.
        let nth = if point == "recovery" {
            1
        } else {
            rand::rng().random_range(1..=3)
        };
        let mut armed = rig.spawn(Some(format!("{point}:{nth}")));
        // An upload compiles its component first: about 7 s each in a debug build at load 10,
        // and the point may want the third.
        let within = if point == "transform.journal" {
            Duration::from_secs(180)
        } else {
            Duration::from_secs(60)
        };
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = armed.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = armed.child.kill();
                let tail: String = rig
                    .stderr()
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "{label}: crash point {point} not reached within {within:?} (round {round}); last \
                     side-load answer: {}; stderr tail:\n{tail}",
                    LAST_SIDE_ANSWER
                        .lock()
                        .map(|l| l.clone())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            status.signal(),
            Some(SIGABRT),
            "crash point {point}: the server ended otherwise ({status}); stderr:\n{}",
            rig.stderr()
        );
        assert!(
            rig.stderr()
                .contains(&format!("crash point {point} reached")),
            "{}",
            rig.stderr()
        );
        *fig.aborts.entry(point.to_owned()).or_default() += 1;
        assert_eq!(
            integrity_ok(&rig.db).await,
            "ok",
            "journal corrupt after an abort at {point} (round {round})"
        );
        fig.duplicates = check_receipts(&rig.log, fig.kills + fig.aborts.values().sum::<usize>());
        if point == "recovery" {
            // Deliveries in flight again, for the next recovery to reset.
            let s = rig.spawn(None);
            wait_healthy(&rig.client, &s.base).await;
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..300))).await;
            running = Some(s);
        }
    }
    let mut server = match running {
        Some(s) => s,
        None => {
            let s = rig.spawn(None);
            wait_healthy(&rig.client, &s.base).await;
            s
        }
    };
    stop.store(true, Ordering::Release);
    let accepted = produced.await.expect("producer");
    let _ = side.await;
    // Everything accepted arrives at every subscription.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<(String, usize)> = {
            let log = rig.log.lock().expect("log");
            ORDERED
                .iter()
                .chain(["r"].iter())
                .map(|s| {
                    let got = log
                        .iter()
                        .filter(|(p, n)| p == s && *n < accepted)
                        .map(|(_, n)| *n)
                        .collect::<BTreeSet<_>>()
                        .len();
                    (s.to_string(), accepted as usize - got)
                })
                .filter(|(_, m)| *m > 0)
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: not delivered after the last restart: {missing:?} of {accepted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    fig.kills += 1;
    assert_eq!(integrity_ok(&rig.db).await, "ok");
    fig.duplicates = check_receipts(&rig.log, fig.kills + fig.aborts.values().sum::<usize>());
    fig.accepted = accepted;
    eprintln!(
        "{label}: {} aborts {:?}, {} kills, {accepted} events x {} subscriptions, {} duplicate \
         receipts (ordered subscriptions), {:.1} s",
        fig.aborts.values().sum::<usize>(),
        fig.aborts,
        fig.kills,
        ORDERED.len() + 1,
        fig.duplicates,
        started.elapsed().as_secs_f64()
    );
    fig
}

/// [`hits_wanted`] aborts at `point`.
async fn crash_at(point: &'static str) -> usize {
    let wanted = hits_wanted();
    // One upload per round at the transform point: each one is journaled, so each round
    // reaches it.
    let fig = crash_rounds(&format!("crash point {point}"), wanted, &[point], 1, |_| {
        Some(point)
    })
    .await;
    fig.aborts.get(point).copied().unwrap_or(0)
}

/// The long campaign (`scripts/crash-campaign.sh`): `HOOKLINE_CAMPAIGN_CRASHES` crashes
/// (default 200), each at a random crash point or a `kill -9` at a random moment, with every
/// side load on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by scripts/crash-campaign.sh"]
async fn crash_campaign() {
    let crashes = std::env::var("HOOKLINE_CAMPAIGN_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let names: Vec<&'static str> = hookline::crashpoint::POINTS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let fig = crash_rounds("crash campaign", crashes, &names, 20, |_| {
        let i = rand::rng().random_range(0..=names.len());
        names.get(i).copied()
    })
    .await;
    assert!(fig.kills + fig.aborts.values().sum::<usize>() >= crashes);
}

macro_rules! crash_point_tests {
    ($($test:ident: $point:literal,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                assert!(crash_at($point).await >= hits_wanted());
            }
        )*

        #[test]
        fn every_crash_point_has_its_test() {
            let tested = [$($point),*];
            for (name, _) in hookline::crashpoint::POINTS {
                assert!(tested.contains(name), "crash point {name} has no test");
            }
        }
    };
}

crash_point_tests! {
    crash_after_a_2xx_before_its_commit: "attempt.after_2xx",
    crash_inside_a_group_commit: "commit.mid_batch",
    crash_during_a_checkpoint: "checkpoint",
    crash_during_recovery: "recovery",
    crash_while_a_transform_upload_is_journaled: "transform.journal",
    crash_during_a_replay: "replay",
    crash_during_a_retention_prune: "prune",
}

/// A panic in the journal writer (here inside a group commit) ends the process with a
/// non-zero exit code instead of leaving it up answering `503 shutting_down` for ever; the
/// next start recovers everything accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_journal_writer_ends_the_process() {
    let (rig, mut server) = Rig::start().await;
    let _ = server.child.kill();
    let _ = server.child.wait();
    server = rig.spawn(Some("commit.mid_batch:1:panic".into()));
    wait_healthy(&rig.client, &server.base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let produced = producer(&rig, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server stayed up after its journal writer panicked; stderr:\n{}",
            rig.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        status.code(),
        Some(70),
        "{status}; stderr:\n{}",
        rig.stderr()
    );
    assert!(
        rig.stderr()
            .contains("the journal writer stopped unexpectedly"),
        "{}",
        rig.stderr()
    );
    server = rig.spawn(None);
    wait_healthy(&rig.client, &server.base).await;
    stop.store(true, Ordering::Release);
    let accepted = produced.await.expect("producer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig
        .log
        .lock()
        .expect("log")
        .iter()
        .filter(|(p, _)| p == "a")
        .map(|(_, n)| *n)
        .collect::<BTreeSet<_>>()
        .len()
        < accepted as usize
    {
        assert!(
            Instant::now() < deadline,
            "not everything accepted was delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_receipts(&rig.log, 1);
    let _ = server.child.kill();
    let _ = server.child.wait();
}
