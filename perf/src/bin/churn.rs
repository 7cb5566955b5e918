//! `sekisho-churn`: tunnels of one tenant come and go in a running
//! dataplane, through its control ring, as fast as asked, so that a
//! measurement can count what other tunnels lose per change (as FD.io
//! CSIT's reconfiguration tests do). It stands in for the control process
//! (the ring has one writer): run it without one.

use clap::Parser;
use sekisho_dataplane::sad::SpiParts;
use sekisho_dataplane::shm::messages::{ToDataplane, CONTROL_MESSAGE_BYTES};
use sekisho_dataplane::shm::ring::Producer;
use sekisho_dataplane::tunnels::TunnelConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Add and remove tunnels in a running dataplane, for reconfiguration measurements")]
struct Args {
    #[arg(long)]
    run_dir: PathBuf,
    /// The tenant the tunnels belong to; their subnets are 10.200.N.0/24.
    #[arg(long)]
    tenant: String,
    /// Tunnels installed, then removed, each round.
    #[arg(long, default_value_t = 20)]
    tunnels: u32,
    /// Changes per second (an install or a removal each).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Stop after this long (rounding up to a whole round).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The worker that owns the tunnels.
    #[arg(long, default_value_t = 0)]
    worker: u8,
    /// Also change the tenants' rules (the topology's two policies, in
    /// turn) after every fourth tunnel change.
    #[arg(long)]
    rules: bool,
}

#[derive(serde::Deserialize)]
struct TenantsFile {
    tenants: Vec<sekisho_dataplane::policy::TenantConfig>,
}

fn tunnel(tenant: &str, worker: u8, n: u32) -> TunnelConfig {
    let key = format!("{:040x}", 0x5eced_u128 + u128::from(n));
    toml::from_str(&format!(
        "name = \"churn-{n}\"\nremote = \"2001:db8:f::{:x}\"\nudp_encap = true\nipv4 = [\"10.200.{}.0/24\"]\ntenant = \"{tenant}\"\nworker = {worker}\n\
         [[inbound]]\nspi = {}\nkey = \"{key}\"\n[outbound]\nspi = {}\nkey = \"{key}\"\n",
        n + 1,
        n % 256,
        SpiParts { core: worker, generation: 1, slot: 10_000 + n }.encode(),
        0x7000_0000 + n
    ))
    .expect("a tunnel")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = args.run_dir.join("control.ring");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ring = loop {
        match Producer::open(&path) {
            Ok(ring) => break ring,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        }
    };
    let tunnels: Vec<TunnelConfig> = (0..args.tunnels).map(|n| tunnel(&args.tenant, args.worker, n)).collect();
    let start = Instant::now();
    let policies: Vec<Vec<sekisho_dataplane::policy::TenantConfig>> =
        [false, true].iter().map(|&extra| toml::from_str::<TenantsFile>(&sekisho_perf::topology::tenants_toml(extra)).expect("tenants").tenants).collect();
    let (mut changes, mut unsent, mut policy_changes) = (0u64, 0u64, 0u64);
    let mut push = |message: ToDataplane| {
        while start.elapsed().as_secs_f64() < changes as f64 / args.rate {
            std::thread::sleep(Duration::from_micros(200));
        }
        // A full ring means the dataplane is behind: wait rather than lose the change.
        let bytes = message.encode();
        let mut tries = 0;
        while ring.push(&bytes).is_err() {
            tries += 1;
            if tries > 10_000 {
                unsent += 1;
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        changes += 1;
    };
    let mut rounds = 0;
    let mut tunnel_changes = 0u64;
    let mut change = |message: ToDataplane, push: &mut dyn FnMut(ToDataplane)| {
        push(message);
        tunnel_changes += 1;
        if args.rules && tunnel_changes.is_multiple_of(4) {
            for part in ToDataplane::tenants(&policies[(tunnel_changes / 4 % 2) as usize], CONTROL_MESSAGE_BYTES).expect("two small tenants") {
                push(part);
            }
            policy_changes += 1;
        }
    };
    while start.elapsed().as_secs_f64() < args.seconds {
        for t in &tunnels {
            change(ToDataplane::Tunnel(t.clone()), &mut push);
        }
        for t in &tunnels {
            change(ToDataplane::TunnelDown(&t.name), &mut push);
        }
        rounds += 1;
    }
    println!(
        "{}",
        serde_json::json!({"changes": changes, "tunnel_changes": tunnel_changes, "policy_changes": policy_changes, "unsent": unsent, "rounds": rounds,
            "seconds": (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0})
    );
    Ok(())
}
