//! Fuzz target `token`: see `revokd::fuzzing::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revokd::fuzzing::token(data));
