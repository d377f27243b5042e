//! A subscription's status table (`statusTable`, `retryOn`, `deliveredOn`): stored with the
//! subscription and shown by the API, refused with a clear error when it cannot mean what it
//! says, and honoured by the delivery path against a real loopback receiver answering 302 and
//! 409.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hookline::{
    DeliveryStatus, FailurePolicy, NewSubscription, StatusTable, SubscriptionPatch,
    SubscriptionState,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::http::Api;
use crate::support::{Receiver, Reply, TENANT, TestEngine, WITHIN, event, retry};

/// Creates a subscription through the API; its JSON.
async fn create(api: &Api, body: Value) -> (u16, Value) {
    let (status, json, _) = api
        .call(Method::POST, "/v1/subscriptions", Some(body))
        .await;
    (status, json)
}

fn rules(v: &Value) -> (Value, Value, Value) {
    (
        v["statusTable"].clone(),
        v["retryOn"].clone(),
        v["deliveredOn"].clone(),
    )
}

/// The refusal's status, code, field and message.
fn refusal(status: u16, body: &Value) -> (u16, String, String, String) {
    let e = &body["error"];
    let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
    (status, text("code"), text("field"), text("message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rules_are_stored_shown_and_refused_when_impossible() {
    let api = Api::start().await;
    let url = "http://127.0.0.1:9/hook";

    // Without the option: hookline's table, no lists.
    let (status, plain) = create(&api, json!({"tenantId": TENANT, "url": url})).await;
    assert_eq!(status, 201, "{plain}");
    assert_eq!(rules(&plain), (json!("hookline"), json!([]), json!([])));

    let (status, chosen) = create(
        &api,
        json!({"tenantId": TENANT, "url": url, "statusTable": "lending",
               "retryOn": [409, 425], "deliveredOn": [404]}),
    )
    .await;
    assert_eq!(status, 201, "{chosen}");
    let id = chosen["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/subscriptions/{id}");
    let (status, got, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        rules(&got),
        (json!("lending"), json!([409, 425]), json!([404]))
    );

    // A new table keeps the lists; a list is replaced as a whole.
    let (status, patched, _) = api
        .call(
            Method::PATCH,
            &path,
            Some(json!({"statusTable": "hookline", "retryOn": [503, 409]})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        rules(&patched),
        (json!("hookline"), json!([503, 409]), json!([404]))
    );

    // What the schema can say is a 400 naming the JSON pointer.
    for (body, field) in [
        (json!({"retryOn": [600]}), "/retryOn/0"),
        (json!({"deliveredOn": [99]}), "/deliveredOn/0"),
        (json!({"retryOn": [409, 409]}), "/retryOn"),
        (json!({"retryOn": "409"}), "/retryOn"),
        (json!({"statusTable": "strict"}), "/statusTable"),
        (
            json!({"retryOn": (300..333).collect::<Vec<_>>()}),
            "/retryOn",
        ),
    ] {
        let mut create_body = body.clone();
        create_body["tenantId"] = json!(TENANT);
        create_body["url"] = json!(url);
        let (status, err) = create(&api, create_body).await;
        let (s, code, f, message) = refusal(status, &err);
        assert_eq!(
            (s, code.as_str(), f.as_str()),
            (400, "schema_violation", field),
            "{body}"
        );
        assert!(!message.is_empty());
        let (status, err, _) = api.call(Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(refusal(status, &err).0, 400, "PATCH {body}: {err}");
    }

    // What only the engine can say is a 422 that says what is wrong.
    for (body, field, says) in [
        (
            json!({"retryOn": [200]}),
            "retryOn",
            "200 is a 2xx, which always counts as delivered",
        ),
        (json!({"deliveredOn": [204]}), "deliveredOn", "204 is a 2xx"),
        (
            json!({"retryOn": [100]}),
            "retryOn",
            "100 is informational (1xx)",
        ),
        (
            json!({"retryOn": [409], "deliveredOn": [409]}),
            "deliveredOn",
            "409 is listed in both retryOn and deliveredOn",
        ),
    ] {
        let mut create_body = body.clone();
        create_body["tenantId"] = json!(TENANT);
        create_body["url"] = json!(url);
        let (status, err) = create(&api, create_body).await;
        let (s, code, f, message) = refusal(status, &err);
        assert_eq!(
            (s, code.as_str(), f.as_str()),
            (422, "invalid", field),
            "{body}"
        );
        assert!(
            message.contains(says),
            "{body}: {message:?} should say {says:?}"
        );
    }
    // A change that would overlap with the list already stored is refused, and changes nothing.
    let (status, err, _) = api
        .call(Method::PATCH, &path, Some(json!({"deliveredOn": [503]})))
        .await;
    let (s, _, f, message) = refusal(status, &err);
    assert_eq!((s, f.as_str()), (422, "deliveredOn"), "{err}");
    assert!(message.contains("503 is listed in both"), "{message}");
    let (_, still, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(
        rules(&still),
        (json!("hookline"), json!([503, 409]), json!([404]))
    );
    // `[]` empties a list.
    let (status, emptied, _) = api
        .call(Method::PATCH, &path, Some(json!({"retryOn": []})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        rules(&emptied),
        (json!("hookline"), json!([]), json!([404]))
    );
}

/// The rules are journaled with the subscription: they survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rules_survive_a_restart() {
    let mut h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, "http://127.0.0.1:9/hook");
    n.status_table = Some(StatusTable::Lending);
    n.retry_on = Some(vec![409]);
    let s = h.subscribe(n).await;
    h.restart().await;
    let again = h.get_subscription(&s.id).await.expect("subscription");
    assert_eq!(
        (again.status_table, again.retry_on, again.delivered_on),
        (StatusTable::Lending, vec![409], vec![])
    );
}

/// How the receiver answers `webhook-id`s on every path: `redirect…` with a 302 to
/// `/followed` (which must never be requested), `conflict` with a 409 on its first two
/// requests and a 200 afterwards, anything else with a 200.
fn receiver_behaviour() -> impl Fn(&crate::support::Recorded) -> Reply + Send + Sync + 'static {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    move |r| match r.webhook_id() {
        id if id.starts_with("redirect") => {
            let host = r.header("host").unwrap_or_default();
            Reply::redirect(302, format!("http://{host}/followed"))
        }
        "conflict" => {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(r.path.clone()).or_default();
            *n += 1;
            if *n <= 2 {
                Reply::status(409)
            } else {
                Reply::ok()
            }
        }
        _ => Reply::ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscription_judges_302_and_409_by_its_own_table() {
    let rx = Receiver::with(receiver_behaviour()).await;
    let h = TestEngine::start().await;
    // (path, table, retryOn)
    let setups: [(&str, Option<StatusTable>, &[u16]); 4] = [
        ("/hookline", None, &[]),
        ("/lending", Some(StatusTable::Lending), &[]),
        ("/retry-409", None, &[409]),
        ("/lending-retry-409", Some(StatusTable::Lending), &[409]),
    ];
    let mut subs = Vec::new();
    for (path, table, retry_on) in &setups {
        let mut n = NewSubscription::new(TENANT, rx.url(path));
        n.retry = Some(retry(4));
        n.on_failure = Some(FailurePolicy::Skip);
        n.status_table = *table;
        n.retry_on = Some(retry_on.to_vec());
        subs.push((*path, h.subscribe(n).await));
    }
    for id in ["redirect", "conflict", "sentinel"] {
        h.publish(event(id)).await.expect("publish");
    }
    for (path, _, _) in &setups {
        rx.wait_delivered_at(path, &["sentinel".to_string()], WITHIN)
            .await;
    }

    // (path, redirect's status and attempts, conflict's status and attempts)
    let want = [
        (
            "/hookline",
            DeliveryStatus::Failed,
            DeliveryStatus::Failed,
            1,
        ),
        (
            "/lending",
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            1,
        ),
        (
            "/retry-409",
            DeliveryStatus::Failed,
            DeliveryStatus::Delivered,
            3,
        ),
        (
            "/lending-retry-409",
            DeliveryStatus::Delivered,
            DeliveryStatus::Delivered,
            3,
        ),
    ];
    for ((path, s), (wpath, redirect_status, conflict_status, conflict_attempts)) in
        subs.iter().zip(want)
    {
        assert_eq!(*path, wpath);
        let redirect = h.detail_of(&s.id, "redirect").await;
        assert_eq!(redirect.delivery.status, redirect_status, "{path} 302");
        assert_eq!(
            redirect.attempt_log.len(),
            1,
            "{path}: a 302 is never retried"
        );
        let a = &redirect.attempt_log[0];
        assert_eq!(a.status_code, Some(302), "{path}");
        let error_kind = (redirect_status == DeliveryStatus::Failed).then_some("http_status");
        assert_eq!(a.error_kind.as_deref(), error_kind, "{path}");

        let conflict = h.detail_of(&s.id, "conflict").await;
        assert_eq!(conflict.delivery.status, conflict_status, "{path} 409");
        let codes: Vec<_> = conflict.attempt_log.iter().map(|a| a.status_code).collect();
        assert_eq!(codes.len(), conflict_attempts, "{path}: {codes:?}");
        assert_eq!(codes[0], Some(409), "{path}");
        let requests = rx
            .requests_at(path)
            .into_iter()
            .filter(|r| r.webhook_id() == "conflict")
            .count();
        assert_eq!(
            requests, conflict_attempts,
            "{path}: requests reaching the receiver"
        );
    }
    assert!(
        rx.requests_at("/followed").is_empty(),
        "a redirect's Location is never requested, whatever the table"
    );

    // A change of table applies from the next attempt on, and a 302 that counts as delivered
    // leaves the subscription active (nothing to block on) even under `onFailure: block`.
    let (_, plain) = &subs[0];
    let patch = SubscriptionPatch {
        status_table: Some(StatusTable::Lending),
        on_failure: Some(FailurePolicy::Block),
        ..SubscriptionPatch::default()
    };
    h.update_subscription(&plain.id, patch)
        .await
        .expect("patch");
    h.publish(event("redirect-2")).await.expect("publish");
    h.publish(event("after")).await.expect("publish");
    rx.wait_delivered_at("/hookline", &["after".to_string()], WITHIN)
        .await;
    let d = h.detail_of(&plain.id, "redirect-2").await;
    assert_eq!(d.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(d.attempt_log[0].status_code, Some(302));
    let now = h.get_subscription(&plain.id).await.expect("subscription");
    assert_eq!(now.state, SubscriptionState::Active);
    assert!(rx.requests_at("/followed").is_empty());
}
