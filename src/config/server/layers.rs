//! The layers of `hookline serve`'s settings, lowest first: defaults < the file < `HOOKLINE_*`
//! environment < flags, merged into one TOML table and read as a [`ServerFile`].
//!
//! Environment variables and flags arrive as text; each is read as the TOML type of its key's
//! default (integers, booleans, comma-separated lists, strings), so every layer reaches serde in
//! the same form. [`Origins`] remembers which layer set each key, so a refusal names the key and
//! where its value came from. Only `HOOKLINE_*` names that spell a key are read; a flag naming
//! no key is refused.

use std::collections::BTreeMap;

use super::file::ServerFile;
use super::{ConfigError, ConfigSources};

/// The keys that have no default value and so are absent from the serialized defaults.
pub(super) const OPTIONAL_KEYS: [&str; 6] = [
    "adminKey",
    "secretKey",
    "secretKeyFile",
    "proxy",
    "nodeId",
    "notifications.secret",
];

/// Where each key's value came from.
#[derive(Debug)]
pub(super) struct Origins {
    /// Keys set by the environment or a flag, with the variable or flag that set them.
    by_key: BTreeMap<String, String>,
    /// Every other key: the file when there is one, else the defaults.
    rest: String,
}

impl Origins {
    /// The layer that set `key`, or a key under it (`retry` for `retry.backoffMs` errors).
    pub(super) fn source_of(&self, key: &str) -> String {
        self.by_key
            .iter()
            .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| self.rest.clone())
    }

    /// A refusal of `key`, naming where its value came from.
    pub(super) fn refuse(&self, key: String, message: String) -> ConfigError {
        ConfigError {
            source: self.source_of(&key),
            key,
            message,
        }
    }
}

/// Merges the layers of `sources` and reads them as the file's shape; serde fills the keys no
/// layer sets with their defaults and refuses unknown keys and wrong types.
pub(super) fn read(sources: &ConfigSources) -> Result<(ServerFile, Origins), ConfigError> {
    let (table, origins) = merge(sources)?;
    let file = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        origins.refuse(key, e.inner().to_string())
    })?;
    Ok((file, origins))
}

/// The file's table with the environment and the flags written over it.
fn merge(sources: &ConfigSources) -> Result<(toml::Table, Origins), ConfigError> {
    let types = key_types();
    let mut table = toml::Table::new();
    let mut origins = Origins {
        by_key: BTreeMap::new(),
        rest: "the defaults".to_string(),
    };
    if let Some(path) = &sources.file {
        let refuse = |message: String| ConfigError {
            key: String::new(),
            source: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| refuse(format!("cannot read the file: {e}")))?;
        table = text
            .parse::<toml::Table>()
            .map_err(|e| refuse(e.to_string()))?;
        origins.rest = path.display().to_string();
    }
    let by_env: BTreeMap<String, &String> = types.keys().map(|k| (env_name(k), k)).collect();
    for (name, value) in &sources.env {
        if let Some(key) = by_env.get(name) {
            let source = format!("environment variable {name}");
            let v = coerce(key, value, &types).map_err(|message| ConfigError {
                key: (*key).clone(),
                source: source.clone(),
                message,
            })?;
            set_path(&mut table, key, v);
            origins.by_key.insert((*key).clone(), source);
        }
    }
    for (key, value) in &sources.flags {
        let source = format!("flag for `{key}`");
        let v = coerce(key, value, &types).map_err(|message| ConfigError {
            key: key.clone(),
            source: source.clone(),
            message,
        })?;
        set_path(&mut table, key, v);
        origins.by_key.insert(key.clone(), source);
    }
    Ok((table, origins))
}

/// Every key with the TOML type of its default (optional keys are strings).
pub(super) fn key_types() -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(ServerFile::default()) {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn sources(
        file: Option<PathBuf>,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> ConfigSources {
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ConfigSources {
            file,
            env: pairs(env),
            flags: pairs(flags),
        }
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
    fn text_is_read_as_the_type_of_the_keys_default() {
        let types = key_types();
        let read = |k: &str, v: &str| coerce(k, v, &types);
        assert_eq!(
            read("limits.maxEventBytes", " 2048 "),
            Ok(toml::Value::Integer(2048))
        );
        assert_eq!(
            read("retention.enabled", "false"),
            Ok(toml::Value::Boolean(false))
        );
        assert_eq!(
            read("retry.backoffMs", "5, 6,"),
            Ok(toml::Value::Array(vec![
                toml::Value::Integer(5),
                toml::Value::Integer(6)
            ]))
        );
        assert_eq!(
            read("allowNetworks", "10.0.0.0/8,::1"),
            Ok(toml::Value::Array(vec![
                toml::Value::String("10.0.0.0/8".into()),
                toml::Value::String("::1".into())
            ]))
        );
        assert_eq!(
            read("proxy", "http://p:1"),
            Ok(toml::Value::String("http://p:1".into()))
        );
        assert_eq!(
            read("journal.readerConnections", "many"),
            Err("\"many\" is not an integer".into())
        );
        assert_eq!(
            read("retention.enabled", "yes"),
            Err("\"yes\" is not true or false".into())
        );
        assert_eq!(read("retry", "x"), Err("no such configuration key".into()));
    }

    #[test]
    fn later_layers_overwrite_earlier_ones_and_remember_their_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"file\"\ndb = \"file\"\n[log]\nlevel = \"file\"\n",
        )
        .expect("write");
        let (table, origins) = merge(&sources(
            Some(file.clone()),
            &[
                ("HOOKLINE_LISTEN", "env"),
                ("HOOKLINE_DB", "env"),
                ("HOOKLINE_UNRELATED", "ignored"),
            ],
            &[("listen", "flag")],
        ))
        .expect("merges");
        assert_eq!(table["listen"].as_str(), Some("flag"));
        assert_eq!(table["db"].as_str(), Some("env"));
        assert_eq!(table["log"]["level"].as_str(), Some("file"));
        assert!(!table.contains_key("unrelated"));
        assert_eq!(origins.source_of("listen"), "flag for `listen`");
        assert_eq!(origins.source_of("db"), "environment variable HOOKLINE_DB");
        assert_eq!(origins.source_of("log.level"), file.display().to_string());
        let (_, none) = merge(&ConfigSources::default()).expect("no layers");
        assert_eq!(none.source_of("listen"), "the defaults");
    }

    #[test]
    fn a_flag_without_a_key_and_an_unreadable_file_are_refused() {
        let err = merge(&sources(None, &[], &[("nope", "1")])).expect_err("unknown");
        assert_eq!(
            (err.key.as_str(), err.source.as_str()),
            ("nope", "flag for `nope`")
        );
        assert_eq!(err.message, "no such configuration key");
        let missing = PathBuf::from("/nonexistent/hookline.toml");
        let err = merge(&sources(Some(missing), &[], &[])).expect_err("missing");
        assert_eq!(err.key, "");
        assert!(err.message.starts_with("cannot read the file"), "{err}");
    }
}
