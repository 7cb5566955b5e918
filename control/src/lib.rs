//! Sekisho's control process: the IKEv2 responder, the tenant registry and
//! policy, which push SA and rule tables to the dataplane through shared
//! memory (ARCHITECTURE.md). Today it holds its end of the link: it reads
//! the packets the dataplane passes to it (`link`).

pub mod link;
