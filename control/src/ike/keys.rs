//! The IKEv2 key schedule (RFC 7296 §2.13, §2.14, §2.17, §2.18): prf,
//! prf+, SKEYSEED and the split of keying material into the SA's keys.

use hmac::{Hmac, Mac};

/// PRF transform IDs (RFC 4868 §2.1; IANA "Transform Type 2").
pub const PRF_HMAC_SHA2_256: u16 = 5;
pub const PRF_HMAC_SHA2_384: u16 = 6;
pub const PRF_HMAC_SHA2_512: u16 = 7;

/// A pseudorandom function: HMAC-SHA2 (RFC 4868). Its key length and
/// output length are the hash's output length (§2.1.2 there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Prf {
    pub fn from_id(id: u16) -> Option<Prf> {
        match id {
            PRF_HMAC_SHA2_256 => Some(Prf::HmacSha256),
            PRF_HMAC_SHA2_384 => Some(Prf::HmacSha384),
            PRF_HMAC_SHA2_512 => Some(Prf::HmacSha512),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha256 => PRF_HMAC_SHA2_256,
            Prf::HmacSha384 => PRF_HMAC_SHA2_384,
            Prf::HmacSha512 => PRF_HMAC_SHA2_512,
        }
    }

    pub fn hash(self) -> Hash {
        match self {
            Prf::HmacSha256 => Hash::Sha256,
            Prf::HmacSha384 => Hash::Sha384,
            Prf::HmacSha512 => Hash::Sha512,
        }
    }

    /// Bytes of output, and of the keys SK_d, SK_pi and SK_pr.
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// prf(key, data...) over the concatenation of `data`.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        hmac(self.hash(), key, data)
    }

    /// prf+ (§2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n),
    /// output T1 | T2 | ... cut to `len` bytes. At most 255 blocks.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Vec<u8> {
        assert!(len <= 255 * self.output_len(), "prf+ gives at most 255 blocks");
        let mut out = Vec::with_capacity(len + self.output_len());
        let mut previous: Vec<u8> = Vec::new();
        let mut counter = 1u8;
        while out.len() < len {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
            parts.push(&previous);
            parts.extend_from_slice(seed);
            let n = [counter];
            parts.push(&n);
            previous = self.prf(key, &parts);
            out.extend_from_slice(&previous);
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        out
    }
}

/// The SHA-2 hashes of the HMACs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// HMAC (RustCrypto's: OpenSSL 3 spends microseconds fetching the
/// algorithm on every call, and a handshake makes dozens).
pub fn hmac(hash: Hash, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC keys of any length");
        for part in data {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match hash {
        Hash::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
        Hash::Sha384 => run::<Hmac<sha2::Sha384>>(key, data),
        Hash::Sha512 => run::<Hmac<sha2::Sha512>>(key, data),
    }
}

/// Key lengths of an IKE SA's algorithms, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLengths {
    /// 0 for an AEAD cipher (§2.13: no SK_a keys then).
    pub integrity: usize,
    /// With the AEAD salt, where there is one (RFC 5282 §7).
    pub encryption: usize,
}

/// The keys of an IKE SA (§2.14).
#[derive(Clone, PartialEq, Eq)]
pub struct IkeKeys {
    pub sk_d: Vec<u8>,
    pub sk_ai: Vec<u8>,
    pub sk_ar: Vec<u8>,
    pub sk_ei: Vec<u8>,
    pub sk_er: Vec<u8>,
    pub sk_pi: Vec<u8>,
    pub sk_pr: Vec<u8>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys(..)")
    }
}

impl IkeKeys {
    /// Splits `keymat` = SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr.
    fn split(prf: Prf, lengths: KeyLengths, keymat: &[u8]) -> IkeKeys {
        let mut rest = keymat;
        let mut take = |n: usize| {
            let (key, tail) = rest.split_at(n);
            rest = tail;
            key.to_vec()
        };
        IkeKeys {
            sk_d: take(prf.output_len()),
            sk_ai: take(lengths.integrity),
            sk_ar: take(lengths.integrity),
            sk_ei: take(lengths.encryption),
            sk_er: take(lengths.encryption),
            sk_pi: take(prf.output_len()),
            sk_pr: take(prf.output_len()),
        }
    }

    fn keymat_len(prf: Prf, lengths: KeyLengths) -> usize {
        3 * prf.output_len() + 2 * lengths.integrity + 2 * lengths.encryption
    }

    /// The keys of a new IKE SA (§2.14):
    /// SKEYSEED = prf(Ni | Nr, g^ir);
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn derive(prf: Prf, lengths: KeyLengths, shared: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
        let skeyseed = prf.prf(&[ni, nr].concat(), &[shared]);
        Self::expand(prf, lengths, &skeyseed, ni, nr, spi_i, spi_r)
    }

    /// The keys of an IKE SA that rekeys this one (§2.18), with `prf` the new SA's:
    /// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr); the split as in §2.14
    /// with the new SA's nonces and SPIs.
    #[allow(clippy::too_many_arguments)]
    pub fn rekey(&self, old_prf: Prf, prf: Prf, lengths: KeyLengths, shared: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
        let skeyseed = old_prf.prf(&self.sk_d, &[shared, ni, nr]);
        Self::expand(prf, lengths, &skeyseed, ni, nr, spi_i, spi_r)
    }

    fn expand(prf: Prf, lengths: KeyLengths, skeyseed: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
        let keymat = prf.prf_plus(skeyseed, &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()], Self::keymat_len(prf, lengths));
        Self::split(prf, lengths, &keymat)
    }

    /// Keying material of a CHILD_SA (§2.17): KEYMAT = prf+(SK_d, Ni | Nr),
    /// or prf+(SK_d, g^ir (new) | Ni | Nr) when its exchange carried a KE
    /// (PFS). The initiator-to-responder keys come first.
    pub fn child_keymat(&self, prf: Prf, shared: Option<&[u8]>, ni: &[u8], nr: &[u8], len: usize) -> Vec<u8> {
        match shared {
            Some(shared) => prf.prf_plus(&self.sk_d, &[shared, ni, nr], len),
            None => prf.prf_plus(&self.sk_d, &[ni, nr], len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        sekisho_dataplane::tunnels::decode_hex(s).expect("hex")
    }

    /// RFC 4868 §2.7.1 PRF test case 2 ("Jefe"), for all three hashes.
    #[test]
    fn prf_matches_rfc_4868() {
        let data: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        assert_eq!(Prf::HmacSha256.prf(b"Jefe", data), hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
        assert_eq!(
            Prf::HmacSha384.prf(b"Jefe", data),
            hex("af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649")
        );
        assert_eq!(
            Prf::HmacSha512.prf(b"Jefe", data),
            hex("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")
        );
    }

    /// NIST SP 800-135 IKEv2 KDF known answers (ACVP-Server's and NSS's
    /// copies of the CAVP samples, in testdata/ikev2_kdf.txt).
    #[test]
    fn key_derivation_matches_the_nist_vectors() {
        let text = include_str!("testdata/ikev2_kdf.txt");
        let mut checked = 0;
        for block in text.split("\n\n").filter(|b| b.contains("SKEYSEED")) {
            let field = |name: &str| -> Option<Vec<u8>> {
                block.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(" = ").map(hex))
            };
            let prf = match block.lines().find_map(|l| l.strip_prefix("HASH = ")).unwrap() {
                "SHA-256" => Prf::HmacSha256,
                "SHA-384" => Prf::HmacSha384,
                other => panic!("{other}"),
            };
            let (ni, nr, gir, gir_new) = (field("Ni").unwrap(), field("Nr").unwrap(), field("g^ir").unwrap(), field("g^ir (new)").unwrap());
            let spi = |name| u64::from_be_bytes(field(name).unwrap().try_into().unwrap());
            let (spi_i, spi_r) = (spi("SPIi"), spi("SPIr"));
            let dkm = field("DKM").unwrap();
            // SKEYSEED = prf(Ni | Nr, g^ir); DKM = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
            let skeyseed = prf.prf(&[ni.as_slice(), &nr].concat(), &[&gir]);
            assert_eq!(skeyseed, field("SKEYSEED").unwrap());
            assert_eq!(prf.prf_plus(&skeyseed, &[&ni, &nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()], dkm.len()), dkm);
            // The split takes SK_d first, then the rest in the order of §2.14.
            let lengths = KeyLengths { integrity: 32, encryption: 36 };
            let keys = IkeKeys::derive(prf, lengths, &gir, &ni, &nr, spi_i, spi_r);
            let all = [&keys.sk_d, &keys.sk_ai, &keys.sk_ar, &keys.sk_ei, &keys.sk_er, &keys.sk_pi, &keys.sk_pr].map(|k| k.as_slice()).concat();
            let n = all.len().min(dkm.len());
            assert_eq!(all[..n], dkm[..n]);
            // SKEYSEED (rekey) = prf(SK_d, g^ir (new) | Ni | Nr).
            let rekeyed = keys.rekey(prf, prf, lengths, &gir_new, &ni, &nr, spi_i, spi_r);
            let skeyseed_rekey = field("SKEYSEED(Rekey)").unwrap();
            assert_eq!(prf.prf(&keys.sk_d, &[&gir_new, &ni, &nr]), skeyseed_rekey);
            assert_eq!(rekeyed.sk_d, prf.prf_plus(&skeyseed_rekey, &[&ni, &nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()], prf.output_len()));
            if let (Some(child), Some(child_dh)) = (field("DKM(Child SA)"), field("DKM(Child SA D-H)")) {
                assert_eq!(keys.child_keymat(prf, None, &ni, &nr, child.len()), child);
                assert_eq!(keys.child_keymat(prf, Some(&gir_new), &ni, &nr, child_dh.len()), child_dh);
            }
            checked += 1;
        }
        assert_eq!(checked, 3);
    }

    #[test]
    fn prf_plus_chains_its_blocks_as_section_2_13_says() {
        let prf = Prf::HmacSha256;
        let (key, seed) = (b"key".as_slice(), b"seed".as_slice());
        let t1 = prf.prf(key, &[seed, &[1]]);
        let t2 = prf.prf(key, &[&t1, seed, &[2]]);
        let t3 = prf.prf(key, &[&t2, seed, &[3]]);
        let out = prf.prf_plus(key, &[seed], 70);
        assert_eq!(out, [t1, t2, t3[..6].to_vec()].concat());
        // The seed may come in pieces.
        assert_eq!(prf.prf_plus(key, &[b"se", b"ed"], 70), out);
    }
}
