//! The epoll half of an acceptor: a readable handler on the listener that accepts
//! until `WouldBlock` (at most `accepts_per_event` per event: level triggering brings
//! the rest); pausing parks the handler.

use super::{is_exhaustion, AccInner, Acceptor, Pause};
use crate::poller::Interest;
use crate::reactor::IoLoop;
use socket2::SockRef;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

pub(super) fn start(inner: &Rc<AccInner>, lp: &IoLoop) -> io::Result<()> {
    let fd = inner.listener_fd().ok_or(io::ErrorKind::NotConnected)?;
    let weak = Rc::downgrade(inner);
    lp.add_handler(fd, Interest::READABLE, move |lp, _, _| {
        if let Some(inner) = weak.upgrade() {
            accept_ready(&Acceptor { inner }.inner, lp);
        }
    })
}

/// The listener is readable.
fn accept_ready(inner: &Rc<AccInner>, lp: &IoLoop) {
    let n = inner.st.borrow().opts.accepts_per_event;
    for _ in 0..n {
        let r = {
            let st = inner.st.borrow();
            if st.pause != Pause::Running {
                return;
            }
            let Some(l) = st.listener.as_ref() else {
                return;
            };
            SockRef::from(l).accept()
        };
        match r {
            Ok((sock, _)) => {
                let fd: OwnedFd = sock.into();
                if let Err(e) = SockRef::from(&fd).set_nonblocking(true) {
                    log::warn!("coreloop: accepted socket: {e}");
                    continue;
                }
                inner.admit(lp, fd);
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => return,
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                _ if is_exhaustion(&e) => {
                    inner.pause_exhausted(lp, &e);
                    return;
                }
                _ => {
                    log::warn!("coreloop: accept: {e}");
                    return;
                }
            },
        }
    }
}

pub(super) fn pause(inner: &AccInner, lp: &IoLoop) {
    if let Some(fd) = inner.listener_fd() {
        let _ = lp.update_handler(fd, Interest::NONE);
    }
}

pub(super) fn resume(inner: &AccInner, lp: &IoLoop) {
    if let Some(fd) = inner.listener_fd() {
        let _ = lp.update_handler(fd, Interest::READABLE);
    }
}

pub(super) fn stop(lp: &IoLoop, listener: TcpListener) {
    lp.remove_handler(listener.as_raw_fd());
    drop(listener);
}
