//! `sekisho-bench-forward`: the dataplane's forwarding rate over virtio links
//! at 64 and 1400 bytes, beside a plain DPDK forwarder (`dpdk-testpmd` in MAC
//! forwarding mode: it rewrites the Ethernet addresses and nothing else) on
//! the same links, with the same generator, in the same run. The ratio is the
//! figure. Appends one JSON line per measurement to `perf/results/forward.jsonl`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use sekisho_perf::topology;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sekisho-bench-forward")]
struct Cli {
    /// Frame lengths to measure.
    #[arg(long, value_delimiter = ',', default_value = "64,1400")]
    sizes: Vec<usize>,
    /// Seconds measured per point, after one second of warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Measurements per point, alternating baseline and Sekisho; the median counts.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(long, default_value = "perf/results/forward.jsonl")]
    output: PathBuf,
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: String,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    std::env::current_exe().expect("current_exe").with_file_name(name)
}

fn wait_for(path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} never appeared", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One point: the generator sends `size`-byte frames flat out into the
/// device under test (`dut`), which it starts once the vhost sockets exist.
fn measure(dir: &Path, size: usize, seconds: f64, dut: &str, testpmd: &str) -> Result<serde_json::Value> {
    let (outside, inside) = (dir.join("outside.sock"), dir.join("inside.sock"));
    let mut gen = Command::new(bin("sekisho-gen"));
    gen.args(["--outside-sock", outside.to_str().unwrap(), "--inside-sock", inside.to_str().unwrap()])
        .args(["--lcore", "0", "--file-prefix", "bench-gen", "--traffic", "plain"]);
    if dut == "testpmd" {
        gen.args(["--gateway-mac", "02:00:00:00:00:fe"]);
    }
    gen.args(["rate", "--frame-len", &size.to_string(), "--warmup", "1", "--seconds", &seconds.to_string()]);
    let gen = gen.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("starting sekisho-gen")?;
    wait_for(&outside)?;
    wait_for(&inside)?;
    let mut command = if dut == "testpmd" {
        let mut c = Command::new(testpmd);
        c.args(["-l", "0,1", "--main-lcore", "0", "--no-pci", "--file-prefix", "bench-dut", "--single-file-segments", "-m", "256"])
            .arg(format!("--vdev=virtio_user0,path={}", outside.display()))
            .arg(format!("--vdev=virtio_user1,path={}", inside.display()))
            .args(["--", "--forward-mode=mac", "--auto-start", "--stats-period=1", "--nb-cores=1", "--rxd=1024", "--txd=1024"])
            .args(["--eth-peer=0,02:00:00:00:00:01", "--eth-peer=1,02:00:00:00:00:02"]);
        c
    } else {
        let config = dir.join("dataplane.toml");
        std::fs::write(&config, topology::dataplane_config(&outside, &inside, &dir.join("run"), "bench-dut", 1, 0, topology::Traffic::Plain))?;
        let mut c = Command::new(bin("sekisho-dataplane"));
        c.args(["run", "--config", config.to_str().unwrap()]);
        c
    };
    let dut_process = Killed(command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| format!("starting {dut}"))?);
    let output = gen.wait_with_output()?;
    drop(dut_process);
    if !output.status.success() {
        bail!("sekisho-gen failed against {dut} at {size} bytes");
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or("")).context("generator report")?;
    Ok(report["report"].clone())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = std::env::temp_dir().join(format!("sekisho-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    if let Some(parent) = cli.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&cli.output)?;
    println!("{:>6}  {:>14}  {:>14}  {:>7}", "bytes", "testpmd pps", "sekisho pps", "ratio");
    for &size in &cli.sizes {
        // This machine is shared and noisy: alternate the two, take medians.
        let (mut baselines, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..cli.repeat.max(1) {
            baselines.push(measure(&dir, size, cli.seconds, "testpmd", &cli.testpmd)?);
            ours.push(measure(&dir, size, cli.seconds, "sekisho", &cli.testpmd)?);
        }
        let median = |reports: &[serde_json::Value]| {
            let mut pps: Vec<f64> = reports.iter().map(|r| r["delivered_pps"].as_f64().unwrap_or(0.0)).collect();
            pps.sort_by(f64::total_cmp);
            pps[pps.len() / 2]
        };
        let (b, o) = (median(&baselines), median(&ours));
        let ratio = if b > 0.0 { o / b } else { 0.0 };
        println!("{size:>6}  {b:>14.0}  {o:>14.0}  {ratio:>7.3}");
        let record = json!({
            "bench": "forward_virtio", "run": run_id, "frame_len": size, "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "link": "net_vhost <-> virtio_user, 1 queue per port, 1024 descriptors", "generator_lcore": 0, "dut_worker_lcore": 1,
            "baseline": { "name": "dpdk-testpmd --forward-mode=mac", "median_pps": b, "runs": baselines },
            "sekisho": { "name": "sekisho-dataplane (L2 rewrite, ARP/ND)", "median_pps": o, "runs": ours },
            "ratio_pps": ratio,
        });
        writeln!(out, "{record}")?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
