//! Arbitrary bytes as an IKE datagram into the control process's codec.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sekisho_control::fuzzing::ike_message(data));
