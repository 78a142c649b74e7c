//! See `coreloop_fuzz_checks::response_parser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coreloop_fuzz_checks::response_parser(data));
