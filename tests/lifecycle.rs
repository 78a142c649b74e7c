//! start/stop/close and IoLoop::current.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, IoLoop};
use std::cell::Cell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{new_loop, run};

#[on_both_backends]
#[test]
fn start_inside_a_running_loop_is_an_error_not_a_deadlock(backend: Backend) {
    let lp = new_loop(backend);
    let kinds = Rc::new(Cell::new(None));
    let k = kinds.clone();
    lp.add_callback(move |lp| {
        k.set(Some(lp.start().unwrap_err().kind()));
        // Another loop on the same thread may not start either.
        let other = IoLoop::with_backend(lp.backend()).unwrap();
        assert!(other.start().is_err());
        lp.stop();
    });
    run(&lp);
    assert_eq!(kinds.get(), Some(ErrorKind::ResourceBusy));
}

#[on_both_backends]
#[test]
fn stop_before_start_makes_the_next_start_return_at_once(backend: Backend) {
    let lp = new_loop(backend);
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.call_later(Duration::from_secs(30), move |_| r.set(true));
    lp.stop();
    let t0 = Instant::now();
    lp.start().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(!ran.get());
    // Only the next start: the one after runs normally.
    lp.call_later(Duration::from_millis(1), |lp| lp.stop());
    run(&lp);
}

#[on_both_backends]
#[test]
fn a_loop_can_be_started_again_after_stop(backend: Backend) {
    let lp = new_loop(backend);
    let n = Rc::new(Cell::new(0));
    for _ in 0..3 {
        let c = n.clone();
        lp.add_callback(move |lp| {
            c.set(c.get() + 1);
            lp.stop();
        });
        run(&lp);
    }
    assert_eq!(n.get(), 3);
}

#[on_both_backends]
#[test]
fn current_is_the_running_loop_only_while_it_runs(backend: Backend) {
    assert!(IoLoop::current().is_none());
    let lp = new_loop(backend);
    let same = Rc::new(Cell::new(false));
    let s = same.clone();
    let h = lp.handle();
    lp.add_callback(move |lp| {
        let cur = IoLoop::current().expect("current inside the loop");
        s.set(cur.handle().same_loop(&h) && cur.backend() == lp.backend());
        lp.stop();
    });
    run(&lp);
    assert!(same.get());
    assert!(IoLoop::current().is_none());
    assert!(!lp.is_running());
}

#[on_both_backends]
#[test]
fn close_drops_everything_and_refuses_start(backend: Backend) {
    let lp = new_loop(backend);
    let dropped = Rc::new(Cell::new(0));
    struct Bump(Rc<Cell<i32>>);
    impl Drop for Bump {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let b1 = Bump(dropped.clone());
    lp.add_callback(move |_| drop(b1));
    let b2 = Bump(dropped.clone());
    lp.call_later(Duration::from_secs(60), move |_| drop(b2));
    let h = lp.handle();
    lp.close();
    assert_eq!(dropped.get(), 2, "queued callback and timer dropped unrun");
    assert!(h.is_closed());
    assert!(h.add_callback(|_| {}).is_err());
    assert!(h.stop().is_err());
    assert_eq!(lp.start().unwrap_err().kind(), ErrorKind::NotConnected);
}

#[on_both_backends]
#[test]
fn backend_detail_names_the_ring_flags(backend: Backend) {
    let lp = new_loop(backend);
    let d = lp.backend_detail();
    match backend {
        Backend::Epoll => assert!(d.starts_with("epoll"), "{d}"),
        // This kernel (6.1 or newer) accepts the flags docs/ARCHITECTURE.md ("Backends")
        // explains.
        _ => assert!(
            d.contains("DEFER_TASKRUN") && d.contains("SINGLE_ISSUER"),
            "{d}"
        ),
    }
}

#[test]
fn auto_resolves_to_a_real_backend_and_env_forces_one() {
    // CORELOOP_BACKEND is read when Auto is resolved. Tests in this binary run in
    // threads, so only the parsing is checked here; the end-to-end check is in CI,
    // which runs the suite once with CORELOOP_BACKEND=epoll.
    let lp = IoLoop::new().unwrap();
    assert_ne!(lp.backend(), Backend::Auto);
    assert_eq!(Backend::parse("EPOLL"), Some(Backend::Epoll));
    assert_eq!(Backend::parse("io_uring"), Some(Backend::Uring));
    assert_eq!(Backend::parse("auto"), Some(Backend::Auto));
    assert_eq!(Backend::parse("select"), None);
    if let Some(forced) = Backend::from_env().filter(|b| *b != Backend::Auto) {
        assert_eq!(lp.backend(), forced);
    }
}
