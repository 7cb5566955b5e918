//! The state of one IKE SA at the responder, and of its CHILD_SAs.

use super::dh::KeyPair;
use super::keys::{IkeKeys, Prf};
use super::protect::{self, Chain, Keys, Reassembly};
use super::responder::Event;
use super::sk::Protection;
use super::ts::TrafficSelector;
use super::wire::{Header, FLAG_INITIATOR, FLAG_RESPONSE};
use crate::pki::identity::Identity;
use std::net::SocketAddr;
use std::time::Instant;

/// Where an IKE SA is in its life.
pub enum Phase {
    /// IKE_SA_INIT answered; the messages are kept for the AUTH payloads
    /// (§2.15 signs each side's first message).
    /// `source` is where IKE_SA_INIT came from: the half-open count's key.
    HalfOpen { request: Vec<u8>, response: Vec<u8>, source: std::net::IpAddr },
    /// `certificates`: the peer's, end entity first, as verified in
    /// IKE_AUTH (a reload checks them again against the new CAs and CRLs).
    Established { tenant: String, peer_id: Identity, certificates: Vec<openssl::x509::X509> },
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
    /// When we rekey it, unless the peer does first (None: replaced, or
    /// being rekeyed).
    pub rekey_at: Option<Instant>,
    /// When we delete it if it is still there (its hard lifetime).
    pub expire_at: Instant,
    /// Packets and bytes the dataplane last reported received on it.
    pub received: (u64, u64),
    pub created: Instant,
    /// Rekeys since the first CHILD_SA of its line (an operator's view).
    pub rekeys: u32,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildSa {{ in {:08x}, out {:08x}, esn {}, clinic {:?}, pfs {:?} }}", self.inbound_spi, self.outbound_spi, self.esn, self.clinic, self.pfs_group)
    }
}

/// How long an IKE SA replaced by a rekey waits for the peer's delete.
pub const SUPERSEDED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Why we sent a request of our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Liveness,
    DeleteIke,
    /// Deletes the CHILD_SA of this inbound SPI (it goes when answered).
    DeleteChild(u32),
    RekeyChild,
    RekeyIke,
}

/// A rekey we started, waiting for its response: what the response needs.
pub enum Rekey {
    Child {
        /// The inbound SPI of the CHILD_SA being rekeyed.
        old: u32,
        new_spi: u32,
        nonce: Vec<u8>,
        keypair: Option<KeyPair>,
        /// The peer rekeyed the same CHILD_SA meanwhile (§2.8.1): the
        /// inbound SPI of the CHILD_SA we made for it, and the lower nonce
        /// of that exchange.
        collision: Option<(u32, Vec<u8>)>,
    },
    Ike {
        new_spi: u64,
        nonce: Vec<u8>,
        keypair: KeyPair,
        /// The peer rekeyed this IKE SA meanwhile (§2.8.2): our SPI of the
        /// IKE SA we made for it, and the lower nonce of that exchange.
        collision: Option<(u64, Vec<u8>)>,
    },
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
    /// We are its original initiator (it came from a rekey we started):
    /// the roles, keys and I flag of §2.14 and §3.1 swap.
    pub initiator: bool,
    /// The DH group of its last key exchange: our rekeys use it.
    pub group: u16,
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
    pub rekey: Option<Rekey>,
    /// When we rekey it (None: replaced by a rekey, waiting for its delete).
    pub rekey_at: Option<Instant>,
    /// When we delete it if it is still there.
    pub expire_at: Instant,
}

/// The keys of the peer's messages, when we are (`initiator`) or are not
/// the original initiator.
pub fn peer_keys(k: &IkeKeys, initiator: bool) -> Keys<'_> {
    if initiator {
        Keys { encryption: &k.sk_er, integrity: &k.sk_ar }
    } else {
        Keys { encryption: &k.sk_ei, integrity: &k.sk_ai }
    }
}

impl IkeSa {
    /// Our SPI: the key of the responder's table.
    pub fn our_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    /// The keys of the peer's messages.
    pub fn keys_in(&self) -> Keys<'_> {
        peer_keys(&self.keys, self.initiator)
    }

    fn seal(&mut self, exchange: u8, response: bool, message_id: u32, chain: &Chain, max_datagram: usize) -> Vec<Vec<u8>> {
        let role = if self.initiator { FLAG_INITIATOR } else { 0 };
        let flags = role | if response { FLAG_RESPONSE } else { 0 };
        let header = Header { initiator_spi: self.spi_i, responder_spi: self.spi_r, next_payload: 0, minor_version: 0, exchange, flags, message_id, length: 0 };
        // Ours are the keys the peer's role would read with.
        let keys = peer_keys(&self.keys, !self.initiator);
        protect::seal(self.protection, keys, &mut self.iv_counter, header, chain, max_datagram, self.fragmentation)
    }

    /// Events sending `datagrams` to the peer, from where it reached us.
    pub fn sends<'a>(&self, datagrams: impl IntoIterator<Item = Vec<u8>> + 'a) -> impl Iterator<Item = Event> + 'a {
        let (from, to) = (self.local, self.peer);
        datagrams.into_iter().map(move |datagram| Event::Send { from, to, datagram })
    }

    /// Seals a response to request `message_id`, sends it, and keeps it for
    /// retransmission.
    pub fn respond(&mut self, exchange: u8, message_id: u32, chain: &Chain, max_datagram: usize, out: &mut Vec<Event>) {
        let datagrams = self.seal(exchange, true, message_id, chain, max_datagram);
        self.last_response = Some((message_id, datagrams.clone()));
        self.next_request = message_id.wrapping_add(1);
        out.extend(self.sends(datagrams));
    }

    /// Seals a request of ours, sends it, and keeps it for retransmission
    /// until its response comes.
    pub fn request(&mut self, exchange: u8, chain: &Chain, max_datagram: usize, now: Instant, purpose: Purpose, out: &mut Vec<Event>) {
        let datagrams = self.seal(exchange, false, self.our_next_id, chain, max_datagram);
        self.outstanding = Some(Outstanding { id: self.our_next_id, datagrams: datagrams.clone(), sent: now, tries: 0, purpose });
        out.extend(self.sends(datagrams));
    }

    /// The IKE SA that replaces this one in a rekey (§2.18), without its
    /// CHILD_SAs yet; `initiator` if we started the rekey.
    #[allow(clippy::too_many_arguments)]
    pub fn successor(&self, spi_i: u64, spi_r: u64, initiator: bool, group: u16, keys: IkeKeys, ni: Vec<u8>, nr: Vec<u8>, now: Instant, (rekey_at, expire_at): (Instant, Instant)) -> IkeSa {
        let Phase::Established { tenant, peer_id, certificates } = &self.phase else { unreachable!("only established SAs are rekeyed") };
        IkeSa {
            spi_i,
            spi_r,
            initiator,
            group,
            peer: self.peer,
            local: self.local,
            prf: self.prf,
            protection: self.protection,
            keys,
            ni,
            nr,
            phase: Phase::Established { tenant: tenant.clone(), peer_id: peer_id.clone(), certificates: certificates.clone() },
            nat: self.nat,
            fragmentation: self.fragmentation,
            peer_hashes: self.peer_hashes.clone(),
            next_request: 0,
            last_response: None,
            iv_counter: 0,
            reassembly: Reassembly::default(),
            children: Vec::new(),
            created: now,
            last_heard: now,
            our_next_id: 0,
            outstanding: None,
            rekey: None,
            rekey_at: Some(rekey_at),
            expire_at,
        }
    }

    /// We asked the peer to delete it (it goes when answered).
    pub fn deleting(&self) -> bool {
        self.outstanding.as_ref().is_some_and(|o| o.purpose == Purpose::DeleteIke)
    }

    /// Replaced by a rekey: it rekeys nothing more, and goes if the peer
    /// has not deleted it within [`SUPERSEDED_GRACE`].
    pub fn supersede(&mut self, now: Instant) {
        self.rekey_at = None;
        self.expire_at = self.expire_at.min(now + SUPERSEDED_GRACE);
    }

    pub fn tenant(&self) -> Option<&str> {
        match &self.phase {
            Phase::Established { tenant, .. } => Some(tenant),
            Phase::HalfOpen { .. } => None,
        }
    }
}
