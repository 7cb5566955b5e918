//! Inbound SPIs for CHILD_SAs. The dataplane reads an inbound SPI as
//! (owner core, generation, slot) (`sekisho_dataplane::sad`), so control,
//! the only one that installs SAs, hands them out in that form: a slot is
//! reused only with the next generation, so a stale SPI never finds the
//! SA that took its slot.

use sekisho_dataplane::sad::{SpiParts, GENERATION_BITS, MAX_CORES, MAX_SLOTS};

struct CoreSlots {
    free: Vec<u32>,
    next: u32,
    generation: Vec<u8>,
}

pub struct SpiPool {
    cores: Vec<CoreSlots>,
}

impl SpiPool {
    pub fn new(workers: usize) -> SpiPool {
        assert!((1..=MAX_CORES).contains(&workers));
        SpiPool { cores: (0..workers).map(|_| CoreSlots { free: Vec::new(), next: 0, generation: Vec::new() }).collect() }
    }

    pub fn workers(&self) -> usize {
        self.cores.len()
    }

    /// A fresh SPI owned by `core`; None when its slots are all taken.
    pub fn allocate(&mut self, core: u8) -> Option<u32> {
        let slots = self.cores.get_mut(usize::from(core))?;
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None if (slots.next as usize) < MAX_SLOTS => {
                slots.next += 1;
                slots.generation.push(0);
                slots.next - 1
            }
            None => return None,
        };
        let generation = &mut slots.generation[slot as usize];
        // Generations run 1..2^bits-1: never 0 (see SpiParts).
        *generation = *generation % ((1 << GENERATION_BITS) - 1) as u8 + 1;
        Some(SpiParts { core, generation: *generation, slot }.encode())
    }

    /// Gives an SPI's slot back (an SPI not from this pool is ignored).
    pub fn release(&mut self, spi: u32) {
        let parts = SpiParts::decode(spi);
        if let Some(slots) = self.cores.get_mut(usize::from(parts.core)) {
            let live = slots.generation.get(parts.slot as usize) == Some(&parts.generation) && !slots.free.contains(&parts.slot);
            if live {
                slots.free.push(parts.slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spis_name_their_core_and_a_reused_slot_gets_a_new_generation() {
        let mut pool = SpiPool::new(2);
        let a = pool.allocate(1).unwrap();
        let parts = SpiParts::decode(a);
        assert!(parts.is_valid() && parts.core == 1 && a > 255);
        pool.release(a);
        pool.release(a);
        let b = pool.allocate(1).unwrap();
        assert_eq!(SpiParts::decode(b).slot, parts.slot);
        assert_ne!(a, b, "the generation moved on");
        assert_ne!(pool.allocate(1).unwrap(), b);
        assert_eq!(pool.allocate(2), None, "no such core");
    }
}
