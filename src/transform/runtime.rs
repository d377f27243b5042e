//! The wasmtime engine behind transforms: compiling, reloading and calling components.
//!
//! One [`TransformRuntime`] per hookline engine owns one `wasmtime::Engine` (component model,
//! pooling allocator, epoch interruption), the WASI linker, and the epoch ticker thread. Clones
//! share all of it.
//!
//! # Per call
//! A permit from a semaphore sized like the instance pool (so the pool is never exhausted and a
//! burst waits instead of failing), then a fresh `Store` with an empty WASI context and the
//! memory limiter, an epoch deadline callback, a fresh instance from the `TransformerPre`, one
//! call of `transform`, the output checks, and the store is dropped (its slot goes back to the
//! pool).
//!
//! # Time limit
//! The ticker thread increments the engine's epoch every [`TICK`] while calls run (it parks
//! after [`IDLE_TICKS_BEFORE_SLEEP`] ticks without any, so an idle runtime costs no wake-ups,
//! and a busy one no syscalls to wake it). At every tick a
//! running guest enters the deadline callback, which interrupts it past its deadline and
//! otherwise yields to the executor: a spinning guest never holds a tokio worker for more than
//! a tick. Epochs only advance in wasm code, so a `tokio` timeout with the same deadline also
//! bounds time spent inside host calls (a guest sleeping through `wasi:io/poll`, say).
//!
//! # Invariants
//! - Budgets per call ([`CORE_INSTANCES_PER_CALL`], [`MEMORIES_PER_CALL`],
//!   [`TABLES_PER_CALL`]) are also per-component maxima, and the pool holds
//!   `max_concurrent_calls` times each, so with at most `max_concurrent_calls` permits out no
//!   instantiation can fail for lack of pool slots.
//! - Compile and load run the same export and import checks, so a [`CompiledTransform`] always
//!   has the contract's export and only imports hookline provides.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{CallLimiter, TABLE_ELEMENTS, TransformLimits};
use super::log::LogPipe;
use super::output::{check_delivery, human_bytes, truncate};
use super::{CallReport, HANDLER_INTERFACE, TransformError, TransformInput, TransformOutcome};

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "transforms/wit",
        world: "transformer",
        exports: { default: async },
    });
}

use bindings::TransformerPre;
use bindings::exports::hookline::transform::handler::{Action, Event};

/// How often the epoch advances while calls run: the granularity of the time limit, and the
/// longest a guest runs before yielding to the executor.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// Core instances one call may create. componentize-py components hold ~40 core modules;
/// Rust ones 3 or 4.
pub(crate) const CORE_INSTANCES_PER_CALL: u32 = 64;
/// Linear memories one call may create (every known toolchain uses one).
pub(crate) const MEMORIES_PER_CALL: u32 = 2;
/// Tables one call may create.
pub(crate) const TABLES_PER_CALL: u32 = 32;
/// Bytes of a component's runtime metadata (all its core instances' `VMContext`s together).
const COMPONENT_INSTANCE_BYTES: usize = 8 << 20;
/// Bytes of one core instance's `VMContext`.
const CORE_INSTANCE_BYTES: usize = 1 << 20;
/// Linear-memory bytes kept resident in a pool slot between calls (reset through
/// `PAGEMAP_SCAN` instead of `madvise`); only used when the kernel supports that ioctl.
const KEEP_RESIDENT_BYTES: usize = 8 << 20;

/// The store data of one call.
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    deadline: Instant,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The transform runtime: one per hookline engine; clones are cheap and share everything.
#[derive(Clone)]
pub struct TransformRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    limits: TransformLimits,
    /// One permit per pool slot set (see the module invariants).
    slots: Semaphore,
    ticker: Ticker,
}

impl fmt::Debug for TransformRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformRuntime")
            .field("limits", &self.inner.limits)
            .field("free_slots", &self.inner.slots.available_permits())
            .finish_non_exhaustive()
    }
}

/// A compiled, linked and checked transform, ready to be called. Cheap to clone.
#[derive(Clone)]
pub struct CompiledTransform {
    pre: TransformerPre<CallState>,
    sha256: [u8; 32],
    module_bytes: usize,
    artifact: Option<Arc<[u8]>>,
}

impl fmt::Debug for CompiledTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledTransform")
            .field("sha256", &self.sha256_hex())
            .field("module_bytes", &self.module_bytes)
            .field("artifact_bytes", &self.artifact.as_ref().map(|a| a.len()))
            .finish_non_exhaustive()
    }
}

impl CompiledTransform {
    /// The sha256 of the uploaded module (the transform version's identity).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// [`sha256`](Self::sha256) as lowercase hex, as tenants compare it with `sha256sum`.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Size of the uploaded module in bytes.
    pub fn module_bytes(&self) -> usize {
        self.module_bytes
    }

    /// The precompiled artifact to persist and later pass to
    /// [`TransformRuntime::load_precompiled`]: present after [`TransformRuntime::compile`],
    /// absent after a load (the caller already has it).
    pub fn artifact(&self) -> Option<&[u8]> {
        self.artifact.as_deref()
    }

    /// Takes the artifact out, so that a long-lived transform does not keep it in memory
    /// (a Python component's is ~33 MB).
    pub fn take_artifact(&mut self) -> Option<Arc<[u8]>> {
        self.artifact.take()
    }
}

impl TransformRuntime {
    /// Creates the engine, its instance pool and the epoch ticker.
    pub fn new(limits: TransformLimits) -> Result<Self, TransformError> {
        if limits.max_concurrent_calls == 0 || limits.memory_bytes == 0 || limits.cpu.is_zero() {
            return Err(TransformError::Runtime(
                "max_concurrent_calls, memory_bytes and cpu must not be zero".into(),
            ));
        }
        let n = limits.max_concurrent_calls;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_CALL))
            .max_core_instances_per_component(CORE_INSTANCES_PER_CALL)
            .total_memories(n.saturating_mul(MEMORIES_PER_CALL))
            .max_memories_per_component(MEMORIES_PER_CALL)
            .total_tables(n.saturating_mul(TABLES_PER_CALL))
            .max_tables_per_component(TABLES_PER_CALL)
            .total_stacks(n)
            .max_memory_size(limits.memory_bytes)
            .table_elements(TABLE_ELEMENTS)
            .max_component_instance_size(COMPONENT_INSTANCE_BYTES)
            .max_core_instance_size(CORE_INSTANCE_BYTES)
            .table_keep_resident(1 << 20);
        // Keeping pages resident only pays when dirty pages can be found with PAGEMAP_SCAN
        // (Linux ≥ 6.7); without it the whole resident prefix is memset on every reuse,
        // which is slower than giving the pages back (measured: ~20 µs vs ~72 µs per call).
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .pagemap_scan(Enabled::Yes);
        }

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(limits.wasm_stack_bytes)
            // Host calls (WASI) run on the fiber stack too, above the wasm stack.
            .async_stack_size(limits.wasm_stack_bytes.max(512 << 10) + (1 << 20))
            .memory_init_cow(true)
            // No component-model async (no streams, futures or concurrent calls): skipping
            // its per-store state makes instantiation ~20% cheaper.
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| TransformError::Runtime(format!("cannot create the engine: {e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| TransformError::Runtime(format!("cannot link WASI: {e:#}")))?;

        let ticker = Ticker::start(engine.clone()).map_err(|e| {
            TransformError::Runtime(format!("cannot start the epoch ticker thread: {e}"))
        })?;
        Ok(TransformRuntime {
            inner: Arc::new(Inner {
                engine,
                linker,
                slots: Semaphore::new(n as usize),
                limits,
                ticker,
            }),
        })
    }

    /// The limits this runtime enforces.
    pub fn limits(&self) -> &TransformLimits {
        &self.inner.limits
    }

    /// Compiles and checks an uploaded module. CPU-heavy (a Python component takes seconds):
    /// run it on a blocking thread, never on the delivery path.
    ///
    /// Refuses modules over the size limit, anything that is not a component, components that
    /// do not export [`HANDLER_INTERFACE`] with the contract's `transform` signature, and
    /// components importing anything but WASI 0.2.
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledTransform, TransformError> {
        let limit = self.inner.limits.module_bytes;
        if wasm.len() > limit {
            return Err(TransformError::Invalid(format!(
                "the module is {} bytes, larger than the {} limit",
                wasm.len(),
                human_bytes(limit)
            )));
        }
        check_binary_kind(wasm)?;
        let component = Component::from_binary(&self.inner.engine, wasm).map_err(|e| {
            let e = format!("{e:#}");
            // The pooling allocator checks its per-instance limits at compile time.
            TransformError::Invalid(if e.contains("pooling allocator") {
                format!("it needs more than hookline's sandbox allows: {e}")
            } else {
                format!("it is not a valid WebAssembly component: {e}")
            })
        })?;
        let pre = self.link(&component)?;
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        let code = component.serialize().map_err(|e| {
            TransformError::Runtime(format!("cannot serialize the compiled component: {e:#}"))
        })?;
        Ok(CompiledTransform {
            pre,
            sha256,
            module_bytes: wasm.len(),
            artifact: Some(artifact::seal(&sha256, wasm.len(), &code).into()),
        })
    }

    /// Loads an artifact made by [`compile`](Self::compile) (on this wasmtime version and
    /// configuration) without compiling again: milliseconds instead of seconds.
    ///
    /// `sha256` is the module hash the caller expects (the stored transform version's); the
    /// artifact must have been compiled from that module and be intact. An artifact from another
    /// wasmtime version or configuration is refused with [`TransformError::Artifact`]: compile
    /// the stored module again and replace the artifact.
    pub fn load_precompiled(
        &self,
        artifact: &[u8],
        sha256: &[u8; 32],
    ) -> Result<CompiledTransform, TransformError> {
        let (header, code) = artifact::open(artifact)?;
        if header.module_sha256 != *sha256 {
            return Err(TransformError::Artifact(format!(
                "it was compiled from module {}, not {}",
                hex::encode(header.module_sha256),
                hex::encode(sha256)
            )));
        }
        let component = artifact::deserialize(&self.inner.engine, code)?;
        let pre = self.link(&component)?;
        Ok(CompiledTransform {
            pre,
            sha256: *sha256,
            module_bytes: header.module_bytes,
            artifact: None,
        })
    }

    /// Instantiates the transform once under the call limits without calling it: proves, at
    /// upload, that its start code (a Python or JavaScript interpreter's initialisation, say)
    /// runs within the memory and time limits and does not trap. (The pool's per-instance
    /// limits are already checked by `compile`.)
    pub async fn validate(&self, t: &CompiledTransform) -> Result<(), TransformError> {
        let log = LogPipe::new(self.inner.limits.log_bytes);
        self.with_store(t.pre.engine(), &log, async |store| {
            t.pre.instantiate_async(store).await.map(|_| ())
        })
        .await
    }

    /// Runs the transform on one delivery. Never panics and never returns early without a
    /// report: the guest's log comes back whatever happened.
    pub async fn call(&self, t: &CompiledTransform, input: TransformInput) -> CallReport {
        let started = Instant::now();
        let log = LogPipe::new(self.inner.limits.log_bytes);
        let event = Event {
            id: input.id,
            tenant_id: input.tenant_id,
            subscription_id: input.subscription_id,
            notification_type: input.notification_type,
            headers: input.headers,
            body: input.body,
        };
        let action = self
            .with_store(t.pre.engine(), &log, async |store| {
                let instance = t.pre.instantiate_async(&mut *store).await?;
                instance
                    .hookline_transform_handler()
                    .call_transform(store, &event)
                    .await
            })
            .await;
        let limits = &self.inner.limits;
        let result = match action {
            Err(e) => Err(e),
            Ok(Err(message)) => Err(TransformError::GuestError(truncate(
                &message,
                limits.message_bytes,
            ))),
            Ok(Ok(Action::Drop(reason))) => Ok(TransformOutcome::Drop {
                reason: truncate(&reason, limits.message_bytes),
            }),
            Ok(Ok(Action::Deliver(d))) => {
                check_delivery(d.headers, &d.body, limits).map(|headers| {
                    TransformOutcome::Deliver {
                        headers,
                        body: d.body,
                    }
                })
            }
        };
        CallReport {
            result,
            log: log.snapshot(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs `f` in a fresh store under the call limits and classifies its failure.
    async fn with_store<R>(
        &self,
        pre_engine: &Engine,
        log: &LogPipe,
        f: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, TransformError> {
        let inner = &*self.inner;
        let limits = &inner.limits;
        if !Engine::same(pre_engine, &inner.engine) {
            // wasmtime refuses (or panics on) cross-engine instantiation.
            return Err(TransformError::Runtime(
                "the transform was compiled by another transform runtime".into(),
            ));
        }
        // Waiting for a slot does not count against the time limit: it is not the guest's doing.
        // Declared before the store, so dropped after it: the store's pool slots are free
        // again before the permit is (the pool invariant in the module docs).
        let _permit = inner
            .slots
            .acquire()
            .await
            .map_err(|_| TransformError::Runtime("the runtime is closed".into()))?;
        let _running = inner.ticker.enter();
        let deadline = Instant::now() + limits.cpu;
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .build();
        let mut store = Store::new(
            &inner.engine,
            CallState {
                wasi,
                table: ResourceTable::new(),
                limiter: CallLimiter::new(limits.memory_bytes),
                deadline,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let outcome = tokio::time::timeout_at(deadline.into(), f(&mut store)).await;
        match outcome {
            Err(_elapsed) => Err(TransformError::Timeout(limits.cpu)),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(classify(&e, store.data().limiter.memory_refused, limits)),
        }
    }
}

#[cfg(test)]
impl TransformRuntime {
    /// A weak handle on the ticker thread's shared state, which the thread holds until it ends.
    pub(super) fn ticker_probe(&self) -> std::sync::Weak<impl Send + Sync + use<>> {
        Arc::downgrade(&self.inner.ticker.shared)
    }
}

/// Maps a failed instantiation or call to the error a tenant reads.
fn classify(e: &wasmtime::Error, memory_refused: bool, limits: &TransformLimits) -> TransformError {
    let trap = e.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) {
        return TransformError::Timeout(limits.cpu);
    }
    // A refused growth is almost always followed by the guest's allocator aborting
    // (`unreachable`); the refusal is the cause worth reporting.
    if memory_refused {
        return TransformError::MemoryLimit(limits.memory_bytes);
    }
    match trap {
        Some(Trap::StackOverflow) => TransformError::Trap(format!(
            "stack overflow (the wasm stack is limited to {}; is there unbounded recursion?)",
            human_bytes(limits.wasm_stack_bytes)
        )),
        Some(t) => TransformError::Trap(t.to_string()),
        // Host-side errors raised inside the guest's call (a WASI call refusing something,
        // an instantiation limit): still the guest's doing, reported with the whole chain.
        None => TransformError::Trap(format!("{e:#}")),
    }
}

/// Tells core modules and other binaries from components before handing them to wasmtime,
/// whose messages for these cases are not meant for tenants.
fn check_binary_kind(wasm: &[u8]) -> Result<(), TransformError> {
    let Some((magic, rest)) = wasm.split_first_chunk::<4>() else {
        return Err(TransformError::Invalid(
            "it is not a WebAssembly binary (too short)".into(),
        ));
    };
    if magic != b"\0asm" {
        return Err(TransformError::Invalid(
            "it is not a WebAssembly binary (it does not start with \\0asm)".into(),
        ));
    }
    match rest.first_chunk::<4>() {
        // Version 1, layer 0: a core module.
        Some([1, 0, 0, 0]) => Err(TransformError::Invalid(format!(
            "it is a core WebAssembly module, not a component: build a component exporting \
             {HANDLER_INTERFACE} (cargo build --target wasm32-wasip2 with wit-bindgen, \
             componentize-py, componentize-js), or wrap the module with \
             `wasm-tools component new`"
        ))),
        // Layer 1: a component (wasmtime checks the version).
        Some([_, _, 1, 0]) => Ok(()),
        _ => Err(TransformError::Invalid(
            "it is not a WebAssembly component (unknown binary version)".into(),
        )),
    }
}

impl TransformRuntime {
    /// Checks the export and the imports, and links the component.
    fn link(&self, component: &Component) -> Result<TransformerPre<CallState>, TransformError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        if component
            .get_export_index(None, HANDLER_INTERFACE)
            .is_none()
        {
            let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
            let has = if exports.is_empty() {
                "it exports nothing".to_owned()
            } else {
                format!("it exports {}", exports.join(", "))
            };
            return Err(TransformError::Invalid(format!(
                "it does not export {HANDLER_INTERFACE} ({has}); build it for the world \
                 `transformer` of hookline's transform.wit"
            )));
        }
        let pre = self.inner.linker.instantiate_pre(component).map_err(|e| {
            // The linker's message names the import in backquotes; find which one.
            let message = e.to_string();
            let culprit = ty
                .imports(engine)
                .map(|(name, _)| name)
                .find(|name| message.contains(&format!("`{name}`")));
            TransformError::Invalid(match culprit {
                // A WASI interface of an incompatible version or shape: wasmtime's detail
                // says which function differs.
                Some(name) if name.starts_with("wasi:") => format!(
                    "it imports {name}, which hookline does not provide in that version \
                     (transforms get WASI 0.2): {e:#}"
                ),
                Some(name) => format!(
                    "it imports {name}, which hookline does not provide: transforms run in an \
                     empty WASI 0.2 sandbox and may import only wasi:cli, wasi:io, \
                     wasi:clocks, wasi:random, wasi:filesystem and wasi:sockets (all \
                     without access to anything)"
                ),
                None => format!("its imports cannot be satisfied: {e:#}"),
            })
        })?;
        let mismatch = |e: &dyn fmt::Display| {
            TransformError::Invalid(format!(
                "it exports {HANDLER_INTERFACE}, but not with the contract's types \
                 (expected `transform: func(event: event) -> result<action, string>`): {e}"
            ))
        };
        // The generated bindings only look the function up here; its type is checked when an
        // instance is created. Check it now, with the same (hidden, but public and what the
        // generated code itself calls) typecheck, so a wrong signature fails the upload rather
        // than every call.
        let transform = ty
            .exports(engine)
            .find(|(name, _)| {
                *name == HANDLER_INTERFACE || name.starts_with("hookline:transform/handler@1.")
            })
            .and_then(|(_, item)| match item.ty {
                ComponentItem::ComponentInstance(i) => {
                    i.get_export(engine, "transform").map(|f| f.ty)
                }
                _ => None,
            });
        let Some(ComponentItem::ComponentFunc(transform)) = transform else {
            return Err(mismatch(&"it has no function `transform`"));
        };
        transform
            .typecheck::<(Event,), (Result<Action, String>,)>(&pre.instance_type())
            .map_err(|e| mismatch(&format_args!("{e:#}")))?;
        TransformerPre::new(pre).map_err(|e| mismatch(&format_args!("{e:#}")))
    }
}

/// The epoch ticker thread and the count of running calls that keeps it awake.
struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct TickerShared {
    running: AtomicUsize,
    /// Set by the thread just before it parks for lack of calls.
    asleep: AtomicBool,
    stop: AtomicBool,
}

/// Marks a call as running for as long as it lives.
struct Running<'a>(&'a Ticker);

impl Ticker {
    fn start(engine: Engine) -> io::Result<Self> {
        let shared = Arc::new(TickerShared::default());
        let theirs = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("hookline-wasm-epoch".into())
            .spawn(move || tick(&engine, &theirs))?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    fn enter(&self) -> Running<'_> {
        self.shared.running.fetch_add(1, Ordering::SeqCst);
        // Waking the thread is a syscall on both sides (~30% of a Rust guest's call when done
        // on every call), so only when it really sleeps; it lingers between bursts.
        if self.shared.asleep.load(Ordering::SeqCst) {
            self.wake();
        }
        Running(self)
    }

    fn wake(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(t) = self.thread.take() {
            // The thread only parks and ticks; it cannot panic short of a bug in wasmtime.
            let _ = t.join();
        }
    }
}

/// Ticks without calls before the thread parks: an idle runtime makes no wake-ups, a busy one
/// no syscalls to wake the thread.
const IDLE_TICKS_BEFORE_SLEEP: u32 = 100;

/// The ticker thread's loop.
///
/// It publishes `asleep` before its last look at `running`, and a starting call increments
/// `running` before it looks at `asleep` (all `SeqCst`): so either the thread sees the call
/// and does not park, or the call sees the thread asleep and unparks it (a `park` token is
/// never lost). No running call ever waits for a tick that does not come.
fn tick(engine: &Engine, shared: &TickerShared) {
    let mut idle_ticks = 0;
    let mut next = Instant::now() + TICK;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            thread::park_timeout(next - now);
            continue;
        }
        engine.increment_epoch();
        next = now + TICK;
        if shared.running.load(Ordering::SeqCst) > 0 {
            idle_ticks = 0;
            continue;
        }
        idle_ticks += 1;
        if idle_ticks >= IDLE_TICKS_BEFORE_SLEEP {
            shared.asleep.store(true, Ordering::SeqCst);
            if shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
                thread::park();
            }
            shared.asleep.store(false, Ordering::SeqCst);
            idle_ticks = 0;
            next = Instant::now() + TICK;
        }
    }
}

/// The persisted form of a compiled transform: wasmtime's serialized component inside a small
/// envelope binding it to its module and guarding it against corruption.
///
/// ```text
/// magic "HLTXART1" (8) ‖ module sha256 (32) ‖ module size u64 LE (8) ‖ code sha256 (32) ‖ code
/// ```
mod artifact {
    use sha2::{Digest as _, Sha256};
    use wasmtime::component::Component;
    use wasmtime::{Engine, Precompiled};

    use super::TransformError;

    const MAGIC: &[u8; 8] = b"HLTXART1";
    const HEADER: usize = 8 + 32 + 8 + 32;

    pub(super) struct Header {
        pub(super) module_sha256: [u8; 32],
        pub(super) module_bytes: usize,
    }

    pub(super) fn seal(module_sha256: &[u8; 32], module_bytes: usize, code: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + code.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(module_sha256);
        out.extend_from_slice(&(module_bytes as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(code));
        out.extend_from_slice(code);
        out
    }

    pub(super) fn open(artifact: &[u8]) -> Result<(Header, &[u8]), TransformError> {
        let bad = |what: &str| TransformError::Artifact(what.to_owned());
        let (magic, rest) = artifact
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("it is truncated"))?;
        if magic != MAGIC {
            return Err(bad(
                "it is not a hookline transform artifact of this version",
            ));
        }
        let (module_sha256, rest) = rest
            .split_first_chunk::<32>()
            .ok_or_else(|| bad("it is truncated"))?;
        let (size, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("it is truncated"))?;
        let (code_sha256, code) = rest
            .split_first_chunk::<32>()
            .ok_or_else(|| bad("it is truncated"))?;
        if Sha256::digest(code)[..] != code_sha256[..] {
            return Err(bad(
                "its checksum does not match: it is corrupt or truncated",
            ));
        }
        let module_bytes = usize::try_from(u64::from_le_bytes(*size))
            .map_err(|_| bad("its module size is out of range"))?;
        Ok((
            Header {
                module_sha256: *module_sha256,
                module_bytes,
            },
            code,
        ))
    }

    /// Turns verified artifact bytes back into a component.
    #[allow(unsafe_code)]
    pub(super) fn deserialize(engine: &Engine, code: &[u8]) -> Result<Component, TransformError> {
        if Engine::detect_precompiled(code) != Some(Precompiled::Component) {
            return Err(TransformError::Artifact(
                "it does not hold a precompiled component".into(),
            ));
        }
        // SAFETY: `Component::deserialize` maps `code` as native machine code, so the bytes
        // must be what wasmtime's own `Component::serialize` produced; wasmtime itself rejects
        // artifacts from another wasmtime version, target or engine configuration, but cannot
        // tell intact code from altered code. Here `code` (a) comes only from `seal` in
        // `TransformRuntime::compile` — tenants upload WebAssembly, never artifacts, and
        // hookline stores artifacts only in its own journal — and (b) has just been checked
        // against the sha256 recorded next to it by `open`, so it is byte-for-byte what
        // `serialize` returned, and the caller checked that it belongs to the expected module.
        unsafe { Component::deserialize(engine, code) }
            .map_err(|e| TransformError::Artifact(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_of_another_engine_configuration_are_refused() {
        let rt = TransformRuntime::new(TransformLimits::default()).expect("runtime");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/transforms/dist/mask-pii.wasm");
        let wasm = std::fs::read(path).expect("guest");
        let sha256: [u8; 32] = Sha256::digest(&wasm).into();
        // wasmtime's defaults: no epoch interruption, another allocator, other tunables.
        let foreign = Engine::new(&Config::new()).expect("engine");
        let code = foreign.precompile_component(&wasm).expect("precompiles");
        let err = rt
            .load_precompiled(&artifact::seal(&sha256, wasm.len(), &code), &sha256)
            .expect_err("incompatible");
        eprintln!("{err}");
        assert!(matches!(err, TransformError::Artifact(_)), "{err}");
    }
}
