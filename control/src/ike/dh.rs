//! Diffie-Hellman groups for the KE payload, through OpenSSL: group 14
//! (MODP 2048, RFC 3526 §3), 19 (NIST P-256, RFC 5903) and 31 (Curve25519,
//! RFC 8031). Public values and shared secrets are in the encodings those
//! RFCs give for IKEv2.

use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::dh::Dh;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Params, Private};

pub const MODP_2048: u16 = 14;
pub const ECP_256: u16 = 19;
pub const CURVE25519: u16 = 31;

/// Why a peer's public value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyExchangeError {
    /// Wrong length, a point off the curve, or a MODP value outside 2..p-2
    /// (RFC 7296 §3.4 and RFC 6989 checks).
    #[error("invalid public value")]
    InvalidPublicValue,
    #[error("DH group {0} not supported")]
    UnsupportedGroup(u16),
}

/// One side's ephemeral key for one exchange.
pub enum KeyPair {
    Modp(PKey<Private>),
    Ecp(EcKey<Private>),
    X25519(PKey<Private>),
}

impl KeyPair {
    pub fn is_supported(group: u16) -> bool {
        matches!(group, MODP_2048 | ECP_256 | CURVE25519)
    }

    pub fn generate(group: u16) -> Result<KeyPair, KeyExchangeError> {
        match group {
            MODP_2048 => {
                let key = modp_2048().generate_key().expect("DH key");
                Ok(KeyPair::Modp(PKey::from_dh(key).expect("DH key")))
            }
            ECP_256 => {
                let curve = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
                Ok(KeyPair::Ecp(EcKey::generate(&curve).expect("P-256 key")))
            }
            CURVE25519 => Ok(KeyPair::X25519(PKey::generate_x25519().expect("X25519 key"))),
            other => Err(KeyExchangeError::UnsupportedGroup(other)),
        }
    }

    pub fn group(&self) -> u16 {
        match self {
            KeyPair::Modp(_) => MODP_2048,
            KeyPair::Ecp(_) => ECP_256,
            KeyPair::X25519(_) => CURVE25519,
        }
    }

    /// The KE payload's data: MODP zero-padded to the prime's length
    /// (RFC 7296 §3.4); P-256 as x | y (RFC 5903 §7); X25519 as 32 bytes.
    pub fn public(&self) -> Vec<u8> {
        match self {
            KeyPair::Modp(key) => key.dh().expect("a DH key").public_key().to_vec_padded(256).expect("256 bytes"),
            KeyPair::Ecp(key) => {
                let mut ctx = BigNumContext::new().expect("bignum context");
                let sec1 = key.public_key().to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx).expect("point");
                sec1[1..].to_vec()
            }
            KeyPair::X25519(key) => key.raw_public_key().expect("X25519 public"),
        }
    }

    /// Our KE payload's body.
    pub fn ke_body(&self) -> Vec<u8> {
        super::payloads::KeyExchange { group: self.group(), data: &self.public() }.body()
    }

    /// g^ir from the peer's KE data: MODP padded to the prime's length,
    /// P-256 the x coordinate only (RFC 5903 §7), X25519 as RFC 8031 §2.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Vec<u8>, KeyExchangeError> {
        let invalid = |_| KeyExchangeError::InvalidPublicValue;
        match self {
            KeyPair::Modp(key) => {
                if peer.len() != 256 {
                    return Err(KeyExchangeError::InvalidPublicValue);
                }
                let y = BigNum::from_slice(peer).map_err(invalid)?;
                // RFC 6989: 1 < y < p - 1 is all a safe-prime group needs
                // (OpenSSL's y^q test, a full-length exponentiation that
                // would quadruple the cost, is off below).
                let group = modp_2048();
                let mut p_minus_1 = group.prime_p().to_owned().map_err(invalid)?;
                p_minus_1.sub_word(1).map_err(invalid)?;
                if y <= *BigNum::from_u32(1).map_err(invalid)? || y >= p_minus_1 {
                    return Err(KeyExchangeError::InvalidPublicValue);
                }
                let peer_key = PKey::from_dh(group.set_public_key(y).map_err(invalid)?).map_err(invalid)?;
                // Through EVP, whose length is exact (Dh::compute_key drops
                // it: a secret with a leading zero byte, one in 256, came
                // back shifted left); §2.14 pads it to the prime's length.
                let shared = derive(key, &peer_key, false)?;
                let mut padded = vec![0u8; 256usize.saturating_sub(shared.len())];
                padded.extend_from_slice(&shared);
                Ok(padded)
            }
            KeyPair::Ecp(key) => {
                if peer.len() != 64 {
                    return Err(KeyExchangeError::InvalidPublicValue);
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let mut ctx = BigNumContext::new().map_err(invalid)?;
                // from_bytes rejects points off the curve (RFC 6989 §2.3).
                let point = EcPoint::from_bytes(key.group(), &sec1, &mut ctx).map_err(invalid)?;
                let peer_key = EcKey::from_public_key(key.group(), &point).map_err(invalid)?;
                derive(&PKey::from_ec_key(key.clone()).map_err(invalid)?, &PKey::from_ec_key(peer_key).map_err(invalid)?, true)
            }
            KeyPair::X25519(key) => {
                let peer_key = PKey::public_key_from_raw_bytes(peer, Id::X25519).map_err(invalid)?;
                let shared = derive(key, &peer_key, true)?;
                // RFC 8031 §2.3: an all-zero result means a small-order point.
                if shared.iter().all(|&b| b == 0) {
                    return Err(KeyExchangeError::InvalidPublicValue);
                }
                Ok(shared)
            }
        }
    }
}

/// The MODP 2048 group (RFC 3526 §3). q = (p - 1) / 2 marks a safe-prime
/// group: OpenSSL then recognises it and uses its short private exponent.
fn modp_2048() -> Dh<Params> {
    let p = BigNum::get_rfc3526_prime_2048().expect("the RFC 3526 prime");
    let mut q = BigNum::new().expect("bignum");
    q.rshift1(&p).expect("shift");
    Dh::from_pqg(p, Some(q), BigNum::from_u32(2).expect("bignum")).expect("MODP group")
}

/// The shared secret with `peer`, checked by OpenSSL first if `validate_peer`.
fn derive<T: openssl::pkey::HasPublic>(ours: &PKey<Private>, peer: &PKey<T>, validate_peer: bool) -> Result<Vec<u8>, KeyExchangeError> {
    let invalid = |_| KeyExchangeError::InvalidPublicValue;
    let mut deriver = Deriver::new(ours).map_err(invalid)?;
    deriver.set_peer_ex(peer, validate_peer).map_err(invalid)?;
    deriver.derive_to_vec().map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_of_every_group_agree() {
        for group in [MODP_2048, ECP_256, CURVE25519] {
            let (a, b) = (KeyPair::generate(group).unwrap(), KeyPair::generate(group).unwrap());
            let len = match group {
                MODP_2048 => 256,
                ECP_256 => 64,
                _ => 32,
            };
            assert_eq!(a.public().len(), len, "group {group}");
            let shared = a.shared_secret(&b.public()).unwrap();
            assert_eq!(shared, b.shared_secret(&a.public()).unwrap(), "group {group}");
            assert_eq!(shared.len(), if group == MODP_2048 { 256 } else { 32 });
        }
        assert_eq!(KeyPair::generate(2).err(), Some(KeyExchangeError::UnsupportedGroup(2)));
    }

    /// About one MODP secret in 256 starts with a zero byte: it must stay
    /// in front (§2.14). y^x mod p, computed here independently, finds one.
    #[test]
    fn a_modp_secret_with_a_leading_zero_keeps_it() {
        let ours = KeyPair::generate(MODP_2048).unwrap();
        let KeyPair::Modp(key) = &ours else { unreachable!() };
        let dh = key.dh().unwrap();
        let (x, p) = (dh.private_key(), dh.prime_p());
        let mut ctx = BigNumContext::new().unwrap();
        for _ in 0..20_000 {
            let peer = KeyPair::generate(MODP_2048).unwrap();
            let y = BigNum::from_slice(&peer.public()).unwrap();
            let mut expected = BigNum::new().unwrap();
            expected.mod_exp(&y, x, p, &mut ctx).unwrap();
            let expected = expected.to_vec_padded(256).unwrap();
            if expected[0] == 0 {
                assert_eq!(ours.shared_secret(&peer.public()).unwrap(), expected);
                assert_eq!(peer.shared_secret(&ours.public()).unwrap(), expected);
                return;
            }
        }
        panic!("no secret with a leading zero in 20,000 tries (expected one in 256)");
    }

    #[test]
    fn degenerate_public_values_are_refused() {
        let modp = KeyPair::generate(MODP_2048).unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert!(modp.shared_secret(&one).is_err());
        assert!(modp.shared_secret(&[0xff; 256]).is_err(), "above p");
        assert!(modp.shared_secret(&[1; 255]).is_err(), "short");
        let ecp = KeyPair::generate(ECP_256).unwrap();
        assert!(ecp.shared_secret(&[1; 64]).is_err(), "off the curve");
        let x = KeyPair::generate(CURVE25519).unwrap();
        assert!(x.shared_secret(&[0; 32]).is_err(), "small order");
        assert!(x.shared_secret(&[9; 31]).is_err());
    }
}
