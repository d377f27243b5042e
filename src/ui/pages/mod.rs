//! The dashboard's pages, one file per family: its routes, handlers and view structs.
//!
//! Handlers stay short: extract the [`Viewer`], load what the page shows through the engine,
//! check the viewer may see it (another tenant's resource is a 404), build a view of plain
//! strings and numbers, render. Every state change is a POST that checks the CSRF token first
//! and answers with a redirect back to the page it came from (post/redirect/get), carrying a
//! fixed flash message chosen here, never text from the request.
//!
//! | file | pages |
//! |---|---|
//! | `overview` | `/ui/`: subscriptions by state, backlogs, what needs attention |
//! | `subscriptions` | `/ui/subscriptions`: the filtered list |
//! | `subscription` | `/ui/subscriptions/{id}`: head of line, settings, deliveries; its actions |
//! | `delivery` | `/ui/deliveries/{id}`: status, code, attempts; resubmit, skip |
//! | `transforms` | `/ui/transforms`: a tenant's transforms, and trying one on an envelope |
//! | `find` | `/ui/find`: a tenant's events by transactionId, referenceId or id; a delivery or subscription by id |
//! | `notifications` | `/ui/notifications`: operational notifications and their receivers |

use askama::Template;
use axum::Router;
use axum::response::Redirect;
use axum::routing::get;

use super::UiState;
use super::error::{UiError, UiResult};
use super::session::Viewer;
use super::view::Chrome;
use crate::domain::{Delivery, DeliveryId, Subscription, SubscriptionId};

mod delivery;
mod find;
mod notifications;
mod overview;
mod subscription;
mod subscriptions;
mod transforms;

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .merge(overview::routes())
        .merge(subscriptions::routes())
        .merge(subscription::routes())
        .merge(delivery::routes())
        .merge(transforms::routes())
        .merge(find::routes())
        .merge(notifications::routes())
        .route("/ui/{*rest}", get(not_found))
}

async fn not_found(_viewer: Viewer) -> UiError {
    UiError::NotFound("no such page".into())
}

/// The message a page shows after an action, from the `done` query parameter. Only these fixed
/// texts can appear: the parameter selects one, it is never echoed.
pub(super) fn flash(done: Option<&str>, n: Option<u64>) -> Option<String> {
    let n = n.unwrap_or(0);
    let text = match done? {
        "paused" => "Paused: no attempt starts until it is resumed; events keep accumulating.".into(),
        "resumed" => "Resumed.".into(),
        "resubmitted" => "Resubmitted: the delivery is pending again, in its place in the order.".into(),
        "skipped" => "Skipped: the queue moves on past it.".into(),
        "rotated" => "The signing secret was replaced; the previous one is still sent during the grace period.".into(),
        "replayed" => format!("Replayed {n} deliveries: they go out again in their original order."),
        "bulk" => format!("Resubmitted {n} failed deliveries."),
        _ => return None,
    };
    Some(text)
}

/// A subscription the viewer may see, or 404.
pub(super) async fn visible_subscription(
    state: &UiState,
    viewer: &Viewer,
    id: &str,
) -> UiResult<Subscription> {
    let sub = state
        .engine
        .get_subscription(&SubscriptionId::from(id))
        .await?;
    viewer.may_see(&sub.tenant_id, "subscription", id)?;
    Ok(sub)
}

/// A delivery the viewer may see, or 404.
pub(super) async fn visible_delivery(
    state: &UiState,
    viewer: &Viewer,
    id: &str,
) -> UiResult<(DeliveryId, Delivery)> {
    let did: DeliveryId = id.parse()?;
    let detail = state.engine.get_delivery(did).await?;
    viewer.may_see(&detail.delivery.tenant_id, "delivery", id)?;
    Ok((did, detail.delivery))
}

/// A page asking to confirm an action that cannot be undone, posting to `action`.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(super) struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
    pub action: String,
    pub button: &'static str,
    pub back: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_texts_are_fixed() {
        assert!(flash(Some("paused"), None).is_some());
        assert!(flash(Some("<script>"), None).is_none());
        assert_eq!(
            flash(Some("bulk"), Some(3)).as_deref(),
            Some("Resubmitted 3 failed deliveries.")
        );
        assert!(flash(None, Some(3)).is_none());
    }
}
