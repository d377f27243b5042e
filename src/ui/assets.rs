//! The dashboard's static files, compiled into the binary, and the headers every dashboard
//! response carries.
//!
//! Two files: the stylesheet (`style.css`) and htmx 2.0.11 (`htmx-2.0.11.min.js`, vendored
//! from the npm package `htmx.org`, Zero-Clause BSD; `src/ui/assets/README.md` has its
//! checksum). Both are `include_str!`ed: the binary never reads them from disk.
//!
//! The Content-Security-Policy allows scripts, styles, images and connections from the server
//! itself only, no inline script or style, no plugins, no framing, and forms that post only
//! back to it. htmx is configured (a `<meta>` in the layout) not to inject its own inline
//! style nor to evaluate anything, so it runs under that policy.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::UiState;

const STYLE: &str = include_str!("assets/style.css");
const HTMX: &str = include_str!("assets/htmx-2.0.11.min.js");

/// The policy every dashboard response carries.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/assets/style.css", get(style))
        .route("/ui/assets/htmx-2.0.11.min.js", get(htmx))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The script's name carries its version; the stylesheet changes only with the
            // binary, so an hour of caching is the longest a stale style can live.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", HTMX)
}

/// Adds the security headers to every dashboard response (see the module docs); pages and
/// errors are never cached, since they show data only their viewer may see.
///
/// The referrer policy is `same-origin`, not `no-referrer`: under `no-referrer` browsers send
/// `Origin: null` with form posts, and the origin check (`session`) would refuse every one.
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_code() {
        assert!(CSP.contains("script-src 'self';"));
        assert!(!CSP.contains("unsafe-inline"));
        assert!(!CSP.contains("unsafe-eval"));
        assert!(HTMX.starts_with("var htmx="), "the vendored file is htmx");
    }
}
