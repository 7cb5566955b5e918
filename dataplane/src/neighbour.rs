//! The neighbour table: next-hop IP to MAC, per port (ARP, RFC 826; IPv6
//! neighbour discovery, RFC 4861).
//!
//! Workers read an immutable [`Snapshot`], refreshed once per batch, and
//! report what they learn from ARP and ND through a bounded lock-free queue.
//! The manager thread is the table's only writer: it drains the queue,
//! expires old entries and publishes a new snapshot (read-copy-update), so a
//! worker never waits and never sees a half-written entry.

use crate::wire::MacAddr;
use crate::Side;
use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// After this long without news, workers re-solicit while still using the entry.
pub const REFRESH_AFTER_MS: u64 = 30_000;
/// After this long without news, the manager forgets the entry.
pub const EXPIRE_AFTER_MS: u64 = 300_000;
/// Learned entries per table; beyond it new neighbours are not learned.
pub const MAX_ENTRIES: usize = 4096;
/// A worker sends at most one solicitation per next hop per this interval.
pub const SOLICIT_INTERVAL_MS: u64 = 1_000;
const OBSERVATION_QUEUE: usize = 4096;
const SOLICIT_SLOTS: usize = 16;

/// A worker's report of a neighbour's MAC, seen in ARP or ND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub side: Side,
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub mac: MacAddr,
    /// When it was last confirmed (the manager's clock, milliseconds).
    pub updated_ms: u64,
    /// Configured, never learned over nor expired.
    pub is_static: bool,
}

/// An immutable view of the table, shared by workers.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    entries: HashMap<(Side, IpAddr), Entry>,
}

impl Snapshot {
    #[inline]
    pub fn get(&self, side: Side, ip: IpAddr) -> Option<&Entry> {
        self.entries.get(&(side, ip))
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (Side, IpAddr, &Entry)> {
        self.entries.iter().map(|(&(side, ip), entry)| (side, ip, entry))
    }
}

/// The table: one writer (the manager), many readers (workers).
pub struct NeighbourTable {
    current: ArcSwap<Snapshot>,
    observations: ArrayQueue<Observation>,
}

impl NeighbourTable {
    pub fn new(statics: impl IntoIterator<Item = (Side, IpAddr, MacAddr)>) -> Self {
        let entries = statics
            .into_iter()
            .map(|(side, ip, mac)| ((side, ip), Entry { mac, updated_ms: 0, is_static: true }))
            .collect();
        NeighbourTable {
            current: ArcSwap::from_pointee(Snapshot { entries }),
            observations: ArrayQueue::new(OBSERVATION_QUEUE),
        }
    }

    /// The current snapshot (an `Arc` clone: take it once per batch).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// True if `snapshot` is still the published one (a cheap check per batch).
    pub fn is_current(&self, snapshot: &Arc<Snapshot>) -> bool {
        Arc::ptr_eq(&self.current.load(), snapshot)
    }

    /// Reports a neighbour (worker side, lock-free); false if the queue is full.
    pub fn observe(&self, observation: Observation) -> bool {
        self.observations.push(observation).is_ok()
    }

    /// Applies reported observations and expiry, publishing a new snapshot if
    /// anything changed. Only the manager thread calls this. Returns the
    /// number of entries added or changed.
    pub fn maintain(&self, now_ms: u64) -> usize {
        let old = self.current.load();
        let mut next: Option<Snapshot> = None;
        let mut changed = 0;
        while let Some(obs) = self.observations.pop() {
            let table = next.get_or_insert_with(|| (**old).clone());
            let full = table.entries.len() >= MAX_ENTRIES;
            match table.entries.get_mut(&(obs.side, obs.ip)) {
                Some(entry) if entry.is_static => {}
                Some(entry) => {
                    changed += usize::from(entry.mac != obs.mac);
                    entry.mac = obs.mac;
                    entry.updated_ms = entry.updated_ms.max(obs.at_ms);
                }
                None if full => tracing::warn!(ip = %obs.ip, "neighbour table full; not learning"),
                None => {
                    table.entries.insert((obs.side, obs.ip), Entry { mac: obs.mac, updated_ms: obs.at_ms, is_static: false });
                    changed += 1;
                    tracing::info!(side = %obs.side, ip = %obs.ip, mac = %obs.mac, "neighbour learned");
                }
            }
        }
        let expired = |e: &Entry| !e.is_static && now_ms.saturating_sub(e.updated_ms) > EXPIRE_AFTER_MS;
        if old.entries.values().any(expired) {
            let table = next.get_or_insert_with(|| (**old).clone());
            table.entries.retain(|_, e| !expired(e));
        }
        if let Some(table) = next {
            self.current.store(Arc::new(table));
        }
        changed
    }
}

/// A worker's memory of recent solicitations, so that a next hop that does
/// not answer is asked at most once per [`SOLICIT_INTERVAL_MS`].
#[derive(Debug, Default)]
pub struct SolicitLimiter {
    slots: [Option<(Side, IpAddr, u64)>; SOLICIT_SLOTS],
}

impl SolicitLimiter {
    /// True if a solicitation for `ip` may go out now (and records it).
    pub fn allow(&mut self, side: Side, ip: IpAddr, now_ms: u64) -> bool {
        if let Some(slot) = self.slots.iter_mut().flatten().find(|(s, addr, _)| *s == side && *addr == ip) {
            if now_ms.saturating_sub(slot.2) < SOLICIT_INTERVAL_MS {
                return false;
            }
            slot.2 = now_ms;
            return true;
        }
        // A free slot, else the one used longest ago.
        let slot = self.slots.iter_mut().min_by_key(|slot| slot.map_or(0, |(_, _, sent)| sent + 1)).expect("slots");
        *slot = Some((side, ip, now_ms));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(ip: &str, mac: u8, at_ms: u64) -> Observation {
        Observation { side: Side::Inside, ip: ip.parse().unwrap(), mac: MacAddr([2, 0, 0, 0, 0, mac]), at_ms }
    }

    #[test]
    fn learns_updates_and_expires() {
        let static_ip: IpAddr = "10.0.0.9".parse().unwrap();
        let table = NeighbourTable::new([(Side::Inside, static_ip, MacAddr([2, 0, 0, 0, 0, 9]))]);
        let before = table.snapshot();
        assert!(table.observe(obs("10.0.0.2", 1, 100)));
        assert!(table.observe(obs("10.0.0.9", 7, 100)));
        assert_eq!(table.maintain(100), 1);
        assert!(!table.is_current(&before), "a change publishes a new snapshot");
        let snap = table.snapshot();
        assert_eq!(snap.get(Side::Inside, "10.0.0.2".parse().unwrap()).unwrap().mac.0[5], 1);
        assert_eq!(snap.get(Side::Outside, "10.0.0.2".parse().unwrap()), None, "tables are per port");
        assert_eq!(snap.get(Side::Inside, static_ip).unwrap().mac.0[5], 9, "static entries win");

        table.observe(obs("10.0.0.2", 3, 200));
        assert_eq!(table.maintain(200), 1);
        assert_eq!(table.snapshot().get(Side::Inside, "10.0.0.2".parse().unwrap()).unwrap().mac.0[5], 3);

        let unchanged = table.snapshot();
        table.maintain(300);
        assert!(table.is_current(&unchanged), "nothing new: same snapshot");
        table.maintain(200 + EXPIRE_AFTER_MS + 1);
        let snap = table.snapshot();
        assert_eq!(snap.get(Side::Inside, "10.0.0.2".parse().unwrap()), None);
        assert!(snap.get(Side::Inside, static_ip).is_some(), "static entries never expire");
    }

    #[test]
    fn solicitations_are_rate_limited_per_next_hop() {
        let mut limiter = SolicitLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.allow(Side::Inside, a, 0));
        assert!(!limiter.allow(Side::Inside, a, 500));
        assert!(limiter.allow(Side::Outside, a, 500));
        assert!(limiter.allow(Side::Inside, b, 500));
        assert!(limiter.allow(Side::Inside, a, 1000));
        // More next hops than slots: the oldest is forgotten, nothing panics.
        for i in 0..40u8 {
            assert!(limiter.allow(Side::Inside, IpAddr::from([10, 1, 0, i]), 2000 + u64::from(i)));
        }
    }
}
