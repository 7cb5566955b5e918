//! The operators' tools against a running `sekisho-control` and a real
//! clinic router: a new tenant goes from `sekisho-ctl tenant add` to a live
//! tunnel with only the CLI and the router configuration that
//! `sekisho-control router-config` writes; the tunnel shows in the CLI's
//! listings and in the Prometheus metrics; each change is in the audit
//! trail with the operator's Unix user; bad requests are refused with the
//! reason and change nothing.

use sekisho_tests::strongswan::{link, Charon, Control, Netns, TestPki};
use sekisho_tests::{bin, Scratch};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `sekisho-ctl --socket SOCKET ARGS`: (success, stdout, stderr).
fn ctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("sekisho-ctl")).arg("--socket").arg(socket).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = ctl(socket, &all);
    assert!(ok, "sekisho-ctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// The metrics page, fetched inside the gateway's namespace.
fn scrape(gw: &Netns) -> String {
    let out = gw.command("python3").args(["-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_tenant_added_with_the_cli_connects_shows_in_listings_metrics_and_the_audit_trail() {
    let scratch = Scratch::new("ops");
    let pki = TestPki::create(&scratch.path("pki"), &[], "stranger.example");
    let pid = std::process::id() % 100_000;
    let (gw, clinic) = (Netns::new(&format!("sog-{pid}")), Netns::new(&format!("soc-{pid}")));
    link(&gw, "gw0", "2001:db8:5e::1/64", &clinic, "cl0", "2001:db8:5e::2/64");
    clinic.ip(&["addr", "add", "192.168.1.1/32", "dev", "lo"]);
    let socket = scratch.path("admin.sock");
    let config = format!(
        "[gateway]\nidentity = \"gw.sekisho.example\"\ncertificate = \"{}\"\nkey = \"{}\"\ncas = [\"{}\"]\nadmin_socket = \"{}\"\nmetrics = \"127.0.0.1:9108\"\n\n\
         [ike]\ninside = [\"10.100.0.0/16\"]\n",
        pki.path("gw.pem").display(),
        pki.path("gw.key").display(),
        pki.path("ca.pem").display(),
        socket.display()
    );
    let control = Control::start(&gw, &scratch.path("gw"), &config, &["--listen", "[2001:db8:5e::1]:500", "--listen", "[2001:db8:5e::1]:4500"]);
    let audit = scratch.path("gw").join("audit.jsonl");

    // The operator adds the clinic.
    let tenant = scratch.path("clinic-1.toml");
    std::fs::write(&tenant, "name = \"clinic-1\"\nidentities = [\"clinic1.example\"]\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.100.0.0/16\"\naction = \"allow\"\n").unwrap();
    let (ok, out, err) = ctl(&socket, &["tenant", "add", tenant.to_str().unwrap()]);
    assert!(ok && out.contains("tenant_add"), "{out}{err}");
    // Refused, with the reason, and nothing changes: the same tenant again, a bad one.
    let (ok, _, err) = ctl(&socket, &["tenant", "add", tenant.to_str().unwrap()]);
    assert!(!ok && err.contains("exists already"), "{err}");
    let bad = scratch.path("bad.toml");
    std::fs::write(&bad, "name = \"clinic-2\"\nidentities = [\"clinic2.example\"]\nsubnets = [\"192.168.1.0/33\"]\n").unwrap();
    let (ok, _, err) = ctl(&socket, &["tenant", "add", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("refused") && err.contains("tenants[1]"), "{err}");
    for (args, why) in [(&["terminate", "nobody"][..], "no tenant named 'nobody'"), (&["nat", "clinic-1"], "no dataplane"), (&["tunnels", "--tenant", "x"], "no tenant named 'x'")] {
        let (ok, _, err) = ctl(&socket, args);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }

    // Its router, configured from what router-config writes, connects by itself.
    let swanctl = scratch.path("clinic").join("swanctl");
    let out = Command::new(bin("sekisho-control"))
        .args(["router-config", "--config", scratch.path("gw").join("control.toml").to_str().unwrap(), "--tenant", "clinic-1", "--gateway", "2001:db8:5e::1"])
        .args(["--ca-cert", pki.path("ca.pem").to_str().unwrap(), "--ca-key", pki.path("ca.key").to_str().unwrap(), "--out", swanctl.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let charon = Charon::configured(&clinic, &scratch.path("clinic"));
    let up = control.wait_for("child_up", |v| v.get("child_up").is_some());
    assert_eq!(up["child_up"]["tenant"], "clinic-1", "{}", charon.log());

    // The listings show it.
    let tunnels = ctl_json(&socket, &["tunnels", "--tenant", "clinic-1"]);
    assert_eq!(tunnels[0]["child_sas"][0]["clinic"], serde_json::json!(["192.168.1.0-192.168.1.255"]), "{tunnels}");
    let tenants = ctl_json(&socket, &["tenants"]);
    assert_eq!((tenants[0]["name"].as_str(), tenants[0]["child_sas"].as_u64()), (Some("clinic-1"), Some(1)), "{tenants}");
    let (ok, table, _) = ctl(&socket, &["tenants"]);
    assert!(ok && table.starts_with("NAME") && table.contains("clinic-1"), "{table}");
    assert_eq!(ctl_json(&socket, &["status"])["ike_sas"], 1);
    // So do the metrics (rendered once a second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let page = scrape(&gw);
    for line in ["sekisho_tenant_child_sas{tenant=\"clinic-1\"} 1", "sekisho_ike_handshake_seconds_count 1", "sekisho_ike_events_total{event=\"ike_sas_established\"} 1"] {
        assert!(page.contains(line), "{line} not in\n{page}");
    }

    // Changed: one more rule; the tunnel stays.
    std::fs::write(&tenant, "name = \"clinic-1\"\nidentities = [\"clinic1.example\"]\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.100.0.0/16\"\naction = \"allow\"\n[[rules]]\ndst = \"10.101.0.0/16\"\nprotocol = \"tcp\"\nports = \"443\"\naction = \"allow\"\n").unwrap();
    assert!(ctl(&socket, &["tenant", "change", tenant.to_str().unwrap()]).0);
    assert_eq!(ctl_json(&socket, &["tenants"])[0]["child_sas"], 1);
    // Terminated: the gateway deletes its tunnel, and the router (set to
    // start again when closed) comes back by itself.
    let twenty_seconds = std::time::Duration::from_secs(20);
    assert_eq!(ctl_json(&socket, &["terminate", "clinic-1"])["ike_sas_deleted"], 1);
    control.wait_for_count("child_down", 1, twenty_seconds, &charon);
    control.wait_for_count("child_up", 2, twenty_seconds, &charon);
    // Disabled: its tunnel ends for good; enabled; removed.
    assert!(ctl(&socket, &["tenant", "disable", "clinic-1"]).0);
    control.wait_for_count("child_down", 2, twenty_seconds, &charon);
    assert_eq!(ctl_json(&socket, &["tenants"])[0]["disabled"], true);
    assert!(ctl(&socket, &["tenant", "enable", "clinic-1"]).0);
    assert!(ctl(&socket, &["tenant", "remove", "clinic-1"]).0);
    assert_eq!(ctl_json(&socket, &["tenants"]), serde_json::json!([]));
    assert!(ctl(&socket, &["reload"]).0);

    // The audit trail: each change, by whom (this test runs as root), before and after.
    let lines: Vec<Value> = std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = lines.iter().map(|l| l["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["tenant_add", "router_certificate_issued", "tenant_change", "terminate", "tenant_disable", "tenant_enable", "tenant_remove", "reload"], "{lines:?}");
    assert_eq!((lines[2]["before"]["rules"].as_array().map(Vec::len), lines[2]["after"]["rules"].as_array().map(Vec::len)), (Some(1), Some(2)));
    assert_eq!((lines[0]["actor"].as_str(), lines[0]["after"]["subnets"][0].as_str()), (Some("root"), Some("192.168.1.0/24")));
    assert_eq!((lines[1]["subject"].as_str(), lines[1]["after"]["issuer"].as_str()), (Some("clinic-1"), Some("O=Sekisho, CN=Sekisho Test CA")));
    assert_eq!((lines[6]["before"]["name"].as_str(), lines[6]["after"].is_null()), (Some("clinic-1"), true));
    // A reload records the tenants, CAs, CRLs and our certificate before and after.
    assert_eq!((lines[7]["before"]["tenants"].as_array().map(Vec::len), lines[7]["after"]["cas"][0]["subject"].as_str()), (Some(0), Some("O=Sekisho, CN=Sekisho Test CA")));
}
