//! Arbitrary bytes as a message from the control process, as the
//! dataplane's manager reads it out of shared memory and applies it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static HARNESS: RefCell<sekisho_dataplane::fuzzing::ControlRingHarness> = RefCell::new(sekisho_dataplane::fuzzing::ControlRingHarness::new());
}

fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.borrow_mut().run(data)));
