//! The engine's public error type.
//!
//! Every fallible call on [`EngineHandle`](crate::EngineHandle) returns [`Error`]. Variants say what
//! kind of problem it is (bad input, missing resource, conflicting state, journal trouble) so that the
//! HTTP layer can map them to status codes without ever matching on message text.

use std::fmt;

/// A boxed source error from a layer whose types we do not expose (sqlx, ractor).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a call to the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is not acceptable; `field` names the offending field (camelCase, as in the API).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field at fault, e.g. `url` or `retry.maxAttempts`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The resource does not exist (or belongs to another tenant).
    #[error("{kind} {id} not found")]
    NotFound {
        /// Which kind of resource: `tenant`, `subscription`, `delivery`, `event`.
        kind: &'static str,
        /// The identifier that was looked up.
        id: String,
    },
    /// The request conflicts with the current state of the resource.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The journal could not be read or written (disk full, I/O error). Nothing was accepted.
    #[error("journal unavailable: {message}")]
    Unavailable {
        /// A description safe to show to callers.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<BoxError>,
    },
    /// The engine is shutting down and refuses new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The journal's intake queue stayed full for longer than `EngineConfig::intake_wait`:
    /// nothing was accepted; retry later.
    #[error("the journal's intake queue is full")]
    Overloaded,
    /// A write on a subscription's queue carried a lease that is no longer the current one:
    /// another holder took the queue over (fencing, see the store's `Lease`). Nothing was
    /// written; the stale holder must stop working that queue.
    #[error("the lease on the queue of subscription {subscription} was taken over")]
    LeaseLost {
        /// The subscription whose queue the lease was on.
        subscription: String,
    },
    /// A bug or an unexpected internal condition; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A stable, machine-readable code for the error kind (used in API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::NotFound { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Unavailable { .. } => "unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::Overloaded => "overloaded",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Internal(_) => "internal",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// An error and its causes on one line (reqwest's own message rarely names the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
