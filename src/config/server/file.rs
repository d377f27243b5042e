//! The configuration as it is written: the TOML shape of `hookline serve`'s settings, which the
//! file, the `HOOKLINE_*` environment and the flags all fill (see [`layers`](super::layers)).
//!
//! serde checks what a shape can: key names (unknown keys are refused), TOML types, enum names
//! and durations. Values that need parsing with a key-specific message (`listen`,
//! `allowNetworks`, `proxy`, `log.level`) stay text here and are parsed once by
//! [`validate`](super::validate) into a [`ServerConfig`](super::ServerConfig).
//!
//! Defaults are not written here: [`ServerFile::default`] renders the engine's own
//! ([`EngineConfig::default`]) and the server's constants (`ServerConfig::DEFAULT_*`) into
//! this shape, and `schemas/config.example.toml` is tested against it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Limits, NotificationSettings, ServerConfig, UiSettings};
use crate::config::{Durability, EngineConfig, MetricsSettings, Retention};
use crate::domain::RetryPolicy;
use crate::security::secretbox::Redacted;
use crate::transform::TransformLimits;

/// Every key of `hookline serve`, as text and numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct ServerFile {
    /// Address and port of the HTTP API.
    pub listen: String,
    /// The store: a SQLite journal file, or a `postgres://` URL shared by the nodes of a
    /// cluster (also written `store`).
    #[serde(alias = "store")]
    pub db: PathBuf,
    /// This node's id in a cluster (default: host name and process id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How long a node holds a subscription without renewing, in milliseconds.
    pub lease_ttl_ms: u64,
    /// The admin API key (at least 16 characters). Never serialized: it is a secret.
    #[serde(skip_serializing)]
    pub admin_key: Option<Redacted<String>>,
    /// The master key sealing subscription secrets. Never serialized: it is a secret.
    #[serde(skip_serializing)]
    pub secret_key: Option<Redacted<String>>,
    /// Where the master key file is kept when `secretKey` is not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// Outbound HTTP(S) proxy for every delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// CIDRs exempt from the private-address block.
    #[serde(deserialize_with = "list_or_csv")]
    pub allow_networks: Vec<String>,
    /// Journal durability.
    pub durability: DurabilityName,
    /// How long a stop lets attempts in flight finish.
    pub shutdown_grace: Dur,
    /// `[log]`.
    pub log: LogConfig,
    /// `[limits]`: request limits of the HTTP API.
    pub limits: Limits,
    /// `[ui]`: the dashboard.
    pub ui: UiSettings,
    /// `[notifications]`: the operator's receivers of operational notifications.
    pub notifications: NotificationSettings,
    /// `[retry]`: retry policy of subscriptions that set none (a subscription's `retry` shape).
    pub retry: RetryPolicy,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
    /// `[journal]`.
    pub journal: JournalConfig,
    /// `[actors]`.
    pub actors: ActorsConfig,
    /// `[retention]`.
    pub retention: RetentionConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[transforms]`.
    pub transforms: TransformsConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
}

impl Default for ServerFile {
    /// The engine's defaults and the server's own, rendered as a file would write them.
    fn default() -> Self {
        let engine = EngineConfig::default();
        ServerFile {
            listen: ServerConfig::DEFAULT_LISTEN.to_string(),
            db: PathBuf::from(ServerConfig::DEFAULT_DB),
            node_id: engine.cluster.node_id.clone(),
            lease_ttl_ms: u64::try_from(engine.cluster.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            admin_key: None,
            secret_key: engine.secret_key.clone(),
            secret_key_file: engine.secret_key_file.clone(),
            proxy: engine.proxy.as_ref().map(ToString::to_string),
            allow_networks: engine
                .allow_networks
                .iter()
                .map(ToString::to_string)
                .collect(),
            durability: engine.durability.into(),
            shutdown_grace: Dur(engine.shutdown_grace),
            log: LogConfig::default(),
            limits: Limits::default(),
            ui: UiSettings::default(),
            notifications: NotificationSettings::default(),
            retry: engine.default_retry.clone(),
            delivery: DeliveryConfig::from(&engine),
            journal: JournalConfig::from(&engine),
            actors: ActorsConfig::from(&engine),
            retention: RetentionConfig::from(&engine.retention),
            metrics: MetricsConfig::from(&engine.metrics),
            transforms: TransformsConfig::from(&engine.transform_limits),
            cluster: ClusterConfig::from(&engine.cluster),
        }
    }
}

/// `[cluster]` (see [`ClusterSettings`](crate::config::ClusterSettings)); the node id and the
/// lease TTL are top-level keys so their variables read `HOOKLINE_NODE_ID` and
/// `HOOKLINE_LEASE_TTL_MS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct ClusterConfig {
    /// How often an idle node looks for due subscriptions besides the store's wakes.
    pub poll_interval: Dur,
    /// Most subscriptions claimed in one round.
    pub claim_batch: u32,
}

impl From<&crate::config::ClusterSettings> for ClusterConfig {
    fn from(c: &crate::config::ClusterSettings) -> Self {
        ClusterConfig {
            poll_interval: Dur(c.poll_interval),
            claim_batch: c.claim_batch,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig::from(&EngineConfig::default().cluster)
    }
}

/// `durability`: `fsync` or `os` (see [`Durability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum DurabilityName {
    Fsync,
    Os,
}

impl From<Durability> for DurabilityName {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Fsync => DurabilityName::Fsync,
            Durability::Os => DurabilityName::Os,
        }
    }
}

impl From<DurabilityName> for Durability {
    fn from(d: DurabilityName) -> Self {
        match d {
            DurabilityName::Fsync => Durability::Fsync,
            DurabilityName::Os => Durability::Os,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the enclosing spans.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `hookline=debug,warn`, …). `RUST_LOG`, when set, wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: ServerConfig::DEFAULT_LOG_LEVEL.into(),
        }
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct DeliveryConfig {
    /// Attempt timeout of subscriptions that set no `timeoutMs`.
    pub timeout: Dur,
    /// TCP connect timeout of every attempt.
    pub connect_timeout: Dur,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Dur,
}

impl From<&EngineConfig> for DeliveryConfig {
    fn from(e: &EngineConfig) -> Self {
        DeliveryConfig {
            timeout: Dur(e.default_timeout),
            connect_timeout: Dur(e.connect_timeout),
            max_retry_after: Dur(e.max_retry_after),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig::from(&EngineConfig::default())
    }
}

/// `[journal]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct JournalConfig {
    /// Most operations grouped into one commit.
    pub commit_batch_max: usize,
    /// Operations that may wait for the writer before publishers wait.
    pub intake_queue: usize,
    /// How long a publish waits for room in a full intake queue before it is refused.
    pub intake_wait: Dur,
    /// Read-only connections.
    pub reader_connections: u32,
}

impl From<&EngineConfig> for JournalConfig {
    fn from(e: &EngineConfig) -> Self {
        JournalConfig {
            commit_batch_max: e.commit_batch_max,
            intake_queue: e.intake_queue,
            intake_wait: Dur(e.intake_wait),
            reader_connections: e.reader_connections,
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig::from(&EngineConfig::default())
    }
}

/// `[actors]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct ActorsConfig {
    /// Pending deliveries a subscription's actor holds in memory.
    pub prefetch: u32,
    /// Actor failures tolerated within `restartWindow` before the subscription is faulted.
    pub restart_limit: u32,
    /// The window of `restartLimit`.
    pub restart_window: Dur,
}

impl From<&EngineConfig> for ActorsConfig {
    fn from(e: &EngineConfig) -> Self {
        ActorsConfig {
            prefetch: e.actor_prefetch,
            restart_limit: e.restart_limit,
            restart_window: Dur(e.restart_window),
        }
    }
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig::from(&EngineConfig::default())
    }
}

/// `[retention]` (see [`Retention`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct RetentionConfig {
    pub enabled: bool,
    pub delivered_after: Dur,
    pub failed_after: Dur,
    pub interval: Dur,
    pub batch_size: u32,
}

impl From<&Retention> for RetentionConfig {
    fn from(r: &Retention) -> Self {
        RetentionConfig {
            enabled: r.enabled,
            delivered_after: Dur(r.delivered_after),
            failed_after: Dur(r.failed_after),
            interval: Dur(r.interval),
            batch_size: r.batch_size,
        }
    }
}

impl From<&RetentionConfig> for Retention {
    fn from(r: &RetentionConfig) -> Self {
        Retention {
            enabled: r.enabled,
            delivered_after: r.delivered_after.0,
            failed_after: r.failed_after.0,
            interval: r.interval.0,
            batch_size: r.batch_size,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig::from(&Retention::default())
    }
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum MetricsAuth {
    /// The admin key, as `Authorization: Bearer`.
    Admin,
    /// Anyone who can reach the listener.
    None,
}

/// `[metrics]` (see [`MetricsSettings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct MetricsConfig {
    pub auth: MetricsAuth,
    pub max_subscription_labels: usize,
}

impl From<&MetricsSettings> for MetricsConfig {
    fn from(m: &MetricsSettings) -> Self {
        MetricsConfig {
            auth: if m.require_admin {
                MetricsAuth::Admin
            } else {
                MetricsAuth::None
            },
            max_subscription_labels: m.max_subscription_labels,
        }
    }
}

impl From<&MetricsConfig> for MetricsSettings {
    fn from(m: &MetricsConfig) -> Self {
        MetricsSettings {
            require_admin: m.auth == MetricsAuth::Admin,
            max_subscription_labels: m.max_subscription_labels,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig::from(&MetricsSettings::default())
    }
}

/// `[transforms]` (see [`TransformLimits`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(super) struct TransformsConfig {
    pub max_module_bytes: usize,
    pub memory_bytes: usize,
    pub cpu: Dur,
    pub max_output_bytes: usize,
    pub max_concurrent_calls: u32,
}

impl From<&TransformLimits> for TransformsConfig {
    fn from(l: &TransformLimits) -> Self {
        TransformsConfig {
            max_module_bytes: l.module_bytes,
            memory_bytes: l.memory_bytes,
            cpu: Dur(l.cpu),
            max_output_bytes: l.output_bytes,
            max_concurrent_calls: l.max_concurrent_calls,
        }
    }
}

impl From<&TransformsConfig> for TransformLimits {
    /// The limits the file sets; the ones it has no key for keep their defaults.
    fn from(t: &TransformsConfig) -> Self {
        TransformLimits {
            module_bytes: t.max_module_bytes,
            memory_bytes: t.memory_bytes,
            cpu: t.cpu.0,
            output_bytes: t.max_output_bytes,
            max_concurrent_calls: t.max_concurrent_calls,
            ..TransformLimits::default()
        }
    }
}

impl Default for TransformsConfig {
    fn default() -> Self {
        TransformsConfig::from(&TransformLimits::default())
    }
}

/// A duration written as text: `500ms`, `10s`, `5m`, `1h`, `7d`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration like \"500ms\", \"10s\" or \"7d\" ({e})"
                ))
            })
    }
}

/// A list given as a TOML array or as one comma-separated string (the environment's form).
pub(super) fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(l) => l,
        Form::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::ConfigSources;
    use super::super::layers::{self, OPTIONAL_KEYS, flatten, key_types};
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(ServerConfig::EXAMPLE)
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let (parsed, _) = layers::read(&ConfigSources {
            file: Some(example_path()),
            ..ConfigSources::default()
        })
        .expect("the example parses");
        assert_eq!(parsed, ServerFile::default(), "example values drifted");
        ServerConfig::from_file(&example_path()).expect("the example is valid");
        // Equal values are not enough: a key missing from the example would take its default.
        let text = std::fs::read_to_string(example_path()).expect("read example");
        let table: toml::Table = text.parse().expect("toml");
        let mut listed = BTreeMap::new();
        flatten("", &table, &mut listed);
        let mut expected = key_types();
        for k in OPTIONAL_KEYS {
            expected.remove(k);
            // A key of a table (`notifications.secret`) is documented inside its table.
            let own = k.rsplit('.').next().unwrap_or(k);
            assert!(
                text.contains(&format!("# {own} = ")),
                "optional key {k} is not documented (commented out) in the example"
            );
        }
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "the example must list every key with a default"
        );
    }

    #[test]
    fn defaults_render_the_engines_own() {
        let file = ServerFile::default();
        let engine = EngineConfig::default();
        assert_eq!(file.delivery.timeout.0, engine.default_timeout);
        assert_eq!(file.journal.intake_queue, engine.intake_queue);
        assert_eq!(file.actors.prefetch, engine.actor_prefetch);
        assert_eq!(Durability::from(file.durability), engine.durability);
        assert_eq!(Retention::from(&file.retention), engine.retention);
        assert_eq!(MetricsSettings::from(&file.metrics), engine.metrics);
        assert_eq!(
            TransformLimits::from(&file.transforms),
            engine.transform_limits
        );
        assert_eq!(file.listen, "127.0.0.1:8080");
    }

    #[test]
    fn durations_read_humantime_and_name_the_bad_text() {
        let d: Dur = toml::Value::String("1h 30m".into())
            .try_into()
            .expect("a duration");
        assert_eq!(d.0, Duration::from_secs(5400));
        let d: Dur = toml::Value::String(" 500ms ".into())
            .try_into()
            .expect("trimmed");
        assert_eq!(d.0, Duration::from_millis(500));
        let e = Dur::deserialize(toml::Value::String("soon".into())).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("\"soon\" is not a duration like \"500ms\", \"10s\" or \"7d\""),
            "{e}"
        );
        assert!(Dur::deserialize(toml::Value::Integer(5)).is_err());
        let text = toml::Value::try_from(Dur(Duration::from_secs(7 * 86_400))).expect("ser");
        assert_eq!(text.as_str(), Some("7days"));
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_text() {
        #[derive(Deserialize)]
        struct L {
            #[serde(deserialize_with = "list_or_csv")]
            l: Vec<String>,
        }
        let csv: L = toml::from_str("l = \"a, b,,c \"").expect("csv");
        assert_eq!(csv.l, ["a", "b", "c"]);
        let list: L = toml::from_str("l = [\"a\", \" b\"]").expect("list");
        assert_eq!(list.l, ["a", " b"], "array items are kept as written");
    }
}
