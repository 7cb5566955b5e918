//! The responder against our initiator, in one process: whole handshakes,
//! rekeys and deletes, and every refusal RFC 7296 names.

use super::initiator::{InitReply, Initiator, InitiatorConfig};
use super::keys::Prf;
use super::payloads;
use super::responder::{Event, Responder, Settings};
use super::sk::{Integrity, Protection};
use super::ts::TrafficSelector;
use super::wire;
use crate::pki::identity::Identity;
use crate::pki::issue::{Authority, KeyKind};
use crate::pki::{Credentials, Trust};
use crate::tenants::{Tenant, Tenants};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One PKI for all tests (RSA keys take a while to make).
struct Pki {
    ca: Authority,
    gateway: (X509, PKey<Private>),
    clinic: (X509, PKey<Private>),
    clinic_ec: (X509, PKey<Private>),
    expired: (X509, PKey<Private>),
    stranger: (X509, PKey<Private>),
    foreign: (X509, PKey<Private>),
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Authority::new("Sekisho Test CA", KeyKind::Rsa2048);
        let other = Authority::new("Other CA", KeyKind::EcdsaP256);
        Pki {
            gateway: ca.issue("gw.sekisho.example", KeyKind::Rsa2048, -1, 365),
            clinic: ca.issue("clinic1.example", KeyKind::Rsa2048, -1, 365),
            clinic_ec: ca.issue("clinic2.example", KeyKind::EcdsaP256, -1, 365),
            expired: ca.issue("clinic1.example", KeyKind::EcdsaP256, -30, -2),
            stranger: ca.issue("stranger.example", KeyKind::EcdsaP256, -1, 365),
            foreign: other.issue("clinic1.example", KeyKind::EcdsaP256, -1, 365),
            ca,
        }
    })
}

const GATEWAY: &str = "[2001:db8::1]:500";
const CLINIC: &str = "[2001:db8:c::2]:500";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn responder(settings: Settings) -> Responder {
    let p = pki();
    let credentials = Credentials { key: p.gateway.1.clone(), cert: p.gateway.0.clone(), chain: vec![] };
    let trust = Trust::new(vec![p.ca.cert.clone()], vec![]).unwrap();
    let tenants = Tenants::new(vec![
        Tenant { name: "clinic-1".into(), identities: vec![Identity::from_config("clinic1.example").unwrap()], subnets: vec!["192.168.1.0/24".parse().unwrap()], worker: 1 },
        Tenant { name: "clinic-2".into(), identities: vec![Identity::from_config("clinic2.example").unwrap()], subnets: vec!["192.168.1.0/24".parse().unwrap()], worker: 0 },
    ]);
    Responder::new(settings, Identity::from_config("gw.sekisho.example").unwrap(), credentials, trust, tenants, 2, Instant::now())
}

fn v4(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: start.parse().unwrap(), end: end.parse().unwrap() }
}

fn initiator(identity: &str, (cert, key): &(X509, PKey<Private>)) -> Initiator {
    Initiator::new(InitiatorConfig::new(Identity::from_config(identity).unwrap(), key.clone(), cert.clone(), 14))
}

/// Sends datagrams to the responder; what it sends back, and the rest of its events.
fn deliver(r: &mut Responder, datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Event>) {
    deliver_at(r, Instant::now(), datagrams)
}

fn deliver_at(r: &mut Responder, now: Instant, datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut events = Vec::new();
    for d in datagrams {
        r.handle(now, addr(CLINIC), addr(GATEWAY), d, &mut events);
    }
    sent_and_rest(events)
}

/// The datagrams among `events`, and the other events.
fn sent_and_rest(events: Vec<Event>) -> (Vec<Vec<u8>>, Vec<Event>) {
    let (sends, rest): (Vec<Event>, Vec<Event>) = events.into_iter().partition(|e| matches!(e, Event::Send { .. }));
    let sent = sends
        .into_iter()
        .map(|e| match e {
            Event::Send { datagram, to, .. } => {
                assert_eq!(to, addr(CLINIC));
                datagram
            }
            _ => unreachable!(),
        })
        .collect();
    (sent, rest)
}

/// The initiator reads the responder's datagrams: the inner payloads.
fn receive(i: &mut Initiator, datagrams: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
    let mut done = None;
    for d in datagrams {
        if let Some(p) = i.response(d).unwrap() {
            done = Some(p);
        }
    }
    done.expect("a whole response")
}

fn sa_init(r: &mut Responder, i: &mut Initiator) -> InitReply {
    let request = i.sa_init_request(None, addr(CLINIC), addr(GATEWAY));
    let (sent, _) = deliver(r, &[request]);
    i.sa_init_response(&sent[0]).unwrap()
}

fn child_ups(events: &[Event]) -> Vec<(String, u8, super::sa::ChildSa, Option<u32>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildUp { tenant, worker, child, replaces, nat, .. } => Some((tenant.clone(), *worker, child.clone(), *replaces, *nat)),
            _ => None,
        })
        .collect()
}

fn logs(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| if let Event::Log(l) = e { Some(l.clone()) } else { None }).collect()
}

/// A whole handshake; the initiator and the CHILD_SA the responder installed.
fn connect(r: &mut Responder, mut i: Initiator, max_datagram: usize) -> (Initiator, super::sa::ChildSa) {
    assert_eq!(sa_init(r, &mut i), InitReply::Done);
    let request = i.auth_request(max_datagram);
    let (sent, events) = deliver(r, &request);
    let payloads = receive(&mut i, &sent);
    let child = i.auth_response(&payloads).unwrap();
    let ups = child_ups(&events);
    assert_eq!(ups.len(), 1, "{:?}", logs(&events));
    let installed = ups[0].2.clone();
    // Both ends derived the same keys, each direction.
    assert_eq!((installed.inbound_key.clone(), installed.outbound_key.clone()), (child.key_out.clone(), child.key_in.clone()));
    assert_eq!((installed.inbound_spi, installed.outbound_spi), (child.their_spi, child.our_spi));
    (i, installed)
}

#[test]
fn a_clinic_connects_with_dh14_and_rsa_and_gets_its_subnets_only() {
    let mut r = responder(Settings::default());
    let (i, child) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    // TSi narrowed to the tenant's declared subnet (§2.9); TSr to the inside.
    assert_eq!(child.clinic, vec![v4("192.168.1.0", "192.168.1.255")]);
    assert_eq!(i.children[0].clinic, child.clinic);
    assert_eq!(child.inbound_key.len(), 20, "AES-128 key and salt");
    assert_eq!(sekisho_dataplane::sad::SpiParts::decode(child.inbound_spi).core, 1, "the tenant's worker owns the SA");
    assert_eq!((r.ike_sa_count(), r.half_open_count(), r.counters.ike_sas_established), (1, 0, 1));
}

#[test]
fn other_groups_ciphers_and_key_types_work_too() {
    for (group, protection, who, pki_pair, hashes) in [
        (19, Protection::AesGcm16 { key: 16 }, "clinic2.example", &pki().clinic_ec, true),
        (31, Protection::AesCbc { key: 32, integrity: Integrity::Sha256_128 }, "clinic1.example", &pki().clinic, false),
        (14, Protection::AesCbc { key: 16, integrity: Integrity::Sha512_256 }, "clinic2.example", &pki().clinic_ec, false),
    ] {
        let mut r = responder(Settings::default());
        let mut i = initiator(who, pki_pair);
        i.config.groups = vec![group];
        i.config.group = group;
        i.config.protection = protection;
        i.config.prf = Prf::HmacSha384;
        i.config.signature_hashes = hashes;
        let i = Initiator::new(i.config);
        let (i, _) = connect(&mut r, i, 1232);
        assert_eq!(i.children.len(), 1, "group {group} {protection:?}");
    }
}

#[test]
fn a_certificate_sized_ike_auth_is_fragmented_both_ways() {
    let mut r = responder(Settings { max_datagram: 500, ..Settings::default() });
    let mut i = initiator("clinic1.example", &pki().clinic);
    assert_eq!(sa_init(&mut r, &mut i), InitReply::Done);
    let request = i.auth_request(500);
    assert!(request.len() >= 3, "RSA certificate in {} fragments", request.len());
    // Fragments arrive out of order.
    let reversed: Vec<Vec<u8>> = request.iter().rev().cloned().collect();
    let (sent, _) = deliver(&mut r, &reversed);
    assert!(sent.len() >= 3 && sent.iter().all(|d| d.len() <= 500));
    let payloads = receive(&mut i, &sent);
    i.auth_response(&payloads).unwrap();
    // A retransmitted request (its first fragment) gets every fragment again.
    i.next_message_id -= 1;
    let (again, _) = deliver(&mut r, &request[..1]);
    assert_eq!(again, sent);
    assert_eq!(r.counters.retransmits_answered, 1);
}

#[test]
fn invalid_ke_cookies_and_saturation() {
    // The initiator guesses P-256; we want MODP-2048 first (§1.3).
    let mut r = responder(Settings { dh_groups: vec![14, 19], ..Settings::default() });
    let mut i = initiator("clinic1.example", &pki().clinic);
    i.config.groups = vec![31, 14];
    i.config.group = 31;
    let mut i = Initiator::new(i.config);
    assert_eq!(sa_init(&mut r, &mut i), InitReply::InvalidKe(14));
    assert_eq!(sa_init(&mut r, &mut i), InitReply::Done);
    assert_eq!(r.counters.invalid_ke, 1);

    // Above the threshold, state only for requests that return our cookie (§2.6).
    let mut r = responder(Settings { cookie_threshold: 0, ..Settings::default() });
    let mut i = initiator("clinic1.example", &pki().clinic);
    let InitReply::Cookie(cookie) = sa_init(&mut r, &mut i) else { panic!("no cookie asked") };
    assert_eq!(r.half_open_count(), 0);
    // A cookie of the wrong length is no cookie (and no crash).
    let request = i.sa_init_request(Some(&[0]), addr(CLINIC), addr(GATEWAY));
    let (sent, _) = deliver(&mut r, &[request]);
    assert!(matches!(i.sa_init_response(&sent[0]).unwrap(), InitReply::Cookie(_)));
    let mut forged = cookie.clone();
    forged[5] ^= 1;
    let request = i.sa_init_request(Some(&forged), addr(CLINIC), addr(GATEWAY));
    let (sent, _) = deliver(&mut r, &[request]);
    assert!(matches!(i.sa_init_response(&sent[0]).unwrap(), InitReply::Cookie(_)));
    let request = i.sa_init_request(Some(&cookie), addr(CLINIC), addr(GATEWAY));
    let (sent, _) = deliver(&mut r, &[request]);
    assert_eq!(i.sa_init_response(&sent[0]).unwrap(), InitReply::Done);
    assert_eq!((r.half_open_count(), r.counters.cookies_sent, r.counters.cookies_invalid), (1, 3, 2));

    // Per source address, and a hard ceiling past which requests are dropped.
    let mut r = responder(Settings { cookie_threshold_per_source: 2, max_half_open: 3, ..Settings::default() });
    for n in 0..5 {
        let mut i = initiator("clinic1.example", &pki().clinic);
        let reply = sa_init(&mut r, &mut i);
        assert_eq!(matches!(reply, InitReply::Cookie(_)), n >= 2, "{n}");
    }
    let mut events = Vec::new();
    for n in 0..3 {
        let mut i = initiator("clinic1.example", &pki().clinic);
        let request = i.sa_init_request(None, addr(CLINIC), addr(GATEWAY));
        let source: SocketAddr = format!("[2001:db8:d::{n}]:500").parse().unwrap();
        r.handle(Instant::now(), source, addr(GATEWAY), &request, &mut events);
    }
    assert_eq!((r.half_open_count(), r.counters.dropped_saturated), (3, 2));
    // Half-open SAs time out and free their places.
    r.tick(Instant::now() + Duration::from_secs(31), &mut events);
    assert_eq!((r.half_open_count(), r.ike_sa_count(), r.counters.half_open_expired), (0, 0, 3));
}

#[test]
fn malformed_and_unacceptable_requests_get_the_notify_the_rfc_names() {
    let mut r = responder(Settings::default());
    let mut i = initiator("clinic1.example", &pki().clinic);
    let mut request = i.sa_init_request(None, addr(CLINIC), addr(GATEWAY));
    // A payload length past the end: INVALID_SYNTAX, unprotected.
    request[wire::HEADER_LEN + 3] = 0xff;
    let (sent, _) = deliver(&mut r, &[request]);
    assert_eq!(i.sa_init_response(&sent[0]).unwrap(), InitReply::Error(payloads::INVALID_SYNTAX));
    // Only algorithms we do not do: NO_PROPOSAL_CHOSEN.
    let mut i = initiator("clinic1.example", &pki().clinic);
    i.config.groups = vec![14];
    i.config.prf = Prf::HmacSha256;
    let mut r = responder(Settings { dh_groups: vec![19], ..Settings::default() });
    let reply = sa_init(&mut r, &mut i);
    assert_eq!(reply, InitReply::Error(payloads::NO_PROPOSAL_CHOSEN));
    assert_eq!((r.counters.no_proposal, r.half_open_count()), (1, 0));
}

/// IKE_AUTH refused: the notify the initiator reads, and the log line.
fn refused(identity: &str, pair: &(X509, PKey<Private>), sign_with: Option<&PKey<Private>>) -> (String, String) {
    let mut r = responder(Settings::default());
    let mut i = initiator(identity, pair);
    if let Some(key) = sign_with {
        i.config.key = key.clone();
    }
    assert_eq!(sa_init(&mut r, &mut i), InitReply::Done);
    let request = i.auth_request(1232);
    let (sent, events) = deliver(&mut r, &request);
    let payloads = receive(&mut i, &sent);
    let error = i.auth_response(&payloads).unwrap_err();
    assert_eq!((r.ike_sa_count(), r.counters.auth_failed), (0, 1), "the IKE SA is gone");
    assert!(child_ups(&events).is_empty());
    (error, logs(&events).join("\n"))
}

#[test]
fn wrong_ca_expired_certificate_unknown_identity_and_bad_signature_are_refused() {
    let p = pki();
    let failed = format!("notify {}", payloads::AUTHENTICATION_FAILED);
    let (notify, log) = refused("clinic1.example", &p.foreign, None);
    assert_eq!(notify, failed);
    assert!(log.contains("certificate refused") && log.contains("unable to get local issuer"), "{log}");
    let (notify, log) = refused("clinic1.example", &p.expired, None);
    assert!(notify == failed && log.contains("expired"), "{log}");
    let (notify, log) = refused("stranger.example", &p.stranger, None);
    assert!(notify == failed && log.contains("`stranger.example` is no tenant's"), "{log}");
    let (notify, log) = refused("clinic2.example", &p.clinic, None);
    assert!(notify == failed && log.contains("neither the subject nor a subjectAltName"), "{log}");
    let (notify, log) = refused("clinic1.example", &p.clinic, Some(&p.clinic_ec.1));
    assert!(notify == failed && log.contains("AUTH refused"), "{log}");
}

#[test]
fn a_refused_peer_that_moved_leaves_no_half_open_state() {
    // IKE_SA_INIT from one address (behind a NAT, as its hashes say), a bad
    // IKE_AUTH from another: the half-open place is given back all the same.
    let mut r = responder(Settings::default());
    let mut i = initiator("clinic1.example", &pki().clinic);
    i.config.key = pki().clinic_ec.1.clone();
    let (first, second): (SocketAddr, SocketAddr) = ("[2001:db8:d::1]:500".parse().unwrap(), "[2001:db8:d::2]:4500".parse().unwrap());
    let mut events = Vec::new();
    r.handle(Instant::now(), first, addr(GATEWAY), &i.sa_init_request(None, addr(CLINIC), addr(GATEWAY)), &mut events);
    let Some(Event::Send { datagram, .. }) = events.pop() else { panic!() };
    assert_eq!(i.sa_init_response(&datagram).unwrap(), InitReply::Done);
    assert_eq!(r.half_open_count(), 1);
    for d in i.auth_request(1232) {
        r.handle(Instant::now(), second, addr(GATEWAY), &d, &mut events);
    }
    assert_eq!((r.counters.auth_failed, r.half_open_count(), r.ike_sa_count()), (1, 0, 0));
}

#[test]
fn a_flood_of_selectors_is_unacceptable_not_fatal() {
    let mut r = responder(Settings { inside: vec!["10.1.0.0/16".parse().unwrap(), "10.2.0.0/16".parse().unwrap()], ..Settings::default() });
    let mut i = initiator("clinic1.example", &pki().clinic);
    // 200 distinct ranges, each narrowed to the tenant's subnet and the two inside prefixes.
    i.config.clinic = (0..200).map(|n| v4("192.168.0.0", &format!("192.168.1.{n}"))).collect();
    i.config.inside = vec![v4("0.0.0.0", "255.255.255.255"); 200];
    let mut i = Initiator::new(i.config);
    assert_eq!(sa_init(&mut r, &mut i), InitReply::Done);
    let (sent, _) = deliver(&mut r, &i.auth_request(1232));
    let payloads = receive(&mut i, &sent);
    assert_eq!(i.auth_response(&payloads).unwrap_err(), format!("notify {}", payloads::TS_UNACCEPTABLE));
}

#[test]
fn selectors_outside_the_tenants_subnets_are_unacceptable() {
    let mut r = responder(Settings::default());
    let mut i = initiator("clinic1.example", &pki().clinic);
    i.config.clinic = vec![v4("10.0.0.0", "10.0.0.255")];
    let mut i = Initiator::new(i.config);
    assert_eq!(sa_init(&mut r, &mut i), InitReply::Done);
    let (sent, events) = deliver(&mut r, &i.auth_request(1232));
    let payloads = receive(&mut i, &sent);
    assert_eq!(i.auth_response(&payloads).unwrap_err(), format!("notify {}", payloads::TS_UNACCEPTABLE));
    // The IKE SA stands; only the CHILD_SA was refused (§1.2).
    assert!(child_ups(&events).is_empty());
    assert_eq!((r.ike_sa_count(), r.counters.ts_unacceptable), (1, 1));
}

#[test]
fn child_and_ike_rekeys_then_deletes() {
    let mut r = responder(Settings::default());
    let (mut i, first) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);

    // Without a KE, while policy requires PFS: NO_PROPOSAL_CHOSEN, nothing changes.
    let (sent, events) = deliver(&mut r, &i.rekey_child_request(first.inbound_spi, false, 1232));
    let payloads = receive(&mut i, &sent);
    assert_eq!(i.rekey_child_response(&payloads).unwrap_err(), format!("notify {}", payloads::NO_PROPOSAL_CHOSEN));
    assert!(logs(&events)[0].contains("PFS is required"));

    // With PFS: a new CHILD_SA with new keys that replaces the old one, which stays until deleted.
    let (sent, events) = deliver(&mut r, &i.rekey_child_request(first.inbound_spi, true, 1232));
    let payloads = receive(&mut i, &sent);
    let rekeyed = i.rekey_child_response(&payloads).unwrap();
    let ups = child_ups(&events);
    assert_eq!(ups.len(), 1);
    let (_, _, installed, replaces, _) = &ups[0];
    assert_eq!((*replaces, installed.pfs_group), (Some(first.inbound_spi), Some(14)));
    assert_eq!((installed.inbound_key.clone(), installed.outbound_key.clone()), (rekeyed.key_out.clone(), rekeyed.key_in.clone()));
    assert_ne!(installed.inbound_key, first.inbound_key);
    assert_eq!(r.children().count(), 2);

    // The initiator of the rekey deletes the old CHILD_SA (§2.8).
    let (sent, events) = deliver(&mut r, &i.delete_child_request(first.inbound_spi, 1232));
    let payloads = receive(&mut i, &sent);
    assert_eq!(payloads[0].0, wire::DELETE);
    assert!(events.iter().any(|e| matches!(e, Event::ChildDown { inbound_spi, .. } if *inbound_spi == first.inbound_spi)));
    assert_eq!(r.children().count(), 1);

    // IKE SA rekey: the CHILD_SA moves to the new IKE SA.
    let (sent, _) = deliver(&mut r, &i.rekey_ike_request(1232));
    let payloads = receive(&mut i, &sent);
    let old_spi_r = i.spi_r;
    let mut old = Initiator::new(initiator("clinic1.example", &pki().clinic).config);
    old.spi_i = i.spi_i;
    i.rekey_ike_response(&payloads).unwrap();
    assert_ne!(i.spi_r, old_spi_r);
    assert_eq!((r.ike_sa_count(), r.counters.ike_sas_rekeyed), (2, 1));
    // The new IKE SA carries on: a liveness check, then a delete of everything.
    let (sent, _) = deliver(&mut r, &i.request(wire::INFORMATIONAL, &super::protect::Chain::new(), 1232));
    assert!(receive(&mut i, &sent).is_empty());
    let (sent, events) = deliver(&mut r, &i.delete_ike_request(1232));
    receive(&mut i, &sent);
    assert!(events.iter().any(|e| matches!(e, Event::ChildDown { inbound_spi, .. } if *inbound_spi == rekeyed.their_spi)));
    assert_eq!(r.children().count(), 0);
    assert_eq!(r.ike_sa_count(), 1, "the old IKE SA waits a while for its own delete");
    // The peer never deletes the old IKE SA: we do, after a grace period;
    // unanswered, the delete is sent again at 1, 2, 4 and 8 s, then the SA goes.
    let start = Instant::now() + super::sa::SUPERSEDED_GRACE + Duration::from_secs(1);
    let mut events = Vec::new();
    for s in [0, 1, 3, 7, 15, 31] {
        r.tick(start + Duration::from_secs(s), &mut events);
    }
    let sends = events.iter().filter(|e| matches!(e, Event::Send { .. })).count();
    assert_eq!((sends, r.ike_sa_count(), r.counters.expired), (5, 0, 1));
    assert!(logs(&events).iter().any(|l| l.contains("replaced by a rekey")), "{events:?}");
}

#[test]
fn liveness_checks_are_answered_and_a_removed_tenant_is_deleted_from_our_side() {
    let mut r = responder(Settings::default());
    let (mut i, child) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    let later = Instant::now() + Duration::from_secs(61);
    let mut events = Vec::new();
    r.tick(later, &mut events);
    let Some(Event::Send { datagram, .. }) = events.first() else { panic!("no liveness check: {events:?}") };
    let (kinds, answer) = i.answer(datagram).unwrap();
    assert!(kinds.is_empty(), "an empty INFORMATIONAL");
    let mut events = Vec::new();
    r.handle(later, addr(CLINIC), addr(GATEWAY), &answer, &mut events);
    // Answered: no retransmission, the SA lives on.
    r.tick(later + Duration::from_secs(5), &mut events);
    assert!(events.is_empty() && r.ike_sa_count() == 1, "{events:?}");

    // The operator removes the clinic's identity: its CHILD_SA stops now, and the peer is told.
    let p = pki();
    let trust = Trust::new(vec![p.ca.cert.clone()], vec![]).unwrap();
    let tenants = Tenants::new(vec![Tenant { name: "clinic-2".into(), identities: vec![Identity::from_config("clinic2.example").unwrap()], subnets: vec!["192.168.1.0/24".parse().unwrap()], worker: 0 }]);
    let mut events = Vec::new();
    r.reconfigure(Settings::default(), tenants, trust, None, later, &mut events);
    assert!(events.iter().any(|e| matches!(e, Event::ChildDown { inbound_spi, .. } if *inbound_spi == child.inbound_spi)));
    let delete = events.iter().find_map(|e| if let Event::Send { datagram, .. } = e { Some(datagram.clone()) } else { None }).unwrap();
    let (kinds, answer) = i.answer(&delete).unwrap();
    assert_eq!(kinds, vec![wire::DELETE]);
    assert_eq!(r.ike_sa_count(), 1, "until the peer answers");
    r.handle(later, addr(CLINIC), addr(GATEWAY), &answer, &mut events);
    assert_eq!((r.ike_sa_count(), r.children().count()), (0, 0));
}

#[test]
fn a_reconnecting_clinic_replaces_its_old_sas_and_requests_are_answered_once() {
    let mut r = responder(Settings::default());
    let (_, first) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    // The router rebooted: INITIAL_CONTACT in its new IKE_AUTH drops the old SAs (§2.4).
    let mut i = initiator("clinic1.example", &pki().clinic);
    assert_eq!(sa_init(&mut r, &mut i), InitReply::Done);
    let request = i.auth_request(1232);
    let (sent, events) = deliver(&mut r, &request);
    receive(&mut i, &sent);
    assert!(events.iter().any(|e| matches!(e, Event::ChildDown { inbound_spi, .. } if *inbound_spi == first.inbound_spi)));
    assert_eq!((r.ike_sa_count(), r.children().count()), (1, 1));
    // A replayed request is answered with the stored response, not processed again.
    let (again, events) = deliver(&mut r, &request);
    assert_eq!(again, sent);
    assert!(child_ups(&events).is_empty());
    // A message altered in flight, or with a stale Message ID, is dropped.
    let mut tampered = i.request(wire::INFORMATIONAL, &super::protect::Chain::new(), 1232);
    *tampered[0].last_mut().unwrap() ^= 1;
    let (sent, _) = deliver(&mut r, &tampered);
    assert!(sent.is_empty());
    assert_eq!(r.counters.integrity_failures, 1);
}

fn rekeying(child_rekey: u64, ike_rekey: u64) -> Settings {
    Settings { child_rekey: Duration::from_secs(child_rekey), ike_rekey: Duration::from_secs(ike_rekey), rekey_jitter_percent: 0, ..Settings::default() }
}

/// Ticks the responder at `at`; what it sends, and the rest.
fn tick(r: &mut Responder, at: Instant) -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut events = Vec::new();
    r.tick(at, &mut events);
    sent_and_rest(events)
}

fn downs(events: &[Event]) -> Vec<u32> {
    events.iter().filter_map(|e| if let Event::ChildDown { inbound_spi, .. } = e { Some(*inbound_spi) } else { None }).collect()
}

#[test]
fn the_gateway_rekeys_children_and_the_ike_sa_when_their_time_comes() {
    let mut r = responder(rekeying(100, 150));
    let t0 = Instant::now();
    let (mut i, first) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    assert!(tick(&mut r, t0 + Duration::from_secs(50)).0.is_empty());

    // The CHILD_SA's time: a rekey with PFS, in the peer's selectors' order (§2.9).
    let at = t0 + Duration::from_secs(101);
    let (sent, _) = tick(&mut r, at);
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds, vec![wire::NOTIFY, wire::SA, wire::NONCE, wire::KE, wire::TSI, wire::TSR]);
    let (sent, events) = deliver_at(&mut r, at, &[answer]);
    let up = events.iter().find_map(|e| if let Event::ChildUp { child, replaces, ours, .. } = e { Some((child.clone(), *replaces, *ours)) } else { None }).unwrap();
    let (rekeyed, replaces, ours) = up;
    assert_eq!((replaces, ours, rekeyed.pfs_group, rekeyed.clinic.clone(), rekeyed.rekeys), (Some(first.inbound_spi), true, Some(14), first.clinic.clone(), 1));
    let peer = i.children.last().unwrap().clone();
    assert_eq!((rekeyed.inbound_key.clone(), rekeyed.outbound_key.clone()), (peer.key_out.clone(), peer.key_in.clone()), "§2.17 with the gateway as initiator");
    assert_eq!((rekeyed.inbound_spi, rekeyed.outbound_spi), (peer.their_spi, peer.our_spi));
    // We started it, so we delete the old CHILD_SA; it goes when the peer answers.
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!((kinds, i.children.len()), (vec![wire::DELETE], 1));
    assert_eq!(r.children().count(), 2);
    let (_, events) = deliver_at(&mut r, at, &[answer]);
    assert_eq!((downs(&events), r.children().count(), r.counters.rekeys_started), (vec![first.inbound_spi], 1, 1));

    // The IKE SA's time: we become the original initiator of the new one (§2.18).
    let at = t0 + Duration::from_secs(151);
    let (sent, _) = tick(&mut r, at);
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds, vec![wire::SA, wire::NONCE, wire::KE]);
    assert!(!i.original_initiator);
    let (sent, events) = deliver_at(&mut r, at, &[answer]);
    assert!(logs(&events).iter().any(|l| l.contains("started by the gateway")), "{events:?}");
    assert_eq!((r.ike_sa_count(), r.children().count(), r.counters.ike_sas_rekeyed), (2, 1, 1));
    // Its initiator (we) deletes the old IKE SA; the CHILD_SA lives on the new one.
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds, vec![wire::DELETE]);
    let (_, events) = deliver_at(&mut r, at, &[answer]);
    assert!(downs(&events).is_empty());
    assert_eq!((r.ike_sa_count(), r.children().count()), (1, 1));

    // The CHILD_SA's next time comes on the new IKE SA.
    let at = t0 + Duration::from_secs(202);
    let (sent, events) = tick(&mut r, at);
    assert_eq!(sent.len(), 1, "{events:?}");
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds[0], wire::NOTIFY, "a rekey");
    let (sent, events) = deliver_at(&mut r, at, &[answer]);
    let rekeyed = child_ups(&events)[0].2.clone();
    let (_, answer) = i.answer(&sent[0]).unwrap();
    deliver_at(&mut r, at, &[answer]);

    // With the roles swapped, the peer's requests carry no I flag, and still work.
    let (sent, events) = deliver_at(&mut r, at, &i.rekey_child_request(rekeyed.inbound_spi, true, 1232));
    let payloads = receive(&mut i, &sent);
    i.rekey_child_response(&payloads).unwrap();
    assert_eq!(child_ups(&events).len(), 1);
    let (sent, events) = deliver_at(&mut r, at, &i.delete_ike_request(1232));
    receive(&mut i, &sent);
    assert_eq!(downs(&events).len(), 2);
    assert_eq!(r.ike_sa_count(), 0);
}

#[test]
fn dataplane_limits_and_hard_lifetimes_end_children_and_silent_peers_end_everything() {
    let mut r = responder(rekeying(100, 300));
    let t0 = Instant::now();
    let (mut i, child) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    // The dataplane's soft limit on the outbound SA: a rekey at the next tick.
    let mut events = Vec::new();
    r.sa_limit_reached(t0, child.outbound_spi, false, false, &mut events);
    let (sent, _) = tick(&mut r, t0 + Duration::from_secs(1));
    let (kinds, _) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds[0], wire::NOTIFY, "a rekey");
    // The peer answers no more: retransmitted at 1, 2, 4 and 8 s, then it is dead.
    let mut sends = 0;
    for s in [2, 3, 5, 9, 17, 33] {
        sends += tick(&mut r, t0 + Duration::from_secs(s)).0.len();
    }
    assert_eq!((sends, r.ike_sa_count(), r.children().count()), (4, 0, 0));

    // A hard limit on an inbound SA: that CHILD_SA goes now, and the peer is told.
    let (mut i, child) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    let t0 = Instant::now();
    r.sa_limit_reached(t0, child.inbound_spi, true, true, &mut events);
    let (sent, events) = tick(&mut r, t0 + Duration::from_secs(1));
    assert_eq!(downs(&events), vec![child.inbound_spi]);
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds, vec![wire::DELETE]);
    deliver(&mut r, &[answer]);
    assert_eq!(r.counters.expired, 1);
    // The IKE SA outlives its hard lifetime (rekeys refused, say): it goes too.
    let (sent, events) = tick(&mut r, t0 + Duration::from_secs(335));
    assert!(logs(&events).iter().any(|l| l.contains("hard lifetime")), "{events:?}");
    assert_eq!(i.answer(&sent[0]).unwrap().0, vec![wire::DELETE]);
}

/// Crossed rekeys of one CHILD_SA (§2.8.1): the gateway's request is in
/// flight when the peer's arrives. `peer_nonces`: the peer's nonce in its
/// own exchange, then in the gateway's.
fn crossed_child_rekeys(peer_nonces: [u8; 2]) -> (super::sa::ChildSa, Vec<Event>, Vec<Vec<u8>>, Initiator, Responder) {
    let mut r = responder(rekeying(100, 300));
    let t0 = Instant::now();
    let (mut i, old) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    let at = t0 + Duration::from_secs(101);
    let (ours, _) = tick(&mut r, at);
    i.nonce = Some(vec![peer_nonces[0]; 32]);
    let (sent, events) = deliver_at(&mut r, at, &i.rekey_child_request(old.inbound_spi, true, 1232));
    let payloads = receive(&mut i, &sent);
    i.rekey_child_response(&payloads).unwrap();
    assert_eq!(child_ups(&events)[0].3, Some(old.inbound_spi), "the peer's rekey is answered");
    i.nonce = Some(vec![peer_nonces[1]; 32]);
    let (_, answer) = i.answer(&ours[0]).unwrap();
    let (sent, events) = deliver_at(&mut r, at, &[answer]);
    assert_eq!(r.counters.rekey_collisions, 1);
    (old, events, sent, i, r)
}

#[test]
fn crossed_child_sa_rekeys_leave_the_one_without_the_lowest_nonce() {
    // The lowest nonce is in the gateway's exchange: its new SA is redundant,
    // and it deletes that one; the peer deletes the old one.
    let (_, events, sent, mut i, mut r) = crossed_child_rekeys([0xff, 0x00]);
    assert!(child_ups(&events).is_empty(), "{events:?}");
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds, vec![wire::DELETE]);
    deliver(&mut r, &[answer]);
    assert_eq!(r.children().count(), 2, "the old one and the peer's, until the peer deletes the old one");

    // The lowest in the peer's exchange: the peer's is redundant, the
    // gateway's goes in at once and the gateway deletes the old one.
    let (old, events, sent, mut i, mut r) = crossed_child_rekeys([0x00, 0xff]);
    let ups: Vec<_> = events.iter().filter_map(|e| if let Event::ChildUp { replaces, ours, .. } = e { Some((*replaces, *ours)) } else { None }).collect();
    assert_eq!(ups, vec![(Some(old.inbound_spi), true)]);
    i.answer(&sent[0]).unwrap();
    assert_eq!(r.children().count(), 3, "old, ours and the peer's redundant one, until the deletes");
    let peers = i.children.iter().find(|c| c.their_spi != old.inbound_spi).unwrap().their_spi;
    let (_, events) = deliver(&mut r, &i.delete_child_request(peers, 1232));
    assert_eq!(downs(&events), vec![peers]);
}

/// Crossed IKE SA rekeys (§2.8.2), as for CHILD_SAs (the peer answers
/// the gateway's request before it reads the answer to its own).
fn crossed_ike_rekeys(peer_nonces: [u8; 2]) -> (Vec<Event>, Vec<Vec<u8>>, Initiator, Responder) {
    let mut r = responder(rekeying(1000, 300));
    let t0 = Instant::now();
    let (mut i, _) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    let at = t0 + Duration::from_secs(301);
    let (ours, _) = tick(&mut r, at);
    i.nonce = Some(vec![peer_nonces[0]; 32]);
    deliver_at(&mut r, at, &i.rekey_ike_request(1232));
    assert_eq!(r.ike_sa_count(), 2);
    i.nonce = Some(vec![peer_nonces[1]; 32]);
    let (_, answer) = i.answer(&ours[0]).unwrap();
    let (sent, events) = deliver_at(&mut r, at, &[answer]);
    assert_eq!((r.counters.rekey_collisions, r.ike_sa_count(), r.children().count()), (1, 3, 1));
    (events, sent, i, r)
}

/// Whether the IKE SA holding the CHILD_SA is one we initiated.
fn children_on_ours(r: &Responder) -> bool {
    r.sas.values().find(|sa| !sa.children.is_empty()).expect("a CHILD_SA").initiator
}

#[test]
fn crossed_ike_sa_rekeys_leave_the_one_without_the_lowest_nonce() {
    // The gateway's is redundant: it deletes it (the peer is on it now, and
    // answers); the CHILD_SA goes to the peer's, whose maker deletes the old one.
    let (events, sent, mut i, r) = crossed_ike_rekeys([0xff, 0x00]);
    assert!(logs(&events).iter().any(|l| l.contains("the peer's stays")), "{events:?}");
    assert_eq!(i.answer(&sent[0]).unwrap().0, vec![wire::DELETE]);
    assert!(!children_on_ours(&r));

    // The peer's is redundant: the CHILD_SA moves to the gateway's, which
    // deletes the old IKE SA; the peer deletes its own.
    let (events, sent, mut i, mut r) = crossed_ike_rekeys([0x00, 0xff]);
    assert!(logs(&events).iter().any(|l| l.contains("ours stays")), "{events:?}");
    assert!(children_on_ours(&r));
    let (kinds, answer) = i.answer(&sent[0]).unwrap();
    assert_eq!(kinds, vec![wire::DELETE]);
    deliver(&mut r, &[answer]);
    let (_, events) = deliver(&mut r, &i.delete_ike_request(1232));
    assert_eq!((downs(&events).len(), r.ike_sa_count()), (1, 1), "the peer's redundant one waits for its delete");
}

#[test]
fn esp_from_the_peer_spares_it_liveness_checks() {
    let mut r = responder(Settings::default());
    let t0 = Instant::now();
    let (_, child) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    // The dataplane reports ESP received at 30 s: no check at 61 s (§2.4), one at 91 s.
    r.sa_activity(t0 + Duration::from_secs(30), child.inbound_spi, 5, 640);
    assert!(tick(&mut r, t0 + Duration::from_secs(61)).0.is_empty());
    // The same count again is no news.
    r.sa_activity(t0 + Duration::from_secs(80), child.inbound_spi, 5, 640);
    assert_eq!(tick(&mut r, t0 + Duration::from_secs(91)).0.len(), 1, "a liveness check");
}

#[test]
fn a_clinic_whose_tenant_subnets_narrow_from_under_it_is_deleted() {
    let mut r = responder(Settings::default());
    let (_, child) = connect(&mut r, initiator("clinic1.example", &pki().clinic), 1232);
    let mut reconfigure = |subnets: &[&str]| {
        let trust = Trust::new(vec![pki().ca.cert.clone()], vec![]).unwrap();
        let subnets = subnets.iter().map(|s| s.parse().unwrap()).collect();
        let tenants = Tenants::new(vec![Tenant { name: "clinic-1".into(), identities: vec![Identity::from_config("clinic1.example").unwrap()], subnets, worker: 1 }]);
        let mut events = Vec::new();
        r.reconfigure(Settings::default(), tenants, trust, None, Instant::now(), &mut events);
        downs(&events)
    };
    assert!(reconfigure(&["192.168.0.0/16"]).is_empty(), "still within");
    // Each of the tunnel's prefixes must lie within one subnet, as the dataplane checks.
    assert_eq!(reconfigure(&["192.168.1.0/25", "192.168.1.128/25"]), vec![child.inbound_spi]);
}

#[test]
fn a_reload_with_a_crl_ends_the_revoked_clinics_tunnels_and_a_new_gateway_certificate_serves_the_next() {
    let p = pki();
    let mut r = responder(Settings::default());
    let (_, revoked) = connect(&mut r, initiator("clinic1.example", &p.clinic), 1232);
    let (_, kept) = connect(&mut r, initiator("clinic2.example", &p.clinic_ec), 1232);
    let tenants = || {
        Tenants::new(vec![
            Tenant { name: "clinic-1".into(), identities: vec![Identity::from_config("clinic1.example").unwrap()], subnets: vec!["192.168.1.0/24".parse().unwrap()], worker: 1 },
            Tenant { name: "clinic-2".into(), identities: vec![Identity::from_config("clinic2.example").unwrap()], subnets: vec!["192.168.1.0/24".parse().unwrap()], worker: 0 },
        ])
    };
    // The gateway's certificate is replaced and clinic1's is revoked: only clinic1's tunnel goes.
    let (cert, key) = p.ca.issue("gw.sekisho.example", KeyKind::EcdsaP256, -1, 365);
    let ours = (Identity::from_config("gw.sekisho.example").unwrap(), Credentials { key, cert: cert.clone(), chain: vec![] });
    let trust = Trust::new(vec![p.ca.cert.clone()], vec![p.ca.crl(&[&p.clinic.0])]).unwrap();
    let mut events = Vec::new();
    r.reconfigure(Settings::default(), tenants(), trust, Some(ours), Instant::now(), &mut events);
    assert_eq!(downs(&events), vec![revoked.inbound_spi], "{:?}", logs(&events));
    assert!(logs(&events).iter().any(|l| l.contains("revoked")), "{:?}", logs(&events));
    assert!(r.children().any(|(_, c)| c.inbound_spi == kept.inbound_spi));
    // The next handshake is signed with the new certificate.
    let (i, _) = connect(&mut r, initiator("clinic2.example", &p.clinic_ec), 1232);
    assert_eq!(i.responder_cert.unwrap().to_der().unwrap(), cert.to_der().unwrap());
}
