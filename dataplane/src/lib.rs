//! Sekisho's dataplane: wire views, the packet pipeline, the port layer
//! (DPDK and in-memory) and the shared-memory stats area.
//!
//! Data flows one way: a [`port::Port`] yields bursts, [`worker::Worker`]
//! runs each frame through the [`pipeline`], and sends the result out of a
//! port. Only `port::dpdk` talks to DPDK, and only it and `shm` use `unsafe`.

pub mod addr;
pub mod config;
pub mod craft;
pub mod esp;
pub mod fuzzing;
pub mod nat;
pub mod neighbour;
pub mod pipeline;
pub mod policy;
pub mod port;
pub mod sad;
pub mod tables;
pub mod shm;
pub mod tunnels;
pub mod wire;
pub mod worker;

use std::fmt;

/// The gateway's two ports: toward the clinics and toward the inside network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Outside = 0,
    Inside = 1,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Outside => Side::Inside,
            Side::Inside => Side::Outside,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Outside => "outside",
            Side::Inside => "inside",
        })
    }
}
