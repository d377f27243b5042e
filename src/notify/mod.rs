//! Operational notifications: what hookline tells operators and tenants when a subscription
//! blocks, is disabled, faults or recovers, or a delivery runs out of retries.
//!
//! A notification is an ordinary journaled [`Event`] of type `OPERATIONAL_EVENT` in hookline's
//! own system tenant ([`SYSTEM_TENANT`]), so it goes through the same machinery as every other
//! event: journaled, fanned out, signed (Standard Webhooks), retried and delivered in order.
//! Its receivers are the system tenant's subscriptions: the operator's (from the server's
//! `[notifications]` table, no workflow filter: they get every notification) and each tenant's
//! (created through `POST /v1/tenants/{id}/notifications`, filtered on `workflowId` = the
//! tenant's id, which every notification carries). A notification therefore never travels
//! through the subscription that failed, and nothing about a system-tenant subscription is
//! ever notified (a failing notification receiver would otherwise notify about itself).
//!
//! This module is pure: it builds the events ([`notice`]); the subscriber actor attaches them to
//! the journal write that records the transition (so the notification commits with it, or
//! neither does), and the supervisor publishes the `faulted` one after marking the subscription.
//!
//! The envelope: `tenantId` = [`SYSTEM_TENANT`], `transactionId` = the subscription's id (so the
//! notifications about one subscription are found like any transaction), `referenceId` = the
//! delivery's id when there is one, `workflowId` = the subscription's tenant, and `payLoad` =
//! `{type, subscription, delivery, event, reason, at}`. The event id is derived from the
//! transition (`ntf_<kind>_<delivery>_<attempt>`), so recording it twice creates one event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::domain::{
    DeliveryId, Event, EventId, NotificationType, SubscriptionId, TenantId, Timestamp,
};

/// The tenant that holds hookline's own notifications and their receivers. Its id cannot be
/// taken by an operator (`create_tenant` refuses it).
pub const SYSTEM_TENANT: &str = "_hookline";

/// A receiver of operational notifications: the server's `[notifications]` table lists the
/// operator's, `POST /v1/tenants/{id}/notifications` adds a tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationEndpoint {
    /// Where notifications are POSTed (`http` or `https`), checked like a subscription's URL.
    pub url: String,
    /// Signing secret (`whsec_` + base64 of 24 to 64 bytes); generated when absent (and then
    /// shown once, in the answer to the request that added the receiver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// The subscription stopped at a failed delivery (`onFailure: block`).
    Blocked,
    /// The receiver answered 410 Gone or asked to be disabled (`webhook-delivery: disable`).
    Disabled,
    /// The subscription's actor kept failing and was given up on.
    Faulted,
    /// A delivery failed for good under `onFailure: skip`: the queue moved on without it.
    Exhausted,
    /// The first delivery after a block was cleared (resubmit or skip) went through.
    Recovered,
}

impl NoticeKind {
    /// The `type` field of the payload.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Blocked => "subscription.blocked",
            NoticeKind::Disabled => "subscription.disabled",
            NoticeKind::Faulted => "subscription.faulted",
            NoticeKind::Exhausted => "delivery.exhausted",
            NoticeKind::Recovered => "subscription.recovered",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            NoticeKind::Blocked => "blocked",
            NoticeKind::Disabled => "disabled",
            NoticeKind::Faulted => "faulted",
            NoticeKind::Exhausted => "exhausted",
            NoticeKind::Recovered => "recovered",
        }
    }
}

/// The subscription a notification is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct About<'a> {
    pub tenant: &'a TenantId,
    pub subscription: &'a SubscriptionId,
    pub url: &'a str,
}

/// The delivery a notification is about, with its last attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempted<'a> {
    pub delivery: DeliveryId,
    /// The attempt's number (1 = the first try).
    pub attempt: u32,
    /// The delivery's status after the attempt.
    pub status: &'a str,
    pub http_status: Option<u16>,
    pub error_kind: Option<&'a str>,
    pub error: Option<&'a str>,
    /// The event's id and type.
    pub event_id: &'a EventId,
    pub notification_type: NotificationType,
    /// The event's journaled body (its `transactionId` and `referenceId` are copied out).
    pub body: &'a str,
}

/// Whether transitions of a subscription of `tenant` are notified: never those of the system
/// tenant's own subscriptions (the notification receivers).
pub(crate) fn notifies(tenant: &TenantId) -> bool {
    tenant.as_str() != SYSTEM_TENANT
}

/// The notification event of `kind` about `about`, at `now_ms`. `delivery` is the delivery and
/// attempt that caused it (none for `faulted`); `reason` says why in words.
pub(crate) fn notice(
    kind: NoticeKind,
    about: About<'_>,
    delivery: Option<&Attempted<'_>>,
    reason: Option<&str>,
    now_ms: i64,
) -> Event {
    let at = Timestamp::from_ms(now_ms).to_string();
    let id = match delivery {
        Some(d) => format!("ntf_{}_{}_{}", kind.tag(), d.delivery.raw(), d.attempt),
        // No delivery (faulted): one per subscription and millisecond.
        None => format!("ntf_{}_{}_{}", kind.tag(), about.subscription, now_ms),
    };
    let mut payload = Map::new();
    payload.insert("type".into(), Value::from(kind.as_str()));
    payload.insert(
        "subscription".into(),
        json!({
            "id": about.subscription.as_str(),
            "tenantId": about.tenant.as_str(),
            "url": about.url,
        }),
    );
    if let Some(d) = delivery {
        payload.insert(
            "delivery".into(),
            json!({
                "id": d.delivery.to_string(),
                "status": d.status,
                "attempts": d.attempt,
                "lastHttpStatus": d.http_status,
                "lastErrorKind": d.error_kind,
                "lastError": d.error,
            }),
        );
        let envelope: Map<String, Value> = serde_json::from_str(d.body).unwrap_or_default();
        payload.insert(
            "event".into(),
            json!({
                "id": d.event_id.as_str(),
                "notificationType": d.notification_type.as_str(),
                "transactionId": envelope.get("transactionId"),
                "referenceId": envelope.get("referenceId"),
            }),
        );
    }
    if let Some(r) = reason {
        payload.insert("reason".into(), Value::from(r));
    }
    payload.insert("at".into(), Value::from(at.clone()));
    Event {
        id: EventId::from(id),
        tenant_id: TenantId::from(SYSTEM_TENANT),
        reference_id: delivery.map(|d| d.delivery.to_string()),
        transaction_id: about.subscription.to_string(),
        notification_type: NotificationType::OperationalEvent,
        workflow_id: Some(about.tenant.to_string()),
        pay_load: payload,
        timestamp: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about<'a>(t: &'a TenantId, s: &'a SubscriptionId) -> About<'a> {
        About {
            tenant: t,
            subscription: s,
            url: "https://acme.example/hooks",
        }
    }

    #[test]
    fn a_blocked_notice_carries_the_delivery_the_code_and_the_event() {
        let (t, s, e) = (
            TenantId::from("acme"),
            SubscriptionId::from("sub_1"),
            EventId::from("evt_9"),
        );
        let body =
            r#"{"id":"evt_9","tenantId":"acme","transactionId":"tx-1","referenceId":"ref-1"}"#;
        let d = Attempted {
            delivery: DeliveryId(42),
            attempt: 3,
            status: "failed",
            http_status: Some(404),
            error_kind: Some("http_status"),
            error: Some("receiver answered 404"),
            event_id: &e,
            notification_type: NotificationType::TransactionEvent,
            body,
        };
        let ev = notice(NoticeKind::Blocked, about(&t, &s), Some(&d), None, 0);
        assert_eq!(ev.id.as_str(), "ntf_blocked_42_3");
        assert_eq!(ev.tenant_id.as_str(), SYSTEM_TENANT);
        assert_eq!(ev.transaction_id, "sub_1");
        assert_eq!(ev.reference_id.as_deref(), Some("dlv_42"));
        assert_eq!(ev.workflow_id.as_deref(), Some("acme"));
        assert_eq!(ev.notification_type, NotificationType::OperationalEvent);
        let p = Value::Object(ev.pay_load);
        assert_eq!(p["type"], "subscription.blocked");
        assert_eq!(p["delivery"]["lastHttpStatus"], 404);
        assert_eq!(p["delivery"]["id"], "dlv_42");
        assert_eq!(p["event"]["transactionId"], "tx-1");
        assert_eq!(p["event"]["referenceId"], "ref-1");
        assert_eq!(p["event"]["notificationType"], "TRANSACTION_EVENT");
        assert_eq!(p["subscription"]["tenantId"], "acme");
        // The id is a valid external id without '.', so receivers can verify its signature.
        assert!(crate::domain::validate_external_id("id", ev.id.as_str()).is_ok());
        assert!(!ev.id.as_str().contains('.'));
    }

    #[test]
    fn a_faulted_notice_has_no_delivery_and_says_why() {
        let (t, s) = (TenantId::from("acme"), SubscriptionId::from("sub_1"));
        let ev = notice(
            NoticeKind::Faulted,
            about(&t, &s),
            None,
            Some("actor failed 6 times"),
            1_700_000_000_000,
        );
        assert_eq!(ev.id.as_str(), "ntf_faulted_sub_1_1700000000000");
        assert!(ev.reference_id.is_none());
        let p = Value::Object(ev.pay_load);
        assert_eq!(p["type"], "subscription.faulted");
        assert_eq!(p["reason"], "actor failed 6 times");
        assert!(p.get("delivery").is_none());
    }

    #[test]
    fn the_system_tenants_own_subscriptions_are_never_notified() {
        assert!(!notifies(&TenantId::from(SYSTEM_TENANT)));
        assert!(notifies(&TenantId::from("acme")));
    }
}
