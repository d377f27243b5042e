//! [`ProxyUrl`]: the outbound proxy's address, parsed and checked once where it is configured.
//!
//! Invariant: a `ProxyUrl` is an `http://` or `https://` URL with a host, so the HTTP client
//! that uses it never meets a proxy setting it has to refuse later.

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::error::{Error, Result};

/// An outbound HTTP(S) proxy, e.g. `http://10.0.0.5:3128`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    /// Parses a proxy address; refusals name the `proxy` key.
    pub fn parse(text: &str) -> Result<ProxyUrl> {
        let url = Url::parse(text).map_err(|e| Error::invalid("proxy", e))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::invalid(
                "proxy",
                "must be an http:// or https:// URL with a host",
            ));
        }
        Ok(ProxyUrl(url))
    }

    /// The parsed URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }
}

impl FromStr for ProxyUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<ProxyUrl> {
        ProxyUrl::parse(s)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        match ProxyUrl::parse(text) {
            Err(Error::Invalid { field, message }) => {
                assert_eq!(field, "proxy");
                message
            }
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn http_and_https_proxies_with_a_host_parse() {
        let p = ProxyUrl::parse("http://10.0.0.5:3128").expect("valid");
        assert_eq!(p.as_url().port(), Some(3128));
        assert!(ProxyUrl::parse("https://proxy.internal").is_ok());
    }

    #[test]
    fn other_schemes_and_garbage_are_refused_with_the_url_parsers_words() {
        let scheme = "must be an http:// or https:// URL with a host";
        assert_eq!(refusal("ftp://x"), scheme);
        assert_eq!(refusal("unix:/run/proxy.sock"), scheme);
        assert_eq!(refusal("not a url"), "relative URL without a base");
        assert_eq!(refusal("http://"), "empty host");
    }
}
