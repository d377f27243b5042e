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
pub(crate) mod output;
mod registry;
mod runtime;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::{CONTENT_TYPE_JSON, EventId, NotificationType};
use crate::policy::ErrorKind;

pub use limits::TransformLimits;
pub use log::GuestLog;
pub use registry::TransformStats;
pub(crate) use registry::{Step, TransformRegistry};
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

impl TransformInput {
    /// What a delivery of event `id` hands its transform: the headers hookline would send
    /// before its identity, signature and authentication headers (the JSON content type, then
    /// the subscription's own `headers`), and the envelope as body. Credentials are not handed
    /// to tenant code (they would end up in its log); hookline adds them after the transform.
    pub(crate) fn for_delivery(
        id: &EventId,
        tenant_id: &str,
        subscription_id: &str,
        notification_type: NotificationType,
        headers: &BTreeMap<String, String>,
        body: Vec<u8>,
    ) -> TransformInput {
        let mut h = Vec::with_capacity(1 + headers.len());
        h.push(("content-type".to_string(), CONTENT_TYPE_JSON.to_string()));
        h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        TransformInput {
            id: id.as_str().to_string(),
            tenant_id: tenant_id.to_string(),
            subscription_id: subscription_id.to_string(),
            notification_type: notification_type.as_str().to_string(),
            headers: h,
            body,
        }
    }
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
        self.kind().as_str()
    }

    /// The error's kind, as an attempt log names it.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            TransformError::Invalid(_) => ErrorKind::TransformInvalid,
            TransformError::Artifact(_) => ErrorKind::TransformArtifact,
            TransformError::Trap(_) => ErrorKind::TransformTrap,
            TransformError::Timeout(_) => ErrorKind::TransformTimeout,
            TransformError::MemoryLimit(_) => ErrorKind::TransformMemoryLimit,
            TransformError::OutputTooLarge(_) => ErrorKind::TransformOutputTooLarge,
            TransformError::ForbiddenHeader(_) => ErrorKind::TransformForbiddenHeader,
            TransformError::InvalidHeader(_) => ErrorKind::TransformInvalidHeader,
            TransformError::GuestError(_) => ErrorKind::TransformError,
            TransformError::Runtime(_) => ErrorKind::TransformRuntime,
        }
    }
}

impl CallReport {
    /// The report as the API and the CLI show a test call: the action with its request, drop
    /// reason or error, and the guest's log.
    pub fn into_test(self) -> crate::domain::TransformTest {
        use crate::domain::{TransformAction, TransformTest, TransformTestError};
        let mut log = self.log.text;
        if self.log.discarded_bytes > 0 {
            log.push_str(&format!(
                "\n[{} more bytes discarded]",
                self.log.discarded_bytes
            ));
        }
        let mut t = TransformTest {
            action: TransformAction::Error,
            headers: None,
            body: None,
            body_base64: None,
            reason: None,
            error: None,
            log,
            duration_us: self.elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
        };
        match self.result {
            Ok(TransformOutcome::Deliver { headers, body }) => {
                t.action = TransformAction::Deliver;
                t.headers = Some(headers);
                match String::from_utf8(body) {
                    Ok(text) => t.body = Some(text),
                    Err(e) => {
                        use base64::Engine as _;
                        t.body_base64 =
                            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
                    }
                }
            }
            Ok(TransformOutcome::Drop { reason }) => {
                t.action = TransformAction::Drop;
                t.reason = Some(reason);
            }
            Err(e) => {
                t.error = Some(TransformTestError {
                    code: e.code().to_string(),
                    message: e.to_string(),
                });
            }
        }
        t
    }
}

/// Compiles `wasm` and runs it once on `event`, as a delivery of a subscription would, without
/// an engine or a journal: what `hookline transform test` does for tenants developing a
/// transform. The event's `tenantId` defaults to `local` when empty.
pub async fn test_locally(
    wasm: Vec<u8>,
    mut event: crate::domain::EventInput,
    limits: TransformLimits,
) -> crate::error::Result<crate::domain::TransformTest> {
    use crate::error::Error;
    if event.tenant_id.is_empty() {
        event.tenant_id = "local".to_string();
    }
    let event = event.validate()?;
    let body =
        serde_json::to_vec(&event).map_err(|e| Error::Internal(format!("test event: {e}")))?;
    let runtime = TransformRuntime::new(limits).map_err(|e| Error::Internal(e.to_string()))?;
    let rt = runtime.clone();
    let compiled = tokio::task::spawn_blocking(move || rt.compile(&wasm))
        .await
        .map_err(|e| Error::Internal(format!("compilation task failed: {e}")))?
        .map_err(|e| Error::invalid("module", e))?;
    runtime
        .validate(&compiled)
        .await
        .map_err(|e| Error::invalid("module", e))?;
    let input = TransformInput::for_delivery(
        &event.id,
        event.tenant_id.as_str(),
        "local",
        event.notification_type,
        &BTreeMap::new(),
        body,
    );
    Ok(runtime.call(&compiled, input).await.into_test())
}
