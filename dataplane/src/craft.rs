//! Whole frames for tests, the traffic generator and benchmarks: Ethernet,
//! IPv4 or IPv6, UDP with a correct checksum, and a payload that carries a
//! sequence number so the receiver can check every byte.

use crate::wire::{checksum, ethernet, ipv4, ipv6, MacAddr};
use std::net::IpAddr;

pub const UDP_HEADER_LEN: usize = 8;
const PROTO_UDP: u8 = 17;
/// Bytes of headers before the payload, per IP family.
pub const IPV4_UDP_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + UDP_HEADER_LEN;
pub const IPV6_UDP_OVERHEAD: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + UDP_HEADER_LEN;

/// One flow's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Flow {
    /// The smallest frame this flow can be written in.
    pub fn min_frame_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => IPV4_UDP_OVERHEAD + 8,
            IpAddr::V6(_) => IPV6_UDP_OVERHEAD + 8,
        }
    }
}

/// The payload byte at `offset` for sequence number `seq`: every byte depends
/// on both, so a corrupted or misdelivered byte shows.
#[inline]
pub fn payload_byte(seq: u64, offset: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(offset as u8).wrapping_add((seq >> 8) as u8)
}

/// Writes a UDP frame of exactly `frame.len()` bytes (at least
/// `flow.min_frame_len()`): the payload starts with `seq` (8 bytes, big endian)
/// followed by [`payload_byte`]s. The families of `src` and `dst` must match.
pub fn write_udp_frame(frame: &mut [u8], dst_mac: MacAddr, src_mac: MacAddr, flow: &Flow, seq: u64) {
    assert!(frame.len() >= flow.min_frame_len(), "frame too short for the flow");
    let payload = &mut frame[flow.min_frame_len() - 8..];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in payload[8..].iter_mut().enumerate() {
        *b = payload_byte(seq, i);
    }
    write_udp_headers(frame, dst_mac, src_mac, flow, seq as u16);
}

/// Writes the Ethernet, IP and UDP headers (with the UDP checksum) of a
/// frame whose payload is already in place after them; `ident` is the IPv4
/// identification.
pub fn write_udp_headers(frame: &mut [u8], dst_mac: MacAddr, src_mac: MacAddr, flow: &Flow, ident: u16) {
    let (ethertype, l3_len) = match flow.src {
        IpAddr::V4(_) => (ethernet::ETHERTYPE_IPV4, ipv4::MIN_HEADER_LEN),
        IpAddr::V6(_) => (ethernet::ETHERTYPE_IPV6, ipv6::HEADER_LEN),
    };
    ethernet::write_header(frame, dst_mac, src_mac, ethertype);
    let ip = &mut frame[ethernet::HEADER_LEN..];
    let udp_len = ip.len() - l3_len;
    {
        let udp_hdr = &mut ip[l3_len..l3_len + UDP_HEADER_LEN];
        udp_hdr[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
        udp_hdr[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
        udp_hdr[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp_hdr[6..8].copy_from_slice(&[0, 0]);
    }
    let pseudo = match (flow.src, flow.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ipv4::write_header(ip, (l3_len + udp_len) as u16, PROTO_UDP, 64, ident, src, dst);
            let mut acc = checksum::sum(0, &src.octets());
            acc = checksum::sum(acc, &dst.octets());
            acc + u32::from(PROTO_UDP) + udp_len as u32
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            ipv6::write_header(ip, udp_len as u16, PROTO_UDP, 64, &src, &dst);
            checksum::ipv6_pseudo_header(&src, &dst, PROTO_UDP, udp_len as u32)
        }
        _ => panic!("flow mixes IPv4 and IPv6"),
    };
    let mut c = checksum::finish(checksum::sum(pseudo, &ip[l3_len..]));
    if c == 0 {
        c = 0xffff; // RFC 768: zero means "no checksum".
    }
    ip[l3_len + 6..l3_len + 8].copy_from_slice(&c.to_be_bytes());
}

/// The sequence number carried by the IP packet of a frame written by [`write_udp_frame`].
pub fn read_seq(ip: &[u8]) -> Option<u64> {
    let at = match ip.first()? >> 4 {
        4 => IPV4_UDP_OVERHEAD,
        6 => IPV6_UDP_OVERHEAD,
        _ => return None,
    } - ethernet::HEADER_LEN;
    Some(u64::from_be_bytes(ip.get(at..at + 8)?.try_into().ok()?))
}

/// The IP packet `ip` as a router forwards it: TTL or hop limit one lower,
/// the IPv4 header checksum computed afresh (what tests expect to see come
/// out of the gateway, written independently of its incremental update).
pub fn forwarded(ip: &[u8]) -> Vec<u8> {
    let mut out = ip.to_vec();
    forward_in_place(&mut out);
    out
}

/// [`forwarded`], in place.
pub fn forward_in_place(ip: &mut [u8]) {
    if ip[0] >> 4 == 4 {
        ip[8] -= 1;
        ipv4::set_checksum(ip);
    } else {
        ip[7] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify_and_carry_their_sequence() {
        let flows = [
            Flow { src: "10.1.0.1".parse().unwrap(), dst: "10.2.0.1".parse().unwrap(), src_port: 1000, dst_port: 2000 },
            Flow { src: "2001:db8::1".parse().unwrap(), dst: "2001:db8:1::1".parse().unwrap(), src_port: 1, dst_port: 2 },
        ];
        for flow in flows {
            for len in [flow.min_frame_len(), 100, 1500] {
                let mut frame = vec![0u8; len];
                write_udp_frame(&mut frame, MacAddr([2; 6]), MacAddr([4; 6]), &flow, 0x0123_4567_89ab);
                assert_eq!(read_seq(&frame[ethernet::HEADER_LEN..]), Some(0x0123_4567_89ab));
                let l3 = &frame[ethernet::HEADER_LEN..];
                let (l4, pseudo) = match flow.src {
                    IpAddr::V4(_) => {
                        let ip = ipv4::Packet::new_checked(l3).expect("valid IPv4");
                        let mut acc = checksum::sum(0, &l3[12..20]);
                        acc += 17 + ip.payload().len() as u32;
                        (ip.payload().to_vec(), acc)
                    }
                    IpAddr::V6(_) => {
                        let ip = ipv6::Packet::new_checked(l3).expect("valid IPv6");
                        (ip.payload().to_vec(), checksum::ipv6_pseudo_header(&ip.src(), &ip.dst(), 17, ip.payload().len() as u32))
                    }
                };
                assert_eq!(checksum::finish(checksum::sum(pseudo, &l4)), 0, "UDP checksum verifies");
            }
        }
    }
}
