//! One core's sessions: connection tracking and NAPT in one table.
//!
//! A session is one conversation between a clinic's endpoint and a remote
//! one; a mapping is the pool port one clinic endpoint got, shared by all
//! its sessions (endpoint-independent mapping, RFC 4787 REQ-1, RFC 5382
//! REQ-1). Return traffic must match a session (address-and-port-dependent
//! filtering, RFC 4787 §5: the stricter choice, as a firewall needs).
//!
//! Sessions and mappings live in slabs allocated at start, their free slots
//! chained through the slabs themselves; the indexes ([`Index`]) map hashes
//! to slab slots and are sized for the slabs, so nothing allocates per
//! packet. Expiry is lazy: a lookup that finds an expired session frees it,
//! and [`SessionTable::sweep`] walks a few slots per batch.

use super::index::Index;
use super::ports::{BlockEvent, PortBlocks, PortError};
use crate::policy::tcp::TcpTrack;
use std::net::Ipv4Addr;

/// Idle timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// RFC 5382 REQ-5: at least 2 hours 4 minutes.
    pub tcp_established: u32,
    /// RFC 5382 REQ-5: at least 4 minutes (handshake, closing, reset).
    pub tcp_transitory: u32,
    /// RFC 4787 REQ-5: at least 2 minutes, 5 recommended.
    pub udp: u32,
    /// RFC 5508 REQ-1: at least 60 seconds.
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { tcp_established: 7440, tcp_transitory: 240, udp: 300, icmp: 60 }
    }
}

/// A session as seen from the clinic's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InsideKey {
    pub tenant: u32,
    pub protocol: u8,
    pub inside: Ipv4Addr,
    pub inside_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
}

/// A session as seen from the remote side: pool address (its index), port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutsideKey {
    pub address: u16,
    pub protocol: u8,
    pub external_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
}

/// What limits a tenant's use of this core's table and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// Index of the tenant's pool address (paired pooling, RFC 4787 REQ-2).
    pub address: u16,
    /// Most port blocks it may hold.
    pub blocks: u16,
    /// Most sessions it may have.
    pub sessions: u32,
    /// Removed from the policy: its sessions are freed by the sweep.
    pub retired: bool,
}

/// Protocol state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Tcp(TcpTrack),
    /// UDP and ICMP: whether the remote side has answered.
    Datagram { answered: bool },
}

/// One session: one cache line (64 bytes). Its pool address is its tenant's.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    inside: Ipv4Addr,
    remote: Ipv4Addr,
    tenant: u32,
    /// Its mapping; while the slot is free, the next free slot.
    mapping: u32,
    /// Second (of the table's clock) after which the session is gone; 0: a free slot.
    expires: u32,
    inside_port: u16,
    remote_port: u16,
    external_port: u16,
    protocol: u8,
    /// [`LOGGED`], [`FROM_INSIDE`].
    flags: u8,
    pub track: Track,
}

/// Session flag: logged as it started (a rule said allow-and-log).
pub const LOGGED: u8 = 1;
/// Session flag: opened from the inside (an inbound rule), so its TCP opener is the remote end.
pub const FROM_INSIDE: u8 = 2;

impl Session {
    pub fn inside_key(&self) -> InsideKey {
        InsideKey { tenant: self.tenant, protocol: self.protocol, inside: self.inside, inside_port: self.inside_port, remote: self.remote, remote_port: self.remote_port }
    }
    #[inline]
    fn is_outside(&self, address: u16, key: &OutsideKey) -> bool {
        address == key.address
            && self.external_port == key.external_port
            && self.remote == key.remote
            && self.remote_port == key.remote_port
            && self.protocol == key.protocol
    }
    pub fn tenant(&self) -> u32 {
        self.tenant
    }
    /// The pool port the clinic's endpoint appears as.
    pub fn external_port(&self) -> u16 {
        self.external_port
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    pub fn set(&mut self, flag: u8) {
        self.flags |= flag;
    }
    /// The clinic's own address and port.
    pub fn inside(&self) -> (Ipv4Addr, u16) {
        (self.inside, self.inside_port)
    }
    fn is_free(&self) -> bool {
        self.expires == 0
    }
}

/// The pool port of one clinic endpoint (20 bytes).
#[derive(Debug, Clone, Copy)]
struct Mapping {
    tenant: u32,
    inside: Ipv4Addr,
    /// Sessions using it; while the slot is free, the next free slot.
    sessions: u32,
    inside_port: u16,
    external_port: u16,
    protocol: u8,
}

/// The end of a chain of free slots.
const NONE: u32 = u32::MAX;

/// Why a session could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewSessionError {
    /// The tenant has as many sessions as it may.
    TenantLimit,
    /// This core's table is full.
    TableFull,
    /// The clinic's endpoint has a dynamic mapping already.
    MappedElsewhere,
    Ports(PortError),
}

/// Per tenant on this core: its pool address, sessions, and the blocks it holds.
#[derive(Debug, Clone, Default)]
struct TenantUse {
    address: u16,
    sessions: u32,
    blocks: Vec<u32>,
    retired: bool,
}

impl TenantUse {
    fn new(limits: &TenantLimits) -> TenantUse {
        TenantUse { address: limits.address, sessions: 0, blocks: Vec::with_capacity(usize::from(limits.blocks)), retired: limits.retired }
    }
}

/// Hashes key words: each is folded in by a multiply, whose top bits depend
/// on every bit of its input (and those top bits pick the slot and the tag),
/// then a shift brings them down for the next word. A plain XOR of the words
/// would not do: keys vary in the same low bits of addresses and ports, and
/// would cancel out into a few values. The secret `seed` keeps a clinic from
/// choosing ports that all land on one slot (hash flooding).
#[inline]
pub(crate) fn hash_words<const N: usize>(seed: u64, words: [u64; N]) -> u64 {
    let mut h = seed;
    for w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
    }
    h
}

/// A secret per table, from the standard library's randomly keyed hasher.
pub(crate) fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u32)
}

#[inline]
fn hash_inside(seed: u64, k: &InsideKey) -> u64 {
    hash_words(seed, [
        u64::from(k.tenant) << 32 | u64::from(u32::from(k.inside)),
        u64::from(u32::from(k.remote)) << 32 | u64::from(k.inside_port) << 16 | u64::from(k.remote_port),
        u64::from(k.protocol),
    ])
}

#[inline]
fn hash_outside(seed: u64, k: &OutsideKey) -> u64 {
    hash_words(seed, [
        u64::from(k.address) << 32 | u64::from(k.external_port) << 8 | u64::from(k.protocol),
        u64::from(u32::from(k.remote)) << 16 | u64::from(k.remote_port),
    ])
}

#[inline]
fn hash_mapping(seed: u64, tenant: u32, protocol: u8, inside: Ipv4Addr, inside_port: u16) -> u64 {
    hash_words(seed, [u64::from(tenant) << 32 | u64::from(u32::from(inside)), u64::from(inside_port) << 8 | u64::from(protocol)])
}

/// One core's sessions, mappings and pool ports.
pub struct SessionTable {
    sessions: Vec<Session>,
    free_session: u32,
    live: usize,
    by_inside: Index,
    by_outside: Index,
    mappings: Vec<Mapping>,
    free_mapping: u32,
    mapping_by_inside: Index,
    ports: PortBlocks,
    tenants: Vec<TenantUse>,
    timeouts: Timeouts,
    sweep_at: usize,
    seed: u64,
}

impl SessionTable {
    /// A table for `capacity` sessions (and as many mappings), allocated now.
    pub fn new(capacity: u32, ports: PortBlocks, tenants: &[TenantLimits], timeouts: Timeouts) -> SessionTable {
        let n = capacity.max(1) as usize;
        let sessions = (0..n as u32)
            .map(|i| Session {
                inside: Ipv4Addr::UNSPECIFIED,
                remote: Ipv4Addr::UNSPECIFIED,
                tenant: 0,
                mapping: if i + 1 < n as u32 { i + 1 } else { NONE },
                expires: 0,
                inside_port: 0,
                remote_port: 0,
                external_port: 0,
                protocol: 0,
                flags: 0,
                track: Track::Datagram { answered: false },
            })
            .collect();
        let mappings = (0..n as u32)
            .map(|i| Mapping {
                tenant: 0,
                inside: Ipv4Addr::UNSPECIFIED,
                sessions: if i + 1 < n as u32 { i + 1 } else { NONE },
                inside_port: 0,
                external_port: 0,
                protocol: 0,
            })
            .collect();
        SessionTable {
            sessions,
            free_session: 0,
            live: 0,
            by_inside: Index::with_capacity(n),
            by_outside: Index::with_capacity(n),
            mappings,
            free_mapping: 0,
            mapping_by_inside: Index::with_capacity(n),
            ports,
            tenants: tenants.iter().map(TenantUse::new).collect(),
            timeouts,
            sweep_at: 0,
            seed: random_seed(),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    pub fn capacity(&self) -> usize {
        self.sessions.len()
    }
    pub fn ports(&self) -> &PortBlocks {
        &self.ports
    }
    pub fn session(&self, index: u32) -> &Session {
        &self.sessions[index as usize]
    }
    pub fn session_mut(&mut self, index: u32) -> &mut Session {
        &mut self.sessions[index as usize]
    }
    /// Follows a replacement policy's tenants (same indices and pool
    /// addresses, more tenants, some retired); allocates only here, off the
    /// packet path.
    pub fn adopt_tenants(&mut self, tenants: &[TenantLimits]) {
        for (used, limits) in self.tenants.iter_mut().zip(tenants) {
            debug_assert_eq!(used.address, limits.address, "a replacement keeps pool addresses");
            used.retired = limits.retired;
            used.blocks.reserve(usize::from(limits.blocks).saturating_sub(used.blocks.len()));
        }
        let known = self.tenants.len();
        self.tenants.extend(tenants.iter().skip(known).map(TenantUse::new));
    }

    /// Sessions a tenant has on this core.
    pub fn tenant_sessions(&self, tenant: u32) -> u32 {
        self.tenants.get(tenant as usize).map_or(0, |t| t.sessions)
    }

    /// First stage of prefetching a lookup: the index slots.
    #[inline]
    pub fn prefetch_inside(&self, key: &InsideKey) {
        self.by_inside.prefetch(hash_inside(self.seed, key));
    }
    #[inline]
    pub fn prefetch_outside(&self, key: &OutsideKey) {
        self.by_outside.prefetch(hash_outside(self.seed, key));
    }
    /// Second stage: the session the index points to (its slots now cached).
    #[inline]
    pub fn prefetch_inside_session(&self, key: &InsideKey) {
        if let Some(i) = self.by_inside.candidate(hash_inside(self.seed, key)) {
            dpdk_sys::prefetch(&self.sessions[i as usize]);
        }
    }
    #[inline]
    pub fn prefetch_outside_session(&self, key: &OutsideKey) {
        if let Some(i) = self.by_outside.candidate(hash_outside(self.seed, key)) {
            dpdk_sys::prefetch(&self.sessions[i as usize]);
        }
    }

    /// The live session of a packet from the clinic's side.
    #[inline]
    pub fn find_inside(&mut self, key: &InsideKey, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Option<u32> {
        let sessions = &self.sessions;
        let index = self.by_inside.find(hash_inside(self.seed, key), |i| sessions[i as usize].inside_key() == *key)?;
        self.live(index, now, log)
    }

    /// The live session of a packet from the remote side.
    #[inline]
    pub fn find_outside(&mut self, key: &OutsideKey, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Option<u32> {
        let (sessions, tenants) = (&self.sessions, &self.tenants);
        let index = self.by_outside.find(hash_outside(self.seed, key), |i| {
            let s = &sessions[i as usize];
            s.is_outside(tenants[s.tenant as usize].address, key)
        })?;
        self.live(index, now, log)
    }

    #[inline]
    fn live(&mut self, index: u32, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Option<u32> {
        if self.sessions[index as usize].expires < now {
            self.remove(index, log);
            return None;
        }
        Some(index)
    }

    fn outside_key(&self, s: &Session) -> OutsideKey {
        OutsideKey { address: self.tenants[s.tenant as usize].address, protocol: s.protocol, external_port: s.external_port, remote: s.remote, remote_port: s.remote_port }
    }

    /// Starts a session for a packet from the clinic, mapping its endpoint
    /// to the pool port it already has, or to a new one.
    pub fn create(&mut self, key: &InsideKey, limits: &TenantLimits, track: Track, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Result<u32, NewSessionError> {
        self.start(key, limits, None, track, 0, now, log)
    }

    /// Starts a session opened from the inside by an inbound rule: the
    /// clinic's endpoint appears as the rule's `port`, outside the blocks.
    pub fn create_inbound(&mut self, key: &InsideKey, limits: &TenantLimits, port: u16, track: Track, now: u32) -> Result<u32, NewSessionError> {
        self.start(key, limits, Some(port), track, FROM_INSIDE, now, &mut |_| true)
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        key: &InsideKey,
        limits: &TenantLimits,
        fixed_port: Option<u16>,
        track: Track,
        flags: u8,
        now: u32,
        log: &mut impl FnMut(BlockEvent) -> bool,
    ) -> Result<u32, NewSessionError> {
        if self.tenants[key.tenant as usize].sessions >= limits.sessions {
            return Err(NewSessionError::TenantLimit);
        }
        if self.free_session == NONE {
            return Err(NewSessionError::TableFull);
        }
        let mapping_hash = hash_mapping(self.seed, key.tenant, key.protocol, key.inside, key.inside_port);
        let mappings = &self.mappings;
        let found = self.mapping_by_inside.find(mapping_hash, |i| {
            let m = &mappings[i as usize];
            m.tenant == key.tenant && m.protocol == key.protocol && m.inside == key.inside && m.inside_port == key.inside_port
        });
        let mapping = match found {
            // An inbound rule's endpoint keeps the rule's port (an endpoint
            // already mapped to another port cannot also be reached by it).
            Some(m) if fixed_port.is_some_and(|p| p != self.mappings[m as usize].external_port) => return Err(NewSessionError::MappedElsewhere),
            Some(m) => m,
            None => {
                let m = self.free_mapping;
                if m == NONE {
                    return Err(NewSessionError::TableFull);
                }
                let port = match fixed_port {
                    Some(port) => port,
                    None => self
                        .ports
                        .allocate(key.tenant, limits.address, key.protocol, &mut self.tenants[key.tenant as usize].blocks, usize::from(limits.blocks), log)
                        .map_err(NewSessionError::Ports)?,
                };
                self.free_mapping = self.mappings[m as usize].sessions;
                self.mappings[m as usize] =
                    Mapping { tenant: key.tenant, inside: key.inside, sessions: 0, inside_port: key.inside_port, external_port: port, protocol: key.protocol };
                self.mapping_by_inside.insert(mapping_hash, m);
                m
            }
        };
        let map = &mut self.mappings[mapping as usize];
        // Two clinic endpoints never share a pool port, so the outside key
        // is free unless this very session exists already (callers look first).
        map.sessions += 1;
        let index = self.free_session;
        self.free_session = self.sessions[index as usize].mapping;
        self.sessions[index as usize] = Session {
            inside: key.inside,
            remote: key.remote,
            tenant: key.tenant,
            mapping,
            expires: 1,
            inside_port: key.inside_port,
            remote_port: key.remote_port,
            external_port: map.external_port,
            protocol: key.protocol,
            flags,
            track,
        };
        self.refresh(index, now);
        let outside = self.outside_key(&self.sessions[index as usize]);
        self.by_inside.insert(hash_inside(self.seed, key), index);
        self.by_outside.insert(hash_outside(self.seed, &outside), index);
        self.tenants[key.tenant as usize].sessions += 1;
        self.live += 1;
        Ok(index)
    }

    /// Moves a session's expiry on from `now` by its protocol and state's timeout.
    #[inline]
    pub fn refresh(&mut self, index: u32, now: u32) {
        let t = &self.timeouts;
        let s = &mut self.sessions[index as usize];
        let timeout = match s.track {
            Track::Tcp(tcp) if tcp.is_established() => t.tcp_established,
            Track::Tcp(_) => t.tcp_transitory,
            Track::Datagram { .. } if s.protocol == 17 => t.udp,
            Track::Datagram { .. } => t.icmp,
        };
        // 0 marks a free slot: a live session always expires after second 1.
        s.expires = now.saturating_add(timeout).max(1);
    }

    /// Ends a session now, returning its port once no session uses the mapping.
    pub fn remove(&mut self, index: u32, log: &mut impl FnMut(BlockEvent) -> bool) {
        let s = self.sessions[index as usize];
        if s.is_free() {
            return;
        }
        self.by_inside.remove(hash_inside(self.seed, &s.inside_key()), index);
        self.by_outside.remove(hash_outside(self.seed, &self.outside_key(&s)), index);
        let slot = &mut self.sessions[index as usize];
        slot.expires = 0;
        slot.mapping = self.free_session;
        self.free_session = index;
        self.live -= 1;
        let tenant = &mut self.tenants[s.tenant as usize];
        tenant.sessions -= 1;
        let m = &mut self.mappings[s.mapping as usize];
        m.sessions -= 1;
        if m.sessions == 0 {
            let m = *m;
            self.mapping_by_inside.remove(hash_mapping(self.seed, m.tenant, m.protocol, m.inside, m.inside_port), s.mapping);
            self.mappings[s.mapping as usize].sessions = self.free_mapping;
            self.free_mapping = s.mapping;
            self.ports.release(tenant.address, m.protocol, m.external_port, &mut tenant.blocks, log);
        }
    }

    /// Frees expired sessions among the next `budget` slots, and returns
    /// blocks whose return the log could not take before; returns how many sessions.
    pub fn sweep(&mut self, now: u32, budget: usize, log: &mut impl FnMut(BlockEvent) -> bool) -> usize {
        while let Some((tenant, address, local)) = self.ports.unreturned() {
            if !self.ports.retry_release(address, local, &mut self.tenants[tenant as usize].blocks, log) {
                break;
            }
        }
        let mut freed = 0;
        for _ in 0..budget.min(self.sessions.len()) {
            let index = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % self.sessions.len();
            let s = &self.sessions[index];
            if !s.is_free() && (s.expires < now || self.tenants[s.tenant as usize].retired) {
                self.remove(index as u32, log);
                freed += 1;
            }
        }
        freed
    }

    /// Bytes of memory per session slot: the slot, its mapping slot and the
    /// three indexes' slots.
    pub fn bytes_per_session(&self) -> usize {
        let indexes = self.by_inside.bytes() + self.by_outside.bytes() + self.mapping_by_inside.bytes();
        let total = self.sessions.len() * (std::mem::size_of::<Session>() + std::mem::size_of::<Mapping>()) + indexes;
        total / self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_one_cache_line_and_a_mapping_twenty_bytes() {
        assert_eq!(std::mem::size_of::<Session>(), 64);
        assert_eq!(std::mem::size_of::<Mapping>(), 20);
    }
}
