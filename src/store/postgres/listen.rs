//! Wakes from other nodes: `LISTEN hookline_wake`, fed into this node's wake channel; and
//! `LISTEN hookline_tenant_limits`, which tells the engine to read tenants' rate limits again.
//!
//! A publish notifies in its own transaction, so the notification is delivered on commit only
//! (PostgreSQL holds it back until then) and never for a rolled-back publish. The payload is
//! the publishing node's id and the woken subscription ids; a node skips its own (it woke its
//! subscriptions itself after the commit). A wake is a hint: a lost one (the listening
//! connection dropped and sqlx reconnected) costs latency until the next wake or poll, never a
//! delivery; after a reconnect the listener wakes every subscription with open work, and has the
//! tenants' limits read again.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::postgres::PgListener;

use super::{Inner, TENANT_CHANNEL, WAKE_CHANNEL, sql_err};
use crate::domain::SubscriptionId;
use crate::error::Result;

/// Most bytes of one notification's payload (PostgreSQL's limit is 8000).
const PAYLOAD_MAX: usize = 7000;

/// The payloads announcing `subs` from `node`, each under PostgreSQL's size limit.
pub(super) fn payloads<'a>(
    node: &str,
    subs: impl IntoIterator<Item = &'a SubscriptionId>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::from(node);
    for s in subs {
        if cur.len() + 1 + s.as_str().len() > PAYLOAD_MAX && cur.len() > node.len() {
            out.push(std::mem::replace(&mut cur, String::from(node)));
        }
        cur.push(' ');
        cur.push_str(s.as_str());
    }
    if cur.len() > node.len() {
        out.push(cur);
    }
    out
}

/// Starts the listening task (connected and listening before this returns).
pub(super) async fn start(inner: &Arc<Inner>) -> Result<tokio::task::JoinHandle<()>> {
    let mut listener = PgListener::connect_with(&inner.pool)
        .await
        .map_err(sql_err("listen"))?;
    listener
        .listen_all([WAKE_CHANNEL, TENANT_CHANNEL])
        .await
        .map_err(sql_err("listen"))?;
    // The task holds the store's state weakly: dropping the store ends it.
    let weak = Arc::downgrade(inner);
    Ok(tokio::spawn(async move {
        loop {
            let next = listener.try_recv().await;
            let Some(inner) = weak.upgrade() else { return };
            match next {
                Ok(Some(n)) if n.channel() == TENANT_CHANNEL => {
                    inner.tenant_limits.send_modify(|v| *v = v.wrapping_add(1));
                }
                Ok(Some(n)) => {
                    let mut words = n.payload().split(' ');
                    if words.next() == Some(inner.node.as_str()) {
                        continue;
                    }
                    let subs: HashSet<SubscriptionId> = words.map(SubscriptionId::from).collect();
                    inner.wakes.wake(subs);
                }
                // The connection was lost and is being re-established: notifications sent
                // meanwhile are gone, so every subscription with open work is woken.
                Ok(None) => {
                    inner.tenant_limits.send_modify(|v| *v = v.wrapping_add(1));
                    match super::queue::open_subscriptions(&inner.pool).await {
                        Ok(subs) => inner.wakes.wake(subs.into_iter().collect()),
                        Err(e) => {
                            tracing::warn!(error = %e, "wake listener: reconnect sweep failed")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wake listener: PostgreSQL unreachable; retrying");
                    drop(inner);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_carry_every_subscription() {
        let subs: Vec<SubscriptionId> = (0..1000)
            .map(|i| SubscriptionId::from(format!("sub_{i:030}")))
            .collect();
        let p = payloads("node-a", &subs);
        assert!(p.len() > 1);
        assert!(
            p.iter()
                .all(|s| s.len() <= PAYLOAD_MAX && s.starts_with("node-a "))
        );
        let back: Vec<&str> = p.iter().flat_map(|s| s.split(' ').skip(1)).collect();
        assert_eq!(back.len(), 1000);
        assert!(payloads("node-a", &[]).is_empty());
    }
}
