//! `/ui/subscriptions/{id}`: one subscription. First the head-of-line panel (what its queue
//! waits on: "blocked on dlv_… since …, attempt k, last HTTP 404", with `Resubmit`, `Skip`,
//! `Resume`, `Pause`), then its settings with secrets masked, then its deliveries filtered by
//! status and paged by cursor, and the operator's actions: send a test, rotate the secret,
//! replay from a time, resubmit every failed delivery (after showing how many). Last, the
//! operational notifications sent about it (`notify`: blocked, disabled, faulted, out of
//! retries, recovered), the newest 10, each with how its sending went.
//!
//! With ordering keys, a panel shows the lanes busy and the keys held by a failed delivery
//! (each linking to it, where it is resubmitted or skipped: only that key moves).
//!
//! The head panel is also served alone (`…/head`) for htmx to refresh it every few seconds.
//! Every action is a POST checked for the CSRF token, then a redirect back here.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::super::UiState;
use super::super::error::{UiError, UiResult};
use super::super::form::Form;
use super::super::session::Viewer;
use super::super::view::{
    self, Chrome, ago, code, is_system, render, state_name, status_name, time,
};
use super::notifications::{NoticeRow, Notices, receiver_scope};
use super::{ConfirmPage, flash, visible_subscription};
use crate::domain::{
    DeliveryQuery, DeliveryStatus, ReplayWindow, Subscription, SubscriptionState, Timestamp,
};

/// Deliveries on one page.
const PAGE: u32 = 50;
/// Most failed deliveries one bulk resubmit puts back (the page says when more remain).
pub(super) const BULK_MAX: usize = 1000;

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/subscriptions/{id}", get(show))
        .route("/ui/subscriptions/{id}/head", get(head_partial))
        .route("/ui/subscriptions/{id}/pause", post(pause))
        .route("/ui/subscriptions/{id}/resume", post(resume))
        .route("/ui/subscriptions/{id}/test", post(send_test))
        .route("/ui/subscriptions/{id}/rotate-secret", post(rotate))
        .route("/ui/subscriptions/{id}/replay", post(replay))
        .route(
            "/ui/subscriptions/{id}/resubmit-failed",
            get(bulk_confirm).post(bulk_resubmit),
        )
}

/// The head-of-line panel.
pub(super) struct HeadPanel {
    sub_id: String,
    csrf: String,
    state: &'static str,
    reason: String,
    /// `blocked`, `retrying`, `next`, `idle`, or the state when nothing runs.
    kind: &'static str,
    delivery: Option<HeadDelivery>,
    backlog: u64,
    can_pause: bool,
    can_resume: bool,
}

struct HeadDelivery {
    id: String,
    event_id: String,
    status: &'static str,
    attempts: u32,
    last_code: String,
    last_error: String,
    since: String,
    since_ago: String,
    next_attempt: String,
    failed: bool,
}

async fn head_panel(state: &UiState, viewer: &Viewer, sub: &Subscription) -> UiResult<HeadPanel> {
    let head = state.engine.head_of_line(sub).await?;
    let backlog = state
        .engine
        .queue_depths()
        .await?
        .get(&sub.id)
        .map_or(0, |d| d.depth);
    let delivery = head.map(|d| HeadDelivery {
        id: d.id.to_string(),
        event_id: d.event_id.to_string(),
        status: status_name(d.status),
        attempts: d.attempts,
        last_code: code(d.last_status_code),
        last_error: d.last_error.clone().unwrap_or_default(),
        since: time(d.updated_at),
        since_ago: ago(d.updated_at),
        next_attempt: d.next_attempt_at.map(time).unwrap_or_default(),
        failed: d.status == DeliveryStatus::Failed,
    });
    let kind = match (sub.state, &delivery) {
        (SubscriptionState::Blocked, _) => "blocked",
        (SubscriptionState::Active, Some(d)) if d.attempts > 0 => "retrying",
        (SubscriptionState::Active, Some(_)) => "next",
        (SubscriptionState::Active, None) => "idle",
        (other, _) => state_name(other),
    };
    Ok(HeadPanel {
        sub_id: sub.id.to_string(),
        csrf: viewer.csrf.clone(),
        state: state_name(sub.state),
        reason: sub.state_reason.clone().unwrap_or_default(),
        kind,
        delivery,
        backlog,
        can_pause: matches!(
            sub.state,
            SubscriptionState::Active | SubscriptionState::Blocked
        ),
        can_resume: matches!(
            sub.state,
            SubscriptionState::Paused | SubscriptionState::Disabled | SubscriptionState::Faulted
        ),
    })
}

struct DeliveryRow {
    id: String,
    seq: i64,
    event_id: String,
    status: &'static str,
    code: String,
    attempts: u32,
    updated: String,
}

/// Notifications shown on the page (the newest).
const NOTICES: u32 = 10;

#[derive(Template)]
#[template(path = "subscription.html")]
struct SubscriptionPage {
    chrome: Chrome,
    id: String,
    url: String,
    head: HeadPanel,
    settings: Vec<(&'static str, String)>,
    rows: Vec<DeliveryRow>,
    statuses: Vec<&'static str>,
    status: String,
    next: Option<String>,
    first: Option<String>,
    flash: Option<String>,
    notices: Vec<NoticeRow>,
    /// Whose notifications it receives, and whether it is the operator's (from the server's
    /// configuration), when it is one of the system tenant's receivers.
    receiver_of: Option<(String, bool)>,
    /// With ordering keys: its lanes and held keys.
    keys: Option<KeysPanel>,
}

/// A subscription's ordering keys at a glance.
struct KeysPanel {
    pointer: String,
    lanes: u16,
    busy: u32,
    /// (key as JSON, delivery id, since).
    blocked: Vec<(String, String, String)>,
}

fn keys_panel(s: &Subscription) -> Option<KeysPanel> {
    let o = s.ordering.as_ref()?;
    Some(KeysPanel {
        pointer: o.key.clone(),
        lanes: o.lanes,
        busy: s.lanes_busy.unwrap_or(0),
        blocked: s
            .blocked_keys
            .iter()
            .map(|b| (b.key.to_string(), b.delivery.to_string(), time(b.since)))
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "head.html")]
struct HeadPartial {
    head: HeadPanel,
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    status: Option<String>,
    after: Option<String>,
    done: Option<String>,
    n: Option<u64>,
}

/// The settings as label and text, secrets masked (only what the public view carries).
fn settings(s: &Subscription) -> Vec<(&'static str, String)> {
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "all".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut out = vec![
        ("URL", s.url.clone()),
        ("Tenant", s.tenant_id.to_string()),
        (
            "Notification types",
            list(
                s.notification_types
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect(),
            ),
        ),
        ("Workflow ids", list(s.workflow_ids.clone())),
        (
            "Access key",
            if s.access_key_set {
                "set (never shown)".into()
            } else {
                "none".into()
            },
        ),
        (
            "Receiver auth",
            s.auth.as_ref().map_or_else(|| "none".into(), json),
        ),
        ("Signing secret", s.secret_masked.clone()),
    ];
    if let Some(t) = s.previous_secret_expires_at {
        out.push(("Previous secret sent until", time(t)));
    }
    if let Some(k) = &s.public_key {
        out.push(("ed25519 public key", k.clone()));
    }
    out.push((
        "Headers",
        if s.headers.is_empty() {
            "none".into()
        } else {
            s.headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    ));
    out.push((
        "Retry",
        format!(
            "{} attempts; backoff {} ms",
            s.retry.max_attempts,
            s.retry
                .backoff_ms
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    out.push(("Timeout", format!("{} ms", s.timeout_ms)));
    out.push((
        "On failure",
        match s.on_failure {
            crate::domain::FailurePolicy::Block => "block".into(),
            crate::domain::FailurePolicy::Skip => "skip".into(),
        },
    ));
    out.push((
        "Rate limit",
        s.rate_limit.as_ref().map_or_else(
            || "none".into(),
            |r| format!("{}/s, burst {}", r.per_second, r.burst),
        ),
    ));
    out.push((
        "Transform",
        s.transform
            .as_ref()
            .map_or_else(|| "none".into(), |t| format!("{} v{}", t.name, t.version)),
    ));
    out.push(("TLS", s.tls.as_ref().map_or_else(|| "default".into(), json)));
    out.push(("Created", time(s.created_at)));
    out.push(("Updated", time(s.updated_at)));
    out
}

/// A non-secret view as compact JSON: exactly what the API shows of it.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

async fn show(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> UiResult<Html<String>> {
    let sub = visible_subscription(&state, &viewer, &id).await?;
    let status_text = q
        .status
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_default();
    let status =
        if status_text.is_empty() {
            None
        } else {
            Some(DeliveryStatus::parse(&status_text).ok_or_else(|| {
                UiError::Invalid(format!("status: unknown status {status_text:?}"))
            })?)
        };
    let page = state
        .engine
        .list_deliveries(
            &sub.id,
            DeliveryQuery {
                status,
                limit: Some(PAGE),
                after: q.after.clone().filter(|a| !a.is_empty()),
            },
        )
        .await?;
    let base = format!(
        "/ui/subscriptions/{}?status={}",
        sub.id,
        view::urlencode(&status_text)
    );
    let rows = page
        .items
        .iter()
        .map(|d| DeliveryRow {
            id: d.id.to_string(),
            seq: d.seq,
            event_id: d.event_id.to_string(),
            status: status_name(d.status),
            code: code(d.last_status_code),
            attempts: d.attempts,
            updated: time(d.updated_at),
        })
        .collect();
    let view = SubscriptionPage {
        chrome: viewer.chrome("subscriptions"),
        id: sub.id.to_string(),
        url: sub.url.clone(),
        head: head_panel(&state, &viewer, &sub).await?,
        settings: settings(&sub),
        keys: keys_panel(&sub),
        rows,
        statuses: view::STATUSES.iter().map(|s| status_name(*s)).collect(),
        status: status_text,
        next: page
            .next
            .map(|c| format!("{base}&after={}", view::urlencode(&c))),
        first: q.after.is_some().then(|| base.clone()),
        flash: flash(q.done.as_deref(), q.n),
        notices: Notices::audience(&state, &viewer).await?.rows(
            &state.engine.notifications_about(&sub.id, NOTICES).await?,
            &std::iter::once((&sub.id, &sub)).collect(),
        ),
        receiver_of: is_system(sub.tenant_id.as_str())
            .then(|| (receiver_scope(&sub), sub.workflow_ids.is_empty())),
    };
    render(&view)
}

async fn head_partial(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let sub = visible_subscription(&state, &viewer, &id).await?;
    render(&HeadPartial {
        head: head_panel(&state, &viewer, &sub).await?,
    })
}

fn back(id: &str, done: &str) -> Response {
    Redirect::to(&format!("/ui/subscriptions/{id}?done={done}")).into_response()
}

async fn pause(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let sub = visible_subscription(&state, &viewer, &id).await?;
    state.engine.pause_subscription(&sub.id).await?;
    Ok(back(&id, "paused"))
}

async fn resume(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let sub = visible_subscription(&state, &viewer, &id).await?;
    state.engine.resume_subscription(&sub.id).await?;
    Ok(back(&id, "resumed"))
}

#[derive(Template)]
#[template(path = "endpoint_test.html")]
struct TestPage {
    chrome: Chrome,
    id: String,
    url: String,
    code: String,
    duration: u64,
    error: String,
    verified: bool,
}

async fn send_test(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Html<String>> {
    viewer.check_csrf(&form)?;
    let sub = visible_subscription(&state, &viewer, &id).await?;
    let t = state.engine.test_endpoint(&sub.id).await?;
    render(&TestPage {
        chrome: viewer.chrome("subscriptions"),
        id,
        url: sub.url,
        code: code(t.status_code),
        duration: t.duration_ms,
        error: t.error.unwrap_or_default(),
        verified: t.verified,
    })
}

async fn rotate(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let sub = visible_subscription(&state, &viewer, &id).await?;
    // The operator gives the new secret, so the page never has to show one.
    let secret = form
        .get("secret")
        .ok_or_else(|| UiError::Invalid("secret: paste the new secret (whsec_…)".into()))?;
    let grace = match form.get("graceHours") {
        None => None,
        Some(h) => Some(std::time::Duration::from_secs(
            h.parse::<u64>()
                .map_err(|_| UiError::Invalid("graceHours: must be a whole number".into()))?
                .saturating_mul(3600),
        )),
    };
    state
        .engine
        .rotate_secret(&sub.id, Some(secret.to_owned()), grace)
        .await?;
    Ok(back(&id, "rotated"))
}

/// A `datetime-local` value (`2026-12-02T10:00`, taken as UTC) or RFC 3339, as RFC 3339.
fn as_rfc3339(field: &str, v: &str) -> UiResult<String> {
    let candidates = [v.to_owned(), format!("{v}Z"), format!("{v}:00Z")];
    candidates
        .into_iter()
        .find(|c| Timestamp::parse(c).is_ok())
        .ok_or_else(|| UiError::Invalid(format!("{field}: expected a date and time (UTC)")))
}

async fn replay(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let sub = visible_subscription(&state, &viewer, &id).await?;
    let since = as_rfc3339(
        "since",
        form.get("since")
            .ok_or_else(|| UiError::Invalid("since: required".into()))?,
    )?;
    let until = form
        .get("until")
        .map(|u| as_rfc3339("until", u))
        .transpose()?;
    let receipt = state
        .engine
        .replay(&sub.id, ReplayWindow { since, until })
        .await?;
    Ok(Redirect::to(&format!(
        "/ui/subscriptions/{id}?done=replayed&n={}",
        receipt.replayed
    ))
    .into_response())
}

/// The failed deliveries of a subscription in order, at most `max` (and whether more remain).
async fn failed_ids(
    state: &UiState,
    sub: &Subscription,
    max: usize,
) -> UiResult<(Vec<crate::domain::DeliveryId>, bool)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .engine
            .list_deliveries(
                &sub.id,
                DeliveryQuery {
                    status: Some(DeliveryStatus::Failed),
                    limit: Some(1000),
                    after,
                },
            )
            .await?;
        out.extend(page.items.iter().map(|d| d.id));
        if out.len() > max {
            out.truncate(max);
            return Ok((out, true));
        }
        match page.next {
            Some(c) => after = Some(c),
            None => return Ok((out, false)),
        }
    }
}

async fn bulk_confirm(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let sub = visible_subscription(&state, &viewer, &id).await?;
    let (ids, more) = failed_ids(&state, &sub, BULK_MAX).await?;
    let message = match (ids.len(), more) {
        (0, _) => {
            "No delivery of this subscription is failed: there is nothing to resubmit.".into()
        }
        (n, false) => format!(
            "{n} failed deliveries will go back to pending, each in its place in the order, with a fresh retry budget."
        ),
        (n, true) => format!(
            "More than {n} deliveries are failed; the first {n} will go back to pending, each in its place in the order. Run it again for the rest."
        ),
    };
    render(&ConfirmPage {
        chrome: viewer.chrome("subscriptions"),
        title: format!("Resubmit the failed deliveries of {}", sub.url),
        message,
        action: format!("/ui/subscriptions/{id}/resubmit-failed"),
        button: "Resubmit them",
        back: format!("/ui/subscriptions/{id}"),
    })
}

async fn bulk_resubmit(
    State(state): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    let sub = visible_subscription(&state, &viewer, &id).await?;
    let (ids, _) = failed_ids(&state, &sub, BULK_MAX).await?;
    let mut done = 0u64;
    for d in ids {
        match state.engine.resubmit(d).await {
            Ok(_) => done += 1,
            // Resubmitted or skipped by someone else meanwhile: nothing left to do for it.
            Err(crate::error::Error::Conflict(_) | crate::error::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Redirect::to(&format!("/ui/subscriptions/{id}?done=bulk&n={done}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_times_are_taken_as_utc() {
        assert_eq!(
            as_rfc3339("since", "2026-12-02T10:00").ok().as_deref(),
            Some("2026-12-02T10:00:00Z")
        );
        assert_eq!(
            as_rfc3339("since", "2026-12-02T10:00:05").ok().as_deref(),
            Some("2026-12-02T10:00:05Z")
        );
        assert!(as_rfc3339("since", "yesterday").is_err());
    }
}
