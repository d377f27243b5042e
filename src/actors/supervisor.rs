//! The supervisor: registry, wake routing and restart policy of subscriber actors.
//!
//! - **Spawn on demand.** A subscriber actor is spawned the first time its subscription is woken
//!   (a publish, recovery at start, or an operator command), so idle subscriptions cost no actor.
//! - **Coalesced wakes.** Each child has a flag shared with it: a wake is sent only if the flag was
//!   clear, and the child clears it when it handles the wake, so a burst of publishes leaves at
//!   most one `Wake` in a child's mailbox.
//! - **Claims (shared store).** A wake for a subscription without an actor asks the claimer for
//!   a claim round instead of spawning (another node may hold it); claimed leases arrive as
//!   [`SupervisorMsg::Claimed`] and go to the subscription's actor, spawned if needed. An actor
//!   that gave its lease up reports [`SupervisorMsg::Idle`] and is stopped, unless a newer
//!   lease was handed to it meanwhile (counted per child, so a release racing a claim never
//!   strands a lease in a stopping actor).
//! - **Restarts.** A child that fails (error or panic) is respawned after an exponential backoff;
//!   its queue is rebuilt from the journal, so nothing is lost or reordered. More than
//!   `restart_limit` failures within `restart_window` mark the subscription faulted instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use super::SharedCtx;
use super::subscriber::{Start, SubscriberActor, SubscriberArgs, SubscriberMsg};
use crate::domain::SubscriptionId;
use crate::error::{Error, Result};
use crate::store::{FlagChange, Lease, Tenure};

/// Messages of the supervisor.
pub(crate) enum SupervisorMsg {
    /// These subscriptions have new deliveries.
    Wake(Vec<SubscriptionId>),
    /// The actor of a subscription, spawned if needed (fails if the subscription does not exist).
    Get(
        SubscriptionId,
        RpcReplyPort<Result<ActorRef<SubscriberMsg>>>,
    ),
    /// Leases the claimer took for this node (shared store).
    Claimed(Vec<Lease>),
    /// A child gave its lease up (or lost it) and has nothing in flight; `grants` is how many
    /// claimed leases and commands it had received, to tell whether another is on its way to
    /// it (a command takes the lease again: stopping the child then would leave the lease held
    /// by nobody until it expires).
    Idle {
        sub: SubscriptionId,
        actor: ActorId,
        grants: u64,
    },
    /// Drain every child; answered when all have stopped.
    Shutdown(RpcReplyPort<()>),
    /// Number of live children (for tests and metrics).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    Count(RpcReplyPort<usize>),
}

pub(crate) struct Supervisor;

struct Child {
    actor: ActorRef<SubscriberMsg>,
    wake: Arc<AtomicBool>,
    /// Claimed leases handed to this child (its start included).
    grants: u64,
}

pub(crate) struct SupervisorState {
    ctx: SharedCtx,
    children: HashMap<SubscriptionId, Child>,
    by_actor: HashMap<ActorId, SubscriptionId>,
    failures: HashMap<SubscriptionId, VecDeque<Instant>>,
    shutdown: Option<RpcReplyPort<()>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SharedCtx;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: SharedCtx,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            failures: HashMap::new(),
            shutdown: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Wake(subs) => {
                if state.shutdown.is_some() {
                    return Ok(());
                }
                let shared = state.ctx.tenure == Tenure::Shared;
                let mut unheld = false;
                for sub in subs {
                    if let Some(child) = state.children.get(&sub) {
                        if !child.wake.swap(true, Ordering::AcqRel) {
                            let _ = child.actor.cast(SubscriberMsg::Wake);
                        }
                    } else if shared {
                        unheld = true;
                    } else if let Err(e) = state
                        .spawn(&myself, sub.clone(), Duration::ZERO, Start::Acquire)
                        .await
                    {
                        tracing::debug!(subscription = %sub, error = %e, "not spawning subscriber");
                    }
                }
                if unheld {
                    state.ctx.claims.notify_one();
                }
            }
            SupervisorMsg::Claimed(leases) => {
                for lease in leases {
                    state.grant(&myself, lease).await;
                }
            }
            SupervisorMsg::Idle { sub, actor, grants } => {
                if state
                    .children
                    .get(&sub)
                    .is_some_and(|c| c.actor.get_id() == actor && c.grants == grants)
                    && let Some(child) = state.children.remove(&sub)
                {
                    // `by_actor` keeps it until its termination is reported.
                    child.actor.stop(Some("idle".into()));
                }
            }
            SupervisorMsg::Get(sub, reply) => {
                let result = if state.shutdown.is_some() {
                    Err(Error::ShuttingDown)
                } else if let Some(child) = state.children.get_mut(&sub) {
                    // A command is on its way to this child, which takes the lease for it: an
                    // `Idle` the child sent before it gets the command is stale.
                    child.grants += 1;
                    Ok(child.actor.clone())
                } else {
                    state
                        .spawn(&myself, sub, Duration::ZERO, Start::ForCommand)
                        .await
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Shutdown(reply) => {
                for child in state.children.values() {
                    let _ = child.actor.cast(SubscriberMsg::Drain);
                }
                if state.children.is_empty() {
                    let _ = reply.send(());
                } else {
                    state.shutdown = Some(reply);
                }
            }
            SupervisorMsg::Count(reply) => {
                let _ = reply.send(state.children.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(sub) = state.forget(cell.get_id()) {
                    tracing::debug!(subscription = %sub, ?reason, "subscriber stopped");
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(sub) = state.forget(cell.get_id()) {
                    tracing::error!(subscription = %sub, error = %err, "subscriber actor failed");
                    if state.shutdown.is_none() {
                        state.restart(&myself, sub, err.to_string()).await;
                    }
                }
            }
            _ => {}
        }
        if state.children.is_empty()
            && let Some(reply) = state.shutdown.take()
        {
            let _ = reply.send(());
        }
        Ok(())
    }
}

impl SupervisorState {
    /// Hands a claimed lease to its subscription's actor, spawning one if needed; a lease that
    /// cannot be used (shutting down, subscription gone) is released at once.
    async fn grant(&mut self, myself: &ActorRef<SupervisorMsg>, lease: Lease) {
        let sub = lease.subscription().clone();
        if self.shutdown.is_none() {
            if let Some(child) = self.children.get_mut(&sub) {
                child.grants += 1;
                if child
                    .actor
                    .cast(SubscriberMsg::Leased(lease.clone()))
                    .is_ok()
                {
                    return;
                }
                self.children.remove(&sub);
            }
            let start = Start::Claimed(lease.clone());
            match self.spawn(myself, sub.clone(), Duration::ZERO, start).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(subscription = %sub, error = %e, "claimed subscription not started")
                }
            }
        }
        // The pace it carries goes back as it came (a little stricter than needed).
        let pace = lease.pace_ahead();
        if let Err(e) = self.ctx.store.release(&lease, Duration::ZERO, pace).await {
            tracing::debug!(subscription = %sub, error = %e, "could not release a claimed lease");
        }
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sub: SubscriptionId,
        start_delay: Duration,
        start: Start,
    ) -> Result<ActorRef<SubscriberMsg>> {
        let wake = Arc::new(AtomicBool::new(false));
        // The child counts the grant (or the command) when it receives it.
        let grants = u64::from(matches!(start, Start::Claimed(_) | Start::ForCommand));
        let args = SubscriberArgs {
            ctx: self.ctx.clone(),
            id: sub.clone(),
            wake: wake.clone(),
            start_delay,
            start,
            supervisor: myself.clone(),
        };
        // Unnamed: ractor's name registry is process-wide and engines must not share it.
        let (actor, _join) = Actor::spawn_linked(None, SubscriberActor, args, myself.get_cell())
            .await
            .map_err(|e| match e {
                ractor::SpawnErr::StartupFailed(inner)
                    if inner
                        .downcast_ref::<Error>()
                        .is_some_and(|e| matches!(e, Error::NotFound { .. })) =>
                {
                    Error::not_found("subscription", &sub)
                }
                other => Error::Internal(format!("could not start subscriber {sub}: {other}")),
            })?;
        self.by_actor.insert(actor.get_id(), sub.clone());
        self.children.insert(
            sub,
            Child {
                actor: actor.clone(),
                wake,
                grants,
            },
        );
        Ok(actor)
    }

    fn forget(&mut self, id: ActorId) -> Option<SubscriptionId> {
        let sub = self.by_actor.remove(&id)?;
        // A newer actor may already serve this subscription; only drop the entry if it is ours.
        if self
            .children
            .get(&sub)
            .is_some_and(|c| c.actor.get_id() == id)
        {
            self.children.remove(&sub);
        }
        Some(sub)
    }

    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sub: SubscriptionId,
        error: String,
    ) {
        let cfg = &self.ctx.config;
        let now = Instant::now();
        let history = self.failures.entry(sub.clone()).or_default();
        history.push_back(now);
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) > cfg.restart_window)
        {
            history.pop_front();
        }
        let recent = history.len() as u32;
        if recent > cfg.restart_limit {
            self.failures.remove(&sub);
            let reason = format!(
                "actor failed {recent} times within {:?}; last error: {error}",
                cfg.restart_window
            );
            let flags = FlagChange {
                faulted_reason: Some(Some(reason)),
                ..FlagChange::default()
            };
            match self.ctx.store.set_flags(sub.clone(), flags).await {
                Ok(row) => {
                    self.ctx.metrics.faulted();
                    tracing::error!(subscription = %sub, "subscription marked faulted");
                    self.notify_faulted(&row).await;
                }
                Err(e) => {
                    tracing::error!(subscription = %sub, error = %e, "could not mark subscription faulted")
                }
            }
            return;
        }
        let delay = Duration::from_millis(50u64.saturating_mul(1 << (recent - 1).min(7)));
        self.ctx.metrics.actor_restart();
        if let Err(e) = self.spawn(myself, sub.clone(), delay, Start::Acquire).await {
            tracing::error!(subscription = %sub, error = %e, "could not restart subscriber");
        }
    }
}

impl SupervisorState {
    /// Publishes the `faulted` notification (`notify`) of `row`, just marked faulted. It is a
    /// commit of its own after the mark (a stop in between loses this one notification; the
    /// subscription stays faulted, visible in the API and the dashboard).
    async fn notify_faulted(&self, row: &crate::store::SubscriptionRow) {
        use crate::notify::{self, About, NoticeKind};
        if !notify::notifies(&row.tenant_id) {
            return;
        }
        let about = About {
            tenant: &row.tenant_id,
            subscription: &row.id,
            url: &row.spec.url,
        };
        let reason = row.faulted_reason.as_deref();
        let notice = notify::notice(
            NoticeKind::Faulted,
            about,
            None,
            reason,
            crate::domain::clock::now_ms(),
        );
        let wait = self.ctx.config.intake_wait;
        if let Err(e) = self.ctx.store.publish(vec![notice], wait).await {
            tracing::warn!(subscription = %row.id, error = %e, "faulted notification not journaled");
        }
    }
}
