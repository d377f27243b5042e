//! The engine and its handle: the only public door to hookline.
//!
//! [`Engine::builder`] opens the journal (running crash recovery), starts the supervisor and the
//! writer, and resumes every subscription that has pending deliveries. The resulting
//! [`EngineHandle`] is cheap to clone and hides actors and the database entirely; the HTTP API
//! and the CLI are thin layers over it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use ractor::{Actor, ActorRef, RpcReplyPort, rpc::CallResult};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;

use crate::actors::subscriber::{Command, CommandReply, SubscriberMsg};
use crate::actors::supervisor::{Supervisor, SupervisorMsg};
use crate::actors::{Ctx, SharedCtx};
use crate::config::{Durability, EngineConfig};
use crate::delivery::Sender;
use crate::error::{Error, Result};
use crate::id::{DeliveryId, SubscriptionId, TenantId, validate_external_id};
use crate::journal::Journal;
use crate::model::{
    CreatedTenant, Delivery, DeliveryDetail, DeliveryPage, DeliveryQuery, EndpointTest, EventInput,
    NewSubscription, NewTenant, Principal, PublishReceipt, RetryPolicy, Subscription,
    SubscriptionPatch, SubscriptionSpec, Tenant, TenantPatch,
};
use crate::secretbox::{MasterKey, SecretBox};

/// Entry point: `Engine::builder().path("hookline.db").build().await`.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder with every setting at its default.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            path: None,
            config: EngineConfig::default(),
        }
    }
}

/// Configures and starts an engine.
#[derive(Debug)]
pub struct EngineBuilder {
    path: Option<PathBuf>,
    config: EngineConfig,
}

impl EngineBuilder {
    /// The SQLite journal file (created if missing). Default: none; set this or [`in_memory`](Self::in_memory).
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_owned());
        self
    }

    /// A throwaway journal for tests and experiments: nothing survives the engine. It lives in a
    /// private temporary directory (SQLite's shared in-memory databases would serialise the
    /// writer and the readers), removed when the engine is dropped.
    pub fn in_memory(mut self) -> Self {
        self.path = None;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Journal durability. Default [`Durability::Fsync`].
    pub fn durability(mut self, d: Durability) -> Self {
        self.config.durability = d;
        self
    }

    /// Retry policy for subscriptions that set none. Default 4 attempts, backoff 1 s, 10 s, 60 s.
    pub fn default_retry(mut self, r: RetryPolicy) -> Self {
        self.config.default_retry = r;
        self
    }

    /// Attempt timeout for subscriptions that set none. Default 30 s.
    pub fn default_timeout(mut self, d: Duration) -> Self {
        self.config.default_timeout = d;
        self
    }

    /// Longest `Retry-After` honoured. Default 1 h.
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.config.max_retry_after = d;
        self
    }

    /// Networks exempt from the private-address block. Default none.
    pub fn allow_networks(mut self, nets: Vec<ipnet::IpNet>) -> Self {
        self.config.allow_networks = nets;
        self
    }

    /// How long `shutdown` waits for in-flight attempts. Default 10 s.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.config.shutdown_grace = d;
        self
    }

    /// The master key sealing subscription secrets (`base64:…` or 64 hex characters). Default: a
    /// key file `<db>.key` beside the journal, created on first start.
    pub fn secret_key(mut self, key: impl Into<String>) -> Self {
        self.config.secret_key = Some(crate::secretbox::Redacted::new(key.into()));
        self
    }

    /// The master key file used when no key is given (see [`EngineConfig::secret_key_file`]).
    /// Default `<db>.key`.
    pub fn secret_key_file(mut self, path: impl AsRef<Path>) -> Self {
        self.config.secret_key_file = Some(path.as_ref().to_owned());
        self
    }

    /// An outbound HTTP(S) proxy for every delivery (see [`EngineConfig::proxy`]). Default none.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.config.proxy = Some(url.into());
        self
    }

    /// Background pruning of finished events. Default: on, 7 days after delivery (see
    /// [`Retention`](crate::config::Retention)).
    pub fn retention(mut self, r: crate::config::Retention) -> Self {
        self.config.retention = r;
        self
    }

    /// Request size limits the HTTP API enforces (see [`Limits`](crate::config::Limits)).
    pub fn limits(mut self, l: crate::config::Limits) -> Self {
        self.config.limits = l;
        self
    }

    /// Metrics settings (see [`MetricsSettings`](crate::config::MetricsSettings)).
    pub fn metrics(mut self, m: crate::config::MetricsSettings) -> Self {
        self.config.metrics = m;
        self
    }

    /// A delivery rate limit for every tenant, shared by its subscriptions. Default none.
    pub fn tenant_rate_limit(mut self, limit: crate::ratelimit::RateLimit) -> Self {
        self.config.tenant_rate_limit = Some(limit);
        self
    }

    /// The sandbox limits of tenant transforms. Default [`TransformLimits::default`](crate::transform::TransformLimits).
    pub fn transform_limits(mut self, limits: crate::transform::TransformLimits) -> Self {
        self.config.transform_limits = limits;
        self
    }

    /// Opens the journal, recovers, and starts delivering.
    pub async fn build(self) -> Result<EngineHandle> {
        self.config.validate()?;
        let (path, tempdir) = match self.path {
            Some(p) => (p, None),
            None => {
                let dir = tempfile::tempdir()
                    .map_err(|e| Error::unavailable("cannot create a temporary directory", e))?;
                (dir.path().join("hookline.db"), Some(dir))
            }
        };
        let sealer = SecretBox::new(master_key(&path, &self.config, tempdir.is_some())?);
        let metrics = Arc::new(crate::metrics::Metrics::new(
            self.config.metrics.max_subscription_labels,
        ));
        let (journal, recovery) =
            Journal::open(&path, &self.config, sealer, metrics.clone()).await?;
        metrics.deliveries(crate::metrics::Outcome::Interrupted, recovery.interrupted);
        if recovery.interrupted > 0 {
            tracing::warn!(
                count = recovery.interrupted,
                "attempts interrupted by the last stop will be retried"
            );
        }
        let runtime = crate::transform::TransformRuntime::new(self.config.transform_limits.clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let transforms = Arc::new(crate::transform::TransformRegistry::new(
            runtime,
            journal.clone(),
        ));
        let limiters = crate::ratelimit::Limiters::new(self.config.tenant_rate_limit.clone());
        // Tenants' own limits are journaled; the limiters live in memory and start from them.
        for (tenant, limit) in journal.tenant_rate_limits().await? {
            limiters.set_tenant_limit(tenant.as_str(), Some(limit));
        }
        let ctx: SharedCtx = Arc::new(Ctx {
            transforms,
            journal: journal.clone(),
            sender: Sender::new(&self.config)?,
            limiters,
            metrics,
            config: self.config,
            tasks: TaskTracker::new(),
        });
        let (supervisor, supervisor_task) = Actor::spawn(None, Supervisor, ctx.clone())
            .await
            .map_err(|e| Error::Internal(format!("supervisor did not start: {e}")))?;
        let sup = supervisor.clone();
        journal.set_commit_hook(Arc::new(move |subs| {
            let _ = sup.cast(SupervisorMsg::Wake(subs));
        }));
        if !recovery.open_subscriptions.is_empty() {
            let _ = supervisor.cast(SupervisorMsg::Wake(recovery.open_subscriptions));
        }
        let pruner = journal.spawn_pruner(ctx.config.retention.clone());
        Ok(EngineHandle {
            inner: Arc::new(Inner {
                ctx,
                supervisor,
                supervisor_task: Mutex::new(Some(supervisor_task)),
                closed: AtomicBool::new(false),
                tenant_updates: Mutex::new(()),
                admin_override: std::sync::RwLock::new(None),
                pruner: std::sync::Mutex::new(pruner),
                _tempdir: tempdir,
            }),
        })
    }
}

/// The engine's public door. Clone it freely; every clone drives the same engine.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("journal", &self.inner.ctx.journal)
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
    /// The retention task, stopped at shutdown.
    pruner: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    _tempdir: Option<tempfile::TempDir>,
}

/// The key sealing subscription secrets: configured, generated for a throwaway journal, or kept
/// in a key file beside the journal.
fn master_key(db: &Path, cfg: &EngineConfig, throwaway: bool) -> Result<MasterKey> {
    if let Some(text) = &cfg.secret_key {
        return MasterKey::parse(text.expose()).map_err(|e| Error::invalid("secretKey", e));
    }
    if throwaway {
        return Ok(MasterKey::generate());
    }
    let file = match &cfg.secret_key_file {
        Some(f) => f.clone(),
        None => {
            let mut file = db.as_os_str().to_owned();
            file.push(".key");
            PathBuf::from(file)
        }
    };
    let (key, created) = MasterKey::load_or_create(&file)
        .map_err(|e| Error::unavailable(format!("secret key file {}", file.display()), e))?;
    if created {
        tracing::warn!(
            file = %file.display(),
            "generated the key sealing subscription secrets; back it up with the journal, or set HOOKLINE_SECRET_KEY"
        );
    }
    Ok(key)
}

/// SHA-256 hex digest of an API key: what the journal stores and looks up.
fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn generate_key(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl EngineHandle {
    fn journal(&self) -> &Journal {
        &self.inner.ctx.journal
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    // ---- tenants and keys --------------------------------------------------------------

    /// Creates a tenant and its API key (returned only here; only its hash is stored).
    pub async fn create_tenant(&self, t: NewTenant) -> Result<CreatedTenant> {
        self.check_open()?;
        validate_external_id("id", &t.id)?;
        if t.name.trim().is_empty() || t.name.len() > 256 {
            return Err(Error::invalid("name", "must be 1 to 256 characters"));
        }
        if let Some(l) = &t.rate_limit {
            l.validate()?;
        }
        let key = generate_key("hlk_");
        let tenant = self
            .journal()
            .create_tenant(TenantId::from(t.id), t.name, t.rate_limit, hash_key(&key))
            .await?;
        if let Some(l) = &tenant.rate_limit {
            self.inner
                .ctx
                .limiters
                .set_tenant_limit(tenant.id.as_str(), Some(l.clone()));
        }
        Ok(CreatedTenant {
            tenant,
            api_key: key,
        })
    }

    /// A tenant by id.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.journal()
            .get_tenant(id)
            .await?
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    /// Changes a tenant: `rateLimit` sets its own delivery rate limit, shared by all its
    /// subscriptions (`Some(None)` removes it, so the engine's default tenant limit applies).
    /// Deliveries are paced by the new limit from their next slot on.
    pub async fn update_tenant(&self, id: &TenantId, patch: TenantPatch) -> Result<Tenant> {
        self.check_open()?;
        let Some(rate_limit) = patch.rate_limit else {
            return self.get_tenant(id).await;
        };
        if let Some(l) = &rate_limit {
            l.validate()?;
        }
        // Serialised so that the limiters end with the limit committed last.
        let _order = self.inner.tenant_updates.lock().await;
        let tenant = self
            .journal()
            .set_tenant_rate_limit(id.clone(), rate_limit.clone())
            .await?;
        // After the commit: a limit that did not become durable is never applied.
        self.inner
            .ctx
            .limiters
            .set_tenant_limit(id.as_str(), rate_limit);
        Ok(tenant)
    }

    /// Who an API key belongs to, if anyone.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Principal>> {
        self.check_open()?;
        let hash = hash_key(key);
        let configured = self
            .inner
            .admin_override
            .read()
            .map(|g| g.clone())
            .unwrap_or(None);
        if configured.is_some_and(|h| h == hash) {
            return Ok(Some(Principal::Admin));
        }
        self.journal().principal_for_key_hash(&hash).await
    }

    /// Sets up the admin key. With `configured`, that key is accepted (and not stored). Without,
    /// if no admin key was ever generated, one is generated, its hash stored, and the key
    /// returned so the caller can show it once.
    pub async fn ensure_admin_key(&self, configured: Option<&str>) -> Result<Option<String>> {
        if let Some(key) = configured {
            if key.len() < 16 {
                return Err(Error::invalid("adminKey", "must be at least 16 characters"));
            }
            if let Ok(mut g) = self.inner.admin_override.write() {
                *g = Some(hash_key(key));
            }
            return Ok(None);
        }
        if self.journal().has_admin_key().await? {
            return Ok(None);
        }
        let key = generate_key("hla_");
        self.journal().insert_admin_key(hash_key(&key)).await?;
        Ok(Some(key))
    }

    // ---- subscriptions -----------------------------------------------------------------

    /// Creates a subscription; it receives events published from now on.
    pub async fn create_subscription(&self, n: NewSubscription) -> Result<Subscription> {
        self.check_open()?;
        validate_external_id("tenantId", &n.tenant_id)?;
        let tenant = TenantId::from(n.tenant_id.clone());
        let spec = SubscriptionSpec::from_new(n, &self.inner.ctx.config)?;
        let row = self
            .journal()
            .create_subscription(SubscriptionId::generate(), tenant, spec)
            .await?;
        let mut public = row.to_public();
        public.secret = Some(row.spec.signing.secret.clone());
        Ok(public)
    }

    /// A subscription by id.
    pub async fn get_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.journal()
            .get_subscription(id)
            .await?
            .map(|r| r.to_public())
            .ok_or_else(|| Error::not_found("subscription", id))
    }

    /// All subscriptions, or those of one tenant.
    pub async fn list_subscriptions(&self, tenant: Option<&TenantId>) -> Result<Vec<Subscription>> {
        Ok(self
            .journal()
            .list_subscriptions(tenant)
            .await?
            .iter()
            .map(|r| r.to_public())
            .collect())
    }

    /// Changes a subscription; the next attempt uses the new settings (one in flight finishes
    /// with the old ones).
    pub async fn update_subscription(
        &self,
        id: &SubscriptionId,
        patch: SubscriptionPatch,
    ) -> Result<Subscription> {
        self.subscription_command(id, Command::Update(Box::new(patch)))
            .await
    }

    /// Replaces a subscription's signing secret (with `secret`, or a generated one) and returns
    /// the subscription with the new secret in full. During `grace` (default 24 h) requests carry
    /// signatures by both the old and the new secret.
    pub async fn rotate_secret(
        &self,
        id: &SubscriptionId,
        secret: Option<String>,
        grace: Option<Duration>,
    ) -> Result<Subscription> {
        let grace = grace.unwrap_or(Duration::from_secs(24 * 3600));
        if grace > Duration::from_secs(7 * 24 * 3600) {
            return Err(Error::invalid("graceSeconds", "must be at most 7 days"));
        }
        self.subscription_command(id, Command::RotateSecret { secret, grace })
            .await
    }

    /// Sends a signed test event to the subscription's endpoint now, outside its queue (nothing
    /// is journaled and the order of real deliveries is untouched), with the subscription's
    /// headers, authentication and timeout.
    pub async fn test_endpoint(&self, id: &SubscriptionId) -> Result<EndpointTest> {
        self.check_open()?;
        let row = self
            .journal()
            .get_subscription(id)
            .await?
            .ok_or_else(|| Error::not_found("subscription", id))?;
        let event = EventInput::new(
            row.tenant_id.as_str(),
            "hookline-endpoint-test",
            crate::model::NotificationType::WorkflowEvent,
        )
        .payload(serde_json::json!({"test": true, "subscriptionId": id.as_str()}))
        .validate()?;
        let body = serde_json::to_string(&event)
            .map_err(|e| Error::Internal(format!("test event: {e}")))?;
        let spec = &row.spec;
        let req = crate::delivery::AttemptRequest {
            url: spec.url.clone(),
            event_id: event.id.clone(),
            body: Arc::from(body.into_bytes()),
            transformed_headers: None,
            access_key: spec.access_key.clone(),
            headers: spec.headers.clone(),
            signing: spec.signing.clone(),
            auth: spec.auth.clone(),
            subscription: row.id.clone(),
            tls: spec.tls.clone(),
            timeout: Duration::from_millis(spec.timeout_ms),
        };
        let result = self.inner.ctx.sender.send(&req).await;
        let duration_ms = result.duration.as_millis() as u64;
        Ok(match result.outcome {
            crate::delivery::AttemptOutcome::Response { status, .. } => EndpointTest {
                status_code: Some(status),
                duration_ms,
                error: (!(200..300).contains(&status))
                    .then(|| format!("receiver answered {status}")),
                verified: (200..300).contains(&status),
            },
            crate::delivery::AttemptOutcome::Failed { kind, message } => EndpointTest {
                status_code: (kind == crate::policy::ErrorKind::Timeout).then_some(500),
                duration_ms,
                error: Some(format!("{}: {message}", kind.as_str())),
                verified: false,
            },
            // The endpoint test runs no transform.
            crate::delivery::AttemptOutcome::Dropped { reason }
            | crate::delivery::AttemptOutcome::TransformFailed {
                message: reason, ..
            } => EndpointTest {
                status_code: None,
                duration_ms,
                error: Some(reason),
                verified: false,
            },
        })
    }

    /// Stops starting attempts for a subscription; events keep accumulating.
    pub async fn pause_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.subscription_command(id, Command::Pause).await
    }

    /// Resumes a paused, disabled or faulted subscription (a blocked one resumes through
    /// [`resubmit`](Self::resubmit) or [`skip`](Self::skip) of its failed delivery).
    pub async fn resume_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.subscription_command(id, Command::Resume).await
    }

    /// Deletes a subscription with its deliveries and attempt log.
    pub async fn delete_subscription(&self, id: &SubscriptionId) -> Result<()> {
        match self.command(id, Command::Delete).await? {
            CommandReply::Deleted => Ok(()),
            other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn subscription_command(
        &self,
        id: &SubscriptionId,
        cmd: Command,
    ) -> Result<Subscription> {
        match self.command(id, cmd).await? {
            CommandReply::Subscription(s) => Ok(*s),
            other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn actor(&self, id: &SubscriptionId) -> Result<ActorRef<SubscriberMsg>> {
        let sub = id.clone();
        call(&self.inner.supervisor, move |tx| {
            SupervisorMsg::Get(sub, tx)
        })
        .await?
    }

    async fn command(&self, id: &SubscriptionId, cmd: Command) -> Result<CommandReply> {
        self.check_open()?;
        let actor = self.actor(id).await?;
        let result = actor
            .call(|tx| SubscriberMsg::Command(cmd, tx), None)
            .await
            .map_err(|_| Error::Conflict(format!("subscription {id} is restarting; try again")))?;
        match result {
            CallResult::Success(r) => r,
            _ => Err(Error::Conflict(format!(
                "subscription {id} is restarting; try again"
            ))),
        }
    }

    // ---- events --------------------------------------------------------------------------

    /// Journals an event and fans it out to every matching subscription. Returns once both are
    /// durable (guarantee 1). Publishing the same (tenant, id) again returns the original.
    pub async fn publish(&self, event: EventInput) -> Result<PublishReceipt> {
        self.check_open()?;
        let event = event.validate()?;
        let wait = self.inner.ctx.config.intake_wait;
        let mut out = self.journal().publish(vec![event], wait).await?;
        out.pop()
            .unwrap_or_else(|| Err(Error::Internal("no publish result".into())))
    }

    /// Publishes several events in one durable commit; one result per event, in order. An invalid
    /// event is refused on its own without affecting the others.
    pub async fn publish_batch(
        &self,
        events: Vec<EventInput>,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        self.check_open()?;
        let mut results: Vec<Option<Result<PublishReceipt>>> = Vec::with_capacity(events.len());
        let mut valid = Vec::with_capacity(events.len());
        for e in events {
            match e.validate() {
                Ok(v) => {
                    valid.push(v);
                    results.push(None);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        let wait = self.inner.ctx.config.intake_wait;
        let mut journaled = self.journal().publish(valid, wait).await?.into_iter();
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    journaled
                        .next()
                        .unwrap_or_else(|| Err(Error::Internal("missing result".into())))
                })
            })
            .collect())
    }

    // ---- deliveries ----------------------------------------------------------------------

    /// A page of a subscription's deliveries in `seq` order.
    pub async fn list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: DeliveryQuery,
    ) -> Result<DeliveryPage> {
        self.journal().list_deliveries(sub, &q).await
    }

    /// A delivery with its attempt log.
    pub async fn get_delivery(&self, id: DeliveryId) -> Result<DeliveryDetail> {
        let delivery = self
            .journal()
            .get_delivery(id)
            .await?
            .ok_or_else(|| Error::not_found("delivery", id))?;
        let attempt_log = self.journal().attempts(id).await?;
        Ok(DeliveryDetail {
            delivery,
            attempt_log,
        })
    }

    /// Puts a failed delivery back to pending in its place in the order, with a fresh retry
    /// budget; a subscription blocked on it resumes from it.
    pub async fn resubmit(&self, id: DeliveryId) -> Result<Delivery> {
        self.delivery_command(id, Command::Resubmit(id)).await
    }

    /// Re-sends a subscription's finished deliveries (delivered, failed, skipped, dropped) of
    /// events accepted in the window, in their original order, for a receiver that lost data.
    ///
    /// The deliveries themselves go back to pending (same ids, the attempt log continues, a
    /// fresh retry budget), so they take their places in `seq` order: after the attempt in
    /// flight, if any, and ahead of every pending delivery with a higher `seq`. A subscription
    /// blocked on a replayed delivery is unblocked. Events already pruned by retention cannot
    /// be replayed.
    pub async fn replay(
        &self,
        id: &SubscriptionId,
        window: crate::model::ReplayWindow,
    ) -> Result<crate::model::ReplayReceipt> {
        let (since_ms, until_ms) = window.to_ms(crate::clock::now_ms())?;
        match self
            .command(id, Command::Replay { since_ms, until_ms })
            .await?
        {
            CommandReply::Replayed(replayed) => Ok(crate::model::ReplayReceipt { replayed }),
            other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Whether the engine serves requests: recovery is over (the handle exists) and it is not
    /// shutting down. `GET /readyz` answers from this.
    pub fn is_ready(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
    }

    /// The engine's metrics in the OpenMetrics text format, with the queue gauges read from the
    /// journal now.
    pub async fn metrics_text(&self) -> Result<String> {
        let stats = self.journal().queue_stats().await?;
        self.inner.ctx.metrics.set_queues(stats);
        Ok(self.inner.ctx.metrics.encode())
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.ctx.config
    }

    /// Marks a pending or failed delivery skipped; a subscription blocked on it moves on.
    pub async fn skip(&self, id: DeliveryId) -> Result<Delivery> {
        self.delivery_command(id, Command::Skip(id)).await
    }

    async fn delivery_command(&self, id: DeliveryId, cmd: Command) -> Result<Delivery> {
        let d = self
            .journal()
            .get_delivery(id)
            .await?
            .ok_or_else(|| Error::not_found("delivery", id))?;
        match self.command(&d.subscription_id, cmd).await? {
            CommandReply::Delivery(d) => Ok(*d),
            other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    // ---- lifecycle -----------------------------------------------------------------------

    /// Stops intake, lets attempts in flight finish (up to the shutdown grace), commits what is
    /// pending and closes the journal. Attempts cut short are retried after the next start.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(p) = self.inner.pruner.lock().ok().and_then(|mut p| p.take()) {
            p.abort();
        }
        let grace = self.inner.ctx.config.shutdown_grace;
        let drained = self
            .inner
            .supervisor
            .call(SupervisorMsg::Shutdown, Some(grace))
            .await;
        if !matches!(drained, Ok(CallResult::Success(()))) {
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
        self.journal().close().await;
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

/// Tenant transforms (WebAssembly components run on each delivery before it is signed).
impl EngineHandle {
    /// Uploads a module as the next version of the tenant's transform `name`. The module is
    /// compiled and instantiated once under the sandbox limits before anything is stored; one
    /// that is not a component of the `hookline:transform` world is refused with
    /// [`Error::Invalid`] saying why. Uploading the same bytes again returns the existing
    /// version. Returns the version and whether this call created it.
    ///
    /// CPU-heavy for large components (seconds for a Python one); it runs on a blocking thread.
    pub async fn upload_transform(
        &self,
        tenant: &TenantId,
        name: &str,
        wasm: Vec<u8>,
    ) -> Result<(crate::model::TransformVersion, bool)> {
        self.check_open()?;
        self.get_tenant(tenant).await?;
        self.inner.ctx.transforms.upload(tenant, name, wasm).await
    }

    /// The tenant's transforms with their versions and bound subscriptions, by name.
    pub async fn list_transforms(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<crate::model::TransformInfo>> {
        self.get_tenant(tenant).await?;
        let versions = self.journal().list_transform_versions(tenant).await?;
        let subs = self.journal().list_subscriptions(Some(tenant)).await?;
        let mut out: Vec<crate::model::TransformInfo> = Vec::new();
        for v in versions {
            match out.last_mut() {
                Some(info) if info.name == v.name => info.versions.push(v),
                _ => out.push(crate::model::TransformInfo {
                    name: v.name.clone(),
                    bound_by: subs
                        .iter()
                        .filter(|s| s.spec.transform.as_ref().is_some_and(|t| t.name == v.name))
                        .map(|s| s.id.clone())
                        .collect(),
                    versions: vec![v],
                }),
            }
        }
        Ok(out)
    }

    /// One of the tenant's transforms.
    pub async fn get_transform(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<crate::model::TransformInfo> {
        self.list_transforms(tenant)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::not_found("transform", name))
    }

    /// Deletes every version of a transform. Refused with [`Error::Conflict`] while a
    /// subscription is bound to it.
    pub async fn delete_transform(&self, tenant: &TenantId, name: &str) -> Result<()> {
        self.check_open()?;
        self.journal()
            .delete_transform(tenant.clone(), name.to_string())
            .await?;
        self.inner.ctx.transforms.forget(tenant, name);
        Ok(())
    }

    /// Runs one version of a transform on an event envelope, as a delivery would, and returns
    /// what it decided. Nothing is sent or stored.
    pub async fn test_transform(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
        mut event: EventInput,
    ) -> Result<crate::model::TransformTest> {
        self.check_open()?;
        event.tenant_id = tenant.as_str().to_string();
        let event = event.validate()?;
        let body =
            serde_json::to_vec(&event).map_err(|e| Error::Internal(format!("test event: {e}")))?;
        let compiled = self.inner.ctx.transforms.get(tenant, name, version).await?;
        let input = crate::transform::TransformInput {
            id: event.id.as_str().to_string(),
            tenant_id: tenant.as_str().to_string(),
            subscription_id: "test".to_string(),
            notification_type: event.notification_type.as_str().to_string(),
            headers: vec![(
                "content-type".to_string(),
                crate::delivery::CONTENT_TYPE_JSON.to_string(),
            )],
            body,
        };
        let report = self
            .inner
            .ctx
            .transforms
            .runtime()
            .call(&compiled, input)
            .await;
        Ok(report.into_test())
    }

    /// The sandbox limits transforms run under.
    pub fn transform_limits(&self) -> &crate::transform::TransformLimits {
        self.inner.ctx.transforms.runtime().limits()
    }

    /// What the transform registry did since this engine started: compilations, loads of
    /// precompiled artifacts, versions in memory.
    pub fn transform_stats(&self) -> crate::transform::TransformStats {
        self.inner.ctx.transforms.stats()
    }
}
