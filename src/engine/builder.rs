//! Starting an engine: [`Engine::builder`], its settings, the master key, and the order in
//! which the store, the supervisor and the background tasks come up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ractor::Actor;
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;

use crate::actors::supervisor::{Supervisor, SupervisorMsg};
use crate::actors::{Ctx, SharedCtx};
use crate::config::{Durability, EngineConfig, StoreLocation};
use crate::domain::RetryPolicy;
use crate::error::{Error, Result};
use crate::outbound::Sender;
use crate::security::secretbox::{MasterKey, SecretBox};
use crate::store::sqlite::Journal;
use crate::store::{NodeId, Opened, Tenure};

use super::{EngineHandle, Inner};

/// Entry point: `Engine::builder().path("hookline.db").build().await`.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder with every setting at its default.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            location: None,
            config: EngineConfig::default(),
        }
    }
}

/// Configures and starts an engine.
#[derive(Debug)]
pub struct EngineBuilder {
    location: Option<StoreLocation>,
    config: EngineConfig,
}

impl EngineBuilder {
    /// The SQLite journal file (created if missing). Default: none; set this or [`in_memory`](Self::in_memory).
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.location = Some(StoreLocation::Sqlite(path.as_ref().to_owned()));
        self
    }

    /// A PostgreSQL database shared by the nodes of a cluster (`postgres://user@host:port/db`).
    /// Every node must be given the cluster's [`secret_key`](Self::secret_key). See
    /// docs/cluster.md.
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.location = Some(StoreLocation::Postgres(
            crate::security::secretbox::Redacted::new(url.into()),
        ));
        self
    }

    /// The store, as [`StoreLocation::parse`] reads `HOOKLINE_DB`: a path or a PostgreSQL URL.
    pub fn store(mut self, location: StoreLocation) -> Self {
        self.location = Some(location);
        self
    }

    /// This node's id in a cluster. Default: host name and process id.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.config.cluster.node_id = Some(id.into());
        self
    }

    /// How long a node holds a subscription without renewing. Default 45 s.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.config.cluster.lease_ttl = ttl;
        self
    }

    /// A throwaway journal for tests and experiments: nothing survives the engine. It lives in a
    /// private temporary directory (SQLite's shared in-memory databases would serialise the
    /// writer and the readers), removed when the engine is dropped.
    pub fn in_memory(mut self) -> Self {
        self.location = None;
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
        self.config.secret_key = Some(crate::security::secretbox::Redacted::new(key.into()));
        self
    }

    /// The master key file used when no key is given (see [`EngineConfig::secret_key_file`]).
    /// Default `<db>.key`.
    pub fn secret_key_file(mut self, path: impl AsRef<Path>) -> Self {
        self.config.secret_key_file = Some(path.as_ref().to_owned());
        self
    }

    /// An outbound HTTP(S) proxy for every delivery (see [`EngineConfig::proxy`]), e.g.
    /// `"http://10.0.0.5:3128".parse()?`. Default none.
    pub fn proxy(mut self, url: crate::config::ProxyUrl) -> Self {
        self.config.proxy = Some(url);
        self
    }

    /// Background pruning of finished events. Default: on, 7 days after delivery (see
    /// [`Retention`](crate::config::Retention)).
    pub fn retention(mut self, r: crate::config::Retention) -> Self {
        self.config.retention = r;
        self
    }

    /// Metrics settings (see [`MetricsSettings`](crate::config::MetricsSettings)).
    pub fn metrics(mut self, m: crate::config::MetricsSettings) -> Self {
        self.config.metrics = m;
        self
    }

    /// A delivery rate limit for every tenant, shared by its subscriptions. Default none.
    pub fn tenant_rate_limit(mut self, limit: crate::policy::ratelimit::RateLimit) -> Self {
        self.config.tenant_rate_limit = Some(limit);
        self
    }

    /// The sandbox limits of tenant transforms. Default [`TransformLimits::default`](crate::transform::TransformLimits).
    pub fn transform_limits(mut self, limits: crate::transform::TransformLimits) -> Self {
        self.config.transform_limits = limits;
        self
    }

    /// Opens the store, recovers, and starts delivering.
    pub async fn build(self) -> Result<EngineHandle> {
        self.config.validate()?;
        let location = self.location.clone();
        if let Some(l) = &location {
            crate::config::check_shared_key(
                l,
                self.config.secret_key.is_some(),
                self.config.secret_key_file.is_some(),
            )?;
        }
        let metrics = Arc::new(crate::metrics::Metrics::new(
            self.config.metrics.max_subscription_labels,
        ));
        // The one place that names the store's implementations.
        let (opened, tempdir) = match location {
            Some(StoreLocation::Postgres(url)) => (
                open_postgres(url.expose(), &self.config, &metrics).await?,
                None,
            ),
            Some(StoreLocation::Sqlite(p)) => open_sqlite(Some(p), &self.config, &metrics).await?,
            None => open_sqlite(None, &self.config, &metrics).await?,
        };
        let Opened {
            store,
            recovery,
            wakes,
            tenant_limits,
        } = opened;
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
            store.clone(),
        ));
        // With a shared store a tenant's limit is kept by the store for the whole cluster
        // (`policy::cluster_pace`); the limits themselves are followed from the store.
        let limiters = match store.tenure() {
            Tenure::Shared => crate::policy::ratelimit::Limiters::across_cluster(
                self.config.tenant_rate_limit.clone(),
            ),
            Tenure::Exclusive => {
                crate::policy::ratelimit::Limiters::new(self.config.tenant_rate_limit.clone())
            }
        };
        // Tenants' own limits are journaled; the limiters live in memory and start from them.
        for (tenant, limit) in store.tenant_rate_limits().await? {
            limiters.set_tenant_limit(tenant.as_str(), Some(limit));
        }
        let node = NodeId::new(self.config.cluster.node_id());
        store.register(&node, env!("CARGO_PKG_VERSION")).await?;
        let tenure = store.tenure();
        if tenure == Tenure::Shared {
            tracing::info!(node = %node, lease_ttl_ms = self.config.cluster.lease_ttl.as_millis() as u64, "joined the cluster");
        }
        let ctx: SharedCtx = Arc::new(Ctx {
            transforms,
            node,
            tenure,
            lease_ttl: self.config.cluster.lease_ttl,
            claims: Arc::new(tokio::sync::Notify::new()),
            store: store.clone(),
            sender: Sender::new(&self.config)?,
            limiters,
            metrics,
            config: self.config,
            tasks: TaskTracker::new(),
        });
        let (supervisor, supervisor_task) = Actor::spawn(None, Supervisor, ctx.clone())
            .await
            .map_err(|e| Error::Internal(format!("supervisor did not start: {e}")))?;
        let mut background = vec![
            super::retention::forward_wakes(wakes, supervisor.clone()),
            super::cluster::spawn_heartbeat(ctx.clone()),
        ];
        if tenure == Tenure::Shared {
            background.push(crate::actors::claimer::spawn(
                ctx.clone(),
                supervisor.clone(),
            ));
            ctx.claims.notify_one();
        } else if !recovery.open_subscriptions.is_empty() {
            let _ = supervisor.cast(SupervisorMsg::Wake(recovery.open_subscriptions));
        }
        if let Some(changes) = tenant_limits {
            background.push(super::cluster::follow_tenant_limits(
                store.clone(),
                ctx.limiters.clone(),
                changes,
            ));
        }
        background.extend(super::retention::spawn_pruner(
            store,
            ctx.config.retention.clone(),
            ctx.metrics.clone(),
        ));
        Ok(EngineHandle {
            inner: Arc::new(Inner {
                ctx,
                supervisor,
                supervisor_task: Mutex::new(Some(supervisor_task)),
                closed: AtomicBool::new(false),
                tenant_updates: Mutex::new(()),
                admin_override: std::sync::RwLock::new(None),
                background: std::sync::Mutex::new(background),
                _tempdir: tempdir,
            }),
        })
    }
}

/// The SQLite journal at `path`, or in a temporary directory (kept as long as the engine).
async fn open_sqlite(
    path: Option<PathBuf>,
    cfg: &EngineConfig,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<(Opened, Option<tempfile::TempDir>)> {
    let (path, tempdir) = match path {
        Some(p) => (p, None),
        None => {
            let dir = tempfile::tempdir()
                .map_err(|e| Error::unavailable("cannot create a temporary directory", e))?;
            (dir.path().join("hookline.db"), Some(dir))
        }
    };
    let sealer = SecretBox::new(master_key(&path, cfg, tempdir.is_some())?);
    let opened = Journal::open(&path, &cfg.store_options(), sealer, metrics.clone()).await?;
    Ok((opened, tempdir))
}

/// The PostgreSQL store at `url`, sealing with the configured key (`check_shared_key` made
/// sure there is one: a key file on one node's disk means nothing to the others); the store
/// refuses a key other than the cluster's.
async fn open_postgres(
    url: &str,
    cfg: &EngineConfig,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Opened> {
    let Some(text) = &cfg.secret_key else {
        return Err(Error::invalid(
            "secretKey",
            "is required with PostgreSQL: every node must use the same HOOKLINE_SECRET_KEY",
        ));
    };
    let key = MasterKey::parse(text.expose()).map_err(|e| Error::invalid("secretKey", e))?;
    let pg = crate::store::postgres::PgOptions {
        node_id: cfg.cluster.node_id(),
        lease_ttl: cfg.cluster.lease_ttl,
    };
    crate::store::postgres::PgStore::open(
        url,
        &cfg.store_options(),
        SecretBox::new(key),
        metrics.clone(),
        pg,
    )
    .await
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
