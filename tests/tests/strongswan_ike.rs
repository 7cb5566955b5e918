//! IKEv2 interop with strongSwan: a clinic router (strongSwan in its own
//! network namespace) builds its tunnel to `sekisho-control`, which
//! listens on its own UDP sockets here (no dataplane in front): over IPv6,
//! and over IPv4 through a NAT. The tunnel comes up with certificates and
//! DH group 14, the CHILD_SA and the IKE SA are rekeyed, and deletes clean
//! up; a clinic with a certificate from another CA is refused. A router
//! set up only from what `sekisho-control router-config` writes connects by
//! itself (zero-touch).

use sekisho_tests::strongswan::{clinic_connection, link, swanctl_conf, Charon, Control, Netns, TestPki};
use sekisho_tests::{bin, Scratch};
use serde_json::Value;

fn control_config(pki: &TestPki) -> String {
    format!(
        "[gateway]\nidentity = \"gw.sekisho.example\"\ncertificate = \"{}\"\nkey = \"{}\"\ncas = [\"{}\"]\nworkers = 2\n\n\
         [ike]\ninside = [\"10.100.0.0/16\"]\n\n\
         [[tenants]]\nname = \"clinic-1\"\nidentities = [\"clinic1.example\"]\nsubnets = [\"192.168.1.0/24\"]\n",
        pki.path("gw.pem").display(),
        pki.path("gw.key").display(),
        pki.path("ca.pem").display()
    )
}

const LISTEN_V6: [&str; 4] = ["--listen", "[2001:db8:5e::1]:500", "--listen", "[2001:db8:5e::1]:4500"];

/// The gateway's and the clinic's namespaces (named by `tag`), linked over
/// IPv6; the clinic's LAN address on its loopback, since kernel-libipsec
/// routes the tunnel from an address inside local_ts.
fn ipv6_link(tag: &str) -> (Netns, Netns) {
    let pid = std::process::id() % 100_000;
    let (gw, clinic) = (Netns::new(&format!("ssg{tag}-{pid}")), Netns::new(&format!("ssc{tag}-{pid}")));
    link(&gw, "gw0", "2001:db8:5e::1/64", &clinic, "cl0", "2001:db8:5e::2/64");
    clinic.ip(&["addr", "add", "192.168.1.1/32", "dev", "lo"]);
    (gw, clinic)
}

fn child_up(v: &Value) -> Option<&Value> {
    v.get("child_up")
}

#[test]
fn strongswan_over_ipv6_connects_rekeys_and_deletes() {
    let scratch = Scratch::new("ss-ike6");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "clinic1.example");
    let (gw, clinic) = ipv6_link("6");
    let control = Control::start(&gw, &scratch.path("gw"), &control_config(&pki), &LISTEN_V6);

    let conf = swanctl_conf(&[
        // The clinic asks for two subnets; its tenant declared one of them.
        clinic_connection("gw", "2001:db8:5e::2", "2001:db8:5e::1", "clinic1.example", "clinic1.example.pem", "192.168.1.0/24,192.168.2.0/24", "10.100.0.0/16"),
        // Its certificate comes from a CA the gateway does not trust.
        clinic_connection("bad", "2001:db8:5e::2", "2001:db8:5e::1", "clinic1.example", "foreign.pem", "192.168.1.0/24", "10.100.0.0/16"),
    ]);
    let charon = Charon::start(&clinic, &scratch.path("clinic"), &pki, &[("clinic1.example.pem", "clinic1.example.key"), ("foreign.pem", "foreign.key")], &conf);

    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "initiate failed:\n{out}\n{}\ncontrol:\n{}", charon.log(), control.logs());
    let up = control.wait_for("child_up", |v| child_up(v).is_some());
    let up = &up["child_up"];
    assert_eq!(up["tenant"], "clinic-1");
    assert_eq!(up["clinic"], serde_json::json!(["192.168.1.0-192.168.1.255"]), "narrowed to the declared subnet");
    assert_eq!(up["inside"], serde_json::json!(["10.100.0.0-10.100.255.255"]));
    assert_eq!(up["nat_t"], true, "kernel-libipsec always asks for UDP encapsulation");
    let (_, sas) = charon.swanctl(&["--list-sas"]);
    assert!(sas.contains("ESTABLISHED") && sas.contains("INSTALLED") && sas.contains("MODP_2048"), "{sas}");
    assert!(sas.contains("192.168.1.0/24") && !sas.contains("192.168.2.0/24"), "{sas}");
    let first_spi = up["inbound_spi"].as_str().unwrap().to_owned();

    // CHILD_SA rekey, with PFS (group 14).
    let (ok, out) = charon.swanctl(&["--rekey", "--child", "lan"]);
    assert!(ok, "{out}");
    let rekeyed = control.wait_for("rekeyed child_up", |v| child_up(v).is_some_and(|c| c["replaces"] == first_spi.as_str()));
    assert_eq!(rekeyed["child_up"]["pfs_group"], 14);
    control.wait_for("old child_down", |v| v["child_down"]["inbound_spi"] == first_spi.as_str());
    // IKE SA rekey; the CHILD_SA moves along.
    let (ok, out) = charon.swanctl(&["--rekey", "--ike", "gw"]);
    assert!(ok, "{out}");
    control.wait_for("IKE rekey", |v| v["log"].as_str().is_some_and(|l| l.contains("rekeyed to")));
    control.wait_for("old IKE SA deleted", |v| v["log"].as_str().is_some_and(|l| l.contains("deleted by the peer")));
    let (_, sas) = charon.swanctl(&["--list-sas"]);
    assert!(sas.contains("ESTABLISHED") && sas.contains("INSTALLED"), "{sas}");

    // A delete from the clinic takes the CHILD_SA down at the gateway.
    let second_spi = rekeyed["child_up"]["inbound_spi"].as_str().unwrap().to_owned();
    let (ok, out) = charon.swanctl(&["--terminate", "--ike", "gw"]);
    assert!(ok, "{out}");
    control.wait_for("last child_down", |v| v["child_down"]["inbound_spi"] == second_spi.as_str());

    // Another CA's certificate: refused, with a log line at the gateway.
    let (ok, _) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "bad"]);
    assert!(!ok, "a foreign certificate was accepted");
    control.wait_for("refusal", |v| v["log"].as_str().is_some_and(|l| l.contains("certificate refused")));
    assert!(charon.log().contains("AUTHENTICATION_FAILED"), "{}", charon.log());
}

#[test]
fn a_reload_refuses_a_bad_file_whole_and_deletes_a_removed_tenants_tunnel() {
    let scratch = Scratch::new("ss-reload");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "stranger.example");
    let (gw, clinic) = ipv6_link("r");
    let config = control_config(&pki);
    let control = Control::start(&gw, &scratch.path("gw"), &config, &LISTEN_V6);
    let conf = swanctl_conf(&[clinic_connection("gw", "2001:db8:5e::2", "2001:db8:5e::1", "clinic1.example", "clinic1.example.pem", "192.168.1.0/24", "10.100.0.0/16")]);
    let charon = Charon::start(&clinic, &scratch.path("clinic"), &pki, &[("clinic1.example.pem", "clinic1.example.key")], &conf);
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "{out}\n{}", control.logs());
    control.wait_for("child_up", |v| child_up(v).is_some());

    // A file that does not parse: refused whole, with the line at fault; the tunnel stays.
    control.reload(&config.replace("[ike]", "[ike"));
    let refusal = control.wait_for("refusal", |v| v["log"].as_str().is_some_and(|l| l.starts_with("reload refused")));
    assert!(refusal["log"].as_str().unwrap().contains("line"), "{refusal}");
    let (_, sas) = charon.swanctl(&["--list-sas"]);
    assert!(sas.contains("INSTALLED"), "{sas}");

    // The clinic's tenant removed: the gateway deletes its IKE SA, and strongSwan hears of it.
    let without = config.split("[[tenants]]").next().unwrap().to_string();
    control.reload(&without);
    control.wait_for("child_down", |v| v.get("child_down").is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !charon.swanctl(&["--list-sas"]).1.trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "strongSwan kept the IKE SA:\n{}", charon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(charon.log().contains("received DELETE for IKE_SA"), "{}", charon.log());
}

#[test]
fn strongswan_over_ipv4_through_a_nat_uses_nat_traversal() {
    let scratch = Scratch::new("ss-ike4");
    let pki = TestPki::create(&scratch.path("pki"), &["clinic1.example"], "stranger.example");
    let tag = std::process::id() % 100_000;
    let gw = Netns::new(&format!("ssg4-{tag}"));
    let nat = Netns::new(&format!("ssn4-{tag}"));
    let clinic = Netns::new(&format!("ssc4-{tag}"));
    link(&gw, "gw0", "198.51.100.1/24", &nat, "wan0", "198.51.100.2/24");
    link(&nat, "lan0", "10.1.0.1/24", &clinic, "cl0", "10.1.0.2/24");
    clinic.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    clinic.ip(&["addr", "add", "192.168.1.1/32", "dev", "lo"]);
    let sysctl = nat.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]).status().unwrap();
    assert!(sysctl.success());
    for rule in [&["add", "table", "ip", "nat"][..], &["add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100 ; }"], &["add", "rule", "ip", "nat", "post", "oifname", "wan0", "masquerade"]] {
        assert!(nat.command("nft").args(rule).status().unwrap().success(), "nft {rule:?}");
    }
    let control = Control::start(&gw, &scratch.path("gw"), &control_config(&pki), &["--listen", "198.51.100.1:500", "--listen", "198.51.100.1:4500"]);
    let conf = swanctl_conf(&[clinic_connection("gw", "10.1.0.2", "198.51.100.1", "clinic1.example", "clinic1.example.pem", "192.168.1.0/24", "10.100.0.0/16")]);
    let charon = Charon::start(&clinic, &scratch.path("clinic"), &pki, &[("clinic1.example.pem", "clinic1.example.key")], &conf);
    let (ok, out) = charon.swanctl(&["--initiate", "--child", "lan", "--ike", "gw"]);
    assert!(ok, "initiate failed:\n{out}\n{}\ncontrol:\n{}", charon.log(), control.logs());
    let up = control.wait_for("child_up", |v| child_up(v).is_some());
    // The gateway sees the NAT's address, and answers there on 4500.
    assert!(up["child_up"]["peer"].as_str().unwrap().starts_with("198.51.100.2:"), "{up}");
    assert_eq!(up["child_up"]["nat_t"], true);
    assert!(control.logs().contains("(NAT-T)"), "{}", control.logs());
    assert!(charon.log().contains("local host is behind NAT") || charon.log().contains("faking NAT situation"), "{}", charon.log());
    let (ok, out) = charon.swanctl(&["--rekey", "--child", "lan"]);
    assert!(ok, "{out}");
    control.wait_for("rekey", |v| child_up(v).is_some_and(|c| !c["replaces"].is_null()));
}

#[test]
fn a_router_set_up_from_router_config_alone_connects_by_itself() {
    let scratch = Scratch::new("ss-zero-touch");
    let pki = TestPki::create(&scratch.path("pki"), &[], "stranger.example");
    let (gw, clinic) = ipv6_link("z");
    let control = Control::start(&gw, &scratch.path("gw"), &control_config(&pki), &LISTEN_V6);
    let swanctl = scratch.path("clinic").join("swanctl");
    let ca = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let config = scratch.path("gw").join("control.toml");
    let out = std::process::Command::new(bin("sekisho-control"))
        .args(["router-config", "--config", config.to_str().unwrap(), "--tenant", "clinic-1", "--gateway", "2001:db8:5e::1"])
        .args(["--ca-cert", &ca("ca.pem"), "--ca-key", &ca("ca.key"), "--out", swanctl.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing else: the generated swanctl.conf starts the tunnel when loaded.
    let charon = Charon::configured(&clinic, &scratch.path("clinic"));
    let up = control.wait_for("child_up", |v| child_up(v).is_some());
    assert_eq!(up["child_up"]["tenant"], "clinic-1", "{}", charon.log());
    let (_, sas) = charon.swanctl(&["--list-sas"]);
    assert!(sas.contains("ESTABLISHED") && sas.contains("INSTALLED") && sas.contains("192.168.1.0/24"), "{sas}");

    // Refused, with the reason: a tenant the config does not have.
    let out = std::process::Command::new(bin("sekisho-control"))
        .args(["router-config", "--config", config.to_str().unwrap(), "--tenant", "clinic-9", "--gateway", "2001:db8:5e::1"])
        .args(["--ca-cert", &ca("ca.pem"), "--ca-key", &ca("ca.key"), "--out", scratch.path("other").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no tenant named 'clinic-9'"));
}
