//! Tunnel-mode framing: the outer IPv4 or IPv6 header, the optional UDP
//! header of NAT traversal (RFC 3948), and ESP, written around an inner
//! packet in one buffer. Used by the gateway and by the peers that tests and
//! the generator play.

use super::encrypt::{self, OutboundError};
use super::sa::{OutboundSa, Tunnel};
use super::{HEADER_LEN, IP_PROTOCOL_ESP, IV_LEN, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crate::wire::{checksum, ethernet, ipv4, ipv6, read_u16, write_u16};
use std::net::IpAddr;

pub const IP_PROTOCOL_UDP: u8 = 17;
pub const UDP_HEADER_LEN: usize = 8;

/// Bytes before the inner packet, from the outer IP header on: IP, UDP if
/// encapsulated, ESP header and IV.
#[inline]
pub fn prefix_len(tunnel: &Tunnel) -> usize {
    let ip = if tunnel.remote.is_ipv4() { ipv4::MIN_HEADER_LEN } else { ipv6::HEADER_LEN };
    ip + if tunnel.udp.is_some() { UDP_HEADER_LEN } else { 0 } + HEADER_LEN + IV_LEN
}

/// Length of the outer packet (from its IP header) for an inner packet of `inner_len` bytes.
#[inline]
pub fn outer_len(tunnel: &Tunnel, inner_len: usize) -> usize {
    prefix_len(tunnel) - HEADER_LEN - IV_LEN + inner_len + encrypt::overhead(inner_len)
}

/// The largest inner packet that fits an outer MTU through `tunnel`.
pub fn max_inner(tunnel: &Tunnel, outer_mtu: u16) -> usize {
    // outer = fixed + ceil((inner + 2) / 4) * 4 with fixed = headers, IV and ICV.
    let fixed = outer_len(tunnel, 2) - 4;
    (usize::from(outer_mtu).saturating_sub(fixed) / 4 * 4).saturating_sub(2)
}

/// Header fields of the outer IP header that are not the tunnel's.
#[derive(Debug, Clone, Copy)]
pub struct OuterFields {
    pub ttl: u8,
    /// IPv4 identification (the outer header has DF set, so it only needs to vary).
    pub ident: u16,
}

/// Encrypts the inner packet that lies at `packet[prefix_len(tunnel)..][..inner_len]`
/// and writes the outer headers in front of it; `packet` starts at the outer
/// IP header and must have room for [`outer_len`] bytes. Returns that length.
pub fn encapsulate(
    packet: &mut [u8],
    tunnel: &Tunnel,
    sa: &mut OutboundSa,
    inner_len: usize,
    fields: OuterFields,
) -> Result<usize, OutboundError> {
    if tunnel.local.is_ipv4() != tunnel.remote.is_ipv4() {
        return Err(OutboundError::FamilyMismatch);
    }
    let prefix = prefix_len(tunnel);
    let total = outer_len(tunnel, inner_len);
    if packet.len() < total || inner_len == 0 {
        return Err(OutboundError::NoRoom);
    }
    let inner = &packet[prefix..];
    let (next_header, dscp) = if inner[0] >> 4 == 4 {
        (NEXT_HEADER_IPV4, inner[1] >> 2)
    } else {
        (NEXT_HEADER_IPV6, (read_u16(inner, 0) >> 6) as u8 & 0x3f)
    };
    let dscp = if tunnel.copy_dscp { dscp } else { 0 };
    let esp_start = prefix - HEADER_LEN - IV_LEN;
    let esp_len = encrypt::seal(sa, &mut packet[esp_start..total], inner_len, next_header)?;
    let protocol = if tunnel.udp.is_some() { IP_PROTOCOL_UDP } else { IP_PROTOCOL_ESP };
    let ip_len = match (tunnel.local, tunnel.remote) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ipv4::write_header(packet, total as u16, protocol, fields.ttl, fields.ident, src, dst);
            if dscp != 0 {
                packet[1] = dscp << 2;
                ipv4::set_checksum(packet);
            }
            ipv4::MIN_HEADER_LEN
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            ipv6::write_header(packet, (total - ipv6::HEADER_LEN) as u16, protocol, fields.ttl, &src, &dst);
            // Traffic class is bits 4..12 of the first word; DSCP its upper six.
            packet[0] = 0x60 | dscp >> 2;
            packet[1] = (dscp & 0x3) << 6;
            ipv6::HEADER_LEN
        }
        _ => unreachable!("families checked at the top"),
    };
    if let Some(udp) = tunnel.udp {
        let u = ip_len;
        let udp_len = UDP_HEADER_LEN + esp_len;
        write_u16(packet, u, udp.local_port);
        write_u16(packet, u + 2, udp.remote_port);
        write_u16(packet, u + 4, udp_len as u16);
        write_u16(packet, u + 6, 0);
        // IPv4 may leave the UDP checksum zero (RFC 3948 §2.1); IPv6 may not (RFC 8200 §8.1).
        if let (IpAddr::V6(src), IpAddr::V6(dst)) = (tunnel.local, tunnel.remote) {
            let acc = checksum::ipv6_pseudo_header(&src, &dst, IP_PROTOCOL_UDP, udp_len as u32);
            let sum = match checksum::finish(checksum::sum(acc, &packet[u..u + udp_len])) {
                0 => 0xffff,
                s => s,
            };
            write_u16(packet, u + 6, sum);
        }
    }
    Ok(total)
}

/// The EtherType of the outer header.
pub fn outer_ethertype(tunnel: &Tunnel) -> u16 {
    if tunnel.remote.is_ipv4() {
        ethernet::ETHERTYPE_IPV4
    } else {
        ethernet::ETHERTYPE_IPV6
    }
}
