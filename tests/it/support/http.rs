//! The HTTP API served in-process over loopback for tests that need both the API and the
//! engine underneath it (the engine stays reachable as [`Api::h`]).

use serde_json::Value;

use super::TestEngine;

/// The HTTP API in-process over loopback, with an admin key.
#[derive(Debug)]
pub struct Api {
    base: String,
    client: reqwest::Client,
    pub h: TestEngine,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The admin key of every [`Api`].
pub const ADMIN: &str = "admin-key-for-http-tests-0123456789";

impl Api {
    pub async fn start() -> Api {
        let h = TestEngine::start().await;
        h.ensure_admin_key(Some(ADMIN)).await.expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(hookline::api::serve(
            listener,
            h.engine.clone(),
            std::future::pending(),
        ));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Api {
            base,
            client,
            h,
            server,
        }
    }

    /// Calls the API with the admin key: status, JSON body (`Null` if none), text body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        self.call_as(ADMIN, method, path, body).await
    }

    /// Calls the API with `key`.
    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}
