//! The IKEv2 responder: every IKE SA of the gateway, the dispatch of each
//! request to its exchange (`sa_init`, `ike_auth`, `create_child_sa`,
//! `informational`), and the bounds that keep a flood or a hostile peer
//! from costing more than it should. No I/O: datagrams and the time come
//! in, and what to send and install goes out as [`Event`]s.

use super::protect::{self, Chain};
use super::sa::{ChildSa, IkeSa, Phase, Purpose};
use super::wire::{self, Header, Message, ENCRYPTED, ENCRYPTED_FRAGMENT, FLAG_RESPONSE, IKE_SA_INIT};
use crate::pki::identity::Identity;
use crate::pki::{Credentials, Trust};
use crate::spis::SpiPool;
use crate::tenants::Tenants;
use sekisho_dataplane::addr::Ipv4Cidr;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Limits and choices of the responder (from the config file).
#[derive(Debug, Clone)]
pub struct Settings {
    /// DH groups we accept, preferred first (14, 19, 31).
    pub dh_groups: Vec<u16>,
    /// CHILD_SA rekeys must carry a KE payload.
    pub pfs_required: bool,
    /// What the inside side of a CHILD_SA (TSr) may cover.
    pub inside: Vec<Ipv4Cidr>,
    /// Half-open IKE SAs above which IKE_SA_INIT needs a cookie (§2.6).
    pub cookie_threshold: usize,
    /// The same, for one source address.
    pub cookie_threshold_per_source: usize,
    /// Half-open IKE SAs above which new IKE_SA_INIT requests are dropped.
    pub max_half_open: usize,
    /// How long an IKE SA may stay half-open.
    pub half_open_timeout: Duration,
    /// Largest IKE datagram we send; bigger messages are fragmented (RFC 7383).
    pub max_datagram: usize,
    /// An established IKE SA not heard of this long gets a liveness check
    /// (an empty INFORMATIONAL request, §1.4); a peer that answers none of
    /// its retransmissions is dead and its SAs go.
    pub liveness_interval: Duration,
    /// We rekey a CHILD_SA this long after it was made, less a random part
    /// of up to `rekey_jitter_percent` (so that thousands made at once are
    /// not rekeyed at once), unless the peer rekeys it first; one still
    /// there 10% after this (31 s at least) is deleted (its hard lifetime).
    pub child_rekey: Duration,
    /// The same for IKE SAs.
    pub ike_rekey: Duration,
    pub rekey_jitter_percent: u8,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            dh_groups: vec![14, 19, 31],
            pfs_required: true,
            inside: vec!["0.0.0.0/0".parse().expect("prefix")],
            cookie_threshold: 1000,
            cookie_threshold_per_source: 20,
            max_half_open: 20_000,
            half_open_timeout: Duration::from_secs(30),
            // 1280 bytes of IPv6 less its header, UDP and the non-ESP marker.
            max_datagram: 1280 - 40 - 8 - 4,
            liveness_interval: Duration::from_secs(60),
            // Clinic routers commonly rekey CHILD_SAs hourly and IKE SAs every
            // few hours; ours come later, for routers that never do.
            child_rekey: Duration::from_secs(3 * 3600),
            ike_rekey: Duration::from_secs(8 * 3600),
            rekey_jitter_percent: 10,
        }
    }
}

/// What the responder asks of the process around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Send { from: SocketAddr, to: SocketAddr, datagram: Vec<u8> },
    /// A CHILD_SA to install; `replaces` names the inbound SPI of the
    /// CHILD_SA it rekeys, which stays until it is deleted (make before
    /// break). `ours`: we started the exchange, so the peer has both halves
    /// of the new SA and we may send on it at once (§2.8).
    ChildUp { tenant: String, worker: u8, peer: SocketAddr, local: SocketAddr, nat: bool, child: ChildSa, replaces: Option<u32>, ours: bool },
    ChildDown { tenant: String, inbound_spi: u32, outbound_spi: u32 },
    /// A line for the operator's log.
    Log(String),
}

impl Event {
    /// One JSON line for the operator's event log (keys never appear).
    pub fn json(&self) -> Option<String> {
        let selectors = |list: &[super::ts::TrafficSelector]| list.iter().map(|t| format!("{}-{}", t.start, t.end)).collect::<Vec<_>>();
        let value = match self {
            Event::Send { .. } => return None,
            Event::ChildUp { tenant, worker, peer, local, nat, child, replaces, ours } => serde_json::json!({"child_up": {
                "tenant": tenant, "worker": worker, "peer": peer.to_string(), "local": local.to_string(), "nat_t": nat,
                "inbound_spi": format!("{:08x}", child.inbound_spi), "outbound_spi": format!("{:08x}", child.outbound_spi),
                "esn": child.esn, "clinic": selectors(&child.clinic), "inside": selectors(&child.inside),
                "pfs_group": child.pfs_group, "replaces": replaces.map(|s| format!("{s:08x}")), "started_by": if *ours { "gateway" } else { "peer" },
            }}),
            Event::ChildDown { tenant, inbound_spi, outbound_spi } => serde_json::json!({"child_down": {
                "tenant": tenant, "inbound_spi": format!("{inbound_spi:08x}"), "outbound_spi": format!("{outbound_spi:08x}"),
            }}),
            Event::Log(line) => serde_json::json!({"log": line}),
        };
        Some(value.to_string())
    }
}

/// What happened to requests that did not become SAs, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub malformed: u64,
    pub unknown_spi: u64,
    pub unexpected_message_id: u64,
    pub retransmits_answered: u64,
    pub integrity_failures: u64,
    pub cookies_sent: u64,
    pub cookies_invalid: u64,
    pub dropped_saturated: u64,
    pub no_proposal: u64,
    pub invalid_ke: u64,
    pub auth_failed: u64,
    pub ts_unacceptable: u64,
    pub half_open_expired: u64,
    pub ike_sas_established: u64,
    pub child_sas_created: u64,
    pub child_sas_rekeyed: u64,
    pub ike_sas_rekeyed: u64,
    /// Rekeys we started (after our lifetimes or the dataplane's soft limits).
    pub rekeys_started: u64,
    /// Rekeys of ours that crossed the peer's of the same SA (§2.8.1, §2.8.2).
    pub rekey_collisions: u64,
    /// SAs deleted at their hard lifetime, never rekeyed.
    pub expired: u64,
    pub deletes: u64,
    /// Liveness checks sent (§2.4: only to peers silent that long, ESP included).
    pub liveness_checks: u64,
    pub dead_peers: u64,
}

/// A histogram with fixed bucket bounds (Prometheus' cumulative form is
/// made when it is written out).
#[derive(Debug, Clone)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram { bounds: bounds.to_vec(), counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, value: f64) {
        if let Some(at) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[at] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// The secret behind cookies, replaced now and then; the one before stays
/// valid for a while so that a retrying initiator is not refused (§2.6).
pub(super) struct CookieSecret {
    pub version: u8,
    pub current: [u8; 32],
    pub previous: [u8; 32],
    pub since: Instant,
}

/// Parsed peer certificates kept: a few per clinic for the largest networks.
const CERTIFICATE_CACHE: usize = 16_384;

pub(super) const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

pub struct Responder {
    pub(super) settings: Settings,
    pub(super) local_id: Identity,
    pub(super) credentials: Credentials,
    pub(super) trust: Trust,
    pub(super) tenants: Tenants,
    pub(super) spis: SpiPool,
    pub(super) sas: HashMap<u64, IkeSa>,
    /// Half-open SAs by (SPIi, source address): retransmitted IKE_SA_INIT
    /// requests find their answer here (§2.1).
    pub(super) half_open: HashMap<(u64, IpAddr), u64>,
    pub(super) half_open_per_source: HashMap<IpAddr, usize>,
    pub(super) cookie: CookieSecret,
    pub(super) certificates: crate::pki::CertificateCache,
    /// Established IKE SAs by peer identity (INITIAL_CONTACT finds a
    /// clinic's old SAs here, not by walking thousands).
    pub(super) by_identity: HashMap<Identity, Vec<u64>>,
    /// Our IKE SPI of each CHILD_SA's IKE SA, by the CHILD_SA's inbound SPI.
    pub(super) child_owner: HashMap<u32, u64>,
    pub counters: Counters,
    /// Seconds from IKE_SA_INIT to the IKE SA established.
    pub handshake_seconds: Histogram,
}

impl Responder {
    pub fn new(settings: Settings, local_id: Identity, credentials: Credentials, trust: Trust, tenants: Tenants, workers: usize, now: Instant) -> Responder {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret).expect("random cookie secret");
        Responder {
            settings,
            local_id,
            credentials,
            trust,
            tenants,
            spis: SpiPool::new(workers),
            sas: HashMap::new(),
            half_open: HashMap::new(),
            half_open_per_source: HashMap::new(),
            cookie: CookieSecret { version: 0, current: secret, previous: secret, since: now },
            certificates: crate::pki::CertificateCache::new(CERTIFICATE_CACHE),
            by_identity: HashMap::new(),
            child_owner: HashMap::new(),
            counters: Counters::default(),
            handshake_seconds: Histogram::new(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        }
    }

    /// Replaces the tenant registry, the CAs and CRLs, and (`ours`) the
    /// gateway's identity and certificate (a config reload). SAs stay, but
    /// those the new registry or trust would not accept now are deleted (see
    /// [`Responder::delete_unregistered`]); a new certificate of ours serves
    /// the next handshakes (AUTH is only made in IKE_AUTH, §2.15).
    pub fn reconfigure(&mut self, settings: Settings, tenants: Tenants, trust: Trust, ours: Option<(Identity, Credentials)>, now: Instant, out: &mut Vec<Event>) {
        self.settings = settings;
        self.tenants = tenants;
        self.trust = trust;
        if let Some((local_id, credentials)) = ours {
            (self.local_id, self.credentials) = (local_id, credentials);
        }
        self.delete_unregistered(now, out);
    }

    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    pub fn half_open_count(&self) -> usize {
        self.half_open.len()
    }

    /// Every IKE SA.
    pub fn ike_sas(&self) -> impl Iterator<Item = &IkeSa> {
        self.sas.values()
    }

    /// The tenant registry as it stands.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Every registered tenant's name.
    pub fn tenant_names(&self) -> impl Iterator<Item = &str> {
        self.tenants.iter().map(|t| t.name.as_str())
    }

    /// Every CHILD_SA, with what it takes to install it again (after a
    /// dataplane restart).
    pub fn children(&self) -> impl Iterator<Item = (&IkeSa, &ChildSa)> {
        self.sas.values().flat_map(|sa| sa.children.iter().map(move |c| (sa, c)))
    }

    /// One datagram from `from` to our `to` (UDP 500, or 4500 with the
    /// non-ESP marker already removed).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8], out: &mut Vec<Event>) {
        let message = match wire::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.counters.malformed += 1;
                // An IKE_SA_INIT request may be told what is wrong, unprotected (§2.21.1).
                if let Some(h) = datagram.first_chunk::<28>() {
                    let is_init_request = h[18] == IKE_SA_INIT && h[19] & FLAG_RESPONSE == 0 && h[8..16] == [0; 8];
                    if is_init_request {
                        let spi_i = u64::from_be_bytes(h[0..8].try_into().expect("8 bytes"));
                        out.push(Event::Send { from: to, to: from, datagram: unprotected_notify(spi_i, 0, e.notify(), &[]) });
                    }
                }
                return;
            }
        };
        if message.header.is_response() {
            return self.response(now, from, datagram, &message, out);
        }
        if message.header.exchange == IKE_SA_INIT {
            // From the original initiator (§3.1, the I flag).
            if message.header.from_initiator() && message.header.responder_spi == 0 && message.header.message_id == 0 {
                self.sa_init(now, from, to, datagram, &message, out);
            } else {
                self.counters.malformed += 1;
            }
            return;
        }
        // Everything else belongs to an IKE SA; take it out while it is worked on.
        let ours = our_spi(&message.header);
        let Some(mut sa) = self.sas.remove(&ours) else {
            self.counters.unknown_spi += 1;
            return;
        };
        let keep = self.protected(now, from, to, datagram, &message, &mut sa, out);
        if keep {
            self.sas.insert(ours, sa);
        } else {
            self.forget(sa, out);
        }
    }

    /// A request within an IKE SA: retransmission, Message ID and integrity
    /// checks, then the exchange. Returns whether the SA lives on.
    #[allow(clippy::too_many_arguments)]
    fn protected(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8], message: &Message, sa: &mut IkeSa, out: &mut Vec<Event>) -> bool {
        let h = message.header;
        if h.initiator_spi != sa.spi_i || h.responder_spi != sa.spi_r {
            self.counters.unknown_spi += 1;
            return true;
        }
        // Requests of the original initiator carry the I flag, the others not (§3.1).
        if h.from_initiator() == sa.initiator {
            self.counters.malformed += 1;
            return true;
        }
        let Some(sk) = message.payloads.last().filter(|p| matches!(p.kind, ENCRYPTED | ENCRYPTED_FRAGMENT)) else {
            self.counters.malformed += 1;
            return true;
        };
        if let Some((id, datagrams)) = &sa.last_response {
            if *id == h.message_id {
                // §2.1: answer a retransmitted request with the same
                // response; with fragments, only on the first one (RFC 7383 §2.6.1).
                let first_fragment = sk.kind == ENCRYPTED || sk.body.get(..2) == Some(&[0, 1]);
                if first_fragment && protect::authentic(sa.protection, sa.keys_in(), datagram, sk) {
                    self.counters.retransmits_answered += 1;
                    out.extend(sa.sends(datagrams.iter().cloned()));
                }
                return true;
            }
        }
        if h.message_id != sa.next_request {
            self.counters.unexpected_message_id += 1;
            return true;
        }
        let (first, plain) = if sk.kind == ENCRYPTED {
            match protect::open(sa.protection, sa.keys_in(), datagram, sk) {
                Ok(plain) => (sk.inner_next, plain),
                Err(e) => {
                    self.integrity_failure(now, from, &h, sa, &e.to_string(), out);
                    return true;
                }
            }
        } else {
            match sa.reassembly.add(sa.protection, super::sa::peer_keys(&sa.keys, sa.initiator), datagram, h.message_id, sk) {
                Ok(Some(whole)) => whole,
                Ok(None) => return true,
                Err(e) => {
                    self.integrity_failure(now, from, &h, sa, &e.to_string(), out);
                    return true;
                }
            }
        };
        // Authenticated: the peer is alive, and behind a NAT it may have
        // moved (§2.23); answer where it now is.
        sa.last_heard = now;
        // Answers go where the peer now is (the half-open count stays keyed
        // by the address its IKE_SA_INIT came from).
        if sa.nat {
            sa.peer = from;
        }
        sa.local = to;
        let payloads = match wire::chain(first, &plain) {
            Ok(p) => p,
            Err(e) => {
                self.counters.malformed += 1;
                let mut chain = Chain::new();
                chain.push(wire::NOTIFY, super::payloads::notify_body(e.notify(), &[]));
                sa.respond(h.exchange, h.message_id, &chain, self.settings.max_datagram, out);
                return matches!(sa.phase, Phase::Established { .. });
            }
        };
        match (h.exchange, &sa.phase) {
            (wire::IKE_AUTH, Phase::HalfOpen { .. }) => self.ike_auth(now, h.message_id, &payloads, sa, out),
            (wire::CREATE_CHILD_SA, Phase::Established { .. }) => self.create_child_sa(now, h.message_id, &payloads, sa, out),
            (wire::INFORMATIONAL, Phase::Established { .. }) => self.informational(h.message_id, &payloads, sa, out),
            _ => {
                self.counters.malformed += 1;
                true
            }
        }
    }

    /// Counts a message that failed its check (§2.21.2: never answered),
    /// and logs the first and then every power of two, not a flood, with
    /// the request and the SA it claimed.
    fn integrity_failure(&mut self, now: Instant, from: SocketAddr, h: &Header, sa: &IkeSa, why: &str, out: &mut Vec<Event>) {
        self.counters.integrity_failures += 1;
        if self.counters.integrity_failures.is_power_of_two() {
            let state = match sa.phase {
                Phase::HalfOpen { .. } => "half-open",
                Phase::Established { .. } if sa.deleting() => "being deleted",
                Phase::Established { .. } => "established",
            };
            let exchange = wire::exchange_name(h.exchange);
            let age = now.duration_since(sa.created).as_millis();
            out.push(Event::Log(format!(
                "message from {from} dropped: {why} ({} so far): {exchange} {} {} of ike_sa {:016x} ({state}, {age} ms old)",
                self.counters.integrity_failures,
                if h.is_response() { "response" } else { "request" },
                h.message_id,
                sa.our_spi()
            )));
        }
    }

    /// A random responder SPI no IKE SA in the table has (never 0).
    pub(super) fn fresh_spi(&self) -> u64 {
        loop {
            let mut bytes = [0u8; 8];
            openssl::rand::rand_bytes(&mut bytes).expect("random SPI");
            let spi = u64::from_be_bytes(bytes);
            if spi != 0 && !self.sas.contains_key(&spi) {
                return spi;
            }
        }
    }

    /// A CHILD_SA's inbound SPI goes back to the pool.
    pub(super) fn release_child(&mut self, inbound_spi: u32) {
        self.spis.release(inbound_spi);
        self.child_owner.remove(&inbound_spi);
    }

    /// Records `sa` as the owner of its CHILD_SAs (made, or moved by a rekey).
    pub(super) fn own_children(&mut self, sa: &IkeSa) {
        for child in &sa.children {
            self.child_owner.insert(child.inbound_spi, sa.our_spi());
        }
    }

    /// The dataplane's count of packets and bytes received on an inbound
    /// SA: ESP from the peer shows it alive (§2.4: no liveness checks while
    /// traffic comes).
    pub fn sa_activity(&mut self, now: Instant, inbound_spi: u32, packets: u64, bytes: u64) {
        let Some(sa) = self.child_owner.get(&inbound_spi).and_then(|owner| self.sas.get_mut(owner)) else { return };
        let Some(child) = sa.children.iter_mut().find(|c| c.inbound_spi == inbound_spi) else { return };
        if packets > child.received.0 {
            child.received = (packets, bytes);
            sa.last_heard = sa.last_heard.max(now);
        }
    }

    /// Indexes an established IKE SA by its peer's identity.
    pub(super) fn index_identity(&mut self, sa: &IkeSa) {
        if let Phase::Established { peer_id, .. } = &sa.phase {
            self.by_identity.entry(peer_id.clone()).or_default().push(sa.our_spi());
        }
    }

    /// Drops an IKE SA and everything hanging off it.
    pub(super) fn forget(&mut self, mut sa: IkeSa, out: &mut Vec<Event>) {
        self.abandon_rekey(&mut sa);
        match &sa.phase {
            Phase::HalfOpen { source, .. } => self.forget_half_open(sa.spi_i, *source),
            Phase::Established { peer_id, .. } => {
                if let Some(spis) = self.by_identity.get_mut(peer_id) {
                    spis.retain(|&s| s != sa.our_spi());
                    if spis.is_empty() {
                        self.by_identity.remove(peer_id);
                    }
                }
            }
        }
        self.end_children(&mut sa, out);
    }

    pub(super) fn forget_half_open(&mut self, spi_i: u64, source: IpAddr) {
        if self.half_open.remove(&(spi_i, source)).is_some() {
            if let Some(n) = self.half_open_per_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    self.half_open_per_source.remove(&source);
                }
            }
        }
    }

    /// Timers: half-open SAs that never finished, retransmissions of our
    /// requests, lifetimes (rekeys and deletes, see `rekey`), liveness
    /// checks of silent peers, the cookie secret.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Event>) {
        let half_open_timeout = self.settings.half_open_timeout;
        let expired: Vec<u64> = self.sas.values().filter(|sa| matches!(sa.phase, Phase::HalfOpen { .. }) && now.duration_since(sa.created) > half_open_timeout).map(|sa| sa.our_spi()).collect();
        for spi in expired {
            let sa = self.sas.remove(&spi).expect("listed above");
            self.counters.half_open_expired += 1;
            self.forget(sa, out);
        }
        let mut dead = Vec::new();
        for sa in self.sas.values_mut().filter(|sa| matches!(sa.phase, Phase::Established { .. })) {
            let Some(o) = &mut sa.outstanding else { continue };
            if now.duration_since(o.sent) < RETRANSMIT_BASE * (1 << o.tries) {
                continue;
            }
            if o.tries + 1 >= RETRANSMIT_TRIES {
                dead.push(sa.our_spi());
                continue;
            }
            o.tries += 1;
            o.sent = now;
            let again = o.datagrams.clone();
            out.extend(sa.sends(again));
        }
        for spi in dead {
            let sa = self.sas.remove(&spi).expect("listed above");
            if sa.outstanding.as_ref().is_some_and(|o| o.purpose == Purpose::Liveness) {
                self.counters.dead_peers += 1;
                out.push(Event::Log(format!("ike_sa {:016x} of {} at {}: no answer to a liveness check, peer dead", sa.our_spi(), sa.tenant().unwrap_or("?"), sa.peer)));
            }
            self.forget(sa, out);
        }
        for spi in self.due(now) {
            let mut sa = self.sas.remove(&spi).expect("listed by due");
            self.perform(now, &mut sa, out);
            self.sas.insert(spi, sa);
        }
        if now.duration_since(self.cookie.since) > COOKIE_SECRET_LIFETIME {
            let mut secret = [0u8; 32];
            openssl::rand::rand_bytes(&mut secret).expect("random cookie secret");
            self.cookie = CookieSecret { version: self.cookie.version.wrapping_add(1), current: secret, previous: self.cookie.current, since: now };
        }
    }

    /// Deletes every IKE SA of `tenant` from our side (an operator's
    /// request); how many there were. Its clinics may connect again.
    pub fn terminate(&mut self, tenant: &str, now: Instant, out: &mut Vec<Event>) -> usize {
        let listed: Vec<(u64, String)> = self
            .sas
            .values()
            .filter(|sa| sa.tenant() == Some(tenant) && !sa.deleting())
            .map(|sa| (sa.our_spi(), format!("ike_sa {:016x} of {tenant}: terminated by an operator", sa.our_spi())))
            .collect();
        let count = listed.len();
        self.delete_listed(listed, now, out);
        count
    }

    /// Deletes each listed IKE SA (our SPI) from our side, logging its line.
    fn delete_listed(&mut self, listed: Vec<(u64, String)>, now: Instant, out: &mut Vec<Event>) {
        for (spi, line) in listed {
            let mut sa = self.sas.remove(&spi).expect("listed from the table");
            out.push(Event::Log(line));
            self.delete_ike(now, &mut sa, out);
            self.sas.insert(spi, sa);
        }
    }

    /// Deletes, from our side, every IKE SA the registry and trust would
    /// not accept now: its identity no longer maps to the tenant it was made
    /// for, a CHILD_SA lies outside its tenant's subnets, or its
    /// certificate no longer verifies (revoked by a new CRL, or its CA
    /// removed). Its CHILD_SAs stop at once, and the peer is told with an
    /// INFORMATIONAL Delete (§1.4.1); it may connect again if it can.
    pub fn delete_unregistered(&mut self, now: Instant, out: &mut Vec<Event>) {
        let refusal = |sa: &IkeSa| -> Option<String> {
            let Phase::Established { tenant, peer_id, certificates } = &sa.phase else { return None };
            let Some(t) = self.tenants.find(peer_id).filter(|t| t.name == *tenant) else { return Some(format!("`{peer_id}` is no longer tenant {tenant}'s")) };
            if !sa.children.iter().all(|c| crate::dataplane::prefixes(&c.clinic).iter().all(|p| sekisho_dataplane::tunnels::within(&t.subnets, p))) {
                return Some("a CHILD_SA lies outside the tenant's subnets now".into());
            }
            let (end, intermediates) = certificates.split_first()?;
            self.trust.verify(end, intermediates).err().map(|e| format!("its certificate: {e}"))
        };
        let stale: Vec<(u64, String)> = self
            .sas
            .values()
            .filter(|sa| !sa.deleting())
            .filter_map(|sa| refusal(sa).map(|why| (sa.our_spi(), format!("ike_sa {:016x} of {}: deleted after the reload: {why}", sa.our_spi(), sa.tenant().unwrap_or("?")))))
            .collect();
        self.delete_listed(stale, now, out);
    }

    /// A response to one of our requests.
    fn response(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], message: &Message, out: &mut Vec<Event>) {
        let ours = our_spi(&message.header);
        let Some(mut sa) = self.sas.remove(&ours) else {
            self.counters.unknown_spi += 1;
            return;
        };
        let keep = self.our_response(now, from, datagram, message, &mut sa, out);
        if keep {
            self.sas.insert(ours, sa);
        } else {
            self.forget(sa, out);
        }
    }

    /// Returns whether the SA lives on.
    fn our_response(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], message: &Message, sa: &mut IkeSa, out: &mut Vec<Event>) -> bool {
        let h = message.header;
        if h.initiator_spi != sa.spi_i || h.responder_spi != sa.spi_r || h.from_initiator() == sa.initiator {
            self.counters.unknown_spi += 1;
            return true;
        }
        let Some(purpose) = sa.outstanding.as_ref().filter(|o| o.id == h.message_id).map(|o| o.purpose) else {
            self.counters.unexpected_message_id += 1;
            return true;
        };
        // Answers to our requests are small: never fragmented.
        let Some(sk) = message.payloads.last().filter(|p| p.kind == ENCRYPTED) else {
            self.counters.malformed += 1;
            return true;
        };
        let plain = match protect::open(sa.protection, sa.keys_in(), datagram, sk) {
            Ok(plain) => plain,
            Err(e) => {
                self.integrity_failure(now, from, &h, sa, &e.to_string(), out);
                return true;
            }
        };
        sa.outstanding = None;
        sa.our_next_id = sa.our_next_id.wrapping_add(1);
        sa.last_heard = now;
        let payloads = wire::chain(sk.inner_next, &plain).unwrap_or_else(|_| {
            self.counters.malformed += 1;
            Vec::new()
        });
        match purpose {
            Purpose::DeleteIke => return false,
            Purpose::DeleteChild(spi) => self.drop_child(sa, spi, out),
            Purpose::RekeyChild => self.child_rekeyed(now, sa, &payloads, out),
            Purpose::RekeyIke => self.ike_rekeyed(now, sa, &payloads, out),
            Purpose::Liveness => {}
        }
        true
    }
}

/// Our SPI in a message's header: the responder's if the original
/// initiator sent it (the I flag), else the initiator's (§3.1).
fn our_spi(header: &Header) -> u64 {
    if header.from_initiator() {
        header.responder_spi
    } else {
        header.initiator_spi
    }
}

/// First retransmission of our requests, doubled each time (§2.1).
const RETRANSMIT_BASE: Duration = Duration::from_secs(1);
/// Sends of a request before the peer counts as dead: 1+2+4+8+16 s.
const RETRANSMIT_TRIES: u32 = 5;

/// An unprotected response carrying one notify (to an IKE_SA_INIT request).
pub(super) fn unprotected_notify(spi_i: u64, spi_r: u64, kind: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + data.len()];
    let header = Header { initiator_spi: spi_i, responder_spi: spi_r, next_payload: 0, minor_version: 0, exchange: IKE_SA_INIT, flags: FLAG_RESPONSE, message_id: 0, length: 0 };
    let mut w = wire::Writer::new(&mut buf, header).expect("room for a header");
    w.payload(wire::NOTIFY, false, &super::payloads::notify_body(kind, data)).expect("room for a notify");
    w.finish().to_vec()
}
