//! One core's sessions: connection tracking and NAPT in one table.
//!
//! A session is one conversation between a clinic's endpoint and a remote
//! one; a mapping is the pool port one clinic endpoint got, shared by all
//! its sessions (endpoint-independent mapping, RFC 4787 REQ-1, RFC 5382
//! REQ-1). Return traffic must match a session (address-and-port-dependent
//! filtering, RFC 4787 §5: the stricter choice, as a firewall needs).
//!
//! Sessions and mappings live in slabs allocated at start; the indexes are
//! hash tables of slab indices sized for the slab, so nothing allocates per
//! packet. Expiry is lazy: a lookup that finds an expired session frees it,
//! and [`SessionTable::sweep`] walks a few slots per batch.

use super::ports::{BlockEvent, PortBlocks, PortError};
use crate::policy::tcp::TcpTrack;
use hashbrown::HashTable;
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
}

/// Protocol state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Tcp(TcpTrack),
    /// UDP and ICMP: whether the remote side has answered.
    Datagram { answered: bool },
}

/// One session (72 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Session {
    inside: Ipv4Addr,
    remote: Ipv4Addr,
    tenant: u32,
    mapping: u32,
    /// Second (of the table's clock) after which the session is gone.
    expires: u32,
    inside_port: u16,
    remote_port: u16,
    external_port: u16,
    address: u16,
    protocol: u8,
    /// Log each packet's session start (a rule said allow-and-log).
    pub logged: bool,
    pub track: Track,
}

impl Session {
    pub fn inside_key(&self) -> InsideKey {
        InsideKey { tenant: self.tenant, protocol: self.protocol, inside: self.inside, inside_port: self.inside_port, remote: self.remote, remote_port: self.remote_port }
    }
    pub fn outside_key(&self) -> OutsideKey {
        OutsideKey { address: self.address, protocol: self.protocol, external_port: self.external_port, remote: self.remote, remote_port: self.remote_port }
    }
    pub fn tenant(&self) -> u32 {
        self.tenant
    }
    /// The pool address index and port the clinic's endpoint appears as.
    pub fn external(&self) -> (u16, u16) {
        (self.address, self.external_port)
    }
    /// The clinic's own address and port.
    pub fn inside(&self) -> (Ipv4Addr, u16) {
        (self.inside, self.inside_port)
    }
    fn is_free(&self) -> bool {
        self.expires == 0
    }
}

/// The pool port of one clinic endpoint (12+8 bytes).
#[derive(Debug, Clone, Copy)]
struct Mapping {
    tenant: u32,
    inside: Ipv4Addr,
    inside_port: u16,
    external_port: u16,
    protocol: u8,
    address: u16,
    sessions: u32,
}

/// Why a session could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewSessionError {
    /// The tenant has as many sessions as it may.
    TenantLimit,
    /// This core's table is full.
    TableFull,
    Ports(PortError),
}

/// Per tenant on this core: sessions, and the blocks it holds.
#[derive(Debug, Clone, Default)]
struct TenantUse {
    sessions: u32,
    blocks: Vec<u32>,
}

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let x = (a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93) ^ (x >> 17)
}

#[inline]
fn hash_inside(k: &InsideKey) -> u64 {
    let a = u64::from(k.tenant) << 32 | u64::from(u32::from(k.inside));
    let b = u64::from(u32::from(k.remote)) << 32 | u64::from(k.inside_port) << 16 | u64::from(k.remote_port);
    mix(mix(a, b), u64::from(k.protocol))
}

#[inline]
fn hash_outside(k: &OutsideKey) -> u64 {
    let a = u64::from(k.address) << 32 | u64::from(k.external_port) << 8 | u64::from(k.protocol);
    let b = u64::from(u32::from(k.remote)) << 16 | u64::from(k.remote_port);
    mix(a, b)
}

#[inline]
fn hash_mapping(tenant: u32, protocol: u8, inside: Ipv4Addr, inside_port: u16) -> u64 {
    mix(u64::from(tenant) << 32 | u64::from(u32::from(inside)), u64::from(inside_port) << 8 | u64::from(protocol))
}

/// One core's sessions, mappings and pool ports.
pub struct SessionTable {
    sessions: Vec<Session>,
    free_sessions: Vec<u32>,
    by_inside: HashTable<u32>,
    by_outside: HashTable<u32>,
    mappings: Vec<Mapping>,
    free_mappings: Vec<u32>,
    mapping_by_inside: HashTable<u32>,
    ports: PortBlocks,
    tenants: Vec<TenantUse>,
    timeouts: Timeouts,
    sweep_at: usize,
}

impl SessionTable {
    /// A table for `capacity` sessions (and as many mappings), allocated now.
    pub fn new(capacity: u32, ports: PortBlocks, tenants: &[TenantLimits], timeouts: Timeouts) -> SessionTable {
        let n = capacity as usize;
        let empty = Session {
            inside: Ipv4Addr::UNSPECIFIED,
            remote: Ipv4Addr::UNSPECIFIED,
            tenant: 0,
            mapping: 0,
            expires: 0,
            inside_port: 0,
            remote_port: 0,
            external_port: 0,
            address: 0,
            protocol: 0,
            logged: false,
            track: Track::Datagram { answered: false },
        };
        SessionTable {
            sessions: vec![empty; n],
            free_sessions: (0..capacity).rev().collect(),
            by_inside: HashTable::with_capacity(n),
            by_outside: HashTable::with_capacity(n),
            mappings: vec![Mapping { tenant: 0, inside: Ipv4Addr::UNSPECIFIED, inside_port: 0, external_port: 0, protocol: 0, address: 0, sessions: 0 }; n],
            free_mappings: (0..capacity).rev().collect(),
            mapping_by_inside: HashTable::with_capacity(n),
            ports,
            tenants: tenants.iter().map(|t| TenantUse { sessions: 0, blocks: Vec::with_capacity(usize::from(t.blocks)) }).collect(),
            timeouts,
            sweep_at: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len() - self.free_sessions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// Sessions a tenant has on this core.
    pub fn tenant_sessions(&self, tenant: u32) -> u32 {
        self.tenants.get(tenant as usize).map_or(0, |t| t.sessions)
    }

    /// The live session of a packet from the clinic's side.
    #[inline]
    pub fn find_inside(&mut self, key: &InsideKey, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Option<u32> {
        let sessions = &self.sessions;
        let index = *self.by_inside.find(hash_inside(key), |&i| sessions[i as usize].inside_key() == *key)?;
        self.live(index, now, log)
    }

    /// The live session of a packet from the remote side.
    #[inline]
    pub fn find_outside(&mut self, key: &OutsideKey, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Option<u32> {
        let sessions = &self.sessions;
        let index = *self.by_outside.find(hash_outside(key), |&i| sessions[i as usize].outside_key() == *key)?;
        self.live(index, now, log)
    }

    fn live(&mut self, index: u32, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Option<u32> {
        if self.sessions[index as usize].expires < now {
            self.remove(index, log);
            return None;
        }
        Some(index)
    }

    /// Starts a session for a packet from the clinic, mapping its endpoint
    /// to the pool port it already has, or to a new one.
    pub fn create(&mut self, key: &InsideKey, limits: &TenantLimits, track: Track, now: u32, log: &mut impl FnMut(BlockEvent) -> bool) -> Result<u32, NewSessionError> {
        if self.tenants[key.tenant as usize].sessions >= limits.sessions {
            return Err(NewSessionError::TenantLimit);
        }
        if self.free_sessions.is_empty() {
            return Err(NewSessionError::TableFull);
        }
        let mapping = match self.find_mapping(key) {
            Some(m) => m,
            None => {
                let Some(&m) = self.free_mappings.last() else { return Err(NewSessionError::TableFull) };
                let port = self
                    .ports
                    .allocate(key.tenant, limits.address, key.protocol, &mut self.tenants[key.tenant as usize].blocks, usize::from(limits.blocks), log)
                    .map_err(NewSessionError::Ports)?;
                self.free_mappings.pop();
                self.mappings[m as usize] = Mapping {
                    tenant: key.tenant,
                    inside: key.inside,
                    inside_port: key.inside_port,
                    external_port: port,
                    protocol: key.protocol,
                    address: limits.address,
                    sessions: 0,
                };
                let mappings = &self.mappings;
                self.mapping_by_inside.insert_unique(hash_mapping(key.tenant, key.protocol, key.inside, key.inside_port), m, |&i| {
                    let x = &mappings[i as usize];
                    hash_mapping(x.tenant, x.protocol, x.inside, x.inside_port)
                });
                m
            }
        };
        let map = &mut self.mappings[mapping as usize];
        let outside = OutsideKey { address: map.address, protocol: key.protocol, external_port: map.external_port, remote: key.remote, remote_port: key.remote_port };
        // Two clinic endpoints never share a pool port, so the outside key
        // is free unless this very session exists already (callers look first).
        map.sessions += 1;
        let index = self.free_sessions.pop().expect("checked above");
        self.sessions[index as usize] = Session {
            inside: key.inside,
            remote: key.remote,
            tenant: key.tenant,
            mapping,
            expires: 1,
            inside_port: key.inside_port,
            remote_port: key.remote_port,
            external_port: outside.external_port,
            address: outside.address,
            protocol: key.protocol,
            logged: false,
            track,
        };
        self.refresh(index, now);
        let sessions = &self.sessions;
        self.by_inside.insert_unique(hash_inside(key), index, |&i| hash_inside(&sessions[i as usize].inside_key()));
        self.by_outside.insert_unique(hash_outside(&outside), index, |&i| hash_outside(&sessions[i as usize].outside_key()));
        self.tenants[key.tenant as usize].sessions += 1;
        Ok(index)
    }

    fn find_mapping(&self, key: &InsideKey) -> Option<u32> {
        let mappings = &self.mappings;
        self.mapping_by_inside
            .find(hash_mapping(key.tenant, key.protocol, key.inside, key.inside_port), |&i| {
                let m = &mappings[i as usize];
                m.tenant == key.tenant && m.protocol == key.protocol && m.inside == key.inside && m.inside_port == key.inside_port
            })
            .copied()
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
        let hash = hash_inside(&s.inside_key());
        if let Ok(entry) = self.by_inside.find_entry(hash, |&i| i == index) {
            entry.remove();
        }
        let hash = hash_outside(&s.outside_key());
        if let Ok(entry) = self.by_outside.find_entry(hash, |&i| i == index) {
            entry.remove();
        }
        self.sessions[index as usize].expires = 0;
        self.free_sessions.push(index);
        let tenant = &mut self.tenants[s.tenant as usize];
        tenant.sessions -= 1;
        let m = &mut self.mappings[s.mapping as usize];
        m.sessions -= 1;
        if m.sessions == 0 {
            let m = *m;
            let hash = hash_mapping(m.tenant, m.protocol, m.inside, m.inside_port);
            if let Ok(entry) = self.mapping_by_inside.find_entry(hash, |&i| i == s.mapping) {
                entry.remove();
            }
            self.free_mappings.push(s.mapping);
            self.ports.release(m.address, m.protocol, m.external_port, &mut tenant.blocks, log);
        }
    }

    /// Frees expired sessions among the next `budget` slots; returns how many.
    pub fn sweep(&mut self, now: u32, budget: usize, log: &mut impl FnMut(BlockEvent) -> bool) -> usize {
        let mut freed = 0;
        for _ in 0..budget.min(self.sessions.len()) {
            let index = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % self.sessions.len();
            let s = &self.sessions[index];
            if !s.is_free() && s.expires < now {
                self.remove(index as u32, log);
                freed += 1;
            }
        }
        freed
    }

    /// Bytes of memory per session slot: the slot, its mapping slot and the
    /// three indexes' buckets and control bytes.
    pub fn bytes_per_session(&self) -> usize {
        let buckets = |t: &HashTable<u32>| t.capacity() * 8 / 7;
        let index_bytes = [&self.by_inside, &self.by_outside, &self.mapping_by_inside].iter().map(|t| buckets(t) * (4 + 1)).sum::<usize>();
        let total = self.sessions.len() * (std::mem::size_of::<Session>() + std::mem::size_of::<Mapping>() + 8) + index_bytes;
        total / self.sessions.len().max(1)
    }
}
