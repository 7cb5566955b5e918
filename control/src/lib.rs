//! Sekisho's control process: the IKEv2 responder, the tenant registry and
//! policy, which push SA and rule tables to the dataplane through shared
//! memory (ARCHITECTURE.md). Today it holds its end of the link: it reads
//! the packets the dataplane passes to it (`link`), and the IKEv2 message
//! codec (`ike::wire`).

pub mod fuzzing;
pub mod ike;
pub mod link;
