//! `sekisho-gen`: the traffic generator (see `sekisho_perf::gen`). It owns the
//! `net_vhost` ends of two virtio links; start it before the gateway.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sekisho_dataplane::port::dpdk::{Eal, EthPort};
use sekisho_dataplane::shm::stats;
use sekisho_perf::gen::{Generator, VerifyReport};
use sekisho_perf::topology::{self, Traffic};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sekisho-gen", about = "Traffic generator for Sekisho over virtio links")]
struct Cli {
    /// vhost-user socket facing the gateway's outside port.
    #[arg(long)]
    outside_sock: PathBuf,
    /// vhost-user socket facing the gateway's inside port.
    #[arg(long)]
    inside_sock: PathBuf,
    /// The lcore (CPU) the generator runs on.
    #[arg(long, default_value_t = 0)]
    lcore: u32,
    #[arg(long, default_value = "sekisho-gen")]
    file_prefix: String,
    /// Do not resolve the gateway with ARP/ND; send to this MAC instead (for
    /// a forwarder that does not speak ARP, such as testpmd).
    #[arg(long)]
    gateway_mac: Option<sekisho_dataplane::wire::MacAddr>,
    /// Seconds to wait for the gateway to connect and answer ARP/ND.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// nat (the gateway's job): be the clinics' router at the far end of the
    /// static tunnel and the servers answering them through the NAT pool;
    /// esp: the same tunnel, routed both ways, IPv4 and IPv6 inside (no NAT);
    /// plain: send IP as it is (the gateway under bypass). See topology.rs.
    #[arg(long, value_enum, default_value_t = Traffic::Nat)]
    traffic: Traffic,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Print the gateway's config for this test network (ports on the two
    /// sockets, the static tunnel, and with --traffic nat the pool and tenant) and exit.
    Config {
        #[arg(long)]
        run_dir: PathBuf,
        #[arg(long, default_value = "sekisho-dp")]
        file_prefix: String,
        #[arg(long, default_value_t = 1)]
        worker_lcore: u32,
        #[arg(long, default_value_t = 0)]
        main_lcore: u32,
    },
    /// Send PACKETS mixed-size packets both ways and check each one.
    Verify {
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
        /// Packets in flight at most (below every ring size: no loss by design).
        #[arg(long, default_value_t = 256)]
        window: u64,
        /// Print a live line every second, with the gateway's counters from this stats file.
        #[arg(long)]
        progress: bool,
        #[arg(long)]
        gateway_stats: Option<PathBuf>,
    },
    /// Send FRAME_LEN-byte frames flat out, outside to inside, and measure
    /// (plain traffic only: rate mode does not encrypt).
    Rate {
        #[arg(long, default_value_t = 64)]
        frame_len: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

fn progress_line(report: &VerifyReport, last: &mut (f64, u64, u64), gateway_stats: Option<&PathBuf>) {
    let (t, sent, bytes) = *last;
    let dt = (report.seconds - t).max(1e-3);
    let pps = (report.sent - sent) as f64 / dt;
    let gbps = (report.bytes - bytes) as f64 * 8.0 / dt / 1e9;
    *last = (report.seconds, report.sent, report.bytes);
    let mut line = format!(
        "[{:>5.1}s] sent {:>9}  intact {:>9}  {:>8.0} pps {:>6.3} Gbit/s  corrupted {} duplicates {} misrouted {}",
        report.seconds, report.sent, report.received_intact, pps, gbps, report.corrupted, report.duplicates, report.misrouted
    );
    if let Some(Ok(snap)) = gateway_stats.map(|p| stats::read(p)) {
        use sekisho_dataplane::pipeline::Counter;
        let t = snap.total();
        line += &format!(
            " | gateway rx {} fwd {} drops {} arp/nd {} mbufs {}",
            t.get(Counter::RxPackets),
            t.get(Counter::Forwarded),
            t.total_dropped(),
            t.get(Counter::ArpRepliesSent) + t.get(Counter::NdAdvertisementsSent) + t.get(Counter::NeighbourSolicitationsSent),
            snap.mempool_in_use
        );
    }
    eprintln!("{line}");
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if matches!(cli.mode, Mode::Rate { .. }) && cli.traffic != Traffic::Plain {
        bail!("rate mode sends plain traffic only: add --traffic plain");
    }
    if let Mode::Config { run_dir, file_prefix, worker_lcore, main_lcore } = &cli.mode {
        let config = topology::dataplane_config(&cli.outside_sock, &cli.inside_sock, run_dir, file_prefix, *worker_lcore, *main_lcore, cli.traffic);
        print!("{config}");
        return Ok(());
    }
    for sock in [&cli.outside_sock, &cli.inside_sock] {
        let _ = std::fs::remove_file(sock);
    }
    let args: Vec<String> = [
        "sekisho-gen".to_owned(),
        "-l".to_owned(),
        cli.lcore.to_string(),
        "--no-pci".to_owned(),
        format!("--file-prefix={}", cli.file_prefix),
        "--single-file-segments".to_owned(),
        "-m".to_owned(),
        "256".to_owned(),
        "--log-level=pmd.net.vhost:warning".to_owned(),
        format!("--vdev=net_vhost0,iface={},queues=1", cli.outside_sock.display()),
        format!("--vdev=net_vhost1,iface={},queues=1", cli.inside_sock.display()),
    ]
    .into();
    let eal = Eal::init(&args)?;
    let pool = eal.create_mempool("gen_mbufs", 8191, 256, 2048)?;
    let mut ports = Vec::new();
    for name in ["net_vhost0", "net_vhost1"] {
        let id = eal.port_by_name(name).with_context(|| format!("no port {name}; found {:?}", eal.port_names()))?;
        ports.push(EthPort::start(&eal, id, 1, 1024, 1024, &pool)?);
    }
    let in_use_start = pool.in_use();
    eprintln!("sekisho-gen: waiting for the gateway on {} and {}", cli.outside_sock.display(), cli.inside_sock.display());
    let deadline = Instant::now() + Duration::from_secs_f64(cli.connect_timeout);
    while !ports.iter().all(|p| p.link_up()) {
        if Instant::now() > deadline {
            bail!("the gateway did not connect to the vhost sockets within {} s", cli.connect_timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut generator = Generator::new(ports[0].queue(0, &pool), ports[1].queue(0, &pool), cli.traffic);
    let macs = match cli.gateway_mac {
        Some(mac) => generator.set_gateway_mac([mac, mac]),
        None => {
            let macs = generator.resolve_gateway(Duration::from_secs_f64(cli.connect_timeout)).map_err(anyhow::Error::msg)?;
            // Let the gateway's manager publish what it learned from our ARP/ND.
            std::thread::sleep(Duration::from_millis(100));
            macs
        }
    };
    eprintln!("sekisho-gen: gateway is {} outside, {} inside", macs[0], macs[1]);

    let report = match cli.mode {
        Mode::Verify { packets, window, progress, gateway_stats } => {
            let mut last = (0.0, 0, 0);
            let report = generator.verify(packets, window, |r| {
                if progress {
                    progress_line(r, &mut last, gateway_stats.as_ref());
                }
            });
            if progress {
                progress_line(&report, &mut last, gateway_stats.as_ref());
            }
            serde_json::json!({"mode": "verify", "gateway_macs": [macs[0].to_string(), macs[1].to_string()], "report": report})
        }
        Mode::Config { .. } => unreachable!("handled before EAL starts"),
        Mode::Rate { frame_len, warmup, seconds } => {
            let report = generator.rate(frame_len, Duration::from_secs_f64(warmup), Duration::from_secs_f64(seconds));
            serde_json::json!({"mode": "rate", "report": report, "gen_macs": [ports[0].mac().to_string(), ports[1].mac().to_string()]})
        }
    };
    drop(generator);
    for port in &ports {
        port.stop();
    }
    drop(ports);
    let mut report = report;
    report["mempool"] = serde_json::json!({"in_use_start": in_use_start, "in_use_end": pool.in_use()});
    println!("{report}");
    Ok(())
}
