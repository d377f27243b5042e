//! The server's configuration: one TOML file, `HOOKLINE_*` environment variables and flags,
//! layered in that order (a flag beats the environment, which beats the file, which beats the
//! defaults), parsed and checked once into a [`ServerConfig`] before anything starts.
//!
//! - **Keys** are camelCase, grouped in tables (`limits.maxEventBytes`). Every key, with its
//!   default, is in `schemas/config.example.toml`; a test parses that file and checks that it
//!   lists exactly the keys of the defaults with exactly their values, so the documentation
//!   cannot drift.
//! - **Environment**: `HOOKLINE_` + the key in SCREAMING_SNAKE_CASE, tables separated by `__`:
//!   `listen` → `HOOKLINE_LISTEN`, `allowNetworks` → `HOOKLINE_ALLOW_NETWORKS`,
//!   `limits.maxEventBytes` → `HOOKLINE_LIMITS__MAX_EVENT_BYTES`. Lists are comma-separated.
//!   Other `HOOKLINE_*` variables are ignored.
//! - **Refusals** name the key and where its value came from (the file, a variable or a
//!   flag); unknown keys in the file are refused too, so a typo does not silently fall back to
//!   a default.
//!
//! The stages, one file each: `layers` merges the sources into one table and remembers each
//! key's origin; `file` is the TOML shape serde reads it into (names, types, durations);
//! `validate` parses what is still text (addresses, networks, the proxy, the log filter) and
//! checks ranges, producing a [`ServerConfig`] whose fields are typed. Nothing after `load`
//! parses a setting again. Defaults: the engine's come from [`EngineConfig::default`], the
//! server's own from the `ServerConfig::DEFAULT_*` constants (which the binary's help texts
//! and the client's `--url` default use too).

mod file;
mod layers;
mod limits;
mod notifications;
mod ui;
mod validate;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use tracing_subscriber::EnvFilter;

use super::{EngineConfig, StoreLocation};
use crate::security::secretbox::Redacted;

pub use file::{Dur, LogFormat};
pub use layers::{env_name, flatten};
pub use limits::Limits;
pub use notifications::NotificationSettings;
pub use ui::UiSettings;
pub use validate::log_filter;

/// Every setting of `hookline serve`, parsed and checked by [`ServerConfig::load`].
#[derive(Debug)]
pub struct ServerConfig {
    /// Address and port of the HTTP API (`listen`). Default [`Self::DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// The store (`db`, also `store`; `HOOKLINE_DB`, `--db`): a SQLite journal file, or a
    /// `postgres://` URL shared by a cluster (which requires `secretKey`). Default
    /// [`Self::DEFAULT_DB`].
    pub db: StoreLocation,
    /// The admin API key (`adminKey`), at least 16 characters. Default: generated on first
    /// start, printed once, only its hash stored.
    pub admin_key: Option<Redacted<String>>,
    /// Logging (`[log]`).
    pub log: LogSettings,
    /// Request limits of the HTTP API (`[limits]`).
    pub limits: Limits,
    /// The dashboard's settings (`[ui]`).
    pub ui: UiSettings,
    /// The operator's receivers of operational notifications (`[notifications]`), checked.
    pub notifications: Vec<crate::notify::NotificationEndpoint>,
    /// The engine's settings (every other key), checked by the engine's own rules.
    pub engine: EngineConfig,
}

/// `[log]`, parsed.
#[derive(Debug)]
pub struct LogSettings {
    /// `log.format`: text (the default) or JSON lines.
    pub format: LogFormat,
    /// `log.level`: the tracing filter. Default [`ServerConfig::DEFAULT_LOG_LEVEL`]. `RUST_LOG`,
    /// when set, takes precedence (the binary decides).
    pub filter: EnvFilter,
}

impl ServerConfig {
    /// Default `listen`: loopback only, so a first start exposes nothing.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    /// Default `db`, in the working directory.
    pub const DEFAULT_DB: &'static str = "hookline.db";
    /// Default `log.level`.
    pub const DEFAULT_LOG_LEVEL: &'static str = "info";
    /// The path of the example configuration, relative to the crate root.
    pub const EXAMPLE: &'static str = "schemas/config.example.toml";

    /// Loads a configuration from its layers: parsed, checked, and every refusal naming the key
    /// and the layer its value came from.
    pub fn load(sources: &ConfigSources) -> Result<ServerConfig, ConfigError> {
        let (file, origins) = layers::read(sources)?;
        file.validate().map_err(|e| match e {
            crate::Error::Invalid { field, message } => origins.refuse(field, message),
            other => origins.refuse(String::new(), other.to_string()),
        })
    }

    /// Reads a configuration from a file alone (no environment, no flags).
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        ServerConfig::load(&ConfigSources {
            file: Some(path.to_owned()),
            ..ConfigSources::default()
        })
    }
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Durability;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_engine() {
        let c = ServerConfig::load(&ConfigSources::default()).expect("defaults load");
        assert_eq!(c.listen, ServerConfig::DEFAULT_LISTEN);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.db, StoreLocation::Sqlite(PathBuf::from("hookline.db")));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.limits, Limits::default());
        let d = EngineConfig::default();
        assert_eq!(c.engine.default_retry, d.default_retry);
        assert_eq!(c.engine.retention, d.retention);
        assert_eq!(c.engine.shutdown_grace, d.shutdown_grace);
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
        assert_eq!(c.listen.to_string(), "127.0.0.1:3333", "flag wins");
        assert_eq!(
            c.db,
            StoreLocation::Sqlite(PathBuf::from("env.db")),
            "env beats file"
        );
        assert_eq!(c.limits.max_event_bytes, 4096, "env beats file in a table");
        assert_eq!(c.limits.max_batch_events, 7, "file beats default");
        assert_eq!(c.engine.durability, Durability::Os);
        let nets: Vec<String> = c
            .engine
            .allow_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, vec!["127.0.0.0/8", "::1/128"]);
        assert_eq!(c.engine.default_retry.backoff_ms, vec![5, 6]);
        assert_eq!(
            c.engine.default_retry.max_attempts, 4,
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn a_postgres_url_selects_the_cluster_and_needs_the_clusters_key() {
        let pg = "postgres://hl:pw@127.0.0.1:5432/hookline";
        let refused = ServerConfig::load(&ConfigSources {
            env: env(&[("HOOKLINE_DB", pg)]),
            ..ConfigSources::default()
        })
        .expect_err("no secret key");
        assert_eq!(refused.key, "secretKey");
        assert!(
            refused.message.contains("HOOKLINE_SECRET_KEY")
                && refused.message.contains("every node"),
            "{refused}"
        );
        assert!(
            !refused.to_string().contains(":pw@"),
            "the URL's password is not shown"
        );
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let c = ServerConfig::load(&ConfigSources {
            env: env(&[
                ("HOOKLINE_DB", pg),
                ("HOOKLINE_SECRET_KEY", key),
                ("HOOKLINE_NODE_ID", "node-a"),
                ("HOOKLINE_LEASE_TTL_MS", "5000"),
                ("HOOKLINE_CLUSTER__POLL_INTERVAL", "200ms"),
            ]),
            ..ConfigSources::default()
        })
        .expect("loads");
        assert!(c.db.is_shared());
        assert_eq!(
            c.db.to_string(),
            "postgres://hl:***@127.0.0.1:5432/hookline"
        );
        assert_eq!(c.engine.cluster.node_id(), "node-a");
        assert_eq!(c.engine.cluster.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.engine.cluster.poll_interval, Duration::from_millis(200));
        // `store` in a file is the same key as `db`.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("store = \"{pg}\"\nsecretKeyFile = \"k\"\n")).expect("write");
        let refused = ServerConfig::load(&ConfigSources {
            file: Some(file),
            ..ConfigSources::default()
        })
        .expect_err("a key file beside a URL");
        assert_eq!(refused.key, "secretKeyFile");
        let short = ServerConfig::load(&ConfigSources {
            env: env(&[("HOOKLINE_LEASE_TTL_MS", "10")]),
            ..ConfigSources::default()
        })
        .expect_err("too short a lease");
        assert_eq!(
            (short.key.as_str(), short.source.as_str()),
            ("leaseTtlMs", "environment variable HOOKLINE_LEASE_TTL_MS")
        );
    }

    #[test]
    fn durations_and_networks_arrive_typed_from_every_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "shutdownGrace = \"1m 30s\"\nallowNetworks = [\"10.0.0.0/8\"]\n\
             [retention]\ndeliveredAfter = \"3d\"\n",
        )
        .expect("write");
        let c = ServerConfig::load(&ConfigSources {
            file: Some(file),
            env: env(&[("HOOKLINE_DELIVERY__TIMEOUT", "250ms")]),
            flags: vec![("journal.intakeWait".into(), "2s".into())],
        })
        .expect("loads");
        assert_eq!(c.engine.shutdown_grace, Duration::from_secs(90));
        assert_eq!(
            c.engine.retention.delivered_after,
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(c.engine.default_timeout, Duration::from_millis(250));
        assert_eq!(c.engine.intake_wait, Duration::from_secs(2));
        assert_eq!(
            c.engine.allow_networks,
            vec!["10.0.0.0/8".parse::<ipnet::IpNet>().expect("net")]
        );
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

    #[test]
    fn refusals_read_in_full() {
        let err = ServerConfig::load(&ConfigSources {
            flags: vec![("listen".into(), "nowhere".into())],
            ..ConfigSources::default()
        })
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid configuration key `listen` (from flag for `listen`): \"nowhere\" is not an address:port"
        );
        let err = ServerConfig::load(&ConfigSources {
            env: env(&[("HOOKLINE_ALLOW_NETWORKS", "127.0.0.1,localhost")]),
            ..ConfigSources::default()
        })
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid configuration key `allowNetworks` (from environment variable \
             HOOKLINE_ALLOW_NETWORKS): \"localhost\" is not a CIDR"
        );
    }
}
