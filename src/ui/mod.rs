//! The operator dashboard and tenant portal, served under `/ui` by the same server as the API.
//!
//! Server-rendered HTML (askama templates compiled into the binary, `src/ui/templates`), one
//! stylesheet and a vendored htmx, all served from memory: nothing is read from disk at run
//! time and the product build needs no Node. Every page reads without JavaScript; htmx only
//! refreshes a few panels in place.
//!
//! The dashboard is a layer beside the HTTP API (`api`): it talks to the engine through
//! [`EngineHandle`] only, never to the store, and reuses nothing of the API's internals.
//!
//! Invariants:
//! - **Who sees what.** A page is shown only to a signed-in viewer (a session made from an API
//!   key or a portal link). The admin sees every tenant; a tenant sees only its own, and another
//!   tenant's page answers 404, exactly like a missing one (guarantee 6). Anonymous requests get
//!   the sign-in page and no data.
//! - **State changes are POSTs** carrying the session's CSRF token; a POST without it, or from
//!   another origin, is refused (403) before anything is done.
//! - **Secrets are never rendered**: pages show what the public [`Subscription`] view shows
//!   (masked secret, fingerprints, whether a key is set), never an API key, access key, password,
//!   token or signing secret; the rotate form takes the new secret from the operator.
//! - Every response carries a strict Content-Security-Policy (`script-src 'self'`, no inline
//!   script or style), `X-Frame-Options: DENY`, `nosniff`, a `same-origin` referrer policy and `no-store`.
//!
//! ## Layout
//! | module | owns |
//! |---|---|
//! | `session` | sign-in, the session store, cookies, the [`Viewer`](session::Viewer) extractor, CSRF |
//! | `portal` | short-lived signed tenant links: `POST /v1/tenants/{id}/portal-link` and `/ui/portal` |
//! | `form` | urlencoded form bodies, read under a size limit and a timeout |
//! | `error` | [`UiError`](error::UiError): a refusal as an HTML page |
//! | `assets` | the stylesheet and htmx, compiled in, and the security headers |
//! | `view` | formatting shared by the pages: times, ages, badges, inline SVG charts |
//! | `pages::*` | one file per page family: its routes, handlers and view structs |
//!
//! [`Subscription`]: crate::domain::Subscription

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

use crate::config::server::UiSettings;
use crate::engine::EngineHandle;

mod assets;
mod error;
mod form;
mod pages;
pub(crate) mod portal;
mod session;
mod view;

/// The dashboard's settings, typed: built from the server configuration's `[ui]`
/// ([`UiSettings`], checked there) by [`UiConfig::from_settings`]. Every field has a production
/// default, the one of [`UiSettings::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// Serve `/ui` and `POST /v1/tenants/{id}/portal-link` (`ui.enabled`). Default true.
    pub enabled: bool,
    /// How long a session lasts after sign-in, whatever it does (`ui.sessionTtl`). Default 8 h.
    pub session_ttl: Duration,
    /// Most sessions alive at once; signing in beyond it ends the oldest (`ui.maxSessions`).
    /// Default 10 000.
    pub max_sessions: usize,
    /// Life of a portal link that asks for none (`ui.portalLinkTtl`). Default 15 min.
    pub portal_link_ttl: Duration,
    /// Longest life an admin may give a portal link (`ui.maxPortalLinkTtl`). Default 1 h.
    pub max_portal_link_ttl: Duration,
    /// Mark cookies `Secure` on every response, not only on requests that arrived over TLS
    /// (`X-Forwarded-Proto: https` from a terminating proxy) (`ui.secureCookies`). Default false.
    pub always_secure_cookies: bool,
}

impl UiConfig {
    /// The dashboard settings of a server configuration's `[ui]` (already validated).
    pub fn from_settings(s: &UiSettings) -> UiConfig {
        UiConfig {
            enabled: s.enabled,
            session_ttl: s.session_ttl.0,
            max_sessions: s.max_sessions,
            portal_link_ttl: s.portal_link_ttl.0,
            max_portal_link_ttl: s.max_portal_link_ttl.0,
            always_secure_cookies: s.secure_cookies,
        }
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig::from_settings(&UiSettings::default())
    }
}

/// What every dashboard handler can reach.
#[derive(Clone)]
pub(crate) struct UiState {
    engine: EngineHandle,
    cfg: Arc<UiConfig>,
    sessions: Arc<session::Sessions>,
    links: Arc<portal::LinkKey>,
}

/// The dashboard's routes (`/ui/…` and `POST /v1/tenants/{id}/portal-link`) with the default
/// [`UiConfig`], to be merged into the API's router.
pub fn router(engine: EngineHandle) -> Router {
    router_with(engine, UiConfig::default())
}

/// The dashboard's routes with `cfg`.
pub fn router_with(engine: EngineHandle, cfg: UiConfig) -> Router {
    let state = UiState {
        engine,
        sessions: Arc::new(session::Sessions::new(cfg.session_ttl, cfg.max_sessions)),
        links: Arc::new(portal::LinkKey::generate()),
        cfg: Arc::new(cfg),
    };
    Router::new()
        .merge(assets::routes())
        .merge(session::routes())
        .merge(portal::routes())
        .merge(pages::routes())
        // Bodies are read by `form` under their own limits; this only stops axum's default.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(assets::security_headers))
        .with_state(state)
}
