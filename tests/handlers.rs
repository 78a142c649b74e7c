//! fd handlers: readiness on socketpairs and pipes, interest masks, level triggering,
//! and adding/updating/removing handlers, also from inside handlers.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, Interest, IoLoop, Ready};
use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;
use util::{new_loop, run, run_for};

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

#[on_both_backends]
#[test]
fn readable_on_a_socketpair(backend: Backend) {
    let lp = new_loop(backend);
    let (mut a, mut b) = pair();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, ready| {
        assert!(ready.is_readable(), "{ready:?}");
        let mut buf = [0u8; 64];
        let n = b.read(&mut buf).unwrap();
        g.borrow_mut().extend_from_slice(&buf[..n]);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    lp.call_later(Duration::from_millis(5), move |_| {
        a.write_all(b"hello").unwrap()
    });
    run(&lp);
    assert_eq!(&*got.borrow(), b"hello");
}

#[on_both_backends]
#[test]
fn readable_on_a_pipe(backend: Backend) {
    let lp = new_loop(backend);
    let (mut r, mut w) = std::io::pipe().unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let fd = r.as_raw_fd();
    lp.add_handler(fd, Interest::READABLE, move |lp, fd, ready| {
        assert!(ready.is_readable());
        let mut buf = [0u8; 64];
        // Readable: this read returns what is there without blocking.
        let n = r.read(&mut buf).unwrap();
        g.borrow_mut().extend_from_slice(&buf[..n]);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    w.write_all(b"through a pipe").unwrap();
    run(&lp);
    assert_eq!(&*got.borrow(), b"through a pipe");
}

#[on_both_backends]
#[test]
fn pipe_write_end_reports_hup_when_reader_closes(backend: Backend) {
    let lp = new_loop(backend);
    let (r, w) = std::io::pipe().unwrap();
    let seen = Rc::new(Cell::new(Ready::EMPTY));
    let s = seen.clone();
    lp.add_handler(w.as_raw_fd(), Interest::NONE, move |lp, fd, ready| {
        s.set(ready);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    lp.call_later(Duration::from_millis(5), move |_| drop(r));
    run(&lp);
    assert!(
        seen.get().is_error() || seen.get().is_hup(),
        "{:?}",
        seen.get()
    );
    assert!(
        !seen.get().is_writable(),
        "NONE interest must not report writable"
    );
    drop(w);
}

#[on_both_backends]
#[test]
fn writable_when_asked(backend: Backend) {
    let lp = new_loop(backend);
    let (a, _b) = pair();
    let seen = Rc::new(Cell::new(Ready::EMPTY));
    let s = seen.clone();
    lp.add_handler(a.as_raw_fd(), Interest::WRITABLE, move |lp, fd, ready| {
        s.set(ready);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    run(&lp);
    assert!(seen.get().is_writable() && !seen.get().is_readable());
}

#[on_both_backends]
#[test]
fn readable_interest_never_reports_writable(backend: Backend) {
    let lp = new_loop(backend);
    let (a, mut b) = pair();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let c = calls.clone();
    let mut a2 = a.try_clone().unwrap();
    lp.add_handler(a.as_raw_fd(), Interest::READABLE, move |lp, fd, ready| {
        c.borrow_mut().push(ready);
        let mut buf = [0u8; 16];
        let _ = a2.read(&mut buf);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    // The socket is writable all along; nothing may be reported until data arrives.
    run_for(&lp, Duration::from_millis(30));
    assert!(calls.borrow().is_empty(), "{:?}", calls.borrow());
    b.write_all(b"x").unwrap();
    run(&lp);
    let calls = calls.borrow();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].is_readable() && !calls[0].is_writable(),
        "{:?}",
        calls[0]
    );
}

/// A handler that reads one byte per call still sees every byte: readiness is
/// level-triggered on both backends (a multishot poll would hang here).
#[on_both_backends]
#[test]
fn level_triggered_one_byte_per_call(backend: Backend) {
    let lp = new_loop(backend);
    let (mut a, mut b) = pair();
    a.write_all(b"0123456789").unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
        let mut byte = [0u8; 1];
        match b.read(&mut byte) {
            Ok(1) => g.borrow_mut().push(byte[0]),
            r => panic!("unexpected read {r:?}"),
        }
        if g.borrow().len() == 10 {
            lp.remove_handler(fd);
            lp.stop();
        }
    })
    .unwrap();
    run(&lp);
    assert_eq!(&*got.borrow(), b"0123456789");
}

#[on_both_backends]
#[test]
fn a_second_handler_for_one_fd_is_an_error(backend: Backend) {
    let lp = new_loop(backend);
    let (a, _b) = pair();
    lp.add_handler(a.as_raw_fd(), Interest::READABLE, |_, _, _| {})
        .unwrap();
    let err = lp
        .add_handler(a.as_raw_fd(), Interest::WRITABLE, |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    lp.remove_handler(a.as_raw_fd());
    // After removal the fd can be added again.
    lp.add_handler(a.as_raw_fd(), Interest::READABLE, |_, _, _| {})
        .unwrap();
}

/// fds that are not open are refused, and a huge bogus number allocates nothing.
/// (A closed fd's number could be reused at once by a test on another thread, so
/// the numbers here are ones no open file has: negative, or beyond any fd limit.)
#[on_both_backends]
#[test]
fn an_fd_that_is_not_open_is_refused(backend: Backend) {
    let lp = new_loop(backend);
    for fd in [-1, i32::MAX - 1, 1 << 30] {
        let err = lp
            .add_handler(fd, Interest::READABLE, |_, _, _| {})
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidInput) || err.raw_os_error() == Some(9),
            "fd {fd}: {err}"
        );
    }
    // Nothing was registered: a real fd can still be added.
    let (a, _b) = pair();
    lp.add_handler(a.as_raw_fd(), Interest::READABLE, |_, _, _| {})
        .unwrap();
}

#[on_both_backends]
#[test]
fn removing_an_unknown_fd_is_a_no_op(backend: Backend) {
    let lp = new_loop(backend);
    lp.remove_handler(4000);
    lp.remove_handler(-3);
    let (a, _b) = pair();
    lp.remove_handler(a.as_raw_fd());
    assert!(lp
        .update_handler(a.as_raw_fd(), Interest::READABLE)
        .is_err());
}

#[on_both_backends]
#[test]
fn remove_handler_from_inside_its_handler(backend: Backend) {
    let lp = new_loop(backend);
    let (mut a, b) = pair();
    a.write_all(b"data that stays unread").unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
        c.set(c.get() + 1);
        lp.remove_handler(fd); // the fd stays readable: only removal keeps us quiet
    })
    .unwrap();
    run_for(&lp, Duration::from_millis(30));
    assert_eq!(calls.get(), 1);
}

/// Two fds ready in the same iteration; whichever handler runs first removes the other,
/// which must then not be called for the event already collected.
#[on_both_backends]
#[test]
fn an_fd_removed_during_dispatch_is_not_dispatched(backend: Backend) {
    let lp = new_loop(backend);
    let (mut a1, b1) = pair();
    let (mut a2, b2) = pair();
    a1.write_all(b"1").unwrap();
    a2.write_all(b"2").unwrap();
    let calls = Rc::new(Cell::new(0));
    let (fd1, fd2) = (b1.as_raw_fd(), b2.as_raw_fd());
    for (mine, other) in [(fd1, fd2), (fd2, fd1)] {
        let c = calls.clone();
        lp.add_handler(mine, Interest::READABLE, move |lp, fd, _| {
            c.set(c.get() + 1);
            lp.remove_handler(other);
            lp.remove_handler(fd);
        })
        .unwrap();
    }
    run_for(&lp, Duration::from_millis(30));
    assert_eq!(calls.get(), 1);
    drop((b1, b2));
}

/// A handler that removes its fd and registers a new handler on it: the new handler is
/// not called for the event of the old registration, only for later readiness.
#[on_both_backends]
#[test]
fn a_re_added_fd_gets_no_stale_event(backend: Backend) {
    let lp = new_loop(backend);
    let (mut a, b) = pair();
    a.write_all(b"x").unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
        l.borrow_mut().push("old");
        lp.remove_handler(fd);
        let l2 = l.clone();
        // The new handler only wants writability; the old readable event must not
        // reach it.
        lp.add_handler(fd, Interest::WRITABLE, move |lp, fd, ready| {
            assert!(!ready.is_readable(), "stale readable event: {ready:?}");
            l2.borrow_mut().push("new");
            lp.remove_handler(fd);
        })
        .unwrap();
    })
    .unwrap();
    run_for(&lp, Duration::from_millis(30));
    assert_eq!(*log.borrow(), ["old", "new"]);
    drop(b);
}

#[on_both_backends]
#[test]
fn update_handler_changes_the_interest(backend: Backend) {
    let lp = new_loop(backend);
    let (a, _b) = pair();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.add_handler(a.as_raw_fd(), Interest::READABLE, move |lp, fd, ready| {
        s.borrow_mut().push(ready);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    run_for(&lp, Duration::from_millis(20));
    assert!(seen.borrow().is_empty(), "nothing to read yet");
    lp.update_handler(a.as_raw_fd(), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    run(&lp);
    assert!(seen.borrow()[0].is_writable());
}

#[on_both_backends]
#[test]
fn hang_up_is_reported(backend: Backend) {
    let lp = new_loop(backend);
    let (a, b) = pair();
    let seen = Rc::new(Cell::new(Ready::EMPTY));
    let s = seen.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, ready| {
        s.set(ready);
        lp.remove_handler(fd);
        lp.stop();
    })
    .unwrap();
    lp.call_later(Duration::from_millis(5), move |_| drop(a));
    run(&lp);
    assert!(
        seen.get().is_hup() && seen.get().is_readable(),
        "{:?}",
        seen.get()
    );
    drop(b);
}

#[on_both_backends]
#[test]
fn a_panicking_handler_is_removed_and_the_loop_goes_on(backend: Backend) {
    util::capture_logs();
    let lp = new_loop(backend);
    let (mut a, b) = pair();
    a.write_all(b"x").unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |_, _, _| {
        c.set(c.get() + 1);
        panic!("handler boom");
    })
    .unwrap();
    let later = Rc::new(Cell::new(false));
    let l = later.clone();
    lp.call_later(Duration::from_millis(30), move |lp| {
        l.set(true);
        lp.stop();
    });
    run(&lp);
    assert_eq!(
        calls.get(),
        1,
        "removed after its panic, though still readable"
    );
    assert!(later.get(), "the loop went on");
    let logs = util::logs_of_this_thread();
    assert!(
        logs.iter()
            .any(|l| l.contains("handler boom") && l.contains("tests/handlers.rs")),
        "{logs:?}"
    );
    // The fd is free for a new handler.
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, |_, _, _| {})
        .unwrap();
}

/// A handler that replaces itself with a new handler and then panics: the loop removes
/// only the registration that panicked, never the new one.
#[on_both_backends]
#[test]
fn a_panic_after_replacing_itself_leaves_the_new_handler(backend: Backend) {
    util::capture_logs();
    let lp = new_loop(backend);
    let (mut a, b) = pair();
    a.write_all(b"x").unwrap();
    let new_calls = Rc::new(Cell::new(0));
    let n = new_calls.clone();
    let mut b2 = b.try_clone().unwrap();
    lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
        lp.remove_handler(fd);
        let n = n.clone();
        let mut b3 = b2.try_clone().unwrap();
        lp.add_handler(fd, Interest::READABLE, move |lp, fd, _| {
            let mut buf = [0u8; 8];
            let _ = b3.read(&mut buf);
            n.set(n.get() + 1);
            lp.remove_handler(fd);
            lp.stop();
        })
        .unwrap();
        let _ = &mut b2;
        panic!("old handler panics after replacing itself");
    })
    .unwrap();
    run(&lp);
    assert_eq!(
        new_calls.get(),
        1,
        "the new handler must survive the old one's panic"
    );
    drop(b);
}

#[on_both_backends]
#[test]
fn many_fds_each_get_their_own_events(backend: Backend) {
    let lp = new_loop(backend);
    let pairs: Vec<_> = (0..200).map(|_| pair()).collect();
    let hits = Rc::new(RefCell::new(vec![0u32; pairs.len()]));
    for (i, (_, b)) in pairs.iter().enumerate() {
        let h = hits.clone();
        let mut b = b.try_clone().unwrap();
        lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
            let mut buf = [0u8; 8];
            assert_eq!(b.read(&mut buf).unwrap(), 1);
            assert_eq!(buf[0], i as u8);
            h.borrow_mut()[i] += 1;
            lp.remove_handler(fd);
        })
        .unwrap();
    }
    for (i, (a, _)) in pairs.iter().enumerate() {
        (&*a).write_all(&[i as u8]).unwrap();
    }
    run_for(&lp, Duration::from_millis(50));
    assert!(hits.borrow().iter().all(|&n| n == 1), "{:?}", hits.borrow());
}

#[on_both_backends]
#[test]
fn handlers_see_the_loop_they_run_on(backend: Backend) {
    let lp = new_loop(backend);
    let (mut a, b) = pair();
    a.write_all(b"x").unwrap();
    let ok = Rc::new(Cell::new(false));
    let o = ok.clone();
    let h = lp.handle();
    lp.add_handler(
        b.as_raw_fd(),
        Interest::READABLE,
        move |lp: &IoLoop, fd, _| {
            o.set(IoLoop::current().unwrap().handle().same_loop(&h) && lp.is_running());
            lp.remove_handler(fd);
            lp.stop();
        },
    )
    .unwrap();
    run(&lp);
    assert!(ok.get());
    drop(b);
}
