//! `[notifications]`: the operator's receivers of operational notifications (see `notify`).
//!
//! `urls` lists where every notification (a subscription blocked, disabled or faulted, a
//! delivery out of retries, a block recovered) is POSTed, signed with `secret` (Standard
//! Webhooks). `validate` refuses, naming the key: a URL that does not parse or is not
//! `http(s)`, the same URL twice, URLs without a secret, and a secret that is not `whsec_` +
//! base64 of 24 to 64 bytes. The secret is never serialized. The server hands the checked
//! list to `EngineHandle::configure_notifications` at start.

use serde::{Deserialize, Serialize};

use crate::notify::NotificationEndpoint;
use crate::security::secretbox::Redacted;
use crate::security::signing::SigningSecret;

/// `[notifications]`, as the layers write it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// Receivers of every operational notification (all tenants). Default: none.
    #[serde(deserialize_with = "super::file::list_or_csv")]
    pub urls: Vec<String>,
    /// Their signing secret (`whsec_` + base64 of 24 to 64 bytes); required with `urls`.
    /// Never serialized: it is a secret.
    #[serde(skip_serializing)]
    pub secret: Option<Redacted<String>>,
}

impl NotificationSettings {
    /// The receivers, checked; each refusal names its key (`notifications.urls[1]`, …).
    pub(crate) fn validate(&self) -> crate::Result<Vec<NotificationEndpoint>> {
        use crate::Error;
        let secret = match &self.secret {
            Some(s) => {
                SigningSecret::parse(s.expose()).map_err(|e| {
                    Error::invalid(
                        "notifications.secret",
                        format!("must be whsec_ followed by base64 of 24 to 64 bytes ({e})"),
                    )
                })?;
                Some(s.expose().clone())
            }
            None => None,
        };
        if !self.urls.is_empty() && secret.is_none() {
            return Err(Error::invalid(
                "notifications.secret",
                "is required when notifications.urls is set (receivers verify the signature \
                 with it)",
            ));
        }
        let mut out: Vec<NotificationEndpoint> = Vec::with_capacity(self.urls.len());
        for (i, raw) in self.urls.iter().enumerate() {
            let key = format!("notifications.urls[{i}]");
            let url = url::Url::parse(raw)
                .map_err(|e| Error::invalid(&key, format!("{raw:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::invalid(&key, "must be an http or https URL"));
            }
            if out.iter().any(|e| e.url == *raw) {
                return Err(Error::invalid(&key, format!("{raw:?} is listed twice")));
            }
            out.push(NotificationEndpoint {
                url: raw.clone(),
                secret: secret.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn refused(s: NotificationSettings) -> (String, String) {
        match s.validate() {
            Err(crate::Error::Invalid { field, message }) => (field, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn settings(urls: &[&str], secret: Option<&str>) -> NotificationSettings {
        NotificationSettings {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            secret: secret.map(|s| Redacted::new(s.to_string())),
        }
    }

    #[test]
    fn none_by_default_and_a_valid_list_passes() {
        assert!(
            NotificationSettings::default()
                .validate()
                .is_ok_and(|v| v.is_empty())
        );
        let ok = settings(
            &["https://ops.example/a", "http://10.0.0.1:9000/b"],
            Some(SECRET),
        )
        .validate()
        .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].secret.as_deref(), Some(SECRET));
    }

    #[test]
    fn each_refusal_names_its_key() {
        let (k, m) = refused(settings(&["https://ops.example/a"], None));
        assert_eq!(k, "notifications.secret");
        assert!(m.contains("required"), "{m}");
        let (k, _) = refused(settings(&[], Some("not-a-secret")));
        assert_eq!(k, "notifications.secret");
        let (k, _) = refused(settings(
            &["https://a.example/", "ftp://b.example/"],
            Some(SECRET),
        ));
        assert_eq!(k, "notifications.urls[1]");
        let (k, _) = refused(settings(&["not a url"], Some(SECRET)));
        assert_eq!(k, "notifications.urls[0]");
        let (k, m) = refused(settings(
            &["https://a.example/", "https://a.example/"],
            Some(SECRET),
        ));
        assert_eq!(k, "notifications.urls[1]");
        assert!(m.contains("twice"), "{m}");
    }
}
