//! TCP MSS clamping on SYNs (RFC 6691 §2, RFC 4459 §3.2): a clinic and a
//! server never negotiate segments that the tunnel cannot carry, so they
//! never depend on ICMP reaching them (no PMTU black hole).

use crate::wire::{read_u16, write_u16};

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_MSS: u8 = 2;

/// Lowers the MSS option of a TCP SYN in `ip` (an IPv4 or IPv6 packet, its
/// header already validated) to `max`, fixing the checksum incrementally
/// (RFC 1624). Returns true if it changed the packet.
pub fn clamp(ip: &mut [u8], max: u16) -> bool {
    let Some(tcp) = tcp_offset(ip) else { return false };
    let segment = &mut ip[tcp..];
    if segment.len() < 20 || segment[13] & SYN == 0 {
        return false;
    }
    let header_len = usize::from(segment[12] >> 4) * 4;
    if header_len < 20 || header_len > segment.len() {
        return false;
    }
    let mut at = 20;
    while at < header_len {
        match segment[at] {
            OPTION_END => return false,
            OPTION_NOP => at += 1,
            kind => {
                let Some(&len) = segment.get(at + 1) else { return false };
                let len = usize::from(len);
                if len < 2 || at + len > header_len {
                    return false;
                }
                if kind == OPTION_MSS && len == 4 {
                    let old = read_u16(segment, at + 2);
                    if old <= max {
                        return false;
                    }
                    write_u16(segment, at + 2, max);
                    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
                    let sum = u32::from(!read_u16(segment, 16)) + u32::from(!old) + u32::from(max);
                    let folded = (sum & 0xffff) + (sum >> 16);
                    let folded = (folded & 0xffff) + (folded >> 16);
                    write_u16(segment, 16, !(folded as u16));
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

/// Where the TCP header starts, for unfragmented TCP (first fragments
/// included); None for anything else.
fn tcp_offset(ip: &[u8]) -> Option<usize> {
    match ip.first()? >> 4 {
        4 => {
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            let fragment_offset = read_u16(ip, 6) & 0x1fff;
            (ip.len() >= header_len && ip[9] == TCP && fragment_offset == 0).then_some(header_len)
        }
        6 => (ip.len() >= 40 && ip[6] == TCP).then_some(40),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    /// An IPv4 TCP SYN with options NOP, NOP, MSS `mss`, and a valid checksum.
    fn syn(mss: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 28];
        p[0] = 0x45;
        write_u16(&mut p, 2, 48);
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[192, 0, 2, 1]);
        let t = 20;
        write_u16(&mut p, t, 40000);
        write_u16(&mut p, t + 2, 443);
        p[t + 12] = 7 << 4;
        p[t + 13] = flags;
        p[t + 20..t + 28].copy_from_slice(&[1, 1, 2, 4, (mss >> 8) as u8, mss as u8, 0, 0]);
        let sum = tcp_sum(&p);
        write_u16(&mut p, t + 16, sum);
        p
    }

    fn tcp_sum(p: &[u8]) -> u16 {
        let mut acc = checksum::sum(0, &p[12..20]);
        acc += u32::from(TCP) + (p.len() as u32 - 20);
        let mut seg = p[20..].to_vec();
        seg[16] = 0;
        seg[17] = 0;
        checksum::finish(checksum::sum(acc, &seg))
    }

    #[test]
    fn lowers_a_large_mss_and_keeps_the_checksum_valid() {
        let mut p = syn(1460, SYN);
        assert!(clamp(&mut p, 1360));
        assert_eq!(read_u16(&p, 20 + 24), 1360);
        assert_eq!(read_u16(&p, 20 + 16), tcp_sum(&p));
        let mut p = syn(1460, SYN | 0x10);
        assert!(clamp(&mut p, 1360), "SYN-ACK too");
    }

    #[test]
    fn leaves_small_mss_and_non_syn_alone() {
        let mut p = syn(1200, SYN);
        assert!(!clamp(&mut p, 1360));
        let mut p = syn(1460, 0x10);
        assert!(!clamp(&mut p, 1360));
        let mut p = syn(1460, SYN);
        p[20 + 12] = 15 << 4; // options run past the segment
        assert!(!clamp(&mut p, 1360));
    }
}
