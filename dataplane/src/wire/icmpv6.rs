//! ICMPv6 (RFC 4443) as far as Neighbor Discovery needs it (RFC 4861 §4.3, §4.4).

use super::{checksum, read_u16, write_u16, MacAddr, WireError};
use std::net::Ipv6Addr;

pub const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OPTION_SOURCE_LINK_ADDR: u8 = 1;
const OPTION_TARGET_LINK_ADDR: u8 = 2;
/// NS and NA share this layout: type, code, checksum, 4 bytes, target.
const ND_FIXED_LEN: usize = 24;
/// NS or NA carrying one link-layer address option.
pub const ND_MESSAGE_LEN: usize = ND_FIXED_LEN + 8;
pub const NA_FLAG_ROUTER: u8 = 0x80;
pub const NA_FLAG_SOLICITED: u8 = 0x40;
pub const NA_FLAG_OVERRIDE: u8 = 0x20;

/// A validated Neighbor Solicitation or Advertisement.
pub struct NeighborMessage<'a> {
    buf: &'a [u8],
}

impl<'a> NeighborMessage<'a> {
    /// Validates an NS or NA per RFC 4861 §7.1.1 and §7.1.2: hop limit 255,
    /// checksum, code 0, length, a unicast target, and options of non-zero length.
    pub fn new_checked(
        buf: &'a [u8],
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        hop_limit: u8,
    ) -> Result<Self, WireError> {
        if buf.len() < ND_FIXED_LEN {
            return Err(WireError::Truncated);
        }
        if !matches!(buf[0], TYPE_NEIGHBOR_SOLICITATION | TYPE_NEIGHBOR_ADVERTISEMENT)
            || buf[1] != 0
            || hop_limit != 255
        {
            return Err(WireError::Malformed);
        }
        let sum = checksum::ipv6_pseudo_header(src, dst, 58, buf.len() as u32);
        if checksum::finish(checksum::sum(sum, buf)) != 0 {
            return Err(WireError::Checksum);
        }
        let message = NeighborMessage { buf };
        if message.target().is_multicast() {
            return Err(WireError::Malformed);
        }
        let mut options = &buf[ND_FIXED_LEN..];
        while !options.is_empty() {
            let len = usize::from(*options.get(1).ok_or(WireError::Truncated)?) * 8;
            if len == 0 {
                return Err(WireError::Malformed);
            }
            options = options.get(len..).ok_or(WireError::Truncated)?;
        }
        Ok(message)
    }
    pub fn message_type(&self) -> u8 {
        self.buf[0]
    }
    /// The NA flags (router, solicited, override) in the high bits.
    pub fn flags(&self) -> u8 {
        self.buf[4]
    }
    pub fn target(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buf[8..24]).unwrap())
    }
    /// The source (in an NS) or target (in an NA) link-layer address option.
    pub fn link_addr(&self) -> Option<MacAddr> {
        let wanted = if self.message_type() == TYPE_NEIGHBOR_SOLICITATION {
            OPTION_SOURCE_LINK_ADDR
        } else {
            OPTION_TARGET_LINK_ADDR
        };
        let mut options = &self.buf[ND_FIXED_LEN..];
        while options.len() >= 8 {
            let len = usize::from(options[1]) * 8;
            if options[0] == wanted && len == 8 {
                return Some(MacAddr(options[2..8].try_into().unwrap()));
            }
            options = &options[len..];
        }
        None
    }
}

/// Writes an NS or NA with one link-layer address option into
/// `buf[..ND_MESSAGE_LEN]`, checksum included. `flags` is zero for an NS.
pub fn write_neighbor_message(
    buf: &mut [u8],
    message_type: u8,
    flags: u8,
    target: &Ipv6Addr,
    link_addr: MacAddr,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
) {
    buf[0] = message_type;
    buf[1] = 0;
    write_u16(buf, 2, 0);
    buf[4..8].copy_from_slice(&[flags, 0, 0, 0]);
    buf[8..24].copy_from_slice(&target.octets());
    buf[24] = if message_type == TYPE_NEIGHBOR_SOLICITATION {
        OPTION_SOURCE_LINK_ADDR
    } else {
        OPTION_TARGET_LINK_ADDR
    };
    buf[25] = 1;
    buf[26..32].copy_from_slice(&link_addr.0);
    let sum = checksum::ipv6_pseudo_header(src, dst, 58, ND_MESSAGE_LEN as u32);
    let value = checksum::finish(checksum::sum(sum, &buf[..ND_MESSAGE_LEN]));
    write_u16(buf, 2, value);
    debug_assert_eq!(read_u16(buf, 2), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr, Ipv6Addr) {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::1".parse().unwrap();
        (src, crate::wire::ipv6::solicited_node(&target), target)
    }

    #[test]
    fn solicitation_round_trip() {
        let (src, dst, target) = addrs();
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let mut buf = [0u8; ND_MESSAGE_LEN];
        write_neighbor_message(&mut buf, TYPE_NEIGHBOR_SOLICITATION, 0, &target, mac, &src, &dst);
        let ns = NeighborMessage::new_checked(&buf, &src, &dst, 255).unwrap();
        assert_eq!(ns.message_type(), TYPE_NEIGHBOR_SOLICITATION);
        assert_eq!((ns.target(), ns.link_addr()), (target, Some(mac)));
    }

    #[test]
    fn rfc4861_validation() {
        let (src, dst, target) = addrs();
        let mut buf = [0u8; ND_MESSAGE_LEN];
        let flags = NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE;
        write_neighbor_message(&mut buf, TYPE_NEIGHBOR_ADVERTISEMENT, flags, &target, MacAddr::ZERO, &src, &dst);
        assert!(NeighborMessage::new_checked(&buf, &src, &dst, 255).is_ok());
        // Hop limit other than 255 means it crossed a router (§7.1.1).
        assert_eq!(NeighborMessage::new_checked(&buf, &src, &dst, 64).err(), Some(WireError::Malformed));
        let mut corrupt = buf;
        corrupt[10] ^= 1;
        assert_eq!(NeighborMessage::new_checked(&corrupt, &src, &dst, 255).err(), Some(WireError::Checksum));
        // A zero-length option must be rejected (it would loop forever).
        let mut zero_option = buf;
        zero_option[25] = 0;
        write_u16(&mut zero_option, 2, 0);
        let sum = checksum::ipv6_pseudo_header(&src, &dst, 58, ND_MESSAGE_LEN as u32);
        let c = checksum::finish(checksum::sum(sum, &zero_option));
        write_u16(&mut zero_option, 2, c);
        assert_eq!(NeighborMessage::new_checked(&zero_option, &src, &dst, 255).err(), Some(WireError::Malformed));
        assert_eq!(NeighborMessage::new_checked(&buf[..23], &src, &dst, 255).err(), Some(WireError::Truncated));
    }
}
