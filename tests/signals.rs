//! SIGTERM and SIGINT stop a Runtime built with `stop_on_signals(true)`.
//!
//! Its own test binary (so its own process): a signal reaches the whole process, and no
//! other test may be running a runtime when it arrives. The two cases run one after the
//! other in one test for the same reason.

use coreloop::{Backend, Cores, Runtime};
use std::sync::mpsc;
use std::time::Duration;

fn stops_on(backend: Backend, signal: i32) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .stop_on_signals(true)
        .build()
        .unwrap();
    let handles = rt.handles().to_vec();
    // Both loops are up and answering before the signal.
    assert_eq!(
        rt.call_on_all(|lp| lp.shard_id()).wait().unwrap(),
        vec![0, 1]
    );
    signal_hook::low_level::raise(signal).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(rt.wait().is_ok()).unwrap());
    let clean = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime did not stop on the signal");
    assert!(clean);
    assert!(handles.iter().all(|h| h.is_closed()));
}

#[test]
fn sigterm_and_sigint_stop_every_loop_on_both_backends() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    stops_on(Backend::Epoll, SIGTERM);
    stops_on(Backend::Uring, SIGINT);
    stops_on(Backend::Uring, SIGTERM);
    stops_on(Backend::Epoll, SIGINT);
}
