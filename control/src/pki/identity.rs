//! Identification payloads (RFC 7296 §3.5) and whether a certificate
//! vouches for one (§3.5 and RFC 4945 §3.1: the ID must match the
//! subject or a subjectAltName of the end-entity certificate).

use crate::ike::wire::WireError;
use openssl::x509::{X509Name, X509NameRef, X509Ref};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const ID_IPV4_ADDR: u8 = 1;
pub const ID_FQDN: u8 = 2;
pub const ID_RFC822_ADDR: u8 = 3;
pub const ID_IPV6_ADDR: u8 = 5;
pub const ID_DER_ASN1_DN: u8 = 9;

/// An identity as an ID payload carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Ipv4(Ipv4Addr),
    Fqdn(String),
    Email(String),
    Ipv6(Ipv6Addr),
    /// A distinguished name, as DER.
    Dn(Vec<u8>),
}

impl Identity {
    /// Reads an IDi/IDr body: type, 3 reserved bytes, data.
    pub fn parse(body: &[u8]) -> Result<Identity, WireError> {
        let syntax = WireError::InvalidSyntax;
        let (&kind, _) = body.split_first().ok_or(syntax("an ID payload without its type"))?;
        let data = body.get(4..).filter(|d| !d.is_empty()).ok_or(syntax("an ID payload without data"))?;
        let text = || String::from_utf8(data.to_vec()).map_err(|_| syntax("an ID that is not text"));
        Ok(match kind {
            ID_IPV4_ADDR => Identity::Ipv4(<[u8; 4]>::try_from(data).map_err(|_| syntax("an IPv4 ID of other than 4 bytes"))?.into()),
            ID_IPV6_ADDR => Identity::Ipv6(<[u8; 16]>::try_from(data).map_err(|_| syntax("an IPv6 ID of other than 16 bytes"))?.into()),
            ID_FQDN => Identity::Fqdn(text()?),
            ID_RFC822_ADDR => Identity::Email(text()?),
            ID_DER_ASN1_DN => {
                X509Name::from_der(data).map_err(|_| syntax("a DN ID that is not a DER name"))?;
                Identity::Dn(data.to_vec())
            }
            _ => return Err(syntax("an ID type other than an address, FQDN, e-mail or DN")),
        })
    }

    /// The payload body.
    pub fn to_body(&self) -> Vec<u8> {
        let (kind, data): (u8, Vec<u8>) = match self {
            Identity::Ipv4(a) => (ID_IPV4_ADDR, a.octets().to_vec()),
            Identity::Ipv6(a) => (ID_IPV6_ADDR, a.octets().to_vec()),
            Identity::Fqdn(s) => (ID_FQDN, s.as_bytes().to_vec()),
            Identity::Email(s) => (ID_RFC822_ADDR, s.as_bytes().to_vec()),
            Identity::Dn(der) => (ID_DER_ASN1_DN, der.clone()),
        };
        [&[kind, 0, 0, 0][..], &data].concat()
    }

    /// Parses an operator's spelling: an address, `user@host`, a DN
    /// (`CN=...`, RDNs in certificate order separated by commas), or an FQDN.
    pub fn from_config(text: &str) -> Result<Identity, String> {
        if let Ok(a) = text.parse::<Ipv4Addr>() {
            return Ok(Identity::Ipv4(a));
        }
        if let Ok(a) = text.parse::<Ipv6Addr>() {
            return Ok(Identity::Ipv6(a));
        }
        if text.contains('=') {
            let mut name = X509Name::builder().map_err(|e| e.to_string())?;
            for rdn in text.split(',') {
                let (key, value) = rdn.trim().split_once('=').ok_or_else(|| format!("`{rdn}` is not KEY=value"))?;
                name.append_entry_by_text(key.trim(), value.trim()).map_err(|_| format!("unknown DN attribute `{}`", key.trim()))?;
            }
            return Ok(Identity::Dn(name.build().to_der().map_err(|e| e.to_string())?));
        }
        if text.is_empty() || text.contains(char::is_whitespace) {
            return Err(format!("`{text}` is not an identity"));
        }
        Ok(if text.contains('@') { Identity::Email(text.into()) } else { Identity::Fqdn(text.into()) })
    }

    /// Whether `cert` vouches for this identity: a DN must equal the
    /// subject; anything else must be one of the subjectAltNames.
    pub fn is_certified_by(&self, cert: &X509Ref) -> bool {
        if let Identity::Dn(der) = self {
            return cert.subject_name().to_der().is_ok_and(|subject| subject == *der);
        }
        let Some(names) = cert.subject_alt_names() else { return false };
        names.iter().any(|name| match self {
            Identity::Fqdn(s) => name.dnsname().is_some_and(|n| n.eq_ignore_ascii_case(s)),
            Identity::Email(s) => name.email().is_some_and(|n| n.eq_ignore_ascii_case(s)),
            Identity::Ipv4(a) => name.ipaddress() == Some(&a.octets()[..]),
            Identity::Ipv6(a) => name.ipaddress() == Some(&a.octets()[..]),
            Identity::Dn(_) => false,
        })
    }
}

/// A DN written as `C=JP, O=..., CN=...`, in the certificate's order.
pub fn dn_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::Ipv6(a) => write!(f, "{a}"),
            Identity::Fqdn(s) | Identity::Email(s) => f.write_str(s),
            Identity::Dn(der) => match X509Name::from_der(der) {
                Ok(name) => f.write_str(&dn_text(&name)),
                Err(_) => f.write_str("(bad DN)"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_read_back_and_parse_from_config() {
        for text in ["192.0.2.1", "2001:db8::1", "clinic1.example", "ops@clinic1.example", "C=JP, O=Clinic One, CN=clinic1.example"] {
            let id = Identity::from_config(text).unwrap();
            assert_eq!(Identity::parse(&id.to_body()).unwrap(), id, "{text}");
            assert_eq!(id.to_string(), text);
        }
        assert!(Identity::from_config("a b").is_err());
        assert!(Identity::from_config("XX=1").is_err());
        assert!(Identity::parse(&[ID_IPV4_ADDR, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(Identity::parse(&[ID_FQDN, 0, 0, 0]).is_err());
        assert!(Identity::parse(&[ID_DER_ASN1_DN, 0, 0, 0, 0x30, 0x05]).is_err());
        assert!(Identity::parse(&[11, 0, 0, 0, 1]).is_err(), "key IDs are not accepted");
    }
}
