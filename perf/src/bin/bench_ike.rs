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
//!
//! Then a reconnect storm: 10,000 clinics back at once after a gateway
//! restart, with cookies keeping half-open state bounded (see `storm`).

use clap::Parser;
use openssl::hash::MessageDigest;
use openssl::sign::{Signer, Verifier};
use sekisho_control::ike::dh::KeyPair;
use sekisho_control::ike::initiator::{InitReply, Initiator, InitiatorConfig};
use sekisho_control::ike::responder::{Event, Responder, Settings};
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
    /// Clinics reconnecting at once after a gateway restart (0: skip),
    /// with DH 14 and cookies above the default threshold of half-open SAs.
    #[arg(long, default_value_t = 10_000)]
    storm: usize,
    /// Append JSON lines here.
    #[arg(long)]
    out: Option<String>,
}

fn selector(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: start.parse().expect("address"), end: end.parse().expect("address") }
}

/// A clinic router's initiator: AES-256-GCM, PRF HMAC-SHA2-256, DH `group`.
fn clinic(name: &str, key: &openssl::pkey::PKey<openssl::pkey::Private>, cert: &openssl::x509::X509, group: u16) -> Initiator {
    Initiator::new(InitiatorConfig {
        clinic: vec![selector("192.168.1.0", "192.168.1.255")],
        inside: vec![selector("10.100.0.0", "10.100.255.255")],
        ..InitiatorConfig::new(Identity::from_config(name).expect("id"), key.clone(), cert.clone(), group)
    })
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
            let mut initiator = clinic(name, key, cert, group);
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
    if args.storm > 0 {
        records.push(storm(&args, &ca, &gw_cert, &gw_key, sign_us, verify_us)?);
    }
    if let Some(out) = &args.out {
        append_records(out, &records)?;
    }
    Ok(())
}

/// `args.storm` clinics, each with its own certificate (new to the
/// responder, as after a restart) and its own address, all sending
/// IKE_SA_INIT at once. The responder (one core) takes the messages in
/// arrival order; each clinic answers at once (its own crypto runs on its
/// own router, outside the clock). Above the cookie threshold every new
/// request is asked for a cookie (§2.6), so half-open state stays bounded.
/// The time until every clinic is back is the responder's busy time.
fn storm(args: &Args, ca: &Authority, gw_cert: &openssl::x509::X509, gw_key: &openssl::pkey::PKey<openssl::pkey::Private>, sign_us: f64, verify_us: f64) -> anyhow::Result<BenchRecord> {
    use std::collections::VecDeque;
    let n = args.storm;
    let clinic_key = KeyKind::Rsa2048.generate();
    let names: Vec<String> = (0..n).map(|i| format!("c{i}.storm.example")).collect();
    let certs: Vec<_> = names.iter().map(|name| ca.issue_for(name, &clinic_key, -1, 30)).collect();
    let tenants = Tenants::new(
        names.iter().enumerate().map(|(i, name)| Tenant { name: format!("t{i}"), identities: vec![Identity::from_config(name).expect("id")], subnets: vec!["192.168.1.0/24".parse().expect("prefix")], worker: 0 }).collect(),
    );
    let credentials = Credentials { key: gw_key.clone(), cert: gw_cert.clone(), chain: vec![] };
    let trust = Trust::new(vec![ca.cert.clone()], vec![]).map_err(anyhow::Error::msg)?;
    let settings = Settings { dh_groups: vec![14], ..Settings::default() };
    let threshold = settings.cookie_threshold;
    let mut responder = Responder::new(settings, Identity::from_config("gw.bench.example").expect("id"), credentials, trust, tenants, 1, Instant::now());
    let gateway: SocketAddr = "[2001:db8::1]:500".parse()?;
    let addr = |i: usize| -> SocketAddr { SocketAddr::new(std::net::Ipv6Addr::from(0x2001_0db8_00c0_0000_0000_0000_0000_0000u128 + i as u128).into(), 500) };
    let mut clinics: Vec<Initiator> = (0..n)
        .map(|i| clinic(&names[i], &clinic_key, &certs[i], 14))
        .collect();
    // Everyone's first message is in the queue before the responder starts.
    let mut queue: VecDeque<(usize, Vec<Vec<u8>>)> = (0..n).map(|i| (i, vec![clinics[i].sa_init_request(None, addr(i), gateway)])).collect();
    let (mut busy, mut most_half_open, mut cookies, mut events) = (Duration::ZERO, 0, 0u64, Vec::new());
    while let Some((i, datagrams)) = queue.pop_front() {
        events.clear();
        let start = Instant::now();
        for d in &datagrams {
            responder.handle(Instant::now(), addr(i), gateway, d, &mut events);
        }
        busy += start.elapsed();
        most_half_open = most_half_open.max(responder.half_open_count());
        let answers: Vec<Vec<u8>> = events.iter().filter_map(|e| if let Event::Send { datagram, .. } = e { Some(datagram.clone()) } else { None }).collect();
        let c = &mut clinics[i];
        if c.keys.is_none() {
            match c.sa_init_response(&answers[0]).map_err(anyhow::Error::msg)? {
                InitReply::Cookie(cookie) => {
                    cookies += 1;
                    queue.push_back((i, vec![c.sa_init_request(Some(&cookie), addr(i), gateway)]));
                }
                InitReply::Done => queue.push_back((i, c.auth_request(1232))),
                other => anyhow::bail!("clinic {i}: {other:?}"),
            }
        } else {
            let mut payloads = None;
            for d in &answers {
                payloads = c.response(d).map_err(anyhow::Error::msg)?.or(payloads);
            }
            c.auth_response(&payloads.ok_or_else(|| anyhow::anyhow!("no IKE_AUTH response"))?).map_err(anyhow::Error::msg)?;
        }
    }
    anyhow::ensure!(responder.counters.ike_sas_established == n as u64, "not every clinic came back: {:?}", responder.counters);
    let floor_s = n as f64 * (raw_dh_us(14) + sign_us + 2.0 * verify_us) / 1e6;
    println!(
        "{n} clinics reconnecting at once (DH 14, RSA-2048, certificates new to the responder): all back after {:.2} s of one core; \
         the raw DH and signature floor is {floor_s:.2} s ({:.0}%); {cookies} cookies sent, at most {most_half_open} half-open SAs (cookie threshold {threshold})",
        busy.as_secs_f64(),
        100.0 * floor_s / busy.as_secs_f64()
    );
    Ok(BenchRecord::operation("ike", "reconnect_storm", busy.as_secs_f64() * 1e9 / n as f64)
        .with("clinics", n)
        .with("seconds_one_core", (busy.as_secs_f64() * 100.0).round() / 100.0)
        .with("raw_floor_seconds", (floor_s * 100.0).round() / 100.0)
        .with("cookies_sent", cookies)
        .with("most_half_open", most_half_open)
        .with("cookie_threshold", threshold))
}
