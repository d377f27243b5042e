//! The subscriber actor: delivers one subscription's queue, strictly in order.
//!
//! State machine of the head of the queue:
//! `idle → (rate/retry wait) → in flight → AttemptDone → record in journal → next head`.
//! Invariants kept here:
//! - at most one attempt in flight, and the next one starts only after the journal has committed
//!   the previous delivery's outcome (guarantee 3);
//! - the queue in memory is a bounded prefetch of the journal's open deliveries (`actor_prefetch`),
//!   never the source of truth: after a restart the actor rebuilds it from the journal;
//! - every state change of a delivery of this subscription is written by this actor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::AbortHandle;

use super::SharedCtx;
use crate::domain::clock::{now_ms, until_ms};
use crate::domain::{
    Delivery, DeliveryStatus, FailurePolicy, Subscription, SubscriptionPatch, TransformRef,
};
use crate::domain::{DeliveryId, SubscriptionId, TenantId};
use crate::error::{Error, Result};
use crate::outbound::{AttemptOutcome, AttemptRequest, AttemptResult};
use crate::policy::ratelimit::SubscriptionPacer;
use crate::policy::{self, Decision, ErrorKind};
use crate::store::{AttemptRecord, FlagChange, Lease, QueuedDelivery, SubscriptionRow};
use crate::transform::{Step, TransformInput};

/// Messages of a subscriber actor.
pub(crate) enum SubscriberMsg {
    /// New deliveries may have been journaled for this subscription.
    Wake,
    /// An attempt task finished.
    AttemptDone(Box<AttemptDone>),
    /// The retry wait of `delivery` is over.
    TimerFired { delivery: DeliveryId },
    /// An operator command, answered once its journal write committed.
    Command(Command, RpcReplyPort<Result<CommandReply>>),
    /// Finish the attempt in flight (if any), start no other, then stop.
    Drain,
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

/// Operator commands on a subscription or one of its deliveries.
#[derive(Debug)]
pub(crate) enum Command {
    Pause,
    Resume,
    Update(Box<SubscriptionPatch>),
    /// Replace the signing secret; the old one is still sent for `grace`.
    RotateSecret {
        secret: Option<String>,
        grace: Duration,
    },
    Delete,
    Skip(DeliveryId),
    Resubmit(DeliveryId),
    /// Put finished deliveries of events accepted in `[since_ms, until_ms)` back to pending.
    Replay {
        since_ms: i64,
        until_ms: i64,
    },
}

/// Answers to [`Command`]s.
#[derive(Debug)]
pub(crate) enum CommandReply {
    Subscription(Box<Subscription>),
    Delivery(Box<Delivery>),
    Deleted,
    Replayed(u64),
}

pub(crate) struct SubscriberArgs {
    pub ctx: SharedCtx,
    pub id: SubscriptionId,
    pub wake: Arc<AtomicBool>,
    /// Backoff before a restarted actor resumes work.
    pub start_delay: Duration,
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
    /// Ownership of the subscription's queue, taken in `post_start`; every queue write carries it.
    lease: Option<Lease>,
    wake: Arc<AtomicBool>,
    start_delay: Duration,
    queue: VecDeque<QueuedDelivery>,
    /// Highest `seq` fetched into `queue`; the next fetch continues after it.
    fetched_upto: i64,
    /// The queue must be rebuilt from the journal (a delivery was resubmitted behind the head).
    refetch: bool,
    in_flight: Option<InFlight>,
    timer: Option<Timer>,
    draining: bool,
    rng: StdRng,
    /// Paces attempts to the subscription's (and its tenant's) rate limit, in queue order.
    pacer: SubscriptionPacer,
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
            wake: args.wake,
            start_delay: args.start_delay,
            queue: VecDeque::new(),
            fetched_upto: 0,
            refetch: false,
            in_flight: None,
            timer: None,
            draining: false,
            rng: StdRng::from_os_rng(),
            pacer: SubscriptionPacer::new(row_limit),
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
        // attempt log has no gap.
        state.lease = Some(state.ctx.store.acquire(&state.row.id).await?);
        state.advance(&myself).await?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        // An attempt still running is abandoned: its delivery stays in flight in the journal and
        // is retried (counted as interrupted) when the subscription next runs.
        state.in_flight = None;
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
                state.advance(&myself).await?;
            }
            SubscriberMsg::AttemptDone(done) => {
                if state.on_attempt_done(*done).await? {
                    myself.stop(Some("subscription deleted".into()));
                    return Ok(());
                }
                if state.draining && state.in_flight.is_none() {
                    myself.stop(Some("drained".into()));
                    return Ok(());
                }
                state.advance(&myself).await?;
            }
            SubscriberMsg::TimerFired { delivery } => {
                if state.timer.as_ref().is_some_and(|t| t.delivery == delivery) {
                    state.timer = None;
                    state.advance(&myself).await?;
                }
            }
            SubscriberMsg::Command(cmd, reply) => {
                let deleting = matches!(cmd, Command::Delete);
                let result = state.command(cmd).await;
                let deleted = deleting && result.is_ok();
                let _ = reply.send(result);
                if deleted {
                    myself.stop(Some("subscription deleted".into()));
                    return Ok(());
                }
                state.advance(&myself).await?;
            }
            SubscriberMsg::Drain => {
                state.draining = true;
                state.cancel_timer();
                if state.in_flight.is_none() {
                    myself.stop(Some("drained".into()));
                }
            }
            #[cfg(feature = "test-hooks")]
            SubscriberMsg::Panic => panic!("injected fault in subscriber {}", state.row.id),
        }
        Ok(())
    }
}

/// A transform to run before an attempt's request is sent.
struct PendingTransform {
    binding: TransformRef,
    tenant: TenantId,
    input: TransformInput,
}

/// The headers a transform sees: what hookline would send before its identity, signature and
/// authentication headers. Credentials are not handed to tenant code (they would end up in
/// its log); hookline adds them after the transform.
fn transform_input_headers(spec: &crate::domain::SubscriptionSpec) -> Vec<(String, String)> {
    let mut h = Vec::with_capacity(1 + spec.headers.len());
    h.push((
        "content-type".to_string(),
        crate::domain::CONTENT_TYPE_JSON.to_string(),
    ));
    h.extend(spec.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    h
}

/// Runs the subscription's transform, then sends what it returned (or reports why not).
async fn transformed_attempt(
    sender: &crate::outbound::Sender,
    transforms: &crate::transform::TransformRegistry,
    metrics: &crate::metrics::Metrics,
    mut req: AttemptRequest,
    t: PendingTransform,
) -> AttemptResult {
    let started_at = now_ms();
    let start = std::time::Instant::now();
    let step = transforms.call(&t.tenant, &t.binding, t.input).await;
    metrics.transform_time(start.elapsed());
    let ended = |outcome, transform_log| AttemptResult {
        started_at,
        duration: start.elapsed(),
        outcome,
        transform_log,
    };
    match step {
        Step::Deliver { headers, body, log } => {
            req.body = Arc::from(body);
            req.transformed_headers = Some(headers);
            let mut result = sender.send(&req).await;
            // The attempt's time includes the transform's.
            result.started_at = started_at;
            result.duration = start.elapsed();
            result.transform_log = log;
            result
        }
        Step::Drop { reason, log } => ended(AttemptOutcome::Dropped { reason }, log),
        Step::Fail { code, message, log } => {
            ended(AttemptOutcome::TransformFailed { code, message }, log)
        }
        Step::Unavailable { message } => ended(
            AttemptOutcome::Failed {
                kind: ErrorKind::TransformUnavailable,
                message,
            },
            None,
        ),
    }
}

impl SubscriberState {
    fn runnable(&self) -> bool {
        let r = &self.row;
        !self.draining
            && !r.paused
            && r.disabled_reason.is_none()
            && r.faulted_reason.is_none()
            && r.blocked_on.is_none()
    }

    /// Takes `delivery` up again after `wait` (a retry backoff or a rate-limit pause); until
    /// then nothing else starts, which is what keeps the order.
    fn wake_later(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        delivery: DeliveryId,
        wait: Duration,
    ) {
        let me = myself.clone();
        let task = self.ctx.tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = me.cast(SubscriberMsg::TimerFired { delivery });
        });
        self.timer = Some(Timer {
            delivery,
            _task: AbortOnDrop(task.abort_handle()),
        });
    }

    fn cancel_timer(&mut self) {
        self.timer = None;
    }

    /// Starts the next attempt if the subscription may and nothing else is going on.
    async fn advance(&mut self, myself: &ActorRef<SubscriberMsg>) -> Result<()> {
        if self.in_flight.is_some() || self.timer.is_some() || !self.runnable() {
            return Ok(());
        }
        if self.refetch {
            self.refetch = false;
            self.queue.clear();
            self.fetched_upto = 0;
        }
        if self.queue.is_empty() {
            let more = self
                .ctx
                .store
                .next_deliveries(
                    &self.row.id,
                    self.fetched_upto,
                    self.ctx.config.actor_prefetch,
                )
                .await?;
            if let Some(last) = more.last() {
                self.fetched_upto = last.seq;
            }
            self.queue.extend(more);
        }
        let Some(head) = self.queue.front() else {
            return Ok(());
        };
        if let Some(due) = head.next_at {
            let wait = until_ms(due);
            if !wait.is_zero() {
                let delivery = head.id;
                self.wake_later(myself, delivery, wait);
                return Ok(());
            }
        }
        if !head.marked {
            // Pacing waits for the head and never reorders: nothing else may start meanwhile.
            if let Err(wait) = self
                .pacer
                .next_slot(&self.ctx.limiters, self.row.tenant_id.as_str())
            {
                let delivery = head.id;
                self.wake_later(myself, delivery, wait);
                return Ok(());
            }
        }
        let n = head.attempts + 1;
        if !head.marked {
            let lease = held(&self.lease, &self.row.id)?;
            self.ctx
                .store
                .mark_in_flight(lease, head.id, n, now_ms())
                .await?;
        }
        let spec = &self.row.spec;
        let req = AttemptRequest {
            url: spec.url.clone(),
            event_id: head.event_id.clone(),
            body: Arc::from(head.body.clone()),
            transformed_headers: None,
            access_key: spec.access_key.clone(),
            headers: spec.headers.clone(),
            signing: spec.signing.clone(),
            auth: spec.auth.clone(),
            subscription: self.row.id.clone(),
            tls: spec.tls.clone(),
            timeout: Duration::from_millis(spec.timeout_ms),
        };
        // The transform runs in the attempt's task, like the HTTP call: the actor stays free.
        let transform = spec.transform.clone().map(|binding| PendingTransform {
            binding,
            tenant: self.row.tenant_id.clone(),
            input: TransformInput {
                id: head.event_id.as_str().to_string(),
                tenant_id: self.row.tenant_id.as_str().to_string(),
                subscription_id: self.row.id.as_str().to_string(),
                notification_type: head.notification_type.as_str().to_string(),
                headers: transform_input_headers(spec),
                body: head.body.as_bytes().to_vec(),
            },
        });
        let delivery = head.id;
        let sender = self.ctx.sender.clone();
        let transforms = self.ctx.transforms.clone();
        let metrics = self.ctx.metrics.clone();
        let me = myself.clone();
        // One span per attempt: everything logged about it (here, in the attempt task, and its
        // outcome) carries these fields. No secret goes into a span.
        let span = tracing::info_span!(
            "delivery_attempt",
            tenant = %self.row.tenant_id,
            subscription = %self.row.id,
            event_id = %head.event_id,
            delivery = %head.id,
            attempt = n,
            kind = head.notification_type.as_str(),
        );
        let task = self.ctx.tasks.spawn(tracing::Instrument::instrument(
            async move {
                let result = match transform {
                    None => sender.send(&req).await,
                    Some(t) => transformed_attempt(&sender, &transforms, &metrics, req, t).await,
                };
                let _ = me.cast(SubscriberMsg::AttemptDone(Box::new(AttemptDone {
                    delivery,
                    n,
                    result,
                })));
            },
            span.clone(),
        ));
        self.in_flight = Some(InFlight {
            delivery,
            n,
            span,
            _task: AbortOnDrop(task.abort_handle()),
        });
        Ok(())
    }

    /// Records an attempt's outcome. Returns true if the subscription no longer exists.
    async fn on_attempt_done(&mut self, done: AttemptDone) -> Result<bool> {
        let span = match self.in_flight.take() {
            Some(f) if f.delivery == done.delivery && f.n == done.n => f.span,
            other => {
                self.in_flight = other;
                return Ok(false); // stale: from an attempt abandoned earlier
            }
        };
        let Some(pos) = self.queue.iter().position(|d| d.id == done.delivery) else {
            return Ok(false);
        };
        let head = &self.queue[pos];
        let counted = head.budget_used + 1;
        let spec = &self.row.spec;
        let mut disable_requested = false;
        let (verdict, retry_after, status_code, error_kind, error, snippet) =
            match done.result.outcome {
                AttemptOutcome::Response {
                    status,
                    retry_after,
                    snippet,
                    disable,
                } => {
                    let mut v = policy::classify_status(status);
                    disable_requested = disable;
                    if disable && v != policy::Verdict::Delivered {
                        v = policy::Verdict::Gone;
                    }
                    let (kind, err) = if (200..300).contains(&status) {
                        (None, None)
                    } else {
                        (
                            Some("http_status"),
                            Some(format!("receiver answered {status}")),
                        )
                    };
                    (v, retry_after, Some(status), kind, err, snippet)
                }
                AttemptOutcome::Dropped { reason } => (
                    policy::Verdict::Dropped,
                    None,
                    None,
                    Some("dropped"),
                    Some(reason),
                    None,
                ),
                AttemptOutcome::TransformFailed { code, message } => (
                    policy::Verdict::Fatal,
                    None,
                    None,
                    Some(code),
                    Some(message),
                    None,
                ),
                AttemptOutcome::Failed { kind, message } => {
                    // The seeds log a timeout as a failure with status 500.
                    let code = (kind == ErrorKind::Timeout).then_some(500);
                    (
                        policy::classify_error(kind),
                        None,
                        code,
                        Some(kind.as_str()),
                        Some(message),
                        None,
                    )
                }
            };
        let decision = policy::decide(
            verdict,
            retry_after,
            counted,
            &spec.retry,
            self.ctx.config.max_retry_after,
            &mut self.rng,
        );
        let mut flags = None;
        let (new_status, next_at) = match decision {
            Decision::Dropped => (DeliveryStatus::Dropped, None),
            Decision::Delivered => {
                // A receiver may take this delivery and still ask for no more.
                if disable_requested {
                    flags = Some(FlagChange {
                        disabled_reason: Some(Some(
                            "receiver asked to be disabled (webhook-delivery: disable)".into(),
                        )),
                        ..FlagChange::default()
                    });
                }
                (DeliveryStatus::Delivered, None)
            }
            Decision::RetryIn(d) => (
                DeliveryStatus::Pending,
                Some(now_ms() + d.as_millis() as i64),
            ),
            Decision::Failed { disable } => {
                let mut f = FlagChange::default();
                if disable {
                    f.disabled_reason = Some(Some(match status_code {
                        Some(410) => "receiver answered 410 Gone".to_string(),
                        _ => {
                            "receiver asked to be disabled (webhook-delivery: disable)".to_string()
                        }
                    }));
                }
                if spec.on_failure == FailurePolicy::Block {
                    f.blocked_on = Some(Some(done.delivery.raw()));
                }
                if f.disabled_reason.is_some() || f.blocked_on.is_some() {
                    flags = Some(f);
                }
                (DeliveryStatus::Failed, None)
            }
        };
        // When this delivery is done and the next one can go at once, mark the next one in flight
        // in the same commit (AttemptDone is followed by `advance` in the same handler, so the
        // mark is exactly when its attempt starts).
        let stays_runnable = flags.is_none() && !self.draining && !self.refetch && self.runnable();
        let next_in_flight = match (new_status.is_terminal(), pos, self.queue.get(1)) {
            (true, 0, Some(next))
                if stays_runnable
                    && next.next_at.is_none_or(|t| t <= now_ms())
                    && self
                        .pacer
                        .next_slot(&self.ctx.limiters, self.row.tenant_id.as_str())
                        .is_ok() =>
            {
                // `marked` doubles as "its rate-limit slot is already taken".
                Some((next.id, next.attempts + 1, now_ms()))
            }
            _ => None,
        };
        let record = AttemptRecord {
            delivery: done.delivery,
            subscription: self.row.id.clone(),
            n: done.n,
            started_at: done.result.started_at,
            duration_ms: done.result.duration.as_millis() as u64,
            status_code,
            error_kind,
            error,
            snippet,
            transform_log: done.result.transform_log,
            new_status,
            budget_used: counted,
            next_at,
            flags: flags.clone(),
            next_in_flight,
        };
        let took_ms = record.duration_ms;
        let (code, kind) = (record.status_code, record.error_kind);
        let lease = held(&self.lease, &self.row.id)?;
        match self.ctx.store.record_attempt(lease, record).await {
            Ok(()) => {
                self.ctx.metrics.attempt(new_status, done.result.duration);
                log_outcome(&span, new_status, code, kind, took_ms);
            }
            Err(Error::NotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        }
        if let Some(f) = flags {
            if let Some(b) = f.blocked_on {
                self.row.blocked_on = b;
            }
            if let Some(d) = f.disabled_reason {
                self.row.disabled_reason = d;
            }
        }
        if let Some((next, _, _)) = next_in_flight
            && let Some(entry) = self.queue.iter_mut().find(|q| q.id == next)
        {
            entry.marked = true;
        }
        if new_status == DeliveryStatus::Pending {
            if let Some(entry) = self.queue.get_mut(pos) {
                entry.attempts = done.n;
                entry.budget_used = counted;
                entry.next_at = next_at;
            }
        } else {
            self.queue.remove(pos);
        }
        Ok(false)
    }

    async fn command(&mut self, cmd: Command) -> Result<CommandReply> {
        let store = &self.ctx.store;
        let lease = held(&self.lease, &self.row.id)?;
        match cmd {
            Command::Pause => {
                let flags = FlagChange {
                    paused: Some(true),
                    ..FlagChange::default()
                };
                self.row = store.set_queue_flags(lease, flags).await?;
                Ok(CommandReply::Subscription(Box::new(self.row.to_public())))
            }
            Command::Resume => {
                let flags = FlagChange {
                    paused: Some(false),
                    disabled_reason: Some(None),
                    faulted_reason: Some(None),
                    ..FlagChange::default()
                };
                self.row = store.set_queue_flags(lease, flags).await?;
                Ok(CommandReply::Subscription(Box::new(self.row.to_public())))
            }
            Command::Update(patch) => {
                let spec = self.row.spec.apply(*patch, self.ctx.sender.policy())?;
                // A changed token endpoint or credentials must not reuse a cached token.
                self.ctx.sender.forget(&self.row.id);
                self.row = store.update_spec(self.row.id.clone(), spec).await?;
                self.pacer.reconfigure(self.row.spec.rate_limit.clone());
                Ok(CommandReply::Subscription(Box::new(self.row.to_public())))
            }
            Command::RotateSecret { secret, grace } => {
                let mut spec = self.row.spec.clone();
                spec.signing = spec
                    .signing
                    .rotate(secret.as_deref(), grace, now_ms())
                    .map_err(|e| Error::invalid("secret", e))?;
                self.row = store.update_spec(self.row.id.clone(), spec).await?;
                let mut public = self.row.to_public();
                public.secret = Some(self.row.spec.signing.secret.clone());
                Ok(CommandReply::Subscription(Box::new(public)))
            }
            Command::Delete => {
                store.delete_subscription(self.row.id.clone()).await?;
                self.ctx.sender.forget(&self.row.id);
                Ok(CommandReply::Deleted)
            }
            Command::Skip(id) => {
                let d = self.own_delivery(id).await?;
                if self.in_flight.as_ref().is_some_and(|f| f.delivery == id) {
                    return Err(Error::Conflict(format!(
                        "delivery {id} is being attempted right now; try again when the attempt ends"
                    )));
                }
                if !matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Failed) {
                    return Err(Error::Conflict(format!(
                        "delivery {id} is {}; only pending or failed deliveries can be skipped",
                        d.status.as_str()
                    )));
                }
                let unblocking = self.row.blocked_on == Some(id.raw());
                store
                    .set_delivery_status(lease, id, DeliveryStatus::Skipped, false, unblocking)
                    .await?;
                self.ctx
                    .metrics
                    .deliveries(crate::metrics::Outcome::Skipped, 1);
                self.queue.retain(|q| q.id != id);
                if self.timer.as_ref().is_some_and(|t| t.delivery == id) {
                    self.cancel_timer();
                }
                if unblocking {
                    self.row.blocked_on = None;
                }
                self.reply_delivery(id).await
            }
            Command::Resubmit(id) => {
                let d = self.own_delivery(id).await?;
                if d.status != DeliveryStatus::Failed {
                    return Err(Error::Conflict(format!(
                        "delivery {id} is {}; only failed deliveries can be resubmitted",
                        d.status.as_str()
                    )));
                }
                let unblocking = self.row.blocked_on == Some(id.raw());
                store
                    .set_delivery_status(lease, id, DeliveryStatus::Pending, true, unblocking)
                    .await?;
                if unblocking {
                    self.row.blocked_on = None;
                }
                // It goes back in its place in the order: rebuild the queue from the journal.
                self.cancel_timer();
                self.refetch = true;
                self.reply_delivery(id).await
            }
            Command::Replay { since_ms, until_ms } => {
                let n = store.replay(lease, since_ms, until_ms).await?;
                self.ctx
                    .metrics
                    .deliveries(crate::metrics::Outcome::Replayed, n);
                if n > 0 {
                    // Replayed deliveries take their places in `seq` order, ahead of the pending
                    // ones after them: rebuild the queue (and the blocked flag) from the journal.
                    if let Some(row) = store.get_subscription(&self.row.id).await? {
                        self.row.blocked_on = row.blocked_on;
                    }
                    self.cancel_timer();
                    self.refetch = true;
                }
                Ok(CommandReply::Replayed(n))
            }
        }
    }

    async fn own_delivery(&self, id: DeliveryId) -> Result<Delivery> {
        match self.ctx.store.get_delivery(id).await? {
            Some(d) if d.subscription_id == self.row.id => Ok(d),
            _ => Err(Error::not_found("delivery", id)),
        }
    }

    async fn reply_delivery(&self, id: DeliveryId) -> Result<CommandReply> {
        let d = self.own_delivery(id).await?;
        Ok(CommandReply::Delivery(Box::new(d)))
    }
}

/// The lease the actor holds once started (messages are handled only after `post_start`).
fn held<'l>(lease: &'l Option<Lease>, sub: &SubscriptionId) -> Result<&'l Lease> {
    lease.as_ref().ok_or_else(|| Error::LeaseLost {
        subscription: sub.to_string(),
    })
}

/// The attempt's outcome, in its span: routine successes at debug, retries at info, failures
/// at warn.
fn log_outcome(
    span: &tracing::Span,
    status: DeliveryStatus,
    code: Option<u16>,
    kind: Option<&'static str>,
    took_ms: u64,
) {
    let name = status.as_str();
    match status {
        DeliveryStatus::Delivered => {
            tracing::debug!(parent: span, status = name, code, took_ms, "attempt done")
        }
        DeliveryStatus::Pending => {
            tracing::info!(parent: span, status = name, code, kind, took_ms, "attempt failed; will retry")
        }
        _ => {
            tracing::warn!(parent: span, status = name, code, kind, took_ms, "attempt failed; delivery failed")
        }
    }
}
