//! Ethernet II frames (IEEE 802.3 with an EtherType).

use super::{read_u16, write_u16, WireError};
use std::fmt;
use std::str::FromStr;

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group bit set: broadcast or multicast (IEEE 802 §8.2).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The Ethernet group address for an IPv6 multicast address (RFC 2464 §7).
    pub fn ipv6_multicast(addr: &std::net::Ipv6Addr) -> MacAddr {
        let o = addr.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| format!("MAC address '{s}' has fewer than 6 bytes"))?;
            if part.len() != 2 {
                return Err(format!("MAC address '{s}': '{part}' is not two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("MAC address '{s}': '{part}' is not hex"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC address '{s}' has more than 6 bytes"));
        }
        Ok(MacAddr(out))
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A view of an Ethernet II frame.
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buf })
    }
    pub fn dst(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[0..6].try_into().unwrap())
    }
    pub fn src(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[6..12].try_into().unwrap())
    }
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buf.as_ref(), 12)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buf.as_mut()[0..6].copy_from_slice(&mac.0);
    }
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buf.as_mut()[6..12].copy_from_slice(&mac.0);
    }
    pub fn set_ethertype(&mut self, ethertype: u16) {
        write_u16(self.buf.as_mut(), 12, ethertype);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

/// Writes an Ethernet header at the start of `buf` (at least `HEADER_LEN` long).
pub fn write_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    write_u16(buf, 12, ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_display_round_trip() {
        let mac: MacAddr = "02:00:5e:10:AB:ff".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(mac.to_string(), "02:00:5e:10:ab:ff");
        assert!("02:00:5e:10:ab".parse::<MacAddr>().is_err());
        assert!("02:00:5e:10:ab:ff:00".parse::<MacAddr>().is_err());
        assert!("02:00:5e:10:ab:fg".parse::<MacAddr>().is_err());
    }

    #[test]
    fn frame_fields() {
        let mut buf = [0u8; 20];
        write_header(&mut buf, MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), ETHERTYPE_ARP);
        let frame = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(frame.dst(), MacAddr::BROADCAST);
        assert!(frame.dst().is_multicast());
        assert_eq!(frame.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(frame.ethertype(), ETHERTYPE_ARP);
        assert_eq!(frame.payload().len(), 6);
        assert_eq!(Frame::new_checked(&buf[..13]).err(), Some(WireError::Truncated));
    }

    #[test]
    fn ipv6_multicast_mac() {
        let addr: std::net::Ipv6Addr = "ff02::1:ff00:1234".parse().unwrap();
        assert_eq!(MacAddr::ipv6_multicast(&addr).to_string(), "33:33:ff:00:12:34");
    }
}
