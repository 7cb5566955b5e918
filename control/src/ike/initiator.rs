//! An IKEv2 initiator, as a clinic router runs one: IKE_SA_INIT, IKE_AUTH
//! with a certificate, CHILD_SA and IKE SA rekeys, deletes. The gateway
//! never initiates tunnels; this drives the responder in tests and in the
//! IKE load tester (perf/), and checks the responder's answers as a peer
//! would: its AUTH signature, proposals, selectors and keys.

use super::auth;
use super::dh::KeyPair;
use super::informational::delete_body;
use super::keys::{IkeKeys, Prf};
use super::payloads::{self, notify_body, KeyExchange, Notify};
use super::proposal::{self, Transform, DH, ENCR, ESN, PRF, PROTOCOL_ESP, PROTOCOL_IKE};
use super::protect::{self, Chain, Reassembly};
use super::sa::peer_keys;
use super::sk::{Protection, ENCR_AES_GCM_16};
use super::ts::{self, TrafficSelector};
use super::wire::{self, Header, Payload, FLAG_INITIATOR};
use crate::pki::identity::Identity;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Inner payloads of a response, owned: (type, body).
pub type Payloads = Vec<(u8, Vec<u8>)>;

/// What the initiator proposes and who it is.
pub struct InitiatorConfig {
    pub id: Identity,
    pub key: PKey<Private>,
    pub cert: X509,
    /// The DH group of its first KE guess, and of PFS in rekeys.
    pub group: u16,
    /// Groups it proposes (the responder may ask for another of them).
    pub groups: Vec<u16>,
    pub protection: Protection,
    pub prf: Prf,
    /// ESP AES-GCM key bytes: 16 or 32.
    pub esp_key: usize,
    pub clinic: Vec<TrafficSelector>,
    pub inside: Vec<TrafficSelector>,
    pub fragmentation: bool,
    /// Announce RFC 7427 hashes (else the responder signs with its classic method).
    pub signature_hashes: bool,
    /// The IDr to ask for, if any.
    pub responder_id: Option<Identity>,
}

impl InitiatorConfig {
    /// A clinic router as the tests and the load tester play it:
    /// AES-256-GCM, PRF HMAC-SHA2-256, DH `group` only, AES-128-GCM ESP,
    /// all of IPv4 asked for on both sides (the responder narrows it),
    /// fragmentation and RFC 7427 signatures announced.
    pub fn new(id: Identity, key: PKey<Private>, cert: X509, group: u16) -> InitiatorConfig {
        let any = TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: std::net::Ipv4Addr::UNSPECIFIED.into(), end: std::net::Ipv4Addr::BROADCAST.into() };
        InitiatorConfig {
            id,
            key,
            cert,
            group,
            groups: vec![group],
            protection: Protection::AesGcm16 { key: 32 },
            prf: Prf::HmacSha256,
            esp_key: 16,
            clinic: vec![any],
            inside: vec![any],
            fragmentation: true,
            signature_hashes: true,
            responder_id: None,
        }
    }
}

/// A CHILD_SA as the initiator holds it: its outbound SPI is the
/// responder's inbound one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorChild {
    pub our_spi: u32,
    pub their_spi: u32,
    /// Initiator-to-responder key and salt, then the other direction.
    pub key_out: Vec<u8>,
    pub key_in: Vec<u8>,
    pub clinic: Vec<TrafficSelector>,
    pub inside: Vec<TrafficSelector>,
}

/// How the responder answered IKE_SA_INIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitReply {
    Done,
    /// Send the request again with this cookie first (§2.6).
    Cookie(Vec<u8>),
    /// Send the request again with a KE of this group (§1.3).
    InvalidKe(u16),
    /// An error notify.
    Error(u16),
}

pub struct Initiator {
    pub config: InitiatorConfig,
    pub spi_i: u64,
    pub spi_r: u64,
    ni: Vec<u8>,
    nr: Vec<u8>,
    keypair: KeyPair,
    pub keys: Option<IkeKeys>,
    prf: Prf,
    protection: Protection,
    request1: Vec<u8>,
    response1: Vec<u8>,
    pub next_message_id: u32,
    iv_counter: u64,
    reassembly: Reassembly,
    pub children: Vec<InitiatorChild>,
    pending: Option<Pending>,
    /// The peer's certificate, from IKE_AUTH.
    pub responder_cert: Option<X509>,
    /// False once the responder rekeyed the IKE SA: it is the new SA's
    /// original initiator (§2.18), and the roles of §3.1 swap.
    pub original_initiator: bool,
    /// The IKE SA before the last rekey, kept to answer its delete.
    previous: Option<PreviousSa>,
    /// The nonce of the next exchange we take part in (tests set it to
    /// decide crossed rekeys, §2.8.1); random when None.
    pub nonce: Option<Vec<u8>>,
}

/// An IKE SA replaced by a rekey: what answering its delete takes.
struct PreviousSa {
    spi_i: u64,
    spi_r: u64,
    keys: IkeKeys,
    original_initiator: bool,
    iv_counter: u64,
}

/// A request in flight that makes an SA: its nonce, our new SPI, and DH key.
struct Pending {
    nonce: Vec<u8>,
    our_spi: u32,
    keypair: Option<KeyPair>,
    new_ike_spi: Option<u64>,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).expect("random");
    b
}

impl Initiator {
    pub fn new(config: InitiatorConfig) -> Initiator {
        let keypair = KeyPair::generate(config.group).expect("a supported group");
        Initiator {
            spi_i: u64::from_be_bytes(random()),
            spi_r: 0,
            ni: payloads::fresh_nonce(),
            nr: Vec::new(),
            keypair,
            keys: None,
            prf: config.prf,
            protection: config.protection,
            request1: Vec::new(),
            response1: Vec::new(),
            next_message_id: 0,
            iv_counter: 0,
            reassembly: Reassembly::default(),
            children: Vec::new(),
            pending: None,
            responder_cert: None,
            original_initiator: true,
            previous: None,
            nonce: None,
            config,
        }
    }

    fn ike_transforms(&self) -> Vec<Transform> {
        let t = |kind, id, key_length| Transform { kind, id, key_length, unknown_attribute: false };
        let mut out = Vec::new();
        match self.config.protection {
            Protection::AesGcm16 { key } => out.push(t(ENCR, ENCR_AES_GCM_16, Some(key as u16 * 8))),
            Protection::AesCbc { key, integrity } => {
                out.push(t(ENCR, super::sk::ENCR_AES_CBC, Some(key as u16 * 8)));
                out.push(t(proposal::INTEG, integrity.id(), None));
            }
        }
        out.push(t(PRF, self.config.prf.id(), None));
        out.extend(self.config.groups.iter().map(|&g| t(DH, g, None)));
        out
    }

    fn esp_transforms(&self, pfs: Option<u16>) -> Vec<Transform> {
        let t = |kind, id, key_length| Transform { kind, id, key_length, unknown_attribute: false };
        let mut out = vec![t(ENCR, ENCR_AES_GCM_16, Some(self.config.esp_key as u16 * 8))];
        if let Some(g) = pfs {
            out.push(t(DH, g, None));
        }
        out.push(t(ESN, 0, None));
        out
    }

    /// The IKE_SA_INIT request (again with `cookie` when asked for one).
    pub fn sa_init_request(&mut self, cookie: Option<&[u8]>, local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let header = Header { initiator_spi: self.spi_i, responder_spi: 0, next_payload: 0, minor_version: 0, exchange: wire::IKE_SA_INIT, flags: FLAG_INITIATOR, message_id: 0, length: 0 };
        let mut w = wire::Writer::new(&mut buf, header).expect("room");
        if let Some(cookie) = cookie {
            w.payload(wire::NOTIFY, false, &notify_body(payloads::COOKIE, cookie)).expect("room");
        }
        let mut sa = [0u8; 256];
        let len = proposal::write_sa(&mut sa, 1, PROTOCOL_IKE, &[], &self.ike_transforms()).expect("room");
        w.payload(wire::SA, false, &sa[..len]).expect("room");
        w.payload(wire::KE, false, &self.keypair.ke_body()).expect("room");
        w.payload(wire::NONCE, false, &self.ni).expect("room");
        w.payload(wire::NOTIFY, false, &notify_body(payloads::NAT_DETECTION_SOURCE_IP, &super::sa_init::nat_hash(self.spi_i, 0, local))).expect("room");
        w.payload(wire::NOTIFY, false, &notify_body(payloads::NAT_DETECTION_DESTINATION_IP, &super::sa_init::nat_hash(self.spi_i, 0, remote))).expect("room");
        if self.config.fragmentation {
            w.payload(wire::NOTIFY, false, &notify_body(payloads::IKEV2_FRAGMENTATION_SUPPORTED, &[])).expect("room");
        }
        if self.config.signature_hashes {
            w.payload(wire::NOTIFY, false, &notify_body(payloads::SIGNATURE_HASH_ALGORITHMS, &auth::hashes_data())).expect("room");
        }
        self.request1 = w.finish().to_vec();
        self.request1.clone()
    }

    pub fn sa_init_response(&mut self, datagram: &[u8]) -> Result<InitReply, String> {
        let m = wire::parse(datagram).map_err(|e| e.to_string())?;
        if !m.header.is_response() || m.header.initiator_spi != self.spi_i {
            return Err("not a response to our request".into());
        }
        let (mut sa, mut ke, mut nonce) = (None, None, None);
        for p in &m.payloads {
            match p.kind {
                wire::SA => sa = Some(p.body),
                wire::KE => ke = Some(KeyExchange::parse(p.body).map_err(|e| e.to_string())?),
                wire::NONCE => nonce = Some(p.body),
                wire::NOTIFY => {
                    let n = Notify::parse(p.body).map_err(|e| e.to_string())?;
                    match n.kind {
                        payloads::COOKIE => return Ok(InitReply::Cookie(n.data.to_vec())),
                        payloads::INVALID_KE_PAYLOAD => {
                            let group = u16::from_be_bytes(n.data.try_into().map_err(|_| "INVALID_KE_PAYLOAD without a group")?);
                            self.keypair = KeyPair::generate(group).map_err(|e| e.to_string())?;
                            return Ok(InitReply::InvalidKe(group));
                        }
                        kind if n.is_error() => return Ok(InitReply::Error(kind)),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let proposals = proposal::parse_sa(sa.ok_or("no SA")?).map_err(|e| e.to_string())?;
        let choice = proposal::choose_ike(&proposals, &[self.keypair.group()], 0).ok_or("the responder chose what we did not offer")?;
        if proposals.len() != 1 || choice.protection != self.config.protection || choice.prf != self.config.prf {
            return Err("the responder's proposal differs from ours".into());
        }
        let ke = ke.ok_or("no KE")?;
        let shared = self.keypair.shared_secret(ke.data).map_err(|e| e.to_string())?;
        self.nr = payloads::parse_nonce(nonce.ok_or("no nonce")?).map_err(|e| e.to_string())?.to_vec();
        self.spi_r = m.header.responder_spi;
        self.keys = Some(IkeKeys::derive(self.prf, self.protection.key_lengths(), &shared, &self.ni, &self.nr, self.spi_i, self.spi_r));
        self.response1 = datagram.to_vec();
        self.next_message_id = 1;
        Ok(InitReply::Done)
    }

    fn keys(&self) -> &IkeKeys {
        self.keys.as_ref().expect("IKE_SA_INIT done")
    }

    fn next_nonce(&mut self) -> Vec<u8> {
        self.nonce.take().unwrap_or_else(payloads::fresh_nonce)
    }

    fn flags(&self) -> u8 {
        if self.original_initiator {
            FLAG_INITIATOR
        } else {
            0
        }
    }

    /// Seals a request; its datagrams.
    pub fn request(&mut self, exchange: u8, chain: &Chain, max_datagram: usize) -> Vec<Vec<u8>> {
        let header = Header { initiator_spi: self.spi_i, responder_spi: self.spi_r, next_payload: 0, minor_version: 0, exchange, flags: self.flags(), message_id: self.next_message_id, length: 0 };
        let keys = peer_keys(self.keys.as_ref().expect("IKE_SA_INIT done"), !self.original_initiator);
        protect::seal(self.protection, keys, &mut self.iv_counter, header, chain, max_datagram, self.config.fragmentation)
    }

    /// Opens a response (or one fragment of it): its inner payloads once
    /// complete, as owned (type, body) pairs.
    pub fn response(&mut self, datagram: &[u8]) -> Result<Option<Payloads>, String> {
        let m = wire::parse(datagram).map_err(|e| e.to_string())?;
        if !m.header.is_response() || m.header.message_id != self.next_message_id || m.header.responder_spi != self.spi_r {
            return Err(format!("unexpected message {} (want {})", m.header.message_id, self.next_message_id));
        }
        let sk: &Payload = m.payloads.last().ok_or("no payloads")?;
        let keys = peer_keys(self.keys.as_ref().expect("IKE_SA_INIT done"), self.original_initiator);
        let (first, plain) = match sk.kind {
            wire::ENCRYPTED => (sk.inner_next, protect::open(self.protection, keys, datagram, sk).map_err(|e| e.to_string())?),
            wire::ENCRYPTED_FRAGMENT => match self.reassembly.add(self.protection, keys, datagram, m.header.message_id, sk).map_err(|e| e.to_string())? {
                Some(whole) => whole,
                None => return Ok(None),
            },
            _ => return Err("an unprotected response".into()),
        };
        self.next_message_id += 1;
        let payloads = wire::chain(first, &plain).map_err(|e| e.to_string())?;
        Ok(Some(payloads.iter().map(|p| (p.kind, p.body.to_vec())).collect()))
    }

    /// The IKE_AUTH request: identity, certificate, AUTH, the first CHILD_SA.
    pub fn auth_request(&mut self, max_datagram: usize) -> Vec<Vec<u8>> {
        let idi = self.config.id.to_body();
        let octets = auth::signed_octets(self.prf, &self.request1, &self.nr, &self.keys().sk_pi, &idi);
        let our_spi = u32::from_be_bytes(random());
        let mut chain = Chain::new();
        chain.push(wire::IDI, idi);
        chain.push(wire::CERT, [&[super::ike_auth::CERT_X509_SIGNATURE][..], &self.config.cert.to_der().expect("DER")].concat());
        chain.push(wire::NOTIFY, notify_body(payloads::INITIAL_CONTACT, &[]));
        if let Some(id) = &self.config.responder_id {
            chain.push(wire::IDR, id.to_body());
        }
        chain.push(wire::AUTH, auth::sign(&self.config.key, &octets, &auth::SUPPORTED_HASHES));
        self.push_child_payloads(&mut chain, our_spi, None);
        self.pending = Some(Pending { nonce: self.ni.clone(), our_spi, keypair: None, new_ike_spi: None });
        self.request(wire::IKE_AUTH, &chain, max_datagram)
    }

    fn push_child_payloads(&self, chain: &mut Chain, our_spi: u32, pfs: Option<u16>) {
        let mut sa = [0u8; 128];
        let len = proposal::write_sa(&mut sa, 1, PROTOCOL_ESP, &our_spi.to_be_bytes(), &self.esp_transforms(pfs)).expect("room");
        chain.push(wire::SA, sa[..len].to_vec());
        chain.push(wire::TSI, super::ike_auth::ts_body(&self.config.clinic));
        chain.push(wire::TSR, super::ike_auth::ts_body(&self.config.inside));
    }

    /// Reads the IKE_AUTH response: checks the responder's AUTH with the
    /// certificate it sent, and keeps the CHILD_SA. Err carries the
    /// responder's error notify or what was wrong.
    pub fn auth_response(&mut self, payloads: &[(u8, Vec<u8>)]) -> Result<InitiatorChild, String> {
        let find = |kind| payloads.iter().find(|p| p.0 == kind).map(|p| p.1.as_slice());
        if let Some(n) = payloads.iter().filter(|p| p.0 == wire::NOTIFY).filter_map(|p| Notify::parse(&p.1).ok()).find(|n| n.is_error()) {
            if find(wire::AUTH).is_none() {
                return Err(format!("notify {}", n.kind));
            }
        }
        let idr = find(wire::IDR).ok_or("no IDr")?;
        let cert = find(wire::CERT).ok_or("no CERT")?;
        let cert = X509::from_der(&cert[1..]).map_err(|e| e.to_string())?;
        let (method, data) = auth::parse(find(wire::AUTH).ok_or("no AUTH")?).map_err(|e| e.to_string())?;
        let octets = auth::signed_octets(self.prf, &self.response1, &self.ni, &self.keys().sk_pr, idr);
        let key = cert.public_key().map_err(|e| e.to_string())?;
        auth::verify(&key, method, data, &octets).map_err(|e| format!("responder AUTH: {e}"))?;
        if !Identity::parse(idr).map_err(|e| e.to_string())?.is_certified_by(&cert) {
            return Err("the responder's IDr is not in its certificate".into());
        }
        self.responder_cert = Some(cert);
        let pending = self.pending.take().ok_or("no IKE_AUTH in flight")?;
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        self.child_from(payloads, None, &ni, &nr, pending.our_spi)
    }

    fn child_from(&mut self, payloads: &[(u8, Vec<u8>)], shared: Option<&[u8]>, ni: &[u8], nr: &[u8], our_spi: u32) -> Result<InitiatorChild, String> {
        let find = |kind| payloads.iter().find(|p| p.0 == kind).map(|p| p.1.as_slice());
        if let Some(n) = payloads.iter().filter(|p| p.0 == wire::NOTIFY).filter_map(|p| Notify::parse(&p.1).ok()).find(|n| n.is_error()) {
            return Err(format!("notify {}", n.kind));
        }
        let proposals = proposal::parse_sa(find(wire::SA).ok_or("no SA")?).map_err(|e| e.to_string())?;
        let choice = proposal::choose_esp(&proposals, None).ok_or("ESP proposal not ours")?;
        let clinic = ts::parse(find(wire::TSI).ok_or("no TSi")?).map_err(|e| e.to_string())?;
        let inside = ts::parse(find(wire::TSR).ok_or("no TSr")?).map_err(|e| e.to_string())?;
        let per = choice.key + 4;
        let keymat = self.keys().child_keymat(self.prf, shared, ni, nr, 2 * per);
        let child = InitiatorChild { our_spi, their_spi: choice.peer_spi, key_out: keymat[..per].to_vec(), key_in: keymat[per..].to_vec(), clinic, inside };
        self.children.push(child.clone());
        Ok(child)
    }

    /// A CREATE_CHILD_SA request rekeying the CHILD_SA whose responder
    /// SPI is `their_spi`, with a KE of our group when `pfs`.
    pub fn rekey_child_request(&mut self, their_spi: u32, pfs: bool, max_datagram: usize) -> Vec<Vec<u8>> {
        let our_old = self.children.iter().find(|c| c.their_spi == their_spi).map_or(0, |c| c.our_spi);
        let nonce = self.next_nonce();
        let our_spi = u32::from_be_bytes(random());
        let keypair = pfs.then(|| KeyPair::generate(self.config.group).expect("group"));
        let mut chain = Chain::new();
        chain.push(wire::NOTIFY, payloads::notify_about(PROTOCOL_ESP, &our_old.to_be_bytes(), payloads::REKEY_SA));
        let mut sa = [0u8; 128];
        let len = proposal::write_sa(&mut sa, 1, PROTOCOL_ESP, &our_spi.to_be_bytes(), &self.esp_transforms(pfs.then_some(self.config.group))).expect("room");
        chain.push(wire::SA, sa[..len].to_vec());
        chain.push(wire::NONCE, nonce.clone());
        if let Some(k) = &keypair {
            chain.push(wire::KE, k.ke_body());
        }
        chain.push(wire::TSI, super::ike_auth::ts_body(&self.config.clinic));
        chain.push(wire::TSR, super::ike_auth::ts_body(&self.config.inside));
        self.pending = Some(Pending { nonce, our_spi, keypair, new_ike_spi: None });
        self.request(wire::CREATE_CHILD_SA, &chain, max_datagram)
    }

    pub fn rekey_child_response(&mut self, payloads: &[(u8, Vec<u8>)]) -> Result<InitiatorChild, String> {
        let find = |kind| payloads.iter().find(|p| p.0 == kind).map(|p| p.1.as_slice());
        let pending = self.pending.take().ok_or("no rekey in flight")?;
        if let Some(n) = payloads.iter().filter(|p| p.0 == wire::NOTIFY).filter_map(|p| Notify::parse(&p.1).ok()).find(|n| n.is_error()) {
            return Err(format!("notify {}", n.kind));
        }
        let nr = payloads::parse_nonce(find(wire::NONCE).ok_or("no nonce")?).map_err(|e| e.to_string())?.to_vec();
        let shared = match (&pending.keypair, find(wire::KE)) {
            (Some(k), Some(ke)) => Some(k.shared_secret(KeyExchange::parse(ke).map_err(|e| e.to_string())?.data).map_err(|e| e.to_string())?),
            (None, None) => None,
            _ => return Err("KE payloads do not match".into()),
        };
        self.child_from(payloads, shared.as_deref(), &pending.nonce, &nr, pending.our_spi)
    }

    /// A CREATE_CHILD_SA request rekeying the IKE SA.
    pub fn rekey_ike_request(&mut self, max_datagram: usize) -> Vec<Vec<u8>> {
        let nonce = self.next_nonce();
        let new_spi = u64::from_be_bytes(random());
        let keypair = KeyPair::generate(self.config.group).expect("group");
        let mut sa = [0u8; 256];
        let len = proposal::write_sa(&mut sa, 1, PROTOCOL_IKE, &new_spi.to_be_bytes(), &self.ike_transforms()).expect("room");
        let mut chain = Chain::new();
        chain.push(wire::SA, sa[..len].to_vec()).push(wire::NONCE, nonce.clone());
        chain.push(wire::KE, keypair.ke_body());
        self.pending = Some(Pending { nonce, our_spi: 0, keypair: Some(keypair), new_ike_spi: Some(new_spi) });
        self.request(wire::CREATE_CHILD_SA, &chain, max_datagram)
    }

    /// Reads the IKE rekey response and switches to the new IKE SA (the
    /// caller then deletes the old one with [`Initiator::delete_ike_request`]
    /// sent before the switch, or simply keeps the new one).
    pub fn rekey_ike_response(&mut self, payloads: &[(u8, Vec<u8>)]) -> Result<(), String> {
        let find = |kind| payloads.iter().find(|p| p.0 == kind).map(|p| p.1.as_slice());
        let pending = self.pending.take().ok_or("no rekey in flight")?;
        let (ni, keypair, new_spi_i) = (pending.nonce, pending.keypair.ok_or("no DH key")?, pending.new_ike_spi.ok_or("not an IKE rekey")?);
        let proposals = proposal::parse_sa(find(wire::SA).ok_or("no SA")?).map_err(|e| e.to_string())?;
        let new_spi_r = u64::from_be_bytes(proposals.first().ok_or("no proposal")?.spi.try_into().map_err(|_| "SPI not 8 bytes")?);
        let nr = payloads::parse_nonce(find(wire::NONCE).ok_or("no nonce")?).map_err(|e| e.to_string())?.to_vec();
        let ke = KeyExchange::parse(find(wire::KE).ok_or("no KE")?).map_err(|e| e.to_string())?;
        let shared = keypair.shared_secret(ke.data).map_err(|e| e.to_string())?;
        let keys = self.keys().rekey(self.prf, self.prf, self.protection.key_lengths(), &shared, &ni, &nr, new_spi_i, new_spi_r);
        self.switch_to(new_spi_i, new_spi_r, keys, true);
        Ok(())
    }

    /// Moves on to a new IKE SA, keeping the old one to answer its delete.
    fn switch_to(&mut self, spi_i: u64, spi_r: u64, keys: IkeKeys, original_initiator: bool) {
        let old_keys = self.keys.replace(keys).expect("IKE_SA_INIT done");
        self.previous = Some(PreviousSa { spi_i: self.spi_i, spi_r: self.spi_r, keys: old_keys, original_initiator: self.original_initiator, iv_counter: self.iv_counter });
        (self.spi_i, self.spi_r, self.original_initiator) = (spi_i, spi_r, original_initiator);
        self.next_message_id = 0;
        self.iv_counter = 0;
    }

    /// Answers a request of the responder's, as a peer does: a liveness
    /// check (empty), a delete (of our SPIs of the CHILD_SAs it names), or
    /// a rekey of a CHILD_SA or of the IKE SA (on the old IKE SA after a
    /// rekey, only a delete). The request's inner payload types, and the
    /// response.
    pub fn answer(&mut self, datagram: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let m = wire::parse(datagram).map_err(|e| e.to_string())?;
        let h = m.header;
        if h.is_response() {
            return Err("not a request".into());
        }
        let sk = m.payloads.last().ok_or("no payloads")?;
        let on_previous = (h.initiator_spi, h.responder_spi) != (self.spi_i, self.spi_r);
        let (keys, original_initiator) = match (&self.previous, on_previous) {
            (_, false) => (self.keys.as_ref().expect("IKE_SA_INIT done"), self.original_initiator),
            (Some(p), true) if (p.spi_i, p.spi_r) == (h.initiator_spi, h.responder_spi) => (&p.keys, p.original_initiator),
            _ => return Err("a request on an IKE SA we do not have".into()),
        };
        if h.from_initiator() == original_initiator {
            return Err("a request with our own role's flag".into());
        }
        let plain = protect::open(self.protection, peer_keys(keys, original_initiator), datagram, sk).map_err(|e| e.to_string())?;
        let payloads: Payloads = wire::chain(sk.inner_next, &plain).map_err(|e| e.to_string())?.iter().map(|p| (p.kind, p.body.to_vec())).collect();
        let kinds = payloads.iter().map(|p| p.0).collect();
        let mut chain = Chain::new();
        let mut new_ike = None;
        match h.exchange {
            wire::INFORMATIONAL => {
                let mut ours = Vec::new();
                for (_, body) in payloads.iter().filter(|p| p.0 == wire::DELETE) {
                    if body.first() == Some(&PROTOCOL_ESP) {
                        let theirs: Vec<u32> = body[4..].chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes"))).collect();
                        ours.extend(self.children.iter().filter(|c| theirs.contains(&c.their_spi)).map(|c| c.our_spi));
                        self.children.retain(|c| !theirs.contains(&c.their_spi));
                    }
                }
                if !ours.is_empty() {
                    chain.push(wire::DELETE, delete_body(PROTOCOL_ESP, &ours));
                }
            }
            wire::CREATE_CHILD_SA if !on_previous => {
                let find = |kind| payloads.iter().find(|p| p.0 == kind).map(|p| p.1.as_slice());
                let proposals = proposal::parse_sa(find(wire::SA).ok_or("no SA")?).map_err(|e| e.to_string())?;
                let ni = payloads::parse_nonce(find(wire::NONCE).ok_or("no nonce")?).map_err(|e| e.to_string())?.to_vec();
                let ke = find(wire::KE).map(KeyExchange::parse).transpose().map_err(|e| e.to_string())?;
                let nr = self.next_nonce();
                let ours = ke.as_ref().map(|ke| KeyPair::generate(ke.group)).transpose().map_err(|e| e.to_string())?;
                let shared = match (&ours, &ke) {
                    (Some(k), Some(ke)) => Some(k.shared_secret(ke.data).map_err(|e| e.to_string())?),
                    _ => None,
                };
                let mut sa = [0u8; 256];
                if proposals.first().is_some_and(|p| p.protocol == PROTOCOL_IKE) {
                    let choice = proposal::choose_ike(&proposals, &self.config.groups, 8).ok_or("no IKE proposal we take")?;
                    let new_spi_i = u64::from_be_bytes(proposals[usize::from(choice.number) - 1].spi.try_into().map_err(|_| "SPI not 8 bytes")?);
                    let new_spi_r = u64::from_be_bytes(random());
                    let shared = shared.ok_or("an IKE rekey without KE")?;
                    let keys = self.keys().rekey(self.prf, choice.prf, choice.protection.key_lengths(), &shared, &ni, &nr, new_spi_i, new_spi_r);
                    let group = ke.as_ref().map_or(0, |k| k.group);
                    let len = proposal::write_sa(&mut sa, choice.number, PROTOCOL_IKE, &new_spi_r.to_be_bytes(), &choice.transforms(group)).expect("room");
                    chain.push(wire::SA, sa[..len].to_vec());
                    new_ike = Some((new_spi_i, new_spi_r, keys));
                } else {
                    let groups: Vec<u16> = ke.as_ref().map(|k| vec![k.group]).unwrap_or_default();
                    let choice = proposal::choose_esp(&proposals, Some(&groups)).ok_or("no ESP proposal we take")?;
                    let our_spi = u32::from_be_bytes(random());
                    let per = choice.key + 4;
                    let keymat = self.keys().child_keymat(self.prf, shared.as_deref(), &ni, &nr, 2 * per);
                    let clinic = ts::parse(find(wire::TSR).ok_or("no TSr")?).map_err(|e| e.to_string())?;
                    let inside = ts::parse(find(wire::TSI).ok_or("no TSi")?).map_err(|e| e.to_string())?;
                    // §2.17: the responder started it: its outbound (our inbound) keys first.
                    self.children.push(InitiatorChild { our_spi, their_spi: choice.peer_spi, key_in: keymat[..per].to_vec(), key_out: keymat[per..].to_vec(), clinic, inside });
                    let len = proposal::write_sa(&mut sa, choice.number, PROTOCOL_ESP, &our_spi.to_be_bytes(), &choice.transforms(ke.as_ref().map(|k| k.group))).expect("room");
                    chain.push(wire::SA, sa[..len].to_vec());
                }
                chain.push(wire::NONCE, nr);
                if let Some(k) = &ours {
                    chain.push(wire::KE, k.ke_body());
                }
                for kind in [wire::TSI, wire::TSR] {
                    if let Some(body) = find(kind) {
                        chain.push(kind, body.to_vec());
                    }
                }
            }
            other => return Err(format!("exchange {other} not answered here")),
        }
        let flags = wire::FLAG_RESPONSE | if original_initiator { FLAG_INITIATOR } else { 0 };
        let header = Header { initiator_spi: h.initiator_spi, responder_spi: h.responder_spi, next_payload: 0, minor_version: 0, exchange: h.exchange, flags, message_id: h.message_id, length: 0 };
        let (keys, iv_counter) = match &mut self.previous {
            Some(p) if on_previous => (&p.keys, &mut p.iv_counter),
            _ => (self.keys.as_ref().expect("IKE_SA_INIT done"), &mut self.iv_counter),
        };
        let response = protect::seal(self.protection, peer_keys(keys, !original_initiator), iv_counter, header, &chain, 1232, false).remove(0);
        if let Some((spi_i, spi_r, keys)) = new_ike {
            self.switch_to(spi_i, spi_r, keys, false);
        }
        Ok((kinds, response))
    }

    /// A response to the responder's request `datagram` (on the current IKE
    /// SA) carrying `chain`, whatever it holds (the fuzzers' peer).
    pub fn respond_with(&mut self, datagram: &[u8], chain: &Chain) -> Result<Vec<u8>, String> {
        let m = wire::parse(datagram).map_err(|e| e.to_string())?;
        let h = m.header;
        if h.is_response() || (h.initiator_spi, h.responder_spi) != (self.spi_i, self.spi_r) {
            return Err("not a request on our IKE SA".into());
        }
        let flags = wire::FLAG_RESPONSE | self.flags();
        let header = Header { initiator_spi: h.initiator_spi, responder_spi: h.responder_spi, next_payload: 0, minor_version: 0, exchange: h.exchange, flags, message_id: h.message_id, length: 0 };
        let keys = peer_keys(self.keys.as_ref().expect("IKE_SA_INIT done"), !self.original_initiator);
        Ok(protect::seal(self.protection, keys, &mut self.iv_counter, header, chain, 1232, false).remove(0))
    }

    /// An INFORMATIONAL request deleting the CHILD_SA of responder SPI `their_spi`.
    pub fn delete_child_request(&mut self, their_spi: u32, max_datagram: usize) -> Vec<Vec<u8>> {
        let ours = self.children.iter().find(|c| c.their_spi == their_spi).map_or(0, |c| c.our_spi);
        self.children.retain(|c| c.their_spi != their_spi);
        let mut chain = Chain::new();
        chain.push(wire::DELETE, delete_body(PROTOCOL_ESP, &[ours]));
        self.request(wire::INFORMATIONAL, &chain, max_datagram)
    }

    pub fn delete_ike_request(&mut self, max_datagram: usize) -> Vec<Vec<u8>> {
        let mut chain = Chain::new();
        chain.push(wire::DELETE, delete_body(PROTOCOL_IKE, &[]));
        self.request(wire::INFORMATIONAL, &chain, max_datagram)
    }
}
