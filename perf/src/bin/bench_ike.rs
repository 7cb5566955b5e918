//! IKE SAs established per second on one core, beside the raw cost of the
//! cryptography a responder cannot avoid, measured in the same run.
//!
//! A load tester of ours (the IKEv2 initiator of `sekisho-control`) acts as
//! many clinics, each with its own RSA-2048 certificate; the responder
//! answers IKE_SA_INIT and IKE_AUTH (with its first CHILD_SA) exactly as in
//! the control process. Only the responder's time is counted: the
//! initiators' own key exchange and signatures run outside the clock, as
//! they would on the clinics' routers. The raw floor per handshake is one
//! DH key pair and shared secret, one RSA-2048 signature (our AUTH) and two
//! RSA-2048 verifications (the clinic's certificate and its AUTH).

use clap::Parser;
use openssl::hash::MessageDigest;
use openssl::sign::{Signer, Verifier};
use sekisho_control::ike::dh::KeyPair;
use sekisho_control::ike::initiator::{InitReply, Initiator, InitiatorConfig};
use sekisho_control::ike::keys::Prf;
use sekisho_control::ike::responder::{Event, Responder, Settings};
use sekisho_control::ike::sk::Protection;
use sekisho_control::ike::ts::TrafficSelector;
use sekisho_control::pki::identity::Identity;
use sekisho_control::pki::issue::{Authority, KeyKind};
use sekisho_control::pki::{Credentials, Trust};
use sekisho_control::tenants::{Tenant, Tenants};
use sekisho_perf::bench::{append_records, median_ns_per_op, BenchRecord};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "IKE SAs per second per core (DH and RSA-2048), beside the raw DH and signature costs")]
struct Args {
    /// Handshakes to measure per DH group.
    #[arg(long, default_value_t = 400)]
    handshakes: usize,
    /// Distinct clinics (certificates) among the initiators.
    #[arg(long, default_value_t = 50)]
    clinics: usize,
    /// DH groups to measure.
    #[arg(long, value_delimiter = ',', default_value = "14,19,31")]
    groups: Vec<u16>,
    /// Append JSON lines here.
    #[arg(long)]
    out: Option<String>,
}

fn selector(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: start.parse().expect("address"), end: end.parse().expect("address") }
}

/// Microseconds of one DH exchange half (key pair + shared secret) of `group`.
fn raw_dh_us(group: u16) -> f64 {
    let peer = KeyPair::generate(group).expect("group").public();
    median_ns_per_op(1500, || {
        let ours = KeyPair::generate(group).expect("group");
        black_box(ours.shared_secret(&peer).expect("shared"));
    }) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ca = Authority::new("Bench CA", KeyKind::Rsa2048);
    let (gw_cert, gw_key) = ca.issue("gw.bench.example", KeyKind::Rsa2048, -1, 30);
    let clinics: Vec<_> = (0..args.clinics).map(|n| (format!("clinic{n}.bench.example"), ca.issue(&format!("clinic{n}.bench.example"), KeyKind::Rsa2048, -1, 30))).collect();
    let tenants = Tenants::new(
        clinics
            .iter()
            .enumerate()
            .map(|(n, (name, _))| Tenant { name: format!("clinic-{n}"), identities: vec![Identity::from_config(name).expect("id")], subnets: vec!["192.168.1.0/24".parse().expect("prefix")], worker: 0 })
            .collect(),
    );

    // The raw floor on this core.
    let octets = [7u8; 600];
    let signature = {
        let mut s = Signer::new(MessageDigest::sha256(), &gw_key)?;
        s.sign_oneshot_to_vec(&octets)?
    };
    let gw_public = gw_cert.public_key()?;
    let sign_us = median_ns_per_op(1500, || {
        let mut s = Signer::new(MessageDigest::sha256(), &gw_key).expect("signer");
        black_box(s.sign_oneshot_to_vec(&octets).expect("sign"));
    }) / 1000.0;
    let verify_us = median_ns_per_op(1500, || {
        let mut v = Verifier::new(MessageDigest::sha256(), &gw_public).expect("verifier");
        black_box(v.verify_oneshot(&signature, &octets).expect("verify"));
    }) / 1000.0;

    let (gateway, clinic_addr): (SocketAddr, SocketAddr) = ("[2001:db8::1]:500".parse()?, "[2001:db8:c::2]:500".parse()?);
    let mut records = Vec::new();
    // Each group with certificates the responder has seen before (clinics
    // coming back), and DH 14 also as a cold start (every certificate new
    // to it: OpenSSL parses each one, as after a gateway restart).
    let runs: Vec<(u16, bool)> = args.groups.iter().map(|&g| (g, false)).chain(args.groups.contains(&14).then_some((14, true))).collect();
    for (group, cold) in runs {
        let dh_us = raw_dh_us(group);
        let floor_us = dh_us + sign_us + 2.0 * verify_us;
        let new_responder = || {
            let credentials = Credentials { key: gw_key.clone(), cert: gw_cert.clone(), chain: vec![] };
            let trust = Trust::new(vec![ca.cert.clone()], vec![]).expect("trust");
            let settings = Settings { dh_groups: vec![group], cookie_threshold: usize::MAX, cookie_threshold_per_source: usize::MAX, max_half_open: usize::MAX, ..Settings::default() };
            Responder::new(settings, Identity::from_config("gw.bench.example").expect("id"), credentials, trust, tenants.clone(), 1, Instant::now())
        };
        let mut responder = new_responder();
        let mut established = 0;
        let mut in_responder = Duration::ZERO;
        let mut events = Vec::new();
        let mut handle = |responder: &mut Responder, datagrams: &[Vec<u8>], events: &mut Vec<Event>| -> Vec<Vec<u8>> {
            events.clear();
            let start = Instant::now();
            for d in datagrams {
                responder.handle(Instant::now(), clinic_addr, gateway, d, events);
            }
            in_responder += start.elapsed();
            events.iter().filter_map(|e| if let Event::Send { datagram, .. } = e { Some(datagram.clone()) } else { None }).collect()
        };
        let wall = Instant::now();
        for n in 0..args.handshakes {
            if cold {
                established += responder.counters.ike_sas_established;
                responder = new_responder();
            }
            let (name, (cert, key)) = &clinics[n % clinics.len()];
            let mut initiator = Initiator::new(InitiatorConfig {
                id: Identity::from_config(name).expect("id"),
                key: key.clone(),
                cert: cert.clone(),
                group,
                groups: vec![group],
                protection: Protection::AesGcm16 { key: 32 },
                prf: Prf::HmacSha256,
                esp_key: 16,
                clinic: vec![selector("192.168.1.0", "192.168.1.255")],
                inside: vec![selector("10.100.0.0", "10.100.255.255")],
                fragmentation: true,
                signature_hashes: true,
                responder_id: None,
            });
            let request = initiator.sa_init_request(None, clinic_addr, gateway);
            let answer = handle(&mut responder, &[request], &mut events);
            anyhow::ensure!(initiator.sa_init_response(&answer[0]).map_err(anyhow::Error::msg)? == InitReply::Done, "IKE_SA_INIT refused");
            let request = initiator.auth_request(1232);
            let answer = handle(&mut responder, &request, &mut events);
            let mut payloads = None;
            for d in &answer {
                payloads = initiator.response(d).map_err(anyhow::Error::msg)?.or(payloads);
            }
            initiator.auth_response(&payloads.ok_or_else(|| anyhow::anyhow!("no IKE_AUTH response"))?).map_err(anyhow::Error::msg)?;
        }
        established += responder.counters.ike_sas_established;
        anyhow::ensure!(established == args.handshakes as u64, "not every handshake completed: {:?}", responder.counters);
        let per_handshake_us = in_responder.as_secs_f64() * 1e6 / args.handshakes as f64;
        let rate = 1e6 / per_handshake_us;
        let floor_rate = 1e6 / floor_us;
        println!(
            "DH {group}{}: {rate:.0} IKE SAs/s per core ({per_handshake_us:.0} µs each in the responder; {:.1} s wall with the initiators) \
             | raw floor {floor_us:.0} µs = DH {dh_us:.0} + RSA-2048 sign {sign_us:.0} + 2 × verify {verify_us:.1} → {floor_rate:.0}/s | {:.0}% of the floor's rate",
            if cold { " (cold certificate cache)" } else { "" },
            wall.elapsed().as_secs_f64(),
            100.0 * rate / floor_rate
        );
        records.push(
            BenchRecord::operation("ike", "ike_sa_established", per_handshake_us * 1000.0)
                .with("dh_group", group)
                .with("certificates", if cold { "new to the responder" } else { "seen before" })
                .with("ike_sas_per_second", (rate * 10.0).round() / 10.0)
                .with("raw_floor_per_second", (floor_rate * 10.0).round() / 10.0)
                .with("percent_of_floor", (1000.0 * rate / floor_rate).round() / 10.0)
                .with("raw_dh_us", (dh_us * 10.0).round() / 10.0)
                .with("raw_rsa2048_sign_us", (sign_us * 10.0).round() / 10.0)
                .with("raw_rsa2048_verify_us", (verify_us * 10.0).round() / 10.0)
                .with("handshakes", args.handshakes),
        );
    }
    if let Some(out) = &args.out {
        append_records(out, &records)?;
    }
    Ok(())
}
