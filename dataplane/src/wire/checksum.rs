//! The Internet checksum (RFC 1071) and the IPv6 pseudo-header (RFC 8200 §8.1).

use std::net::Ipv6Addr;

/// Adds `data` as big-endian 16-bit words to a 32-bit running sum
/// (an odd last byte is padded with zero, RFC 1071 §4.1).
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for word in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([word[0], word[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds the carries and complements: the value to write into a header.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Checksum of one buffer, as written in an IPv4 header.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Sum of the IPv6 pseudo-header for an upper-layer packet of `len` bytes.
pub fn ipv6_pseudo_header(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc = acc.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    acc.wrapping_add(u32::from(next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0x2ddf0, folded 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(0, &data)), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A widely published example header with checksum 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(0, &[0x12]), 0x1200);
        assert_eq!(sum(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
