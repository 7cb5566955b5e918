//! Arbitrary inner IPv4 packets through connection tracking and NAT, both
//! ways: the flow parser, TCP tracking, ICMP error translation, fragments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sekisho_dataplane::fuzzing::NatHarness;
use std::cell::RefCell;

thread_local!(static HARNESS: RefCell<NatHarness> = RefCell::new(NatHarness::new()));

fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.borrow_mut().run(data)));
