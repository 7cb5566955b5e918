//! The packet pipeline: what a worker does with each frame of a burst.
//!
//! Until ESP and NAT land, the gateway forwards IP packets between its two
//! ports with the Ethernet header rewritten for the next hop, answers ARP and
//! neighbour solicitations for its own addresses, and resolves next hops
//! itself. The logic is plain Rust over packet buffers ([`PacketBuf`]); the
//! worker loop ([`crate::worker`]) feeds it bursts from any [`crate::port::Port`].

mod arp_nd;
pub mod counters;
mod esp;
mod icmp_error;
mod mss;
mod nat;
mod too_big;

use crate::addr::{Ipv4Cidr, Ipv6Cidr};
use crate::neighbour::{Entry, NeighbourTable, Observation, SolicitLimiter, Snapshot, REFRESH_AFTER_MS};
use crate::port::PacketBuf;
use crate::esp::sa::SaEvent;
use crate::nat::{NatCore, NatEvent};
use crate::sad::OutboundRoute;
use crate::sad::{OutboundRoutes, RouteTable, SaTable};
use crate::wire::{ethernet, ipv4, ipv6, MacAddr, WireError};
use crate::Side;
use arrayvec::ArrayVec;
pub use arp_nd::is_neighbour_frame;
pub use counters::{Counter, CounterBlock, DropReason};
pub use esp::{TunnelSettings, PREFETCH_SA_AHEAD, PREFETCH_SLOT_AHEAD};
use icmp_error::IcmpError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// What the worker does with a frame after [`Forwarder::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send out of the other port (headers already rewritten).
    Forward,
    /// Send back out of the port it came from (an ARP reply or NA, written in place).
    Reply,
    /// Used up, nothing to send (an ARP reply or NA we learned from).
    Consumed,
    /// Drop, for this reason.
    Drop(DropReason),
    /// Hand to the worker that owns the packet's SA or session (by its core index).
    Handoff(u8),
    /// Kept by the pipeline (a fragment waiting for its first fragment); the buffer is free.
    Kept,
    /// Decrypted, waiting for the NAT stage of its burst: keep the buffer
    /// and pass it to [`Forwarder::finish_deferred`] after the burst.
    Deferred,
    /// For the control process (IKE): pass the frame to it, as it is.
    Punt,
}

/// What a worker passes on to the manager thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Sa(SaEvent),
    Nat(NatEvent),
}

/// One port's addresses and routes, as the pipeline needs them.
#[derive(Debug, Clone, Default)]
pub struct Interface {
    pub ipv4: Vec<Ipv4Cidr>,
    pub ipv6: Vec<Ipv6Cidr>,
    pub gateway_ipv4: Option<Ipv4Addr>,
    pub gateway_ipv6: Option<Ipv6Addr>,
}

impl Interface {
    #[inline]
    pub fn owns_ipv4(&self, ip: Ipv4Addr) -> bool {
        self.ipv4.iter().any(|c| c.addr == ip)
    }
    #[inline]
    pub fn owns_ipv6(&self, ip: Ipv6Addr) -> bool {
        self.ipv6.iter().any(|c| c.addr == ip)
    }
    /// True if `ip` is on one of the port's connected networks.
    #[inline]
    pub fn on_link_ipv4(&self, ip: Ipv4Addr) -> bool {
        self.ipv4.iter().any(|c| c.contains(ip))
    }
    /// True if `ip` is link-local or on one of the port's connected networks.
    #[inline]
    pub fn on_link_ipv6(&self, ip: Ipv6Addr) -> bool {
        is_link_local(ip) || self.ipv6.iter().any(|c| c.contains(ip))
    }
    #[inline]
    fn is_subnet_broadcast(&self, ip: Ipv4Addr) -> bool {
        self.ipv4.iter().any(|c| {
            c.prefix_len < 31 && c.contains(ip) && u32::from(ip) | (u32::MAX << (32 - c.prefix_len)) == u32::MAX
        })
    }
    /// The address to send to for `dst` out of this port: itself when on
    /// link, else the port's gateway.
    #[inline]
    fn next_hop_ipv4(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link_ipv4(dst) {
            Some(dst)
        } else {
            self.gateway_ipv4
        }
    }
    #[inline]
    fn next_hop_ipv6(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        if self.on_link_ipv6(dst) {
            Some(dst)
        } else {
            self.gateway_ipv6
        }
    }
    /// The next hop toward `dst` out of this port, of either family.
    #[inline]
    fn next_hop(&self, dst: IpAddr) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(ip) => self.next_hop_ipv4(ip).map(IpAddr::V4),
            IpAddr::V6(ip) => self.next_hop_ipv6(ip).map(IpAddr::V6),
        }
    }

    /// Our address to speak from towards `peer` (the one on its subnet).
    fn source_ipv4(&self, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.ipv4.iter().find(|c| c.contains(peer)).or(self.ipv4.first()).map(|c| c.addr)
    }
    fn source_ipv6(&self, peer: Ipv6Addr) -> Option<Ipv6Addr> {
        self.ipv6.iter().find(|c| c.contains(peer)).or(self.ipv6.first()).map(|c| c.addr)
    }
}

fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether a clinic may send a decrypted packet to `dst` (with `src`):
/// not to groups, broadcasts or link-local addresses (which no router
/// forwards), not to the gateway itself, and not into another tunnel (no
/// traffic between tenants, nor hairpinned through the inside).
#[inline]
pub(super) fn inner_destination_allowed(interfaces: &[Interface; 2], routes: &OutboundRoutes, src: IpAddr, dst: IpAddr) -> bool {
    let inside = &interfaces[Side::Inside as usize];
    let forwardable = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            !(dst.is_multicast() || dst.is_broadcast() || dst.is_link_local() || src.is_multicast() || inside.is_subnet_broadcast(dst))
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => !(dst.is_multicast() || src.is_multicast() || is_link_local(src) || is_link_local(dst)),
        _ => false,
    };
    let ours = match dst {
        IpAddr::V4(ip) => interfaces.iter().any(|i| i.owns_ipv4(ip)),
        IpAddr::V6(ip) => interfaces.iter().any(|i| i.owns_ipv6(ip)),
    };
    forwardable && !ours && routes.lookup(dst).is_none()
}

/// Lowers the TTL or hop limit of the IP packet in `ip` (either family);
/// false if it would reach zero.
#[inline]
pub(super) fn decrement_ttl(ip: &mut [u8]) -> bool {
    if ip[0] >> 4 == 4 {
        ipv4::decrement_ttl(ip)
    } else {
        ipv6::decrement_hop_limit(ip)
    }
}

/// Solicitations one batch may ask for; more wait for a later batch.
const MAX_PENDING_SOLICITATIONS: usize = 8;

/// One worker's pipeline state: its own counters, solicitation limiter and
/// neighbour snapshot. Nothing in it is shared for writing.
pub struct Forwarder {
    interfaces: [Interface; 2],
    macs: [MacAddr; 2],
    neighbours: Arc<NeighbourTable>,
    snapshot: Arc<Snapshot>,
    /// The last next hop looked up on each side: traffic goes to few next
    /// hops (the servers, the outside router), so this saves most hash lookups.
    last_hop: [Option<(IpAddr, Entry)>; 2],
    /// The last inner destination a clinic was let through to (and whether its
    /// source was IPv4), which `inner_destination_allowed` need not check again.
    last_inner_destination: Option<(bool, IpAddr)>,
    limiter: SolicitLimiter,
    pending: ArrayVec<(Side, IpAddr), MAX_PENDING_SOLICITATIONS>,
    now_ms: u64,
    /// This core's SAs and tunnels.
    sad: SaTable,
    /// Which SA carries which inner destination (shared, read-only).
    routes: Arc<OutboundRoutes>,
    /// Where newer routes are published while the dataplane runs.
    route_table: Option<Arc<RouteTable>>,
    /// IPv4 identification of the IKE packets this worker sends.
    ike_ident: u16,
    settings: TunnelSettings,
    ipv4_ident: u16,
    icmp_limiter: icmp_error::IcmpLimiter,
    /// The rest of an inner packet split to fit a tunnel, waiting for a
    /// buffer from the worker ([`Forwarder::process_pending`]), and its tunnel.
    fragment_rest: Vec<u8>,
    fragment_pending: Option<OutboundRoute>,
    /// SA lifetime events of this batch, for the worker to pass on.
    events: ArrayVec<SaEvent, MAX_PENDING_EVENTS>,
    /// Where the reports of inbound SAs' traffic and tenants' sessions stand.
    activity: Activity,
    /// Connection tracking and NAT, when tunnels belong to tenants.
    nat: Option<NatCore>,
    /// While set, decrypted packets of tenants wait for their burst's NAT
    /// stage ([`Action::Deferred`]), in order, with their tenant.
    defer_nat: bool,
    deferred: ArrayVec<(u32, esp::Decrypted), { crate::port::BURST }>,
    pub counters: CounterBlock,
}

/// Lifetime events one batch may raise before they are passed on.
const MAX_PENDING_EVENTS: usize = 64;
/// A round of reports: the next inbound SA slot and tenant to report
/// (None: done for this round), and when the round began.
#[derive(Default)]
struct Activity {
    sa_slot: Option<usize>,
    tenant: Option<usize>,
    started_ms: u64,
}

/// One round of traffic reports over every inbound SA this often.
const ACTIVITY_INTERVAL_MS: u64 = 10_000;
/// Most traffic reports per call.
const ACTIVITY_PER_CALL: usize = 32;

impl Forwarder {
    /// `interfaces` and `macs` are indexed by [`Side`].
    pub fn new(interfaces: [Interface; 2], macs: [MacAddr; 2], neighbours: Arc<NeighbourTable>) -> Self {
        let snapshot = neighbours.snapshot();
        Forwarder {
            interfaces,
            macs,
            neighbours,
            snapshot,
            last_hop: [None; 2],
            last_inner_destination: None,
            limiter: SolicitLimiter::default(),
            pending: ArrayVec::new(),
            now_ms: 0,
            sad: SaTable::new(0),
            routes: Arc::new(OutboundRoutes::default()),
            route_table: None,
            ike_ident: 0,
            settings: TunnelSettings::default(),
            ipv4_ident: 0,
            icmp_limiter: icmp_error::IcmpLimiter::default(),
            fragment_rest: Vec::with_capacity(crate::port::memory::BUF_ROOM),
            fragment_pending: None,
            events: ArrayVec::new(),
            activity: Activity::default(),
            nat: None,
            defer_nat: false,
            deferred: ArrayVec::new(),
            counters: CounterBlock::default(),
        }
    }

    /// Gives the worker its tunnels: its own SA table, the shared routes, and how to send.
    pub fn with_tunnels(mut self, sad: SaTable, routes: Arc<OutboundRoutes>, settings: TunnelSettings) -> Self {
        self.sad = sad;
        self.routes = routes;
        self.settings = settings;
        self
    }

    /// Gives the worker its share of connection tracking and NAT.
    pub fn with_nat(mut self, nat: NatCore) -> Self {
        self.nat = Some(nat);
        self
    }

    /// This worker's NAT state (for stats and tests).
    pub fn nat(&self) -> Option<&NatCore> {
        self.nat.as_ref()
    }

    /// Forwards packets outside any tunnel (plain-forwarding tests and benchmarks).
    pub fn with_bypass(mut self) -> Self {
        self.settings.bypass = true;
        self
    }

    /// Follows `table` for routes: each batch starts with the latest published.
    pub fn with_route_table(mut self, table: Arc<RouteTable>) -> Self {
        self.routes = table.snapshot();
        self.route_table = Some(table);
        self
    }

    /// Takes a replacement policy for its NAT: sessions stay (see
    /// [`crate::policy::Policy::compile_replacement`]).
    pub fn set_policy(&mut self, policy: Arc<crate::policy::Policy>) {
        if let Some(nat) = &mut self.nat {
            nat.set_policy(policy);
        }
    }

    /// Applies a change of this worker's tunnels (from the manager).
    pub fn apply(&mut self, update: crate::tables::TableUpdate) {
        crate::tables::apply(&mut self.sad, update);
    }

    /// Writes an IKE message from the control process into `buf` as a frame
    /// to the peer on the outside port, with the non-ESP marker from port
    /// 4500 (RFC 3948 §2.2). False (counted) if it cannot go.
    pub fn write_ike<B: PacketBuf>(&mut self, buf: &mut B, from: std::net::SocketAddr, to: std::net::SocketAddr, payload: &[u8]) -> bool {
        let mac = self.interfaces[Side::Outside as usize].next_hop(to.ip()).and_then(|hop| self.resolve(Side::Outside, hop));
        let flow = crate::craft::Flow { src: from.ip(), dst: to.ip(), src_port: from.port(), dst_port: to.port() };
        let marker = if from.port() == crate::esp::NAT_T_PORT { 4 } else { 0 };
        let headers = flow.min_frame_len() - 8;
        let fits = from.is_ipv4() == to.is_ipv4() && buf.set_len(headers + marker + payload.len());
        let Some(mac) = mac.filter(|_| fits) else {
            self.counters.drop(DropReason::IkeUnsendable, 1);
            return false;
        };
        let frame = buf.data_mut();
        frame[headers..headers + marker].fill(0);
        frame[headers + marker..].copy_from_slice(payload);
        self.ike_ident = self.ike_ident.wrapping_add(1);
        crate::craft::write_udp_headers(frame, mac, self.macs[Side::Outside as usize], &flow, self.ike_ident);
        self.counters.add(Counter::IkeSent, 1);
        true
    }

    /// This worker's SA table (for stats and tests).
    pub fn sad(&self) -> &SaTable {
        &self.sad
    }

    /// Call once per burst: sets the clock and picks up a newer neighbour table.
    pub fn begin_batch(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if !self.neighbours.is_current(&self.snapshot) {
            self.snapshot = self.neighbours.snapshot();
            self.last_hop = [None; 2];
        }
        if let Some(table) = &self.route_table {
            if !table.is_current(&self.routes) {
                self.routes = table.snapshot();
            }
        }
        if let Some(nat) = &mut self.nat {
            nat.maintain(now_ms, &mut self.counters);
        }
    }

    /// Decides a frame's fate, rewriting it in place when it is to be sent.
    pub fn process<B: PacketBuf>(&mut self, side: Side, buf: &mut B) -> Action {
        if buf.is_segmented() {
            return Action::Drop(DropReason::Segmented);
        }
        let Ok(frame) = ethernet::Frame::new_checked(buf.data()) else {
            return Action::Drop(DropReason::Truncated);
        };
        let dst_mac = frame.dst();
        let group = dst_mac.is_multicast();
        if !group && dst_mac != self.macs[side as usize] {
            return Action::Drop(DropReason::NotForUs);
        }
        match frame.ethertype() {
            ethernet::ETHERTYPE_ARP => self.arp(side, buf),
            ethernet::ETHERTYPE_IPV4 if group => Action::Drop(DropReason::NotForUs),
            ethernet::ETHERTYPE_IPV4 => self.ipv4(side, buf),
            ethernet::ETHERTYPE_IPV6 => self.ipv6(side, buf, group),
            _ => Action::Drop(DropReason::UnknownEthertype),
        }
    }

    fn ipv4<B: PacketBuf>(&mut self, side: Side, buf: &mut B) -> Action {
        let ip = match ipv4::Packet::new_checked(&buf.data()[ethernet::HEADER_LEN..]) {
            Ok(ip) => ip,
            Err(WireError::Truncated) => return Action::Drop(DropReason::Truncated),
            Err(_) => return Action::Drop(DropReason::Ipv4Invalid),
        };
        let (src, dst) = (ip.src(), ip.dst());
        let (l4, l4_end, protocol, total_len) =
            (ethernet::HEADER_LEN + ip.header_len(), ethernet::HEADER_LEN + ip.total_len(), ip.protocol(), ip.total_len());
        if side == Side::Outside && self.interfaces[side as usize].owns_ipv4(dst) {
            // ESP is processed after reassembly (RFC 4303 §3.4.1), which we do not do.
            if ip.is_fragment() {
                return Action::Drop(DropReason::OuterFragment);
            }
            return self.addressed_to_us(buf, l4, l4_end, protocol, IpAddr::V4(src));
        }
        if side == Side::Inside {
            if let Some(address) = self.nat.as_ref().and_then(|nat| nat.policy.pool_address(dst)) {
                return self.nat_downstream(buf, address, total_len);
            }
        }
        if self.interfaces.iter().any(|i| i.owns_ipv4(dst)) {
            return Action::Drop(DropReason::ToGateway);
        }
        let egress = side.other();
        if dst.is_multicast() || dst.is_broadcast() || src.is_multicast() || self.interfaces[egress as usize].is_subnet_broadcast(dst) {
            return Action::Drop(DropReason::NotForwardable);
        }
        if let Some(action) = self.policy(side, buf, IpAddr::V4(dst), total_len) {
            return action;
        }
        if !ipv4::decrement_ttl(&mut buf.data_mut()[ethernet::HEADER_LEN..]) {
            return self.icmp_error(side, buf, IcmpError::TimeExceeded);
        }
        let Some(next_hop) = self.interfaces[egress as usize].next_hop(IpAddr::V4(dst)) else {
            return Action::Drop(DropReason::NoRoute);
        };
        self.forward(egress, next_hop, buf.data_mut())
    }

    fn ipv6<B: PacketBuf>(&mut self, side: Side, buf: &mut B, group: bool) -> Action {
        let ip = match ipv6::Packet::new_checked(&buf.data()[ethernet::HEADER_LEN..]) {
            Ok(ip) => ip,
            Err(WireError::Truncated) => return Action::Drop(DropReason::Truncated),
            Err(_) => return Action::Drop(DropReason::Ipv6Invalid),
        };
        if ip.next_header() == ipv6::NEXT_HEADER_ICMPV6 && arp_nd::is_neighbour_discovery(ip.payload()) {
            return self.neighbour_discovery(side, buf);
        }
        if group {
            return Action::Drop(DropReason::NotForUs);
        }
        let (src, dst) = (ip.src(), ip.dst());
        let (l4, l4_end, protocol, total_len) = (
            ethernet::HEADER_LEN + ipv6::HEADER_LEN,
            ethernet::HEADER_LEN + ipv6::HEADER_LEN + ip.payload_len(),
            ip.next_header(),
            ipv6::HEADER_LEN + ip.payload_len(),
        );
        if side == Side::Outside && self.interfaces[side as usize].owns_ipv6(dst) {
            if protocol == ipv6::NEXT_HEADER_FRAGMENT {
                return Action::Drop(DropReason::OuterFragment);
            }
            return self.addressed_to_us(buf, l4, l4_end, protocol, IpAddr::V6(src));
        }
        if self.interfaces.iter().any(|i| i.owns_ipv6(dst)) {
            return Action::Drop(DropReason::ToGateway);
        }
        // RFC 4291 §2.5.6: link-local packets never cross a router.
        if dst.is_multicast() || is_link_local(src) || is_link_local(dst) || src.is_multicast() {
            return Action::Drop(DropReason::NotForwardable);
        }
        if let Some(action) = self.policy(side, buf, IpAddr::V6(dst), total_len) {
            return action;
        }
        if !ipv6::decrement_hop_limit(&mut buf.data_mut()[ethernet::HEADER_LEN..]) {
            return self.icmp_error(side, buf, IcmpError::TimeExceeded);
        }
        let egress = side.other();
        let Some(next_hop) = self.interfaces[egress as usize].next_hop(IpAddr::V6(dst)) else {
            return Action::Drop(DropReason::NoRoute);
        };
        self.forward(egress, next_hop, buf.data_mut())
    }

    /// What IPsec policy says of a transit packet: from the inside into a
    /// tunnel, or (under bypass only) forwarded as it is. None: forward plainly.
    fn policy<B: PacketBuf>(&mut self, side: Side, buf: &mut B, dst: IpAddr, total_len: usize) -> Option<Action> {
        if side == Side::Inside {
            if let Some(route) = self.routes.lookup(dst) {
                return Some(self.outbound_esp(buf, route, total_len, true));
            }
        }
        if self.settings.bypass {
            self.counters.add(Counter::Bypassed, 1);
            return None;
        }
        Some(Action::Drop(if side == Side::Inside { DropReason::NoTunnel } else { DropReason::Unprotected }))
    }

    /// Rewrites the Ethernet header for the next hop on `egress`.
    #[inline]
    fn forward(&mut self, egress: Side, next_hop: IpAddr, frame: &mut [u8]) -> Action {
        let Some(mac) = self.resolve(egress, next_hop) else {
            return Action::Drop(DropReason::NeighbourUnresolved);
        };
        self.send_to(egress, mac, frame)
    }

    /// Addresses the frame to `mac` from our port on `egress`.
    #[inline]
    fn send_to(&mut self, egress: Side, mac: MacAddr, frame: &mut [u8]) -> Action {
        let mut eth = ethernet::Frame::new_checked(frame).expect("length checked by process");
        eth.set_dst(mac);
        eth.set_src(self.macs[egress as usize]);
        self.counters.add(Counter::Forwarded, 1);
        Action::Forward
    }

    /// The next hop's MAC, soliciting it when unknown or due for a refresh.
    #[inline]
    fn resolve(&mut self, side: Side, ip: IpAddr) -> Option<MacAddr> {
        let entry = match self.last_hop[side as usize] {
            Some((last, entry)) if last == ip => Some(entry),
            _ => {
                let entry = self.snapshot.get(side, ip).copied();
                self.last_hop[side as usize] = entry.map(|e| (ip, e));
                entry
            }
        };
        let stale = entry.is_some_and(|e| !e.is_static && self.now_ms.saturating_sub(e.updated_ms) > REFRESH_AFTER_MS);
        if entry.is_none() || stale {
            self.request_solicitation(side, ip);
        }
        entry.map(|e| e.mac)
    }

    fn request_solicitation(&mut self, side: Side, ip: IpAddr) {
        if !self.pending.is_full() && self.limiter.allow(side, ip, self.now_ms) {
            self.pending.push((side, ip));
        }
    }

    /// Reports a neighbour to the table's writer, unless the snapshot
    /// already has it fresh (a busy LAN repeats itself).
    fn learn(&mut self, side: Side, ip: IpAddr, mac: MacAddr) {
        let on_link = match ip {
            IpAddr::V4(ip) => self.interfaces[side as usize].on_link_ipv4(ip),
            IpAddr::V6(ip) => self.interfaces[side as usize].on_link_ipv6(ip),
        };
        if !on_link || mac.is_multicast() || mac == MacAddr::ZERO {
            return;
        }
        let known = self.snapshot.get(side, ip);
        if known.is_some_and(|e| e.is_static || (e.mac == mac && self.now_ms.saturating_sub(e.updated_ms) < 1_000)) {
            return;
        }
        if self.neighbours.observe(Observation { side, ip, mac, at_ms: self.now_ms }) {
            self.counters.add(Counter::NeighbourUpdates, 1);
        }
    }

    /// Reports what each inbound SA has received, as `Expiry::Live` events
    /// (the control process takes ESP from a peer as a sign of life, RFC
    /// 7296 §2.4), and each tenant's NAT sessions here: one round over
    /// every SA and tenant per [`ACTIVITY_INTERVAL_MS`], a few per call,
    /// between bursts.
    pub fn report_activity(&mut self, now_ms: u64) {
        let a = &mut self.activity;
        if a.sa_slot.is_none() && a.tenant.is_none() {
            if now_ms < a.started_ms + ACTIVITY_INTERVAL_MS {
                return;
            }
            *a = Activity { sa_slot: Some(0), tenant: Some(0), started_ms: now_ms };
        }
        if let Some(slot) = a.sa_slot {
            let budget = (MAX_PENDING_EVENTS - self.events.len()).min(ACTIVITY_PER_CALL);
            let mut reported = 0;
            a.sa_slot = None;
            for (at, sa) in self.sad.inbound_from(slot) {
                if reported == budget {
                    a.sa_slot = Some(at);
                    break;
                }
                if sa.counters.packets > 0 {
                    self.events.push(SaEvent { spi: sa.spi, direction: crate::esp::sa::Direction::Inbound, expiry: crate::esp::sa::Expiry::Live, packets: sa.counters.packets, bytes: sa.counters.bytes });
                    reported += 1;
                }
            }
        }
        if let Some(tenant) = a.tenant {
            a.tenant = self.nat.as_mut().and_then(|nat| nat.report_sessions(tenant, ACTIVITY_PER_CALL));
        }
    }

    /// The SA lifetime and NAT events raised since the last call.
    pub fn take_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        let nat = self.nat.iter_mut().flat_map(|n| n.events.drain(..)).map(Event::Nat);
        self.events.drain(..).map(Event::Sa).chain(nat)
    }

    /// Forgets a split packet's rest (its first part was dropped, or no
    /// buffer was free for it), counting it as dropped.
    pub fn discard_fragment(&mut self, reason: DropReason) {
        if self.fragment_pending.take().is_some() {
            self.counters.drop(reason, 1);
        }
    }

    /// True if a split inner packet's rest waits for [`Forwarder::process_pending`].
    pub fn has_fragment(&self) -> bool {
        self.fragment_pending.is_some()
    }

    /// True if a packet waits for [`Forwarder::process_pending`]: the rest
    /// of a split packet, or a fragment released when its first one passed.
    pub fn has_pending(&self) -> bool {
        self.fragment_pending.is_some() || self.nat.as_ref().is_some_and(|n| n.fragments.has_released())
    }

    /// Writes a waiting packet into `buf`, a fresh buffer, and processes it:
    /// returns the side it counts as coming from and what to do with it.
    pub fn process_pending<B: PacketBuf>(&mut self, buf: &mut B) -> Option<(Side, Action)> {
        if let Some(route) = self.fragment_pending.take() {
            let len = self.fragment_rest.len();
            if !buf.set_len(ethernet::HEADER_LEN + len) {
                return Some((Side::Inside, Action::Drop(DropReason::NoBuffer)));
            }
            let frame = buf.data_mut();
            ethernet::write_header(frame, self.macs[Side::Inside as usize], MacAddr::ZERO, ethernet::ETHERTYPE_IPV4);
            frame[ethernet::HEADER_LEN..].copy_from_slice(&self.fragment_rest);
            // The TTL was lowered before the packet was split.
            return Some((Side::Inside, self.outbound_esp(buf, route, len, false)));
        }
        self.released_fragment(buf)
    }

    /// A solicitation the last batch asked for, to be written into a fresh
    /// buffer with [`Forwarder::write_solicitation`] and sent on `side`.
    pub fn take_solicitation(&mut self) -> Option<(Side, IpAddr)> {
        self.pending.pop()
    }

    pub fn mac(&self, side: Side) -> MacAddr {
        self.macs[side as usize]
    }
}

#[cfg(test)]
mod tests;
