//! Moving the head of the queue: start its attempt when it may go, and record the attempt's
//! outcome when it comes back.
//!
//! Both halves keep the order (guarantee 3): [`SubscriberState::advance`] starts nothing while
//! an attempt is in flight or a wait (retry backoff, rate limit) is pending for the head, and
//! [`SubscriberState::on_attempt_done`] changes the queue only after the store committed the
//! outcome, marking the next delivery in flight in that same commit when it can go at once.

use std::time::Duration;

use ractor::ActorRef;

use super::attempt::{self, PendingTransform};
use super::holding::Cleared;
use super::keyed;
use super::outcome::{self, Attempted};
use super::queue::Settled;
use super::stall::{self, Unrecorded};
use super::{AbortOnDrop, AttemptDone, InFlight, SubscriberMsg, SubscriberState, Timer, held};
use crate::domain::clock::{now_ms, until_ms};
use crate::domain::{DeliveryId, DeliveryStatus};
use crate::error::{Error, Result};
use crate::outbound::AttemptRequest;
use crate::policy::ErrorKind;
use crate::policy::cluster_pace;
use crate::policy::ratelimit::Pace;
use crate::store::{AttemptRecord, QueuedDelivery};
use crate::transform::TransformInput;

/// How long a subscription waits before asking for a tenant slot again when the reservations
/// it made were taken by the tenant's other subscriptions on this node.
pub(super) const RESERVE_AGAIN: Duration = Duration::from_millis(5);

impl SubscriberState {
    pub(super) fn runnable(&self) -> bool {
        let r = &self.row;
        !self.draining
            && !r.paused
            && r.disabled_reason.is_none()
            && r.faulted_reason.is_none()
            && r.blocked_on.is_none()
    }

    /// Takes `delivery` up again after `wait` (a retry backoff or a rate-limit pause); until
    /// then nothing else starts, which is what keeps the order.
    pub(super) fn wake_later(
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

    pub(super) fn cancel_timer(&mut self) {
        self.timer = None;
    }

    /// Starts the next attempt if the subscription may and nothing else is going on; with a
    /// shared store, gives the subscription up when there is nothing to send or the head must
    /// wait long (see `holding`).
    pub(super) async fn advance(&mut self, myself: &ActorRef<SubscriberMsg>) -> Result<()> {
        if self.keyed.is_some() || keyed::ordered(&self.row.spec) {
            return self.advance_keyed(myself).await;
        }
        if self.in_flight.is_some() || self.timer.is_some() || self.stall.stalled() {
            return Ok(());
        }
        if self.lease.is_none() {
            // Given up or lost: idle until stopped or leased again.
            self.lost(myself);
            return Ok(());
        }
        if !self.runnable() {
            return self.idle(myself).await;
        }
        if let Some(after) = self.queue.fetch_after() {
            let more = match self
                .ctx
                .store
                .next_deliveries(&self.row.id, after, self.ctx.config.actor_prefetch)
                .await
            {
                Ok(more) => more,
                Err(e) if stall::waits_for_journal(&e) => {
                    self.retry_store_later(myself, &e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.queue.extend(more);
        }
        let Some(head) = self.queue.head() else {
            return self.idle(myself).await;
        };
        let (delivery, due, marked, n) = (head.id, head.next_at, head.marked, head.attempts + 1);
        if let Some(due) = due {
            let wait = until_ms(due);
            if !wait.is_zero() {
                return self.wait_for(myself, delivery, wait).await;
            }
        }
        if let Cleared::NotNow = self.clear_for_attempt(myself, delivery).await? {
            return Ok(());
        }
        if !marked {
            // Pacing waits for the head and never reorders: nothing else may start meanwhile.
            let mut reserved = 0;
            loop {
                match self
                    .pacer
                    .pace(&self.ctx.limiters, self.row.tenant_id.as_str())
                {
                    Pace::Go => break,
                    Pace::Wait(wait) => return self.wait_for(myself, delivery, wait).await,
                    // Other subscriptions of the tenant on this node took what the last
                    // reservations brought: ask again shortly rather than spin on the store.
                    Pace::Reserve if reserved >= 2 => {
                        return self.wait_for(myself, delivery, RESERVE_AGAIN).await;
                    }
                    Pace::Reserve => {
                        reserved += 1;
                        match self.reserve_tenant_slots().await {
                            Ok(()) => {}
                            Err(e) if stall::waits_for_journal(&e) => {
                                self.retry_store_later(myself, &e);
                                return Ok(());
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            let lease = held(&self.lease, &self.row.id)?;
            let marked = self
                .ctx
                .store
                .mark_in_flight(lease, delivery, n, now_ms())
                .await;
            match marked {
                Ok(()) => self.stall.cleared(),
                Err(e) if stall::waits_for_journal(&e) => {
                    self.retry_store_later(myself, &e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.start_attempt(myself);
        Ok(())
    }

    /// Starts the attempt of the head (already marked in flight in the store).
    fn start_attempt(&mut self, myself: &ActorRef<SubscriberMsg>) {
        let Some(head) = self.queue.head() else {
            return;
        };
        let (delivery, n) = (head.id, head.attempts + 1);
        let (span, task) = self.spawn_attempt(myself, head, n);
        self.in_flight = Some(InFlight {
            delivery,
            n,
            span,
            _task: task,
        });
    }

    /// Spawns attempt `n` of `head` (already marked in flight in the store) as a tracked task
    /// whose result comes back as [`SubscriberMsg::AttemptDone`]; returns its span and task.
    pub(super) fn spawn_attempt(
        &self,
        myself: &ActorRef<SubscriberMsg>,
        head: &QueuedDelivery,
        n: u32,
    ) -> (tracing::Span, AbortOnDrop) {
        let delivery = head.id;
        let spec = &self.row.spec;
        let req = AttemptRequest::for_delivery(
            spec,
            &self.row.id,
            &head.event_id,
            head.body.clone().into(),
        )
        .with_sequence(head.seq);
        // The transform runs in the attempt's task, like the HTTP call: the actor stays free.
        let transform = spec.transform.clone().map(|binding| PendingTransform {
            binding,
            tenant: self.row.tenant_id.clone(),
            input: TransformInput::for_delivery(
                &head.event_id,
                self.row.tenant_id.as_str(),
                self.row.id.as_str(),
                head.notification_type,
                &spec.headers,
                head.body.as_bytes().to_vec(),
            ),
        });
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
        let ctx = self.ctx.clone();
        let me = myself.clone();
        let task = self.ctx.tasks.spawn(tracing::Instrument::instrument(
            async move {
                let result = attempt::run(&ctx, req, transform).await;
                let _ = me.cast(SubscriberMsg::AttemptDone(Box::new(AttemptDone {
                    delivery,
                    n,
                    result,
                })));
            },
            span.clone(),
        ));
        (span, AbortOnDrop(task.abort_handle()))
    }

    /// Records an attempt's outcome. Returns true if the subscription no longer exists.
    pub(super) async fn on_attempt_done(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        done: AttemptDone,
    ) -> Result<bool> {
        let span = match self.in_flight.take() {
            Some(f) if f.delivery == done.delivery && f.n == done.n => f.span,
            other => {
                self.in_flight = other;
                return Ok(false); // stale: from an attempt abandoned earlier
            }
        };
        let Some(pos) = self.queue.position(done.delivery) else {
            return Ok(false);
        };
        let now = now_ms();
        let duration = done.result.duration;
        let mut record = self.judge(pos, done, now);
        record.next_in_flight = self.next_in_flight(pos, &record, now);
        self.attach_notices(pos, &mut record, now);
        if record.new_status == DeliveryStatus::Delivered {
            crate::crashpoint::hit("attempt.after_2xx");
        }
        self.record_outcome(
            myself,
            Unrecorded {
                record,
                span,
                duration,
            },
        )
        .await
    }

    /// Commits an attempt's outcome and settles it in the queue; keeps it for later if the
    /// journal cannot write now (see `stall`). Returns true if the subscription no longer exists.
    pub(super) async fn record_outcome(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        u: Unrecorded,
    ) -> Result<bool> {
        let Some(pos) = self.queue.position(u.record.delivery) else {
            return Ok(false);
        };
        let record = &u.record;
        let settled = Settled::of(record);
        let flags = record.flags.clone();
        let (code, kind, took_ms) = (record.status_code, record.error_kind, record.duration_ms);
        let lease = held(&self.lease, &self.row.id)?;
        match self.ctx.store.record_attempt(lease, record.clone()).await {
            Ok(()) => {
                self.stall.cleared();
                self.ctx.metrics.attempt(settled.status, u.duration);
                log_outcome(&u.span, settled.status, code, kind, took_ms);
            }
            Err(Error::NotFound { .. }) => return Ok(true),
            Err(e) if stall::waits_for_journal(&e) => {
                self.retry_store_later(myself, &e);
                self.stall.unrecorded = Some(u);
                return Ok(false);
            }
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
        self.queue.settle(pos, settled);
        Ok(false)
    }

    /// The journal record of `done`, the attempt of the delivery at `pos` in the queue.
    fn judge(&mut self, pos: usize, done: AttemptDone, now: i64) -> AttemptRecord {
        let budget_used = self.queue.get(pos).map_or(0, |d| d.budget_used);
        self.judge_with(budget_used, done, now)
    }

    /// The journal record of `done`, the attempt of a delivery that had used `budget_used`.
    pub(super) fn judge_with(
        &mut self,
        budget_used: u32,
        done: AttemptDone,
        now: i64,
    ) -> AttemptRecord {
        let spec = &self.row.spec;
        let at = Attempted {
            delivery: done.delivery,
            subscription: &self.row.id,
            n: done.n,
            budget_used,
            retry: &spec.retry,
            statuses: &spec.statuses,
            on_failure: spec.on_failure,
            max_retry_after: self.ctx.config.max_retry_after,
            now,
        };
        outcome::record(&at, done.result, &mut self.rng)
    }

    /// The delivery to mark in flight in the same commit as `record` (attempt number and time):
    /// when `record` ends the head, the subscription stays runnable, the next delivery is due
    /// and the rate limit has a slot for it. `AttemptDone` is followed by `advance` in the same
    /// handler, so the mark is exactly when its attempt starts; `marked` doubles as "its
    /// rate-limit slot is already taken".
    fn next_in_flight(
        &mut self,
        pos: usize,
        record: &AttemptRecord,
        now: i64,
    ) -> Option<(DeliveryId, u32, i64)> {
        let stays_runnable = record.flags.is_none()
            && !self.draining
            && !self.queue.is_stale()
            && self.runnable()
            && self.lease_allows_next();
        if !stays_runnable {
            return None;
        }
        let next = self
            .queue
            .next_ready(pos, record.new_status.is_terminal(), now)?;
        let (id, n) = (next.id, next.attempts + 1);
        match self
            .pacer
            .pace(&self.ctx.limiters, self.row.tenant_id.as_str())
        {
            Pace::Go => Some((id, n, now)),
            // `advance` waits or reserves once the record committed.
            Pace::Wait(_) | Pace::Reserve => None,
        }
    }

    /// Reserves slots of the tenant's cluster-wide rate limit for this node (shared store; see
    /// `policy::cluster_pace`): one reservation per tenant at a time on this node, for every
    /// subscription queued behind it, so a node pays one store round trip for all of them.
    pub(super) async fn reserve_tenant_slots(&self) -> Result<()> {
        let Some(mut queue) = self
            .ctx
            .limiters
            .queue_for_slots(self.row.tenant_id.as_str())
        else {
            return Ok(());
        };
        let gate = queue.gate();
        let _turn = gate.lock().await;
        let Some((limit, want)) = queue.request(std::time::Instant::now()) else {
            return Ok(());
        };
        let grant = self
            .ctx
            .store
            .reserve_tenant_slots(&self.row.tenant_id, &limit, want, cluster_pace::HORIZON)
            .await?;
        queue.deposit(&grant, std::time::Instant::now());
        Ok(())
    }
}

/// The attempt's outcome, in its span: routine successes at debug, retries at info, failures
/// at warn.
pub(super) fn log_outcome(
    span: &tracing::Span,
    status: DeliveryStatus,
    code: Option<u16>,
    kind: Option<ErrorKind>,
    took_ms: u64,
) {
    let name = status.as_str();
    let kind = kind.map(ErrorKind::as_str);
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
