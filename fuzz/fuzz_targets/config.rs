//! `hookline serve`'s configuration: a TOML file and `HOOKLINE_*` environment variables
//! through `ServerConfig::load`, the path the binary takes at start (merge, serde, checks).
//!
//! Input: the file's text, then optionally a NUL byte and `NAME=value` lines of environment.
//! The file is written to a temporary file per input, since `load` reads it by path.
//!
//! Properties: no panic, no unbounded allocation; a refusal names a key or the file and says
//! why; an accepted configuration keeps what its checks promise: the default timeout within a
//! subscription's bounds, positive limits, and delays the engine adds to "now" (the
//! `Retry-After` clamp, the default timeout) that fit the i64 of milliseconds it computes
//! due times in, until year 9999.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hookline::config::server::{ConfigSources, ServerConfig};
use libfuzzer_sys::fuzz_target;

/// The bounds of a subscription's timeout (`SubscriptionSpec`), which the default must meet.
const TIMEOUT_MS: std::ops::RangeInclusive<u128> = 100..=300_000;
/// 9999-12-31T23:59:59Z in milliseconds.
const MAX_NOW_MS: u128 = 253_402_300_799_000;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("hookline-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    let (file, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let env: Vec<(String, String)> = hookline_fuzz::text(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    std::fs::write(path(), file).expect("the temporary directory is writable");
    let sources = ConfigSources {
        file: Some(path().clone()),
        env,
        flags: Vec::new(),
    };
    match ServerConfig::load(&sources) {
        Err(e) => {
            assert!(!e.message.is_empty() && !e.source.is_empty(), "{e:?}");
        }
        Ok(cfg) => {
            let timeout = cfg.engine.default_timeout.as_millis();
            assert!(TIMEOUT_MS.contains(&timeout), "defaultTimeout accepted as {timeout} ms");
            let clamp = cfg.engine.max_retry_after.as_millis();
            assert!(
                MAX_NOW_MS + clamp <= i64::MAX as u128,
                "maxRetryAfter of {clamp} ms overflows a due time"
            );
            assert!(cfg.limits.max_event_bytes > 0 && cfg.limits.max_json_depth > 0);
        }
    }
});
