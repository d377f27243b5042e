//! A dashboard refusal as an HTML page: [`UiError`].
//!
//! Invariants: a request without a session never sees data, only a redirect to the sign-in page
//! (or, from htmx, a 401 telling it where to go); another tenant's resource is a plain 404, the
//! same page as a missing one; a 5xx shows a generic message and its cause is only logged.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::view::Chrome;
use crate::error::Error;

/// Why a dashboard request was refused.
#[derive(Debug)]
pub(super) enum UiError {
    /// No (live) session: go and sign in, then come back to `next`.
    SignIn { next: String, htmx: bool },
    /// No such resource, or one the viewer may not see.
    NotFound(String),
    /// A state change without a valid CSRF token, or from another origin, or an admin-only page.
    Forbidden(String),
    /// Input the engine refused.
    Invalid(String),
    /// An action that does not apply to the resource as it is now.
    Conflict(String),
    /// The engine is shutting down or its journal is unavailable.
    Unavailable,
    /// Anything else; the cause is logged, never shown.
    Internal(String),
}

pub(super) type UiResult<T> = Result<T, UiError>;

impl From<Error> for UiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound { kind, id } => UiError::NotFound(format!("{kind} {id} not found")),
            Error::Invalid { field, message } => UiError::Invalid(format!("{field}: {message}")),
            Error::Conflict(m) => UiError::Conflict(m),
            Error::Overloaded => UiError::Conflict("hookline is at capacity; try again".into()),
            Error::ShuttingDown | Error::Unavailable { .. } => UiError::Unavailable,
            other => UiError::Internal(crate::error::error_chain(&other)),
        }
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        UiError::Internal(format!("template: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            UiError::SignIn { next, htmx } => {
                let to = format!("/ui/login?next={}", super::view::urlencode(next));
                if *htmx {
                    // htmx would swap the sign-in page into a panel; tell it to navigate.
                    let mut r = StatusCode::UNAUTHORIZED.into_response();
                    if let Ok(v) = HeaderValue::from_str(&to) {
                        r.headers_mut().insert("hx-redirect", v);
                    }
                    return r;
                }
                return Redirect::to(&to).into_response();
            }
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.as_str()),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m.as_str()),
            UiError::Invalid(m) => (StatusCode::BAD_REQUEST, "Not accepted", m.as_str()),
            UiError::Conflict(m) => (StatusCode::CONFLICT, "Not possible now", m.as_str()),
            UiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "hookline is starting, stopping or cannot reach its journal; try again shortly",
            ),
            UiError::Internal(cause) => {
                tracing::error!(cause = %cause, "dashboard request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "something went wrong; the cause is in the server's log",
                )
            }
        };
        let page = ErrorPage {
            chrome: Chrome::anonymous(),
            status: status.as_u16(),
            title,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "error page did not render");
                let mut r = (status, title.to_owned()).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
        }
    }
}
