//! An in-memory port: frames are queued byte vectors. Used by the pipeline's
//! tests and benchmarks, which then run without DPDK, hugepages or a NIC.

use super::{Batch, PacketBuf, Port};
use crate::wire::MacAddr;
use std::collections::VecDeque;

/// Room of one buffer, as a default DPDK mbuf's data room.
pub const BUF_ROOM: usize = 2048;
/// Room in front of a received frame, as DPDK's RTE_PKTMBUF_HEADROOM.
pub const HEADROOM: usize = 128;

/// A frame on the heap with headroom in front, as an mbuf has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapBuf {
    room: Vec<u8>,
    start: usize,
    len: usize,
}

impl HeapBuf {
    /// A buffer holding `frame` after [`HEADROOM`] bytes (longer frames are cut at the room).
    pub fn from_frame(frame: &[u8]) -> HeapBuf {
        let mut buf = HeapBuf { room: vec![0; HEADROOM + BUF_ROOM], start: HEADROOM, len: 0 };
        buf.len = frame.len().min(BUF_ROOM);
        buf.room[HEADROOM..HEADROOM + buf.len].copy_from_slice(&frame[..buf.len]);
        buf
    }
    /// Refills the buffer with `frame`, as a received mbuf is reused (no allocation).
    pub fn refill(&mut self, frame: &[u8]) {
        self.start = HEADROOM;
        self.len = frame.len().min(BUF_ROOM);
        self.room[HEADROOM..HEADROOM + self.len].copy_from_slice(&frame[..self.len]);
    }
    pub fn into_frame(self) -> Vec<u8> {
        self.room[self.start..self.start + self.len].to_vec()
    }
}

impl PacketBuf for HeapBuf {
    fn data(&self) -> &[u8] {
        &self.room[self.start..self.start + self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.room[self.start..self.start + self.len]
    }
    fn set_len(&mut self, len: usize) -> bool {
        if self.start + len > self.room.len() {
            return false;
        }
        self.len = len;
        true
    }
    fn prepend(&mut self, len: usize) -> bool {
        if len > self.start {
            return false;
        }
        self.start -= len;
        self.len += len;
        true
    }
    fn trim_front(&mut self, len: usize) -> bool {
        if len > self.len {
            return false;
        }
        self.start += len;
        self.len -= len;
        true
    }
}

/// A port whose wire is two queues: `rx` is what arrives, `tx` what was sent.
#[derive(Debug)]
pub struct MemoryPort {
    pub mac: MacAddr,
    pub rx: VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
    /// How many frames the next `tx_burst` accepts (None: all), to test a full TX ring.
    pub tx_room: Option<usize>,
}

impl MemoryPort {
    pub fn new(mac: MacAddr) -> Self {
        MemoryPort { mac, rx: VecDeque::new(), tx: Vec::new(), tx_room: None }
    }
}

impl Port for MemoryPort {
    type Buf = HeapBuf;

    fn rx_burst(&mut self, batch: &mut Batch<HeapBuf>) -> usize {
        let n = batch.remaining_capacity().min(self.rx.len());
        batch.extend(self.rx.drain(..n).map(|frame| HeapBuf::from_frame(&frame)));
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch<HeapBuf>) -> usize {
        let n = self.tx_room.map_or(batch.len(), |room| room.min(batch.len()));
        self.tx.extend(batch.drain(..n).map(HeapBuf::into_frame));
        if let Some(room) = &mut self.tx_room {
            *room -= n;
        }
        n
    }

    fn alloc(&mut self) -> Option<HeapBuf> {
        Some(HeapBuf::from_frame(&[]))
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_respects_batch_room_and_tx_room() {
        let mut port = MemoryPort::new(MacAddr([2, 0, 0, 0, 0, 1]));
        port.rx.extend((0..40u8).map(|i| vec![i; 60]));
        let mut batch = Batch::new();
        assert_eq!(port.rx_burst(&mut batch), 32);
        assert_eq!(port.rx_burst(&mut batch), 0);
        port.tx_room = Some(10);
        assert_eq!(port.tx_burst(&mut batch), 10);
        assert_eq!(batch.len(), 22);
        assert_eq!(batch[0].data()[0], 10, "unsent packets stay in order");
        assert_eq!(port.tx.len(), 10);
    }
}
