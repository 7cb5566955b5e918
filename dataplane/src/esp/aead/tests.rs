//! Known answers from the GCM specification (McGrew and Viega, "The
//! Galois/Counter Mode of Operation", test cases 3, 4, 15 and 16, which NIST
//! SP 800-38D's validation suite repeats), and agreement with RustCrypto's
//! `aes-gcm` (an independent implementation) at every length.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    crate::tunnels::decode_hex(s).unwrap()
}

const PLAINTEXT: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
const AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
const KEY128: &str = "feffe9928665731c6d6a8f9467308308";
// The 96-bit IV cafebabefacedbaddecaf888 split as ESP splits it: salt, then the 8-byte IV.
const SALT: &str = "cafebabe";
const IV: [u8; 8] = [0xfa, 0xce, 0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88];

struct Case {
    key: String,
    plaintext_len: usize,
    aad: &'static str,
    ciphertext: &'static str,
    tag: &'static str,
}

fn cases() -> Vec<Case> {
    let key256 = format!("{KEY128}{KEY128}");
    vec![
        Case { key: KEY128.into(), plaintext_len: 64, aad: "", ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985", tag: "4d5c2af327cd64a62cf35abd2ba6fab4" },
        Case { key: KEY128.into(), plaintext_len: 60, aad: AAD, ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091", tag: "5bc94fbc3221a5db94fae95ae7121a47" },
        Case { key: key256.clone(), plaintext_len: 64, aad: "", ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad", tag: "b094dac5d93471bdec1a502270e3cc6c" },
        Case { key: key256, plaintext_len: 60, aad: AAD, ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662", tag: "76fc6ece0f4e1768cddf8853bb2d551b" },
    ]
}

#[test]
fn gcm_spec_vectors() {
    for (i, case) in cases().iter().enumerate() {
        let key = GcmKey::new(&hex(&format!("{}{SALT}", case.key))).unwrap();
        let plaintext = &hex(PLAINTEXT)[..case.plaintext_len];
        let aad = hex(case.aad);
        let mut data = plaintext.to_vec();
        let tag = key.seal(&IV, &aad, &mut data);
        assert_eq!(data, hex(case.ciphertext), "case {i} ciphertext");
        assert_eq!(tag.to_vec(), hex(case.tag), "case {i} tag");
        key.open(&IV, &aad, &mut data, &tag).unwrap();
        assert_eq!(data, plaintext, "case {i} round trip");
    }
}

#[test]
fn agrees_with_rustcrypto_at_every_length_and_rejects_any_flipped_bit() {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::KeyInit;
    let material = [7u8; 36];
    let key = GcmKey::new(&material).unwrap();
    let reference = aes_gcm::Aes256Gcm::new_from_slice(&material[..32]).unwrap();
    let mut nonce = [7u8; 12];
    nonce[4..].copy_from_slice(&IV);
    let aad = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    for len in (0..600).chain([1400, 1500, 2000]) {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let (mut a, mut b) = (plaintext.clone(), plaintext.clone());
        let tag_a = key.seal(&IV, &aad, &mut a);
        let tag_b: [u8; 16] = reference.encrypt_in_place_detached((&nonce).into(), &aad, &mut b).unwrap().into();
        assert_eq!((a.clone(), tag_a), (b, tag_b), "length {len}");
        let mut sealed = a.clone();
        key.open(&IV, &aad, &mut sealed, &tag_a).unwrap();
        assert_eq!(sealed, plaintext);
        if len > 0 {
            let mut tampered = a.clone();
            tampered[len / 2] ^= 0x10;
            assert_eq!(key.open(&IV, &aad, &mut tampered, &tag_a), Err(BadIcv), "length {len}");
        }
        for byte in [0, 7, 8, 15] {
            let mut bad_tag = tag_a;
            bad_tag[byte] ^= 1;
            assert_eq!(key.open(&IV, &aad, &mut a.clone(), &bad_tag), Err(BadIcv));
        }
        let mut other_aad = a.clone();
        assert_eq!(key.open(&IV, &aad[..8], &mut other_aad, &tag_a), Err(BadIcv));
    }
}

#[test]
fn key_material_length_is_checked() {
    assert!(matches!(GcmKey::new(&[0; 16]), Err(KeyError::Length(16))));
    assert!(matches!(GcmKey::new(&[0; 24]), Err(KeyError::Length(24))));
    assert_eq!(GcmKey::new(&[0; 20]).unwrap().key_bits(), 128);
    assert_eq!(GcmKey::new(&[0; 36]).unwrap().key_bits(), 256);
}
