//! The SA database of one worker core, and the shared table that picks an
//! outbound SA for an inner destination.
//!
//! The gateway allocates the inbound SPIs it accepts, so an SPI is an index
//! (ARCHITECTURE.md, "SPI is an index"): its bits name the owner core, a
//! generation and a slot. Lookup is an array load and one compare; a stale
//! SPI (its slot since reused) fails the generation compare. Every SA and
//! tunnel in a [`SaTable`] belongs to its core alone: no locks.

use crate::addr::{Ipv4Cidr, Ipv6Cidr};
use crate::esp::sa::{InboundSa, OutboundSa, Tunnel};
use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bits of an SPI: owner core (31..26), generation (25..20), slot (19..0).
pub const CORE_BITS: u32 = 6;
pub const GENERATION_BITS: u32 = 6;
pub const SLOT_BITS: u32 = 20;
/// Most worker cores an SPI can name.
pub const MAX_CORES: usize = 1 << CORE_BITS;
/// Most inbound SAs one core can hold.
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// An inbound SPI split into its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiParts {
    pub core: u8,
    /// Never 0, so that no SPI falls in the reserved range 1..=255 (RFC 4303 §2.1).
    pub generation: u8,
    pub slot: u32,
}

impl SpiParts {
    pub fn encode(self) -> u32 {
        u32::from(self.core) << (GENERATION_BITS + SLOT_BITS) | u32::from(self.generation) << SLOT_BITS | self.slot
    }
    #[inline]
    pub fn decode(spi: u32) -> SpiParts {
        SpiParts {
            core: (spi >> (GENERATION_BITS + SLOT_BITS)) as u8,
            generation: ((spi >> SLOT_BITS) & ((1 << GENERATION_BITS) - 1)) as u8,
            slot: spi & ((1 << SLOT_BITS) - 1),
        }
    }
    /// True if the fields fit their bits and the generation is not 0.
    pub fn is_valid(self) -> bool {
        usize::from(self.core) < MAX_CORES
            && self.generation != 0
            && u32::from(self.generation) < 1 << GENERATION_BITS
            && (self.slot as usize) < MAX_SLOTS
    }
}

/// Why an inbound SPI has no SA on this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No SA in the slot (or an SPI that is not one of ours).
    Unknown,
    /// The slot holds a newer SA: the SPI belongs to one deleted since.
    StaleGeneration,
    /// The SA belongs to another core.
    OtherCore(u8),
}

struct InboundSlot {
    generation: u8,
    sa: Option<InboundSa>,
}

/// One core's SAs and tunnels.
pub struct SaTable {
    core: u8,
    inbound: Vec<InboundSlot>,
    outbound: Vec<Option<OutboundSa>>,
    tunnels: Vec<Option<Tunnel>>,
}

impl SaTable {
    pub fn new(core: u8) -> SaTable {
        SaTable { core, inbound: Vec::new(), outbound: Vec::new(), tunnels: Vec::new() }
    }

    pub fn core(&self) -> u8 {
        self.core
    }

    /// The inbound SA an SPI names, if this core owns it.
    #[inline]
    pub fn inbound(&mut self, spi: u32) -> Result<&mut InboundSa, Miss> {
        self.inbound_with_tunnel(spi).map(|(sa, _)| sa)
    }

    /// First stage of prefetching a burst: the slot that `spi` names.
    #[inline]
    pub fn prefetch_slot(&self, spi: u32) {
        let parts = SpiParts::decode(spi);
        if parts.core == self.core {
            if let Some(slot) = self.inbound.get(parts.slot as usize) {
                dpdk_sys::prefetch_all(slot);
            }
        }
    }

    /// Second stage (once the slot is in the cache): what the SA points to,
    /// for a packet of `len` bytes.
    #[inline]
    pub fn prefetch_sa(&self, spi: u32, len: usize) {
        let parts = SpiParts::decode(spi);
        if parts.core == self.core {
            if let Some(InboundSlot { sa: Some(sa), .. }) = self.inbound.get(parts.slot as usize) {
                sa.prefetch(len);
            }
        }
    }

    /// Prefetching for a `len`-byte packet to a clinic: the outbound SA, its
    /// tunnel and its key.
    #[inline]
    pub fn prefetch_outbound(&self, index: u32, len: usize) {
        if let Some(Some(sa)) = self.outbound.get(index as usize) {
            dpdk_sys::prefetch_all(sa);
            sa.key.prefetch(len);
            if let Some(Some(tunnel)) = self.tunnels.get(sa.tunnel as usize) {
                dpdk_sys::prefetch(tunnel);
            }
        }
    }

    /// The inbound SA an SPI names and its tunnel, in one lookup.
    #[inline]
    pub fn inbound_with_tunnel(&mut self, spi: u32) -> Result<(&mut InboundSa, Option<&mut Tunnel>), Miss> {
        let parts = SpiParts::decode(spi);
        if parts.core != self.core {
            return Err(Miss::OtherCore(parts.core));
        }
        let slot = self.inbound.get_mut(parts.slot as usize).ok_or(Miss::Unknown)?;
        match &mut slot.sa {
            Some(sa) if slot.generation == parts.generation => {
                let tunnel = self.tunnels.get_mut(sa.tunnel as usize).and_then(Option::as_mut);
                Ok((sa, tunnel))
            }
            Some(_) => Err(Miss::StaleGeneration),
            None => Err(Miss::Unknown),
        }
    }

    /// Installs an inbound SA under its SPI, which must name this core.
    pub fn install_inbound(&mut self, sa: InboundSa) {
        let parts = SpiParts::decode(sa.spi);
        assert!(parts.core == self.core && parts.is_valid(), "SPI {:#010x} is not for core {}", sa.spi, self.core);
        let slot = parts.slot as usize;
        if self.inbound.len() <= slot {
            self.inbound.resize_with(slot + 1, || InboundSlot { generation: 0, sa: None });
        }
        self.inbound[slot] = InboundSlot { generation: parts.generation, sa: Some(sa) };
    }

    /// Removes an inbound SA; its SPI then reads as unknown (or stale once the slot is reused).
    pub fn remove_inbound(&mut self, spi: u32) -> Option<InboundSa> {
        let parts = SpiParts::decode(spi);
        let slot = self.inbound.get_mut(parts.slot as usize)?;
        if slot.generation != parts.generation || parts.core != self.core {
            return None;
        }
        slot.sa.take()
    }

    pub fn remove_outbound(&mut self, index: u32) -> Option<OutboundSa> {
        self.outbound.get_mut(index as usize)?.take()
    }

    pub fn remove_tunnel(&mut self, index: u32) -> Option<Tunnel> {
        self.tunnels.get_mut(index as usize)?.take()
    }

    /// The tunnel at `index`, to update in place (its learned NAT-T port stays).
    pub fn tunnel_mut(&mut self, index: u32) -> Option<&mut Tunnel> {
        self.tunnels.get_mut(index as usize)?.as_mut()
    }

    pub fn install_outbound(&mut self, index: u32, sa: OutboundSa) {
        put(&mut self.outbound, index, sa);
    }

    pub fn install_tunnel(&mut self, index: u32, tunnel: Tunnel) {
        put(&mut self.tunnels, index, tunnel);
    }

    /// An outbound SA and its tunnel, both owned here.
    #[inline]
    pub fn outbound(&mut self, index: u32) -> Option<(&mut OutboundSa, &mut Tunnel)> {
        let sa = self.outbound.get_mut(index as usize)?.as_mut()?;
        let tunnel = self.tunnels.get_mut(sa.tunnel as usize)?.as_mut()?;
        Some((sa, tunnel))
    }

    /// Every inbound SA here, for stats.
    pub fn inbound_sas(&self) -> impl Iterator<Item = &InboundSa> {
        self.inbound.iter().filter_map(|s| s.sa.as_ref())
    }

    /// The inbound SAs from slot `slot` on, with their slots.
    pub fn inbound_from(&self, slot: usize) -> impl Iterator<Item = (usize, &InboundSa)> {
        self.inbound.iter().enumerate().skip(slot).filter_map(|(at, s)| s.sa.as_ref().map(|sa| (at, sa)))
    }

    pub fn outbound_sas(&self) -> impl Iterator<Item = &OutboundSa> {
        self.outbound.iter().flatten()
    }
}

fn put<T>(table: &mut Vec<Option<T>>, index: u32, value: T) {
    let index = index as usize;
    if table.len() <= index {
        table.resize_with(index + 1, || None);
    }
    table[index] = Some(value);
}

/// Where the outbound SA for a destination lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundRoute {
    pub core: u8,
    /// Index of the outbound SA in that core's [`SaTable`].
    pub sa: u32,
}

/// Longest-prefix match of inner destinations to outbound SAs, shared
/// read-only by all workers. One hash table per prefix length present, tried
/// longest first: the cost grows with the number of distinct lengths, not
/// with the number of tunnels.
///
/// Tunnels of tenants behind NAT are found by (tenant, inner destination):
/// their subnets overlap between tenants.
#[derive(Default, Clone)]
pub struct OutboundRoutes {
    ipv4: ByLength<u32>,
    ipv6: ByLength<u128>,
    tenant_ipv4: ByLength<(u32, u32)>,
}

/// One table per prefix length, longest first.
type ByLength<K> = Vec<(u8, FxHashMap<K, OutboundRoute>)>;

impl OutboundRoutes {
    /// Adds a route; returns the route it replaced for the same prefix.
    pub fn insert_ipv4(&mut self, prefix: Ipv4Cidr, route: OutboundRoute) -> Option<OutboundRoute> {
        let key = u32::from(prefix.addr) & mask_v4(prefix.prefix_len);
        table_for(&mut self.ipv4, prefix.prefix_len).insert(key, route)
    }

    pub fn insert_ipv6(&mut self, prefix: Ipv6Cidr, route: OutboundRoute) -> Option<OutboundRoute> {
        let key = u128::from(prefix.addr) & mask_v6(prefix.prefix_len);
        table_for(&mut self.ipv6, prefix.prefix_len).insert(key, route)
    }

    /// Adds a route of a tenant's tunnel; returns the one it replaced.
    pub fn insert_tenant_ipv4(&mut self, tenant: u32, prefix: Ipv4Cidr, route: OutboundRoute) -> Option<OutboundRoute> {
        let key = (tenant, u32::from(prefix.addr) & mask_v4(prefix.prefix_len));
        table_for(&mut self.tenant_ipv4, prefix.prefix_len).insert(key, route)
    }

    pub fn has_ipv4(&self, prefix: Ipv4Cidr) -> bool {
        let key = u32::from(prefix.addr) & mask_v4(prefix.prefix_len);
        self.ipv4.iter().any(|(len, table)| *len == prefix.prefix_len && table.contains_key(&key))
    }

    pub fn has_ipv6(&self, prefix: Ipv6Cidr) -> bool {
        let key = u128::from(prefix.addr) & mask_v6(prefix.prefix_len);
        self.ipv6.iter().any(|(len, table)| *len == prefix.prefix_len && table.contains_key(&key))
    }

    /// Whether a route of `tenant` covers part of `prefix`, or all of it.
    pub fn overlaps_tenant_ipv4(&self, tenant: u32, prefix: Ipv4Cidr) -> bool {
        let addr = u32::from(prefix.addr);
        self.tenant_ipv4.iter().any(|(len, table)| {
            if *len <= prefix.prefix_len {
                table.contains_key(&(tenant, addr & mask_v4(*len)))
            } else {
                // Longer routes inside the prefix: only a table walk finds them
                // (this runs when a tunnel is added, not per packet).
                let mask = mask_v4(prefix.prefix_len);
                table.keys().any(|(t, a)| *t == tenant && a & mask == addr & mask)
            }
        })
    }

    /// Removes the route of `prefix` if it still points at `route`.
    pub fn remove_ipv4(&mut self, prefix: Ipv4Cidr, route: OutboundRoute) {
        let key = u32::from(prefix.addr) & mask_v4(prefix.prefix_len);
        remove_if(&mut self.ipv4, prefix.prefix_len, &key, route);
    }

    pub fn remove_ipv6(&mut self, prefix: Ipv6Cidr, route: OutboundRoute) {
        let key = u128::from(prefix.addr) & mask_v6(prefix.prefix_len);
        remove_if(&mut self.ipv6, prefix.prefix_len, &key, route);
    }

    pub fn remove_tenant_ipv4(&mut self, tenant: u32, prefix: Ipv4Cidr, route: OutboundRoute) {
        let key = (tenant, u32::from(prefix.addr) & mask_v4(prefix.prefix_len));
        remove_if(&mut self.tenant_ipv4, prefix.prefix_len, &key, route);
    }

    /// The tunnel of `tenant` whose subnets hold `dst`.
    #[inline]
    pub fn lookup_tenant_ipv4(&self, tenant: u32, dst: Ipv4Addr) -> Option<OutboundRoute> {
        let ip = u32::from(dst);
        self.tenant_ipv4.iter().find_map(|(len, table)| table.get(&(tenant, ip & mask_v4(*len))).copied())
    }

    #[inline]
    pub fn lookup_ipv4(&self, dst: Ipv4Addr) -> Option<OutboundRoute> {
        let ip = u32::from(dst);
        self.ipv4.iter().find_map(|(len, table)| table.get(&(ip & mask_v4(*len))).copied())
    }

    #[inline]
    pub fn lookup_ipv6(&self, dst: Ipv6Addr) -> Option<OutboundRoute> {
        let ip = u128::from(dst);
        self.ipv6.iter().find_map(|(len, table)| table.get(&(ip & mask_v6(*len))).copied())
    }

    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<OutboundRoute> {
        match dst {
            IpAddr::V4(ip) => self.lookup_ipv4(ip),
            IpAddr::V6(ip) => self.lookup_ipv6(ip),
        }
    }
}

/// The routes all workers read, replaced whole by the manager (release)
/// and picked up by each worker at its next batch (acquire): a change
/// never tears a table, and old tables go when the last worker lets go.
pub struct RouteTable {
    current: arc_swap::ArcSwap<OutboundRoutes>,
}

impl RouteTable {
    pub fn new(routes: OutboundRoutes) -> RouteTable {
        RouteTable { current: arc_swap::ArcSwap::from_pointee(routes) }
    }
    pub fn snapshot(&self) -> std::sync::Arc<OutboundRoutes> {
        self.current.load_full()
    }
    #[inline]
    pub fn is_current(&self, snapshot: &std::sync::Arc<OutboundRoutes>) -> bool {
        std::sync::Arc::ptr_eq(&self.current.load(), snapshot)
    }
    pub fn publish(&self, routes: OutboundRoutes) {
        self.current.store(std::sync::Arc::new(routes));
    }
}

fn remove_if<K: std::hash::Hash + Eq>(tables: &mut ByLength<K>, len: u8, key: &K, route: OutboundRoute) {
    if let Some((_, table)) = tables.iter_mut().find(|(l, _)| *l == len) {
        if table.get(key) == Some(&route) {
            table.remove(key);
        }
    }
    tables.retain(|(_, table)| !table.is_empty());
}

fn table_for<K, V>(tables: &mut Vec<(u8, FxHashMap<K, V>)>, len: u8) -> &mut FxHashMap<K, V> {
    let at = match tables.iter().position(|(l, _)| *l <= len) {
        Some(i) if tables[i].0 == len => i,
        Some(i) => {
            tables.insert(i, (len, FxHashMap::default()));
            i
        }
        None => {
            tables.push((len, FxHashMap::default()));
            tables.len() - 1
        }
    };
    &mut tables[at].1
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::tests_support::inbound_sa;

    #[test]
    fn spi_fields_round_trip_and_never_fall_in_the_reserved_range() {
        let parts = SpiParts { core: 5, generation: 1, slot: 0 };
        assert!(parts.is_valid());
        assert_eq!(SpiParts::decode(parts.encode()), parts);
        assert!(parts.encode() > 255);
        let max = SpiParts { core: 63, generation: 63, slot: MAX_SLOTS as u32 - 1 };
        assert_eq!(max.encode(), u32::MAX);
        assert!(!SpiParts { core: 0, generation: 0, slot: 7 }.is_valid());
    }

    #[test]
    fn lookup_by_spi_checks_core_slot_and_generation() {
        let mut table = SaTable::new(2);
        let spi = SpiParts { core: 2, generation: 3, slot: 17 }.encode();
        table.install_inbound(inbound_sa(spi));
        assert_eq!(table.inbound(spi).unwrap().spi, spi);
        let stale = SpiParts { core: 2, generation: 2, slot: 17 }.encode();
        assert_eq!(table.inbound(stale).err(), Some(Miss::StaleGeneration));
        let other = SpiParts { core: 1, generation: 3, slot: 17 }.encode();
        assert_eq!(table.inbound(other).err(), Some(Miss::OtherCore(1)));
        let empty = SpiParts { core: 2, generation: 3, slot: 16 }.encode();
        assert_eq!(table.inbound(empty).err(), Some(Miss::Unknown));
        let beyond = SpiParts { core: 2, generation: 3, slot: 5000 }.encode();
        assert_eq!(table.inbound(beyond).err(), Some(Miss::Unknown));
        assert!(table.remove_inbound(stale).is_none(), "a stale SPI removes nothing");
        assert!(table.remove_inbound(spi).is_some());
        assert_eq!(table.inbound(spi).err(), Some(Miss::Unknown));
    }

    #[test]
    fn outbound_routes_take_the_longest_prefix() {
        let mut routes = OutboundRoutes::default();
        let cidr = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
        routes.insert_ipv4(cidr("10.1.0.0/16"), OutboundRoute { core: 0, sa: 1 });
        routes.insert_ipv4(cidr("10.1.2.0/24"), OutboundRoute { core: 1, sa: 2 });
        routes.insert_ipv4(cidr("0.0.0.0/0"), OutboundRoute { core: 0, sa: 3 });
        assert_eq!(routes.lookup_ipv4("10.1.2.9".parse().unwrap()).unwrap().sa, 2);
        assert_eq!(routes.lookup_ipv4("10.1.3.9".parse().unwrap()).unwrap().sa, 1);
        assert_eq!(routes.lookup_ipv4("192.0.2.1".parse().unwrap()).unwrap().sa, 3);
        routes.insert_ipv6("2001:db8::/32".parse().unwrap(), OutboundRoute { core: 0, sa: 4 });
        assert_eq!(routes.lookup_ipv6("2001:db8::1".parse().unwrap()).unwrap().sa, 4);
        assert_eq!(routes.lookup_ipv6("2001:db9::1".parse().unwrap()), None);
        // Tenants' subnets overlap: each finds its own tunnel, and plain lookups see neither.
        let mut routes = OutboundRoutes::default();
        routes.insert_tenant_ipv4(1, cidr("192.168.1.0/24"), OutboundRoute { core: 0, sa: 7 });
        routes.insert_tenant_ipv4(2, cidr("192.168.1.0/24"), OutboundRoute { core: 1, sa: 8 });
        let ip = "192.168.1.9".parse().unwrap();
        assert_eq!((routes.lookup_tenant_ipv4(1, ip).unwrap().sa, routes.lookup_tenant_ipv4(2, ip).unwrap().sa), (7, 8));
        assert_eq!((routes.lookup_tenant_ipv4(3, ip), routes.lookup_ipv4(ip)), (None, None));
    }
}
