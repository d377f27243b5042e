//! `[limits]`: the HTTP API's request limits as the server's configuration spells them.
//!
//! The API layer reads them (`ApiConfig::from_limits`); `validate` keeps each within the range
//! the API can serve and names the key at fault.

use serde::{Deserialize, Serialize};

use super::Dur;

/// `[limits]`: request size limits of the HTTP API, read by the API layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest body of a single event (and of any other JSON request). Default 1 MiB.
    pub max_event_bytes: usize,
    /// Largest body of a batch publish. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Most events in one batch publish. Default 1000.
    pub max_batch_events: usize,
    /// Deepest JSON nesting accepted in a request body. Default 64.
    pub max_json_depth: usize,
    /// Time a client has to send a request's headers (also the keep-alive idle timeout).
    /// Default 10 s.
    pub header_read_timeout: Dur,
    /// Time a client has to send a request's body. Default 30 s.
    pub body_read_timeout: Dur,
    /// Most HTTP connections open at once. Default 1024.
    pub max_connections: usize,
}

impl Limits {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        if !(1024..=1 << 30).contains(&self.max_event_bytes) {
            return Err(Error::invalid(
                "limits.maxEventBytes",
                "must be between 1 KiB and 1 GiB",
            ));
        }
        if !(self.max_event_bytes..=1 << 30).contains(&self.max_batch_bytes) {
            return Err(Error::invalid(
                "limits.maxBatchBytes",
                "must be between limits.maxEventBytes and 1 GiB",
            ));
        }
        if !(1..=100_000).contains(&self.max_batch_events) {
            return Err(Error::invalid(
                "limits.maxBatchEvents",
                "must be between 1 and 100000",
            ));
        }
        if !(2..=1024).contains(&self.max_json_depth) {
            return Err(Error::invalid(
                "limits.maxJsonDepth",
                "must be between 2 and 1024",
            ));
        }
        if self.header_read_timeout.0.is_zero() || self.body_read_timeout.0.is_zero() {
            return Err(Error::invalid(
                "limits",
                "headerReadTimeout and bodyReadTimeout must be positive",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid(
                "limits.maxConnections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_batch_events: 1000,
            max_json_depth: 64,
            header_read_timeout: Dur(std::time::Duration::from_secs(10)),
            body_read_timeout: Dur(std::time::Duration::from_secs(30)),
            max_connections: 1024,
        }
    }
}
