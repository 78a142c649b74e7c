//! `IoLoop::set_batch_wait`: on io_uring a busy loop gathers completions for a while
//! once one has come; it must not delay a loop that was idle or lightly loaded, nor a
//! timer, and streams work as before. On epoll it is refused and changes nothing.
//! (That a busy loop does batch, and that a timer sooner than the batch is not late
//! even then, is tested in the io_uring backend's unit tests, which can make a loop
//! busy without depending on this machine's load.)
//!
//! The time bounds below are wide (the batch wait is 300-500 ms, the bounds half of
//! that): they tell "waited for the batch" from "did not", not how fast anything is.

mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, IoLoop, IoStream};
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{new_loop, run, tcp_pair};

/// Taken on io_uring (this kernel has IORING_FEAT_MIN_TIMEOUT), refused on epoll.
#[on_both_backends]
#[test]
fn taken_where_the_kernel_can(backend: Backend) {
    let lp = new_loop(backend);
    let taken = lp.set_batch_wait(Duration::from_micros(100));
    assert_eq!(taken, backend == Backend::Uring);
    // Zero turns it off again (taken as a setting where batching is possible).
    assert_eq!(lp.set_batch_wait(Duration::ZERO), backend == Backend::Uring);
}

/// A timer due sooner than the batch wait fires on time.
#[on_both_backends]
#[test]
fn a_timer_sooner_than_the_batch_wait_is_not_late(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_batch_wait(Duration::from_millis(500));
    let start = Instant::now();
    let fired = Rc::new(Cell::new(None));
    let f = fired.clone();
    lp.call_later(Duration::from_millis(20), move |lp| {
        f.set(Some(start.elapsed()));
        lp.stop();
    });
    run(&lp);
    let after = fired.get().expect("fired");
    assert!(after < Duration::from_millis(250), "fired after {after:?}");
}

/// A loop idle for longer than the batch wait handles the next wake-up at once.
#[on_both_backends]
#[test]
fn an_idle_loop_runs_at_once(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_batch_wait(Duration::from_millis(300));
    let handle = lp.handle();
    let sent = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500)); // idle longer than the wait
        let at = Instant::now();
        handle
            .add_callback(move |lp| {
                let late = at.elapsed();
                assert!(late < Duration::from_millis(150), "ran {late:?} after");
                lp.stop();
            })
            .expect("send");
    });
    run(&lp);
    sent.join().unwrap();
}

/// Echoes every line back, for as long as the stream is open.
fn echo(s: &IoStream) {
    s.read_until(b"\n", 1024).then(|_, s, line| {
        if let Ok(line) = line {
            s.write(&line);
            echo(s);
        }
    });
}

/// Runs `lp` with an echoing stream while a client thread makes `n` round trips one
/// after the other, each answered with its own line; how long they took.
fn echo_round_trips(lp: &IoLoop, n: usize) -> Duration {
    let (stream, mut theirs) = tcp_pair(lp);
    echo(&stream);
    let client = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..n {
            let msg = format!("line {i}\n");
            theirs.write_all(msg.as_bytes()).unwrap();
            let mut got = vec![0; msg.len()];
            theirs.read_exact(&mut got).unwrap();
            assert_eq!(got, msg.as_bytes());
        }
        start.elapsed()
    });
    let h = lp.handle();
    let waiter = std::thread::spawn(move || {
        let took = client.join().unwrap();
        let _ = h.stop();
        took
    });
    run(lp);
    waiter.join().unwrap()
}

/// Streams behave as without it: 200 round trips of an echo, each answered.
#[on_both_backends]
#[test]
fn streams_echo_with_a_batch_wait(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_batch_wait(Duration::from_micros(200));
    echo_round_trips(&lp, 200);
}

/// A lightly loaded loop answers at once: 20 round trips one after the other with a
/// 300 ms batch wait take far less than 20 x 300 ms (a batch wait applied to every wait
/// would hold each answer until its time is up).
#[on_both_backends]
#[test]
fn a_lightly_loaded_loop_is_not_delayed(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_batch_wait(Duration::from_millis(300));
    let took = echo_round_trips(&lp, 20);
    assert!(
        took < Duration::from_secs(3),
        "20 round trips took {took:?}"
    );
}
