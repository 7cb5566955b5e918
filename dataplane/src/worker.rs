//! A worker: one poll-mode loop over its own queue on each port.

use crate::pipeline::{Action, Counter, DropReason, Forwarder};
use crate::port::{Batch, PacketBuf, Port};
use crate::Side;

/// A worker's ports (indexed by [`Side`]) and its pipeline state.
pub struct Worker<P: Port> {
    pub ports: [P; 2],
    pub forwarder: Forwarder,
}

impl<P: Port> Worker<P> {
    pub fn new(outside: P, inside: P, forwarder: Forwarder) -> Self {
        Worker { ports: [outside, inside], forwarder }
    }

    /// One poll of both ports: a receive burst from each, processed and sent.
    /// Returns the number of frames received.
    pub fn poll(&mut self, now_ms: u64) -> usize {
        self.forwarder.begin_batch(now_ms);
        let mut received = 0;
        for side in [Side::Outside, Side::Inside] {
            let mut rx: Batch<P::Buf> = Batch::new();
            let n = self.ports[side as usize].rx_burst(&mut rx);
            if n == 0 {
                continue;
            }
            received += n;
            let counters = &mut self.forwarder.counters;
            counters.add(Counter::RxPackets, n as u64);
            counters.add(Counter::RxBytes, rx.iter().map(|b| b.data().len() as u64).sum());
            // Each received frame goes to at most one of these, so neither overflows.
            let mut out: [Batch<P::Buf>; 2] = [Batch::new(), Batch::new()];
            for mut buf in rx.drain(..) {
                match self.forwarder.process(side, &mut buf) {
                    Action::Forward => out[side.other() as usize].push(buf),
                    Action::Reply => out[side as usize].push(buf),
                    Action::Consumed => self.forwarder.counters.add(Counter::NeighbourRepliesReceived, 1),
                    Action::Drop(reason) => self.forwarder.counters.drop(reason, 1),
                }
            }
            for (port, batch) in self.ports.iter_mut().zip(out.iter_mut()) {
                send(port, batch, &mut self.forwarder);
            }
        }
        self.send_solicitations();
        received
    }

    fn send_solicitations(&mut self) {
        while let Some((side, ip)) = self.forwarder.take_solicitation() {
            let port = &mut self.ports[side as usize];
            let Some(mut buf) = port.alloc() else {
                self.forwarder.counters.drop(DropReason::NoBuffer, 1);
                continue;
            };
            if self.forwarder.write_solicitation(side, ip, &mut buf) {
                let mut batch: Batch<P::Buf> = Batch::new();
                batch.push(buf);
                send(port, &mut batch, &mut self.forwarder);
                self.forwarder.counters.add(Counter::NeighbourSolicitationsSent, 1);
            }
        }
    }
}

/// Sends a batch; what the TX queue does not take is dropped and counted.
fn send<P: Port>(port: &mut P, batch: &mut Batch<P::Buf>, forwarder: &mut Forwarder) {
    if batch.is_empty() {
        return;
    }
    let bytes: u64 = batch.iter().map(|b| b.data().len() as u64).sum();
    let sent = port.tx_burst(batch);
    let unsent_bytes: u64 = batch.iter().map(|b| b.data().len() as u64).sum();
    let counters = &mut forwarder.counters;
    counters.add(Counter::TxPackets, sent as u64);
    counters.add(Counter::TxBytes, bytes - unsent_bytes);
    counters.drop(DropReason::TxFull, batch.len() as u64);
    batch.clear();
}
