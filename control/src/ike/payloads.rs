//! Bodies of the simple IKEv2 payloads: Key Exchange (§3.4), Nonce (§3.9)
//! and Notify (§3.10), read with their fields checked and written into a
//! caller's buffer.

use super::wire::WireError;

/// Notify message types this implementation sends or acts on (§3.10.1, RFC 7383).
pub const INVALID_SYNTAX: u16 = 7;
pub const NO_PROPOSAL_CHOSEN: u16 = 14;
pub const INVALID_KE_PAYLOAD: u16 = 17;
pub const AUTHENTICATION_FAILED: u16 = 24;
pub const TS_UNACCEPTABLE: u16 = 38;
pub const INVALID_SPI: u16 = 11;
pub const CHILD_SA_NOT_FOUND: u16 = 44;
pub const TEMPORARY_FAILURE: u16 = 43;
pub const NO_ADDITIONAL_SAS: u16 = 35;
pub const INITIAL_CONTACT: u16 = 16384;
pub const USE_TRANSPORT_MODE: u16 = 16391;
pub const REKEY_SA: u16 = 16393;
pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
pub const COOKIE: u16 = 16390;
pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
/// Types below this are errors (§3.10.1).
pub const FIRST_STATUS_TYPE: u16 = 16384;

/// A Key Exchange payload: the DH group and the public value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyExchange<'a> {
    pub group: u16,
    pub data: &'a [u8],
}

impl<'a> KeyExchange<'a> {
    pub fn parse(body: &'a [u8]) -> Result<KeyExchange<'a>, WireError> {
        let h = body.first_chunk::<4>().ok_or(WireError::InvalidSyntax("a KE payload shorter than its header"))?;
        if body.len() == 4 {
            return Err(WireError::InvalidSyntax("a KE payload without key data"));
        }
        Ok(KeyExchange { group: u16::from_be_bytes([h[0], h[1]]), data: &body[4..] })
    }

    /// The body: group, two reserved bytes, key data.
    pub fn body(&self) -> Vec<u8> {
        [&self.group.to_be_bytes()[..], &[0, 0], self.data].concat()
    }

    /// Writes the body into `out`; its length, or None if it does not fit.
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let len = 4 + self.data.len();
        let out = out.get_mut(..len)?;
        out[..4].copy_from_slice(&[(self.group >> 8) as u8, self.group as u8, 0, 0]);
        out[4..].copy_from_slice(self.data);
        Some(len)
    }
}

/// Bytes of our nonces: at least half the PRF key, and 32 covers SHA-512's (§2.10).
pub const NONCE_LEN: usize = 32;

/// A fresh random nonce.
pub fn fresh_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).expect("random nonce");
    nonce
}

/// A Nonce payload's value: 16 to 256 bytes (§3.9).
pub fn parse_nonce(body: &[u8]) -> Result<&[u8], WireError> {
    if (16..=256).contains(&body.len()) {
        Ok(body)
    } else {
        Err(WireError::InvalidSyntax("a nonce shorter than 16 or longer than 256 bytes"))
    }
}

/// A Notify payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    /// 0 when about the IKE SA; else the protocol (ESP 3) of `spi`.
    pub protocol: u8,
    pub kind: u16,
    pub spi: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> Notify<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Notify<'a>, WireError> {
        let h = body.first_chunk::<4>().ok_or(WireError::InvalidSyntax("a Notify payload shorter than its header"))?;
        let spi_size = usize::from(h[1]);
        let spi = body.get(4..4 + spi_size).ok_or(WireError::InvalidSyntax("a Notify SPI beyond the payload"))?;
        Ok(Notify { protocol: h[0], kind: u16::from_be_bytes([h[2], h[3]]), spi, data: &body[4 + spi_size..] })
    }

    pub fn is_error(&self) -> bool {
        self.kind < FIRST_STATUS_TYPE
    }

    /// Writes the body into `out`; its length, or None if it does not fit.
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let len = 4 + self.spi.len() + self.data.len();
        if self.spi.len() > 255 {
            return None;
        }
        let out = out.get_mut(..len)?;
        out[..4].copy_from_slice(&[self.protocol, self.spi.len() as u8, (self.kind >> 8) as u8, self.kind as u8]);
        out[4..4 + self.spi.len()].copy_from_slice(self.spi);
        out[4 + self.spi.len()..].copy_from_slice(self.data);
        Some(len)
    }
}

/// The body of a Notify about the IKE SA (no SPI).
pub fn notify_body(kind: u16, data: &[u8]) -> Vec<u8> {
    [&[0, 0][..], &kind.to_be_bytes(), data].concat()
}

/// A notify about the SA of `protocol` and `spi` (REKEY_SA, §3.10), without data.
pub fn notify_about(protocol: u8, spi: &[u8], kind: u16) -> Vec<u8> {
    [&[protocol, spi.len() as u8][..], &kind.to_be_bytes(), spi].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_exchange_nonce_and_notify_read_back_what_is_written() {
        let mut out = [0u8; 300];
        let ke = KeyExchange { group: 14, data: &[7; 256] };
        let len = ke.write(&mut out).unwrap();
        assert_eq!(&out[..4], &[0, 14, 0, 0]);
        assert_eq!(KeyExchange::parse(&out[..len]), Ok(ke));
        assert_eq!(ke.body(), out[..len].to_vec());
        assert!(KeyExchange::parse(&out[..4]).is_err() && KeyExchange::parse(&out[..3]).is_err());

        assert!(parse_nonce(&[1; 15]).is_err() && parse_nonce(&[1; 257]).is_err());
        assert_eq!(parse_nonce(&[1; 32]), Ok(&[1u8; 32][..]));

        // INVALID_KE_PAYLOAD carries the group the responder wants (§3.10.1).
        let invalid_ke = Notify { protocol: 0, kind: INVALID_KE_PAYLOAD, spi: &[], data: &14u16.to_be_bytes() };
        let len = invalid_ke.write(&mut out).unwrap();
        assert_eq!(&out[..len], &[0, 0, 0, 17, 0, 14]);
        let read = Notify::parse(&out[..len]).unwrap();
        assert_eq!((read, read.is_error()), (invalid_ke, true));
        // A notify about a CHILD SA names it by SPI.
        let rekey = Notify { protocol: 3, kind: 16393, spi: &[1, 2, 3, 4], data: &[] };
        let len = rekey.write(&mut out).unwrap();
        assert_eq!(Notify::parse(&out[..len]), Ok(rekey));
        assert!(Notify::parse(&out[..len - 1]).is_err(), "the SPI cut short");
        let cookie = Notify { protocol: 0, kind: COOKIE, spi: &[], data: &[9; 32] };
        let len = cookie.write(&mut out).unwrap();
        assert!(!Notify::parse(&out[..len]).unwrap().is_error());
    }
}
