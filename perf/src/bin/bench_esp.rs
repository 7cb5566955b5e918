//! The ESP path on one core, in process (no device I/O): decrypt (classify,
//! SPI lookup, replay check, decrypt, inner checks, selector check, next-hop
//! rewrite) and encrypt (route lookup, SA, encrypt, outer headers), at
//! several sizes and SA counts, each printed beside the raw AES-GCM rate of
//! the same engine on the same core in the same run, and the plain
//! forwarding cost of the same pipeline (bypass) as a floor.
//!
//! Packets are written into warm buffers a burst of 32 at a time, and only
//! the processing of each burst is timed. IPv6 outer, IPv4 inner, AES-128-GCM.

use clap::Parser;
use sekisho_dataplane::addr::Ipv4Cidr;
use sekisho_dataplane::craft::{write_udp_frame, Flow};
use sekisho_dataplane::esp::aead::{GcmKey, ICV_LEN};
use sekisho_dataplane::esp::encrypt::overhead;
use sekisho_dataplane::esp::sa::{Lifetime, OutboundSa, Selectors, Tunnel};
use sekisho_dataplane::esp::tunnel::{self, OuterFields};
use sekisho_dataplane::neighbour::NeighbourTable;
use sekisho_dataplane::pipeline::{Action, Forwarder, Interface, TunnelSettings, PREFETCH_SA_AHEAD, PREFETCH_SLOT_AHEAD};
use sekisho_dataplane::port::memory::HeapBuf;
use sekisho_dataplane::tunnels::{self, decode_hex, SaConfig, TunnelConfig};
use sekisho_dataplane::wire::{ethernet, MacAddr};
use sekisho_dataplane::Side;
use sekisho_perf::bench::{median_ns_per_op, BenchRecord};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

const GW_OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const GW_IN: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const ROUTER_OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa1]);
const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb1]);
const KEY: &str = "0102030405060708090a0b0c0d0e0f10a1a2a3a4";
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);

#[derive(Parser)]
#[command(about = "ESP decrypt and encrypt rate on one core, beside raw AES-GCM")]
struct Args {
    /// Frame sizes of the plaintext side (Ethernet + inner IPv4 packet).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 512, 1400])]
    sizes: Vec<usize>,
    /// Numbers of SAs (tunnels) the packets are spread over.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 1000, 100_000])]
    sas: Vec<usize>,
    /// Packets per pass (at least one per SA).
    #[arg(long, default_value_t = 200_000)]
    packets: usize,
    /// Passes per measurement; the median counts.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    #[arg(long, default_value = "perf/results/esp.jsonl")]
    results: String,
    /// Measure one direction only (for profiling).
    #[arg(long, value_enum)]
    only: Option<Only>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Decrypt,
    Encrypt,
}

/// Tunnel `i`'s clinic: an outer IPv6 address and an inner /28.
fn clinic(i: usize) -> (Ipv6Addr, Ipv4Cidr) {
    let outer = Ipv6Addr::new(0x2001, 0xdb8, 0xc, (i >> 16) as u16, i as u16, 0, 0, 1);
    let subnet = Ipv4Addr::from(0x6440_0000u32 + ((i as u32) << 4)); // 100.64.0.0/10 in /28s
    (outer, Ipv4Cidr { addr: subnet, prefix_len: 28 })
}

fn host(subnet: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.addr) + 5)
}

struct Gateway {
    forwarder: Forwarder,
    spis: Vec<u32>,
    /// No tunnels, bypass on: the clinics' frames go in clear.
    plain: bool,
}

fn gateway(n: usize) -> Gateway {
    let configs: Vec<TunnelConfig> = (0..n)
        .map(|i| {
            let (outer, subnet) = clinic(i);
            TunnelConfig {
                name: format!("clinic-{i}"),
                remote: IpAddr::V6(outer),
                local: None,
                udp_encap: false,
                remote_port: 4500,
                ipv4: vec![subnet],
                ipv6: vec![],
                worker: None,
                tenant: None,
                copy_dscp: false,
                lifetime: Default::default(),
                inbound: vec![SaConfig { spi: None, key: KEY.into(), esn: false, replay_window: None }],
                outbound: SaConfig { spi: Some(0x1000 + i as u32), key: KEY.into(), esn: false, replay_window: None },
            }
        })
        .collect();
    let outside: Vec<IpAddr> = vec!["2001:db8:a::1".parse().unwrap()];
    let tables = tunnels::build(&configs, 1, &outside, None).expect("bench tunnels");
    let spis = tables.inbound_spis.iter().map(|(_, s)| s[0]).collect();
    let interfaces = [
        Interface { ipv6: vec!["2001:db8:a::1/64".parse().unwrap()], gateway_ipv6: Some("2001:db8:a::fe".parse().unwrap()), ..Default::default() },
        Interface { ipv4: vec!["10.0.0.1/24".parse().unwrap()], ..Default::default() },
    ];
    let neighbours = Arc::new(NeighbourTable::new([
        (Side::Outside, "2001:db8:a::fe".parse().unwrap(), ROUTER_OUT),
        (Side::Inside, IpAddr::V4(SERVER), SERVER_MAC),
    ]));
    let settings = TunnelSettings { mss_clamp: None, ..TunnelSettings::default() };
    let sad = tables.cores.into_iter().next().unwrap();
    let forwarder = Forwarder::new(interfaces, [GW_OUT, GW_IN], neighbours).with_tunnels(sad, Arc::new(tables.routes), settings);
    Gateway { forwarder, spis, plain: false }
}

fn inner_frame(src: Ipv4Addr, dst: Ipv4Addr, size: usize, seq: u64) -> Vec<u8> {
    let flow = Flow { src: IpAddr::V4(src), dst: IpAddr::V4(dst), src_port: 40000, dst_port: 443 };
    let mut frame = vec![0u8; size];
    write_udp_frame(&mut frame, GW_IN, SERVER_MAC, &flow, seq);
    frame
}

/// The clinics' side: writes the next ESP frame of tunnel `i` (its sequence counting up).
struct Clinics {
    sa: OutboundSa,
    seqs: Vec<u64>,
    scratch: Vec<u8>,
}

impl Clinics {
    fn new(n: usize) -> Clinics {
        let sa = OutboundSa::new(0, GcmKey::new(&decode_hex(KEY).unwrap()).unwrap(), false, Selectors::default(), 0, Lifetime::default());
        Clinics { sa, seqs: vec![0; n], scratch: vec![0; 2048] }
    }

    fn esp_frame(&mut self, gw: &Gateway, i: usize, size: usize, buf: &mut HeapBuf) {
        let (outer, subnet) = clinic(i);
        let inner = inner_frame(host(subnet), SERVER, size, self.seqs[i]);
        let tunnel = Tunnel { local: IpAddr::V6(outer), remote: "2001:db8:a::1".parse().unwrap(), udp: None, copy_dscp: false, tenant: None };
        self.sa.spi = gw.spis[i];
        self.sa.seq = self.seqs[i];
        let inner_len = size - 14;
        let prefix = tunnel::prefix_len(&tunnel);
        let total = tunnel::outer_len(&tunnel, inner_len);
        let frame = &mut self.scratch[..14 + total];
        frame[14 + prefix..14 + prefix + inner_len].copy_from_slice(&inner[14..]);
        tunnel::encapsulate(&mut frame[14..], &tunnel, &mut self.sa, inner_len, OuterFields { ttl: 64, ident: 0 }).unwrap();
        ethernet::write_header(frame, GW_OUT, ROUTER_OUT, ethernet::ETHERTYPE_IPV6);
        self.seqs[i] = self.sa.seq;
        buf.refill(frame);
    }
}

/// A plain frame from the server to tunnel `i`'s clinic, written in `scratch`.
fn plain_frame(i: usize, size: usize, seq: u64, scratch: &mut [u8], buf: &mut HeapBuf) {
    let flow = Flow { src: IpAddr::V4(SERVER), dst: IpAddr::V4(host(clinic(i).1)), src_port: 40000, dst_port: 443 };
    write_udp_frame(&mut scratch[..size], GW_IN, SERVER_MAC, &flow, seq);
    buf.refill(&scratch[..size]);
}

/// One pass of `packets` packets through the gateway, packet `p` on tunnel
/// `p % n`. Each burst of 32 is written into warm buffers first (as a NIC
/// delivers into recycled mbufs), then only its processing is timed.
/// Returns ns per packet.
fn pass(gw: &mut Gateway, clinics: &mut Clinics, side: Side, size: usize, packets: usize, bufs: &mut [HeapBuf]) -> f64 {
    let n = gw.spis.len();
    let (mut timed, mut forwarded, mut p) = (0u128, 0usize, 0usize);
    while p < packets {
        let burst = bufs.len().min(packets - p);
        for (k, buf) in bufs[..burst].iter_mut().enumerate() {
            let i = (p + k) % n;
            match side {
                Side::Outside if gw.plain => {
                    let mut frame = inner_frame(host(clinic(i).1), SERVER, size, 0);
                    frame[0..6].copy_from_slice(&GW_OUT.0);
                    buf.refill(&frame);
                }
                Side::Outside => clinics.esp_frame(gw, i, size, buf),
                Side::Inside => plain_frame(i, size, (p + k) as u64, &mut clinics.scratch, buf),
            }
        }
        let start = Instant::now();
        gw.forwarder.begin_batch(1);
        // As the worker does: SAs prefetched a few packets ahead.
        let burst = &mut bufs[..burst];
        for ahead in burst.iter().take(PREFETCH_SLOT_AHEAD) {
            gw.forwarder.prefetch_slot(side, ahead);
        }
        for ahead in burst.iter().take(PREFETCH_SA_AHEAD) {
            gw.forwarder.prefetch_sa(side, ahead);
        }
        for k in 0..burst.len() {
            if let Some(ahead) = burst.get(k + PREFETCH_SLOT_AHEAD) {
                gw.forwarder.prefetch_slot(side, ahead);
            }
            if let Some(ahead) = burst.get(k + PREFETCH_SA_AHEAD) {
                gw.forwarder.prefetch_sa(side, ahead);
            }
            if gw.forwarder.process(side, &mut burst[k]) == Action::Forward {
                forwarded += 1;
            }
        }
        let burst = burst.len();
        timed += start.elapsed().as_nanos();
        black_box(&bufs);
        p += burst;
    }
    assert_eq!(forwarded, packets, "every packet must pass ({n} SAs, {side}): {}", gw.forwarder.counters.to_json());
    timed as f64 / packets as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = GcmKey::new(&decode_hex(KEY).unwrap())?;
    println!("ESP on one core, IPv6 outer, IPv4 inner, AES-128-GCM; IPsec-MB arch {}", dpdk_sys::ipsec_mb::arch());
    println!(
        "{:>5} {:>7} | {:>8} {:>8} {:>7} {:>7} | {:>8} {:>8} {:>7} {:>7} | {:>8}",
        "bytes", "SAs", "raw open", "decrypt", "Mpps", "ratio", "raw seal", "encrypt", "Mpps", "ratio", "forward"
    );
    let mut records = Vec::new();
    for &size in &args.sizes {
        let inner_len = size - 14;
        // The cipher's work per packet: inner packet, padding and trailer.
        let payload = inner_len + overhead(inner_len) - 16 - ICV_LEN;
        let mut data = vec![0u8; payload];
        let raw_seal = median_ns_per_op(100, || {
            black_box(key.seal(&[1; 8], &[0; 8], black_box(&mut data)));
        });
        // Opening needs a valid tag: time seal + open and take the seal away.
        let pair = median_ns_per_op(100, || {
            let tag = key.seal(&[1; 8], &[0; 8], black_box(&mut data));
            black_box(key.open(&[1; 8], &[0; 8], black_box(&mut data), &tag)).unwrap();
        });
        let raw_open = pair - raw_seal;
        let mut bufs: Vec<HeapBuf> = (0..32).map(|_| HeapBuf::from_frame(&[])).collect();
        // The pipeline without ESP: plaintext frames forwarded under bypass, the harness included.
        let mut plain = Gateway { forwarder: gateway(0).forwarder.with_bypass(), spis: vec![0], plain: true };
        let forward =
            median((0..args.passes).map(|_| pass(&mut plain, &mut Clinics::new(1), Side::Outside, size, args.packets, &mut bufs)).collect());
        for &n in &args.sas {
            let packets = args.packets.max(n);
            let mut gw = gateway(n);
            let mut clinics = Clinics::new(n);
            let mut measure = |side: Side| match args.only {
                Some(Only::Decrypt) if side == Side::Inside => f64::NAN,
                Some(Only::Encrypt) if side == Side::Outside => f64::NAN,
                _ => median((0..args.passes).map(|_| pass(&mut gw, &mut clinics, side, size, packets, &mut bufs)).collect()),
            };
            let (decrypt, encrypt) = (measure(Side::Outside), measure(Side::Inside));
            println!(
                "{size:>5} {n:>7} | {raw_open:>8.1} {decrypt:>8.1} {:>7.2} {:>7.2} | {raw_seal:>8.1} {encrypt:>8.1} {:>7.2} {:>7.2} | {forward:>8.1}",
                1e3 / decrypt,
                raw_open / decrypt,
                1e3 / encrypt,
                raw_seal / encrypt,
            );
            for (bench, ns, raw) in [("esp_decrypt", decrypt, raw_open), ("esp_encrypt", encrypt, raw_seal)] {
                records.push(
                    BenchRecord::new(bench, "sekisho", size, ns)
                        .with("sas", n)
                        .with("raw_ns", raw)
                        .with("engine", "ipsec-mb")
                        .with("ratio_to_raw", raw / ns)
                        .with("ns_beside_cipher", ns - raw)
                        .with("plain_forward_ns", forward),
                );
            }
        }
    }
    sekisho_perf::bench::append_records(&args.results, &records)?;
    Ok(())
}
