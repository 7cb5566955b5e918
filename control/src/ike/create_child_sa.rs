//! CREATE_CHILD_SA (RFC 7296 §1.3): a new or rekeyed CHILD_SA, with a
//! fresh Diffie-Hellman exchange (PFS) when policy asks for one, and the
//! rekey of the IKE SA itself (§2.18).

use super::dh::KeyPair;
use super::ike_auth::{child_request, ts_body, DhMode};
use super::keys::IkeKeys;
use super::payloads::{self, notify_body, KeyExchange, Notify};
use super::proposal::{self, Proposal, PROTOCOL_ESP, PROTOCOL_IKE};
use super::protect::Chain;
use super::responder::{Event, Responder};
use super::rekey::lowest;
use super::sa::{IkeSa, Phase, Purpose, Rekey};
use super::wire::{self, Payload, CREATE_CHILD_SA};
use std::time::Instant;

/// Most CHILD_SAs of one IKE SA (a rekey may briefly add one more): one
/// clinic cannot take the SPIs its worker's other tenants need.
const MAX_CHILDREN: usize = 8;

impl Responder {
    pub(super) fn create_child_sa(&mut self, now: Instant, message_id: u32, payloads: &[Payload], sa: &mut IkeSa, out: &mut Vec<Event>) -> bool {
        let chain = match self.child_exchange(now, payloads, sa, out) {
            Ok(chain) => chain,
            Err((notify, data)) => {
                let mut chain = Chain::new();
                chain.push(wire::NOTIFY, notify_body(notify, &data));
                chain
            }
        };
        sa.respond(CREATE_CHILD_SA, message_id, &chain, self.settings.max_datagram, out);
        true
    }

    /// The response's payloads, or the error notify (with its data).
    fn child_exchange(&mut self, now: Instant, payloads: &[Payload], sa: &mut IkeSa, out: &mut Vec<Event>) -> Result<Chain, (u16, Vec<u8>)> {
        let syntax = || (payloads::INVALID_SYNTAX, Vec::new());
        let (mut sa_body, mut nonce, mut ke, mut rekey) = (None, None, None, None);
        for p in payloads {
            match p.kind {
                wire::SA => sa_body = Some(p.body),
                wire::NONCE => nonce = Some(p.body),
                wire::KE => ke = Some(KeyExchange::parse(p.body).map_err(|_| syntax())?),
                wire::NOTIFY => {
                    if let Ok(n) = Notify::parse(p.body) {
                        if n.kind == payloads::REKEY_SA && n.protocol == PROTOCOL_ESP {
                            rekey = Some(u32::from_be_bytes(n.spi.try_into().map_err(|_| syntax())?));
                        }
                    }
                }
                _ => {}
            }
        }
        // An SA being deleted from our side, or whose identity no longer
        // maps to its tenant (a reload moved it), gets nothing new.
        let Phase::Established { tenant, peer_id, .. } = &sa.phase else { unreachable!("established") };
        let still_registered = self.tenants.find(peer_id).is_some_and(|t| t.name == *tenant);
        let purpose = sa.outstanding.as_ref().map(|o| o.purpose);
        if !still_registered || sa.deleting() || sa.rekey_at.is_none() {
            return Err((payloads::TEMPORARY_FAILURE, Vec::new()));
        }
        let proposals = proposal::parse_sa(sa_body.ok_or_else(syntax)?).map_err(|e| (e.notify(), Vec::new()))?;
        let ni = payloads::parse_nonce(nonce.ok_or_else(syntax)?).map_err(|_| syntax())?.to_vec();
        if proposals.first().is_some_and(|p| p.protocol == PROTOCOL_IKE) {
            // §2.25.2: not while a CHILD_SA of ours is being rekeyed or deleted.
            if matches!(purpose, Some(Purpose::RekeyChild | Purpose::DeleteChild(_))) {
                return Err((payloads::TEMPORARY_FAILURE, Vec::new()));
            }
            return self.rekey_ike(now, &proposals, ke, &ni, sa, out);
        }
        // §2.25.2: not while our rekey of the IKE SA is in flight.
        if matches!(sa.rekey, Some(Rekey::Ike { .. })) {
            return Err((payloads::TEMPORARY_FAILURE, Vec::new()));
        }
        let tenant = sa.tenant().expect("established").to_string();
        // §2.8: REKEY_SA names the CHILD_SA by the SPI the peer receives on: our outbound one.
        let replaces = match rekey {
            Some(spi) => Some(sa.children.iter().find(|c| c.outbound_spi == spi).map(|c| c.inbound_spi).ok_or((payloads::CHILD_SA_NOT_FOUND, Vec::new()))?),
            None if sa.children.len() >= MAX_CHILDREN => return Err((payloads::NO_ADDITIONAL_SAS, Vec::new())),
            None => None,
        };
        // §2.25.1: not a CHILD_SA we are deleting.
        if replaces.is_some_and(|old| purpose == Some(Purpose::DeleteChild(old))) {
            return Err((payloads::TEMPORARY_FAILURE, Vec::new()));
        }
        let ours;
        let shared;
        let dh = match ke {
            Some(ke) => {
                let choice = proposal::choose_esp(&proposals, Some(&self.settings.dh_groups)).ok_or((payloads::NO_PROPOSAL_CHOSEN, Vec::new()))?;
                if !choice.groups.contains(&ke.group) {
                    self.counters.invalid_ke += 1;
                    return Err((payloads::INVALID_KE_PAYLOAD, choice.groups[0].to_be_bytes().to_vec()));
                }
                ours = KeyPair::generate(ke.group).expect("a group we listed");
                shared = ours.shared_secret(ke.data).map_err(|_| syntax())?;
                DhMode::Pfs { group: ke.group, shared: &shared }
            }
            None if self.settings.pfs_required => {
                self.counters.no_proposal += 1;
                out.push(Event::Log(format!("CREATE_CHILD_SA from {tenant}: no KE payload, and PFS is required")));
                return Err((payloads::NO_PROPOSAL_CHOSEN, Vec::new()));
            }
            None => {
                ours = KeyPair::generate(self.settings.dh_groups[0]).expect("a group we listed");
                DhMode::NoKe
            }
        };
        let nr = payloads::fresh_nonce();
        let request = child_request(payloads);
        let (child, sa_payload) = self.make_child(now, sa, &request, dh, &ni, &nr).map_err(|n| (n, Vec::new()))?;
        let mut chain = Chain::new();
        chain.push(wire::SA, sa_payload).push(wire::NONCE, nr.clone());
        if let DhMode::Pfs { .. } = dh {
            chain.push(wire::KE, ours.ke_body());
        }
        chain.push(wire::TSI, ts_body(&child.clinic)).push(wire::TSR, ts_body(&child.inside));
        out.push(Event::Log(format!(
            "child_sa {:08x} {} for tenant {tenant}{}",
            child.inbound_spi,
            if replaces.is_some() { "rekeyed" } else { "added" },
            child.pfs_group.map(|g| format!(" (PFS group {g})")).unwrap_or_default()
        )));
        // Our own rekey of the same CHILD_SA is in flight (§2.8.1): the
        // lower nonce of this exchange decides, when ours is answered.
        if let Some(Rekey::Child { old, collision, .. }) = &mut sa.rekey {
            if replaces == Some(*old) {
                *collision = Some((child.inbound_spi, lowest(&ni, &nr)));
            }
        }
        if let Some(old) = replaces.and_then(|spi| sa.children.iter_mut().find(|c| c.inbound_spi == spi)) {
            old.rekey_at = None;
        }
        self.child_up(sa, &tenant, child, replaces, false, out);
        Ok(chain)
    }

    /// Rekeys the IKE SA (§2.18): a new SA with new SPIs and keys from the
    /// old SK_d and a new DH secret; the CHILD_SAs move to it. The old SA
    /// lives until the peer deletes it.
    fn rekey_ike(&mut self, now: Instant, proposals: &[Proposal], ke: Option<KeyExchange>, ni: &[u8], sa: &mut IkeSa, out: &mut Vec<Event>) -> Result<Chain, (u16, Vec<u8>)> {
        let choice = proposal::choose_ike(proposals, &self.settings.dh_groups, 8).ok_or((payloads::NO_PROPOSAL_CHOSEN, Vec::new()))?;
        let ke = ke.ok_or((payloads::INVALID_SYNTAX, Vec::new()))?;
        if !choice.groups.contains(&ke.group) {
            self.counters.invalid_ke += 1;
            return Err((payloads::INVALID_KE_PAYLOAD, choice.groups[0].to_be_bytes().to_vec()));
        }
        let chosen = proposals.iter().find(|p| p.number == choice.number).expect("chosen from these");
        let new_spi_i = u64::from_be_bytes(chosen.spi.try_into().expect("8-byte SPI, as chosen"));
        let ours = KeyPair::generate(ke.group).expect("a group we listed");
        let shared = ours.shared_secret(ke.data).map_err(|_| (payloads::INVALID_SYNTAX, Vec::new()))?;
        // The SA being rekeyed is out of the table while it is worked on.
        let new_spi_r = loop {
            let spi = self.fresh_spi();
            if spi != sa.our_spi() {
                break spi;
            }
        };
        let nr = payloads::fresh_nonce();
        let keys: IkeKeys = sa.keys.rekey(sa.prf, choice.prf, choice.protection.key_lengths(), &shared, ni, &nr, new_spi_i, new_spi_r);
        let mut rekeyed = sa.successor(new_spi_i, new_spi_r, false, ke.group, keys, ni.to_vec(), nr.clone(), now, self.ike_timers(now));
        (rekeyed.prf, rekeyed.protection) = (choice.prf, choice.protection);
        let tenant = sa.tenant().unwrap_or_default().to_string();
        // Ours is in flight too (§2.8.2): the lower nonce decides which new
        // IKE SA survives once ours is answered; the CHILD_SAs go to the
        // peer's now, and to ours then if ours survives.
        if let Some(Rekey::Ike { collision, .. }) = &mut sa.rekey {
            *collision = Some((new_spi_r, lowest(ni, &nr)));
        }
        rekeyed.children = std::mem::take(&mut sa.children);
        sa.supersede(now);
        out.push(Event::Log(format!("ike_sa {:016x} of {tenant} rekeyed to {new_spi_r:016x}", sa.our_spi())));
        self.counters.ike_sas_rekeyed += 1;
        self.index_identity(&rekeyed);
        self.own_children(&rekeyed);
        self.sas.insert(new_spi_r, rekeyed);
        let mut sa_payload = [0u8; 128];
        let len = proposal::write_sa(&mut sa_payload, choice.number, PROTOCOL_IKE, &new_spi_r.to_be_bytes(), &choice.transforms(ke.group)).expect("one proposal fits");
        let mut chain = Chain::new();
        chain.push(wire::SA, sa_payload[..len].to_vec()).push(wire::NONCE, nr).push(wire::KE, ours.ke_body());
        Ok(chain)
    }
}
