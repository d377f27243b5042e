//! How hookline authenticates to a receiver ([`ReceiverAuth`]) besides the signature every
//! request carries, and what the API shows of it ([`ReceiverAuthView`]).
//!
//! Secrets in a [`ReceiverAuth`] never leave the engine: `Debug` and the API show only the
//! view, which holds the type and the non-secret fields (header values are reduced to their
//! names). An OAuth2 token URL is checked against the same address rules as a subscription's URL.

use std::collections::BTreeMap;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use crate::domain::headers::validate_headers;
use crate::error::{Error, Result};
use crate::security::ssrf::{IpPolicy, check_url};

/// How hookline authenticates to a receiver (besides the signature every request carries).
/// Secrets in here are never returned by the API and never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ReceiverAuth {
    /// The callback contract's static `access-key` header.
    AccessKey {
        /// The key.
        key: String,
    },
    /// HTTP Basic authentication.
    Basic {
        /// User name (no `:`).
        username: String,
        /// Password.
        password: String,
    },
    /// A static bearer token.
    Bearer {
        /// The token.
        token: String,
    },
    /// OAuth2 client credentials at a token endpoint (the lending seed's gateway): the token is
    /// cached until shortly before it expires; a 401 from the receiver refreshes it once.
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// Client id (sent with HTTP Basic to the token endpoint).
        client_id: String,
        /// Client secret.
        client_secret: String,
        /// Requested scope.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Extra headers of the token request.
        #[serde(default)]
        token_headers: BTreeMap<String, String>,
        /// Extra headers of every delivery (e.g. entityId, appId, branchCode, userId,
        /// SERVICE-CONSUMER).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl std::fmt::Debug for ReceiverAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(&self.view()).map_err(|_| std::fmt::Error)?;
        write!(f, "ReceiverAuth({shown})")
    }
}

impl ReceiverAuth {
    /// What may be shown of it: the type and the non-secret fields.
    pub fn view(&self) -> ReceiverAuthView {
        match self {
            ReceiverAuth::AccessKey { .. } => ReceiverAuthView::AccessKey,
            ReceiverAuth::Basic { username, .. } => ReceiverAuthView::Basic {
                username: username.clone(),
            },
            ReceiverAuth::Bearer { .. } => ReceiverAuthView::Bearer,
            ReceiverAuth::Oauth2 {
                token_url,
                client_id,
                scope,
                token_headers,
                headers,
                ..
            } => ReceiverAuthView::Oauth2 {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                scope: scope.clone(),
                token_headers: token_headers.keys().cloned().collect(),
                headers: headers.keys().cloned().collect(),
            },
        }
    }

    pub(crate) fn validate(&self, policy: &IpPolicy) -> Result<()> {
        let visible = |field: &str, v: &str| {
            if v.is_empty() || v.len() > 4096 || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                Err(Error::invalid(
                    field,
                    "must be 1 to 4096 visible ASCII characters",
                ))
            } else {
                Ok(())
            }
        };
        match self {
            ReceiverAuth::AccessKey { key } => visible("auth.key", key),
            ReceiverAuth::Bearer { token } => visible("auth.token", token),
            ReceiverAuth::Basic { username, password } => {
                if username.is_empty() || username.contains(':') || username.len() > 256 {
                    return Err(Error::invalid(
                        "auth.username",
                        "must be 1 to 256 characters without ':'",
                    ));
                }
                if password.len() > 1024 {
                    return Err(Error::invalid(
                        "auth.password",
                        "must be at most 1024 characters",
                    ));
                }
                Ok(())
            }
            ReceiverAuth::Oauth2 {
                token_url,
                client_id,
                client_secret,
                token_headers,
                headers,
                ..
            } => {
                let url =
                    url::Url::parse(token_url).map_err(|e| Error::invalid("auth.tokenUrl", e))?;
                check_url(&url, policy).map_err(|e| Error::invalid("auth.tokenUrl", e))?;
                if client_id.is_empty() || client_id.len() > 512 {
                    return Err(Error::invalid(
                        "auth.clientId",
                        "must be 1 to 512 characters",
                    ));
                }
                if client_secret.len() > 4096 {
                    return Err(Error::invalid(
                        "auth.clientSecret",
                        "must be at most 4096 characters",
                    ));
                }
                validate_headers("auth.tokenHeaders", token_headers)?;
                validate_headers("auth.headers", headers)
            }
        }
    }
}

/// What the API shows of a [`ReceiverAuth`]: its type and the fields that are not secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ReceiverAuthView {
    /// A static `access-key` header is sent.
    AccessKey,
    /// HTTP Basic authentication.
    Basic {
        /// User name.
        username: String,
    },
    /// A static bearer token is sent.
    Bearer,
    /// OAuth2 client credentials.
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Requested scope (`null` when none).
        scope: Option<String>,
        /// Names of the extra headers of the token request.
        token_headers: Vec<String>,
        /// Names of the extra headers of every delivery.
        headers: Vec<String>,
    },
}

// Keys go out in alphabetical order, `type` included: the bytes the API has always sent (the
// view used to be a `serde_json::Value`, whose map is sorted), which a derive would reorder.
impl Serialize for ReceiverAuthView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        const NAME: &str = "ReceiverAuthView";
        match self {
            ReceiverAuthView::AccessKey => {
                let mut m = s.serialize_struct(NAME, 1)?;
                m.serialize_field("type", "accessKey")?;
                m.end()
            }
            ReceiverAuthView::Basic { username } => {
                let mut m = s.serialize_struct(NAME, 2)?;
                m.serialize_field("type", "basic")?;
                m.serialize_field("username", username)?;
                m.end()
            }
            ReceiverAuthView::Bearer => {
                let mut m = s.serialize_struct(NAME, 1)?;
                m.serialize_field("type", "bearer")?;
                m.end()
            }
            ReceiverAuthView::Oauth2 {
                token_url,
                client_id,
                scope,
                token_headers,
                headers,
            } => {
                let mut m = s.serialize_struct(NAME, 6)?;
                m.serialize_field("clientId", client_id)?;
                m.serialize_field("headers", headers)?;
                m.serialize_field("scope", scope)?;
                m.serialize_field("tokenHeaders", token_headers)?;
                m.serialize_field("tokenUrl", token_url)?;
                m.serialize_field("type", "oauth2")?;
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth2() -> ReceiverAuth {
        ReceiverAuth::Oauth2 {
            token_url: "https://idp.example/token".into(),
            client_id: "hookline".into(),
            client_secret: "s3cr3t-client".into(),
            scope: None,
            token_headers: BTreeMap::from([("appId".into(), "A1".into())]),
            headers: BTreeMap::from([
                ("entityId".into(), "E1".into()),
                ("branchCode".into(), "B2".into()),
            ]),
        }
    }

    #[test]
    fn the_view_is_the_json_the_api_always_sent() {
        let shown = |a: &ReceiverAuth| serde_json::to_string(&a.view()).expect("serialises");
        assert_eq!(
            shown(&ReceiverAuth::AccessKey { key: "k".into() }),
            r#"{"type":"accessKey"}"#
        );
        assert_eq!(
            shown(&ReceiverAuth::Basic {
                username: "u".into(),
                password: "p".into()
            }),
            r#"{"type":"basic","username":"u"}"#
        );
        assert_eq!(
            shown(&ReceiverAuth::Bearer { token: "t".into() }),
            r#"{"type":"bearer"}"#
        );
        assert_eq!(
            shown(&oauth2()),
            r#"{"clientId":"hookline","headers":["branchCode","entityId"],"scope":null,"tokenHeaders":["appId"],"tokenUrl":"https://idp.example/token","type":"oauth2"}"#
        );
    }

    #[test]
    fn the_view_parses_back() {
        for auth in [
            ReceiverAuth::Basic {
                username: "u".into(),
                password: "p".into(),
            },
            ReceiverAuth::Bearer { token: "t".into() },
            oauth2(),
        ] {
            let view = auth.view();
            let json = serde_json::to_value(&view).expect("serialises");
            let back: ReceiverAuthView = serde_json::from_value(json).expect("parses");
            assert_eq!(back, view);
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", oauth2());
        assert!(!shown.contains("s3cr3t-client"), "{shown}");
        assert!(!shown.contains("E1"), "{shown}");
        assert!(shown.starts_with("ReceiverAuth({"), "{shown}");
    }
}
