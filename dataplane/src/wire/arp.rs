//! ARP for IPv4 over Ethernet (RFC 826).

use super::{read_u16, write_u16, MacAddr, WireError};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet; other hardware or protocol types
/// are rejected as malformed (we speak ARP only on Ethernet, for IPv4).
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(b, 0) != 1 || read_u16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buf })
    }
    pub fn operation(&self) -> u16 {
        read_u16(self.buf.as_ref(), 6)
    }
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[8..14].try_into().unwrap())
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }
    pub fn target_mac(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[18..24].try_into().unwrap())
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

/// Writes an Ethernet/IPv4 ARP packet into `buf[..PACKET_LEN]`.
pub fn write(
    buf: &mut [u8],
    operation: u16,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) {
    write_u16(buf, 0, 1);
    write_u16(buf, 2, 0x0800);
    buf[4] = 6;
    buf[5] = 4;
    write_u16(buf, 6, operation);
    buf[8..14].copy_from_slice(&sender_mac.0);
    buf[14..18].copy_from_slice(&sender_ip.octets());
    buf[18..24].copy_from_slice(&target_mac.0);
    buf[24..28].copy_from_slice(&target_ip.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let mut buf = [0u8; PACKET_LEN];
        let mac = MacAddr([2, 0, 0, 0, 0, 7]);
        write(&mut buf, OP_REQUEST, mac, Ipv4Addr::new(10, 0, 0, 7), MacAddr::ZERO, Ipv4Addr::new(10, 0, 0, 1));
        let arp = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(arp.operation(), OP_REQUEST);
        assert_eq!((arp.sender_mac(), arp.sender_ip()), (mac, Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!((arp.target_mac(), arp.target_ip()), (MacAddr::ZERO, Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(Packet::new_checked(&buf[..27]).err(), Some(WireError::Truncated));
        buf[5] = 16;
        assert_eq!(Packet::new_checked(&buf[..]).err(), Some(WireError::Malformed));
    }
}
