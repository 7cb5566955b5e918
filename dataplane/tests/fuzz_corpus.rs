//! Replays the fuzzers' kept corpus (fuzz/corpus/) through the same entry
//! points, so every CI run checks the inputs the fuzzers found, without a
//! fuzzing engine or a nightly compiler.

use sekisho_dataplane::fuzzing::{Harness, NatHarness};
use std::path::Path;

fn replay<H>(target: &str, mut harness: H, run: impl Fn(&mut H, &[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&mut harness, &std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "the corpus of {target} is empty");
}

#[test]
fn frame_corpus() {
    replay("frame", Harness::new(), Harness::frame);
}

#[test]
fn esp_plaintext_corpus() {
    replay("esp_plaintext", Harness::new(), Harness::esp_plaintext);
}

#[test]
fn nat_pipeline_corpus() {
    replay("nat_pipeline", Harness::with_nat(), Harness::nat_pipeline);
}

#[test]
fn shm_message_corpus() {
    replay("shm_message", (), |_, data| sekisho_dataplane::fuzzing::to_control_message(data));
}

#[test]
fn control_ring_corpus() {
    replay("control_ring", sekisho_dataplane::fuzzing::ControlRingHarness::new(), sekisho_dataplane::fuzzing::ControlRingHarness::run);
}

#[test]
fn nat_inner_corpus() {
    replay("nat_inner", NatHarness::new(), NatHarness::run);
}

/// Writes the seed inputs into the corpus folders (run by hand once:
/// `cargo test --release -p sekisho-dataplane --test fuzz_corpus -- --ignored`).
#[test]
#[ignore]
fn write_seeds() {
    let (frames, plaintexts) = sekisho_dataplane::fuzzing::seeds();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, inputs) in [("frame", frames), ("esp_plaintext", plaintexts), ("nat_inner", sekisho_dataplane::fuzzing::nat_seeds()), ("nat_pipeline", sekisho_dataplane::fuzzing::nat_pipeline_seeds()), ("shm_message", sekisho_dataplane::fuzzing::shm_message_seeds()), ("control_ring", sekisho_dataplane::fuzzing::control_ring_seeds())] {
        std::fs::create_dir_all(root.join(target)).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(root.join(target).join(format!("seed-{i}")), input).unwrap();
        }
    }
}
