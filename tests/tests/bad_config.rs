//! A configuration that cannot work stops the dataplane at start, with exit
//! code 2 and a message naming what is wrong.

use sekisho_perf::topology;
use sekisho_tests::{bin, Scratch};
use std::path::Path;
use std::process::Command;

fn config(scratch: &Scratch, tweak: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = topology::dataplane_config(Path::new("/nonexistent/o.sock"), Path::new("/nonexistent/i.sock"), &scratch.path("run"), "badcfg", 1, 0, topology::Traffic::Esp);
    let path = scratch.path("dataplane.toml");
    std::fs::write(&path, tweak(text)).unwrap();
    path
}

fn fails_with(command: &mut Command, expected: &[&str]) {
    let out = command.output().expect("run sekisho-dataplane");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected {e:?} in: {stderr}");
    }
}

fn run(config: &Path) -> Command {
    let mut c = Command::new(bin("sekisho-dataplane"));
    c.args(["run", "--config", config.to_str().unwrap()]);
    c
}

#[test]
fn unknown_port_is_named() {
    let s = Scratch::new("badport");
    // A vdev driver that does not exist: EAL probes nothing for it.
    let path = config(&s, |t| t.replace("virtio_user0,path=/nonexistent/o.sock", "net_bogus0"));
    fails_with(&mut run(&path), &["ports.outside.device", "net_bogus0"]);
}

#[test]
fn core_out_of_range_is_named() {
    let s = Scratch::new("badcore");
    let path = config(&s, |t| t.replace("workers = [1]", "workers = [4095]"));
    fails_with(&mut run(&path), &["dataplane.workers", "core 4095 is out of range"]);
}

#[test]
fn missing_hugepages_are_reported_with_the_fix() {
    let s = Scratch::new("nohuge");
    let path = config(&s, |t| t);
    // Hide the hugepage pools in a private mount namespace.
    let script = format!("mount -t tmpfs none /sys/kernel/mm/hugepages && exec {} run --config {}", bin("sekisho-dataplane").display(), path.display());
    fails_with(Command::new("unshare").args(["--mount", "sh", "-c", &script]), &["no free hugepages", "nr_hugepages"]);
}

#[test]
fn syntax_and_value_errors_name_the_line_or_field() {
    let s = Scratch::new("badsyntax");
    let path = config(&s, |t| t.replace("workers = [1]", "workers = [1"));
    fails_with(&mut run(&path), &["dataplane.toml", "line 4"]);
    let path = config(&s, |t| t.replace("gateway_ipv4 = \"10.0.0.2\"", "gateway_ipv4 = \"10.9.0.2\""));
    fails_with(&mut run(&path), &["ports.inside.gateway_ipv4", "10.9.0.2"]);
    let mut check = Command::new(bin("sekisho-dataplane"));
    check.args(["check", "--config", path.to_str().unwrap()]);
    fails_with(&mut check, &["ports.inside.gateway_ipv4"]);
}

#[test]
fn bad_tunnels_are_refused_by_field() {
    let s = Scratch::new("badtunnel");
    let check = |path: &Path| {
        let mut c = Command::new(bin("sekisho-dataplane"));
        c.args(["check", "--config", path.to_str().unwrap()]);
        c
    };
    let cases: [(&str, &str, &[&str]); 5] = [
        (topology::KEY_TO_GATEWAY, "0011", &["tunnels[0].inbound[0].key", "20 or 36 bytes"]),
        (&format!("spi = {:#x}", topology::SPI_AT_GATEWAY), "spi = 0x04100001", &["tunnels[0].inbound[0].spi", "encodes worker 1, but there are 1 workers"]),
        (&format!("spi = {:#x}", topology::SPI_AT_CLINIC), "spi = 7", &["tunnels[0].outbound.spi", "reserved"]),
        ("esn = true\n[tunnels.outbound]", "esn = true\nreplay_window = 100\n[tunnels.outbound]", &["tunnels[0].inbound[0].replay_window", "100"]),
        (topology::CLINICS_V4, "203.0.113.0/33", &["dataplane.toml", "prefix length"]),
    ];
    for (from, to, expected) in cases {
        let path = config(&s, |t| {
            assert!(t.contains(from), "{from} not in the config");
            t.replacen(from, to, 1)
        });
        fails_with(&mut check(&path), expected);
    }
    // A good one prints the tunnel's inbound SPI for the peer's config.
    let path = config(&s, |t| t);
    let out = check(&path).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("tunnel clinics: inbound SPI {:#010x}", topology::SPI_AT_GATEWAY)));
}

#[test]
fn bad_tenants_rules_and_pools_are_refused_by_field() {
    let s = Scratch::new("badnat");
    let nat_config = |tweak: &dyn Fn(String) -> String| {
        let text = topology::dataplane_config(Path::new("/nonexistent/o.sock"), Path::new("/nonexistent/i.sock"), &s.path("run"), "badnat", 1, 0, topology::Traffic::Nat);
        let path = s.path("dataplane.toml");
        std::fs::write(&path, tweak(text)).unwrap();
        path
    };
    let check = |path: &Path| {
        let mut c = Command::new(bin("sekisho-dataplane"));
        c.args(["check", "--config", path.to_str().unwrap()]);
        c
    };
    let cases: [(&str, &str, &[&str]); 6] = [
        ("tenant = \"clinics\"", "tenant = \"nobody\"", &["tunnels[0].tenant", "'nobody' is not a tenant"]),
        ("tenant = \"clinics\"\n", "", &["tunnels[0].tenant", "every tunnel names its tenant"]),
        ("protocol = \"udp\"", "protocol = \"icmp\"\nports = \"53\"", &["tenants[0].rules[0].ports", "tcp"]),
        ("protocol = \"udp\"", "protocol = \"udp\"\nports = \"99-10\"", &["tenants[0].rules[0].ports", "backwards"]),
        (topology::POOL, "10.0.0.0/30", &["nat.pool", "10.0.0.1 is an address of a port"]),
        ("subnets = [\"203.0.113.0/24\"]", "subnets = [\"203.0.113.0/25\"]", &["tunnels[0].ipv4", "not within the subnets of tenant 'clinics'"]),
    ];
    for (from, to, expected) in cases {
        let path = nat_config(&|t: String| {
            assert!(t.contains(from), "{from} not in the config");
            t.replacen(from, to, 1)
        });
        fails_with(&mut check(&path), expected);
    }
    // Tenants need the pool.
    let path = nat_config(&|t: String| t.replace("[nat]\npool = [\"100.64.0.0/30\"]\n", ""));
    fails_with(&mut check(&path), &["tenants", "[nat]"]);
    let path = nat_config(&|t: String| t);
    let out = check(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 tenants"));
}
