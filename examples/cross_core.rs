//! A Runtime on every core; callbacks sent across cores, with the round trip timed.
//!
//! `cargo run --release --example cross_core [-- --rounds 10000 --backend auto|uring|epoll
//! --idle-poll-us U]`
//!
//! Each shard sends `rounds` requests, one at a time, to the next shard with
//! `IoLoop::submit_to` and times each answer's round trip (two cross-thread callbacks,
//! each waking a loop that may be asleep). Then the main thread gathers every shard's
//! figures with `Runtime::invoke_on_all` and prints them.

use coreloop::{Backend, IoLoop, LoopHandle, Runtime};
use std::cell::RefCell;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    match args.get(i + 1).and_then(|v| v.parse().ok()) {
        Some(v) => Some(v),
        None => {
            eprintln!("{name} needs a value");
            std::process::exit(2)
        }
    }
}

thread_local! {
    /// Each shard's measured round trips, kept on its own thread.
    static RTTS: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
}

/// Sends request number `left` to `peer`; on the answer, records the round trip and
/// sends the next, until none are left; then tells `done`.
fn ping(lp: &IoLoop, peer: LoopHandle, left: u32, done: mpsc::Sender<()>) {
    if left == 0 {
        let _ = done.send(());
        return;
    }
    let sent = Instant::now();
    let peer2 = peer.clone();
    lp.submit_to(
        &peer,
        |remote| remote.shard_id(),
        move |lp, answer| {
            if let Err(e) = answer {
                eprintln!("cross_core: the peer did not answer: {e}");
                let _ = done.send(());
                return;
            }
            RTTS.with(|r| r.borrow_mut().push(sent.elapsed()));
            ping(lp, peer2, left - 1, done);
        },
    );
}

fn main() -> std::io::Result<()> {
    let rounds: u32 = arg("--rounds").unwrap_or(10_000);
    let backend = match arg::<String>("--backend") {
        Some(b) => Backend::parse(&b).unwrap_or_else(|| {
            eprintln!("--backend takes auto, uring or epoll");
            std::process::exit(2)
        }),
        None => Backend::Auto,
    };
    let idle_poll = Duration::from_micros(arg("--idle-poll-us").unwrap_or(0));
    let rt = Runtime::builder()
        .backend(backend)
        .idle_poll(idle_poll)
        .build()?;
    let n = rt.shards();
    println!("{n} shards, {rounds} round trips from each shard to the next");

    let (done_tx, done_rx) = mpsc::channel();
    for shard in 0..n {
        let peer = rt.handle((shard + 1) % n).clone();
        let done = done_tx.clone();
        rt.handle(shard)
            .add_callback(move |lp| ping(lp, peer, rounds, done))
            .expect("loop alive");
    }
    for _ in 0..n {
        done_rx.recv().expect("a shard finished");
    }

    let stats = rt
        .invoke_on_all(|lp| {
            let mut rtts = RTTS.with(|r| r.take());
            rtts.sort();
            let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
            (
                lp.shard_id(),
                lp.backend_detail(),
                rtts.len(),
                q(0.0),
                q(0.5),
                q(0.99),
                q(1.0),
            )
        })
        .expect("every shard answers");
    for (shard, backend, count, min, p50, p99, max) in stats {
        println!(
            "shard {shard} -> {}: {count} round trips on {backend}: min {min:?}  p50 {p50:?}  p99 {p99:?}  max {max:?}",
            (shard + 1) % n
        );
    }
    rt.shutdown().map_err(std::io::Error::other)
}
