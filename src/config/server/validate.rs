//! From the file's shape to a [`ServerConfig`]: every text that needs parsing (the listen
//! address, the networks, the proxy, the log filter) is parsed here, once, and every range the
//! engine needs is checked here, once, with the file's key named in the refusal.
//!
//! The engine checks its own settings ([`EngineConfig::validate`]) and names them after its own
//! fields; [`ENGINE_KEYS`] translates those names into this file's keys, so there is one copy of
//! each rule.

use std::net::SocketAddr;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use super::file::ServerFile;
use super::{LogSettings, ServerConfig};
use crate::config::{
    ClusterSettings, EngineConfig, ProxyUrl, StoreLocation, check_shared_key, parse_networks,
};
use crate::error::{Error, Result};

/// The engine's names of its settings → the keys of the server's file.
const ENGINE_KEYS: [(&str, &str); 6] = [
    ("defaultTimeout", "delivery.timeout"),
    ("connectTimeout", "delivery.connectTimeout"),
    ("maxRetryAfter", "delivery.maxRetryAfter"),
    ("restartLimit", "actors.restartLimit"),
    ("commitBatchMax", "journal.commitBatchMax"),
    ("actorPrefetch", "actors.prefetch"),
];

/// Parses a tracing filter (`log.level`, `RUST_LOG`) with each comma-separated directive
/// trimmed first. tracing-subscriber 0.3 walks a directive's trimmed text but slices the
/// untrimmed one, so a directive with leading whitespace is cut at shifted offsets: refused
/// (`warn, hookline=debug`, an ordinary way to write a filter), or a panic at start when the
/// offset lands inside a multi-byte character (found by the `config` fuzz target).
///
/// A span field's value in a directive (`[span{field=value}]`) matches the field's text
/// literally, not as a regular expression: tracing-subscriber compiles such a pattern into an
/// automaton whose size grows exponentially with its wildcards, and a 400-byte `log.level`
/// kept `hookline serve` from starting for 13 s (also found by the `config` fuzz target).
pub fn log_filter(text: &str) -> std::result::Result<EnvFilter, String> {
    let directives: Vec<&str> = text.split(',').map(str::trim).collect();
    EnvFilter::builder()
        .with_regex(false)
        .parse(directives.join(","))
        .map_err(|e| e.to_string())
}

impl ServerFile {
    /// Parses and checks every key; a refusal is [`Error::Invalid`] naming the file's key.
    pub(super) fn validate(self) -> Result<ServerConfig> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            Error::invalid(
                "listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })?;
        let store = StoreLocation::parse(&self.db.to_string_lossy())?;
        check_shared_key(
            &store,
            self.secret_key.is_some(),
            self.secret_key_file.is_some(),
        )?;
        if let Some(k) = &self.admin_key
            && k.expose().len() < 16
        {
            return Err(Error::invalid("adminKey", "must be at least 16 characters"));
        }
        let filter = log_filter(&self.log.level).map_err(|e| Error::invalid("log.level", e))?;
        // The API's limits: the engine does not read them, so its rules do not cover them.
        self.limits.validate()?;
        self.ui.validate()?;
        let notifications = self.notifications.validate()?;
        let engine = self.engine_config()?;
        Ok(ServerConfig {
            listen,
            db: store,
            admin_key: self.admin_key,
            log: LogSettings {
                format: self.log.format,
                filter,
            },
            limits: self.limits,
            ui: self.ui,
            notifications,
            engine,
        })
    }

    /// The engine settings this file describes, checked by the engine's own rules.
    fn engine_config(&self) -> Result<EngineConfig> {
        // A list item may itself hold several comma-separated networks, as the variable does.
        let allow_networks = parse_networks(&self.allow_networks.join(","))?;
        let proxy = self.proxy.as_deref().map(ProxyUrl::parse).transpose()?;
        let config = EngineConfig {
            durability: self.durability.into(),
            default_retry: self.retry.clone(),
            default_timeout: self.delivery.timeout.0,
            connect_timeout: self.delivery.connect_timeout.0,
            max_retry_after: self.delivery.max_retry_after.0,
            restart_limit: self.actors.restart_limit,
            restart_window: self.actors.restart_window.0,
            shutdown_grace: self.shutdown_grace.0,
            allow_networks,
            commit_batch_max: self.journal.commit_batch_max,
            intake_queue: self.journal.intake_queue,
            intake_wait: self.journal.intake_wait.0,
            reader_connections: self.journal.reader_connections,
            actor_prefetch: self.actors.prefetch,
            secret_key: self.secret_key.clone(),
            secret_key_file: self.secret_key_file.clone(),
            proxy,
            tenant_rate_limit: None,
            retention: (&self.retention).into(),
            metrics: (&self.metrics).into(),
            transform_limits: (&self.transforms).into(),
            cluster: ClusterSettings {
                node_id: self.node_id.clone(),
                lease_ttl: Duration::from_millis(self.lease_ttl_ms),
                poll_interval: self.cluster.poll_interval.0,
                claim_batch: self.cluster.claim_batch,
            },
        };
        config.validate().map_err(|e| match e {
            Error::Invalid { field, message } => Error::Invalid {
                field: file_key(&field).to_string(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }
}

/// The file's key for a setting the engine named `field`.
fn file_key(field: &str) -> &str {
    ENGINE_KEYS
        .iter()
        .find(|(engine, _)| *engine == field)
        .map_or(field, |(_, key)| key)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn refusal(edit: impl FnOnce(&mut ServerFile)) -> (String, String) {
        let mut file = ServerFile::default();
        edit(&mut file);
        match file.validate() {
            Err(Error::Invalid { field, message }) => (field, message),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn log_directives_with_spaces_parse_as_written() {
        // The fuzz target's input, reduced: a space before a directive holding a multi-byte
        // character made tracing-subscriber slice inside that character and panic.
        let (key, _) = refusal(|f| f.log.level = "info, mo\u{fffd}=''ry".into());
        assert_eq!(key, "log.level");
        let spaced = log_filter("warn, hookline=debug")
            .expect("valid")
            .to_string();
        let tight = log_filter("warn,hookline=debug")
            .expect("valid")
            .to_string();
        assert_eq!(spaced, tight);
    }

    #[test]
    fn span_field_values_in_log_directives_match_literally() {
        use tracing_subscriber::layer::SubscriberExt;
        let debug_enabled_in = |path: &str| {
            let filter = log_filter("warn,[req{path=a.c}]=debug").expect("valid");
            let subscriber = tracing_subscriber::registry().with(filter);
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::warn_span!("req", path = %path);
                let _in = span.enter();
                tracing::enabled!(tracing::Level::DEBUG)
            })
        };
        assert!(debug_enabled_in("a.c"));
        assert!(
            !debug_enabled_in("abc"),
            "a `.` in a directive is no wildcard"
        );
    }

    #[test]
    fn an_unbounded_retry_after_clamp_is_refused_by_its_key() {
        let (key, message) = refusal(|f| {
            f.delivery.max_retry_after.0 = Duration::from_secs(300_000_000 * 31_557_600);
        });
        assert_eq!(key, "delivery.maxRetryAfter");
        assert!(message.contains("30 days"), "{message}");
    }

    #[test]
    fn the_defaults_validate_into_the_engines_defaults() {
        let c = ServerFile::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(c.listen, ServerConfig::DEFAULT_LISTEN);
        assert_eq!(c.db.to_string(), ServerConfig::DEFAULT_DB);
        let d = EngineConfig::default();
        assert_eq!(c.engine.default_retry, d.default_retry);
        assert_eq!(c.engine.retention, d.retention);
        assert_eq!(c.engine.shutdown_grace, d.shutdown_grace);
        assert_eq!(c.engine.transform_limits, d.transform_limits);
        assert_eq!(c.engine.metrics, d.metrics);
        assert_eq!(c.engine.durability, d.durability);
        assert!(c.engine.allow_networks.is_empty() && c.engine.proxy.is_none());
    }

    #[test]
    fn addresses_networks_and_the_proxy_come_out_parsed() {
        let mut file = ServerFile {
            listen: "[::1]:9000".into(),
            allow_networks: vec!["127.0.0.0/8, ::1".into(), "10.1.2.3".into()],
            proxy: Some("http://10.0.0.5:3128".into()),
            ..ServerFile::default()
        };
        file.delivery.timeout.0 = Duration::from_secs(5);
        let c = file.validate().expect("valid");
        assert_eq!(c.listen, "[::1]:9000".parse::<SocketAddr>().expect("addr"));
        let nets: Vec<String> = c
            .engine
            .allow_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["127.0.0.0/8", "::1/128", "10.1.2.3/32"]);
        let proxy = c.engine.proxy.expect("a proxy");
        assert_eq!(proxy.as_url().port(), Some(3128));
        assert_eq!(c.engine.default_timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_bad_listen_address_is_refused_with_its_text() {
        for bad in ["nowhere", "1.2.3.4", " 127.0.0.1:80", "127.0.0.1:99999"] {
            let (key, message) = refusal(|f| f.listen = bad.into());
            assert_eq!(key, "listen");
            assert_eq!(message, format!("{bad:?} is not an address:port"));
        }
    }

    #[test]
    fn a_bad_network_is_refused_naming_it() {
        let (key, message) = refusal(|f| f.allow_networks = vec!["10.0.0.0/99".into()]);
        assert_eq!(
            (key.as_str(), message.as_str()),
            ("allowNetworks", "\"10.0.0.0/99\" is not a CIDR")
        );
        let (_, message) = refusal(|f| f.allow_networks = vec!["10.0.0.0/8, localhost".into()]);
        assert_eq!(message, "\"localhost\" is not a CIDR");
    }

    #[test]
    fn a_bad_proxy_is_refused() {
        let (key, message) = refusal(|f| f.proxy = Some("ftp://x".into()));
        assert_eq!(key, "proxy");
        assert_eq!(message, "must be an http:// or https:// URL with a host");
    }

    #[test]
    fn engine_refusals_name_the_files_keys() {
        type Case = (fn(&mut ServerFile), &'static str, &'static str);
        let cases: [Case; 6] = [
            (
                |f| f.delivery.timeout.0 = Duration::from_millis(1),
                "delivery.timeout",
                "must be between 100 ms and 300 s",
            ),
            (
                |f| f.delivery.connect_timeout.0 = Duration::ZERO,
                "delivery.connectTimeout",
                "must be positive",
            ),
            (
                |f| f.actors.restart_window.0 = Duration::ZERO,
                "actors.restartLimit",
                "limit and window must be positive",
            ),
            (
                |f| f.journal.reader_connections = 0,
                "journal.commitBatchMax",
                "batch, queue and reader sizes must be positive",
            ),
            (
                |f| f.actors.prefetch = 2000,
                "actors.prefetch",
                "must be between 1 and 1024",
            ),
            (
                |f| f.retention.batch_size = 0,
                "retention.batchSize",
                "must be between 1 and 100000",
            ),
        ];
        for (edit, key, message) in cases {
            assert_eq!(refusal(edit), (key.to_string(), message.to_string()));
        }
    }

    #[test]
    fn server_keys_are_checked_too() {
        assert_eq!(
            refusal(|f| f.db = "".into()),
            ("db".into(), "must not be empty".into())
        );
        assert_eq!(
            refusal(|f| f.admin_key = Some("short".to_string().into())),
            ("adminKey".into(), "must be at least 16 characters".into())
        );
        assert_eq!(
            refusal(|f| f.log.level = "=[".into()),
            ("log.level".into(), "invalid filter directive".into())
        );
    }
}
