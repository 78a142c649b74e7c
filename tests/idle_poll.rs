//! The idle poll (`IoLoop::set_idle_poll`): a loop that looks for work before it sleeps
//! takes callbacks from other threads, I/O, timers and stop() without sleeping, and
//! without sleeping past a timer; with it off, the same traffic puts the loop to sleep.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, Interest, LoopHandle};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use util::{new_loop, run};

/// Longer than any test waits: a loop that idle-polls this long never sleeps in a test.
const LONG: Duration = Duration::from_secs(60);

/// A loop on its own thread that idle-polls for `poll` and runs until stopped.
fn spawn_loop(backend: Backend, poll: Duration) -> (LoopHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let lp = new_loop(backend);
        lp.set_idle_poll(poll);
        tx.send(lp.handle()).unwrap();
        lp.start().unwrap();
    });
    (rx.recv().unwrap(), t)
}

/// Sends 20 callbacks 2 ms apart, each after the last one ran; returns how many times
/// the loop went to sleep meanwhile.
fn sleeps_during_remote_traffic(h: &LoopHandle) -> u64 {
    let sleeps = |h: &LoopHandle| {
        let (tx, rx) = mpsc::channel();
        h.add_callback(move |lp| tx.send(lp.loop_stats().sleeps).unwrap())
            .unwrap();
        rx.recv_timeout(util::HANG).expect("stats never came")
    };
    let before = sleeps(h);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2));
        let (tx, rx) = mpsc::channel();
        h.add_callback(move |_| tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(util::HANG).expect("callback never ran");
    }
    sleeps(h) - before
}

#[on_both_backends]
#[test]
fn an_idle_polling_loop_takes_remote_callbacks_without_sleeping(backend: Backend) {
    let (h, t) = spawn_loop(backend, LONG);
    let sleeps = sleeps_during_remote_traffic(&h);
    assert_eq!(
        sleeps, 0,
        "the loop slept {sleeps} times while idle-polling"
    );
    h.stop().unwrap();
    t.join().unwrap();
}

#[on_both_backends]
#[test]
fn without_idle_poll_the_same_traffic_puts_the_loop_to_sleep(backend: Backend) {
    let (h, t) = spawn_loop(backend, Duration::ZERO);
    let sleeps = sleeps_during_remote_traffic(&h);
    // Each 2 ms gap finds the loop with nothing to do: it sleeps in every one.
    assert!(sleeps >= 20, "only {sleeps} sleeps");
    h.stop().unwrap();
    t.join().unwrap();
}

#[on_both_backends]
#[test]
fn io_is_seen_while_idle_polling(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_idle_poll(LONG);
    let (a, mut b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let g = got.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).unwrap();
        g.borrow_mut().extend_from_slice(&buf[..n]);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        (&a).write_all(b"ping").unwrap();
        a
    });
    // `run` fails the test after util::HANG: long before the idle poll would end.
    run(&lp);
    assert_eq!(&*got.borrow(), b"ping");
    let stats = lp.loop_stats();
    assert_eq!(stats.sleeps, 0, "the loop slept instead of polling");
    // The 20 ms of spinning before the write count as idle, not busy.
    assert!(stats.idle >= Duration::from_millis(15), "{stats:?}");
    drop(writer.join().unwrap());
}

#[on_both_backends]
#[test]
fn a_timer_fires_on_time_while_idle_polling(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_idle_poll(LONG);
    let start = Instant::now();
    let fired = std::rc::Rc::new(std::cell::Cell::new(None));
    let f = fired.clone();
    lp.call_later(Duration::from_millis(30), move |lp| {
        f.set(Some(start.elapsed()));
        lp.stop();
    });
    run(&lp);
    let at = fired.get().expect("the timer never fired");
    assert!(at >= Duration::from_millis(30), "fired early: {at:?}");
    // A spin that ignored the timer would run for the whole idle poll (60 s); `run`
    // would have failed at util::HANG. Bound loosely for a loaded machine.
    assert!(at < Duration::from_secs(5), "fired late: {at:?}");
}

#[on_both_backends]
#[test]
fn stop_from_another_thread_ends_the_idle_poll(backend: Backend) {
    let (h, t) = spawn_loop(backend, LONG);
    std::thread::sleep(Duration::from_millis(20));
    let asked = Instant::now();
    h.stop().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        t.join().unwrap();
        tx.send(asked.elapsed()).unwrap();
    });
    let took = rx.recv_timeout(util::HANG).expect("the loop did not stop");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
}
