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
use crate::config::{Durability, EngineConfig};
use crate::domain::RetryPolicy;
use crate::error::{Error, Result};
use crate::outbound::Sender;
use crate::security::secretbox::{MasterKey, SecretBox};
use crate::store::Opened;
use crate::store::sqlite::Journal;

use super::{EngineHandle, Inner};

/// Entry point: `Engine::builder().path("hookline.db").build().await`.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder with every setting at its default.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            path: None,
            postgres: None,
            config: EngineConfig::default(),
        }
    }
}

/// Configures and starts an engine.
#[derive(Debug)]
pub struct EngineBuilder {
    path: Option<PathBuf>,
    /// The PostgreSQL store's URL and this node's id, instead of the SQLite journal.
    postgres: Option<(String, Option<String>)>,
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

    /// The shared PostgreSQL store at `url` (`postgres://user@host:port/db`) instead of a SQLite
    /// file: several engines (nodes) may share it. Requires [`secret_key`](Self::secret_key),
    /// the same on every node. See docs/cluster.md.
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        let node = self.postgres.take().and_then(|(_, n)| n);
        self.postgres = Some((url.into(), node));
        self
    }

    /// This node's id in a PostgreSQL cluster (unique among live nodes). Default: the host
    /// name and the process id. Ignored without [`postgres`](Self::postgres).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        let url = self.postgres.take().map(|(u, _)| u);
        self.postgres = url.map(|u| (u, Some(id.into())));
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
        let metrics = Arc::new(crate::metrics::Metrics::new(
            self.config.metrics.max_subscription_labels,
        ));
        // The one place that names the store's implementations.
        let (opened, tempdir) = match self.postgres {
            Some((url, node)) => (
                open_postgres(&url, node, &self.config, &metrics).await?,
                None,
            ),
            None => open_sqlite(self.path, &self.config, &metrics).await?,
        };
        let Opened {
            store,
            recovery,
            wakes,
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
        let limiters =
            crate::policy::ratelimit::Limiters::new(self.config.tenant_rate_limit.clone());
        // Tenants' own limits are journaled; the limiters live in memory and start from them.
        for (tenant, limit) in store.tenant_rate_limits().await? {
            limiters.set_tenant_limit(tenant.as_str(), Some(limit));
        }
        let ctx: SharedCtx = Arc::new(Ctx {
            transforms,
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
        let mut background = vec![super::retention::forward_wakes(wakes, supervisor.clone())];
        if !recovery.open_subscriptions.is_empty() {
            let _ = supervisor.cast(SupervisorMsg::Wake(recovery.open_subscriptions));
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

/// How long a PostgreSQL lease lasts unless renewed: the longest attempt timeout (30 s by
/// default) plus a margin (docs/cluster.md).
const LEASE_TTL: Duration = Duration::from_secs(45);

/// The PostgreSQL store at `url`. The sealing key must be configured: a key file on one node's
/// disk means nothing to the others.
async fn open_postgres(
    url: &str,
    node: Option<String>,
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
        node_id: node.unwrap_or_else(default_node_id),
        lease_ttl: LEASE_TTL,
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

/// The host name and process id: unique among live nodes, different after a restart.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
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
