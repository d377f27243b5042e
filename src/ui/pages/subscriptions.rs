//! `/ui/subscriptions`: every subscription the viewer may see, with its state (and why), its
//! backlog, how long its oldest waiting event has waited, and the last HTTP code of the delivery
//! at its head, and its last 24 hours; filtered by state and tenant, searched by URL or id, 50 to a page.
//!
//! Each row also has a 24-hour sparkline of its attempts' outcomes (inline SVG, a column per
//! hour). The catalog of subscriptions is read whole and filtered here (it is small next to the
//! journal); the per-row head lookups are two indexed reads each, and the sparklines one read
//! of the page's rows in the per-minute rollup (at most 1,440 minutes per subscription), made
//! only for the rows on the page, so a page costs the same whatever the number of deliveries.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use serde::Deserialize;

use super::super::UiState;
use super::super::error::UiResult;
use super::super::session::Viewer;
use super::super::view::{
    self, Chrome, TenantOption, age, code, is_system, render, state_name, tenant_options, urlencode,
};

/// Rows on one page.
const PAGE: usize = 50;

pub(super) fn routes() -> Router<UiState> {
    Router::new().route("/ui/subscriptions", get(list))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    state: Option<String>,
    tenant: Option<String>,
    q: Option<String>,
    page: Option<usize>,
}

/// One row of the list.
struct Row {
    id: String,
    url: String,
    tenant: String,
    /// The system tenant's: a receiver of operational notifications.
    system: bool,
    state: &'static str,
    reason: String,
    backlog: u64,
    /// With ordering keys: "2 keys held" while failed deliveries hold keys (the subscription
    /// itself stays active, its other keys flowing); empty otherwise.
    held: String,
    head_age: String,
    head: String,
    last_code: String,
    /// Attempts per hour over the last 24 hours.
    spark: view::ColumnChart,
    /// The sparkline's summary, for its tooltip and screen readers.
    spark_label: String,
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    total: usize,
    states: Vec<&'static str>,
    tenants: Vec<TenantOption>,
    state: String,
    tenant: String,
    q: String,
    prev: Option<String>,
    next: Option<String>,
}

async fn list(
    State(state): State<UiState>,
    viewer: Viewer,
    Query(lq): Query<ListQuery>,
) -> UiResult<Html<String>> {
    let all = state.engine.list_subscriptions(viewer.own_tenant()).await?;
    let tenants: Vec<String> = all.iter().map(|s| s.tenant_id.to_string()).collect();
    let want_state = lq
        .state
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_default();
    let want_tenant = lq
        .tenant
        .clone()
        .filter(|s| !s.is_empty() && viewer.is_admin())
        .unwrap_or_default();
    let q = lq.q.clone().unwrap_or_default();
    let needle = q.trim().to_lowercase();
    let matching: Vec<_> = all
        .into_iter()
        .filter(|s| want_state.is_empty() || state_name(s.state) == want_state)
        .filter(|s| want_tenant.is_empty() || s.tenant_id.as_str() == want_tenant)
        .filter(|s| {
            needle.is_empty()
                || s.url.to_lowercase().contains(&needle)
                || s.id.as_str().to_lowercase().contains(&needle)
        })
        .collect();
    let total = matching.len();
    let page = lq.page.unwrap_or(0);
    let depths = state.engine.queue_depths().await?;
    let held = state.engine.held_key_counts().await?;
    let on_page: Vec<_> = matching
        .iter()
        .skip(page.saturating_mul(PAGE))
        .take(PAGE)
        .collect();
    let ids: Vec<_> = on_page.iter().map(|s| s.id.clone()).collect();
    let hours = state.engine.attempt_hours(&ids).await?;
    let now = crate::domain::Timestamp::now().as_ms();
    let mut rows = Vec::new();
    for s in on_page {
        let depth = depths.get(&s.id).copied().unwrap_or_default();
        let counts = hours.get(&s.id).map(Vec::as_slice).unwrap_or_default();
        let (ok, failed) = counts
            .iter()
            .fold((0, 0), |(a, b), (_, ok, f)| (a + ok, b + f));
        let head = state.engine.head_of_line(s).await?;
        rows.push(Row {
            id: s.id.to_string(),
            url: s.url.clone(),
            tenant: s.tenant_id.to_string(),
            system: is_system(s.tenant_id.as_str()),
            state: state_name(s.state),
            reason: s.state_reason.clone().unwrap_or_default(),
            backlog: depth.depth,
            held: view::keys_held(held.get(&s.id).copied().unwrap_or(0)),
            head_age: if depth.depth > 0 {
                age(depth.oldest_age)
            } else {
                String::new()
            },
            head: head.as_ref().map(|d| d.id.to_string()).unwrap_or_default(),
            last_code: code(head.and_then(|d| d.last_status_code)),
            spark: view::ColumnChart::per_hour(counts, now),
            spark_label: format!("last 24 h: {ok} succeeded, {failed} failed"),
        });
    }
    let link = |p: usize| {
        format!(
            "/ui/subscriptions?state={}&tenant={}&q={}&page={p}",
            urlencode(&want_state),
            urlencode(&want_tenant),
            urlencode(&q)
        )
    };
    let prev = (page > 0).then(|| link(page - 1));
    let next = ((page + 1) * PAGE < total).then(|| link(page + 1));
    let page_view = ListPage {
        chrome: viewer.chrome("subscriptions"),
        rows,
        total,
        states: view::STATES.iter().map(|s| state_name(*s)).collect(),
        tenants: if viewer.is_admin() {
            tenant_options(tenants)
        } else {
            Vec::new()
        },
        state: want_state,
        tenant: want_tenant,
        q,
        prev,
        next,
    };
    render(&page_view)
}
