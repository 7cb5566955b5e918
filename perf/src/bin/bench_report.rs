//! `sekisho-bench-report`: the standard benchmark set in one run, written
//! as a Markdown table, a JSON file and two SVG plots.
//!
//! - The whole gateway from outside (control, dataplane, the clinic
//!   emulator on virtio links): frame sizes 64, 512, 1400 and IMIX with
//!   1,000 tunnels; 1, 1,000 and 10,000 tunnels; 1,000,000 NAT sessions.
//!   Throughput counts every packet through the gateway, both ways.
//! - The gateway's own capacity per worker core against DPDK's ipsec-secgw
//!   on the same `net_pcap`/`net_null` devices (`perf/secgw/compare.sh`,
//!   inbound ESP decryption, where the generator costs nothing).
//! - Raw AES-GCM (Intel IPsec-MB, the dataplane's engine) on one core, for
//!   each size: every figure above is also given as its ratio to it.
//!
//! `--workers` sets the dataplane's worker lcores, so that the same command
//! measures 1 to N cores on a bigger machine.

use anyhow::{Context, Result};
use clap::Parser;
use sekisho_dataplane::esp::aead::GcmKey;
use sekisho_perf::bench::{cpu_model, median_ns_per_op};
use sekisho_perf::clinics::packets::{imix_mean, Sizes, ETHERNET, MAX_FLOWS};
use sekisho_perf::clinics::setup::{self, Site, SiteConfig};
use sekisho_perf::clinics::stack::Stack;
use sekisho_perf::plot::{self, Series};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "The standard benchmark set: sizes, tunnels, sessions; ratios to raw AES-GCM and ipsec-secgw; tables and plots")]
struct Args {
    /// The dataplane's worker lcores (its main lcore is 0, the emulator's too).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    workers: Vec<u32>,
    /// Seconds of traffic per case.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Tunnels of the frame-size cases.
    #[arg(long, default_value_t = 1000)]
    clinics: usize,
    /// Tunnel counts of the tunnel cases (IMIX).
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    tunnels: Vec<usize>,
    /// NAT sessions of the session case (1,000 clinics, sessions/1,000 flows each, 64 bytes).
    #[arg(long, default_value_t = 1_000_000)]
    sessions: usize,
    /// Skip the comparison with DPDK's ipsec-secgw (it builds ipsec-secgw from dpdk-doc first).
    #[arg(long)]
    skip_secgw: bool,
    /// Where report.md, report.json and the plots go.
    #[arg(long, default_value = "perf/results")]
    out: PathBuf,
}

const SIZES: [&str; 4] = ["64", "512", "1400", "imix"];

/// Mean inner frame length of a size (IMIX is 7:4:1 of 64, 576 and 1400).
fn mean_frame(size: &str) -> f64 {
    match size.parse::<Sizes>().expect("a size") {
        Sizes::Fixed(n) => n as f64,
        Sizes::Imix => imix_mean(|n| n as f64),
    }
}

/// Raw AES-GCM opens per second on this core for ESP payloads carrying an
/// inner frame of `size` (IMIX: the mix's mean cost).
fn raw_gcm_per_second(key: &GcmKey, size: &str) -> f64 {
    let ns = |frame: usize| {
        // The ESP payload: the inner packet, padding to 4 bytes with the pad length and next header.
        let payload = (frame - ETHERNET + 2).div_ceil(4) * 4;
        let mut data = vec![0x5au8; payload];
        let icv = key.seal(&[1; 8], &[0; 8], &mut data);
        let sealed = data.clone();
        median_ns_per_op(200, || {
            data.copy_from_slice(&sealed);
            std::hint::black_box(key.open(&[1; 8], &[0; 8], &mut data, &icv).is_ok());
        })
    };
    let mean_ns = match size.parse::<Sizes>().expect("a size") {
        Sizes::Fixed(n) => ns(n),
        Sizes::Imix => imix_mean(ns),
    };
    1e9 / mean_ns
}

/// One run of the whole gateway with the emulator.
struct Case<'a> {
    name: String,
    clinics: usize,
    flows: u16,
    size: &'a str,
    sessions_per_worker: u32,
}

/// Runs a case; the figures of the emulator's report that the tables take.
fn gateway_case(bin_dir: &Path, root: &Path, args: &Args, case: Case) -> Result<Value> {
    let Case { name, clinics, flows, size, sessions_per_worker } = case;
    eprintln!("== {name}: {clinics} tunnels, {flows} flows each, {size}-byte frames, workers {:?}", args.workers);
    let site = Site::new(&root.join(&name));
    let config = SiteConfig {
        clinics,
        main_lcore: 0,
        workers: args.workers.clone(),
        file_prefix: "sekisho-report-dp".into(),
        mempool_size: 32767,
        sessions_per_worker,
        port_blocks: 8,
        devices: None,
        replay_window: None,
    };
    setup::write(&site, &config)?;
    let emulator_args: Vec<String> = [
        "--flows".to_owned(),
        flows.to_string(),
        "--size".to_owned(),
        size.to_owned(),
        "--seconds".to_owned(),
        args.seconds.to_string(),
        "--dh-group".to_owned(),
        "19".to_owned(),
    ]
    .into();
    let mut stack = Stack::start(bin_dir, &site, &emulator_args)?;
    let (_, report) = stack.wait()?;
    let dataplane = stack.stop()?;
    drop(stack);
    let c = &report["counters"];
    let result = json!({
        "case": name, "tunnels": report["tunnels"]["up"], "tunnels_wanted": clinics, "flows_per_tunnel": flows, "size": size,
        "setup_seconds": report["tunnels"]["setup_seconds"], "tunnels_per_second": report["tunnels"]["per_second"],
        "nat_sessions": report["gateway"]["nat_sessions"], "verified": report["verified"],
        "gateway_pps": report["throughput"]["gateway_pps"], "delivered_gbps": report["throughput"]["delivered_gbps"],
        "sent": c["sent"], "answered": c["answered"], "lost": report["lost"],
        "latency": report["latency"], "gateway_dropped": dataplane["counters"]["dropped"],
    });
    eprintln!("   {}", result);
    Ok(result)
}

/// DPDK's ipsec-secgw against Sekisho's dataplane on the same devices, per frame size.
fn secgw(root: &Path) -> Result<Vec<Value>> {
    eprintln!("== ipsec-secgw against sekisho-dataplane on net_pcap/net_null (perf/secgw/compare.sh)");
    let out = std::process::Command::new("bash")
        .arg(root.join("perf/secgw/compare.sh"))
        .args(["--frame-lens", "64,512,1400", "--repeat", "1", "--seconds", "3", "--warmup", "1"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("perf/secgw/compare.sh")?;
    anyhow::ensure!(out.status.success(), "perf/secgw/compare.sh failed: {}", String::from_utf8_lossy(&out.stdout));
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["bench"] == "secgw_compare").collect())
}

/// A case's name on a plot: its frame size, its tunnels or its sessions.
fn case_label(case: &Value) -> String {
    let name = case["case"].as_str().unwrap_or("");
    match name.split_once('-') {
        Some(("size", "imix")) => "IMIX".into(),
        Some(("size", size)) => format!("{size} B"),
        Some(("tunnels", n)) => format!("{n} tun."),
        _ => format!("{}k sess.", case["nat_sessions"].as_u64().unwrap_or(0) / 1000),
    }
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_m(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{:.3}", v / 1e6))
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let repo = std::env::current_dir()?;
    let bin_dir = std::env::current_exe()?.parent().context("the binaries' folder")?.to_owned();
    let root = std::env::temp_dir().join(format!("sekisho-report.{}", std::process::id()));
    let workers = args.workers.len() as f64;

    eprintln!("== raw AES-128-GCM opens per second on one core (Intel IPsec-MB)");
    let key = GcmKey::new(&[7u8; 20]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let raw: Vec<f64> = SIZES.iter().map(|s| raw_gcm_per_second(&key, s)).collect();

    let mut sizes = Vec::new();
    for size in SIZES {
        sizes.push(gateway_case(&bin_dir, &root, &args, Case { name: format!("size-{size}"), clinics: args.clinics, flows: 3, size, sessions_per_worker: 1 << 20 })?);
    }
    let mut tunnels = Vec::new();
    for &n in &args.tunnels {
        match sizes.iter().find(|c| c["size"] == "imix" && c["tunnels_wanted"] == json!(n)) {
            Some(case) => tunnels.push(case.clone()),
            None => tunnels.push(gateway_case(&bin_dir, &root, &args, Case { name: format!("tunnels-{n}"), clinics: n, flows: 3, size: "imix", sessions_per_worker: 1 << 20 })?),
        }
    }
    let session_clinics = 1000.min(args.sessions);
    let flows = (args.sessions / session_clinics).clamp(1, usize::from(MAX_FLOWS)) as u16;
    let per_worker = ((args.sessions as f64 * 1.25 / workers) as u32).next_power_of_two().max(1 << 20);
    let sessions = gateway_case(&bin_dir, &root, &args, Case { name: "sessions".into(), clinics: session_clinics, flows, size: "64", sessions_per_worker: per_worker })?;
    let secgw = if args.skip_secgw { Vec::new() } else { secgw(&repo).unwrap_or_else(|e| {
        eprintln!("   ipsec-secgw comparison failed: {e:#}");
        Vec::new()
    }) };
    let _ = std::fs::remove_dir_all(&root);

    // The tables.
    let secgw_of = |size: &str| secgw.iter().find(|v| v["frame_len"].as_u64().is_some_and(|n| n.to_string() == size));
    let mut md = String::new();
    let _ = writeln!(md, "# Sekisho benchmark report\n");
    let _ = writeln!(
        md,
        "{} ({} cores), dataplane workers on lcores {:?}; the emulator (all clinics and servers, one core) and the dataplane's main thread share lcore 0. Generated by `sekisho-bench-report`; raw data in report.json.\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.workers
    );
    let _ = writeln!(md, "## The whole gateway, from outside ({} tunnels, 3 flows each: UDP, TCP, ICMP)\n", args.clinics);
    let _ = writeln!(md, "Packets through the gateway, both ways (Mpps); each is decrypted or encrypted once. Raw AES-GCM: opens per second of the same ESP payload on one core, times the workers. Verified: every answer came back intact.\n");
    let _ = writeln!(md, "| frame | gateway Mpps | Gbit/s (answers) | p50 µs | p99 µs | p99.9 µs | max µs | raw AES-GCM Mpps | ratio to raw | verified |");
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for (case, raw) in sizes.iter().zip(&raw) {
        let l = &case["latency"];
        let pps = f(&case["gateway_pps"]);
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {} | {} |",
            case["size"].as_str().unwrap_or(""),
            fmt_m(pps),
            f(&case["delivered_gbps"]).unwrap_or(0.0),
            f(&l["p50_us"]).unwrap_or(0.0),
            f(&l["p99_us"]).unwrap_or(0.0),
            f(&l["p99_9_us"]).unwrap_or(0.0),
            f(&l["max_us"]).unwrap_or(0.0),
            raw * workers / 1e6,
            fmt_ratio(pps.map(|p| p / (raw * workers))),
            case["verified"]
        );
    }
    let _ = writeln!(md, "\n## The gateway's own capacity per worker core: inbound ESP against DPDK's ipsec-secgw\n");
    let _ = writeln!(md, "Same pcap in (`net_pcap`, replayed), `net_null` out, same worker lcore (`perf/secgw/compare.sh`). IMIX is not one frame size there.\n");
    let _ = writeln!(md, "| frame | Sekisho Mpps | ipsec-secgw Mpps | Sekisho / ipsec-secgw | raw AES-GCM Mpps (one core) | Sekisho / raw |");
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (size, raw) in SIZES.iter().zip(&raw) {
        let line = secgw_of(size);
        let ours = line.and_then(|l| f(&l["sekisho"]["median_tx_pps"]));
        let theirs = line.and_then(|l| f(&l["secgw"]["median_tx_pps"]));
        let _ = writeln!(md, "| {size} | {} | {} | {} | {:.3} | {} |", fmt_m(ours), fmt_m(theirs), fmt_ratio(ours.zip(theirs).map(|(a, b)| a / b)), raw / 1e6, fmt_ratio(ours.map(|o| o / raw)));
    }
    let _ = writeln!(md, "\n## Tunnels (IMIX, 3 flows each)\n");
    let _ = writeln!(md, "| tunnels | up | setup s | tunnels/s | gateway Mpps | p99 µs | ratio to raw | verified |");
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let raw_imix = raw[3] * workers;
    for case in &tunnels {
        let pps = f(&case["gateway_pps"]);
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.0} | {} | {:.0} | {} | {} |",
            case["tunnels_wanted"],
            case["tunnels"],
            f(&case["setup_seconds"]).unwrap_or(0.0),
            f(&case["tunnels_per_second"]).unwrap_or(0.0),
            fmt_m(pps),
            f(&case["latency"]["p99_us"]).unwrap_or(0.0),
            fmt_ratio(pps.map(|p| p / raw_imix)),
            case["verified"]
        );
    }
    let small = &sizes[0];
    let _ = writeln!(md, "\n## NAT sessions (64-byte frames)\n");
    let _ = writeln!(md, "| sessions held | tunnels | gateway Mpps | p99 µs | against {} sessions | verified |", small["nat_sessions"]);
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | --- |");
    for case in [small, &sessions] {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {} |",
            case["nat_sessions"],
            case["tunnels"],
            fmt_m(f(&case["gateway_pps"])),
            f(&case["latency"]["p99_us"]).unwrap_or(0.0),
            fmt_ratio(f(&case["gateway_pps"]).zip(f(&small["gateway_pps"])).map(|(a, b)| a / b)),
            case["verified"]
        );
    }

    // The plots.
    let categories: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    let throughput = plot::bars(
        "Packets per second against frame size",
        &categories,
        "packets per second",
        &[
            Series { name: "Sekisho, whole gateway".into(), values: sizes.iter().map(|c| f(&c["gateway_pps"])).collect() },
            Series { name: "Sekisho, inbound ESP".into(), values: SIZES.iter().map(|s| secgw_of(s).and_then(|l| f(&l["sekisho"]["median_tx_pps"]))).collect() },
            Series { name: "ipsec-secgw, inbound ESP".into(), values: SIZES.iter().map(|s| secgw_of(s).and_then(|l| f(&l["secgw"]["median_tx_pps"]))).collect() },
            Series { name: "raw AES-GCM, one core".into(), values: raw.iter().map(|&r| Some(r)).collect() },
        ],
    );
    let latency_cases: Vec<&Value> = sizes.iter().chain(tunnels.iter().filter(|c| !c["case"].as_str().unwrap_or("").starts_with("size"))).chain([&sessions]).collect();
    let latency = plot::bars(
        "Round trip, clinic to server and back (µs)",
        &latency_cases.iter().map(|c| case_label(c)).collect::<Vec<_>>(),
        "microseconds",
        &["p50_us", "p99_us", "p99_9_us"]
            .iter()
            .map(|p| Series { name: p.trim_end_matches("_us").replace('_', ".").to_owned(), values: latency_cases.iter().map(|c| f(&c["latency"][p])).collect() })
            .collect::<Vec<_>>(),
    );
    std::fs::create_dir_all(&args.out)?;
    let report = json!({
        "cpu": cpu_model(), "workers": args.workers, "seconds": args.seconds,
        "raw_aes_gcm_opens_per_second": SIZES.iter().zip(&raw).map(|(s, r)| (s.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
        "mean_frame": SIZES.iter().map(|s| (s.to_string(), json!(mean_frame(s)))).collect::<serde_json::Map<_, _>>(),
        "sizes": sizes, "tunnels": tunnels, "sessions": sessions, "secgw": secgw,
    });
    std::fs::write(args.out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(args.out.join("report.md"), &md)?;
    std::fs::write(args.out.join("report-throughput.svg"), throughput)?;
    std::fs::write(args.out.join("report-latency.svg"), latency)?;
    print!("{md}");
    eprintln!("== written: {}/report.md, report.json, report-throughput.svg, report-latency.svg", args.out.display());
    Ok(())
}
