//! Authentic ESP packets with arbitrary plaintext: trailer and padding
//! checks, inner header parsing, selectors, MSS clamping.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sekisho_dataplane::fuzzing::Harness;
use std::cell::RefCell;

thread_local!(static HARNESS: RefCell<Harness> = RefCell::new(Harness::new()));

fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.borrow_mut().esp_plaintext(data)));
