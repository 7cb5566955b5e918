//! ICMP errors the gateway sends, as a router: "fragmentation needed" /
//! "packet too big" for packets too large for a tunnel (RFC 1191, RFC 8201),
//! and "time exceeded" when a TTL or hop limit runs out (RFC 792, RFC 4443).
//! Each is written over the packet it answers, quoting as much of it as the
//! RFCs allow, and rate-limited per worker.

use super::{Action, Counter, DropReason, Forwarder};
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

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// The packet does not fit; `mtu` is the largest that does.
    TooBig { mtu: usize },
    TimeExceeded,
}

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
    /// Answers a packet that came in on `side` with an ICMP error, rewritten
    /// in place and sent back where it came from. When no error may be sent
    /// (rate limit, RFC 1812 §4.3.2.7 exceptions) the packet is dropped.
    pub(super) fn icmp_error<B: PacketBuf>(&mut self, side: Side, buf: &mut B, error: IcmpError) -> Action {
        let dropped = match error {
            IcmpError::TooBig { .. } => DropReason::TooBigForTunnel,
            IcmpError::TimeExceeded => DropReason::TtlExceeded,
        };
        if !deserves_icmp_error(&buf.data()[ethernet::HEADER_LEN..]) || !self.icmp_limiter.allow(self.now_ms) {
            return Action::Drop(dropped);
        }
        let frame = buf.data();
        let reply_to = ethernet::Frame::new_checked(frame).expect("parsed before").src();
        let inner = &frame[ethernet::HEADER_LEN..];
        let interface = &self.interfaces[side as usize];
        let written = if inner[0] >> 4 == 4 {
            let sender = ipv4::Packet::new_checked(inner).expect("parsed before").src();
            let Some(source) = interface.source_ipv4(sender) else { return Action::Drop(dropped) };
            let quote = inner.len().min(ICMPV4_MAX - ipv4::MIN_HEADER_LEN - ICMPV4_HEADER_LEN);
            let header = ipv4::MIN_HEADER_LEN + ICMPV4_HEADER_LEN;
            if !buf.prepend(header) || !buf.set_len(ethernet::HEADER_LEN + header + quote) {
                return Action::Drop(DropReason::NoBuffer);
            }
            let packet = &mut buf.data_mut()[ethernet::HEADER_LEN..];
            self.ipv4_ident = self.ipv4_ident.wrapping_add(1);
            ipv4::write_header(packet, (header + quote) as u16, 1, 64, self.ipv4_ident, source, sender);
            let icmp = &mut packet[ipv4::MIN_HEADER_LEN..];
            icmp[..8].copy_from_slice(&[0; 8]);
            match error {
                // Type 3 code 4: fragmentation needed and DF set, with the next-hop MTU (RFC 1191 §4).
                IcmpError::TooBig { mtu } => {
                    icmp[..2].copy_from_slice(&[3, 4]);
                    write_u16(icmp, 6, mtu.min(0xffff) as u16);
                }
                // Type 11 code 0: time to live exceeded in transit (RFC 792).
                IcmpError::TimeExceeded => icmp[0] = 11,
            }
            let sum = checksum::checksum(icmp);
            write_u16(icmp, 2, sum);
            ethernet::ETHERTYPE_IPV4
        } else {
            let sender = ipv6::Packet::new_checked(inner).expect("parsed before").src();
            let Some(source) = interface.source_ipv6(sender) else { return Action::Drop(dropped) };
            let quote = inner.len().min(ICMPV6_MAX - ipv6::HEADER_LEN - ICMPV6_HEADER_LEN);
            let header = ipv6::HEADER_LEN + ICMPV6_HEADER_LEN;
            if !buf.prepend(header) || !buf.set_len(ethernet::HEADER_LEN + header + quote) {
                return Action::Drop(DropReason::NoBuffer);
            }
            let packet = &mut buf.data_mut()[ethernet::HEADER_LEN..];
            let len = ICMPV6_HEADER_LEN + quote;
            ipv6::write_header(packet, len as u16, ipv6::NEXT_HEADER_ICMPV6, 64, &source, &sender);
            let icmp = &mut packet[ipv6::HEADER_LEN..];
            icmp[..8].copy_from_slice(&[0; 8]);
            match error {
                // Type 2: packet too big, with the MTU (RFC 4443 §3.2).
                IcmpError::TooBig { mtu } => {
                    icmp[0] = 2;
                    icmp[4..8].copy_from_slice(&(mtu as u32).to_be_bytes());
                }
                // Type 3 code 0: hop limit exceeded in transit (RFC 4443 §3.3).
                IcmpError::TimeExceeded => icmp[0] = 3,
            }
            let acc = checksum::ipv6_pseudo_header(&source, &sender, ipv6::NEXT_HEADER_ICMPV6, len as u32);
            let sum = checksum::finish(checksum::sum(acc, icmp));
            write_u16(icmp, 2, sum);
            ethernet::ETHERTYPE_IPV6
        };
        ethernet::write_header(buf.data_mut(), reply_to, self.macs[side as usize], written);
        self.counters.add(
            match error {
                IcmpError::TooBig { .. } => Counter::IcmpTooBigSent,
                IcmpError::TimeExceeded => Counter::IcmpTimeExceededSent,
            },
            1,
        );
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

