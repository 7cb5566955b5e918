//! The whole pipeline behind NAT: authentic ESP with arbitrary plaintext
//! from a clinic of a tenant (decryption, rules, conntrack, NAT, fragments
//! held and released), and arbitrary packets from the inside to the pool
//! (NAT back, into the tunnel, ICMP errors), with every frame accounted for.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sekisho_dataplane::fuzzing::Harness;
use std::cell::RefCell;

thread_local!(static HARNESS: RefCell<Harness> = RefCell::new(Harness::with_nat()));

fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.borrow_mut().nat_pipeline(data)));
