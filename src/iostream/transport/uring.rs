//! The io_uring half of a transport: one recv at a time into the loop's provided
//! buffers, and one send op at a time that owns its buffer until the kernel is done
//! with it.
//!
//! A recv is armed with the owner's room (at most [`ONE_RECV`]) as its limit, and ends
//! by itself once that much has come: the kernel can post many completions before the
//! loop sees the first (a whole provided-buffer ring's worth, 1 MiB, in one wait), so a
//! cancel when the owner runs out of room would come too late. It is re-armed while the
//! owner has room; bytes beyond that stay in the socket. While no recv is armed (the
//! owner has no room), a poll for an error or a hangup watches the socket, so that a
//! reset closes the stream when the kernel reports it.

use super::{SendNow, Sock, SockEvent};
use crate::poller::{Completion, OpId, Submission};
use crate::reactor::{IoLoop, Sink};
use std::cell::RefCell;
use std::io;
use std::rc::{Rc, Weak};

/// The most one recv takes before it ends and is re-armed (less if the owner's room is
/// smaller): what may still arrive after the owner's room shrank (a reader that got
/// its bytes and stopped) and before the cancel that pauses receiving reaches the
/// kernel.
const ONE_RECV: usize = 64 * 1024;

struct State {
    sock: Sock,
    /// The one recv op in flight, until its final completion. Never two at once: two
    /// recvs on one socket could split and reorder the byte stream.
    recv_op: Option<OpId>,
    /// The send op in flight (cancelled by close: it holds the socket open).
    send_op: Option<OpId>,
    /// The poll for a reset while receiving is paused, until its completion.
    watch_op: Option<OpId>,
    /// Bytes of the in-flight send already sent (short sends resubmit the rest).
    send_offset: usize,
    /// Where every send's completion goes (made once, cloned per send).
    send_sink: Option<Sink>,
}

#[derive(Clone)]
pub(crate) struct UringTransport {
    st: Rc<RefCell<State>>,
}

impl UringTransport {
    pub(super) fn new(lp: &IoLoop, sock: Sock) -> io::Result<UringTransport> {
        let st = Rc::new(RefCell::new(State {
            sock,
            recv_op: None,
            send_op: None,
            watch_op: None,
            send_offset: 0,
            send_sink: None,
        }));
        let weak = Rc::downgrade(&st);
        let send_sink: Sink = Rc::new(move |lp, c| on_send_done(&weak, lp, c));
        st.borrow_mut().send_sink = Some(send_sink);
        arm_recv(&st, lp)?;
        Ok(UringTransport { st })
    }

    pub(super) fn with_sock<R>(&self, f: impl FnOnce(&mut Sock) -> R) -> R {
        f(&mut self.st.borrow_mut().sock)
    }

    pub(super) fn set_reading(&self, lp: &IoLoop, on: bool) {
        let (recv_op, watch_op) = {
            let mut st = self.st.borrow_mut();
            if !st.sock.changes_reading(on) {
                return;
            }
            st.sock.reading = on;
            (st.recv_op, st.watch_op)
        };
        let armed = if on {
            if let Some(op) = watch_op {
                lp.cancel(op);
            }
            arm_recv(&self.st, lp)
        } else {
            if let Some(op) = recv_op {
                lp.cancel(op);
            }
            arm_watch(&self.st, lp)
        };
        if let Err(e) = armed {
            report(&self.st, lp, SockEvent::Error(e));
        }
    }

    pub(super) fn send(&self, lp: &IoLoop, buf: Vec<u8>) -> SendNow {
        let (fd, sink) = {
            let st = self.st.borrow();
            if st.sock.sink.is_none() {
                return SendNow::Failed(io::ErrorKind::NotConnected.into());
            }
            debug_assert!(st.send_op.is_none());
            (st.sock.raw, st.send_sink.clone().expect("send sink"))
        };
        let op = Submission::Send { fd, buf, offset: 0 };
        match lp.submit(op, sink) {
            Ok(op) => {
                let mut st = self.st.borrow_mut();
                st.send_offset = 0;
                st.send_op = Some(op);
                SendNow::Pending
            }
            Err(e) => SendNow::Failed(e),
        }
    }

    pub(super) fn close(&self, lp: &IoLoop) {
        let (fd, ops, sink) = {
            let mut st = self.st.borrow_mut();
            let Some(fd) = st.sock.fd.take() else { return };
            st.sock.reading = false;
            let ops = [st.recv_op.take(), st.send_op.take(), st.watch_op.take()];
            (fd, ops, st.sock.sink.take())
        };
        // The ops hold the socket open: cancel them, then close. A cancelled send keeps
        // its buffer until its completion arrives.
        for op in ops.into_iter().flatten() {
            lp.cancel(op);
        }
        lp.close_fd(fd);
        // The owner's sink (and what it holds) goes with no transport state borrowed.
        drop(sink);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The owner dropped the transport without closing it: close through the ring,
        // behind the ops still queued.
        if let (Some(fd), Some(lp)) = (self.sock.fd.take(), self.sock.lp.upgrade()) {
            lp.close_fd(fd);
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

/// Starts a recv for the owner's room unless one is still in flight (its final
/// completion re-arms).
fn arm_recv(st: &Rc<RefCell<State>>, lp: &IoLoop) -> io::Result<()> {
    let (fd, limit) = {
        let s = st.borrow();
        let k = &s.sock;
        if s.recv_op.is_some() || k.fd.is_none() || k.ended || !k.reading || k.room == 0 {
            return Ok(());
        }
        (k.raw, k.room.min(ONE_RECV))
    };
    let weak = Rc::downgrade(st);
    let sink: Sink = Rc::new(move |lp, c| on_recv(&weak, lp, c));
    let op = lp.submit(Submission::Recv { fd, limit }, sink)?;
    st.borrow_mut().recv_op = Some(op);
    Ok(())
}

/// A completion of the recv op.
fn on_recv(weak: &Weak<RefCell<State>>, lp: &IoLoop, c: Completion) {
    let Some(st) = weak.upgrade() else { return };
    if !c.more {
        st.borrow_mut().recv_op = None;
    }
    match c.result {
        Ok(_) if c.buf.is_empty() => {
            st.borrow_mut().sock.end();
            report(&st, lp, SockEvent::Eof);
            return;
        }
        Ok(_) => report(&st, lp, SockEvent::Data(c.buf)),
        // Our own cancel (backpressure or close), or the buffer ring ran dry for a
        // moment (its buffers are back by now): nothing to report.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::ENOBUFS)) => {}
        Err(e) => {
            st.borrow_mut().sock.end();
            report(&st, lp, SockEvent::Error(e));
            return;
        }
    }
    // The recv ended (its limit reached, cancelled, out of buffers, or ended by the
    // kernel): start the next one if the owner still has room (it said so while the
    // bytes above were reported).
    if !c.more {
        if let Err(e) = arm_recv(&st, lp) {
            report(&st, lp, SockEvent::Error(e));
        }
    }
}

/// Watches a socket nobody receives from for a reset (a recv would report one, but
/// none is armed while the owner has no room), unless a watch is still in flight.
fn arm_watch(st: &Rc<RefCell<State>>, lp: &IoLoop) -> io::Result<()> {
    let fd = {
        let s = st.borrow();
        let k = &s.sock;
        if s.watch_op.is_some() || k.fd.is_none() || k.ended || k.reading {
            return Ok(());
        }
        k.raw
    };
    let weak = Rc::downgrade(st);
    let sink: Sink = Rc::new(move |lp, c| on_watch(&weak, lp, c));
    let op = lp.submit(Submission::Hangup { fd }, sink)?;
    st.borrow_mut().watch_op = Some(op);
    Ok(())
}

/// The completion of the watch: a reset closes the stream (its error taken from the
/// socket); a hangup with no error (both directions done) leaves what is unread in the
/// socket for when the owner reads again, and is not watched again.
fn on_watch(weak: &Weak<RefCell<State>>, lp: &IoLoop, c: Completion) {
    let Some(st) = weak.upgrade() else { return };
    st.borrow_mut().watch_op = None;
    match c.result {
        Ok(_) => {
            let err = {
                let s = st.borrow();
                let Some(fd) = s.sock.fd.as_ref() else { return };
                socket2::SockRef::from(fd).take_error()
            };
            if let Ok(Some(e)) | Err(e) = err {
                st.borrow_mut().sock.end();
                report(&st, lp, SockEvent::Error(e));
            }
        }
        // Cancelled by a resume: watch again if receiving paused once more meanwhile.
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
            if let Err(e) = arm_watch(&st, lp) {
                report(&st, lp, SockEvent::Error(e));
            }
        }
        Err(_) => {}
    }
}

/// The completion of a send.
fn on_send_done(weak: &Weak<RefCell<State>>, lp: &IoLoop, c: Completion) {
    // Closed or dropped meanwhile: the buffer is simply freed here.
    let Some(st) = weak.upgrade() else { return };
    if st.borrow().sock.fd.is_none() {
        return;
    }
    st.borrow_mut().send_op = None;
    let buf = c.buf;
    let n = match c.result {
        Ok(n) => n as usize,
        Err(e) => return report(&st, lp, SockEvent::Error(e)),
    };
    let (fd, off, sink) = {
        let mut s = st.borrow_mut();
        s.send_offset += n;
        s.sock.sent_at = Some(lp.now_ns());
        (s.sock.raw, s.send_offset, s.send_sink.clone())
    };
    if off >= buf.len() {
        report(&st, lp, SockEvent::Sent(buf));
    } else if n == 0 {
        report(&st, lp, SockEvent::Error(io::ErrorKind::WriteZero.into()));
    } else {
        // A short send: the rest goes in another op.
        let op = Submission::Send {
            fd,
            buf,
            offset: off,
        };
        match lp.submit(op, sink.expect("send sink")) {
            Ok(op) => st.borrow_mut().send_op = Some(op),
            Err(e) => report(&st, lp, SockEvent::Error(e)),
        }
    }
}
