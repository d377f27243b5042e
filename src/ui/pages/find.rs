//! `/ui/find`: go straight to a delivery (`dlv_…`) or a subscription (`sub_…`) by its id, or
//! to the subscriptions whose URL contains the text.
//!
//! Finding what happened to an event by `transactionId`, `referenceId` or event id needs an
//! index over the events the store does not have yet; the page says so instead of scanning.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::super::UiState;
use super::super::error::{UiError, UiResult};
use super::super::session::Viewer;
use super::super::view::{Chrome, render, urlencode};
use super::{visible_delivery, visible_subscription};

pub(super) fn routes() -> Router<UiState> {
    Router::new().route("/ui/find", get(find))
}

#[derive(Deserialize, Default)]
struct FindQuery {
    q: Option<String>,
}

#[derive(Template)]
#[template(path = "find.html")]
struct FindPage {
    chrome: Chrome,
    q: String,
    message: String,
}

async fn find(
    State(state): State<UiState>,
    viewer: Viewer,
    Query(fq): Query<FindQuery>,
) -> UiResult<Response> {
    let q = fq.q.unwrap_or_default().trim().to_owned();
    let message = if q.is_empty() {
        String::new()
    } else if q.starts_with("dlv_") {
        match visible_delivery(&state, &viewer, &q).await {
            Ok(_) => return Ok(Redirect::to(&format!("/ui/deliveries/{q}")).into_response()),
            Err(UiError::NotFound(_)) => format!("No delivery {q}."),
            Err(e) => return Err(e),
        }
    } else if q.starts_with("sub_") {
        match visible_subscription(&state, &viewer, &q).await {
            Ok(_) => return Ok(Redirect::to(&format!("/ui/subscriptions/{q}")).into_response()),
            Err(UiError::NotFound(_)) => format!("No subscription {q}."),
            Err(e) => return Err(e),
        }
    } else {
        return Ok(Redirect::to(&format!("/ui/subscriptions?q={}", urlencode(&q))).into_response());
    };
    let page: Html<String> = render(&FindPage {
        chrome: viewer.chrome("find"),
        q,
        message,
    })?;
    Ok(page.into_response())
}
