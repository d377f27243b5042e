//! Ordering keys (`ordering: {key, lanes}`, docs/ordering.md): stored with the subscription and
//! shown by the API, refused with a clear error when malformed, removed by `ordering: null`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::TENANT;
use crate::support::http::Api;

async fn create(api: &Api, body: Value) -> (u16, Value) {
    let (status, json, _) = api
        .call(Method::POST, "/v1/subscriptions", Some(body))
        .await;
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_is_stored_shown_changed_and_refused_when_malformed() {
    let api = Api::start().await;
    let url = "http://127.0.0.1:9/hook";

    let (status, plain) = create(&api, json!({"tenantId": TENANT, "url": url})).await;
    assert_eq!(status, 201, "{plain}");
    assert!(plain.get("ordering").is_none(), "absent without the option");

    let (status, keyed) = create(
        &api,
        json!({"tenantId": TENANT, "url": url,
               "ordering": {"key": "/payLoad/loanId", "lanes": 16}}),
    )
    .await;
    assert_eq!(status, 201, "{keyed}");
    let path = format!("/v1/subscriptions/{}", keyed["id"].as_str().expect("id"));
    let (status, got, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        got["ordering"],
        json!({"key": "/payLoad/loanId", "lanes": 16})
    );

    // lanes defaults to one; null removes the option.
    let (status, patched, _) = api
        .call(
            Method::PATCH,
            &path,
            Some(json!({"ordering": {"key": "/transactionId"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["ordering"],
        json!({"key": "/transactionId", "lanes": 1})
    );
    let (status, removed, _) = api
        .call(Method::PATCH, &path, Some(json!({"ordering": null})))
        .await;
    assert_eq!(status, 200, "{removed}");
    assert!(removed.get("ordering").is_none(), "{removed}");

    for bad in [
        json!({"key": "payLoad/loanId"}),
        json!({"key": "/a~2"}),
        json!({"key": "/x", "lanes": 0}),
        json!({"key": "/x", "lanes": 257}),
        json!({"lanes": 4}),
        json!({"key": "/x", "lane": 4}),
    ] {
        let (status, body) = create(
            &api,
            json!({"tenantId": TENANT, "url": url, "ordering": bad.clone()}),
        )
        .await;
        assert_eq!(status, 400, "{bad} must be refused: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ordering")),
            "the refusal names the field: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_is_shown_on_the_subscription_and_resubmitted_through_the_api() {
    use hookline::DeliveryStatus;

    use crate::keys::loan_event;
    use crate::support::{Receiver, Recorded, Reply};

    let api = Api::start().await;
    let rx = Receiver::with(|r: &Recorded| match (r.webhook_id(), r.nth_for_id) {
        ("l1-a", 1) => Reply::status(400),
        _ => Reply::ok(),
    })
    .await;
    let (status, sub) = create(
        &api,
        json!({"tenantId": TENANT, "url": rx.url("/loans"), "onFailure": "block",
               "retry": {"maxAttempts": 1, "backoffMs": [10]},
               "ordering": {"key": "/payLoad/loanId", "lanes": 4}}),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let id = hookline::SubscriptionId::from(sub["id"].as_str().expect("id").to_owned());
    api.h
        .publish_all([
            loan_event("l1-a", "L1"),
            loan_event("l2-a", "L2"),
            loan_event("l1-b", "L1"),
        ])
        .await;
    let failed = api.h.wait_status(&id, "l1-a", DeliveryStatus::Failed).await;
    api.h
        .wait_status(&id, "l2-a", DeliveryStatus::Delivered)
        .await;

    let path = format!("/v1/subscriptions/{id}");
    let (status, got, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(got["state"], "active", "{got}");
    let held = &got["blockedKeys"];
    assert_eq!(held.as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(held[0]["key"], "L1");
    assert_eq!(held[0]["delivery"], failed.delivery.id.to_string());
    assert!(
        held[0]["since"].as_str().is_some_and(|s| s.contains('T')),
        "{got}"
    );
    assert_eq!(got["lanesBusy"], 0, "{got}");

    // The resubmit frees the key: both of its events go, in order.
    let (status, body, _) = api
        .call(
            Method::POST,
            &format!("/v1/deliveries/{}/resubmit", failed.delivery.id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    api.h
        .wait_status(&id, "l1-b", DeliveryStatus::Delivered)
        .await;
    let (_, got, _) = api.call(Method::GET, &path, None).await;
    assert!(got.get("blockedKeys").is_none(), "{got}");
    let order: Vec<String> = rx
        .delivered_ids()
        .into_iter()
        .filter(|i| i.starts_with("l1"))
        .collect();
    assert_eq!(order, ["l1-a", "l1-b"]);
}
