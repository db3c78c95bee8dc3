//! Fuzz target `claims`: see `revokd::fuzzing::claims`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revokd::fuzzing::claims(data));
