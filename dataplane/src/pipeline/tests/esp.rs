//! The ESP stages over in-memory ports: a clinic (played here with the same
//! ESP code, keys mirrored) talks to a server on the inside through the
//! gateway. Independent checks of the bytes are in tests/scapy_interop.

use super::*;
use crate::craft::forwarded;
use crate::esp::decrypt;
use crate::esp::sa::{InboundSa, Lifetime, OutboundSa, Selectors, Tunnel, UdpEncap};
use crate::esp::tunnel::{self, OuterFields};
use crate::esp::aead::GcmKey;
use crate::sad::SpiParts;
use crate::tunnels::{self, TunnelConfig};

pub(super) const KEY_IN: &str = "0102030405060708090a0b0c0d0e0f10a1a2a3a4";
pub(super) const KEY_OUT: &str = "1112131415161718191a1b1c1d1e1f20b1b2b3b4";
pub(super) const PEER_SPI: u32 = 0xc0ffee01;
const SERVER: &str = "10.0.0.7";

fn hex(s: &str) -> Vec<u8> {
    tunnels::decode_hex(s).unwrap()
}

/// A tunnel's config: the clinic at `remote` with subnet 203.0.113.0/24.
fn tunnel_config(remote: &str, udp_encap: bool, esn: bool, extra: &str) -> TunnelConfig {
    toml::from_str(&format!(
        r#"name = "clinic"
remote = "{remote}"
udp_encap = {udp_encap}
ipv4 = ["203.0.113.0/24"]
{extra}
[[inbound]]
key = "{KEY_IN}"
esn = {esn}
replay_window = 128
[outbound]
spi = {PEER_SPI}
key = "{KEY_OUT}"
esn = {esn}
"#
    ))
    .unwrap()
}

/// The clinic's side of the tunnel: its SAs are the gateway's, mirrored.
pub(super) struct Clinic {
    tunnel: Tunnel,
    out: OutboundSa,
    inb: InboundSa,
}

impl Clinic {
    pub(super) fn new(addr: &str, gateway: &str, gateway_spi: u32, udp: bool, esn: bool) -> Clinic {
        let tunnel = Tunnel {
            local: addr.parse().unwrap(),
            remote: gateway.parse().unwrap(),
            udp: udp.then_some(UdpEncap { local_port: 4500, remote_port: 4500 }),
            copy_dscp: false,
            tenant: None,
        };
        let out = OutboundSa::new(gateway_spi, GcmKey::new(&hex(KEY_IN)).unwrap(), esn, Selectors::default(), 0, Lifetime::default());
        let inb = InboundSa::new(PEER_SPI, GcmKey::new(&hex(KEY_OUT)).unwrap(), esn, 64, Selectors::default(), 0, Lifetime::default());
        Clinic { tunnel, out, inb }
    }

    /// An ESP frame to the gateway carrying `inner` (an IP packet).
    pub(super) fn send(&mut self, inner: &[u8]) -> Vec<u8> {
        let prefix = tunnel::prefix_len(&self.tunnel);
        let total = tunnel::outer_len(&self.tunnel, inner.len());
        let mut frame = vec![0u8; 14 + total];
        frame[14 + prefix..14 + prefix + inner.len()].copy_from_slice(inner);
        tunnel::encapsulate(&mut frame[14..], &self.tunnel, &mut self.out, inner.len(), OuterFields { ttl: 64, ident: 1 }).unwrap();
        ethernet::write_header(&mut frame, OUT_MAC, PEER_OUT, tunnel::outer_ethertype(&self.tunnel));
        frame
    }

    /// The inner packet of an ESP frame from the gateway, checking the outer headers.
    pub(super) fn receive(&mut self, frame: &[u8]) -> Vec<u8> {
        let eth = ethernet::Frame::new_checked(frame).unwrap();
        assert_eq!((eth.dst(), eth.src()), (PEER_OUT, OUT_MAC));
        let (l4, src, dst, protocol) = match self.tunnel.remote {
            IpAddr::V4(_) => {
                let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
                assert_eq!(ip.total_len(), frame.len() - 14);
                (14 + ip.header_len(), IpAddr::V4(ip.src()), IpAddr::V4(ip.dst()), ip.protocol())
            }
            IpAddr::V6(_) => {
                let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
                assert_eq!(ip.payload_len(), frame.len() - 54);
                (54, IpAddr::V6(ip.src()), IpAddr::V6(ip.dst()), ip.next_header())
            }
        };
        assert_eq!((src, dst), (self.tunnel.remote, self.tunnel.local));
        let esp_start = if let Some(udp) = self.tunnel.udp {
            assert_eq!(protocol, 17);
            assert_eq!(crate::wire::read_u16(frame, l4 + 2), udp.local_port);
            l4 + 8
        } else {
            assert_eq!(protocol, 50);
            l4
        };
        let mut esp = frame[esp_start..].to_vec();
        let opened = decrypt::open(&mut self.inb, &mut esp).expect("the gateway's ESP opens");
        esp[opened.offset..opened.offset + opened.len].to_vec()
    }
}

/// A gateway worker with one static tunnel and the neighbours resolved.
fn gateway(config: TunnelConfig) -> (Worker<MemoryPort>, u32) {
    let addrs: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap(), "2001:db8:a::1".parse().unwrap()];
    let tables = tunnels::build(&[config], 1, &addrs, None).unwrap();
    let spi = tables.inbound_spis[0].1[0];
    let statics = vec![
        (Side::Outside, "198.51.100.254".parse().unwrap(), PEER_OUT),
        (Side::Outside, "2001:db8:a::fe".parse().unwrap(), PEER_OUT),
        (Side::Outside, "198.51.100.20".parse().unwrap(), PEER_OUT),
        (Side::Outside, "2001:db8:a::20".parse().unwrap(), PEER_OUT),
        (Side::Inside, SERVER.parse().unwrap(), PEER_IN),
    ];
    let table = Arc::new(NeighbourTable::new(statics));
    let settings = TunnelSettings { mss_clamp: Some(1300), ..TunnelSettings::default() };
    let sad = tables.cores.into_iter().next().unwrap();
    let forwarder = Forwarder::new(interfaces(), [OUT_MAC, IN_MAC], table).with_tunnels(sad, Arc::new(tables.routes), settings);
    (Worker::new(MemoryPort::new(OUT_MAC), MemoryPort::new(IN_MAC), forwarder), spi)
}

/// An inner IPv4/UDP packet (no Ethernet header) of `len` bytes.
fn inner_udp(src: &str, dst: &str, len: usize, seq: u64) -> Vec<u8> {
    let flow = Flow { src: src.parse().unwrap(), dst: dst.parse().unwrap(), src_port: 4000, dst_port: 53 };
    let mut frame = vec![0u8; 14 + len];
    write_udp_frame(&mut frame, MacAddr::ZERO, MacAddr::ZERO, &flow, seq);
    frame[14..].to_vec()
}

fn round_trip(remote: &str, gateway_addr: &str, udp: bool, esn: bool) {
    let (mut w, spi) = gateway(tunnel_config(remote, udp, esn, ""));
    let mut clinic = Clinic::new(remote, gateway_addr, spi, udp, esn);
    for (i, len) in [36usize, 37, 100, 1000, 1400].into_iter().enumerate() {
        // Clinic to server: decrypted, outer headers gone, Ethernet for the server.
        let inner = inner_udp("203.0.113.5", SERVER, len, i as u64);
        let [out, inside] = run(&mut w, Side::Outside, clinic.send(&inner), 1);
        assert!(out.is_empty(), "{remote} len {len}");
        assert_eq!(inside.len(), 1, "{remote} len {len}: {:?}", w.forwarder.counters.to_json());
        let eth = ethernet::Frame::new_checked(&inside[0][..]).unwrap();
        assert_eq!((eth.dst(), eth.src(), eth.ethertype()), (PEER_IN, IN_MAC, ethernet::ETHERTYPE_IPV4));
        assert_eq!(eth.payload(), &forwarded(&inner)[..]);
        // Server to clinic: into the tunnel.
        let reply = inner_udp(SERVER, "203.0.113.5", len, 100 + i as u64);
        let mut frame = vec![0u8; 14];
        ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV4);
        frame.extend_from_slice(&reply);
        let [out, inside] = run(&mut w, Side::Inside, frame, 2);
        assert!(inside.is_empty());
        assert_eq!(out.len(), 1, "{remote} len {len}: {:?}", w.forwarder.counters.to_json());
        assert_eq!(clinic.receive(&out[0]), forwarded(&reply));
    }
    let c = &w.forwarder.counters;
    assert_eq!((c.get(Counter::EspDecrypted), c.get(Counter::EspEncrypted), c.total_dropped()), (5, 5, 0));
}

#[test]
fn ipv6_outer_raw_esp_both_ways() {
    round_trip("2001:db8:a::20", "2001:db8:a::1", false, false);
}

#[test]
fn ipv4_outer_raw_esp_both_ways_with_esn() {
    round_trip("198.51.100.20", "198.51.100.1", false, true);
}

#[test]
fn udp_encapsulated_both_ways_over_both_families() {
    round_trip("198.51.100.20", "198.51.100.1", true, false);
    round_trip("2001:db8:a::20", "2001:db8:a::1", true, true);
}

/// Rewrites the outer IPv4 source and UDP source port, as a NAT does.
fn nat(frame: &mut [u8], src: [u8; 4], port: u16) {
    frame[14 + 12..14 + 16].copy_from_slice(&src);
    ipv4::set_checksum(&mut frame[14..]);
    frame[34..36].copy_from_slice(&port.to_be_bytes());
}

#[test]
fn nat_traversal_follows_the_peer_only_on_authentic_packets() {
    let (mut w, spi) = gateway(tunnel_config("198.51.100.20", true, false, ""));
    let mut clinic = Clinic::new("198.51.100.20", "198.51.100.1", spi, true, false);
    // A forged packet from elsewhere: dropped, the tunnel stays.
    let mut forged = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 1));
    nat(&mut forged, [198, 51, 100, 66], 6000);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(run(&mut w, Side::Outside, forged, 1), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::BadIcv), 1);
    // The peer's NAT moves it to a new port: learned from an authentic packet.
    let mut moved = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 2));
    nat(&mut moved, [198, 51, 100, 20], 31000);
    assert_eq!(run(&mut w, Side::Outside, moved, 2)[1].len(), 1);
    assert_eq!(w.forwarder.counters.get(Counter::NatTPeerMoved), 1);
    let mut frame = vec![0u8; 14];
    ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV4);
    frame.extend_from_slice(&inner_udp(SERVER, "203.0.113.5", 100, 3));
    let [out, _] = run(&mut w, Side::Inside, frame, 3);
    assert_eq!(crate::wire::read_u16(&out[0], 36), 31000, "replies go to the learned port");
}

#[test]
fn inbound_policy_and_every_refusal_is_counted_by_reason() {
    let (mut w, spi) = gateway(tunnel_config("2001:db8:a::20", false, false, ""));
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    let expect = |w: &mut Worker<MemoryPort>, frame: Vec<u8>, reason: DropReason| {
        let before = w.forwarder.counters.dropped(reason);
        assert_eq!(run(w, Side::Outside, frame, 1), NOTHING, "{reason:?}");
        assert_eq!(w.forwarder.counters.dropped(reason), before + 1, "{reason:?}");
    };
    // A clinic may speak only from its own subnets (RFC 4301 §5.2).
    expect(&mut w, clinic.send(&inner_udp("192.168.1.5", SERVER, 100, 1)), DropReason::SelectorMismatch);
    // Replay of an accepted packet.
    let good = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 2));
    assert_eq!(run(&mut w, Side::Outside, good.clone(), 1)[1].len(), 1);
    expect(&mut w, good.clone(), DropReason::Replayed);
    // Too old: beyond the 128-packet window.
    let old = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 3));
    clinic.out.seq += 200;
    assert_eq!(run(&mut w, Side::Outside, clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 4)), 1)[1].len(), 1);
    expect(&mut w, old, DropReason::ReplayTooOld);
    // Tampered ICV.
    let mut tampered = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 5));
    let last = tampered.len() - 1;
    tampered[last] ^= 0x40;
    expect(&mut w, tampered, DropReason::BadIcv);
    // Unknown SPI, stale generation, another core's SPI.
    let parts = SpiParts::decode(spi);
    for (spi, reason) in [
        (SpiParts { slot: parts.slot + 1, ..parts }.encode(), DropReason::UnknownSpi),
        (SpiParts { generation: parts.generation + 1, ..parts }.encode(), DropReason::StaleSpi),
        // A single worker has no one to hand to: a core that does not exist is no SPI of ours.
        (SpiParts { core: 3, ..parts }.encode(), DropReason::UnknownSpi),
    ] {
        let mut frame = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 6));
        frame[54..58].copy_from_slice(&spi.to_be_bytes());
        expect(&mut w, frame, reason);
    }
    // Truncated ESP (shorter than header, IV, trailer and ICV).
    let mut short = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 7));
    short.truncate(54 + 30);
    short[18..20].copy_from_slice(&30u16.to_be_bytes());
    expect(&mut w, short, DropReason::EspTruncated);
    // Plain traffic from the outside never reaches the inside.
    let plain = udp("2001:db8:a::20", "2001:db8:b::7", 100, OUT_MAC, PEER_OUT);
    expect(&mut w, plain, DropReason::Unprotected);
    // From the inside, to a destination no tunnel covers.
    let mut frame = vec![0u8; 14];
    ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV4);
    frame.extend_from_slice(&inner_udp(SERVER, "192.0.2.99", 100, 8));
    assert_eq!(run(&mut w, Side::Inside, frame, 1), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::NoTunnel), 1);
    let sa = w.forwarder.sad().inbound_sas().next().unwrap();
    assert_eq!((sa.counters.drops.replayed, sa.counters.drops.too_old, sa.counters.drops.bad_icv), (1, 1, 1));
    assert_eq!(sa.counters.drops.selector_mismatch, 1);
}

/// A UDP frame to the gateway's outside address on `port` with `payload`.
fn udp_to_gateway(port: u16, payload: &[u8]) -> Vec<u8> {
    let flow = Flow { src: "198.51.100.20".parse().unwrap(), dst: "198.51.100.1".parse().unwrap(), src_port: 4500, dst_port: port };
    let mut frame = vec![0u8; 14 + 20 + 8 + payload.len().max(8)];
    write_udp_frame(&mut frame, OUT_MAC, PEER_OUT, &flow, 0);
    frame.truncate(14 + 20 + 8 + payload.len());
    frame[34 + 4..34 + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame[16..18].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    ipv4::set_checksum(&mut frame[14..]);
    frame[42..].copy_from_slice(payload);
    frame
}

#[test]
fn keepalives_and_ike_are_told_apart_from_esp() {
    let (mut w, _) = gateway(tunnel_config("198.51.100.20", true, false, ""));
    for (frame, reason) in [
        (udp_to_gateway(4500, &[0xff]), DropReason::NatKeepalive),
        (udp_to_gateway(4500, &[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), DropReason::IkeToControl),
        (udp_to_gateway(500, &[1, 2, 3, 4, 5, 6, 7, 8]), DropReason::IkeToControl),
        (udp_to_gateway(4500, &[1, 2]), DropReason::EspTruncated),
        (udp_to_gateway(53, &[1, 2, 3, 4]), DropReason::ToGateway),
    ] {
        let before = w.forwarder.counters.dropped(reason);
        assert_eq!(run(&mut w, Side::Outside, frame, 1), NOTHING);
        assert_eq!(w.forwarder.counters.dropped(reason), before + 1, "{reason:?}");
    }
}

#[test]
fn ike_is_passed_to_the_control_process_through_its_ring() {
    use crate::shm::messages::ToControl;
    use crate::shm::ring::{self, Consumer, Producer};
    let dir = std::env::temp_dir().join(format!("sekisho-punt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("punt-0.ring");
    ring::create(&path, 2048, 2).unwrap();
    let (w, _) = gateway(tunnel_config("198.51.100.20", true, false, ""));
    let mut w = w.with_punt(Producer::open(&path).unwrap());
    let mut control = Consumer::open(&path).unwrap();
    let ike = [udp_to_gateway(500, &[1, 2, 3, 4, 5, 6, 7, 8]), udp_to_gateway(4500, &[0, 0, 0, 0, 9, 9, 9, 9])];
    for frame in &ike {
        assert_eq!(run(&mut w, Side::Outside, frame.clone(), 1), NOTHING);
    }
    let mut out = [0u8; 2048];
    for frame in &ike {
        let len = control.pop(&mut out).unwrap().expect("a message");
        assert_eq!(ToControl::decode(&out[..len]), Ok(ToControl::Punted { worker: 0, side: Side::Outside, frame }));
    }
    // The control process is not reading: the ring fills, and the rest is counted.
    for _ in 0..3 {
        run(&mut w, Side::Outside, ike[0].clone(), 1);
    }
    let c = &w.forwarder.counters;
    assert_eq!((c.get(Counter::IkePunted), c.dropped(DropReason::PuntFull)), (4, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A frame from the server (behind the inside port) carrying `inner`.
fn from_server(inner: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 14];
    ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV4);
    frame.extend_from_slice(inner);
    frame
}

#[test]
fn too_big_with_df_gets_icmp_and_without_df_is_fragmented() {
    let (mut w, spi) = gateway(tunnel_config("2001:db8:a::20", false, false, ""));
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    // IPv6 outer, raw ESP: 40 + 8 + 8 + 16 + trailer; 1500 leaves 1426 for the inner packet.
    let fits = inner_udp(SERVER, "203.0.113.5", 1426, 1);
    let [out, _] = run(&mut w, Side::Inside, from_server(&fits), 1);
    assert_eq!(out[0].len(), 14 + 1500);
    // One byte more, with DF: ICMP "fragmentation needed" back to the server, quoting the packet.
    let big = inner_udp(SERVER, "203.0.113.5", 1427, 2);
    let [out, inside] = run(&mut w, Side::Inside, from_server(&big), 2);
    assert!(out.is_empty());
    let eth = ethernet::Frame::new_checked(&inside[0][..]).unwrap();
    assert_eq!((eth.dst(), eth.src()), (PEER_IN, IN_MAC));
    let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src(), ip.dst(), ip.protocol()), ("10.0.0.1".parse().unwrap(), SERVER.parse().unwrap(), 1));
    assert_eq!(ip.total_len(), 576);
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1], crate::wire::read_u16(icmp, 6)), (3, 4, 1426));
    assert_eq!(crate::wire::checksum::checksum(icmp), 0);
    assert_eq!(&icmp[8..8 + 28], &forwarded(&big)[..28], "quotes the packet (as forwarded) and more");
    assert_eq!(w.forwarder.counters.get(Counter::IcmpTooBigSent), 1);
    // Without DF: split before encryption, both fragments through the tunnel.
    let mut no_df = inner_udp(SERVER, "203.0.113.5", 2000, 3);
    no_df[6] = 0;
    ipv4::set_checksum(&mut no_df);
    let [out, _] = run(&mut w, Side::Inside, from_server(&no_df), 3);
    assert_eq!(out.len(), 2, "2000 bytes take two fragments of at most 1426");
    let fragments: Vec<Vec<u8>> = out.iter().map(|f| clinic.receive(f)).collect();
    let mut payload = Vec::new();
    for (i, f) in fragments.iter().enumerate() {
        let ip = ipv4::Packet::new_checked(&f[..]).unwrap();
        assert!(ip.total_len() <= 1426);
        let flags = crate::wire::read_u16(f, 6);
        assert_eq!(usize::from(flags & 0x1fff) * 8, payload.len(), "fragment {i} offset");
        assert_eq!(flags & 0x2000 != 0, i == 0, "more-fragments on all but the last");
        payload.extend_from_slice(ip.payload());
    }
    assert_eq!(&payload[..], &no_df[20..], "the fragments reassemble to the original");
    assert_eq!(w.forwarder.counters.get(Counter::InnerFragmented), 1);
}

#[test]
fn mss_clamped_on_syns_through_the_tunnel() {
    let (mut w, spi) = gateway(tunnel_config("2001:db8:a::20", false, false, ""));
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    // A SYN from the clinic announcing MSS 1460 reaches the server with 1300.
    let mut syn = inner_udp("203.0.113.5", SERVER, 48, 2);
    syn[9] = 6;
    ipv4::set_checksum(&mut syn);
    syn[20 + 12] = 7 << 4;
    syn[20 + 13] = 0x02;
    syn[20 + 20..20 + 28].copy_from_slice(&[1, 1, 2, 4, 0x05, 0xb4, 0, 0]);
    let [_, inside] = run(&mut w, Side::Outside, clinic.send(&syn), 2);
    assert_eq!(crate::wire::read_u16(&inside[0], 14 + 20 + 24), 1300);
    assert_eq!(w.forwarder.counters.get(Counter::MssClamped), 1);
}

#[test]
fn both_inbound_sas_of_a_rekey_are_accepted() {
    let mut config = tunnel_config("2001:db8:a::20", false, false, "");
    let mut second = config.inbound[0].clone();
    second.key = "2122232425262728292a2b2c2d2e2f30c1c2c3c4".into();
    config.inbound.push(second);
    let addrs: Vec<IpAddr> = vec!["2001:db8:a::1".parse().unwrap()];
    let tables = tunnels::build(&[config.clone()], 1, &addrs, None).unwrap();
    let spis = tables.inbound_spis[0].1.clone();
    assert_eq!(spis.len(), 2);
    let (mut w, _) = gateway(config);
    let mut old = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spis[0], false, false);
    let mut new = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spis[1], false, false);
    new.out.key = GcmKey::new(&hex("2122232425262728292a2b2c2d2e2f30c1c2c3c4")).unwrap();
    for i in 0..4 {
        let clinic = if i % 2 == 0 { &mut old } else { &mut new };
        let [_, inside] = run(&mut w, Side::Outside, clinic.send(&inner_udp("203.0.113.5", SERVER, 100, i)), 1);
        assert_eq!(inside.len(), 1, "packet {i}");
    }
}

#[test]
fn soft_and_hard_lifetimes_are_counted_and_hard_stops_the_sa() {
    let config = tunnel_config("2001:db8:a::20", false, false, "[lifetime]\nsoft_packets = 2\nhard_packets = 3\n");
    let (mut w, spi) = gateway(config);
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    let delivered: usize = (0..5).map(|i| run(&mut w, Side::Outside, clinic.send(&inner_udp("203.0.113.5", SERVER, 100, i)), 1)[1].len()).sum();
    assert_eq!(delivered, 3);
    let c = &w.forwarder.counters;
    assert_eq!((c.get(Counter::SaSoftExpired), c.get(Counter::SaHardExpired), c.dropped(DropReason::SaExpired)), (1, 1, 2));
}

#[test]
fn inbound_sas_report_what_they_received_once_per_round() {
    let (mut w, spi) = gateway(tunnel_config("2001:db8:a::20", false, false, ""));
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    let reported = |w: &mut Worker<MemoryPort>, at_ms| {
        w.forwarder.report_activity(at_ms);
        w.forwarder.take_events().collect::<Vec<_>>()
    };
    assert!(reported(&mut w, 20_000).is_empty(), "nothing received yet");
    for i in 0..3 {
        run(&mut w, Side::Outside, clinic.send(&inner_udp("203.0.113.5", SERVER, 100, i)), 1);
    }
    let live = |packets| crate::pipeline::Event::Sa(crate::esp::sa::SaEvent { spi, direction: crate::esp::sa::Direction::Inbound, expiry: crate::esp::sa::Expiry::Live, packets, bytes: 3 * 100 });
    assert!(reported(&mut w, 25_000).is_empty(), "one round per interval");
    assert_eq!(reported(&mut w, 30_000), vec![live(3)]);
}

#[test]
fn packets_for_another_cores_sa_are_handed_to_it_both_ways() {
    use crate::worker::Handoff;
    let config = tunnel_config("2001:db8:a::20", false, false, "worker = 1\n");
    let addrs: Vec<IpAddr> = vec!["2001:db8:a::1".parse().unwrap()];
    let tables = tunnels::build(&[config], 2, &addrs, None).unwrap();
    let spi = tables.inbound_spis[0].1[0];
    assert_eq!(SpiParts::decode(spi).core, 1);
    let routes = Arc::new(tables.routes);
    let handoff = Arc::new(Handoff::new(2, 64));
    let statics = vec![
        (Side::Outside, "2001:db8:a::20".parse().unwrap(), PEER_OUT),
        (Side::Inside, SERVER.parse().unwrap(), PEER_IN),
    ];
    let table = Arc::new(NeighbourTable::new(statics));
    let mut workers: Vec<Worker<MemoryPort>> = tables
        .cores
        .into_iter()
        .enumerate()
        .map(|(core, sad)| {
            let f = Forwarder::new(interfaces(), [OUT_MAC, IN_MAC], table.clone()).with_tunnels(sad, routes.clone(), TunnelSettings::default());
            Worker::new(MemoryPort::new(OUT_MAC), MemoryPort::new(IN_MAC), f).with_handoff(core, handoff.clone())
        })
        .collect();
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    // Core 0 receives the clinic's packet (the NIC could not hash on the SPI).
    let inner = inner_udp("203.0.113.5", SERVER, 100, 1);
    workers[0].ports[0].rx.push_back(clinic.send(&inner));
    workers[0].poll(1);
    assert!(workers[0].ports[1].tx.is_empty());
    assert_eq!(workers[0].forwarder.counters.get(Counter::HandoffsSent), 1);
    workers[1].poll(1);
    assert_eq!(workers[1].forwarder.counters.get(Counter::HandoffsReceived), 1);
    assert_eq!(&workers[1].ports[1].tx[0][14..], &forwarded(&inner)[..], "the owner decrypts and forwards");
    // The server's answer reaches core 0 too: handed over, encrypted by the owner.
    let reply = inner_udp(SERVER, "203.0.113.5", 100, 2);
    let mut frame = vec![0u8; 14];
    ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV4);
    frame.extend_from_slice(&reply);
    workers[0].ports[1].rx.push_back(frame);
    workers[0].poll(2);
    workers[1].poll(2);
    assert_eq!(clinic.receive(&workers[1].ports[0].tx[0]), forwarded(&reply));
    // A full ring drops and counts.
    let tiny = Arc::new(Handoff::new(2, 1));
    let mut w0 = std::mem::replace(&mut workers[0], Worker::new(MemoryPort::new(OUT_MAC), MemoryPort::new(IN_MAC), Forwarder::new(interfaces(), [OUT_MAC, IN_MAC], table.clone())));
    w0 = w0.with_handoff(0, tiny.clone());
    for i in 0..3 {
        w0.ports[0].rx.push_back(clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 10 + i)));
    }
    w0.poll(3);
    // (Two handoffs earlier, one now; the other two find the ring full.)
    assert_eq!((w0.forwarder.counters.get(Counter::HandoffsSent), w0.forwarder.counters.dropped(DropReason::HandoffFull)), (3, 2));
    assert_eq!(tiny.drain(), 1);
}

#[test]
fn too_big_ipv6_inner_gets_packet_too_big() {
    let (mut w, _) = gateway(tunnel_config("2001:db8:a::20", false, false, "ipv6 = [\"2001:db8:c::/48\"]\n"));
    let big = inner_udp("2001:db8:b::7", "2001:db8:c::5", 1427, 1);
    let mut frame = vec![0u8; 14];
    ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV6);
    frame.extend_from_slice(&big);
    let [out, inside] = run(&mut w, Side::Inside, frame, 1);
    assert!(out.is_empty());
    let eth = ethernet::Frame::new_checked(&inside[0][..]).unwrap();
    let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src(), ip.dst()), ("2001:db8:b::1".parse().unwrap(), "2001:db8:b::7".parse().unwrap()));
    assert_eq!(ip.payload_len(), 1280 - 40, "quotes up to the minimum MTU");
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (2, 0));
    assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1426);
    let acc = crate::wire::checksum::ipv6_pseudo_header(&ip.src(), &ip.dst(), 58, icmp.len() as u32);
    assert_eq!(crate::wire::checksum::finish(crate::wire::checksum::sum(acc, icmp)), 0, "valid ICMPv6 checksum");
}

#[test]
fn nat_t_never_moves_a_tunnel_to_the_other_family() {
    let (mut w, spi) = gateway(tunnel_config("2001:db8:a::20", true, false, ""));
    // The same SA's packets replayed over IPv4 (authentic: the ICV does not cover the outer header).
    let mut over_v4 = Clinic::new("198.51.100.20", "198.51.100.1", spi, true, false);
    let [_, inside] = run(&mut w, Side::Outside, over_v4.send(&inner_udp("203.0.113.5", SERVER, 100, 1)), 1);
    assert_eq!(inside.len(), 1);
    assert_eq!(w.forwarder.counters.get(Counter::NatTPeerMoved), 0);
    // Answers still go to the tunnel's IPv6 peer.
    let mut v6 = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, true, false);
    let reply = inner_udp(SERVER, "203.0.113.5", 100, 2);
    let [out, _] = run(&mut w, Side::Inside, from_server(&reply), 2);
    assert_eq!(v6.receive(&out[0]), forwarded(&reply));
}

#[test]
fn clinics_may_not_send_to_the_gateway_groups_or_other_tunnels() {
    let mut config = tunnel_config("2001:db8:a::20", false, false, "");
    config.ipv4.push("198.18.0.0/24".parse().unwrap());
    let (mut w, spi) = gateway(config);
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    for (i, dst) in ["10.0.0.1", "10.0.0.255", "224.0.0.5", "169.254.1.1", "198.18.0.9"].into_iter().enumerate() {
        let before = w.forwarder.counters.dropped(DropReason::InnerDestination);
        assert_eq!(run(&mut w, Side::Outside, clinic.send(&inner_udp("203.0.113.5", dst, 100, i as u64)), 1), NOTHING, "{dst}");
        assert_eq!(w.forwarder.counters.dropped(DropReason::InnerDestination), before + 1, "{dst}");
    }
    assert_eq!(w.forwarder.sad().inbound_sas().next().unwrap().counters.drops.inner_destination, 5);
}

#[test]
fn outer_fragments_and_the_wrong_encapsulation_are_refused() {
    let (mut w, spi) = gateway(tunnel_config("198.51.100.20", false, false, ""));
    let mut clinic = Clinic::new("198.51.100.20", "198.51.100.1", spi, false, false);
    let mut fragment = clinic.send(&inner_udp("203.0.113.5", SERVER, 100, 1));
    fragment[14 + 6] |= 0x20; // more fragments
    ipv4::set_checksum(&mut fragment[14..]);
    assert_eq!(run(&mut w, Side::Outside, fragment, 1), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::OuterFragment), 1);
    // ESP in UDP for a tunnel set up for ESP on IP.
    let mut in_udp = Clinic::new("198.51.100.20", "198.51.100.1", spi, true, false);
    assert_eq!(run(&mut w, Side::Outside, in_udp.send(&inner_udp("203.0.113.5", SERVER, 100, 2)), 1), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::EncapsulationMismatch), 1);
}

#[test]
fn too_big_without_df_and_without_fragmenting_is_dropped_not_answered() {
    let (mut w, _) = gateway(tunnel_config("2001:db8:a::20", false, false, ""));
    w.forwarder.settings.fragment_inner = false;
    let mut no_df = inner_udp(SERVER, "203.0.113.5", 1500, 1);
    no_df[6] = 0;
    ipv4::set_checksum(&mut no_df);
    assert_eq!(run(&mut w, Side::Inside, from_server(&no_df), 1), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::TooBigForTunnel), 1);
    assert_eq!(w.forwarder.counters.get(Counter::IcmpTooBigSent), 0);
    // An ICMP error that is too big gets no ICMP error back.
    let mut icmp_error = inner_udp(SERVER, "203.0.113.5", 1500, 2);
    icmp_error[9] = 1;
    icmp_error[20] = 3;
    ipv4::set_checksum(&mut icmp_error);
    assert_eq!(run(&mut w, Side::Inside, from_server(&icmp_error), 2), NOTHING);
    assert_eq!(w.forwarder.counters.get(Counter::IcmpTooBigSent), 0);
}

#[test]
fn outer_headers_carry_ttl_df_and_the_dscp_when_asked() {
    let mut ef = inner_udp(SERVER, "203.0.113.5", 100, 1);
    ef[1] = 46 << 2; // DSCP EF
    ipv4::set_checksum(&mut ef);
    for copy in [false, true] {
        // IPv6 outer: traffic class holds the DSCP.
        let (mut w, _) = gateway(tunnel_config("2001:db8:a::20", false, false, &format!("copy_dscp = {copy}\n")));
        let [out, _] = run(&mut w, Side::Inside, from_server(&ef), 1);
        let traffic_class = (crate::wire::read_u16(&out[0], 14) >> 4) as u8;
        assert_eq!((traffic_class >> 2, out[0][14 + 7]), (if copy { 46 } else { 0 }, 64), "IPv6 outer, copy {copy}");
        // IPv4 outer: TOS holds it, DF is set, the header checksum holds.
        let (mut w, _) = gateway(tunnel_config("198.51.100.20", false, false, &format!("copy_dscp = {copy}\n")));
        let [out, _] = run(&mut w, Side::Inside, from_server(&ef), 1);
        let ip = ipv4::Packet::new_checked(&out[0][14..]).expect("valid outer header");
        assert_eq!((out[0][15] >> 2, ip.ttl(), out[0][14 + 6] & 0x40), (if copy { 46 } else { 0 }, 64, 0x40), "IPv4 outer, copy {copy}");
    }
}

#[test]
fn inner_packets_whose_ttl_runs_out_are_dropped_or_answered() {
    let (mut w, spi) = gateway(tunnel_config("2001:db8:a::20", false, false, ""));
    let mut clinic = Clinic::new("2001:db8:a::20", "2001:db8:a::1", spi, false, false);
    let with_ttl_1 = |mut p: Vec<u8>| {
        p[8] = 1;
        ipv4::set_checksum(&mut p);
        p
    };
    let up = with_ttl_1(inner_udp("203.0.113.5", SERVER, 100, 1));
    assert_eq!(run(&mut w, Side::Outside, clinic.send(&up), 1), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::TtlExceeded), 1, "from a clinic: dropped");
    // From the inside: ICMP time exceeded back to the server, quoting its packet.
    let down = with_ttl_1(inner_udp(SERVER, "203.0.113.5", 100, 2));
    let [out, inside] = run(&mut w, Side::Inside, from_server(&down), 2);
    assert!(out.is_empty());
    let eth = ethernet::Frame::new_checked(&inside[0][..]).unwrap();
    assert_eq!((eth.dst(), eth.src()), (PEER_IN, IN_MAC));
    let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src(), ip.dst(), ip.protocol()), ("10.0.0.1".parse().unwrap(), SERVER.parse().unwrap(), 1));
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (11, 0));
    assert_eq!(crate::wire::checksum::checksum(icmp), 0);
    assert_eq!(&icmp[8..], &down[..], "the whole (short) packet quoted");
    assert_eq!(w.forwarder.counters.get(Counter::IcmpTimeExceededSent), 1);
    let (outbound, _) = w.forwarder.sad.outbound(0).unwrap();
    assert_eq!(outbound.seq, 0, "no sequence number spent on a packet that cannot leave");
}
