//! ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861): answering for our
//! own addresses, learning neighbours, and writing our own solicitations.

use super::{Action, Counter, DropReason, Forwarder};
use crate::port::PacketBuf;
use crate::wire::icmpv6::{self, NeighborMessage};
use crate::wire::{arp, ethernet, ipv6, MacAddr, WireError};
use crate::Side;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethernet + IPv6 + NS/NA with one link-layer address option.
const ND_FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmpv6::ND_MESSAGE_LEN;
/// Ethernet's minimum frame (without FCS); ARP is padded to it.
const MIN_FRAME_LEN: usize = 60;

pub(super) fn is_neighbour_discovery(icmp: &[u8]) -> bool {
    matches!(icmp.first(), Some(&icmpv6::TYPE_NEIGHBOR_SOLICITATION | &icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT))
}

/// True if `frame` looks like ARP or neighbour discovery (by its EtherType,
/// next header and ICMPv6 type, unvalidated): what a host hands to
/// [`Forwarder::process`] rather than treating as data.
pub fn is_neighbour_frame(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x06]) => true,
        Some([0x86, 0xdd]) => {
            frame.get(ethernet::HEADER_LEN + 6) == Some(&ipv6::NEXT_HEADER_ICMPV6)
                && frame.get(ethernet::HEADER_LEN + ipv6::HEADER_LEN..).is_some_and(is_neighbour_discovery)
        }
        _ => false,
    }
}

impl Forwarder {
    pub(super) fn arp<B: PacketBuf>(&mut self, side: Side, buf: &mut B) -> Action {
        let frame = buf.data_mut();
        let (op, sender_mac, sender_ip, target_ip) = match arp::Packet::new_checked(&frame[ethernet::HEADER_LEN..]) {
            Ok(p) => (p.operation(), p.sender_mac(), p.sender_ip(), p.target_ip()),
            Err(WireError::Truncated) => return Action::Drop(DropReason::Truncated),
            Err(_) => return Action::Drop(DropReason::ArpInvalid),
        };
        if !self.interfaces[side as usize].owns_ipv4(target_ip) {
            // RFC 826's merge rule: refresh a neighbour we already know.
            if self.snapshot.get(side, IpAddr::V4(sender_ip)).is_some() {
                self.learn(side, IpAddr::V4(sender_ip), sender_mac);
            }
            return Action::Drop(DropReason::ArpNotForUs);
        }
        if sender_ip != Ipv4Addr::UNSPECIFIED {
            self.learn(side, IpAddr::V4(sender_ip), sender_mac);
        }
        if op != arp::OP_REQUEST {
            return Action::Consumed;
        }
        let our_mac = self.macs[side as usize];
        ethernet::write_header(frame, sender_mac, our_mac, ethernet::ETHERTYPE_ARP);
        arp::write(&mut frame[ethernet::HEADER_LEN..], arp::OP_REPLY, our_mac, target_ip, sender_mac, sender_ip);
        self.counters.add(Counter::ArpRepliesSent, 1);
        Action::Reply
    }

    pub(super) fn neighbour_discovery<B: PacketBuf>(&mut self, side: Side, buf: &mut B) -> Action {
        let frame = buf.data();
        let eth_src = ethernet::Frame::new_checked(frame).expect("checked by process").src();
        let ip = ipv6::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).expect("checked by ipv6");
        let (src, dst) = (ip.src(), ip.dst());
        let message = match NeighborMessage::new_checked(ip.payload(), &src, &dst, ip.hop_limit()) {
            Ok(m) => m,
            Err(_) => return Action::Drop(DropReason::NdInvalid),
        };
        let (kind, target, link_addr, flags) = (message.message_type(), message.target(), message.link_addr(), message.flags());
        let target_known = self.snapshot.get(side, IpAddr::V6(target)).is_some();
        if kind == icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT {
            // Learn what we asked for (solicited), or news of a neighbour we know.
            if flags & icmpv6::NA_FLAG_SOLICITED != 0 || target_known {
                self.learn(side, IpAddr::V6(target), link_addr.unwrap_or(eth_src));
            }
            return Action::Consumed;
        }
        if !self.interfaces[side as usize].owns_ipv6(target) {
            return Action::Drop(DropReason::NdNotForUs);
        }
        // A solicitation from the unspecified address is duplicate address
        // detection: answer to all-nodes, unsolicited (RFC 4861 §7.2.4).
        let dad = src.is_unspecified();
        if dad && link_addr.is_some() {
            return Action::Drop(DropReason::NdInvalid);
        }
        if let (false, Some(mac)) = (dad, link_addr) {
            self.learn(side, IpAddr::V6(src), mac);
        }
        let (reply_ip, reply_mac, solicited) = if dad {
            let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
            (all_nodes, MacAddr::ipv6_multicast(&all_nodes), 0)
        } else {
            (src, link_addr.unwrap_or(eth_src), icmpv6::NA_FLAG_SOLICITED)
        };
        if !buf.set_len(ND_FRAME_LEN) {
            return Action::Drop(DropReason::NoBuffer);
        }
        let flags = icmpv6::NA_FLAG_ROUTER | icmpv6::NA_FLAG_OVERRIDE | solicited;
        self.write_nd(side, buf.data_mut(), icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT, flags, target, target, reply_ip, reply_mac);
        self.counters.add(Counter::NdAdvertisementsSent, 1);
        Action::Reply
    }

    /// Writes a whole NS or NA frame, from `src`, about `target`.
    #[allow(clippy::too_many_arguments)]
    fn write_nd(&self, side: Side, frame: &mut [u8], kind: u8, flags: u8, target: Ipv6Addr, src: Ipv6Addr, dst: Ipv6Addr, dst_mac: MacAddr) {
        let our_mac = self.macs[side as usize];
        ethernet::write_header(frame, dst_mac, our_mac, ethernet::ETHERTYPE_IPV6);
        let ip = &mut frame[ethernet::HEADER_LEN..];
        ipv6::write_header(ip, icmpv6::ND_MESSAGE_LEN as u16, ipv6::NEXT_HEADER_ICMPV6, 255, &src, &dst);
        icmpv6::write_neighbor_message(&mut ip[ipv6::HEADER_LEN..], kind, flags, &target, our_mac, &src, &dst);
    }

    /// Turns an empty buffer into an ARP request or neighbour solicitation for
    /// `ip` on `side`. False if the port has no address of that family or the
    /// buffer is too small.
    pub fn write_solicitation<B: PacketBuf>(&self, side: Side, ip: IpAddr, buf: &mut B) -> bool {
        let interface = &self.interfaces[side as usize];
        let our_mac = self.macs[side as usize];
        match ip {
            IpAddr::V4(target) => {
                let Some(source) = interface.source_ipv4(target) else { return false };
                if !buf.set_len(MIN_FRAME_LEN) {
                    return false;
                }
                let frame = buf.data_mut();
                frame.fill(0);
                ethernet::write_header(frame, MacAddr::BROADCAST, our_mac, ethernet::ETHERTYPE_ARP);
                arp::write(&mut frame[ethernet::HEADER_LEN..], arp::OP_REQUEST, our_mac, source, MacAddr::ZERO, target);
            }
            IpAddr::V6(target) => {
                let Some(source) = interface.source_ipv6(target) else { return false };
                if !buf.set_len(ND_FRAME_LEN) {
                    return false;
                }
                let group = ipv6::solicited_node(&target);
                self.write_nd(side, buf.data_mut(), icmpv6::TYPE_NEIGHBOR_SOLICITATION, 0, target, source, group, MacAddr::ipv6_multicast(&group));
            }
        }
        true
    }
}
