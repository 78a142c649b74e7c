//! `WakeVia`: a loop that sends work to a sleeping loop wakes it with an eventfd write,
//! or, between io_uring loops set to `MsgRing`, with a `MSG_RING` from its own ring.
//! Either way every callback runs; the counters say which way each wake-up went.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, LoopHandle, LoopStats, WakeVia};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use util::new_loop;

/// A loop on its own thread, waking others `via`, running until stopped.
fn spawn_loop(backend: Backend, via: WakeVia) -> (LoopHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let lp = new_loop(backend);
        lp.set_wake_via(via);
        assert_eq!(lp.wake_via(), via);
        tx.send(lp.handle()).unwrap();
        lp.start().unwrap();
    });
    (rx.recv().unwrap(), t)
}

fn stats_of(h: &LoopHandle) -> LoopStats {
    let (tx, rx) = mpsc::channel();
    h.add_callback(move |lp| tx.send(lp.loop_stats()).unwrap())
        .unwrap();
    rx.recv_timeout(util::HANG).expect("stats never came")
}

/// From loop `a`, 20 times, lets `b` fall asleep and sends it a callback; returns `a`'s
/// stats after.
fn a_wakes_b_20_times(a: &LoopHandle, b: &LoopHandle) -> LoopStats {
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(3));
        let (tx, rx) = mpsc::channel();
        let b2 = b.clone();
        a.add_callback(move |_| {
            b2.add_callback(move |_| tx.send(i).unwrap()).unwrap();
        })
        .unwrap();
        // Without a wake-up this would never arrive; HANG only bounds a broken build.
        assert_eq!(rx.recv_timeout(util::HANG), Ok(i), "callback {i} lost");
    }
    stats_of(a)
}

#[on_both_backends]
#[test]
fn msg_ring_wakes_a_sleeping_loop_on_uring_and_falls_back_to_eventfd_on_epoll(backend: Backend) {
    let (a, ta) = spawn_loop(backend, WakeVia::MsgRing);
    let (b, tb) = spawn_loop(backend, WakeVia::Eventfd);
    let s = a_wakes_b_20_times(&a, &b);
    // `b` sleeps in each 3 ms gap, so (almost) every send had to wake it.
    let woken = s.ring_wakes + s.eventfd_wakes;
    assert!(
        woken >= 10,
        "{woken} wake-ups for 20 sends to a sleeping loop"
    );
    match backend {
        Backend::Uring => assert_eq!(s.eventfd_wakes, 0, "{s:?}"),
        _ => assert_eq!(s.ring_wakes, 0, "{s:?}"),
    }
    for h in [a, b] {
        h.stop().unwrap();
    }
    ta.join().unwrap();
    tb.join().unwrap();
}

#[on_both_backends]
#[test]
fn eventfd_is_used_when_asked(backend: Backend) {
    let (a, ta) = spawn_loop(backend, WakeVia::Eventfd);
    let (b, tb) = spawn_loop(backend, WakeVia::MsgRing);
    let s = a_wakes_b_20_times(&a, &b);
    assert!(s.eventfd_wakes >= 10, "{s:?}");
    assert_eq!(s.ring_wakes, 0, "{s:?}");
    for h in [a, b] {
        h.stop().unwrap();
    }
    ta.join().unwrap();
    tb.join().unwrap();
}

/// Two loops set to `MsgRing` hand a counter back and forth 2,000 times: each hand-off
/// may find the other asleep, awake, or just falling asleep; none may be lost.
#[on_both_backends]
#[test]
fn ping_pong_between_msg_ring_loops_loses_no_wake_up(backend: Backend) {
    let (a, ta) = spawn_loop(backend, WakeVia::MsgRing);
    let (b, tb) = spawn_loop(backend, WakeVia::MsgRing);
    let (done_tx, done_rx) = mpsc::channel();
    fn hop(n: u32, here: LoopHandle, there: LoopHandle, done: mpsc::Sender<u32>) {
        if n == 2000 {
            done.send(n).unwrap();
            return;
        }
        let (h, t) = (here.clone(), there.clone());
        there.add_callback(move |_| hop(n + 1, t, h, done)).unwrap();
    }
    let (a2, b2) = (a.clone(), b.clone());
    a.add_callback(move |_| hop(0, a2, b2, done_tx)).unwrap();
    assert_eq!(done_rx.recv_timeout(util::HANG), Ok(2000));
    for h in [a, b] {
        h.stop().unwrap();
    }
    ta.join().unwrap();
    tb.join().unwrap();
}

/// A thread with no loop has no ring to send from: it writes the eventfd, whatever the
/// target's setting.
#[on_both_backends]
#[test]
fn a_plain_thread_wakes_a_msg_ring_loop(backend: Backend) {
    let (b, tb) = spawn_loop(backend, WakeVia::MsgRing);
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(3));
        let (tx, rx) = mpsc::channel();
        b.add_callback(move |_| tx.send(i).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(util::HANG), Ok(i));
    }
    b.stop().unwrap();
    tb.join().unwrap();
}
