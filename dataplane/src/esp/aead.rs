//! AES-GCM for ESP (RFC 4106): one expanded key per SA, built when the SA is
//! installed, never per packet.
//!
//! The engine is Intel IPsec-MB (the library under DPDK's `crypto_aesni_gcm`),
//! chosen by measurement (`sekisho-bench-aead`; numbers in DESIGN.md): on
//! these cores it seals and opens fastest at every size ESP sees, except
//! RustCrypto's `aes-gcm` sealing payloads of exact multiples of 16 bytes up
//! to 64 a few ns faster, which is not worth a second key per SA.

use dpdk_sys::ipsec_mb;

/// Length of the integrity check value: we only use the 16-byte ICV (RFC 4106 §6).
pub const ICV_LEN: usize = 16;
/// Length of the salt appended to the key material (RFC 4106 §8.1).
pub const SALT_LEN: usize = 4;

/// Why a key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key material must be 16 or 32 bytes of key plus the 4-byte salt.
    #[error("AES-GCM key material must be 20 or 36 bytes (key + 4-byte salt), got {0}")]
    Length(usize),
    /// Intel IPsec-MB could not be set up on this CPU.
    #[error("Intel IPsec-MB is not usable on this CPU")]
    Engine,
}

/// The ICV did not verify: the packet is not authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadIcv;

/// An SA's AES-GCM key: the expanded key and the salt.
pub struct GcmKey {
    expanded: Box<ipsec_mb::GcmKey>,
    salt: [u8; SALT_LEN],
    key_bits: u16,
}

impl GcmKey {
    /// `material` is the key followed by the salt, as IKEv2 derives it (RFC 4106 §8.1).
    pub fn new(material: &[u8]) -> Result<GcmKey, KeyError> {
        let key_len = match material.len() {
            20 => 16,
            36 => 32,
            n => return Err(KeyError::Length(n)),
        };
        let (key, salt) = material.split_at(key_len);
        let expanded = ipsec_mb::GcmKey::new(key).map_err(|_| KeyError::Engine)?;
        Ok(GcmKey { expanded, salt: salt.try_into().expect("4-byte salt"), key_bits: key_len as u16 * 8 })
    }

    pub fn key_bits(&self) -> u16 {
        self.key_bits
    }

    /// The 12-byte GCM nonce: salt and the packet's 8-byte IV (RFC 4106 §4).
    #[inline]
    fn nonce(&self, iv: &[u8; 8]) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(iv);
        nonce
    }

    /// Brings what a `len`-byte packet will read of the key into the cache.
    #[inline]
    pub fn prefetch(&self, len: usize) {
        self.expanded.prefetch(len);
    }

    /// Encrypts `data` in place and returns the ICV.
    #[inline]
    pub fn seal(&self, iv: &[u8; 8], aad: &[u8], data: &mut [u8]) -> [u8; ICV_LEN] {
        self.expanded.seal(&self.nonce(iv), aad, data)
    }

    /// Verifies the ICV and decrypts `data` in place. On [`BadIcv`] the
    /// contents of `data` are garbage and must be dropped.
    #[inline]
    pub fn open(&self, iv: &[u8; 8], aad: &[u8], data: &mut [u8], icv: &[u8; ICV_LEN]) -> Result<(), BadIcv> {
        let computed = self.expanded.open(&self.nonce(iv), aad, data);
        if tags_equal(&computed, icv) {
            Ok(())
        } else {
            Err(BadIcv)
        }
    }
}

/// Compares two tags in constant time: one XOR of 128-bit words, whose
/// result alone decides (a byte loop with an optimisation barrier per byte,
/// as `subtle` has, cost about 20 ns here).
#[inline]
fn tags_equal(a: &[u8; ICV_LEN], b: &[u8; ICV_LEN]) -> bool {
    std::hint::black_box(u128::from_ne_bytes(*a) ^ u128::from_ne_bytes(*b)) == 0
}

#[cfg(test)]
mod tests;
