//! The domain: what hookline talks about, independent of how it is stored or sent.
//!
//! Events, tenants, subscriptions (the public views and the validated spec the engine runs),
//! deliveries and their attempts, transform metadata, identifiers and timestamps. Everything
//! here is plain data with its validation; nothing does I/O. Layers above (store, actors,
//! engine, API) exchange these types.

pub(crate) mod clock;
pub mod id;
mod model;

pub use id::*;
pub use model::*;
