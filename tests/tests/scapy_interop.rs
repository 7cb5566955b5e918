//! ESP interop with an independent implementation: scapy encrypts what the
//! gateway must decrypt, and decrypts what the gateway encrypted, for IPv6
//! and IPv4 outer headers, with and without ESN and UDP encapsulation.
//! The gateway runs its real pipeline over in-memory ports.

use sekisho_dataplane::craft::{forwarded, write_udp_frame, Flow};
use sekisho_dataplane::neighbour::NeighbourTable;
use sekisho_dataplane::pipeline::{Counter, Forwarder, Interface, TunnelSettings};
use sekisho_dataplane::port::memory::MemoryPort;
use sekisho_dataplane::tunnels::{self, TunnelConfig};
use sekisho_dataplane::wire::{ethernet, MacAddr};
use sekisho_dataplane::worker::Worker;
use sekisho_dataplane::Side;
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

const GW_OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const GW_IN: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const PEER_OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa1]);
const PEER_IN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb1]);
const KEY_IN: &str = "0102030405060708090a0b0c0d0e0f10a1a2a3a4";
// AES-256 one way, to cover both key sizes.
const KEY_OUT: &str = "1112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30b1b2b3b4";
const GW_SPI: u32 = 0x0010_0007; // worker 0, generation 1, slot 7
const PEER_SPI: u32 = 0xc0ff_ee01;
const SERVER: &str = "10.0.0.7";
const CLINIC_HOST: &str = "203.0.113.5";

fn scapy(request: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scapy/esp_peer.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run /usr/bin/python3 (python3-scapy is installed by scripts/setup.sh)");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "esp_peer.py failed");
    serde_json::from_slice(&output.stdout).expect("esp_peer.py prints JSON")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    tunnels::decode_hex(s).expect("esp_peer.py prints hex")
}

struct Case {
    clinic: &'static str,
    gateway: &'static str,
    esn: bool,
    nat_t: bool,
}

fn gateway(case: &Case) -> Worker<MemoryPort> {
    let config: TunnelConfig = toml::from_str(&format!(
        r#"name = "clinic"
remote = "{}"
udp_encap = {}
ipv4 = ["203.0.113.0/24"]
[[inbound]]
spi = {GW_SPI}
key = "{KEY_IN}"
esn = {}
[outbound]
spi = {PEER_SPI}
key = "{KEY_OUT}"
esn = {}
"#,
        case.clinic, case.nat_t, case.esn, case.esn
    ))
    .unwrap();
    let outside_addrs: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap(), "2001:db8:a::1".parse().unwrap()];
    let tables = tunnels::build(&[config], 1, &outside_addrs, None).unwrap();
    let interfaces = [
        Interface {
            ipv4: vec!["198.51.100.1/24".parse().unwrap()],
            ipv6: vec!["2001:db8:a::1/64".parse().unwrap()],
            ..Default::default()
        },
        Interface { ipv4: vec!["10.0.0.1/24".parse().unwrap()], ..Default::default() },
    ];
    let neighbours = Arc::new(NeighbourTable::new([
        (Side::Outside, case.clinic.parse().unwrap(), PEER_OUT),
        (Side::Inside, SERVER.parse().unwrap(), PEER_IN),
    ]));
    let sad = tables.cores.into_iter().next().unwrap();
    let settings = TunnelSettings { mss_clamp: None, ..TunnelSettings::default() };
    let forwarder = Forwarder::new(interfaces, [GW_OUT, GW_IN], neighbours).with_tunnels(sad, Arc::new(tables.routes), settings);
    Worker::new(MemoryPort::new(GW_OUT), MemoryPort::new(GW_IN), forwarder)
}

/// An IPv4/UDP packet (no Ethernet header) of `len` bytes.
fn inner_udp(src: &str, dst: &str, len: usize, seq: u64) -> Vec<u8> {
    let flow = Flow { src: src.parse().unwrap(), dst: dst.parse().unwrap(), src_port: 40000, dst_port: 443 };
    let mut frame = vec![0u8; 14 + len];
    write_udp_frame(&mut frame, MacAddr::ZERO, MacAddr::ZERO, &flow, seq);
    frame[14..].to_vec()
}

fn sa_json(case: &Case, spi: u32, key: &str, src: &str, dst: &str) -> Value {
    let outer = if case.clinic.contains(':') { "ipv6" } else { "ipv4" };
    json!({"spi": spi, "key": key, "esn": case.esn, "esn_high": 0, "outer": outer, "src": src, "dst": dst, "nat_t": case.nat_t})
}

const SIZES: [usize; 6] = [36, 37, 38, 39, 512, 1400];

fn check(case: Case) {
    let name = format!("{} esn={} nat_t={}", case.clinic, case.esn, case.nat_t);
    let mut w = gateway(&case);
    let ethertype = if case.clinic.contains(':') { ethernet::ETHERTYPE_IPV6 } else { ethernet::ETHERTYPE_IPV4 };

    // scapy -> gateway: every packet decrypted to the byte.
    let inners: Vec<Vec<u8>> = SIZES.iter().enumerate().map(|(i, &len)| inner_udp(CLINIC_HOST, SERVER, len, i as u64)).collect();
    let packets: Vec<Value> = inners.iter().enumerate().map(|(i, p)| json!({"seq": i + 1, "inner": hex(p)})).collect();
    let sa = sa_json(&case, GW_SPI, KEY_IN, case.clinic, case.gateway);
    let answer = scapy(json!({"op": "encrypt", "sa": sa, "packets": packets}));
    for (i, outer) in answer["packets"].as_array().unwrap().iter().enumerate() {
        let mut frame = vec![0u8; 14];
        ethernet::write_header(&mut frame, GW_OUT, PEER_OUT, ethertype);
        frame.extend_from_slice(&unhex(outer.as_str().unwrap()));
        w.ports[0].rx.push_back(frame);
        w.poll(1);
        let delivered = std::mem::take(&mut w.ports[1].tx);
        assert_eq!(delivered.len(), 1, "{name}: scapy packet {i} not delivered: {}", w.forwarder.counters.to_json());
        assert_eq!(&delivered[0][14..], &forwarded(&inners[i])[..], "{name}: packet {i}");
    }

    // gateway -> scapy: every packet decrypted by scapy to the byte.
    let replies: Vec<Vec<u8>> = SIZES.iter().enumerate().map(|(i, &len)| inner_udp(SERVER, CLINIC_HOST, len, 100 + i as u64)).collect();
    let mut outers = Vec::new();
    for reply in &replies {
        let mut frame = vec![0u8; 14];
        ethernet::write_header(&mut frame, GW_IN, PEER_IN, ethernet::ETHERTYPE_IPV4);
        frame.extend_from_slice(reply);
        w.ports[1].rx.push_back(frame);
        w.poll(2);
        let sent = std::mem::take(&mut w.ports[0].tx);
        assert_eq!(sent.len(), 1, "{name}: reply not sent: {}", w.forwarder.counters.to_json());
        outers.push(json!(hex(&sent[0][14..])));
    }
    let sa = sa_json(&case, PEER_SPI, KEY_OUT, case.gateway, case.clinic);
    let answer = scapy(json!({"op": "decrypt", "sa": sa, "packets": outers}));
    for (i, result) in answer["packets"].as_array().unwrap().iter().enumerate() {
        let inner = result["inner"].as_str().unwrap_or_else(|| panic!("{name}: scapy refused packet {i}: {}", result["error"]));
        assert_eq!(unhex(inner), forwarded(&replies[i]), "{name}: reply {i}");
    }
    let c = &w.forwarder.counters;
    assert_eq!((c.get(Counter::EspDecrypted), c.get(Counter::EspEncrypted), c.total_dropped()), (6, 6, 0), "{name}");
}

#[test]
fn ipv6_outer_raw_esp() {
    check(Case { clinic: "2001:db8:a::20", gateway: "2001:db8:a::1", esn: false, nat_t: false });
}

#[test]
fn ipv6_outer_raw_esp_with_esn() {
    check(Case { clinic: "2001:db8:a::20", gateway: "2001:db8:a::1", esn: true, nat_t: false });
}

#[test]
fn ipv6_outer_udp_encapsulated() {
    check(Case { clinic: "2001:db8:a::20", gateway: "2001:db8:a::1", esn: false, nat_t: true });
}

#[test]
fn ipv4_outer_raw_esp() {
    check(Case { clinic: "198.51.100.20", gateway: "198.51.100.1", esn: false, nat_t: false });
}

#[test]
fn ipv4_outer_udp_encapsulated_with_esn() {
    check(Case { clinic: "198.51.100.20", gateway: "198.51.100.1", esn: true, nat_t: true });
}
