//! The pipeline over in-memory ports: forwarding, ARP, ND and every drop.

use super::*;
use crate::craft::{forwarded, write_udp_frame, Flow};
use crate::neighbour::NeighbourTable;
use crate::port::memory::MemoryPort;
use crate::wire::{arp, checksum, icmpv6, MacAddr};
use crate::worker::Worker;

const OUT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const IN_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const PEER_OUT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa1]);
const PEER_IN: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb1]);
const STATIC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc1]);

fn interfaces() -> [Interface; 2] {
    [
        Interface {
            ipv4: vec!["198.51.100.1/24".parse().unwrap()],
            ipv6: vec!["2001:db8:a::1/64".parse().unwrap()],
            gateway_ipv4: Some("198.51.100.254".parse().unwrap()),
            gateway_ipv6: Some("2001:db8:a::fe".parse().unwrap()),
        },
        Interface {
            ipv4: vec!["10.0.0.1/24".parse().unwrap()],
            ipv6: vec!["2001:db8:b::1/64".parse().unwrap()],
            gateway_ipv4: None,
            gateway_ipv6: None,
        },
    ]
}

fn worker(statics: Vec<(Side, IpAddr, MacAddr)>) -> (Worker<MemoryPort>, Arc<NeighbourTable>) {
    let table = Arc::new(NeighbourTable::new(statics));
    let forwarder = Forwarder::new(interfaces(), [OUT_MAC, IN_MAC], table.clone()).with_bypass();
    (Worker::new(MemoryPort::new(OUT_MAC), MemoryPort::new(IN_MAC), forwarder), table)
}

fn udp(src: &str, dst: &str, len: usize, dst_mac: MacAddr, src_mac: MacAddr) -> Vec<u8> {
    let flow = Flow { src: src.parse().unwrap(), dst: dst.parse().unwrap(), src_port: 4000, dst_port: 53 };
    let mut frame = vec![0u8; len];
    write_udp_frame(&mut frame, dst_mac, src_mac, &flow, 7);
    frame
}

fn arp_frame(op: u16, dst_mac: MacAddr, sender: (MacAddr, &str), target: (MacAddr, &str)) -> Vec<u8> {
    let mut frame = vec![0u8; 60];
    ethernet::write_header(&mut frame, dst_mac, sender.0, ethernet::ETHERTYPE_ARP);
    arp::write(&mut frame[14..], op, sender.0, sender.1.parse().unwrap(), target.0, target.1.parse().unwrap());
    frame
}

fn nd_frame(kind: u8, flags: u8, src: &str, dst: &str, target: &str, link: MacAddr, eth_dst: MacAddr) -> Vec<u8> {
    let (src, dst, target): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), dst.parse().unwrap(), target.parse().unwrap());
    let mut frame = vec![0u8; 14 + 40 + icmpv6::ND_MESSAGE_LEN];
    ethernet::write_header(&mut frame, eth_dst, link, ethernet::ETHERTYPE_IPV6);
    ipv6::write_header(&mut frame[14..], icmpv6::ND_MESSAGE_LEN as u16, 58, 255, &src, &dst);
    icmpv6::write_neighbor_message(&mut frame[54..], kind, flags, &target, link, &src, &dst);
    frame
}

const NOTHING: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];

/// Runs one frame in on `side` and returns what came out of each port.
fn run(w: &mut Worker<MemoryPort>, side: Side, frame: Vec<u8>, now_ms: u64) -> [Vec<Vec<u8>>; 2] {
    w.ports[side as usize].rx.push_back(frame);
    w.poll(now_ms);
    [std::mem::take(&mut w.ports[0].tx), std::mem::take(&mut w.ports[1].tx)]
}

#[test]
fn answers_arp_for_its_address_and_learns_the_asker() {
    let (mut w, table) = worker(vec![]);
    let request = arp_frame(arp::OP_REQUEST, MacAddr::BROADCAST, (PEER_IN, "10.0.0.7"), (MacAddr::ZERO, "10.0.0.1"));
    let [out, inside] = run(&mut w, Side::Inside, request, 1);
    assert!(out.is_empty());
    assert_eq!(inside.len(), 1);
    let reply = ethernet::Frame::new_checked(&inside[0][..]).unwrap();
    assert_eq!((reply.dst(), reply.src()), (PEER_IN, IN_MAC));
    let arp = arp::Packet::new_checked(reply.payload()).unwrap();
    assert_eq!(arp.operation(), arp::OP_REPLY);
    assert_eq!((arp.sender_mac(), arp.sender_ip()), (IN_MAC, "10.0.0.1".parse::<Ipv4Addr>().unwrap()));
    assert_eq!((arp.target_mac(), arp.target_ip()), (PEER_IN, "10.0.0.7".parse::<Ipv4Addr>().unwrap()));
    assert_eq!(w.forwarder.counters.get(Counter::ArpRepliesSent), 1);
    table.maintain(1);
    assert_eq!(table.snapshot().get(Side::Inside, "10.0.0.7".parse().unwrap()).unwrap().mac, PEER_IN);

    // Not ours: dropped and not learned.
    let other = arp_frame(arp::OP_REQUEST, MacAddr::BROADCAST, (PEER_IN, "10.0.0.8"), (MacAddr::ZERO, "10.0.0.99"));
    assert_eq!(run(&mut w, Side::Inside, other, 2), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::ArpNotForUs), 1);
    // Our inside address asked on the outside port is not ours there.
    let wrong_port = arp_frame(arp::OP_REQUEST, MacAddr::BROADCAST, (PEER_OUT, "198.51.100.9"), (MacAddr::ZERO, "10.0.0.1"));
    assert_eq!(run(&mut w, Side::Outside, wrong_port, 3), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::ArpNotForUs), 2);
}

#[test]
fn answers_neighbour_solicitations_per_rfc4861() {
    let (mut w, table) = worker(vec![]);
    let group = "ff02::1:ff00:1";
    let ns = nd_frame(icmpv6::TYPE_NEIGHBOR_SOLICITATION, 0, "2001:db8:a::77", group, "2001:db8:a::1", PEER_OUT, MacAddr::ipv6_multicast(&group.parse().unwrap()));
    let [out, inside] = run(&mut w, Side::Outside, ns, 1);
    assert!(inside.is_empty());
    assert_eq!(out.len(), 1);
    let frame = ethernet::Frame::new_checked(&out[0][..]).unwrap();
    assert_eq!((frame.dst(), frame.src()), (PEER_OUT, OUT_MAC));
    let ip = ipv6::Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(ip.src(), "2001:db8:a::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip.dst(), "2001:db8:a::77".parse::<Ipv6Addr>().unwrap());
    let na = icmpv6::NeighborMessage::new_checked(ip.payload(), &ip.src(), &ip.dst(), ip.hop_limit()).expect("valid NA");
    assert_eq!(na.message_type(), icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT);
    assert_eq!(na.flags(), icmpv6::NA_FLAG_ROUTER | icmpv6::NA_FLAG_SOLICITED | icmpv6::NA_FLAG_OVERRIDE);
    assert_eq!(na.link_addr(), Some(OUT_MAC));
    table.maintain(1);
    assert_eq!(table.snapshot().get(Side::Outside, "2001:db8:a::77".parse().unwrap()).unwrap().mac, PEER_OUT);

    // Duplicate address detection: answer to all-nodes, not solicited.
    let mut dad = nd_frame(icmpv6::TYPE_NEIGHBOR_SOLICITATION, 0, "::", group, "2001:db8:a::1", PEER_OUT, MacAddr::ipv6_multicast(&group.parse().unwrap()));
    // DAD solicitations carry no source link-layer option (§7.1.1): strip it.
    dad.truncate(14 + 40 + 24);
    dad[18..20].copy_from_slice(&24u16.to_be_bytes());
    dad[56..58].copy_from_slice(&[0, 0]);
    let (s, d) = ("::".parse().unwrap(), group.parse().unwrap());
    let c = crate::wire::checksum::finish(crate::wire::checksum::sum(crate::wire::checksum::ipv6_pseudo_header(&s, &d, 58, 24), &dad[54..]));
    dad[56..58].copy_from_slice(&c.to_be_bytes());
    let [out, _] = run(&mut w, Side::Outside, dad, 2);
    let ip = ipv6::Packet::new_checked(&out[0][14..]).unwrap();
    assert_eq!(ip.dst(), "ff02::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip.payload()[4] & icmpv6::NA_FLAG_SOLICITED, 0);

    // A hop limit below 255 means it was routed: invalid.
    let mut routed = nd_frame(icmpv6::TYPE_NEIGHBOR_SOLICITATION, 0, "2001:db8:a::77", group, "2001:db8:a::1", PEER_OUT, OUT_MAC);
    routed[14 + 7] = 254;
    assert_eq!(run(&mut w, Side::Outside, routed, 3), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::NdInvalid), 1);
    let not_ours = nd_frame(icmpv6::TYPE_NEIGHBOR_SOLICITATION, 0, "2001:db8:a::77", group, "2001:db8:a::5", PEER_OUT, OUT_MAC);
    assert_eq!(run(&mut w, Side::Outside, not_ours, 4), NOTHING);
    assert_eq!(w.forwarder.counters.dropped(DropReason::NdNotForUs), 1);
}

#[test]
fn resolves_the_next_hop_then_forwards_with_only_l2_rewritten() {
    let (mut w, table) = worker(vec![]);
    let packet = udp("203.0.113.5", "10.0.0.20", 200, OUT_MAC, PEER_OUT);
    // Unknown next hop: dropped, and an ARP request goes out of the inside port.
    let [out, inside] = run(&mut w, Side::Outside, packet.clone(), 1);
    assert!(out.is_empty());
    assert_eq!(w.forwarder.counters.dropped(DropReason::NeighbourUnresolved), 1);
    assert_eq!(inside.len(), 1);
    let request = arp::Packet::new_checked(&inside[0][14..]).unwrap();
    assert_eq!(request.operation(), arp::OP_REQUEST);
    assert_eq!(request.target_ip(), "10.0.0.20".parse::<Ipv4Addr>().unwrap());
    assert_eq!(request.sender_ip(), "10.0.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(ethernet::Frame::new_checked(&inside[0][..]).unwrap().dst(), MacAddr::BROADCAST);
    // A second miss within the interval sends no second request.
    let [_, inside] = run(&mut w, Side::Outside, packet.clone(), 2);
    assert!(inside.is_empty());

    let reply = arp_frame(arp::OP_REPLY, IN_MAC, (PEER_IN, "10.0.0.20"), (IN_MAC, "10.0.0.1"));
    assert_eq!(run(&mut w, Side::Inside, reply, 3), NOTHING);
    table.maintain(3);
    let [out, inside] = run(&mut w, Side::Outside, packet.clone(), 4);
    assert!(out.is_empty());
    assert_eq!(inside.len(), 1);
    assert_eq!(&inside[0][0..6], &PEER_IN.0);
    assert_eq!(&inside[0][6..12], &IN_MAC.0);
    assert_eq!(&inside[0][12..14], &packet[12..14]);
    assert_eq!(&inside[0][14..], &forwarded(&packet[14..])[..], "only the Ethernet addresses and the TTL change");
    assert_eq!(w.forwarder.counters.get(Counter::Forwarded), 1);
}

#[test]
fn ipv6_goes_via_the_gateway_with_neighbour_discovery() {
    let (mut w, table) = worker(vec![]);
    let packet = udp("2001:db8:b::20", "2001:db8:ffff::9", 1500, IN_MAC, PEER_IN);
    let [out, _] = run(&mut w, Side::Inside, packet.clone(), 1);
    assert_eq!(out.len(), 1, "a neighbour solicitation for the outside gateway");
    let ns_ip = ipv6::Packet::new_checked(&out[0][14..]).unwrap();
    let ns = icmpv6::NeighborMessage::new_checked(ns_ip.payload(), &ns_ip.src(), &ns_ip.dst(), ns_ip.hop_limit()).expect("valid NS");
    assert_eq!(ns.target(), "2001:db8:a::fe".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ns_ip.dst(), ipv6::solicited_node(&ns.target()));
    assert_eq!(ns.link_addr(), Some(OUT_MAC));
    let na = nd_frame(
        icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT,
        icmpv6::NA_FLAG_ROUTER | icmpv6::NA_FLAG_SOLICITED,
        "2001:db8:a::fe",
        "2001:db8:a::1",
        "2001:db8:a::fe",
        PEER_OUT,
        OUT_MAC,
    );
    run(&mut w, Side::Outside, na, 2);
    table.maintain(2);
    let [out, _] = run(&mut w, Side::Inside, packet.clone(), 3);
    assert_eq!(out.len(), 1);
    assert_eq!((&out[0][0..6], &out[0][6..12]), (&PEER_OUT.0[..], &OUT_MAC.0[..]));
    assert_eq!(&out[0][14..], &forwarded(&packet[14..])[..], "only the Ethernet addresses and the hop limit change");
}

#[test]
fn static_neighbours_forward_at_once_and_stale_entries_are_refreshed() {
    let (mut w, table) = worker(vec![(Side::Outside, "198.51.100.254".parse().unwrap(), STATIC_MAC)]);
    let packet = udp("10.0.0.20", "203.0.113.5", 64, IN_MAC, PEER_IN);
    let [out, inside] = run(&mut w, Side::Inside, packet, 1);
    assert!(inside.is_empty());
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &STATIC_MAC.0);

    // A learned entry past its refresh age is still used, and re-solicited.
    table.observe(crate::neighbour::Observation { side: Side::Inside, ip: "10.0.0.20".parse().unwrap(), mac: PEER_IN, at_ms: 10 });
    table.maintain(10);
    let later = 10 + crate::neighbour::REFRESH_AFTER_MS + 1;
    let [out, inside] = run(&mut w, Side::Outside, udp("203.0.113.5", "10.0.0.20", 64, OUT_MAC, PEER_OUT), later);
    assert!(out.is_empty());
    assert_eq!(inside.len(), 2, "the packet and a refresh request");
    assert!(inside.iter().any(|f| f[12..14] == [0x08, 0x06]));
}

#[test]
fn drops_what_it_must_and_counts_each_reason() {
    let (mut w, _) = worker(vec![(Side::Inside, "10.0.0.20".parse().unwrap(), PEER_IN)]);
    let good = udp("203.0.113.5", "10.0.0.20", 100, OUT_MAC, PEER_OUT);
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::Truncated),
        (udp("203.0.113.5", "10.0.0.20", 100, PEER_IN, PEER_OUT), DropReason::NotForUs),
        (udp("203.0.113.5", "198.51.100.1", 100, OUT_MAC, PEER_OUT), DropReason::ToGateway),
        (udp("203.0.113.5", "10.0.0.1", 100, OUT_MAC, PEER_OUT), DropReason::ToGateway),
        (udp("203.0.113.5", "10.0.0.255", 100, OUT_MAC, PEER_OUT), DropReason::NotForwardable),
        (udp("203.0.113.5", "224.0.0.5", 100, OUT_MAC, PEER_OUT), DropReason::NotForwardable),
        (udp("fe80::1", "2001:db8:b::9", 100, OUT_MAC, PEER_OUT), DropReason::NotForwardable),
        (udp("2001:db8:b::9", "2001:db8:ffff::9", 100, OUT_MAC, PEER_OUT), DropReason::NoRoute),
        (good[..40].to_vec(), DropReason::Truncated),
    ];
    let mut bad_checksum = good.clone();
    bad_checksum[14 + 8] = 1;
    cases.push((bad_checksum, DropReason::Ipv4Invalid));
    let mut bad_version = good.clone();
    bad_version[14] = 0x55;
    cases.push((bad_version, DropReason::Ipv4Invalid));
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    cases.push((vlan, DropReason::UnknownEthertype));
    let mut bad_arp = arp_frame(arp::OP_REQUEST, MacAddr::BROADCAST, (PEER_OUT, "198.51.100.9"), (MacAddr::ZERO, "198.51.100.1"));
    bad_arp[14 + 4] = 8;
    cases.push((bad_arp, DropReason::ArpInvalid));
    for (frame, reason) in cases {
        let before = w.forwarder.counters.dropped(reason);
        assert_eq!(run(&mut w, Side::Outside, frame, 1), NOTHING, "{reason:?}");
        assert_eq!(w.forwarder.counters.dropped(reason), before + 1, "{reason:?}");
    }
    assert_eq!(w.forwarder.counters.get(Counter::Forwarded), 0);
    assert_eq!(w.forwarder.counters.get(Counter::TxPackets), 0);

    // A full TX queue: counted, and nothing else is lost.
    w.ports[1].tx_room = Some(1);
    w.ports[0].rx.extend([good.clone(), good.clone(), good]);
    w.poll(2);
    assert_eq!(w.ports[1].tx.len(), 1);
    assert_eq!(w.forwarder.counters.dropped(DropReason::TxFull), 2);
    assert_eq!(w.forwarder.counters.get(Counter::TxPackets), 1);
}

#[test]
fn random_frames_never_panic_and_are_all_accounted_for() {
    let (mut w, _) = worker(vec![(Side::Inside, "10.0.0.20".parse().unwrap(), PEER_IN)]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let templates = [
        udp("203.0.113.5", "10.0.0.20", 120, OUT_MAC, PEER_OUT),
        nd_frame(icmpv6::TYPE_NEIGHBOR_SOLICITATION, 0, "2001:db8:a::7", "ff02::1:ff00:1", "2001:db8:a::1", PEER_OUT, OUT_MAC),
        arp_frame(arp::OP_REQUEST, MacAddr::BROADCAST, (PEER_OUT, "198.51.100.9"), (MacAddr::ZERO, "198.51.100.1")),
    ];
    let rounds = 20_000u64;
    for i in 0..rounds {
        let mut frame = templates[(i % 3) as usize].clone();
        let len = (next() as usize) % (frame.len() + 1);
        frame.truncate(len);
        for _ in 0..(next() % 4) {
            if !frame.is_empty() {
                let at = (next() as usize) % frame.len();
                frame[at] = next() as u8;
            }
        }
        w.ports[0].rx.push_back(frame);
        w.poll(i);
    }
    let c = &w.forwarder.counters;
    let replies = c.get(Counter::ArpRepliesSent) + c.get(Counter::NdAdvertisementsSent);
    let consumed = c.get(Counter::NeighbourRepliesReceived);
    assert_eq!(c.get(Counter::RxPackets), rounds);
    assert_eq!(c.get(Counter::Forwarded) + replies + c.total_dropped() + consumed, rounds, "every frame has one fate");
}

mod esp;
mod nat;

#[test]
fn hop_limit_running_out_in_plain_forwarding_gets_icmpv6_time_exceeded() {
    let (mut w, _) = worker(vec![(Side::Outside, "2001:db8:a::fe".parse().unwrap(), PEER_OUT)]);
    let mut frame = udp("2001:db8:b::7", "2001:db8:d::9", 120, IN_MAC, PEER_IN);
    frame[14 + 7] = 1;
    let [out, inside] = run(&mut w, Side::Inside, frame.clone(), 1);
    assert!(out.is_empty());
    let ip = ipv6::Packet::new_checked(&inside[0][14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), ("2001:db8:b::1".parse().unwrap(), "2001:db8:b::7".parse().unwrap()));
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (3, 0), "hop limit exceeded in transit");
    let acc = checksum::ipv6_pseudo_header(&ip.src(), &ip.dst(), 58, icmp.len() as u32);
    assert_eq!(checksum::finish(checksum::sum(acc, icmp)), 0);
    assert_eq!(&icmp[8..], &frame[14..], "quotes the packet");
    assert_eq!(w.forwarder.counters.get(Counter::IcmpTimeExceededSent), 1);
}
