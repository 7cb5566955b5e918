//! The NAT stages of the pipeline: a clinic's decrypted packet onto the
//! pool (between decryption and forwarding), and a packet to the pool back
//! to its clinic (before encryption). The tracking and translation
//! themselves are in [`crate::nat`].

use super::icmp_error::IcmpError;
use super::{too_big, Action, Forwarder};
use crate::esp::tunnel;
use crate::nat::{flow, rewrite, NatCore, Outcome};
use crate::pipeline::{Counter, DropReason};
use crate::port::PacketBuf;
use crate::wire::{ethernet, MacAddr};
use crate::Side;
use std::net::{IpAddr, Ipv4Addr};

/// The destination address and port (or echo identifier) of a TCP, UDP or
/// echo packet, as it arrives: what undoing its translation restores.
fn original_destination(ip: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let l4 = usize::from(ip.first()? & 0x0f) * 4;
    let at = match ip.get(9)? {
        6 | 17 => l4 + 2,
        1 => l4 + 4,
        _ => return None,
    };
    let port = ip.get(at..at + 2)?;
    Some((Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?), u16::from_be_bytes([port[0], port[1]])))
}

/// Whether a clinic may send to `dst` as far as NAT is concerned: not to
/// the pool (no hairpin) and not into any tenant's subnets.
#[inline]
pub(super) fn nat_destination_allowed(nat: Option<&NatCore>, dst: IpAddr) -> bool {
    let (Some(nat), IpAddr::V4(dst)) = (nat, dst) else { return true };
    nat.policy.pool_address(dst).is_none() && !nat.policy.clinic_subnets.contains(dst)
}

impl Forwarder {
    /// Translates a decrypted packet (`ip`) of `tenant`'s clinic in place;
    /// None to go on forwarding it, else what to do instead.
    pub(super) fn nat_upstream(&mut self, tenant: u32, ip: &mut [u8]) -> Option<Action> {
        let nat = self.nat.as_mut()?;
        match nat.upstream(tenant, ip, self.now_ms, &mut self.counters) {
            Outcome::Pass { .. } => {
                self.counters.add(Counter::NatTranslatedUp, 1);
                None
            }
            Outcome::Held => Some(Action::Kept),
            // Sessions from a clinic live on its tunnel's worker.
            Outcome::HandOff(_) => Some(Action::Drop(DropReason::TunnelElsewhere)),
            Outcome::Drop(reason) => Some(Action::Drop(reason)),
        }
    }

    /// Lets decrypted packets of tenants wait for their burst's NAT stage
    /// (while `on`); the worker sets it for the bursts it receives.
    pub fn defer_nat(&mut self, on: bool) {
        self.defer_nat = on && self.nat.is_some();
    }

    /// Prefetching for the `index`th deferred packet (`buf`), a few ahead of
    /// the one being finished: first its session's index slots, then the session.
    #[inline]
    pub fn prefetch_deferred<B: PacketBuf>(&self, index: usize, buf: &B, session: bool) {
        let (Some(nat), Some(&(tenant, d))) = (&self.nat, self.deferred.get(index)) else { return };
        let Some(ip) = buf.data().get(d.inner_start..d.inner_start + d.inner_len) else { return };
        if session {
            nat.prefetch_session(Side::Outside, tenant, ip);
        } else {
            nat.prefetch_index(Side::Outside, tenant, ip);
        }
    }

    /// The NAT stage and forwarding of the `index`th deferred packet of the
    /// burst; after the last, [`Forwarder::end_deferred`].
    pub fn finish_deferred<B: PacketBuf>(&mut self, index: usize, buf: &mut B) -> Action {
        let (tenant, d) = self.deferred[index];
        if let Some(action) = self.nat_upstream(tenant, d.inner(buf.data_mut())) {
            return action;
        }
        self.forward_decrypted(buf, d)
    }

    /// Forgets the burst's deferred packets (all finished).
    pub fn end_deferred(&mut self) {
        self.deferred.clear();
    }

    /// A packet from the inside to pool address `address` (its index), of
    /// `total_len` bytes: back to its clinic through the tenant's tunnel.
    pub(super) fn nat_downstream<B: PacketBuf>(&mut self, buf: &mut B, address: u16, total_len: usize) -> Action {
        let ip_range = ethernet::HEADER_LEN..ethernet::HEADER_LEN + total_len;
        // ICMP errors the gateway sends about the packet quote it as the
        // server sent it: the TTL is checked before translation, and the
        // translation is undone for a packet too big for the tunnel.
        if buf.data()[ip_range.start + 8] <= 1 {
            return self.icmp_error(Side::Inside, buf, IcmpError::TimeExceeded);
        }
        let Some(nat) = self.nat.as_mut() else { return Action::Drop(DropReason::NoSession) };
        let ip = &mut buf.data_mut()[ip_range.clone()];
        let original = original_destination(ip);
        let routes = &self.routes;
        let owner_of = |rule: &crate::policy::InboundRule| routes.lookup_tenant_ipv4(rule.tenant, *rule.to.ip()).map(|r| r.core);
        let tenant = match nat.downstream(address, ip, self.now_ms, &mut self.counters, owner_of) {
            Outcome::Pass { tenant } => tenant,
            Outcome::Held => return Action::Kept,
            Outcome::HandOff(core) => return Action::Handoff(core),
            Outcome::Drop(reason) => return Action::Drop(reason),
        };
        self.counters.add(Counter::NatTranslatedDown, 1);
        let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).expect("4 bytes"));
        let Some(route) = self.routes.lookup_tenant_ipv4(tenant, dst) else {
            return Action::Drop(DropReason::NoTunnel);
        };
        // A tenant's sessions are made on its tunnel's worker, so this holds
        // unless the tunnel moved since.
        if route.core != self.sad.core() {
            return Action::Drop(DropReason::TunnelElsewhere);
        }
        if let Some((_, tunnel)) = self.sad.outbound(route.sa) {
            let tunnel = *tunnel;
            if tunnel::outer_len(&tunnel, total_len) > usize::from(self.settings.outer_mtu) && !too_big::may_fragment(&buf.data()[ip_range.clone()]) {
                let ip = &mut buf.data_mut()[ip_range];
                match (original, flow::parse(ip)) {
                    (Some((addr, port)), Ok(f)) => rewrite::set_endpoint(ip, &f, rewrite::End::Destination, addr, port),
                    _ => return Action::Drop(DropReason::TooBigForTunnel),
                }
                let mtu = tunnel::max_inner(&tunnel, self.settings.outer_mtu);
                return self.icmp_error(Side::Inside, buf, IcmpError::TooBig { mtu });
            }
        }
        self.outbound_esp(buf, route, total_len, true)
    }

    /// A fragment held until its first fragment passed, now released:
    /// written into `buf` and processed as it would have been.
    pub(super) fn released_fragment<B: PacketBuf>(&mut self, buf: &mut B) -> Option<(Side, Action)> {
        let nat = self.nat.as_mut()?;
        let h = nat.fragments.take_released()?;
        let held = nat.fragments.held(h);
        let (side, tenant, len) = (held.side, held.tenant, held.packet().len());
        if !buf.set_len(ethernet::HEADER_LEN + len) {
            nat.fragments.free(h);
            return Some((side, Action::Drop(DropReason::NoBuffer)));
        }
        let frame = buf.data_mut();
        ethernet::write_header(frame, self.macs[side as usize], MacAddr::ZERO, ethernet::ETHERTYPE_IPV4);
        frame[ethernet::HEADER_LEN..].copy_from_slice(held.packet());
        nat.fragments.free(h);
        self.counters.add(Counter::FragmentsReleased, 1);
        let action = match side {
            // From the inside: as any packet from there.
            Side::Inside => self.process(Side::Inside, buf),
            // From a clinic: decrypted, checked and its TTL lowered before it
            // was held; only NAT and forwarding remain.
            Side::Outside => {
                let ip = &mut buf.data_mut()[ethernet::HEADER_LEN..];
                match self.nat_upstream(tenant, ip) {
                    Some(action) => action,
                    None => {
                        let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).expect("4 bytes"));
                        match self.interfaces[Side::Inside as usize].next_hop(IpAddr::V4(dst)) {
                            Some(next_hop) => self.forward(Side::Inside, next_hop, buf.data_mut()),
                            None => Action::Drop(DropReason::NoRoute),
                        }
                    }
                }
            }
        };
        Some((side, action))
    }
}
