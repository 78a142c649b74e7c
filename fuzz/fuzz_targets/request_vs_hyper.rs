//! See `coreloop_fuzz_checks::against_hyper`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coreloop_fuzz_checks::against_hyper(data));
