//! The HTTP side of the client subcommands: connection settings, requests, and the server's
//! refusals turned into readable errors.

use std::fmt;
use std::time::Duration;

use clap::Args;
use hookline::ServerConfig;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use url::Url;

/// Where the server is and which key to use; shared by every client subcommand.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The hookline server's base URL.
    #[arg(
        long,
        env = "HOOKLINE_URL",
        default_value_t = default_url(),
        global = true
    )]
    pub url: String,
    /// The API key: the admin key or a tenant's key.
    #[arg(long, env = "HOOKLINE_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Print JSON instead of tables (`load`: only its final JSON line).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The server's address when it runs with its defaults.
fn default_url() -> String {
    format!("http://{}", ServerConfig::DEFAULT_LISTEN)
}

/// How long one request may take, connection and body included. Generous: a batch of 1000
/// events waits for its durable commit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A refusal from the server: its status and the `{error: {code, message, field}}` body (or
/// what stood in its place when the body was not our JSON).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// The `Retry-After` header in seconds, when the server sent one (429, 503).
    pub retry_after: Option<Duration>,
    /// Whether the request carried no API key (to hint at `--key` on a 401).
    pub keyless: bool,
}

impl Refusal {
    fn from_response(
        status: StatusCode,
        headers: &header::HeaderMap,
        body: &[u8],
        keyless: bool,
    ) -> Refusal {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let err = parsed.as_ref().and_then(|v| v.get("error"));
        let text = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_str);
        let (code, message) = match (text("code"), text("message")) {
            (Some(c), Some(m)) => (c.to_owned(), m.to_owned()),
            _ => {
                // Not our error format (a proxy, another server): show the start of the body.
                let body = String::from_utf8_lossy(body);
                let body: String = body.trim().chars().take(300).collect();
                let reason = status.canonical_reason().unwrap_or("error");
                let message = if body.is_empty() {
                    reason.to_owned()
                } else {
                    body
                };
                (format!("http_{}", status.as_u16()), message)
            }
        };
        Refusal {
            status,
            code,
            message,
            field: text("field").map(str::to_owned),
            retry_after,
            keyless,
        }
    }

    /// The refusal as the `error` object of the API's format.
    pub fn to_json(&self) -> Value {
        let mut e = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(f) = &self.field {
            e["field"] = Value::String(f.clone());
        }
        e
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server refused ({} {}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )?;
        if let Some(field) = &self.field {
            write!(f, " [field: {field}]")?;
        }
        if self.status == StatusCode::UNAUTHORIZED && self.keyless {
            write!(f, " (no API key given: pass --key or set HOOKLINE_KEY)")?;
        }
        Ok(())
    }
}

/// Why a call did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with a non-2xx status.
    Refused(Refusal),
    /// The server could not be reached, or its answer not read.
    Transport(String),
    /// The request could not be formed (an id that is not a path segment).
    Invalid(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused(r) => r.fmt(f),
            CallError::Transport(m) | CallError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CallError {}

/// `e` and its causes, joined: reqwest's own message alone ("error sending request") hides
/// whether it was a refused connection, a timeout or a TLS failure.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// A client of one hookline server.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

impl Api {
    /// A client for `conn`'s server. A plain reqwest client: loopback and private addresses are
    /// fine here (it is the operator's own server), and the usual proxy variables are honoured.
    pub fn new(conn: &Conn) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hookline-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Api::with_client(conn, http)
    }

    /// A client for `conn`'s server using `http` (the load generator tunes its own pool).
    pub fn with_client(conn: &Conn, http: reqwest::Client) -> anyhow::Result<Api> {
        let base = Url::parse(&conn.url)
            .map_err(|e| anyhow::anyhow!("--url / HOOKLINE_URL {:?}: {e}", conn.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            anyhow::bail!(
                "--url / HOOKLINE_URL {:?}: expected an http(s) URL such as {}",
                conn.url,
                default_url()
            );
        }
        let key = conn.key.clone().filter(|k| !k.trim().is_empty());
        Ok(Api { http, base, key })
    }

    /// The URL of a route: `segments` are percent-encoded, so ids cannot change the path.
    /// `.`, `..` and empty ids are refused (a URL would drop or resolve them).
    pub fn url(&self, segments: &[&str]) -> Result<Url, CallError> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(CallError::Invalid(format!("{bad:?} is not a valid id")));
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    /// Sends one request; a 2xx answers its JSON body (`null` when empty), anything else a
    /// [`CallError`].
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Value, CallError> {
        let mut url = self.url(segments)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut rb = self.http.request(method, url.clone());
        if let Some(key) = &self.key {
            rb = rb.bearer_auth(key);
        }
        if let Some(body) = body {
            rb = rb
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let transport = |e: reqwest::Error| {
            CallError::Transport(format!("cannot reach {url}: {}", error_chain(&e)))
        };
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(CallError::Refused(Refusal::from_response(
                status,
                &headers,
                &bytes,
                self.key.is_none(),
            )));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Transport(format!(
                "{url} answered {} with a body that is not JSON: {e}",
                status.as_u16()
            ))
        })
    }

    /// `GET` a route.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, segments, query, None).await?)
    }

    /// `POST` a JSON body to a route.
    pub async fn post(&self, segments: &[&str], body: &Value) -> anyhow::Result<Value> {
        Ok(self
            .call(Method::POST, segments, &[], Some(serde_json::to_vec(body)?))
            .await?)
    }

    /// `POST` with no body (the state-changing routes on a resource).
    pub async fn post_empty(&self, segments: &[&str]) -> anyhow::Result<Value> {
        Ok(self.call(Method::POST, segments, &[], None).await?)
    }

    /// `DELETE` a route.
    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Value> {
        Ok(self.call(Method::DELETE, segments, &[], None).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(url: &str) -> anyhow::Result<Api> {
        Api::new(&Conn {
            url: url.into(),
            key: None,
            json: false,
        })
    }

    #[test]
    fn ids_are_path_segments_not_paths() {
        let a = api("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            a.url(&["v1", "subscriptions", "../tenants?x=1"])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/v1/subscriptions/..%2Ftenants%3Fx=1"
        );
        // A base under a path prefix (a reverse proxy) keeps it.
        let a = api("https://h.example/hookline").unwrap();
        assert_eq!(
            a.url(&["v1", "events"]).unwrap().as_str(),
            "https://h.example/hookline/v1/events"
        );
        assert!(a.url(&["v1", "subscriptions", ".."]).is_err());
        assert!(a.url(&["v1", "subscriptions", ""]).is_err());
    }

    #[test]
    fn only_http_urls_are_servers() {
        assert!(api("ftp://h.example").is_err());
        assert!(api("127.0.0.1:8080").is_err());
        assert!(api("not a url").is_err());
    }

    #[test]
    fn refusals_read_our_error_format_and_anything_else() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, header::HeaderValue::from_static("3"));
        let body = br#"{"error":{"code":"invalid","message":"url: bad","field":"url"}}"#;
        let r = Refusal::from_response(StatusCode::BAD_REQUEST, &h, body, false);
        assert_eq!(
            (r.code.as_str(), r.message.as_str(), r.field.as_deref()),
            ("invalid", "url: bad", Some("url"))
        );
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(
            r.to_string(),
            "the server refused (400 invalid): url: bad [field: url]"
        );

        let r = Refusal::from_response(
            StatusCode::BAD_GATEWAY,
            &header::HeaderMap::new(),
            b"<html>upstream down</html>",
            false,
        );
        assert_eq!(r.code, "http_502");
        assert_eq!(r.message, "<html>upstream down</html>");

        let r = Refusal::from_response(
            StatusCode::UNAUTHORIZED,
            &header::HeaderMap::new(),
            b"",
            true,
        );
        assert!(r.to_string().contains("HOOKLINE_KEY"), "{r}");
    }
}
