//! Outbound HTTP: one attempt's request to a receiver, and the OAuth2 tokens some receivers
//! require.

pub(crate) mod oauth;
mod sender;

pub(crate) use sender::*;
