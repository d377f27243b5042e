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
