//! The domain: what hookline talks about, independent of how it is stored or sent.
//!
//! Everything here is plain data with its validation; nothing does I/O. Layers above (store,
//! actors, engine, API) exchange these types, always by their `crate::domain::X` paths (the
//! re-exports below), so a type can move between the files of this folder without touching them.
//! Input types (`EventInput`, `NewSubscription`, `SubscriptionPatch`, ...) are raw and are
//! validated once, at the door, into forms that cannot be invalid (`Event`, `SubscriptionSpec`).
//! Every public type serialises as camelCase JSON, as the HTTP API and the seeds do.
//!
//! | module | owns |
//! |---|---|
//! | `event` | the envelope a producer publishes, the journaled event, the publish receipt |
//! | `tenant` | tenants, their creation and patch, who is calling (`Principal`) |
//! | `subscription` | subscription input, the validated spec and its filters, the public view |
//! | `auth` | how hookline authenticates to a receiver, and what may be shown of it |
//! | `headers` | which custom request headers a subscription may set |
//! | `cluster` | the nodes sharing a store, as `GET /v1/cluster` shows them |
//! | `delivery` | deliveries, attempts, listing, replay, the endpoint test's answer |
//! | `transform` | transform versions, bindings, test runs, names |
//! | `ordering` | ordering keys: a subscription's `ordering` and the key of one event |
//! | `state` | a stored subscription (spec and state flags) and its public state |
//! | [`id`] | identifier newtypes |
//! | `time` | [`Timestamp`] and the wall clock the journal stores (milliseconds) |

use serde::{Deserialize, Deserializer};

mod auth;
mod cluster;
mod delivery;
mod event;
mod headers;
pub mod id;
mod insight;
pub(crate) mod ordering;
mod state;
mod subscription;
mod tenant;
pub(crate) mod time;
mod transform;

/// The wall-clock helpers under the name they had before `time` absorbed them; kept so that
/// code importing `crate::domain::clock::{now_ms, until_ms}` needs no change.
pub(crate) use self::time as clock;

pub use self::auth::{ReceiverAuth, ReceiverAuthView};
pub use self::cluster::{ClusterNode, ClusterView};
pub use self::delivery::{
    Attempt, Delivery, DeliveryDetail, DeliveryPage, DeliveryQuery, DeliveryStatus, EndpointTest,
    ReplayReceipt, ReplayWindow,
};
pub(crate) use self::event::CONTENT_TYPE_JSON;
pub use self::event::{Event, EventInput, NotificationType, PublishReceipt};
pub use self::id::*;
pub use self::insight::{
    AttemptRollup, AttemptStats, DurationCount, EventKey, EventTrace, MinuteCount, MinuteRollup,
    SubscriptionFailures,
};
pub use self::ordering::{BlockedKey, Ordering};
pub(crate) use self::state::SubscriptionRow;
pub use self::subscription::{
    FailurePolicy, NewSubscription, Subscription, SubscriptionPatch, SubscriptionState,
};
pub(crate) use self::subscription::{SubscriptionDefaults, SubscriptionSpec};
pub use self::tenant::{CreatedTenant, NewTenant, Principal, Tenant, TenantPatch};
pub use self::time::Timestamp;
pub(crate) use self::transform::validate_transform_name;
pub use self::transform::{
    TransformAction, TransformInfo, TransformRef, TransformTest, TransformTestError,
    TransformVersion,
};
/// Subscriptions carry a retry policy; the policy layer owns its rules.
pub use crate::policy::RetryPolicy;
/// What the API shows of a subscription's TLS settings; the security layer computes it.
pub use crate::security::tls::TlsView;

/// Deserialises a field that distinguishes "absent" (`None`, via `#[serde(default)]`) from
/// `null` (`Some(None)`): how patches remove a setting.
pub(crate) fn double_option<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
