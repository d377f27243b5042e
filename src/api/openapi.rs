//! The OpenAPI document of this API, served at `GET /v1/openapi.json` and committed as
//! `schemas/openapi.json` (a test keeps the two equal).
//!
//! It is made in two steps. `utoipa` writes the paths and the response types from the
//! handlers' `#[utoipa::path]` attributes and the model types' `ToSchema`; then [`document`]
//! makes it exact:
//! - every request body's schema is the JSON Schema file the server checks it against
//!   ([`REQUEST_SCHEMAS`], `$defs` inlined), never a second description of the same body;
//! - every operation lists the statuses the layers in front of the handlers can answer
//!   ([`shared_refusals`]: 400, 401, 408, 413, 415, 429, 500, 503) with the error body and,
//!   for 429 and 503, `Retry-After`;
//! - responses carry OpenAPI links from what creates a resource to what reads, changes or
//!   deletes it, so that clients (and the conformance run) can follow them;
//! - schemas no operation refers to any more are dropped.
//!
//! Handlers have no doc comments on purpose: utoipa would turn them into summaries and change
//! the document. A new route is one more line in `paths(...)` here, plus a row of
//! [`REQUEST_BODIES`] when it takes a JSON body.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::ApiConfig;
use super::error::{ErrorBody, ErrorResponse};
use super::router::AppState;
use super::routes::{
    cluster, deliveries, events, notifications, ops, subscriptions, tenants, transforms,
};
use super::schema::REQUEST_SCHEMAS;

/// The OpenAPI document of this API with the default limits (also served at
/// `GET /v1/openapi.json` and committed as `schemas/openapi.json`).
pub fn openapi() -> Value {
    document(&ApiConfig::default())
}

#[utoipa::path(get, path = "/v1/openapi.json", security(()), tag = "ops",
    responses((status = 200, description = "This document", body = Object)))]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.cfg))
}

/// The OpenAPI document. The order of `paths(...)` is the order of the route table as it was
/// first written; the document itself is sorted by path.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookline",
        description = "Durable, strictly ordered webhook delivery. Every route but /healthz, \
                       /readyz and /v1/openapi.json needs `Authorization: Bearer <key>`. A request \
                       that does not match this document is refused with 400; one that matches \
                       it but that the engine's rules refuse, with 422."
    ),
    paths(
        ops::healthz,
        openapi_json,
        tenants::create_tenant,
        tenants::get_tenant,
        tenants::update_tenant,
        subscriptions::create_subscription,
        subscriptions::list_subscriptions,
        subscriptions::get_subscription,
        subscriptions::update_subscription,
        subscriptions::delete_subscription,
        subscriptions::pause_subscription,
        subscriptions::resume_subscription,
        subscriptions::rotate_secret,
        subscriptions::test_endpoint,
        deliveries::list_deliveries,
        events::publish,
        events::publish_batch,
        deliveries::get_delivery,
        deliveries::resubmit,
        deliveries::skip,
        transforms::list,
        transforms::upload,
        transforms::show,
        transforms::remove,
        transforms::test,
        ops::readyz,
        ops::metrics,
        subscriptions::replay,
        events::find_events,
        crate::ui::portal::create_portal_link,
        cluster::cluster,
        notifications::list_receivers,
        notifications::add_receiver,
        notifications::remove_receiver,
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin key or a tenant's API key"))
                    .build(),
            ),
        );
    }
}

/// Each operation that takes a JSON body, and the component (a schema of
/// [`REQUEST_SCHEMAS`], or `EventBatch` and `TransformTestEvent`, made from the event schema)
/// its body is. `true`: the body is required.
const REQUEST_BODIES: [(&str, &str, &str, bool); 11] = [
    ("post", "/v1/events", "Event", true),
    ("post", "/v1/events/batch", "EventBatch", true),
    ("post", "/v1/tenants", "NewTenant", true),
    ("patch", "/v1/tenants/{id}", "TenantPatch", true),
    ("post", "/v1/subscriptions", "NewSubscription", true),
    ("patch", "/v1/subscriptions/{id}", "SubscriptionPatch", true),
    (
        "post",
        "/v1/subscriptions/{id}/secret/rotate",
        "SecretRotation",
        false,
    ),
    (
        "post",
        "/v1/subscriptions/{id}/replay",
        "ReplayWindow",
        true,
    ),
    (
        "post",
        "/v1/tenants/{tenant}/transforms/{name}/versions/{version}/test",
        "TransformTestEvent",
        true,
    ),
    ("post", PORTAL_LINK, "PortalLinkRequest", false),
    (
        "post",
        "/v1/tenants/{id}/notifications",
        "NotificationEndpoint",
        true,
    ),
];

/// The dashboard's route in the API's document (served with `/ui`, after the guard).
const PORTAL_LINK: &str = "/v1/tenants/{id}/portal-link";

/// The operations that publish, the only ones the intake queue can refuse (429).
const PUBLISHING: [&str; 2] = ["/v1/events", "/v1/events/batch"];

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// The document for a server with `cfg`'s limits (see the module docs).
pub(super) fn document(cfg: &ApiConfig) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let schemas = &mut doc["components"]["schemas"];
    for (name, _, text) in REQUEST_SCHEMAS {
        schemas[name] = request_schema(text);
    }
    schemas["EventBatch"] = json!({
        "description": format!(
            "1 to {} event envelopes, journaled in one commit. An item that breaks the event \
             schema refuses the whole batch (400, `field` names the item); an item the engine \
             refuses for another reason is reported in its place.",
            cfg.batch_max_items
        ),
        "type": "array",
        "minItems": 1,
        "maxItems": cfg.batch_max_items,
        "items": {"$ref": "#/components/schemas/Event"},
    });
    // The transform test takes an event of the path's tenant: the event schema with its
    // `tenantId` optional and ignored (the handler overwrites it before the schema check).
    let mut test_event = schemas["Event"].clone();
    if let Some(required) = test_event["required"].as_array_mut() {
        required.retain(|r| r != "tenantId");
    }
    test_event["properties"]["tenantId"] =
        json!({"description": "Ignored: the event is the tenant's of the path"});
    schemas["TransformTestEvent"] = test_event;
    for (method, path, component, required) in REQUEST_BODIES {
        doc["paths"][path][method]["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{component}")}
            }},
        });
    }
    doc["paths"]["/v1/tenants/{tenant}/transforms/{name}"]["put"]["requestBody"]["content"] = json!({
        "application/wasm": {"schema": {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/wasm",
            "description": "The component's bytes, as `wasm-tools component new` writes them",
        }}
    });
    portal_link(&mut doc, cfg);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                    shared_refusals(path, op);
                }
            }
        }
    }
    add_links(&mut doc);
    drop_unreferenced_schemas(&mut doc);
    doc
}

/// `POST /v1/tenants/{id}/portal-link` as `cfg` serves it: with its own refusals, or not at all
/// when the dashboard is off. A life over `ui.maxPortalLinkTtl` is the rules' refusal (422),
/// as the configured maximum is not the document's to state.
fn portal_link(doc: &mut Value, cfg: &ApiConfig) {
    if !cfg.ui.enabled {
        if let Some(paths) = doc["paths"].as_object_mut() {
            paths.remove(PORTAL_LINK);
        }
        return;
    }
    if let Some(responses) = doc["paths"][PORTAL_LINK]["post"]["responses"].as_object_mut() {
        add_refusal(responses, "403", "Needs the admin key", false);
        add_refusal(responses, "404", "No such tenant", false);
        add_refusal(
            responses,
            "422",
            "ttlSeconds over the server's longest life (ui.maxPortalLinkTtl, 1 h by default)",
            false,
        );
    }
}

/// A request schema file as a component: its `$defs` inlined (a component's own `#/$defs/…`
/// would point into the document's root), its `$schema` and `title` left out.
fn request_schema(text: &str) -> Value {
    let mut schema: Value = serde_json::from_str(text).unwrap_or_default();
    let defs = schema
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("title");
            o.remove("$defs")
        })
        .unwrap_or_default();
    inline_defs(&mut schema, &defs);
    schema
}

fn inline_defs(v: &mut Value, defs: &Value) {
    if let Some(name) = v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        && let Some(def) = defs.get(name)
    {
        *v = def.clone();
    }
    match v {
        Value::Object(o) => o.values_mut().for_each(|c| inline_defs(c, defs)),
        Value::Array(a) => a.iter_mut().for_each(|c| inline_defs(c, defs)),
        _ => {}
    }
}

/// The refusals of the layers in front of every handler, added to `op` unless it lists them
/// already: the body's (400 syntax or schema, 408, 413, 415), the key's (401), the intake
/// queue's (429, publishing only), and 500 and 503 (starting, stopping, the journal
/// unavailable, too many connections), which any route can answer.
fn shared_refusals(path: &str, op: &mut Map<String, Value>) {
    let public = op.get("security") == Some(&json!([{}]));
    let body = op.get("requestBody");
    let has_body = body.is_some();
    let checks_content_type = body.is_some_and(|b| b["required"] == json!(true));
    let has_parameters = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(|p| p["in"] != json!("path")));
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |status: &str, description: &str, retry_after: bool| {
        add_refusal(responses, status, description, retry_after);
    };
    if has_body || has_parameters {
        add(
            "400",
            "Does not match this document: malformed JSON, nesting deeper than the limit, a \
             body that breaks its schema (`field` is the JSON pointer), or a parameter that \
             does not parse",
            false,
        );
    }
    if !public {
        add("401", "Missing, malformed or unknown API key", false);
    }
    if has_body {
        add(
            "408",
            "The body did not arrive within the body read timeout",
            false,
        );
        add(
            "413",
            "The body is over this route's limit (the rest of it is read and discarded within \
             a bound, then the connection is closed)",
            false,
        );
    }
    if checks_content_type {
        add("415", "Not the content type this route takes", false);
    }
    if PUBLISHING.contains(&path) {
        add(
            "429",
            "The journal's intake queue is full; nothing was accepted",
            true,
        );
    }
    add(
        "500",
        "Internal error: an opaque body with the request id its cause is logged under",
        false,
    );
    add(
        "503",
        "Starting (journal recovery), stopping, the journal unavailable, or the connection \
         limit reached; nothing was accepted",
        true,
    );
    for (status, r) in responses.iter_mut() {
        if r["description"].as_str().is_none_or(str::is_empty) {
            r["description"] = json!(match status.as_str() {
                "200" | "201" => "Done",
                "404" => "No such resource, or another tenant's (the same answer)",
                "409" => "Conflicting state",
                _ => "See the error body",
            });
        }
    }
}

/// Adds `status` with the error body to `responses`, keeping a description it has. A 503
/// that has a body of its own (`/readyz`) may also be the accept loop's error body.
fn add_refusal(
    responses: &mut Map<String, Value>,
    status: &str,
    description: &str,
    retry_after: bool,
) {
    let error = json!({"$ref": "#/components/schemas/ErrorResponse"});
    let entry = responses.entry(status).or_insert_with(|| json!({}));
    if entry["description"].as_str().is_none_or(str::is_empty) {
        entry["description"] = json!(description);
    }
    let own = &entry["content"]["application/json"]["schema"];
    let schema = if own.is_null() || *own == error {
        error
    } else {
        json!({"anyOf": [own.clone(), error]})
    };
    entry["content"] = json!({"application/json": {"schema": schema}});
    if retry_after {
        entry["headers"] = retry_after_header();
    }
}

fn retry_after_header() -> Value {
    json!({"Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }})
}

/// A response that links to other operations: path, method, status, and the links (the
/// target's operationId and the link object without it).
type LinkSource = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, Value)>,
);

/// OpenAPI links: from the response that creates or lists a resource to the operations that
/// take its id.
fn add_links(doc: &mut Value) {
    let tenant_body = json!({"tenantId": "$response.body#/id"});
    let links: [LinkSource; 5] = [
        (
            "/v1/tenants",
            "post",
            "201",
            vec![
                (
                    "get_tenant",
                    json!({"parameters": {"id": "$response.body#/id"}}),
                ),
                (
                    "update_tenant",
                    json!({"parameters": {"id": "$response.body#/id"}}),
                ),
                (
                    "create_subscription",
                    json!({"requestBody": tenant_body.clone()}),
                ),
                (
                    "list_subscriptions",
                    json!({"parameters": {"tenantId": "$response.body#/id"}}),
                ),
                ("publish", json!({"requestBody": tenant_body})),
                (
                    "list_transforms",
                    json!({"parameters": {"tenant": "$response.body#/id"}}),
                ),
                (
                    "upload_transform",
                    json!({"parameters": {"tenant": "$response.body#/id"}}),
                ),
            ],
        ),
        (
            "/v1/subscriptions",
            "post",
            "201",
            [
                "get_subscription",
                "update_subscription",
                "delete_subscription",
                "pause_subscription",
                "resume_subscription",
                "rotate_secret",
                "test_endpoint",
                "list_deliveries",
                "replay",
            ]
            .into_iter()
            .map(|op| (op, json!({"parameters": {"id": "$response.body#/id"}})))
            .collect(),
        ),
        (
            "/v1/subscriptions/{id}/deliveries",
            "get",
            "200",
            ["get_delivery", "resubmit", "skip"]
                .into_iter()
                .map(|op| {
                    (
                        op,
                        json!({"parameters": {"id": "$response.body#/items/0/id"}}),
                    )
                })
                .collect(),
        ),
        (
            "/v1/tenants/{tenant}/transforms/{name}",
            "put",
            "201",
            transform_links(),
        ),
        (
            "/v1/tenants/{tenant}/transforms/{name}",
            "put",
            "200",
            transform_links(),
        ),
    ];
    for (path, method, status, targets) in links {
        let response = &mut doc["paths"][path][method]["responses"][status];
        for (op, mut link) in targets {
            link["operationId"] = json!(op);
            response["links"][op] = link;
        }
    }
}

fn transform_links() -> Vec<(&'static str, Value)> {
    let same = json!({"tenant": "$request.path.tenant", "name": "$request.path.name"});
    vec![
        ("get_transform", json!({"parameters": same.clone()})),
        ("delete_transform", json!({"parameters": same})),
        (
            "test_transform",
            json!({"parameters": {
                "tenant": "$request.path.tenant",
                "name": "$request.path.name",
                "version": "$response.body#/version",
            }}),
        ),
    ]
}

/// Drops the component schemas nothing refers to any more (utoipa's own descriptions of the
/// request types the schema files replaced).
fn drop_unreferenced_schemas(doc: &mut Value) {
    let mut used = std::collections::BTreeSet::new();
    let mut todo = Vec::new();
    collect_refs(&doc["paths"], &mut todo);
    while let Some(name) = todo.pop() {
        if used.insert(name.clone()) {
            collect_refs(&doc["components"]["schemas"][&name], &mut todo);
        }
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.retain(|name, _| used.contains(name));
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(name) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.push(name.to_owned());
            }
            o.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each_operation(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push((path.clone(), method.to_owned(), op.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_json_body_is_a_schema_file() {
        let doc = openapi();
        let named: Vec<String> = REQUEST_SCHEMAS
            .iter()
            .map(|(n, _, _)| format!("#/components/schemas/{n}"))
            .chain(
                ["EventBatch", "TransformTestEvent"].map(|n| format!("#/components/schemas/{n}")),
            )
            .collect();
        for (path, method, op) in each_operation(&doc) {
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            if let Some(json) = content.get("application/json") {
                let r = json["schema"]["$ref"].as_str().unwrap_or_default();
                assert!(
                    named.iter().any(|n| n == r),
                    "{method} {path}: its body is {r:?}, not a schema file"
                );
            }
        }
        // The files' text, $defs inlined, is what the document holds.
        for (name, _, text) in REQUEST_SCHEMAS {
            assert_eq!(doc["components"]["schemas"][name], request_schema(text));
            assert!(
                !doc["components"]["schemas"][name]
                    .to_string()
                    .contains("$defs")
            );
        }
    }

    #[test]
    fn every_operation_lists_the_shared_refusals() {
        let doc = openapi();
        for (path, method, op) in each_operation(&doc) {
            let responses = op["responses"].as_object().expect("responses");
            let public = ["/healthz", "/readyz", "/v1/openapi.json"].contains(&path.as_str());
            assert_eq!(responses.contains_key("401"), !public, "{method} {path}");
            assert!(responses.contains_key("503"), "{method} {path}");
            assert!(responses.contains_key("500"), "{method} {path}");
            if op.get("requestBody").is_some() {
                for s in ["400", "408", "413"] {
                    assert!(responses.contains_key(s), "{method} {path} lacks {s}");
                }
            }
            for (status, r) in responses {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
        }
        let publish = &doc["paths"]["/v1/events"]["post"]["responses"];
        assert!(publish["429"]["headers"]["Retry-After"].is_object());
        assert_eq!(
            doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["application/openmetrics-text".to_owned()])
        );
    }

    #[test]
    fn links_name_operations_that_exist() {
        let doc = openapi();
        let ids: Vec<String> = each_operation(&doc)
            .iter()
            .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_owned))
            .collect();
        let mut links = 0;
        for (path, method, op) in each_operation(&doc) {
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                for (name, link) in r["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().unwrap_or_default();
                    assert!(
                        ids.iter().any(|i| i == target),
                        "{method} {path} {status} links {name} to unknown {target}"
                    );
                    links += 1;
                }
            }
        }
        assert!(links >= 20, "{links} links");
    }

    #[test]
    fn the_batch_limit_is_the_servers() {
        let cfg = ApiConfig {
            batch_max_items: 7,
            ..ApiConfig::default()
        };
        assert_eq!(
            document(&cfg)["components"]["schemas"]["EventBatch"]["maxItems"],
            7
        );
    }
}
