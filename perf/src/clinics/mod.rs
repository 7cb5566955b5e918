//! The clinic emulator: many clinics' routers on the gateway's outside
//! port, each with its own outer address (IPv6 from the carrier VPN or IPv4
//! from the Internet) and tenant, and the eligibility system's servers on
//! its inside port. Each clinic builds its tunnel with IKEv2 through the
//! real path (dataplane punt, control process, answer back through the
//! dataplane), opens its flows (UDP, TCP with a real handshake, ICMP echo),
//! sends numbered, time-stamped packets through the tunnel, and checks each
//! answer the servers send back through the gateway's NAT and the tunnel.
//!
//! Run phases: [`Emulator::connect`] (IKE), [`Emulator::open`] (TCP
//! handshakes), [`Emulator::traffic`], [`Emulator::close`] (TCP FINs).

pub mod clinic;
pub mod packets;
pub mod pcap;
pub mod report;
pub mod server;
pub mod setup;
pub mod stack;

use crate::gen::Generator;
use crate::topology;
use clinic::{Clinic, Datagrams};
use hdrhistogram::Histogram;
use packets::{FlowKey, Plan, Protocol, Segment, Sizes, ETHERNET, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};
use report::{Counters, Live, Phase};
use sekisho_control::ike::initiator::{Initiator, InitiatorConfig};
use sekisho_control::ike::ts::TrafficSelector;
use sekisho_control::pki::identity::Identity;
use sekisho_control::pki::issue::{Authority, KeyKind};
use sekisho_dataplane::craft::{write_udp_headers, Flow, IPV4_UDP_OVERHEAD, IPV6_UDP_OVERHEAD};
use sekisho_dataplane::nat::ports::PoolLayout;
use sekisho_dataplane::policy::NatConfig;
use sekisho_dataplane::port::dpdk::{DpdkQueue, Mbuf};
use sekisho_dataplane::sad::SpiParts;
use sekisho_dataplane::port::{Batch, PacketBuf, Port};
use sekisho_dataplane::wire::ethernet;
use server::Server;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// How the clinics reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outer {
    Ipv6,
    Ipv4,
    /// Every other clinic over IPv4.
    Mixed,
}

/// Clinic `n`'s outer address: 2001:db8:c1::/64 over the carrier VPN, or
/// 172.16.0.0/12 over the Internet; both lie behind the generator's router.
pub fn clinic_address(n: usize, outer: Outer) -> IpAddr {
    let n = n as u32 + 1;
    let ipv4 = match outer {
        Outer::Ipv4 => true,
        Outer::Mixed => n.is_multiple_of(2),
        Outer::Ipv6 => false,
    };
    if ipv4 {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + n))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, (n >> 16) as u16, n as u16))
    }
}

/// Clinic `n`'s IKE identity (its certificate's SubjectAltName) and tenant.
pub fn identity(n: usize) -> String {
    format!("clinic{n:05}.clinics.example")
}
pub fn tenant(n: usize) -> String {
    format!("clinic-{n:05}")
}

pub struct Options {
    pub clinics: usize,
    /// Flows per clinic: UDP, TCP and ICMP in turn.
    pub flows: u16,
    pub sizes: Sizes,
    pub outer: Outer,
    pub dh_group: u16,
    /// IKE handshakes in flight at most, and started per second at most (0: no limit).
    pub ike_window: usize,
    pub setup_rate: f64,
    /// How long the clinics may take to build their tunnels.
    pub setup_timeout: Duration,
    /// Data packets per second offered (0: as fast as the window allows).
    pub rate: f64,
    /// Data packets in flight at most.
    pub window: u64,
    pub seconds: f64,
    /// Stop after this many data packets, if sooner.
    pub packets: Option<u64>,
}

/// A TCP flow as its clinic holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    Closed,
    SynSent,
    Established,
    FinSent,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct TcpFlow {
    state: TcpState,
    /// The next sequence number to send.
    next: u32,
    /// What we acknowledge: the server's highest sequence number seen, plus one.
    acked: u32,
    sent: Instant,
    tries: u32,
}

const TCP_TRIES: u32 = 4;

pub struct Emulator<'a> {
    generator: Generator<'a>,
    options: Options,
    ca: Authority,
    /// The clinics started so far, in order.
    clinics: Vec<Clinic>,
    by_address: HashMap<IpAddr, usize>,
    by_spi: HashMap<u32, usize>,
    /// Every flow of every clinic that is up, and where to find one.
    flows: Vec<FlowKey>,
    flow_index: HashMap<FlowKey, usize>,
    /// TCP state by flow index (UDP and ICMP flows have none).
    tcp: Vec<Option<TcpFlow>>,
    /// The data plan (flows that are open) and each plan flow's index in `flows`.
    plan: Plan,
    plan_slot: Vec<usize>,
    next_seq: u64,
    seen: Vec<u64>,
    server: Server,
    /// The ports' queues beyond the generator's queue 0: queue q faces the
    /// gateway's worker q (a virtio link delivers what is sent on queue q to
    /// queue q), and each queue's frames waiting to be sent, by side.
    lanes: Vec<[DpdkQueue<'a>; 2]>,
    pending: Vec<[Batch<Mbuf>; 2]>,
    /// How the site's NAT pool cuts its ports among the workers.
    pool_layout: PoolLayout,
    clock: Instant,
    pub counters: Counters,
    pub latency: Histogram<u64>,
    pub live: Live,
    /// How long from the first clinic's start until the last one's tunnel
    /// was up (or had failed).
    pub setup_seconds: f64,
    pub traffic_seconds: f64,
}

impl<'a> Emulator<'a> {
    /// `lanes`: each port's queues 1 to N-1, for a gateway with N workers.
    /// Each clinic gets its P-256 key and its certificate from `ca` as it
    /// starts (see [`Emulator::connect`]).
    pub fn new(generator: Generator<'a>, lanes: Vec<[DpdkQueue<'a>; 2]>, options: Options, ca: Authority, pool: sekisho_dataplane::addr::Ipv4Cidr, live: Live) -> Emulator<'a> {
        let by_address = (0..options.clinics).map(|n| (clinic_address(n, options.outer), n)).collect();
        Emulator {
            generator,
            ca,
            clinics: Vec::with_capacity(options.clinics),
            by_address,
            by_spi: HashMap::new(),
            flows: Vec::new(),
            flow_index: HashMap::new(),
            tcp: Vec::new(),
            plan: Plan { flows: Vec::new(), sizes: options.sizes },
            plan_slot: Vec::new(),
            next_seq: 0,
            seen: Vec::new(),
            server: Server::new(pool),
            pending: (0..=lanes.len()).map(|_| [Batch::new(), Batch::new()]).collect(),
            pool_layout: {
                // The site leaves the pool's first port and block size at their defaults.
                let nat: NatConfig = toml::from_str(&format!("pool = [\"{pool}\"]")).expect("a pool");
                PoolLayout { addresses: Vec::new(), first_port: nat.first_port, block_size: nat.block_size, workers: lanes.len() as u8 + 1 }
            },
            lanes,
            clock: Instant::now(),
            counters: Counters::default(),
            latency: report::histogram(),
            live,
            setup_seconds: 0.0,
            traffic_seconds: 0.0,
            options,
        }
    }

    /// Clinic `n`: its key, its certificate for its identity, its initiator
    /// proposing DH `options.dh_group` (whose key pair is made here too).
    fn make_clinic(&self, n: usize) -> Clinic {
        let selector = |cidr: &str| {
            let net: sekisho_dataplane::addr::Ipv4Cidr = cidr.parse().expect("prefix");
            let end = Ipv4Addr::from(u32::from(net.addr) | u32::MAX.checked_shr(u32::from(net.prefix_len)).unwrap_or(0));
            TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: net.addr.into(), end: end.into() }
        };
        let id = Identity::from_config(&identity(n)).expect("identity");
        let (cert, key) = self.ca.issue(&identity(n), KeyKind::EcdsaP256, -1, 30);
        let initiator = Initiator::new(InitiatorConfig {
            clinic: vec![selector("192.168.1.0/24")],
            inside: vec![selector(packets::SERVERS_CIDR)],
            ..InitiatorConfig::new(id, key, cert, self.options.dh_group)
        });
        let address = clinic_address(n, self.options.outer);
        let gateway = if address.is_ipv4() { IpAddr::V4(topology::GATEWAY_V4[0]) } else { IpAddr::V6(topology::GATEWAY_V6[0]) };
        Clinic::new(address, gateway, initiator)
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Why clinics failed, with how many each.
    pub fn failures(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for why in self.clinics.iter().filter_map(Clinic::failure) {
            *out.entry(why.to_owned()).or_default() += 1;
        }
        out
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Queue `q` of port `side`.
    fn queue(&mut self, side: usize, q: usize) -> &mut DpdkQueue<'a> {
        match q {
            0 => &mut self.generator.ports[side],
            q => &mut self.lanes[q - 1][side],
        }
    }

    /// Queues a frame on queue `q` of a port, sending a full batch first;
    /// false if the link took none.
    fn push(&mut self, side: usize, q: usize, buf: Mbuf) -> bool {
        let mut batch = std::mem::take(&mut self.pending[q][side]);
        if batch.is_full() {
            self.queue(side, q).tx_burst(&mut batch);
        }
        let taken = !batch.is_full();
        if taken {
            batch.push(buf);
        } else {
            self.counters.not_sent += 1;
        }
        self.pending[q][side] = batch;
        taken
    }

    fn flush(&mut self) {
        for q in 0..self.pending.len() {
            for side in [0, 1] {
                let mut batch = std::mem::take(&mut self.pending[q][side]);
                self.queue(side, q).tx_burst(&mut batch);
                self.pending[q][side] = batch;
            }
        }
    }

    /// Sends a clinic's IKE datagrams to the gateway (UDP 500).
    fn send_ike(&mut self, c: usize, datagrams: Datagrams) {
        let (src, dst) = (self.clinics[c].address, self.clinics[c].gateway);
        let overhead = if src.is_ipv4() { IPV4_UDP_OVERHEAD } else { IPV6_UDP_OVERHEAD };
        let flow = Flow { src, dst, src_port: 500, dst_port: 500 };
        let macs = (self.generator.gateway_mac[0], self.generator.ports[0].mac());
        for datagram in datagrams {
            let Some(mut buf) = self.generator.ports[0].alloc() else {
                self.counters.not_sent += 1;
                continue;
            };
            if !buf.set_len(overhead + datagram.len()) {
                continue;
            }
            let frame = buf.data_mut();
            frame[overhead..].copy_from_slice(&datagram);
            write_udp_headers(frame, macs.0, macs.1, &flow, self.counters.ike_sent as u16);
            self.counters.ike_sent += u64::from(self.push(0, 0, buf));
        }
    }

    /// Sends an inner packet of `inner_len` bytes, written by `fill`, through clinic `c`'s tunnel.
    fn send_esp(&mut self, c: usize, inner_len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        let macs = (self.generator.gateway_mac[0], self.generator.ports[0].mac());
        let Some(esp) = self.clinics[c].esp.as_mut() else { return false };
        let Some(mut buf) = self.generator.ports[0].alloc() else {
            self.counters.not_sent += 1;
            return false;
        };
        let (len, inner) = esp.frame_layout(inner_len);
        if !buf.set_len(len) {
            return false;
        }
        fill(&mut buf.data_mut()[inner]);
        if !esp.seal(buf.data_mut(), inner_len, self.next_seq as u16, macs.0, macs.1) {
            return false;
        }
        // The gateway's inbound SPI names the worker that owns the tunnel.
        let q = usize::from(SpiParts::decode(esp.out.spi).core) % self.pending.len();
        self.push(0, q, buf)
    }

    /// Receives on both ports and handles what came: ARP and ND, the
    /// gateway's IKE and ESP to the clinics, the clinics' packets at the servers.
    /// Whether anything came.
    fn poll(&mut self) -> bool {
        let mut any = false;
        for q in 0..self.pending.len() {
            for (side, at) in [(0, sekisho_dataplane::Side::Outside), (1, sekisho_dataplane::Side::Inside)] {
                let mut rx = Batch::new();
                self.queue(side, q).rx_burst(&mut rx);
                any |= !rx.is_empty();
                for buf in rx.drain(..) {
                    let Some(buf) = self.generator.control(at, buf) else { continue };
                    if side == 0 {
                        self.at_clinics(buf);
                    } else {
                        self.at_server(buf);
                    }
                }
            }
        }
        self.flush();
        any
    }

    fn at_server(&mut self, mut buf: Mbuf) {
        let frame = buf.data_mut();
        let ok = frame.len() >= ETHERNET + 20 && u16::from_be_bytes([frame[12], frame[13]]) == ethernet::ETHERTYPE_IPV4 && {
            let len = usize::from(u16::from_be_bytes([frame[ETHERNET + 2], frame[ETHERNET + 3]]));
            frame.len() >= ETHERNET + len && self.server.answer(&mut frame[ETHERNET..ETHERNET + len], &self.plan, self.next_seq)
        };
        if !ok {
            return;
        }
        // The pool port names the worker that owns the session.
        let pool_port = packets::ports(&frame[ETHERNET..]).map_or(0, |p| p.1);
        let q = usize::from(self.pool_layout.owner(pool_port).unwrap_or(0));
        let macs = (self.generator.gateway_mac[1], self.generator.ports[1].mac());
        ethernet::write_header(frame, macs.0, macs.1, ethernet::ETHERTYPE_IPV4);
        self.push(1, q, buf);
    }

    /// A frame from the gateway on the clinics' side: IKE or ESP.
    fn at_clinics(&mut self, mut buf: Mbuf) {
        let now = Instant::now();
        if let Some((_, to, message)) = sekisho_control::dataplane::ike_datagram(buf.data()) {
            let Some(&c) = self.by_address.get(&to.ip()).filter(|&&c| c < self.clinics.len()) else {
                self.counters.unexpected += 1;
                return;
            };
            self.counters.ike_received += 1;
            let (was_up, had_failed) = (self.clinics[c].is_up(), self.clinics[c].failure().is_some());
            let replies = self.clinics[c].receive(message, now);
            self.send_ike(c, replies);
            if self.clinics[c].is_up() {
                for spi in self.clinics[c].inbound_spis() {
                    self.by_spi.insert(spi, c);
                }
                if !was_up {
                    self.counters.tunnels_up += 1;
                }
            } else if self.clinics[c].failure().is_some() && !had_failed {
                self.counters.tunnels_failed += 1;
            }
            return;
        }
        let Some((spi, esp)) = clinic::esp_in_frame(buf.data()) else {
            self.counters.unexpected += 1;
            return;
        };
        let opened = self.by_spi.get(&spi).copied().and_then(|c| Some((c, self.clinics[c].esp.as_mut()?.open(buf.data_mut(), spi, esp)?)));
        let Some((c, inner)) = opened else {
            self.counters.esp_refused += 1;
            return;
        };
        self.answer_at_clinic(c, &buf.data()[inner]);
    }

    /// The server's answer (or a TCP control segment) back at clinic `c`.
    fn answer_at_clinic(&mut self, c: usize, ip: &[u8]) {
        if !packets::well_formed(ip) {
            self.counters.malformed += 1;
            log_fault("clinic", "malformed", ip, self.counters.malformed);
            return;
        }
        let tcp = packets::tcp_segment(ip);
        if let Some((segment, 0)) = tcp {
            return self.tcp_control(c, ip, segment);
        }
        let Some(seq) = packets::data_seq(ip).filter(|&s| s < self.next_seq) else {
            self.counters.misrouted += 1;
            return;
        };
        let (index, frame_len) = self.plan.packet(seq);
        let key = self.plan.flows[index];
        if key.clinic as usize != c {
            self.counters.misrouted += 1;
            return;
        }
        let stamp = match packets::check_answer(ip, key, seq, frame_len) {
            Ok(stamp) => stamp,
            Err(packets::Fault::Misrouted) => return self.counters.misrouted += 1,
            Err(packets::Fault::Corrupted) => return self.counters.corrupted += 1,
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.counters.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        if let (Some((segment, data)), Some(t)) = (tcp, self.tcp[self.plan_slot[index]].as_mut()) {
            let end = segment.seq.wrapping_add(data as u32);
            if (end.wrapping_sub(t.acked) as i32) > 0 {
                t.acked = end;
            }
        }
        self.counters.answered += 1;
        self.counters.answered_bytes += frame_len as u64;
        self.counters.answered_by_protocol[protocol_slot(key.protocol())] += 1;
        let _ = self.latency.record(self.now_ns().saturating_sub(stamp).max(1));
    }

    /// A SYN-ACK or FIN-ACK from the server: the handshake or the close goes on.
    fn tcp_control(&mut self, c: usize, ip: &[u8], s: Segment) {
        let port = packets::ports(ip).map_or(0, |p| p.1);
        let key = FlowKey { clinic: c as u32, flow: port.wrapping_sub(20_000) };
        let Some(&i) = self.flow_index.get(&key) else {
            self.counters.misrouted += 1;
            return;
        };
        let Some(mut t) = self.tcp[i] else { return };
        let reply = match t.state {
            TcpState::SynSent if s.flags == TCP_SYN | TCP_ACK && s.ack == t.next => {
                t.acked = s.seq.wrapping_add(1);
                t.state = TcpState::Established;
                self.counters.tcp_opened += 1;
                Some(Segment { seq: t.next, ack: t.acked, flags: TCP_ACK })
            }
            TcpState::FinSent if s.flags & TCP_FIN != 0 && s.ack == t.next => {
                t.acked = s.seq.wrapping_add(1);
                t.state = TcpState::Done;
                self.counters.tcp_closed += 1;
                Some(Segment { seq: t.next, ack: t.acked, flags: TCP_ACK })
            }
            // A repeated SYN-ACK or FIN-ACK (our ACK was lost): acknowledge again.
            TcpState::Established | TcpState::Done if s.flags & (TCP_SYN | TCP_FIN) != 0 => Some(Segment { seq: t.next, ack: t.acked, flags: TCP_ACK }),
            _ => None,
        };
        self.tcp[i] = Some(t);
        if let Some(segment) = reply {
            self.send_segment(key, segment);
        }
    }

    fn send_segment(&mut self, key: FlowKey, segment: Segment) -> bool {
        let len = if segment.flags & TCP_SYN != 0 { 44 } else { 40 };
        self.send_esp(key.clinic as usize, len, |ip| {
            packets::write_clinic_segment(ip, key, segment);
        })
    }

    /// Builds every clinic's tunnel: at most `ike_window` handshakes at once
    /// and `setup_rate` started a second. Returns how many are up.
    pub fn connect(&mut self) -> u64 {
        let start = Instant::now();
        let (mut next, mut in_progress) = (0usize, 0usize);
        let (mut last_up, mut last_scan) = (start, start);
        loop {
            let now = Instant::now();
            let allowed = if self.options.setup_rate > 0.0 { (start.elapsed().as_secs_f64() * self.options.setup_rate) as usize + 1 } else { usize::MAX };
            while in_progress < self.options.ike_window && next < self.options.clinics && next < allowed {
                let clinic = self.make_clinic(next);
                self.clinics.push(clinic);
                let datagrams = self.clinics[next].start(now);
                self.send_ike(next, datagrams);
                next += 1;
                in_progress += 1;
            }
            // Retransmissions and give-ups, a few times a second (thousands of clinics).
            if now.duration_since(last_scan) >= Duration::from_millis(100) {
                last_scan = now;
                for c in 0..next {
                    if self.clinics[c].in_progress() {
                        let datagrams = self.clinics[c].tick(now);
                        if self.clinics[c].failure().is_some() {
                            self.counters.tunnels_failed += 1;
                        }
                        self.send_ike(c, datagrams);
                    }
                }
                in_progress = self.clinics[..next].iter().filter(|c| c.in_progress()).count();
            }
            let before = self.counters.tunnels_up + self.counters.tunnels_failed;
            self.flush();
            while self.poll() {}
            let settled = self.counters.tunnels_up + self.counters.tunnels_failed;
            if settled > before {
                in_progress = in_progress.saturating_sub((settled - before) as usize);
                last_up = Instant::now();
            }
            self.live.tick(Phase::Tunnels, settled as f64 / self.options.clinics.max(1) as f64, &self.counters, false);
            if settled as usize >= self.options.clinics || start.elapsed() > self.options.setup_timeout {
                break;
            }
        }
        self.setup_seconds = last_up.duration_since(start).as_secs_f64();
        self.live.tick(Phase::Tunnels, 1.0, &self.counters, true);
        self.counters.tunnels_up
    }

    /// Opens every flow of every clinic that is up: TCP flows with a
    /// handshake (retried; a flow that never answers is left out). UDP and
    /// ICMP flows open with their first data packet (the plan sends one to
    /// each flow first). Returns the flows open.
    pub fn open(&mut self) -> usize {
        for (c, clinic) in self.clinics.iter().enumerate() {
            if clinic.is_up() {
                self.flows.extend((0..self.options.flows).map(|flow| FlowKey { clinic: c as u32, flow }));
            }
        }
        self.flow_index = self.flows.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let now = Instant::now();
        self.tcp = self
            .flows
            .iter()
            .map(|k| {
                (k.protocol() == Protocol::Tcp).then(|| {
                    let isn = packets::splitmix(u64::from(k.clinic) << 16 | u64::from(k.flow)) as u32;
                    TcpFlow { state: TcpState::Closed, next: isn, acked: 0, sent: now, tries: 0 }
                })
            })
            .collect();
        self.tcp_round(TcpState::Closed, TcpState::SynSent, Phase::Handshakes);
        self.counters.tcp_failed = self.tcp.iter().flatten().filter(|t| t.state != TcpState::Established).count() as u64;
        let open: Vec<usize> = (0..self.flows.len()).filter(|&i| self.tcp[i].is_none_or(|t| t.state == TcpState::Established)).collect();
        self.plan = Plan { flows: open.iter().map(|&i| self.flows[i]).collect(), sizes: self.options.sizes };
        self.plan_slot = open;
        self.plan.flows.len()
    }

    /// Moves TCP flows in `from` on through `waiting` (SYN or FIN sent) to
    /// the next state (the server's answer came): sends each
    /// its SYN or FIN (at most half a window of flows at once: each takes
    /// two frames), retransmitting after a second, until all are done or
    /// have failed.
    fn tcp_round(&mut self, from: TcpState, waiting: TcpState, phase: Phase) {
        let start = Instant::now();
        let total = self.tcp.iter().flatten().filter(|t| t.state == from).count();
        let done = |e: &Self| (if waiting == TcpState::SynSent { e.counters.tcp_opened } else { e.counters.tcp_closed }) as usize;
        let base = done(self);
        let (mut cursor, mut sent, mut failed, mut last_scan) = (0usize, 0usize, 0usize, start);
        loop {
            let now = Instant::now();
            let mut in_flight = sent.saturating_sub(done(self) - base + failed);
            while in_flight < (self.options.window / 2).max(1) as usize && cursor < self.tcp.len() {
                let Some(t) = self.tcp[cursor].filter(|t| t.state == from) else {
                    cursor += 1;
                    continue;
                };
                if !self.send_tcp(cursor, t, true, waiting, now) {
                    break;
                }
                (cursor, sent, in_flight) = (cursor + 1, sent + 1, in_flight + 1);
            }
            if now.duration_since(last_scan) >= Duration::from_millis(100) {
                last_scan = now;
                failed = 0;
                for i in 0..cursor {
                    let Some(t) = self.tcp[i].filter(|t| t.state == waiting && now.duration_since(t.sent) > Duration::from_secs(1)) else { continue };
                    if t.tries >= TCP_TRIES {
                        failed += 1;
                    } else {
                        self.send_tcp(i, t, false, waiting, now);
                    }
                }
                let finished = done(self) - base;
                self.live.tick(phase, finished as f64 / total.max(1) as f64, &self.counters, false);
                if finished + failed >= total || now.duration_since(start) > Duration::from_secs(60) {
                    break;
                }
            }
            self.flush();
            while self.poll() {}
        }
        for t in self.tcp.iter_mut().flatten() {
            t.tries = 0;
        }
    }

    /// Sends flow `i`'s SYN (from Closed) or FIN (from Established), `fresh`
    /// or again, and marks it `waiting`.
    fn send_tcp(&mut self, i: usize, mut t: TcpFlow, fresh: bool, waiting: TcpState, now: Instant) -> bool {
        let flags = if waiting == TcpState::SynSent { TCP_SYN } else { TCP_FIN | TCP_ACK };
        // SYN and FIN each take a sequence number: a retransmission has the one its first took.
        let seq = if fresh { t.next } else { t.next.wrapping_sub(1) };
        let segment = Segment { seq, ack: if flags == TCP_SYN { 0 } else { t.acked }, flags };
        if !self.send_segment(self.flows[i], segment) {
            return false;
        }
        if fresh {
            t.next = t.next.wrapping_add(1);
        }
        (t.state, t.sent, t.tries) = (waiting, now, t.tries + 1);
        self.tcp[i] = Some(t);
        true
    }

    /// Sends data packets on the open flows for `options.seconds` (or
    /// `options.packets`), at `options.rate` or as fast as the window
    /// allows, and checks every answer. Then waits for what is in flight.
    pub fn traffic(&mut self) {
        if self.plan.flows.is_empty() {
            return;
        }
        let start = Instant::now();
        let duration = Duration::from_secs_f64(self.options.seconds);
        let limit = self.options.packets.unwrap_or(u64::MAX);
        let mut last_progress = Instant::now();
        let mut presumed_lost = 0u64;
        let mut sending = true;
        while sending || self.in_flight(presumed_lost) > 0 {
            let elapsed = start.elapsed();
            if sending && (elapsed >= duration || self.next_seq >= limit) {
                sending = false;
                last_progress = Instant::now();
            }
            if sending {
                let mut room = self.options.window.saturating_sub(self.in_flight(presumed_lost));
                if self.options.rate > 0.0 {
                    room = room.min(((elapsed.as_secs_f64() * self.options.rate) as u64).saturating_sub(self.next_seq));
                }
                room = room.min(limit - self.next_seq).min(packets_per_round());
                for _ in 0..room {
                    if !self.send_data() {
                        break;
                    }
                }
            }
            self.flush();
            if self.poll() {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > Duration::from_millis(if sending { 500 } else { 1000 }) {
                // Nothing came for a while: what is in flight is lost (and counted so at the end).
                presumed_lost += self.in_flight(presumed_lost);
                last_progress = Instant::now();
            }
            self.live.tick(Phase::Traffic, elapsed.as_secs_f64() / duration.as_secs_f64(), &self.counters, false);
        }
        self.traffic_seconds = start.elapsed().as_secs_f64();
    }

    fn in_flight(&self, presumed_lost: u64) -> u64 {
        let c = &self.counters;
        c.sent.saturating_sub(c.answered + c.corrupted + c.misrouted + c.malformed + presumed_lost)
    }

    /// Sends the next planned data packet.
    fn send_data(&mut self) -> bool {
        let seq = self.next_seq;
        let (index, frame_len) = self.plan.packet(seq);
        let key = self.plan.flows[index];
        let slot = self.plan_slot[index];
        let inner_len = frame_len - ETHERNET;
        let segment = match self.tcp[slot] {
            Some(t) => Segment { seq: t.next, ack: t.acked, flags: TCP_ACK | TCP_PSH },
            None => Segment { seq: 0, ack: 0, flags: 0 },
        };
        let stamp = self.now_ns();
        if !self.send_esp(key.clinic as usize, inner_len, |ip| packets::write_request(ip, key, seq, stamp, segment)) {
            return false;
        }
        if let Some(t) = self.tcp[slot].as_mut() {
            t.next = t.next.wrapping_add((inner_len - packets::payload_at(packets::PROTO_TCP)) as u32);
        }
        if (seq / 64) as usize >= self.seen.len() {
            self.seen.push(0);
        }
        self.next_seq += 1;
        self.counters.sent += 1;
        self.counters.sent_bytes += frame_len as u64;
        self.counters.sent_by_protocol[protocol_slot(key.protocol())] += 1;
        true
    }

    /// Writes the traffic of the tunnels that are up as pcap files for
    /// pktgen or tcpreplay on bare metal: `clinics.pcap`, `packets` ESP
    /// frames of the UDP flows (whose NAT sessions last longest, 300 s idle)
    /// for the gateway's outside port
    /// (sealed with the clinics' SAs, so it must be replayed while they are
    /// installed: each frame's ESP sequence number is used once), and
    /// `servers.pcap`, the servers' answers for its inside port, to the
    /// pool addresses and ports the gateway gave each flow in this run;
    /// and `esp-sas.json`, the clinics' SAs (SPI, AES-GCM key and salt,
    /// addresses) for decrypting `clinics.pcap` elsewhere (Wireshark, scapy).
    /// Returns the frames written to each.
    pub fn export_pcap(&mut self, dir: &std::path::Path, packets: u64) -> std::io::Result<(u64, u64)> {
        use pcap::PcapWriter;
        use std::io::BufWriter;
        let file = |name: &str| -> std::io::Result<PcapWriter<BufWriter<std::fs::File>>> { PcapWriter::new(BufWriter::new(std::fs::File::create(dir.join(name))?)) };
        std::fs::create_dir_all(dir)?;
        let (mut clinics, mut servers) = (file("clinics.pcap")?, file("servers.pcap")?);
        let flows: Vec<FlowKey> = self.plan.flows.iter().copied().filter(|k| k.protocol() == Protocol::Udp && self.server.mappings().contains_key(k)).collect();
        if flows.is_empty() {
            return Ok((0, 0));
        }
        let plan = Plan { flows, sizes: self.options.sizes };
        let (outside_macs, inside_macs) = ((self.generator.gateway_mac[0], self.generator.ports[0].mac()), (self.generator.gateway_mac[1], self.generator.ports[1].mac()));
        let mut frame = vec![0u8; 2048];
        let mut inner = vec![0u8; packets::MAX_FRAME];
        for seq in 0..packets {
            let (index, frame_len) = plan.packet(seq);
            let key = plan.flows[index];
            let inner_len = frame_len - ETHERNET;
            let ip = &mut inner[..inner_len];
            packets::write_request(ip, key, seq, 0, Segment { seq: 0, ack: 0, flags: 0 });
            let Some(esp) = self.clinics[key.clinic as usize].esp.as_mut() else { continue };
            let (total, at) = esp.frame_layout(inner_len);
            frame[at].copy_from_slice(ip);
            if !esp.seal(&mut frame[..total], inner_len, seq as u16, outside_macs.0, outside_macs.1) {
                continue;
            }
            clinics.frame(&frame[..total])?;
            let (pool_address, pool_port) = self.server.mappings()[&key];
            packets::translate(ip, pool_address, pool_port);
            packets::make_answer(ip, None);
            frame[ETHERNET..frame_len].copy_from_slice(ip);
            ethernet::write_header(&mut frame, inside_macs.0, inside_macs.1, ethernet::ETHERTYPE_IPV4);
            servers.frame(&frame[..frame_len])?;
        }
        // One entry per clinic, however many of its flows the files hold.
        let mut exported: Vec<usize> = plan.flows.iter().map(|k| k.clinic as usize).collect();
        exported.sort_unstable();
        exported.dedup();
        let sas: Vec<serde_json::Value> = exported
            .iter()
            .filter_map(|&c| self.clinics[c].esp.as_ref())
            .map(|e| {
                let key: String = e.out_key.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::json!({"spi": e.out.spi, "key": key, "src": e.tunnel.local, "dst": e.tunnel.remote})
            })
            .collect();
        std::fs::write(dir.join("esp-sas.json"), serde_json::to_string_pretty(&sas)? + "\n")?;
        Ok((clinics.finish()?, servers.finish()?))
    }

    /// Closes every TCP flow (FIN, the server's FIN, our last ACK).
    pub fn close(&mut self) {
        self.tcp_round(TcpState::Established, TcpState::FinSent, Phase::Closing);
        self.live.tick(Phase::Closing, 1.0, &self.counters, true);
    }
}

/// Logs the first few faults of a kind, with the packet in hex.
pub fn log_fault(place: &str, kind: &str, ip: &[u8], count: u64) {
    if count <= 5 {
        let hex: String = ip.iter().take(64).map(|b| format!("{b:02x}")).collect();
        eprintln!("sekisho-clinics: {kind} packet at the {place} (#{count}, {} bytes): {hex}", ip.len());
    }
}

fn protocol_slot(p: Protocol) -> usize {
    p as usize
}

/// Data packets queued per round of the loop, so that receiving keeps up.
fn packets_per_round() -> u64 {
    sekisho_dataplane::port::BURST as u64
}
