//! Security associations as the fast path holds them: the per-packet part
//! of each direction, owned by one worker core.

use super::aead::GcmKey;
use super::replay::ReplayWindow;
use crate::addr::{Ipv4Cidr, Ipv6Cidr};
use std::net::IpAddr;

/// Traffic selectors of one side of a tunnel: the subnets a clinic speaks
/// from (inbound) and that we send to through the tunnel (outbound).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub ipv4: Vec<Ipv4Cidr>,
    pub ipv6: Vec<Ipv6Cidr>,
}

impl Selectors {
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.ipv4.iter().any(|c| c.contains(ip)),
            IpAddr::V6(ip) => self.ipv6.iter().any(|c| c.contains(ip)),
        }
    }
}

/// Byte and packet limits of an SA (RFC 4301 §4.4.2.1); 0 means none. At the
/// soft limit the control process is told to rekey, at the hard limit the SA
/// stops carrying traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    pub soft_bytes: u64,
    pub hard_bytes: u64,
    pub soft_packets: u64,
    pub hard_packets: u64,
}

/// Where an SA's use stands against its [`Lifetime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expiry {
    Live,
    Soft,
    Hard,
}

impl Lifetime {
    fn stage(&self, bytes: u64, packets: u64) -> Expiry {
        let over = |limit: u64, used: u64| limit != 0 && used >= limit;
        if over(self.hard_bytes, bytes) || over(self.hard_packets, packets) {
            Expiry::Hard
        } else if over(self.soft_bytes, bytes) || over(self.soft_packets, packets) {
            Expiry::Soft
        } else {
            Expiry::Live
        }
    }
}

/// Traffic counters of one SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SaCounters {
    pub packets: u64,
    /// Bytes of inner packets (what the lifetimes count, RFC 4301 §4.4.2.1).
    pub bytes: u64,
    /// Drops for reasons that belong to an SA.
    pub drops: SaDrops,
}

/// Per-SA drop counts, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SaDrops {
    pub replayed: u64,
    pub too_old: u64,
    pub bad_icv: u64,
    pub bad_padding: u64,
    pub bad_next_header: u64,
    pub dummy: u64,
    pub selector_mismatch: u64,
    pub expired: u64,
    pub inner_destination: u64,
    pub encapsulation_mismatch: u64,
}


#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// An SA reached a soft or hard lifetime: the control process rekeys it
/// (soft) or deletes it (hard). Raised once per stage by the owner core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaEvent {
    pub spi: u32,
    pub direction: Direction,
    pub expiry: Expiry,
    pub packets: u64,
    pub bytes: u64,
}

/// Counts a packet against the lifetime; returns the event if it reached a new stage.
fn count_use(spi: u32, direction: Direction, counters: &mut SaCounters, lifetime: &Lifetime, expiry: &mut Expiry, bytes: usize) -> Option<SaEvent> {
    counters.packets += 1;
    counters.bytes += bytes as u64;
    let stage = lifetime.stage(counters.bytes, counters.packets);
    if stage <= *expiry {
        return None;
    }
    *expiry = stage;
    Some(SaEvent { spi, direction, expiry: stage, packets: counters.packets, bytes: counters.bytes })
}

/// The receiving half of a CHILD_SA.
pub struct InboundSa {
    pub spi: u32,
    pub key: GcmKey,
    pub esn: bool,
    pub replay: ReplayWindow,
    /// Inner sources allowed through this SA (RFC 4301 §5.2).
    pub selectors: Selectors,
    /// The tunnel this SA belongs to, on the same core (for NAT-T learning).
    pub tunnel: u32,
    pub lifetime: Lifetime,
    pub expiry: Expiry,
    pub counters: SaCounters,
}

impl InboundSa {
    /// A fresh SA: no packets yet, the window empty.
    pub fn new(spi: u32, key: GcmKey, esn: bool, window: u32, selectors: Selectors, tunnel: u32, lifetime: Lifetime) -> Self {
        InboundSa {
            spi,
            key,
            esn,
            replay: ReplayWindow::new(window, esn),
            selectors,
            tunnel,
            lifetime,
            expiry: Expiry::Live,
            counters: SaCounters::default(),
        }
    }

    /// Counts an accepted inner packet; returns the event of a newly reached lifetime stage.
    pub fn count(&mut self, inner_bytes: usize) -> Option<SaEvent> {
        count_use(self.spi, Direction::Inbound, &mut self.counters, &self.lifetime, &mut self.expiry, inner_bytes)
    }

    /// Brings what a `len`-byte packet on this SA will read into the cache:
    /// the key, the replay window's top block and the selectors.
    #[inline]
    pub fn prefetch(&self, len: usize) {
        self.key.prefetch(len);
        self.replay.prefetch();
        if let Some(first) = self.selectors.ipv4.first() {
            dpdk_sys::prefetch(first);
        }
    }
}

/// The sending half of a CHILD_SA.
pub struct OutboundSa {
    pub spi: u32,
    pub key: GcmKey,
    pub esn: bool,
    /// The last sequence number sent (the next packet gets one more).
    pub seq: u64,
    /// Inner destinations this SA carries.
    pub selectors: Selectors,
    pub tunnel: u32,
    pub lifetime: Lifetime,
    pub expiry: Expiry,
    pub counters: SaCounters,
}

impl OutboundSa {
    /// A fresh SA: the first packet gets sequence number 1.
    pub fn new(spi: u32, key: GcmKey, esn: bool, selectors: Selectors, tunnel: u32, lifetime: Lifetime) -> Self {
        OutboundSa { spi, key, esn, seq: 0, selectors, tunnel, lifetime, expiry: Expiry::Live, counters: SaCounters::default() }
    }

    /// The next sequence number, or None once the counter would wrap: an SA
    /// must then stop sending (RFC 4303 §3.3.3), since the IV would repeat.
    #[inline]
    pub fn next_sequence(&mut self) -> Option<u64> {
        let limit = if self.esn { u64::MAX } else { u64::from(u32::MAX) };
        if self.seq >= limit {
            return None;
        }
        self.seq += 1;
        Some(self.seq)
    }

    /// Counts a sent inner packet; returns the event of a newly reached lifetime stage.
    pub fn count(&mut self, inner_bytes: usize) -> Option<SaEvent> {
        count_use(self.spi, Direction::Outbound, &mut self.counters, &self.lifetime, &mut self.expiry, inner_bytes)
    }
}

/// The outer endpoints of a tunnel, shared by its SAs in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Our outside address.
    pub local: IpAddr,
    /// The peer's current address (updated by NAT-T from authenticated packets).
    pub remote: IpAddr,
    /// UDP encapsulation (RFC 3948): our port and the peer's current port.
    pub udp: Option<UdpEncap>,
    /// Copy the inner DSCP into the outer header (RFC 4301 §5.1.2.1).
    pub copy_dscp: bool,
    /// The tenant this tunnel belongs to (behind NAT); None for routed tunnels.
    pub tenant: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncap {
    pub local_port: u16,
    pub remote_port: u16,
}
