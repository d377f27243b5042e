//! The subscriber actor: delivers one subscription's queue, strictly in order (per key, for a
//! subscription with ordering keys).
//!
//! State machine of the head of the queue:
//! `idle → (rate/retry wait) → in flight → AttemptDone → record in store → next head`.
//! Invariants kept here:
//! - without ordering keys, at most one attempt in flight, and the next one starts only after
//!   the store has committed the previous delivery's outcome (guarantee 3);
//! - with ordering keys (`keyed`, guarantee 12), at most `lanes` attempts in flight, at most one
//!   per key, and a key's next delivery starts only after the store committed the outcome of
//!   the one before it; a subscription that never had `ordering` never runs that path;
//! - the queue in memory is a bounded prefetch of the store's open deliveries (`actor_prefetch`),
//!   never the source of truth: after a restart the actor rebuilds it from the store;
//! - the rate limiter paces the head and never reorders: while the head waits nothing else starts;
//! - when a delivery ends and the next one can go at once, the next one is marked in flight in
//!   the same commit as the previous outcome;
//! - every state change of a delivery of this subscription is written by this actor;
//! - with a shared store (guarantee 8), no attempt starts unless the lease outlives it, the
//!   lease is given up when the head must wait or nothing is left to send, and a lost lease
//!   stops all work at once (the actor reports itself idle and the supervisor stops it); the
//!   decisions are the pure functions of `tenure`.
//!
//! Layout: this file is the actor and its messages; `advance` moves the head (starts attempts,
//! records their outcomes); `keyed` does the same for a subscription with ordering keys, over
//! `lanes` (which heads may start, as plain data); `attempt` is the attempt task (transform,
//! then send); `outcome` is
//! the pure rule that turns an attempt's result into its journal record; `queue` is the prefetch
//! as plain data; `command` carries out the operator's requests; `tenure` decides when the
//! lease is kept, renewed or given up; `stall` waits out a journal that cannot write (the actor
//! retries, it does not fail).

mod advance;
mod attempt;
mod command;
mod holding;
mod keyed;
mod lanes;
mod notices;
mod outcome;
mod queue;
mod stall;
mod tenure;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::AbortHandle;

use super::SharedCtx;
use super::supervisor::SupervisorMsg;
use crate::domain::id::{DeliveryMap, DeliverySet};
use crate::domain::{Delivery, DeliveryId, Subscription, SubscriptionId, SubscriptionPatch};
use crate::error::{Error, Result};
use crate::outbound::AttemptResult;
use crate::policy::ratelimit::SubscriptionPacer;
use crate::store::{Lease, SubscriptionRow, Tenure};
use keyed::KeyedFlight;
use lanes::Lanes;
use queue::Prefetch;

/// Messages of a subscriber actor.
pub(crate) enum SubscriberMsg {
    /// New deliveries may have been journaled for this subscription.
    Wake,
    /// An attempt task finished.
    AttemptDone(Box<AttemptDone>),
    /// The retry wait of `delivery` is over.
    TimerFired { delivery: DeliveryId },
    /// A lease the claimer took for this subscription (shared store).
    Leased(Lease),
    /// An operator command, answered once its store write committed.
    Command(Command),
    /// Finish the attempt in flight (if any), start no other, then stop.
    Drain,
    /// Try again the writes the journal could not take (see `stall`).
    RetryStore,
    /// The store answered the record of a keyed attempt's outcome (see `keyed`).
    Recorded(Box<keyed::Recorded>),
    /// Test-only fault injection: panic inside the handler.
    #[cfg(feature = "test-hooks")]
    Panic,
}

/// The result of one attempt, sent back by its task.
pub(crate) struct AttemptDone {
    delivery: DeliveryId,
    n: u32,
    result: AttemptResult,
}

/// Where a command's answer goes: each command names the type it answers with.
pub(crate) type Reply<T> = RpcReplyPort<Result<T>>;

/// Operator commands on a subscription or one of its deliveries, each with its own reply.
pub(crate) enum Command {
    /// Stop starting attempts; answers the subscription.
    Pause(Reply<Subscription>),
    /// Clear paused, disabled and faulted; answers the subscription.
    Resume(Reply<Subscription>),
    /// Change the subscription's settings; answers the subscription.
    Update(Box<SubscriptionPatch>, Reply<Subscription>),
    /// Replace the signing secret; the old one is still sent for `grace`. Answers the
    /// subscription with the new secret in full.
    RotateSecret {
        secret: Option<String>,
        grace: Duration,
        reply: Reply<Subscription>,
    },
    /// Delete the subscription with its deliveries; the actor stops once it is done.
    Delete(Reply<()>),
    /// Mark a pending or failed delivery skipped; answers the delivery.
    Skip(DeliveryId, Reply<Delivery>),
    /// Put a failed delivery back to pending in its place; answers the delivery.
    Resubmit(DeliveryId, Reply<Delivery>),
    /// Put finished deliveries of events accepted in `[since_ms, until_ms)` back to pending;
    /// answers how many.
    Replay {
        since_ms: i64,
        until_ms: i64,
        reply: Reply<u64>,
    },
}

/// How an actor gets its subscription's lease when it starts.
pub(crate) enum Start {
    /// Take it (an exclusive store's wake, a restart), fencing any holder.
    Acquire,
    /// Take it for an operator command, which follows in the mailbox; with a shared store the
    /// queue is not worked (nor the lease given up) before the command is carried out.
    ForCommand,
    /// Use the lease the claimer took (shared store).
    Claimed(Lease),
}

pub(crate) struct SubscriberArgs {
    pub ctx: SharedCtx,
    pub id: SubscriptionId,
    pub wake: Arc<AtomicBool>,
    /// Backoff before a restarted actor resumes work.
    pub start_delay: Duration,
    pub start: Start,
    /// Where the actor reports that it went idle.
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub(crate) struct SubscriberActor;

/// Aborts its task when dropped. ractor drops a failed actor's state without calling
/// `post_stop`, so this is what stops an orphaned attempt or timer before the restarted actor
/// (which waits at least one restart backoff) takes the delivery up again.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct InFlight {
    delivery: DeliveryId,
    n: u32,
    /// The attempt's span, so its outcome is logged with the same fields.
    span: tracing::Span,
    _task: AbortOnDrop,
}

struct Timer {
    delivery: DeliveryId,
    _task: AbortOnDrop,
}

pub(crate) struct SubscriberState {
    ctx: SharedCtx,
    row: SubscriptionRow,
    /// Ownership of the subscription's queue, taken in `post_start`; every queue write carries
    /// it. `None` once given up or lost (the actor is then idle until stopped or leased again).
    lease: Option<Lease>,
    /// How the lease is taken at start (consumed by `post_start`).
    start: Option<Start>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Claimed leases and commands received (the start's claim included), echoed in `Idle`.
    grants: u64,
    wake: Arc<AtomicBool>,
    start_delay: Duration,
    /// The open deliveries fetched from the store, head first (without ordering keys).
    queue: Prefetch,
    in_flight: Option<InFlight>,
    /// The key heads known, with ordering keys (`None`: the one-at-a-time path runs).
    keyed: Option<Lanes>,
    /// The attempts in flight with ordering keys, by delivery (at most `lanes`, one per key);
    /// an attempt stays here until its outcome's record committed.
    attempts: DeliveryMap<KeyedFlight>,
    /// Heads to be marked in flight by the commit of a record on its way (`keyed`): no other
    /// lane starts them meanwhile.
    successors: DeliverySet,
    timer: Option<Timer>,
    draining: bool,
    rng: StdRng,
    /// Paces attempts to the subscription's (and its tenant's) rate limit, in queue order.
    pacer: SubscriptionPacer,
    /// Writes waiting for the journal to take them again.
    stall: stall::Stall,
    /// The delivery a block was on, cleared by the operator since: the next delivery delivered
    /// is notified as `recovered` (see `notices`).
    recovering: Option<DeliveryId>,
}

impl Actor for SubscriberActor {
    type Msg = SubscriberMsg;
    type State = SubscriberState;
    type Arguments = SubscriberArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SubscriberArgs,
    ) -> Result<SubscriberState, ActorProcessingErr> {
        let row = args
            .ctx
            .store
            .get_subscription(&args.id)
            .await?
            .ok_or_else(|| Error::not_found("subscription", &args.id))?;
        let row_limit = row.spec.rate_limit.clone();
        Ok(SubscriberState {
            ctx: args.ctx,
            row,
            lease: None,
            grants: u64::from(matches!(args.start, Start::Claimed(_))),
            start: Some(args.start),
            supervisor: args.supervisor,
            wake: args.wake,
            start_delay: args.start_delay,
            queue: Prefetch::default(),
            in_flight: None,
            keyed: None,
            attempts: DeliveryMap::default(),
            successors: DeliverySet::default(),
            timer: None,
            draining: false,
            rng: StdRng::from_os_rng(),
            pacer: SubscriptionPacer::new(row_limit),
            stall: stall::Stall::default(),
            recovering: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.start_delay.is_zero() {
            tokio::time::sleep(state.start_delay).await;
        }
        // Taking the queue fences any previous holder, and logs the attempt a previous actor of
        // this subscription may have died with as interrupted (as crash recovery does) so the
        // attempt log has no gap. A claim did the same in the store.
        let start = state.start.take();
        let for_command = matches!(start, Some(Start::ForCommand));
        state.lease = Some(match start {
            Some(Start::Claimed(lease)) => lease,
            Some(Start::Acquire | Start::ForCommand) | None => {
                // A journal that cannot write is waited out here: failing would restart the
                // actor until the subscription is marked faulted (see `stall`).
                let mut wait = std::time::Duration::from_millis(100);
                loop {
                    match state.take_over().await {
                        Ok(lease) => break lease,
                        Err(e) if stall::waits_for_journal(&e) => {
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(std::time::Duration::from_secs(5));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        });
        if let Some(lease) = &state.lease {
            // The pace the subscription's previous holder left (shared store).
            state.pacer.resume(lease.pace_ahead());
        }
        if !(for_command && state.ctx.tenure == Tenure::Shared) {
            state.step(&myself).await?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        // An attempt still running is abandoned: its delivery stays in flight in the store and
        // is retried (counted as interrupted) when the subscription next runs.
        state.in_flight = None;
        state.attempts.clear();
        state.successors.clear();
        state.cancel_timer();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SubscriberMsg,
        state: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriberMsg::Wake => {
                state.wake.store(false, Ordering::Release);
                if let Some(l) = state.keyed.as_mut() {
                    l.woken();
                }
                state.step(&myself).await?;
            }
            SubscriberMsg::AttemptDone(done) => {
                // To the path that started it: an attempt of the other path is never mixed in.
                let result = if state.attempts.contains_key(&done.delivery) {
                    state.on_keyed_attempt_done(&myself, *done).await
                } else {
                    state.on_attempt_done(&myself, *done).await
                };
                state.after_record(&myself, result).await?;
            }
            SubscriberMsg::TimerFired { delivery } => {
                if state.timer.as_ref().is_some_and(|t| t.delivery == delivery) {
                    state.timer = None;
                    state.step(&myself).await?;
                }
            }
            SubscriberMsg::Leased(lease) => {
                state.grants += 1;
                state.adopt(lease).await?;
                state.step(&myself).await?;
            }
            SubscriberMsg::Command(cmd) => {
                // Counted as the supervisor counted it when it handed this actor out.
                state.grants += 1;
                if state.command(cmd).await {
                    myself.stop(Some("subscription deleted".into()));
                    return Ok(());
                }
                state.step(&myself).await?;
            }
            SubscriberMsg::Recorded(rec) => {
                let result = state.on_keyed_recorded(&myself, *rec).await;
                state.after_record(&myself, result).await?;
            }
            SubscriberMsg::RetryStore => {
                state.stall.fired();
                let mut recorded = match state.stall.unrecorded.take() {
                    Some(u) => state.record_outcome(&myself, u).await,
                    None => Ok(false),
                };
                if let Ok(false) = recorded {
                    recorded = state.record_unrecorded_keyed(&myself).await;
                }
                state.after_record(&myself, recorded).await?;
            }
            SubscriberMsg::Drain => {
                state.draining = true;
                state.cancel_timer();
                if !state.busy() && !state.stall.stalled() {
                    myself.stop(Some("drained".into()));
                }
            }
            #[cfg(feature = "test-hooks")]
            SubscriberMsg::Panic => panic!("injected fault in subscriber {}", state.row.id),
        }
        Ok(())
    }
}

impl SubscriberState {
    /// Whether an attempt is in flight, on either path.
    fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.attempts.is_empty()
    }

    /// What follows an outcome's record, on either path: `Ok(true)` is a deleted subscription
    /// (the actor stops), a lost lease gives the subscription up, a draining actor with nothing
    /// left stops, otherwise the queue moves on.
    async fn after_record(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        recorded: Result<bool>,
    ) -> Result<(), ActorProcessingErr> {
        match recorded {
            Ok(true) => {
                myself.stop(Some("subscription deleted".into()));
                return Ok(());
            }
            Ok(false) => {}
            Err(Error::LeaseLost { .. }) => {
                self.lost(myself);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        if self.draining && !self.busy() && !self.stall.stalled() {
            myself.stop(Some("drained".into()));
            return Ok(());
        }
        self.step(myself).await?;
        Ok(())
    }
}

/// The lease the actor holds once started (messages are handled only after `post_start`).
fn held<'l>(lease: &'l Option<Lease>, sub: &SubscriptionId) -> Result<&'l Lease> {
    lease.as_ref().ok_or_else(|| Error::LeaseLost {
        subscription: sub.to_string(),
    })
}
