//! `[ui]`: the dashboard's settings as the server's configuration spells them.
//!
//! The dashboard reads them (`UiConfig::from_settings` in `ui`); `validate` keeps each within
//! the range the dashboard can serve and names the key at fault. Configuration sits below
//! every other layer, so the typed `UiConfig` is built on the dashboard's side.

use serde::{Deserialize, Serialize};

use super::Dur;

/// `[ui]`: whether `/ui` is served, and how long sessions and portal links live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UiSettings {
    /// Serve the dashboard (`/ui`) and `POST /v1/tenants/{id}/portal-link`. Default true.
    pub enabled: bool,
    /// How long a session lasts after sign-in (1 min to 7 days). Default 8 h.
    pub session_ttl: Dur,
    /// Most sessions alive at once; signing in beyond it ends the oldest (1 to 1,000,000).
    /// Default 10,000.
    pub max_sessions: usize,
    /// Life of a portal link that asks for none (at most `maxPortalLinkTtl`). Default 15 min.
    pub portal_link_ttl: Dur,
    /// Longest life a portal link may ask for (1 min to 7 days). Default 1 h.
    pub max_portal_link_ttl: Dur,
    /// Mark cookies `Secure` on every response, not only on requests that arrived over TLS
    /// (`X-Forwarded-Proto: https`). Default false.
    pub secure_cookies: bool,
}

impl UiSettings {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        use std::time::Duration;
        const MIN: Duration = Duration::from_secs(60);
        const WEEK: Duration = Duration::from_secs(7 * 86_400);
        if !(MIN..=WEEK).contains(&self.session_ttl.0) {
            return Err(Error::invalid(
                "ui.sessionTtl",
                "must be between 1 minute and 7 days",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_sessions) {
            return Err(Error::invalid(
                "ui.maxSessions",
                "must be between 1 and 1000000",
            ));
        }
        if !(MIN..=WEEK).contains(&self.max_portal_link_ttl.0) {
            return Err(Error::invalid(
                "ui.maxPortalLinkTtl",
                "must be between 1 minute and 7 days",
            ));
        }
        if self.portal_link_ttl.0 < Duration::from_secs(1)
            || self.portal_link_ttl.0 > self.max_portal_link_ttl.0
        {
            return Err(Error::invalid(
                "ui.portalLinkTtl",
                "must be between 1 second and ui.maxPortalLinkTtl",
            ));
        }
        Ok(())
    }
}

impl Default for UiSettings {
    fn default() -> Self {
        use std::time::Duration;
        UiSettings {
            enabled: true,
            session_ttl: Dur(Duration::from_secs(8 * 3600)),
            max_sessions: 10_000,
            portal_link_ttl: Dur(Duration::from_secs(15 * 60)),
            max_portal_link_ttl: Dur(Duration::from_secs(3600)),
            secure_cookies: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_pass_and_each_range_names_its_key() {
        assert!(UiSettings::default().validate().is_ok());
        let refused = |s: UiSettings| match s.validate() {
            Err(crate::Error::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let d = UiSettings::default;
        assert_eq!(
            refused(UiSettings {
                session_ttl: Dur(Duration::from_secs(5)),
                ..d()
            }),
            "ui.sessionTtl"
        );
        assert_eq!(
            refused(UiSettings {
                max_sessions: 0,
                ..d()
            }),
            "ui.maxSessions"
        );
        assert_eq!(
            refused(UiSettings {
                portal_link_ttl: Dur(Duration::from_secs(7200)),
                ..d()
            }),
            "ui.portalLinkTtl",
            "a default life longer than the longest allowed"
        );
        assert_eq!(
            refused(UiSettings {
                max_portal_link_ttl: Dur(Duration::from_secs(30 * 86_400)),
                ..d()
            }),
            "ui.maxPortalLinkTtl"
        );
    }
}
