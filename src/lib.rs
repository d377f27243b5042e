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
//! ## Layout
//! Layers point one way: a module uses only the modules below it in this table, and
//! `../shared/tools/module-cycles` checks that no top-level module is part of an import cycle.
//! The folder tree, the data flow and the guarantees are in `docs/ARCHITECTURE.md`.
//!
//! | module | owns |
//! |---|---|
//! | `cli` (binary only) | the client subcommands and `hookline load`, over the HTTP API |
//! | [`api`] | the HTTP API (axum): a thin layer over [`EngineHandle`] |
//! | [`ui`] | the operator dashboard and tenant portal under `/ui`, beside the API, over [`EngineHandle`] |
//! | [`engine`] | [`Engine`] builder and [`EngineHandle`], the only public door |
//! | `actors` | the supervisor and one subscriber actor per subscription (ractor) |
//! | `outbound` | one attempt's HTTP request (the sender), OAuth2 client-credentials tokens |
//! | [`config`] | engine settings; [`config::server`]: the server's layered configuration |
//! | [`transform`] | tenant WebAssembly transforms: the sandboxed runtime and the registry |
//! | [`notify`] | operational notifications (blocked, disabled, faulted, exhausted, recovered) as events of the system tenant (pure) |
//! | `store` | the storage seam, and `store::sqlite`: the SQLite journal (writer, readers, recovery) |
//! | `metrics` | the engine's Prometheus registry behind `GET /metrics` |
//! | [`domain`] | events, tenants, subscriptions, deliveries, attempts, identifiers (plain data) |
//! | `policy`, `security` | pure delivery rules (status table, retries, rate limits); talking to receivers safely (SSRF, signing, TLS, sealed secrets) |
//! | [`error`] | the public error type |
//!
//! ## Supervision tree
//! ```text
//! EngineHandle ──► Supervisor ──spawn_linked──► SubscriberActor (one per subscription with work)
//!                      │                              │ attempt task (tracked): transform, HTTP;
//!                      │                              │ its result comes back as a message
//!                      └── restarts with backoff,     ▼
//!                          faulted after N/window   store: record the outcome, then the next head
//!
//! publish ──► store (group commit: event + deliveries) ──wake──► Supervisor
//! ```
//!
//! The guarantees these modules keep are numbered in `docs/ARCHITECTURE.md`; module docs cite
//! them by number. Where each is kept: 1 (durable accept) and 7 (crash recovery) in `store`; 2 (at-least-once) in
//! `store` and `actors`; 3 (strict order) and 5 (failure policy) in `actors`; 4 (the status
//! table) in `policy`; 6 (isolation) in `engine`, `api`, `actors` and [`transform`].

mod actors;
pub mod api;
pub mod config;
#[doc(hidden)]
pub mod crashpoint;
pub mod domain;
pub mod engine;
pub mod error;
mod health;
mod metrics;
pub mod notify;
mod outbound;
mod policy;
mod security;
mod store;
#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
pub mod testing;
pub mod transform;
pub mod ui;

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

/// Crate-private checks exposed for the fuzz targets under `fuzz/` only: not part of the API,
/// no stability promise (see docs/testing.md, "Fuzzing").
#[doc(hidden)]
pub mod fuzz_support;

pub use config::{Durability, EngineConfig, Limits, MetricsSettings, Retention, ServerConfig};
pub use domain::{
    Attempt, BlockedKey, CreatedTenant, Delivery, DeliveryDetail, DeliveryPage, DeliveryQuery,
    DeliveryStatus, EndpointTest, Event, EventInput, FailurePolicy, NewSubscription, NewTenant,
    NotificationType, Ordering, Principal, PublishReceipt, ReceiverAuth, ReceiverAuthView,
    ReplayReceipt, ReplayWindow, RetryPolicy, Subscription, SubscriptionPatch, SubscriptionState,
    Tenant, TenantPatch, Timestamp, TransformAction, TransformInfo, TransformRef, TransformTest,
    TransformTestError, TransformVersion,
};
pub use domain::{DeliveryId, EventId, SubscriptionId, TenantId};
pub use engine::{Engine, EngineBuilder, EngineHandle};
pub use error::{Error, Result};
pub use policy::StatusTable;
pub use policy::ratelimit::RateLimit;
pub use security::secretbox::Redacted;
pub use security::tls::{ClientTls, TlsView};
