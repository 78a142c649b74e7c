//! A Runtime on every core; callbacks sent across cores, with the round trip timed.
//!
//! `cargo run --release --example cross_core [-- --rounds 10000 --backend auto|uring|epoll
//! --idle-poll-us U --wake eventfd|msg-ring --senders N --idle-ms M]`
//!
//! Each shard (or the first `--senders N`) sends `rounds` requests, one at a time, to the
//! next shard with
//! `IoLoop::call_on` and times each answer's round trip (two cross-thread callbacks,
//! each waking a loop that may be asleep). Then the main thread gathers every shard's
//! figures with `Runtime::call_on_all` and prints them. With `--idle-ms M`, it then
//! measures the CPU the runtime uses while idle for M ms, with no work at all and with
//! a timer every millisecond on each loop (what an idle poll costs between events).

use coreloop::{Backend, IoLoop, LoopHandle, Runtime, WakeVia};
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

/// CPU time of every thread of this process so far (from /proc; zero elsewhere).
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
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
    lp.call_on(&peer, |remote| remote.shard_id())
        .then(move |lp, answer| {
            if let Err(e) = answer {
                eprintln!("cross_core: the peer did not answer: {e}");
                let _ = done.send(());
                return;
            }
            RTTS.with(|r| r.borrow_mut().push(sent.elapsed()));
            ping(lp, peer2, left - 1, done);
        });
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
    let mut builder = Runtime::builder().backend(backend).idle_poll(idle_poll);
    match arg::<String>("--wake").as_deref() {
        None => {}
        Some("eventfd") => builder = builder.wake_via(WakeVia::Eventfd),
        Some("msg-ring") => builder = builder.wake_via(WakeVia::MsgRing),
        Some(_) => {
            eprintln!("--wake takes eventfd or msg-ring");
            std::process::exit(2)
        }
    }
    let rt = builder.build()?;
    let n = rt.shards();
    let senders = arg("--senders").unwrap_or(n).clamp(1, n);
    println!("{n} shards, {rounds} round trips from each of {senders} shards to the next");

    let (done_tx, done_rx) = mpsc::channel();
    let (cpu0, t0) = (process_cpu(), Instant::now());
    for shard in 0..senders {
        let peer = rt.handle((shard + 1) % n).clone();
        let done = done_tx.clone();
        rt.handle(shard)
            .add_callback(move |lp| ping(lp, peer, rounds, done))
            .expect("loop alive");
    }
    for _ in 0..senders {
        done_rx.recv().expect("a shard finished");
    }
    let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed());
    let trips = f64::from(rounds) * senders as f64;
    println!(
        "CPU per round trip {:.2} us (all threads, idle polling included), wall per round trip {:.2} us",
        cpu.as_secs_f64() * 1e6 / trips,
        wall.as_secs_f64() * 1e6 / trips
    );

    let stats = rt
        .call_on_all(|lp| {
            let mut rtts = RTTS.with(|r| r.take());
            rtts.sort();
            let q = |p: f64| {
                let i = (rtts.len().saturating_sub(1) as f64 * p) as usize;
                rtts.get(i).copied().unwrap_or_default()
            };
            let st = lp.loop_stats();
            (
                (st.eventfd_wakes, st.ring_wakes),
                lp.shard_id(),
                lp.backend_detail(),
                rtts.len(),
                q(0.0),
                q(0.5),
                q(0.99),
                q(1.0),
            )
        })
        .wait()
        .expect("every shard answers");
    for ((eventfd, ring), shard, backend, count, min, p50, p99, max) in stats {
        println!(
            "shard {shard} woke a sleeping loop {eventfd} times by eventfd, {ring} by MSG_RING"
        );
        if count > 0 {
            println!(
                "shard {shard} -> {}: {count} round trips on {backend}: min {min:?}  p50 {p50:?}  p99 {p99:?}  max {max:?}",
                (shard + 1) % n
            );
        }
    }
    if let Some(ms) = arg::<u64>("--idle-ms") {
        idle_cost(&rt, Duration::from_millis(ms));
    }
    rt.shutdown().map_err(std::io::Error::other)
}

/// Prints the CPU the runtime uses over `span` with nothing to do, then with a timer
/// every millisecond on each loop.
fn idle_cost(rt: &Runtime, span: Duration) {
    std::thread::sleep(Duration::from_millis(50)); // let the loops settle
    let cpu0 = process_cpu();
    std::thread::sleep(span);
    let idle = process_cpu() - cpu0;
    let ticking = rt
        .call_on_all(|lp| {
            let t = lp.spawn(async {
                let mut tick = coreloop::interval(Duration::from_millis(1));
                loop {
                    tick.tick().await;
                }
            });
            t.detach();
        })
        .wait()
        .is_ok();
    let cpu0 = process_cpu();
    std::thread::sleep(span);
    let timers = process_cpu() - cpu0;
    let share = |cpu: Duration| 100.0 * cpu.as_secs_f64() / span.as_secs_f64();
    println!(
        "idle for {span:?}: CPU {:.2}% of one core with no work, {:.2}% with a 1 ms timer on each of {} loops{}",
        share(idle),
        share(timers),
        rt.shards(),
        if ticking { "" } else { " (timers not started)" }
    );
}
