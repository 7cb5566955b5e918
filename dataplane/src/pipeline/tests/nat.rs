//! Tenants behind NAT through the whole pipeline: two clinics with the same
//! subnet reach a server on the inside through their own ESP tunnels, each
//! answer goes back into the right tunnel, and nothing crosses tenants.

use super::esp::{Clinic, KEY_IN, KEY_OUT, PEER_SPI};
use super::*;
use crate::nat::rewrite::tests::packet;
use crate::nat::NatCore;
use crate::policy::{NatConfig, Policy, TenantConfig};
use crate::tunnels::{self, TunnelConfig};

const SERVER: [u8; 4] = [10, 0, 0, 7];
const HOST: [u8; 4] = [192, 168, 1, 10];
const CLINICS: [&str; 2] = ["198.51.100.20", "198.51.100.21"];

fn tunnel(name: &str, remote: &str, tenant: &str) -> TunnelConfig {
    toml::from_str(&format!(
        "name = \"{name}\"\nremote = \"{remote}\"\ntenant = \"{tenant}\"\nipv4 = [\"192.168.1.0/24\"]\n\
         [[inbound]]\nkey = \"{KEY_IN}\"\n[outbound]\nspi = {PEER_SPI}\nkey = \"{KEY_OUT}\"\n"
    ))
    .unwrap()
}

/// A gateway with tenants a and b, both 192.168.1.0/24, each with a clinic.
fn gateway() -> (Worker<MemoryPort>, [Clinic; 2], Arc<Policy>) {
    let nat: NatConfig = toml::from_str("pool = [\"100.64.0.0/31\"]").unwrap();
    let tenant = |name: &str| -> TenantConfig {
        toml::from_str(&format!("name = \"{name}\"\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.0.0.0/24\"\naction = \"allow\"")).unwrap()
    };
    let policy = Arc::new(Policy::compile(&nat, &[tenant("a"), tenant("b")], &[], 1).unwrap());
    let addrs: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
    let tables = tunnels::build(&[tunnel("a", CLINICS[0], "a"), tunnel("b", CLINICS[1], "b")], 1, &addrs, Some(&policy)).unwrap();
    let spis = [tables.inbound_spis[0].1[0], tables.inbound_spis[1].1[0]];
    let statics = vec![
        (Side::Outside, CLINICS[0].parse().unwrap(), PEER_OUT),
        (Side::Outside, CLINICS[1].parse().unwrap(), PEER_OUT),
        (Side::Inside, IpAddr::from(SERVER), PEER_IN),
    ];
    let table = Arc::new(NeighbourTable::new(statics));
    let sad = tables.cores.into_iter().next().unwrap();
    let forwarder = Forwarder::new(interfaces(), [OUT_MAC, IN_MAC], table)
        .with_tunnels(sad, Arc::new(tables.routes), TunnelSettings::default())
        .with_nat(NatCore::new(policy.clone(), 0));
    let clinics = [0, 1].map(|i| Clinic::new(CLINICS[i], "198.51.100.1", spis[i], false, false));
    (Worker::new(MemoryPort::new(OUT_MAC), MemoryPort::new(IN_MAC), forwarder), clinics, policy)
}

fn udp(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16) -> Vec<u8> {
    let mut l4 = vec![0u8; 24];
    l4[0..2].copy_from_slice(&src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst_port.to_be_bytes());
    l4[4..6].copy_from_slice(&24u16.to_be_bytes());
    packet(17, src, dst, &l4)
}

fn from_inside(ip: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + ip.len()];
    ethernet::write_header(&mut frame, IN_MAC, PEER_IN, ethernet::ETHERTYPE_IPV4);
    frame[14..].copy_from_slice(ip);
    frame
}

fn endpoint(ip: &[u8], at: usize) -> ([u8; 4], u16) {
    (ip[at..at + 4].try_into().unwrap(), u16::from_be_bytes([ip[20 + (at - 12) / 2], ip[21 + (at - 12) / 2]]))
}

#[test]
fn overlapping_clinics_reach_the_server_and_answers_go_back_into_the_right_tunnel() {
    let (mut w, mut clinics, policy) = gateway();
    let mut externals = Vec::new();
    for clinic in clinics.iter_mut() {
        let [out, inside] = run(&mut w, Side::Outside, clinic.send(&udp(HOST, 5000, SERVER, 53)), 1);
        assert!(out.is_empty());
        assert_eq!(inside.len(), 1, "{:?}", w.forwarder.counters.to_json());
        let ip = &inside[0][14..];
        let (pool, port) = endpoint(ip, 12);
        assert!(policy.pool_address(pool.into()).is_some());
        assert_eq!(endpoint(ip, 16), (SERVER, 53));
        externals.push((pool, port));
    }
    assert_ne!(externals[0], externals[1], "same clinic endpoint, distinct mappings");
    for (i, clinic) in clinics.iter_mut().enumerate() {
        let (pool, port) = externals[i];
        let [out, inside] = run(&mut w, Side::Inside, from_inside(&udp(SERVER, 53, pool, port)), 2);
        assert!(inside.is_empty());
        assert_eq!(out.len(), 1);
        // `receive` checks the outer destination: this clinic's own tunnel.
        let inner = clinic.receive(&out[0]);
        assert_eq!((endpoint(&inner, 12), endpoint(&inner, 16)), ((SERVER, 53), (HOST, 5000)));
    }
    assert_eq!(w.forwarder.counters.get(Counter::NatTranslatedDown), 2);
}

#[test]
fn nothing_crosses_tenants_and_the_inside_cannot_open_sessions() {
    let (mut w, mut clinics, _) = gateway();
    let [_, inside] = run(&mut w, Side::Outside, clinics[1].send(&udp(HOST, 5000, SERVER, 53)), 1);
    let (b_pool, b_port) = endpoint(&inside[0][14..], 12);
    // Clinic a to b's pool address and port, and to an address in the tenants' subnet.
    for dst in [b_pool, [192, 168, 1, 99]] {
        let [out, inside] = run(&mut w, Side::Outside, clinics[0].send(&udp(HOST, 5000, dst, b_port)), 1);
        assert!(out.is_empty() && inside.is_empty());
    }
    assert_eq!(w.forwarder.counters.dropped(DropReason::InnerDestination), 2);
    // The inside toward a clinic's address, and to the pool without a session.
    let [out, _] = run(&mut w, Side::Inside, from_inside(&udp(SERVER, 53, HOST, 5000)), 1);
    assert!(out.is_empty());
    assert_eq!(w.forwarder.counters.dropped(DropReason::NoTunnel), 1);
    let [out, _] = run(&mut w, Side::Inside, from_inside(&udp(SERVER, 53, b_pool, b_port.wrapping_add(1))), 1);
    assert!(out.is_empty());
    assert_eq!(w.forwarder.counters.dropped(DropReason::NoSession), 1);
    // A rule the tenant lacks.
    let [_, inside] = run(&mut w, Side::Outside, clinics[0].send(&udp(HOST, 5000, [10, 0, 1, 7], 53)), 1);
    assert!(inside.is_empty());
    assert_eq!(w.forwarder.counters.dropped(DropReason::PolicyDenied), 1);
}

#[test]
fn a_fragment_before_its_first_is_held_and_sent_after_it() {
    let (mut w, mut clinics, _) = gateway();
    let fragment = |offset: u16, more: bool, len: usize| {
        let mut p = if offset == 0 { udp(HOST, 5000, SERVER, 53) } else { packet(17, HOST, SERVER, &vec![0x5a; len]) };
        if offset == 0 {
            p[24..26].copy_from_slice(&100u16.to_be_bytes());
        }
        p[4..6].copy_from_slice(&77u16.to_be_bytes());
        p[6..8].copy_from_slice(&((offset / 8) | if more { 0x2000 } else { 0 }).to_be_bytes());
        crate::wire::ipv4::set_checksum(&mut p);
        p
    };
    let [_, inside] = run(&mut w, Side::Outside, clinics[0].send(&fragment(24, false, 76)), 1);
    assert!(inside.is_empty());
    assert_eq!(w.forwarder.counters.get(Counter::FragmentsHeld), 1);
    let [_, inside] = run(&mut w, Side::Outside, clinics[0].send(&fragment(0, true, 0)), 1);
    assert_eq!(inside.len(), 2, "{:?}", w.forwarder.counters.to_json());
    let (first, later) = (&inside[0][14..], &inside[1][14..]);
    assert_eq!((u16::from_be_bytes([first[6], first[7]]), u16::from_be_bytes([later[6], later[7]])), (0x2000, 3));
    assert_eq!(first[12..16], later[12..16], "both from the pool address");
    assert_eq!(crate::wire::checksum::checksum(&later[..20]), 0);
    assert_eq!(w.forwarder.counters.get(Counter::FragmentsReleased), 1);
}

#[test]
fn a_burst_of_clinic_packets_goes_through_nat_together_in_order() {
    let (mut w, mut clinics, _) = gateway();
    // 30 packets in one burst from both clinics, numbered in their IP
    // identification: NAT runs once the burst is decrypted, in burst order.
    for i in 0..30u16 {
        let mut inner = udp(HOST, 6000 + i, SERVER, 53);
        inner[4..6].copy_from_slice(&i.to_be_bytes());
        crate::wire::ipv4::set_checksum(&mut inner);
        let frame = clinics[usize::from(i % 2)].send(&inner);
        w.ports[Side::Outside as usize].rx.push_back(frame);
    }
    w.poll(1);
    let inside = std::mem::take(&mut w.ports[Side::Inside as usize].tx);
    assert_eq!(inside.len(), 30, "{:?}", w.forwarder.counters.to_json());
    let idents: Vec<u16> = inside.iter().map(|f| u16::from_be_bytes([f[18], f[19]])).collect();
    assert_eq!(idents, (0..30).collect::<Vec<u16>>());
    let externals: std::collections::HashSet<_> = inside.iter().map(|f| endpoint(&f[14..], 12)).collect();
    assert_eq!(externals.len(), 30, "one pool port per session");
    assert_eq!(w.forwarder.counters.get(Counter::NatSessionsCreated), 30);
    assert_eq!(w.forwarder.counters.get(Counter::EspDecrypted), 30);
}

#[test]
fn answers_reaching_another_worker_are_handed_to_the_sessions_owner() {
    use crate::worker::Handoff;
    let nat: NatConfig = toml::from_str("pool = [\"100.64.0.0/31\"]").unwrap();
    let tenant: TenantConfig = toml::from_str("name = \"a\"\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.0.0.0/24\"\naction = \"allow\"").unwrap();
    let policy = Arc::new(Policy::compile(&nat, &[tenant], &[], 2).unwrap());
    let mut config = tunnel("a", CLINICS[0], "a");
    config.worker = Some(1);
    let addrs: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
    let tables = tunnels::build(&[config], 2, &addrs, Some(&policy)).unwrap();
    let spi = tables.inbound_spis[0].1[0];
    let routes = Arc::new(tables.routes);
    let handoff = Arc::new(Handoff::new(2, 64));
    let statics = vec![(Side::Outside, CLINICS[0].parse().unwrap(), PEER_OUT), (Side::Inside, IpAddr::from(SERVER), PEER_IN)];
    let table = Arc::new(NeighbourTable::new(statics));
    let mut workers: Vec<Worker<MemoryPort>> = tables
        .cores
        .into_iter()
        .enumerate()
        .map(|(core, sad)| {
            let f = Forwarder::new(interfaces(), [OUT_MAC, IN_MAC], table.clone())
                .with_tunnels(sad, routes.clone(), TunnelSettings::default())
                .with_nat(NatCore::new(policy.clone(), core as u8));
            Worker::new(MemoryPort::new(OUT_MAC), MemoryPort::new(IN_MAC), f).with_handoff(core, handoff.clone())
        })
        .collect();
    let mut clinic = Clinic::new(CLINICS[0], "198.51.100.1", spi, false, false);
    // The clinic's packet reaches worker 0; its SA (and so its session) is worker 1's.
    workers[0].ports[0].rx.push_back(clinic.send(&udp(HOST, 5000, SERVER, 53)));
    workers[0].poll(1);
    workers[1].poll(1);
    let sent = std::mem::take(&mut workers[1].ports[1].tx);
    assert_eq!(sent.len(), 1);
    let (pool, port) = endpoint(&sent[0][14..], 12);
    assert_eq!(policy.layout.owner(port), Some(1), "a port of worker 1's blocks");
    // The answer reaches worker 0 too: the pool port names worker 1, which translates and encrypts it.
    workers[0].ports[1].rx.push_back(from_inside(&udp(SERVER, 53, pool, port)));
    workers[0].poll(2);
    assert!(workers[0].ports[0].tx.is_empty());
    workers[1].poll(2);
    let out = std::mem::take(&mut workers[1].ports[0].tx);
    assert_eq!(out.len(), 1);
    let inner = clinic.receive(&out[0]);
    assert_eq!(endpoint(&inner, 16), (HOST, 5000));
    assert_eq!(workers[0].forwarder.counters.get(Counter::HandoffsSent), 2);
    assert_eq!(workers[1].forwarder.counters.get(Counter::HandoffsReceived), 2);
}

#[test]
fn the_gateways_icmp_errors_quote_the_servers_packet_untranslated() {
    let (mut w, mut clinics, _) = gateway();
    let [_, inside] = run(&mut w, Side::Outside, clinics[0].send(&udp(HOST, 5000, SERVER, 53)), 1);
    let (pool, port) = endpoint(&inside[0][14..], 12);
    // Too big for the tunnel, with DF: "fragmentation needed" quoting the packet as sent.
    let mut big = vec![0u8; 1480 - 20];
    big[0..2].copy_from_slice(&53u16.to_be_bytes());
    big[2..4].copy_from_slice(&port.to_be_bytes());
    big[4..6].copy_from_slice(&((1480 - 20) as u16).to_be_bytes());
    let big = packet(17, SERVER, pool, &big);
    let [out, inside] = run(&mut w, Side::Inside, from_inside(&big), 2);
    assert!(out.is_empty());
    assert_eq!(inside.len(), 1);
    let icmp = &inside[0][14..];
    assert_eq!((icmp[9], icmp[20], icmp[21]), (1, 3, 4), "ICMP fragmentation needed");
    assert_eq!(endpoint(&icmp[28..], 16), (pool, port), "quotes the pool address and port");
    assert_eq!(crate::wire::checksum::checksum(&icmp[28..48]), 0, "the quoted header is intact");
    // TTL 1: time exceeded, also quoting the packet as sent.
    let mut last_hop = udp(SERVER, 53, pool, port);
    last_hop[8] = 1;
    crate::wire::ipv4::set_checksum(&mut last_hop);
    let [_, inside] = run(&mut w, Side::Inside, from_inside(&last_hop), 3);
    assert_eq!((inside[0][14 + 20], endpoint(&inside[0][14 + 28..], 16)), (11, (pool, port)));
}

#[test]
fn one_tenants_tunnels_may_not_overlap_but_tenants_may() {
    let nat: NatConfig = toml::from_str("pool = [\"100.64.0.0/31\"]").unwrap();
    let tenant = |name: &str| -> TenantConfig { toml::from_str(&format!("name = \"{name}\"\nsubnets = [\"192.168.0.0/16\"]")).unwrap() };
    let policy = Policy::compile(&nat, &[tenant("a"), tenant("b")], &[], 1).unwrap();
    let addrs: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
    let mut inner = tunnel("a2", CLINICS[1], "a");
    inner.ipv4 = vec!["192.168.1.128/25".parse().unwrap()];
    let (field, message) = tunnels::build(&[tunnel("a1", CLINICS[0], "a"), inner], 1, &addrs, Some(&policy)).err().unwrap();
    assert_eq!(field, "tunnels[1].ipv4");
    assert!(message.contains("overlaps"), "{message}");
    assert!(tunnels::build(&[tunnel("a", CLINICS[0], "a"), tunnel("b", CLINICS[1], "b")], 1, &addrs, Some(&policy)).is_ok());
}
