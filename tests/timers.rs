//! Timers on a running loop: order, never early, cancellation (also by an earlier timer
//! of the same iteration), stale ids, and bounded memory under add+cancel churn.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, TimeoutId};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{new_loop, run};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[on_both_backends]
#[test]
fn earliest_first_and_equal_deadlines_in_order_added(backend: Backend) {
    let lp = new_loop(backend);
    let order = Rc::new(RefCell::new(Vec::new()));
    let t0 = Instant::now() + ms(5);
    for (name, at) in [("c", 20), ("a1", 0), ("b", 10), ("a2", 0), ("a3", 0)] {
        let o = order.clone();
        lp.add_timeout(t0 + ms(at), move |_| o.borrow_mut().push(name));
    }
    lp.add_timeout(t0 + ms(20), |lp| lp.stop()); // after "c": same deadline, added later
    run(&lp);
    assert_eq!(*order.borrow(), ["a1", "a2", "a3", "b", "c"]);
}

#[on_both_backends]
#[test]
fn a_timer_never_fires_early(backend: Backend) {
    let lp = new_loop(backend);
    let late = Rc::new(RefCell::new(Vec::new()));
    let delays = [0u64, 1, 2, 3, 5, 8, 13, 21];
    for &d in &delays {
        let l = late.clone();
        let asked = Instant::now();
        let delay = Duration::from_micros(d * 700);
        lp.call_later(delay, move |_| {
            l.borrow_mut().push((delay, asked.elapsed()));
        });
        let l = late.clone();
        let deadline = Instant::now() + delay;
        lp.call_at(deadline, move |_| {
            l.borrow_mut()
                .push((delay, delay + Instant::now().duration_since(deadline)));
        });
    }
    lp.call_later(ms(40), |lp| lp.stop());
    run(&lp);
    let late = late.borrow();
    assert_eq!(late.len(), delays.len() * 2);
    for (asked, waited) in late.iter() {
        assert!(waited >= asked, "fired after {waited:?}, asked {asked:?}");
    }
}

#[on_both_backends]
#[test]
fn a_timer_cancelled_by_an_earlier_timer_of_the_same_iteration_does_not_run(backend: Backend) {
    let lp = new_loop(backend);
    let at = Instant::now() + ms(5);
    let victim: Rc<Cell<Option<TimeoutId>>> = Rc::new(Cell::new(None));
    let ran = Rc::new(Cell::new(false));
    let v = victim.clone();
    lp.add_timeout(at, move |lp| {
        assert!(lp.remove_timeout(v.get().unwrap()));
    });
    let r = ran.clone();
    victim.set(Some(lp.add_timeout(at, move |_| r.set(true))));
    lp.add_timeout(at, |lp| lp.stop());
    run(&lp);
    assert!(!ran.get());
}

#[on_both_backends]
#[test]
fn cancelling_a_fired_or_unknown_timer_is_a_no_op(backend: Backend) {
    let lp = new_loop(backend);
    let fired = lp.call_later(Duration::ZERO, |_| {});
    lp.call_later(ms(1), |lp| lp.stop());
    run(&lp);
    assert!(!lp.remove_timeout(fired));
    // The fired timer's slot is reused by the next one; the old id must not touch it.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let fresh = lp.call_later(ms(1), move |lp| {
        r.set(true);
        lp.stop();
    });
    assert_ne!(fired, fresh);
    assert!(!lp.remove_timeout(fired));
    run(&lp);
    assert!(ran.get(), "an old id cancelled a newer timer");
}

#[on_both_backends]
#[test]
fn timers_added_by_timers_wait_for_the_next_iteration(backend: Backend) {
    // A timer that re-arms itself with zero delay must not starve I/O: a remote callback
    // and a later timer still get their turn.
    let lp = new_loop(backend);
    let spins = Rc::new(Cell::new(0u64));
    fn spin(lp: &coreloop::IoLoop, spins: Rc<Cell<u64>>) {
        spins.set(spins.get() + 1);
        let s = spins.clone();
        lp.call_later(Duration::ZERO, move |lp| spin(lp, s));
    }
    let s = spins.clone();
    lp.call_later(Duration::ZERO, move |lp| spin(lp, s));
    lp.call_later(ms(20), |lp| lp.stop());
    run(&lp);
    assert!(spins.get() > 1);
}

#[on_both_backends]
#[test]
fn a_million_add_cancel_pairs_keep_the_heap_bounded(backend: Backend) {
    let lp = new_loop(backend);
    let keep: Vec<_> = (0..100)
        .map(|i| lp.call_later(ms(60_000 + i), |_| {}))
        .collect();
    let mut max_heap = 0;
    for i in 0..1_000_000u64 {
        let id = lp.call_later(Duration::from_secs(1 + i % 100), |_| unreachable!());
        assert!(lp.remove_timeout(id));
        max_heap = max_heap.max(lp.timer_heap_len());
    }
    assert_eq!(lp.pending_timers(), keep.len());
    // The bound IoLoop::timer_heap_len documents: 512 stale entries at most beyond
    // the pending ones while they are fewer than half the heap.
    assert!(
        max_heap <= (keep.len() + 513).max(2 * keep.len() + 1),
        "heap reached {max_heap} entries"
    );
    // The loop still works and fires nothing cancelled.
    lp.call_later(ms(1), |lp| lp.stop());
    run(&lp);
}

#[on_both_backends]
#[test]
fn loop_time_is_cached_and_monotonic(backend: Backend) {
    let lp = new_loop(backend);
    let seen = Rc::new(RefCell::new(Vec::new()));
    for i in 0..5 {
        let s = seen.clone();
        lp.call_later(ms(i), move |lp| {
            s.borrow_mut().push((lp.time(), Instant::now()))
        });
    }
    lp.call_later(ms(6), |lp| lp.stop());
    run(&lp);
    let seen = seen.borrow();
    for w in seen.windows(2) {
        assert!(w[0].0 <= w[1].0);
    }
    for (cached, real) in seen.iter() {
        assert!(cached <= real);
    }
}

#[on_both_backends]
#[test]
fn a_panicking_timer_is_logged_and_the_loop_goes_on(backend: Backend) {
    util::capture_logs();
    let lp = new_loop(backend);
    lp.call_later(ms(1), |_| panic!("timer boom"));
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    lp.call_later(ms(2), move |lp| {
        a.set(true);
        lp.stop();
    });
    run(&lp);
    assert!(after.get());
    let logs = util::logs_of_this_thread();
    assert!(
        logs.iter()
            .any(|l| l.contains("timer boom") && l.contains("tests/timers.rs")),
        "{logs:?}"
    );
}
