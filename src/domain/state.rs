//! A subscription as the engine runs it: its validated spec and its state flags, and the rules
//! that turn those flags into the public state.
//!
//! The flags are independent columns (an operator pause, a failed delivery the subscription is
//! blocked on, a receiver's or hookline's disable, a fault after repeated actor failures); the
//! public state shows the most severe one, in the order of [`SubscriptionRow::state`]. Every
//! store keeps the flags as they are and leaves this derivation to the domain.

use std::str::FromStr;

use super::Timestamp;
use super::time::now_ms;
use super::{DeliveryId, SubscriptionId, TenantId};
use super::{DeliveryStatus, Subscription, SubscriptionSpec, SubscriptionState};
use crate::error::{Error, Result};

/// A stored subscription: its validated configuration and its state flags.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionRow {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub spec: SubscriptionSpec,
    pub paused: bool,
    pub blocked_on: Option<i64>,
    pub disabled_reason: Option<String>,
    pub faulted_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SubscriptionRow {
    /// The public state derived from the state flags, most severe first.
    pub(crate) fn state(&self) -> (SubscriptionState, Option<String>) {
        if let Some(r) = &self.disabled_reason {
            (SubscriptionState::Disabled, Some(r.clone()))
        } else if self.paused {
            (SubscriptionState::Paused, None)
        } else if let Some(r) = &self.faulted_reason {
            (SubscriptionState::Faulted, Some(r.clone()))
        } else if let Some(d) = self.blocked_on {
            (
                SubscriptionState::Blocked,
                Some(format!(
                    "delivery {} failed; resubmit or skip it to continue",
                    DeliveryId(d)
                )),
            )
        } else {
            (SubscriptionState::Active, None)
        }
    }

    /// The public view: secrets masked (the caller adds the secret where the API shows it once).
    pub(crate) fn to_public(&self) -> Subscription {
        let (state, state_reason) = self.state();
        let s = &self.spec;
        Subscription {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            url: s.url.clone(),
            notification_types: s.notification_types.clone(),
            workflow_ids: s.workflow_ids.clone(),
            access_key_set: s.access_key.is_some(),
            auth: s.auth.as_ref().map(|a| a.view()),
            rate_limit: s.rate_limit.clone(),
            transform: s.transform.clone(),
            tls: s.tls.as_ref().map(|t| t.view()),
            headers: s.headers.clone(),
            retry: s.retry.clone(),
            timeout_ms: s.timeout_ms,
            on_failure: s.on_failure,
            status_table: s.statuses.table,
            retry_on: s.statuses.retry_on.clone(),
            delivered_on: s.statuses.delivered_on.clone(),
            ordering: s.ordering.clone(),
            state,
            state_reason,
            blocked_on: self.blocked_on.map(DeliveryId),
            blocked_keys: Vec::new(),
            lanes_busy: None,
            secret: None,
            secret_masked: s.signing.masked(),
            previous_secret_expires_at: s.signing.rotation_ends(now_ms()).map(Timestamp::from_ms),
            public_key: s.signing.public_key(),
            created_at: Timestamp::from_ms(self.created_at),
            updated_at: Timestamp::from_ms(self.updated_at),
        }
    }
}

/// A delivery status as named in the API (`?status=`).
impl FromStr for DeliveryStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DeliveryStatus::parse(s).ok_or_else(|| {
            Error::invalid(
                "status",
                "must be one of pending, in_flight, delivered, failed, skipped, dropped",
            )
        })
    }
}
