//! IKEv2 (RFC 7296): the message codec first; the exchanges build on it.

pub mod payloads;
pub mod proposal;
pub mod ts;
pub mod wire;
