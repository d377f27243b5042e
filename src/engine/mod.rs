//! The engine and its handle: the only public door to hookline.
//!
//! [`Engine::builder`] opens the store (running crash recovery), starts the supervisor and the
//! background tasks (wake forwarding, retention, the node's heartbeat and, with a shared store,
//! the claimer), and resumes every subscription that has pending deliveries. The resulting
//! [`EngineHandle`] is cheap to clone and hides actors and the database entirely; the HTTP API
//! and the CLI are thin layers over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort, rpc::CallResult};
use tokio::sync::Mutex;

use crate::actors::SharedCtx;
#[cfg(feature = "test-hooks")]
use crate::actors::subscriber::SubscriberMsg;
use crate::actors::supervisor::SupervisorMsg;
#[cfg(feature = "test-hooks")]
use crate::domain::SubscriptionId;
use crate::error::{Error, Result};
use crate::store::SharedStore;

mod builder;
mod cluster;
mod events;
mod notifications;
mod overview;
mod retention;
mod subscriptions;
mod tenants;
mod transforms;

pub use builder::{Engine, EngineBuilder};

/// The engine's public door. Clone it freely; every clone drives the same engine.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("store", &self.inner.ctx.store)
            .finish()
    }
}

struct Inner {
    ctx: SharedCtx,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
    tenant_updates: Mutex<()>,
    /// Hash of an admin key given by configuration (never stored).
    admin_override: std::sync::RwLock<Option<String>>,
    /// Background tasks (wake forwarding, retention), stopped at shutdown.
    background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl EngineHandle {
    fn store(&self) -> &SharedStore {
        &self.inner.ctx.store
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    // ---- lifecycle -----------------------------------------------------------------------

    /// Stops intake, lets attempts in flight finish (up to the shutdown grace), commits what is
    /// pending and closes the store. Attempts cut short are retried after the next start.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut tasks) = self.inner.background.lock() {
            tasks.drain(..).for_each(|t| t.abort());
        }
        let grace = self.inner.ctx.config.shutdown_grace;
        let drained = self
            .inner
            .supervisor
            .call(SupervisorMsg::Shutdown, Some(grace))
            .await;
        let drained = matches!(drained, Ok(CallResult::Success(())));
        if !drained {
            tracing::warn!("shutdown grace elapsed; abandoning attempts still in flight");
        }
        let _ = self
            .inner
            .supervisor
            .stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
            .await;
        self.inner.supervisor.stop(None);
        if let Some(task) = self.inner.supervisor_task.lock().await.take() {
            let _ = task.await;
        }
        self.inner.ctx.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.ctx.tasks.wait()).await;
        self.release_leases(drained).await;
        self.store().close().await;
    }

    /// Test-only: makes the subscription's actor panic inside a message handler.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn inject_actor_panic(&self, id: &SubscriptionId) -> Result<()> {
        let actor = self.actor(id).await?;
        actor
            .cast(SubscriberMsg::Panic)
            .map_err(|_| Error::Internal("actor gone".into()))
    }

    /// Test-only: the number of live subscriber actors.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn live_actors(&self) -> Result<usize> {
        call(&self.inner.supervisor, SupervisorMsg::Count).await
    }
}

async fn call<T: Send + 'static>(
    actor: &ActorRef<SupervisorMsg>,
    msg: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
) -> Result<T> {
    match actor.call(msg, None).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(Error::ShuttingDown),
    }
}
