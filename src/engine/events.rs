//! Publishing events, and reading and acting on their deliveries.

use std::sync::atomic::Ordering;

use crate::actors::subscriber::{Command, Reply};
use crate::config::EngineConfig;
use crate::domain::{
    Delivery, DeliveryDetail, DeliveryPage, DeliveryQuery, EventInput, PublishReceipt,
};
use crate::domain::{DeliveryId, SubscriptionId};
use crate::error::{Error, Result};

use super::EngineHandle;

impl EngineHandle {
    // ---- events --------------------------------------------------------------------------

    /// Journals an event and fans it out to every matching subscription. Returns once both are
    /// durable (guarantee 1). Publishing the same (tenant, id) again returns the original.
    pub async fn publish(&self, event: EventInput) -> Result<PublishReceipt> {
        self.check_open()?;
        let event = event.validate()?;
        let wait = self.inner.ctx.config.intake_wait;
        let mut out = self.store().publish(vec![event], wait).await?;
        self.count_accepted(&out);
        out.pop()
            .unwrap_or_else(|| Err(Error::Internal("no publish result".into())))
    }

    /// Publishes several events in one durable commit; one result per event, in order. An invalid
    /// event is refused on its own without affecting the others.
    pub async fn publish_batch(
        &self,
        events: Vec<EventInput>,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        self.publish_batch_items(events.into_iter().map(Ok).collect())
            .await
    }

    /// [`publish_batch`](Self::publish_batch) for items a caller has checked first (the API:
    /// schema, tenant scope): an `Err` item keeps its refusal and its place, the others are
    /// validated, journaled in one commit, and their results fill the remaining places in
    /// order. The one place where a batch's results are merged back into request order.
    pub(crate) async fn publish_batch_items<E: From<Error>>(
        &self,
        items: Vec<Result<EventInput, E>>,
    ) -> Result<Vec<Result<PublishReceipt, E>>> {
        self.check_open()?;
        let mut results: Vec<Option<Result<PublishReceipt, E>>> = Vec::with_capacity(items.len());
        let mut valid = Vec::with_capacity(items.len());
        for item in items {
            match item.and_then(|e| e.validate().map_err(E::from)) {
                Ok(v) => {
                    valid.push(v);
                    results.push(None);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        let wait = self.inner.ctx.config.intake_wait;
        let journaled = self.store().publish(valid, wait).await?;
        self.count_accepted(&journaled);
        let mut journaled = journaled.into_iter();
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| match journaled.next() {
                    Some(j) => j.map_err(E::from),
                    None => Err(Error::Internal("missing result".into()).into()),
                })
            })
            .collect())
    }

    /// Counts the events a publish created (idempotent duplicates excluded).
    fn count_accepted(&self, receipts: &[Result<PublishReceipt>]) {
        let created = receipts
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|r| !r.duplicate))
            .count();
        self.inner.ctx.metrics.events_accepted(created as u64);
    }

    // ---- deliveries ----------------------------------------------------------------------

    /// A page of a subscription's deliveries in `seq` order.
    pub async fn list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: DeliveryQuery,
    ) -> Result<DeliveryPage> {
        self.store().list_deliveries(sub, &q).await
    }

    /// A delivery with its attempt log.
    pub async fn get_delivery(&self, id: DeliveryId) -> Result<DeliveryDetail> {
        let delivery = self
            .store()
            .get_delivery(id)
            .await?
            .ok_or_else(|| Error::not_found("delivery", id))?;
        let attempt_log = self.store().attempts(id).await?;
        Ok(DeliveryDetail {
            delivery,
            attempt_log,
        })
    }

    /// Puts a failed delivery back to pending in its place in the order, with a fresh retry
    /// budget; a subscription blocked on it resumes from it.
    pub async fn resubmit(&self, id: DeliveryId) -> Result<Delivery> {
        self.delivery_command(id, |reply| Command::Resubmit(id, reply))
            .await
    }

    /// Re-sends a subscription's finished deliveries (delivered, failed, skipped, dropped) of
    /// events accepted in the window, in their original order, for a receiver that lost data.
    ///
    /// The deliveries themselves go back to pending (same ids, the attempt log continues, a
    /// fresh retry budget), so they take their places in `seq` order: after the attempt in
    /// flight, if any, and ahead of every pending delivery with a higher `seq`. A subscription
    /// blocked on a replayed delivery is unblocked. Events already pruned by retention cannot
    /// be replayed.
    pub async fn replay(
        &self,
        id: &SubscriptionId,
        window: crate::domain::ReplayWindow,
    ) -> Result<crate::domain::ReplayReceipt> {
        let (since_ms, until_ms) = window.to_ms(crate::domain::clock::now_ms())?;
        let replayed = self
            .command(id, |reply| Command::Replay {
                since_ms,
                until_ms,
                reply,
            })
            .await?;
        Ok(crate::domain::ReplayReceipt { replayed })
    }

    /// Whether the engine serves requests: recovery is over (the handle exists) and it is not
    /// shutting down. `GET /readyz` answers from this.
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the engine does not take work now, if it does not: `shutting_down`, or
    /// `journal_unwritable` with why (`disk_full`, `io_error`, `read_only`), which clears by
    /// itself once the journal writes again.
    pub fn not_ready(&self) -> Option<(&'static str, Option<&'static str>)> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Some(("shutting_down", None));
        }
        let why = self.inner.ctx.metrics.health.unwritable()?;
        Some(("journal_unwritable", Some(why.as_str())))
    }

    /// Resolves, with the reason, once the engine cannot go on (its journal writer died). A
    /// server then exits non-zero so that its supervisor restarts it: recovery at the next start
    /// keeps every accepted event.
    pub async fn failed(&self) -> String {
        self.inner.ctx.metrics.health.wait_fatal().await
    }

    /// The engine's metrics in the OpenMetrics text format, with the queue gauges read from the
    /// journal now.
    pub async fn metrics_text(&self) -> Result<String> {
        let stats = self.store().queue_stats().await?;
        self.inner.ctx.metrics.set_queues(stats);
        Ok(self.inner.ctx.metrics.encode())
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.ctx.config
    }

    /// Marks a pending or failed delivery skipped; a subscription blocked on it moves on.
    pub async fn skip(&self, id: DeliveryId) -> Result<Delivery> {
        self.delivery_command(id, |reply| Command::Skip(id, reply))
            .await
    }

    async fn delivery_command(
        &self,
        id: DeliveryId,
        cmd: impl Fn(Reply<Delivery>) -> Command,
    ) -> Result<Delivery> {
        let d = self
            .store()
            .get_delivery(id)
            .await?
            .ok_or_else(|| Error::not_found("delivery", id))?;
        self.command(&d.subscription_id, cmd).await
    }
}
