//! IKEv2 (RFC 7296): the message codec, the key schedule, and a responder
//! split by exchange.

pub mod auth;
pub mod create_child_sa;
pub mod dh;
pub mod ike_auth;
pub mod informational;
pub mod initiator;
pub mod keys;
pub mod payloads;
pub mod proposal;
pub mod protect;
pub mod rekey;
pub mod responder;
pub mod sa;
pub mod sa_init;
pub mod sk;
pub mod ts;
pub mod wire;

#[cfg(test)]
mod tests;
