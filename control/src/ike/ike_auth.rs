//! IKE_AUTH (RFC 7296 §1.2, §2.15): the clinic proves its identity with a
//! certificate from one of our CAs, the identity names its tenant, we
//! prove ours, and the first CHILD_SA is made with traffic selectors
//! narrowed to the tenant's subnets (§2.9).

use super::auth;
use super::payloads::{self, notify_body, Notify};
use super::proposal::{self, PROTOCOL_ESP};
use super::protect::Chain;
use super::responder::{Event, Responder};
use super::sa::{ChildSa, IkeSa, Phase};
use super::ts::{self, TrafficSelector};
use super::wire::{self, Payload};
use openssl::x509::X509;
use crate::pki::identity::Identity;
use std::time::Instant;

/// CERT and CERTREQ encoding: X.509 certificate, signature (§3.6).
pub const CERT_X509_SIGNATURE: u8 = 4;

/// Why an IKE_AUTH request is refused, for the log; answered with
/// AUTHENTICATION_FAILED.
#[derive(Debug)]
enum Refusal {
    Syntax(&'static str),
    Certificate(String),
    Identity(String),
    Signature(auth::AuthError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Syntax(why) => write!(f, "invalid syntax: {why}"),
            Refusal::Certificate(why) => write!(f, "certificate refused: {why}"),
            Refusal::Identity(why) => write!(f, "identity refused: {why}"),
            Refusal::Signature(e) => write!(f, "AUTH refused: {e}"),
        }
    }
}

/// How a CHILD_SA's exchange did Diffie-Hellman.
#[derive(Clone, Copy)]
pub(super) enum DhMode<'a> {
    /// IKE_AUTH: keyed from the IKE SA; DH transforms are ignored (§1.2).
    Ignore,
    /// CREATE_CHILD_SA without a KE payload.
    NoKe,
    /// CREATE_CHILD_SA with a KE of `group`, giving `shared` (PFS).
    Pfs { group: u16, shared: &'a [u8] },
}

/// The payloads of an IKE_AUTH request or a CREATE_CHILD_SA request that
/// make a CHILD_SA.
#[derive(Default)]
pub(super) struct ChildRequest<'a> {
    pub sa: Option<&'a [u8]>,
    pub tsi: Option<&'a [u8]>,
    pub tsr: Option<&'a [u8]>,
    pub transport_mode: bool,
}

impl Responder {
    pub(super) fn ike_auth(&mut self, now: Instant, message_id: u32, payloads: &[Payload], sa: &mut IkeSa, out: &mut Vec<Event>) -> bool {
        match self.authenticate(payloads, sa) {
            Ok(who) => {
                self.accept(now, message_id, payloads, sa, who, out);
                true
            }
            Err(refusal) => {
                self.counters.auth_failed += 1;
                out.push(Event::Log(format!("IKE_AUTH from {}: {refusal}", sa.peer)));
                let mut chain = Chain::new();
                let notify = if let Refusal::Syntax(_) = refusal { payloads::INVALID_SYNTAX } else { payloads::AUTHENTICATION_FAILED };
                chain.push(wire::NOTIFY, notify_body(notify, &[]));
                sa.respond(wire::IKE_AUTH, message_id, &chain, self.settings.max_datagram, out);
                // §2.21.2: the IKE SA is not created.
                false
            }
        }
    }

    /// Checks the peer's certificate, identity and AUTH payload; its
    /// identity and tenant name.
    fn authenticate(&mut self, payloads: &[Payload], sa: &IkeSa) -> Result<(Identity, String, Vec<X509>), Refusal> {
        let Phase::HalfOpen { request, .. } = &sa.phase else { unreachable!("IKE_AUTH only on a half-open SA") };
        let (mut idi, mut idr, mut auth_payload, mut certs) = (None, None, None, Vec::new());
        for p in payloads {
            match p.kind {
                wire::IDI => idi = Some(p.body),
                wire::IDR => idr = Some(p.body),
                wire::AUTH => auth_payload = Some(p.body),
                wire::CERT => certs.push(p.body),
                wire::EAP => return Err(Refusal::Identity("EAP is not offered".into())),
                _ => {}
            }
        }
        let idi = idi.ok_or(Refusal::Syntax("no IDi"))?;
        let (method, data) = auth::parse(auth_payload.ok_or(Refusal::Identity("no AUTH payload: EAP is not offered".into()))?).map_err(|_| Refusal::Syntax("AUTH"))?;
        let peer_id = Identity::parse(idi).map_err(|_| Refusal::Syntax("IDi"))?;
        if let Some(idr) = idr {
            let wanted = Identity::parse(idr).map_err(|_| Refusal::Syntax("IDr"))?;
            if wanted != self.local_id {
                return Err(Refusal::Identity(format!("the peer asked for `{wanted}`, we are `{}`", self.local_id)));
            }
        }
        let mut x509 = Vec::new();
        for body in certs {
            let (&encoding, der) = body.split_first().ok_or(Refusal::Syntax("empty CERT"))?;
            if encoding == CERT_X509_SIGNATURE {
                let cert = match self.certificates.get(der) {
                    Some(cert) => cert,
                    None => X509::from_der(der).map_err(|_| Refusal::Certificate("a CERT payload that is not DER X.509".into()))?,
                };
                x509.push((der, cert));
            }
        }
        let certs: Vec<X509> = x509.iter().map(|(_, c)| c.clone()).collect();
        let (end, intermediates) = certs.split_first().ok_or(Refusal::Certificate("no certificate sent".into()))?;
        self.trust.verify(end, intermediates).map_err(|e| Refusal::Certificate(e.to_string()))?;
        // Only certificates that verified are kept: a stranger cannot fill the cache.
        for (der, cert) in &x509 {
            self.certificates.remember(der, cert);
        }
        if !peer_id.is_certified_by(end) {
            return Err(Refusal::Identity(format!("`{peer_id}` is neither the subject nor a subjectAltName of its certificate")));
        }
        let octets = auth::signed_octets(sa.prf, request, &sa.nr, &sa.keys.sk_pi, idi);
        let key = end.public_key().map_err(|e| Refusal::Certificate(e.to_string()))?;
        auth::verify(&key, method, data, &octets).map_err(Refusal::Signature)?;
        let tenant = self.tenants.find(&peer_id).ok_or_else(|| Refusal::Identity(format!("`{peer_id}` is no tenant's")))?;
        Ok((peer_id, tenant.name.clone(), certs))
    }

    /// Answers an authenticated IKE_AUTH: our identity and AUTH, and the
    /// CHILD_SA or the notify that says why there is none.
    fn accept(&mut self, now: Instant, message_id: u32, payloads: &[Payload], sa: &mut IkeSa, (peer_id, tenant, certificates): (Identity, String, Vec<X509>), out: &mut Vec<Event>) {
        let Phase::HalfOpen { response, source, .. } = &sa.phase else { unreachable!("IKE_AUTH only on a half-open SA") };
        let source = *source;
        let initial_contact = payloads.iter().any(|p| p.kind == wire::NOTIFY && Notify::parse(p.body).is_ok_and(|n| n.kind == payloads::INITIAL_CONTACT));
        let idr = self.local_id.to_body();
        let octets = auth::signed_octets(sa.prf, response, &sa.ni, &sa.keys.sk_pr, &idr);
        let mut chain = Chain::new();
        chain.push(wire::IDR, idr);
        for cert in std::iter::once(&self.credentials.cert).chain(&self.credentials.chain) {
            chain.push(wire::CERT, [&[CERT_X509_SIGNATURE][..], &cert.to_der().expect("DER of our certificate")].concat());
        }
        chain.push(wire::AUTH, auth::sign(&self.credentials.key, &octets, &sa.peer_hashes));

        self.forget_half_open(sa.spi_i, source);
        sa.phase = Phase::Established { tenant: tenant.clone(), peer_id: peer_id.clone(), certificates };
        self.index_identity(sa);
        self.counters.ike_sas_established += 1;
        self.handshake_seconds.observe(now.saturating_duration_since(sa.created).as_secs_f64());
        out.push(Event::Log(format!("ike_sa {:016x} established: {peer_id} as tenant {tenant} from {}{}", sa.spi_r, sa.peer, if sa.nat { " (NAT-T)" } else { "" })));
        // §2.4: the peer restarted and lost its old SAs; drop ours too.
        if initial_contact {
            self.drop_other_sas_of(&peer_id, sa.spi_r, out);
        }

        let request = child_request(payloads);
        let (ni, nr) = (sa.ni.clone(), sa.nr.clone());
        match self.make_child(now, sa, &request, DhMode::Ignore, &ni, &nr) {
            Ok((child, sa_body)) => {
                chain.push(wire::SA, sa_body);
                chain.push(wire::TSI, ts_body(&child.clinic));
                chain.push(wire::TSR, ts_body(&child.inside));
                self.child_up(sa, &tenant, child, None, false, out);
            }
            Err(notify) => {
                chain.push(wire::NOTIFY, notify_body(notify, &[]));
            }
        }
        sa.respond(wire::IKE_AUTH, message_id, &chain, self.settings.max_datagram, out);
    }

    /// A CHILD_SA from the request's SA and TS payloads: chosen proposal,
    /// narrowed selectors, a new inbound SPI and the keys. The error is the
    /// notify to answer with.
    pub(super) fn make_child(&mut self, now: Instant, sa: &IkeSa, request: &ChildRequest, dh: DhMode, ni: &[u8], nr: &[u8]) -> Result<(ChildSa, Vec<u8>), u16> {
        let tenant = sa.tenant().expect("an established IKE SA");
        let pfs = match dh {
            DhMode::Pfs { group, shared } => Some((group, shared)),
            _ => None,
        };
        let proposals = proposal::parse_sa(request.sa.ok_or(payloads::INVALID_SYNTAX)?).map_err(|e| e.notify())?;
        let tsi = ts::parse(request.tsi.ok_or(payloads::INVALID_SYNTAX)?).map_err(|e| e.notify())?;
        let tsr = ts::parse(request.tsr.ok_or(payloads::INVALID_SYNTAX)?).map_err(|e| e.notify())?;
        // Tunnel mode only: a clinic's network, not its router, is the point.
        if request.transport_mode {
            return Err(payloads::NO_PROPOSAL_CHOSEN);
        }
        let group = pfs.map(|(g, _)| [g]);
        let our_groups: Option<&[u16]> = match dh {
            DhMode::Ignore => None,
            DhMode::NoKe => Some(&[]),
            DhMode::Pfs { .. } => group.as_ref().map(|g| &g[..]),
        };
        let Some(choice) = proposal::choose_esp(&proposals, our_groups) else {
            self.counters.no_proposal += 1;
            return Err(payloads::NO_PROPOSAL_CHOSEN);
        };
        let subnets = self.tenants.by_name(tenant).map(|t| t.subnets.clone()).unwrap_or_default();
        let worker = self.tenants.by_name(tenant).map_or(0, |t| t.worker);
        let clinic = dedup(ts::narrow(&tsi, &subnets));
        let inside = dedup(ts::narrow(&tsr, &self.settings.inside));
        // A clinic needs a few selectors; a flood of them is refused, and
        // the answer always fits its payload.
        if clinic.is_empty() || inside.is_empty() || clinic.len() > MAX_SELECTORS || inside.len() > MAX_SELECTORS {
            self.counters.ts_unacceptable += 1;
            return Err(payloads::TS_UNACCEPTABLE);
        }
        let inbound_spi = self.spis.allocate(worker).ok_or(payloads::TEMPORARY_FAILURE)?;
        // §2.17: initiator-to-responder keys first, each AES key then its salt.
        let per_direction = choice.key + 4;
        let keymat = sa.keys.child_keymat(sa.prf, pfs.map(|(_, shared)| shared), ni, nr, 2 * per_direction);
        let (rekey_at, expire_at) = self.child_timers(now);
        let child = ChildSa {
            inbound_spi,
            outbound_spi: choice.peer_spi,
            inbound_key: keymat[..per_direction].to_vec(),
            outbound_key: keymat[per_direction..].to_vec(),
            esn: choice.esn,
            clinic,
            inside,
            pfs_group: pfs.map(|(g, _)| g),
            rekey_at: Some(rekey_at),
            expire_at,
            received: (0, 0),
            created: now,
            rekeys: 0,
        };
        let mut body = [0u8; 64];
        let len = proposal::write_sa(&mut body, choice.number, PROTOCOL_ESP, &inbound_spi.to_be_bytes(), &choice.transforms(child.pfs_group)).expect("one proposal fits");
        Ok((child, body[..len].to_vec()))
    }

    pub(super) fn child_up(&mut self, sa: &mut IkeSa, tenant: &str, mut child: ChildSa, replaces: Option<u32>, ours: bool, out: &mut Vec<Event>) {
        if let Some(old) = replaces.and_then(|spi| sa.children.iter().find(|c| c.inbound_spi == spi)) {
            child.rekeys = old.rekeys + 1;
        }
        let worker = self.tenants.by_name(tenant).map_or(0, |t| t.worker);
        if replaces.is_some() {
            self.counters.child_sas_rekeyed += 1;
        } else {
            self.counters.child_sas_created += 1;
        }
        out.push(Event::ChildUp { tenant: tenant.to_string(), worker, peer: sa.peer, local: sa.local, nat: sa.nat, child: child.clone(), replaces, ours });
        self.child_owner.insert(child.inbound_spi, sa.our_spi());
        sa.children.push(child);
    }

    /// Drops every other IKE SA of `peer_id` (INITIAL_CONTACT).
    fn drop_other_sas_of(&mut self, peer_id: &Identity, keep: u64, out: &mut Vec<Event>) {
        let stale: Vec<u64> = self.by_identity.get(peer_id).map(|spis| spis.iter().copied().filter(|&s| s != keep).collect()).unwrap_or_default();
        for spi in stale {
            let Some(sa) = self.sas.remove(&spi) else { continue };
            out.push(Event::Log(format!("ike_sa {spi:016x} of {peer_id} replaced (INITIAL_CONTACT)")));
            self.forget(sa, out);
        }
    }
}

pub(super) fn child_request<'a>(payloads: &[Payload<'a>]) -> ChildRequest<'a> {
    let mut request = ChildRequest::default();
    for p in payloads {
        match p.kind {
            wire::SA => request.sa = Some(p.body),
            wire::TSI => request.tsi = Some(p.body),
            wire::TSR => request.tsr = Some(p.body),
            wire::NOTIFY
                if Notify::parse(p.body).is_ok_and(|n| n.kind == payloads::USE_TRANSPORT_MODE) => {
                    request.transport_mode = true;
                }
            _ => {}
        }
    }
    request
}

/// Most traffic selectors on either side of a CHILD_SA.
const MAX_SELECTORS: usize = 32;

fn dedup(mut selectors: Vec<TrafficSelector>) -> Vec<TrafficSelector> {
    let mut seen = Vec::with_capacity(selectors.len());
    selectors.retain(|ts| {
        let fresh = !seen.contains(ts);
        if fresh {
            seen.push(*ts);
        }
        fresh
    });
    selectors
}

pub(super) fn ts_body(selectors: &[TrafficSelector]) -> Vec<u8> {
    let mut body = vec![0u8; 4 + 40 * selectors.len()];
    let len = ts::write(&mut body, selectors).expect("sized for the selectors");
    body.truncate(len);
    body
}
