//! Tenant transforms end to end: real components from `transforms/dist/` (built from the
//! sources in `transforms/` and committed), a real wasmtime, real SQLite, real receivers.
//!
//! Defends: the upload/list/test/delete API and its refusals; that a bound transform rewrites
//! what is signed and sent; that drops keep the order of what is sent; that hostile guests
//! fail only their own deliveries; that one tenant cannot bind another's transform; and that a
//! restart loads the stored precompiled artifact instead of compiling again.

use std::path::PathBuf;
use std::time::Duration;

use hookline::transform::TransformLimits;
use hookline::{
    DeliveryStatus, Error, FailurePolicy, NewSubscription, SubscriptionPatch, TransformRef,
};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::support::{Receiver, TENANT, TestEngine, WITHIN, event, eventually};

fn wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("transforms/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bound(name: &str, version: u32) -> Option<TransformRef> {
    Some(TransformRef {
        name: name.into(),
        version,
    })
}

/// An envelope carrying personal fields the mask-pii example masks.
fn personal(id: &str) -> Value {
    json!({
        "id": id,
        "transactionId": format!("tx-{id}"),
        "notificationType": "NODE_EVENT",
        "payLoad": {"node": {"input": [
            {"name": "idNumber", "value": "110101199003070102"},
            {"name": "mobile", "value": "13800138000"}
        ]}},
        "timestamp": "2022-08-12T10:12:16.827Z"
    })
}

async fn upload(api: &Api, key: &str, tenant: &str, name: &str, body: Vec<u8>) -> crate::api::Resp {
    let rb = api
        .request(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/transforms/{name}"),
            Some(key),
        )
        .header("content-type", "application/wasm")
        .body(body);
    api.send(rb).await
}

/// Sends an upload's head declaring `len` bytes, and returns the status line of the answer.
async fn too_large_upload(base: &str, key: &str, len: usize) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /v1/tenants/acme/transforms/huge HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {key}\r\ncontent-type: application/wasm\r\n\
         content-length: {len}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .await
        .expect("status line");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_round_trip_through_the_api() {
    let api = Api::start().await;
    let rx = Receiver::start().await;
    let key = api.tenant("acme").await;
    let other = api.tenant("globex").await;

    // Upload: a new version, the same bytes again, a second version.
    let mask = wasm("mask-pii");
    let r = upload(&api, &key, "acme", "pii", mask.clone()).await;
    let v1 = r.ok(201).clone();
    assert_eq!(v1["name"], "pii");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["sha256"], hex::encode(Sha256::digest(&mask)));
    assert_eq!(v1["sizeBytes"], mask.len() as u64);
    let again = upload(&api, &key, "acme", "pii", mask.clone()).await;
    assert_eq!(again.ok(200)["version"], 1, "same bytes, same version");
    let v2 = upload(&api, &key, "acme", "pii", wasm("to-xml")).await;
    assert_eq!(v2.ok(201)["version"], 2);

    // Refusals: not a component, wrong content type, another tenant's path, too large.
    let bad = upload(&api, &key, "acme", "junk", b"\0asm not really".to_vec()).await;
    let err = bad.error(422, "invalid");
    assert_eq!(err["field"], "module", "{}", bad.text);
    let core = upload(&api, &key, "acme", "junk", b"\0asm\x01\0\0\0".to_vec()).await;
    assert!(
        core.error(422, "invalid")["message"]
            .as_str()
            .is_some_and(|m| m.contains("component")),
        "a core module is refused saying it is not a component: {}",
        core.text
    );
    let rb = api
        .request(Method::PUT, "/v1/tenants/acme/transforms/pii", Some(&key))
        .header("content-type", "application/json")
        .body(mask.clone());
    api.send(rb).await.error(415, "unsupported_media_type");
    upload(&api, &other, "acme", "pii", mask.clone())
        .await
        .error(404, "not_found");
    // Declared too large: refused before any of the body is read (a client streaming it all
    // would see the connection closed under it, so the head is sent alone).
    let status =
        too_large_upload(&api.base, &key, TransformLimits::default().module_bytes + 1).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let bad_name = upload(&api, &key, "acme", "Bad%20Name", mask.clone()).await;
    assert_eq!(bad_name.error(422, "invalid")["field"], "name");

    // List and show.
    let list = api.get("/v1/tenants/acme/transforms", &key).await;
    let list = list.ok(200).as_array().expect("a list").clone();
    assert_eq!(list.len(), 1, "refused uploads stored nothing: {list:?}");
    assert_eq!(list[0]["versions"].as_array().map(Vec::len), Some(2));
    api.get("/v1/tenants/acme/transforms/pii", &other)
        .await
        .error(404, "not_found");

    // Test a version without sending anything.
    let t1 = api
        .post(
            "/v1/tenants/acme/transforms/pii/versions/1/test",
            &key,
            &personal("t-1"),
        )
        .await;
    let t1 = t1.ok(200);
    assert_eq!(t1["action"], "deliver");
    let body = t1["body"].as_str().expect("a text body");
    assert!(
        !body.contains("110101199003070102") && body.contains("02"),
        "idNumber masked: {body}"
    );
    let t2 = api
        .post(
            "/v1/tenants/acme/transforms/pii/versions/2/test",
            &key,
            &personal("t-2"),
        )
        .await;
    let t2 = t2.ok(200);
    let ct = t2["headers"]
        .as_array()
        .and_then(|h| h.iter().find(|p| p[0] == "content-type"))
        .cloned();
    assert_eq!(ct, Some(json!(["content-type", "application/xml"])), "{t2}");
    assert!(rx.requests().is_empty(), "a test sends nothing");
    api.post(
        "/v1/tenants/acme/transforms/pii/versions/9/test",
        &key,
        &personal("t-3"),
    )
    .await
    .error(404, "not_found");

    // Bind version 1: the receiver gets the masked body, signed as sent.
    let sub = api
        .subscribe(
            &key,
            json!({"url": rx.url("/masked"), "transform": {"name": "pii", "version": 1}}),
        )
        .await;
    assert_eq!(sub["transform"], json!({"name": "pii", "version": 1}));
    let sub_id = sub["id"].as_str().expect("id").to_string();
    api.publish(&key, personal("e-1")).await;
    let got = rx
        .wait_for("the masked delivery", WITHIN, |reqs| !reqs.is_empty())
        .await;
    let sent = String::from_utf8_lossy(&got[0].body).into_owned();
    assert!(!sent.contains("110101199003070102"), "masked: {sent}");
    assert_eq!(got[0].header("x-pii-masked"), Some("2"));
    assert_eq!(got[0].webhook_id(), "e-1");
    assert!(got[0].header("webhook-signature").is_some());
    api.delivery_of(&sub_id, "e-1", "delivered").await;

    // A bound transform cannot be deleted; unbound, it can.
    api.delete("/v1/tenants/acme/transforms/pii", &key)
        .await
        .error(409, "conflict");
    api.patch(
        &format!("/v1/subscriptions/{sub_id}"),
        &key,
        &json!({"transform": null}),
    )
    .await
    .ok(200);
    let r = api.delete("/v1/tenants/acme/transforms/pii", &key).await;
    assert_eq!(r.status, 204, "{}", r.text);
    api.get("/v1/tenants/acme/transforms/pii", &key)
        .await
        .error(404, "not_found");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_bind_another_tenants_transform() {
    let h = TestEngine::start().await;
    h.add_tenant("globex").await;
    let rx = Receiver::start().await;
    let (v, created) = h
        .upload_transform(&TENANT.into(), "pii", wasm("mask-pii"))
        .await
        .expect("upload");
    assert!(created);
    let mut theirs = NewSubscription::new("globex", rx.url("/g"));
    theirs.transform = bound("pii", v.version);
    let err = h.create_subscription(theirs).await.expect_err("refused");
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "transform"),
        "{err:?}"
    );
    // Nor through an update.
    let plain = h
        .subscribe(NewSubscription::new("globex", rx.url("/g")))
        .await;
    let patch = SubscriptionPatch {
        transform: Some(bound("pii", v.version)),
        ..Default::default()
    };
    let err = h
        .update_subscription(&plain.id, patch)
        .await
        .expect_err("refused");
    assert!(matches!(&err, Error::Invalid { field, .. } if field == "transform"));
    // Nor test or delete it.
    assert!(matches!(
        h.delete_transform(&"globex".into(), "pii").await,
        Err(Error::NotFound { .. })
    ));
    assert!(h.get_transform(&TENANT.into(), "pii").await.is_ok());
    // The owner can bind it, and a version that does not exist is refused.
    let mut mine = NewSubscription::new(TENANT, rx.url("/a"));
    mine.transform = bound("pii", 2);
    assert!(h.create_subscription(mine.clone()).await.is_err());
    mine.transform = bound("pii", 1);
    h.subscribe(mine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_end_as_dropped_and_keep_the_order_of_what_is_sent() {
    let h = TestEngine::start().await;
    let rx = Receiver::start().await;
    h.upload_transform(&TENANT.into(), "rule", wasm("drop-by-rule"))
        .await
        .expect("upload");
    let mut n = NewSubscription::new(TENANT, rx.url("/rule"));
    n.transform = bound("rule", 1);
    let sub = h.subscribe(n).await;
    let mut sent = Vec::new();
    let mut dropped = Vec::new();
    for i in 0..30 {
        let id = format!("r-{i:02}");
        let skip = i % 3 == 1;
        let e = event(&id).payload(json!({"i": i, "skip": skip}));
        h.publish(e).await.expect("publish");
        if skip {
            dropped.push(id)
        } else {
            sent.push(id)
        }
    }
    rx.wait_delivered_at("/rule", &sent, WITHIN).await;
    assert_eq!(
        rx.delivered_ids_at("/rule"),
        sent,
        "exactly the kept events, in order"
    );
    for id in &dropped {
        let d = h.wait_status(&sub.id, id, DeliveryStatus::Dropped).await;
        assert_eq!(d.attempt_log.len(), 1);
        assert_eq!(d.attempt_log[0].error_kind.as_deref(), Some("dropped"));
        assert!(
            d.attempt_log[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("skip")),
            "the reason is kept: {:?}",
            d.attempt_log[0]
        );
    }
    assert!(
        rx.requests()
            .iter()
            .all(|r| !dropped.contains(&r.webhook_id().to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transforms_fail_only_their_own_deliveries() {
    // A CPU limit generous enough for the memory bomb to hit its memory limit first on a
    // loaded machine; the infinite loop still ends at the deadline.
    let limits = TransformLimits {
        cpu: Duration::from_secs(2),
        ..TransformLimits::default()
    };
    let h = TestEngine::start_with(|b| b.transform_limits(limits)).await;
    let rx = Receiver::start().await;
    let evil = [
        ("evil-loop", "transform_timeout"),
        ("evil-memory", "transform_memory_limit"),
        ("evil-recursion", "transform_trap"),
        ("evil-output", "transform_output_too_large"),
        ("evil-trap", "transform_trap"),
        ("evil-header", "transform_forbidden_header"),
        ("evil-error", "transform_error"),
    ];
    let mut evil_subs = Vec::new();
    for (name, code) in evil {
        h.upload_transform(&TENANT.into(), name, wasm(name))
            .await
            .unwrap_or_else(|e| panic!("{name} uploads (it is a valid component): {e}"));
        let mut n = NewSubscription::new(TENANT, rx.url(&format!("/{name}")));
        n.transform = bound(name, 1);
        n.on_failure = Some(FailurePolicy::Skip);
        evil_subs.push((h.subscribe(n).await, name, code));
    }
    h.upload_transform(&TENANT.into(), "pii", wasm("mask-pii"))
        .await
        .expect("upload");
    let mut good = NewSubscription::new(TENANT, rx.url("/good"));
    good.transform = bound("pii", 1);
    h.subscribe(good).await;
    h.subscribe(NewSubscription::new(TENANT, rx.url("/plain")))
        .await;

    let ids = h
        .publish_all((0..3).map(|i| event(&format!("h-{i}"))))
        .await;
    rx.wait_delivered_at("/good", &ids, WITHIN).await;
    rx.wait_delivered_at("/plain", &ids, WITHIN).await;
    for (sub, name, code) in &evil_subs {
        for id in &ids {
            let d = h.wait_status(&sub.id, id, DeliveryStatus::Failed).await;
            assert_eq!(
                d.attempt_log.len(),
                1,
                "{name}: a transform failure is not retried"
            );
            assert_eq!(
                d.attempt_log[0].error_kind.as_deref(),
                Some(*code),
                "{name}: {:?}",
                d.attempt_log[0]
            );
        }
        assert!(
            rx.requests_at(&format!("/{name}")).is_empty(),
            "{name}: nothing was sent"
        );
    }
    // The panic message reached the attempt log.
    let trap = &evil_subs[4];
    let d = h.detail_of(&trap.0.id, &ids[0]).await;
    assert!(
        d.attempt_log[0]
            .transform_log
            .as_deref()
            .is_some_and(|l| l.contains("deliberate panic")),
        "{:?}",
        d.attempt_log[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_precompiled_transform_without_compiling() {
    let mut h = TestEngine::start().await;
    let rx = Receiver::start().await;
    h.upload_transform(&TENANT.into(), "pii", wasm("mask-pii"))
        .await
        .expect("upload");
    assert_eq!(h.transform_stats().compiled, 1);
    let mut n = NewSubscription::new(TENANT, rx.url("/pii"));
    n.transform = bound("pii", 1);
    let sub = h.subscribe(n).await;
    let first = h.publish_all([event("before")]).await;
    rx.wait_delivered_at("/pii", &first, WITHIN).await;

    h.restart().await;
    let stats = h.transform_stats();
    assert_eq!(stats.compiled, 0, "nothing compiled at start");
    let second = h.publish_all([event("after")]).await;
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    rx.wait_delivered_at("/pii", &all, WITHIN).await;
    let stats = h.transform_stats();
    assert_eq!(
        (stats.compiled, stats.loaded_precompiled),
        (0, 1),
        "loaded from the stored artifact, not compiled: {stats:?}"
    );
    let got = rx.requests_at("/pii");
    assert_eq!(got.last().and_then(|r| r.header("x-pii-masked")), Some("0"));
    eventually("the delivery journaled", WITHIN, || async {
        let d = h.delivery_of(&sub.id, "after").await;
        (d.status == DeliveryStatus::Delivered).then_some(())
    })
    .await;
}

#[test]
fn the_cli_runs_a_transform_locally() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("transforms");
    let run = |guest: &str, event: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(["transform", "test", "--wasm"])
            .arg(examples.join(format!("dist/{guest}.wasm")))
            .arg("--event")
            .arg(examples.join(format!("examples/{event}.json")))
            .output()
            .expect("hookline runs")
    };
    let out = run("to-xml", "node-event");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["action"], "deliver");
    assert!(
        v["headers"]
            .as_array()
            .is_some_and(|h| h.contains(&json!(["content-type", "application/xml"]))),
        "{v}"
    );
    assert!(
        v["body"].as_str().is_some_and(|b| b.starts_with("<?xml")),
        "{v}"
    );

    let out = run("drop-by-rule", "node-event-skip");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["action"], "drop", "{v}");

    let out = run("evil-error", "node-event");
    assert_eq!(out.status.code(), Some(1), "a failing transform exits 1");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["error"]["code"], "transform_error", "{v}");
}

/// Two nodes on one PostgreSQL database: a transform uploaded (and compiled) on the first is
/// run by the second from the precompiled artifact stored beside it, never compiled there.
#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_runs_the_stored_artifact_without_compiling() {
    let Some(server) = hookline::testing::postgres::server("transforms::another_node") else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = |id: &str| {
        crate::support::on_store(crate::support::builder(&dir.path().join(id)), Some(&url))
            .node_id(id)
            .build()
    };
    let a = node("node-a").await.expect("node a");
    let b = node("node-b").await.expect("node b");
    a.create_tenant(hookline::NewTenant {
        id: TENANT.into(),
        name: "Acme".into(),
        rate_limit: None,
    })
    .await
    .expect("tenant");
    a.upload_transform(&TENANT.into(), "pii", wasm("mask-pii"))
        .await
        .expect("upload");
    assert_eq!(a.transform_stats().compiled, 1, "compiled once, on upload");
    let rx = Receiver::start().await;
    let mut n = NewSubscription::new(TENANT, rx.url("/pii"));
    n.transform = bound("pii", 1);
    a.create_subscription(n).await.expect("subscribe");
    // Only node b is left to deliver.
    a.shutdown().await;
    b.publish(event("on-b")).await.expect("publish");
    rx.wait_delivered_at("/pii", &["on-b".to_owned()], WITHIN)
        .await;
    let got = rx.requests_at("/pii");
    assert_eq!(got[0].header("x-pii-masked"), Some("0"), "transformed");
    let stats = b.transform_stats();
    assert_eq!(
        (stats.compiled, stats.loaded_precompiled),
        (0, 1),
        "node b loaded the stored artifact: {stats:?}"
    );
    b.shutdown().await;
}
