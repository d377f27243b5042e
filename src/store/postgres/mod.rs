//! The shared store: everything in one PostgreSQL database, for one or several hookline nodes.
//!
//! The same invariants as the SQLite journal ([`store`](crate::store)'s traits), kept by
//! PostgreSQL's transactions and row locks instead of a single writer, so that every node may
//! accept events and any node may work any subscription:
//! - **Durable accept** (guarantee 1): a publish is one transaction holding the events and all
//!   their deliveries ([`ingest`]); the caller is answered after `COMMIT` returned.
//! - **Order**: a subscription's deliveries are numbered from its `sub_tail` row, locked by the
//!   publishing transaction until its commit, so `seq` order is commit order per subscription
//!   (`seq` is per subscription here; events' own ids come from a sequence and are not ordered).
//! - **One writer per queue, fenced**: the lease is the subscription's `sub_cursor` row; its
//!   `epoch` is the token. [`Queue::acquire`](crate::store::Queue::acquire) bumps it and takes
//!   ownership for this node; every queue write starts by locking that row `FOR SHARE` under
//!   the lease's `(epoch, owner)`, and finding no row refuses with `LeaseLost`, writing nothing
//!   ([`queue`]). The lock makes an acquire and a fenced write serialise in commit order.
//! - **Crash recovery** (guarantee 7): at open, attempts left in flight on subscriptions this
//!   node owned (or nobody owns) are logged as interrupted; a takeover does the same for the
//!   previous holder's ([`queue`]).
//! - **Wakes cross nodes**: a publish notifies `hookline_wake` in its transaction (delivered on
//!   commit only); every node's [`listen`] task feeds its own wake channel from it. A tenant's
//!   rate limit set or changed notifies `hookline_tenant_limits` the same way, and every node
//!   reads the limits again.
//! - **A tenant's rate limit holds cluster-wide**: slots are reserved from one schedule per
//!   tenant, the `tenant_pace` row, by `hookline_reserve_slots` (see
//!   [`Coordination::reserve_tenant_slots`](crate::store::Coordination::reserve_tenant_slots)).
//! - **One key for the cluster**: a key check value is stored at first open; opening with
//!   another key is refused ([`keycheck`]).
//!
//! Times are milliseconds since the epoch from the node's clock, as in the SQLite journal,
//! except `sub_cursor.lease_until`, which is on PostgreSQL's clock so that nodes' clocks never
//! decide who holds a lease.

#[macro_use]
mod rows;

mod catalog;
mod coordination;
mod group;
mod ingest;
mod keycheck;
mod listen;
mod progress;
mod queue;
mod reads;
mod seam;
#[cfg(test)]
mod tests;
mod upkeep;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{Mutex, Semaphore};

use super::{Durability, Opened, StoreOptions, WakeSender, wake_channel};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::security::secretbox::SecretBox;

/// The longest a store operation waits for a connection: for a pooled one to come free, or
/// for PostgreSQL to accept a new one. Past it the operation fails with `Unavailable` (a publish
/// answers 503 with `Retry-After`): while PostgreSQL is down or refusing connections a publish
/// is answered within twice this (a group commit in its own wait may hold it back once, see
/// [`group`]), rather than hanging. Short, because an operation that waits for a database that
/// is down only holds its caller; long enough that a pool busy with a burst is waited for.
pub(crate) const CONNECTION_WAIT: Duration = Duration::from_secs(2);

/// The longest a publish's statements may take before its commit is sent: a connection whose
/// peer went silent (a network partition: no reset, no answer) fails the publish with
/// `Unavailable` after this, having committed nothing, instead of waiting for TCP to give up.
pub(crate) const PUBLISH_STATEMENTS_WAIT: Duration = Duration::from_secs(10);

/// The channel every node listens on for wakes.
const WAKE_CHANNEL: &str = "hookline_wake";

/// The channel every node listens on for changes of tenants' rate limits (no payload needed:
/// a node reads all limits again).
const TENANT_CHANNEL: &str = "hookline_tenant_limits";

/// What a PostgreSQL store needs besides [`StoreOptions`].
#[derive(Debug, Clone)]
pub(crate) struct PgOptions {
    /// This node's name in the cluster: the owner written on the leases it holds. Two live
    /// nodes must never share one.
    pub node_id: String,
    /// How long an acquired lease lasts on PostgreSQL's clock unless renewed.
    pub lease_ttl: Duration,
}

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub(crate) struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.inner.node)
            .finish()
    }
}

struct Inner {
    pool: PgPool,
    /// Connections whose commits do not wait for the WAL flush (`synchronous_commit = off`),
    /// for delivery progress only (see [`queue`]).
    progress: progress::Progress,
    /// Publishes waiting for their group commit (see [`group`]).
    publishes: group::Publishes,
    sealer: Arc<SecretBox>,
    node: String,
    lease_ttl_ms: i64,
    /// Subscriptions with new deliveries (this node's publishes, and other nodes' via LISTEN).
    wakes: WakeSender,
    /// Bumped when a tenant's rate limit may have changed on any node (via LISTEN).
    tenant_limits: tokio::sync::watch::Sender<u64>,
    /// Publishes in progress: at most `intake_queue`, so a stalled database refuses publishes
    /// with `Overloaded` after `wait` instead of piling them up.
    intake: Semaphore,
    closed: AtomicBool,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    #[allow(dead_code)] // kept for the store's own gauges (the engine counts accepted events)
    metrics: Arc<Metrics>,
}

/// How a failed sqlx call is reported: the database is unreachable or refused the statement.
pub(super) fn sql_err(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::unavailable(format!("postgres {context} failed"), e)
}

impl PgStore {
    /// Connects to the database at `url`, migrates it (safe from several nodes at once: sqlx's
    /// migrator holds a PostgreSQL advisory lock for the whole run), checks the sealing key
    /// against the database's, runs this node's crash recovery and starts listening for wakes.
    pub(crate) async fn open(
        url: &str,
        cfg: &StoreOptions,
        sealer: SecretBox,
        metrics: Arc<Metrics>,
        pg: PgOptions,
    ) -> Result<Opened> {
        if pg.node_id.is_empty() || pg.node_id.contains(char::is_whitespace) {
            return Err(Error::invalid(
                "nodeId",
                "must be non-empty and without whitespace",
            ));
        }
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| Error::invalid("db", format!("not a PostgreSQL URL: {e}")))?;
        // Durability `os` is PostgreSQL's asynchronous commit: a commit survives hookline's
        // crash but the last few hundred milliseconds may be lost if PostgreSQL's host fails.
        let progress_connect = connect.clone().options([("synchronous_commit", "off")]);
        let connect = match cfg.durability {
            Durability::Fsync => connect,
            Durability::Os => progress_connect.clone(),
        };
        let size = cfg.reader_connections.max(2) + 8;
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(CONNECTION_WAIT)
            .connect_with(connect)
            .await
            .map_err(sql_err("connect"))?;
        // Opened lazily: a node that delivers nothing holds none of these connections.
        let progress = progress::Progress::new(progress_connect, size, CONNECTION_WAIT);
        sqlx::migrate!("./schemas/postgres")
            .run(&pool)
            .await
            .map_err(|e| Error::unavailable("postgres migration failed", e))?;
        keycheck::check(&pool, &sealer).await?;
        let recovery = queue::recover(&pool, &pg.node_id).await?;
        let (wakes, wake_rx) = wake_channel();
        let (tenant_limits, limits_rx) = tokio::sync::watch::channel(0u64);
        let (publishes, committers) = group::start();
        let inner = Arc::new(Inner {
            pool,
            progress,
            publishes,
            sealer: Arc::new(sealer),
            node: pg.node_id,
            tenant_limits,
            lease_ttl_ms: i64::try_from(pg.lease_ttl.as_millis()).unwrap_or(i64::MAX),
            wakes,
            intake: Semaphore::new(cfg.intake_queue.max(1)),
            closed: AtomicBool::new(false),
            listener: Mutex::new(None),
            metrics,
        });
        committers(&inner);
        let task = listen::start(&inner).await?;
        *inner.listener.lock().await = Some(task);
        Ok(Opened {
            store: Arc::new(PgStore { inner }),
            recovery,
            wakes: wake_rx,
            tenant_limits: Some(limits_rx),
        })
    }

    fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    fn open_for_writes(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    /// Stops listening, releases this node's leases and closes the pool. Writes answered
    /// before this returns are committed (each write is its own transaction).
    async fn shut(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(task) = self.inner.listener.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
        if let Err(e) = queue::release_all(&self.inner.pool, &self.inner.node).await {
            tracing::warn!(error = %e, "could not release this node's leases at close");
        }
        self.inner.pool.close().await;
        self.inner.progress.close().await;
    }
}
