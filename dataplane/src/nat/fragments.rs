//! Fragments through NAT (RFC 4787 REQ-14: in order and out of order).
//!
//! Only the first fragment carries the ports, so only it can find (or make)
//! a session. When it passes, its translation is remembered under the
//! fragments' key (addresses, protocol, identification) and later fragments
//! follow it. A later fragment that comes first is held, copied into a
//! small pool of buffers, until its first fragment passes, then released
//! in the order it came. No reassembly: a fragment leaves as it came, with
//! its address rewritten. State is bounded: [`FLOWS`] remembered
//! translations (the oldest is reused first) and [`HELD`] held fragments;
//! a translation is forgotten, and held fragments dropped, after [`TIMEOUT_MS`].

use crate::Side;
use arrayvec::ArrayVec;
use super::index::Index;
use std::net::Ipv4Addr;

/// Fragmented datagrams whose translation a core remembers.
pub const FLOWS: usize = 4096;
/// Fragments a core holds while their first fragment is missing.
pub const HELD: usize = 64;
/// Fragments held for one datagram.
pub const HELD_PER_FLOW: usize = 8;
/// How long fragments wait for the rest (shorter than the 15 s that hosts
/// wait to reassemble, RFC 791: late fragments are useless to them anyway).
pub const TIMEOUT_MS: u64 = 10_000;
/// Largest fragment held (an inside MTU of 1500 plus margin).
pub const HELD_BYTES: usize = 2048;

/// The fragments of one datagram: who sent it where (and, from a clinic, its tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// The clinic's tenant for packets from a clinic; `u32::MAX` from the inside.
    pub tenant: u32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
}

/// What later fragments get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The address that replaces the translated end (source from a clinic,
    /// destination from the inside), and the tenant.
    Local { address: Ipv4Addr, tenant: u32 },
    /// The first fragment went to this core, which owns its session.
    Owner(u8),
}

struct Flow {
    key: FragmentKey,
    translation: Option<Translation>,
    expires_ms: u64,
    held: ArrayVec<u16, HELD_PER_FLOW>,
    live: bool,
}

/// A held fragment: its IP packet and where it came from.
pub struct Held {
    pub side: Side,
    pub tenant: u32,
    len: usize,
    bytes: Box<[u8; HELD_BYTES]>,
}

impl Held {
    pub fn packet(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What to do with a fragment that is not the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Later {
    /// Rewrite to this address; the datagram is this tenant's.
    Translate { address: Ipv4Addr, tenant: u32 },
    /// Hand to the core its first fragment went to.
    HandOff(u8),
    /// Kept until its first fragment passes.
    Held,
    /// No room to hold it.
    NoRoom,
}

/// One core's fragment state.
pub struct Fragments {
    flows: Vec<Flow>,
    index: Index,
    /// Next flow slot to use (the oldest).
    next: usize,
    held: Vec<Held>,
    free_held: Vec<u16>,
    /// Held fragments whose first fragment passed, in arrival order.
    released: ArrayVec<u16, HELD>,
    /// Held fragments dropped since last asked (timeout or eviction).
    pub dropped: u64,
    /// Next flow slot [`Fragments::sweep`] looks at.
    sweep_at: usize,
    seed: u64,
}

fn hash(seed: u64, k: &FragmentKey) -> u64 {
    super::sessions::hash_words(seed, [
        u64::from(u32::from(k.src)) << 32 | u64::from(u32::from(k.dst)),
        u64::from(k.tenant) << 24 | u64::from(k.ident) << 8 | u64::from(k.protocol),
    ])
}

impl Default for Fragments {
    fn default() -> Self {
        Fragments {
            flows: (0..FLOWS)
                .map(|_| Flow {
                    key: FragmentKey { tenant: 0, src: Ipv4Addr::UNSPECIFIED, dst: Ipv4Addr::UNSPECIFIED, protocol: 0, ident: 0 },
                    translation: None,
                    expires_ms: 0,
                    held: ArrayVec::new(),
                    live: false,
                })
                .collect(),
            index: Index::with_capacity(FLOWS),
            next: 0,
            held: (0..HELD).map(|_| Held { side: Side::Inside, tenant: 0, len: 0, bytes: Box::new([0; HELD_BYTES]) }).collect(),
            free_held: (0..HELD as u16).rev().collect(),
            released: ArrayVec::new(),
            dropped: 0,
            sweep_at: 0,
            seed: super::sessions::random_seed(),
        }
    }
}

impl Fragments {
    fn find(&mut self, key: &FragmentKey, now_ms: u64) -> Option<usize> {
        let flows = &self.flows;
        let slot = self.index.find(hash(self.seed, key), |i| flows[i as usize].key == *key)? as usize;
        if self.flows[slot].expires_ms < now_ms {
            self.forget(slot);
            return None;
        }
        Some(slot)
    }

    /// Frees a flow slot, dropping what it held.
    fn forget(&mut self, slot: usize) {
        let flow = &mut self.flows[slot];
        if !flow.live {
            return;
        }
        flow.live = false;
        let key = flow.key;
        self.dropped += flow.held.len() as u64;
        self.free_held.extend(flow.held.drain(..));
        self.index.remove(hash(self.seed, &key), slot as u32);
    }

    /// Takes the oldest slot for `key`.
    fn insert(&mut self, key: FragmentKey, now_ms: u64) -> usize {
        let slot = self.next;
        self.next = (self.next + 1) % FLOWS;
        self.forget(slot);
        self.index.insert(hash(self.seed, &key), slot as u32);
        let flow = &mut self.flows[slot];
        flow.key = key;
        flow.translation = None;
        flow.expires_ms = now_ms + TIMEOUT_MS;
        flow.live = true;
        slot
    }

    /// The first fragment passed with `translation`: later ones follow it,
    /// and those held are released (see [`Fragments::take_released`]).
    pub fn first_passed(&mut self, key: FragmentKey, translation: Translation, now_ms: u64) {
        let slot = match self.find(&key, now_ms) {
            Some(slot) => slot,
            None => self.insert(key, now_ms),
        };
        let flow = &mut self.flows[slot];
        flow.translation = Some(translation);
        flow.expires_ms = now_ms + TIMEOUT_MS;
        for held in flow.held.drain(..) {
            self.released.push(held);
        }
    }

    /// A later fragment (`packet`, its IP packet) from `side`.
    pub fn later(&mut self, key: FragmentKey, side: Side, packet: &[u8], now_ms: u64) -> Later {
        let found = self.find(&key, now_ms);
        if let Some(slot) = found {
            match self.flows[slot].translation {
                Some(Translation::Local { address, tenant }) => return Later::Translate { address, tenant },
                Some(Translation::Owner(core)) => return Later::HandOff(core),
                None => {}
            }
        }
        // Room is checked first: a fragment that cannot be held takes no slot from others.
        let flow_full = found.is_some_and(|slot| self.flows[slot].held.is_full());
        if packet.len() > HELD_BYTES || flow_full || self.released.is_full() || self.free_held.is_empty() {
            return Later::NoRoom;
        }
        let slot = match found {
            Some(slot) => slot,
            None => self.insert(key, now_ms),
        };
        let Some(h) = self.free_held.pop() else { return Later::NoRoom };
        let held = &mut self.held[usize::from(h)];
        held.side = side;
        held.tenant = key.tenant;
        held.len = packet.len();
        held.bytes[..packet.len()].copy_from_slice(packet);
        self.flows[slot].held.push(h);
        Later::Held
    }

    /// Forgets expired datagrams among the next `budget` flow slots, so that
    /// held fragments never outlive [`TIMEOUT_MS`] by much.
    pub fn sweep(&mut self, now_ms: u64, budget: usize) {
        for _ in 0..budget {
            let slot = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % FLOWS;
            if self.flows[slot].live && self.flows[slot].expires_ms < now_ms {
                self.forget(slot);
            }
        }
    }

    /// The next released fragment, with its translation; call
    /// [`Fragments::free`] when done with it.
    pub fn take_released(&mut self) -> Option<u16> {
        (!self.released.is_empty()).then(|| self.released.remove(0))
    }

    pub fn held(&self, h: u16) -> &Held {
        &self.held[usize::from(h)]
    }

    pub fn free(&mut self, h: u16) {
        self.free_held.push(h);
    }

    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    /// The translation a released fragment's datagram got.
    pub fn translation_of(&mut self, key: &FragmentKey, now_ms: u64) -> Option<Translation> {
        let slot = self.find(key, now_ms)?;
        self.flows[slot].translation
    }

    /// Held fragments right now (for tests).
    pub fn held_count(&self) -> usize {
        HELD - self.free_held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> FragmentKey {
        FragmentKey { tenant: 3, src: Ipv4Addr::new(192, 168, 1, 10), dst: Ipv4Addr::new(10, 1, 0, 5), protocol: 17, ident }
    }
    const T: Translation = Translation::Local { address: Ipv4Addr::new(100, 64, 0, 1), tenant: 3 };

    #[test]
    fn in_order_later_fragments_follow_the_first() {
        let mut f = Fragments::default();
        f.first_passed(key(1), T, 0);
        assert_eq!(f.later(key(1), Side::Outside, &[0; 100], 5), Later::Translate { address: Ipv4Addr::new(100, 64, 0, 1), tenant: 3 });
        assert_eq!(f.later(key(2), Side::Outside, &[0; 100], 5), Later::Held, "another datagram");
        // The timeout runs from the first fragment's passing.
        f.first_passed(key(1), T, 9_000);
        assert!(matches!(f.later(key(1), Side::Outside, &[0; 100], TIMEOUT_MS + 5_000), Later::Translate { .. }));
        // After it the translation is gone.
        assert_eq!(f.later(key(1), Side::Outside, &[0; 100], 9_000 + TIMEOUT_MS + 1), Later::Held);
    }

    #[test]
    fn out_of_order_fragments_are_held_then_released_in_order() {
        let mut f = Fragments::default();
        assert_eq!(f.later(key(1), Side::Outside, &[1; 60], 0), Later::Held);
        assert_eq!(f.later(key(1), Side::Outside, &[2; 70], 0), Later::Held);
        assert!(!f.has_released());
        f.first_passed(key(1), T, 1);
        let a = f.take_released().unwrap();
        assert_eq!(f.held(a).packet(), &[1; 60][..]);
        f.free(a);
        let b = f.take_released().unwrap();
        assert_eq!(f.held(b).packet(), &[2; 70][..]);
        f.free(b);
        assert_eq!(f.take_released(), None);
        assert_eq!(f.held_count(), 0);
    }

    #[test]
    fn state_is_bounded_and_what_times_out_is_counted() {
        let mut f = Fragments::default();
        for i in 0..HELD_PER_FLOW {
            assert_eq!(f.later(key(1), Side::Outside, &[0; 10], 0), Later::Held, "{i}");
        }
        assert_eq!(f.later(key(1), Side::Outside, &[0; 10], 0), Later::NoRoom);
        assert_eq!(f.later(key(2), Side::Outside, &[0; HELD_BYTES + 1], 0), Later::NoRoom);
        for i in 0..(HELD - HELD_PER_FLOW) as u16 {
            assert_eq!(f.later(key(100 + i), Side::Outside, &[0; 10], 0), Later::Held);
        }
        assert_eq!(f.later(key(9999), Side::Outside, &[0; 10], 0), Later::NoRoom, "pool full");
        // The first datagram's first fragment never comes: its fragments go at the timeout.
        f.sweep(TIMEOUT_MS + 1, FLOWS);
        assert_eq!(f.dropped, HELD as u64);
        assert_eq!(f.held_count(), 0);
        assert_eq!(f.later(key(1), Side::Outside, &[0; 10], TIMEOUT_MS + 1), Later::Held);
        // Many datagrams: the oldest slots are reused, never more than FLOWS.
        for i in 0..(FLOWS as u32 * 2) {
            f.first_passed(FragmentKey { ident: i as u16, tenant: i, ..key(0) }, T, 20_000);
        }
        assert!(f.index.len() <= FLOWS);
    }
}
