//! Interface addresses with prefix lengths (`192.0.2.1/24`, `2001:db8::1/64`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address on an interface and the prefix of its connected network.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr<A> {
    pub addr: A,
    pub prefix_len: u8,
}

pub type Ipv4Cidr = Cidr<Ipv4Addr>;
pub type Ipv6Cidr = Cidr<Ipv6Addr>;

impl Ipv4Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(ip) & mask
    }
}

impl Ipv6Cidr {
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len)).unwrap_or(0);
        u128::from(self.addr) & mask == u128::from(ip) & mask
    }
}

fn parse<A: FromStr>(s: &str, max_len: u8) -> Result<Cidr<A>, String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("'{s}' needs a prefix length, as in 192.0.2.1/24"))?;
    let addr = addr.parse().map_err(|_| format!("'{addr}' is not an IP address of the expected family"))?;
    let prefix_len: u8 = len.parse().map_err(|_| format!("'{len}' is not a prefix length"))?;
    if prefix_len > max_len {
        return Err(format!("prefix length {prefix_len} is longer than {max_len}"));
    }
    Ok(Cidr { addr, prefix_len })
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s, 32)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s, 128)
    }
}

impl<A: fmt::Display> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl<A: fmt::Display> fmt::Debug for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de, A> serde::Deserialize<'de> for Cidr<A>
where
    Cidr<A>: FromStr<Err = String>,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl<A: fmt::Display> serde::Serialize for Cidr<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_parse() {
        let net: Ipv4Cidr = "192.0.2.1/24".parse().unwrap();
        assert!(net.contains("192.0.2.200".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        let any: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
        let net6: Ipv6Cidr = "2001:db8::1/64".parse().unwrap();
        assert!(net6.contains("2001:db8::ffff".parse().unwrap()));
        assert!(!net6.contains("2001:db8:1::1".parse().unwrap()));
        let host6: Ipv6Cidr = "2001:db8::1/128".parse().unwrap();
        assert!(!host6.contains("2001:db8::2".parse().unwrap()));
        assert!("192.0.2.1".parse::<Ipv4Cidr>().is_err());
        assert!("192.0.2.1/33".parse::<Ipv4Cidr>().is_err());
        assert!("2001:db8::1/24".parse::<Ipv4Cidr>().is_err());
    }
}
