//! The AUTH payload (RFC 7296 §2.15, §3.8) with certificate signatures:
//! classic RSA (method 1), ECDSA (RFC 4754, methods 9 to 11) and RFC 7427
//! digital signatures (method 14, with SHA-2 as RFC 8247 asks).

use super::keys::Prf;
use super::wire::WireError;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use openssl::sign::{Signer, Verifier};

pub const AUTH_RSA_SIGNATURE: u8 = 1;
pub const AUTH_ECDSA_SHA256_P256: u8 = 9;
pub const AUTH_ECDSA_SHA384_P384: u8 = 10;
pub const AUTH_ECDSA_SHA512_P521: u8 = 11;
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;

/// Hash algorithm IDs of the SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4).
pub const HASH_SHA2_256: u16 = 2;
pub const HASH_SHA2_384: u16 = 3;
pub const HASH_SHA2_512: u16 = 4;
/// What this implementation signs and verifies with method 14.
pub const SUPPORTED_HASHES: [u16; 3] = [HASH_SHA2_256, HASH_SHA2_384, HASH_SHA2_512];

/// DER AlgorithmIdentifiers of RFC 7427 Appendix A: RSASSA-PKCS1-v1_5 and
/// ECDSA with SHA-2.
const SHA256_WITH_RSA: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00];
const SHA384_WITH_RSA: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00];
const SHA512_WITH_RSA: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00];
const ECDSA_WITH_SHA256: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_WITH_SHA384: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA512: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

/// Why an AUTH payload is refused: answered with AUTHENTICATION_FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication method {0} not supported")]
    UnsupportedMethod(u8),
    #[error("signature algorithm not supported or not matching the key")]
    UnsupportedAlgorithm,
    #[error("signature does not verify")]
    BadSignature,
}

/// The octets a side signs (§2.15): its own first message, the peer's
/// nonce, and prf(SK_p, its ID payload body).
pub fn signed_octets(prf: Prf, own_message: &[u8], peer_nonce: &[u8], sk_p: &[u8], id_body: &[u8]) -> Vec<u8> {
    let maced_id = prf.prf(sk_p, &[id_body]);
    [own_message, peer_nonce, &maced_id].concat()
}

/// An AUTH payload's body: method, 3 reserved bytes, data.
pub fn parse(body: &[u8]) -> Result<(u8, &[u8]), WireError> {
    match body {
        [method, _, _, _, data @ ..] if !data.is_empty() => Ok((*method, data)),
        _ => Err(WireError::InvalidSyntax("an AUTH payload without data")),
    }
}

pub fn body(method: u8, data: &[u8]) -> Vec<u8> {
    [&[method, 0, 0, 0][..], data].concat()
}

fn digest_for(hash: u16) -> MessageDigest {
    match hash {
        HASH_SHA2_384 => MessageDigest::sha384(),
        HASH_SHA2_512 => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    }
}

/// Signs `octets` with `key`: method 14 with the first of our hashes the
/// peer announced (RFC 7427 §4), else the classic method for the key.
/// Returns the AUTH payload body.
pub fn sign(key: &PKey<Private>, octets: &[u8], peer_hashes: &[u16]) -> Vec<u8> {
    let hash = SUPPORTED_HASHES.into_iter().find(|h| peer_hashes.contains(h));
    let is_rsa = key.id() == Id::RSA;
    match hash {
        Some(hash) => {
            let algorithm = match (is_rsa, hash) {
                (true, HASH_SHA2_256) => SHA256_WITH_RSA,
                (true, HASH_SHA2_384) => SHA384_WITH_RSA,
                (true, _) => SHA512_WITH_RSA,
                (false, HASH_SHA2_256) => ECDSA_WITH_SHA256,
                (false, HASH_SHA2_384) => ECDSA_WITH_SHA384,
                (false, _) => ECDSA_WITH_SHA512,
            };
            // RFC 7427 §3: ECDSA signatures here are DER Ecdsa-Sig-Value,
            // which is what OpenSSL produces.
            let signature = raw_sign(key, digest_for(hash), octets);
            let data = [&[algorithm.len() as u8][..], algorithm, &signature].concat();
            body(AUTH_DIGITAL_SIGNATURE, &data)
        }
        None if is_rsa => body(AUTH_RSA_SIGNATURE, &raw_sign(key, MessageDigest::sha1(), octets)),
        None => {
            // RFC 4754: r | s, each the curve's length.
            let der = raw_sign(key, MessageDigest::sha256(), octets);
            let sig = EcdsaSig::from_der(&der).expect("OpenSSL's own signature");
            let (r, s) = (sig.r().to_vec_padded(32).expect("r"), sig.s().to_vec_padded(32).expect("s"));
            body(AUTH_ECDSA_SHA256_P256, &[r, s].concat())
        }
    }
}

fn raw_sign(key: &PKey<Private>, digest: MessageDigest, octets: &[u8]) -> Vec<u8> {
    let mut signer = Signer::new(digest, key).expect("signer for our key");
    signer.sign_oneshot_to_vec(octets).expect("signature")
}

/// Verifies the AUTH payload `(method, data)` over `octets` with the
/// public key of the peer's certificate.
pub fn verify<T: HasPublic>(key: &PKeyRef<T>, method: u8, data: &[u8], octets: &[u8]) -> Result<(), AuthError> {
    let is_rsa = key.id() == Id::RSA;
    let (digest, signature) = match method {
        // §3.8: RSASSA-PKCS1-v1_5; implementations hash with SHA-1 here.
        AUTH_RSA_SIGNATURE if is_rsa => (MessageDigest::sha1(), data.to_vec()),
        AUTH_ECDSA_SHA256_P256 | AUTH_ECDSA_SHA384_P384 | AUTH_ECDSA_SHA512_P521 if key.id() == Id::EC => {
            let digest = match method {
                AUTH_ECDSA_SHA256_P256 => MessageDigest::sha256(),
                AUTH_ECDSA_SHA384_P384 => MessageDigest::sha384(),
                _ => MessageDigest::sha512(),
            };
            if data.is_empty() || !data.len().is_multiple_of(2) {
                return Err(AuthError::BadSignature);
            }
            let (r, s) = data.split_at(data.len() / 2);
            let sig = BigNum::from_slice(r).and_then(|r| EcdsaSig::from_private_components(r, BigNum::from_slice(s)?)).map_err(|_| AuthError::BadSignature)?;
            (digest, sig.to_der().map_err(|_| AuthError::BadSignature)?)
        }
        AUTH_DIGITAL_SIGNATURE => {
            let (&len, rest) = data.split_first().ok_or(AuthError::BadSignature)?;
            if rest.len() < usize::from(len) {
                return Err(AuthError::BadSignature);
            }
            let (algorithm, signature) = rest.split_at(usize::from(len));
            let digest = match (algorithm, is_rsa) {
                (SHA256_WITH_RSA, true) | (ECDSA_WITH_SHA256, false) => MessageDigest::sha256(),
                (SHA384_WITH_RSA, true) | (ECDSA_WITH_SHA384, false) => MessageDigest::sha384(),
                (SHA512_WITH_RSA, true) | (ECDSA_WITH_SHA512, false) => MessageDigest::sha512(),
                _ => return Err(AuthError::UnsupportedAlgorithm),
            };
            (digest, signature.to_vec())
        }
        AUTH_RSA_SIGNATURE | AUTH_ECDSA_SHA256_P256 | AUTH_ECDSA_SHA384_P384 | AUTH_ECDSA_SHA512_P521 => return Err(AuthError::UnsupportedAlgorithm),
        other => return Err(AuthError::UnsupportedMethod(other)),
    };
    let mut verifier = Verifier::new(digest, key).map_err(|_| AuthError::UnsupportedAlgorithm)?;
    match verifier.verify_oneshot(&signature, octets) {
        Ok(true) => Ok(()),
        _ => Err(AuthError::BadSignature),
    }
}

/// The SIGNATURE_HASH_ALGORITHMS notify's data: the hashes, 2 bytes each.
pub fn parse_hashes(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

pub fn hashes_data() -> Vec<u8> {
    SUPPORTED_HASHES.iter().flat_map(|h| h.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::KeyKind;

    #[test]
    fn every_method_verifies_what_it_signs_and_nothing_else() {
        let octets = b"message one | nonce | prf(SK_pr, IDr)";
        for kind in [KeyKind::Rsa2048, KeyKind::EcdsaP256] {
            let key = kind.generate();
            let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
            for peer_hashes in [vec![], vec![HASH_SHA2_256], vec![HASH_SHA2_512, HASH_SHA2_384], vec![1, 5]] {
                let body = sign(&key, octets, &peer_hashes);
                let (method, data) = parse(&body).unwrap();
                let expected = match (peer_hashes.iter().any(|h| SUPPORTED_HASHES.contains(h)), kind) {
                    (true, _) => AUTH_DIGITAL_SIGNATURE,
                    (false, KeyKind::Rsa2048) => AUTH_RSA_SIGNATURE,
                    (false, KeyKind::EcdsaP256) => AUTH_ECDSA_SHA256_P256,
                };
                assert_eq!(method, expected, "{kind:?} {peer_hashes:?}");
                assert_eq!(verify(&public, method, data, octets), Ok(()), "{kind:?} {peer_hashes:?}");
                assert_eq!(verify(&public, method, data, b"other octets"), Err(AuthError::BadSignature));
                let mut tampered = data.to_vec();
                *tampered.last_mut().unwrap() ^= 1;
                assert!(verify(&public, method, &tampered, octets).is_err());
            }
        }
        // The RFC 7427 encoding: a length byte, then the DER AlgorithmIdentifier.
        let key = KeyKind::Rsa2048.generate();
        let body = sign(&key, octets, &[HASH_SHA2_256]);
        assert_eq!(&body[4..20], &[&[15u8][..], SHA256_WITH_RSA].concat()[..]);
        // A key of the wrong kind for the algorithm named is refused.
        let ec = KeyKind::EcdsaP256.generate();
        assert_eq!(verify(&ec, AUTH_DIGITAL_SIGNATURE, &body[4..], octets), Err(AuthError::UnsupportedAlgorithm));
        assert_eq!(verify(&ec, 2, &body[4..], octets), Err(AuthError::UnsupportedMethod(2)));
        assert_eq!(parse_hashes(&hashes_data()), SUPPORTED_HASHES.to_vec());
    }
}
