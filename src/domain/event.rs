//! Events: the callback contract's envelope as a producer submits it ([`EventInput`]), the
//! journaled form it is validated into once at the door ([`Event`]), and the receipt of a publish.
//!
//! An [`Event`]'s JSON is the body POSTed to receivers, so its fields serialise exactly as the
//! seeds name them (`payLoad`, `SCREAMING_SNAKE_CASE` notification types). The producer's
//! `timestamp` stays the producer's text: it is checked to be RFC 3339 but never re-rendered,
//! because receivers (and the signature over the body) see the bytes the producer sent, whatever
//! offset or precision they use; a [`Timestamp`](crate::domain::Timestamp) would normalise them.

use serde::{Deserialize, Serialize};

use crate::domain::time::Timestamp;
use crate::domain::{EventId, TenantId, validate_external_id};
use crate::error::{Error, Result};

/// The content type of every delivery, as the callback contract specifies.
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json;charset=UTF-8";

/// The kinds of notification of the callback contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationType {
    /// A workflow node finished executing.
    NodeEvent,
    /// A workflow execution ended.
    WorkflowEvent,
    /// A transaction changed status.
    TransactionEvent,
    /// A case changed status.
    CaseEvent,
    /// hookline's own operational notification (a subscription blocked, disabled, faulted or
    /// recovered, a delivery out of retries). Only hookline publishes it, into its system
    /// tenant (see `notify`); a producer's event of this type is refused.
    OperationalEvent,
}

impl NotificationType {
    /// All notification types, in declaration order.
    pub const ALL: [NotificationType; 5] = [
        NotificationType::NodeEvent,
        NotificationType::WorkflowEvent,
        NotificationType::TransactionEvent,
        NotificationType::CaseEvent,
        NotificationType::OperationalEvent,
    ];

    /// The wire name, e.g. `TRANSACTION_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::NodeEvent => "NODE_EVENT",
            NotificationType::WorkflowEvent => "WORKFLOW_EVENT",
            NotificationType::TransactionEvent => "TRANSACTION_EVENT",
            NotificationType::CaseEvent => "CASE_EVENT",
            NotificationType::OperationalEvent => "OPERATIONAL_EVENT",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event as a producer submits it: the callback seed's envelope, with an optional `id`
/// (generated when absent) and an optional `workflowId` used by subscription filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventInput {
    /// The producer's id for this event; publishing the same (tenant, id) twice is idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tenant (customer) the event belongs to.
    pub tenant_id: String,
    /// A unique id of the end user the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The transaction the event belongs to.
    pub transaction_id: String,
    /// What kind of notification this is.
    pub notification_type: NotificationType,
    /// The workflow that produced the event, used by `workflowIds` filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The event's content: a JSON object.
    #[serde(rename = "payLoad")]
    #[schema(value_type = Object)]
    pub pay_load: serde_json::Map<String, serde_json::Value>,
    /// When the event happened, RFC 3339.
    pub timestamp: String,
}

impl EventInput {
    /// A new event with an empty payload and the current time as `timestamp`.
    pub fn new(
        tenant_id: impl Into<String>,
        transaction_id: impl Into<String>,
        notification_type: NotificationType,
    ) -> Self {
        EventInput {
            id: None,
            tenant_id: tenant_id.into(),
            reference_id: None,
            transaction_id: transaction_id.into(),
            notification_type,
            workflow_id: None,
            pay_load: serde_json::Map::new(),
            timestamp: Timestamp::now().to_string(),
        }
    }

    /// Sets the producer's event id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the payload; anything that is not a JSON object is refused by `publish`.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.pay_load = match payload {
            serde_json::Value::Object(map) => map,
            other => {
                let mut m = serde_json::Map::new();
                m.insert(String::from("__invalid__"), other);
                m
            }
        };
        self
    }

    /// Sets the workflow id.
    pub fn workflow_id(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(id.into());
        self
    }

    /// Sets the reference id.
    pub fn reference_id(mut self, id: impl Into<String>) -> Self {
        self.reference_id = Some(id.into());
        self
    }

    /// Validates the envelope into the journaled form, generating an id when none was given.
    pub(crate) fn validate(self) -> Result<Event> {
        validate_external_id("tenantId", &self.tenant_id)?;
        if self.notification_type == NotificationType::OperationalEvent {
            return Err(Error::invalid(
                "notificationType",
                "OPERATIONAL_EVENT is reserved for hookline's own notifications",
            ));
        }
        let id = match self.id {
            Some(id) => {
                validate_external_id("id", &id)?;
                if id.contains('.') {
                    // The signed content is "{id}.{timestamp}.{body}": a dot would make it ambiguous.
                    return Err(Error::invalid("id", "must not contain '.'"));
                }
                EventId::from(id)
            }
            None => EventId::generate(),
        };
        if self.transaction_id.is_empty() || self.transaction_id.len() > 256 {
            return Err(Error::invalid(
                "transactionId",
                "must be 1 to 256 characters",
            ));
        }
        if let Some(r) = &self.reference_id
            && r.len() > 256
        {
            return Err(Error::invalid(
                "referenceId",
                "must be at most 256 characters",
            ));
        }
        if let Some(w) = &self.workflow_id
            && (w.is_empty() || w.len() > 256)
        {
            return Err(Error::invalid("workflowId", "must be 1 to 256 characters"));
        }
        if self.pay_load.contains_key("__invalid__") && self.pay_load.len() == 1 {
            return Err(Error::invalid("payLoad", "must be a JSON object"));
        }
        if Timestamp::parse(&self.timestamp).is_err() {
            return Err(Error::invalid(
                "timestamp",
                "must be an RFC 3339 date-time, e.g. 2026-11-23T10:12:16.827Z",
            ));
        }
        Ok(Event {
            id,
            tenant_id: TenantId::from(self.tenant_id),
            reference_id: self.reference_id,
            transaction_id: self.transaction_id,
            notification_type: self.notification_type,
            workflow_id: self.workflow_id,
            pay_load: self.pay_load,
            timestamp: self.timestamp,
        })
    }
}

/// A journaled event: immutable once accepted. Its JSON form is the body POSTed to receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event id (`webhook-id` on the wire).
    pub id: EventId,
    /// The tenant the event belongs to.
    pub tenant_id: TenantId,
    /// A unique id of the end user the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The transaction the event belongs to.
    pub transaction_id: String,
    /// What kind of notification this is.
    pub notification_type: NotificationType,
    /// The workflow that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The event's content.
    #[serde(rename = "payLoad")]
    pub pay_load: serde_json::Map<String, serde_json::Value>,
    /// When the event happened: the producer's RFC 3339 text, byte for byte.
    pub timestamp: String,
}

/// What `publish` returns once the event and its deliveries are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishReceipt {
    /// The event id (generated when the producer gave none).
    pub id: EventId,
    /// The event's position in the journal; deliveries of a subscription go out in `seq` order.
    pub seq: i64,
    /// How many subscriptions the event was fanned out to.
    pub deliveries: u32,
    /// True when this (tenant, id) had been published before: nothing new was created.
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn envelope_validation_names_the_field() {
        let ok = EventInput::new("acme", "t1", NotificationType::NodeEvent);
        assert!(ok.clone().validate().is_ok());
        let mut bad = ok.clone();
        bad.timestamp = "yesterday".into();
        assert!(
            matches!(bad.validate(), Err(Error::Invalid { field, .. }) if field == "timestamp")
        );
        let bad = ok.clone().payload(serde_json::json!([1, 2]));
        assert!(matches!(bad.validate(), Err(Error::Invalid { field, .. }) if field == "payLoad"));
        let mut bad = ok;
        bad.transaction_id.clear();
        assert!(
            matches!(bad.validate(), Err(Error::Invalid { field, .. }) if field == "transactionId")
        );
    }

    #[test]
    fn envelope_json_uses_the_seed_names() {
        let json = serde_json::json!({
            "tenantId": "acme", "transactionId": "84e32dcfecc9f4dc",
            "notificationType": "NODE_EVENT", "payLoad": {"id": 28907},
            "timestamp": "2022-08-12T10:12:16.827Z"
        });
        let input: EventInput = serde_json::from_value(json).expect("seed envelope parses");
        let event = input.validate().expect("valid");
        let out = serde_json::to_value(&event).expect("serialises");
        assert_eq!(out["payLoad"]["id"], 28907);
        assert_eq!(out["notificationType"], "NODE_EVENT");
        assert!(out["id"].as_str().is_some_and(|s| s.starts_with("evt_")));
    }

    #[test]
    fn the_producers_timestamp_is_kept_byte_for_byte() {
        for ts in [
            "2022-08-12T12:12:16.8+02:00",
            "2022-08-12T10:12:16Z",
            "2022-08-12T10:12:16.827123456Z",
        ] {
            let mut input = EventInput::new("acme", "t1", NotificationType::NodeEvent);
            input.timestamp = ts.into();
            let event = input.validate().expect("valid");
            let body = serde_json::to_string(&event).expect("serialises");
            assert!(body.contains(&format!("\"timestamp\":\"{ts}\"")), "{body}");
        }
    }
}
