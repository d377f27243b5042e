//! Subscriptions: creation, reads, changes and operator commands (sent to the subscription's
//! actor, which is the only writer of its state).

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, rpc::CallResult};

use crate::actors::subscriber::{Command, Reply, SubscriberMsg};
use crate::actors::supervisor::SupervisorMsg;
use crate::domain::validate_external_id;
use crate::domain::{BlockedKey, SubscriptionId, TenantId, Timestamp, ordering};
use crate::domain::{
    EndpointTest, EventInput, NewSubscription, Subscription, SubscriptionPatch, SubscriptionSpec,
};
use crate::error::{Error, Result};

use super::{EngineHandle, call};

impl EngineHandle {
    // ---- subscriptions -----------------------------------------------------------------

    /// Creates a subscription; it receives events published from now on.
    pub async fn create_subscription(&self, n: NewSubscription) -> Result<Subscription> {
        self.check_open()?;
        validate_external_id("tenantId", &n.tenant_id)?;
        let tenant = TenantId::from(n.tenant_id.clone());
        let spec = SubscriptionSpec::from_new(n, &self.inner.ctx.config.subscription_defaults())?;
        let row = self
            .store()
            .create_subscription(SubscriptionId::generate(), tenant, spec)
            .await?;
        let mut public = row.to_public();
        public.secret = Some(row.spec.signing.secret.clone());
        Ok(public)
    }

    /// A subscription by id; with ordering keys, with its held keys and lanes busy.
    pub async fn get_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        let row = self
            .store()
            .get_subscription(id)
            .await?
            .ok_or_else(|| Error::not_found("subscription", id))?;
        let mut public = row.to_public();
        if row.spec.ordering.is_some() || row.spec.order_epoch > 0 {
            let keys = self.store().key_state(id).await?;
            public.blocked_keys = keys
                .held
                .into_iter()
                .map(|(key, delivery, at)| BlockedKey {
                    key: ordering::key_value(&key),
                    delivery,
                    since: Timestamp::from_ms(at),
                })
                .collect();
            public.lanes_busy = Some(keys.in_flight);
        }
        Ok(public)
    }

    /// All subscriptions, or those of one tenant.
    pub async fn list_subscriptions(&self, tenant: Option<&TenantId>) -> Result<Vec<Subscription>> {
        Ok(self
            .store()
            .list_subscriptions(tenant)
            .await?
            .iter()
            .map(|r| r.to_public())
            .collect())
    }

    /// Changes a subscription; the next attempt uses the new settings (one in flight finishes
    /// with the old ones).
    pub async fn update_subscription(
        &self,
        id: &SubscriptionId,
        patch: SubscriptionPatch,
    ) -> Result<Subscription> {
        self.command(id, |reply| Command::Update(Box::new(patch.clone()), reply))
            .await
    }

    /// Replaces a subscription's signing secret (with `secret`, or a generated one) and returns
    /// the subscription with the new secret in full. During `grace` (default 24 h) requests carry
    /// signatures by both the old and the new secret.
    pub async fn rotate_secret(
        &self,
        id: &SubscriptionId,
        secret: Option<String>,
        grace: Option<Duration>,
    ) -> Result<Subscription> {
        let grace = grace.unwrap_or(Duration::from_secs(24 * 3600));
        if grace > Duration::from_secs(7 * 24 * 3600) {
            return Err(Error::invalid("graceSeconds", "must be at most 7 days"));
        }
        self.command(id, |reply| Command::RotateSecret {
            secret: secret.clone(),
            grace,
            reply,
        })
        .await
    }

    /// Sends a signed test event to the subscription's endpoint now, outside its queue (nothing
    /// is journaled and the order of real deliveries is untouched), with the subscription's
    /// headers, authentication and timeout.
    pub async fn test_endpoint(&self, id: &SubscriptionId) -> Result<EndpointTest> {
        self.check_open()?;
        let row = self
            .store()
            .get_subscription(id)
            .await?
            .ok_or_else(|| Error::not_found("subscription", id))?;
        let event = EventInput::new(
            row.tenant_id.as_str(),
            "hookline-endpoint-test",
            crate::domain::NotificationType::WorkflowEvent,
        )
        .payload(serde_json::json!({"test": true, "subscriptionId": id.as_str()}))
        .validate()?;
        let body = serde_json::to_string(&event)
            .map_err(|e| Error::Internal(format!("test event: {e}")))?;
        let req = crate::outbound::AttemptRequest::for_delivery(
            &row.spec,
            &row.id,
            &event.id,
            Arc::from(body.into_bytes()),
        );
        let result = self.inner.ctx.sender.send(&req).await;
        Ok(result.into_endpoint_test())
    }

    /// Stops starting attempts for a subscription; events keep accumulating.
    pub async fn pause_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.command(id, Command::Pause).await
    }

    /// Resumes a paused, disabled or faulted subscription (a blocked one resumes through
    /// [`resubmit`](Self::resubmit) or [`skip`](Self::skip) of its failed delivery).
    pub async fn resume_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.command(id, Command::Resume).await
    }

    /// Deletes a subscription with its deliveries and attempt log.
    pub async fn delete_subscription(&self, id: &SubscriptionId) -> Result<()> {
        self.command(id, Command::Delete).await
    }

    pub(super) async fn actor(&self, id: &SubscriptionId) -> Result<ActorRef<SubscriberMsg>> {
        let sub = id.clone();
        call(&self.inner.supervisor, move |tx| {
            SupervisorMsg::Get(sub, tx)
        })
        .await?
    }

    /// Sends `cmd` (given its reply port) to the subscription's actor and waits for the answer.
    ///
    /// An actor that stopped before it took the command (it had just given its lease up), or
    /// that found its lease lost, did not carry it out: the command goes once more, to the
    /// actor the supervisor has then (which takes the lease over).
    pub(super) async fn command<T: Send + 'static>(
        &self,
        id: &SubscriptionId,
        cmd: impl Fn(Reply<T>) -> Command,
    ) -> Result<T> {
        self.check_open()?;
        for _ in 0..2 {
            let actor = self.actor(id).await?;
            match actor
                .call(|reply| SubscriberMsg::Command(cmd(reply)), None)
                .await
            {
                // Not carried out: the actor stopped first, or its lease was lost.
                Err(_) | Ok(CallResult::Success(Err(Error::LeaseLost { .. }))) => continue,
                Ok(CallResult::Success(r)) => return r,
                Ok(_) => break,
            }
        }
        Err(Error::Conflict(format!(
            "subscription {id} is restarting; try again"
        )))
    }
}
