//! Fuzz target `key_file`: see `revokd::fuzzing::key_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revokd::fuzzing::key_file(data));
