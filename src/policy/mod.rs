//! Delivery policy as pure data and functions: the status table (ARCHITECTURE.md guarantee 4)
//! and the per-subscription choice of table (`status`), the retry schedule with jitter, and
//! `Retry-After` parsing and clamping.
//!
//! Nothing here does I/O or reads the clock: callers pass `now` and the random source, so every
//! rule is unit-tested exhaustively.

use std::time::{Duration, SystemTime};

use rand::Rng;

pub(crate) mod cluster_pace;
pub(crate) mod ratelimit;
mod retry;
mod status;

pub use retry::RetryPolicy;
pub(crate) use status::StatusRules;
pub use status::StatusTable;

/// Why an attempt did not deliver: the `error_kind` of its attempt log entry.
///
/// [`as_str`](Self::as_str) is what the journal stores and the API serves; those strings are
/// part of the API and never change. Most kinds say why an attempt produced no usable response;
/// [`HttpStatus`](Self::HttpStatus) names a response that was not 2xx, and the `Transform*` kinds
/// (but [`TransformUnavailable`](Self::TransformUnavailable)) the tenant transform's failures,
/// whose codes `transform::TransformError::code` also reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum ErrorKind {
    /// The attempt exceeded the subscription's timeout (logged as status 500, as the seeds do).
    Timeout,
    /// The TCP or TLS connection could not be established.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The connection broke while sending or reading.
    Reset,
    /// The destination address is not allowed (SSRF defence).
    BlockedAddress,
    /// The request could not be built (bad header value, unsupported URL).
    InvalidRequest,
    /// The process stopped while the attempt was in flight.
    Interrupted,
    /// The receiver's OAuth2 token endpoint was unreachable or answered 5xx/429.
    TokenUnavailable,
    /// The token endpoint refused our credentials or answered something unusable.
    TokenRefused,
    /// The subscription's transform could not be loaded (a journal read failed): hookline's
    /// problem, not the tenant's, so the attempt is retried.
    TransformUnavailable,
    /// The receiver answered with a status other than 2xx; the status table (not
    /// [`is_retriable`](Self::is_retriable)) says what follows.
    HttpStatus,
    /// The subscription's transform chose to send nothing.
    Dropped,
    /// The transform's version no longer exists.
    TransformMissing,
    /// The transform's module is refused (at upload, or its stored module no longer compiles).
    TransformInvalid,
    /// The transform's stored precompiled artifact cannot be loaded.
    TransformArtifact,
    /// The transform trapped: a panic, an uncaught exception, `unreachable`, a stack overflow.
    TransformTrap,
    /// The transform ran past its time budget.
    TransformTimeout,
    /// The transform needed more linear memory than allowed.
    TransformMemoryLimit,
    /// The transform's output is too large or has too many headers.
    TransformOutputTooLarge,
    /// The transform set a header hookline reserves (`webhook-*`).
    TransformForbiddenHeader,
    /// The transform returned a header name or value that is not valid HTTP.
    TransformInvalidHeader,
    /// The transform returned an error of its own.
    TransformError,
    /// The transform runtime itself is unusable (not the tenant's fault).
    TransformRuntime,
}

impl ErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Reset => "reset",
            ErrorKind::BlockedAddress => "blocked_address",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::TokenUnavailable => "token_unavailable",
            ErrorKind::TokenRefused => "token_refused",
            ErrorKind::TransformUnavailable => "transform_unavailable",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Dropped => "dropped",
            ErrorKind::TransformMissing => "transform_missing",
            ErrorKind::TransformInvalid => "transform_invalid",
            ErrorKind::TransformArtifact => "transform_artifact",
            ErrorKind::TransformTrap => "transform_trap",
            ErrorKind::TransformTimeout => "transform_timeout",
            ErrorKind::TransformMemoryLimit => "transform_memory_limit",
            ErrorKind::TransformOutputTooLarge => "transform_output_too_large",
            ErrorKind::TransformForbiddenHeader => "transform_forbidden_header",
            ErrorKind::TransformInvalidHeader => "transform_invalid_header",
            ErrorKind::TransformError => "transform_error",
            ErrorKind::TransformRuntime => "transform_runtime",
        }
    }

    /// Whether another attempt may succeed. A tenant transform's failure is not retried (the
    /// same event fails the same way); a status's fate is the status table's, not this.
    pub(crate) fn is_retriable(self) -> bool {
        match self {
            ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::Dns
            | ErrorKind::Reset
            | ErrorKind::Interrupted
            | ErrorKind::TokenUnavailable
            | ErrorKind::TransformUnavailable
            | ErrorKind::TransformRuntime => true,
            ErrorKind::BlockedAddress
            | ErrorKind::InvalidRequest
            | ErrorKind::TokenRefused
            | ErrorKind::HttpStatus
            | ErrorKind::Dropped
            | ErrorKind::TransformMissing
            | ErrorKind::TransformInvalid
            | ErrorKind::TransformArtifact
            | ErrorKind::TransformTrap
            | ErrorKind::TransformTimeout
            | ErrorKind::TransformMemoryLimit
            | ErrorKind::TransformOutputTooLarge
            | ErrorKind::TransformForbiddenHeader
            | ErrorKind::TransformInvalidHeader
            | ErrorKind::TransformError => false,
        }
    }
}

/// What the status table says about one attempt, before the retry budget is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx.
    Delivered,
    /// Worth retrying: 408, 425, 429, 5xx, timeouts and network errors.
    Retriable,
    /// Failed at once, no retry: 3xx (never followed), other 4xx, blocked address, bad request.
    Fatal,
    /// 410 Gone (or the receiver asked to be disabled): failed, and the subscription disabled.
    Gone,
    /// The subscription's transform chose to send nothing: done, as `dropped`.
    Dropped,
}

/// hookline's own status table for a response code (a subscription may choose another, see
/// [`StatusRules`]; the OAuth2 token endpoint is always judged by this one).
pub(crate) fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        408 | 425 | 429 => Verdict::Retriable,
        500..=599 => Verdict::Retriable,
        // 1xx cannot be final with hyper; 3xx are never followed; other 4xx wait for an operator.
        _ => Verdict::Fatal,
    }
}

/// The status table for an attempt that got no response.
pub(crate) fn classify_error(kind: ErrorKind) -> Verdict {
    if kind.is_retriable() {
        Verdict::Retriable
    } else {
        Verdict::Fatal
    }
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Done.
    Delivered,
    /// Try again after this delay.
    RetryIn(Duration),
    /// Give up; `disable` also disables the subscription (410).
    Failed { disable: bool },
    /// Done without sending (a transform dropped it).
    Dropped,
}

/// Applies the retry budget: `counted` is how many attempts (this one included) count against
/// `policy.max_attempts` since the delivery was last (re)submitted.
pub(crate) fn decide<R: Rng + ?Sized>(
    verdict: Verdict,
    retry_after: Option<Duration>,
    counted: u32,
    policy: &RetryPolicy,
    max_retry_after: Duration,
    rng: &mut R,
) -> Decision {
    match verdict {
        Verdict::Delivered => Decision::Delivered,
        Verdict::Dropped => Decision::Dropped,
        Verdict::Fatal => Decision::Failed { disable: false },
        Verdict::Gone => Decision::Failed { disable: true },
        Verdict::Retriable if counted >= policy.max_attempts => Decision::Failed { disable: false },
        Verdict::Retriable => {
            let scheduled = backoff(policy, counted, rng);
            let asked = retry_after
                .map(|d| d.min(max_retry_after))
                .unwrap_or_default();
            Decision::RetryIn(scheduled.max(asked))
        }
    }
}

/// The delay before retry number `retry` (1 = the first retry): the schedule's entry, its last
/// entry repeating, plus a jitter of up to 10% that only ever delays.
pub(crate) fn backoff<R: Rng + ?Sized>(policy: &RetryPolicy, retry: u32, rng: &mut R) -> Duration {
    let idx = (retry.max(1) as usize - 1).min(policy.backoff_ms.len().saturating_sub(1));
    let base = policy.backoff_ms.get(idx).copied().unwrap_or(1_000);
    let jitter = if base >= 10 {
        rng.random_range(0..=base / 10)
    } else {
        0
    };
    Duration::from_millis(base + jitter)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`).
///
/// delay-seconds is digits only (RFC 9110 §10.2.3): `u64::from_str` would also take a sign,
/// so `+120` would be honoured although it is not a delay. Too many digits for a `u64` is a
/// very long delay, not no delay: it saturates, and `decide` clamps it.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy(max: u32, backoff: &[u64]) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max,
            backoff_ms: backoff.to_vec(),
        }
    }

    #[test]
    fn status_table_matches_the_architecture() {
        for s in [200, 201, 204, 299] {
            assert_eq!(classify_status(s), Verdict::Delivered, "{s}");
        }
        for s in [300, 301, 302, 304, 307, 308] {
            assert_eq!(
                classify_status(s),
                Verdict::Fatal,
                "{s}: 3xx is never followed"
            );
        }
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), Verdict::Retriable, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 413, 422, 451] {
            assert_eq!(classify_status(s), Verdict::Fatal, "{s}");
        }
        assert_eq!(classify_status(410), Verdict::Gone);
    }

    #[test]
    fn network_errors_retry_but_policy_errors_do_not() {
        for k in [
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::Dns,
            ErrorKind::Reset,
            ErrorKind::Interrupted,
            ErrorKind::TokenUnavailable,
        ] {
            assert_eq!(classify_error(k), Verdict::Retriable, "{k:?}");
        }
        for k in [
            ErrorKind::BlockedAddress,
            ErrorKind::InvalidRequest,
            ErrorKind::TokenRefused,
        ] {
            assert_eq!(classify_error(k), Verdict::Fatal, "{k:?}");
        }
    }

    #[test]
    fn kinds_keep_the_strings_the_journal_stores_and_the_api_serves() {
        let table = [
            (ErrorKind::Timeout, "timeout", true),
            (ErrorKind::Connect, "connect", true),
            (ErrorKind::Dns, "dns", true),
            (ErrorKind::Reset, "reset", true),
            (ErrorKind::BlockedAddress, "blocked_address", false),
            (ErrorKind::InvalidRequest, "invalid_request", false),
            (ErrorKind::Interrupted, "interrupted", true),
            (ErrorKind::TokenUnavailable, "token_unavailable", true),
            (ErrorKind::TokenRefused, "token_refused", false),
            (
                ErrorKind::TransformUnavailable,
                "transform_unavailable",
                true,
            ),
            (ErrorKind::HttpStatus, "http_status", false),
            (ErrorKind::Dropped, "dropped", false),
            (ErrorKind::TransformMissing, "transform_missing", false),
            (ErrorKind::TransformInvalid, "transform_invalid", false),
            (ErrorKind::TransformArtifact, "transform_artifact", false),
            (ErrorKind::TransformTrap, "transform_trap", false),
            (ErrorKind::TransformTimeout, "transform_timeout", false),
            (
                ErrorKind::TransformMemoryLimit,
                "transform_memory_limit",
                false,
            ),
            (
                ErrorKind::TransformOutputTooLarge,
                "transform_output_too_large",
                false,
            ),
            (
                ErrorKind::TransformForbiddenHeader,
                "transform_forbidden_header",
                false,
            ),
            (
                ErrorKind::TransformInvalidHeader,
                "transform_invalid_header",
                false,
            ),
            (ErrorKind::TransformError, "transform_error", false),
            (ErrorKind::TransformRuntime, "transform_runtime", true),
        ];
        for (kind, text, retriable) in table {
            assert_eq!(kind.as_str(), text);
            assert_eq!(kind.is_retriable(), retriable, "{kind:?}");
        }
    }

    #[test]
    fn schedule_repeats_its_last_delay_and_jitter_only_delays() {
        let p = policy(20, &[1000, 10_000, 60_000]);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            for (retry, base) in [
                (1, 1000),
                (2, 10_000),
                (3, 60_000),
                (4, 60_000),
                (19, 60_000),
            ] {
                let d = backoff(&p, retry, &mut rng).as_millis() as u64;
                assert!(d >= base && d <= base + base / 10, "retry {retry}: {d}");
            }
        }
    }

    #[test]
    fn budget_counts_the_first_try() {
        let p = policy(4, &[10]);
        let mut rng = StdRng::seed_from_u64(1);
        let cap = Duration::from_secs(60);
        for counted in 1..4 {
            assert!(matches!(
                decide(Verdict::Retriable, None, counted, &p, cap, &mut rng),
                Decision::RetryIn(_)
            ));
        }
        assert_eq!(
            decide(Verdict::Retriable, None, 4, &p, cap, &mut rng),
            Decision::Failed { disable: false }
        );
        assert_eq!(
            decide(Verdict::Gone, None, 1, &p, cap, &mut rng),
            Decision::Failed { disable: true }
        );
        assert_eq!(
            decide(Verdict::Delivered, None, 4, &p, cap, &mut rng),
            Decision::Delivered
        );
    }

    #[test]
    fn retry_after_is_honoured_but_clamped_and_never_shortens_the_schedule() {
        let p = policy(10, &[100]);
        let mut rng = StdRng::seed_from_u64(3);
        let cap = Duration::from_secs(30);
        let long = decide(
            Verdict::Retriable,
            Some(Duration::from_secs(5)),
            1,
            &p,
            cap,
            &mut rng,
        );
        assert_eq!(long, Decision::RetryIn(Duration::from_secs(5)));
        let huge = decide(
            Verdict::Retriable,
            Some(Duration::from_secs(9999)),
            1,
            &p,
            cap,
            &mut rng,
        );
        assert_eq!(huge, Decision::RetryIn(cap));
        let short = decide(
            Verdict::Retriable,
            Some(Duration::ZERO),
            1,
            &p,
            cap,
            &mut rng,
        );
        assert!(matches!(short, Decision::RetryIn(d) if d >= Duration::from_millis(100)));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    /// Found by the `retry_after` fuzz target: a sign is not part of delay-seconds, and a
    /// value too long for a `u64` still asks for a long wait.
    #[test]
    fn retry_after_seconds_are_digits_only_and_saturate() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("+3705 ", now), None);
        assert_eq!(parse_retry_after("+0", now), None);
        assert_eq!(
            parse_retry_after(" 99999999999999999999999 ", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
