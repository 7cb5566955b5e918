//! The state of one IKE SA at the responder, and of its CHILD_SAs.

use super::keys::{IkeKeys, Prf};
use super::protect::{self, Chain, Keys, Reassembly};
use super::sk::Protection;
use super::ts::TrafficSelector;
use super::wire::{Header, FLAG_RESPONSE};
use crate::pki::identity::Identity;
use std::net::SocketAddr;
use std::time::Instant;

/// Where an IKE SA is in its life.
pub enum Phase {
    /// IKE_SA_INIT answered; the messages are kept for the AUTH payloads
    /// (§2.15 signs each side's first message).
    /// `source` is where IKE_SA_INIT came from: the half-open count's key.
    HalfOpen { request: Vec<u8>, response: Vec<u8>, source: std::net::IpAddr },
    Established { tenant: String, peer_id: Identity },
}

/// A CHILD_SA: ESP with AES-GCM-16 in both directions.
#[derive(Clone, PartialEq, Eq)]
pub struct ChildSa {
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    /// AES key and 4-byte salt (RFC 4106 §8.1), each direction.
    pub inbound_key: Vec<u8>,
    pub outbound_key: Vec<u8>,
    pub esn: bool,
    /// The clinic's side (TSi) and the inside (TSr), as narrowed.
    pub clinic: Vec<TrafficSelector>,
    pub inside: Vec<TrafficSelector>,
    /// The DH group of its key exchange, if it had one (PFS).
    pub pfs_group: Option<u16>,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildSa {{ in {:08x}, out {:08x}, esn {}, clinic {:?}, pfs {:?} }}", self.inbound_spi, self.outbound_spi, self.esn, self.clinic, self.pfs_group)
    }
}

/// Why we sent a request of our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Liveness,
    DeleteIke,
}

/// Our request waiting for its response (one at a time: window size 1, §2.3).
pub struct Outstanding {
    pub id: u32,
    pub datagrams: Vec<Vec<u8>>,
    pub sent: Instant,
    pub tries: u32,
    pub purpose: Purpose,
}

pub struct IkeSa {
    pub spi_i: u64,
    pub spi_r: u64,
    /// The peer's address and port as last seen (NAT-T may move it, §2.23).
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub prf: Prf,
    pub protection: Protection,
    pub keys: IkeKeys,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub phase: Phase,
    /// A NAT between us (detected either way): ESP goes in UDP (RFC 3948).
    pub nat: bool,
    /// The peer announced RFC 7383 support.
    pub fragmentation: bool,
    /// Hashes the peer announced for RFC 7427 signatures.
    pub peer_hashes: Vec<u16>,
    /// The Message ID of the peer's next request (§2.2).
    pub next_request: u32,
    /// The last response, kept to answer a retransmitted request (§2.1).
    pub last_response: Option<(u32, Vec<Vec<u8>>)>,
    pub iv_counter: u64,
    pub reassembly: Reassembly,
    pub children: Vec<ChildSa>,
    pub created: Instant,
    pub last_heard: Instant,
    /// The Message ID of our next request (our own sequence, §2.2).
    pub our_next_id: u32,
    pub outstanding: Option<Outstanding>,
}

impl IkeSa {
    /// The keys of the peer's messages (it is the initiator).
    pub fn keys_in(&self) -> Keys<'_> {
        Keys { encryption: &self.keys.sk_ei, integrity: &self.keys.sk_ai }
    }

    /// Seals a response to request `message_id` and keeps it for retransmission.
    pub fn respond(&mut self, exchange: u8, message_id: u32, chain: &Chain, max_datagram: usize) -> Vec<Vec<u8>> {
        let header = Header { initiator_spi: self.spi_i, responder_spi: self.spi_r, next_payload: 0, minor_version: 0, exchange, flags: FLAG_RESPONSE, message_id, length: 0 };
        let keys = Keys { encryption: &self.keys.sk_er, integrity: &self.keys.sk_ar };
        let datagrams = protect::seal(self.protection, keys, &mut self.iv_counter, header, chain, max_datagram, self.fragmentation);
        self.last_response = Some((message_id, datagrams.clone()));
        self.next_request = message_id.wrapping_add(1);
        datagrams
    }

    /// Seals a request of ours (the original responder's: no I flag) and
    /// keeps it for retransmission until its response comes.
    pub fn request(&mut self, exchange: u8, chain: &Chain, max_datagram: usize, now: Instant, purpose: Purpose) -> Vec<Vec<u8>> {
        let header = Header { initiator_spi: self.spi_i, responder_spi: self.spi_r, next_payload: 0, minor_version: 0, exchange, flags: 0, message_id: self.our_next_id, length: 0 };
        let keys = Keys { encryption: &self.keys.sk_er, integrity: &self.keys.sk_ar };
        let datagrams = protect::seal(self.protection, keys, &mut self.iv_counter, header, chain, max_datagram, self.fragmentation);
        self.outstanding = Some(Outstanding { id: self.our_next_id, datagrams: datagrams.clone(), sent: now, tries: 0, purpose });
        datagrams
    }

    pub fn tenant(&self) -> Option<&str> {
        match &self.phase {
            Phase::Established { tenant, .. } => Some(tenant),
            Phase::HalfOpen { .. } => None,
        }
    }
}
