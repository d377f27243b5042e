//! Where the store lives and how this process takes part in a cluster: [`StoreLocation`] (a
//! SQLite file, or a `postgres://` URL shared by several nodes) and [`ClusterSettings`] (node
//! id, lease TTL, claim poll), parsed once into types.
//!
//! The lease TTL's default, 45 s, is the default attempt timeout (30 s) plus 15 s: a node
//! starts an attempt only if its lease outlives the attempt's timeout plus a 2 s margin, so with
//! a TTL at least that long a busy subscription renews about once per 13 s of sending rather
//! than before every attempt, and a takeover after a crash could not be much faster anyway
//! (nobody may send while the dead node's last attempt may still be running, up to its
//! timeout). A shorter TTL gives a faster takeover only with shorter timeouts; see
//! docs/cluster.md, "Sizing the lease".

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::security::secretbox::Redacted;

/// The store an engine opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The SQLite journal file (created if missing): one process, the embedded default.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by every node of a cluster. The URL may carry a password,
    /// so it is kept redacted and shown without it.
    Postgres(Redacted<String>),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL selects PostgreSQL; anything else is a SQLite
    /// path. `Invalid` (key `db`) for an empty text or a URL without a host.
    pub fn parse(text: &str) -> Result<StoreLocation> {
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::invalid("db", "must not be empty"));
        }
        let lower = t.to_ascii_lowercase();
        let Some(rest) = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
        else {
            return Ok(StoreLocation::Sqlite(PathBuf::from(text)));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() {
            return Err(Error::invalid(
                "db",
                "a PostgreSQL URL needs a host: postgres://user@host:port/database",
            ));
        }
        Ok(StoreLocation::Postgres(Redacted::new(t.to_owned())))
    }

    /// Whether several nodes share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

impl std::fmt::Display for StoreLocation {
    /// The path, or the URL with any password replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(&without_password(url.expose())),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority
        .rsplit_once('@')
        .map(|(info, host)| (info.split_once(':'), host))
    {
        Some((Some((user, _password)), host)) => format!("{scheme}://{user}:***@{host}{tail}"),
        _ => url.to_owned(),
    }
}

/// How this node takes part in a cluster (used only with a shared store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's id in the cluster (`HOOKLINE_NODE_ID`): 1 to 128 visible ASCII characters.
    /// Default: the host name and process id (`host-1234`), unique per process.
    pub node_id: Option<String>,
    /// How long a node holds a subscription without renewing (`HOOKLINE_LEASE_TTL_MS`); a
    /// killed node's subscriptions resume elsewhere within it. Default 45 s (see the module
    /// docs); between 1 s and 1 h.
    pub lease_ttl: Duration,
    /// How often an idle node looks for due subscriptions besides the store's wakes, jittered
    /// ±25 %. Default 1 s.
    pub poll_interval: Duration,
    /// Most subscriptions claimed in one round. Default 32.
    pub claim_batch: u32,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: None,
            lease_ttl: Duration::from_secs(45),
            poll_interval: Duration::from_secs(1),
            claim_batch: 32,
        }
    }
}

impl ClusterSettings {
    /// The node id: the configured one, or the host name and process id.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(default_node_id)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(Error::invalid(
                "nodeId",
                "must be 1 to 128 visible ASCII characters (no spaces)",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.lease_ttl) {
            return Err(Error::invalid(
                "leaseTtlMs",
                "must be between 1000 (1 s) and 3600000 (1 h)",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.poll_interval) {
            return Err(Error::invalid(
                "cluster.pollInterval",
                "must be between 10 ms and 60 s",
            ));
        }
        if !(1..=1000).contains(&self.claim_batch) {
            return Err(Error::invalid(
                "cluster.claimBatch",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

/// `host-pid`: the host name (from the kernel, else `HOSTNAME`, else `hookline`) and the
/// process id, so two processes on one host never share an id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "hookline".to_owned());
    let mut id = format!("{host}-{}", std::process::id());
    id.truncate(128);
    id
}

/// Refuses a configuration that cannot run on a shared store: every node must seal secrets
/// with the one key the cluster uses, so it must be given, not found in a local file.
pub(crate) fn check_shared_key(
    location: &StoreLocation,
    secret_key: bool,
    secret_key_file: bool,
) -> Result<()> {
    if !location.is_shared() {
        return Ok(());
    }
    if secret_key_file {
        return Err(Error::invalid(
            "secretKeyFile",
            "a key file means nothing beside a PostgreSQL URL: every node must use the cluster's key; set HOOKLINE_SECRET_KEY instead",
        ));
    }
    if !secret_key {
        return Err(Error::invalid(
            "secretKey",
            "is required with a PostgreSQL store (db is a postgres:// URL): every node seals subscription secrets with the cluster's one key; set HOOKLINE_SECRET_KEY (base64:… or 64 hex characters) to the same value on every node",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_selects_the_shared_store_and_anything_else_a_file() {
        assert_eq!(
            StoreLocation::parse("data/hookline.db").unwrap(),
            StoreLocation::Sqlite(PathBuf::from("data/hookline.db"))
        );
        for url in [
            "postgres://hl@127.0.0.1:5432/hookline",
            "postgresql://hl:pw@db/hookline?sslmode=disable",
            "POSTGRES://db",
        ] {
            assert!(StoreLocation::parse(url).unwrap().is_shared(), "{url}");
        }
        assert!(StoreLocation::parse("").is_err());
        assert!(matches!(
            StoreLocation::parse("postgres:///hookline"),
            Err(Error::Invalid { field, .. }) if field == "db"
        ));
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let shown = |t: &str| StoreLocation::parse(t).unwrap().to_string();
        assert_eq!(
            shown("postgres://hl:s3cret@db:5432/h?x=1"),
            "postgres://hl:***@db:5432/h?x=1"
        );
        assert_eq!(shown("postgres://hl@db/h"), "postgres://hl@db/h");
        assert_eq!(shown("postgres://db/h"), "postgres://db/h");
        assert!(
            !format!(
                "{:?}",
                StoreLocation::parse("postgres://a:s3cret@b").unwrap()
            )
            .contains("s3cret")
        );
    }

    #[test]
    fn a_shared_store_needs_the_clusters_key_given_not_a_key_file() {
        let pg = StoreLocation::parse("postgres://db/h").unwrap();
        let file = StoreLocation::parse("h.db").unwrap();
        assert!(check_shared_key(&file, false, false).is_ok());
        assert!(check_shared_key(&pg, true, false).is_ok());
        let refused = check_shared_key(&pg, false, false).unwrap_err();
        assert!(
            matches!(&refused, Error::Invalid { field, message } if field == "secretKey" && message.contains("HOOKLINE_SECRET_KEY")),
            "{refused}"
        );
        assert!(matches!(
            check_shared_key(&pg, true, true),
            Err(Error::Invalid { field, .. }) if field == "secretKeyFile"
        ));
    }

    #[test]
    fn cluster_settings_are_checked() {
        assert!(ClusterSettings::default().validate().is_ok());
        let id = default_node_id();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        let bad = |s: ClusterSettings| s.validate().is_err();
        assert!(bad(ClusterSettings {
            node_id: Some("two words".into()),
            ..ClusterSettings::default()
        }));
        assert!(bad(ClusterSettings {
            lease_ttl: Duration::from_millis(999),
            ..ClusterSettings::default()
        }));
        assert!(bad(ClusterSettings {
            claim_batch: 0,
            ..ClusterSettings::default()
        }));
    }
}
