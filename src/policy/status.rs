//! A subscription's status table: which receiver status codes count as delivered, which are
//! retried and which fail, chosen per subscription (ARCHITECTURE.md guarantee 4).
//!
//! The rules are a named base table ([`StatusTable`]) plus two short lists of codes the
//! subscription overrides ([`StatusRules::retry_on`], [`StatusRules::delivered_on`]). Whatever
//! the table, a redirect is never followed: a 3xx that counts as delivered is taken as the
//! receiver's answer, and the `Location` it names is never requested, so the SSRF rules keep
//! holding. Invariants [`StatusRules::validate`] enforces: every listed code is a final HTTP
//! status from 300 to 599 (1xx is never final, 2xx is always delivered), a code appears at
//! most once in a list, and never in both lists.

use serde::{Deserialize, Serialize};

use super::{Verdict, classify_status};
use crate::error::{Error, Result};

/// The base status table a subscription's lists amend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum StatusTable {
    /// hookline's own: 2xx delivered; 408, 425, 429 and 5xx retried; 410 disables; every other
    /// code (3xx included) failed at once.
    #[default]
    Hookline,
    /// The lending system's (its webhook chapter marks `2XX, 3XX` COMPLETED): hookline's table
    /// with every 3xx counted as delivered. The redirect is still never followed.
    Lending,
}

impl StatusTable {
    /// The table's verdict on a response code, before any list of the subscription.
    pub(crate) fn classify(self, status: u16) -> Verdict {
        match self {
            StatusTable::Lending if (300..=399).contains(&status) => Verdict::Delivered,
            StatusTable::Hookline | StatusTable::Lending => classify_status(status),
        }
    }
}

/// A subscription's status rules: the base table and the codes it overrides. The default is
/// hookline's table with no overrides, which is what every subscription had before the option.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusRules {
    #[serde(default)]
    pub table: StatusTable,
    /// Codes retried (with the retry schedule and `Retry-After`) whatever the table says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<u16>,
    /// Codes that count as delivered whatever the table says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered_on: Vec<u16>,
}

impl StatusRules {
    /// The most codes one list may hold: enough for any real receiver, small enough that a
    /// linear lookup per attempt costs nothing.
    pub const MAX_CODES: usize = 32;

    /// Whether these are the default rules (kept out of the journaled config then).
    pub(crate) fn is_default(&self) -> bool {
        *self == StatusRules::default()
    }

    /// The verdict on a response code: the lists first, then the table.
    pub(crate) fn classify(&self, status: u16) -> Verdict {
        if self.delivered_on.contains(&status) {
            Verdict::Delivered
        } else if self.retry_on.contains(&status) {
            Verdict::Retriable
        } else {
            self.table.classify(status)
        }
    }

    /// Refuses lists that could not mean what they say; the error names the list and the code.
    pub(crate) fn validate(&self) -> Result<()> {
        check_list("retryOn", &self.retry_on, "retried")?;
        check_list("deliveredOn", &self.delivered_on, "delivered")?;
        if let Some(code) = self.retry_on.iter().find(|c| self.delivered_on.contains(c)) {
            return Err(Error::invalid(
                "deliveredOn",
                format!(
                    "{code} is listed in both retryOn and deliveredOn; a status code can mean \
                     only one thing"
                ),
            ));
        }
        Ok(())
    }
}

fn check_list(field: &str, codes: &[u16], meaning: &str) -> Result<()> {
    if codes.len() > StatusRules::MAX_CODES {
        return Err(Error::invalid(
            field,
            format!("must list at most {} status codes", StatusRules::MAX_CODES),
        ));
    }
    for (i, &code) in codes.iter().enumerate() {
        let why = match code {
            100..=199 => Some("is informational (1xx), never a receiver's final answer"),
            200..=299 => Some("is a 2xx, which always counts as delivered"),
            300..=599 => None,
            _ => Some("is not an HTTP status code a receiver can answer (300 to 599)"),
        };
        if let Some(why) = why {
            return Err(Error::invalid(
                field,
                format!("{code} {why}; only 300 to 599 can be {meaning} on request"),
            ));
        }
        if codes[..i].contains(&code) {
            return Err(Error::invalid(field, format!("{code} is listed twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(table: StatusTable, retry_on: &[u16], delivered_on: &[u16]) -> StatusRules {
        StatusRules {
            table,
            retry_on: retry_on.to_vec(),
            delivered_on: delivered_on.to_vec(),
        }
    }

    fn message(r: &StatusRules) -> (String, String) {
        match r.validate() {
            Err(Error::Invalid { field, message }) => (field, message),
            other => panic!("{r:?} must be refused, got {other:?}"),
        }
    }

    /// The default rules are exactly the status table every subscription had before.
    #[test]
    fn the_default_rules_are_hooklines_table_for_every_code() {
        let r = StatusRules::default();
        assert!(r.validate().is_ok());
        assert!(r.is_default());
        for code in 100..=999 {
            assert_eq!(r.classify(code), classify_status(code), "{code}");
        }
    }

    /// The lending table differs from hookline's in the 3xx, and only there.
    #[test]
    fn the_lending_table_delivers_3xx_and_agrees_elsewhere() {
        let r = rules(StatusTable::Lending, &[], &[]);
        for code in 100..=999 {
            let want = if (300..=399).contains(&code) {
                Verdict::Delivered
            } else {
                classify_status(code)
            };
            assert_eq!(r.classify(code), want, "{code}");
        }
        // The seed's rows: 2XX and 3XX completed, 4XX failed (an operator resubmits), 5XX
        // failed and resubmitted (hookline retries it on the schedule).
        for (code, want) in [
            (200, Verdict::Delivered),
            (302, Verdict::Delivered),
            (304, Verdict::Delivered),
            (400, Verdict::Fatal),
            (404, Verdict::Fatal),
            (500, Verdict::Retriable),
            (503, Verdict::Retriable),
        ] {
            assert_eq!(r.classify(code), want, "{code}");
        }
    }

    #[test]
    fn lists_override_the_table_and_leave_other_codes_alone() {
        let r = rules(StatusTable::Hookline, &[409, 410, 302], &[304, 503]);
        assert!(r.validate().is_ok());
        assert_eq!(
            r.classify(409),
            Verdict::Retriable,
            "409 is fatal by default"
        );
        assert_eq!(r.classify(410), Verdict::Retriable, "410 would disable");
        assert_eq!(r.classify(302), Verdict::Retriable);
        assert_eq!(r.classify(304), Verdict::Delivered);
        assert_eq!(r.classify(503), Verdict::Delivered);
        for code in [200, 301, 400, 404, 429, 500] {
            assert_eq!(r.classify(code), classify_status(code), "{code}");
        }
        // Under the lending table a listed 3xx is retried, the others still delivered.
        let lending = rules(StatusTable::Lending, &[307], &[]);
        assert_eq!(lending.classify(307), Verdict::Retriable);
        assert_eq!(lending.classify(308), Verdict::Delivered);
        // Listing what the table already does changes nothing and is allowed, so that
        // switching the table keeps a subscription's lists valid.
        let redundant = rules(StatusTable::Lending, &[503], &[302]);
        assert!(redundant.validate().is_ok());
        assert_eq!(redundant.classify(302), Verdict::Delivered);
        assert_eq!(redundant.classify(503), Verdict::Retriable);
    }

    #[test]
    fn impossible_lists_are_refused_with_what_is_wrong() {
        let cases: [(StatusRules, &str, &str); 9] = [
            (
                rules(StatusTable::Hookline, &[200], &[]),
                "retryOn",
                "200 is a 2xx, which always counts as delivered",
            ),
            (
                rules(StatusTable::Hookline, &[], &[204]),
                "deliveredOn",
                "204 is a 2xx",
            ),
            (
                rules(StatusTable::Hookline, &[101], &[]),
                "retryOn",
                "101 is informational (1xx)",
            ),
            (
                rules(StatusTable::Hookline, &[600], &[]),
                "retryOn",
                "600 is not an HTTP status code",
            ),
            (
                rules(StatusTable::Hookline, &[], &[0]),
                "deliveredOn",
                "0 is not an HTTP status code",
            ),
            (
                rules(StatusTable::Lending, &[], &[99]),
                "deliveredOn",
                "only 300 to 599 can be delivered on request",
            ),
            (
                rules(StatusTable::Hookline, &[409, 425, 409], &[]),
                "retryOn",
                "409 is listed twice",
            ),
            (
                rules(StatusTable::Hookline, &[409, 503], &[304, 503]),
                "deliveredOn",
                "503 is listed in both retryOn and deliveredOn",
            ),
            (
                rules(StatusTable::Hookline, &(300..333).collect::<Vec<_>>(), &[]),
                "retryOn",
                "at most 32 status codes",
            ),
        ];
        for (r, field, text) in cases {
            let (f, m) = message(&r);
            assert_eq!(f, field, "{r:?}");
            assert!(m.contains(text), "{r:?}: {m:?} should say {text:?}");
        }
        let full = rules(StatusTable::Hookline, &(300..332).collect::<Vec<_>>(), &[]);
        assert!(full.validate().is_ok(), "32 codes are allowed");
    }

    /// The journal keeps the rules in the subscription's config; the default is left out, and
    /// a config written before the option existed reads as the default.
    #[test]
    fn rules_round_trip_through_their_journal_form() {
        let r = rules(StatusTable::Lending, &[409], &[]);
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(text, r#"{"table":"lending","retryOn":[409]}"#);
        let back: StatusRules = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
        let old: StatusRules = serde_json::from_str("{}").expect("parse");
        assert!(old.is_default());
    }
}
