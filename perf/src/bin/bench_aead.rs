//! Raw AES-GCM on one core, crypto only, for each library we could use:
//! Intel IPsec-MB (through our bindings, as the dataplane keys it), RustCrypto
//! `aes-gcm` (built for the host CPU), `aws-lc-rs` and `ring`: sealing, and
//! for the first two opening too. The numbers chose the dataplane's engine
//! (see `sekisho_dataplane::esp::aead`) and are the ceiling that the ESP
//! benchmark compares itself with.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use clap::Parser;
use sekisho_dataplane::esp::aead::GcmKey;
use sekisho_perf::bench::{median_ns_per_op, BenchRecord};
use std::hint::black_box;

#[derive(Parser)]
#[command(about = "AES-GCM speed of each library on one core")]
struct Args {
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 52, 64, 80, 128, 256, 512, 1400])]
    sizes: Vec<usize>,
    /// Key size in bits (128 or 256).
    #[arg(long, default_value_t = 128)]
    key_bits: usize,
    /// Milliseconds per measurement; the median of 5 is reported.
    #[arg(long, default_value_t = 100)]
    window_ms: u64,
    /// Where to append the JSON results.
    #[arg(long, default_value = "perf/results/aead.jsonl")]
    results: String,
}

/// RustCrypto's AES-GCM at either key size.
#[allow(clippy::large_enum_variant)] // one per run, on the stack
enum RustCrypto {
    Aes128(aes_gcm::Aes128Gcm),
    Aes256(aes_gcm::Aes256Gcm),
}

impl RustCrypto {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> aes_gcm::Tag {
        let nonce = nonce.into();
        match self {
            RustCrypto::Aes128(c) => c.encrypt_in_place_detached(nonce, aad, data),
            RustCrypto::Aes256(c) => c.encrypt_in_place_detached(nonce, aad, data),
        }
        .expect("short payload")
    }
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &aes_gcm::Tag) -> bool {
        let nonce = nonce.into();
        match self {
            RustCrypto::Aes128(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
            RustCrypto::Aes256(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
        }
        .is_ok()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key_len = args.key_bits / 8;
    let key = vec![0x42u8; key_len];
    let salt = [1u8, 2, 3, 4];
    let ours = GcmKey::new(&[&key[..], &salt].concat())?;
    let (aad, iv) = ([0u8; 8], [9u8; 8]);
    let nonce: [u8; 12] = [&salt[..], &iv].concat().try_into().unwrap();

    let rc = if key_len == 16 {
        RustCrypto::Aes128(aes_gcm::Aes128Gcm::new_from_slice(&key).expect("16-byte key"))
    } else {
        RustCrypto::Aes256(aes_gcm::Aes256Gcm::new_from_slice(&key).expect("32-byte key"))
    };
    let lc_alg = if key_len == 16 { &aws_lc_rs::aead::AES_128_GCM } else { &aws_lc_rs::aead::AES_256_GCM };
    let lc = aws_lc_rs::aead::LessSafeKey::new(aws_lc_rs::aead::UnboundKey::new(lc_alg, &key)?);
    let ring_alg = if key_len == 16 { &ring::aead::AES_128_GCM } else { &ring::aead::AES_256_GCM };
    let rg = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(ring_alg, &key).map_err(|_| anyhow::anyhow!("ring key"))?);

    println!("AES-{}-GCM, one core, ns per packet (median of 5); IPsec-MB arch: {}", args.key_bits, dpdk_sys::ipsec_mb::arch());
    println!(
        "{:>6} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9}",
        "bytes", "ipsec-mb", "aes-gcm", "aws-lc-rs", "ring", "fastest", "ipsec-mb", "aes-gcm"
    );
    println!("{:>6} | {:^49} | {:^19}", "", "seal", "open");
    let mut records = Vec::new();
    for &size in &args.sizes {
        let mut data = vec![0x5au8; size];
        let mut seal: Vec<(&str, f64)> = vec![
            ("ipsec-mb", median_ns_per_op(args.window_ms, || {
                black_box(ours.seal(&iv, &aad, black_box(&mut data)));
            })),
            ("aes-gcm", median_ns_per_op(args.window_ms, || {
                black_box(rc.seal(&nonce, &aad, black_box(&mut data)));
            })),
            ("aws-lc-rs", median_ns_per_op(args.window_ms, || {
                let n = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
                let _ = black_box(lc.seal_in_place_separate_tag(n, aws_lc_rs::aead::Aad::from(&aad), black_box(&mut data[..])).unwrap());
            })),
            ("ring", median_ns_per_op(args.window_ms, || {
                let n = ring::aead::Nonce::assume_unique_for_key(nonce);
                let _ = black_box(rg.seal_in_place_separate_tag(n, ring::aead::Aad::from(&aad), black_box(&mut data[..])).unwrap());
            })),
        ];
        // Opening needs a valid tag: time seal + open, then take the seal away.
        let open_ours = median_ns_per_op(args.window_ms, || {
            let tag = ours.seal(&iv, &aad, black_box(&mut data));
            black_box(ours.open(&iv, &aad, black_box(&mut data), &tag)).unwrap();
        }) - seal[0].1;
        let open_rc = median_ns_per_op(args.window_ms, || {
            let tag = rc.seal(&nonce, &aad, black_box(&mut data));
            assert!(black_box(rc.open(&nonce, &aad, black_box(&mut data), &tag)));
        }) - seal[1].1;
        let fastest = seal.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        println!(
            "{:>6} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} | {:>9.1} {:>9.1}",
            size, seal[0].1, seal[1].1, seal[2].1, seal[3].1, fastest, open_ours, open_rc
        );
        for (library, ns) in seal.drain(..) {
            records.push(BenchRecord::new("aead_seal", library, size, ns).with("key_bits", args.key_bits));
        }
        records.push(BenchRecord::new("aead_open", "ipsec-mb", size, open_ours).with("key_bits", args.key_bits));
        records.push(BenchRecord::new("aead_open", "aes-gcm", size, open_rc).with("key_bits", args.key_bits));
    }
    sekisho_perf::bench::append_records(&args.results, &records)?;
    Ok(())
}
