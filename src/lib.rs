//! # hookline
//!
//! A durable, strictly ordered webhook delivery engine, embeddable as a library or run as a
//! server (`hookline serve`).
//!
//! Events (the callback contract's envelope) are journaled in SQLite, fanned out to every
//! matching subscription of their tenant, and POSTed to each subscription's URL strictly in
//! order: the next event goes only after the previous one got a 2xx or was given up on under the
//! subscription's failure policy, across retries, restarts and crashes.
//!
//! ```
//! use hookline::{Engine, EventInput, NewSubscription, NewTenant, NotificationType};
//!
//! #[tokio::main]
//! async fn main() -> hookline::Result<()> {
//!     // A throwaway journal; use `.path("hookline.db")` to keep one.
//!     let engine = Engine::builder().in_memory().build().await?;
//!     engine.create_tenant(NewTenant { id: "acme".into(), name: "Acme Lending".into(), rate_limit: None }).await?;
//!     let mut sub = NewSubscription::new("acme", "https://acme.example/hooks");
//!     sub.access_key = Some("s3cr3t".into());
//!     let sub = engine.create_subscription(sub).await?;
//!
//!     let receipt = engine
//!         .publish(
//!             EventInput::new("acme", "84e32dcfecc9f4dc", NotificationType::TransactionEvent)
//!                 .payload(serde_json::json!({"status": "PASSED"})),
//!         )
//!         .await?; // returns once the event and its delivery are durable
//!     assert_eq!(receipt.deliveries, 1);
//!
//!     let page = engine.list_deliveries(&sub.id, Default::default()).await?;
//!     assert_eq!(page.items[0].event_id, receipt.id);
//!     engine.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Layout (layers point one way: top uses bottom)
//! | module | owns |
//! |---|---|
//! | `api` | the HTTP API (axum), a thin layer over [`EngineHandle`] |
//! | [`engine`] | [`Engine`] builder and [`EngineHandle`], the only public door |
//! | `actors` | supervisor and one subscriber actor per subscription (ractor) |
//! | `journal` | the SQLite journal: group-commit writer, readers, recovery |
//! | `delivery` | one HTTP attempt: request building, timeouts, response capture |
//! | `policy` | status table, retry schedule, `Retry-After` (pure functions) |
//! | `ssrf`, `signing`, `oauth`, `tls`, `ratelimit`, `secretbox` | talking to receivers safely |
//! | [`transform`] | tenant WebAssembly transforms: the sandboxed runtime and the registry |
//! | `metrics` | the Prometheus registry behind `GET /metrics` |
//! | [`model`], [`config`], [`id`], [`error`] | data types, settings, identifiers, errors |
//!
//! ## Supervision tree
//! ```text
//! EngineHandle ──► Supervisor ──spawn_linked──► SubscriberActor (one per subscription with work)
//!                      │                              │ attempt task (tracked), result as message
//!                      └── restarts with backoff,     ▼
//!                          faulted after N/window   Journal writer (group commit) ◄── publish
//! ```
//!
//! The guarantees these modules keep are listed in `ARCHITECTURE.md` and restated where each is
//! kept (`journal` for 1, 2 and 7; `actors::subscriber` for 3, 4 and 5).

mod actors;
pub mod api;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
mod metrics;
mod outbound;
mod policy;
mod security;
mod store;
pub mod transform;

/// Crate-private hot paths, exposed for `benches/micro.rs` only: not part of the API, no
/// stability promise. Each function does what the delivery path does, in the same order.
#[doc(hidden)]
pub mod bench_support {
    use std::time::{Duration, SystemTime};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use crate::policy::{self, Decision};
    use crate::security::signing::{SigningKeys, signature_header};

    /// What the subscriber actor holds to judge an attempt: the retry policy and its RNG.
    #[derive(Debug)]
    pub struct Judge {
        policy: crate::RetryPolicy,
        rng: StdRng,
    }

    impl Judge {
        /// A judge with `policy` and a fixed seed (jitter only).
        pub fn new(policy: crate::RetryPolicy) -> Judge {
            Judge {
                policy,
                rng: StdRng::seed_from_u64(6),
            }
        }

        /// Status table, `Retry-After` (parsed as the sender does) and retry budget for one
        /// response; the retry delay when the delivery is to be retried.
        pub fn judge(
            &mut self,
            status: u16,
            retry_after: Option<&str>,
            counted: u32,
        ) -> Option<Duration> {
            let asked = retry_after.and_then(|v| policy::parse_retry_after(v, SystemTime::now()));
            match policy::decide(
                policy::classify_status(status),
                asked,
                counted,
                &self.policy,
                Duration::from_secs(3600),
                &mut self.rng,
            ) {
                Decision::RetryIn(d) => Some(d),
                Decision::Delivered | Decision::Dropped | Decision::Failed { .. } => None,
            }
        }
    }

    /// A subscription's signing keys as journaled (text forms).
    #[derive(Debug)]
    pub struct Keys(SigningKeys);

    impl Keys {
        /// A generated `whsec_` secret, plus an ed25519 key when `ed25519`.
        pub fn generate(ed25519: bool) -> Keys {
            // Generated keys are well formed, so `create` cannot fail here.
            Keys(SigningKeys::create(None, ed25519).unwrap_or_default())
        }

        /// The `webhook-signature` header of one delivery, as the sender builds it: secrets
        /// decoded from their text form, then one signature each.
        pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
            let now_ms = timestamp.saturating_mul(1000);
            let secrets = self.0.active(now_ms).map_err(|e| e.to_string())?;
            let ed = self.0.ed25519_key().map_err(|e| e.to_string())?;
            signature_header(&secrets, ed.as_ref(), msg_id, timestamp, body)
                .map_err(|e| e.to_string())
        }
    }
}

pub use config::{Durability, EngineConfig, Limits, MetricsSettings, Retention, ServerConfig};
pub use domain::{
    Attempt, CreatedTenant, Delivery, DeliveryDetail, DeliveryPage, DeliveryQuery, DeliveryStatus,
    EndpointTest, Event, EventInput, FailurePolicy, NewSubscription, NewTenant, NotificationType,
    Principal, PublishReceipt, ReceiverAuth, ReceiverAuthView, ReplayReceipt, ReplayWindow,
    RetryPolicy, Subscription, SubscriptionPatch, SubscriptionState, Tenant, TenantPatch,
    Timestamp, TransformAction, TransformInfo, TransformRef, TransformTest, TransformTestError,
    TransformVersion,
};
pub use domain::{DeliveryId, EventId, SubscriptionId, TenantId};
pub use engine::{Engine, EngineBuilder, EngineHandle};
pub use error::{Error, Result};
pub use policy::ratelimit::RateLimit;
pub use security::secretbox::Redacted;
pub use security::tls::{ClientTls, TlsView};
