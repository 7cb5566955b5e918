//! What connection tracking and NAT read from an inner IPv4 packet: a
//! zero-copy parse of the transport header (TCP, UDP, ICMP), and of the
//! packet an ICMP error quotes (RFC 792, RFC 5508 §3).

use crate::wire::{read_u16, read_u32, WireError};
use std::net::Ipv4Addr;

pub const PROTOCOL_ICMP: u8 = 1;
pub const PROTOCOL_TCP: u8 = 6;
pub const PROTOCOL_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DESTINATION_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An IPv4 fragment's place: identification, offset in bytes, more-fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub ident: u16,
    pub offset: u16,
    pub more: bool,
}

/// The TCP fields the state machine and window checks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Window scale option (RFC 7323 §2), on SYNs only.
    pub window_scale: Option<u8>,
    /// Bytes of data after the header.
    pub data_len: u32,
}

/// The transport part of a packet, as conntrack keys it. `Echo` identifiers
/// and ports are treated alike (RFC 5508 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp { src_port: u16, dst_port: u16, segment: TcpSegment },
    Udp { src_port: u16, dst_port: u16 },
    Echo { request: bool, ident: u16 },
    /// An ICMP error quoting a packet of a flow (which went the other way).
    IcmpError { quoted: Quoted },
    /// A later fragment (no transport header), an ICMP message NAT does not
    /// translate, or another protocol.
    Opaque,
}

/// The packet an ICMP error quotes: its addresses, protocol and ports (or
/// echo identifier), and where its header starts in the outer packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub offset: usize,
    pub header_len: usize,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A parsed inner IPv4 packet (its header checked by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub header_len: usize,
    pub total_len: usize,
    pub fragment: Option<Fragment>,
    pub transport: Transport,
}

impl Flow {
    /// Source and destination port (echo identifier on both sides for ICMP
    /// queries, 0 for what has none).
    pub fn ports(&self) -> (u16, u16) {
        match self.transport {
            Transport::Tcp { src_port, dst_port, .. } | Transport::Udp { src_port, dst_port } => (src_port, dst_port),
            Transport::Echo { ident, .. } => (ident, ident),
            Transport::IcmpError { .. } | Transport::Opaque => (0, 0),
        }
    }
    /// True for the first fragment or an unfragmented packet.
    pub fn has_transport_header(&self) -> bool {
        self.fragment.is_none_or(|f| f.offset == 0)
    }
}

/// Parses `ip`, an IPv4 packet whose header the caller validated (as
/// [`crate::wire::ipv4::Packet::new_checked`] does). Transport headers are
/// read only from unfragmented packets and first fragments; one too short
/// for its transport header is [`WireError::Truncated`].
pub fn parse(ip: &[u8]) -> Result<Flow, WireError> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(WireError::Malformed);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(read_u16(ip, 2));
    if header_len < 20 || total_len < header_len || ip.len() < total_len {
        return Err(WireError::Malformed);
    }
    let flags_offset = read_u16(ip, 6);
    let fragment = (flags_offset & 0x3fff != 0).then_some(Fragment {
        ident: read_u16(ip, 4),
        offset: (flags_offset & 0x1fff) * 8,
        more: flags_offset & 0x2000 != 0,
    });
    let protocol = ip[9];
    let src = Ipv4Addr::from(read_u32(ip, 12));
    let dst = Ipv4Addr::from(read_u32(ip, 16));
    let l4 = &ip[header_len..total_len];
    let first = fragment.is_none_or(|f| f.offset == 0);
    let transport = if first { transport(protocol, l4, fragment.is_none())? } else { Transport::Opaque };
    Ok(Flow { protocol, src, dst, header_len, total_len, fragment, transport })
}

fn transport(protocol: u8, l4: &[u8], whole: bool) -> Result<Transport, WireError> {
    match protocol {
        PROTOCOL_TCP => {
            if l4.len() < 20 {
                return Err(WireError::Truncated);
            }
            let data_offset = usize::from(l4[12] >> 4) * 4;
            if data_offset < 20 || data_offset > l4.len() {
                return Err(WireError::Malformed);
            }
            let flags = l4[13];
            let segment = TcpSegment {
                flags,
                seq: read_u32(l4, 4),
                ack: read_u32(l4, 8),
                window: read_u16(l4, 14),
                window_scale: if flags & TCP_SYN != 0 { window_scale(&l4[20..data_offset]) } else { None },
                // A first fragment's data length is not the segment's: the
                // window checks then see only what this fragment carries.
                data_len: (l4.len() - data_offset) as u32,
            };
            Ok(Transport::Tcp { src_port: read_u16(l4, 0), dst_port: read_u16(l4, 2), segment })
        }
        PROTOCOL_UDP => {
            if l4.len() < 8 {
                return Err(WireError::Truncated);
            }
            // The UDP length must match the IP payload of a whole datagram.
            if whole && usize::from(read_u16(l4, 4)) != l4.len() {
                return Err(WireError::Malformed);
            }
            Ok(Transport::Udp { src_port: read_u16(l4, 0), dst_port: read_u16(l4, 2) })
        }
        PROTOCOL_ICMP => {
            if l4.len() < 8 {
                return Err(WireError::Truncated);
            }
            match l4[0] {
                ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => Ok(Transport::Echo { request: l4[0] == ICMP_ECHO_REQUEST, ident: read_u16(l4, 4) }),
                ICMP_DESTINATION_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM if whole => {
                    Ok(Transport::IcmpError { quoted: quoted(&l4[8..])? })
                }
                _ => Ok(Transport::Opaque),
            }
        }
        _ => Ok(Transport::Opaque),
    }
}

/// The quoted packet of an ICMP error: its IP header and at least the 8
/// bytes after it (RFC 792), where the ports or the echo identifier are.
/// The offset returned is relative to the ICMP header.
fn quoted(q: &[u8]) -> Result<Quoted, WireError> {
    if q.len() < 20 || q[0] >> 4 != 4 {
        return Err(WireError::Malformed);
    }
    let header_len = usize::from(q[0] & 0x0f) * 4;
    if header_len < 20 || q.len() < header_len + 8 {
        return Err(WireError::Truncated);
    }
    // Only a first fragment (or a whole packet) carries the ports.
    if read_u16(q, 6) & 0x1fff != 0 {
        return Err(WireError::Malformed);
    }
    let protocol = q[9];
    let l4 = &q[header_len..];
    let (src_port, dst_port) = match protocol {
        PROTOCOL_TCP | PROTOCOL_UDP => (read_u16(l4, 0), read_u16(l4, 2)),
        // Only echo messages are quoted with an identifier NAT knows; an
        // error about an error is never sent (RFC 1122 §3.2.2).
        PROTOCOL_ICMP if matches!(l4[0], ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => (read_u16(l4, 4), read_u16(l4, 4)),
        _ => return Err(WireError::Malformed),
    };
    Ok(Quoted {
        offset: 8,
        header_len,
        protocol,
        src: Ipv4Addr::from(read_u32(q, 12)),
        dst: Ipv4Addr::from(read_u32(q, 16)),
        src_port,
        dst_port,
    })
}

/// The window scale option in a SYN's options, if present (capped at 14, RFC 7323 §2.3).
fn window_scale(mut options: &[u8]) -> Option<u8> {
    while let [kind, rest @ ..] = options {
        match *kind {
            0 => return None,
            1 => options = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                if len < 2 || len > options.len() {
                    return None;
                }
                if *kind == 3 && len == 3 {
                    return Some(options[2].min(14));
                }
                options = &options[len..];
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;

    fn packet(protocol: u8, l4: &[u8], flags_offset: u16) -> Vec<u8> {
        let mut p = vec![0u8; 20 + l4.len()];
        ipv4::write_header(&mut p, (20 + l4.len()) as u16, protocol, 64, 77, Ipv4Addr::new(192, 168, 1, 10), Ipv4Addr::new(10, 1, 0, 5));
        p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        ipv4::set_checksum(&mut p);
        p[20..].copy_from_slice(l4);
        p
    }

    fn tcp_syn_with_scale(scale: u8) -> Vec<u8> {
        let mut l4 = vec![0u8; 28];
        l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&443u16.to_be_bytes());
        l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
        l4[12] = 7 << 4;
        l4[13] = TCP_SYN;
        l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
        // MSS, NOP, window scale.
        l4[20..28].copy_from_slice(&[2, 4, 0x05, 0xb4, 1, 3, 3, scale]);
        packet(PROTOCOL_TCP, &l4, 0x4000)
    }

    #[test]
    fn tcp_ports_flags_and_window_scale() {
        let f = parse(&tcp_syn_with_scale(7)).unwrap();
        assert_eq!(f.ports(), (40000, 443));
        let Transport::Tcp { segment, .. } = f.transport else { panic!("{f:?}") };
        assert_eq!((segment.flags, segment.seq, segment.window, segment.window_scale, segment.data_len), (TCP_SYN, 1000, 64240, Some(7), 0));
        assert!(f.fragment.is_none() && f.has_transport_header());
        let Transport::Tcp { segment, .. } = parse(&tcp_syn_with_scale(20)).unwrap().transport else { panic!() };
        assert_eq!(segment.window_scale, Some(14), "capped (RFC 7323 §2.3)");
    }

    #[test]
    fn udp_length_must_match_unless_fragmented() {
        let mut l4 = [0u8; 12];
        l4[0..2].copy_from_slice(&5353u16.to_be_bytes());
        l4[2..4].copy_from_slice(&53u16.to_be_bytes());
        l4[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(parse(&packet(PROTOCOL_UDP, &l4, 0)).unwrap().ports(), (5353, 53));
        l4[4..6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse(&packet(PROTOCOL_UDP, &l4, 0)), Err(WireError::Malformed));
        // A first fragment carries the whole datagram's length.
        let first = parse(&packet(PROTOCOL_UDP, &l4, 0x2000)).unwrap();
        assert_eq!((first.ports(), first.fragment.map(|f| (f.offset, f.more))), ((5353, 53), Some((0, true))));
        let later = parse(&packet(PROTOCOL_UDP, &l4, 0x0003)).unwrap();
        assert_eq!((later.transport, later.fragment.map(|f| (f.offset, f.more))), (Transport::Opaque, Some((24, false))));
        assert_eq!(parse(&packet(PROTOCOL_UDP, &l4[..6], 0)), Err(WireError::Truncated));
    }

    #[test]
    fn echo_and_errors_quoting_a_flow() {
        let mut echo = [0u8; 16];
        echo[0] = ICMP_ECHO_REQUEST;
        echo[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        let f = parse(&packet(PROTOCOL_ICMP, &echo, 0)).unwrap();
        assert_eq!(f.transport, Transport::Echo { request: true, ident: 0x1234 });

        // Port unreachable quoting a UDP datagram from 10.1.0.5:53 to 192.168.1.10:5353.
        let mut quoted_udp = vec![0u8; 28];
        ipv4::write_header(&mut quoted_udp, 40, PROTOCOL_UDP, 60, 1, Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(192, 168, 1, 10));
        quoted_udp[20..22].copy_from_slice(&53u16.to_be_bytes());
        quoted_udp[22..24].copy_from_slice(&5353u16.to_be_bytes());
        let mut error = vec![ICMP_DESTINATION_UNREACHABLE, 3, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&quoted_udp);
        let Transport::IcmpError { quoted } = parse(&packet(PROTOCOL_ICMP, &error, 0)).unwrap().transport else { panic!() };
        assert_eq!((quoted.src, quoted.dst, quoted.src_port, quoted.dst_port, quoted.protocol), (Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(192, 168, 1, 10), 53, 5353, PROTOCOL_UDP));
        // Quoting less than 8 bytes of transport header is useless to NAT.
        assert_eq!(parse(&packet(PROTOCOL_ICMP, &error[..8 + 24], 0)), Err(WireError::Truncated));
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let mut tcp = tcp_syn_with_scale(1);
        tcp[20 + 12] = 15 << 4; // data offset past the end
        assert_eq!(parse(&tcp), Err(WireError::Malformed));
        for len in 0..tcp.len() {
            let _ = parse(&tcp[..len]);
        }
    }
}
