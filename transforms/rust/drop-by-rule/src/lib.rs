//! `drop-by-rule`: a filter. It never changes what it delivers.
//!
//! **The rule.** An event is dropped when its notification type is `NODE_EVENT` and either
//! * `payLoad.node.cacheHit` is `true` (the workflow node was answered from cache, so the
//!   receiver has already seen its result), or
//! * `payLoad.skip` is `true` (the producer marked it as not worth sending).
//!
//! Only the JSON boolean `true` counts (`"true"` or `1` do not). Every other event is delivered
//! with the headers and body exactly as hookline passed them. A dropped delivery ends as
//! `dropped` with a reason such as
//! `NODE_EVENT 28907 "8:Blacklist Check" was a cache hit (payLoad.node.cacheHit = true)`.

use common::parse_envelope;
use serde_json::{Map, Value};

wit_bindgen::generate!({
    path: "../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Delivery, Event, Guest};

struct DropByRule;

impl Guest for DropByRule {
    fn transform(event: Event) -> Result<Action, String> {
        if let Some(reason) = drop_reason(&event.notification_type, &event.body)? {
            return Ok(Action::Drop(reason));
        }
        Ok(Action::Deliver(Delivery {
            headers: event.headers,
            body: event.body,
        }))
    }
}

export!(DropByRule);

/// `Some(reason)` when the rule drops this event, `None` to deliver it.
pub fn drop_reason(notification_type: &str, body: &[u8]) -> Result<Option<String>, String> {
    if notification_type != "NODE_EVENT" {
        return Ok(None);
    }
    let envelope = parse_envelope(body)?;
    let Some(Value::Object(payload)) = envelope.get("payLoad") else {
        return Ok(None);
    };
    if let Some(Value::Object(node)) = payload.get("node")
        && node.get("cacheHit") == Some(&Value::Bool(true))
    {
        return Ok(Some(format!(
            "NODE_EVENT{} was a cache hit (payLoad.node.cacheHit = true)",
            describe(node)
        )));
    }
    if payload.get("skip") == Some(&Value::Bool(true)) {
        return Ok(Some(
            "NODE_EVENT marked as not to be sent (payLoad.skip = true)".to_string(),
        ));
    }
    Ok(None)
}

/// ` 28907 "8:Blacklist Check"` from the node's `id` and `name`, when present.
fn describe(node: &Map<String, Value>) -> String {
    let mut s = String::new();
    match node.get("id") {
        Some(Value::Number(n)) => s.push_str(&format!(" {n}")),
        Some(Value::String(id)) => s.push_str(&format!(" {id}")),
        _ => {}
    }
    if let Some(Value::String(name)) = node.get("name") {
        s.push_str(&format!(" {name:?}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(t: &str, body: &str) -> Option<String> {
        drop_reason(t, body.as_bytes()).unwrap()
    }

    #[test]
    fn drops_cache_hits_and_skips_of_node_events_only() {
        let hit = r#"{"payLoad":{"node":{"id":28907,"name":"8:Blacklist Check","cacheHit":true}}}"#;
        assert_eq!(
            reason("NODE_EVENT", hit).as_deref(),
            Some(
                r#"NODE_EVENT 28907 "8:Blacklist Check" was a cache hit (payLoad.node.cacheHit = true)"#
            )
        );
        assert_eq!(reason("WORKFLOW_EVENT", hit), None);
        assert_eq!(
            reason(
                "NODE_EVENT",
                r#"{"payLoad":{"skip":true,"node":{"cacheHit":false}}}"#
            )
            .as_deref(),
            Some("NODE_EVENT marked as not to be sent (payLoad.skip = true)")
        );
        assert_eq!(
            reason(
                "NODE_EVENT",
                r#"{"payLoad":{"node":{"cacheHit":"true"},"skip":1}}"#
            ),
            None
        );
        assert_eq!(reason("NODE_EVENT", r#"{"payLoad":{}}"#), None);
        // Other types are passed through without even parsing the body.
        assert_eq!(reason("CASE_EVENT", "not json"), None);
        assert!(drop_reason("NODE_EVENT", b"not json").is_err());
    }
}
