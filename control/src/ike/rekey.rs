//! Lifetimes and the rekeys the gateway starts (RFC 7296 §2.8): a CHILD_SA
//! or IKE SA is rekeyed when its time comes (less a random part, so that
//! SAs made together are not rekeyed together) or when the dataplane
//! counts it to a soft limit, unless the peer rekeys it first; one still
//! there at its hard lifetime is deleted. Crossed rekeys of one SA are
//! resolved by the lowest nonce (§2.8.1, §2.8.2).

use super::dh::KeyPair;
use super::ike_auth::ts_body;
use super::informational::delete_body;
use super::payloads::{self, KeyExchange, Notify};
use super::proposal::{self, EspChoice, IkeChoice, PROTOCOL_ESP, PROTOCOL_IKE};
use super::protect::Chain;
use super::responder::{Event, Responder};
use super::sa::{ChildSa, IkeSa, Phase, Purpose, Rekey, SUPERSEDED_GRACE};
use super::wire::{self, Payload, CREATE_CHILD_SA, INFORMATIONAL};
use std::time::{Duration, Instant};

/// A rekey the peer refused for want of resources is tried again after
/// this, and a few random seconds more (§2.25).
const RETRY_SOON: Duration = Duration::from_secs(2);
/// One refused for another reason is tried again after this.
const RETRY_LATER: Duration = Duration::from_secs(60);

/// The lower of two nonces as §2.8.1 compares them: octet by octet, and a
/// nonce that is a prefix of the other is the lower (slices order so).
pub fn lowest(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

/// The hard lifetime of an SA rekeyed after `rekey`: 10% more, and at
/// least time enough for a rekey's retransmissions (§2.1) to run out.
fn hard_lifetime(rekey: Duration) -> Duration {
    rekey + (rekey / 10).max(REKEY_TIME)
}

/// How long a rekey may take: the retransmissions of its request.
const REKEY_TIME: Duration = Duration::from_secs(31);

fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).expect("random");
    f64::from(u32::from_be_bytes(bytes)) / f64::from(u32::MAX)
}

/// What an established IKE SA with no request in flight does next.
enum Duty {
    ExpireIke,
    ExpireChild(u32),
    RekeyIke,
    RekeyChild(u32),
    Liveness,
}

fn duty(sa: &IkeSa, now: Instant, liveness: Duration) -> Option<Duty> {
    if sa.outstanding.is_some() || !matches!(sa.phase, Phase::Established { .. }) {
        return None;
    }
    let due = |at: Option<Instant>| at.is_some_and(|t| t <= now);
    if sa.expire_at <= now {
        Some(Duty::ExpireIke)
    } else if let Some(c) = sa.children.iter().find(|c| c.expire_at <= now) {
        Some(Duty::ExpireChild(c.inbound_spi))
    } else if due(sa.rekey_at) {
        Some(Duty::RekeyIke)
    } else if let Some(c) = sa.children.iter().find(|c| due(c.rekey_at)) {
        Some(Duty::RekeyChild(c.inbound_spi))
    } else if now.duration_since(sa.last_heard) >= liveness {
        Some(Duty::Liveness)
    } else {
        None
    }
}

/// What follows a refused rekey of ours.
struct Retry {
    after: Duration,
    /// The DH group the peer asked for, one we allow.
    group: Option<u16>,
    why: String,
}

/// Why a response to our rekey gave no SA.
enum Refused {
    /// The peer's error notify and its data.
    Notify(u16, Vec<u8>),
    /// What was wrong with the response.
    Invalid(String),
}

fn error_notify(payloads: &[Payload]) -> Option<Refused> {
    payloads.iter().filter(|p| p.kind == wire::NOTIFY).filter_map(|p| Notify::parse(p.body).ok()).find(|n| n.is_error()).map(|n| Refused::Notify(n.kind, n.data.to_vec()))
}

fn find<'a>(payloads: &[Payload<'a>], kind: u8) -> Result<&'a [u8], Refused> {
    payloads.iter().find(|p| p.kind == kind).map(|p| p.body).ok_or_else(|| Refused::Invalid(format!("no payload of type {kind}")))
}

fn invalid(e: impl std::fmt::Display) -> Refused {
    Refused::Invalid(e.to_string())
}

impl Responder {
    /// `period`, less a random part of up to the configured jitter.
    fn jittered(&self, period: Duration) -> Duration {
        period.mul_f64(1.0 - f64::from(self.settings.rekey_jitter_percent.min(50)) / 100.0 * random_fraction())
    }

    /// When a new IKE SA is rekeyed, and when it is deleted if still there.
    pub(super) fn ike_timers(&self, now: Instant) -> (Instant, Instant) {
        (now + self.jittered(self.settings.ike_rekey), now + hard_lifetime(self.settings.ike_rekey))
    }

    /// The same for a new CHILD_SA.
    pub(super) fn child_timers(&self, now: Instant) -> (Instant, Instant) {
        (now + self.jittered(self.settings.child_rekey), now + hard_lifetime(self.settings.child_rekey))
    }

    /// Our SPIs of each IKE SA with something to do now (none in flight).
    pub(super) fn due(&self, now: Instant) -> Vec<u64> {
        let liveness = self.settings.liveness_interval;
        self.sas.values().filter(|sa| duty(sa, now, liveness).is_some()).map(|sa| sa.our_spi()).collect()
    }

    /// Does what `sa` has to do now (see [`Responder::due`]).
    pub(super) fn perform(&mut self, now: Instant, sa: &mut IkeSa, out: &mut Vec<Event>) {
        let tenant = sa.tenant().unwrap_or_default().to_string();
        match duty(sa, now, self.settings.liveness_interval) {
            Some(Duty::ExpireIke) => {
                self.counters.expired += 1;
                let why = if sa.rekey_at.is_none() { "replaced by a rekey and not deleted by the peer" } else { "hard lifetime reached" };
                out.push(Event::Log(format!("ike_sa {:016x} of {tenant}: {why}, deleted", sa.our_spi())));
                self.delete_ike(now, sa, out);
            }
            Some(Duty::ExpireChild(spi)) => {
                self.counters.expired += 1;
                out.push(Event::Log(format!("child_sa {spi:08x} of {tenant}: hard lifetime reached, deleted")));
                self.drop_child(sa, spi, out);
                self.request_delete_child(now, sa, spi, out);
            }
            Some(Duty::RekeyIke) => self.start_ike_rekey(now, sa, out),
            Some(Duty::RekeyChild(spi)) => self.start_child_rekey(now, sa, spi, out),
            Some(Duty::Liveness) => {
                self.counters.liveness_checks += 1;
                sa.request(INFORMATIONAL, &Chain::new(), self.settings.max_datagram, now, Purpose::Liveness, out);
            }
            None => {}
        }
    }

    /// The dataplane counted an SA to a limit (RFC 4301 §4.4.2.1): at the
    /// soft one its CHILD_SA is rekeyed now. At the hard one an inbound SA's
    /// CHILD_SA is deleted; an outbound SPI (the peer's choice, which two
    /// peers may share) only asks for a rekey.
    pub fn sa_limit_reached(&mut self, now: Instant, spi: u32, inbound: bool, hard: bool, out: &mut Vec<Event>) {
        let matches = |c: &ChildSa| if inbound { c.inbound_spi == spi } else { c.outbound_spi == spi };
        let Some(child) = self.sas.values_mut().flat_map(|sa| sa.children.iter_mut()).find(|c| matches(c)) else { return };
        if hard && inbound {
            child.expire_at = now;
        } else if child.rekey_at.is_some() {
            child.rekey_at = Some(now);
        }
        out.push(Event::Log(format!("child_sa {:08x}: the dataplane reports its {} limit ({})", child.inbound_spi, if hard { "hard" } else { "soft" }, if inbound { "inbound" } else { "outbound" })));
    }

    /// Deletes an IKE SA from our side (§1.4.1): its CHILD_SAs stop now,
    /// and the SA goes when the peer answers (or never does).
    pub(super) fn delete_ike(&mut self, now: Instant, sa: &mut IkeSa, out: &mut Vec<Event>) {
        self.abandon_rekey(sa);
        self.end_children(sa, out);
        // A request already in flight is abandoned: the delete takes the
        // next Message ID, so the peer cannot take it for a retransmission.
        if sa.outstanding.take().is_some() {
            sa.our_next_id = sa.our_next_id.wrapping_add(1);
        }
        sa.rekey_at = None;
        self.request_delete_ike(now, sa, out);
        self.counters.deletes += 1;
    }

    /// Sends the INFORMATIONAL Delete of `sa` itself; it goes when answered.
    fn request_delete_ike(&self, now: Instant, sa: &mut IkeSa, out: &mut Vec<Event>) {
        let mut chain = Chain::new();
        chain.push(wire::DELETE, delete_body(PROTOCOL_IKE, &[]));
        sa.request(INFORMATIONAL, &chain, self.settings.max_datagram, now, Purpose::DeleteIke, out);
    }

    /// Every CHILD_SA of `sa` stops now: its SPI goes back, its tunnel goes.
    pub(super) fn end_children(&mut self, sa: &mut IkeSa, out: &mut Vec<Event>) {
        let tenant = sa.tenant().unwrap_or_default().to_string();
        for child in std::mem::take(&mut sa.children) {
            self.release_child(child.inbound_spi);
            out.push(Event::ChildDown { tenant: tenant.clone(), inbound_spi: child.inbound_spi, outbound_spi: child.outbound_spi });
        }
    }

    /// A rekey of ours in flight is given up: its new SPI goes back.
    pub(super) fn abandon_rekey(&mut self, sa: &mut IkeSa) {
        if let Some(Rekey::Child { new_spi, .. }) = sa.rekey.take() {
            self.release_child(new_spi);
        }
    }

    /// Removes a CHILD_SA of ours now (its tunnel goes with it).
    pub(super) fn drop_child(&mut self, sa: &mut IkeSa, inbound_spi: u32, out: &mut Vec<Event>) {
        let Some(at) = sa.children.iter().position(|c| c.inbound_spi == inbound_spi) else { return };
        let child = sa.children.remove(at);
        self.release_child(child.inbound_spi);
        out.push(Event::ChildDown { tenant: sa.tenant().unwrap_or_default().to_string(), inbound_spi, outbound_spi: child.outbound_spi });
    }

    /// Asks the peer to delete the CHILD_SA we receive on with `inbound_spi`
    /// (§1.4.1); if we still hold it, it goes when the peer answers.
    fn request_delete_child(&mut self, now: Instant, sa: &mut IkeSa, inbound_spi: u32, out: &mut Vec<Event>) {
        let mut chain = Chain::new();
        chain.push(wire::DELETE, delete_body(PROTOCOL_ESP, &[inbound_spi]));
        sa.request(INFORMATIONAL, &chain, self.settings.max_datagram, now, Purpose::DeleteChild(inbound_spi), out);
        self.counters.deletes += 1;
    }

    /// CREATE_CHILD_SA rekeying the CHILD_SA of `old` (its inbound SPI),
    /// with the same algorithms and selectors and, by policy, PFS.
    fn start_child_rekey(&mut self, now: Instant, sa: &mut IkeSa, old: u32, out: &mut Vec<Event>) {
        let tenant = sa.tenant().unwrap_or_default().to_string();
        let worker = self.tenants.by_name(&tenant).map_or(0, |t| t.worker);
        let Some(at) = sa.children.iter().position(|c| c.inbound_spi == old) else { return };
        let Some(new_spi) = self.spis.allocate(worker) else {
            sa.children[at].rekey_at = Some(now + RETRY_LATER);
            return out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: no free SPI on worker {worker} to rekey it")));
        };
        let child = &mut sa.children[at];
        child.rekey_at = None;
        let group = child.pfs_group.or(self.settings.pfs_required.then(|| self.settings.dh_groups[0]));
        let keypair = group.map(|g| KeyPair::generate(g).expect("a group we support"));
        let nonce = payloads::fresh_nonce();
        let ours = EspChoice { number: 1, key: child.inbound_key.len() - 4, esn: child.esn, peer_spi: 0, groups: Vec::new() };
        let mut body = [0u8; 64];
        let len = proposal::write_sa(&mut body, 1, PROTOCOL_ESP, &new_spi.to_be_bytes(), &ours.transforms(group)).expect("one proposal fits");
        let mut chain = Chain::new();
        // §1.3.3: REKEY_SA names the SA by the SPI its sender receives on.
        chain.push(wire::NOTIFY, payloads::notify_about(PROTOCOL_ESP, &old.to_be_bytes(), payloads::REKEY_SA));
        chain.push(wire::SA, body[..len].to_vec()).push(wire::NONCE, nonce.clone());
        if let Some(k) = &keypair {
            chain.push(wire::KE, k.ke_body());
        }
        // §2.9: TSi is the side of the exchange's initiator: here, the inside.
        chain.push(wire::TSI, ts_body(&child.inside)).push(wire::TSR, ts_body(&child.clinic));
        sa.rekey = Some(Rekey::Child { old, new_spi, nonce, keypair, collision: None });
        self.counters.rekeys_started += 1;
        out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: rekey started by the gateway")));
        sa.request(CREATE_CHILD_SA, &chain, self.settings.max_datagram, now, Purpose::RekeyChild, out);
    }

    /// The peer's answer to our CHILD_SA rekey.
    pub(super) fn child_rekeyed(&mut self, now: Instant, sa: &mut IkeSa, payloads: &[Payload], out: &mut Vec<Event>) {
        let Some(Rekey::Child { old, new_spi, nonce: ni, keypair, collision }) = sa.rekey.take() else { return };
        let tenant = sa.tenant().unwrap_or_default().to_string();
        let made = match error_notify(payloads) {
            Some(refused) => Err(refused),
            None => match sa.children.iter().find(|c| c.inbound_spi == old) {
                Some(template) => self.rekeyed_child(now, sa, template, new_spi, &ni, keypair, payloads),
                None => Err(Refused::Invalid("the CHILD_SA went meanwhile".into())),
            },
        };
        let (child, nr) = match made {
            Ok(made) => made,
            // The peer's rekey of it stands (it deletes the old one).
            Err(_) if collision.is_some() => {
                self.release_child(new_spi);
                return out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: our rekey refused, the peer's stands")));
            }
            Err(why) => {
                self.release_child(new_spi);
                self.child_rekey_refused(now, sa, old, new_spi, why, out);
                return;
            }
        };
        if let Some((theirs, their_lowest)) = collision {
            self.counters.rekey_collisions += 1;
            if lowest(&ni, &nr) < their_lowest {
                // Ours is redundant: we made it, we delete it; the peer
                // deletes the old one.
                out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: rekeys crossed, the peer's {theirs:08x} stays, ours is deleted")));
                self.release_child(new_spi);
                return self.request_delete_child(now, sa, new_spi, out);
            }
            out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: rekeys crossed, ours stays, the peer deletes its {theirs:08x}")));
            // Deleted by us if the peer does not, like a replaced IKE SA.
            if let Some(redundant) = sa.children.iter_mut().find(|c| c.inbound_spi == theirs) {
                redundant.rekey_at = None;
                redundant.expire_at = redundant.expire_at.min(now + SUPERSEDED_GRACE);
            }
        }
        out.push(Event::Log(format!("child_sa {new_spi:08x} rekeyed {old:08x} for tenant {tenant} (started by the gateway)")));
        self.child_up(sa, &tenant, child, Some(old), true, out);
        // §2.8: the initiator of a rekey deletes the old SA.
        self.request_delete_child(now, sa, old, out);
    }

    /// The new CHILD_SA from the answer, with `template`'s selectors.
    #[allow(clippy::too_many_arguments)]
    fn rekeyed_child(&self, now: Instant, sa: &IkeSa, template: &ChildSa, new_spi: u32, ni: &[u8], keypair: Option<KeyPair>, payloads: &[Payload]) -> Result<(ChildSa, Vec<u8>), Refused> {
        let proposals = proposal::parse_sa(find(payloads, wire::SA)?).map_err(invalid)?;
        let group = keypair.as_ref().map(KeyPair::group);
        let groups: Vec<u16> = group.into_iter().collect();
        let choice = proposal::choose_esp(&proposals, Some(&groups)).ok_or_else(|| invalid("not the proposal we made"))?;
        if choice.key + 4 != template.inbound_key.len() || choice.esn != template.esn {
            return Err(invalid("not the algorithms we proposed"));
        }
        let nr = payloads::parse_nonce(find(payloads, wire::NONCE)?).map_err(invalid)?.to_vec();
        let ke = payloads.iter().find(|p| p.kind == wire::KE).map(|p| KeyExchange::parse(p.body)).transpose().map_err(invalid)?;
        let shared = match (&keypair, ke) {
            (Some(k), Some(ke)) if ke.group == k.group() => Some(k.shared_secret(ke.data).map_err(invalid)?),
            (None, None) => None,
            _ => return Err(invalid("KE payloads do not match")),
        };
        let per_direction = choice.key + 4;
        let keymat = sa.keys.child_keymat(sa.prf, shared.as_deref(), ni, &nr, 2 * per_direction);
        // §2.17: the exchange initiator's outbound keys first: ours, here.
        let (rekey_at, expire_at) = self.child_timers(now);
        let child = ChildSa {
            inbound_spi: new_spi,
            outbound_spi: choice.peer_spi,
            inbound_key: keymat[per_direction..].to_vec(),
            outbound_key: keymat[..per_direction].to_vec(),
            esn: choice.esn,
            clinic: template.clinic.clone(),
            inside: template.inside.clone(),
            pfs_group: group,
            rekey_at: Some(rekey_at),
            expire_at,
            received: (0, 0),
            created: now,
            rekeys: 0,
        };
        Ok((child, nr))
    }

    fn child_rekey_refused(&mut self, now: Instant, sa: &mut IkeSa, old: u32, new_spi: u32, why: Refused, out: &mut Vec<Event>) {
        let tenant = sa.tenant().unwrap_or_default().to_string();
        let Some(child) = sa.children.iter_mut().find(|c| c.inbound_spi == old) else {
            // §2.25.1: the peer deleted it meanwhile; a new SA it made goes too.
            out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: deleted while we rekeyed it")));
            if matches!(why, Refused::Invalid(_)) {
                self.request_delete_child(now, sa, new_spi, out);
            }
            return;
        };
        let why = match why {
            Refused::Notify(payloads::CHILD_SA_NOT_FOUND, _) => {
                self.drop_child(sa, old, out);
                "the peer no longer has it".to_string()
            }
            refused => {
                let retry = self.retry(refused);
                child.rekey_at = Some(now + retry.after);
                child.pfs_group = retry.group.or(child.pfs_group);
                retry.why
            }
        };
        out.push(Event::Log(format!("child_sa {old:08x} of {tenant}: rekey refused: {why}")));
    }

    /// When to try a refused rekey again, with which DH group, and why.
    fn retry(&self, refused: Refused) -> Retry {
        let later = |why: String| Retry { after: RETRY_LATER, group: None, why };
        match refused {
            // §2.25: again after a short random delay.
            Refused::Notify(payloads::TEMPORARY_FAILURE | payloads::NO_ADDITIONAL_SAS, _) => {
                Retry { after: RETRY_SOON + RETRY_SOON.mul_f64(4.0 * random_fraction()), group: None, why: "the peer is busy".into() }
            }
            Refused::Notify(payloads::INVALID_KE_PAYLOAD, data) => match data.first_chunk::<2>().map(|g| u16::from_be_bytes(*g)) {
                Some(group) if self.settings.dh_groups.contains(&group) => Retry { after: Duration::ZERO, group: Some(group), why: format!("the peer wants DH group {group}") },
                _ => later("the peer wants a DH group we do not allow".into()),
            },
            Refused::Notify(kind, _) => later(format!("notify {kind}")),
            Refused::Invalid(why) => later(why),
        }
    }

    /// CREATE_CHILD_SA rekeying the IKE SA (§1.3.2), with its algorithms and DH group.
    fn start_ike_rekey(&mut self, now: Instant, sa: &mut IkeSa, out: &mut Vec<Event>) {
        let keypair = KeyPair::generate(sa.group).expect("a group we support");
        let (new_spi, nonce) = (self.fresh_spi(), payloads::fresh_nonce());
        let ours = IkeChoice { number: 1, protection: sa.protection, prf: sa.prf, groups: Vec::new() };
        let mut body = [0u8; 128];
        let len = proposal::write_sa(&mut body, 1, PROTOCOL_IKE, &new_spi.to_be_bytes(), &ours.transforms(sa.group)).expect("one proposal fits");
        let mut chain = Chain::new();
        chain.push(wire::SA, body[..len].to_vec()).push(wire::NONCE, nonce.clone()).push(wire::KE, keypair.ke_body());
        sa.rekey = Some(Rekey::Ike { new_spi, nonce, keypair, collision: None });
        self.counters.rekeys_started += 1;
        out.push(Event::Log(format!("ike_sa {:016x} of {}: rekey started by the gateway", sa.our_spi(), sa.tenant().unwrap_or("?"))));
        sa.request(CREATE_CHILD_SA, &chain, self.settings.max_datagram, now, Purpose::RekeyIke, out);
    }

    /// The peer's answer to our IKE SA rekey: the CHILD_SAs move to the new
    /// IKE SA (or to the peer's, if rekeys crossed and its survives), and
    /// the old one is deleted by whoever made the survivor (§2.8.2).
    pub(super) fn ike_rekeyed(&mut self, now: Instant, sa: &mut IkeSa, payloads: &[Payload], out: &mut Vec<Event>) {
        let Some(Rekey::Ike { new_spi, nonce: ni, keypair, collision }) = sa.rekey.take() else { return };
        let tenant = sa.tenant().unwrap_or_default().to_string();
        let (mut new, nr) = match error_notify(payloads).map_or_else(|| self.successor_from(now, sa, new_spi, &ni, &keypair, payloads), Err) {
            Ok(made) => made,
            // The peer's rekey stands: the CHILD_SAs are on its new IKE SA already.
            Err(_) if collision.is_some() => return out.push(Event::Log(format!("ike_sa {:016x} of {tenant}: our rekey refused, the peer's stands", sa.our_spi()))),
            Err(why) => {
                let retry = self.retry(why);
                sa.rekey_at = Some(now + retry.after);
                sa.group = retry.group.unwrap_or(sa.group);
                return out.push(Event::Log(format!("ike_sa {:016x} of {tenant}: rekey refused: {}", sa.our_spi(), retry.why)));
            }
        };
        self.counters.ike_sas_rekeyed += 1;
        let theirs_survives = match &collision {
            Some((theirs, their_lowest)) if self.sas.contains_key(theirs) => {
                self.counters.rekey_collisions += 1;
                let ours_redundant = lowest(&ni, &nr) < *their_lowest;
                let (stays, deleted) = if ours_redundant { ("the peer's", "ours is deleted") } else { ("ours", "the peer deletes its") };
                out.push(Event::Log(format!("ike_sa {:016x} of {tenant}: rekeys crossed with the peer's {theirs:016x}: {stays} stays, {deleted}", sa.our_spi())));
                ours_redundant.then_some(*theirs)
            }
            _ => None,
        };
        // The CHILD_SAs: on the old IKE SA, or on the peer's new one if rekeys crossed.
        let mut children = std::mem::take(&mut sa.children);
        if let Some(redundant) = collision.and_then(|(theirs, _)| self.sas.get_mut(&theirs)).filter(|_| theirs_survives.is_none()) {
            children.append(&mut redundant.children);
            redundant.supersede(now);
        }
        sa.supersede(now);
        match theirs_survives {
            // The peer made the survivor, which holds the CHILD_SAs and
            // deletes the old IKE SA; we delete our redundant one.
            Some(theirs) => {
                if !children.is_empty() {
                    let mut survivor = self.sas.remove(&theirs).expect("checked above");
                    survivor.children.append(&mut children);
                    self.own_children(&survivor);
                    self.sas.insert(theirs, survivor);
                }
                self.delete_ike(now, &mut new, out);
                self.sas.insert(new_spi, new);
            }
            None => {
                out.push(Event::Log(format!("ike_sa {:016x} of {tenant} rekeyed to {new_spi:016x} (started by the gateway)", sa.our_spi())));
                new.children = children;
                self.index_identity(&new);
                self.own_children(&new);
                self.sas.insert(new_spi, new);
                // §1.3.2: the rekey's initiator deletes the old IKE SA.
                self.request_delete_ike(now, sa, out);
            }
        }
    }

    /// The new IKE SA from the answer to our rekey (we are its initiator).
    fn successor_from(&self, now: Instant, sa: &IkeSa, new_spi: u64, ni: &[u8], keypair: &KeyPair, payloads: &[Payload]) -> Result<(IkeSa, Vec<u8>), Refused> {
        let proposals = proposal::parse_sa(find(payloads, wire::SA)?).map_err(invalid)?;
        let choice = proposal::choose_ike(&proposals, &[keypair.group()], 8).ok_or_else(|| invalid("not the proposal we made"))?;
        if choice.protection != sa.protection || choice.prf != sa.prf {
            return Err(invalid("not the algorithms we proposed"));
        }
        let chosen = proposals.iter().find(|p| p.number == choice.number).expect("chosen from these");
        let peer_spi = u64::from_be_bytes(chosen.spi.try_into().expect("8-byte SPI, as chosen"));
        let nr = payloads::parse_nonce(find(payloads, wire::NONCE)?).map_err(invalid)?.to_vec();
        let ke = KeyExchange::parse(find(payloads, wire::KE)?).map_err(invalid)?;
        if ke.group != keypair.group() || peer_spi == 0 {
            return Err(invalid("a KE of another group, or a zero SPI"));
        }
        let shared = keypair.shared_secret(ke.data).map_err(invalid)?;
        let keys = sa.keys.rekey(sa.prf, sa.prf, sa.protection.key_lengths(), &shared, ni, &nr, new_spi, peer_spi);
        Ok((sa.successor(new_spi, peer_spi, true, keypair.group(), keys, ni.to_vec(), nr.clone(), now, self.ike_timers(now)), nr))
    }
}
