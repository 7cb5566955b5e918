//! IKE_SA_INIT (RFC 7296 §1.2): algorithms, Diffie-Hellman and nonces,
//! NAT detection (§2.23), cookies when many SAs are half-open (§2.6), and
//! the announcements of RFC 7383 fragmentation and RFC 7427 hashes.

use super::dh::KeyPair;
use super::keys::IkeKeys;
use super::payloads::{self, notify_body, KeyExchange, Notify};
use super::proposal::{self, PROTOCOL_IKE};
use super::protect::Reassembly;
use super::responder::{unprotected_notify, Event, Responder};
use super::sa::{IkeSa, Phase};
use super::wire::{self, Header, Message, FLAG_RESPONSE, IKE_SA_INIT};
use super::auth;
use super::keys::{hmac, Hash};
use openssl::hash::{hash, MessageDigest};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// NAT_DETECTION_*_IP data (§2.23): SHA-1(SPIi | SPIr | IP | port).
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let ip = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let data = [&spi_i.to_be_bytes()[..], &spi_r.to_be_bytes(), &ip, &addr.port().to_be_bytes()].concat();
    hash(MessageDigest::sha1(), &data).expect("SHA-1").to_vec()
}

impl Responder {
    /// The cookie for a request (§2.6): version | HMAC(secret, Ni | IPi | SPIi).
    fn cookie_for(&self, secret: &[u8; 32], version: u8, ni: &[u8], source: IpAddr, spi_i: u64) -> Vec<u8> {
        let ip = match source {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mac = hmac(Hash::Sha256, secret, &[ni, &ip, &spi_i.to_be_bytes()]);
        [&[version][..], &mac[..16]].concat()
    }

    fn cookie_valid(&self, cookie: &[u8], ni: &[u8], source: IpAddr, spi_i: u64) -> bool {
        // Our cookies are 17 bytes; anything else is not one (and must not
        // reach the constant-time compare, which wants equal lengths).
        let [version, ..] = *cookie else { return false };
        if cookie.len() != 17 {
            return false;
        }
        let secret = if version == self.cookie.version {
            &self.cookie.current
        } else if version == self.cookie.version.wrapping_sub(1) {
            &self.cookie.previous
        } else {
            return false;
        };
        openssl::memcmp::eq(&self.cookie_for(secret, version, ni, source, spi_i), cookie)
    }

    pub(super) fn sa_init(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8], message: &Message, out: &mut Vec<Event>) {
        let spi_i = message.header.initiator_spi;
        let reply = |out: &mut Vec<Event>, bytes: Vec<u8>| out.push(Event::Send { from: to, to: from, datagram: bytes });
        // A retransmission gets the same answer; a different request
        // reusing the SPI is dropped (§2.1).
        if let Some(spi_r) = self.half_open.get(&(spi_i, from.ip())) {
            if let Some(IkeSa { phase: Phase::HalfOpen { request, response, .. }, .. }) = self.sas.get(spi_r) {
                if request == datagram {
                    self.counters.retransmits_answered += 1;
                    reply(out, response.clone());
                    return;
                }
            }
            self.counters.malformed += 1;
            return;
        }
        if self.half_open.len() >= self.settings.max_half_open {
            self.counters.dropped_saturated += 1;
            return;
        }
        let (mut sa_payload, mut ke, mut nonce, mut cookie) = (None, None, None, None);
        let (mut nat_source, mut nat_destination, mut fragmentation, mut peer_hashes) = (Vec::new(), None, false, Vec::new());
        for p in &message.payloads {
            match p.kind {
                wire::SA => sa_payload = Some(p.body),
                wire::KE => ke = Some(p.body),
                wire::NONCE => nonce = Some(p.body),
                wire::NOTIFY => {
                    let Ok(n) = Notify::parse(p.body) else { continue };
                    match n.kind {
                        payloads::COOKIE => cookie = Some(n.data),
                        payloads::NAT_DETECTION_SOURCE_IP => nat_source.push(n.data),
                        payloads::NAT_DETECTION_DESTINATION_IP => nat_destination = Some(n.data),
                        payloads::IKEV2_FRAGMENTATION_SUPPORTED => fragmentation = true,
                        payloads::SIGNATURE_HASH_ALGORITHMS => peer_hashes = auth::parse_hashes(n.data),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let parsed = (|| {
            let proposals = proposal::parse_sa(sa_payload?).ok()?;
            let ke = KeyExchange::parse(ke?).ok()?;
            let ni = payloads::parse_nonce(nonce?).ok()?;
            Some((proposals, ke, ni))
        })();
        let Some((proposals, ke, ni)) = parsed else {
            self.counters.malformed += 1;
            reply(out, unprotected_notify(spi_i, 0, payloads::INVALID_SYNTAX, &[]));
            return;
        };
        // §2.6: above the thresholds, only a request that returns our cookie costs us state.
        let per_source = self.half_open_per_source.get(&from.ip()).copied().unwrap_or(0);
        if self.half_open.len() >= self.settings.cookie_threshold || per_source >= self.settings.cookie_threshold_per_source {
            let valid = cookie.is_some_and(|c| self.cookie_valid(c, ni, from.ip(), spi_i));
            if !valid {
                if cookie.is_some() {
                    self.counters.cookies_invalid += 1;
                }
                self.counters.cookies_sent += 1;
                let fresh = self.cookie_for(&self.cookie.current, self.cookie.version, ni, from.ip(), spi_i);
                reply(out, unprotected_notify(spi_i, 0, payloads::COOKIE, &fresh));
                return;
            }
        }
        let Some(choice) = proposal::choose_ike(&proposals, &self.settings.dh_groups, 0) else {
            self.counters.no_proposal += 1;
            out.push(Event::Log(format!("IKE_SA_INIT from {from}: no acceptable proposal")));
            reply(out, unprotected_notify(spi_i, 0, payloads::NO_PROPOSAL_CHOSEN, &[]));
            return;
        };
        // §1.3: a KE of another group than the one we pick is answered with the group we want.
        if !choice.groups.contains(&ke.group) {
            self.counters.invalid_ke += 1;
            reply(out, unprotected_notify(spi_i, 0, payloads::INVALID_KE_PAYLOAD, &choice.groups[0].to_be_bytes()));
            return;
        }
        let ours = KeyPair::generate(ke.group).expect("a group we listed");
        let Ok(shared) = ours.shared_secret(ke.data) else {
            self.counters.malformed += 1;
            reply(out, unprotected_notify(spi_i, 0, payloads::INVALID_SYNTAX, &[]));
            return;
        };
        let spi_r = self.fresh_spi();
        let nr = payloads::fresh_nonce();
        let keys = IkeKeys::derive(choice.prf, choice.protection.key_lengths(), &shared, ni, &nr, spi_i, spi_r);

        // §2.23: a NAT changed the peer's address if none of its source
        // hashes matches what we see; ours, if its destination hash differs.
        let detection = nat_destination.is_some();
        let peer_behind_nat = detection && !nat_source.iter().any(|h| *h == nat_hash(spi_i, 0, from));
        let we_behind_nat = nat_destination.is_some_and(|h| h != nat_hash(spi_i, 0, to));

        let mut buf = vec![0u8; 2048];
        let header = Header { initiator_spi: spi_i, responder_spi: spi_r, next_payload: 0, minor_version: 0, exchange: IKE_SA_INIT, flags: FLAG_RESPONSE, message_id: 0, length: 0 };
        let mut w = wire::Writer::new(&mut buf, header).expect("room");
        let mut sa_body = [0u8; 128];
        let len = proposal::write_sa(&mut sa_body, choice.number, PROTOCOL_IKE, &[], &choice.transforms(ke.group)).expect("one proposal fits");
        w.payload(wire::SA, false, &sa_body[..len]).expect("room");
        w.payload(wire::KE, false, &ours.ke_body()).expect("room");
        w.payload(wire::NONCE, false, &nr).expect("room");
        if detection {
            w.payload(wire::NOTIFY, false, &notify_body(payloads::NAT_DETECTION_SOURCE_IP, &nat_hash(spi_i, spi_r, to))).expect("room");
            w.payload(wire::NOTIFY, false, &notify_body(payloads::NAT_DETECTION_DESTINATION_IP, &nat_hash(spi_i, spi_r, from))).expect("room");
        }
        // §3.7: ask for a certificate from one of our CAs (strongSwan sends
        // its certificate only when asked, by default).
        w.payload(wire::CERTREQ, false, &[&[super::ike_auth::CERT_X509_SIGNATURE][..], self.trust.certreq_data()].concat()).expect("room");
        if fragmentation {
            w.payload(wire::NOTIFY, false, &notify_body(payloads::IKEV2_FRAGMENTATION_SUPPORTED, &[])).expect("room");
        }
        if !peer_hashes.is_empty() {
            w.payload(wire::NOTIFY, false, &notify_body(payloads::SIGNATURE_HASH_ALGORITHMS, &auth::hashes_data())).expect("room");
        }
        let response = w.finish().to_vec();
        reply(out, response.clone());

        let (rekey_at, expire_at) = self.ike_timers(now);
        let sa = IkeSa {
            spi_i,
            spi_r,
            initiator: false,
            group: ke.group,
            peer: from,
            local: to,
            prf: choice.prf,
            protection: choice.protection,
            keys,
            ni: ni.to_vec(),
            nr,
            phase: Phase::HalfOpen { request: datagram.to_vec(), response, source: from.ip() },
            nat: peer_behind_nat || we_behind_nat,
            fragmentation,
            peer_hashes,
            next_request: 1,
            last_response: None,
            iv_counter: 0,
            reassembly: Reassembly::default(),
            children: Vec::new(),
            created: now,
            last_heard: now,
            our_next_id: 0,
            outstanding: None,
            rekey: None,
            rekey_at: Some(rekey_at),
            expire_at,
        };
        self.sas.insert(spi_r, sa);
        self.half_open.insert((spi_i, from.ip()), spi_r);
        *self.half_open_per_source.entry(from.ip()).or_default() += 1;
    }
}
