//! `/ui/find`: what happened to an event, everywhere it went. Search a tenant's events by the
//! envelope's `transactionId`, `referenceId` or the event id, and see each one with its delivery
//! to every subscription (status, HTTP code, attempts); or jump to a delivery (`dlv_…`) or a
//! subscription (`sub_…`) by its id.
//!
//! The search is the engine's [`find_events`](crate::engine::EngineHandle::find_events), indexed
//! per tenant (never a scan): a tenant searches its own events, the admin picks a tenant.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::super::UiState;
use super::super::error::{UiError, UiResult};
use super::super::session::Viewer;
use super::super::view::{Chrome, TenantOption, code, render, status_name, tenant_options, time};
use super::{visible_delivery, visible_subscription};
use crate::domain::{EventKey, TenantId};

/// Most events one search shows.
const LIMIT: u32 = 20;

pub(super) fn routes() -> Router<UiState> {
    Router::new().route("/ui/find", get(find))
}

#[derive(Deserialize, Default)]
struct FindQuery {
    q: Option<String>,
    by: Option<String>,
    tenant: Option<String>,
}

struct DeliveryRow {
    id: String,
    subscription: String,
    status: &'static str,
    code: String,
    attempts: u32,
}

struct EventRow {
    id: String,
    transaction_id: String,
    reference_id: String,
    notification_type: &'static str,
    accepted: String,
    deliveries: Vec<DeliveryRow>,
}

#[derive(Template)]
#[template(path = "find.html")]
struct FindPage {
    chrome: Chrome,
    q: String,
    by: String,
    tenant: String,
    tenants: Vec<TenantOption>,
    events: Vec<EventRow>,
    message: String,
}

async fn find(
    State(state): State<UiState>,
    viewer: Viewer,
    Query(fq): Query<FindQuery>,
) -> UiResult<Response> {
    let q = fq.q.unwrap_or_default().trim().to_owned();
    let by = fq
        .by
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "transactionId".into());
    // Ids go straight to their page.
    if q.starts_with("dlv_") {
        return match visible_delivery(&state, &viewer, &q).await {
            Ok(_) => Ok(Redirect::to(&format!("/ui/deliveries/{q}")).into_response()),
            Err(UiError::NotFound(_)) => {
                page(&state, &viewer, q, by, None, "No such delivery.").await
            }
            Err(e) => Err(e),
        };
    }
    if q.starts_with("sub_") {
        return match visible_subscription(&state, &viewer, &q).await {
            Ok(_) => Ok(Redirect::to(&format!("/ui/subscriptions/{q}")).into_response()),
            Err(UiError::NotFound(_)) => {
                page(&state, &viewer, q, by, None, "No such subscription.").await
            }
            Err(e) => Err(e),
        };
    }
    let tenant = match (viewer.own_tenant(), fq.tenant.filter(|t| !t.is_empty())) {
        (Some(own), None) => Some(own.clone()),
        (Some(own), Some(t)) if t == own.as_str() => Some(own.clone()),
        (Some(_), Some(t)) => return Err(UiError::NotFound(format!("tenant {t} not found"))),
        (None, t) => t.map(TenantId::from),
    };
    page(&state, &viewer, q, by, tenant, "").await
}

async fn page(
    state: &UiState,
    viewer: &Viewer,
    q: String,
    by: String,
    tenant: Option<TenantId>,
    message: &str,
) -> UiResult<Response> {
    let mut message = message.to_owned();
    let mut events = Vec::new();
    let searched = !q.is_empty() && message.is_empty();
    if searched {
        match &tenant {
            None => message = "Pick the tenant whose events to search.".into(),
            Some(t) => {
                let key = match by.as_str() {
                    "referenceId" => EventKey::ReferenceId(q.clone()),
                    "eventId" => EventKey::EventId(q.clone()),
                    _ => EventKey::TransactionId(q.clone()),
                };
                for e in state.engine.find_events(t, &key, LIMIT).await? {
                    events.push(EventRow {
                        id: e.id.to_string(),
                        transaction_id: e.transaction_id,
                        reference_id: e.reference_id.unwrap_or_default(),
                        notification_type: e.notification_type.as_str(),
                        accepted: time(e.accepted_at),
                        deliveries: e
                            .deliveries
                            .into_iter()
                            .map(|d| DeliveryRow {
                                id: d.id.to_string(),
                                subscription: d.subscription_id.to_string(),
                                status: status_name(d.status),
                                code: code(d.last_status_code),
                                attempts: d.attempts,
                            })
                            .collect(),
                    });
                }
                if events.is_empty() {
                    message = format!("No event of {t} has this {by}.");
                }
            }
        }
    }
    let tenants = if viewer.is_admin() {
        tenant_options(
            state
                .engine
                .list_subscriptions(None)
                .await?
                .into_iter()
                .map(|s| s.tenant_id.to_string()),
        )
    } else {
        Vec::new()
    };
    let html = render(&FindPage {
        chrome: viewer.chrome("find"),
        q,
        by,
        tenant: tenant.map(|t| t.to_string()).unwrap_or_default(),
        tenants,
        events,
        message,
    })?;
    Ok(html.into_response())
}
