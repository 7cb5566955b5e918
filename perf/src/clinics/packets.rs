//! The clinics' inner packets (IPv4, as the clinics carry inside their
//! tunnels): which flow and size each numbered packet has, how it is
//! written, and how the server's answer to it is checked. Every data packet
//! carries its sequence number and send time, then bytes that depend on both
//! sequence and offset, so that a corrupted or misdelivered byte shows.

use sekisho_dataplane::craft::payload_byte;
use sekisho_dataplane::wire::{checksum, ipv4};
use std::net::Ipv4Addr;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Every data packet's payload starts with its sequence number and send time.
pub const STAMP_LEN: usize = 16;
const IP_LEN: usize = ipv4::MIN_HEADER_LEN;
const TCP_LEN: usize = 20;
/// A SYN's options: NOP, window scale (RFC 7323 §2.2).
const SYN_OPTIONS: [u8; 4] = [1, 3, 3, WINDOW_SCALE];
/// Windows are scaled by 2^7 (8 MiB), so that a flow sent flat out never waits for one.
pub const WINDOW_SCALE: u8 = 7;
/// Inner frames (an Ethernet header plus the inner packet, as on a LAN) are
/// counted like this, as DPDK's generators count them.
pub const ETHERNET: usize = 14;

/// The clinics' own LAN, the same at every clinic (the gateway's NAT tells them apart).
pub const CLINIC_LAN: [u8; 3] = [192, 168, 1];
/// The eligibility system's servers (the generator's [`crate::topology::SERVERS_V4`]).
pub const SERVERS: [u8; 3] = [192, 0, 2];
pub use crate::topology::SERVERS_V4 as SERVERS_CIDR;
pub const TCP_PORT: u16 = 443;
pub const UDP_PORT: u16 = 8443;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp = 0,
    Tcp = 1,
    Icmp = 2,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Udp, Protocol::Tcp, Protocol::Icmp];

    /// Flow `flow` of a clinic: UDP, TCP and ICMP in turn (a single flow is UDP).
    pub fn of_flow(flow: u16) -> Protocol {
        Protocol::ALL[usize::from(flow % 3)]
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => PROTO_UDP,
            Protocol::Tcp => PROTO_TCP,
            Protocol::Icmp => PROTO_ICMP,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Protocol::Tcp => TCP_LEN,
            Protocol::Udp | Protocol::Icmp => 8,
        }
    }

    /// The smallest data frame of this protocol (headers and the stamp).
    pub fn min_frame(self) -> usize {
        ETHERNET + IP_LEN + self.header_len() + STAMP_LEN
    }
}

/// Flows per clinic at most: each has its own port from 20,000 up.
pub const MAX_FLOWS: u16 = 45_000;

/// One flow of one clinic, as seen from the clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub clinic: u32,
    pub flow: u16,
}

impl FlowKey {
    pub fn protocol(self) -> Protocol {
        Protocol::of_flow(self.flow)
    }
    pub fn host(self) -> Ipv4Addr {
        let [a, b, c] = CLINIC_LAN;
        Ipv4Addr::new(a, b, c, 10 + (self.flow % 240) as u8)
    }
    pub fn server(self) -> Ipv4Addr {
        let [a, b, c] = SERVERS;
        Ipv4Addr::new(a, b, c, 10 + (self.flow % 8) as u8)
    }
    /// The clinic's port, or for ICMP its echo identifier (flows are at most [`MAX_FLOWS`]).
    pub fn port(self) -> u16 {
        20_000 + self.flow
    }
    pub fn server_port(self) -> u16 {
        match self.protocol() {
            Protocol::Tcp => TCP_PORT,
            Protocol::Udp => UDP_PORT,
            Protocol::Icmp => 0,
        }
    }
}

/// Simple IMIX: frame lengths and their weights (7:4:1).
pub const IMIX: [(usize, u64); 3] = [(64, 7), (576, 4), (1400, 1)];
const IMIX_WEIGHT: u64 = IMIX[0].1 + IMIX[1].1 + IMIX[2].1;

/// The IMIX frame length at `pick`, below the weights' total.
fn imix_frame(mut pick: u64) -> usize {
    for (len, weight) in IMIX {
        if pick < weight {
            return len;
        }
        pick -= weight;
    }
    unreachable!("{pick} past the weights")
}

/// The mean of `f` over the IMIX frame lengths, by weight.
pub fn imix_mean(f: impl Fn(usize) -> f64) -> f64 {
    IMIX.iter().map(|&(len, weight)| weight as f64 * f(len)).sum::<f64>() / IMIX_WEIGHT as f64
}

/// Frame sizes of the inner packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    Fixed(usize),
    /// Simple IMIX, 7:4:1 of 64, 576 and 1400-byte frames (the largest that
    /// still fits a 1500-byte outer MTU once encrypted).
    Imix,
}

impl std::str::FromStr for Sizes {
    type Err = String;
    fn from_str(s: &str) -> Result<Sizes, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Sizes::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (64..=MAX_FRAME).contains(&n) => Ok(Sizes::Fixed(n)),
            _ => Err(format!("{s}: a frame size from 64 to {MAX_FRAME} bytes, or imix")),
        }
    }
}

impl std::fmt::Display for Sizes {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Sizes::Fixed(n) => write!(f, "{n}"),
            Sizes::Imix => f.write_str("imix"),
        }
    }
}

/// The largest inner frame: its packet fits a 1500-byte outer MTU through an IPv6 tunnel once encrypted.
pub const MAX_FRAME: usize = crate::gen::MAX_TUNNELLED_FRAME;

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Which flow, and what size, each numbered data packet has: the first
/// packets go to each flow that is up (tunnel built and, for TCP, the
/// handshake done) in turn, so that every flow has its NAT session early;
/// then flows are drawn evenly at random. The clinic and the server each
/// know from a packet's number what it must be.
pub struct Plan {
    pub flows: Vec<FlowKey>,
    pub sizes: Sizes,
}

impl Plan {
    /// Packet `seq`: the index of its flow in `flows`, and its frame length.
    pub fn packet(&self, seq: u64) -> (usize, usize) {
        let h = splitmix(seq);
        let n = self.flows.len() as u64;
        let index = (if seq < n { seq } else { h % n }) as usize;
        let len = match self.sizes {
            Sizes::Fixed(n) => n,
            Sizes::Imix => imix_frame((h >> 32) % IMIX_WEIGHT),
        };
        (index, len.max(self.flows[index].protocol().min_frame()))
    }
}

/// The TCP fields of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

fn l4_checksum(ip: &mut [u8], at: usize) {
    let len = ip.len();
    ip[IP_LEN + at..IP_LEN + at + 2].copy_from_slice(&[0, 0]);
    let c = if ip[9] == PROTO_ICMP {
        checksum::checksum(&ip[IP_LEN..])
    } else {
        let pseudo = checksum::sum(0, &ip[12..20]) + u32::from(ip[9]) + (len - IP_LEN) as u32;
        checksum::finish(checksum::sum(pseudo, &ip[IP_LEN..]))
    };
    // In UDP a zero means "no checksum": a computed zero is sent as all ones (RFC 768).
    let c = if c == 0 && ip[9] == PROTO_UDP { 0xffff } else { c };
    ip[IP_LEN + at..IP_LEN + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Whether the transport checksum of `ip` (a whole IPv4 packet without options) is right.
pub fn l4_checksum_ok(ip: &[u8]) -> bool {
    let l4 = &ip[IP_LEN..];
    // Every packet here is sent with a UDP checksum; a zero means one was lost.
    if ip[9] == PROTO_UDP && l4[6..8] == [0, 0] {
        return false;
    }
    if ip[9] == PROTO_ICMP {
        return checksum::checksum(l4) == 0;
    }
    let pseudo = checksum::sum(0, &ip[12..20]) + u32::from(ip[9]) + l4.len() as u32;
    checksum::finish(checksum::sum(pseudo, l4)) == 0
}

/// Where the payload of a packet of `protocol` starts (TCP without options).
pub fn payload_at(protocol: u8) -> usize {
    IP_LEN + if protocol == PROTO_TCP { TCP_LEN } else { 8 }
}

fn write_payload(payload: &mut [u8], seq: u64, stamp: u64) {
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload[8..16].copy_from_slice(&stamp.to_be_bytes());
    for (i, b) in payload[STAMP_LEN..].iter_mut().enumerate() {
        *b = payload_byte(seq, i);
    }
}

/// Whether `payload` is that of packet `seq` (any send time); its send time.
pub fn read_payload(payload: &[u8], seq: u64) -> Option<u64> {
    if payload.len() < STAMP_LEN || payload[..8] != seq.to_be_bytes() {
        return None;
    }
    let intact = payload[STAMP_LEN..].iter().enumerate().all(|(i, &b)| b == payload_byte(seq, i));
    intact.then(|| u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes")))
}

/// The sequence number a data packet carries, if it is one.
pub fn data_seq(ip: &[u8]) -> Option<u64> {
    let at = payload_at(*ip.get(9)?);
    Some(u64::from_be_bytes(ip.get(at..at + 8)?.try_into().ok()?))
}

/// Writes the IPv4 header, the transport header `l4` (checksum left zero)
/// and leaves `ip[IP_LEN + l4.len()..]` to the payload.
fn write_headers(ip: &mut [u8], protocol: u8, ident: u16, src: Ipv4Addr, dst: Ipv4Addr) {
    let len = ip.len() as u16;
    ipv4::write_header(ip, len, protocol, 64, ident, src, dst);
}

fn write_tcp(l4: &mut [u8], src_port: u16, dst_port: u16, segment: Segment, options: &[u8]) {
    l4[0..2].copy_from_slice(&src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst_port.to_be_bytes());
    l4[4..8].copy_from_slice(&segment.seq.to_be_bytes());
    l4[8..12].copy_from_slice(&segment.ack.to_be_bytes());
    l4[12] = (((TCP_LEN + options.len()) / 4) as u8) << 4;
    l4[13] = segment.flags;
    l4[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    l4[16..20].fill(0);
    l4[TCP_LEN..TCP_LEN + options.len()].copy_from_slice(options);
}

/// Writes data packet `seq` of `key` into `ip` (exactly `ip.len()` bytes,
/// at least the protocol's minimum less the Ethernet header): a UDP
/// datagram, an ICMP echo request, or a TCP segment with `tcp`'s numbers.
pub fn write_request(ip: &mut [u8], key: FlowKey, seq: u64, stamp: u64, tcp: Segment) {
    let protocol = key.protocol();
    let at = payload_at(protocol.number());
    write_payload(&mut ip[at..], seq, stamp);
    write_headers(ip, protocol.number(), seq as u16, key.host(), key.server());
    let l4_len = (ip.len() - IP_LEN) as u16;
    let l4 = &mut ip[IP_LEN..];
    match protocol {
        Protocol::Udp => {
            l4[0..2].copy_from_slice(&key.port().to_be_bytes());
            l4[2..4].copy_from_slice(&UDP_PORT.to_be_bytes());
            l4[4..6].copy_from_slice(&l4_len.to_be_bytes());
            l4_checksum(ip, 6);
        }
        Protocol::Icmp => {
            l4[0] = ICMP_ECHO_REQUEST;
            l4[1] = 0;
            l4[4..6].copy_from_slice(&key.port().to_be_bytes());
            l4[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
            l4_checksum(ip, 2);
        }
        Protocol::Tcp => {
            write_tcp(l4, key.port(), TCP_PORT, tcp, &[]);
            l4_checksum(ip, 16);
        }
    }
}

/// Writes a TCP segment without data of `key` from the clinic (SYN with
/// window scaling, ACK or FIN); returns its length.
pub fn write_clinic_segment(ip: &mut [u8], key: FlowKey, segment: Segment) -> usize {
    let options: &[u8] = if segment.flags & TCP_SYN != 0 { &SYN_OPTIONS } else { &[] };
    let len = IP_LEN + TCP_LEN + options.len();
    let ip = &mut ip[..len];
    write_headers(ip, PROTO_TCP, 0, key.host(), key.server());
    write_tcp(&mut ip[IP_LEN..], key.port(), TCP_PORT, segment, options);
    l4_checksum(ip, 16);
    len
}

/// The TCP segment in `ip`: its numbers and how much data it carries.
pub fn tcp_segment(ip: &[u8]) -> Option<(Segment, usize)> {
    let l4 = ip.get(IP_LEN..)?;
    if ip[9] != PROTO_TCP || l4.len() < TCP_LEN {
        return None;
    }
    let data_offset = usize::from(l4[12] >> 4) * 4;
    let data = l4.len().checked_sub(data_offset)?;
    let field = |r: std::ops::Range<usize>| u32::from_be_bytes(l4[r].try_into().expect("4 bytes"));
    Some((Segment { seq: field(4..8), ack: field(8..12), flags: l4[13] }, data))
}

/// The source and destination ports (for ICMP echo, the identifier twice).
pub fn ports(ip: &[u8]) -> Option<(u16, u16)> {
    let l4 = ip.get(IP_LEN..IP_LEN + 8)?;
    let word = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    Some(if ip[9] == PROTO_ICMP { (word(4), word(4)) } else { (word(0), word(2)) })
}

/// A well-formed IPv4 packet without options of exactly `ip.len()` bytes
/// whose header and transport checksums are right.
pub fn well_formed(ip: &[u8]) -> bool {
    ip.len() >= IP_LEN + 8
        && ip[0] == 0x45
        && usize::from(u16::from_be_bytes([ip[2], ip[3]])) == ip.len()
        && ip[6] & 0x3f == 0
        && ip[7] == 0
        && checksum::checksum(&ip[..IP_LEN]) == 0
        && l4_checksum_ok(ip)
}

pub fn src(ip: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])
}

pub fn dst(ip: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])
}

/// Turns a packet into its answer in place: addresses and ports swapped
/// (an echo request becomes a reply), a fresh TTL, and `tcp`'s numbers;
/// checksums recomputed.
pub fn make_answer(ip: &mut [u8], tcp: Option<Segment>) {
    for i in 0..4 {
        ip.swap(12 + i, 16 + i);
    }
    ip[8] = 64;
    ipv4::set_checksum(ip);
    if ip[9] == PROTO_ICMP {
        ip[IP_LEN] = ICMP_ECHO_REPLY;
        return l4_checksum(ip, 2);
    }
    let l4 = &mut ip[IP_LEN..];
    l4.swap(0, 2);
    l4.swap(1, 3);
    match tcp {
        Some(segment) => {
            l4[4..8].copy_from_slice(&segment.seq.to_be_bytes());
            l4[8..12].copy_from_slice(&segment.ack.to_be_bytes());
            l4[13] = segment.flags;
            l4_checksum(ip, 16);
        }
        None => l4_checksum(ip, 6),
    }
}

/// What the gateway's NAT does to a clinic packet on its way in: the
/// source address and port (or echo identifier) onto the pool, the TTL one
/// less, checksums recomputed.
pub fn translate(ip: &mut [u8], to: Ipv4Addr, port: u16) {
    ip[12..16].copy_from_slice(&to.octets());
    ip[8] -= 1;
    ipv4::set_checksum(ip);
    match ip[9] {
        PROTO_ICMP => {
            ip[IP_LEN + 4..IP_LEN + 6].copy_from_slice(&port.to_be_bytes());
            l4_checksum(ip, 2);
        }
        PROTO_TCP => {
            ip[IP_LEN..IP_LEN + 2].copy_from_slice(&port.to_be_bytes());
            l4_checksum(ip, 16);
        }
        _ => {
            ip[IP_LEN..IP_LEN + 2].copy_from_slice(&port.to_be_bytes());
            l4_checksum(ip, 6);
        }
    }
}

/// What is wrong with a well-formed answer that came back to a clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A sequence number never sent, or a packet of another flow.
    Misrouted,
    /// The right flow, but its bytes differ from what was sent.
    Corrupted,
}

/// Checks the server's answer to data packet `seq` of `key`, of `len`
/// bytes (frame), as it reaches the clinic; its send time. `ip` has
/// passed [`well_formed`] (headers and checksums) already.
pub fn check_answer(ip: &[u8], key: FlowKey, seq: u64, frame_len: usize) -> Result<u64, Fault> {
    let protocol = key.protocol();
    let expected_ports = match protocol {
        Protocol::Icmp => (key.port(), key.port()),
        _ => (key.server_port(), key.port()),
    };
    if ip[9] != protocol.number() || src(ip) != key.server() || dst(ip) != key.host() || ports(ip) != Some(expected_ports) {
        return Err(Fault::Misrouted);
    }
    let shape_ok = ip.len() + ETHERNET == frame_len
        && match protocol {
            Protocol::Icmp => ip[IP_LEN] == ICMP_ECHO_REPLY && ip[IP_LEN + 6..IP_LEN + 8] == (seq as u16).to_be_bytes(),
            Protocol::Tcp => ip[IP_LEN + 12] >> 4 == 5,
            Protocol::Udp => true,
        };
    if !shape_ok {
        return Err(Fault::Corrupted);
    }
    read_payload(&ip[payload_at(protocol.number())..], seq).ok_or(Fault::Corrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(flow: u16) -> FlowKey {
        FlowKey { clinic: 3, flow }
    }

    #[test]
    fn requests_are_well_formed_and_answers_check() {
        for flow in 0..3 {
            for len in [64, 70, 576, MAX_FRAME] {
                let len = len.max(key(flow).protocol().min_frame());
                let mut ip = vec![0u8; len - ETHERNET];
                let segment = Segment { seq: 1000, ack: 2000, flags: TCP_ACK | TCP_PSH };
                write_request(&mut ip, key(flow), 77, 123_456, segment);
                assert!(well_formed(&ip), "flow {flow} len {len}");
                assert_eq!(data_seq(&ip), Some(77));
                assert_eq!(read_payload(&ip[payload_at(ip[9])..], 77), Some(123_456));
                let tcp = (key(flow).protocol() == Protocol::Tcp).then_some(Segment { seq: 5, ack: 1000 + 10, flags: TCP_ACK });
                make_answer(&mut ip, tcp);
                assert_eq!(check_answer(&ip, key(flow), 77, len), Ok(123_456));
                assert_eq!(check_answer(&ip, key(flow + 3), 77, len), Err(Fault::Misrouted), "another flow's host or port");
                assert_eq!(check_answer(&ip, key(flow), 78, len), Err(Fault::Corrupted), "another packet");
                let last = ip.len() - 1;
                ip[last] ^= 1;
                assert!(!well_formed(&ip), "a flipped bit");
            }
        }
    }

    #[test]
    fn a_udp_checksum_of_zero_is_sent_as_all_ones() {
        let mut ip = [0u8; 50];
        let found = (0..2_000_000).find(|&seq| {
            write_request(&mut ip, key(0), seq, 0, Segment { seq: 0, ack: 0, flags: 0 });
            ip[26..28] == [0xff, 0xff]
        });
        assert!(found.is_some() && well_formed(&ip));
        ip[26..28].fill(0);
        assert!(!well_formed(&ip), "a lost checksum");
    }

    #[test]
    fn segments_and_plans() {
        let mut ip = [0u8; 64];
        let len = write_clinic_segment(&mut ip, key(1), Segment { seq: 9, ack: 0, flags: TCP_SYN });
        assert!(well_formed(&ip[..len]));
        assert_eq!(tcp_segment(&ip[..len]), Some((Segment { seq: 9, ack: 0, flags: TCP_SYN }, 0)));
        let plan = Plan { flows: (0..30).map(key).collect(), sizes: Sizes::Imix };
        assert!((0..30).all(|seq| plan.packet(seq).0 == seq as usize), "each flow first, in turn");
        let mut counts = [0usize; 3];
        for seq in 0..12_000 {
            let (index, len) = plan.packet(seq);
            assert!(len >= plan.flows[index].protocol().min_frame());
            counts[usize::from(len >= 576) + usize::from(len >= 1400)] += 1;
        }
        assert!(counts[0] > 6500 && counts[1] > 3600 && counts[2] > 800, "IMIX 7:4:1, {counts:?}");
        assert_eq!("imix".parse(), Ok(Sizes::Imix));
        assert!("40".parse::<Sizes>().is_err());
    }
}
