//! An in-memory port: frames are queued byte vectors. Used by the pipeline's
//! tests and benchmarks, which then run without DPDK, hugepages or a NIC.

use super::{Batch, PacketBuf, Port};
use crate::wire::MacAddr;
use std::collections::VecDeque;

/// Room of one buffer, as a default DPDK mbuf's data room.
pub const BUF_ROOM: usize = 2048;

/// A frame on the heap, at most [`BUF_ROOM`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapBuf(pub Vec<u8>);

impl PacketBuf for HeapBuf {
    fn data(&self) -> &[u8] {
        &self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn set_len(&mut self, len: usize) -> bool {
        if len > BUF_ROOM {
            return false;
        }
        self.0.resize(len, 0);
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
        batch.extend(self.rx.drain(..n).map(HeapBuf));
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch<HeapBuf>) -> usize {
        let n = self.tx_room.map_or(batch.len(), |room| room.min(batch.len()));
        self.tx.extend(batch.drain(..n).map(|buf| buf.0));
        if let Some(room) = &mut self.tx_room {
            *room -= n;
        }
        n
    }

    fn alloc(&mut self) -> Option<HeapBuf> {
        Some(HeapBuf(Vec::with_capacity(BUF_ROOM)))
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
        assert_eq!(batch[0].0[0], 10, "unsent packets stay in order");
        assert_eq!(port.tx.len(), 10);
    }
}
