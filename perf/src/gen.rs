//! The traffic generator: a DPDK process whose two `net_vhost` ports face the
//! gateway's two `virtio_user` ports. It plays the routers on both sides of
//! the gateway (answering and sending ARP and ND with the dataplane's own
//! pipeline code), sends UDP flows through the gateway, and checks what comes
//! out: in `verify` every packet must arrive once, byte for byte, with only
//! its Ethernet addresses and TTL (or hop limit) changed; in `rate` it sends flat out and counts.
//! With [`Traffic::Esp`] its outside port is the clinics' router at the far
//! end of a static tunnel: it encrypts what it sends and decrypts what it
//! receives there (with the dataplane's ESP code; scapy checks that code
//! independently in tests/scapy_interop). With [`Traffic::Nat`] the clinics
//! send every packet; its inside port checks each as the server gets it
//! (byte for byte but for the translated source and the checksums, which it
//! recomputes itself; one pool address and port per flow, never shared) and
//! answers it, and the clinics' end checks that the answer comes back
//! through the tunnel as the server sent it, to the clinic's own address.

use crate::clinics::clinic::{esp_in_frame, Esp};
use crate::clinics::packets::splitmix;
use crate::topology::{self, Traffic};
use sekisho_dataplane::craft::{forward_in_place, read_seq, write_udp_frame, Flow};
use sekisho_dataplane::esp::aead::GcmKey;
use sekisho_dataplane::esp::sa::{InboundSa, Lifetime, OutboundSa, Selectors};
use sekisho_dataplane::tunnels::decode_hex;
use sekisho_dataplane::wire::{checksum, ethernet, ipv4};
use sekisho_dataplane::addr::Ipv4Cidr;
use std::collections::HashMap;
use sekisho_dataplane::neighbour::NeighbourTable;
use sekisho_dataplane::pipeline::{is_neighbour_frame, Action, Forwarder, Interface};
use sekisho_dataplane::port::dpdk::{DpdkQueue, Mbuf};
use sekisho_dataplane::port::{Batch, PacketBuf, Port};
use sekisho_dataplane::wire::MacAddr;
use sekisho_dataplane::Side;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// IKE packets a NAT verify run sends to the gateway first, and their frame size.
pub const IKE_PACKETS: u64 = 3;
pub const IKE_FRAME: usize = 200;

/// Flows per direction (half IPv4, half IPv6).
pub const FLOWS: u16 = 8;
pub const MIN_FRAME: usize = 64;
pub const MAX_FRAME: usize = 1500;

/// Largest plain frame that fits the tunnel (IPv6 outer, 1500-byte MTU) once encrypted.
pub const MAX_TUNNELLED_FRAME: usize = ethernet::HEADER_LEN + 1426;

/// Where packet `seq` of a verify run enters, its flow and its frame length
/// (64 to `max_frame` bytes; IPv6 frames start at their minimum of 70).
/// Behind NAT every packet comes from a clinic, over IPv4.
pub fn plan(seq: u64, max_frame: usize, traffic: Traffic) -> (Side, Flow, usize) {
    let h = splitmix(seq);
    let nat = traffic == Traffic::Nat;
    let side = if h & 1 == 0 || nat { Side::Outside } else { Side::Inside };
    let index = ((h >> 1) % u64::from(FLOWS)) as u16;
    let flow = topology::flow(side, if nat { index & !1 } else { index });
    let len = MIN_FRAME + ((h >> 16) % (max_frame - MIN_FRAME + 1) as u64) as usize;
    (side, flow, len.max(flow.min_frame_len()))
}

/// The clinics' end of the static tunnel (see [`topology::tunnel_config`]).
pub fn clinic_end() -> Esp {
    let key = |k: &str| GcmKey::new(&decode_hex(k).expect("topology keys are hex")).expect("topology keys are valid");
    let out = OutboundSa::new(topology::SPI_AT_GATEWAY, key(topology::KEY_TO_GATEWAY), true, Selectors::default(), 0, Lifetime::default());
    let inbound = InboundSa::new(topology::SPI_AT_CLINIC, key(topology::KEY_TO_CLINIC), true, 4096, Selectors::default(), 0, Lifetime::default());
    let out_key = decode_hex(topology::KEY_TO_GATEWAY).expect("topology keys are hex");
    Esp::from_sas(IpAddr::V6(topology::ROUTER_V6[0]), IpAddr::V6(topology::GATEWAY_V6[0]), out, out_key, inbound)
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub packets: u64,
    pub sent: u64,
    pub received_intact: u64,
    pub missing: u64,
    pub corrupted: u64,
    pub duplicates: u64,
    /// Came out of the wrong port, or carried a sequence never sent.
    pub misrouted: u64,
    /// Behind NAT: packets the server got, translated as they should be.
    pub translated: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub control_frames: u64,
}

impl VerifyReport {
    /// Data frames that came back, good or bad.
    pub fn received(&self) -> u64 {
        self.received_intact + self.corrupted + self.duplicates + self.misrouted
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RateReport {
    pub frame_len: usize,
    pub seconds: f64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub delivered_gbps: f64,
}

/// The generator's two ports and its ARP/ND host logic.
pub struct Generator<'a> {
    pub(crate) ports: [DpdkQueue<'a>; 2],
    host: Forwarder,
    neighbours: Arc<NeighbourTable>,
    pub(crate) gateway_mac: [MacAddr; 2],
    clock: Instant,
    pub control_frames: u64,
    /// The tunnel's far end, when the outside link carries ESP.
    clinic: Option<Esp>,
    traffic: Traffic,
    /// Behind NAT: the pool address and port each flow (by its clinic port) was given, and the reverse.
    mappings: HashMap<u16, ([u8; 4], u16)>,
    mapped: HashMap<([u8; 4], u16), u16>,
}

impl<'a> Generator<'a> {
    pub fn new(outside: DpdkQueue<'a>, inside: DpdkQueue<'a>, traffic: Traffic) -> Self {
        let interface = |i: usize| Interface {
            ipv4: vec![format!("{}/{}", topology::ROUTER_V4[i], topology::PREFIX_V4[i]).parse().unwrap()],
            ipv6: vec![format!("{}/{}", topology::ROUTER_V6[i], topology::PREFIX_V6[i]).parse().unwrap()],
            gateway_ipv4: None,
            gateway_ipv6: None,
        };
        let neighbours = Arc::new(NeighbourTable::new([]));
        let host = Forwarder::new([interface(0), interface(1)], [outside.mac(), inside.mac()], neighbours.clone());
        let clinic = matches!(traffic, Traffic::Esp | Traffic::Nat).then(clinic_end);
        Generator {
            ports: [outside, inside],
            host,
            neighbours,
            gateway_mac: [MacAddr::ZERO; 2],
            clock: Instant::now(),
            control_frames: 0,
            clinic,
            traffic,
            mappings: HashMap::new(),
            mapped: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Uses these gateway MACs instead of resolving them.
    pub fn set_gateway_mac(&mut self, macs: [MacAddr; 2]) -> [MacAddr; 2] {
        self.gateway_mac = macs;
        macs
    }

    /// Answers or learns from an ARP/ND frame and returns None; hands any
    /// other frame back.
    pub(crate) fn control(&mut self, side: Side, mut buf: Mbuf) -> Option<Mbuf> {
        if !is_neighbour_frame(buf.data()) {
            return Some(buf);
        }
        self.control_frames += 1;
        self.host.begin_batch(self.now_ms());
        if self.host.process(side, &mut buf) == Action::Reply {
            let mut batch = Batch::new();
            batch.push(buf);
            self.ports[side as usize].tx_burst(&mut batch);
        }
        None
    }

    fn solicit(&mut self, side: Side, ip: IpAddr) {
        let Some(mut buf) = self.ports[side as usize].alloc() else { return };
        if self.host.write_solicitation(side, ip, &mut buf) {
            let mut batch = Batch::new();
            batch.push(buf);
            self.ports[side as usize].tx_burst(&mut batch);
        }
    }

    /// Learns the gateway's MAC on both ports by ARP and ND (which also
    /// teaches the gateway ours). Fails if it does not answer in `timeout`.
    pub fn resolve_gateway(&mut self, timeout: Duration) -> Result<[MacAddr; 2], String> {
        let deadline = Instant::now() + timeout;
        let mut last_ask = None::<Instant>;
        loop {
            self.neighbours.maintain(self.now_ms());
            let snap = self.neighbours.snapshot();
            let known: Vec<Option<MacAddr>> = [Side::Outside, Side::Inside]
                .iter()
                .flat_map(|&s| {
                    [IpAddr::V4(topology::GATEWAY_V4[s as usize]), IpAddr::V6(topology::GATEWAY_V6[s as usize])].map(|ip| snap.get(s, ip).map(|e| e.mac))
                })
                .collect();
            if let [Some(o4), Some(o6), Some(i4), Some(i6)] = known[..] {
                if o4 != o6 || i4 != i6 {
                    return Err(format!("gateway answered ARP and ND with different MACs: {o4}/{o6}, {i4}/{i6}"));
                }
                self.gateway_mac = [o4, i4];
                return Ok(self.gateway_mac);
            }
            if Instant::now() > deadline {
                return Err(format!("the gateway did not answer ARP and ND within {timeout:?} (outside v4/v6, inside v4/v6: {known:?})"));
            }
            if last_ask.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
                last_ask = Some(Instant::now());
                for side in [Side::Outside, Side::Inside] {
                    self.solicit(side, IpAddr::V4(topology::GATEWAY_V4[side as usize]));
                    self.solicit(side, IpAddr::V6(topology::GATEWAY_V6[side as usize]));
                }
            }
            self.drain_control();
        }
    }

    /// Answers ARP and ND for `time`, dropping anything else.
    pub fn idle(&mut self, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            self.drain_control();
        }
    }

    /// Receives on both ports, answering control frames and dropping data.
    fn drain_control(&mut self) {
        for side in [Side::Outside, Side::Inside] {
            let mut rx = Batch::new();
            self.ports[side as usize].rx_burst(&mut rx);
            for buf in rx.drain(..) {
                drop(self.control(side, buf));
            }
        }
    }

    /// Sends `packets` planned packets with at most `window` in flight and
    /// checks every one that comes back. `progress` is called about once a second.
    pub fn verify(&mut self, packets: u64, window: u64, mut progress: impl FnMut(&VerifyReport)) -> VerifyReport {
        if self.traffic == Traffic::Nat {
            self.send_ike(IKE_PACKETS);
        }
        let mut seen = vec![0u64; packets.div_ceil(64) as usize];
        let mut report = VerifyReport { packets, ..Default::default() };
        let mut pending: [Batch<Mbuf>; 2] = [Batch::new(), Batch::new()];
        let mut expected = vec![0u8; MAX_FRAME];
        let mut plain = vec![0u8; MAX_FRAME];
        let max_frame = if self.clinic.is_some() { MAX_TUNNELLED_FRAME } else { MAX_FRAME };
        let start = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_change = Instant::now();
        let mut next_seq = 0u64;
        // Packets given up for lost, so that a loss cannot shrink the window for good.
        let mut presumed_lost = 0u64;
        loop {
            let mut in_flight = report.sent - (report.received() + presumed_lost).min(report.sent);
            if in_flight > 0 && last_change.elapsed() > Duration::from_millis(500) {
                presumed_lost += in_flight;
                in_flight = 0;
                last_change = Instant::now();
            }
            // Fill the send batches up to the window.
            let mut room = window.saturating_sub(in_flight + pending.iter().map(|b| b.len() as u64).sum::<u64>());
            while room > 0 && next_seq < packets {
                let (side, flow, len) = plan(next_seq, max_frame, self.traffic);
                if pending[side as usize].is_full() {
                    break;
                }
                let Some(mut buf) = self.ports[side as usize].alloc() else { break };
                let (dst, src) = (self.gateway_mac[side as usize], self.ports[side as usize].mac());
                match (&mut self.clinic, side) {
                    (Some(clinic), Side::Outside) => {
                        write_udp_frame(&mut plain[..len], dst, src, &flow, next_seq);
                        let inner_len = len - ethernet::HEADER_LEN;
                        let (total, at) = clinic.frame_layout(inner_len);
                        assert!(buf.set_len(total), "mbuf room");
                        buf.data_mut()[at].copy_from_slice(&plain[ethernet::HEADER_LEN..len]);
                        assert!(clinic.seal(buf.data_mut(), inner_len, 0, dst, src), "the generator's SA lasts the run");
                    }
                    _ => {
                        assert!(buf.set_len(len), "mbuf room");
                        write_udp_frame(buf.data_mut(), dst, src, &flow, next_seq);
                    }
                }
                pending[side as usize].push(buf);
                next_seq += 1;
                room -= 1;
            }
            for side in [Side::Outside, Side::Inside] {
                let sent = self.ports[side as usize].tx_burst(&mut pending[side as usize]);
                report.sent += sent as u64;
            }
            let mut answers: Batch<Mbuf> = Batch::new();
            for side in [Side::Outside, Side::Inside] {
                let mut rx = Batch::new();
                if self.ports[side as usize].rx_burst(&mut rx) > 0 {
                    last_change = Instant::now();
                }
                for buf in rx.drain(..) {
                    let Some(mut buf) = self.control(side, buf) else { continue };
                    if self.traffic == Traffic::Nat && side == Side::Inside {
                        if let Some(answer) = self.answer(buf, max_frame, &mut expected, &mut report) {
                            answers.push(answer);
                        }
                        continue;
                    }
                    let (eth, ip) = match (&mut self.clinic, side) {
                        // From the tunnel: the outer headers are the gateway's, the inner packet the server's.
                        (Some(clinic), Side::Outside) => match esp_in_frame(buf.data()).and_then(|(spi, esp)| clinic.open(buf.data_mut(), spi, esp)) {
                            Some(inner) => (None, inner),
                            None => {
                                report.corrupted += 1;
                                continue;
                            }
                        },
                        _ => (Some(0..ethernet::HEADER_LEN), ethernet::HEADER_LEN..buf.data().len()),
                    };
                    let frame = buf.data();
                    self.check(side, eth.map(|r| &frame[r]), &frame[ip], max_frame, &mut seen, &mut expected, &mut report);
                }
            }
            // What the inside port cannot take now is lost, as on a wire.
            self.ports[Side::Inside as usize].tx_burst(&mut answers);
            let done = report.received() >= packets;
            let all_sent = next_seq >= packets && pending.iter().all(|b| b.is_empty());
            if done || (all_sent && last_change.elapsed() > Duration::from_millis(400)) {
                break;
            }
            if presumed_lost > packets / 10 + 1000 {
                break; // the gateway is not forwarding: stop and report
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                report.seconds = start.elapsed().as_secs_f64();
                progress(&report);
            }
        }
        report.seconds = start.elapsed().as_secs_f64();
        report.missing = packets - report.received_intact - report.corrupted;
        report.control_frames = self.control_frames;
        report
    }

    /// Checks a received packet: its Ethernet header (None: it came out of
    /// the tunnel, whose outer headers were checked by decryption) and its IP packet.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        side: Side,
        eth: Option<&[u8]>,
        ip: &[u8],
        max_frame: usize,
        seen: &mut [u64],
        expected: &mut Vec<u8>,
        report: &mut VerifyReport,
    ) {
        let Some(seq) = read_seq(ip).filter(|&s| s < report.packets) else {
            report.misrouted += 1;
            return;
        };
        let (sent_on, mut flow, len) = plan(seq, max_frame, self.traffic);
        // Behind NAT what comes back to the clinics is the server's answer.
        let nat = self.traffic == Traffic::Nat;
        if (nat && side != Side::Outside) || (!nat && sent_on != side.other()) {
            report.misrouted += 1;
            return;
        }
        if nat {
            flow = Flow { src: flow.dst, dst: flow.src, src_port: flow.dst_port, dst_port: flow.src_port };
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if seen[word] & bit != 0 {
            report.duplicates += 1;
            return;
        }
        seen[word] |= bit;
        expected.resize(len, 0);
        write_udp_frame(expected, self.ports[side as usize].mac(), self.gateway_mac[side as usize], &flow, seq);
        // The gateway is a router: the TTL or hop limit comes out one lower.
        forward_in_place(&mut expected[ethernet::HEADER_LEN..]);
        if eth.is_none_or(|e| e == &expected[..ethernet::HEADER_LEN]) && ip == &expected[ethernet::HEADER_LEN..] {
            report.received_intact += 1;
            report.bytes += len as u64;
        } else {
            report.corrupted += 1;
        }
    }

    /// Sends `count` IKE packets (UDP 500, IPv6) from the clinics' router to
    /// the gateway, which passes them to the control process (not checked
    /// here: the integration test reads them from the control side).
    fn send_ike(&mut self, count: u64) {
        let flow = Flow { src: IpAddr::V6(topology::ROUTER_V6[0]), dst: IpAddr::V6(topology::GATEWAY_V6[0]), src_port: 500, dst_port: 500 };
        for seq in 0..count {
            let Some(mut buf) = self.ports[0].alloc() else { return };
            assert!(buf.set_len(IKE_FRAME), "mbuf room");
            write_udp_frame(buf.data_mut(), self.gateway_mac[0], self.ports[0].mac(), &flow, seq);
            let mut batch = Batch::new();
            batch.push(buf);
            self.ports[0].tx_burst(&mut batch);
        }
    }

    /// Behind NAT, a clinic's packet as the server gets it: checked against
    /// what was sent, with the source translated onto the pool (the same
    /// pool address and port for every packet of a flow, and no two flows
    /// sharing one) and both checksums recomputed here; then turned into
    /// the server's answer, in the same buffer.
    fn answer(&mut self, mut buf: Mbuf, max_frame: usize, expected: &mut Vec<u8>, report: &mut VerifyReport) -> Option<Mbuf> {
        const IP: usize = ethernet::HEADER_LEN;
        let frame = buf.data();
        let Some(seq) = frame.get(IP..).and_then(read_seq).filter(|&s| s < report.packets) else {
            report.misrouted += 1;
            return None;
        };
        let (_, flow, len) = plan(seq, max_frame, self.traffic);
        expected.resize(len, 0);
        write_udp_frame(expected, self.ports[1].mac(), self.gateway_mac[1], &flow, seq);
        forward_in_place(&mut expected[IP..]);
        let pool: Ipv4Cidr = topology::POOL.parse().expect("pool prefix");
        let source: [u8; 4] = frame[IP + 12..IP + 16].try_into().ok()?;
        let port = u16::from_be_bytes([frame[IP + 20], frame[IP + 21]]);
        // Everything but the source address and port and the two checksums as sent.
        let same = |r: std::ops::Range<usize>| frame.get(r.clone()) == expected.get(r);
        let intact = frame.len() == len
            && same(0..IP + 10)
            && same(IP + 16..IP + 20)
            && same(IP + 22..IP + 26)
            && same(IP + 28..len)
            && checksum::checksum(&frame[IP..IP + 20]) == 0
            && {
                let udp = &frame[IP + 20..len];
                let pseudo = checksum::sum(0, &frame[IP + 12..IP + 20]) + 17 + udp.len() as u32;
                checksum::finish(checksum::sum(pseudo, udp)) == 0
            }
            && pool.contains(source.into());
        let mapping_kept = *self.mappings.entry(flow.src_port).or_insert((source, port)) == (source, port)
            && *self.mapped.entry((source, port)).or_insert(flow.src_port) == flow.src_port;
        if !intact || !mapping_kept {
            report.corrupted += 1;
            return None;
        }
        report.translated += 1;
        // The answer: addresses and ports swapped (checksums unchanged by that), a fresh TTL.
        let frame = buf.data_mut();
        for i in 0..4 {
            frame.swap(IP + 12 + i, IP + 16 + i);
        }
        frame.swap(IP + 20, IP + 22);
        frame.swap(IP + 21, IP + 23);
        frame[IP + 8] = 64;
        ipv4::set_checksum(&mut frame[IP..]);
        ethernet::write_header(frame, self.gateway_mac[1], self.ports[1].mac(), ethernet::ETHERTYPE_IPV4);
        Some(buf)
    }

    /// Sends `frame_len`-byte IPv4 frames from the outside port as fast as it
    /// can for `warmup + seconds`, and reports what reached the inside port
    /// during the last `seconds`.
    pub fn rate(&mut self, frame_len: usize, warmup: Duration, seconds: Duration) -> RateReport {
        let templates: Vec<Vec<u8>> = (0..FLOWS / 2)
            .map(|i| {
                let flow = topology::flow(Side::Outside, i * 2);
                let mut frame = vec![0u8; frame_len.max(flow.min_frame_len())];
                write_udp_frame(&mut frame, self.gateway_mac[0], self.ports[0].mac(), &flow, u64::from(i));
                frame
            })
            .collect();
        let start = Instant::now();
        let (mut offered, mut delivered, mut delivered_bytes) = (0u64, 0u64, 0u64);
        let mut measuring = false;
        let mut measure_start = start;
        let mut next = 0usize;
        while start.elapsed() < warmup + seconds {
            if !measuring && start.elapsed() >= warmup {
                measuring = true;
                measure_start = Instant::now();
                (offered, delivered, delivered_bytes) = (0, 0, 0);
            }
            let mut tx = Batch::new();
            while !tx.is_full() {
                let Some(mut buf) = self.ports[0].alloc() else { break };
                let template = &templates[next % templates.len()];
                next += 1;
                assert!(buf.set_len(template.len()), "mbuf room");
                buf.data_mut().copy_from_slice(template);
                tx.push(buf);
            }
            offered += self.ports[0].tx_burst(&mut tx) as u64;
            drop(tx); // what the link did not take is the offered load's loss
            for side in [Side::Outside, Side::Inside] {
                let mut rx = Batch::new();
                self.ports[side as usize].rx_burst(&mut rx);
                for buf in rx.drain(..) {
                    if let Some(buf) = self.control(side, buf) {
                        if side == Side::Inside {
                            delivered += 1;
                            delivered_bytes += buf.data().len() as u64;
                        }
                    }
                }
            }
        }
        let secs = measure_start.elapsed().as_secs_f64();
        RateReport {
            frame_len,
            seconds: secs,
            offered_pps: offered as f64 / secs,
            delivered_pps: delivered as f64 / secs,
            // On the wire each frame also carries 24 bytes: preamble, FCS, gap.
            delivered_gbps: (delivered_bytes + delivered * 24) as f64 * 8.0 / secs / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_sizes_sides_and_families() {
        let (mut min, mut max, mut sides, mut v6) = (usize::MAX, 0, [0; 2], 0);
        for seq in 0..100_000 {
            let (side, flow, len) = plan(seq, MAX_FRAME, Traffic::Esp);
            min = min.min(len);
            max = max.max(len);
            sides[side as usize] += 1;
            v6 += usize::from(flow.src.is_ipv6());
            assert!(len >= flow.min_frame_len());
        }
        assert_eq!((min, max), (MIN_FRAME, MAX_FRAME));
        assert!(sides[0] > 45_000 && sides[1] > 45_000);
        assert!(v6 > 45_000 && v6 < 55_000);
        // Behind NAT: all from the clinics, all IPv4.
        assert!((0..1000).all(|seq| {
            let (side, flow, _) = plan(seq, MAX_FRAME, Traffic::Nat);
            side == Side::Outside && flow.src.is_ipv4()
        }));
    }
}
