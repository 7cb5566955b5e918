//! Arbitrary bytes as a message from the dataplane, as the control process
//! reads it out of shared memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sekisho_dataplane::fuzzing::to_control_message(data));
