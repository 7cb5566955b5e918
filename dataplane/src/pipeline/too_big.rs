//! Inner packets too large for the tunnel (RFC 4459): an IPv4 packet that may
//! be fragmented is split before encryption (so the far end reassembles
//! plain IP, not ESP); one with DF set, and every IPv6 packet, is answered
//! with ICMP "fragmentation needed" (RFC 1191) or "packet too big" (RFC 8201)
//! carrying the MTU that fits, so the sender's path MTU discovery adapts.

use super::{Action, DropReason, Forwarder};
use crate::port::PacketBuf;
use crate::wire::{checksum, ethernet, ipv4, ipv6, read_u16, write_u16};
use crate::Side;

const ICMPV4_HEADER_LEN: usize = 8;
const ICMPV6_HEADER_LEN: usize = 8;
/// An ICMPv4 error quotes as much as fits in 576 bytes (RFC 1812 §4.3.2.3).
const ICMPV4_MAX: usize = 576;
/// An ICMPv6 error quotes as much as fits in the minimum MTU (RFC 4443 §2.4(c)).
const ICMPV6_MAX: usize = 1280;
/// ICMP errors one worker sends per second at most (RFC 1812 §4.3.2.8, RFC 4443 §2.4(f)).
pub const ICMP_ERRORS_PER_SECOND: u32 = 1000;

/// A simple per-worker rate limit on ICMP errors: a budget per second.
#[derive(Debug, Default)]
pub struct IcmpLimiter {
    second: u64,
    sent: u32,
}

impl IcmpLimiter {
    fn allow(&mut self, now_ms: u64) -> bool {
        if now_ms / 1000 != self.second {
            self.second = now_ms / 1000;
            self.sent = 0;
        }
        self.sent += 1;
        self.sent <= ICMP_ERRORS_PER_SECOND
    }
}

impl Forwarder {
    /// Answers a packet from the inside that is too big for its tunnel with
    /// an ICMP error, rewritten in place and sent back where it came from.
    pub(super) fn icmp_too_big<B: PacketBuf>(&mut self, buf: &mut B, mtu: usize) -> Action {
        if !deserves_icmp_error(&buf.data()[ethernet::HEADER_LEN..]) || !self.icmp_limiter.allow(self.now_ms) {
            return Action::Drop(DropReason::TooBigForTunnel);
        }
        let frame = buf.data();
        let reply_to = ethernet::Frame::new_checked(frame).expect("parsed before").src();
        let inner = &frame[ethernet::HEADER_LEN..];
        let inside = &self.interfaces[Side::Inside as usize];
        let written = if inner[0] >> 4 == 4 {
            let sender = ipv4::Packet::new_checked(inner).expect("parsed before").src();
            let Some(source) = inside.source_ipv4(sender) else { return Action::Drop(DropReason::TooBigForTunnel) };
            let quote = inner.len().min(ICMPV4_MAX - ipv4::MIN_HEADER_LEN - ICMPV4_HEADER_LEN);
            let header = ipv4::MIN_HEADER_LEN + ICMPV4_HEADER_LEN;
            if !buf.prepend(header) || !buf.set_len(ethernet::HEADER_LEN + header + quote) {
                return Action::Drop(DropReason::NoBuffer);
            }
            let packet = &mut buf.data_mut()[ethernet::HEADER_LEN..];
            self.ipv4_ident = self.ipv4_ident.wrapping_add(1);
            ipv4::write_header(packet, (header + quote) as u16, 1, 64, self.ipv4_ident, source, sender);
            let icmp = &mut packet[ipv4::MIN_HEADER_LEN..];
            // Type 3 code 4: fragmentation needed and DF set, with the next-hop MTU (RFC 1191 §4).
            icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
            write_u16(icmp, 6, mtu.min(0xffff) as u16);
            let sum = checksum::checksum(icmp);
            write_u16(icmp, 2, sum);
            ethernet::ETHERTYPE_IPV4
        } else {
            let sender = ipv6::Packet::new_checked(inner).expect("parsed before").src();
            let Some(source) = inside.source_ipv6(sender) else { return Action::Drop(DropReason::TooBigForTunnel) };
            let quote = inner.len().min(ICMPV6_MAX - ipv6::HEADER_LEN - ICMPV6_HEADER_LEN);
            let header = ipv6::HEADER_LEN + ICMPV6_HEADER_LEN;
            if !buf.prepend(header) || !buf.set_len(ethernet::HEADER_LEN + header + quote) {
                return Action::Drop(DropReason::NoBuffer);
            }
            let packet = &mut buf.data_mut()[ethernet::HEADER_LEN..];
            let len = ICMPV6_HEADER_LEN + quote;
            ipv6::write_header(packet, len as u16, ipv6::NEXT_HEADER_ICMPV6, 64, &source, &sender);
            let icmp = &mut packet[ipv6::HEADER_LEN..];
            // Type 2: packet too big, with the MTU (RFC 4443 §3.2).
            icmp[..8].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
            icmp[4..8].copy_from_slice(&(mtu as u32).to_be_bytes());
            let acc = checksum::ipv6_pseudo_header(&source, &sender, ipv6::NEXT_HEADER_ICMPV6, len as u32);
            let sum = checksum::finish(checksum::sum(acc, icmp));
            write_u16(icmp, 2, sum);
            ethernet::ETHERTYPE_IPV6
        };
        ethernet::write_header(buf.data_mut(), reply_to, self.macs[Side::Inside as usize], written);
        self.counters.add(super::Counter::IcmpTooBigSent, 1);
        Action::Reply
    }
}

/// Whether a packet may be answered with an ICMP error at all: not an ICMP
/// error itself, not a later fragment, not from an address that cannot be
/// answered (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)).
fn deserves_icmp_error(ip: &[u8]) -> bool {
    if ip[0] >> 4 == 4 {
        let Ok(p) = ipv4::Packet::new_checked(ip) else { return false };
        let src = p.src();
        let icmp_error = p.protocol() == 1 && matches!(p.payload().first(), Some(3 | 4 | 5 | 11 | 12));
        let later_fragment = read_u16(ip, 6) & 0x1fff != 0;
        !(icmp_error || later_fragment || src.is_unspecified() || src.is_broadcast() || src.is_multicast())
    } else {
        let Ok(p) = ipv6::Packet::new_checked(ip) else { return false };
        let src = p.src();
        // ICMPv6 errors are types 0 to 127 (RFC 4443 §2.1).
        let icmp_error = p.next_header() == ipv6::NEXT_HEADER_ICMPV6 && p.payload().first().is_some_and(|&t| t < 128);
        !(icmp_error || src.is_unspecified() || src.is_multicast())
    }
}

/// True if an IPv4 packet may be fragmented (DF clear). IPv6 never may be, by a router.
pub fn may_fragment(inner: &[u8]) -> bool {
    inner[0] >> 4 == 4 && read_u16(inner, 6) & 0x4000 == 0
}

/// Splits the IPv4 packet in `frame` (after its Ethernet header) at a
/// fragment boundary so that its first part is at most `max_inner` bytes:
/// the frame keeps the first fragment, and the rest is written as a second
/// IPv4 packet into `rest` (its bytes from the IP header on). Returns the
/// length of the first fragment's IP packet, or None if it cannot be split.
/// The rest may itself be too big, and is then split again the same way.
pub fn split_ipv4(frame: &mut [u8], max_inner: usize, rest: &mut Vec<u8>) -> Option<usize> {
    let ip = &mut frame[ethernet::HEADER_LEN..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    // Options would have to be sorted into copied and not copied (RFC 791):
    // packets with options are not split (they are rare, and get dropped).
    if header_len != ipv4::MIN_HEADER_LEN {
        return None;
    }
    let total = usize::from(read_u16(ip, 2));
    let flags_offset = read_u16(ip, 6);
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = usize::from(flags_offset & 0x1fff) * 8;
    // Fragment data comes in multiples of 8 bytes (RFC 791).
    let first_data = max_inner.checked_sub(header_len)? / 8 * 8;
    if first_data == 0 || header_len + first_data >= total {
        return None;
    }
    let rest_data = total - header_len - first_data;
    let rest_offset = (offset + first_data) / 8;
    // A fragment offset has 13 bits (RFC 791); a crafted one near the top would spill.
    if offset + total - header_len > 0xffff || rest_offset > 0x1fff {
        return None;
    }
    rest.clear();
    rest.extend_from_slice(&ip[..ipv4::MIN_HEADER_LEN]);
    rest.extend_from_slice(&ip[header_len + first_data..total]);
    write_u16(rest, 2, (ipv4::MIN_HEADER_LEN + rest_data) as u16);
    write_u16(rest, 6, (rest_offset as u16) | if more_fragments { 0x2000 } else { 0 });
    write_u16(rest, 10, 0);
    let sum = checksum::checksum(&rest[..ipv4::MIN_HEADER_LEN]);
    write_u16(rest, 10, sum);
    // The first fragment: shorter, more fragments set.
    write_u16(ip, 2, (header_len + first_data) as u16);
    write_u16(ip, 6, (offset / 8) as u16 | 0x2000);
    write_u16(ip, 10, 0);
    let sum = checksum::checksum(&ip[..header_len]);
    write_u16(ip, 10, sum);
    Some(header_len + first_data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;

    #[test]
    fn splits_again_until_every_part_fits_and_offsets_add_up() {
        let total = 1000;
        let mut frame = vec![0u8; 14 + total];
        ipv4::write_header(&mut frame[14..], total as u16, 17, 64, 7, "10.0.0.7".parse().unwrap(), "203.0.113.5".parse().unwrap());
        frame[14 + 6] = 0; // DF clear
        for (i, b) in frame[34..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let original = frame[34..].to_vec();
        let mut parts = Vec::new();
        let mut rest = Vec::new();
        let mut current = frame;
        loop {
            match split_ipv4(&mut current, 300, &mut rest) {
                Some(first) => {
                    parts.push(current[14..14 + first].to_vec());
                    current = [vec![0u8; 14], rest.clone()].concat();
                }
                None => {
                    parts.push(current[14..].to_vec());
                    break;
                }
            }
        }
        assert_eq!(parts.len(), 4, "980 bytes of data in parts of 280");
        let mut data = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let ip = ipv4::Packet::new_checked(&p[..]).expect("valid header and checksum");
            assert!(ip.total_len() <= 300);
            let flags = read_u16(p, 6);
            assert_eq!(usize::from(flags & 0x1fff) * 8, data.len());
            assert_eq!(flags & 0x2000 != 0, i + 1 < parts.len());
            data.extend_from_slice(ip.payload());
        }
        assert_eq!(data, original);
    }
}
