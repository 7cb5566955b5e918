//! The inbound anti-replay window (RFC 4303 §3.4.3, Appendix A), with
//! extended sequence numbers (Appendix A2).
//!
//! The window is a ring of 64-bit blocks (the scheme of RFC 6479): moving the
//! top forward clears whole blocks, so a jump costs at most one pass over the
//! ring and an in-order packet costs a shift and a store. A packet is checked
//! before decryption ([`ReplayWindow::check`]) and recorded only after its
//! ICV verified ([`ReplayWindow::accept`]), so forged packets cannot move it.

/// Default window, in packets: enough for reordering across queues and cores.
pub const DEFAULT_WINDOW: u32 = 4096;
/// Largest window accepted per SA.
pub const MAX_WINDOW: u32 = 65_536;

/// Checks a configured window size: 0 (anti-replay off), or a multiple of
/// 64 from 64 to [`MAX_WINDOW`].
pub fn check_size(size: u32) -> Result<(), String> {
    if size == 0 || ((64..=MAX_WINDOW).contains(&size) && size.is_multiple_of(64)) {
        Ok(())
    } else {
        Err(format!("{size} is not a multiple of 64 between 64 and {MAX_WINDOW} (or 0 for none)"))
    }
}

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Already received.
    Replayed,
    /// Older than the window's left edge.
    TooOld,
}

/// One SA's window of received sequence numbers.
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    /// Width of the window, in packets.
    size: u32,
    esn: bool,
    /// Ring of blocks; bit `s % (64 * blocks.len())` records sequence number `s`.
    blocks: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` packets (a multiple of 64 between 64 and
    /// [`MAX_WINDOW`]; the caller validates with [`check_size`]), with or without ESN. Size 0
    /// turns anti-replay off (RFC 4303 §3.4.3 lets a receiver do so; only
    /// benchmarks that replay a capture should); it needs ESN off.
    pub fn new(size: u32, esn: bool) -> ReplayWindow {
        if size == 0 {
            assert!(!esn, "ESN needs a replay window to infer the high half");
            return ReplayWindow { top: 0, size, esn, blocks: Box::new([0]) };
        }
        assert!(check_size(size).is_ok(), "window size {size}");
        // One spare block, so the block being cleared never holds live bits.
        let blocks = (size as usize / 64 + 1).next_power_of_two();
        ReplayWindow { top: 0, size, esn, blocks: vec![0; blocks].into_boxed_slice() }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Brings the block around the window's top into the cache.
    #[inline]
    pub fn prefetch(&self) {
        dpdk_sys::prefetch(&self.blocks[(self.top / 64) as usize & (self.blocks.len() - 1)]);
    }

    /// The highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The full sequence number of a packet that carries its low 32 bits.
    /// Without ESN that is the number itself; with ESN the high half is
    /// inferred from the window as RFC 4303 Appendix A2.2 says. None when the
    /// inference points before the first packet (it cannot be valid).
    #[inline]
    pub fn full_sequence(&self, low: u32) -> Option<u64> {
        if !self.esn {
            return Some(u64::from(low));
        }
        let top_low = self.top as u32;
        let top_high = (self.top >> 32) as u32;
        let w = self.size;
        let high = if top_low >= w - 1 {
            // Case A: the window lies within one 2^32 span.
            if low >= top_low - (w - 1) {
                top_high
            } else {
                top_high.checked_add(1)?
            }
        } else {
            // Case B: the window straddles a 2^32 boundary.
            if low >= top_low.wrapping_sub(w - 1) {
                top_high.checked_sub(1)?
            } else {
                top_high
            }
        };
        Some(u64::from(high) << 32 | u64::from(low))
    }

    /// Whether `seq` may be accepted (before the ICV is checked).
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), Refused> {
        // Sequence numbers start at 1 (RFC 4303 §3.3.3): 0 was never sent.
        if seq == 0 {
            return Err(Refused::TooOld);
        }
        if seq > self.top || self.size == 0 {
            return Ok(());
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(Refused::TooOld);
        }
        let (block, bit) = self.position(seq);
        if self.blocks[block] & bit != 0 {
            Err(Refused::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `seq` once its ICV verified; repeats the check, since another
    /// packet of the batch may have taken the number since.
    #[inline]
    pub fn accept(&mut self, seq: u64) -> Result<(), Refused> {
        self.check(seq)?;
        if self.size == 0 {
            return Ok(());
        }
        if seq > self.top {
            let ring = self.blocks.len() as u64;
            let old_block = self.top / 64;
            let new_block = seq / 64;
            for step in 1..=(new_block - old_block).min(ring) {
                let index = ((old_block + step) % ring) as usize;
                self.blocks[index] = 0;
            }
            self.top = seq;
        }
        let (block, bit) = self.position(seq);
        self.blocks[block] |= bit;
        Ok(())
    }

    #[inline]
    fn position(&self, seq: u64) -> (usize, u64) {
        let index = (seq / 64) as usize & (self.blocks.len() - 1);
        (index, 1u64 << (seq % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(size: u32, esn: bool, top: u64) -> ReplayWindow {
        let mut w = ReplayWindow::new(size, esn);
        if top > 0 {
            w.accept(top).unwrap();
        }
        w
    }

    #[test]
    fn in_order_replayed_and_too_old() {
        let mut w = ReplayWindow::new(64, false);
        assert_eq!(w.check(0), Err(Refused::TooOld), "sequence 0 is never sent");
        for seq in 1..=200 {
            w.accept(seq).unwrap();
            assert_eq!(w.check(seq), Err(Refused::Replayed));
        }
        assert_eq!(w.check(200 - 63), Err(Refused::Replayed), "left edge is in the window");
        assert_eq!(w.check(200 - 64), Err(Refused::TooOld));
        assert!(w.check(201).is_ok());
    }

    #[test]
    fn reordering_inside_the_window_is_accepted_once() {
        // Table of (window, arrival order): every packet accepted exactly once.
        for size in [64, 128, 4096, MAX_WINDOW] {
            let mut w = ReplayWindow::new(size, false);
            let n = u64::from(size);
            // Deliver the second half first, then the first half backwards.
            let order: Vec<u64> = (n / 2 + 1..=n).chain((1..=n / 2).rev()).collect();
            for &seq in &order {
                assert_eq!(w.accept(seq), Ok(()), "size {size} seq {seq}");
            }
            for &seq in &order {
                assert_eq!(w.check(seq), Err(Refused::Replayed), "size {size} seq {seq}");
            }
        }
    }

    #[test]
    fn reordering_beyond_the_window_is_too_old() {
        let mut w = window(4096, false, 10_000);
        assert_eq!(w.check(10_000 - 4096), Err(Refused::TooOld));
        assert_eq!(w.accept(10_000 - 4095), Ok(()));
        // A big jump clears the whole ring: old bits must not survive.
        w.accept(10_000 + 1_000_000).unwrap();
        assert_eq!(w.check(10_000 + 1_000_000 - 4095), Ok(()));
        assert_eq!(w.check(10_000), Err(Refused::TooOld));
    }

    #[test]
    fn jumps_that_wrap_the_ring_clear_stale_bits() {
        let mut w = ReplayWindow::new(64, false);
        for seq in 1..=64 {
            w.accept(seq).unwrap();
        }
        // Jump by exactly one ring length (2 blocks of 64): the block that
        // held 1..63 now holds 129..191, and must read as empty.
        w.accept(192).unwrap();
        for seq in 129..192 {
            assert_eq!(w.check(seq), Ok(()), "seq {seq}");
        }
    }

    #[test]
    fn accept_rechecks() {
        let mut w = window(64, false, 5);
        assert_eq!(w.accept(5), Err(Refused::Replayed));
    }

    #[test]
    fn esn_high_half_inference_case_a() {
        // Window within one span: top = 2^32 * 3 + 10_000, window 4096.
        let top = (3u64 << 32) | 10_000;
        let w = window(4096, true, top);
        assert_eq!(w.full_sequence(10_001), Some(top + 1));
        assert_eq!(w.full_sequence(10_000 - 4095), Some((3 << 32) | (10_000 - 4095)));
        // Below the window's left edge: the next span (RFC 4303 A2.2 case A).
        assert_eq!(w.full_sequence(5), Some((4 << 32) | 5));
    }

    #[test]
    fn esn_high_half_inference_case_b() {
        // Window straddles the boundary: top low = 100, window 4096.
        let top = (3u64 << 32) | 100;
        let w = window(4096, true, top);
        assert_eq!(w.full_sequence(50), Some((3 << 32) | 50));
        assert_eq!(w.full_sequence(200), Some((3 << 32) | 200));
        assert_eq!(w.full_sequence(u32::MAX - 10), Some((2 << 32) | u64::from(u32::MAX - 10)));
        // At the very start there is no earlier span.
        let fresh = ReplayWindow::new(4096, true);
        assert_eq!(fresh.full_sequence(u32::MAX), None);
        assert_eq!(fresh.full_sequence(1), Some(1));
    }

    #[test]
    fn esn_window_moves_across_the_boundary() {
        let mut w = window(64, true, u64::from(u32::MAX) - 5);
        for low in [u32::MAX - 4, u32::MAX, 0, 1, 2] {
            let seq = w.full_sequence(low).unwrap();
            w.accept(seq).unwrap();
        }
        assert_eq!(w.top(), (1 << 32) | 2);
        // A late packet from just before the boundary is still recognised.
        let late = w.full_sequence(u32::MAX - 1).unwrap();
        assert_eq!(late, u64::from(u32::MAX - 1));
        assert_eq!(w.check(late), Ok(()));
        let replay = w.full_sequence(u32::MAX).unwrap();
        assert_eq!(w.check(replay), Err(Refused::Replayed));
    }

    #[test]
    fn a_disabled_window_accepts_repeats() {
        let mut w = ReplayWindow::new(0, false);
        for seq in [5, 5, 1, 1_000_000, 3] {
            assert_eq!(w.accept(seq), Ok(()));
        }
        assert_eq!(w.check(0), Err(Refused::TooOld));
    }

    #[test]
    fn without_esn_the_sequence_is_the_low_half() {
        let w = window(64, false, 100);
        assert_eq!(w.full_sequence(7), Some(7));
    }
}
