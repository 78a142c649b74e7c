//! See `coreloop_fuzz_checks::split_invariance`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coreloop_fuzz_checks::split_invariance(data));
