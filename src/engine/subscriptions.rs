//! Subscriptions: creation, reads, changes and operator commands (sent to the subscription's
//! actor, which is the only writer of its state).

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, rpc::CallResult};

use crate::actors::subscriber::{Command, CommandReply, SubscriberMsg};
use crate::actors::supervisor::SupervisorMsg;
use crate::domain::{
    EndpointTest, EventInput, NewSubscription, Subscription, SubscriptionPatch, SubscriptionSpec,
};
use crate::domain::{SubscriptionId, TenantId, validate_external_id};
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

    /// A subscription by id.
    pub async fn get_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.store()
            .get_subscription(id)
            .await?
            .map(|r| r.to_public())
            .ok_or_else(|| Error::not_found("subscription", id))
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
        self.subscription_command(id, Command::Update(Box::new(patch)))
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
        self.subscription_command(id, Command::RotateSecret { secret, grace })
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
        let spec = &row.spec;
        let req = crate::outbound::AttemptRequest {
            url: spec.url.clone(),
            event_id: event.id.clone(),
            body: Arc::from(body.into_bytes()),
            transformed_headers: None,
            access_key: spec.access_key.clone(),
            headers: spec.headers.clone(),
            signing: spec.signing.clone(),
            auth: spec.auth.clone(),
            subscription: row.id.clone(),
            tls: spec.tls.clone(),
            timeout: Duration::from_millis(spec.timeout_ms),
        };
        let result = self.inner.ctx.sender.send(&req).await;
        let duration_ms = result.duration.as_millis() as u64;
        Ok(match result.outcome {
            crate::outbound::AttemptOutcome::Response { status, .. } => EndpointTest {
                status_code: Some(status),
                duration_ms,
                error: (!(200..300).contains(&status))
                    .then(|| format!("receiver answered {status}")),
                verified: (200..300).contains(&status),
            },
            crate::outbound::AttemptOutcome::Failed { kind, message } => EndpointTest {
                status_code: (kind == crate::policy::ErrorKind::Timeout).then_some(500),
                duration_ms,
                error: Some(format!("{}: {message}", kind.as_str())),
                verified: false,
            },
            // The endpoint test runs no transform.
            crate::outbound::AttemptOutcome::Dropped { reason }
            | crate::outbound::AttemptOutcome::TransformFailed {
                message: reason, ..
            } => EndpointTest {
                status_code: None,
                duration_ms,
                error: Some(reason),
                verified: false,
            },
        })
    }

    /// Stops starting attempts for a subscription; events keep accumulating.
    pub async fn pause_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.subscription_command(id, Command::Pause).await
    }

    /// Resumes a paused, disabled or faulted subscription (a blocked one resumes through
    /// [`resubmit`](Self::resubmit) or [`skip`](Self::skip) of its failed delivery).
    pub async fn resume_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.subscription_command(id, Command::Resume).await
    }

    /// Deletes a subscription with its deliveries and attempt log.
    pub async fn delete_subscription(&self, id: &SubscriptionId) -> Result<()> {
        match self.command(id, Command::Delete).await? {
            CommandReply::Deleted => Ok(()),
            other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn subscription_command(
        &self,
        id: &SubscriptionId,
        cmd: Command,
    ) -> Result<Subscription> {
        match self.command(id, cmd).await? {
            CommandReply::Subscription(s) => Ok(*s),
            other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    pub(super) async fn actor(&self, id: &SubscriptionId) -> Result<ActorRef<SubscriberMsg>> {
        let sub = id.clone();
        call(&self.inner.supervisor, move |tx| {
            SupervisorMsg::Get(sub, tx)
        })
        .await?
    }

    pub(super) async fn command(&self, id: &SubscriptionId, cmd: Command) -> Result<CommandReply> {
        self.check_open()?;
        let actor = self.actor(id).await?;
        let result = actor
            .call(|tx| SubscriberMsg::Command(cmd, tx), None)
            .await
            .map_err(|_| Error::Conflict(format!("subscription {id} is restarting; try again")))?;
        match result {
            // The actor lost its queue to a newer holder: it is being replaced.
            CallResult::Success(Err(Error::LeaseLost { .. })) => Err(Error::Conflict(format!(
                "subscription {id} is restarting; try again"
            ))),
            CallResult::Success(r) => r,
            _ => Err(Error::Conflict(format!(
                "subscription {id} is restarting; try again"
            ))),
        }
    }
}
