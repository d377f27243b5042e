//! Tenant transforms: WebAssembly components that reshape or drop a delivery before it is signed.
//!
//! A transform is a component exporting `hookline:transform/handler@1.0.0`
//! (`transforms/wit/transform.wit`, world `transformer`). [`TransformRuntime`] compiles and
//! validates uploaded components ([`TransformRuntime::compile`]), reloads precompiled ones
//! without recompiling ([`TransformRuntime::load_precompiled`]), and runs one call per delivery
//! attempt in a fresh sandboxed instance ([`TransformRuntime::call`]).
//!
//! # The sandbox
//! - **Nothing ambient.** Guests are linked against WASI 0.2 with an empty context: no
//!   preopened directories, environment, arguments or network; stdin is closed; stdout and
//!   stderr go to a bounded log returned with every call ([`GuestLog`]). A component importing
//!   anything else is refused at compile time.
//! - **Fresh instance per call.** No state survives between calls, so one event cannot see
//!   another's data, and a crash poisons nothing.
//! - **Bounded resources** ([`TransformLimits`]): module size at compile time; linear memory
//!   per instance (a `ResourceLimiter` that refuses growth); wall-clock time per call (epoch
//!   interruption, checked every 1 ms tick, with a `tokio` timeout as backstop); wasm stack;
//!   output size and header count; log size.
//! - **Never blocks the runtime.** Calls use wasmtime's async API on fibers, and a running guest
//!   yields to the executor at every epoch tick, so a spinning guest costs its own task a
//!   time slice, never a tokio worker.
//!
//! # Invariants
//! - A call's outcome is decided by the guest and the limits only: every failure is a
//!   [`TransformError`] that names its cause in words a tenant understands, and none of them
//!   is worth retrying (the same event gives the same failure).
//! - A transform cannot set hookline's own headers (`webhook-*`) nor the framing headers
//!   (`content-length`, `host`, ...); the rules are in `output`.
//! - A precompiled artifact is native code: it is only ever produced by
//!   [`TransformRuntime::compile`] and loaded after its checksum and module hash are verified
//!   (see [`TransformRuntime::load_precompiled`]). Tenants upload WebAssembly, never artifacts.
//! - The runtime owns its epoch ticker thread; it stops when the last clone of the runtime is
//!   dropped (no process-wide state).

mod limits;
mod log;
mod output;
mod runtime;
#[cfg(test)]
mod tests;

use std::time::Duration;

// The module's API, for the engine to use once transforms are wired in.
#[allow(unused_imports)]
pub use limits::TransformLimits;
pub use log::GuestLog;
#[allow(unused_imports)]
pub use runtime::{CompiledTransform, TransformRuntime};

/// The interface a transform must export, as tenants see it in errors.
pub const HANDLER_INTERFACE: &str = "hookline:transform/handler@1.0.0";

/// What hookline is about to send, handed to the transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformInput {
    /// The event id (receivers see it as `webhook-id`).
    pub id: String,
    pub tenant_id: String,
    pub subscription_id: String,
    /// The envelope's `notificationType`, e.g. `NODE_EVENT`.
    pub notification_type: String,
    /// The headers hookline will send (before its own identity and signature headers).
    pub headers: Vec<(String, String)>,
    /// The body hookline will send: the envelope as UTF-8 JSON.
    pub body: Vec<u8>,
}

/// What the transform decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformOutcome {
    /// Send this request instead (headers already checked against the header rules).
    Deliver {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Send nothing; the delivery ends as dropped with this reason.
    Drop { reason: String },
}

/// Everything one call produced: the outcome or the failure, and what the guest printed.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub result: Result<TransformOutcome, TransformError>,
    /// stdout and stderr of the call, bounded; kept for the attempt log in both cases.
    pub log: GuestLog,
    /// Wall-clock time of the call, waiting for a free instance slot included.
    pub elapsed: Duration,
}

/// Why a transform was refused or a call failed. No variant is retriable: the same module and
/// event give the same failure, so the delivery fails instead of being retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The uploaded module is refused (at compile time).
    #[error("invalid transform: {0}")]
    Invalid(String),
    /// A stored precompiled artifact cannot be used; compile the module again.
    #[error("the precompiled transform cannot be loaded ({0}); compile the module again")]
    Artifact(String),
    /// The guest trapped: a panic, an uncaught exception, `unreachable`, a stack overflow.
    #[error("transform crashed: {0}")]
    Trap(String),
    /// The call ran past its time budget and was interrupted.
    #[error("transform exceeded its time limit of {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The guest needed more linear memory than allowed (and trapped when refused).
    #[error("transform exceeded its memory limit of {}", output::human_bytes(*.0))]
    MemoryLimit(usize),
    /// The returned request is too large (body plus headers) or has too many headers.
    #[error("transform output refused: {0}")]
    OutputTooLarge(String),
    /// The transform set a header that hookline reserves (`webhook-*`).
    #[error(
        "transform output refused: it sets the header {0}, but webhook-* headers are set by \
         hookline after the transform (they identify and sign what is really sent)"
    )]
    ForbiddenHeader(String),
    /// The transform returned a header name or value that is not valid HTTP.
    #[error("transform output refused: {0}")]
    InvalidHeader(String),
    /// The transform returned `err(message)`.
    #[error("transform failed: {0}")]
    GuestError(String),
    /// The runtime itself could not be set up or is unusable (not the tenant's fault).
    #[error("transform runtime unavailable: {0}")]
    Runtime(String),
}

impl TransformError {
    /// A stable, machine-readable code for the error kind (API bodies, attempt logs).
    pub fn code(&self) -> &'static str {
        match self {
            TransformError::Invalid(_) => "transform_invalid",
            TransformError::Artifact(_) => "transform_artifact",
            TransformError::Trap(_) => "transform_trap",
            TransformError::Timeout(_) => "transform_timeout",
            TransformError::MemoryLimit(_) => "transform_memory_limit",
            TransformError::OutputTooLarge(_) => "transform_output_too_large",
            TransformError::ForbiddenHeader(_) => "transform_forbidden_header",
            TransformError::InvalidHeader(_) => "transform_invalid_header",
            TransformError::GuestError(_) => "transform_error",
            TransformError::Runtime(_) => "transform_runtime",
        }
    }
}
