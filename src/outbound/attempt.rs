//! One attempt as data: the request a delivery (or an endpoint test) sends, and what came of it.
//!
//! [`AttemptRequest::for_delivery`] is the one place a subscription's settings become a request,
//! so a real delivery and the operator's endpoint test send the same thing. The outcome stays
//! plain data here: the subscriber actor turns it into a journal record
//! (`actors::subscriber::outcome`), the endpoint test into an [`EndpointTest`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{EndpointTest, EventId, ReceiverAuth, SubscriptionId, SubscriptionSpec};
use crate::policy::ErrorKind;
use crate::security::signing::SigningKeys;
use crate::security::tls::ClientTls;

/// Everything needed to make one attempt.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRequest {
    pub url: String,
    pub event_id: EventId,
    /// The exact bytes to send (and sign): the envelope, or what the transform returned.
    pub body: Arc<[u8]>,
    /// The headers a transform returned: they replace `headers` and the default content type.
    pub transformed_headers: Option<Vec<(String, String)>>,
    pub access_key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub signing: SigningKeys,
    pub auth: Option<ReceiverAuth>,
    /// The subscription: the key of its cached OAuth2 token and TLS client.
    pub subscription: SubscriptionId,
    /// Client certificate and trusted CAs, if the subscription has its own.
    pub tls: Option<ClientTls>,
    pub timeout: Duration,
    /// The delivery's place in its subscription's order, sent as `webhook-sequence` so a
    /// strict receiver can drop a stale send (see docs/delivery.md). `None` for an endpoint
    /// test, which is outside the order.
    pub sequence: Option<i64>,
}

impl AttemptRequest {
    /// The request that delivers `body` (event `event_id`'s envelope) to `subscription` as its
    /// `spec` says today: URL, headers, signing keys, authentication, TLS and timeout.
    pub(crate) fn for_delivery(
        spec: &SubscriptionSpec,
        subscription: &SubscriptionId,
        event_id: &EventId,
        body: Arc<[u8]>,
    ) -> AttemptRequest {
        AttemptRequest {
            url: spec.url.clone(),
            event_id: event_id.clone(),
            body,
            transformed_headers: None,
            access_key: spec.access_key.clone(),
            headers: spec.headers.clone(),
            signing: spec.signing.clone(),
            auth: spec.auth.clone(),
            subscription: subscription.clone(),
            tls: spec.tls.clone(),
            timeout: Duration::from_millis(spec.timeout_ms),
            sequence: None,
        }
    }

    /// The same request carrying the delivery's `seq` as `webhook-sequence`.
    pub(crate) fn with_sequence(mut self, seq: i64) -> AttemptRequest {
        self.sequence = Some(seq);
        self
    }
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub(crate) enum AttemptOutcome {
    /// The receiver answered (any status).
    Response {
        status: u16,
        retry_after: Option<Duration>,
        snippet: Option<String>,
        /// The receiver asked to be disabled (`webhook-delivery: disable`).
        disable: bool,
    },
    /// No usable response.
    Failed { kind: ErrorKind, message: String },
    /// The subscription's transform dropped the delivery: nothing was sent.
    Dropped { reason: String },
    /// The subscription's transform failed: nothing was sent, and the same event would fail
    /// the same way, so it is not retried.
    TransformFailed { kind: ErrorKind, message: String },
}

impl AttemptOutcome {
    /// The status code the attempt is logged with: the receiver's, or 500 for a timeout (as the
    /// seeds log it).
    pub(crate) fn logged_status(&self) -> Option<u16> {
        match self {
            AttemptOutcome::Response { status, .. } => Some(*status),
            AttemptOutcome::Failed { kind, .. } => (*kind == ErrorKind::Timeout).then_some(500),
            AttemptOutcome::Dropped { .. } | AttemptOutcome::TransformFailed { .. } => None,
        }
    }
}

/// Whether a receiver's status accepts the delivery.
pub(crate) fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The error an attempt answered with a non-2xx `status` is logged with.
pub(crate) fn status_error(status: u16) -> String {
    format!("receiver answered {status}")
}

/// An attempt's outcome with its timing.
#[derive(Debug, Clone)]
pub(crate) struct AttemptResult {
    pub started_at: i64,
    pub duration: Duration,
    pub outcome: AttemptOutcome,
    /// What the transform printed, if one ran and printed.
    pub transform_log: Option<String>,
}

impl AttemptResult {
    /// The result of an endpoint test as the operator sees it.
    pub(crate) fn into_endpoint_test(self) -> EndpointTest {
        let duration_ms = self.duration.as_millis() as u64;
        let status_code = self.outcome.logged_status();
        match self.outcome {
            AttemptOutcome::Response { status, .. } => EndpointTest {
                status_code,
                duration_ms,
                error: (!is_success(status)).then(|| status_error(status)),
                verified: is_success(status),
            },
            AttemptOutcome::Failed { kind, message } => EndpointTest {
                status_code,
                duration_ms,
                error: Some(format!("{}: {message}", kind.as_str())),
                verified: false,
            },
            // The endpoint test runs no transform.
            AttemptOutcome::Dropped { reason }
            | AttemptOutcome::TransformFailed {
                message: reason, ..
            } => EndpointTest {
                status_code,
                duration_ms,
                error: Some(reason),
                verified: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: AttemptOutcome) -> EndpointTest {
        AttemptResult {
            started_at: 0,
            duration: Duration::from_millis(42),
            outcome,
            transform_log: None,
        }
        .into_endpoint_test()
    }

    fn response(status: u16) -> AttemptOutcome {
        AttemptOutcome::Response {
            status,
            retry_after: None,
            snippet: Some("body".into()),
            disable: false,
        }
    }

    #[test]
    fn a_2xx_verifies_the_endpoint() {
        let t = result(response(204));
        assert_eq!(
            t,
            EndpointTest {
                status_code: Some(204),
                duration_ms: 42,
                error: None,
                verified: true,
            }
        );
    }

    #[test]
    fn other_statuses_are_reported_with_their_code() {
        for status in [301, 404, 410, 429, 503] {
            let t = result(response(status));
            assert_eq!(t.status_code, Some(status));
            assert_eq!(t.error, Some(format!("receiver answered {status}")));
            assert!(!t.verified);
        }
    }

    #[test]
    fn a_timeout_is_reported_as_500_and_other_failures_without_a_code() {
        let t = result(AttemptOutcome::Failed {
            kind: ErrorKind::Timeout,
            message: "no complete response within 10 ms".into(),
        });
        assert_eq!(t.status_code, Some(500));
        assert_eq!(
            t.error.as_deref(),
            Some("timeout: no complete response within 10 ms")
        );
        assert!(!t.verified);
        let t = result(AttemptOutcome::Failed {
            kind: ErrorKind::BlockedAddress,
            message: "10.0.0.1 is private".into(),
        });
        assert_eq!(t.status_code, None);
        assert_eq!(
            t.error.as_deref(),
            Some("blocked_address: 10.0.0.1 is private")
        );
    }

    #[test]
    fn transform_outcomes_report_their_reason() {
        let t = result(AttemptOutcome::Dropped {
            reason: "not for them".into(),
        });
        assert_eq!(
            (t.status_code, t.error.as_deref()),
            (None, Some("not for them"))
        );
        let t = result(AttemptOutcome::TransformFailed {
            kind: ErrorKind::TransformTrap,
            message: "transform crashed: boom".into(),
        });
        assert_eq!(
            (t.status_code, t.error.as_deref()),
            (None, Some("transform crashed: boom"))
        );
    }
}
