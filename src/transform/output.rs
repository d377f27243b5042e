//! What a transform may return: the header rules and the output size limit (pure functions).
//!
//! Invariants kept here:
//! - no returned header is named `webhook-*` in any case: those are hookline's identity and
//!   signature headers, set after the transform over the bytes really sent. Such an output is
//!   refused, naming the header, rather than silently cleaned, so the tenant learns that the
//!   transform tries to forge them;
//! - framing and routing headers (`content-length`, `host`, `transfer-encoding`, `connection`,
//!   and the other hop-by-hop headers) are removed: hookline's HTTP client computes them, and
//!   a transform-chosen value could desynchronise the request framing;
//! - every kept header has a valid HTTP name and value, there are at most
//!   [`TransformLimits::headers`], and the body plus every header name and value fit in
//!   [`TransformLimits::output_bytes`].

use reqwest::header::{HeaderName, HeaderValue};

use super::TransformError;
use super::limits::TransformLimits;

/// The prefix of the headers hookline reserves for itself (Standard Webhooks).
const RESERVED_PREFIX: &str = "webhook-";

/// Headers the transform may return but that are removed: hookline sets them itself.
const IGNORED: &[&str] = &[
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Checks a `deliver` output and returns the headers to send.
pub(crate) fn check_delivery(
    headers: Vec<(String, String)>,
    body: &[u8],
    limits: &TransformLimits,
) -> Result<Vec<(String, String)>, TransformError> {
    if headers.len() > limits.headers {
        return Err(TransformError::OutputTooLarge(format!(
            "the transform returned {} headers, at most {} are allowed",
            headers.len(),
            limits.headers
        )));
    }
    let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    let total = body.len().saturating_add(header_bytes);
    if total > limits.output_bytes {
        return Err(TransformError::OutputTooLarge(format!(
            "the transform returned {total} bytes (body {} + headers {header_bytes}), \
             more than the limit of {}",
            body.len(),
            human_bytes(limits.output_bytes)
        )));
    }
    let mut kept = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        // Reserved names first: a forged signature header is reported as such even when
        // its name is oddly cased.
        if name
            .get(..RESERVED_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
        {
            return Err(TransformError::ForbiddenHeader(name));
        }
        if IGNORED.iter().any(|i| i.eq_ignore_ascii_case(&name)) {
            continue;
        }
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(TransformError::InvalidHeader(format!(
                "{:?} is not a valid HTTP header name",
                truncate(&name, 64)
            )));
        }
        if HeaderValue::from_str(&value).is_err() {
            return Err(TransformError::InvalidHeader(format!(
                "the value of header {name} is not a valid HTTP header value \
                 (control characters such as CR or LF are not allowed)"
            )));
        }
        kept.push((name, value));
    }
    Ok(kept)
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `1 MiB`, `512 KiB`, or plain bytes, for messages tenants read.
pub(crate) fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reserved_headers_are_refused_whatever_their_case() {
        let limits = TransformLimits::default();
        for name in [
            "webhook-signature",
            "Webhook-Id",
            "WEBHOOK-TIMESTAMP",
            "webhook-x",
        ] {
            let err = check_delivery(h(&[("x-ok", "1"), (name, "v")]), b"{}", &limits)
                .expect_err("reserved");
            assert!(
                matches!(&err, TransformError::ForbiddenHeader(n) if n == name),
                "{err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        // Only the prefix counts.
        let ok = check_delivery(h(&[("x-webhook-id", "1"), ("webhook", "2")]), b"", &limits)
            .expect("not reserved");
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn framing_headers_are_removed_silently() {
        let out = check_delivery(
            h(&[
                ("Content-Length", "3"),
                ("host", "evil.example"),
                ("Transfer-Encoding", "chunked"),
                ("content-type", "application/xml"),
            ]),
            b"<a/>",
            &TransformLimits::default(),
        )
        .expect("valid");
        assert_eq!(out, h(&[("content-type", "application/xml")]));
    }

    #[test]
    fn invalid_names_and_values_are_refused() {
        let limits = TransformLimits::default();
        let err = check_delivery(h(&[("bad name", "v")]), b"", &limits).expect_err("name");
        assert!(matches!(err, TransformError::InvalidHeader(_)), "{err}");
        let err = check_delivery(h(&[("x-a", "v\r\nx-b: 1")]), b"", &limits).expect_err("value");
        assert!(err.to_string().contains("x-a"), "{err}");
        let err = check_delivery(h(&[("", "v")]), b"", &limits).expect_err("empty name");
        assert!(matches!(err, TransformError::InvalidHeader(_)), "{err}");
    }

    #[test]
    fn size_and_count_limits() {
        let limits = TransformLimits {
            output_bytes: 10,
            headers: 2,
            ..TransformLimits::default()
        };
        assert!(check_delivery(h(&[("a", "b")]), b"12345678", &limits).is_ok());
        let err = check_delivery(h(&[("a", "bc")]), b"12345678", &limits).expect_err("size");
        assert!(matches!(err, TransformError::OutputTooLarge(_)), "{err}");
        let err =
            check_delivery(h(&[("a", "1"), ("b", "2"), ("c", "3")]), b"", &limits).expect_err("n");
        assert!(err.to_string().contains("3 headers"), "{err}");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate("ééééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(32 << 20), "32 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
