//! Connection tracking and NAPT on one core, in process (no crypto, no
//! device I/O): established traffic at 64 and 1400 bytes with 1,000 and
//! 1,000,000 live sessions, new sessions per second (with and without a new
//! pool port), memory per session, and rule lookup with 10 and 10,000 rules.
//!
//! Established traffic runs in bursts of 32 round trips: each session's
//! headers are copied into a burst's (cache-warm) buffers, translated onto
//! the pool, swapped (which keeps every checksum), and translated back as
//! the server's answer. Each figure is per packet (half a round trip), the
//! copy and swaps included; sessions are visited in random order, as a
//! NIC's queues would bring them, and prefetched as the worker does (a
//! packet's index slots 8 packets ahead, its session 4 ahead, once the table
//! outgrows the caches), and again without prefetching. In the same run,
//! the same rewrite without any session lookup (stateless) is the floor.

use clap::Parser;
use sekisho_dataplane::addr::Ipv4Cidr;
use sekisho_dataplane::nat::{flow, rewrite, NatCore, Outcome};
use sekisho_dataplane::pipeline::{CounterBlock, PREFETCH_SA_AHEAD, PREFETCH_SLOT_AHEAD};
use sekisho_dataplane::Side;
use sekisho_dataplane::policy::rules::{Rule, RuleSet, Verdict};
use sekisho_dataplane::policy::{NatConfig, Policy, TenantConfig};
use sekisho_dataplane::wire::{checksum, ipv4};
use sekisho_perf::bench::{append_records, median_ns_per_op, BenchRecord};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

/// Bytes of IPv4 and UDP headers.
const HEADERS: usize = 28;
const BURST: usize = 32;

#[derive(Parser)]
#[command(about = "Connection tracking and NAPT per core: established and new sessions, memory, rules")]
struct Args {
    /// Live session counts to measure established traffic with.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    sessions: Vec<u32>,
    /// IPv4 packet sizes.
    #[arg(long, value_delimiter = ',', default_value = "64,1400")]
    sizes: Vec<usize>,
    /// Append JSON lines here.
    #[arg(long)]
    out: Option<String>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn policy(tenants: usize, sessions_per_worker: u32) -> Arc<Policy> {
    let nat: NatConfig =
        toml::from_str(&format!("pool = [\"100.64.0.0/28\"]\nsessions_per_worker = {sessions_per_worker}")).expect("nat config");
    let tenants: Vec<TenantConfig> = (0..tenants)
        .map(|i| {
            toml::from_str(&format!(
                "name = \"t{i}\"\nsubnets = [\"192.168.0.0/16\"]\nmax_sessions = {sessions_per_worker}\nport_blocks = 126\n\
                 [[rules]]\ndst = \"10.1.0.0/16\"\nprotocol = \"udp\"\naction = \"allow\""
            ))
            .expect("tenant config")
        })
        .collect();
    Arc::new(Policy::compile(&nat, &tenants, &[], 1).expect("policy"))
}

/// A UDP packet of `len` bytes with valid checksums.
fn udp(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    ipv4::write_header(&mut p, len as u16, 17, 64, 1, src, dst);
    p[20..22].copy_from_slice(&src_port.to_be_bytes());
    p[22..24].copy_from_slice(&dst_port.to_be_bytes());
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    let acc = checksum::sum(0, &p[12..20]) + 17 + (len - 20) as u32;
    let sum = checksum::finish(checksum::sum(acc, &p[20..]));
    p[26..28].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Swaps source and destination addresses and ports (checksums unchanged).
#[inline]
fn swap(p: &mut [u8]) {
    for i in 0..4 {
        p.swap(12 + i, 16 + i);
    }
    p.swap(20, 22);
    p.swap(21, 23);
}

/// Endpoints of session `i`: 1,000 clinic hosts each talking to many servers.
fn endpoints(i: u32) -> (Ipv4Addr, Ipv4Addr) {
    let host = i % 1000;
    let server = i / 1000;
    (Ipv4Addr::new(192, 168, (host >> 8) as u8, host as u8), Ipv4Addr::new(10, 1, (server >> 8) as u8, server as u8))
}

fn established(sessions: u32, size: usize, records: &mut Vec<BenchRecord>) {
    let mut nat = NatCore::new(policy(1, sessions.max(1024)), 0);
    let mut counters = CounterBlock::default();
    // Each session's headers (IP and UDP, as the clinic sends them), stored
    // in random session order: read in sequence, they visit sessions at random.
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut order: Vec<u32> = (0..sessions).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let headers: Vec<[u8; HEADERS]> = order
        .iter()
        .map(|&i| {
            let (host, server) = endpoints(i);
            let mut p = udp(host, 5000, server, 53, size);
            let header: [u8; HEADERS] = p[..HEADERS].try_into().expect("headers");
            assert_eq!(nat.upstream(0, &mut p, 0, &mut counters), Outcome::Pass { tenant: 0 });
            nat.events.clear();
            header
        })
        .collect();
    // A burst's buffers stay in cache, as a NIC's recycled mbufs do; the
    // payload is the same in every packet, so only the headers change.
    let mut burst: Vec<Vec<u8>> = (0..BURST).map(|_| udp(Ipv4Addr::LOCALHOST, 1, Ipv4Addr::LOCALHOST, 1, size)).collect();
    let pass = |nat: &mut NatCore, burst: &mut [Vec<u8>], counters: &mut CounterBlock, prefetch: bool| {
        for group in headers.chunks(BURST) {
            for (buf, header) in burst.iter_mut().zip(group) {
                buf[..HEADERS].copy_from_slice(header);
            }
            let burst = &mut burst[..group.len()];
            // From the clinic, then the answer from the server (addresses swapped).
            for from in [Side::Outside, Side::Inside] {
                if prefetch {
                    // (NatCore skips these while the table is small.)
                    burst.iter().take(PREFETCH_SLOT_AHEAD).for_each(|p| nat.prefetch_index(from, 0, p));
                    burst.iter().take(PREFETCH_SA_AHEAD).for_each(|p| nat.prefetch_session(from, 0, p));
                }
                for k in 0..burst.len() {
                    if prefetch {
                        if let Some(ahead) = burst.get(k + PREFETCH_SLOT_AHEAD) {
                            nat.prefetch_index(from, 0, ahead);
                        }
                        if let Some(ahead) = burst.get(k + PREFETCH_SA_AHEAD) {
                            nat.prefetch_session(from, 0, ahead);
                        }
                    }
                    let p = &mut burst[k];
                    black_box(match from {
                        Side::Outside => nat.upstream(0, p, 1000, counters),
                        Side::Inside => nat.downstream(0, p, 1000, counters, |_| Some(0)),
                    });
                    swap(p);
                }
            }
        }
    };
    let ns = time_passes(sessions, || pass(&mut nat, &mut burst, &mut counters, true));
    let no_prefetch = time_passes(sessions, || pass(&mut nat, &mut burst, &mut counters, false));
    assert_eq!(counters.get(sekisho_dataplane::pipeline::Counter::NatSessionsCreated), u64::from(sessions), "no new sessions while timing");
    // The floor: copying the headers in and the same parse and rewrite both ways, without state.
    let pool = Ipv4Addr::new(100, 64, 0, 0);
    let floor = time_passes(sessions, || {
        for group in headers.chunks(BURST) {
            for (p, header) in burst.iter_mut().zip(group) {
                p[..HEADERS].copy_from_slice(header);
                let f = flow::parse(p).expect("valid");
                let (inside, port) = (Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).expect("4")), f.ports().0);
                rewrite::set_endpoint(p, &f, rewrite::End::Source, pool, 1024);
                swap(p);
                let f = flow::parse(p).expect("valid");
                rewrite::set_endpoint(p, &f, rewrite::End::Destination, inside, port);
                swap(p);
            }
        }
    });
    println!(
        "established  {sessions:>9} sessions {size:>5} B: {ns:6.1} ns/packet ({:5.1} Mpps), {no_prefetch:6.1} without prefetch; stateless rewrite {floor:5.1} ns; {} bytes/session",
        1e3 / ns,
        nat.sessions.bytes_per_session()
    );
    records.push(
        BenchRecord::new("nat", "established", size, ns)
            .with("sessions", sessions)
            .with("no_prefetch_ns", (no_prefetch * 100.0).round() / 100.0)
            .with("stateless_rewrite_ns", (floor * 100.0).round() / 100.0)
            .with("bytes_per_session", nat.sessions.bytes_per_session()),
    );
}

/// Median time per packet (two per round trip) of five passes over `sessions` round trips.
fn time_passes(sessions: u32, mut pass: impl FnMut()) -> f64 {
    if sessions < 100_000 {
        return median_ns_per_op(200, &mut pass) / (2.0 * f64::from(sessions));
    }
    pass();
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            pass();
            start.elapsed().as_nanos() as f64 / (2.0 * f64::from(sessions))
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// New sessions per second: `count` first packets, each a new session; with
/// `new_endpoints`, each from a new clinic endpoint (a new pool port too).
fn new_sessions(count: u32, new_endpoints: bool, records: &mut Vec<BenchRecord>) {
    let tenants = if new_endpoints { 16 } else { 1 };
    let packets: Vec<(u32, Vec<u8>)> = (0..count)
        .map(|i| {
            let (tenant, host, server) = if new_endpoints {
                // 16 tenants (one pool address each), 4,000 hosts each.
                let host = i / 16;
                (i % 16, Ipv4Addr::new(192, 168, (host >> 8) as u8, host as u8), Ipv4Addr::new(10, 1, 0, 1))
            } else {
                let (host, server) = endpoints(i);
                (0, host, server)
            };
            (tenant, udp(host, 5000, server, 53, 64))
        })
        .collect();
    let mut samples = Vec::new();
    for _ in 0..3 {
        let mut nat = NatCore::new(policy(tenants, count), 0);
        let mut counters = CounterBlock::default();
        let mut work = packets.clone();
        let start = Instant::now();
        for (tenant, p) in work.iter_mut() {
            black_box(nat.upstream(*tenant, p, 0, &mut counters));
            nat.events.clear();
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(count));
        assert_eq!(nat.sessions.len(), count as usize, "every packet made a session");
    }
    samples.sort_by(f64::total_cmp);
    let ns = samples[1];
    let what = if new_endpoints { "new session, new port" } else { "new session, mapping reused" };
    println!("{what:<30} {count:>9}: {ns:6.1} ns each ({:5.2} M/s)", 1e3 / ns);
    records.push(BenchRecord::new("nat", if new_endpoints { "new_session_new_port" } else { "new_session" }, 64, ns).with("sessions", count));
}

/// First-match lookup over `count` random rules of one tenant.
fn rules(count: usize, records: &mut Vec<BenchRecord>) {
    let mut rng = Rng(12345);
    let random_prefix = |rng: &mut Rng, min: u8| Ipv4Cidr { addr: Ipv4Addr::from(rng.next() as u32), prefix_len: min + rng.below(u64::from(33 - min)) as u8 };
    let rules: Vec<Rule> = (0..count)
        .map(|_| {
            let low = rng.below(65536) as u16;
            Rule {
                tenant: Some(0),
                src: random_prefix(&mut rng, 8),
                dst: random_prefix(&mut rng, 8),
                protocol: Some([6, 17][rng.below(2) as usize]),
                dst_ports: low..=low.saturating_add(rng.below(1024) as u16),
                verdict: Verdict::Allow,
            }
        })
        .collect();
    let set = RuleSet::compile(&rules);
    // Half the lookups hit a rule (its own first address and port), half are random.
    let probes: Vec<(Ipv4Addr, Ipv4Addr, u8, u16)> = (0..4096)
        .map(|i| {
            if i % 2 == 0 {
                let r = &rules[rng.below(count as u64) as usize];
                (r.src.addr, r.dst.addr, r.protocol.unwrap_or(6), *r.dst_ports.start())
            } else {
                (Ipv4Addr::from(rng.next() as u32), Ipv4Addr::from(rng.next() as u32), 6, rng.below(65536) as u16)
            }
        })
        .collect();
    let mut at = 0;
    let ns = median_ns_per_op(200, || {
        let (src, dst, protocol, port) = probes[at % probes.len()];
        at += 1;
        black_box(set.classify(0, src, dst, protocol, port));
    });
    println!("rules {count:>6}: {ns:6.1} ns per lookup");
    records.push(BenchRecord::new("rules", "classify", 0, ns).with("rules", count as u64));
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut records = Vec::new();
    for count in [10, 10_000] {
        rules(count, &mut records);
    }
    new_sessions(1_000_000, false, &mut records);
    new_sessions(64_000, true, &mut records);
    for &sessions in &args.sessions {
        for &size in &args.sizes {
            established(sessions, size, &mut records);
        }
    }
    if let Some(path) = &args.out {
        append_records(path, &records)?;
    }
    Ok(())
}
