//! The real `sekisho-dataplane` between the generator's two `net_vhost` ports
//! over `virtio_user` links: 1,000,000 packets of 64 to 1440 bytes on several
//! IPv4 and IPv6 flows, both ways, each checked byte for byte, through a
//! static ESP tunnel (ESN, IPv6 outer) on the outside link, and the same as
//! plain forwarding under bypass; no mbuf leaks; exit 0 on SIGTERM; counters
//! readable while running and after.

use sekisho_perf::topology;
use sekisho_tests::{bin, last_json, Process, Scratch};
use std::process::Command;
use std::time::{Duration, Instant};

const PACKETS: u64 = 1_000_000;

#[test]
fn a_million_packets_through_the_tunnel_both_ways() {
    run(topology::Traffic::Esp, false);
}

#[test]
fn a_million_packets_through_nat_and_the_tunnel_and_their_answers_back() {
    run(topology::Traffic::Nat, false);
}

/// Reconfiguration under load, as FD.io CSIT measures it (packets lost per
/// change): another tenant's tunnels are installed and removed hundreds of
/// times, and both tenants' rules replaced a hundred times, while six
/// million packets cross; not one of them is lost.
#[test]
fn six_million_packets_lose_nothing_while_tunnels_and_rules_change() {
    run(topology::Traffic::Nat, true);
}

#[test]
fn a_million_packets_forwarded_plainly_under_bypass() {
    run(topology::Traffic::Plain, false);
}

/// The two tests take 512 MiB of hugepages each (generator and dataplane):
/// one at a time, so that they never need all of the 1 GiB that CI reserves.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(traffic: topology::Traffic, churn: bool) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Under churn, traffic outlasts the changes: several million packets.
    let packets = if churn { 6 * PACKETS } else { PACKETS };
    let name = format!("{traffic:?}").to_lowercase();
    let scratch = Scratch::new(&format!("virtio-{name}{}", if churn { "-churn" } else { "" }));
    let (outside, inside, run_dir) = (scratch.path("outside.sock"), scratch.path("inside.sock"), scratch.path("run"));
    let tag = std::process::id();

    // The generator owns the vhost ends, so it starts first.
    let gen = Process::spawn(
        "sekisho-gen",
        Command::new(bin("sekisho-gen"))
            .args(["--outside-sock", outside.to_str().unwrap(), "--inside-sock", inside.to_str().unwrap()])
            .args(["--lcore", "0", "--file-prefix", &format!("gen{name}{tag}"), "--connect-timeout", "60", "--traffic", &name])
            .args(["verify", "--packets", &packets.to_string(), "--window", "256"]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(outside.exists() && inside.exists()) {
        assert!(Instant::now() < deadline, "the generator did not create its vhost sockets");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = scratch.path("dataplane.toml");
    std::fs::write(&config, topology::dataplane_config(&outside, &inside, &run_dir, &format!("dp{name}{tag}"), 1, 0, traffic)).unwrap();
    let dataplane = Process::spawn("sekisho-dataplane", Command::new(bin("sekisho-dataplane")).args(["run", "--config", config.to_str().unwrap()]));

    // The stats area is readable while the dataplane runs.
    let stats = || {
        Command::new(bin("sekisho-dataplane")).args(["stats", "--json", "--run-dir", run_dir.to_str().unwrap()]).output().expect("stats")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = stats();
        if out.status.success() {
            let snap = last_json(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(snap["running"], true);
            assert_eq!(snap["pid"], dataplane.pid());
            break;
        }
        assert!(Instant::now() < deadline, "stats never became readable: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Behind NAT the generator also sends IKE, which the dataplane passes to
    // the control process through shared memory, with the SAs' soft-lifetime
    // events: a second process reads them.
    let control = (traffic == topology::Traffic::Nat).then(|| {
        Process::spawn(
            "sekisho-control",
            Command::new(bin("sekisho-control")).args(["watch", "--run-dir", run_dir.to_str().unwrap(), "--count", "5", "--seconds", "120"]),
        )
    });
    let churn = churn.then(|| {
        Process::spawn(
            "sekisho-churn",
            Command::new(bin("sekisho-churn"))
                .args(["--run-dir", run_dir.to_str().unwrap(), "--tenant", topology::CHURN_TENANT, "--tunnels", "20", "--rate", "200", "--seconds", "3", "--rules"]),
        )
    });
    let (status, stdout, stderr) = gen.wait(Duration::from_secs(300));
    assert!(status.success(), "generator failed: {stderr}");
    let changes = churn.map(|churn| {
        let (status, stdout, stderr) = churn.wait(Duration::from_secs(60));
        assert!(status.success(), "{stderr}");
        let report = last_json(&stdout);
        assert_eq!(report["unsent"], 0, "{report}");
        let changes = report["tunnel_changes"].as_u64().unwrap();
        assert!(changes >= 400 && report["policy_changes"].as_u64().unwrap() >= 100, "{report}");
        eprintln!("churn: {report}");
        (changes, report["seconds"].as_f64().unwrap())
    });
    let gen_report = last_json(&stdout);
    let r = &gen_report["report"];
    if let Some((_, churn_seconds)) = changes {
        eprintln!("generator: {r}");
        assert!(r["seconds"].as_f64().unwrap_or(0.0) > churn_seconds, "the changes must fall within the traffic: {gen_report}");
    }
    assert_eq!(r["sent"], packets, "{gen_report}");
    assert_eq!(r["received_intact"], packets, "every packet back, byte for byte but for L2 and the TTL: {gen_report}");
    let nat = traffic == topology::Traffic::Nat;
    if nat {
        assert_eq!(r["translated"], packets, "every packet reached the server translated onto the pool: {gen_report}");
    }
    for field in ["missing", "corrupted", "duplicates", "misrouted"] {
        assert_eq!(r[field], 0, "{field}: {gen_report}");
    }
    assert_eq!(gen_report["mempool"]["in_use_end"], gen_report["mempool"]["in_use_start"], "generator leaked mbufs");

    dataplane.terminate();
    let (status, stdout, stderr) = dataplane.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "dataplane exit on SIGTERM: {stderr}");
    let summary = last_json(&stdout);
    let counters = &summary["counters"];
    if let Some((changes, _)) = changes {
        // Every change was applied, none refused.
        assert_eq!(counters["table_updates"], changes, "{summary}");
        assert!(!stderr.contains("refused") && stderr.contains("tenants' policy replaced"), "{stderr}");
    }
    // Behind NAT each packet crosses twice: the clinic's, and the server's answer.
    let crossings = if nat { 2 * packets } else { packets };
    assert_eq!(counters["forwarded"], crossings, "{summary}");
    assert_eq!(counters["dropped"], 0, "{summary}");
    if nat {
        for counter in ["esp_decrypted", "esp_encrypted", "nat_translated_up", "nat_translated_down"] {
            assert_eq!(counters[counter], packets, "{counter}: {summary}");
        }
        // One session per flow (the generator's four IPv4 flows), one port block lent and logged.
        assert_eq!(counters["nat_sessions_created"], 4, "{summary}");
        assert_eq!(summary["nat"][0]["sessions"], 4, "still live at the end: {summary}");
        assert_eq!(summary["nat"][0]["port_blocks"], 1, "{summary}");
        assert_eq!(counters["ike_punted"], 3, "{summary}");
        let (status, stdout, stderr) = control.expect("control runs behind NAT").wait(Duration::from_secs(60));
        assert!(status.success(), "{stderr}");
        let punted: Vec<&str> = stdout.lines().filter(|l| l.contains("\"punted\"")).collect();
        assert_eq!(punted.len(), 3, "{stdout} {stderr}");
        let bytes = sekisho_perf::gen::IKE_FRAME.to_string();
        assert!(punted.iter().all(|l| l.contains("\"side\":\"outside\"") && l.contains(&format!("\"bytes\":{bytes}"))), "{stdout}");
        assert!(stderr.contains("broken [0, 0]"), "the events ring and the punt ring: {stderr}");
        // Both SAs of the tunnel passed their soft lifetime: the events reached control.
        assert_eq!(counters["sa_soft_expired"], 2, "{summary}");
        assert_eq!(stdout.lines().filter(|l| l.contains("\"sa_event\"") && l.contains("Soft")).count(), 2, "{stdout}");
        let log = std::fs::read_to_string(run_dir.join("nat.jsonl")).expect("NAT log");
        let blocks: Vec<&str> = log.lines().filter(|l| l.contains("port_block_allocated")).collect();
        assert_eq!(blocks.len(), 1, "{log}");
        assert!(blocks[0].contains("\"tenant\":\"clinics\"") && blocks[0].contains("\"ports\":\"1024-1535\""), "{log}");
    } else if traffic == topology::Traffic::Esp {
        // Half the packets come from the clinics, half from the servers.
        let (decrypted, encrypted) = (counters["esp_decrypted"].as_u64().unwrap(), counters["esp_encrypted"].as_u64().unwrap());
        assert_eq!(decrypted + encrypted, packets, "{summary}");
        assert!(decrypted > packets / 3 && encrypted > packets / 3, "{summary}");
        let sas = summary["sas"].as_array().unwrap();
        let inbound = sas.iter().find(|s| s["direction"] == "inbound").unwrap();
        assert_eq!(inbound["counters"]["packets"].as_u64(), Some(decrypted), "per-SA counters: {summary}");
        assert_eq!(inbound["spi"], format!("{:#010x}", topology::SPI_AT_GATEWAY));
    } else {
        assert_eq!(counters["bypassed"], packets, "{summary}");
    }
    assert!(counters["arp_replies_sent"].as_u64().unwrap() >= 2, "answered the generator's ARP on both ports: {summary}");
    assert!(counters["nd_advertisements_sent"].as_u64().unwrap() >= 2, "answered its ND on both ports: {summary}");
    let mempool = &summary["mempool"];
    // After traffic only the TX rings may still hold sent mbufs (virtio frees
    // them lazily): at most one ring of 1024 per port.
    let (before, after) = (mempool["in_use_before_traffic"].as_u64().unwrap(), mempool["in_use_after_traffic"].as_u64().unwrap());
    assert!(after >= before && after - before <= 2 * 1024, "{summary}");
    assert_eq!(mempool["in_use_after_close"], 0, "every mbuf back in the pool: {summary}");
    assert!(stderr.contains("forwarded"), "final counters printed: {stderr}");

    // DPDK leaves its hugepage files behind; these processes are gone.
    for prefix in [format!("gen{name}{tag}"), format!("dp{name}{tag}")] {
        let _ = std::fs::remove_file(format!("/dev/hugepages/{prefix}map_0"));
    }
    let out = stats();
    assert!(out.status.success());
    let snap = last_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(snap["running"], false);
    assert_eq!(snap["counters"]["forwarded"], crossings);
    assert_eq!(snap["mempool_in_use"], 0);
}
