//! `Retry-After` as the sender parses it and the subscriber actor applies it: delay-seconds
//! or an HTTP date relative to now, then the status table, the retry budget and the clamp.
//!
//! Input: 8 bytes of "now" (seconds since 1970, up to year 9999), 2 bytes of status, 1 byte of
//! attempts counted, 2 bytes choosing the retry policy and the `max_retry_after` clamp, then
//! the header value.
//!
//! Properties: no panic; digits-only values are exactly that many seconds (saturating); a
//! date is never later than itself (the delay is at most date - now); the delay the actor sets is bounded by
//! the larger of the clamp and the schedule's longest delay plus its jitter, and the due time
//! it computes (`now_ms + delay`) fits an i64 of milliseconds.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookline::fuzz_support::{RetryPolicy, retry_after, retry_delay, retry_policy_is_valid};
use libfuzzer_sys::fuzz_target;

/// 9999-12-31T23:59:59Z: the last second an HTTP date can name.
const MAX_SECS: u64 = 253_402_300_799;

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let (head, value) = data.split_at(13);
    let secs = u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) % (MAX_SECS + 1);
    let now = UNIX_EPOCH + Duration::from_secs(secs);
    let status = u16::from_le_bytes([head[8], head[9]]) % 1000;
    let counted = u32::from(head[10]);
    let policy = match head[11] % 4 {
        0 => RetryPolicy::default(),
        1 => RetryPolicy { max_attempts: RetryPolicy::MAX_ATTEMPTS, backoff_ms: vec![0] },
        2 => RetryPolicy {
            max_attempts: 10,
            backoff_ms: vec![1, 10, RetryPolicy::MAX_BACKOFF_MS],
        },
        _ => RetryPolicy { max_attempts: 1, backoff_ms: vec![1_000] },
    };
    assert!(retry_policy_is_valid(&policy), "the target's own policies are valid");
    let max_retry_after = match head[12] % 4 {
        0 => Duration::from_secs(3600),
        1 => Duration::ZERO,
        2 => Duration::from_secs(7 * 24 * 3600),
        _ => Duration::from_millis(1),
    };
    let value = hookline_fuzz::text(value);

    let asked = retry_after(&value, now);
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
        assert_eq!(asked, Some(Duration::from_secs(secs)), "{value:?}");
    }
    if let (Some(d), Ok(at)) = (asked, httpdate_like(trimmed)) {
        let until = at.duration_since(now).unwrap_or(Duration::ZERO);
        assert!(d <= until, "{value:?}: {d:?} after now, the date is {until:?} after now");
    }

    if let Some(delay) = retry_delay(status, asked, counted, &policy, max_retry_after, secs) {
        let longest = policy.backoff_ms.iter().copied().max().unwrap_or(1_000);
        let schedule = Duration::from_millis(longest + longest / 10);
        assert!(
            delay <= max_retry_after.max(schedule),
            "delay {delay:?} beyond the clamp {max_retry_after:?} and the schedule {schedule:?}"
        );
        let now_ms = i64::try_from(secs * 1000).expect("year 9999 fits");
        let delay_ms = i64::try_from(delay.as_millis()).expect("a bounded delay fits an i64");
        assert!(now_ms.checked_add(delay_ms).is_some(), "the due time overflows");
    }
});

/// The dates the oracle can check without a parser of its own: values that `retry_after`
/// read as a date, recovered by asking at the epoch (delay since 1970 = the date).
fn httpdate_like(v: &str) -> Result<SystemTime, ()> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    retry_after(v, UNIX_EPOCH)
        .map(|since_epoch| UNIX_EPOCH + since_epoch)
        .ok_or(())
}
