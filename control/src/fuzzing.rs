//! Entry points for the control process's fuzz targets (`fuzz/`), also
//! replayed over the kept corpus by `tests/fuzz_corpus.rs`.

use crate::ike::initiator::{InitReply, Initiator, InitiatorConfig};
use crate::ike::protect::Chain;
use crate::ike::responder::{Event, Responder, Settings};
use crate::ike::{payloads, proposal, ts};
use crate::pki::identity::Identity;
use crate::pki::issue::{Authority, KeyKind};
use crate::pki::{Credentials, Trust};
use crate::tenants::{Tenant, Tenants};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use crate::ike::wire::{self, Writer, ENCRYPTED, ENCRYPTED_FRAGMENT, SA};

/// Arbitrary bytes as an IKE datagram: read, or refused with a notify,
/// never a panic; what reads (without an Encrypted payload) writes back to
/// a message that reads the same; so do the bodies of the SA, KE, Notify
/// and traffic selector payloads.
pub fn ike_message(data: &[u8]) {
    let Ok(message) = wire::parse(data) else { return };
    // The simple payloads: read, written back, read the same.
    let mut out = vec![0u8; data.len()];
    for p in &message.payloads {
        match p.kind {
            wire::KE => {
                if let Ok(ke) = payloads::KeyExchange::parse(p.body) {
                    let len = ke.write(&mut out).expect("room for what was read");
                    assert_eq!(payloads::KeyExchange::parse(&out[..len]), Ok(ke));
                }
            }
            wire::NOTIFY => {
                if let Ok(notify) = payloads::Notify::parse(p.body) {
                    let len = notify.write(&mut out).expect("room for what was read");
                    assert_eq!(payloads::Notify::parse(&out[..len]), Ok(notify));
                }
            }
            wire::NONCE => {
                let _ = payloads::parse_nonce(p.body);
            }
            wire::TSI | wire::TSR => {
                if let Ok(selectors) = ts::parse(p.body) {
                    let len = ts::write(&mut out, &selectors).expect("room for what was read");
                    assert_eq!(ts::parse(&out[..len]), Ok(selectors));
                }
            }
            _ => {}
        }
    }
    for sa in message.payloads.iter().filter(|p| p.kind == SA) {
        let Ok(proposals) = proposal::parse_sa(sa.body) else { continue };
        for p in proposals.iter().filter(|p| p.transforms.iter().all(|t| !t.unknown_attribute)) {
            let mut out = vec![0u8; 8 + p.spi.len() + 12 * p.transforms.len()];
            let len = proposal::write_sa(&mut out, 1, p.protocol, p.spi, &p.transforms).expect("room for what was read");
            let again = proposal::parse_sa(&out[..len]).expect("a written proposal reads");
            assert_eq!((again[0].protocol, again[0].spi, &again[0].transforms), (p.protocol, p.spi, &p.transforms));
        }
    }
    if message.payloads.iter().any(|p| matches!(p.kind, ENCRYPTED | ENCRYPTED_FRAGMENT)) {
        return;
    }
    let mut out = vec![0u8; data.len()];
    let mut writer = Writer::new(&mut out, message.header).expect("room for the header");
    for p in &message.payloads {
        writer.payload(p.kind, p.critical, p.body).expect("no larger than what was read");
    }
    let again = wire::parse(writer.finish()).expect("a written message reads");
    assert_eq!(again.payloads, message.payloads);
    assert_eq!((again.header.initiator_spi, again.header.exchange, again.header.flags), (message.header.initiator_spi, message.header.exchange, message.header.flags));
}

/// Seeds: an IKE_SA_INIT request and an IKE_AUTH with an Encrypted payload.
pub fn ike_seeds() -> Vec<Vec<u8>> {
    use wire::{Header, FLAG_INITIATOR, IKE_AUTH, IKE_SA_INIT, KE, NONCE, NOTIFY};
    let header = Header { initiator_spi: 7, responder_spi: 0, next_payload: 0, minor_version: 0, exchange: IKE_SA_INIT, flags: FLAG_INITIATOR, message_id: 0, length: 0 };
    let mut buf = [0u8; 512];
    let mut w = Writer::new(&mut buf, header).expect("room");
    let transforms = [
        proposal::Transform { kind: proposal::ENCR, id: 20, key_length: Some(256), unknown_attribute: false },
        proposal::Transform { kind: proposal::PRF, id: 5, key_length: None, unknown_attribute: false },
        proposal::Transform { kind: proposal::DH, id: 14, key_length: None, unknown_attribute: false },
    ];
    let mut sa = [0u8; 64];
    let sa_len = proposal::write_sa(&mut sa, 1, proposal::PROTOCOL_IKE, &[], &transforms).expect("room");
    w.payload(SA, false, &sa[..sa_len]).expect("room");
    w.payload(KE, false, &[0, 14, 0, 0, 1, 2, 3, 4]).expect("room");
    w.payload(NONCE, false, &[5; 32]).expect("room");
    w.payload(NOTIFY, false, &[0, 0, 0x40, 0x04, 1, 2, 3, 4]).expect("room");
    let init = w.finish().to_vec();
    let mut buf = [0u8; 512];
    let mut w = Writer::new(&mut buf, Header { exchange: IKE_AUTH, responder_spi: 9, message_id: 1, ..header }).expect("room");
    w.payload(ENCRYPTED, true, &[0x11; 80]).expect("room");
    let auth = w.finish().to_vec();
    vec![init, auth]
}

/// An authenticated peer that says anything: the inner payloads of its
/// requests, and of its answers to the responder's own requests (liveness
/// checks, rekeys), are the fuzzer's bytes, sealed with the right keys.
/// The responder must never panic, and its state stays bounded.
pub struct ExchangeHarness {
    responder: Responder,
    peer: Initiator,
    config: fn() -> InitiatorConfig,
    now: Instant,
}

const GATEWAY: &str = "[2001:db8::1]:500";
const PEER: &str = "[2001:db8::2]:500";

fn address(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

struct HarnessPki {
    gateway: Credentials,
    trust_ca: openssl::x509::X509,
    peer: (openssl::x509::X509, openssl::pkey::PKey<openssl::pkey::Private>),
}

fn harness_pki() -> &'static HarnessPki {
    static PKI: std::sync::OnceLock<HarnessPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Authority::new("Fuzz CA", KeyKind::EcdsaP256);
        let (cert, key) = ca.issue("gw.fuzz.example", KeyKind::EcdsaP256, -1, 365);
        HarnessPki { gateway: Credentials { key, cert, chain: vec![] }, peer: ca.issue("clinic.fuzz.example", KeyKind::EcdsaP256, -1, 365), trust_ca: ca.cert }
    })
}

fn peer_config() -> InitiatorConfig {
    let p = harness_pki();
    let id = Identity::from_config("clinic.fuzz.example").expect("identity");
    InitiatorConfig { protection: crate::ike::sk::Protection::AesGcm16 { key: 16 }, fragmentation: false, ..InitiatorConfig::new(id, p.peer.1.clone(), p.peer.0.clone(), 31) }
}

impl Default for ExchangeHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ExchangeHarness {
    pub fn new() -> ExchangeHarness {
        let p = harness_pki();
        let settings = Settings { dh_groups: vec![31, 14], child_rekey: Duration::from_secs(20), ike_rekey: Duration::from_secs(30), rekey_jitter_percent: 0, ..Settings::default() };
        let tenants = Tenants::new(vec![Tenant { name: "clinic".into(), identities: vec![Identity::from_config("clinic.fuzz.example").expect("identity")], subnets: vec!["192.168.1.0/24".parse().expect("prefix")], worker: 0 }]);
        let trust = Trust::new(vec![p.trust_ca.clone()], vec![]).expect("trust");
        let now = Instant::now();
        let responder = Responder::new(settings, Identity::from_config("gw.fuzz.example").expect("identity"), p.gateway.clone(), trust, tenants, 1, now);
        let mut h = ExchangeHarness { responder, peer: Initiator::new(peer_config()), config: peer_config, now };
        h.connect();
        h
    }

    /// What the responder sends now, given `events`.
    fn sent(events: Vec<Event>) -> Vec<Vec<u8>> {
        events.into_iter().filter_map(|e| if let Event::Send { datagram, .. } = e { Some(datagram) } else { None }).collect()
    }

    fn deliver(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut events = Vec::new();
        self.responder.handle(self.now, address(PEER), address(GATEWAY), datagram, &mut events);
        Self::sent(events)
    }

    /// A fresh IKE SA with one CHILD_SA (after a delete took the last one).
    fn connect(&mut self) {
        self.peer = Initiator::new((self.config)());
        let request = self.peer.sa_init_request(None, address(PEER), address(GATEWAY));
        let Some(answer) = self.deliver(&request).pop() else { return };
        if self.peer.sa_init_response(&answer) != Ok(InitReply::Done) {
            return;
        }
        for datagram in self.peer.auth_request(1232) {
            for answer in self.deliver(&datagram) {
                if let Ok(Some(payloads)) = self.peer.response(&answer) {
                    let _ = self.peer.auth_response(&payloads);
                }
            }
        }
    }

    /// `data`: a selector byte, then a payload chain (its first payload's
    /// type, then the payloads as on the wire).
    pub fn run(&mut self, data: &[u8]) {
        if self.responder.ike_sa_count() == 0 {
            self.connect();
        }
        let Some((&selector, rest)) = data.split_first() else { return };
        let Some((&first, bytes)) = rest.split_first() else { return };
        let Ok(payloads) = wire::chain(first, bytes) else { return };
        let mut chain = Chain::new();
        for p in &payloads {
            chain.push(p.kind, p.body.to_vec());
        }
        match selector % 4 {
            // A request of the peer's: CREATE_CHILD_SA or INFORMATIONAL.
            0 | 1 => {
                let exchange = if selector % 4 == 0 { wire::CREATE_CHILD_SA } else { wire::INFORMATIONAL };
                for datagram in self.peer.request(exchange, &chain, 1232) {
                    for answer in self.deliver(&datagram) {
                        let _ = self.peer.response(&answer);
                    }
                }
            }
            // Time passes until the responder asks something (a rekey or a
            // liveness check), and the peer answers it with the chain.
            _ => {
                self.now += Duration::from_secs(u64::from(selector / 4) % 40 + 1);
                let mut events = Vec::new();
                self.responder.tick(self.now, &mut events);
                for request in Self::sent(events) {
                    if let Ok(answer) = self.peer.respond_with(&request, &chain) {
                        for more in self.deliver(&answer) {
                            let _ = self.peer.response(&more);
                        }
                    }
                }
            }
        }
        // Bounded: one peer never holds more than a few SAs.
        assert!(self.responder.ike_sa_count() <= 4 && self.responder.children().count() <= 16, "{} IKE SAs, {} CHILD_SAs", self.responder.ike_sa_count(), self.responder.children().count());
    }
}

/// Seeds for the `ike_exchange` target: a rekey request, a delete, a
/// liveness answer, each as the peer would send it.
pub fn exchange_seeds() -> Vec<Vec<u8>> {
    // The selector, the first payload's type, then the payloads on the wire
    // (each header names the next one).
    let seed = |selector: u8, payloads: &[(u8, Vec<u8>)]| -> Vec<u8> {
        let mut bytes = vec![selector, payloads.first().map_or(0, |p| p.0)];
        for (i, (_, body)) in payloads.iter().enumerate() {
            bytes.extend_from_slice(&[payloads.get(i + 1).map_or(0, |p| p.0), 0]);
            bytes.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
            bytes.extend_from_slice(body);
        }
        bytes
    };
    let nonce = vec![0x11u8; 32];
    let delete = |protocol, spis: &[u32]| crate::ike::informational::delete_body(protocol, spis);
    vec![
        seed(0, &[(wire::NONCE, nonce.clone())]),
        seed(1, &[(wire::DELETE, delete(proposal::PROTOCOL_ESP, &[0x0010_0000]))]),
        seed(1, &[(wire::DELETE, delete(proposal::PROTOCOL_IKE, &[]))]),
        seed(2 + 4 * 20, &[(wire::NONCE, nonce)]),
        seed(3 + 4 * 29, &[(wire::NOTIFY, payloads::notify_body(payloads::TEMPORARY_FAILURE, &[]))]),
    ]
}
