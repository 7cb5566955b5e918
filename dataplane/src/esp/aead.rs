//! AES-GCM for ESP (RFC 4106): one expanded key per SA, chosen and built
//! when the SA is installed, never per packet.
//!
//! Two engines, picked by measurement (`sekisho-bench-aead`, numbers in
//! DESIGN.md): Intel IPsec-MB opens fastest at every size and seals fastest
//! from about 80 bytes; RustCrypto's `aes-gcm` (built for the host CPU)
//! seals the shortest packets a little faster. Each key holds both
//! expansions and picks per packet by direction and length: a compare, no
//! dispatch through a vtable.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce, Tag};
use dpdk_sys::ipsec_mb;
use subtle::ConstantTimeEq;

/// Length of the integrity check value: we only use the 16-byte ICV (RFC 4106 §6).
pub const ICV_LEN: usize = 16;
/// Length of the salt appended to the key material (RFC 4106 §8.1).
pub const SALT_LEN: usize = 4;

/// Payloads shorter than this are sealed by `aes-gcm`, longer ones by
/// IPsec-MB (the crossing measured on Zen-class cores lies near 80 bytes).
pub const SHORT_SEAL: usize = 80;

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

enum Short {
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
}

/// An SA's AES-GCM key: both engines' expansions and the salt.
pub struct GcmKey {
    short: Short,
    long: Box<ipsec_mb::GcmKey>,
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
        let short = if key_len == 16 {
            Short::Aes128(Aes128Gcm::new_from_slice(key).expect("16-byte key"))
        } else {
            Short::Aes256(Aes256Gcm::new_from_slice(key).expect("32-byte key"))
        };
        let long = ipsec_mb::GcmKey::new(key).map_err(|_| KeyError::Engine)?;
        Ok(GcmKey { short, long, salt: salt.try_into().expect("4-byte salt"), key_bits: key_len as u16 * 8 })
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

    /// The engine that seals a payload of `len` bytes.
    #[inline]
    pub fn seal_engine(len: usize) -> Engine {
        if len < SHORT_SEAL {
            Engine::RustCrypto
        } else {
            Engine::IpsecMb
        }
    }

    /// The engine that opens a payload: IPsec-MB at every size (`aes-gcm`
    /// hashes and decrypts in two passes, and is slower even at 32 bytes).
    #[inline]
    pub fn open_engine(_len: usize) -> Engine {
        Engine::IpsecMb
    }

    /// Encrypts `data` in place and returns the ICV.
    #[inline]
    pub fn seal(&self, iv: &[u8; 8], aad: &[u8], data: &mut [u8]) -> [u8; ICV_LEN] {
        self.seal_with(Self::seal_engine(data.len()), iv, aad, data)
    }

    /// Verifies the ICV and decrypts `data` in place. On [`BadIcv`] the
    /// contents of `data` are garbage and must be dropped.
    #[inline]
    pub fn open(&self, iv: &[u8; 8], aad: &[u8], data: &mut [u8], icv: &[u8; ICV_LEN]) -> Result<(), BadIcv> {
        self.open_with(Self::open_engine(data.len()), iv, aad, data, icv)
    }

    /// [`GcmKey::seal`] with a given engine (tests and raw baselines use both).
    #[inline]
    pub fn seal_with(&self, engine: Engine, iv: &[u8; 8], aad: &[u8], data: &mut [u8]) -> [u8; ICV_LEN] {
        let nonce = self.nonce(iv);
        if engine == Engine::IpsecMb {
            return self.long.seal(&nonce, aad, data);
        }
        let nonce = Nonce::from_slice(&nonce);
        let tag = match &self.short {
            Short::Aes128(c) => c.encrypt_in_place_detached(nonce, aad, data),
            Short::Aes256(c) => c.encrypt_in_place_detached(nonce, aad, data),
        };
        tag.expect("GCM takes any payload shorter than 64 GiB").into()
    }

    /// [`GcmKey::open`] with a given engine.
    #[inline]
    pub fn open_with(
        &self,
        engine: Engine,
        iv: &[u8; 8],
        aad: &[u8],
        data: &mut [u8],
        icv: &[u8; ICV_LEN],
    ) -> Result<(), BadIcv> {
        let nonce = self.nonce(iv);
        if engine == Engine::IpsecMb {
            let computed = self.long.open(&nonce, aad, data);
            return if bool::from(computed.ct_eq(icv)) { Ok(()) } else { Err(BadIcv) };
        }
        let nonce = Nonce::from_slice(&nonce);
        let result = match &self.short {
            Short::Aes128(c) => c.decrypt_in_place_detached(nonce, aad, data, Tag::from_slice(icv)),
            Short::Aes256(c) => c.decrypt_in_place_detached(nonce, aad, data, Tag::from_slice(icv)),
        };
        result.map_err(|_| BadIcv)
    }
}

/// The two engines, named for benchmarks and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    RustCrypto,
    IpsecMb,
}

#[cfg(test)]
mod tests;
