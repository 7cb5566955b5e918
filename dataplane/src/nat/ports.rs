//! The NAT pool's ports, in blocks (ARCHITECTURE.md: "NAT ports are
//! partitioned by owner core").
//!
//! Each pool address's ports from `first_port` up are cut into blocks of
//! `block_size`; block `b` belongs to core `b % workers`, so the port of a
//! packet from the inside names its owner core without a lookup. A core
//! lends its blocks to tenants one at a time, and each loan and return is
//! recorded as a [`BlockEvent`] (RFC 7422 §2: a log of port blocks, not of
//! sessions, maps (address, port, time) back to a clinic).

use serde::Serialize;
use std::net::Ipv4Addr;

/// The pool: addresses and how their ports are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLayout {
    pub addresses: Vec<Ipv4Addr>,
    pub first_port: u16,
    pub block_size: u16,
    pub workers: u8,
}

impl PoolLayout {
    /// Blocks of each address (the last partial block is not used).
    pub fn blocks_per_address(&self) -> u32 {
        (65536 - u32::from(self.first_port)) / u32::from(self.block_size)
    }
    /// The block of a pool port, if the port lies in one.
    #[inline]
    pub fn block_of(&self, port: u16) -> Option<u32> {
        let block = u32::from(port.checked_sub(self.first_port)?) / u32::from(self.block_size);
        (block < self.blocks_per_address()).then_some(block)
    }
    /// The worker that owns a pool port (and every session translated to it).
    #[inline]
    pub fn owner(&self, port: u16) -> Option<u8> {
        self.block_of(port).map(|b| (b % u32::from(self.workers)) as u8)
    }
    fn first_port_of(&self, block: u32) -> u16 {
        (u32::from(self.first_port) + block * u32::from(self.block_size)) as u16
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockAction {
    Allocated,
    Released,
}

/// One loan or return of a port block, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockEvent {
    pub action: BlockAction,
    pub tenant: u32,
    pub address: Ipv4Addr,
    pub first_port: u16,
    pub last_port: u16,
    pub core: u8,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// Protocols with their own port space in every block.
pub const PORT_SPACES: usize = 3;

/// Which port space a protocol uses: TCP, UDP, or ICMP identifiers.
#[inline]
pub fn space(protocol: u8) -> usize {
    match protocol {
        6 => 0,
        17 => 1,
        _ => 2,
    }
}

const FREE: u32 = u32::MAX;

/// A block this core owns.
struct Block {
    /// The tenant holding it, or FREE.
    tenant: u32,
    /// Ports in use, over all protocols, and in each port space.
    used: u32,
    used_in: [u16; PORT_SPACES],
    /// Where the next search starts in each port space, so that a port just
    /// freed is not handed out again at once.
    cursor: [u16; PORT_SPACES],
}

/// Why no port could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    /// The tenant holds its share of blocks and they are full.
    TenantShareFull,
    /// This core has no free block left on the tenant's address.
    PoolExhausted,
    /// The block log is full until the worker passes it on: no unlogged loans.
    LogFull,
}

/// One core's blocks of every pool address, and the ports used in them.
pub struct PortBlocks {
    layout: PoolLayout,
    core: u8,
    /// Blocks this core owns, per address: local index `l` is block `l * workers + core`.
    blocks: Vec<Vec<Block>>,
    /// Free local indices per address (a stack).
    free: Vec<Vec<u32>>,
    /// One bit per port: [address][local block][space][word].
    bitmap: Vec<u64>,
    words: usize,
    per_address: usize,
    /// Blocks that emptied while the log was full, still lent (at most all).
    unreturned: Vec<(u16, u32)>,
}

impl PortBlocks {
    pub fn new(layout: PoolLayout, core: u8) -> PortBlocks {
        let owned = (0..layout.blocks_per_address()).filter(|b| b % u32::from(layout.workers) == u32::from(core)).count();
        let words = usize::from(layout.block_size).div_ceil(64);
        let addresses = layout.addresses.len();
        let blocks = (0..addresses)
            .map(|_| (0..owned).map(|_| Block { tenant: FREE, used: 0, used_in: [0; PORT_SPACES], cursor: [0; PORT_SPACES] }).collect())
            .collect();
        // Lowest blocks first.
        let free = (0..addresses).map(|_| (0..owned as u32).rev().collect()).collect();
        PortBlocks {
            bitmap: vec![0; addresses * owned * PORT_SPACES * words],
            layout,
            core,
            blocks,
            free,
            words,
            per_address: owned,
            unreturned: Vec::with_capacity(addresses * owned),
        }
    }

    pub fn layout(&self) -> &PoolLayout {
        &self.layout
    }

    fn global(&self, local: u32) -> u32 {
        local * u32::from(self.layout.workers) + u32::from(self.core)
    }

    fn bits(&mut self, address: u16, local: u32, space: usize) -> &mut [u64] {
        let start = ((usize::from(address) * self.per_address + local as usize) * PORT_SPACES + space) * self.words;
        &mut self.bitmap[start..start + self.words]
    }

    fn event(&self, action: BlockAction, tenant: u32, address: u16, local: u32) -> BlockEvent {
        let first = self.layout.first_port_of(self.global(local));
        BlockEvent {
            action,
            tenant,
            address: self.layout.addresses[usize::from(address)],
            first_port: first,
            last_port: first + (self.layout.block_size - 1),
            core: self.core,
            unix_ms: unix_ms(),
        }
    }

    /// A free port for `tenant` on `address` in `protocol`'s space, from the
    /// blocks it holds (`held`, local indices), or from a block newly lent to
    /// it if it holds fewer than `share`.
    pub fn allocate(
        &mut self,
        tenant: u32,
        address: u16,
        protocol: u8,
        held: &mut Vec<u32>,
        share: usize,
        log: &mut impl FnMut(BlockEvent) -> bool,
    ) -> Result<u16, PortError> {
        let space = space(protocol);
        for &local in held.iter() {
            if let Some(port) = self.take_port(address, local, space) {
                return Ok(port);
            }
        }
        if held.len() >= share {
            return Err(PortError::TenantShareFull);
        }
        let Some(&local) = self.free[usize::from(address)].last() else {
            return Err(PortError::PoolExhausted);
        };
        if !log(self.event(BlockAction::Allocated, tenant, address, local)) {
            return Err(PortError::LogFull);
        }
        self.free[usize::from(address)].pop();
        self.blocks[usize::from(address)][local as usize].tenant = tenant;
        held.push(local);
        Ok(self.take_port(address, local, space).expect("a fresh block has free ports"))
    }

    /// A free port of a block, searched a word at a time from its cursor.
    fn take_port(&mut self, address: u16, local: u32, space: usize) -> Option<u16> {
        let size = usize::from(self.layout.block_size);
        let block = &self.blocks[usize::from(address)][local as usize];
        if usize::from(block.used_in[space]) >= size {
            return None;
        }
        let start = usize::from(block.cursor[space]);
        let words = self.words;
        let bits = self.bits(address, local, space);
        // One more step than words: the first word again, for the bits below the cursor.
        let offset = (0..=words).find_map(|step| {
            let w = (start / 64 + step) % words;
            let mut free = !bits[w];
            if step == 0 {
                free &= u64::MAX << (start % 64);
            }
            if (w + 1) * 64 > size {
                free &= (1u64 << (size % 64)) - 1;
            }
            (free != 0).then(|| w * 64 + free.trailing_zeros() as usize)
        })?;
        bits[offset / 64] |= 1 << (offset % 64);
        let block = &mut self.blocks[usize::from(address)][local as usize];
        block.used += 1;
        block.used_in[space] += 1;
        block.cursor[space] = ((offset + 1) % size) as u16;
        Some(self.layout.first_port_of(self.global(local)) + offset as u16)
    }

    /// Returns a port; a block left empty goes back to the core's free list
    /// (and out of `held`) if the log can record it, else the tenant keeps it
    /// until [`PortBlocks::retry_release`] succeeds.
    pub fn release(&mut self, address: u16, protocol: u8, port: u16, held: &mut Vec<u32>, log: &mut impl FnMut(BlockEvent) -> bool) {
        let Some(global) = self.layout.block_of(port) else { return };
        debug_assert_eq!(global % u32::from(self.layout.workers), u32::from(self.core), "a port of another core");
        let local = global / u32::from(self.layout.workers);
        let offset = usize::from(port - self.layout.first_port_of(global));
        let bits = self.bits(address, local, space(protocol));
        debug_assert!(bits[offset / 64] & (1 << (offset % 64)) != 0, "port {port} released twice");
        bits[offset / 64] &= !(1 << (offset % 64));
        let block = &mut self.blocks[usize::from(address)][local as usize];
        block.used -= 1;
        block.used_in[space(protocol)] -= 1;
        if block.used == 0 && !self.return_block(address, local, held, log) {
            self.unreturned.push((address, local));
        }
    }

    /// Gives an empty block back to the core, logged; false if the log is full.
    fn return_block(&mut self, address: u16, local: u32, held: &mut Vec<u32>, log: &mut impl FnMut(BlockEvent) -> bool) -> bool {
        let tenant = self.blocks[usize::from(address)][local as usize].tenant;
        if !log(self.event(BlockAction::Released, tenant, address, local)) {
            return false;
        }
        self.blocks[usize::from(address)][local as usize].tenant = FREE;
        self.free[usize::from(address)].push(local);
        held.retain(|&b| b != local);
        true
    }

    /// Retries returning a block the log could not record when it emptied:
    /// gives the tenant whose `held` list to update, or None if there is
    /// nothing to retry, or it was used again meanwhile (it stays lent).
    pub fn unreturned(&mut self) -> Option<(u32, u16, u32)> {
        while let Some(&(address, local)) = self.unreturned.last() {
            let block = &self.blocks[usize::from(address)][local as usize];
            if block.used == 0 && block.tenant != FREE {
                return Some((block.tenant, address, local));
            }
            self.unreturned.pop();
        }
        None
    }

    /// Second half of a retry: returns the block if the log can take it now.
    pub fn retry_release(&mut self, address: u16, local: u32, held: &mut Vec<u32>, log: &mut impl FnMut(BlockEvent) -> bool) -> bool {
        if self.return_block(address, local, held, log) {
            self.unreturned.pop();
            return true;
        }
        false
    }

    /// Blocks lent out and ports in use on this core (for stats and tests).
    pub fn usage(&self) -> (usize, u64) {
        let blocks = self.blocks.iter().flatten().filter(|b| b.tenant != FREE).count();
        let ports = self.blocks.iter().flatten().map(|b| u64::from(b.used)).sum();
        (blocks, ports)
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(workers: u8) -> PoolLayout {
        PoolLayout { addresses: vec![Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2)], first_port: 1024, block_size: 512, workers }
    }

    #[test]
    fn the_port_names_its_owner_core() {
        let l = layout(3);
        assert_eq!(l.blocks_per_address(), 126);
        assert_eq!((l.owner(1023), l.owner(1024), l.owner(1535), l.owner(1536), l.owner(2048), l.owner(2560)), (None, Some(0), Some(0), Some(1), Some(2), Some(0)));
        assert_eq!(l.owner(65535), Some(125 % 3));
        // A last partial block is not used.
        let odd = PoolLayout { block_size: 1000, ..l.clone() };
        assert_eq!((odd.blocks_per_address(), odd.owner(65023), odd.owner(65024)), (64, Some(0), None));
        for core in 0..3 {
            let mut blocks = PortBlocks::new(l.clone(), core);
            let mut held = Vec::new();
            for _ in 0..2000 {
                let port = blocks.allocate(7, 0, 17, &mut held, usize::MAX, &mut |_| true).unwrap();
                assert_eq!(l.owner(port), Some(core));
            }
        }
    }

    #[test]
    fn blocks_are_lent_logged_and_returned() {
        let mut blocks = PortBlocks::new(layout(1), 0);
        let mut log = Vec::new();
        let mut held = Vec::new();
        let ports: Vec<u16> = (0..513).map(|_| blocks.allocate(5, 1, 6, &mut held, 4, &mut |e| { log.push(e); true }).unwrap()).collect();
        assert_eq!(held.len(), 2);
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].action, log[0].tenant, log[0].address, log[0].first_port, log[0].last_port), (BlockAction::Allocated, 5, Ipv4Addr::new(100, 64, 0, 2), 1024, 1535));
        assert_eq!((log[1].first_port, log[1].last_port), (1536, 2047));
        // Each protocol has its own space: UDP port 1024 is free alongside TCP's.
        assert_eq!(blocks.allocate(5, 1, 17, &mut held, 4, &mut |e| { log.push(e); true }), Ok(1024));
        for &p in &ports {
            blocks.release(1, 6, p, &mut held, &mut |e| { log.push(e); true });
        }
        // The second block emptied and went back; the first still holds the UDP port.
        assert_eq!(held.len(), 1);
        assert_eq!((log.last().unwrap().action, log.last().unwrap().first_port), (BlockAction::Released, 1536));
        assert_eq!(blocks.usage(), (1, 1));
    }

    #[test]
    fn share_and_pool_limits_and_the_log_are_enforced() {
        let mut blocks = PortBlocks::new(PoolLayout { addresses: vec![Ipv4Addr::new(100, 64, 0, 1)], first_port: 64512, block_size: 512, workers: 1 }, 0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..512 {
            blocks.allocate(1, 0, 6, &mut a, 1, &mut |_| true).unwrap();
        }
        assert_eq!(blocks.allocate(1, 0, 6, &mut a, 1, &mut |_| true), Err(PortError::TenantShareFull));
        assert_eq!(blocks.allocate(2, 0, 6, &mut b, 5, &mut |_| false), Err(PortError::LogFull));
        blocks.allocate(2, 0, 6, &mut b, 5, &mut |_| true).unwrap();
        // Only 2 blocks exist above 64512 with size 512.
        let mut c = Vec::new();
        assert_eq!(blocks.allocate(3, 0, 6, &mut c, 5, &mut |_| true), Err(PortError::PoolExhausted));
    }

    #[test]
    fn a_block_emptied_while_the_log_is_full_is_returned_later() {
        let mut blocks = PortBlocks::new(layout(1), 0);
        let mut held = Vec::new();
        let port = blocks.allocate(1, 0, 17, &mut held, 1, &mut |_| true).unwrap();
        blocks.release(0, 17, port, &mut held, &mut |_| false);
        assert_eq!((held.len(), blocks.usage().0), (1, 1), "kept, as the log says");
        let (tenant, address, local) = blocks.unreturned().unwrap();
        assert_eq!(tenant, 1);
        assert!(!blocks.retry_release(address, local, &mut held, &mut |_| false));
        let mut log = Vec::new();
        assert!(blocks.retry_release(address, local, &mut held, &mut |e| { log.push(e); true }));
        assert_eq!((held.len(), blocks.usage().0, log[0].action), (0, 0, BlockAction::Released));
        assert_eq!(blocks.unreturned(), None);
    }

    #[test]
    fn a_freed_port_is_not_reused_at_once() {
        let mut blocks = PortBlocks::new(layout(1), 0);
        let mut held = Vec::new();
        let first = blocks.allocate(1, 0, 17, &mut held, 1, &mut |_| true).unwrap();
        let keep = blocks.allocate(1, 0, 17, &mut held, 1, &mut |_| true).unwrap();
        blocks.release(0, 17, first, &mut held, &mut |_| true);
        let next = blocks.allocate(1, 0, 17, &mut held, 1, &mut |_| true).unwrap();
        assert!(next != first && next != keep);
    }
}
