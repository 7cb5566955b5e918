//! The whole gateway with a real peer: strongSwan (a clinic router, in its
//! own namespace) builds its tunnel over IPv6 to the dataplane, which passes
//! IKE to `sekisho-control` through shared memory (and, in a second test,
//! over IPv4 from behind an nftables NAT); the CHILD_SA comes back
//! as a tunnel the dataplane installs. IPv4 traffic then flows both ways
//! (decrypt, firewall, NAPT, encrypt) to a server on the inside, without a
//! lost packet across CHILD_SA rekeys with PFS and IKE SA rekeys; a delete
//! from the clinic, or from the gateway when the operator removes the
//! tenant, takes the tunnel out of both processes (and the tenant out of the
//! dataplane, until a reload brings it back); a restarted dataplane
//! gets its tunnel back from control without a new handshake, and the
//! dataplane forwards on while control is down.

use sekisho_tests::strongswan::{clinic_connection, link, run, swanctl_conf, udp_echo, Charon, Control, Dataplane, Netns, TestPki};
use sekisho_tests::{wait_until, Scratch};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Stdio};

/// Each dataplane busy-polls a core of the two: one test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the echo server when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The dataplane's config, without tenants (control gives them); `outside`
/// is its outside port's address line.
fn dataplane_config(run_dir: &Path, prefix: &str, outside: &str) -> String {
    format!(
        "[dataplane]\nmain_lcore = 0\nworkers = [1]\nmempool_size = 8191\nrun_dir = \"{}\"\n\
         eal_args = [\"--file-prefix={prefix}\", \"--single-file-segments\", \"-m\", \"256\", \"--no-pci\", \"--vdev=net_af_packet0,iface=dpo\", \"--vdev=net_af_packet1,iface=dpi\"]\n\n\
         [nat]\npool = [\"100.64.0.0/30\"]\n\n\
         [ports.outside]\ndevice = \"net_af_packet0\"\n{outside}\n\n\
         [ports.inside]\ndevice = \"net_af_packet1\"\nipv4 = [\"10.100.0.1/24\"]\n",
        run_dir.display()
    )
}

const IPV6_OUTSIDE: &str = "ipv6 = [\"2001:db8:5e::1/64\"]";

/// The dataplane's ports: veth ends without kernel addresses (`dpo` to
/// `peer_if` in `outside_ns`, `dpi` to the server), and the server.
fn ports(gw: &Netns, outside_ns: &Netns, peer_if: &str, server: &Netns) {
    run("ip", &["link", "add", "dpo", "netns", &gw.0, "type", "veth", "peer", "name", peer_if, "netns", &outside_ns.0]);
    run("ip", &["link", "add", "dpi", "netns", &gw.0, "type", "veth", "peer", "name", "srv", "netns", &server.0]);
    for port in ["dpo", "dpi"] {
        assert!(gw.command("sysctl").args(["-qw", &format!("net.ipv6.conf.{port}.disable_ipv6=1")]).status().unwrap().success());
        gw.ip(&["link", "set", port, "up"]);
    }
    server.ip(&["addr", "add", "10.100.0.10/24", "dev", "srv"]);
    server.ip(&["link", "set", "srv", "up"]);
    server.ip(&["route", "add", "100.64.0.0/30", "via", "10.100.0.1"]);
    checksums_off(server, "srv");
}

/// Full checksums on what the kernel sends into the dataplane (PEERS.md).
fn checksums_off(ns: &Netns, dev: &str) {
    assert!(ns.command("ethtool").args(["-K", dev, "tx", "off"]).stdout(Stdio::null()).status().unwrap().success());
}

/// Control's config: the tenants and their rules, which it pushes to the dataplane.
fn control_config(pki: &TestPki) -> String {
    format!(
        "[gateway]\nidentity = \"gw.sekisho.example\"\ncertificate = \"{}\"\nkey = \"{}\"\ncas = [\"{}\"]\nworkers = 1\n\n\
         [ike]\ninside = [\"10.100.0.0/16\"]\n\n\
         [[tenants]]\nname = \"clinic-1\"\nidentities = [\"clinic1.example\"]\nsubnets = [\"192.168.1.0/24\"]\n\
         [[tenants.rules]]\ndst = \"10.100.0.0/16\"\nprotocol = \"udp\"\naction = \"allow\"\n",
        pki.path("gw.pem").display(),
        pki.path("gw.key").display(),
        pki.path("ca.pem").display()
    )
}

/// Sends `count` numbered datagrams at `rate` from the clinic's LAN address
/// to the server and back; the echo tool's report.
fn traffic(clinic: &Netns, count: u32, rate: u32) -> Child {
    udp_echo(clinic, &["send", "192.168.1.1", "10.100.0.10", "7777", &count.to_string(), &rate.to_string()]).stdout(Stdio::piped()).spawn().expect("udp_echo send")
}

fn report(child: Child) -> Value {
    let out = child.wait_with_output().expect("udp_echo");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("udp_echo: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Everything of an IPv6 test, up to a tunnel built and checked (fields
/// drop in order: the peer and processes before their namespaces).
struct Gateway {
    charon: Charon,
    _echo: Killed,
    control: Control,
    dataplane: Dataplane,
    _server: Netns,
    clinic: Netns,
    gw: Netns,
}

/// The gateway, a server inside and strongSwan as the clinic over IPv6;
/// control with `ike_extra` in its [ike] section. The tunnel is up.
fn ipv6_gateway(scratch: &Scratch, pki: &TestPki, tag: u32, ike_extra: &str) -> Gateway {
    let (gw, clinic, server) = (Netns::new(&format!("sdg-{tag}")), Netns::new(&format!("sdc-{tag}")), Netns::new(&format!("sds-{tag}")));
    ports(&gw, &clinic, "clo", &server);
    clinic.ip(&["addr", "add", "2001:db8:5e::2/64", "dev", "clo", "nodad"]);
    clinic.ip(&["link", "set", "clo", "up"]);
    clinic.ip(&["addr", "add", "192.168.1.1/32", "dev", "lo"]);
    checksums_off(&clinic, "clo");

    let run_dir = scratch.path("run");
    let dataplane = Dataplane::start(&gw, &scratch.path("dp"), &dataplane_config(&run_dir, &format!("dpss{tag}"), IPV6_OUTSIDE), &run_dir);
    let config = control_config(pki).replace("[ike]\n", &format!("[ike]\n{ike_extra}"));
    let control = Control::start(&gw, &scratch.path("gw"), &config, &["--run-dir", run_dir.to_str().unwrap()]);
    let _echo = Killed(udp_echo(&server, &["serve", "10.100.0.10", "7777"]).spawn().expect("echo server"));
    let conf = swanctl_conf(&[clinic_connection("gw", "2001:db8:5e::2", "2001:db8:5e::1", "clinic1.example", "clinic1.example.pem", "192.168.1.0/24", "10.100.0.0/16")]);
    let charon = Charon::start(&clinic, &scratch.path("clinic"), pki, &[("clinic1.example.pem", "clinic1.example.key")], &conf);

    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "initiate failed:\n{out}\n{}\ncontrol:\n{}\ndataplane:\n{}", charon.log(), control.logs(), dataplane.log());
    control.wait_for("child_up", |v| v.get("child_up").is_some());
    Gateway { charon, _echo, control, dataplane, _server: server, clinic, gw }
}

#[test]
fn strongswan_traffic_crosses_the_dataplane_through_rekeys_deletes_and_a_restart() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("ss-dp");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "stranger.example");
    let tag = std::process::id() % 100_000;
    let run_dir = scratch.path("run");
    let prefix = format!("dpss{tag}");
    let Gateway { charon, _echo, control, dataplane, _server, clinic, gw } = ipv6_gateway(&scratch, &pki, tag, "");
    assert!(dataplane.log().contains("tenants' policy replaced"), "control pushes the tenants' rules: {}", dataplane.log());
    // The first datagram waits on ARP for the server; then every one comes back.
    let warm = report(traffic(&clinic, 10, 50));
    assert!(warm["received"].as_u64().unwrap() >= 9, "{warm}\n{}", dataplane.log());

    // Rekeys during traffic: not one datagram lost.
    let flow = traffic(&clinic, 2400, 300);
    for step in [&["--rekey", "--child", "lan"][..], &["--rekey", "--ike", "gw"], &["--rekey", "--child", "lan"]] {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let (ok, out) = charon.swanctl(step);
        assert!(ok, "{step:?}: {out}");
    }
    let during = report(flow);
    assert_eq!((during["received"].as_u64(), during["lost"].as_array().map(Vec::len)), (Some(2400), Some(0)), "{during}");
    let rekeys = control.lines().iter().filter(|v| v["child_up"]["pfs_group"] == 14).count();
    assert_eq!(rekeys, 2, "{}", control.logs());

    // The dataplane restarts: control installs the tunnel again, traffic resumes, no handshake.
    let ike_sas_before = charon.swanctl(&["--list-sas"]).1;
    let summary = dataplane.stop();
    assert!(summary["sas"].as_array().is_some_and(|sas| !sas.is_empty()), "{summary}");
    let dataplane = Dataplane::start(&gw, &scratch.path("dp2"), &dataplane_config(&run_dir, &prefix, IPV6_OUTSIDE), &run_dir);
    control.wait_for("resync", |v| v["log"].as_str().is_some_and(|l| l.contains("installed again")));
    // Only the first datagrams may go, while the fresh dataplane resolves its neighbours.
    let after = report(traffic(&clinic, 200, 100));
    let lost_late = after["lost"].as_array().unwrap().iter().any(|n| n.as_u64().unwrap() >= 5);
    assert!(after["received"].as_u64().unwrap() >= 195 && !lost_late, "after the restart: {after}\n{}", dataplane.log());
    let ike_sas_after = charon.swanctl(&["--list-sas"]).1;
    let spi = |text: &str| text.lines().find(|l| l.contains("ESTABLISHED")).map(str::to_owned);
    assert_eq!(spi(&ike_sas_before), spi(&ike_sas_after), "the same IKE SA");

    // A delete from the clinic: the tunnel leaves control and the dataplane.
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "gw"]);
    assert!(ok, "{out}");
    control.wait_for("child_down", |v| v.get("child_down").is_some());
    let gone = report(traffic(&clinic, 20, 100));
    assert_eq!(gone["received"], 0, "{gone}");

    // Back again, then removed by the operator: the gateway deletes it from both processes.
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "{out}");
    let again = report(traffic(&clinic, 20, 100));
    assert!(again["received"].as_u64().unwrap() >= 19, "{again}");

    // Control stops: the dataplane forwards on without it.
    drop(control);
    let alone = report(traffic(&clinic, 100, 100));
    assert_eq!(alone["received"], 100, "with control down: {alone}");
    // A control process started afresh removes the tunnels it does not know
    // (it could not rekey them), and the clinic connects again.
    let control = Control::start(&gw, &scratch.path("gw2"), &control_config(&pki), &["--run-dir", run_dir.to_str().unwrap()]);
    control.wait_for("link", |v| v["log"].as_str().is_some_and(|l| l.starts_with("linked")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(report(traffic(&clinic, 10, 100))["received"], 0);
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "gw", "--force"]);
    assert!(ok, "{out}");
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "{out}\n{}", control.logs());
    let reconnected = report(traffic(&clinic, 20, 100));
    assert!(reconnected["received"].as_u64().unwrap() >= 19, "{reconnected}");
    control.reload(control_config(&pki).split("[[tenants]]").next().unwrap());
    control.wait_for_count("child_down", 1, TEN_SECONDS, &charon);
    // The dataplane drops the tenant too, and takes it back at the next
    // reload, running on: the clinic connects and its traffic passes again.
    let replaced = |fields: &str| dataplane.log().lines().any(|l| l.contains("tenants' policy replaced") && l.contains(fields));
    wait_until(TEN_SECONDS, || replaced("tenants=0 retired=1"), || dataplane.log());
    assert_eq!(report(traffic(&clinic, 10, 100))["received"], 0);
    control.reload(&control_config(&pki));
    // A new index: the old one's sessions may still be going.
    wait_until(TEN_SECONDS, || replaced("tenants=1 retired=1"), || dataplane.log());
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "{out}\n{}", control.logs());
    let back = report(traffic(&clinic, 20, 100));
    assert!(back["received"].as_u64().unwrap() >= 19, "the tenant added back at run time: {back}\n{}", dataplane.log());
    assert!(!dataplane.log().contains("refused"), "{}", dataplane.log());
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "gw"]);
    assert!(ok, "{out}");
    control.wait_for_count("child_down", 2, TEN_SECONDS, &charon);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let summary = dataplane.stop();
    assert_eq!(summary["sas"], serde_json::json!([]), "no SA left in the dataplane: {summary}");
}

const TEN_SECONDS: std::time::Duration = std::time::Duration::from_secs(10);

#[test]
fn the_gateway_rekeys_strongswans_child_and_ike_sas_at_its_lifetimes_without_a_lost_packet() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("ss-dp-rekey");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "stranger.example");
    let tag = std::process::id() % 100_000 + 1;
    let g = ipv6_gateway(&scratch, &pki, tag, "child_rekey = 10\nike_rekey = 16\nrekey_jitter_percent = 0\n");
    let ike_sa = |text: &str| text.lines().find(|l| l.contains("ESTABLISHED")).map(str::to_owned);
    let before = ike_sa(&g.charon.swanctl(&["--list-sas"]).1);
    // The first datagram waits on ARP for the server.
    report(traffic(&g.clinic, 2, 50));
    // 25 s of traffic: the gateway rekeys the CHILD_SA at 10 and 20 s (PFS)
    // and the IKE SA at 16 s, deleting each old SA itself.
    let during = report(traffic(&g.clinic, 2500, 100));
    assert_eq!((during["received"].as_u64(), during["lost"].as_array().map(Vec::len)), (Some(2500), Some(0)), "{during}\n{}", g.control.logs());
    let ours: Vec<_> = g.control.lines().into_iter().filter(|v| v["child_up"]["started_by"] == "gateway").collect();
    assert!(ours.len() >= 2 && ours.iter().all(|v| v["child_up"]["pfs_group"] == 14), "{}", g.control.logs());
    let logs = g.control.logs();
    assert!(logs.contains("rekeyed to") && logs.contains("(started by the gateway)") && !logs.contains("refused"), "{logs}");
    let after = g.charon.swanctl(&["--list-sas"]).1;
    assert!(ike_sa(&after).is_some() && ike_sa(&after) != before, "a new IKE SA at strongSwan:\n{after}");
    assert_eq!(after.matches("INSTALLED").count(), 1, "old CHILD_SAs deleted at strongSwan:\n{after}");
    let summary = g.dataplane.stop();
    assert_eq!(summary["sas"].as_array().map(Vec::len), Some(2), "one SA each way left in the dataplane: {summary}");
}

#[test]
fn esp_through_the_dataplane_spares_strongswan_liveness_checks() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("ss-dp-live");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "stranger.example");
    let tag = std::process::id() % 100_000 + 2;
    let g = ipv6_gateway(&scratch, &pki, tag, "liveness_interval = 11\n");
    // 25 s of ESP and no IKE: the dataplane's reports of what each SA
    // received (every 10 s) show control the peer is alive (RFC 7296 §2.4).
    let during = report(traffic(&g.clinic, 2500, 100));
    assert!(during["received"].as_u64().unwrap() >= 2499, "{during}");
    let checks = |summary: &Value| summary["counters"]["liveness_checks"].as_u64().unwrap();
    // The operators' view of the dataplane: its counters per worker, and the
    // NAT port block the clinic's sessions took.
    let ctl = |args: &[&str]| -> Value {
        let out = std::process::Command::new(sekisho_tests::bin("sekisho-ctl")).arg("--socket").arg(scratch.path("gw").join("admin.sock")).arg("--json").args(args).output().unwrap();
        assert!(out.status.success(), "sekisho-ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(ctl(&["dataplane"])["workers"][0]["counters"]["esp_decrypted"].as_u64().unwrap() >= 2499);
    let nat = ctl(&["nat", "clinic-1"]);
    assert_eq!((nat["port_blocks"].as_array().map(Vec::len), nat["sessions"].as_u64()), (Some(1), Some(1)), "one UDP flow: {nat}");
    let tunnels = ctl(&["tunnels"]);
    // As of the dataplane's last traffic report (every 10 s).
    assert!(tunnels[0]["child_sas"][0]["received_packets"].as_u64().unwrap() >= 1000, "{tunnels}");
    let Gateway { charon, _echo, control, dataplane, _server, clinic, gw } = g;
    // Then silence: a check comes, 11 s after the last report of new ESP
    // (which may come up to 10 s after the traffic stopped).
    let asked = || charon.log().contains("parsed INFORMATIONAL request");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !asked() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let logs = control.logs();
    let summary = control.stop();
    assert_eq!(checks(&summary), 1, "one check, after the traffic stopped: {summary}\n{logs}");
    drop((charon, dataplane, clinic, gw));
}

#[test]
fn strongswan_behind_an_ipv4_nat_reaches_the_server_through_the_dataplane() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("ss-dp4");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "stranger.example");
    let tag = std::process::id() % 100_000;
    let (gw, nat, clinic, server) = (Netns::new(&format!("s4g-{tag}")), Netns::new(&format!("s4n-{tag}")), Netns::new(&format!("s4c-{tag}")), Netns::new(&format!("s4s-{tag}")));
    ports(&gw, &nat, "wan0", &server);
    nat.ip(&["addr", "add", "198.51.100.2/24", "dev", "wan0"]);
    nat.ip(&["link", "set", "wan0", "up"]);
    link(&nat, "lan0", "10.1.0.1/24", &clinic, "cl0", "10.1.0.2/24");
    clinic.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    clinic.ip(&["addr", "add", "192.168.1.1/32", "dev", "lo"]);
    for (ns, dev) in [(&nat, "wan0"), (&nat, "lan0"), (&clinic, "cl0")] {
        checksums_off(ns, dev);
    }
    assert!(nat.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]).status().unwrap().success());
    for rule in [&["add", "table", "ip", "nat"][..], &["add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100 ; }"], &["add", "rule", "ip", "nat", "post", "oifname", "wan0", "masquerade"]] {
        assert!(nat.command("nft").args(rule).status().unwrap().success(), "nft {rule:?}");
    }

    let run_dir = scratch.path("run");
    let prefix = format!("dpss4{tag}");
    let dataplane = Dataplane::start(&gw, &scratch.path("dp"), &dataplane_config(&run_dir, &prefix, "ipv4 = [\"198.51.100.1/24\"]"), &run_dir);
    let control = Control::start(&gw, &scratch.path("gw"), &control_config(&pki), &["--run-dir", run_dir.to_str().unwrap()]);
    let _echo = Killed(udp_echo(&server, &["serve", "10.100.0.10", "7777"]).spawn().expect("echo server"));
    let conf = swanctl_conf(&[clinic_connection("gw", "10.1.0.2", "198.51.100.1", "clinic1.example", "clinic1.example.pem", "192.168.1.0/24", "10.100.0.0/16")]);
    let charon = Charon::start(&clinic, &scratch.path("clinic"), &pki, &[("clinic1.example.pem", "clinic1.example.key")], &conf);
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "initiate failed:\n{out}\n{}\ncontrol:\n{}\ndataplane:\n{}", charon.log(), control.logs(), dataplane.log());
    let up = control.wait_for("child_up", |v| v.get("child_up").is_some());
    // The gateway sees the NAT's address and answers through it in UDP 4500.
    assert!(up["child_up"]["peer"].as_str().unwrap().starts_with("198.51.100.2:"), "{up}");
    assert_eq!(up["child_up"]["nat_t"], true);
    let warm = report(traffic(&clinic, 10, 50));
    assert!(warm["received"].as_u64().unwrap() >= 9, "{warm}\n{}", dataplane.log());
    let flow = traffic(&clinic, 1200, 300);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ok, out) = charon.swanctl(&["--rekey", "--child", "lan"]);
    assert!(ok, "{out}");
    let during = report(flow);
    assert_eq!((during["received"].as_u64(), during["lost"].as_array().map(Vec::len)), (Some(1200), Some(0)), "{during}");
    let summary = dataplane.stop();
    assert!(summary["counters"]["esp_decrypted"].as_u64().unwrap() >= 1200 && summary["counters"]["nat_translated_up"].as_u64().unwrap() >= 1200, "{summary}");
}
