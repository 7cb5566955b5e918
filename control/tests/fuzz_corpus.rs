//! Replays the kept corpus of the control process's fuzz targets
//! (fuzz/corpus/), so that every CI run checks what the fuzzers found.

use std::path::Path;

#[test]
fn ike_message_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ike_message");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        sekisho_control::fuzzing::ike_message(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count > 0, "the corpus of ike_message is empty");
}

#[test]
fn ike_exchange_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ike_exchange");
    let mut harness = sekisho_control::fuzzing::ExchangeHarness::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        harness.run(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count > 0, "the corpus of ike_exchange is empty");
}

/// Writes the seed inputs (run by hand once: `cargo test -p sekisho-control --test fuzz_corpus -- --ignored`).
#[test]
#[ignore]
fn write_seeds() {
    for (target, seeds) in [("ike_message", sekisho_control::fuzzing::ike_seeds()), ("ike_exchange", sekisho_control::fuzzing::exchange_seeds())] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
