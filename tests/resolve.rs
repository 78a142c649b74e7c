//! Name lookup on the blocking pool and connecting by name: `localhost` resolves to
//! loopback addresses and connects; a name that does not exist is an error, not a hang;
//! a list of addresses is tried in turn; bad input is refused. Callback and async forms.
mod util;

use coreloop::{Backend, IoLoop, IoStream};
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;
use util::new_loop;

const T: Duration = Duration::from_secs(10);
const NO_SUCH_HOST: &str = "no-such-host.invalid";

/// `fut` run to its end on `lp`.
fn run<F: std::future::Future + 'static>(lp: &IoLoop, fut: F) -> F::Output {
    lp.run_until_complete(fut).expect("the loop runs")
}

#[on_both_backends]
#[test]
fn localhost_resolves_to_loopback_addresses(backend: Backend) {
    let lp = new_loop(backend);
    let l = lp.clone();
    let found = run(&lp, async move { l.resolve("localhost:4321", T).await });
    let addrs = found
        .expect("the pool answered")
        .expect("localhost resolves");
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 4321),
        "{addrs:?}"
    );
    // The callback form, and a (host, port) pair.
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    lp.resolve(("localhost", 80), T).then(move |lp, r| {
        *g.borrow_mut() = Some(r);
        lp.stop();
    });
    util::run(&lp);
    let again = got.borrow_mut().take().unwrap().unwrap().unwrap();
    assert_eq!(
        again.iter().map(|a| a.ip()).collect::<Vec<_>>(),
        addrs.iter().map(|a| a.ip()).collect::<Vec<_>>()
    );
}

#[on_both_backends]
#[test]
fn a_name_that_does_not_exist_is_an_error_in_both_forms(backend: Backend) {
    let lp = new_loop(backend);
    let l = lp.clone();
    let name = format!("{NO_SUCH_HOST}:80");
    let n = name.clone();
    let r = run(&lp, async move { l.resolve(n, T).await }).expect("the pool answered");
    let e = r.expect_err("no such name");
    assert!(e.to_string().contains(NO_SUCH_HOST), "{e}");
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    IoStream::connect(&lp, name, T).then(move |lp, r| {
        *g.borrow_mut() = Some(r.map(|_| ()));
        lp.stop();
    });
    util::run(&lp);
    let e = got.borrow_mut().take().unwrap().expect_err("no such name");
    assert!(e.to_string().contains(NO_SUCH_HOST), "{e}");
}

#[on_both_backends]
#[test]
fn connect_by_name_reaches_a_listener_in_both_forms(backend: Backend) {
    let lp = new_loop(backend);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let l = lp.clone();
    let s = run(&lp, async move {
        IoStream::connect(&l, format!("localhost:{port}"), T).await
    })
    .expect("connected by name");
    assert_eq!(s.peer_addr().unwrap(), listener.local_addr().unwrap());
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    IoStream::connect(&lp, ("localhost", port), T).then(move |lp, r| {
        *g.borrow_mut() = Some(r.and_then(|s| s.peer_addr()));
        lp.stop();
    });
    util::run(&lp);
    let peer = got.borrow_mut().take().unwrap().unwrap();
    assert_eq!(peer, listener.local_addr().unwrap());
    // Both were accepted.
    listener.set_nonblocking(true).unwrap();
    for _ in 0..2 {
        listener.accept().expect("a connection came");
    }
}

/// An address on this machine where nothing listens (bound, then closed).
fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[on_both_backends]
#[test]
fn each_address_is_tried_in_turn_and_the_last_error_is_reported(backend: Backend) {
    let lp = new_loop(backend);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = listener.local_addr().unwrap();
    let bad = refusing_addr();
    let l = lp.clone();
    let s = run(&lp, async move {
        IoStream::connect(&l, vec![bad, good], T).await
    })
    .expect("the second address answered");
    assert_eq!(s.peer_addr().unwrap(), good);
    let l = lp.clone();
    let e = run(&lp, async move {
        IoStream::connect(&l, vec![bad, refusing_addr()], T).await
    })
    .map(|_| ())
    .expect_err("nothing listens");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[on_both_backends]
#[test]
fn bad_names_are_refused_without_a_lookup(backend: Backend) {
    let lp = new_loop(backend);
    for bad in ["no-port", "host:notaport", ":80", "host:99999"] {
        let l = lp.clone();
        let r = run(&lp, async move { l.resolve(bad, T).await }).expect("answered");
        let e = r.expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
        let l = lp.clone();
        let e = run(&lp, async move { IoStream::connect(&l, bad, T).await })
            .map(|_| ())
            .expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
    }
    // A literal address is answered as it is.
    let l = lp.clone();
    let r: io::Result<Vec<SocketAddr>> =
        run(&lp, async move { l.resolve("[::1]:8080", T).await }).unwrap();
    assert_eq!(r.unwrap(), vec!["[::1]:8080".parse().unwrap()]);
}

#[on_both_backends]
#[test]
fn a_connect_by_name_dropped_while_looking_up_leaves_the_loop_well(backend: Backend) {
    let lp = new_loop(backend);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let l = lp.clone();
    // A zero timeout drops the connect at its first wait: during the lookup.
    let r = run(&lp, async move {
        coreloop::timeout(
            Duration::ZERO,
            IoStream::connect(&l, format!("localhost:{port}"), T),
        )
        .await
    });
    assert!(r.is_err(), "elapsed");
    // The lookup's answer comes to nobody; the loop goes on and connects again.
    util::run_for(&lp, Duration::from_millis(50));
    let l = lp.clone();
    let s = run(&lp, async move {
        IoStream::connect(&l, format!("localhost:{port}"), T).await
    });
    assert!(s.is_ok());
}
