//! IPv6 fixed headers (RFC 8200 §3).

use super::{read_u16, WireError};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;
pub const NEXT_HEADER_ICMPV6: u8 = 58;
pub const NEXT_HEADER_FRAGMENT: u8 = 44;

/// A view of an IPv6 packet whose fixed header has been validated.
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version and that the payload length fits the buffer (which
    /// may carry link-layer padding after the packet).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        if b.len() < HEADER_LEN + usize::from(read_u16(b, 4)) {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }
    pub fn payload_len(&self) -> usize {
        usize::from(read_u16(self.buf.as_ref(), 4))
    }
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buf.as_ref()[8..24]).unwrap())
    }
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buf.as_ref()[24..40]).unwrap())
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }
}

/// Lowers the hop limit by one as a router must (RFC 8200 §3); false, and
/// nothing changed, if it would reach zero.
#[inline]
pub fn decrement_hop_limit(ip: &mut [u8]) -> bool {
    if ip[7] <= 1 {
        return false;
    }
    ip[7] -= 1;
    true
}

/// Writes a fixed header (traffic class and flow label zero) into `buf[..40]`.
pub fn write_header(
    buf: &mut [u8],
    payload_len: u16,
    next_header: u8,
    hop_limit: u8,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
) {
    buf[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    buf[4..6].copy_from_slice(&payload_len.to_be_bytes());
    buf[6] = next_header;
    buf[7] = hop_limit;
    buf[8..24].copy_from_slice(&src.octets());
    buf[24..40].copy_from_slice(&dst.octets());
}

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1).
pub fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut buf = [0u8; 48];
        write_header(&mut buf, 8, 17, 64, &src, &dst);
        let ip = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((ip.src(), ip.dst(), ip.next_header(), ip.hop_limit()), (src, dst, 17, 64));
        assert_eq!(ip.payload().len(), 8);
        assert_eq!(Packet::new_checked(&buf[..47]).err(), Some(WireError::Truncated));
        buf[0] = 0x40;
        assert_eq!(Packet::new_checked(&buf[..]).err(), Some(WireError::Malformed));
    }

    #[test]
    fn solicited_node_address() {
        let addr: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
        assert_eq!(solicited_node(&addr), "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
    }
}
