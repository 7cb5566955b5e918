//! Inner packets too large for the tunnel (RFC 4459): an IPv4 packet that may
//! be fragmented is split before encryption (so the far end reassembles
//! plain IP, not ESP); one with DF set, and every IPv6 packet, is answered
//! with an ICMP error (see `icmp_error`).

use crate::wire::{ethernet, ipv4, read_u16, write_u16};

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
    ipv4::set_checksum(rest);
    // The first fragment: shorter, more fragments set.
    write_u16(ip, 2, (header_len + first_data) as u16);
    write_u16(ip, 6, (offset / 8) as u16 | 0x2000);
    ipv4::set_checksum(ip);
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
