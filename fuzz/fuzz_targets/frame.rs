//! Any frame into either port of a gateway with one tunnel: the outer
//! classifier, ARP/ND, IKE and NAT-T demultiplexing, ESP parsing up to the
//! ICV, and the path into tunnels.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sekisho_dataplane::fuzzing::Harness;
use std::cell::RefCell;

thread_local!(static HARNESS: RefCell<Harness> = RefCell::new(Harness::new()));

fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.borrow_mut().frame(data)));
