//! Rewriting addresses and ports in place, with checksums updated
//! incrementally (RFC 1624 eqn. 3): HC' = ~(~HC + ~m + m').

use super::flow::{Flow, Quoted, Transport, PROTOCOL_ICMP, PROTOCOL_TCP, PROTOCOL_UDP};
use crate::wire::{checksum, read_u16, read_u32, write_u16};
use std::net::Ipv4Addr;

/// Which end of a packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

impl End {
    fn address_at(self) -> usize {
        match self {
            End::Source => 12,
            End::Destination => 16,
        }
    }
    fn port_at(self) -> usize {
        match self {
            End::Source => 0,
            End::Destination => 2,
        }
    }
    fn other(self) -> End {
        match self {
            End::Source => End::Destination,
            End::Destination => End::Source,
        }
    }
}

/// Folds `~m + m'` for a changed 16-bit word into a running sum.
#[inline]
fn delta16(acc: u32, old: u16, new: u16) -> u32 {
    acc + u32::from(!old) + u32::from(new)
}

#[inline]
fn delta32(acc: u32, old: u32, new: u32) -> u32 {
    delta16(delta16(acc, (old >> 16) as u16, (new >> 16) as u16), old as u16, new as u16)
}

/// Applies a sum of word changes to the checksum at `buf[at..at + 2]`.
#[inline]
fn apply(buf: &mut [u8], at: usize, delta: u32) {
    let mut sum = u32::from(!read_u16(buf, at)) + delta;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    write_u16(buf, at, !(sum as u16));
}

/// Applies `delta` to a UDP checksum: zero means none was sent (RFC 768), and
/// a computed zero is sent as all ones.
#[inline]
fn apply_udp(buf: &mut [u8], at: usize, delta: u32) {
    if read_u16(buf, at) == 0 {
        return;
    }
    apply(buf, at, delta);
    if read_u16(buf, at) == 0 {
        write_u16(buf, at, 0xffff);
    }
}

/// Sets one end's address (and, where the packet carries one, its port or
/// echo identifier) of the IPv4 packet `ip`, parsed as `flow`.
pub fn set_endpoint(ip: &mut [u8], flow: &Flow, end: End, addr: Ipv4Addr, port: u16) {
    let address_at = end.address_at();
    let (old_addr, new_addr) = (read_u32(ip, address_at), u32::from(addr));
    ip[address_at..address_at + 4].copy_from_slice(&addr.octets());
    apply(ip, 10, delta32(0, old_addr, new_addr));
    let l4 = flow.header_len;
    let address = delta32(0, old_addr, new_addr);
    match flow.transport {
        Transport::Tcp { .. } | Transport::Udp { .. } => {
            let port_at = l4 + end.port_at();
            let delta = delta16(address, read_u16(ip, port_at), port);
            write_u16(ip, port_at, port);
            if flow.protocol == PROTOCOL_TCP {
                apply(ip, l4 + 16, delta);
            } else {
                apply_udp(ip, l4 + 6, delta);
            }
        }
        // The ICMP checksum covers no pseudo-header: only the identifier counts.
        Transport::Echo { .. } => {
            let delta = delta16(0, read_u16(ip, l4 + 4), port);
            write_u16(ip, l4 + 4, port);
            apply(ip, l4 + 2, delta);
        }
        // Later fragments: their transport checksum travels in the first one.
        Transport::Opaque => {
            if flow.has_transport_header() {
                match flow.protocol {
                    PROTOCOL_TCP if ip.len() >= l4 + 18 => apply(ip, l4 + 16, address),
                    PROTOCOL_UDP if ip.len() >= l4 + 8 => apply_udp(ip, l4 + 6, address),
                    _ => {}
                }
            }
        }
        Transport::IcmpError { .. } => {}
    }
}

/// Translates an ICMP error (RFC 5508 §4.2): the outer address at `end`
/// becomes `addr`, and the quoted packet, which went the other way, gets the
/// same address and `port` at its opposite end; its checksums (IP header,
/// transport if quoted) and the ICMP checksum are fixed.
pub fn translate_icmp_error(ip: &mut [u8], flow: &Flow, quoted: &Quoted, end: End, addr: Ipv4Addr, port: u16) {
    let address_at = end.address_at();
    let old_outer = read_u32(ip, address_at);
    ip[address_at..address_at + 4].copy_from_slice(&addr.octets());
    apply(ip, 10, delta32(0, old_outer, u32::from(addr)));

    let icmp = flow.header_len;
    let q = icmp + quoted.offset;
    let inner_end = end.other();
    let q_address_at = q + inner_end.address_at();
    let old_inner = read_u32(ip, q_address_at);
    ip[q_address_at..q_address_at + 4].copy_from_slice(&addr.octets());
    apply(ip, q + 10, delta32(0, old_inner, u32::from(addr)));
    let ql4 = q + quoted.header_len;
    let available = flow.total_len;
    match quoted.protocol {
        PROTOCOL_TCP | PROTOCOL_UDP => {
            let port_at = ql4 + inner_end.port_at();
            let delta = delta16(delta32(0, old_inner, u32::from(addr)), read_u16(ip, port_at), port);
            write_u16(ip, port_at, port);
            // The quoted transport checksum is fixed only if it was quoted.
            if quoted.protocol == PROTOCOL_TCP && available >= ql4 + 18 {
                apply(&mut ip[..available], ql4 + 16, delta);
            } else if quoted.protocol == PROTOCOL_UDP {
                apply_udp(ip, ql4 + 6, delta);
            }
        }
        PROTOCOL_ICMP => {
            let delta = delta16(0, read_u16(ip, ql4 + 4), port);
            write_u16(ip, ql4 + 4, port);
            apply(ip, ql4 + 2, delta);
        }
        _ => {}
    }
    // Errors are rare and short: recompute the ICMP checksum whole.
    write_u16(ip, icmp + 2, 0);
    let sum = checksum::checksum(&ip[icmp..available]);
    write_u16(ip, icmp + 2, sum);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nat::flow::{self, ICMP_DESTINATION_UNREACHABLE, ICMP_ECHO_REQUEST};
    use crate::wire::ipv4;

    /// The transport checksum computed from scratch over the pseudo-header.
    pub(crate) fn transport_checksum_ok(ip: &[u8]) -> bool {
        let hl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(read_u16(ip, 2));
        let l4 = &ip[hl..total];
        match ip[9] {
            PROTOCOL_ICMP => checksum::checksum(l4) == 0,
            protocol => {
                if protocol == PROTOCOL_UDP && read_u16(l4, 6) == 0 {
                    return true;
                }
                let mut acc = checksum::sum(0, &ip[12..20]);
                acc += u32::from(protocol) + l4.len() as u32;
                checksum::finish(checksum::sum(acc, l4)) == 0
            }
        }
    }

    /// A packet with valid checksums everywhere.
    pub(crate) fn packet(protocol: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20 + l4.len()];
        let len = p.len() as u16;
        ipv4::write_header(&mut p, len, protocol, 64, 9, src.into(), dst.into());
        p[20..].copy_from_slice(l4);
        let at = match protocol {
            PROTOCOL_TCP => 36,
            PROTOCOL_UDP => 26,
            _ => 22,
        };
        p[at..at + 2].copy_from_slice(&[0, 0]);
        let sum = if protocol == PROTOCOL_ICMP {
            checksum::checksum(&p[20..])
        } else {
            let acc = checksum::sum(0, &p[12..20]) + u32::from(protocol) + l4.len() as u32;
            checksum::finish(checksum::sum(acc, &p[20..]))
        };
        p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        p
    }

    fn tcp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&src_port.to_be_bytes());
        l4[2..4].copy_from_slice(&dst_port.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = 0x18;
        l4.extend_from_slice(payload);
        l4
    }

    #[test]
    fn rfc1624_incremental_update_matches_recomputation() {
        for (src, port) in [([100, 64, 0, 1], 1024u16), ([255, 255, 255, 255], 65535), ([0, 0, 0, 0], 0)] {
            let mut p = packet(PROTOCOL_TCP, [192, 168, 1, 10], [10, 1, 0, 5], &tcp(40000, 443, b"hello world"));
            let f = flow::parse(&p).unwrap();
            set_endpoint(&mut p, &f, End::Source, src.into(), port);
            assert_eq!(checksum::checksum(&p[..20]), 0);
            assert!(transport_checksum_ok(&p));
            assert_eq!((flow::parse(&p).unwrap().src, flow::parse(&p).unwrap().ports().0), (src.into(), port));
        }
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut l4 = vec![0u8; 12];
        l4[0..2].copy_from_slice(&5000u16.to_be_bytes());
        l4[4..6].copy_from_slice(&12u16.to_be_bytes());
        let mut p = packet(PROTOCOL_UDP, [192, 168, 1, 10], [10, 1, 0, 5], &l4);
        p[26..28].copy_from_slice(&[0, 0]);
        let f = flow::parse(&p).unwrap();
        set_endpoint(&mut p, &f, End::Source, [100, 64, 0, 1].into(), 2000);
        assert_eq!(read_u16(&p, 26), 0);
        let mut p = packet(PROTOCOL_UDP, [192, 168, 1, 10], [10, 1, 0, 5], &l4);
        let f = flow::parse(&p).unwrap();
        set_endpoint(&mut p, &f, End::Destination, [10, 9, 9, 9].into(), 7);
        assert!(transport_checksum_ok(&p) && read_u16(&p, 26) != 0);
    }

    #[test]
    fn echo_identifier_and_icmp_error_quote() {
        let mut echo = vec![ICMP_ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 1];
        echo.extend_from_slice(b"ping");
        let mut p = packet(PROTOCOL_ICMP, [192, 168, 1, 10], [10, 1, 0, 5], &echo);
        let f = flow::parse(&p).unwrap();
        set_endpoint(&mut p, &f, End::Source, [100, 64, 0, 1].into(), 0x0400);
        assert!(transport_checksum_ok(&p));
        assert_eq!(flow::parse(&p).unwrap().transport, Transport::Echo { request: true, ident: 0x0400 });

        // The server's port-unreachable about a translated datagram, going back to the clinic.
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&1030u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&8u16.to_be_bytes());
        let sent = packet(PROTOCOL_UDP, [100, 64, 0, 1], [10, 1, 0, 5], &udp);
        let mut error = vec![ICMP_DESTINATION_UNREACHABLE, 3, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&sent);
        let mut p = packet(PROTOCOL_ICMP, [10, 1, 0, 5], [100, 64, 0, 1], &error);
        let f = flow::parse(&p).unwrap();
        let Transport::IcmpError { quoted } = f.transport else { panic!() };
        translate_icmp_error(&mut p, &f, &quoted, End::Destination, [192, 168, 1, 10].into(), 40000);
        assert_eq!(checksum::checksum(&p[..20]), 0);
        assert!(transport_checksum_ok(&p));
        let q = &p[28..];
        assert_eq!(checksum::checksum(&q[..20]), 0, "quoted header checksum");
        assert!(transport_checksum_ok(q), "quoted UDP checksum");
        let Transport::IcmpError { quoted } = flow::parse(&p).unwrap().transport else { panic!() };
        assert_eq!((quoted.src, quoted.src_port), ([192, 168, 1, 10].into(), 40000));
    }
}
