//! `sekisho-clinics`: the clinic emulator (see `sekisho_perf::clinics`).
//!
//! `demo` is the README's first command: it makes a test site (CA,
//! certificates, one tenant per clinic), starts the emulator, the dataplane
//! and the control process on virtual devices, and shows the clinics
//! building their tunnels and passing verified traffic both ways.
//! `emulate` is the emulator process alone, for a site `setup` made.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use sekisho_dataplane::config;
use sekisho_dataplane::pipeline::Counter;
use sekisho_dataplane::port::dpdk::{Eal, EthPort};
use sekisho_dataplane::shm::stats;
use sekisho_perf::clinics::packets::{Sizes, MAX_FLOWS};
use sekisho_perf::clinics::report::{Latency, Live, Throughput};
use sekisho_perf::clinics::setup::{self, Site, SiteConfig};
use sekisho_perf::clinics::stack::{Stack, GO_FILE};
use sekisho_perf::clinics::{Emulator, Options, Outer};
use sekisho_perf::gen::Generator;
use sekisho_perf::topology::Traffic;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sekisho-clinics", about = "Thousands of clinics and the eligibility system around a Sekisho gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole gateway on virtual devices with the emulator around it,
    /// show the live view, and end with the summary (exit 1 if any check failed).
    Demo {
        #[command(flatten)]
        traffic: TrafficArgs,
        #[command(flatten)]
        site: SiteArgs,
        /// Keep the site (configs, logs, report) here instead of a temporary folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the emulator's report as JSON on stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// Make a test site: CA, gateway certificate, control.toml and dataplane.toml.
    Setup {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        site: SiteArgs,
    },
    /// The emulator process for a site (start it before the dataplane).
    Emulate {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        traffic: TrafficArgs,
        /// The lcore (CPU) the emulator runs on.
        #[arg(long, default_value_t = 0)]
        lcore: u32,
        #[arg(long, default_value = "sekisho-clinics")]
        file_prefix: String,
        /// Seconds to wait for the gateway to connect, answer ARP/ND and for control to be ready.
        #[arg(long, default_value_t = 120.0)]
        connect_timeout: f64,
        #[command(flatten)]
        devices: Devices,
    },
}

/// DPDK devices instead of the site's virtio links: a PCI address
/// (0000:3b:00.0) or a vdev string (net_af_packet0,iface=eth1).
#[derive(Args, Clone, Default)]
struct Devices {
    /// The port toward the clinics' side of the gateway.
    #[arg(long, requires = "inside_device")]
    outside_device: Option<String>,
    /// The port toward its servers' side.
    #[arg(long, requires = "outside_device")]
    inside_device: Option<String>,
}

impl Devices {
    fn pair(&self) -> Option<[&str; 2]> {
        Some([self.outside_device.as_deref()?, self.inside_device.as_deref()?])
    }
}

/// EAL arguments that attach `device`, and the name DPDK gives its port
/// (the dataplane's own reading of a device).
fn attach(device: &str) -> (Vec<String>, String) {
    let probe = if config::pci_name(device).is_some() { vec!["-a".to_owned(), device.to_owned()] } else { vec![format!("--vdev={device}")] };
    (probe, config::device_name(device))
}

#[derive(Args, Clone)]
struct SiteArgs {
    /// Clinics (tenants) the site has.
    #[arg(long, default_value_t = 1000)]
    clinics: usize,
    /// The dataplane's worker lcores (its main lcore is 0).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    workers: Vec<u32>,
    /// NAT session slots per worker.
    #[arg(long, default_value_t = 1 << 20)]
    sessions_per_worker: u32,
    /// Port blocks (512 ports each) a clinic may hold per worker.
    #[arg(long, default_value_t = 8)]
    port_blocks: u16,
    /// `[ike] replay_window` in control.toml: 0 turns anti-replay off, for
    /// replaying the exported pcap in a loop (benchmarks only).
    #[arg(long)]
    replay_window: Option<u32>,
    /// The gateway's ports in dataplane.toml (bare metal), instead of virtio
    /// links to the emulator's sockets.
    #[command(flatten)]
    devices: Devices,
}

impl SiteArgs {
    fn config(&self) -> SiteConfig {
        SiteConfig {
            clinics: self.clinics,
            main_lcore: 0,
            workers: self.workers.clone(),
            file_prefix: "sekisho-clinics-dp".into(),
            mempool_size: 32767,
            sessions_per_worker: self.sessions_per_worker,
            port_blocks: self.port_blocks,
            devices: self.devices.pair().map(|[o, i]| [o.to_owned(), i.to_owned()]),
            replay_window: self.replay_window,
        }
    }
}

#[derive(Args, Clone)]
struct TrafficArgs {
    /// Flows per clinic: UDP, TCP and ICMP in turn.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_FLOWS)))]
    flows: u16,
    /// Inner frame size in bytes (64 to 1440), or imix (7:4:1 of 64, 576 and 1400).
    #[arg(long, default_value = "imix")]
    size: Sizes,
    /// How the clinics reach the gateway.
    #[arg(long, value_enum, default_value_t = Outer::Mixed)]
    outer: Outer,
    /// The clinics' DH group.
    #[arg(long, default_value_t = 14)]
    dh_group: u16,
    /// IKE handshakes in flight at most.
    #[arg(long, default_value_t = 64)]
    ike_window: usize,
    /// IKE handshakes started per second at most (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    setup_rate: f64,
    /// Data packets per second offered (0: as fast as the window allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Data packets in flight at most (below the virtio rings' 1024: no loss by design).
    #[arg(long, default_value_t = 256)]
    window: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many data packets, if sooner.
    #[arg(long)]
    packets: Option<u64>,
    /// Also write the traffic as pcap files (clinics.pcap, servers.pcap) to this folder.
    #[arg(long)]
    pcap: Option<PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    pcap_packets: u64,
    /// No live view.
    #[arg(long)]
    quiet: bool,
}

impl TrafficArgs {
    /// The same arguments, for the emulator process.
    fn to_args(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            ("--flows", self.flows.to_string()),
            ("--size", self.size.to_string()),
            ("--outer", format!("{:?}", self.outer).to_lowercase()),
            ("--dh-group", self.dh_group.to_string()),
            ("--ike-window", self.ike_window.to_string()),
            ("--setup-rate", self.setup_rate.to_string()),
            ("--rate", self.rate.to_string()),
            ("--window", self.window.to_string()),
            ("--seconds", self.seconds.to_string()),
            ("--pcap-packets", self.pcap_packets.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect();
        if let Some(n) = self.packets {
            out.extend(["--packets".to_owned(), n.to_string()]);
        }
        if let Some(p) = &self.pcap {
            out.extend(["--pcap".to_owned(), p.display().to_string()]);
        }
        if self.quiet {
            out.push("--quiet".to_owned());
        }
        out
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup { dir, site } => {
            setup::write(&Site::new(&dir), &site.config())?;
            println!("{}", json!({"site": dir, "clinics": site.clinics}));
            Ok(())
        }
        Command::Emulate { dir, traffic, lcore, file_prefix, connect_timeout, devices } => emulate(&Site::new(&dir), &traffic, lcore, &file_prefix, connect_timeout, &devices),
        Command::Demo { traffic, site, dir, json } => demo(&traffic, &site, dir, json),
    }
}

fn demo(traffic: &TrafficArgs, site_args: &SiteArgs, dir: Option<PathBuf>, print_json: bool) -> Result<()> {
    let temporary = dir.is_none();
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("sekisho-clinics.{}", std::process::id())));
    let site = Site::new(&dir);
    eprintln!("== site in {}: a test CA, the gateway's certificate, {} tenants (one per clinic, all 192.168.1.0/24)", dir.display(), site_args.clinics);
    setup::write(&site, &site_args.config())?;
    let bin_dir = std::env::current_exe()?.parent().context("the binaries' folder")?.to_owned();
    eprintln!("== emulator (lcore 0), sekisho-dataplane (workers on lcores {:?}), sekisho-control", site_args.workers);
    let mut stack = Stack::start(&bin_dir, &site, &traffic.to_args())?;
    let (status, report) = stack.wait()?;
    let dataplane = stack.stop()?;
    drop(stack);
    print_summary(&report, &dataplane);
    if print_json {
        println!("{report}");
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !status.success() || report["verified"] != json!(true) {
        bail!("the run did not pass its checks (site kept with --dir to look)");
    }
    Ok(())
}

fn print_summary(report: &Value, dataplane: &Value) {
    let r = report;
    let c = &r["counters"];
    eprintln!("== summary");
    eprintln!(
        "tunnels: {} of {} clinics up in {:.2} s ({:.0}/s), IPv6 and IPv4 outer, DH {}; failed {}",
        r["tunnels"]["up"], r["clinics"], r["tunnels"]["setup_seconds"].as_f64().unwrap_or(0.0), r["tunnels"]["per_second"].as_f64().unwrap_or(0.0), r["options"]["dh_group"], r["tunnels"]["failed"]
    );
    eprintln!(
        "flows: {} open (UDP, TCP and ICMP; {} TCP handshakes, {} closed, {} failed)",
        r["flows"]["open"], c["tcp_opened"], c["tcp_closed"], c["tcp_failed"]
    );
    eprintln!(
        "data: {} packets sent by the clinics, {} answers back intact; lost {}, corrupted {}, misrouted {}, malformed {}, duplicates {}",
        c["sent"], c["answered"], r["lost"], c["corrupted"], c["misrouted"], c["malformed"], c["duplicates"]
    );
    eprintln!(
        "servers: {} answered; malformed {}, corrupted {}, mapping broken {}, unknown {}",
        r["server"]["answered"], r["server"]["malformed"], r["server"]["corrupted"], r["server"]["mapping_broken"], r["server"]["unknown"]
    );
    let t = &r["throughput"];
    eprintln!(
        "throughput: {:.0} packets/s each way through the gateway, {:.3} Gbit/s of answers (window-limited, one core for all clinics and servers)",
        t["delivered_pps"].as_f64().unwrap_or(0.0),
        t["delivered_gbps"].as_f64().unwrap_or(0.0)
    );
    let l = &r["latency"];
    eprintln!("round trip: p50 {} us, p99 {} us, p99.9 {} us, max {} us", l["p50_us"], l["p99_us"], l["p99_9_us"], l["max_us"]);
    if let Some(g) = dataplane.get("counters") {
        eprintln!(
            "gateway: decrypted {}, encrypted {}, NAT sessions made {}, IKE punted {} and sent {}, dropped {}",
            g["esp_decrypted"], g["esp_encrypted"], g["nat_sessions_created"], g["ike_punted"], g["ike_sent"], g["dropped"]
        );
    }
    eprintln!("RESULT: {}", if r["verified"] == json!(true) { "OK" } else { "FAILED" });
}

fn emulate(site: &Site, traffic: &TrafficArgs, lcore: u32, file_prefix: &str, connect_timeout: f64, devices: &Devices) -> Result<()> {
    let ca = site.ca().map_err(anyhow::Error::msg)?;
    let control: toml::Value = toml::from_str(&std::fs::read_to_string(site.path("control.toml"))?).context("the site's control.toml")?;
    let clinics = control.get("tenants").and_then(toml::Value::as_array).map_or(0, Vec::len);
    // One queue per dataplane worker on each port.
    let queues = control["gateway"].get("workers").and_then(toml::Value::as_integer).unwrap_or(1).clamp(1, 64) as u16;
    let virtio = [format!("net_vhost0,iface={},queues={queues}", site.outside_sock().display()), format!("net_vhost1,iface={},queues={queues}", site.inside_sock().display())];
    let [(outside_args, outside_name), (inside_args, inside_name)] = devices.pair().map_or_else(|| virtio.clone().map(|d| attach(&d)), |pair| pair.map(attach));
    let mut args: Vec<String> = ["sekisho-clinics", "-l", &lcore.to_string(), &format!("--file-prefix={file_prefix}"), "--single-file-segments", "-m", "256"]
        .map(str::to_owned)
        .into();
    args.extend(["--log-level=lib.vhost.*:error".to_owned(), "--log-level=pmd.net.vhost:warning".to_owned()]);
    if !outside_args.iter().chain(&inside_args).any(|a| a == "-a") {
        args.push("--no-pci".to_owned());
    }
    args.extend(outside_args.into_iter().chain(inside_args));
    let eal = Eal::init(&args)?;
    let pool = eal.create_mempool("clinic_mbufs", 32767, 256, 2048)?;
    let mut ports = Vec::new();
    for name in [&outside_name, &inside_name] {
        let id = eal.port_by_name(name).with_context(|| format!("no port {name}; found {:?}", eal.port_names()))?;
        ports.push(EthPort::start(&eal, id, queues, 1024, 1024, &pool)?);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(connect_timeout);
    while !ports.iter().all(|p| p.link_up()) {
        if Instant::now() > deadline {
            bail!("the links did not come up within {connect_timeout} s (the gateway connects to the vhost sockets, or the NICs link)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut generator = Generator::new(ports[0].queue(0, &pool), ports[1].queue(0, &pool), Traffic::Plain);
    let macs = generator.resolve_gateway(Duration::from_secs_f64(connect_timeout)).map_err(anyhow::Error::msg)?;
    eprintln!("sekisho-clinics: gateway is {} outside, {} inside", macs[0], macs[1]);
    // On the site's virtio links, control runs beside us: wait until it is ready.
    let go = site.path(GO_FILE);
    while devices.pair().is_none() && !go.exists() {
        if Instant::now() > deadline {
            bail!("control was not ready within {connect_timeout} s ({} missing)", go.display());
        }
        generator.idle(Duration::from_millis(20));
    }
    let options = Options {
        clinics,
        flows: traffic.flows,
        sizes: traffic.size,
        outer: traffic.outer,
        dh_group: traffic.dh_group,
        ike_window: traffic.ike_window,
        setup_rate: traffic.setup_rate,
        setup_timeout: Duration::from_secs(120),
        rate: traffic.rate,
        window: traffic.window,
        seconds: traffic.seconds,
        packets: traffic.packets,
    };
    let live = Live::new(!traffic.quiet, Some(site.run_dir().join("stats")), clinics);
    eprintln!("sekisho-clinics: {clinics} clinics with certificates from the site's CA; building tunnels");
    let lanes = (1..queues).map(|q| [ports[0].queue(q, &pool), ports[1].queue(q, &pool)]).collect();
    let mut emulator = Emulator::new(generator, lanes, options, ca, setup::POOL.parse().expect("pool"), live);
    let up = emulator.connect();
    let open = emulator.open();
    emulator.traffic();
    let pcap = match &traffic.pcap {
        Some(dir) => {
            let (clinics_frames, server_frames) = emulator.export_pcap(dir, traffic.pcap_packets)?;
            json!({"dir": dir, "clinics_pcap_frames": clinics_frames, "servers_pcap_frames": server_frames})
        }
        None => Value::Null,
    };
    emulator.close();
    let c = emulator.counters.clone();
    let server = emulator.server().counters.clone();
    let gateway = stats::read(&site.run_dir().join("stats")).ok().map(|snap| {
        let t = snap.total();
        json!({"nat_sessions": t.get(Counter::NatSessionsCreated).saturating_sub(t.get(Counter::NatSessionsExpired)), "dropped": t.total_dropped()})
    });
    let server_faults = server.malformed + server.unknown + server.corrupted + server.mapping_broken + server.no_connection;
    let verified = up as usize == clinics
        && c.tcp_failed == 0
        && c.tcp_closed == c.tcp_opened
        && c.sent > 0
        && c.answered == c.sent
        && c.corrupted + c.misrouted + c.malformed + c.duplicates + c.esp_refused == 0
        && server_faults == 0
        && emulator.server().open_connections() == 0;
    let report = json!({
        "clinics": clinics,
        "options": {"flows": traffic.flows, "size": traffic.size.to_string(), "outer": traffic.outer, "dh_group": traffic.dh_group,
                    "rate": traffic.rate, "window": traffic.window, "seconds": traffic.seconds},
        "tunnels": {"up": up, "failed": c.tunnels_failed, "setup_seconds": emulator.setup_seconds,
                    "per_second": up as f64 / emulator.setup_seconds.max(1e-9), "failures": emulator.failures()},
        "flows": {"open": open},
        "counters": c,
        "lost": c.lost(),
        "server": server,
        "throughput": Throughput::of(&c, emulator.traffic_seconds),
        "latency": Latency::of(&emulator.latency),
        "gateway": gateway,
        "pcap": pcap,
        "verified": verified,
        "mempool_in_use": pool.in_use(),
    });
    println!("{report}");
    Ok(())
}
