//! Traffic selectors (RFC 7296 §3.13) and their narrowing to what a tenant
//! may use (§2.9): a clinic proposes ranges, and the responder answers with
//! their intersection with the tenant's declared subnets.

use super::wire::WireError;
use sekisho_dataplane::addr::Ipv4Cidr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TS_IPV4_ADDR_RANGE: u8 = 7;
pub const TS_IPV6_ADDR_RANGE: u8 = 8;

/// One selector: an address range, a protocol (0: any) and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    pub protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

/// Reads the selectors of a TSi or TSr payload body.
pub fn parse(body: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
    let count = usize::from(*body.first().ok_or(WireError::InvalidSyntax("a TS payload without its count"))?);
    let mut rest = body.get(4..).ok_or(WireError::InvalidSyntax("a TS payload shorter than its header"))?;
    let mut selectors = Vec::with_capacity(count);
    for _ in 0..count {
        let h = rest.first_chunk::<8>().ok_or(WireError::InvalidSyntax("a selector past the end"))?;
        let length = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let (start, end) = match (h[0], length) {
            (TS_IPV4_ADDR_RANGE, 16) if rest.len() >= 16 => {
                let a = |at: usize| IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&rest[at..at + 4]).expect("4 bytes")));
                (a(8), a(12))
            }
            (TS_IPV6_ADDR_RANGE, 40) if rest.len() >= 40 => {
                let a = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&rest[at..at + 16]).expect("16 bytes")));
                (a(8), a(24))
            }
            _ => return Err(WireError::InvalidSyntax("a selector of unknown type or wrong length")),
        };
        selectors.push(TrafficSelector { protocol: h[1], start_port: u16::from_be_bytes([h[4], h[5]]), end_port: u16::from_be_bytes([h[6], h[7]]), start, end });
        rest = &rest[length..];
    }
    if !rest.is_empty() {
        return Err(WireError::InvalidSyntax("bytes after the last selector"));
    }
    Ok(selectors)
}

/// Writes selectors as a TS payload body into `out`; its length, or None if it does not fit.
pub fn write(out: &mut [u8], selectors: &[TrafficSelector]) -> Option<usize> {
    if selectors.len() > 255 {
        return None;
    }
    let mut at = 4;
    out.get_mut(..4)?.copy_from_slice(&[selectors.len() as u8, 0, 0, 0]);
    for ts in selectors {
        let (kind, len) = if ts.start.is_ipv4() { (TS_IPV4_ADDR_RANGE, 16) } else { (TS_IPV6_ADDR_RANGE, 40) };
        let s = out.get_mut(at..at + len)?;
        s[..8].copy_from_slice(&[kind, ts.protocol, 0, len as u8, (ts.start_port >> 8) as u8, ts.start_port as u8, (ts.end_port >> 8) as u8, ts.end_port as u8]);
        match (ts.start, ts.end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                s[8..12].copy_from_slice(&a.octets());
                s[12..16].copy_from_slice(&b.octets());
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                s[8..24].copy_from_slice(&a.octets());
                s[24..40].copy_from_slice(&b.octets());
            }
            _ => return None,
        }
        at += len;
    }
    Some(at)
}

/// Narrows proposed selectors to `allowed` subnets (§2.9): each proposed
/// IPv4 range intersected with each subnet, protocol and ports kept.
/// Empty if nothing is left: the answer is then TS_UNACCEPTABLE.
pub fn narrow(proposed: &[TrafficSelector], allowed: &[Ipv4Cidr]) -> Vec<TrafficSelector> {
    let mut narrowed = Vec::new();
    for ts in proposed {
        let (IpAddr::V4(start), IpAddr::V4(end)) = (ts.start, ts.end) else { continue };
        let (start, end) = (u32::from(start), u32::from(end));
        for subnet in allowed {
            let mask = u32::MAX.checked_shl(32 - u32::from(subnet.prefix_len)).unwrap_or(0);
            let (low, high) = (u32::from(subnet.addr) & mask, u32::from(subnet.addr) | !mask);
            let (from, to) = (start.max(low), end.min(high));
            if from <= to {
                narrowed.push(TrafficSelector { start: IpAddr::V4(from.into()), end: IpAddr::V4(to.into()), ..*ts });
            }
        }
    }
    narrowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(start: &str, end: &str) -> TrafficSelector {
        TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: start.parse().unwrap(), end: end.parse().unwrap() }
    }

    #[test]
    fn selectors_read_back_what_is_written() {
        let v6 = TrafficSelector { protocol: 6, start_port: 443, end_port: 443, start: "2001:db8::".parse().unwrap(), end: "2001:db8::ffff".parse().unwrap() };
        let selectors = [v4("192.168.1.0", "192.168.1.255"), v6];
        let mut out = [0u8; 128];
        let len = write(&mut out, &selectors).unwrap();
        assert_eq!(len, 4 + 16 + 40);
        assert_eq!(&out[4..12], &[TS_IPV4_ADDR_RANGE, 0, 0, 16, 0, 0, 0xff, 0xff]);
        assert_eq!(parse(&out[..len]).unwrap(), selectors);
        for cut in 0..len {
            assert!(parse(&out[..cut]).is_err(), "{cut}");
        }
        let mut wrong_length = out[..len].to_vec();
        wrong_length[7] = 20;
        assert!(parse(&wrong_length).is_err());
    }

    #[test]
    fn narrowing_keeps_only_the_tenants_subnets() {
        let subnets: Vec<Ipv4Cidr> = vec!["192.168.1.0/24".parse().unwrap(), "10.9.0.0/16".parse().unwrap()];
        // The clinic asks for everything: it gets its subnets.
        assert_eq!(narrow(&[v4("0.0.0.0", "255.255.255.255")], &subnets), vec![v4("192.168.1.0", "192.168.1.255"), v4("10.9.0.0", "10.9.255.255")]);
        // A range across the subnet's edge is cut to it; ports and protocol stay.
        let mut partial = v4("192.168.0.200", "192.168.1.9");
        partial.protocol = 17;
        let narrowed = narrow(&[partial], &subnets);
        assert_eq!(narrowed.len(), 1);
        assert_eq!((narrowed[0].start, narrowed[0].end, narrowed[0].protocol), ("192.168.1.0".parse().unwrap(), "192.168.1.9".parse().unwrap(), 17));
        // Someone else's addresses: nothing (TS_UNACCEPTABLE).
        assert!(narrow(&[v4("172.16.0.0", "172.16.255.255")], &subnets).is_empty());
    }
}
