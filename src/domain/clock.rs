//! Wall-clock helpers for what is journaled (attempt start times, retry due times).
//!
//! Scheduling inside the process uses `tokio::time` so tests can pause time; the journal stores
//! wall-clock milliseconds because due times must survive a restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 rendering of a millisecond timestamp (UTC, millisecond precision).
pub(crate) fn format_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_millis() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_660_299_136_827), "2022-08-12T10:12:16.827Z");
    }

    #[test]
    fn until_is_never_negative() {
        assert_eq!(until_ms(0), Duration::ZERO);
        assert!(until_ms(now_ms() + 60_000) > Duration::from_secs(50));
    }
}
