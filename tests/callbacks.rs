//! Local callbacks: order, next-iteration rule, no starvation of I/O and timers,
//! panics caught.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, Interest, IoLoop};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;
use util::{new_loop, run};

#[on_both_backends]
#[test]
fn callbacks_run_in_the_order_added(backend: Backend) {
    let lp = new_loop(backend);
    let order = Rc::new(RefCell::new(Vec::new()));
    for i in 0..100 {
        let o = order.clone();
        lp.add_callback(move |_| o.borrow_mut().push(i));
    }
    lp.add_callback(|lp| lp.stop());
    run(&lp);
    assert_eq!(*order.borrow(), (0..100).collect::<Vec<_>>());
}

/// A callback added by a callback runs in the next iteration, after the I/O wait: a
/// self-re-adding callback cannot starve a readable fd or a due timer.
#[on_both_backends]
#[test]
fn a_callback_loop_does_not_starve_io_or_timers(backend: Backend) {
    let lp = new_loop(backend);
    let spins = Rc::new(Cell::new(0u64));
    fn spin(lp: &IoLoop, s: Rc<Cell<u64>>) {
        s.set(s.get() + 1);
        lp.add_callback(move |lp| spin(lp, s));
    }
    let s = spins.clone();
    lp.add_callback(move |lp| spin(lp, s));

    let (mut a, mut b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let io_seen = Rc::new(Cell::new(false));
    let io = io_seen.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
        let mut buf = [0u8; 4];
        let _ = b.read(&mut buf);
        io.set(true);
        lp.remove_handler(fd);
    })
    .unwrap();
    lp.call_later(Duration::from_millis(2), move |_| {
        a.write_all(b"io").unwrap()
    });
    let timer_seen = Rc::new(Cell::new(false));
    let t = timer_seen.clone();
    lp.call_later(Duration::from_millis(20), move |lp| {
        t.set(true);
        lp.stop();
    });
    run(&lp);
    assert!(io_seen.get(), "I/O starved by callbacks");
    assert!(timer_seen.get(), "timer starved by callbacks");
    assert!(spins.get() > 10, "only {} spins", spins.get());
}

#[on_both_backends]
#[test]
fn callbacks_added_before_start_run_after_start(backend: Backend) {
    let lp = new_loop(backend);
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.add_callback(move |lp| {
        r.set(true);
        lp.stop();
    });
    assert!(!ran.get());
    run(&lp);
    assert!(ran.get());
}

#[on_both_backends]
#[test]
fn a_panicking_callback_is_logged_and_the_next_one_runs(backend: Backend) {
    util::capture_logs();
    let lp = new_loop(backend);
    lp.add_callback(|_| panic!("callback boom {}", 7));
    let next = Rc::new(Cell::new(false));
    let n = next.clone();
    lp.add_callback(move |lp| {
        n.set(true);
        lp.stop();
    });
    run(&lp);
    assert!(next.get());
    let logs = util::logs_of_this_thread();
    assert!(
        logs.iter()
            .any(|l| l.contains("callback boom 7") && l.contains("tests/callbacks.rs")),
        "{logs:?}"
    );
}
