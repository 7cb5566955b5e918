//! Sekisho's control process: the IKEv2 responder, the tenant registry and
//! policy, which push SA and rule tables to the dataplane through shared
//! memory (ARCHITECTURE.md). It reads the packets the dataplane passes to
//! it (`link`), speaks IKEv2 (`ike`) and checks certificates (`pki`).

pub mod admin;
pub mod audit;
pub mod config;
pub mod dataplane;
pub mod fuzzing;
pub mod ike;
pub mod link;
pub mod metrics;
pub mod pki;
pub mod router_config;
pub mod spis;
pub mod tenants;
pub mod udp;
