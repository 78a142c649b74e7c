//! The properties the fuzz targets check, as plain functions that panic when one
//! breaks. They build on stable: `tests/replay.rs` runs the committed corpus and every
//! past crash through them under `cargo test --workspace`; the cargo-fuzz targets in
//! `fuzz/fuzz_targets` (nightly) call them with generated inputs.

#![warn(missing_docs)]

use coreloop::http::fuzzing::{decode_all, Decoded};
use coreloop::http::HttpConfig;

/// Small limits, so that short inputs reach them.
fn small_limits() -> HttpConfig {
    HttpConfig {
        max_head: 512,
        max_uri: 128,
        max_headers: 8,
        max_body: 1024,
        ..HttpConfig::default()
    }
}

/// A cheap deterministic generator for split points.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Split invariance of the request decoder: the byte stream (after the first byte,
/// which seeds the split points) decodes to the same requests and the same ending
/// whole, split at pseudo-random points, and byte by byte; and the decoder never keeps
/// more buffered than its limits, never hands out a body over `max_body`, never stops
/// making progress (`decode_all` panics if it does).
pub fn split_invariance(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    for cfg in [small_limits(), HttpConfig::default()] {
        let whole = decode_all([stream], &cfg);
        let mut rng = XorShift(u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let max_piece = 1 + (seed as usize % 64);
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = (1 + rng.next() as usize % max_piece).min(stream.len() - at);
            pieces.push(&stream[at..at + n]);
            at += n;
        }
        assert_same(&whole, &decode_all(pieces, &cfg), "random pieces");
        if stream.len() <= 256 {
            assert_same(&whole, &decode_all(stream.chunks(1), &cfg), "byte by byte");
        }
    }
}

fn assert_same(whole: &Decoded, split: &Decoded, how: &str) {
    assert_eq!(whole, split, "{how}: decoded differently than whole");
}

mod oracle;
pub use oracle::against_hyper;

mod response;
pub use response::response_parser;
