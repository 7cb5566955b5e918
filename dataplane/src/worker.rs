//! A worker: one poll-mode loop over its own queue on each port.

use crate::pipeline::{Action, Counter, DropReason, Forwarder, PREFETCH_SA_AHEAD, PREFETCH_SLOT_AHEAD};
use crate::port::{Batch, PacketBuf, Port, BURST};
use crate::pipeline::Event;
use crate::shm::messages::{ToControl, FIXED_LEN};
use crate::shm::ring::Producer;
use crate::Side;
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// What the manager thread asks of one worker, done between bursts.
pub enum Task {
    /// A change of this worker's tunnels and SAs.
    Update(crate::tables::TableUpdate),
    /// A new tenants' policy (same tenants and pool, other rules or limits).
    Policy(Arc<crate::policy::Policy>),
    /// An IKE message from the control process to send on the outside port.
    SendIke { from: std::net::SocketAddr, to: std::net::SocketAddr, payload: Vec<u8> },
}

/// One worker's task queue, and how many tasks it has done (the manager
/// waits on that before publishing routes that need the worker's part).
pub struct Tasks {
    pub queue: ArrayQueue<Task>,
    pub done: std::sync::atomic::AtomicU64,
}

impl Tasks {
    pub fn new(capacity: usize) -> Tasks {
        Tasks { queue: ArrayQueue::new(capacity), done: std::sync::atomic::AtomicU64::new(0) }
    }
}

/// Most tasks a worker does between two bursts.
const TASKS_PER_POLL: usize = 64;

/// Packets in flight from one worker to another (per ordered pair).
pub const HANDOFF_RING: usize = 1024;

/// Rings between workers, one per ordered pair, for packets whose SA another
/// core owns (ARCHITECTURE.md: one owner per piece of mutable state). Each
/// ring has one producer and one consumer; handoffs and full rings are counted.
pub struct Handoff<B> {
    workers: usize,
    rings: Vec<ArrayQueue<(Side, B)>>,
}

impl<B> Handoff<B> {
    pub fn new(workers: usize, capacity: usize) -> Handoff<B> {
        Handoff { workers, rings: (0..workers * workers).map(|_| ArrayQueue::new(capacity.max(1))).collect() }
    }
    fn ring(&self, from: usize, to: usize) -> &ArrayQueue<(Side, B)> {
        &self.rings[from * self.workers + to]
    }
    /// Empties every ring (at shutdown, so buffers go back before their pool does).
    pub fn drain(&self) -> usize {
        self.rings.iter().map(|r| std::iter::from_fn(|| r.pop()).count()).sum()
    }
}

/// A worker's ports (indexed by [`Side`]) and its pipeline state.
pub struct Worker<P: Port> {
    pub ports: [P; 2],
    pub forwarder: Forwarder,
    core: usize,
    handoff: Option<Arc<Handoff<P::Buf>>>,
    /// Where SA and NAT events go (the manager thread, then the control process).
    events: Option<Arc<ArrayQueue<Event>>>,
    /// This worker's ring of packets for the control process.
    punt: Option<Producer>,
    tasks: Option<Arc<Tasks>>,
}

impl<P: Port> Worker<P> {
    pub fn new(outside: P, inside: P, forwarder: Forwarder) -> Self {
        Worker { ports: [outside, inside], forwarder, core: 0, handoff: None, events: None, punt: None, tasks: None }
    }

    /// Joins the worker to the others as `core`, handing packets to their owners.
    pub fn with_handoff(mut self, core: usize, handoff: Arc<Handoff<P::Buf>>) -> Self {
        self.core = core;
        self.handoff = Some(handoff);
        self
    }

    /// Passes IKE packets to the control process through `ring` (else they are dropped and counted).
    pub fn with_punt(mut self, ring: Producer) -> Self {
        self.punt = Some(ring);
        self
    }

    /// Takes table updates and IKE packets to send from `tasks`.
    pub fn with_tasks(mut self, tasks: Arc<Tasks>) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Passes SA and NAT events to `events` (else they are only counted).
    pub fn with_events(mut self, events: Arc<ArrayQueue<Event>>) -> Self {
        self.events = Some(events);
        self
    }

    /// One poll: packets handed over by other workers, then a receive burst
    /// from each port, processed and sent. Returns the number of frames taken in.
    pub fn poll(&mut self, now_ms: u64) -> usize {
        self.forwarder.begin_batch(now_ms);
        self.run_tasks();
        let mut received = self.poll_handoff();
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
            self.process_received(side, rx);
        }
        self.send_solicitations();
        self.pass_events();
        received
    }

    fn run_tasks(&mut self) {
        let Some(tasks) = self.tasks.clone() else { return };
        let mut done = 0;
        let mut out: Batch<P::Buf> = Batch::new();
        while done < TASKS_PER_POLL {
            let Some(task) = tasks.queue.pop() else { break };
            done += 1;
            match task {
                Task::Update(update) => {
                    self.forwarder.apply(update);
                    self.forwarder.counters.add(Counter::TableUpdates, 1);
                }
                Task::Policy(policy) => self.forwarder.set_policy(policy),
                Task::SendIke { from, to, payload } => {
                    let port = &mut self.ports[Side::Outside as usize];
                    let Some(mut buf) = port.alloc() else {
                        self.forwarder.counters.drop(DropReason::NoBuffer, 1);
                        continue;
                    };
                    if self.forwarder.write_ike(&mut buf, from, to, &payload) {
                        if out.is_full() {
                            send(&mut self.ports[Side::Outside as usize], &mut out, &mut self.forwarder);
                        }
                        out.push(buf);
                    }
                }
            }
        }
        if done > 0 {
            send(&mut self.ports[Side::Outside as usize], &mut out, &mut self.forwarder);
            tasks.done.fetch_add(done as u64, std::sync::atomic::Ordering::Release);
        }
    }

    /// Passes on what the inbound SAs received (see
    /// [`Forwarder::report_activity`]); called now and then between polls.
    pub fn report_activity(&mut self, now_ms: u64) {
        self.forwarder.report_activity(now_ms);
        self.pass_events();
    }

    fn pass_events(&mut self) {
        let queue = self.events.clone();
        let (mut sa_lost, mut nat_lost) = (0, 0);
        for event in self.forwarder.take_events() {
            if queue.as_ref().is_none_or(|q| q.push(event).is_err()) {
                match event {
                    Event::Sa(_) => sa_lost += 1,
                    Event::Nat(_) => nat_lost += 1,
                }
            }
        }
        self.forwarder.counters.add(Counter::SaEventsLost, sa_lost);
        self.forwarder.counters.add(Counter::NatEventsLost, nat_lost);
    }

    fn poll_handoff(&mut self) -> usize {
        let Some(handoff) = self.handoff.clone() else { return 0 };
        let (mut taken, me) = (0, self.core);
        for from in (0..handoff.workers).filter(|&c| c != me) {
            let ring = handoff.ring(from, me);
            let n = ring.len().min(BURST);
            if n > 0 {
                taken += n;
                self.forwarder.counters.add(Counter::HandoffsReceived, n as u64);
                self.process_burst((0..n).filter_map(|_| ring.pop()));
            }
        }
        taken
    }

    /// A received burst, with each packet's SA prefetched a few packets ahead;
    /// behind NAT, the decrypted packets then go through NAT together, each
    /// one's session prefetched a few packets ahead.
    fn process_received(&mut self, side: Side, rx: Batch<P::Buf>) {
        let mut out: [Batch<P::Buf>; 2] = [Batch::new(), Batch::new()];
        let mut deferred: Batch<P::Buf> = Batch::new();
        self.forwarder.defer_nat(side == Side::Outside);
        let mut packets = rx.into_iter();
        for ahead in packets.as_slice().iter().take(PREFETCH_SLOT_AHEAD) {
            self.forwarder.prefetch_slot(side, ahead);
        }
        for ahead in packets.as_slice().iter().take(PREFETCH_SA_AHEAD) {
            self.forwarder.prefetch_sa(side, ahead);
        }
        while let Some(buf) = packets.next() {
            let rest = packets.as_slice();
            if let Some(ahead) = rest.get(PREFETCH_SLOT_AHEAD - 1) {
                self.forwarder.prefetch_slot(side, ahead);
            }
            if let Some(ahead) = rest.get(PREFETCH_SA_AHEAD - 1) {
                self.forwarder.prefetch_sa(side, ahead);
            }
            let mut buf = buf;
            let action = self.forwarder.process(side, &mut buf);
            if action == Action::Deferred {
                deferred.push(buf);
                continue;
            }
            self.dispatch(side, buf, action, &mut out);
            self.process_pending(action, &mut out);
        }
        self.forwarder.defer_nat(false);
        self.finish_deferred(deferred, &mut out);
        self.flush(&mut out);
    }

    /// The NAT stage of a burst's decrypted packets, in their order.
    fn finish_deferred(&mut self, deferred: Batch<P::Buf>, out: &mut [Batch<P::Buf>; 2]) {
        for (index, ahead) in deferred.iter().enumerate().take(PREFETCH_SLOT_AHEAD) {
            self.forwarder.prefetch_deferred(index, ahead, false);
        }
        for (index, ahead) in deferred.iter().enumerate().take(PREFETCH_SA_AHEAD) {
            self.forwarder.prefetch_deferred(index, ahead, true);
        }
        let mut packets = deferred.into_iter();
        let mut index = 0;
        while let Some(mut buf) = packets.next() {
            let rest = packets.as_slice();
            if let Some(ahead) = rest.get(PREFETCH_SLOT_AHEAD - 1) {
                self.forwarder.prefetch_deferred(index + PREFETCH_SLOT_AHEAD, ahead, false);
            }
            if let Some(ahead) = rest.get(PREFETCH_SA_AHEAD - 1) {
                self.forwarder.prefetch_deferred(index + PREFETCH_SA_AHEAD, ahead, true);
            }
            let action = self.forwarder.finish_deferred(index, &mut buf);
            self.dispatch(Side::Outside, buf, action, out);
            self.process_pending(action, out);
            index += 1;
        }
        self.forwarder.end_deferred();
    }

    fn process_burst(&mut self, packets: impl Iterator<Item = (Side, P::Buf)>) {
        let mut out: [Batch<P::Buf>; 2] = [Batch::new(), Batch::new()];
        for (side, buf) in packets {
            self.handle(side, buf, &mut out);
        }
        self.flush(&mut out);
    }

    fn handle(&mut self, side: Side, mut buf: P::Buf, out: &mut [Batch<P::Buf>; 2]) {
        let action = self.forwarder.process(side, &mut buf);
        self.dispatch(side, buf, action, out);
        self.process_pending(action, out);
    }

    /// Packets the last one left waiting, each in a fresh buffer: the rest
    /// of an inner packet split to fit its tunnel (which may split again; if
    /// a part was dropped, so is the rest), and fragments released when
    /// their first fragment passed.
    fn process_pending(&mut self, mut action: Action, out: &mut [Batch<P::Buf>; 2]) {
        while self.forwarder.has_pending() {
            if let (Action::Drop(reason), true) = (action, self.forwarder.has_fragment()) {
                self.forwarder.discard_fragment(reason);
                continue;
            }
            let Some(mut buf) = self.ports[Side::Inside as usize].alloc() else {
                // Released fragments wait for the next packet's turn.
                self.forwarder.discard_fragment(DropReason::NoBuffer);
                return;
            };
            let Some((side, next)) = self.forwarder.process_pending(&mut buf) else { return };
            action = next;
            self.dispatch(side, buf, action, out);
        }
    }

    fn flush(&mut self, out: &mut [Batch<P::Buf>; 2]) {
        for (port, batch) in self.ports.iter_mut().zip(out.iter_mut()) {
            send(port, batch, &mut self.forwarder);
        }
    }

    fn dispatch(&mut self, side: Side, buf: P::Buf, action: Action, out: &mut [Batch<P::Buf>; 2]) {
        let to = match action {
            Action::Forward => side.other(),
            Action::Reply => side,
            Action::Consumed => return self.forwarder.counters.add(Counter::NeighbourRepliesReceived, 1),
            Action::Drop(reason) => return self.forwarder.counters.drop(reason, 1),
            Action::Handoff(core) => return self.hand_off(core, side, buf),
            Action::Kept => return,
            Action::Punt => return self.punt(side, buf),
            // Only process_received defers, and it keeps such buffers itself.
            Action::Deferred => unreachable!("a deferred packet is finished by its burst"),
        };
        // Fragments can make a burst produce more than it received: send when full.
        if out[to as usize].is_full() {
            send(&mut self.ports[to as usize], &mut out[to as usize], &mut self.forwarder);
        }
        out[to as usize].push(buf);
    }

    /// Copies a frame for the control process into this worker's ring.
    fn punt(&mut self, side: Side, buf: P::Buf) {
        let counters = &mut self.forwarder.counters;
        let Some(ring) = &mut self.punt else { return counters.drop(DropReason::IkeToControl, 1) };
        let message = ToControl::Punted { worker: self.core as u8, side, frame: buf.data() };
        let mut head = [0u8; FIXED_LEN];
        match ring.push_parts(&message.encode(&mut head)) {
            Ok(()) => counters.add(Counter::IkePunted, 1),
            Err(_) => counters.drop(DropReason::PuntFull, 1),
        }
    }

    fn hand_off(&mut self, core: u8, side: Side, buf: P::Buf) {
        let core = usize::from(core);
        let counters = &mut self.forwarder.counters;
        match &self.handoff {
            Some(h) if core < h.workers && core != self.core => match h.ring(self.core, core).push((side, buf)) {
                Ok(()) => counters.add(Counter::HandoffsSent, 1),
                Err(_) => counters.drop(DropReason::HandoffFull, 1),
            },
            // An SPI naming a core that does not exist is one we never gave out;
            // a route to one is a table we did not build.
            _ => counters.drop(if side == Side::Outside { DropReason::UnknownSpi } else { DropReason::NoTunnel }, 1),
        }
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
