//! Wall-clock time: the [`Timestamp`] of the public types, and the millisecond clock the journal
//! stores.
//!
//! The journal keeps wall-clock milliseconds since the Unix epoch (`i64`) because due times must
//! survive a restart; scheduling inside the process uses `tokio::time` so tests can pause time.
//! A [`Timestamp`] is one of those millisecond values as the API shows it: its JSON is RFC 3339
//! in UTC with exactly three fractional digits (`2022-08-12T10:12:16.827Z`), and parsing that
//! text gives back the same value, so a public type round-trips through its JSON unchanged.
//! Its OpenAPI schema is a `date-time` string; the fields of the API's own types say
//! `#[schema(value_type = String)]` so that the published document stays as it was.
//!
//! A producer's event `timestamp` is not a [`Timestamp`]: it is delivered byte for byte as the
//! producer wrote it (any offset, any precision), so it stays text (see `domain::event`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long from now until the wall-clock time `due_ms` (zero if it has passed).
pub(crate) fn until_ms(due_ms: i64) -> Duration {
    let now = now_ms();
    if due_ms <= now {
        Duration::ZERO
    } else {
        Duration::from_millis((due_ms - now) as u64)
    }
}

/// An instant with millisecond precision, shown as RFC 3339 in UTC (`2022-08-12T10:12:16.827Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

/// Why a text is not a [`Timestamp`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum TimestampError {
    /// The text is not an RFC 3339 date-time.
    #[error("{0}")]
    Syntax(#[from] ::time::error::Parse),
    /// The instant does not fit in milliseconds since the epoch.
    #[error("out of range")]
    OutOfRange,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp(now_ms())
    }

    /// The instant `ms` milliseconds after the Unix epoch (before it when negative).
    pub fn from_ms(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_ms(self) -> i64 {
        self.0
    }

    /// Parses any RFC 3339 date-time; precision below a millisecond is truncated (towards the
    /// epoch).
    pub(crate) fn parse(s: &str) -> Result<Timestamp, TimestampError> {
        let t = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map(Timestamp)
            .map_err(|_| TimestampError::OutOfRange)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        let text = ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&::time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .ok()
            });
        match text {
            Some(text) => f.write_str(&text),
            // Beyond year 9999 there is no RFC 3339 form: the raw milliseconds are shown instead.
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples([serde_json::json!("2022-08-12T10:12:16.827Z")])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_millis() {
        assert_eq!(
            Timestamp::from_ms(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_ms(1_660_299_136_827).to_string(),
            "2022-08-12T10:12:16.827Z"
        );
        assert_eq!(
            Timestamp::from_ms(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn json_is_the_rfc3339_text_and_parses_back() {
        for ms in [0, 1, -1, 1_660_299_136_827, 253_402_300_799_999] {
            let t = Timestamp::from_ms(ms);
            let json = serde_json::to_string(&t).expect("serialises");
            assert_eq!(json, format!("\"{t}\""));
            let back: Timestamp = serde_json::from_str(&json).expect("parses back");
            assert_eq!(back, t, "{json}");
        }
    }

    #[test]
    fn parses_any_rfc3339_and_refuses_the_rest() {
        let t = Timestamp::parse("2022-08-12T12:12:16.827999+02:00").expect("offset and micros");
        assert_eq!(t.as_ms(), 1_660_299_136_827);
        for bad in ["yesterday", "2022-08-12", "2022-08-12T10:12:16", ""] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} must be refused");
            assert!(serde_json::from_value::<Timestamp>(serde_json::json!(bad)).is_err());
        }
    }

    #[test]
    fn until_is_never_negative() {
        assert_eq!(until_ms(0), Duration::ZERO);
        assert!(until_ms(now_ms() + 60_000) > Duration::from_secs(50));
    }
}
