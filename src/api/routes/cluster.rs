//! `GET /v1/cluster` (admin key): the nodes sharing the store, their heartbeats and the
//! subscriptions each holds; with SQLite, this process alone (see docs/cluster.md).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::api::auth::Auth;
use crate::api::error::{ApiResult, ErrorResponse};
use crate::api::router::AppState;
use crate::domain::ClusterView;
use crate::engine::EngineHandle;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/cluster", get(cluster))
}

#[utoipa::path(get, path = "/v1/cluster", tag = "ops",
    responses((status = 200, description = "The nodes sharing the store", body = ClusterView),
        (status = 403, description = "Needs the admin key", body = ErrorResponse)))]
pub(crate) async fn cluster(
    State(engine): State<EngineHandle>,
    auth: Auth,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    Ok(Json(engine.cluster().await?))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower_service::Service;

    use crate::api::{ApiConfig, router_with};
    use crate::domain::{NewSubscription, NewTenant};
    use crate::engine::Engine;

    const ADMIN: &str = "admin-key-for-cluster-tests-0123";

    async fn get(router: &mut axum::Router, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::get("/v1/cluster");
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let resp = router.call(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn the_admin_sees_this_node_owning_its_sqlite_store_and_tenants_are_refused() {
        let engine = Engine::builder()
            .in_memory()
            .node_id("node-under-test")
            .build()
            .await
            .unwrap();
        engine.ensure_admin_key(Some(ADMIN)).await.unwrap();
        let tenant = engine
            .create_tenant(NewTenant {
                id: "acme".into(),
                name: "Acme".into(),
                rate_limit: None,
            })
            .await
            .unwrap();
        let sub = engine
            .create_subscription(NewSubscription::new("acme", "https://acme.example/h"))
            .await
            .unwrap();
        // A paused subscription has an actor, which holds its queue's lease.
        engine.pause_subscription(&sub.id).await.unwrap();
        let mut router = router_with(engine.clone(), ApiConfig::default());

        let (status, body) = get(&mut router, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["node"], "node-under-test");
        assert_eq!(body["store"], "exclusive");
        assert_eq!(body["leaseTtlMs"], 45_000);
        let nodes = body["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1, "{body}");
        let me = &nodes[0];
        assert_eq!(me["id"], "node-under-test");
        assert_eq!(me["thisNode"], true);
        assert_eq!(me["alive"], true);
        assert_eq!(me["subscriptionsHeld"], 1);
        assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
        assert!(me["heartbeatAt"].as_str().unwrap().ends_with('Z'), "{me}");
        assert!(me["heartbeatAgeMs"].as_u64().unwrap() < 60_000);

        let (status, body) = get(&mut router, Some(&tenant.api_key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, _) = get(&mut router, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        engine.shutdown().await;
    }
}
