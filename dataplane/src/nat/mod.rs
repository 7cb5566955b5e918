//! Connection tracking and NAPT of clinic traffic, per worker core.
//!
//! From a clinic (after decryption), a packet's session is found by
//! (tenant, protocol, source, source port, destination, destination port);
//! a packet that starts one must be allowed by the tenant's rules, and gets
//! the tenant's pool address and a port from a block the tenant holds on
//! this core. From the inside, a packet to a pool address finds its session
//! by (pool address, port, protocol, remote address and port) on the core
//! that owns the port ([`ports::PoolLayout::owner`]): only answers within a
//! live session pass. Addresses and ports are rewritten in place with
//! incremental checksums; ICMP errors are matched and translated by the
//! packet they quote (RFC 5508 §4.2).

pub mod flow;
pub mod fragments;
pub mod index;
pub mod ports;
pub mod rewrite;
pub mod sessions;

use crate::pipeline::{Counter, CounterBlock, DropReason};
use crate::policy::rules::Verdict;
use crate::policy::tcp::{TcpTrack, TcpVerdict};
use crate::policy::{InboundRule, Policy};
use crate::Side;
use arrayvec::ArrayVec;
use flow::{Flow, Quoted, Transport, PROTOCOL_ICMP};
use fragments::{FragmentKey, Fragments, Later, Translation};
use ports::{BlockEvent, PortBlocks, PortError};
use rewrite::End;
use sessions::{InsideKey, NewSessionError, OutsideKey, Session, SessionTable, Track};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A session that a rule said to log, as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SessionStart {
    pub tenant: u32,
    pub protocol: u8,
    pub inside: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
    pub rule: u32,
    pub unix_ms: u64,
}

/// What NAT tells the manager thread (which writes the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatEvent {
    Block(BlockEvent),
    Session(SessionStart),
    /// A tenant was refused a session for want of ports (at most one a second per core).
    Exhausted { tenant: u32, core: u8, reason: PortError },
    /// How many sessions a tenant has on a core now (for the control
    /// process's operators, not the NAT log).
    Sessions { tenant: u32, core: u8, sessions: u32 },
}

impl NatEvent {
    /// The event as one JSON line for the NAT log, tenants by name (RFC
    /// 7422 §2: time, subscriber, pool address and port range).
    pub fn log_line(&self, policy: &Policy) -> String {
        let name = |t: u32| policy.names.get(t as usize).map_or("?", |n| n.as_str()).to_owned();
        let line = match self {
            NatEvent::Block(b) => serde_json::json!({
                "unix_ms": b.unix_ms, "event": format!("port_block_{}", match b.action { ports::BlockAction::Allocated => "allocated", ports::BlockAction::Released => "released" }),
                "tenant": name(b.tenant), "address": b.address, "ports": format!("{}-{}", b.first_port, b.last_port), "worker": b.core,
            }),
            NatEvent::Session(s) => serde_json::json!({
                "unix_ms": s.unix_ms, "event": "session_logged", "tenant": name(s.tenant), "protocol": s.protocol,
                "inside": format!("{}:{}", s.inside.0, s.inside.1), "remote": format!("{}:{}", s.remote.0, s.remote.1),
                "external": format!("{}:{}", s.external.0, s.external.1), "rule": s.rule,
            }),
            NatEvent::Exhausted { tenant, core, reason } => serde_json::json!({
                "unix_ms": ports::unix_ms(), "event": "ports_exhausted", "tenant": name(*tenant), "worker": core, "reason": format!("{reason:?}"),
            }),
            NatEvent::Sessions { tenant, core, sessions } => serde_json::json!({
                "unix_ms": ports::unix_ms(), "event": "tenant_sessions", "tenant": name(*tenant), "worker": core, "sessions": sessions,
            }),
        };
        line.to_string()
    }
}

/// Events one batch may raise; a block is never lent without room to log it.
pub const MAX_NAT_EVENTS: usize = 256;

/// Below this many live sessions the table stays in the CPU's caches, and
/// prefetching only costs (about 10 ns a packet, measured by bench_nat).
const PREFETCH_FROM_SESSIONS: usize = 16_384;

/// Slots of the fragment table swept per batch (all of it in 1,024 batches).
const FRAGMENT_SWEEP_PER_BATCH: usize = fragments::FLOWS / 1024;

/// Slots of the session table swept per batch.
const SWEEP_PER_BATCH: usize = 32;

/// What became of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Translated in place; from the inside, for this tenant's tunnel.
    Pass { tenant: u32 },
    /// A later fragment kept until its first fragment passes.
    Held,
    /// Another core owns the session: hand the packet there.
    HandOff(u8),
    Drop(DropReason),
}

/// One core's NAT and connection-tracking state.
pub struct NatCore {
    pub policy: Arc<Policy>,
    core: u8,
    pub sessions: SessionTable,
    pub fragments: Fragments,
    pub events: ArrayVec<NatEvent, MAX_NAT_EVENTS>,
    last_exhausted_ms: Option<u64>,
    /// Each tenant's session count at its last report.
    reported_sessions: Vec<u32>,
}

/// Keys use the echo identifier as the clinic's port and 0 as the remote's.
#[inline]
fn ports_of(flow: &Flow) -> (u16, u16) {
    match flow.transport {
        Transport::Echo { ident, .. } => (ident, 0),
        _ => flow.ports(),
    }
}

fn quoted_ports(q: &Quoted) -> (u16, u16) {
    if q.protocol == PROTOCOL_ICMP {
        (q.src_port, 0)
    } else {
        (q.src_port, q.dst_port)
    }
}

impl NatCore {
    pub fn new(policy: Arc<Policy>, core: u8) -> NatCore {
        let ports = PortBlocks::new(policy.layout.clone(), core);
        let sessions = SessionTable::new(policy.sessions_per_worker, ports, &policy.tenants, policy.timeouts);
        let reported_sessions = vec![0; policy.tenants.len()];
        NatCore { policy, core, sessions, fragments: Fragments::default(), events: ArrayVec::new(), last_exhausted_ms: None, reported_sessions }
    }

    /// The session key of a packet from a clinic, read without validation:
    /// only to prefetch its session.
    #[inline]
    fn peek_inside(tenant: u32, ip: &[u8]) -> Option<InsideKey> {
        let (protocol, src, dst, l4) = peek(ip)?;
        let word = |at: usize| ip.get(l4 + at..l4 + at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (inside_port, remote_port) = if protocol == PROTOCOL_ICMP { (word(4)?, 0) } else { (word(0)?, word(2)?) };
        Some(InsideKey { tenant, protocol, inside: src, inside_port, remote: dst, remote_port })
    }

    #[inline]
    fn peek_outside(&self, ip: &[u8]) -> Option<OutsideKey> {
        let (protocol, src, dst, l4) = peek(ip)?;
        let word = |at: usize| ip.get(l4 + at..l4 + at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (external_port, remote_port) = if protocol == PROTOCOL_ICMP { (word(4)?, 0) } else { (word(2)?, word(0)?) };
        Some(OutsideKey { address: self.policy.pool_address(dst)?, protocol, external_port, remote: src, remote_port })
    }

    /// First stage of prefetching for a packet a few places ahead in its
    /// burst (from a clinic of `tenant`, or from the inside): the index slots
    /// of its session. The second stage, nearer, is [`NatCore::prefetch_session`].
    /// Neither does anything while the table is small enough to stay cached.
    #[inline]
    pub fn prefetch_index(&self, from: Side, tenant: u32, ip: &[u8]) {
        if self.sessions.len() < PREFETCH_FROM_SESSIONS {
            return;
        }
        match from {
            Side::Outside => Self::peek_inside(tenant, ip).map(|k| self.sessions.prefetch_inside(&k)),
            Side::Inside => self.peek_outside(ip).map(|k| self.sessions.prefetch_outside(&k)),
        };
    }

    #[inline]
    pub fn prefetch_session(&self, from: Side, tenant: u32, ip: &[u8]) {
        if self.sessions.len() < PREFETCH_FROM_SESSIONS {
            return;
        }
        match from {
            Side::Outside => Self::peek_inside(tenant, ip).map(|k| self.sessions.prefetch_inside_session(&k)),
            Side::Inside => self.peek_outside(ip).map(|k| self.sessions.prefetch_outside_session(&k)),
        };
    }

    /// Once per batch: frees a few expired sessions.
    pub fn maintain(&mut self, now_ms: u64, counters: &mut CounterBlock) {
        let events = &mut self.events;
        let freed = self.sessions.sweep(seconds(now_ms), SWEEP_PER_BATCH, &mut |e| events.try_push(NatEvent::Block(e)).is_ok());
        counters.add(Counter::NatSessionsExpired, freed as u64);
        self.fragments.sweep(now_ms, FRAGMENT_SWEEP_PER_BATCH);
        counters.drop(DropReason::FragmentTimeout, std::mem::take(&mut self.fragments.dropped));
    }

    /// A decrypted IPv4 packet `ip` from `tenant`'s tunnel: translated in
    /// place if its session lives or the tenant's rules allow a new one.
    pub fn upstream(&mut self, tenant: u32, ip: &mut [u8], now_ms: u64, counters: &mut CounterBlock) -> Outcome {
        let Ok(flow) = flow::parse(ip) else { return Outcome::Drop(DropReason::InnerInvalid) };
        let now = seconds(now_ms);
        // A tenant this worker's policy does not know yet (its tunnel came first) is denied.
        let Some(address) = self.policy.tenants.get(tenant as usize).map(|t| t.address) else { return Outcome::Drop(DropReason::PolicyDenied) };
        let pool_address = self.policy.layout.addresses[usize::from(address)];
        if !flow.has_transport_header() {
            return self.later_fragment(tenant, Side::Outside, ip, &flow, now_ms, counters);
        }
        let (src_port, dst_port) = ports_of(&flow);
        let key = match flow.transport {
            Transport::IcmpError { quoted } => {
                // A clinic's error about a packet that came to it: the quote
                // runs remote -> clinic, and the error goes back to that
                // remote only (else it would carry anything anywhere, past the rules).
                if flow.dst != quoted.src {
                    return Outcome::Drop(DropReason::NoSession);
                }
                let (q_src_port, q_dst_port) = quoted_ports(&quoted);
                let key = InsideKey { tenant, protocol: quoted.protocol, inside: quoted.dst, inside_port: if quoted.protocol == PROTOCOL_ICMP { q_src_port } else { q_dst_port }, remote: quoted.src, remote_port: if quoted.protocol == PROTOCOL_ICMP { 0 } else { q_src_port } };
                let events = &mut self.events;
                let Some(index) = self.sessions.find_inside(&key, now, &mut |e| events.try_push(NatEvent::Block(e)).is_ok()) else {
                    return Outcome::Drop(DropReason::NoSession);
                };
                let port = self.sessions.session(index).external_port();
                rewrite::translate_icmp_error(ip, &flow, &quoted, End::Source, pool_address, port);
                counters.add(Counter::NatIcmpErrorsTranslated, 1);
                return Outcome::Pass { tenant };
            }
            Transport::Opaque => return Outcome::Drop(DropReason::NatUnsupported),
            Transport::Echo { request: false, .. } => return Outcome::Drop(DropReason::NoSession),
            _ => InsideKey { tenant, protocol: flow.protocol, inside: flow.src, inside_port: src_port, remote: flow.dst, remote_port: dst_port },
        };
        let events = &mut self.events;
        let index = match self.sessions.find_inside(&key, now, &mut |e| events.try_push(NatEvent::Block(e)).is_ok()) {
            Some(index) => {
                if let Err(reason) = track_session(self.sessions.session_mut(index), 0, &flow) {
                    return Outcome::Drop(reason);
                }
                self.sessions.refresh(index, now);
                index
            }
            None => match self.open(&key, &flow, now_ms, counters) {
                Ok(index) => index,
                Err(reason) => return Outcome::Drop(reason),
            },
        };
        let port = self.sessions.session(index).external_port();
        rewrite::set_endpoint(ip, &flow, End::Source, pool_address, port);
        if flow.fragment.is_some() {
            self.fragments.first_passed(
                FragmentKey { tenant, src: key.inside, dst: flow.dst, protocol: flow.protocol, ident: flow.fragment.map_or(0, |f| f.ident) },
                Translation::Local { address: pool_address, tenant },
                now_ms,
            );
        }
        Outcome::Pass { tenant }
    }

    /// A fragment without the transport header, from a clinic of `tenant`
    /// (or from the inside, `tenant` u32::MAX): it follows its first
    /// fragment's translation (the source's from a clinic, the destination's
    /// from the inside), waits for it, or goes to the worker it went to.
    fn later_fragment(&mut self, tenant: u32, from: Side, ip: &mut [u8], flow: &Flow, now_ms: u64, counters: &mut CounterBlock) -> Outcome {
        let key = FragmentKey { tenant, src: flow.src, dst: flow.dst, protocol: flow.protocol, ident: flow.fragment.map_or(0, |f| f.ident) };
        match self.fragments.later(key, from, ip, now_ms) {
            Later::Translate { address, tenant } => {
                let end = if from == Side::Outside { End::Source } else { End::Destination };
                rewrite::set_endpoint(ip, flow, end, address, 0);
                Outcome::Pass { tenant }
            }
            Later::HandOff(core) => Outcome::HandOff(core),
            Later::Held => {
                counters.add(Counter::FragmentsHeld, 1);
                Outcome::Held
            }
            Later::NoRoom => Outcome::Drop(DropReason::FragmentNoRoom),
        }
    }

    /// A new session from a clinic, if its rules allow it and there is room.
    fn open(&mut self, key: &InsideKey, flow: &Flow, now_ms: u64, counters: &mut CounterBlock) -> Result<u32, DropReason> {
        let track = match flow.transport {
            Transport::Tcp { segment, .. } => Track::Tcp(TcpTrack::open(&segment).ok_or(DropReason::TcpNotSyn)?),
            _ => Track::Datagram { answered: false },
        };
        let policy = &self.policy;
        let Some(found) = policy.rules.classify(key.tenant, key.inside, key.remote, key.protocol, key.remote_port) else {
            return Err(DropReason::PolicyDenied);
        };
        if found.verdict == Verdict::Deny {
            return Err(DropReason::PolicyDenied);
        }
        let limits = policy.tenants[key.tenant as usize];
        let events = &mut self.events;
        let created = self.sessions.create(key, &limits, track, seconds(now_ms), &mut |e| events.try_push(NatEvent::Block(e)).is_ok());
        let index = match created {
            Ok(index) => index,
            Err(NewSessionError::TenantLimit) => return Err(DropReason::TenantSessionLimit),
            // (Only inbound sessions have a port fixed in advance.)
            Err(NewSessionError::TableFull | NewSessionError::MappedElsewhere) => return Err(DropReason::NatTableFull),
            Err(NewSessionError::Ports(reason)) => {
                if self.last_exhausted_ms.is_none_or(|t| now_ms >= t + 1000) && !self.events.is_full() {
                    self.last_exhausted_ms = Some(now_ms);
                    self.events.push(NatEvent::Exhausted { tenant: key.tenant, core: self.core, reason });
                }
                return Err(DropReason::NatPortsExhausted);
            }
        };
        counters.add(Counter::NatSessionsCreated, 1);
        if found.verdict == Verdict::AllowLog {
            let session = self.sessions.session_mut(index);
            session.set(sessions::LOGGED);
            let port = session.external_port();
            let address = self.policy.tenants[key.tenant as usize].address;
            let start = SessionStart {
                tenant: key.tenant,
                protocol: key.protocol,
                inside: (key.inside, key.inside_port),
                remote: (key.remote, key.remote_port),
                external: (self.policy.layout.addresses[usize::from(address)], port),
                rule: found.rule,
                unix_ms: ports::unix_ms(),
            };
            if self.events.try_push(NatEvent::Session(start)).is_err() {
                counters.add(Counter::NatEventsLost, 1);
            }
        }
        Ok(index)
    }

    /// A session opened from the inside under an inbound `rule`, for the
    /// packet of `key` (its first: a TCP SYN, or a UDP datagram).
    fn open_inbound(&mut self, rule: &InboundRule, key: &OutsideKey, flow: &Flow, now: u32, counters: &mut CounterBlock) -> Result<u32, DropReason> {
        let track = match flow.transport {
            Transport::Tcp { segment, .. } => Track::Tcp(TcpTrack::open(&segment).ok_or(DropReason::TcpNotSyn)?),
            _ => Track::Datagram { answered: false },
        };
        let inside = InsideKey { tenant: rule.tenant, protocol: key.protocol, inside: *rule.to.ip(), inside_port: rule.to.port(), remote: key.remote, remote_port: key.remote_port };
        let limits = self.policy.tenants[rule.tenant as usize];
        let index = match self.sessions.create_inbound(&inside, &limits, key.external_port, track, now) {
            Ok(index) => index,
            Err(NewSessionError::TenantLimit) => return Err(DropReason::TenantSessionLimit),
            // The service's endpoint talks out through a dynamic port already.
            Err(NewSessionError::MappedElsewhere) => return Err(DropReason::NoSession),
            Err(NewSessionError::TableFull | NewSessionError::Ports(_)) => return Err(DropReason::NatTableFull),
        };
        counters.add(Counter::NatSessionsCreated, 1);
        Ok(index)
    }

    /// Takes a replacement policy (see [`Policy::compile_replacement`]).
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.sessions.adopt_tenants(&policy.tenants);
        self.reported_sessions.resize(policy.tenants.len(), 0);
        self.policy = policy;
    }

    /// Reports tenants' session counts on this core, a few per call: those
    /// that have sessions, or had at the last report. Leaves half the event
    /// room to port blocks, which are never lent without room to log them.
    /// The tenant to go on from next time; None once all were walked.
    pub fn report_sessions(&mut self, from: usize, most: usize) -> Option<usize> {
        let mut at = from;
        let mut reported = 0;
        while at < self.reported_sessions.len() && reported < most && self.events.len() < MAX_NAT_EVENTS / 2 {
            let now = self.sessions.tenant_sessions(at as u32);
            if now > 0 || self.reported_sessions[at] > 0 {
                self.events.push(NatEvent::Sessions { tenant: at as u32, core: self.core, sessions: now });
                self.reported_sessions[at] = now;
                reported += 1;
            }
            at += 1;
        }
        (at < self.reported_sessions.len()).then_some(at)
    }

    /// A packet `ip` from the inside to pool address `address` (its index):
    /// translated back for its clinic if it belongs to a live session.
    /// `owner_of` tells which worker holds the tunnel an inbound rule leads
    /// to (that worker makes the rule's sessions).
    pub fn downstream(&mut self, address: u16, ip: &mut [u8], now_ms: u64, counters: &mut CounterBlock, owner_of: impl Fn(&InboundRule) -> Option<u8>) -> Outcome {
        let Ok(flow) = flow::parse(ip) else { return Outcome::Drop(DropReason::Ipv4Invalid) };
        let now = seconds(now_ms);
        let layout = &self.policy.layout;
        if !flow.has_transport_header() {
            return self.later_fragment(u32::MAX, Side::Inside, ip, &flow, now_ms, counters);
        }
        let (key, quoted) = match flow.transport {
            Transport::IcmpError { quoted } => {
                // An error about a packet a clinic sent: the quote runs pool -> remote.
                let (q_src_port, q_dst_port) = quoted_ports(&quoted);
                let q_address = self.policy.pool_address(quoted.src).filter(|&a| a == address);
                let Some(q_address) = q_address else { return Outcome::Drop(DropReason::NoSession) };
                (OutsideKey { address: q_address, protocol: quoted.protocol, external_port: q_src_port, remote: quoted.dst, remote_port: q_dst_port }, Some(quoted))
            }
            Transport::Opaque => return Outcome::Drop(DropReason::NatUnsupported),
            Transport::Echo { request: true, .. } => return Outcome::Drop(DropReason::NoSession),
            _ => {
                let (src_port, dst_port) = flow.ports();
                let remote_port = if flow.protocol == PROTOCOL_ICMP { 0 } else { src_port };
                (OutsideKey { address, protocol: flow.protocol, external_port: dst_port, remote: flow.src, remote_port }, None)
            }
        };
        // Ports below the dynamic range belong to inbound rules, owned by
        // the worker of the tunnel they lead to.
        let inbound = self.policy.inbound(key.address, key.protocol, key.external_port).copied();
        let owner = match (layout.owner(key.external_port), &inbound) {
            (Some(core), _) => core,
            (None, Some(rule)) => match owner_of(rule) {
                Some(core) => core,
                None => return Outcome::Drop(DropReason::NoTunnel),
            },
            (None, None) => return Outcome::Drop(DropReason::NoSession),
        };
        let fragment_key = flow.fragment.map(|f| FragmentKey { tenant: u32::MAX, src: flow.src, dst: flow.dst, protocol: flow.protocol, ident: f.ident });
        if owner != self.core {
            // Later fragments reach the core the first one reached (RSS hashes
            // fragments by addresses): from there they follow it to its owner.
            if let Some(fk) = fragment_key {
                self.fragments.first_passed(fk, Translation::Owner(owner), now_ms);
            }
            return Outcome::HandOff(owner);
        }
        let events = &mut self.events;
        let found = self.sessions.find_outside(&key, now, &mut |e| events.try_push(NatEvent::Block(e)).is_ok());
        let index = match (found, quoted, inbound) {
            (Some(index), Some(quoted), _) => {
                let session = self.sessions.session(index);
                let (tenant, (inside, inside_port)) = (session.tenant(), session.inside());
                rewrite::translate_icmp_error(ip, &flow, &quoted, End::Destination, inside, inside_port);
                counters.add(Counter::NatIcmpErrorsTranslated, 1);
                return Outcome::Pass { tenant };
            }
            (Some(index), None, _) => {
                if let Err(reason) = track_session(self.sessions.session_mut(index), 1, &flow) {
                    return Outcome::Drop(reason);
                }
                self.sessions.refresh(index, now);
                index
            }
            (None, None, Some(rule)) if rule.from.contains(flow.src) => match self.open_inbound(&rule, &key, &flow, now, counters) {
                Ok(index) => index,
                Err(reason) => return Outcome::Drop(reason),
            },
            (None, _, _) => return Outcome::Drop(DropReason::NoSession),
        };
        let session = self.sessions.session(index);
        let (tenant, (inside, inside_port)) = (session.tenant(), session.inside());
        rewrite::set_endpoint(ip, &flow, End::Destination, inside, inside_port);
        if let Some(fk) = fragment_key {
            self.fragments.first_passed(fk, Translation::Local { address: inside, tenant }, now_ms);
        }
        Outcome::Pass { tenant }
    }
}

/// Moves a session's protocol state on for a packet from the clinic
/// (`from` 0) or the remote end (1); an error is the reason to drop it.
#[inline]
fn track_session(session: &mut Session, from: usize, flow: &Flow) -> Result<(), DropReason> {
    // The TCP tracker's side 0 is the opener: the remote end, for sessions opened from the inside.
    let side = if session.has(sessions::FROM_INSIDE) { 1 - from } else { from };
    track(&mut session.track, side, flow)
}

#[inline]
fn track(track: &mut Track, side: usize, flow: &Flow) -> Result<(), DropReason> {
    match (track, flow.transport) {
        (Track::Tcp(tcp), Transport::Tcp { segment, .. }) => match tcp.update(side, &segment) {
            TcpVerdict::Accept => Ok(()),
            TcpVerdict::OutOfWindow => Err(DropReason::TcpOutOfWindow),
            TcpVerdict::Invalid => Err(DropReason::TcpInvalid),
        },
        (Track::Datagram { answered }, _) => {
            *answered |= side == 1;
            Ok(())
        }
        // The protocol is part of the key: a TCP session only sees TCP.
        (Track::Tcp(_), _) => Err(DropReason::TcpInvalid),
    }
}

/// Protocol, addresses and transport offset of an IPv4 packet, unvalidated.
#[inline]
fn peek(ip: &[u8]) -> Option<(u8, Ipv4Addr, Ipv4Addr, usize)> {
    let header = ip.get(..20)?;
    if header[0] >> 4 != 4 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
    Some((header[9], addr(12), addr(16), usize::from(header[0] & 0x0f) * 4))
}

#[inline]
fn seconds(now_ms: u64) -> u32 {
    (now_ms / 1000) as u32
}

#[cfg(test)]
mod tests;
