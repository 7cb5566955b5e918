//! CREATE_CHILD_SA (RFC 7296 §1.3): a new or rekeyed CHILD_SA, with a
//! fresh Diffie-Hellman exchange (PFS) when policy asks for one, and the
//! rekey of the IKE SA itself (§2.18).

use super::dh::KeyPair;
use super::ike_auth::{child_request, ts_body, DhMode};
use super::keys::IkeKeys;
use super::payloads::{self, notify_body, KeyExchange, Notify};
use super::proposal::{self, Proposal, PROTOCOL_ESP, PROTOCOL_IKE};
use super::protect::{Chain, Reassembly};
use super::responder::{Event, Responder};
use super::sa::{IkeSa, Phase, Purpose};
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
        let datagrams = sa.respond(CREATE_CHILD_SA, message_id, &chain, self.settings.max_datagram);
        out.extend(datagrams.into_iter().map(|d| Event::Send { from: sa.local, to: sa.peer, datagram: d }));
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
        let Phase::Established { tenant, peer_id } = &sa.phase else { unreachable!("established") };
        let still_registered = self.tenants.find(peer_id).is_some_and(|t| t.name == *tenant);
        if !still_registered || sa.outstanding.as_ref().is_some_and(|o| o.purpose == Purpose::DeleteIke) {
            return Err((payloads::TEMPORARY_FAILURE, Vec::new()));
        }
        let proposals = proposal::parse_sa(sa_body.ok_or_else(syntax)?).map_err(|e| (e.notify(), Vec::new()))?;
        let ni = payloads::parse_nonce(nonce.ok_or_else(syntax)?).map_err(|_| syntax())?.to_vec();
        if proposals.first().is_some_and(|p| p.protocol == PROTOCOL_IKE) {
            return self.rekey_ike(now, &proposals, ke, &ni, sa, out);
        }
        let tenant = sa.tenant().expect("established").to_string();
        // §2.8: REKEY_SA names the CHILD_SA by the SPI the peer receives on: our outbound one.
        let replaces = match rekey {
            Some(spi) => Some(sa.children.iter().find(|c| c.outbound_spi == spi).map(|c| c.inbound_spi).ok_or((payloads::CHILD_SA_NOT_FOUND, Vec::new()))?),
            None if sa.children.len() >= MAX_CHILDREN => return Err((payloads::NO_ADDITIONAL_SAS, Vec::new())),
            None => None,
        };
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
        let (child, sa_payload) = self.make_child(sa, &tenant, &request, dh, &ni, &nr).map_err(|n| (n, Vec::new()))?;
        let mut chain = Chain::new();
        chain.push(wire::SA, sa_payload).push(wire::NONCE, nr);
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
        self.child_up(sa, &tenant, child, replaces, out);
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
            if spi != sa.spi_r {
                break spi;
            }
        };
        let nr = payloads::fresh_nonce();
        let keys: IkeKeys = sa.keys.rekey(sa.prf, choice.prf, choice.protection.key_lengths(), &shared, ni, &nr, new_spi_i, new_spi_r);
        let Phase::Established { tenant, peer_id } = &sa.phase else { unreachable!("established") };
        let rekeyed = IkeSa {
            spi_i: new_spi_i,
            spi_r: new_spi_r,
            peer: sa.peer,
            local: sa.local,
            prf: choice.prf,
            protection: choice.protection,
            keys,
            ni: ni.to_vec(),
            nr: nr.clone(),
            phase: Phase::Established { tenant: tenant.clone(), peer_id: peer_id.clone() },
            nat: sa.nat,
            fragmentation: sa.fragmentation,
            peer_hashes: sa.peer_hashes.clone(),
            next_request: 0,
            last_response: None,
            iv_counter: 0,
            reassembly: Reassembly::default(),
            children: std::mem::take(&mut sa.children),
            created: now,
            last_heard: now,
            our_next_id: 0,
            outstanding: None,
        };
        out.push(Event::Log(format!("ike_sa {:016x} of {tenant} rekeyed to {new_spi_r:016x}", sa.spi_r)));
        self.counters.ike_sas_rekeyed += 1;
        self.by_identity.entry(peer_id.clone()).or_default().push(new_spi_r);
        self.sas.insert(new_spi_r, rekeyed);
        let mut sa_payload = [0u8; 128];
        let len = proposal::write_sa(&mut sa_payload, choice.number, PROTOCOL_IKE, &new_spi_r.to_be_bytes(), &choice.transforms(ke.group)).expect("one proposal fits");
        let mut chain = Chain::new();
        chain.push(wire::SA, sa_payload[..len].to_vec()).push(wire::NONCE, nr).push(wire::KE, ours.ke_body());
        Ok(chain)
    }
}
