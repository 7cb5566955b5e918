//! The ESP stages of the pipeline: from a clinic (outer headers off,
//! decrypt, inbound policy) and to a clinic (pick the SA, encrypt, outer
//! headers on). The ESP arithmetic itself is in [`crate::esp`].

use super::icmp_error::IcmpError;
use super::nat::nat_destination_allowed;
use super::{decrement_ttl, inner_destination_allowed, mss, too_big, Action, Forwarder};
use crate::esp::decrypt::{self, InboundError};
use crate::esp::encrypt::{self, OutboundError};
use crate::esp::tunnel::{self, OuterFields, UDP_HEADER_LEN};
use crate::esp::sa::{Expiry, SaEvent};
use crate::esp::tunnel::IP_PROTOCOL_UDP;
use crate::esp::{IP_PROTOCOL_ESP, NAT_T_PORT, NEXT_HEADER_IPV4};
use crate::pipeline::{Counter, DropReason};
use crate::port::PacketBuf;
use crate::sad::{Miss, OutboundRoute};
use crate::wire::{ethernet, ipv4, ipv6, read_u16, read_u32, WireError};
use crate::Side;
use std::net::IpAddr;

const IKE_PORT: u16 = 500;

/// How the gateway sends into tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    /// MTU of the outside link: outer packets never exceed it.
    pub outer_mtu: u16,
    /// TTL / hop limit of outer headers.
    pub outer_ttl: u8,
    /// Largest TCP MSS let through on SYNs in either direction (None: no clamping).
    pub mss_clamp: Option<u16>,
    /// Forward unprotected packets between the ports (an SPD BYPASS for
    /// everything, RFC 4301 §4.4.1); off in production.
    pub bypass: bool,
    /// Split IPv4 packets without DF that do not fit a tunnel (else they get
    /// ICMP fragmentation-needed, as packets with DF always do).
    pub fragment_inner: bool,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings { outer_mtu: 1500, outer_ttl: 64, mss_clamp: None, bypass: false, fragment_inner: true }
    }
}

impl TunnelSettings {
    /// The MSS that keeps a TCP segment with a 40-byte IPv6 inner header and
    /// the worst-case tunnel overhead (IPv6 outer, UDP, ESP) within the MTU.
    pub fn auto_mss(outer_mtu: u16) -> u16 {
        let worst = ipv6::HEADER_LEN + UDP_HEADER_LEN + encrypt::overhead(0) + 3;
        outer_mtu.saturating_sub((worst + ipv6::HEADER_LEN + 20) as u16)
    }
}

/// A decrypted packet from a clinic that passed every check: where its inner
/// packet lies in the frame, its EtherType and destination.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decrypted {
    pub(super) inner_start: usize,
    pub(super) inner_len: usize,
    ethertype: u16,
    dst: IpAddr,
}

impl Decrypted {
    pub(super) fn inner<'a>(&self, frame: &'a mut [u8]) -> &'a mut [u8] {
        &mut frame[self.inner_start..self.inner_start + self.inner_len]
    }
}

/// Where a received ESP packet's bytes lie in the frame.
struct EspAt {
    start: usize,
    end: usize,
    /// The peer's outer address and, for ESP in UDP, its port.
    peer: IpAddr,
    peer_port: Option<u16>,
}

/// Packets ahead of the one being processed whose SA slot is prefetched,
/// and whose key and replay window are.
pub const PREFETCH_SLOT_AHEAD: usize = 8;
pub const PREFETCH_SA_AHEAD: usize = 4;

/// The SPI of what looks like ESP (on IP, or in UDP 4500) in a frame from
/// the outside, read without validation: only to prefetch its SA.
#[inline]
fn peek_spi(side: Side, frame: &[u8]) -> Option<u32> {
    if side != Side::Outside {
        return None;
    }
    let word = |at: usize| frame.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let (protocol, l4) = match frame.get(12..14)? {
        [0x86, 0xdd] => (*frame.get(ethernet::HEADER_LEN + 6)?, ethernet::HEADER_LEN + ipv6::HEADER_LEN),
        [0x08, 0x00] => (*frame.get(ethernet::HEADER_LEN + 9)?, ethernet::HEADER_LEN + usize::from(frame.get(ethernet::HEADER_LEN)? & 0x0f) * 4),
        _ => return None,
    };
    match protocol {
        IP_PROTOCOL_ESP => word(l4),
        IP_PROTOCOL_UDP => word(l4 + UDP_HEADER_LEN).filter(|&spi| spi != 0),
        _ => None,
    }
}

/// The destination of an IP packet in a frame, read without validation:
/// only to prefetch the SA that will carry it.
#[inline]
fn peek_destination(frame: &[u8]) -> Option<IpAddr> {
    let ip = frame.get(ethernet::HEADER_LEN..)?;
    match ip.first()? >> 4 {
        4 => <[u8; 4]>::try_from(ip.get(16..20)?).ok().map(IpAddr::from),
        6 => <[u8; 16]>::try_from(ip.get(24..40)?).ok().map(IpAddr::from),
        _ => None,
    }
}

impl Forwarder {
    /// First stage of prefetching for a packet a few places ahead in its
    /// burst: the SA's slot. (Prefetching whole bursts at once issues more
    /// prefetches than the CPU keeps in flight; a short distance does not.)
    #[inline]
    pub fn prefetch_slot<B: PacketBuf>(&self, side: Side, buf: &B) {
        match side {
            Side::Outside => {
                if let Some(spi) = peek_spi(side, buf.data()) {
                    self.sad.prefetch_slot(spi);
                }
            }
            // Behind NAT: the index slots of the session of a packet to the pool.
            Side::Inside if self.nat.is_some() => {
                if let Some(nat) = &self.nat {
                    nat.prefetch_index(Side::Inside, 0, buf.data().get(ethernet::HEADER_LEN..).unwrap_or_default());
                }
            }
            // One stage: the route lookup that finds the SA is itself the
            // slow part, and doing it twice would cost more than it saves.
            Side::Inside => {
                if let Some(route) = peek_destination(buf.data()).and_then(|dst| self.routes.lookup(dst)) {
                    self.sad.prefetch_outbound(route.sa, buf.data().len());
                }
            }
        }
    }

    /// Second stage, nearer: what the SA points to (key, replay window), or
    /// behind NAT, the session of a packet to the pool.
    #[inline]
    pub fn prefetch_sa<B: PacketBuf>(&self, side: Side, buf: &B) {
        if let Some(spi) = peek_spi(side, buf.data()) {
            self.sad.prefetch_sa(spi, buf.data().len());
        } else if let (Side::Inside, Some(nat)) = (side, &self.nat) {
            nat.prefetch_session(Side::Inside, 0, buf.data().get(ethernet::HEADER_LEN..).unwrap_or_default());
        }
    }

    /// A packet from the outside addressed to one of our outside addresses:
    /// ESP (on IP or in UDP 4500), IKE, a NAT-T keepalive, or something else.
    pub(super) fn addressed_to_us<B: PacketBuf>(&mut self, buf: &mut B, l4: usize, l4_end: usize, protocol: u8, peer: IpAddr) -> Action {
        let frame = buf.data();
        let at = match protocol {
            IP_PROTOCOL_ESP => EspAt { start: l4, end: l4_end, peer, peer_port: None },
            IP_PROTOCOL_UDP => {
                if l4_end - l4 < UDP_HEADER_LEN || usize::from(read_u16(frame, l4 + 4)) != l4_end - l4 {
                    return Action::Drop(DropReason::Truncated);
                }
                let (src_port, dst_port) = (read_u16(frame, l4), read_u16(frame, l4 + 2));
                let payload = &frame[l4 + UDP_HEADER_LEN..l4_end];
                match dst_port {
                    IKE_PORT => return Action::Punt,
                    // RFC 3948 §2.3: a single 0xFF byte keeps the NAT binding open.
                    NAT_T_PORT if payload == [0xff] => return Action::Drop(DropReason::NatKeepalive),
                    // RFC 3948 §2.2: four zero bytes (the non-ESP marker) precede IKE.
                    NAT_T_PORT if payload.len() >= 4 && payload[..4] == [0, 0, 0, 0] => return Action::Punt,
                    NAT_T_PORT => EspAt { start: l4 + UDP_HEADER_LEN, end: l4_end, peer, peer_port: Some(src_port) },
                    _ => return Action::Drop(DropReason::ToGateway),
                }
            }
            _ => return Action::Drop(DropReason::ToGateway),
        };
        self.inbound_esp(buf, at)
    }

    fn inbound_esp<B: PacketBuf>(&mut self, buf: &mut B, at: EspAt) -> Action {
        if at.end - at.start < 4 {
            return Action::Drop(DropReason::EspTruncated);
        }
        let spi = read_u32(buf.data(), at.start);
        let (sa, tunnel) = match self.sad.inbound_with_tunnel(spi) {
            Ok(found) => found,
            Err(Miss::Unknown) => return Action::Drop(DropReason::UnknownSpi),
            Err(Miss::StaleGeneration) => return Action::Drop(DropReason::StaleSpi),
            Err(Miss::OtherCore(core)) => return Action::Handoff(core),
        };
        let esp = &mut buf.data_mut()[at.start..at.end];
        let opened = match decrypt::open(sa, esp) {
            Ok(opened) => opened,
            Err(e) => {
                let d = &mut sa.counters.drops;
                let reason = match e {
                    InboundError::Truncated => DropReason::EspTruncated,
                    InboundError::Replayed => bump(&mut d.replayed, DropReason::Replayed),
                    InboundError::TooOld => bump(&mut d.too_old, DropReason::ReplayTooOld),
                    InboundError::BadIcv => bump(&mut d.bad_icv, DropReason::BadIcv),
                    InboundError::BadPadding => bump(&mut d.bad_padding, DropReason::BadPadding),
                    InboundError::BadNextHeader => bump(&mut d.bad_next_header, DropReason::BadNextHeader),
                    InboundError::Dummy => bump(&mut d.dummy, DropReason::Dummy),
                    InboundError::Expired => bump(&mut d.expired, DropReason::SaExpired),
                };
                return Action::Drop(reason);
            }
        };
        let inner_start = at.start + opened.offset;
        let inner = &esp[opened.offset..opened.offset + opened.len];
        // The inner header gives the packet's length (TFC padding may follow it).
        let parsed = match opened.next_header {
            NEXT_HEADER_IPV4 => ipv4::Packet::new_checked(inner).map(|p| (IpAddr::V4(p.src()), IpAddr::V4(p.dst()), p.total_len())),
            _ => ipv6::Packet::new_checked(inner)
                .map(|p| (IpAddr::V6(p.src()), IpAddr::V6(p.dst()), ipv6::HEADER_LEN + p.payload_len())),
        };
        let (src, dst, inner_len) = match parsed {
            Ok(fields) => fields,
            Err(WireError::Truncated | WireError::Malformed | WireError::Checksum) => return Action::Drop(DropReason::InnerInvalid),
        };
        if !sa.selectors.contains(src) {
            sa.counters.drops.selector_mismatch += 1;
            return Action::Drop(DropReason::SelectorMismatch);
        }
        let Some(tunnel) = tunnel else {
            return Action::Drop(DropReason::NoTunnel);
        };
        let tenant = tunnel.tenant;
        let d = &mut sa.counters.drops;
        if tunnel.udp.is_some() != at.peer_port.is_some() {
            return Action::Drop(bump(&mut d.encapsulation_mismatch, DropReason::EncapsulationMismatch));
        }
        // Clinics talk to a few servers: remember the last destination let through.
        if self.last_inner_destination != Some((src.is_ipv4(), dst)) {
            if !inner_destination_allowed(&self.interfaces, &self.routes, src, dst) || !nat_destination_allowed(self.nat.as_ref(), dst) {
                return Action::Drop(bump(&mut d.inner_destination, DropReason::InnerDestination));
            }
            self.last_inner_destination = Some((src.is_ipv4(), dst));
        }
        // NAT-T: follow the peer to its current address and port, learned
        // only from authentic packets (RFC 3948 §5, RFC 7296 §2.23), only from
        // the newest (a late one from an old mapping must not move it back),
        // and never across address families (the tunnel's own end stays put).
        if let (Some(port), Some(udp)) = (at.peer_port, &mut tunnel.udp) {
            let moved = tunnel.remote != at.peer || udp.remote_port != port;
            if moved && opened.seq == sa.replay.top() && at.peer.is_ipv4() == tunnel.local.is_ipv4() {
                tunnel.remote = at.peer;
                udp.remote_port = port;
                self.counters.add(Counter::NatTPeerMoved, 1);
            }
        }
        let event = sa.count(inner_len);
        self.expiry_event(event);
        if !decrement_ttl(&mut buf.data_mut()[inner_start..inner_start + inner_len]) {
            return Action::Drop(DropReason::TtlExceeded);
        }
        if let Some(clamp) = self.settings.mss_clamp {
            if mss::clamp(&mut buf.data_mut()[inner_start..inner_start + inner_len], clamp) {
                self.counters.add(Counter::MssClamped, 1);
            }
        }
        let ethertype = if opened.next_header == NEXT_HEADER_IPV4 { ethernet::ETHERTYPE_IPV4 } else { ethernet::ETHERTYPE_IPV6 };
        let decrypted = Decrypted { inner_start, inner_len, ethertype, dst };
        if let Some(tenant) = tenant {
            if opened.next_header != NEXT_HEADER_IPV4 {
                return Action::Drop(DropReason::NatUnsupported);
            }
            // NAT runs over the burst once all of it is decrypted, so that
            // each packet's session can be prefetched while others are worked on.
            if self.defer_nat && !self.deferred.is_full() {
                self.deferred.push((tenant, decrypted));
                return Action::Deferred;
            }
            if let Some(action) = self.nat_upstream(tenant, &mut buf.data_mut()[inner_start..inner_start + inner_len]) {
                return action;
            }
        }
        self.forward_decrypted(buf, decrypted)
    }

    /// The decrypted packet out of the inside port: outer headers off, the
    /// new Ethernet header right before the inner packet.
    #[inline(always)]
    pub(super) fn forward_decrypted<B: PacketBuf>(&mut self, buf: &mut B, d: Decrypted) -> Action {
        let (inner_start, inner_len, ethertype, dst) = (d.inner_start, d.inner_len, d.ethertype, d.dst);
        let eth_start = inner_start - ethernet::HEADER_LEN;
        if !buf.trim_front(eth_start) || !buf.set_len(ethernet::HEADER_LEN + inner_len) {
            return Action::Drop(DropReason::Truncated);
        }
        let Some(next_hop) = self.interfaces[Side::Inside as usize].next_hop(dst) else {
            return Action::Drop(DropReason::NoRoute);
        };
        ethernet::Frame::new_checked(buf.data_mut()).expect("header room").set_ethertype(ethertype);
        let action = self.forward(Side::Inside, next_hop, buf.data_mut());
        if action == Action::Forward {
            self.counters.add(Counter::EspDecrypted, 1);
        }
        action
    }

    /// A packet from the inside into the tunnel whose selectors cover its
    /// destination (`route`, from [`OutboundRoutes`](crate::sad::OutboundRoutes)).
    /// `decrement`: lower the TTL (not for the rest of a packet split after it was).
    pub(super) fn outbound_esp<B: PacketBuf>(&mut self, buf: &mut B, route: OutboundRoute, mut inner_len: usize, decrement: bool) -> Action {
        if route.core != self.sad.core() {
            return Action::Handoff(route.core);
        }
        let Some((_, tunnel)) = self.sad.outbound(route.sa) else {
            return Action::Drop(DropReason::NoTunnel);
        };
        let tunnel = *tunnel;
        if decrement && !decrement_ttl(&mut buf.data_mut()[ethernet::HEADER_LEN..ethernet::HEADER_LEN + inner_len]) {
            return self.icmp_error(Side::Inside, buf, IcmpError::TimeExceeded);
        }
        // The next hop first: a packet that cannot leave must not spend a sequence number.
        let Some(next_hop) = self.interfaces[Side::Outside as usize].next_hop(tunnel.remote) else {
            return Action::Drop(DropReason::NoRoute);
        };
        let Some(mac) = self.resolve(Side::Outside, next_hop) else {
            return Action::Drop(DropReason::NeighbourUnresolved);
        };
        if tunnel::outer_len(&tunnel, inner_len) > usize::from(self.settings.outer_mtu) {
            let max = tunnel::max_inner(&tunnel, self.settings.outer_mtu);
            let inner = &buf.data()[ethernet::HEADER_LEN..ethernet::HEADER_LEN + inner_len];
            if !too_big::may_fragment(inner) {
                return self.icmp_error(Side::Inside, buf, IcmpError::TooBig { mtu: max });
            }
            // DF is clear: split before encryption, or drop (never "fragmentation needed", RFC 1191 §3).
            debug_assert!(self.fragment_pending.is_none(), "the worker takes each rest before the next packet");
            match self.settings.fragment_inner.then(|| too_big::split_ipv4(buf.data_mut(), max, &mut self.fragment_rest)).flatten() {
                Some(first) => {
                    inner_len = first;
                    self.fragment_pending = Some(route);
                    self.counters.add(Counter::InnerFragmented, 1);
                }
                None => return Action::Drop(DropReason::TooBigForTunnel),
            }
        }
        let outer_len = tunnel::outer_len(&tunnel, inner_len);
        if let Some(clamp) = self.settings.mss_clamp {
            if mss::clamp(&mut buf.data_mut()[ethernet::HEADER_LEN..ethernet::HEADER_LEN + inner_len], clamp) {
                self.counters.add(Counter::MssClamped, 1);
            }
        }
        if !buf.prepend(tunnel::prefix_len(&tunnel)) || !buf.set_len(ethernet::HEADER_LEN + outer_len) {
            return Action::Drop(DropReason::NoBuffer);
        }
        let (sa, _) = self.sad.outbound(route.sa).expect("looked up above");
        self.ipv4_ident = self.ipv4_ident.wrapping_add(1);
        let fields = OuterFields { ttl: self.settings.outer_ttl, ident: self.ipv4_ident };
        match tunnel::encapsulate(&mut buf.data_mut()[ethernet::HEADER_LEN..], &tunnel, sa, inner_len, fields) {
            Ok(_) => {}
            Err(OutboundError::SequenceExhausted) => return Action::Drop(DropReason::SequenceExhausted),
            Err(OutboundError::Expired) => return Action::Drop(DropReason::SaExpired),
            Err(OutboundError::NoRoom) => return Action::Drop(DropReason::NoBuffer),
            Err(OutboundError::FamilyMismatch) => return Action::Drop(DropReason::NoTunnel),
        }
        let event = sa.count(inner_len);
        self.expiry_event(event);
        ethernet::Frame::new_checked(buf.data_mut()).expect("header room").set_ethertype(tunnel::outer_ethertype(&tunnel));
        self.counters.add(Counter::EspEncrypted, 1);
        self.send_to(Side::Outside, mac, buf.data_mut())
    }

    /// Counts a lifetime event and keeps it for the worker to pass on.
    fn expiry_event(&mut self, event: Option<SaEvent>) {
        let Some(event) = event else { return };
        match event.expiry {
            Expiry::Soft => self.counters.add(Counter::SaSoftExpired, 1),
            Expiry::Hard => self.counters.add(Counter::SaHardExpired, 1),
            Expiry::Live => return,
        }
        if self.events.try_push(event).is_err() {
            self.counters.add(Counter::SaEventsLost, 1);
        }
    }
}

#[inline]
fn bump(count: &mut u64, reason: DropReason) -> DropReason {
    *count += 1;
    reason
}
