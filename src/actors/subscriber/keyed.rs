//! Moving the queue of a subscription with ordering keys: up to `lanes` attempts at once, at
//! most one per key (guarantee 12, docs/ordering.md).
//!
//! Which head may start is [`Lanes::pick`]; this file carries it out against the store with
//! the same lease checks, pacing and journal stalls as the one-at-a-time path in `advance`:
//! - every attempt is marked in flight (fenced, guarantee 9) before it starts, and its key
//!   moves on only after its outcome committed: the next delivery of the key is read from the
//!   store after that commit, asked for with the record itself
//!   ([`Queue::record_attempt_following`](crate::store::Queue::record_attempt_following)):
//!   SQLite reads it on its writer's warm connection, PostgreSQL in the record's task, so that
//!   the round trips of several lanes overlap;
//! - outcomes are recorded by tasks of their own, whose answers come back as
//!   [`SubscriberMsg::Recorded`]: the actor goes on with other keys meanwhile, and the records
//!   of several lanes share the store's commits (one round trip per record would bound a
//!   subscription to one delivery per commit latency); until its record is answered, an
//!   attempt keeps its lane and its key;
//! - the pacer gives one slot per start, for the whole subscription; a receiver's `Retry-After`
//!   or 429 holds every key until the retry is due ([`Lanes::hold_until`]): the receiver is
//!   one endpoint;
//! - a keyed delivery that fails under `onFailure: block` holds only its key
//!   (`holds_key`, written in the outcome's commit); a NULL-keyed one (fanned out before the
//!   subscription had ordering) blocks the whole subscription as before;
//! - every start checks the lease (guarantee 8); a wait with attempts in flight keeps it (a
//!   timer), and only with none in flight may a shared store's lease be given up, so one node
//!   runs all the lanes of a subscription;
//! - an attempt started under an earlier lease (given up or lost since) is never recorded: the
//!   store put its delivery back to pending when the lease changed hands (guarantee 7).
//!
//! A subscription runs this path when it has `ordering` or ever had it (its `order_epoch` is
//! above 0: a backlog fanned out under ordering is still ordered by its keys); every other
//! subscription runs `advance` unchanged.

use std::time::Duration;

use ractor::ActorRef;

use super::advance::{RESERVE_AGAIN, log_outcome};
use super::holding::Cleared;
use super::lanes::{After, Lanes, Pick, ends_key_head};
use super::stall::{self, Unrecorded};
use super::{AbortOnDrop, AttemptDone, SubscriberMsg, SubscriberState, held};
use crate::domain::clock::{now_ms, until_ms};
use crate::domain::{DeliveryId, DeliveryStatus, SubscriptionSpec};
use crate::error::{Error, Result};
use crate::outbound::AttemptOutcome;
use crate::policy::ratelimit::Pace;
use crate::store::{AttemptRecord, KeyFollow, QueuedDelivery};

/// An attempt in flight on an ordered subscription.
pub(super) struct KeyedFlight {
    /// The head as it was when the attempt started (what its outcome is judged and notified
    /// with, whatever the lanes learn meanwhile).
    head: QueuedDelivery,
    n: u32,
    /// The fencing token of the lease it started under.
    token: u64,
    /// The attempt's span, so its outcome is logged with the same fields.
    span: tracing::Span,
    /// Its outcome's record is on its way to the store.
    recording: bool,
    _task: AbortOnDrop,
}

/// The store's answer to the record of a keyed outcome.
pub(crate) struct Recorded {
    /// The record, kept to be written again if the journal could not take it.
    u: Unrecorded,
    result: crate::error::Result<()>,
    /// The next delivery of the record's key, read by the task after the commit when the
    /// record ends its key's head (`None`: not read).
    next: Option<crate::error::Result<Option<QueuedDelivery>>>,
}

/// The read of its key's next delivery that `record` asks the store for (see
/// [`Queue::record_attempt_following`](crate::store::Queue::record_attempt_following)): when
/// it ends `head`, a keyed head, by the rule `Lanes::settle` applies.
fn follow_for(head: &QueuedDelivery, record: &AttemptRecord) -> Option<KeyFollow> {
    let key = head.order_key.as_ref()?;
    ends_key_head(record.new_status, record.holds_key).then(|| KeyFollow {
        order_epoch: head.order_epoch,
        order_key: key.clone(),
        after_seq: head.seq,
    })
}

/// Whether `spec`'s deliveries are ordered by keys (docs/ordering.md): it has `ordering`, or
/// had it once (deliveries fanned out then keep their keys).
pub(super) fn ordered(spec: &SubscriptionSpec) -> bool {
    spec.ordering.is_some() || spec.order_epoch > 0
}

/// Heads read at once: enough to fill the lanes twice, at least a prefetch, at most 512.
pub(super) fn read_limit(lanes: usize, prefetch: u32) -> usize {
    (lanes * 2).max(prefetch as usize).clamp(1, 512)
}

impl SubscriberState {
    /// Starts every head that may start now, up to `lanes` in flight; sets a timer for the
    /// earliest one that must wait; gives a shared store's lease up only when nothing is in
    /// flight and nothing may start soon.
    pub(super) async fn advance_keyed(&mut self, myself: &ActorRef<SubscriberMsg>) -> Result<()> {
        if self.stall.stalled() {
            return Ok(());
        }
        if self.keyed.is_none() {
            // Switching from the one-at-a-time path (ordering was just set): only once its
            // attempt ended, so the two paths never run side by side.
            if self.in_flight.is_some() {
                return Ok(());
            }
            self.queue = super::queue::Prefetch::default();
            self.cancel_timer();
            let lanes = self.row.spec.lanes();
            self.keyed = Some(Lanes::new(read_limit(
                lanes,
                self.ctx.config.actor_prefetch,
            )));
        }
        if self.lease.is_none() {
            self.lost(myself);
            return Ok(());
        }
        if !self.runnable() {
            if self.attempts.is_empty() {
                self.cancel_timer();
                return self.idle(myself).await;
            }
            return Ok(());
        }
        let lanes = self.row.spec.lanes();
        let limit = read_limit(lanes, self.ctx.config.actor_prefetch);
        let mut read = false;
        while self.attempts.len() < lanes {
            let Some(l) = self.keyed.as_mut() else {
                return Ok(());
            };
            if l.is_stale() {
                match self.ctx.store.held_keys(&self.row.id).await {
                    Ok(held) => l.restart(held),
                    Err(e) if stall::waits_for_journal(&e) => {
                        self.retry_store_later(myself, &e);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            let (attempts, successors) = (&self.attempts, &self.successors);
            match l.pick(now_ms(), |d| {
                attempts.contains_key(&d) || successors.contains(&d)
            }) {
                Pick::Start(id) => {
                    let Some(head) = l.get(id).cloned() else {
                        return Ok(());
                    };
                    if !self.start_keyed(myself, head).await? {
                        return Ok(());
                    }
                }
                Pick::Wait { delivery, at } => {
                    return self.keyed_wait(myself, delivery, until_ms(at)).await;
                }
                Pick::Nothing { read: true } if !read => {
                    read = true;
                    let after = l.read_after();
                    // The tail first: a later snapshot of the heads only adds heads beyond it.
                    let store = &self.ctx.store;
                    let sub = &self.row.id;
                    let found = async {
                        let tail = store.last_seq(sub).await?;
                        let found = store.next_heads(sub, after, limit as u32).await?;
                        Ok::<_, Error>((tail, found))
                    };
                    match found.await {
                        Ok((tail, found)) => {
                            if let Some(l) = self.keyed.as_mut() {
                                l.extend(found, limit, tail);
                            }
                        }
                        Err(e) if stall::waits_for_journal(&e) => {
                            self.retry_store_later(myself, &e);
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                Pick::Nothing { .. } => {
                    if !self.attempts.is_empty() {
                        return Ok(());
                    }
                    self.cancel_timer();
                    if self.keyed.as_ref().is_some_and(Lanes::any_held) {
                        return self.idle_held(myself).await;
                    }
                    return self.idle(myself).await;
                }
            }
        }
        Ok(())
    }

    /// Starts `head` if the lease and the pacer let it (marking it in flight first unless the
    /// commit of another outcome did). Returns false when it did not start: a timer (or a lost
    /// lease) takes it up again, and nothing else may start now.
    async fn start_keyed(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        head: QueuedDelivery,
    ) -> Result<bool> {
        let id = head.id;
        if let Cleared::NotNow = self.clear_for_attempt(myself, id).await? {
            return Ok(false);
        }
        let n = head.attempts + 1;
        if !head.marked {
            // Pacing takes a slot for the whole subscription: while it says wait, no key starts.
            let mut reserved = 0;
            loop {
                match self
                    .pacer
                    .pace(&self.ctx.limiters, self.row.tenant_id.as_str())
                {
                    Pace::Go => break,
                    Pace::Wait(wait) => {
                        self.keyed_wait(myself, id, wait).await?;
                        return Ok(false);
                    }
                    // As in `advance`: the tenant's slots on this node went to others.
                    Pace::Reserve if reserved >= 2 => {
                        self.keyed_wait(myself, id, RESERVE_AGAIN).await?;
                        return Ok(false);
                    }
                    Pace::Reserve => {
                        reserved += 1;
                        match self.reserve_tenant_slots().await {
                            Ok(()) => {}
                            Err(e) if stall::waits_for_journal(&e) => {
                                self.retry_store_later(myself, &e);
                                return Ok(false);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            let lease = held(&self.lease, &self.row.id)?;
            match self.ctx.store.mark_in_flight(lease, id, n, now_ms()).await {
                Ok(()) => self.stall.cleared(),
                Err(e) if stall::waits_for_journal(&e) => {
                    self.retry_store_later(myself, &e);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        let token = held(&self.lease, &self.row.id)?.token();
        if let Some(l) = self.keyed.as_mut() {
            l.started(id);
        }
        let (span, task) = self.spawn_attempt(myself, &head, n);
        self.attempts.insert(
            id,
            KeyedFlight {
                head,
                n,
                token,
                span,
                recording: false,
                _task: task,
            },
        );
        Ok(true)
    }

    /// Nothing may start for `wait` (`delivery` is the head that waits): a timer while
    /// attempts are in flight (the lease must stay, they will be recorded under it), else as
    /// the one-at-a-time path waits (a shared store's lease may be given up for a long wait).
    async fn keyed_wait(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        delivery: DeliveryId,
        wait: Duration,
    ) -> Result<()> {
        if self.attempts.is_empty() {
            self.wait_for(myself, delivery, wait).await
        } else {
            self.wake_later(myself, delivery, wait);
            Ok(())
        }
    }

    /// Judges a keyed attempt's outcome and sends its record to the store (answered by
    /// [`SubscriberMsg::Recorded`]). Returns true if the subscription no longer exists.
    pub(super) async fn on_keyed_attempt_done(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        done: AttemptDone,
    ) -> Result<bool> {
        match self.attempts.get(&done.delivery) {
            Some(f) if f.n == done.n && !f.recording => {}
            // Stale: from an attempt abandoned earlier.
            _ => return Ok(false),
        }
        let Some(lease) = self.lease.clone() else {
            // Lost meanwhile: nothing is recorded under it; the caller stops the work.
            self.attempts.remove(&done.delivery);
            return Err(Error::LeaseLost {
                subscription: self.row.id.to_string(),
            });
        };
        let Some(flight) = self.attempts.get_mut(&done.delivery) else {
            return Ok(false);
        };
        if lease.token() != flight.token {
            // Started under a lease given up or lost since: taking the queue again put this
            // delivery back to pending (logged interrupted); it is attempted again in order.
            self.attempts.remove(&done.delivery);
            return Ok(false);
        }
        flight.recording = true;
        let head = flight.head.clone();
        let span = flight.span.clone();
        let keyed = head.order_key.is_some();
        // The receiver is one endpoint: its request to slow down holds every key.
        let slows = matches!(
            &done.result.outcome,
            AttemptOutcome::Response { status, retry_after, .. }
                if *status == 429 || retry_after.is_some()
        );
        let duration = done.result.duration;
        let now = now_ms();
        let mut record = self.judge_with(head.budget_used, done, now);
        // A keyed delivery blocks only its key; a NULL-keyed one (fanned out before ordering
        // was set) still blocks the whole subscription (guarantee 5).
        if keyed
            && let Some(f) = record.flags.as_mut()
            && f.blocked_on.take().is_some()
        {
            record.holds_key = true;
            if f.paused.is_none() && f.disabled_reason.is_none() && f.faulted_reason.is_none() {
                record.flags = None;
            }
        }
        if slows
            && record.new_status == DeliveryStatus::Pending
            && let (Some(t), Some(l)) = (record.next_at, self.keyed.as_mut())
        {
            l.hold_until(t);
        }
        record.next_in_flight = self.keyed_next_in_flight(&record, now);
        if let Some((next, _, _)) = record.next_in_flight {
            self.successors.insert(next);
        }
        self.attach_keyed_notices(&head, &mut record, now);
        if record.new_status == DeliveryStatus::Delivered {
            crate::crashpoint::hit("attempt.after_2xx");
        }
        if self.row.spec.lanes() == 1 {
            // One lane: nothing else could go on meanwhile; a task and a message would only
            // add to the time between two deliveries.
            self.attempts.remove(&head.id);
            if let Some((next, _, _)) = record.next_in_flight {
                self.successors.remove(&next);
            }
            let u = Unrecorded {
                record,
                span,
                duration,
            };
            return self.record_keyed_outcome(myself, u).await;
        }
        let (store, me) = (self.ctx.store.clone(), myself.clone());
        // A record that ends its key's head (what `Lanes::settle` answers with `NextOf`) asks
        // the store for the key's next delivery in the same call: on PostgreSQL the read is a
        // round trip, which made by the actor was one at a time for all lanes (2,300
        // deliveries/s with 100 lanes, 3,600 from the tasks); SQLite reads it on the writer's
        // connection, whose cache the commit left warm.
        let follow = follow_for(&head, &record);
        self.ctx.tasks.spawn(async move {
            let (result, next) = store
                .record_attempt_following(&lease, record.clone(), follow)
                .await;
            let u = Unrecorded {
                record,
                span,
                duration,
            };
            let _ = me.cast(SubscriberMsg::Recorded(Box::new(Recorded {
                u,
                result,
                next,
            })));
        });
        Ok(false)
    }

    /// The store answered a keyed record: on success its key moves on; a journal that could not
    /// take it is waited out (see `stall`). Returns true if the subscription no longer exists.
    pub(super) async fn on_keyed_recorded(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        rec: Recorded,
    ) -> Result<bool> {
        let Recorded { u, result, next } = rec;
        let id = u.record.delivery;
        self.attempts.remove(&id);
        if let Some((next, _, _)) = u.record.next_in_flight {
            self.successors.remove(&next);
        }
        self.settle_keyed_record(myself, u, result, next).await
    }

    /// The store's answer to a keyed record: `Ok(true)` is a deleted subscription; a journal
    /// that cannot write keeps the record for later and stalls the actor (nothing starts
    /// before it is recorded).
    async fn settle_keyed_record(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        u: Unrecorded,
        result: Result<()>,
        next: Option<Result<Option<QueuedDelivery>>>,
    ) -> Result<bool> {
        match result {
            Ok(()) => {
                self.stall.cleared();
                self.after_keyed_record(&u, next).await;
                Ok(false)
            }
            Err(Error::NotFound { .. }) => Ok(true),
            Err(e) if stall::waits_for_journal(&e) => {
                self.retry_store_later(myself, &e);
                self.stall.unrecorded_keyed.push(u);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Another head to mark in flight in the same commit as `record` (saving a write per
    /// delivery): one that may start now whatever `record` says (its delivery counts as still
    /// open, so nothing that conflicts with it is picked), when the subscription stays
    /// runnable, a lane is free once `record`'s attempt ends, the lease allows it and the
    /// rate limit has a slot. `AttemptDone` is followed by `advance` in the same handler, so
    /// its attempt starts right after the commit.
    fn keyed_next_in_flight(
        &mut self,
        record: &AttemptRecord,
        now: i64,
    ) -> Option<(DeliveryId, u32, i64)> {
        let lanes = self.row.spec.lanes();
        // The attempt ending holds its lane until its record commits, then hands it over.
        let stays_runnable = record.flags.is_none()
            && !self.draining
            && self.runnable()
            && self.attempts.len() <= lanes
            && self.lease_allows_next();
        if !stays_runnable {
            return None;
        }
        let l = self.keyed.as_ref().filter(|l| !l.is_stale())?;
        let (attempts, successors) = (&self.attempts, &self.successors);
        let busy = |d: DeliveryId| {
            d == record.delivery || attempts.contains_key(&d) || successors.contains(&d)
        };
        let Pick::Start(id) = l.pick(now, busy) else {
            return None;
        };
        let next = l.get(id).filter(|d| !d.marked)?;
        let n = next.attempts + 1;
        match self
            .pacer
            .pace(&self.ctx.limiters, self.row.tenant_id.as_str())
        {
            Pace::Go => Some((id, n, now)),
            // `advance_keyed` waits or reserves once the record committed.
            Pace::Wait(_) | Pace::Reserve => None,
        }
    }

    /// Commits a keyed outcome the journal could not take before (inline: the actor is
    /// stalled until it is), then moves its key on. Returns true if the subscription no longer
    /// exists.
    pub(super) async fn record_keyed_outcome(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        u: Unrecorded,
    ) -> Result<bool> {
        let lease = held(&self.lease, &self.row.id)?;
        let follow = self
            .keyed
            .as_ref()
            .and_then(|l| l.get(u.record.delivery))
            .and_then(|head| follow_for(head, &u.record));
        let (result, next) = self
            .ctx
            .store
            .record_attempt_following(lease, u.record.clone(), follow)
            .await;
        self.settle_keyed_record(myself, u, result, next).await
    }

    /// What follows a committed keyed record: metrics and log, the subscription's flags, the
    /// head settled in the lanes, the head its commit marked in flight, and the next delivery
    /// of its key: `next` as the record's call read it, else (not asked for: the head was not
    /// known when the record was made) read here.
    async fn after_keyed_record(
        &mut self,
        u: &Unrecorded,
        next: Option<Result<Option<QueuedDelivery>>>,
    ) {
        let r = &u.record;
        self.ctx.metrics.attempt(r.new_status, u.duration);
        log_outcome(
            &u.span,
            r.new_status,
            r.status_code,
            r.error_kind,
            r.duration_ms,
        );
        if let Some(f) = &r.flags {
            if let Some(b) = f.blocked_on {
                self.row.blocked_on = b;
            }
            if let Some(d) = &f.disabled_reason {
                self.row.disabled_reason = d.clone();
            }
        }
        let Some(l) = self.keyed.as_mut() else {
            return;
        };
        if let Some((next, _, _)) = r.next_in_flight {
            l.mark(next);
        }
        let after = l.settle(
            r.delivery,
            r.new_status,
            r.n,
            r.budget_used,
            r.next_at,
            r.holds_key,
        );
        if let After::NextOf { epoch, key, seq } = after {
            let next = match next {
                Some(read) => read,
                None => {
                    self.ctx
                        .store
                        .next_in_group(&self.row.id, epoch, &key, seq)
                        .await
                }
            };
            match next {
                Ok(Some(next)) => l.follow(next),
                Ok(None) => {}
                // The outcome is committed; the key's next delivery is found by a rebuild.
                Err(e) => {
                    tracing::debug!(subscription = %self.row.id, error = %e, "reading a key's next delivery failed; rebuilding the lanes");
                    l.rebuild();
                }
            }
        }
    }

    /// Records the keyed outcomes the journal could not take, until one is refused again.
    /// Returns true if the subscription no longer exists.
    pub(super) async fn record_unrecorded_keyed(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
    ) -> Result<bool> {
        let waiting = std::mem::take(&mut self.stall.unrecorded_keyed);
        for u in waiting {
            if self.stall.retry_set() {
                self.stall.unrecorded_keyed.push(u);
            } else if self.record_keyed_outcome(myself, u).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
