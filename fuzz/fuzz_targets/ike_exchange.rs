//! An authenticated IKE peer whose requests and answers say anything.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static HARNESS: RefCell<sekisho_control::fuzzing::ExchangeHarness> = RefCell::new(sekisho_control::fuzzing::ExchangeHarness::new());
}

fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.borrow_mut().run(data)));
