//! Outbound HTTP: one attempt's request to a receiver, and the OAuth2 tokens some receivers
//! require.
//!
//! Plain code, no actors: `attempt` is the attempt as data (request, outcome), `sender` makes
//! it, `oauth` fetches and caches the tokens of OAuth2 receivers.

mod attempt;
pub(crate) mod oauth;
mod sender;

pub(crate) use attempt::*;
pub(crate) use sender::*;
