//! Fuzz target `requests`: see `revokd::fuzzing::requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revokd::fuzzing::requests(data));
