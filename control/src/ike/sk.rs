//! The Encrypted payload (RFC 7296 §3.14) and its fragments (RFC 7383
//! §2.5): AES-GCM with a 16-byte ICV (RFC 5282), or AES-CBC with
//! HMAC-SHA2 (RFC 3602, RFC 4868), as RFC 8247 recommends for IKEv2.

use super::keys::{hmac, Hash};
use openssl::symm::{self, Cipher};

/// Encryption transform IDs (IANA "Transform Type 1").
pub const ENCR_AES_CBC: u16 = 12;
pub const ENCR_AES_GCM_16: u16 = 20;
/// Integrity transform IDs (IANA "Transform Type 3").
pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
pub const AUTH_HMAC_SHA2_384_192: u16 = 13;
pub const AUTH_HMAC_SHA2_512_256: u16 = 14;

/// AES-GCM's salt, taken from the end of each SK_e key (RFC 5282 §7.1).
const GCM_SALT: usize = 4;
const GCM_IV: usize = 8;
const GCM_ICV: usize = 16;
const CBC_IV: usize = 16;

/// How an IKE SA protects its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// AES-GCM-16 with a key of this many bytes (16, 24 or 32).
    AesGcm16 { key: usize },
    /// AES-CBC with a key of this many bytes, then an HMAC-SHA2.
    AesCbc { key: usize, integrity: Integrity },
}

/// The HMAC-SHA2 integrity transforms of RFC 4868, truncated to half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    Sha256_128,
    Sha384_192,
    Sha512_256,
}

impl Integrity {
    pub fn from_id(id: u16) -> Option<Integrity> {
        match id {
            AUTH_HMAC_SHA2_256_128 => Some(Integrity::Sha256_128),
            AUTH_HMAC_SHA2_384_192 => Some(Integrity::Sha384_192),
            AUTH_HMAC_SHA2_512_256 => Some(Integrity::Sha512_256),
            _ => None,
        }
    }
    pub fn id(self) -> u16 {
        match self {
            Integrity::Sha256_128 => AUTH_HMAC_SHA2_256_128,
            Integrity::Sha384_192 => AUTH_HMAC_SHA2_384_192,
            Integrity::Sha512_256 => AUTH_HMAC_SHA2_512_256,
        }
    }
    fn hash(self) -> Hash {
        match self {
            Integrity::Sha256_128 => Hash::Sha256,
            Integrity::Sha384_192 => Hash::Sha384,
            Integrity::Sha512_256 => Hash::Sha512,
        }
    }
    /// Key bytes: the hash's output length (RFC 4868 §2.1.1).
    pub fn key_len(self) -> usize {
        self.icv_len() * 2
    }
    pub fn icv_len(self) -> usize {
        match self {
            Integrity::Sha256_128 => 16,
            Integrity::Sha384_192 => 24,
            Integrity::Sha512_256 => 32,
        }
    }
}

/// Why an Encrypted payload could not be opened. Never answered (§2.21.2:
/// an integrity failure is dropped silently), only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("encrypted payload too short")]
    Short,
    #[error("integrity check failed")]
    Integrity,
    #[error("bad padding")]
    Padding,
}

impl Protection {
    /// From the chosen transforms; None for a combination we do not do.
    pub fn from_transforms(encr: u16, key_bits: Option<u16>, integ: Option<u16>) -> Option<Protection> {
        let key = match key_bits? {
            128 => 16,
            192 => 24,
            256 => 32,
            _ => return None,
        };
        match (encr, integ) {
            (ENCR_AES_GCM_16, None) => Some(Protection::AesGcm16 { key }),
            (ENCR_AES_CBC, Some(id)) => Some(Protection::AesCbc { key, integrity: Integrity::from_id(id)? }),
            _ => None,
        }
    }

    /// SK_e bytes (salt included) and SK_a bytes (0 for GCM).
    pub fn key_lengths(self) -> super::keys::KeyLengths {
        match self {
            Protection::AesGcm16 { key } => super::keys::KeyLengths { encryption: key + GCM_SALT, integrity: 0 },
            Protection::AesCbc { key, integrity } => super::keys::KeyLengths { encryption: key, integrity: integrity.key_len() },
        }
    }

    /// Bytes of the payload body (IV to ICV) for `plain` bytes of payloads,
    /// as [`Protection::seal`] writes it.
    pub fn body_len(self, plain: usize) -> usize {
        match self {
            Protection::AesGcm16 { .. } => GCM_IV + plain + 1 + GCM_ICV,
            Protection::AesCbc { integrity, .. } => CBC_IV + (plain + 1).div_ceil(16) * 16 + integrity.icv_len(),
        }
    }

    fn cipher_gcm(key: usize) -> Cipher {
        match key {
            16 => Cipher::aes_128_gcm(),
            24 => Cipher::aes_192_gcm(),
            _ => Cipher::aes_256_gcm(),
        }
    }

    fn cipher_cbc(key: usize) -> Cipher {
        match key {
            16 => Cipher::aes_128_cbc(),
            24 => Cipher::aes_192_cbc(),
            _ => Cipher::aes_256_cbc(),
        }
    }

    /// Appends the Encrypted payload's body to `message` (which holds the
    /// IKE header and the payload's header, with their final lengths
    /// already written): IV, ciphertext of `plaintext` plus padding, ICV.
    /// `iv_counter` gives GCM a unique IV per message of this key.
    pub fn seal(self, encryption_key: &[u8], integrity_key: &[u8], iv_counter: u64, plaintext: &[u8], message: &mut Vec<u8>) {
        match self {
            Protection::AesGcm16 { key } => {
                let (key_bytes, salt) = encryption_key.split_at(key);
                let iv = iv_counter.to_be_bytes();
                let nonce = [salt, &iv].concat();
                // No padding needed; pad length 0 (§3.14 allows any).
                let mut data = Vec::with_capacity(plaintext.len() + 1);
                data.extend_from_slice(plaintext);
                data.push(0);
                let mut tag = [0u8; GCM_ICV];
                let ciphertext = symm::encrypt_aead(Self::cipher_gcm(key), key_bytes, Some(&nonce), message, &data, &mut tag).expect("AES-GCM encrypt");
                message.extend_from_slice(&iv);
                message.extend_from_slice(&ciphertext);
                message.extend_from_slice(&tag);
            }
            Protection::AesCbc { key, integrity } => {
                let mut iv = [0u8; CBC_IV];
                openssl::rand::rand_bytes(&mut iv).expect("random IV");
                let padding = (16 - (plaintext.len() + 1) % 16) % 16;
                let mut data = Vec::with_capacity(plaintext.len() + padding + 1);
                data.extend_from_slice(plaintext);
                data.resize(plaintext.len() + padding, 0);
                data.push(padding as u8);
                let mut crypter = symm::Crypter::new(Self::cipher_cbc(key), symm::Mode::Encrypt, encryption_key, Some(&iv)).expect("AES-CBC");
                crypter.pad(false);
                let mut ciphertext = vec![0u8; data.len() + 16];
                let n = crypter.update(&data, &mut ciphertext).expect("AES-CBC encrypt");
                let m = crypter.finalize(&mut ciphertext[n..]).expect("AES-CBC final");
                ciphertext.truncate(n + m);
                message.extend_from_slice(&iv);
                message.extend_from_slice(&ciphertext);
                // §3.14: the ICV covers the whole message up to itself.
                let icv = hmac(integrity.hash(), integrity_key, &[message]);
                message.extend_from_slice(&icv[..integrity.icv_len()]);
            }
        }
    }

    /// Opens the Encrypted payload whose body (IV onward) starts at
    /// `body_start` and runs to the end of `message`. Returns the inner
    /// payloads without padding.
    pub fn open(self, encryption_key: &[u8], integrity_key: &[u8], message: &[u8], body_start: usize) -> Result<Vec<u8>, OpenError> {
        let (before, body) = message.split_at(body_start);
        match self {
            Protection::AesGcm16 { key } => {
                if body.len() < GCM_IV + 1 + GCM_ICV {
                    return Err(OpenError::Short);
                }
                let (key_bytes, salt) = encryption_key.split_at(key);
                let (iv, rest) = body.split_at(GCM_IV);
                let (ciphertext, tag) = rest.split_at(rest.len() - GCM_ICV);
                let nonce = [salt, iv].concat();
                let plain = symm::decrypt_aead(Self::cipher_gcm(key), key_bytes, Some(&nonce), before, ciphertext, tag).map_err(|_| OpenError::Integrity)?;
                strip_padding(plain)
            }
            Protection::AesCbc { key, integrity } => {
                let icv_len = integrity.icv_len();
                if body.len() < CBC_IV + 16 + icv_len || !(body.len() - CBC_IV - icv_len).is_multiple_of(16) {
                    return Err(OpenError::Short);
                }
                let (covered, icv) = message.split_at(message.len() - icv_len);
                let expected = hmac(integrity.hash(), integrity_key, &[covered]);
                if !openssl::memcmp::eq(&expected[..icv_len], icv) {
                    return Err(OpenError::Integrity);
                }
                let (iv, rest) = body.split_at(CBC_IV);
                let ciphertext = &rest[..rest.len() - icv_len];
                let mut crypter = symm::Crypter::new(Self::cipher_cbc(key), symm::Mode::Decrypt, encryption_key, Some(iv)).map_err(|_| OpenError::Integrity)?;
                crypter.pad(false);
                let mut plain = vec![0u8; ciphertext.len() + 16];
                let n = crypter.update(ciphertext, &mut plain).map_err(|_| OpenError::Padding)?;
                let m = crypter.finalize(&mut plain[n..]).map_err(|_| OpenError::Padding)?;
                plain.truncate(n + m);
                strip_padding(plain)
            }
        }
    }
}

/// Removes the padding and its length byte (§3.14).
fn strip_padding(mut plain: Vec<u8>) -> Result<Vec<u8>, OpenError> {
    let pad = usize::from(*plain.last().ok_or(OpenError::Padding)?);
    if pad + 1 > plain.len() {
        return Err(OpenError::Padding);
    }
    plain.truncate(plain.len() - pad - 1);
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(protection: Protection) {
        let lengths = protection.key_lengths();
        let (ek, ik) = (vec![7u8; lengths.encryption], vec![9u8; lengths.integrity]);
        let prefix = vec![0xabu8; 32];
        for len in [0usize, 1, 15, 16, 17, 200] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut message = prefix.clone();
            protection.seal(&ek, &ik, 5, &plaintext, &mut message);
            assert_eq!(message.len(), prefix.len() + protection.body_len(len));
            assert_eq!(protection.open(&ek, &ik, &message, prefix.len()), Ok(plaintext.clone()), "{protection:?} {len}");
            // Any flipped bit, in the covered header or the body, fails the check.
            for at in [0, prefix.len(), message.len() - 1] {
                let mut bad = message.clone();
                bad[at] ^= 1;
                assert_eq!(protection.open(&ek, &ik, &bad, prefix.len()), Err(OpenError::Integrity), "{protection:?} byte {at}");
            }
            assert!(protection.open(&ek, &ik, &message[..prefix.len() + 8], prefix.len()).is_err());
        }
    }

    #[test]
    fn every_protection_opens_what_it_seals_and_nothing_altered() {
        round_trip(Protection::AesGcm16 { key: 16 });
        round_trip(Protection::AesGcm16 { key: 32 });
        for integrity in [Integrity::Sha256_128, Integrity::Sha384_192, Integrity::Sha512_256] {
            round_trip(Protection::AesCbc { key: 32, integrity });
        }
        assert_eq!(Protection::from_transforms(ENCR_AES_GCM_16, Some(256), None), Some(Protection::AesGcm16 { key: 32 }));
        assert_eq!(Protection::from_transforms(ENCR_AES_GCM_16, Some(256), Some(12)), None, "GCM takes no integrity transform");
        assert_eq!(Protection::from_transforms(ENCR_AES_CBC, Some(128), None), None);
        assert_eq!(Protection::from_transforms(ENCR_AES_CBC, None, Some(12)), None);
    }

    /// AES-GCM per RFC 5282 against a known answer: the GCM test case 4
    /// of McGrew & Viega (the NIST GCM vectors), keyed as IKE keys it.
    #[test]
    fn gcm_matches_the_published_vector() {
        let hex = |s: &str| sekisho_dataplane::tunnels::decode_hex(s).unwrap();
        let key = hex("feffe9928665731c6d6a8f9467308308");
        let nonce = hex("cafebabefacedbaddecaf888");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let expected_cipher = hex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091");
        let expected_tag = hex("5bc94fbc3221a5db94fae95ae7121a47");
        // The salt is the first 4 nonce bytes; the IV the last 8 (carried in the payload).
        let encryption_key = [key.as_slice(), &nonce[..4]].concat();
        let mut message = aad.clone();
        message.extend_from_slice(&nonce[4..]);
        message.extend_from_slice(&expected_cipher);
        message.extend_from_slice(&expected_tag);
        // The vector has no IKE padding byte: open without the strip to compare.
        let opened = symm::decrypt_aead(Cipher::aes_128_gcm(), &key, Some(&nonce), &aad, &expected_cipher, &expected_tag).unwrap();
        assert_eq!(opened, plain);
        // Our open reads the last plaintext byte (0x39) as pad length 57.
        let ours = Protection::AesGcm16 { key: 16 }.open(&encryption_key, &[], &message, aad.len()).unwrap();
        assert_eq!(ours, plain[..plain.len() - 58].to_vec());
    }
}
