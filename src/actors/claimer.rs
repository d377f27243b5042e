//! The claimer: with a shared store, the task that claims due subscriptions for this node and
//! hands their leases to the supervisor.
//!
//! A claim round runs when the store reports a wake for a subscription this node has no actor
//! for (a publish on any node, a release whose queue had work: `LISTEN/NOTIFY` on PostgreSQL)
//! and on a poll, so a wake lost with a connection, or a retry whose due time came, is picked up
//! within the poll interval. The poll is jittered (±25 %) so nodes started together do not
//! claim in lockstep; a round that filled its batch is followed by another at once. Claims
//! skip what another node holds, so nodes racing each get a disjoint part. With an exclusive
//! store the claimer does not run: a wake spawns the subscription's actor.

use std::time::Duration;

use ractor::ActorRef;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::SharedCtx;
use super::supervisor::SupervisorMsg;
use crate::error::Error;

/// The poll interval with ±25 % jitter, from a uniform `unit` in [0, 1).
pub(crate) fn jittered(poll: Duration, unit: f64) -> Duration {
    poll.mul_f64(0.75 + unit.clamp(0.0, 1.0) * 0.5)
}

/// Runs claim rounds until the supervisor is gone or the store is closed.
pub(crate) fn spawn(ctx: SharedCtx, supervisor: ActorRef<SupervisorMsg>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let cluster = &ctx.config.cluster;
        let mut rng = rand::rngs::StdRng::from_os_rng();
        loop {
            let poll = jittered(cluster.poll_interval, rng.random::<f64>());
            tokio::select! {
                () = ctx.claims.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            loop {
                match ctx
                    .store
                    .claim_due(&ctx.node, cluster.claim_batch, ctx.lease_ttl)
                    .await
                {
                    Ok(leases) => {
                        let full = leases.len() >= cluster.claim_batch as usize;
                        if !leases.is_empty() {
                            tracing::debug!(claimed = leases.len(), "claimed subscriptions");
                            if supervisor.cast(SupervisorMsg::Claimed(leases)).is_err() {
                                return;
                            }
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(Error::ShuttingDown) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming due subscriptions failed; retrying at the next poll");
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_is_jittered_within_a_quarter() {
        let poll = Duration::from_millis(1000);
        assert_eq!(jittered(poll, 0.0), Duration::from_millis(750));
        assert_eq!(jittered(poll, 0.5), Duration::from_millis(1000));
        assert!(jittered(poll, 0.999_999) < Duration::from_millis(1250));
        assert_eq!(jittered(poll, 7.0), Duration::from_millis(1250), "clamped");
    }
}
