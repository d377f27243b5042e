//! The cluster as operators see it (`GET /v1/cluster`): this node, how the store is shared,
//! and every node with its heartbeat and the subscriptions it holds. Plain data.

use serde::{Deserialize, Serialize};

use crate::domain::time::Timestamp;

/// The nodes sharing this engine's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// `exclusive` (SQLite: this process owns the store, and every subscription) or `shared`
    /// (PostgreSQL: nodes claim subscriptions under leases).
    #[schema(pattern = "^(exclusive|shared)$")]
    pub store: String,
    /// How long a node holds a subscription without renewing, in milliseconds.
    pub lease_ttl_ms: u64,
    /// A node whose last heartbeat is older than this is shown `alive: false`.
    pub silent_after_ms: u64,
    /// Every registered node, by id.
    pub nodes: Vec<ClusterNode>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNode {
    /// Its id (`HOOKLINE_NODE_ID`, by default host name and process id).
    pub id: String,
    /// The hookline version it runs.
    pub version: String,
    /// When it joined.
    #[schema(value_type = String)]
    pub started_at: Timestamp,
    /// Its last heartbeat.
    #[schema(value_type = String)]
    pub heartbeat_at: Timestamp,
    /// How long ago that was, in milliseconds, measured on the store's clock.
    pub heartbeat_age_ms: u64,
    /// Whether it sent a heartbeat recently (within `silentAfterMs`). A silent node's
    /// subscriptions go to the other nodes when their leases expire.
    pub alive: bool,
    /// Subscriptions whose lease it holds now.
    pub subscriptions_held: u64,
    /// Whether it is the node that answered.
    pub this_node: bool,
}
