//! A subscription's retry policy: how many attempts, and the delays between them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a subscription retries retriable failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, first try included (1 to 20; default 4: the seed's first try + 3 retries).
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before each retry, in ms; the last one repeats when attempts outnumber it.
    /// Default `[1000, 10000, 60000]`. A random jitter of up to 10% is added, never subtracted.
    #[serde(default = "RetryPolicy::default_backoff_ms")]
    pub backoff_ms: Vec<u64>,
}

impl RetryPolicy {
    /// Upper bound of `maxAttempts`.
    pub const MAX_ATTEMPTS: u32 = 20;
    /// Upper bound of one backoff delay (one day).
    pub const MAX_BACKOFF_MS: u64 = 86_400_000;

    fn default_max_attempts() -> u32 {
        4
    }

    fn default_backoff_ms() -> Vec<u64> {
        vec![1_000, 10_000, 60_000]
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(Error::invalid(
                "retry.maxAttempts",
                format!("must be between 1 and {}", Self::MAX_ATTEMPTS),
            ));
        }
        if self.backoff_ms.is_empty() || self.backoff_ms.len() > 32 {
            return Err(Error::invalid(
                "retry.backoffMs",
                "must list 1 to 32 delays",
            ));
        }
        if self.backoff_ms.iter().any(|d| *d > Self::MAX_BACKOFF_MS) {
            return Err(Error::invalid(
                "retry.backoffMs",
                format!("delays must be at most {} ms", Self::MAX_BACKOFF_MS),
            ));
        }
        Ok(())
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: Self::default_max_attempts(),
            backoff_ms: Self::default_backoff_ms(),
        }
    }
}
