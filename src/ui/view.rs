//! What the pages share: the page chrome (who is signed in, the CSRF token, the navigation),
//! rendering, and the small formatting rules (times, ages, state badges, inline SVG charts).
//!
//! Charts are plain SVG rectangles computed here and drawn by the templates, so they need no
//! script and pass the Content-Security-Policy; every number in them comes from this module,
//! every label goes through the template's HTML escaping.

use std::time::Duration;

use askama::Template;
use axum::response::Html;

use super::error::UiResult;
use crate::domain::{DeliveryStatus, Principal, SubscriptionState, Timestamp};

/// What the layout around every page needs.
#[derive(Debug, Clone)]
pub(super) struct Chrome {
    pub signed_in: bool,
    pub admin: bool,
    /// "admin", or the tenant's id.
    pub who: String,
    /// Opened from a tenant portal link.
    pub portal: bool,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The navigation entry to highlight.
    pub nav: &'static str,
}

impl Chrome {
    /// The chrome of a page shown without a session (sign-in, errors): no navigation, no data.
    pub(super) fn anonymous() -> Chrome {
        Chrome {
            signed_in: false,
            admin: false,
            who: String::new(),
            portal: false,
            csrf: String::new(),
            nav: "",
        }
    }

    pub(super) fn signed_in(
        principal: &Principal,
        csrf: &str,
        portal: bool,
        nav: &'static str,
    ) -> Chrome {
        let (admin, who) = match principal {
            Principal::Admin => (true, "admin".to_owned()),
            Principal::Tenant(t) => (false, t.to_string()),
        };
        Chrome {
            signed_in: true,
            admin,
            who,
            portal,
            csrf: csrf.to_owned(),
            nav,
        }
    }
}

/// Renders a page.
pub(super) fn render<T: Template>(page: &T) -> UiResult<Html<String>> {
    Ok(Html(page.render()?))
}

/// Percent-encodes a query-string value.
pub(super) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A timestamp as pages show it: `2026-12-02 10:12:16 UTC`.
pub(super) fn time(t: Timestamp) -> String {
    let s = t.to_string();
    // RFC 3339 with milliseconds; the seconds are enough on a page (the API has the rest).
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h} UTC"),
        _ => s,
    }
}

/// How long ago `t` was, roughly: `42 s`, `3 min`, `5 h 2 min`, `3 d 4 h`.
pub(super) fn ago(t: Timestamp) -> String {
    let ms = Timestamp::now().as_ms().saturating_sub(t.as_ms()).max(0);
    age(Duration::from_millis(ms as u64))
}

/// A duration, roughly: `42 s`, `3 min`, `5 h 2 min`, `3 d 4 h`.
pub(super) fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How a subscription's held keys read in a list: `1 key held`, `3 keys held`, or nothing.
pub(super) fn keys_held(n: u64) -> String {
    match n {
        0 => String::new(),
        1 => "1 key held".into(),
        n => format!("{n} keys held"),
    }
}

/// Whether `tenant` is hookline's own system tenant, whose subscriptions are the receivers of
/// operational notifications (pages mark it so no one takes it for a customer).
pub(super) fn is_system(tenant: &str) -> bool {
    tenant == crate::notify::SYSTEM_TENANT
}

/// One tenant of a tenant picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TenantOption {
    pub id: String,
    /// The id, and for the system tenant what it is.
    pub label: String,
}

/// The tenant picker's options: each tenant once, sorted, the system tenant said to be it.
pub(super) fn tenant_options(ids: impl IntoIterator<Item = String>) -> Vec<TenantOption> {
    let ids: std::collections::BTreeSet<String> = ids.into_iter().collect();
    ids.into_iter()
        .map(|id| TenantOption {
            label: if is_system(&id) {
                format!("{id} (system: notification receivers)")
            } else {
                id.clone()
            },
            id,
        })
        .collect()
}

/// A subscription state's name, as the badge and the filter show it.
pub(super) fn state_name(s: SubscriptionState) -> &'static str {
    match s {
        SubscriptionState::Active => "active",
        SubscriptionState::Paused => "paused",
        SubscriptionState::Blocked => "blocked",
        SubscriptionState::Disabled => "disabled",
        SubscriptionState::Faulted => "faulted",
    }
}

/// Every subscription state, in the order pages list them.
pub(super) const STATES: [SubscriptionState; 5] = [
    SubscriptionState::Active,
    SubscriptionState::Paused,
    SubscriptionState::Blocked,
    SubscriptionState::Disabled,
    SubscriptionState::Faulted,
];

/// Every delivery status, in the order the filter lists them.
pub(super) const STATUSES: [DeliveryStatus; 6] = [
    DeliveryStatus::Pending,
    DeliveryStatus::InFlight,
    DeliveryStatus::Delivered,
    DeliveryStatus::Failed,
    DeliveryStatus::Skipped,
    DeliveryStatus::Dropped,
];

/// A delivery status's wire name (`in_flight`, …).
pub(super) fn status_name(s: DeliveryStatus) -> &'static str {
    s.as_str()
}

/// An HTTP status code, or a dash.
pub(super) fn code(c: Option<u16>) -> String {
    c.map_or_else(|| "—".to_owned(), |c| c.to_string())
}

/// One bar of a horizontal bar chart, in SVG user units.
#[derive(Debug, Clone)]
pub(super) struct Bar {
    pub label: String,
    pub value: String,
    /// CSS class of the bar (a state or status name, or `plain`).
    pub class: &'static str,
    pub y: u32,
    pub width: u32,
    /// Where the value's text starts.
    pub text_x: u32,
    /// Where the label's text sits (its baseline).
    pub text_y: u32,
}

/// A horizontal bar chart drawn as inline SVG.
#[derive(Debug, Clone)]
pub(super) struct BarChart {
    pub bars: Vec<Bar>,
    pub height: u32,
}

/// Width of the label column and of the longest bar, in SVG units (the SVG scales to fit).
const LABEL_W: u32 = 210;
const BAR_W: u32 = 260;
const ROW_H: u32 = 22;

impl BarChart {
    /// A chart of `(label, value, class)` rows, bars scaled to the largest value.
    pub(super) fn new(rows: Vec<(String, u64, &'static str)>) -> BarChart {
        let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
        let bars = rows
            .into_iter()
            .enumerate()
            .map(|(i, (label, value, class))| {
                let width = if value == 0 {
                    0
                } else {
                    ((value as f64 / max as f64) * f64::from(BAR_W)).ceil() as u32
                };
                let y = i as u32 * ROW_H;
                Bar {
                    label,
                    value: value.to_string(),
                    class,
                    y: y + 4,
                    width: width.max(u32::from(value > 0)),
                    text_x: LABEL_W + width + 6,
                    text_y: y + 16,
                }
            })
            .collect::<Vec<_>>();
        BarChart {
            height: (bars.len() as u32 * ROW_H).max(ROW_H),
            bars,
        }
    }

    /// Where bars start (after the labels).
    pub(super) fn bar_x(&self) -> u32 {
        LABEL_W
    }

    /// The chart's width in SVG units.
    pub(super) fn width(&self) -> u32 {
        LABEL_W + BAR_W + 60
    }
}

/// One minute of a [`ColumnChart`]: a stack of succeeded (bottom) and failed attempts.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub x: u32,
    pub ok_y: u32,
    pub ok_h: u32,
    pub fail_y: u32,
    pub fail_h: u32,
    /// The tooltip: the minute and its counts.
    pub title: String,
}

/// Attempts per minute over the last `minutes`, as stacked columns in inline SVG.
#[derive(Debug, Clone)]
pub(super) struct ColumnChart {
    pub columns: Vec<Column>,
    pub width: u32,
    pub height: u32,
    /// The largest minute's total, for the axis label.
    pub max: u64,
}

const COL_W: u32 = 8;
const CHART_H: u32 = 80;
const SPARK_COL_W: u32 = 4;
const SPARK_H: u32 = 20;

impl ColumnChart {
    /// `counts` are `(minute start in ms, succeeded, failed)`; minutes without attempts are
    /// drawn empty, so the chart always spans `minutes` ending at `now_ms`'s minute.
    pub(super) fn per_minute(counts: &[(i64, u64, u64)], now_ms: i64, minutes: u32) -> ColumnChart {
        ColumnChart::over(counts, now_ms, 60_000, minutes, COL_W, CHART_H)
    }

    /// A 24-hour sparkline: `counts` are `(hour start in ms, succeeded, failed)`, one column
    /// per hour ending at `now_ms`'s hour, small enough for a table cell.
    pub(super) fn per_hour(counts: &[(i64, u64, u64)], now_ms: i64) -> ColumnChart {
        ColumnChart::over(counts, now_ms, 3_600_000, 24, SPARK_COL_W, SPARK_H)
    }

    /// `buckets` columns of `bucket_ms` each, `col_w` wide and at most `height` tall.
    fn over(
        counts: &[(i64, u64, u64)],
        now_ms: i64,
        bucket_ms: i64,
        buckets: u32,
        col_w: u32,
        height: u32,
    ) -> ColumnChart {
        let last = now_ms.div_euclid(bucket_ms);
        let first = last - i64::from(buckets) + 1;
        let mut totals = vec![(0u64, 0u64); buckets as usize];
        for (m, ok, failed) in counts {
            let i = m.div_euclid(bucket_ms) - first;
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| totals.get_mut(i)) {
                *slot = (slot.0 + ok, slot.1 + failed);
            }
        }
        let max = totals.iter().map(|(a, b)| a + b).max().unwrap_or(0).max(1);
        let scale = |n: u64| ((n as f64 / max as f64) * f64::from(height)).round() as u32;
        let columns = totals
            .iter()
            .enumerate()
            .map(|(i, (ok, failed))| {
                let (ok_h, fail_h) = (scale(*ok), scale(*failed));
                let start = Timestamp::from_ms((first + i as i64) * bucket_ms);
                Column {
                    x: i as u32 * col_w,
                    ok_y: height - ok_h,
                    ok_h,
                    fail_y: height - ok_h - fail_h,
                    fail_h,
                    title: format!("{}: {ok} succeeded, {failed} failed", time(start)),
                }
            })
            .collect();
        ColumnChart {
            columns,
            width: buckets * col_w,
            height,
            max,
        }
    }
}

/// A share as a percentage with one decimal, or a dash without a whole.
pub(super) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(age(Duration::from_secs(42)), "42 s");
        assert_eq!(age(Duration::from_secs(190)), "3 min");
        assert_eq!(age(Duration::from_secs(5 * 3600 + 120)), "5 h 2 min");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3 d 4 h");
    }

    #[test]
    fn held_keys_are_counted_in_words() {
        assert_eq!(keys_held(0), "");
        assert_eq!(keys_held(1), "1 key held");
        assert_eq!(keys_held(12), "12 keys held");
    }

    #[test]
    fn bars_scale_to_the_largest_and_keep_small_ones_visible() {
        let c = BarChart::new(vec![
            ("a".into(), 1000, "plain"),
            ("b".into(), 1, "plain"),
            ("c".into(), 0, "plain"),
        ]);
        assert_eq!(c.bars[0].width, BAR_W);
        assert_eq!(c.bars[1].width, 1, "a non-zero value is never invisible");
        assert_eq!(c.bars[2].width, 0);
        assert_eq!(c.height, 3 * ROW_H);
    }

    #[test]
    fn a_sparkline_spans_the_last_24_hours_and_drops_older_ones() {
        let hour = 3_600_000;
        let now = 100 * hour + 7;
        let c = ColumnChart::per_hour(
            &[(100 * hour, 2, 2), (77 * hour, 1, 0), (76 * hour, 50, 0)],
            now,
        );
        assert_eq!(c.columns.len(), 24, "hours 77 to 100");
        assert_eq!(c.max, 4, "hour 76 is outside the window");
        assert_eq!((c.columns[23].ok_h, c.columns[23].fail_h), (10, 10));
        assert_eq!(c.columns[0].ok_h, 5, "1 of the peak 4 on a 20-unit chart");
        assert_eq!(c.width, 24 * SPARK_COL_W);
        assert!(c.columns[23].title.contains("2 succeeded, 2 failed"));
    }

    #[test]
    fn minutes_without_attempts_are_empty_columns() {
        let now = 10 * 60_000 + 5;
        let c = ColumnChart::per_minute(&[(9 * 60_000, 3, 1), (2 * 60_000, 9, 9)], now, 3);
        assert_eq!(c.columns.len(), 3, "minutes 8, 9 and 10");
        assert_eq!(c.max, 4, "minute 2 is outside the window");
        assert_eq!(c.columns[1].ok_h, 60);
        assert_eq!(c.columns[1].fail_h, 20);
        assert_eq!(c.columns[0].ok_h + c.columns[2].ok_h, 0);
        assert_eq!(percent(1, 3), "33.3 %");
        assert_eq!(percent(0, 0), "—");
    }

    #[test]
    fn times_drop_the_milliseconds() {
        let t = Timestamp::from_ms(1_660_299_136_827);
        assert_eq!(time(t), "2022-08-12 10:12:16 UTC");
    }
}
