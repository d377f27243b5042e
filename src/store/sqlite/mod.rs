//! The journal: everything hookline knows lives in one SQLite file.
//!
//! # Invariants
//! - **Durable accept** (guarantee 1): every write goes through the single [writer](writer) task,
//!   which groups the operations waiting for it into one `BEGIN IMMEDIATE … COMMIT` (group
//!   commit) and answers each caller only after that commit returned. With the default
//!   [`Durability::Fsync`] the connection runs WAL with `synchronous=FULL`, so an answered write
//!   survives `kill -9` and power loss.
//! - **Order**: an event's `seq` is assigned inside the commit that makes it durable, so `seq`
//!   order is commit order, and a subscription's deliveries are read back in `seq` order.
//! - **Fan-out is atomic**: the event row and one delivery row per matching subscription are
//!   written by the same operation; matching uses the writer's own routing table, which is
//!   changed only by writer operations, so it is always consistent with the journal.
//! - **One writer per delivery**: delivery state changes come only from the subscription's actor
//!   (and recovery at start-up, before any actor runs), so absolute values can be written
//!   without read-modify-write races.
//! - **Crash recovery** (guarantee 7): at open, deliveries left `in_flight` get an `interrupted`
//!   attempt and go back to `pending`; their subscriptions are reported so the engine resumes
//!   them in order.
//!
//! The writer drives its own synchronous connection inline (see [`writer`]); WAL checkpoints and
//! the periodic fsync of delivery progress run on the [`checkpoint`] thread. Readers use a
//! separate pool of read-only sqlx connections, except the delivery path's queue refill, which
//! reads inline ([`InlineReaders`]); WAL lets them all run beside the writer.
//! The type is concrete today; its methods are the seam where a shared multi-node backend would
//! be put behind a trait.

/// The subscription columns `sub_from_row` reads, as a literal so queries stay `&'static str`.
macro_rules! sub_select {
    () => {
        "SELECT id, tenant_id, config, version, paused, blocked_on, disabled_reason, \
         faulted_reason, created_at, updated_at, secrets FROM subscriptions"
    };
}

/// The tenant columns `tenant_from_row` reads.
macro_rules! tenant_select {
    () => {
        "SELECT id, name, created_at, rate_limit FROM tenants"
    };
}

/// The delivery columns `delivery_from_row` reads.
macro_rules! delivery_select {
    () => {
        "SELECT d.id, e.id, d.subscription_id, e.tenant_id, d.event_seq, d.state, d.attempts, \
         d.last_status, d.last_error, d.next_at, d.updated_at \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    };
}

mod batch;
mod checkpoint;
mod inline_read;
mod transforms;
mod upkeep;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Durability, StoreOptions};
use crate::domain::Timestamp;
use crate::domain::clock::now_ms;
use crate::domain::{
    Attempt, Delivery, DeliveryPage, DeliveryQuery, DeliveryStatus, Event, NotificationType,
    Principal, PublishReceipt, Subscription, SubscriptionSpec, SubscriptionState, Tenant,
};
use crate::domain::{DeliveryId, EventId, SubscriptionId, TenantId};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::policy::ratelimit::RateLimit;
use crate::security::secretbox::SecretBox;

use inline_read::InlineReaders;
pub(crate) use transforms::NewTransformRow;
pub(crate) use writer::{AttemptRecord, FlagChange};
use writer::{Command, Op, Outcome};

/// Called after each commit with the subscriptions that received new deliveries in it.
pub(crate) type CommitHook = Arc<dyn Fn(Vec<SubscriptionId>) + Send + Sync>;

/// What recovery found when the journal was opened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recovery {
    /// Attempts that were in flight when the process stopped; they were recorded as interrupted.
    pub interrupted: u64,
    /// Subscriptions with pending deliveries, to be resumed.
    pub open_subscriptions: Vec<SubscriptionId>,
}

/// A subscription row: its validated configuration and the state columns.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionRow {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub spec: SubscriptionSpec,
    pub paused: bool,
    pub blocked_on: Option<i64>,
    pub disabled_reason: Option<String>,
    pub faulted_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SubscriptionRow {
    /// The public state derived from the state columns, most severe first.
    pub(crate) fn state(&self) -> (SubscriptionState, Option<String>) {
        if let Some(r) = &self.disabled_reason {
            (SubscriptionState::Disabled, Some(r.clone()))
        } else if self.paused {
            (SubscriptionState::Paused, None)
        } else if let Some(r) = &self.faulted_reason {
            (SubscriptionState::Faulted, Some(r.clone()))
        } else if let Some(d) = self.blocked_on {
            (
                SubscriptionState::Blocked,
                Some(format!(
                    "delivery {} failed; resubmit or skip it to continue",
                    DeliveryId(d)
                )),
            )
        } else {
            (SubscriptionState::Active, None)
        }
    }

    pub(crate) fn to_public(&self) -> Subscription {
        let (state, state_reason) = self.state();
        let s = &self.spec;
        Subscription {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            url: s.url.clone(),
            notification_types: s.notification_types.clone(),
            workflow_ids: s.workflow_ids.clone(),
            access_key_set: s.access_key.is_some(),
            auth: s.auth.as_ref().map(|a| a.view()),
            rate_limit: s.rate_limit.clone(),
            transform: s.transform.clone(),
            tls: s.tls.as_ref().map(|t| t.view()),
            headers: s.headers.clone(),
            retry: s.retry.clone(),
            timeout_ms: s.timeout_ms,
            on_failure: s.on_failure,
            state,
            state_reason,
            blocked_on: self.blocked_on.map(DeliveryId),
            secret: None,
            secret_masked: s.signing.masked(),
            previous_secret_expires_at: s.signing.rotation_ends(now_ms()).map(Timestamp::from_ms),
            public_key: s.signing.public_key(),
            created_at: Timestamp::from_ms(self.created_at),
            updated_at: Timestamp::from_ms(self.updated_at),
        }
    }
}

/// A pending delivery as a subscription actor needs it to make an attempt.
#[derive(Debug, Clone)]
pub(crate) struct QueuedDelivery {
    pub id: DeliveryId,
    pub seq: i64,
    pub event_id: EventId,
    pub notification_type: NotificationType,
    pub body: Arc<str>,
    pub attempts: u32,
    pub budget_used: u32,
    pub next_at: Option<i64>,
    /// Already marked in flight in the journal (by the commit of the previous outcome).
    pub marked: bool,
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub(crate) struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    tx: mpsc::Sender<Command>,
    readers: SqlitePool,
    queue_readers: InlineReaders,
    hook: Arc<OnceLock<CommitHook>>,
    sealer: Arc<SecretBox>,
    metrics: Arc<Metrics>,
    writer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn sql_err(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::unavailable(format!("journal {context} failed"), e)
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`, migrates it, runs crash recovery and
    /// starts the writer task.
    pub(crate) async fn open(
        path: &Path,
        cfg: &StoreOptions,
        sealer: SecretBox,
        metrics: Arc<Metrics>,
    ) -> Result<(Journal, Recovery)> {
        let sealer = Arc::new(sealer);
        let sync = match cfg.durability {
            Durability::Fsync => SqliteSynchronous::Full,
            Durability::Os => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Keep I/O errors as errors (no SIGBUS on a full disk with mmap).
            .pragma("mmap_size", "0");
        let writer_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .pragma("journal_size_limit", "67108864");
        let mut conn = SqliteConnection::connect_with(&writer_opts)
            .await
            .map_err(sql_err("open"))?;
        check_pragmas(&mut conn, cfg.durability).await?;
        sqlx::migrate!("./schemas/migrations")
            .run(&mut conn)
            .await
            .map_err(|e| Error::unavailable("journal migration failed", e))?;
        // sqlx's part ends here: the writer drives its own connection (see `writer`). That one
        // is opened first: closing the last connection to a WAL database checkpoints the whole
        // WAL, which after a crash under load took half a second of the restart.
        let mut wconn = open_writer(path, cfg.durability)?;
        conn.close().await.map_err(sql_err("open"))?;
        let recovery = recover(&mut wconn)?;
        let routing = writer::Routing::load(&wconn, sealer.clone())?;
        let checkpointer = checkpoint::Checkpointer::start(path, cfg.durability)?;

        let readers = SqlitePoolOptions::new()
            .max_connections(cfg.reader_connections)
            .min_connections(1)
            .connect_with(base.read_only(true))
            .await
            .map_err(sql_err("open readers"))?;

        let (tx, rx) = mpsc::channel(cfg.intake_queue);
        let hook: Arc<OnceLock<CommitHook>> = Arc::new(OnceLock::new());
        let task = tokio::spawn(writer::run(
            writer::Writer {
                conn: wconn,
                routing,
                hook: hook.clone(),
                batch_max: cfg.commit_batch_max,
                durability: cfg.durability,
                metrics: metrics.clone(),
                checkpointer,
            },
            rx,
        ));
        let journal = Journal {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                tx,
                readers,
                queue_readers: InlineReaders::new(path, cfg.reader_connections as usize),
                hook,
                sealer,
                metrics,
                writer_task: Mutex::new(Some(task)),
            }),
        };
        Ok((journal, recovery))
    }

    /// Installs the function told about new deliveries after each commit (once).
    pub(crate) fn set_commit_hook(&self, hook: CommitHook) {
        let _ = self.inner.hook.set(hook);
    }

    async fn call(&self, op: Op) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Op {
                op,
                reply: Some(reply),
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    async fn call_unit(&self, op: Op) -> Result<()> {
        match self.call(op).await? {
            Outcome::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Commits all queued writes and stops the writer; later writes fail with `ShuttingDown`.
    pub(crate) async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Close(reply)).await.is_ok() {
            let _ = rx.await;
        }
        if let Some(task) = self.inner.writer_task.lock().await.take() {
            let _ = task.await;
        }
        self.inner.readers.close().await;
    }

    // ---- writes -------------------------------------------------------------------------

    pub(crate) async fn create_tenant(
        &self,
        id: TenantId,
        name: String,
        rate_limit: Option<RateLimit>,
        key_hash: String,
    ) -> Result<Tenant> {
        match self
            .call(Op::CreateTenant {
                id,
                name,
                rate_limit,
                key_hash,
                at: now_ms(),
            })
            .await?
        {
            Outcome::Tenant(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Sets (or with `None` clears) a tenant's own rate limit.
    pub(crate) async fn set_tenant_rate_limit(
        &self,
        id: TenantId,
        rate_limit: Option<RateLimit>,
    ) -> Result<Tenant> {
        match self.call(Op::SetTenantRateLimit { id, rate_limit }).await? {
            Outcome::Tenant(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn insert_admin_key(&self, key_hash: String) -> Result<()> {
        self.call_unit(Op::InsertAdminKey {
            key_hash,
            at: now_ms(),
        })
        .await
    }

    pub(crate) async fn create_subscription(
        &self,
        id: SubscriptionId,
        tenant: TenantId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        self.row_op(Op::CreateSubscription {
            id,
            tenant,
            spec,
            at: now_ms(),
        })
        .await
    }

    pub(crate) async fn update_spec(
        &self,
        id: SubscriptionId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        self.row_op(Op::UpdateSpec {
            id,
            spec,
            at: now_ms(),
        })
        .await
    }

    pub(crate) async fn set_flags(
        &self,
        id: SubscriptionId,
        flags: FlagChange,
    ) -> Result<SubscriptionRow> {
        self.row_op(Op::SetFlags {
            id,
            flags,
            at: now_ms(),
        })
        .await
    }

    async fn row_op(&self, op: Op) -> Result<SubscriptionRow> {
        match self.call(op).await? {
            Outcome::Row(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn delete_subscription(&self, id: SubscriptionId) -> Result<()> {
        self.call_unit(Op::DeleteSubscription { id }).await
    }

    /// Journals events and their deliveries in one commit; one result per event, in order.
    /// Unlike the engine's own writes, which always wait their turn, a publish finding the intake queue full waits at most `wait` and then refuses with
    /// [`Error::Overloaded`]: nothing of it was queued, so nothing of it is written.
    pub(crate) async fn publish(
        &self,
        events: Vec<Event>,
        wait: Duration,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Op {
            op: Op::Publish {
                events,
                at: now_ms(),
            },
            reply: Some(reply),
        };
        let sent = match self.inner.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::ShuttingDown),
            Err(mpsc::error::TrySendError::Full(cmd)) if wait.is_zero() => {
                drop(cmd);
                Err(Error::Overloaded)
            }
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                match self.inner.tx.send_timeout(cmd, wait).await {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Error::Overloaded),
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Error::ShuttingDown),
                }
            }
        };
        sent?;
        match rx.await.map_err(|_| Error::ShuttingDown)?? {
            Outcome::Receipts(r) => {
                self.inner.metrics.events_accepted(
                    r.iter()
                        .filter(|r| r.as_ref().is_ok_and(|r| !r.duplicate))
                        .count() as u64,
                );
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Marks an attempt as started. Does not wait for the commit: if the process dies before it
    /// commits, the attempt is simply not counted, and the delivery is retried all the same.
    pub(crate) async fn mark_in_flight(
        &self,
        delivery: DeliveryId,
        attempts: u32,
        at: i64,
    ) -> Result<()> {
        self.inner
            .tx
            .send(Command::Op {
                op: Op::MarkInFlight {
                    delivery,
                    attempts,
                    at,
                },
                reply: None,
            })
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Logs this subscription's attempts left in flight by a failed actor as interrupted.
    pub(crate) async fn interrupt_in_flight(&self, sub: SubscriptionId) -> Result<()> {
        self.call_unit(Op::InterruptInFlight { sub, at: now_ms() })
            .await
    }

    pub(crate) async fn record_attempt(&self, record: AttemptRecord) -> Result<()> {
        self.call_unit(Op::RecordAttempt(Box::new(record))).await
    }

    /// Sets a delivery's status outside an attempt (operator skip or resubmit).
    pub(crate) async fn set_delivery_status(
        &self,
        delivery: DeliveryId,
        status: DeliveryStatus,
        reset_budget: bool,
        unblock: Option<SubscriptionId>,
    ) -> Result<()> {
        self.call_unit(Op::SetDeliveryStatus {
            delivery,
            status,
            reset_budget,
            unblock,
            at: now_ms(),
        })
        .await
    }

    // ---- reads --------------------------------------------------------------------------

    fn pool(&self) -> &SqlitePool {
        &self.inner.readers
    }

    pub(crate) async fn principal_for_key_hash(&self, hash: &str) -> Result<Option<Principal>> {
        let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE key_hash = ?1")
            .bind(hash)
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        Ok(row.map(|r| match r.get::<Option<String>, _>(0) {
            None => Principal::Admin,
            Some(t) => Principal::Tenant(TenantId::from(t)),
        }))
    }

    pub(crate) async fn has_admin_key(&self) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM api_keys WHERE tenant_id IS NULL LIMIT 1")
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        Ok(row.is_some())
    }

    pub(crate) async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query(concat!(tenant_select!(), " WHERE id = ?1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        row.map(|r| tenant_from_row(TenantRaw::from_sqlx(&r)))
            .transpose()
    }

    /// Every tenant's own rate limit, to be applied to the limiters at start-up.
    pub(crate) async fn tenant_rate_limits(&self) -> Result<Vec<(TenantId, RateLimit)>> {
        let rows = sqlx::query(concat!(tenant_select!(), " WHERE rate_limit IS NOT NULL"))
            .fetch_all(self.pool())
            .await
            .map_err(sql_err("read"))?;
        rows.iter()
            .map(|r| {
                let t = tenant_from_row(TenantRaw::from_sqlx(r))?;
                Ok(t.rate_limit.map(|l| (t.id, l)))
            })
            .filter_map(Result::transpose)
            .collect()
    }

    pub(crate) async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRow>> {
        let row = sqlx::query(concat!(sub_select!(), " WHERE id = ?1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        row.map(|r| sub_from_row(SubRaw::from_sqlx(&r), &self.inner.sealer))
            .transpose()
    }

    pub(crate) async fn list_subscriptions(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<SubscriptionRow>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(concat!(sub_select!(), " WHERE tenant_id = ?1 ORDER BY id"))
                    .bind(t.as_str())
                    .fetch_all(self.pool())
                    .await
            }
            None => {
                sqlx::query(concat!(sub_select!(), " ORDER BY id"))
                    .fetch_all(self.pool())
                    .await
            }
        }
        .map_err(sql_err("read"))?;
        rows.iter()
            .map(|r| sub_from_row(SubRaw::from_sqlx(r), &self.inner.sealer))
            .collect()
    }

    /// The next open deliveries of a subscription after `after_seq`, in order.
    ///
    /// Read inline on the calling task (see [`InlineReaders`]): every busy subscription runs
    /// this every `actor_prefetch` deliveries, and through sqlx's threads it cost a third of
    /// the time of the deliveries it fetched.
    pub(crate) async fn next_deliveries(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        let rows = self.inner.queue_readers.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.id, d.event_seq, e.id, e.notification_type, e.body, d.attempts, \
                        d.budget_used, d.next_at \
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE d.subscription_id = ?1 AND d.state IN ('pending', 'in_flight') \
                   AND d.event_seq > ?2 \
                 ORDER BY d.event_seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![sub.as_str(), after_seq, i64::from(limit)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                    ))
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(
                |(id, seq, event_id, ty, body, attempts, budget_used, next_at)| {
                    Ok(QueuedDelivery {
                        id: DeliveryId(id),
                        seq,
                        event_id: EventId::from(event_id),
                        notification_type: NotificationType::parse(&ty).ok_or_else(|| {
                            Error::Internal(format!("bad notification type {ty}"))
                        })?,
                        body: Arc::from(body),
                        attempts: attempts as u32,
                        budget_used: budget_used as u32,
                        next_at,
                        marked: false,
                    })
                },
            )
            .collect()
    }

    pub(crate) async fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>> {
        let row = sqlx::query(concat!(delivery_select!(), " WHERE d.id = ?1"))
            .bind(id.raw())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        row.map(|r| delivery_from_row(&r)).transpose()
    }

    pub(crate) async fn attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT n, started_at, duration_ms, status_code, error_kind, error, response_snippet, \
             transform_log FROM attempts WHERE delivery_id = ?1 ORDER BY n",
        )
        .bind(id.raw())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        Ok(rows
            .iter()
            .map(|r| Attempt {
                n: r.get::<i64, _>(0) as u32,
                started_at: Timestamp::from_ms(r.get(1)),
                duration_ms: r.get::<i64, _>(2).max(0) as u64,
                status_code: r.get::<Option<i64>, _>(3).map(|s| s as u16),
                error_kind: r.get(4),
                error: r.get(5),
                response_snippet: r.get(6),
                transform_log: r.get(7),
            })
            .collect())
    }

    pub(crate) async fn list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: &DeliveryQuery,
    ) -> Result<DeliveryPage> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        let after =
            match &q.after {
                None => 0,
                Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    Error::invalid("after", "is not a cursor from a previous page")
                })?,
            };
        let status = q.status.map(DeliveryStatus::as_str);
        let rows = sqlx::query(concat!(
            delivery_select!(),
            " WHERE d.subscription_id = ?1 AND d.event_seq > ?2 \
             AND (?3 IS NULL OR d.state = ?3) ORDER BY d.event_seq LIMIT ?4"
        ))
        .bind(sub.as_str())
        .bind(after)
        .bind(status)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let mut items = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| d.seq.to_string())
        } else {
            None
        };
        Ok(DeliveryPage { items, next })
    }
}

fn unexpected(o: Outcome) -> Error {
    Error::Internal(format!(
        "journal answered with an unexpected outcome: {o:?}"
    ))
}

async fn check_pragmas(conn: &mut SqliteConnection, durability: Durability) -> Result<()> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_err("pragma"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable {
            message: format!(
                "journal_mode is {mode}, expected wal (is the file on a network filesystem?)"
            ),
            source: None,
        });
    }
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_err("pragma"))?;
    let want = match durability {
        Durability::Fsync => 2,
        Durability::Os => 1,
    };
    if sync != want {
        return Err(Error::Unavailable {
            message: format!("synchronous is {sync}, expected {want}"),
            source: None,
        });
    }
    Ok(())
}

/// Logs every attempt still marked in flight (of one subscription, or of all) as `interrupted`
/// and puts its delivery back to pending, where it is retried without consuming retry budget.
/// Used by crash recovery and when a subscription's actor starts after a failure.
pub(super) fn interrupt_in_flight(
    conn: &rusqlite::Connection,
    sub: Option<&SubscriptionId>,
    now: i64,
) -> rusqlite::Result<u64> {
    let sub = sub.map(SubscriptionId::as_str);
    let logged = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO attempts \
               (delivery_id, n, started_at, duration_ms, error_kind, error) \
             SELECT id, attempts, COALESCE(started_at, updated_at), \
                    MAX(0, ?1 - COALESCE(started_at, updated_at)), ?2, \
                    'hookline stopped while this attempt was in flight' \
             FROM deliveries WHERE state = 'in_flight' AND attempts > 0 \
               AND (?3 IS NULL OR subscription_id = ?3)",
        )?
        .execute(rusqlite::params![
            now,
            crate::policy::ErrorKind::Interrupted.as_str(),
            sub
        ])?;
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'pending', started_at = NULL, last_error = 'interrupted', \
         updated_at = ?1 WHERE state = 'in_flight' AND (?2 IS NULL OR subscription_id = ?2)",
    )?
    .execute(rusqlite::params![now, sub])?;
    Ok(logged as u64)
}

/// Guarantee 7: attempts cut short by a crash are logged as interrupted and retried.
fn recover(conn: &mut rusqlite::Connection) -> Result<Recovery> {
    let sql = |e: rusqlite::Error| Error::unavailable("journal recovery failed", e);
    let now = now_ms();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let interrupted = interrupt_in_flight(&tx, None, now).map_err(sql)?;
    let open: HashSet<String> = tx
        .prepare(
            "SELECT DISTINCT subscription_id FROM deliveries \
             WHERE state IN ('pending', 'in_flight')",
        )
        .map_err(sql)?
        .query_map([], |r| r.get(0))
        .map_err(sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(Recovery {
        interrupted,
        open_subscriptions: open.into_iter().map(SubscriptionId::from).collect(),
    })
}

/// A rusqlite connection to the journal with the settings every connection shares (the sqlx
/// ones get the same from `Journal::open`'s options).
fn open_rusqlite(path: &Path, read_only: bool) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let mode = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let conn = rusqlite::Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Keep I/O errors as errors (no SIGBUS on a full disk with mmap).
    conn.pragma_update(None, "mmap_size", 0)?;
    Ok(conn)
}

/// The writer's connection: the same settings the journal was opened and checked with.
fn open_writer(path: &Path, durability: Durability) -> Result<rusqlite::Connection> {
    let sql = |e: rusqlite::Error| Error::unavailable("journal open failed", e);
    let conn = open_rusqlite(path, false).map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    conn.pragma_update(None, "journal_size_limit", 67_108_864)
        .map_err(sql)?;
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(sql)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable {
            message: format!("journal_mode is {mode}, expected wal"),
            source: None,
        });
    }
    // Room for every statement the writer runs, so none is prepared twice.
    conn.set_prepared_statement_cache_capacity(64);
    checkpoint::prepare_writer(&conn).map_err(sql)?;
    Ok(conn)
}

pub(super) const SUB_COLUMNS: &str = sub_select!();

/// The spec fields that carry secrets: kept out of the readable `config` column and sealed.
const SECRET_FIELDS: [&str; 4] = ["accessKey", "auth", "signing", "tls"];

/// Splits a spec into its readable config JSON and its sealed secrets (bound to the id).
pub(super) fn encode_spec(
    spec: &SubscriptionSpec,
    id: &SubscriptionId,
    sealer: &SecretBox,
) -> Result<(String, Vec<u8>)> {
    let internal = |e: &dyn std::fmt::Display| Error::Internal(format!("subscription config: {e}"));
    let mut value = serde_json::to_value(spec).map_err(|e| internal(&e))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| internal(&"not an object"))?;
    let mut secrets = serde_json::Map::new();
    for field in SECRET_FIELDS {
        if let Some(v) = obj.remove(field) {
            secrets.insert(field.to_owned(), v);
        }
    }
    let sealed = sealer
        .seal_json(&secrets, id.as_str().as_bytes())
        .map_err(|e| internal(&e))?;
    Ok((value.to_string(), sealed))
}

/// The columns of [`sub_select!`], from either driver.
pub(super) struct SubRaw {
    id: String,
    tenant_id: String,
    config: String,
    paused: i64,
    blocked_on: Option<i64>,
    disabled_reason: Option<String>,
    faulted_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    secrets: Option<Vec<u8>>,
}

impl SubRaw {
    fn from_sqlx(r: &SqliteRow) -> SubRaw {
        SubRaw {
            id: r.get(0),
            tenant_id: r.get(1),
            config: r.get(2),
            paused: r.get(4),
            blocked_on: r.get(5),
            disabled_reason: r.get(6),
            faulted_reason: r.get(7),
            created_at: r.get(8),
            updated_at: r.get(9),
            secrets: r.get(10),
        }
    }
}

/// The columns of [`sub_select!`] on the writer's connection.
pub(super) fn sub_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubRaw> {
    Ok(SubRaw {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        config: r.get(2)?,
        paused: r.get(4)?,
        blocked_on: r.get(5)?,
        disabled_reason: r.get(6)?,
        faulted_reason: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        secrets: r.get(10)?,
    })
}

fn sub_from_row(r: SubRaw, sealer: &SecretBox) -> Result<SubscriptionRow> {
    let id = SubscriptionId::from(r.id);
    let mut value: serde_json::Value = serde_json::from_str(&r.config)
        .map_err(|e| Error::Internal(format!("unreadable subscription config: {e}")))?;
    if let Some(sealed) = r.secrets
        && let Some(obj) = value.as_object_mut()
    {
        let secrets: serde_json::Map<String, serde_json::Value> = sealer
            .open_json(&sealed, id.as_str().as_bytes())
            .map_err(|e| Error::Unavailable {
                message: format!("cannot open the secrets of subscription {id}: {e}"),
                source: None,
            })?;
        obj.extend(secrets);
    }
    let spec: SubscriptionSpec = serde_json::from_value(value)
        .map_err(|e| Error::Internal(format!("unreadable subscription config: {e}")))?;
    Ok(SubscriptionRow {
        id,
        tenant_id: TenantId::from(r.tenant_id),
        spec,
        paused: r.paused != 0,
        blocked_on: r.blocked_on,
        disabled_reason: r.disabled_reason,
        faulted_reason: r.faulted_reason,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// The columns of [`tenant_select!`], from either driver.
pub(super) struct TenantRaw {
    id: String,
    name: String,
    created_at: i64,
    /// The JSON of a [`RateLimit`].
    rate_limit: Option<String>,
}

impl TenantRaw {
    fn from_sqlx(r: &SqliteRow) -> TenantRaw {
        TenantRaw {
            id: r.get(0),
            name: r.get(1),
            created_at: r.get(2),
            rate_limit: r.get(3),
        }
    }
}

/// The columns of [`tenant_select!`] on the writer's connection.
pub(super) fn tenant_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRaw> {
    Ok(TenantRaw {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        rate_limit: r.get(3)?,
    })
}

pub(super) fn tenant_from_row(r: TenantRaw) -> Result<Tenant> {
    let rate_limit = r
        .rate_limit
        .map(|j| serde_json::from_str::<RateLimit>(&j))
        .transpose()
        .map_err(|e| Error::Internal(format!("unreadable tenant rate limit: {e}")))?;
    Ok(Tenant {
        id: TenantId::from(r.id),
        name: r.name,
        rate_limit,
        created_at: Timestamp::from_ms(r.created_at),
    })
}

fn delivery_from_row(r: &SqliteRow) -> Result<Delivery> {
    let state: String = r.get(5);
    Ok(Delivery {
        id: DeliveryId(r.get(0)),
        event_id: EventId::from(r.get::<String, _>(1)),
        subscription_id: SubscriptionId::from(r.get::<String, _>(2)),
        tenant_id: TenantId::from(r.get::<String, _>(3)),
        seq: r.get(4),
        status: DeliveryStatus::parse(&state)
            .ok_or_else(|| Error::Internal(format!("bad delivery state {state}")))?,
        attempts: r.get::<i64, _>(6) as u32,
        last_status_code: r.get::<Option<i64>, _>(7).map(|s| s as u16),
        last_error: r.get(8),
        next_attempt_at: r.get::<Option<i64>, _>(9).map(Timestamp::from_ms),
        updated_at: Timestamp::from_ms(r.get(10)),
    })
}

impl FromStr for DeliveryStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DeliveryStatus::parse(s).ok_or_else(|| {
            Error::invalid(
                "status",
                "must be one of pending, in_flight, delivered, failed, skipped, dropped",
            )
        })
    }
}
