//! Ports: where packets enter and leave the pipeline.
//!
//! A [`Port`] is one worker's handle on one device: its own RX and TX queue,
//! so a worker never shares a queue and needs no lock. Two implementations:
//! [`dpdk`] (the only module that calls DPDK) and [`memory`] (plain Rust, for
//! the pipeline's tests, fuzzers and benchmarks).

pub mod dpdk;
pub mod memory;

use crate::wire::MacAddr;
use arrayvec::ArrayVec;

/// Packets per receive and transmit burst.
pub const BURST: usize = 32;

/// A batch of packets, held inline (no allocation per batch).
pub type Batch<B> = ArrayVec<B, BURST>;

/// A packet buffer owned by the pipeline; dropping it frees it.
pub trait PacketBuf: Send {
    /// The frame, from the Ethernet header on.
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Sets the frame length; false if the buffer has no room for it.
    fn set_len(&mut self, len: usize) -> bool;
    /// Grows the frame by `len` bytes at the front (into the headroom, for
    /// outer headers); false if there is too little headroom.
    fn prepend(&mut self, len: usize) -> bool;
    /// Removes `len` bytes from the front (outer headers); false if shorter.
    fn trim_front(&mut self, len: usize) -> bool;
    /// True if the frame is spread over several buffers (the pipeline only
    /// processes contiguous frames).
    fn is_segmented(&self) -> bool {
        false
    }
}

/// One worker's RX/TX queue pair on one device.
pub trait Port {
    type Buf: PacketBuf;
    /// Receives up to the batch's free space; returns how many arrived.
    fn rx_burst(&mut self, batch: &mut Batch<Self::Buf>) -> usize;
    /// Hands the batch to the device and returns how many it took; the
    /// packets it did not take stay in `batch`, in order.
    fn tx_burst(&mut self, batch: &mut Batch<Self::Buf>) -> usize;
    /// A fresh, empty buffer for a packet the pipeline originates (ARP, ND).
    fn alloc(&mut self) -> Option<Self::Buf>;
    fn mac(&self) -> MacAddr;
}
