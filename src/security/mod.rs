//! Talking to receivers safely: the address rules (SSRF), Standard Webhooks signing, client
//! TLS identities, and the sealing of secrets at rest.
//!
//! Plain code below the domain: nothing here knows about subscriptions, queues or the store.

pub(crate) mod secretbox;
pub(crate) mod signing;
pub(crate) mod ssrf;
pub(crate) mod tls;
