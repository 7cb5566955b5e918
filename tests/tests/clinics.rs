//! The README's first command, smaller: `sekisho-clinics demo` runs the
//! control process and the dataplane on virtio links with the clinic
//! emulator and the servers around them. Every clinic (its own tenant, all
//! with 192.168.1.0/24, half over IPv6 and half over IPv4) builds its tunnel
//! with IKEv2 through the dataplane and control, opens UDP, TCP and ICMP
//! flows, and every packet and every answer is checked; the pcap files it
//! exports for pktgen are read back by scapy, independently.

use sekisho_tests::{bin, last_json, Scratch};
use serde_json::Value;
use std::process::Command;

const CLINICS: u64 = 200;

#[test]
fn two_hundred_clinics_build_tunnels_and_pass_verified_traffic_both_ways() {
    let scratch = Scratch::new("clinics");
    let (site, pcap) = (scratch.path("site"), scratch.path("pcap"));
    let out = Command::new(bin("sekisho-clinics"))
        // Anti-replay off, as for replaying the exported pcap with pktgen.
        .args(["demo", "--clinics", &CLINICS.to_string(), "--seconds", "3", "--json", "--quiet", "--pcap-packets", "2000", "--replay-window", "0"])
        .arg("--dir")
        .arg(&site)
        .arg("--pcap")
        .arg(&pcap)
        .output()
        .expect("sekisho-clinics");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stderr}\nemulator log:\n{}", std::fs::read_to_string(site.join("emulator.log")).unwrap_or_default());
    let r: Value = last_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["verified"], true);
    assert_eq!((r["tunnels"]["up"].as_u64(), r["tunnels"]["failed"].as_u64()), (Some(CLINICS), Some(0)));
    assert_eq!(r["flows"]["open"].as_u64(), Some(3 * CLINICS));
    let c = &r["counters"];
    assert_eq!((c["tcp_opened"].as_u64(), c["tcp_closed"].as_u64()), (Some(CLINICS), Some(CLINICS)));
    let sent = c["sent"].as_u64().unwrap();
    assert!(sent > 10_000, "{sent} packets");
    assert_eq!(c["answered"].as_u64(), Some(sent));
    assert_eq!(r["server"]["answered"].as_u64(), Some(sent), "the servers saw each packet once");
    // Every protocol carried traffic, and every answer has its round trip.
    assert!(c["answered_by_protocol"].as_array().unwrap().iter().all(|n| n.as_u64().unwrap() > 1000));
    assert_eq!(r["latency"]["samples"].as_u64(), Some(sent));
    assert!(r["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    // The gateway's NAT held one session per flow.
    assert_eq!(r["gateway"]["nat_sessions"].as_u64(), Some(3 * CLINICS));
    assert_eq!((r["pcap"]["clinics_pcap_frames"].as_u64(), r["pcap"]["servers_pcap_frames"].as_u64()), (Some(2000), Some(2000)));
    // Control saw each clinic as its own tenant; the dataplane took every tunnel.
    let events = std::fs::read_to_string(site.join("control.jsonl")).unwrap();
    let dataplane_log = std::fs::read_to_string(site.join("dataplane.log")).unwrap();
    assert!(!dataplane_log.contains("refused"), "{dataplane_log}");
    assert_eq!(events.lines().filter(|l| l.contains("\"child_up\"")).count() as u64, CLINICS);

    // scapy reads the exported files.
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/scapy/pcap_check.py");
    let out = Command::new("/usr/bin/python3").arg(check).arg(&pcap).output().expect("python3");
    assert!(out.status.success(), "scapy: {}", String::from_utf8_lossy(&out.stderr));
    let counts: Vec<u64> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(&counts[..2], &[2000, 2000]);
    assert!(counts[2] > CLINICS / 2, "frames from {} clinics", counts[2]);
}
