//! Engine configuration, validated once into types that cannot be invalid.
//!
//! [`EngineConfig`] holds every tunable of the engine; its `Default` impl is the one place each
//! engine default is written (the server's file shape, the example file's test and the
//! `EngineBuilder` start from it). Addresses arrive typed: networks as [`IpNet`], the proxy as
//! a [`ProxyUrl`], durations as [`Duration`]; counts are checked against their ranges by
//! `validate`, which `EngineBuilder::build` runs. The server's own settings ([`ServerConfig`],
//! with the request [`Limits`]) and their layering (file < `HOOKLINE_*` environment < flags)
//! live in [`server`].

mod cluster;
mod proxy;
pub mod server;

pub(crate) use cluster::check_shared_key;
pub use cluster::{ClusterSettings, StoreLocation, default_node_id};
pub use proxy::ProxyUrl;
pub use server::{Limits, ServerConfig};

use std::time::Duration;

use ipnet::IpNet;

use crate::domain::RetryPolicy;
use crate::error::{Error, Result};
pub use crate::store::{Durability, Retention};

/// Every engine setting, with its default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Journal durability mode. Default [`Durability::Fsync`] (see [`Durability::default`]).
    pub durability: Durability,
    /// Retry policy of subscriptions that do not set one. Default: 4 attempts, 1 s, 10 s, 60 s.
    pub default_retry: RetryPolicy,
    /// Attempt timeout of subscriptions that do not set one. Default 30 s.
    pub default_timeout: Duration,
    /// TCP connect timeout of every attempt (bounded by the attempt timeout). Default 10 s.
    pub connect_timeout: Duration,
    /// The longest `Retry-After` honoured; longer asks are clamped to it. Default 1 h.
    pub max_retry_after: Duration,
    /// Actor restarts allowed per subscription within `restart_window` before it is marked
    /// faulted. Default 5.
    pub restart_limit: u32,
    /// The window of `restart_limit`. Default 60 s.
    pub restart_window: Duration,
    /// How long `shutdown` lets in-flight attempts finish before abandoning them (they are
    /// retried after restart). Default 10 s.
    pub shutdown_grace: Duration,
    /// Networks exempt from the private-address block (e.g. `127.0.0.0/8` for local tests).
    /// Default: none.
    pub allow_networks: Vec<IpNet>,
    /// Most journal operations grouped into one commit. Default 1024.
    pub commit_batch_max: usize,
    /// Journal operations that may wait for the writer before `publish` applies backpressure.
    /// Default 8192.
    pub intake_queue: usize,
    /// How long `publish` waits for room in a full intake queue before refusing with
    /// [`Error::Overloaded`] (HTTP 429) instead of waiting indefinitely. Default 1 s.
    pub intake_wait: Duration,
    /// Reader connections to the journal. Default 4.
    pub reader_connections: u32,
    /// Pending deliveries a subscription actor holds in memory at once. Default 32.
    pub actor_prefetch: u32,
    /// The master key sealing subscription secrets in the journal (`base64:…` or 64 hex
    /// characters). Default: a key file beside the journal (`<db>.key`, mode 0600), created on
    /// first start; production should pass one from a secret store instead.
    pub secret_key: Option<crate::security::secretbox::Redacted<String>>,
    /// Where the master key file is kept when `secret_key` is not given (created on first
    /// start if missing, mode 0600). Default: `<db>.key` beside the journal.
    pub secret_key_file: Option<std::path::PathBuf>,
    /// Outbound HTTP(S) proxy every delivery goes through (the lending seed's proxy setting),
    /// e.g. `http://10.0.0.5:3128`. Give it as an IP address, or allow its network: its name is
    /// resolved under the same address rules as receivers. Default none (direct connections;
    /// `HTTP_PROXY` and friends in the environment are ignored).
    pub proxy: Option<ProxyUrl>,
    /// The per-tenant delivery rate limit applied to every tenant without its own. Default none.
    pub tenant_rate_limit: Option<crate::policy::ratelimit::RateLimit>,
    /// The sandbox of tenant transforms: module size, memory, CPU time, output size, concurrent
    /// calls. The defaults let Python and JavaScript components run (see
    /// [`TransformLimits`](crate::transform::TransformLimits)).
    pub transform_limits: crate::transform::TransformLimits,
    /// Background pruning of finished events. Default: on, 7 days after delivery.
    pub retention: Retention,
    /// Metrics exposition settings. Default: admin key required, 50 subscriptions labelled.
    pub metrics: MetricsSettings,
    /// This node in a cluster sharing one store: node id, lease TTL, claim poll. Unused with
    /// SQLite. See [`ClusterSettings`].
    pub cluster: ClusterSettings,
}

/// Metrics exposition (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Whether `GET /metrics` needs the admin key (true, the default) or is open to anyone who
    /// can reach the listener (bind it to loopback or a private network then).
    pub require_admin: bool,
    /// Most subscriptions given their own `subscription` label on the queue gauges: the ones
    /// with the deepest queues. The totals cover every subscription. Default 50.
    pub max_subscription_labels: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            require_admin: true,
            max_subscription_labels: 50,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            durability: Durability::default(),
            default_retry: RetryPolicy::default(),
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(3600),
            restart_limit: 5,
            restart_window: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            allow_networks: Vec::new(),
            commit_batch_max: 1024,
            intake_queue: 8192,
            intake_wait: Duration::from_secs(1),
            reader_connections: 4,
            actor_prefetch: 32,
            secret_key: None,
            secret_key_file: None,
            proxy: None,
            tenant_rate_limit: None,
            transform_limits: crate::transform::TransformLimits::default(),
            retention: Retention::default(),
            metrics: MetricsSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl EngineConfig {
    /// The store's own settings.
    pub(crate) fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            durability: self.durability,
            reader_connections: self.reader_connections,
            intake_queue: self.intake_queue,
            commit_batch_max: self.commit_batch_max,
        }
    }

    /// The defaults and address rules new subscriptions are built with.
    pub(crate) fn subscription_defaults(&self) -> crate::domain::SubscriptionDefaults {
        crate::domain::SubscriptionDefaults {
            retry: self.default_retry.clone(),
            timeout_ms: self.default_timeout.as_millis() as u64,
            ip_policy: crate::security::ssrf::IpPolicy::new(self.allow_networks.clone()),
        }
    }

    /// The longest `max_retry_after` accepted.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

    pub(crate) fn validate(&self) -> Result<()> {
        self.default_retry.validate()?;
        // Saturating: `as u64` would wrap a timeout of ~585 million years into the range.
        let t = u64::try_from(self.default_timeout.as_millis()).unwrap_or(u64::MAX);
        let (min, max) = (
            crate::domain::SubscriptionSpec::MIN_TIMEOUT_MS,
            crate::domain::SubscriptionSpec::MAX_TIMEOUT_MS,
        );
        if !(min..=max).contains(&t) {
            return Err(Error::invalid(
                "defaultTimeout",
                format!("must be between {min} ms and {} s", max / 1000),
            ));
        }
        if self.max_retry_after > Self::MAX_RETRY_AFTER {
            // A retry's due time is now + this in i64 milliseconds: an unbounded clamp would
            // overflow it for a receiver asking for a long wait.
            return Err(Error::invalid("maxRetryAfter", "must be at most 30 days"));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid("connectTimeout", "must be positive"));
        }
        if self.restart_limit == 0 || self.restart_window.is_zero() {
            return Err(Error::invalid(
                "restartLimit",
                "limit and window must be positive",
            ));
        }
        if self.commit_batch_max == 0 || self.intake_queue == 0 || self.reader_connections == 0 {
            return Err(Error::invalid(
                "commitBatchMax",
                "batch, queue and reader sizes must be positive",
            ));
        }
        if let Some(l) = &self.tenant_rate_limit {
            l.validate()?;
        }
        let t = &self.transform_limits;
        if t.cpu.is_zero() {
            return Err(Error::invalid("transforms.cpu", "must be positive"));
        }
        if t.memory_bytes < (1 << 20) {
            return Err(Error::invalid(
                "transforms.memoryBytes",
                "must be at least 1 MiB",
            ));
        }
        if t.module_bytes == 0 || t.output_bytes == 0 {
            return Err(Error::invalid(
                "transforms",
                "maxModuleBytes and maxOutputBytes must be positive",
            ));
        }
        if !(1..=1000).contains(&t.max_concurrent_calls) {
            return Err(Error::invalid(
                "transforms.maxConcurrentCalls",
                "must be between 1 and 1000",
            ));
        }
        let r = &self.retention;
        if r.interval.is_zero() {
            return Err(Error::invalid("retention.interval", "must be positive"));
        }
        if !(1..=100_000).contains(&r.batch_size) {
            return Err(Error::invalid(
                "retention.batchSize",
                "must be between 1 and 100000",
            ));
        }
        if self.metrics.max_subscription_labels > 10_000 {
            return Err(Error::invalid(
                "metrics.maxSubscriptionLabels",
                "must be at most 10000",
            ));
        }
        self.cluster.validate()?;
        if self.actor_prefetch == 0 || self.actor_prefetch > 1024 {
            return Err(Error::invalid(
                "actorPrefetch",
                "must be between 1 and 1024",
            ));
        }
        Ok(())
    }
}

/// Parses a comma-separated list of CIDRs (`HOOKLINE_ALLOW_NETWORKS`). A bare address is a
/// single-host network.
pub fn parse_networks(list: &str) -> Result<Vec<IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| Error::invalid("allowNetworks", format!("{s:?} is not a CIDR")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_refuse_garbage() {
        let nets = parse_networks("127.0.0.0/8, ::1 ,10.1.2.3").expect("valid list");
        assert_eq!(nets.len(), 3);
        assert!(parse_networks("127.0.0.0/33").is_err());
        assert!(parse_networks("localhost").is_err());
        assert!(parse_networks("").expect("empty is fine").is_empty());
    }

    #[test]
    fn defaults_are_valid() {
        assert!(EngineConfig::default().validate().is_ok());
        let c = EngineConfig {
            restart_limit: 0,
            ..EngineConfig::default()
        };
        assert!(c.validate().is_err());
    }

    /// Found with the `config` fuzz target's properties: a ~585-million-year timeout wrapped
    /// into the accepted range, and an unbounded `Retry-After` clamp overflowed due times.
    #[test]
    fn huge_durations_are_refused_not_wrapped() {
        let wraps_to_30s = Duration::new(18_446_744_073_709_581, 616_000_000);
        assert_eq!(wraps_to_30s.as_millis() as u64, 30_000);
        let c = EngineConfig {
            default_timeout: wraps_to_30s,
            ..EngineConfig::default()
        };
        assert!(
            matches!(c.validate(), Err(Error::Invalid { field, .. }) if field == "defaultTimeout")
        );
        let c = EngineConfig {
            max_retry_after: Duration::from_secs(300_000_000 * 31_557_600),
            ..EngineConfig::default()
        };
        assert!(
            matches!(c.validate(), Err(Error::Invalid { field, .. }) if field == "maxRetryAfter")
        );
        let c = EngineConfig {
            max_retry_after: EngineConfig::MAX_RETRY_AFTER,
            ..EngineConfig::default()
        };
        assert!(c.validate().is_ok());
    }
}
