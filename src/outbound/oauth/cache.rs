//! The token cache: one slot per subscription, a single fetch at a time per slot, and the
//! refresh-early rule (see the parent module's docs for the whole contract).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::request::fetch;
use super::{MAX_LIFETIME, MIN_PRUNE_AT, OAuth2Config, OAuthError, lock, refresh_margin};
use crate::security::ssrf::IpPolicy;

/// Client-credentials tokens by subscription id. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub(crate) struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Arc<IpPolicy>,
    slots: Mutex<Slots>,
}

struct Slots {
    map: HashMap<String, Arc<Slot>>,
    /// Map size at which the next insert prunes first.
    prune_at: usize,
}

/// One subscription's token.
#[derive(Default)]
struct Slot {
    /// Held only while fetching: the single-flight gate.
    fetch: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Fetches completed (either way); a waiter that sees it move takes that fetch's result.
    fetches: u64,
    token: Option<Cached>,
    /// The last fetch's error, shared with the callers that waited for it.
    failure: Option<Failure>,
}

struct Cached {
    cfg: OAuth2Config,
    token: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

struct Failure {
    cfg: OAuth2Config,
    error: OAuthError,
}

impl SlotState {
    /// The cached token, if it was fetched with exactly this configuration.
    fn token_for(&self, cfg: &OAuth2Config) -> Option<&Cached> {
        self.token.as_ref().filter(|c| c.cfg == *cfg)
    }

    fn is_live(&self, now: Instant) -> bool {
        self.token.as_ref().is_some_and(|c| now < c.expires_at)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("subscriptions", &lock(&self.inner.slots).map.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache whose token URLs must satisfy `policy` (the engine's SSRF policy).
    pub(crate) fn new(policy: Arc<IpPolicy>) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                policy,
                slots: Mutex::new(Slots {
                    map: HashMap::new(),
                    prune_at: MIN_PRUNE_AT,
                }),
            }),
        }
    }

    /// A token for subscription `key`: the cached one while it is fresh, otherwise a new one
    /// fetched with `client` (one fetch per key at a time; see the module docs).
    pub(crate) async fn token(
        &self,
        key: &str,
        cfg: &OAuth2Config,
        client: &reqwest::Client,
    ) -> Result<Arc<str>, OAuthError> {
        let slot = self.slot(key);
        let seen = {
            let st = lock(&slot.state);
            if let Some(c) = st.token_for(cfg)
                && Instant::now() < c.refresh_at
            {
                return Ok(Arc::clone(&c.token));
            }
            st.fetches
        };

        let _fetching = slot.fetch.lock().await;
        {
            let st = lock(&slot.state);
            let now = Instant::now();
            // A fetch that completed while we waited started after we asked: its result is as
            // fresh as one of our own, so take it (even a token already inside its margin).
            let fetched_meanwhile = st.fetches != seen;
            if let Some(c) = st.token_for(cfg)
                && (now < c.refresh_at || (fetched_meanwhile && now < c.expires_at))
            {
                return Ok(Arc::clone(&c.token));
            }
            if fetched_meanwhile
                && let Some(f) = &st.failure
                && f.cfg == *cfg
            {
                return Err(f.error.clone());
            }
        }

        // Lifetimes count from before the request: the server's clock started no earlier.
        let sent_at = Instant::now();
        let result = fetch(cfg, client, &self.inner.policy).await;
        let mut st = lock(&slot.state);
        st.fetches += 1;
        match result {
            Ok(issued) => {
                let lifetime = issued.lifetime.min(MAX_LIFETIME);
                let expires_at = sent_at.checked_add(lifetime).unwrap_or(sent_at);
                let refresh_at = sent_at
                    .checked_add(lifetime.saturating_sub(refresh_margin(lifetime)))
                    .unwrap_or(sent_at);
                tracing::debug!(
                    subscription = key,
                    lifetime_s = lifetime.as_secs(),
                    "fetched an OAuth2 token"
                );
                st.token = Some(Cached {
                    cfg: cfg.clone(),
                    token: Arc::clone(&issued.token),
                    refresh_at,
                    expires_at,
                });
                st.failure = None;
                Ok(issued.token)
            }
            Err(error) => {
                st.failure = Some(Failure {
                    cfg: cfg.clone(),
                    error: error.clone(),
                });
                if let Some(c) = st.token_for(cfg)
                    && Instant::now() < c.expires_at
                {
                    tracing::warn!(
                        subscription = key,
                        error = %error,
                        "OAuth2 token refresh failed; using the current token until it expires"
                    );
                    return Ok(Arc::clone(&c.token));
                }
                Err(error)
            }
        }
    }

    /// Drops `key`'s cached token if it is still `token` (the one a receiver just answered 401
    /// to). A token fetched since by someone else is kept.
    pub(crate) fn invalidate(&self, key: &str, token: &str) {
        let slot = lock(&self.inner.slots).map.get(key).cloned();
        if let Some(slot) = slot {
            let mut st = lock(&slot.state);
            if st.token.as_ref().is_some_and(|c| &*c.token == token) {
                st.token = None;
            }
        }
    }

    /// Forgets `key` entirely (the subscription was deleted or stopped using OAuth2).
    pub(crate) fn forget(&self, key: &str) {
        lock(&self.inner.slots).map.remove(key);
    }

    /// Drops every entry with no live token that no caller is using.
    #[cfg_attr(not(test), allow(dead_code))] // forget() covers deletions; prune() is for sweeps
    pub(crate) fn prune(&self) {
        let mut slots = lock(&self.inner.slots);
        prune_slots(&mut slots.map);
    }

    /// The key's slot, created on first use.
    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.map.get(key) {
            return Arc::clone(slot);
        }
        if slots.map.len() >= slots.prune_at {
            prune_slots(&mut slots.map);
            // Doubling keeps pruning amortised O(1) per insert.
            slots.prune_at = (slots.map.len() * 2).max(MIN_PRUNE_AT);
        }
        let slot = Arc::new(Slot::default());
        slots.map.insert(key.to_owned(), Arc::clone(&slot));
        slot
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.inner.slots).map.len()
    }
}

/// Removes slots that hold no live token and that nobody else holds. Called with the map locked,
/// so no new holder can appear while a slot's count is read.
fn prune_slots(map: &mut HashMap<String, Arc<Slot>>) {
    let now = Instant::now();
    map.retain(|_, slot| Arc::strong_count(slot) > 1 || lock(&slot.state).is_live(now));
}
