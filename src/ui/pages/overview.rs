//! `/ui/`: the overview. Subscriptions by state (active, paused, blocked, disabled, faulted),
//! the total backlog and the oldest waiting event, attempts per minute, success rate and p50/p95
//! latency over the last hour and day, attempts per minute over the last hour as a chart, the
//! subscriptions failing most, the ones that need an operator (blocked, disabled, faulted,
//! paused, with why) and the largest backlogs, as inline SVG; last, the newest operational
//! notifications (`notifications`).
//!
//! What is counted is the store's [`AttemptStats`](crate::domain::AttemptStats): attempts
//! (manual resubmits and replays included) by the time they started; succeeded means 2xx.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;

use super::super::UiState;
use super::super::error::UiResult;
use super::super::session::Viewer;
use super::super::view::{
    self, BarChart, Chrome, ColumnChart, age, is_system, percent, render, state_name,
};
use super::notifications::{NoticeRow, Notices};
use crate::domain::{AttemptStats, SubscriptionState, Timestamp};

/// Rows of the "needs attention" table and bars of the backlog chart.
const TOP: usize = 10;
/// The newest operational notifications shown (the rest on `/ui/notifications`).
const NOTICES: u32 = 5;

pub(super) fn routes() -> Router<UiState> {
    Router::new().route("/ui/", get(overview))
}

struct StateTile {
    state: &'static str,
    count: usize,
}

struct AttentionRow {
    id: String,
    url: String,
    tenant: String,
    /// A receiver of operational notifications (the system tenant's).
    system: bool,
    state: &'static str,
    reason: String,
    backlog: u64,
}

/// One window's figures.
struct WindowStats {
    label: &'static str,
    per_minute: String,
    success: String,
    p50: String,
    p95: String,
    attempts: u64,
}

impl WindowStats {
    fn new(label: &'static str, minutes: u64, s: &AttemptStats) -> WindowStats {
        let ms = |v: Option<u64>| v.map_or_else(|| "—".into(), |v| format!("{v} ms"));
        WindowStats {
            label,
            per_minute: format!("{:.1}", s.attempts as f64 / minutes as f64),
            success: percent(s.succeeded, s.attempts),
            p50: ms(s.p50_ms),
            p95: ms(s.p95_ms),
            attempts: s.attempts,
        }
    }
}

struct FailingRow {
    id: String,
    url: String,
    failed: u64,
    attempts: u64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    windows: Vec<WindowStats>,
    minutes: ColumnChart,
    failing: Vec<FailingRow>,
    total: usize,
    tiles: Vec<StateTile>,
    backlog: u64,
    oldest: String,
    by_state: BarChart,
    backlogs: BarChart,
    attention: Vec<AttentionRow>,
    notices: Vec<NoticeRow>,
}

async fn overview(State(state): State<UiState>, viewer: Viewer) -> UiResult<Html<String>> {
    let subs = state.engine.list_subscriptions(viewer.own_tenant()).await?;
    let depths = state.engine.queue_depths().await?;
    let held = state.engine.held_key_counts().await?;
    let (hour, day) = state.engine.attempt_stats(viewer.own_tenant()).await?;
    let minutes = ColumnChart::per_minute(
        &hour
            .per_minute
            .iter()
            .map(|m| (m.minute_ms, m.succeeded, m.failed))
            .collect::<Vec<_>>(),
        Timestamp::now().as_ms(),
        60,
    );
    let failing = day
        .failing
        .iter()
        .map(|f| FailingRow {
            id: f.subscription.to_string(),
            url: subs
                .iter()
                .find(|s| s.id == f.subscription)
                .map_or_else(|| f.subscription.to_string(), |s| s.url.clone()),
            failed: f.failed,
            attempts: f.attempts,
        })
        .collect();
    let tiles: Vec<StateTile> = view::STATES
        .iter()
        .map(|s| StateTile {
            state: state_name(*s),
            count: subs.iter().filter(|x| x.state == *s).count(),
        })
        .collect();
    let mut backlog = 0;
    let mut oldest = None;
    let mut queues = Vec::new();
    for s in &subs {
        if let Some(d) = depths.get(&s.id) {
            backlog += d.depth;
            oldest = oldest.max(Some(d.oldest_age));
            queues.push((s, d.depth));
        }
    }
    queues.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let backlogs = BarChart::new(
        queues
            .iter()
            .take(TOP)
            .map(|(s, n)| (short(&s.url), *n, state_name(s.state)))
            .collect(),
    );
    let by_state = BarChart::new(
        tiles
            .iter()
            .map(|t| (t.state.to_owned(), t.count as u64, t.state))
            .collect(),
    );
    // An active subscription with keys held by failed deliveries needs an operator too: those
    // keys wait for a resubmit or a skip while the others flow.
    let mut attention: Vec<_> = subs
        .iter()
        .filter(|s| s.state != SubscriptionState::Active || held.contains_key(&s.id))
        .map(|s| {
            let keys = view::keys_held(held.get(&s.id).copied().unwrap_or(0));
            AttentionRow {
                id: s.id.to_string(),
                url: s.url.clone(),
                tenant: s.tenant_id.to_string(),
                system: is_system(s.tenant_id.as_str()),
                state: state_name(s.state),
                reason: match (&s.state_reason, keys.is_empty()) {
                    (Some(r), true) => r.clone(),
                    (Some(r), false) => format!("{r}; {keys}"),
                    (None, _) => keys,
                },
                backlog: depths.get(&s.id).map_or(0, |d| d.depth),
            }
        })
        .collect();
    // The ones holding most work first.
    attention.sort_by(|a, b| b.backlog.cmp(&a.backlog).then_with(|| a.id.cmp(&b.id)));
    attention.truncate(TOP);
    let by_id: HashMap<_, _> = subs.iter().map(|s| (&s.id, s)).collect();
    let notices = Notices::audience(&state, &viewer).await?.rows(
        &state
            .engine
            .recent_notifications(viewer.own_tenant(), NOTICES)
            .await?,
        &by_id,
    );
    render(&OverviewPage {
        chrome: viewer.chrome("overview"),
        windows: vec![
            WindowStats::new("last hour", 60, &hour),
            WindowStats::new("last 24 hours", 1440, &day),
        ],
        minutes,
        failing,
        total: subs.len(),
        tiles,
        backlog,
        oldest: oldest.map(age).unwrap_or_else(|| "—".into()),
        by_state,
        backlogs,
        attention,
        notices,
    })
}

/// A URL short enough for a chart label: host and the start of the path.
fn short(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    if rest.chars().count() <= 28 {
        rest.to_owned()
    } else {
        format!("{}…", rest.chars().take(27).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_labels_are_short() {
        assert_eq!(short("https://a.example/h"), "a.example/h");
        let long = short("https://receiver.acme.example/hooks/osp/v2/callbacks");
        assert_eq!(long.chars().count(), 28);
        assert!(long.ends_with('…'));
    }
}
