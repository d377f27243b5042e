//! The engine's transforms: uploads compiled once, versions loaded once, calls per delivery.
//!
//! Invariants kept here:
//! - an upload is compiled, instantiated once under the call limits (`validate`) and only then
//!   journaled, with its precompiled artifact: a version that exists can run;
//! - a version is loaded from its artifact (milliseconds) at first use after a start, and
//!   compiled again only when the running wasmtime refuses the artifact (another version or
//!   configuration), after which the new artifact replaces the old one;
//! - compilation (CPU-heavy: seconds for a Python component) runs on blocking threads, one at a
//!   time, so uploads never starve delivery of both cores;
//! - nothing here decides a delivery's fate: [`TransformRegistry::run`] reports a [`Step`] and
//!   the subscription actor records it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{
    CompiledTransform, TransformError, TransformInput, TransformOutcome, TransformRuntime,
};
use crate::domain::TenantId;
use crate::domain::{TransformRef, TransformVersion, validate_transform_name};
use crate::error::{Error, Result};
use crate::policy::ErrorKind;
use crate::store::{NewTransformRow, SharedStore};

type Key = (TenantId, String, u32);

/// Counters of what the registry did since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransformStats {
    /// Modules compiled (uploads, and stored versions whose artifact was refused).
    pub compiled: u64,
    /// Versions loaded from their stored precompiled artifact.
    pub loaded_precompiled: u64,
    /// Versions currently loaded.
    pub cached: u64,
}

/// What running a subscription's transform decided for one attempt.
#[derive(Debug)]
pub(crate) enum Step {
    Deliver {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        log: Option<String>,
    },
    Drop {
        reason: String,
        log: Option<String>,
    },
    /// The tenant's transform failed: the delivery fails without retry.
    Fail {
        kind: ErrorKind,
        message: String,
        log: Option<String>,
    },
    /// hookline could not load the transform (a store read failed): retried.
    Unavailable {
        message: String,
    },
}

/// The transforms of one engine.
pub(crate) struct TransformRegistry {
    runtime: TransformRuntime,
    store: SharedStore,
    cache: Mutex<HashMap<Key, Arc<CompiledTransform>>>,
    /// One compilation at a time (uploads and artifact rebuilds).
    compile_gate: Semaphore,
    /// One load at a time, so a version used by many subscriptions is loaded once.
    load_gate: tokio::sync::Mutex<()>,
    compiled: AtomicU64,
    loaded: AtomicU64,
}

impl std::fmt::Debug for TransformRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformRegistry")
            .field("runtime", &self.runtime)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn log_text(log: &super::GuestLog) -> Option<String> {
    if log.text.is_empty() && log.discarded_bytes == 0 {
        return None;
    }
    let mut text = log.text.clone();
    if log.discarded_bytes > 0 {
        text.push_str(&format!("\n[{} more bytes discarded]", log.discarded_bytes));
    }
    Some(text)
}

impl TransformRegistry {
    pub(crate) fn new(runtime: TransformRuntime, store: SharedStore) -> Self {
        TransformRegistry {
            runtime,
            store,
            cache: Mutex::default(),
            compile_gate: Semaphore::new(1),
            load_gate: tokio::sync::Mutex::new(()),
            compiled: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
        }
    }

    pub(crate) fn runtime(&self) -> &TransformRuntime {
        &self.runtime
    }

    pub(crate) fn stats(&self) -> TransformStats {
        TransformStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            loaded_precompiled: self.loaded.load(Ordering::Relaxed),
            cached: self.cache_lock().len() as u64,
        }
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<CompiledTransform>>> {
        // The map is only ever inserted into or removed from: a panic cannot leave it torn.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Compiles a module on a blocking thread, one compilation at a time.
    async fn compile(
        &self,
        wasm: Arc<Vec<u8>>,
    ) -> std::result::Result<CompiledTransform, TransformError> {
        let _permit = self
            .compile_gate
            .acquire()
            .await
            .map_err(|_| TransformError::Runtime("the engine is shutting down".into()))?;
        let rt = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || rt.compile(&wasm))
            .await
            .map_err(|e| TransformError::Runtime(format!("compilation task failed: {e}")))??;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(compiled)
    }

    /// Stores a new version of `name` (or returns the version with the same bytes).
    pub(crate) async fn upload(
        &self,
        tenant: &TenantId,
        name: &str,
        wasm: Vec<u8>,
    ) -> Result<(TransformVersion, bool)> {
        validate_transform_name("name", name)?;
        if wasm.is_empty() {
            return Err(Error::invalid("module", "the body is empty"));
        }
        let sha256 = hex::encode(Sha256::digest(&wasm));
        if let Some(v) = self
            .store
            .find_transform_by_hash(tenant, name, &sha256)
            .await?
        {
            return Ok((v, false));
        }
        let wasm = Arc::new(wasm);
        let refused = |e: TransformError| match e {
            TransformError::Runtime(m) => Error::Internal(m),
            e => Error::invalid("module", e),
        };
        let mut compiled = self.compile(wasm.clone()).await.map_err(refused)?;
        // Proves the start code (an interpreter's initialisation) fits the call limits now,
        // rather than failing every delivery later.
        self.runtime.validate(&compiled).await.map_err(refused)?;
        let artifact = compiled.take_artifact();
        let wasm = Arc::try_unwrap(wasm).unwrap_or_else(|shared| (*shared).clone());
        let (version, created) = self
            .store
            .insert_transform(NewTransformRow {
                tenant: tenant.clone(),
                name: name.to_string(),
                sha256,
                wasm,
                artifact,
                at: crate::domain::clock::now_ms(),
            })
            .await?;
        self.cache_lock().insert(
            (tenant.clone(), name.to_string(), version.version),
            Arc::new(compiled),
        );
        Ok((version, created))
    }

    /// Forgets the loaded versions of `name` (after it was deleted).
    pub(crate) fn forget(&self, tenant: &TenantId, name: &str) {
        self.cache_lock()
            .retain(|(t, n, _), _| !(t == tenant && n == name));
    }

    /// The loaded transform of a version, loading it if needed.
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Arc<CompiledTransform>> {
        let key = (tenant.clone(), name.to_string(), version);
        if let Some(t) = self.cache_lock().get(&key) {
            return Ok(t.clone());
        }
        let _loading = self.load_gate.lock().await;
        if let Some(t) = self.cache_lock().get(&key) {
            return Ok(t.clone());
        }
        let missing = || Error::not_found("transform", format!("{name} version {version}"));
        let stored = self
            .store
            .transform_artifact(tenant, name, version)
            .await?
            .ok_or_else(missing)?;
        let loaded = match stored.artifact {
            Some(artifact) => {
                let rt = self.runtime.clone();
                let sha = stored.sha256;
                tokio::task::spawn_blocking(move || rt.load_precompiled(&artifact, &sha))
                    .await
                    .map_err(|e| Error::Internal(format!("transform load task failed: {e}")))?
            }
            None => Err(TransformError::Artifact("none stored".into())),
        };
        let compiled = match loaded {
            Ok(t) => {
                self.loaded.fetch_add(1, Ordering::Relaxed);
                t
            }
            Err(e) => {
                tracing::info!(
                    tenant = %tenant, transform = name, version, reason = %e,
                    "compiling the stored transform again"
                );
                let wasm = self
                    .store
                    .transform_module(tenant, name, version)
                    .await?
                    .ok_or_else(missing)?;
                let mut t = self
                    .compile(Arc::new(wasm))
                    .await
                    .map_err(|e| Error::invalid("transform", e))?;
                if let Some(artifact) = t.take_artifact() {
                    self.store
                        .set_transform_artifact(tenant.clone(), name.to_string(), version, artifact)
                        .await?;
                }
                t
            }
        };
        let compiled = Arc::new(compiled);
        self.cache_lock().insert(key, compiled.clone());
        Ok(compiled)
    }

    /// Runs a version on one input; the error is the tenant's failure or ours.
    pub(crate) async fn call(
        &self,
        tenant: &TenantId,
        binding: &TransformRef,
        input: TransformInput,
    ) -> Step {
        let t = match self.get(tenant, &binding.name, binding.version).await {
            Ok(t) => t,
            Err(Error::Unavailable { .. }) | Err(Error::Internal(_)) | Err(Error::ShuttingDown) => {
                return Step::Unavailable {
                    message: format!(
                        "transform {} version {} could not be loaded",
                        binding.name, binding.version
                    ),
                };
            }
            // Not retried: the version is gone, or its stored module no longer compiles.
            Err(e) => {
                let kind = match e {
                    Error::NotFound { .. } => ErrorKind::TransformMissing,
                    _ => ErrorKind::TransformInvalid,
                };
                return Step::Fail {
                    kind,
                    message: e.to_string(),
                    log: None,
                };
            }
        };
        let report = self.runtime.call(&t, input).await;
        let log = log_text(&report.log);
        match report.result {
            Ok(TransformOutcome::Deliver { headers, body }) => Step::Deliver { headers, body, log },
            Ok(TransformOutcome::Drop { reason }) => Step::Drop { reason, log },
            Err(TransformError::Runtime(message)) => Step::Unavailable { message },
            Err(e) => Step::Fail {
                kind: e.kind(),
                message: e.to_string(),
                log,
            },
        }
    }
}
