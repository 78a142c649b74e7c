//! LoopHandle: waking a sleeping loop, many senders, ping-pong between loops (no lost
//! wake-up), and handles whose loop is gone.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, IoLoop, LoopHandle};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use util::new_loop;

/// A loop on its own thread that runs until stopped; returns its handle.
fn spawn_loop(backend: Backend) -> (LoopHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let lp = new_loop(backend);
        tx.send(lp.handle()).unwrap();
        lp.start().unwrap();
    });
    (rx.recv().unwrap(), t)
}

#[on_both_backends]
#[test]
fn a_sleeping_loop_is_woken_by_another_thread(backend: Backend) {
    let (h, t) = spawn_loop(backend);
    for _ in 0..20 {
        // Let the loop fall asleep: it has no timers, so it waits with no timeout.
        std::thread::sleep(Duration::from_millis(5));
        let (tx, rx) = mpsc::channel();
        let sent = Instant::now();
        h.add_callback(move |_| tx.send(sent.elapsed()).unwrap())
            .unwrap();
        // Without a wake-up this would never arrive; HANG only bounds a broken build.
        let waited = rx.recv_timeout(util::HANG).expect("callback never ran");
        assert!(waited < Duration::from_secs(1), "woken after {waited:?}");
    }
    h.stop().unwrap();
    t.join().unwrap();
}

#[on_both_backends]
#[test]
fn stop_from_another_thread_wakes_the_loop(backend: Backend) {
    let (h, t) = spawn_loop(backend);
    std::thread::sleep(Duration::from_millis(10));
    h.stop().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        t.join().unwrap();
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(util::HANG)
        .expect("the loop did not stop");
}

/// 8 threads each send 100,000 callbacks: every one runs exactly once, and the callbacks
/// of one sender run in the order it sent them.
#[on_both_backends]
#[test]
fn eight_senders_100k_callbacks_each_none_lost(backend: Backend) {
    const SENDERS: usize = 8;
    const EACH: usize = 100_000;
    let (h, t) = spawn_loop(backend);
    let runs: Arc<Vec<AtomicU32>> =
        Arc::new((0..SENDERS * EACH).map(|_| AtomicU32::new(0)).collect());
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..SENDERS).map(|_| AtomicU64::new(0)).collect());
    let total = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|s| {
        for sender in 0..SENDERS {
            let (h, runs, last, total, done_tx) = (
                h.clone(),
                runs.clone(),
                last.clone(),
                total.clone(),
                done_tx.clone(),
            );
            s.spawn(move || {
                for i in 0..EACH {
                    let (runs, last, total, done_tx) =
                        (runs.clone(), last.clone(), total.clone(), done_tx.clone());
                    h.add_callback(move |_| {
                        runs[sender * EACH + i].fetch_add(1, Ordering::Relaxed);
                        let prev = last[sender].swap(i as u64 + 1, Ordering::Relaxed);
                        assert_eq!(prev, i as u64, "sender {sender} out of order");
                        if total.fetch_add(1, Ordering::Relaxed) + 1 == SENDERS * EACH {
                            done_tx.send(()).unwrap();
                        }
                    })
                    .unwrap();
                }
            });
        }
    });
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("not every callback ran");
    h.stop().unwrap();
    t.join().unwrap();
    assert_eq!(total.load(Ordering::Relaxed), SENDERS * EACH);
    assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
}

/// Two loops on two threads bounce one callback 100,000 times. Each hop finds the other
/// loop asleep or about to sleep, which is where a lost wake-up would hang.
#[on_both_backends]
#[test]
fn ping_pong_100k_between_two_loops(backend: Backend) {
    const HOPS: u64 = 100_000;
    let (b, tb) = spawn_loop(backend);
    let a = new_loop(backend);
    fn hop(from: &IoLoop, to: LoopHandle, left: u64) {
        if left == 0 {
            from.stop();
            return;
        }
        let back = from.handle();
        to.add_callback(move |lp| hop(lp, back, left - 1)).unwrap();
    }
    let count = HOPS;
    let b2 = b.clone();
    a.add_callback(move |lp| hop(lp, b2, count));
    let t0 = Instant::now();
    // Even hop counts end on `a`; give it a generous bound.
    a.call_later(Duration::from_secs(120), |lp| lp.stop());
    a.start().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(120), "ping-pong stalled");
    b.stop().unwrap();
    tb.join().unwrap();
}

#[on_both_backends]
#[test]
fn a_handle_to_a_dropped_loop_errs_and_hands_the_callback_back(backend: Backend) {
    let (h, t) = spawn_loop(backend);
    h.stop().unwrap();
    t.join().unwrap(); // the loop is dropped at the end of its thread
    assert!(h.is_closed());
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let err = h
        .add_callback(move |_| {
            r.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap_err();
    assert!(h.stop().is_err());
    // The callback comes back and can still be called, on some other loop.
    let cb = err.into_callback().expect("callback handed back");
    let other = new_loop(backend);
    cb(&other);
    assert_eq!(ran.load(Ordering::Relaxed), 1);
}

#[on_both_backends]
#[test]
fn callbacks_from_threads_run_on_the_loop_thread(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let lp = new_loop(backend);
        tx.send((lp.handle(), std::thread::current().id())).unwrap();
        lp.start().unwrap();
    });
    let (h, loop_thread) = rx.recv().unwrap();
    let (tx, rx) = mpsc::channel();
    h.add_callback(move |lp| {
        tx.send((
            std::thread::current().id(),
            IoLoop::current().is_some(),
            lp.is_running(),
        ))
        .unwrap()
    })
    .unwrap();
    let (ran_on, current, running) = rx.recv_timeout(util::HANG).unwrap();
    assert_eq!(ran_on, loop_thread);
    assert!(current && running);
    h.stop().unwrap();
    t.join().unwrap();
}
