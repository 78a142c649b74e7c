//! Every input of the committed fuzz corpus (`fuzz/corpus/TARGET`) and every past
//! crash (`fuzz/regressions/TARGET`) through its target's check, on stable.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{} fails its check", path.display());
            n += 1;
        }
    }
    assert!(
        n >= 10,
        "only {n} inputs for {target}: is the corpus there?"
    );
}

#[test]
fn request_split_corpus_and_regressions() {
    replay("request_split", coreloop_fuzz_checks::split_invariance);
}

#[test]
fn request_vs_hyper_corpus_and_regressions() {
    replay("request_vs_hyper", coreloop_fuzz_checks::against_hyper);
}

#[test]
fn response_parser_corpus_and_regressions() {
    replay("response_parser", coreloop_fuzz_checks::response_parser);
}
