//! IPv4 headers (RFC 791), validated as a router must (RFC 1812 §5.2.2).

use super::{checksum, read_u16, WireError};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet whose header has been validated.
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version, header length, total length against the buffer (which may
    /// carry link-layer padding after the packet) and the header checksum.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        if b[0] >> 4 != 4 || header_len < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total_len = usize::from(read_u16(b, 2));
        if b.len() < header_len || b.len() < total_len {
            return Err(WireError::Truncated);
        }
        if total_len < header_len {
            return Err(WireError::Malformed);
        }
        if checksum::checksum(&b[..header_len]) != 0 {
            return Err(WireError::Checksum);
        }
        Ok(Packet { buf })
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.buf.as_ref(), 2))
    }
    /// True for any fragment: more-fragments set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buf.as_ref(), 6) & 0x3fff != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len()]
    }
}

/// Lowers the TTL of the packet in `ip` by one as a router must (RFC 1812
/// §5.3.1), fixing the header checksum incrementally (RFC 1624 eqn. 3).
/// False, and nothing changed, if the TTL would reach zero.
#[inline]
pub fn decrement_ttl(ip: &mut [u8]) -> bool {
    let ttl = ip[8];
    if ttl <= 1 {
        return false;
    }
    ip[8] = ttl - 1;
    // The TTL is the high byte of the word at 8: the word drops by 0x0100.
    let old = u16::from_be_bytes([ttl, ip[9]]);
    let sum = u32::from(!read_u16(ip, 10)) + u32::from(!old) + u32::from(old - 0x0100);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

/// Computes the header checksum of the IPv4 packet in `ip` and writes it.
pub fn set_checksum(ip: &mut [u8]) {
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..header_len]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Writes a 20-byte header (no options, DF set) into `buf[..20]`, checksum included.
pub fn write_header(buf: &mut [u8], total_len: u16, protocol: u8, ttl: u8, ident: u16, src: Ipv4Addr, dst: Ipv4Addr) {
    buf[0] = 0x45;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&total_len.to_be_bytes());
    buf[4..6].copy_from_slice(&ident.to_be_bytes());
    buf[6..8].copy_from_slice(&[0x40, 0]);
    buf[8] = ttl;
    buf[9] = protocol;
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    set_checksum(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 28] {
        let mut p = [0u8; 28];
        p[..20].copy_from_slice(&[
            0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 192, 0, 2, 7,
        ]);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn parses_valid_header() {
        let p = header();
        let ip = Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ip.dst(), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!((ip.protocol(), ip.ttl(), ip.payload().len()), (17, 64, 8));
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid_and_stops_at_one() {
        for ttl in [2u8, 64, 255] {
            let mut p = header();
            p[8] = ttl;
            set_checksum(&mut p);
            assert!(decrement_ttl(&mut p));
            assert_eq!(p[8], ttl - 1);
            assert_eq!(checksum::checksum(&p[..20]), 0, "ttl {ttl}");
        }
        let mut p = header();
        p[8] = 1;
        assert!(!decrement_ttl(&mut p));
        assert_eq!(p[8], 1);
    }

    #[test]
    fn rejects_what_a_router_must() {
        let p = header();
        assert_eq!(Packet::new_checked(&p[..19]).err(), Some(WireError::Truncated));
        assert_eq!(Packet::new_checked(&p[..27]).err(), Some(WireError::Truncated));
        let mut bad = p;
        bad[0] = 0x65;
        assert_eq!(Packet::new_checked(&bad[..]).err(), Some(WireError::Malformed));
        let mut bad = p;
        bad[0] = 0x44;
        assert_eq!(Packet::new_checked(&bad[..]).err(), Some(WireError::Malformed));
        let mut bad = p;
        bad[8] = 63;
        assert_eq!(Packet::new_checked(&bad[..]).err(), Some(WireError::Checksum));
        // Link-layer padding after the packet is allowed.
        let mut padded = [0u8; 60];
        padded[..28].copy_from_slice(&p);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 8);
    }
}
