//! Operational notifications end to end (docs/notifications.md): a subscription that blocks on
//! a 404, recovers after a resubmit, loses a delivery under `onFailure: skip`, or is disabled by
//! a 410 makes hookline POST a signed `OPERATIONAL_EVENT` to the operator's receivers (set up
//! as the server does from `[notifications]`) and to the tenant's own, on a real loopback
//! receiver; another tenant's receiver hears nothing of it; and the API manages a tenant's
//! receivers with the tenant's own key.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookline::notify::{NotificationEndpoint, SYSTEM_TENANT};
use hookline::{FailurePolicy, NewSubscription, SubscriptionState, TenantId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::http::Api;
use crate::support::receiver::always;
use crate::support::{Receiver, Recorded, TENANT, TestEngine, WITHIN, event, eventually, retry};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Checks a request's Standard Webhooks signature (`v1`) with `secret`.
fn signed_with(r: &Recorded, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let content = format!(
        "{}.{}.{}",
        r.webhook_id(),
        r.header("webhook-timestamp").unwrap_or(""),
        String::from_utf8_lossy(&r.body)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(content.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.header("webhook-signature")
        .unwrap_or("")
        .split(' ')
        .any(|s| s == format!("v1,{expected}"))
}

/// The `payLoad.type` of each notification received on `path`, in arrival order (2xx only).
fn kinds_at(rx: &Receiver, path: &str) -> Vec<(String, String)> {
    rx.requests_at(path)
        .iter()
        .filter(|r| r.answered_2xx())
        .map(|r| {
            let j = r.json();
            (
                j["payLoad"]["type"].as_str().unwrap_or("").to_string(),
                j["transactionId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_kind(rx: &Receiver, path: &str, kind: &str, sub: &str) -> Recorded {
    let what = format!("a {kind} notification about {sub} at {path}");
    let reqs = rx
        .wait_for(&what, WITHIN, |reqs| {
            reqs.iter().any(|r| {
                r.path == path
                    && r.answered_2xx()
                    && r.json()["payLoad"]["type"] == kind
                    && r.json()["transactionId"] == sub
            })
        })
        .await;
    reqs.into_iter()
        .find(|r| {
            r.path == path
                && r.json()["payLoad"]["type"] == kind
                && r.json()["transactionId"] == sub
        })
        .expect("found above")
}

#[tokio::test]
async fn transitions_are_notified_signed_in_order_to_the_operator_and_the_tenant_only() {
    let h = TestEngine::start().await;
    h.add_tenant("globex").await;
    let ops = Receiver::start().await;
    h.configure_notifications(&[NotificationEndpoint {
        url: ops.url("/ops"),
        secret: Some(SECRET.into()),
    }])
    .await
    .expect("operator receivers");
    // Reconciling twice changes nothing (the server does it at every start).
    h.configure_notifications(&[NotificationEndpoint {
        url: ops.url("/ops"),
        secret: Some(SECRET.into()),
    }])
    .await
    .expect("again");
    let acme = TenantId::from(TENANT);
    let mine = h
        .add_notification_endpoint(
            &acme,
            NotificationEndpoint {
                url: ops.url("/acme"),
                secret: None,
            },
        )
        .await
        .expect("tenant receiver");
    let acme_secret = mine.secret.clone().expect("secret shown once");
    h.add_notification_endpoint(
        &TenantId::from("globex"),
        NotificationEndpoint {
            url: ops.url("/globex"),
            secret: None,
        },
    )
    .await
    .expect("globex receiver");
    assert_eq!(
        h.list_subscriptions(Some(&TenantId::from(SYSTEM_TENANT)))
            .await
            .expect("list")
            .len(),
        3,
        "one operator receiver (not two after the second reconcile) and two tenants'"
    );

    // Blocked on a 404 (two attempts), then recovered after a resubmit.
    let rx = Receiver::with(always(404)).await;
    let mut n = NewSubscription::new(TENANT, rx.url("/hook"));
    n.retry = Some(retry(2));
    let sub = h.subscribe(n).await;
    let ids = h.publish_all([event("e1"), event("e2")]).await;
    h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    let blocked = wait_kind(&ops, "/ops", "subscription.blocked", sub.id.as_str()).await;
    assert!(
        signed_with(&blocked, SECRET),
        "signed with the configured secret"
    );
    let j = blocked.json();
    assert_eq!(j["tenantId"], SYSTEM_TENANT);
    assert_eq!(j["notificationType"], "OPERATIONAL_EVENT");
    assert_eq!(j["workflowId"], TENANT);
    let p = &j["payLoad"];
    let failed = h.delivery_of(&sub.id, &ids[0]).await;
    assert_eq!(p["subscription"]["id"], sub.id.as_str());
    assert_eq!(p["subscription"]["url"], rx.url("/hook"));
    assert_eq!(p["delivery"]["id"], failed.id.to_string());
    assert_eq!(j["referenceId"], failed.id.to_string());
    assert_eq!(p["delivery"]["status"], "failed");
    assert_eq!(p["delivery"]["attempts"], failed.attempts);
    assert_eq!(p["delivery"]["lastHttpStatus"], 404);
    assert!(
        p["delivery"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("404"))
    );
    assert_eq!(p["event"]["id"], ids[0]);
    assert_eq!(p["event"]["notificationType"], "NODE_EVENT");
    assert_eq!(p["event"]["transactionId"], "tx-e1");
    let tenant_copy = wait_kind(&ops, "/acme", "subscription.blocked", sub.id.as_str()).await;
    assert!(
        signed_with(&tenant_copy, &acme_secret),
        "signed with the tenant receiver's secret"
    );
    assert_eq!(
        tenant_copy.webhook_id(),
        blocked.webhook_id(),
        "one event, two receivers"
    );

    rx.set_behaviour(always(200));
    h.resubmit(failed.id).await.expect("resubmit");
    h.wait_all_delivered(&sub.id, 2).await;
    let recovered = wait_kind(&ops, "/ops", "subscription.recovered", sub.id.as_str()).await;
    assert!(signed_with(&recovered, SECRET));
    assert_eq!(
        recovered.json()["payLoad"]["delivery"]["status"],
        "delivered"
    );

    // Out of retries under onFailure: skip: the queue moves on, the operator hears of it.
    let flaky = Receiver::with(always(500)).await;
    let mut n = NewSubscription::new(TENANT, flaky.url("/skip"));
    n.retry = Some(retry(1));
    n.on_failure = Some(FailurePolicy::Skip);
    let skipping = h.subscribe(n).await;
    h.publish_all([event("e3")]).await;
    let exhausted = wait_kind(&ops, "/ops", "delivery.exhausted", skipping.id.as_str()).await;
    assert_eq!(
        exhausted.json()["payLoad"]["delivery"]["lastHttpStatus"],
        500
    );

    // 410 Gone disables another tenant's subscription: its tenant and the operator hear it.
    let gone = Receiver::with(always(410)).await;
    let g = h
        .subscribe(NewSubscription::new("globex", gone.url("/gone")))
        .await;
    h.publish_all([crate::support::event_for("globex", "g1")])
        .await;
    h.wait_state(&g.id, SubscriptionState::Disabled).await;
    let disabled = wait_kind(&ops, "/ops", "subscription.disabled", g.id.as_str()).await;
    assert!(
        disabled.json()["payLoad"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("410"))
    );
    wait_kind(&ops, "/globex", "subscription.disabled", g.id.as_str()).await;

    // Each receiver heard exactly its tenants' notifications, in the order they happened.
    let s = sub.id.to_string();
    let all = kinds_at(&ops, "/ops");
    let at = |k: &str, id: &str| all.iter().position(|(a, b)| a == k && b == id);
    assert!(
        at("subscription.blocked", &s) < at("subscription.recovered", &s),
        "blocked before recovered: {all:?}"
    );
    let acme_heard = kinds_at(&ops, "/acme");
    assert!(
        acme_heard.iter().all(|(_, id)| *id != g.id.as_str()),
        "acme hears nothing of globex: {acme_heard:?}"
    );
    let globex_heard = kinds_at(&ops, "/globex");
    assert_eq!(
        globex_heard,
        vec![("subscription.disabled".to_string(), g.id.to_string())],
        "globex hears only its own"
    );
    let delivered_ids: Vec<String> = ops.delivered_ids_at("/ops");
    let mut unique = delivered_ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), delivered_ids.len(), "each notification once");

    // The dashboard's history: what was said about the subscription, newest first.
    let history = eventually(
        "two notifications about the subscription",
        WITHIN,
        || async {
            let h = h.notifications_about(&sub.id, 10).await.expect("history");
            (h.len() == 2).then_some(h)
        },
    )
    .await;
    assert_eq!(history[0].id.as_str(), recovered.webhook_id());
    assert_eq!(history[1].id.as_str(), blocked.webhook_id());
}

#[tokio::test]
async fn a_failing_receiver_is_never_notified_about_and_loops_nothing() {
    let h = TestEngine::start().await;
    let ops = Receiver::with(always(503)).await;
    h.configure_notifications(&[NotificationEndpoint {
        url: ops.url("/ops"),
        secret: Some(SECRET.into()),
    }])
    .await
    .expect("operator receivers");
    let rx = Receiver::with(always(404)).await;
    let mut n = NewSubscription::new(TENANT, rx.url("/hook"));
    n.retry = Some(retry(1));
    let sub = h.subscribe(n).await;
    h.publish_all([event("e1")]).await;
    h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    let system = TenantId::from(SYSTEM_TENANT);
    let receivers = h.list_subscriptions(Some(&system)).await.expect("list");
    assert_eq!(receivers.len(), 1);
    // The receiver's own delivery fails for good (3 attempts, the test default), skipped.
    let d = eventually(
        "the notification to fail at the receiver",
        WITHIN,
        || async {
            let page = h
                .list_deliveries(&receivers[0].id, Default::default())
                .await
                .expect("list");
            page.items
                .first()
                .filter(|d| d.status == hookline::DeliveryStatus::Failed)
                .cloned()
        },
    )
    .await;
    assert_eq!(d.attempts, 3);
    assert_eq!(
        h.get_subscription(&receivers[0].id)
            .await
            .expect("get")
            .state,
        SubscriptionState::Active,
        "a receiver never blocks (onFailure: skip)"
    );
    // Nothing about the receiver itself was published: one notification in all.
    crate::support::consistently(
        "one notification only",
        Duration::from_millis(300),
        || async {
            h.notifications_about(&receivers[0].id, 10)
                .await
                .expect("history")
                .is_empty()
                && h.notifications_about(&sub.id, 10)
                    .await
                    .expect("history")
                    .len()
                    == 1
        },
    )
    .await;
}

#[tokio::test]
async fn tenants_manage_their_receivers_through_the_api() {
    let api = Api::start().await;
    let (s, created, _) = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"id": "globex", "name": "Globex"})),
        )
        .await;
    assert_eq!(s, 201);
    let globex_key = created["apiKey"].as_str().expect("key").to_string();
    let (s, acme, _) = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"id": "initech", "name": "Initech"})),
        )
        .await;
    assert_eq!(s, 201);
    let initech_key = acme["apiKey"].as_str().expect("key").to_string();
    let rx = Receiver::start().await;

    let (s, added, _) = api
        .call_as(
            &globex_key,
            Method::POST,
            "/v1/tenants/globex/notifications",
            Some(json!({"url": rx.url("/n")})),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert!(
        added["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    assert_eq!(added["tenantId"], SYSTEM_TENANT);
    let id = added["id"].as_str().expect("id").to_string();

    let (s, list, _) = api
        .call_as(
            &globex_key,
            Method::GET,
            "/v1/tenants/globex/notifications",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(
        list[0].get("secret").is_none_or(Value::is_null),
        "no secret in lists"
    );

    // Another tenant's key sees nothing and removes nothing; a bad body names its field.
    let (s, _, _) = api
        .call_as(
            &initech_key,
            Method::GET,
            "/v1/tenants/globex/notifications",
            None,
        )
        .await;
    assert_eq!(s, 404);
    let path = format!("/v1/tenants/initech/notifications/{id}");
    let (s, _, _) = api.call_as(&initech_key, Method::DELETE, &path, None).await;
    assert_eq!(s, 404, "not one of initech's receivers");
    let (s, body, _) = api
        .call_as(
            &globex_key,
            Method::POST,
            "/v1/tenants/globex/notifications",
            Some(json!({"url": rx.url("/n"), "colour": "red"})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    // A tenant key cannot reach the system tenant's subscription through the generic routes.
    let (s, _, _) = api
        .call_as(
            &globex_key,
            Method::GET,
            &format!("/v1/subscriptions/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // The system tenant's id is reserved.
    let (s, body, _) = api
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"id": SYSTEM_TENANT, "name": "mine"})),
        )
        .await;
    assert_eq!(s, 422, "{body}");

    let path = format!("/v1/tenants/globex/notifications/{id}");
    let (s, _, _) = api.call_as(&globex_key, Method::DELETE, &path, None).await;
    assert_eq!(s, 204);
    let (_, list, _) = api
        .call_as(
            &globex_key,
            Method::GET,
            "/v1/tenants/globex/notifications",
            None,
        )
        .await;
    assert_eq!(list.as_array().map(Vec::len), Some(0));
}
