//! Form bodies (`application/x-www-form-urlencoded`), read under a size limit and a timeout.
//!
//! The dashboard is merged beside the API's router, outside the API's `guard`, so it bounds its
//! own bodies: [`Form`] reads at most `LIMIT` bytes for at most [`BODY_TIMEOUT`]. Handlers that
//! need a session extract the [`Viewer`](super::session::Viewer) first, so an anonymous client
//! never makes the server read a body larger than the sign-in form's small limit.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::header;
use http_body_util::{BodyExt, Limited};

use super::error::UiError;

/// How long a client has to send a form's body once its headers are in.
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default limit: room for a pasted event envelope (1 MiB) and the form around it.
pub(super) const DEFAULT_LIMIT: usize = 1024 * 1024 + 64 * 1024;

/// A form's fields; the last value wins when a name repeats.
#[derive(Debug, Default)]
pub(super) struct Form<const LIMIT: usize = DEFAULT_LIMIT>(pub HashMap<String, String>);

impl<const LIMIT: usize> Form<LIMIT> {
    /// A field's value, trimmed; `None` when absent or blank.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A field's value exactly as sent (a pasted envelope keeps its whitespace).
    pub(super) fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(super) fn parse(body: &[u8]) -> Self {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }
}

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for Form<LIMIT> {
    type Rejection = UiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, UiError> {
        let urlencoded = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !urlencoded {
            return Err(UiError::Invalid(
                "expected a form (application/x-www-form-urlencoded)".into(),
            ));
        }
        let body = Limited::new(req.into_body(), LIMIT);
        match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
            Ok(Ok(collected)) => Ok(Form::parse(&collected.to_bytes())),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(UiError::Invalid(
                format!("the form is larger than {LIMIT} bytes"),
            )),
            Ok(Err(_)) => Err(UiError::Invalid("the form could not be read".into())),
            Err(_) => Err(UiError::Invalid(format!(
                "the form did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded_and_blank_ones_are_absent() {
        let f = Form::<64>::parse(b"key=hlk_a%2Bb&next=%2Fui%2F&empty=++&env=%20%7B%7D");
        assert_eq!(f.get("key"), Some("hlk_a+b"));
        assert_eq!(f.get("next"), Some("/ui/"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.raw("env"), Some(" {}"));
        assert_eq!(f.get("missing"), None);
    }
}
