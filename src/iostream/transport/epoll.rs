//! The epoll half of a transport: a level-triggered handler receives until the socket
//! would block; sends go out at once, and what does not fit waits for writability.
//!
//! epoll reports an error or a hangup whatever the interest, also while receiving is
//! paused: a reset then closes the stream at once (its error is taken from the
//! socket), and a hangup with no error (both directions done, bytes maybe still unread
//! in the socket) takes the socket out of epoll until the owner reads again, instead of
//! waking the loop on every wait.

use super::{SendNow, Sock, SockEvent};
use crate::buffer::{recv_into, send_from};
use crate::poller::Interest;
use crate::reactor::IoLoop;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

/// Reads per readiness event at most, so one busy socket cannot starve others.
const READS_PER_EVENT: usize = 4;

struct State {
    sock: Sock,
    /// The interest registered now.
    interest: Interest,
    /// The unsent tail of a send, waiting for writability.
    pending: Option<(Vec<u8>, usize)>,
    /// Out of epoll (hung up while paused) until there is something to wait for.
    parked: bool,
}

#[derive(Clone)]
pub(crate) struct EpollTransport {
    st: Rc<RefCell<State>>,
}

impl EpollTransport {
    pub(super) fn new(lp: &IoLoop, sock: Sock) -> io::Result<EpollTransport> {
        let st = Rc::new(RefCell::new(State {
            sock,
            interest: Interest::READABLE,
            pending: None,
            parked: false,
        }));
        watch(&st, lp, Interest::READABLE)?;
        Ok(EpollTransport { st })
    }

    pub(super) fn with_sock<R>(&self, f: impl FnOnce(&mut Sock) -> R) -> R {
        f(&mut self.st.borrow_mut().sock)
    }

    pub(super) fn set_reading(&self, lp: &IoLoop, on: bool) {
        {
            let mut st = self.st.borrow_mut();
            if !st.sock.changes_reading(on) {
                return;
            }
            st.sock.reading = on;
        }
        update_interest(&self.st, lp);
    }

    pub(super) fn send(&self, lp: &IoLoop, buf: Vec<u8>) -> SendNow {
        {
            let st = self.st.borrow();
            if st.sock.sink.is_none() {
                return SendNow::Failed(io::ErrorKind::NotConnected.into());
            }
            debug_assert!(st.pending.is_none());
        }
        let mut off = 0;
        while off < buf.len() {
            let r = {
                let st = self.st.borrow();
                match st.sock.fd.as_ref() {
                    Some(fd) => send_from(fd.as_fd(), &buf[off..]),
                    None => Err(io::ErrorKind::NotConnected.into()),
                }
            };
            match r {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut st = self.st.borrow_mut();
                    if off > 0 {
                        st.sock.sent_at = Some(lp.now_ns());
                    }
                    st.pending = Some((buf, off));
                    drop(st);
                    update_interest(&self.st, lp);
                    return SendNow::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return SendNow::Failed(e),
            }
        }
        self.st.borrow_mut().sock.sent_at = Some(lp.now_ns());
        SendNow::Done(buf)
    }

    pub(super) fn close(&self, lp: &IoLoop) {
        let (fd, sink) = {
            let mut st = self.st.borrow_mut();
            let Some(fd) = st.sock.fd.take() else { return };
            st.sock.reading = false;
            st.pending = None;
            (fd, st.sock.sink.take())
        };
        lp.remove_handler(fd.as_raw_fd());
        drop(fd);
        // The owner's sink (and what it holds) goes with no transport state borrowed.
        drop(sink);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The owner dropped the transport without closing it: the readable handler
        // holds only a weak reference, so it must be removed here.
        if let (Some(fd), Some(lp)) = (self.sock.fd.take(), self.sock.lp.upgrade()) {
            lp.remove_handler(fd.as_raw_fd());
        }
    }
}

/// Calls the owner's sink with no transport state borrowed.
fn report(st: &Rc<RefCell<State>>, lp: &IoLoop, ev: SockEvent) {
    let sink = st.borrow().sock.sink.clone();
    if let Some(sink) = sink {
        sink(lp, ev);
    }
}

/// Puts the socket in epoll with `interest`, its readiness going to `on_ready`.
fn watch(st: &Rc<RefCell<State>>, lp: &IoLoop, interest: Interest) -> io::Result<()> {
    let raw = st.borrow().sock.raw;
    let weak = Rc::downgrade(st);
    lp.add_handler(raw, interest, move |lp, _, ready| {
        if let Some(st) = weak.upgrade() {
            on_ready(
                &st,
                lp,
                ready.is_readable() || ready.is_hup() || ready.is_error(),
                ready.is_writable(),
                ready.is_hup() || ready.is_error(),
            );
        }
    })
}

/// Registers the interest the state calls for, if it changed (back into epoll if the
/// socket was parked and there is something to wait for).
fn update_interest(st: &Rc<RefCell<State>>, lp: &IoLoop) {
    let (raw, want, parked) = {
        let s = st.borrow();
        if s.sock.fd.is_none() {
            return;
        }
        let mut want = Interest::NONE;
        if s.sock.reading {
            want = want | Interest::READABLE;
        }
        if s.pending.is_some() {
            want = want | Interest::WRITABLE;
        }
        if want == s.interest && !(s.parked && want != Interest::NONE) {
            return;
        }
        (s.sock.raw, want, s.parked)
    };
    let done = if parked {
        if want == Interest::NONE {
            st.borrow_mut().interest = want;
            return;
        }
        watch(st, lp, want)
    } else {
        lp.update_handler(raw, want)
    };
    match done {
        Ok(()) => {
            let mut s = st.borrow_mut();
            s.interest = want;
            s.parked = false;
        }
        Err(e) if parked => {
            st.borrow_mut().sock.end();
            report(st, lp, SockEvent::Error(e));
        }
        Err(_) => {}
    }
}

/// The socket reported an error or a hangup while receiving is off: a reset closes
/// the stream now; a hangup with no error parks the socket out of epoll.
fn on_hangup(st: &Rc<RefCell<State>>, lp: &IoLoop) {
    let err = {
        let s = st.borrow();
        let Some(fd) = s.sock.fd.as_ref() else { return };
        socket2::SockRef::from(fd).take_error()
    };
    match err {
        Ok(None) => {
            let (raw, writing) = {
                let s = st.borrow();
                (s.sock.raw, s.pending.is_some())
            };
            if !writing {
                // (A pending send learns of the hangup from its own error.)
                lp.remove_handler(raw);
                st.borrow_mut().parked = true;
            }
        }
        Ok(Some(e)) | Err(e) => {
            st.borrow_mut().sock.end();
            update_interest(st, lp);
            report(st, lp, SockEvent::Error(e));
        }
    }
}

/// The socket is readable and/or writable, or reports an error or a hangup.
fn on_ready(st: &Rc<RefCell<State>>, lp: &IoLoop, readable: bool, writable: bool, hangup: bool) {
    if writable && st.borrow().pending.is_some() {
        flush_pending(st, lp);
    }
    if !readable {
        return;
    }
    if hangup && !st.borrow().sock.reading {
        return on_hangup(st, lp);
    }
    for _ in 0..READS_PER_EVENT {
        let mut buf = lp.with_pool(|p| p.take());
        let room = buf.capacity() - buf.len();
        // (One look at the state per receive: whether to, where, and whom to tell.)
        let (r, sink) = {
            let s = st.borrow();
            match (&s.sock.fd, &s.sock.sink) {
                (Some(fd), Some(sink)) if s.sock.reading => {
                    (recv_into(fd.as_fd(), &mut buf), sink.clone())
                }
                _ => {
                    drop(s);
                    lp.with_pool(|p| p.give(buf));
                    return;
                }
            }
        };
        match r {
            // A short read drained the socket: readiness is level-triggered, so the
            // next wait reports it if more arrives. Trying again here would only buy
            // an EAGAIN, one syscall per request.
            Ok(n) if n > 0 && n < room.min(4096) => {
                sink(lp, SockEvent::Data(buf));
                return;
            }
            Ok(0) => {
                lp.with_pool(|p| p.give(buf));
                st.borrow_mut().sock.end();
                update_interest(st, lp);
                report(st, lp, SockEvent::Eof);
                return;
            }
            Ok(_) => sink(lp, SockEvent::Data(buf)),
            Err(e) => {
                lp.with_pool(|p| p.give(buf));
                match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        st.borrow_mut().sock.end();
                        update_interest(st, lp);
                        report(st, lp, SockEvent::Error(e));
                        return;
                    }
                }
            }
        }
    }
}

/// Writes the pending tail; reports `Sent` once it is all out.
fn flush_pending(st: &Rc<RefCell<State>>, lp: &IoLoop) {
    let Some((buf, mut off)) = st.borrow_mut().pending.take() else {
        return;
    };
    while off < buf.len() {
        let r = {
            let s = st.borrow();
            let Some(fd) = s.sock.fd.as_ref() else { return };
            send_from(fd.as_fd(), &buf[off..])
        };
        match r {
            Ok(n) => {
                off += n;
                st.borrow_mut().sock.sent_at = Some(lp.now_ns());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                st.borrow_mut().pending = Some((buf, off));
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                update_interest(st, lp);
                report(st, lp, SockEvent::Error(e));
                return;
            }
        }
    }
    update_interest(st, lp);
    report(st, lp, SockEvent::Sent(buf));
}
