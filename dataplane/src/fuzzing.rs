//! Entry points for the fuzz targets in `fuzz/` (and for the test that
//! replays their corpus on every CI run, without a fuzzing engine): a
//! gateway with one static tunnel on in-memory ports, fed arbitrary bytes.
//! Each entry point checks that every frame is accounted for.

use crate::esp::aead::GcmKey;
use crate::esp::sa::{Lifetime, OutboundSa, Selectors, Tunnel};
use crate::esp::aead::ICV_LEN;
use crate::esp::{HEADER_LEN, IP_PROTOCOL_ESP, IV_LEN};
use crate::neighbour::NeighbourTable;
use crate::pipeline::{Counter, Forwarder, Interface, TunnelSettings};
use crate::port::memory::MemoryPort;
use crate::tunnels::{self, TunnelConfig};
use crate::wire::{ethernet, ipv6, MacAddr};
use crate::worker::Worker;
use crate::Side;
use std::net::IpAddr;
use std::sync::Arc;

const GW_OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const GW_IN: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa1]);
const KEY: [u8; 20] = [0x42; 20];
const KEY_HEX: &str = "4242424242424242424242424242424242424242";

/// A gateway and the clinic at the far end of its one tunnel.
pub struct Harness {
    worker: Worker<MemoryPort>,
    now_ms: u64,
    clinic_sa: OutboundSa,
    /// The clinic's view of the tunnel (its address and ours).
    clinic: Tunnel,
}

impl Harness {
    /// A gateway with a routed tunnel (IPv4 and IPv6 inside).
    pub fn new() -> Harness {
        Harness::build(false)
    }

    /// A gateway whose tunnel belongs to a tenant behind NAT (pool
    /// 100.64.0.0/31, the clinic may reach 10.0.0.0/24).
    pub fn with_nat() -> Harness {
        Harness::build(true)
    }

    fn build(nat: bool) -> Harness {
        let (subnets, tenant) = if nat { ("", "tenant = \"fuzz\"\n") } else { ("ipv6 = [\"2001:db8:c::/48\"]\n", "") };
        let config: TunnelConfig = toml::from_str(&format!(
            "name = \"fuzz\"\nremote = \"2001:db8:a::20\"\nipv4 = [\"203.0.113.0/24\"]\n{subnets}{tenant}\
             [[inbound]]\nspi = 0x00100001\nkey = \"{KEY_HEX}\"\nreplay_window = 64\n[outbound]\nspi = 4096\nkey = \"{KEY_HEX}\"\n"
        ))
        .expect("fuzz tunnel");
        let policy = nat.then(|| {
            use crate::policy::{NatConfig, Policy, TenantConfig};
            let nat: NatConfig = toml::from_str("pool = [\"100.64.0.0/31\"]\nblock_size = 64\nsessions_per_worker = 256").expect("fuzz nat");
            let tenant: TenantConfig =
                toml::from_str("name = \"fuzz\"\nsubnets = [\"203.0.113.0/24\"]\n[[rules]]\ndst = \"10.0.0.0/24\"\naction = \"allow\"").expect("fuzz tenant");
            Arc::new(Policy::compile(&nat, &[tenant], &[], 1).expect("fuzz policy"))
        });
        let outside: Vec<IpAddr> = vec!["2001:db8:a::1".parse().unwrap(), "198.51.100.1".parse().unwrap()];
        let tables = tunnels::build(&[config], 1, &outside, policy.as_deref()).expect("fuzz tables");
        let interfaces = [
            Interface {
                ipv4: vec!["198.51.100.1/24".parse().unwrap()],
                ipv6: vec!["2001:db8:a::1/64".parse().unwrap()],
                gateway_ipv4: Some("198.51.100.254".parse().unwrap()),
                gateway_ipv6: Some("2001:db8:a::fe".parse().unwrap()),
            },
            Interface { ipv4: vec!["10.0.0.1/24".parse().unwrap()], ipv6: vec!["2001:db8:b::1/64".parse().unwrap()], ..Default::default() },
        ];
        let neighbours = Arc::new(NeighbourTable::new([
            (Side::Outside, "2001:db8:a::20".parse().unwrap(), PEER),
            (Side::Inside, "10.0.0.7".parse().unwrap(), PEER),
        ]));
        let sad = tables.cores.into_iter().next().expect("one core");
        let mut forwarder = Forwarder::new(interfaces, [GW_OUT, GW_IN], neighbours).with_tunnels(
            sad,
            Arc::new(tables.routes),
            TunnelSettings { mss_clamp: Some(1300), ..TunnelSettings::default() },
        );
        if let Some(policy) = policy {
            forwarder = forwarder.with_nat(crate::nat::NatCore::new(policy, 0));
        }
        let clinic_sa = OutboundSa::new(0x0010_0001, GcmKey::new(&KEY).expect("key"), false, Selectors::default(), 0, Lifetime::default());
        let clinic = Tunnel { local: "2001:db8:a::20".parse().unwrap(), remote: "2001:db8:a::1".parse().unwrap(), udp: None, copy_dscp: false, tenant: None };
        Harness { worker: Worker::new(MemoryPort::new(GW_OUT), MemoryPort::new(GW_IN), forwarder), now_ms: 1, clinic_sa, clinic }
    }

    /// Runs one frame in and checks that every frame is accounted for
    /// exactly once: what came in (and what the gateway made: the rests of
    /// split packets, solicitations) was sent, consumed or dropped and counted.
    fn run(&mut self, side: Side, frame: Vec<u8>) {
        let balance = |c: &crate::pipeline::CounterBlock| {
            let made = c.get(Counter::RxPackets)
                + c.get(Counter::InnerFragmented)
                + c.get(Counter::NeighbourSolicitationsSent)
                + c.get(Counter::FragmentsReleased)
                // Held fragments count as gone when held, and again when released or timed out.
                + c.dropped(crate::pipeline::DropReason::FragmentTimeout);
            let gone = c.get(Counter::TxPackets) + c.total_dropped() + c.get(Counter::NeighbourRepliesReceived) + c.get(Counter::FragmentsHeld);
            made as i64 - gone as i64
        };
        let before = balance(&self.worker.forwarder.counters);
        self.worker.ports[side as usize].rx.push_back(frame);
        self.worker.poll(self.now_ms);
        assert_eq!(balance(&self.worker.forwarder.counters), before, "a frame was lost or counted twice");
        for port in &mut self.worker.ports {
            port.tx.clear();
        }
    }

    /// Any frame, on the port the first byte picks: the outer classifier,
    /// ARP/ND, IKE and ESP parsing, and the path into tunnels.
    pub fn frame(&mut self, data: &[u8]) {
        let Some((&selector, frame)) = data.split_first() else { return };
        let side = if selector & 1 == 0 { Side::Outside } else { Side::Inside };
        let mut frame = frame.to_vec();
        // Often address it to us, so the fuzzer reaches past the MAC check.
        if selector & 2 == 0 && frame.len() >= 6 {
            frame[..6].copy_from_slice(&if side == Side::Outside { GW_OUT } else { GW_IN }.0);
        }
        self.run(side, frame);
    }

    /// An authentic ESP packet whose plaintext (inner packet, padding, pad
    /// length and next header) is `data`: everything after the ICV check.
    pub fn esp_plaintext(&mut self, data: &[u8]) {
        if data.len() > 1400 {
            return;
        }
        let frame = self.esp_frame(data);
        self.run(Side::Outside, frame);
    }

    /// Behind NAT (a harness [`Harness::with_nat`]): the first byte's low bit
    /// picks an ESP plaintext from the clinic (through decryption, its
    /// tenant's rules and NAT) or an IPv4 packet from the inside, sent to
    /// the pool address the second bit picks (back through NAT into the
    /// tunnel); the next 6 bits advance the clock by that many seconds.
    pub fn nat_pipeline(&mut self, data: &[u8]) {
        let Some((&selector, rest)) = data.split_first() else { return };
        self.now_ms += u64::from(selector >> 2) * 1000;
        if selector & 1 == 0 {
            if rest.len() <= 1400 {
                let frame = self.esp_frame(rest);
                self.run(Side::Outside, frame);
            }
            return;
        }
        let mut frame = vec![0u8; ethernet::HEADER_LEN + rest.len()];
        ethernet::write_header(&mut frame, GW_IN, PEER, ethernet::ETHERTYPE_IPV4);
        frame[ethernet::HEADER_LEN..].copy_from_slice(rest);
        let header_len = usize::from(rest.first().copied().unwrap_or(0) & 0x0f) * 4;
        if rest.len() >= header_len.max(20) {
            let ip = &mut frame[ethernet::HEADER_LEN..];
            ip[16..20].copy_from_slice(&[100, 64, 0, selector >> 1 & 1]);
            crate::wire::ipv4::set_checksum(ip);
        }
        self.run(Side::Inside, frame);
    }

    /// The ESP frame from the clinic that carries `data` as its plaintext.
    fn esp_frame(&mut self, data: &[u8]) -> Vec<u8> {
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (self.clinic.local, self.clinic.remote) else { unreachable!("IPv6 tunnel") };
        let esp_len = HEADER_LEN + IV_LEN + data.len() + ICV_LEN;
        let mut frame = vec![0u8; ethernet::HEADER_LEN + ipv6::HEADER_LEN + esp_len];
        ethernet::write_header(&mut frame, GW_OUT, PEER, ethernet::ETHERTYPE_IPV6);
        ipv6::write_header(&mut frame[ethernet::HEADER_LEN..], esp_len as u16, IP_PROTOCOL_ESP, 64, &src, &dst);
        let seq = self.clinic_sa.next_sequence().expect("fuzz runs stay below 2^32 packets");
        let esp = &mut frame[ethernet::HEADER_LEN + ipv6::HEADER_LEN..];
        esp[..4].copy_from_slice(&self.clinic_sa.spi.to_be_bytes());
        esp[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        esp[8..16].copy_from_slice(&seq.to_be_bytes());
        esp[16..16 + data.len()].copy_from_slice(data);
        let aad: [u8; 8] = esp[..8].try_into().expect("8 bytes");
        let iv: [u8; 8] = esp[8..16].try_into().expect("8 bytes");
        let icv = self.clinic_sa.key.seal(&iv, &aad, &mut esp[16..16 + data.len()]);
        esp[16 + data.len()..].copy_from_slice(&icv);
        frame
    }
}

/// Valid inputs to start the fuzzers from (the fuzzers' corpus grows from
/// these): for `frame`, ESP from the clinic over IPv6, packets from the inside
/// into the tunnel (IPv4 with DF, without, and IPv6), a TCP SYN, and UDP 4500
/// and 500 to the gateway; for `esp_plaintext`, well-formed plaintexts.
pub fn seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use crate::craft::{write_udp_frame, Flow};
    let udp = |src: &str, dst: &str, len: usize, dst_mac: MacAddr| {
        let flow = Flow { src: src.parse().unwrap(), dst: dst.parse().unwrap(), src_port: 4500, dst_port: 4500 };
        let mut frame = vec![0u8; len];
        write_udp_frame(&mut frame, dst_mac, PEER, &flow, 1);
        frame
    };
    let with_selector = |selector: u8, frame: Vec<u8>| [vec![selector], frame].concat();
    let mut frames = vec![
        with_selector(1, udp("10.0.0.7", "203.0.113.5", 100, GW_IN)),
        with_selector(1, udp("10.0.0.7", "203.0.113.5", 1514, GW_IN)),
        with_selector(1, udp("2001:db8:b::7", "2001:db8:c::5", 200, GW_IN)),
        with_selector(0, udp("198.51.100.20", "198.51.100.1", 60, GW_OUT)),
        with_selector(0, udp("2001:db8:a::20", "2001:db8:a::1", 80, GW_OUT)),
    ];
    let mut no_df = udp("10.0.0.7", "203.0.113.5", 1600, GW_IN);
    no_df[14 + 6] = 0;
    frames.push(with_selector(1, no_df));
    // ESP from the clinic, sealed with the tunnel's key.
    let mut harness = Harness::new();
    let inner = &udp("203.0.113.5", "10.0.0.7", 120, GW_IN)[ethernet::HEADER_LEN..];
    let mut plaintext = inner.to_vec();
    plaintext.extend_from_slice(&[1, 2, 2, crate::esp::NEXT_HEADER_IPV4]);
    let plaintexts = vec![plaintext.clone(), [inner, &[0, crate::esp::NEXT_HEADER_IPV6]].concat(), vec![0, 0, 0, 59]];
    harness.worker.ports[0].rx.clear();
    let esp = harness.esp_frame(&plaintext);
    frames.push(with_selector(0, esp));
    (frames, plaintexts)
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}


/// Connection tracking and NAT fed arbitrary inner packets: one core, two
/// tenants with the same subnet, and a live UDP, TCP and echo session each.
pub struct NatHarness {
    nat: crate::nat::NatCore,
    now_ms: u64,
}

/// The sessions' far end and the pool the harness uses.
const NAT_SERVER: [u8; 4] = [10, 1, 0, 5];
const NAT_HOST: [u8; 4] = [192, 168, 1, 10];

impl Default for NatHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl NatHarness {
    pub fn new() -> NatHarness {
        use crate::policy::{NatConfig, Policy, TenantConfig};
        let nat: NatConfig = toml::from_str("pool = [\"100.64.0.0/31\"]\nblock_size = 64\nsessions_per_worker = 256").expect("fuzz nat");
        let tenant = |name: &str| -> TenantConfig {
            toml::from_str(&format!("name = \"{name}\"\nsubnets = [\"192.168.1.0/24\"]\nmax_sessions = 200\n[[rules]]\ndst = \"10.1.0.0/16\"\naction = \"allow\"")).expect("fuzz tenant")
        };
        let policy = Policy::compile(&nat, &[tenant("a"), tenant("b")], &[], 1).expect("fuzz policy");
        let mut harness = NatHarness { nat: crate::nat::NatCore::new(Arc::new(policy), 0), now_ms: 0 };
        for packet in nat_packets(NAT_HOST, NAT_SERVER) {
            for tenant in 0..2 {
                harness.run(&[&[tenant][..], &packet[..]].concat());
            }
        }
        harness
    }

    /// `data[0]`: bit 0 picks the tenant, bit 1 the direction (set: from the
    /// inside), bits 2..7 advance the clock by that many seconds; the rest is
    /// an IPv4 packet. Whatever passes must carry a valid IP header checksum.
    pub fn run(&mut self, data: &[u8]) {
        use crate::nat::Outcome;
        let Some((&selector, packet)) = data.split_first() else { return };
        self.now_ms += u64::from(selector >> 2) * 1000;
        let mut ip = packet.to_vec();
        let mut counters = crate::pipeline::CounterBlock::default();
        // The pipeline hands NAT only packets whose IPv4 header validated.
        let Ok(header) = crate::wire::ipv4::Packet::new_checked(&ip[..]) else { return };
        let (dst, total) = (header.dst(), header.total_len());
        ip.truncate(total);
        let outcome = if selector & 2 == 0 {
            self.nat.upstream(u32::from(selector & 1), &mut ip, self.now_ms, &mut counters)
        } else {
            let Some(address) = self.nat.policy.pool_address(dst) else { return };
            self.nat.downstream(address, &mut ip, self.now_ms, &mut counters, |_| Some(0))
        };
        if let Outcome::Pass { tenant } = outcome {
            assert!(tenant < 2);
            assert_eq!(crate::wire::checksum::checksum(&ip[..usize::from(ip[0] & 0x0f) * 4]), 0, "header checksum after translation");
        }
        // Released fragments go round again, as the worker sends them.
        while let Some(h) = self.nat.fragments.take_released() {
            self.nat.fragments.free(h);
        }
        self.nat.maintain(self.now_ms, &mut counters);
        self.nat.events.clear();
        assert!(self.nat.sessions.len() <= self.nat.sessions.capacity());
    }
}

/// A UDP datagram, a TCP SYN and an echo request from `host` to `server`.
fn nat_packets(host: [u8; 4], server: [u8; 4]) -> Vec<Vec<u8>> {
    let build = |protocol: u8, l4: &[u8]| {
        let mut p = vec![0u8; 20 + l4.len()];
        crate::wire::ipv4::write_header(&mut p, (20 + l4.len()) as u16, protocol, 64, 1, host.into(), server.into());
        p[20..].copy_from_slice(l4);
        p
    };
    let udp = [0x13, 0x88, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4];
    let mut tcp = [0u8; 20];
    tcp[0..4].copy_from_slice(&[0x9c, 0x40, 1, 0xbb]);
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    let echo = [8, 0, 0, 0, 0x42, 0x42, 0, 1];
    vec![build(17, &udp), build(6, &tcp), build(1, &echo)]
}

/// Seeds for the `nat_pipeline` target: a clinic's UDP datagram, TCP SYN
/// and echo request as ESP plaintexts, and answers to the first pool ports.
pub fn nat_pipeline_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for packet in nat_packets([203, 0, 113, 5], [10, 0, 0, 7]) {
        seeds.push([&[0u8][..], &packet, &[1, 2, 2, crate::esp::NEXT_HEADER_IPV4]].concat());
    }
    for mut packet in nat_packets([10, 0, 0, 7], [100, 64, 0, 0]) {
        packet[22..24].copy_from_slice(&1024u16.to_be_bytes());
        crate::wire::ipv4::set_checksum(&mut packet);
        seeds.push([&[1u8][..], &packet].concat());
    }
    seeds
}

/// Seeds for the `nat_inner` target: the sessions' packets both ways.
pub fn nat_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for packet in nat_packets(NAT_HOST, NAT_SERVER) {
        seeds.push([&[0u8][..], &packet].concat());
    }
    // Answers to the pool's first address and first ports.
    for mut packet in nat_packets(NAT_SERVER, [100, 64, 0, 0]) {
        packet[22..24].copy_from_slice(&1024u16.to_be_bytes());
        crate::wire::ipv4::set_checksum(&mut packet);
        seeds.push([&[2u8][..], &packet].concat());
    }
    seeds
}

/// A message as the control process reads it from a ring: decoded, or
/// refused, never a panic; what decodes encodes to the same message.
pub fn to_control_message(data: &[u8]) {
    use crate::shm::messages::{ToControl, FIXED_LEN};
    if let Ok(message) = ToControl::decode(data) {
        let mut head = [0u8; FIXED_LEN];
        let bytes = message.encode(&mut head).concat();
        assert_eq!(ToControl::decode(&bytes), Ok(message));
    }
}

/// The dataplane's side of the control ring: a message as the manager
/// reads it, and a tunnel it carries checked and installed (or refused)
/// by a table manager, never a panic; what decodes encodes to the same.
pub struct ControlRingHarness {
    manager: crate::tables::TableManager,
    tables: Vec<crate::sad::SaTable>,
    nat: crate::policy::NatConfig,
    policy: std::sync::Arc<crate::policy::Policy>,
    parts: crate::shm::messages::TenantParts,
}

impl Default for ControlRingHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlRingHarness {
    pub fn new() -> ControlRingHarness {
        let nat = toml::from_str::<crate::policy::NatConfig>("pool = [\"100.64.0.0/30\"]").expect("NAT config");
        let policy = crate::policy::Policy::compile(
            &nat,
            &[crate::policy::TenantConfig { name: "clinic-1".into(), subnets: vec!["192.168.0.0/16".parse().expect("prefix")], port_blocks: 2, max_sessions: 100, rules: vec![], inbound: vec![] }],
            &[],
            2,
        )
        .expect("policy");
        let outside = vec!["2001:db8::1".parse().expect("address"), "192.0.2.1".parse().expect("address")];
        let policy = std::sync::Arc::new(policy);
        let manager = crate::tables::TableManager::new(&[], 2, outside, Some(policy.clone())).expect("manager");
        ControlRingHarness { manager, tables: vec![crate::sad::SaTable::new(0), crate::sad::SaTable::new(1)], nat, policy, parts: Default::default() }
    }

    pub fn run(&mut self, data: &[u8]) {
        use crate::shm::messages::ToDataplane;
        let Ok(message) = ToDataplane::decode(data) else { return };
        assert_eq!(ToDataplane::decode(&message.encode()).as_ref(), Ok(&message));
        let now = std::time::Instant::now();
        let change = match &message {
            ToDataplane::Tunnel(config) => self.manager.upsert(config, now),
            ToDataplane::TunnelDown(name) => self.manager.remove(name, now),
            ToDataplane::SendIke { .. } => return,
            ToDataplane::Tenants { part, parts, tenants } => {
                let Ok(Some(tenants)) = self.parts.add(*part, *parts, tenants.clone()) else { return };
                if let Ok(compiled) = self.policy.compile_replacement(&self.nat, &tenants, &[], 2) {
                    let compiled = std::sync::Arc::new(compiled);
                    if self.manager.set_policy(compiled.clone()).is_ok() {
                        self.policy = compiled;
                    }
                }
                return;
            }
            ToDataplane::Reset => {
                for change in self.manager.reset(now) {
                    crate::tables::apply(&mut self.tables[usize::from(change.core)], change.update);
                }
                return;
            }
        };
        if let Ok(change) = change {
            crate::tables::apply(&mut self.tables[usize::from(change.core)], change.update);
        }
    }
}

/// Seeds for the `control_ring` target: a tunnel, its removal, an IKE packet.
pub fn control_ring_seeds() -> Vec<Vec<u8>> {
    use crate::shm::messages::ToDataplane;
    let key = "00112233445566778899aabbccddeeff01020304";
    let tunnel: crate::tunnels::TunnelConfig = toml::from_str(&format!(
        "name = \"clinic-1/00100000\"\nremote = \"2001:db8::2\"\nudp_encap = true\nipv4 = [\"192.168.1.0/24\"]\ntenant = \"clinic-1\"\nworker = 0\n\
         [[inbound]]\nspi = 1048576\nkey = \"{key}\"\n[outbound]\nspi = 3000\nkey = \"{key}\"\n"
    ))
    .expect("seed tunnel");
    [
        ToDataplane::Tunnel(tunnel),
        ToDataplane::TunnelDown("clinic-1/00100000"),
        ToDataplane::SendIke { from: "[2001:db8::1]:4500".parse().expect("address"), to: "[2001:db8::2]:4500".parse().expect("address"), payload: &[0; 28] },
        ToDataplane::Reset,
        ToDataplane::Tenants { part: 0, parts: 1, tenants: vec![toml::from_str("name = \"clinic-1\"\nsubnets = [\"192.168.0.0/16\"]\n[[rules]]\ndst = \"10.0.0.0/8\"\naction = \"allow\"\n").expect("seed tenant")] },
    ]
    .iter()
    .map(ToDataplane::encode)
    .collect()
}

/// Seeds for the `shm_message` target: one message of each kind.
pub fn shm_message_seeds() -> Vec<Vec<u8>> {
    use crate::esp::sa::{Direction, Expiry, SaEvent};
    use crate::shm::messages::{ToControl, FIXED_LEN};
    let event = SaEvent { spi: 0x0010_0001, direction: Direction::Inbound, expiry: Expiry::Soft, packets: 9, bytes: 900 };
    [ToControl::Punted { worker: 1, side: Side::Outside, frame: &[0x45, 0, 0, 28] }, ToControl::SaEvent(event), ToControl::TenantSessions { worker: 1, sessions: 3, tenant: "clinic-1" }]
        .iter()
        .map(|m| m.encode(&mut [0u8; FIXED_LEN]).concat())
        .collect()
}
