//! `/ui/deliveries/{id}`: one delivery, the lending seed's "MDB dashboard" row first (status,
//! HTTP code, attempt count), then every attempt (time, duration, code, error kind and message,
//! response snippet, transform log), the event's envelope as formatted JSON, with `Resubmit` (a failed delivery back to pending in its
//! place) and `Skip` (after a confirmation page) where they apply.
//!
//! Resubmit follows the engine's rule: only a failed delivery can be resubmitted; it never
//! rewrites history (the attempt log continues). Skip applies to a pending or failed one.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::super::UiState;
use super::super::error::UiResult;
use super::super::form::Form;
use super::super::session::Viewer;
use super::super::view::{Chrome, code, render, status_name, time};
use super::{ConfirmPage, flash, visible_delivery};
use crate::domain::DeliveryStatus;

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/deliveries/{id}", get(show))
        .route("/ui/deliveries/{id}/resubmit", post(resubmit))
        .route("/ui/deliveries/{id}/skip", get(skip_confirm).post(skip))
}

struct AttemptRow {
    n: u32,
    started: String,
    duration_ms: u64,
    code: String,
    error_kind: String,
    error: String,
    snippet: String,
    transform_log: String,
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    chrome: Chrome,
    id: String,
    status: &'static str,
    code: String,
    attempts: u32,
    sub_id: String,
    tenant: String,
    event_id: String,
    seq: i64,
    last_error: String,
    next_attempt: String,
    updated: String,
    log: Vec<AttemptRow>,
    /// The event's envelope, pretty-printed; `None` once retention pruned the event.
    envelope: Option<String>,
    can_resubmit: bool,
    can_skip: bool,
    flash: Option<String>,
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    done: Option<String>,
}

async fn show(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> UiResult<Html<String>> {
    let (did, _) = visible_delivery(&state, &viewer, &id).await?;
    let detail = state.engine.get_delivery(did).await?;
    let d = detail.delivery;
    let envelope = state
        .engine
        .event_body(&d.tenant_id, &d.event_id)
        .await?
        .map(|b| super::transforms::pretty(&b));
    let log = detail
        .attempt_log
        .into_iter()
        .map(|a| AttemptRow {
            n: a.n,
            started: time(a.started_at),
            duration_ms: a.duration_ms,
            code: code(a.status_code),
            error_kind: a.error_kind.unwrap_or_default(),
            error: a.error.unwrap_or_default(),
            snippet: a.response_snippet.unwrap_or_default(),
            transform_log: a.transform_log.unwrap_or_default(),
        })
        .collect();
    render(&DeliveryPage {
        chrome: viewer.chrome("subscriptions"),
        id: d.id.to_string(),
        status: status_name(d.status),
        code: code(d.last_status_code),
        attempts: d.attempts,
        sub_id: d.subscription_id.to_string(),
        tenant: d.tenant_id.to_string(),
        event_id: d.event_id.to_string(),
        seq: d.seq,
        last_error: d.last_error.unwrap_or_default(),
        next_attempt: d.next_attempt_at.map(time).unwrap_or_default(),
        updated: time(d.updated_at),
        log,
        envelope,
        can_resubmit: d.status == DeliveryStatus::Failed,
        can_skip: matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Failed),
        flash: flash(q.done.as_deref(), None),
    })
}

async fn resubmit(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let (did, d) = visible_delivery(&state, &viewer, &id).await?;
    state.engine.resubmit(did).await?;
    // From the head-of-line panel, back to the subscription; otherwise to the delivery.
    let to = if form.get("back") == Some("subscription") {
        format!("/ui/subscriptions/{}?done=resubmitted", d.subscription_id)
    } else {
        format!("/ui/deliveries/{id}?done=resubmitted")
    };
    Ok(Redirect::to(&to).into_response())
}

async fn skip_confirm(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let (_, d) = visible_delivery(&state, &viewer, &id).await?;
    render(&ConfirmPage {
        chrome: viewer.chrome("subscriptions"),
        title: format!("Skip {id}?"),
        message: format!(
            "Delivery {id} (event {}, now {}) will be marked skipped and never sent; the \
             subscription's queue moves on to the next event. It stays visible here and can \
             still be re-sent later with a replay.",
            d.event_id,
            status_name(d.status)
        ),
        action: format!("/ui/deliveries/{id}/skip"),
        button: "Skip it",
        back: format!("/ui/deliveries/{id}"),
    })
}

async fn skip(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let (did, d) = visible_delivery(&state, &viewer, &id).await?;
    state.engine.skip(did).await?;
    Ok(Redirect::to(&format!(
        "/ui/subscriptions/{}?done=skipped",
        d.subscription_id
    ))
    .into_response())
}
