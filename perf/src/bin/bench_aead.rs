//! Raw AES-GCM seal rate on one core, crypto only, for each library we could
//! use: RustCrypto `aes-gcm` (built for the host CPU), Intel IPsec-MB (through
//! our bindings), `aws-lc-rs` and `ring`. The numbers choose the dataplane's
//! engines (see `sekisho_dataplane::esp::aead`) and are the ceiling that the
//! ESP benchmark compares itself with.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use clap::Parser;
use sekisho_dataplane::esp::aead::{Engine, GcmKey};
use sekisho_perf::bench::{median_ns_per_op, BenchRecord};
use std::hint::black_box;

#[derive(Parser)]
#[command(about = "AES-GCM seal speed of each library on one core")]
struct Args {
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 192, 256, 512, 1400])]
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key_len = args.key_bits / 8;
    let key = vec![0x42u8; key_len];
    let mut material = key.clone();
    material.extend_from_slice(&[1, 2, 3, 4]);
    let ours = GcmKey::new(&material)?;
    let aad = [0u8; 8];
    let iv = [9u8; 8];
    let nonce12 = [1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9];

    let lc_alg = if key_len == 16 { &aws_lc_rs::aead::AES_128_GCM } else { &aws_lc_rs::aead::AES_256_GCM };
    let lc = aws_lc_rs::aead::LessSafeKey::new(aws_lc_rs::aead::UnboundKey::new(lc_alg, &key)?);
    let ring_alg = if key_len == 16 { &ring::aead::AES_128_GCM } else { &ring::aead::AES_256_GCM };
    let rg = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(ring_alg, &key).map_err(|_| anyhow::anyhow!("ring key"))?);
    let rc128 = aes_gcm::Aes128Gcm::new_from_slice(&key[..16]).expect("16-byte key");

    println!("AES-{}-GCM seal, one core, ns per packet (median of 5); IPsec-MB arch: {}", args.key_bits, dpdk_sys::ipsec_mb::arch());
    println!("{:>6} {:>12} {:>12} {:>12} {:>12} {:>10} {:>13} {:>13}", "bytes", "aes-gcm", "ipsec-mb", "aws-lc-rs", "ring", "fastest", "aes-gcm open", "ipsec-mb open");
    let mut records = Vec::new();
    for &size in &args.sizes {
        let mut data = vec![0x5au8; size];
        let mut results: Vec<(&str, f64)> = Vec::new();
        results.push(("aes-gcm", median_ns_per_op(args.window_ms, || {
            black_box(ours.seal_with(Engine::RustCrypto, &iv, &aad, black_box(&mut data)));
        })));
        results.push(("ipsec-mb", median_ns_per_op(args.window_ms, || {
            black_box(ours.seal_with(Engine::IpsecMb, &iv, &aad, black_box(&mut data)));
        })));
        results.push(("aws-lc-rs", median_ns_per_op(args.window_ms, || {
            let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce12);
            let _ = black_box(lc.seal_in_place_separate_tag(nonce, aws_lc_rs::aead::Aad::from(&aad), black_box(&mut data[..])).unwrap());
        })));
        results.push(("ring", median_ns_per_op(args.window_ms, || {
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce12);
            let _ = black_box(rg.seal_in_place_separate_tag(nonce, ring::aead::Aad::from(&aad), black_box(&mut data[..])).unwrap());
        })));
        if key_len == 16 {
            // The library called directly, without our key wrapper: checks the wrapper costs nothing.
            let nonce = aes_gcm::Nonce::from_slice(&nonce12);
            results.push(("aes-gcm-direct", median_ns_per_op(args.window_ms, || {
                black_box(rc128.encrypt_in_place_detached(nonce, &aad, black_box(&mut data[..])).unwrap());
            })));
        }
        // Opening needs a valid tag: time seal + open, then take the seal away.
        for (name, engine, seal_ns) in [("aes-gcm-open", Engine::RustCrypto, results[0].1), ("ipsec-mb-open", Engine::IpsecMb, results[1].1)] {
            let pair = median_ns_per_op(args.window_ms, || {
                let tag = ours.seal_with(engine, &iv, &aad, black_box(&mut data));
                black_box(ours.open_with(engine, &iv, &aad, black_box(&mut data), &tag)).unwrap();
            });
            results.push((name, pair - seal_ns));
        }
        let fastest = results.iter().take(4).min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        let open = |name: &str| results.iter().find(|r| r.0 == name).map_or(0.0, |r| r.1);
        println!(
            "{:>6} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>10} {:>13.1} {:>13.1}",
            size, results[0].1, results[1].1, results[2].1, results[3].1, fastest.0, open("aes-gcm-open"), open("ipsec-mb-open")
        );
        for (library, ns) in &results {
            records.push(BenchRecord::new("aead_seal", library, size, *ns).with("key_bits", args.key_bits));
        }
    }
    sekisho_perf::bench::append_records(&args.results, &records)?;
    Ok(())
}
