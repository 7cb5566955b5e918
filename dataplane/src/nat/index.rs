//! An open-addressing hash index from a 64-bit hash to a slab index, built
//! for the packet path: one allocation at start, never resized; linear
//! probing over 8-byte slots (8 per cache line) at most 70% full; the slot
//! holds the hash's top half beside the value, so most mismatches are
//! rejected without touching the slab, and a slot's home can be recomputed
//! for backward-shift deletion (no tombstones). Its probes can be
//! prefetched, which a general-purpose map does not offer: with a million
//! sessions each lookup is a memory miss, and a burst's misses must overlap.

/// A free slot: no value reaches `u32::MAX`.
const EMPTY: u64 = u64::MAX;

pub struct Index {
    slots: Vec<u64>,
    len: usize,
}

#[inline]
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl Index {
    /// An index for up to `capacity` values.
    pub fn with_capacity(capacity: usize) -> Index {
        Index { slots: vec![EMPTY; (capacity * 10 / 7).max(16)], len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of slots.
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// Where a tag's probe starts: the tag scaled onto the slots (Lemire's
    /// multiply-shift, so the table need not be a power of two).
    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.slots.len() as u64) >> 32) as usize
    }

    /// Starts loading the slots where `hash` is probed for.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        dpdk_sys::prefetch(&self.slots[self.home(tag(hash))]);
    }

    /// The first value whose slot matches `hash`'s tag, without checking its
    /// key: for prefetching what it names.
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The value stored under `hash` for which `is_key` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let mut at = self.home(t);
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return None;
            }
            if (slot >> 32) as u32 == t && is_key(slot as u32) {
                return Some(slot as u32);
            }
            at = if at + 1 == self.slots.len() { 0 } else { at + 1 };
        }
    }

    /// Adds `value` under `hash` (the caller knows its key is not present).
    /// Panics if the index is full: callers bound what they insert.
    #[inline]
    pub fn insert(&mut self, hash: u64, value: u32) {
        assert!(self.len * 10 < self.slots.len() * 7 + 10, "index sized for its slab");
        let t = tag(hash);
        let mut at = self.home(t);
        while self.slots[at] != EMPTY {
            at = if at + 1 == self.slots.len() { 0 } else { at + 1 };
        }
        self.slots[at] = u64::from(t) << 32 | u64::from(value);
        self.len += 1;
    }

    /// Removes `value` stored under `hash`; later entries of its probe run
    /// move back so that no probe stops short (Knuth 6.4, algorithm R).
    pub fn remove(&mut self, hash: u64, value: u32) -> bool {
        let wanted = u64::from(tag(hash)) << 32 | u64::from(value);
        let n = self.slots.len();
        let mut hole = self.home(tag(hash));
        loop {
            match self.slots[hole] {
                EMPTY => return false,
                slot if slot == wanted => break,
                _ => hole = (hole + 1) % n,
            }
        }
        let mut at = hole;
        loop {
            at = (at + 1) % n;
            let slot = self.slots[at];
            if slot == EMPTY {
                break;
            }
            let home = self.home((slot >> 32) as u32);
            // The entry at `at` may fill the hole if its home is not in (hole, at] (cyclically).
            let stays = if hole <= at { hole < home && home <= at } else { hole < home || home <= at };
            if !stays {
                self.slots[hole] = slot;
                hole = at;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Few distinct tags on purpose: keys share tags (and homes) often, and
    /// some sit at the very end of the slots, so probes wrap around.
    fn hash(key: u64) -> u64 {
        let x = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        match key {
            k if k.is_multiple_of(7) => u64::MAX - k,
            k if k.is_multiple_of(3) => x & 0xffff_ffff_0000_0000 | (k & 0xff),
            _ => x ^ (x >> 29),
        }
    }

    /// Inserts and removals in random order agree with a HashMap, including
    /// colliding tags and wrap-around at the end of the slots.
    #[test]
    fn agrees_with_a_map_under_churn() {
        let mut index = Index::with_capacity(1000);
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut x = 1u64;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 1500;
            let h = hash(key);
            match model.get(&key) {
                Some(&v) => {
                    assert_eq!(index.find(h, |i| i == v), Some(v));
                    assert!(index.remove(h, v));
                    model.remove(&key);
                    assert_eq!(index.find(h, |i| i == v), None);
                }
                None if model.len() < 1000 => {
                    index.insert(h, step);
                    model.insert(key, step);
                }
                None => {}
            }
            assert_eq!(index.len(), model.len());
        }
        for (key, v) in model {
            assert_eq!(index.find(hash(key), |i| i == v), Some(v), "key {key}");
        }
    }
}
