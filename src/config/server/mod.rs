//! The server's configuration: one TOML file, `HOOKLINE_*` environment variables and flags,
//! layered in that order (a flag beats the environment, which beats the file, which beats the
//! defaults), validated once into a [`ServerConfig`] before anything starts.
//!
//! - **Keys** are camelCase, grouped in tables (`limits.maxEventBytes`). Every key, with its
//!   default, is in `schemas/config.example.toml`; a test parses that file and checks that it
//!   lists exactly the keys of [`ServerConfig::default`] with exactly their values, so the
//!   documentation cannot drift.
//! - **Environment**: `HOOKLINE_` + the key in SCREAMING_SNAKE_CASE, tables separated by `__`:
//!   `listen` → `HOOKLINE_LISTEN`, `allowNetworks` → `HOOKLINE_ALLOW_NETWORKS`,
//!   `limits.maxEventBytes` → `HOOKLINE_LIMITS__MAX_EVENT_BYTES`. Lists are comma-separated.
//!   Other `HOOKLINE_*` variables are ignored.
//! - **Refusals** name the key and where its value came from (the file, a variable or a
//!   flag); unknown keys in the file are refused too, so a typo does not silently fall back to
//!   a default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Durability, EngineConfig, MetricsSettings, Retention, parse_networks};
use crate::domain::RetryPolicy;
use crate::security::secretbox::Redacted;

/// Every setting of `hookline serve`, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port of the HTTP API. Default `127.0.0.1:8080`.
    pub listen: String,
    /// The SQLite journal file. Default `hookline.db` (in the working directory).
    pub db: PathBuf,
    /// The admin API key (at least 16 characters). Default: generated on first start, printed
    /// once, only its hash stored. Prefer the environment or a flag over the file.
    #[serde(skip_serializing)]
    pub admin_key: Option<Redacted<String>>,
    /// The master key sealing subscription secrets (`base64:…` or 64 hex characters). Default:
    /// a key file `<db>.key` beside the journal.
    #[serde(skip_serializing)]
    pub secret_key: Option<Redacted<String>>,
    /// Where the master key file is kept when `secretKey` is not given (created on first start
    /// if missing). Default: `<db>.key` beside the journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// Outbound HTTP(S) proxy for every delivery. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// CIDRs exempt from the private-address block. Default none.
    #[serde(deserialize_with = "list_or_csv")]
    pub allow_networks: Vec<String>,
    /// Journal durability: `fsync` (default) or `os`.
    pub durability: DurabilityName,
    /// How long a stop lets attempts in flight finish. Default 10 s.
    pub shutdown_grace: Dur,
    /// Logging.
    pub log: LogConfig,
    /// Request size limits of the HTTP API.
    pub limits: Limits,
    /// Retry policy of subscriptions that set none (the same shape as a subscription's `retry`).
    pub retry: RetryPolicy,
    /// Attempt settings.
    pub delivery: DeliveryConfig,
    /// Journal writer and readers.
    pub journal: JournalConfig,
    /// Subscriber actors.
    pub actors: ActorsConfig,
    /// Background pruning of finished events.
    pub retention: RetentionConfig,
    /// `GET /metrics`.
    pub metrics: MetricsConfig,
    /// The sandbox of tenant transforms.
    pub transforms: TransformsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            db: PathBuf::from("hookline.db"),
            admin_key: None,
            secret_key: None,
            secret_key_file: None,
            proxy: None,
            allow_networks: Vec::new(),
            durability: DurabilityName::Fsync,
            shutdown_grace: Dur(engine.shutdown_grace),
            log: LogConfig::default(),
            limits: Limits::default(),
            retry: engine.default_retry.clone(),
            delivery: DeliveryConfig {
                timeout: Dur(engine.default_timeout),
                connect_timeout: Dur(engine.connect_timeout),
                max_retry_after: Dur(engine.max_retry_after),
            },
            journal: JournalConfig {
                commit_batch_max: engine.commit_batch_max,
                intake_queue: engine.intake_queue,
                intake_wait: Dur(engine.intake_wait),
                reader_connections: engine.reader_connections,
            },
            actors: ActorsConfig {
                prefetch: engine.actor_prefetch,
                restart_limit: engine.restart_limit,
                restart_window: Dur(engine.restart_window),
            },
            retention: RetentionConfig::from(&engine.retention),
            metrics: MetricsConfig::from(&engine.metrics),
            transforms: TransformsConfig::from(&engine.transform_limits),
        }
    }
}

/// `durability`: `fsync` or `os` (see [`Durability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityName {
    Fsync,
    Os,
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
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `hookline=debug,warn`, …). Default `info`. `RUST_LOG`, when
    /// set, takes precedence.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[limits]`: request size limits of the HTTP API, read by the API layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest body of a single event (and of any other JSON request). Default 1 MiB.
    pub max_event_bytes: usize,
    /// Largest body of a batch publish. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Most events in one batch publish. Default 1000.
    pub max_batch_events: usize,
    /// Deepest JSON nesting accepted in a request body. Default 64.
    pub max_json_depth: usize,
    /// Time a client has to send a request's headers (also the keep-alive idle timeout).
    /// Default 10 s.
    pub header_read_timeout: Dur,
    /// Time a client has to send a request's body. Default 30 s.
    pub body_read_timeout: Dur,
    /// Most HTTP connections open at once. Default 1024.
    pub max_connections: usize,
}

impl Limits {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        if !(1024..=1 << 30).contains(&self.max_event_bytes) {
            return Err(Error::invalid(
                "limits.maxEventBytes",
                "must be between 1 KiB and 1 GiB",
            ));
        }
        if !(self.max_event_bytes..=1 << 30).contains(&self.max_batch_bytes) {
            return Err(Error::invalid(
                "limits.maxBatchBytes",
                "must be between limits.maxEventBytes and 1 GiB",
            ));
        }
        if !(1..=100_000).contains(&self.max_batch_events) {
            return Err(Error::invalid(
                "limits.maxBatchEvents",
                "must be between 1 and 100000",
            ));
        }
        if !(2..=1024).contains(&self.max_json_depth) {
            return Err(Error::invalid(
                "limits.maxJsonDepth",
                "must be between 2 and 1024",
            ));
        }
        if self.header_read_timeout.0.is_zero() || self.body_read_timeout.0.is_zero() {
            return Err(Error::invalid(
                "limits",
                "headerReadTimeout and bodyReadTimeout must be positive",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid(
                "limits.maxConnections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_batch_events: 1000,
            max_json_depth: 64,
            header_read_timeout: Dur(std::time::Duration::from_secs(10)),
            body_read_timeout: Dur(std::time::Duration::from_secs(30)),
            max_connections: 1024,
        }
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempt timeout of subscriptions that set no `timeoutMs`. Default 30 s.
    pub timeout: Dur,
    /// TCP connect timeout of every attempt. Default 10 s.
    pub connect_timeout: Dur,
    /// Longest `Retry-After` honoured. Default 1 h.
    pub max_retry_after: Dur,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        ServerConfig::default().delivery
    }
}

/// `[journal]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Most operations grouped into one commit. Default 1024.
    pub commit_batch_max: usize,
    /// Operations that may wait for the writer before publishers wait. Default 8192.
    pub intake_queue: usize,
    /// How long a publish waits for room in a full intake queue before it is refused with
    /// 429. Default 1 s.
    pub intake_wait: Dur,
    /// Read-only connections. Default 4.
    pub reader_connections: u32,
}

impl Default for JournalConfig {
    fn default() -> Self {
        ServerConfig::default().journal
    }
}

/// `[actors]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// Pending deliveries a subscription's actor holds in memory. Default 32.
    pub prefetch: u32,
    /// Actor failures tolerated within `restartWindow` before the subscription is faulted.
    /// Default 5.
    pub restart_limit: u32,
    /// Default 60 s.
    pub restart_window: Dur,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ServerConfig::default().actors
    }
}

/// `[retention]` (see [`Retention`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Default true.
    pub enabled: bool,
    /// Default 7 days.
    pub delivered_after: Dur,
    /// Default 30 days.
    pub failed_after: Dur,
    /// Default 60 s.
    pub interval: Dur,
    /// Default 500.
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

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig::from(&Retention::default())
    }
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAuth {
    /// The admin key, as `Authorization: Bearer` (the default).
    Admin,
    /// Anyone who can reach the listener.
    None,
}

/// `[metrics]` (see [`MetricsSettings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `admin` (default) or `none`.
    pub auth: MetricsAuth,
    /// Default 50.
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

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig::from(&MetricsSettings::default())
    }
}

/// `[transforms]` (see [`TransformLimits`](crate::transform::TransformLimits)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TransformsConfig {
    /// Largest module accepted at upload. Default 32 MiB.
    pub max_module_bytes: usize,
    /// Linear memory of one call. Default 64 MiB.
    pub memory_bytes: usize,
    /// Time budget of one call, instantiation included. Default 100 ms.
    pub cpu: Dur,
    /// Largest output (body plus headers) of one call. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Calls running at once (the instance pool's size). Default 32.
    pub max_concurrent_calls: u32,
}

impl From<&crate::transform::TransformLimits> for TransformsConfig {
    fn from(l: &crate::transform::TransformLimits) -> Self {
        TransformsConfig {
            max_module_bytes: l.module_bytes,
            memory_bytes: l.memory_bytes,
            cpu: Dur(l.cpu),
            max_output_bytes: l.output_bytes,
            max_concurrent_calls: l.max_concurrent_calls,
        }
    }
}

impl Default for TransformsConfig {
    fn default() -> Self {
        TransformsConfig::from(&crate::transform::TransformLimits::default())
    }
}

impl TransformsConfig {
    fn limits(&self) -> crate::transform::TransformLimits {
        crate::transform::TransformLimits {
            module_bytes: self.max_module_bytes,
            memory_bytes: self.memory_bytes,
            cpu: self.cpu.0,
            output_bytes: self.max_output_bytes,
            max_concurrent_calls: self.max_concurrent_calls,
            ..crate::transform::TransformLimits::default()
        }
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
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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

/// A configuration refused at start: which key, from where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault (`limits.maxEventBytes`), or empty for the file as a whole.
    pub key: String,
    /// Where its value came from: the file, an environment variable or a flag.
    pub source: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(
                f,
                "invalid configuration ({}): {}",
                self.source, self.message
            )
        } else {
            write!(
                f,
                "invalid configuration key `{}` (from {}): {}",
                self.key, self.source, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// The keys that have no default value and so are absent from the serialized defaults.
const OPTIONAL_KEYS: [&str; 4] = ["adminKey", "secretKey", "secretKeyFile", "proxy"];

/// The configuration layers, lowest first.
#[derive(Debug, Default)]
pub struct ConfigSources {
    /// A TOML file (`--config`).
    pub file: Option<PathBuf>,
    /// Environment variables; only `HOOKLINE_*` names that spell a key are read.
    pub env: Vec<(String, String)>,
    /// Flags as (key, value), e.g. `("listen", "0.0.0.0:8080")`.
    pub flags: Vec<(String, String)>,
}

impl ServerConfig {
    /// Loads and validates a configuration from its layers.
    pub fn load(sources: &ConfigSources) -> Result<ServerConfig, ConfigError> {
        let types = key_types();
        let mut table = toml::Table::new();
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        let mut default_origin = "the defaults".to_string();
        if let Some(path) = &sources.file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                key: String::new(),
                source: path.display().to_string(),
                message: format!("cannot read the file: {e}"),
            })?;
            table = text.parse::<toml::Table>().map_err(|e| ConfigError {
                key: String::new(),
                source: path.display().to_string(),
                message: e.to_string(),
            })?;
            default_origin = path.display().to_string();
        }
        let by_env: BTreeMap<String, &String> = types.keys().map(|k| (env_name(k), k)).collect();
        for (name, value) in &sources.env {
            if let Some(key) = by_env.get(name) {
                let v = coerce(key, value, &types).map_err(|message| ConfigError {
                    key: (*key).clone(),
                    source: format!("environment variable {name}"),
                    message,
                })?;
                set_path(&mut table, key, v);
                origin.insert((*key).clone(), format!("environment variable {name}"));
            }
        }
        for (key, value) in &sources.flags {
            let source = format!("flag for `{key}`");
            if !types.contains_key(key) {
                return Err(ConfigError {
                    key: key.clone(),
                    source,
                    message: "no such configuration key".into(),
                });
            }
            let v = coerce(key, value, &types).map_err(|message| ConfigError {
                key: key.clone(),
                source: source.clone(),
                message,
            })?;
            set_path(&mut table, key, v);
            origin.insert(key.clone(), source);
        }
        let source_of = |key: &str| {
            origin
                .iter()
                .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| default_origin.clone())
        };
        let config: ServerConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let message = e.inner().to_string();
                ConfigError {
                    source: source_of(&key),
                    key,
                    message,
                }
            })?;
        config.validate().map_err(|(key, message)| ConfigError {
            source: source_of(&key),
            key,
            message,
        })?;
        Ok(config)
    }

    /// Checks what types alone cannot; names the key at fault.
    fn validate(&self) -> Result<(), (String, String)> {
        self.listen_addr()?;
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if self.db.as_os_str().is_empty() {
            return bad("db", "must not be empty");
        }
        if let Some(k) = &self.admin_key
            && k.expose().len() < 16
        {
            return bad("adminKey", "must be at least 16 characters");
        }
        if let Err(e) = tracing_subscriber_filter_ok(&self.log.level) {
            return bad("log.level", &e);
        }
        // The API's limits: the engine never reads them, so its validation does not see them.
        self.limits.validate().map_err(|e| {
            let key = match &e {
                crate::Error::Invalid { field, .. } => field.clone(),
                _ => "limits".to_string(),
            };
            (key, engine_message(&e))
        })?;
        self.engine_config().map(|_| ())
    }

    /// The API's address.
    pub fn listen_addr(&self) -> Result<SocketAddr, (String, String)> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            (
                "listen".to_string(),
                format!("{:?} is not an address:port", self.listen),
            )
        })
    }

    /// The engine settings this configuration describes.
    pub fn engine_config(&self) -> Result<EngineConfig, (String, String)> {
        let networks = parse_networks(&self.allow_networks.join(","))
            .map_err(|e| ("allowNetworks".to_string(), engine_message(&e)))?;
        let config = EngineConfig {
            durability: match self.durability {
                DurabilityName::Fsync => Durability::Fsync,
                DurabilityName::Os => Durability::Os,
            },
            default_retry: self.retry.clone(),
            default_timeout: self.delivery.timeout.0,
            connect_timeout: self.delivery.connect_timeout.0,
            max_retry_after: self.delivery.max_retry_after.0,
            restart_limit: self.actors.restart_limit,
            restart_window: self.actors.restart_window.0,
            shutdown_grace: self.shutdown_grace.0,
            allow_networks: networks,
            commit_batch_max: self.journal.commit_batch_max,
            intake_queue: self.journal.intake_queue,
            intake_wait: self.journal.intake_wait.0,
            reader_connections: self.journal.reader_connections,
            actor_prefetch: self.actors.prefetch,
            secret_key: self.secret_key.clone(),
            secret_key_file: self.secret_key_file.clone(),
            proxy: self.proxy.clone(),
            tenant_rate_limit: None,
            retention: Retention {
                enabled: self.retention.enabled,
                delivered_after: self.retention.delivered_after.0,
                failed_after: self.retention.failed_after.0,
                interval: self.retention.interval.0,
                batch_size: self.retention.batch_size,
            },
            metrics: MetricsSettings {
                require_admin: self.metrics.auth == MetricsAuth::Admin,
                max_subscription_labels: self.metrics.max_subscription_labels,
            },
            transform_limits: self.transforms.limits(),
        };
        config.validate().map_err(|e| {
            let field = match &e {
                crate::Error::Invalid { field, .. } => field.as_str(),
                _ => "",
            };
            // The engine names its own fields; translate them to this file's keys.
            let key = match field {
                "defaultTimeout" => "delivery.timeout",
                "connectTimeout" => "delivery.connectTimeout",
                "restartLimit" => "actors.restartLimit",
                "commitBatchMax" => "journal.commitBatchMax",
                "actorPrefetch" => "actors.prefetch",
                "secretKey" => "secretKey",
                other => other,
            };
            (key.to_string(), engine_message(&e))
        })?;
        Ok(config)
    }
}

fn engine_message(e: &crate::Error) -> String {
    match e {
        crate::Error::Invalid { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn tracing_subscriber_filter_ok(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Every key with the TOML type of its default (optional keys are strings).
fn key_types() -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(ServerConfig::default()) {
        flatten("", &t, &mut out);
    }
    for k in OPTIONAL_KEYS {
        out.insert(k.to_string(), toml::Value::String(String::new()));
    }
    out
}

/// The dotted keys of a table (with their values), tables themselves excluded.
pub fn flatten(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => flatten(&key, sub, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// `limits.maxEventBytes` → `HOOKLINE_LIMITS__MAX_EVENT_BYTES`.
pub fn env_name(key: &str) -> String {
    let mut out = String::from("HOOKLINE_");
    for (i, part) in key.split('.').enumerate() {
        if i > 0 {
            out.push_str("__");
        }
        for (j, c) in part.chars().enumerate() {
            if c.is_ascii_uppercase() && j > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}

/// Reads a raw string (environment or flag) as the TOML type of the key's default.
fn coerce(
    key: &str,
    raw: &str,
    types: &BTreeMap<String, toml::Value>,
) -> Result<toml::Value, String> {
    let scalar = |like: &toml::Value, s: &str| -> Result<toml::Value, String> {
        match like {
            toml::Value::Integer(_) => s
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| format!("{s:?} is not an integer")),
            toml::Value::Boolean(_) => match s.trim() {
                "true" => Ok(toml::Value::Boolean(true)),
                "false" => Ok(toml::Value::Boolean(false)),
                _ => Err(format!("{s:?} is not true or false")),
            },
            _ => Ok(toml::Value::String(s.to_string())),
        }
    };
    match types.get(key) {
        Some(toml::Value::Array(items)) => {
            let like = items
                .first()
                .cloned()
                .unwrap_or(toml::Value::String(String::new()));
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| scalar(&like, s))
                .collect::<Result<Vec<_>, _>>()
                .map(toml::Value::Array)
        }
        Some(like) => scalar(like, raw),
        None => Err("no such configuration key".into()),
    }
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert(last.to_string(), value);
}

impl ServerConfig {
    /// The path of the example configuration, relative to the crate root.
    pub const EXAMPLE: &'static str = "schemas/config.example.toml";

    /// Reads a configuration from a file alone (no environment, no flags).
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        ServerConfig::load(&ConfigSources {
            file: Some(path.to_owned()),
            ..ConfigSources::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(ServerConfig::EXAMPLE)
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let parsed = ServerConfig::from_file(&example_path()).expect("the example parses");
        assert_eq!(parsed, ServerConfig::default(), "example values drifted");
        // Equal values are not enough: a key missing from the example would take its default.
        let text = std::fs::read_to_string(example_path()).expect("read example");
        let table: toml::Table = text.parse().expect("toml");
        let mut listed = BTreeMap::new();
        flatten("", &table, &mut listed);
        let mut expected = key_types();
        for k in OPTIONAL_KEYS {
            expected.remove(k);
            assert!(
                text.contains(&format!("# {k} = ")),
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
    fn defaults_are_valid_and_match_the_engine() {
        let c = ServerConfig::load(&ConfigSources::default()).expect("defaults load");
        assert_eq!(c, ServerConfig::default());
        let e = c.engine_config().expect("engine config");
        let d = EngineConfig::default();
        assert_eq!(e.default_retry, d.default_retry);
        assert_eq!(e.retention, d.retention);
        assert_eq!(e.shutdown_grace, d.shutdown_grace);
    }

    #[test]
    fn env_names_follow_the_keys() {
        assert_eq!(env_name("listen"), "HOOKLINE_LISTEN");
        assert_eq!(env_name("allowNetworks"), "HOOKLINE_ALLOW_NETWORKS");
        assert_eq!(env_name("adminKey"), "HOOKLINE_ADMIN_KEY");
        assert_eq!(
            env_name("limits.maxEventBytes"),
            "HOOKLINE_LIMITS__MAX_EVENT_BYTES"
        );
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1111\"\ndb = \"file.db\"\ndurability = \"os\"\n\
             [limits]\nmaxEventBytes = 2048\nmaxBatchEvents = 7\n",
        )
        .expect("write");
        let sources = ConfigSources {
            file: Some(file),
            env: env(&[
                ("HOOKLINE_LISTEN", "127.0.0.1:2222"),
                ("HOOKLINE_DB", "env.db"),
                ("HOOKLINE_LIMITS__MAX_EVENT_BYTES", "4096"),
                ("HOOKLINE_ALLOW_NETWORKS", "127.0.0.0/8, ::1"),
                ("HOOKLINE_RETRY__BACKOFF_MS", "5,6"),
                ("HOOKLINE_SOMETHING_ELSE", "ignored"),
            ]),
            flags: vec![("listen".into(), "127.0.0.1:3333".into())],
        };
        let c = ServerConfig::load(&sources).expect("loads");
        assert_eq!(c.listen, "127.0.0.1:3333", "flag wins");
        assert_eq!(c.db, PathBuf::from("env.db"), "env beats file");
        assert_eq!(c.limits.max_event_bytes, 4096, "env beats file in a table");
        assert_eq!(c.limits.max_batch_events, 7, "file beats default");
        assert_eq!(c.durability, DurabilityName::Os);
        assert_eq!(c.allow_networks, vec!["127.0.0.0/8", "::1"]);
        assert_eq!(c.retry.backoff_ms, vec![5, 6]);
        assert_eq!(c.retry.max_attempts, 4, "untouched keys keep defaults");
    }

    #[test]
    fn refusals_name_the_key_and_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        let check = |text: &str, env_pairs: &[(&str, &str)], key: &str, source: &str| {
            std::fs::write(&file, text).expect("write");
            let err = ServerConfig::load(&ConfigSources {
                file: Some(file.clone()),
                env: env(env_pairs),
                flags: vec![],
            })
            .expect_err(text);
            assert_eq!(err.key, key, "{err}");
            assert!(err.source.contains(source), "{err}");
            assert!(err.to_string().contains(key), "{err}");
        };
        check(
            "[limits]\nmaxEventBytes = \"big\"\n",
            &[],
            "limits.maxEventBytes",
            "c.toml",
        );
        check(
            "[limits]\nmaxEventBytes = 10\n",
            &[],
            "limits.maxEventBytes",
            "c.toml",
        );
        check(
            "[limits]\nmaxEvntBytes = 10\n",
            &[],
            "limits.maxEvntBytes",
            "c.toml",
        );
        check("lisen = \"x\"\n", &[], "lisen", "c.toml");
        check("listen = \"nowhere\"\n", &[], "listen", "c.toml");
        check("durability = \"sometimes\"\n", &[], "durability", "c.toml");
        check(
            "[retention]\ninterval = \"soon\"\n",
            &[],
            "retention.interval",
            "c.toml",
        );
        check(
            "[retry]\nmaxAttempts = 0\n",
            &[],
            "retry.maxAttempts",
            "c.toml",
        );
        check(
            "[delivery]\ntimeout = \"1ms\"\n",
            &[],
            "delivery.timeout",
            "c.toml",
        );
        check(
            "allowNetworks = [\"10.0.0.0/99\"]\n",
            &[],
            "allowNetworks",
            "c.toml",
        );
        check(
            "",
            &[("HOOKLINE_JOURNAL__READER_CONNECTIONS", "many")],
            "journal.readerConnections",
            "HOOKLINE_JOURNAL__READER_CONNECTIONS",
        );
        check(
            "",
            &[("HOOKLINE_LOG__FORMAT", "xml")],
            "log.format",
            "HOOKLINE_LOG__FORMAT",
        );
    }
}
