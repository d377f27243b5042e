//! `/ui/notifications`: hookline's operational notifications (see `notify`) as the viewer may
//! see them: the receivers they go to, and the newest notifications, each with the subscription
//! it is about, the delivery that caused it and how its sending went (a receiver's row: its
//! state, what waits for it, its attempts of the last 24 hours from the rollup). The admin sees every
//! receiver (the operator's and every tenant's) and every notification; a tenant sees its own
//! receivers and the notifications about its own subscriptions, and counts only the sendings
//! to its own receivers (the operator's receivers are not its business).
//!
//! Receivers are subscriptions of the system tenant `_hookline`: the admin reaches their pages
//! (links); a tenant does not (they are not its tenant's), so its rows are not links. The rows
//! built here are also the overview's "latest notifications" and a subscription page's list.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;

use super::super::UiState;
use super::super::error::UiResult;
use super::super::session::Viewer;
use super::super::view::{Chrome, render, state_name, time};
use crate::domain::{DeliveryStatus, EventTrace, Subscription, SubscriptionId};

/// Notifications on the page.
const PAGE: u32 = 50;

pub(super) fn routes() -> Router<UiState> {
    Router::new().route("/ui/notifications", get(page))
}

/// One notification.
pub(super) struct NoticeRow {
    /// `blocked`, `disabled`, `faulted`, `exhausted` or `recovered` (from the event id).
    pub kind: String,
    /// The badge class its kind looks like.
    pub badge: &'static str,
    pub at: String,
    /// The subscription it is about: id, and its URL when it still exists (else the id).
    pub sub_id: String,
    pub sub_url: String,
    /// The subscription's tenant, when it still exists.
    pub tenant: String,
    /// The delivery that caused it, if any.
    pub delivery: Option<String>,
    /// How its sending went, e.g. "2 of 2 receivers delivered".
    pub sent: String,
}

/// One receiver of notifications.
pub(super) struct ReceiverRow {
    pub id: String,
    pub url: String,
    /// Whose notifications it gets: "every tenant" (the operator's) or "tenant acme".
    pub scope: String,
    pub state: &'static str,
    pub reason: String,
    pub backlog: u64,
    /// Its attempts of the last 24 hours: "12 delivered, 1 failed".
    pub last_day: String,
    /// The viewer may open its page (the admin).
    pub link: bool,
}

/// What a viewer sees of the notification machinery.
pub(super) struct Notices {
    pub receivers: Vec<ReceiverRow>,
    /// The ids of `receivers`: the only sendings counted in a row's "sent".
    visible: HashSet<SubscriptionId>,
    /// The viewer sees every receiver (the admin).
    all: bool,
}

/// The receivers `viewer` may see: every one for the admin, its own for a tenant.
async fn visible_receivers(state: &UiState, viewer: &Viewer) -> UiResult<Vec<Subscription>> {
    Ok(match viewer.own_tenant() {
        None => state.engine.notification_receivers().await?,
        Some(t) => state.engine.notification_endpoints(t).await?,
    })
}

impl Notices {
    /// Who `viewer` may see notifications go to, without the receivers' rows (a page that
    /// lists notifications but not receivers).
    pub(super) async fn audience(state: &UiState, viewer: &Viewer) -> UiResult<Notices> {
        Ok(Notices {
            visible: visible_receivers(state, viewer)
                .await?
                .into_iter()
                .map(|r| r.id)
                .collect(),
            receivers: Vec::new(),
            all: viewer.is_admin(),
        })
    }

    /// The receivers `viewer` may see, each with its state, backlog and last HTTP code.
    pub(super) async fn load(state: &UiState, viewer: &Viewer) -> UiResult<Notices> {
        let receivers = visible_receivers(state, viewer).await?;
        let depths = state.engine.queue_depths().await?;
        let ids: Vec<_> = receivers.iter().map(|r| r.id.clone()).collect();
        let hours = state.engine.attempt_hours(&ids).await?;
        let mut rows = Vec::with_capacity(receivers.len());
        for r in &receivers {
            let (ok, failed) = hours
                .get(&r.id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .fold((0, 0), |(a, b), (_, ok, f)| (a + ok, b + f));
            rows.push(ReceiverRow {
                id: r.id.to_string(),
                url: r.url.clone(),
                scope: receiver_scope(r),
                state: state_name(r.state),
                reason: r.state_reason.clone().unwrap_or_default(),
                backlog: depths.get(&r.id).map_or(0, |d| d.depth),
                last_day: format!("{ok} delivered, {failed} failed"),
                link: viewer.is_admin(),
            });
        }
        Ok(Notices {
            visible: receivers.into_iter().map(|r| r.id).collect(),
            receivers: rows,
            all: viewer.is_admin(),
        })
    }

    /// The rows of `traces`; `subs` names the subscriptions they are about (by id).
    pub(super) fn rows(
        &self,
        traces: &[EventTrace],
        subs: &HashMap<&SubscriptionId, &Subscription>,
    ) -> Vec<NoticeRow> {
        traces.iter().map(|t| self.row(t, subs)).collect()
    }

    fn row(&self, t: &EventTrace, subs: &HashMap<&SubscriptionId, &Subscription>) -> NoticeRow {
        let kind =
            t.id.as_str()
                .split('_')
                .nth(1)
                .unwrap_or("notification")
                .to_string();
        let badge = match kind.as_str() {
            "recovered" => "active",
            "disabled" => "disabled",
            _ => "failed",
        };
        let mine: Vec<_> = t
            .deliveries
            .iter()
            .filter(|d| self.visible.contains(&d.subscription_id))
            .collect();
        let done = mine
            .iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count();
        let sent = match mine.len() {
            0 if self.all => "no receiver".to_string(),
            0 => "none of your receivers".to_string(),
            n => format!("{done} of {n} receivers delivered"),
        };
        let about = SubscriptionId::from(t.transaction_id.as_str());
        let sub = subs.get(&about);
        NoticeRow {
            kind,
            badge,
            at: time(t.accepted_at),
            sub_url: sub.map_or_else(|| t.transaction_id.clone(), |s| s.url.clone()),
            tenant: sub.map(|s| s.tenant_id.to_string()).unwrap_or_default(),
            sub_id: t.transaction_id.clone(),
            delivery: t.reference_id.clone().filter(|r| r.starts_with("dlv_")),
            sent,
        }
    }
}

/// Whose notifications a receiver (a subscription of the system tenant) gets.
pub(super) fn receiver_scope(r: &Subscription) -> String {
    if r.workflow_ids.is_empty() {
        "every tenant (server configuration)".into()
    } else {
        format!("tenant {}", r.workflow_ids.join(", "))
    }
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    chrome: Chrome,
    receivers: Vec<ReceiverRow>,
    notices: Vec<NoticeRow>,
}

async fn page(State(state): State<UiState>, viewer: Viewer) -> UiResult<Html<String>> {
    let notices = Notices::load(&state, &viewer).await?;
    let subs = state.engine.list_subscriptions(viewer.own_tenant()).await?;
    let by_id: HashMap<_, _> = subs.iter().map(|s| (&s.id, s)).collect();
    let traces = state
        .engine
        .recent_notifications(viewer.own_tenant(), PAGE)
        .await?;
    let rows = notices.rows(&traces, &by_id);
    render(&NotificationsPage {
        chrome: viewer.chrome("notifications"),
        receivers: notices.receivers,
        notices: rows,
    })
}
