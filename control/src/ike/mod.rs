//! IKEv2 (RFC 7296): the message codec, the key schedule and the
//! exchanges of a responder.

pub mod auth;
pub mod dh;
pub mod keys;
pub mod payloads;
pub mod proposal;
pub mod sk;
pub mod ts;
pub mod wire;
