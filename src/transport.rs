//! Moving bytes between one connected socket and its owner, on either backend.
//!
//! This is the one place where a stream's I/O differs by backend, each operation with
//! both of its implementations side by side:
//!
//! | operation | io_uring | epoll |
//! |---|---|---|
//! | receive | a multishot `RECV` into the loop's provided-buffer ring, re-armed when it ends | a level-triggered readable handler that receives into pooled buffers until `WouldBlock` |
//! | send | a `SEND` op that owns the buffer until its CQE; short sends are resubmitted | a nonblocking send at once; what does not fit waits for writability |
//! | close | cancel the recv, then an `IORING_OP_CLOSE` queued behind every earlier SQE | remove the handler, then close |
//!
//! Either way the owner sees the same [`SockEvent`]s, in order, and never a buffer the
//! kernel may still touch: a send buffer is handed back only with its completion, also
//! when the transport was closed meanwhile (then the op frees it).

use crate::buffer::{recv_into, send_from};
use crate::ioloop::{IoLoop, WeakLoop};
use crate::poller::{Completion, Interest, Sink};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

/// What a transport reports to its owner.
pub(crate) enum SockEvent {
    /// Bytes arrived (never empty).
    Data(Vec<u8>),
    /// The peer will send nothing more; receiving has stopped.
    Eof,
    /// A send that returned [`SendNow::Pending`] has gone out entirely; the buffer is
    /// handed back for reuse.
    Sent(Vec<u8>),
    /// The socket failed; nothing more will be reported.
    Error(io::Error),
}

/// How a transport reports to its owner.
pub(crate) type EventSink = Rc<dyn Fn(&IoLoop, SockEvent)>;

/// What became of a send at once.
pub(crate) enum SendNow {
    /// Everything went out; the buffer comes back.
    Done(Vec<u8>),
    /// The transport holds the buffer; [`SockEvent::Sent`] or `Error` follows.
    Pending,
    /// The send failed at once (the buffer is dropped).
    Failed(io::Error),
}

/// Reads per readiness event at most (epoll), so one busy socket cannot starve others.
const READS_PER_EVENT: usize = 4;

struct State {
    fd: Option<OwnedFd>,
    raw: RawFd,
    uring: bool,
    lp: WeakLoop,
    /// `None` once closed: nothing is reported after close.
    sink: Option<EventSink>,
    reading: bool,
    /// End of file or an error was reported: receiving never restarts.
    ended: bool,
    /// epoll: the interest registered now.
    interest: Interest,
    /// epoll: the unsent tail of a send, waiting for writability.
    pending: Option<(Vec<u8>, usize)>,
    /// io_uring: the one recv op in flight, until its final CQE. Never two at once: two
    /// recvs on one socket could split and reorder the byte stream.
    recv_op: Option<u64>,
    /// io_uring: bytes of the in-flight send already sent (short sends resubmit).
    send_offset: usize,
    send_in_flight: bool,
    /// io_uring: the send op in flight (cancelled by close: it holds the socket open).
    send_op: Option<u64>,
    send_sink: Option<Sink>,
    /// Bytes handed to the kernel so far, partial sends included.
    sent_total: u64,
}

/// One connected socket's I/O. Cheap to clone (shared state); owned by one stream.
#[derive(Clone)]
pub(crate) struct Transport {
    st: Rc<RefCell<State>>,
}

impl Transport {
    /// Takes over `fd` (a nonblocking connected socket) and starts receiving.
    pub(crate) fn new(lp: &IoLoop, fd: OwnedFd, sink: EventSink) -> io::Result<Transport> {
        let raw = fd.as_raw_fd();
        let uring = lp.with_uring(|_| ()).is_some();
        let st = Rc::new(RefCell::new(State::new(
            Some(fd),
            uring,
            lp.downgrade(),
            Some(sink),
        )));
        let t = Transport { st };
        if uring {
            let weak = Rc::downgrade(&t.st);
            let send_sink: Sink = Rc::new(move |lp, c| on_send_done(&weak, lp, c));
            t.st.borrow_mut().send_sink = Some(send_sink);
            t.arm_recv(lp)?;
        } else {
            let weak = Rc::downgrade(&t.st);
            lp.add_handler(raw, Interest::READABLE, move |lp, _, ready| {
                if let Some(st) = weak.upgrade() {
                    on_ready(
                        &st,
                        lp,
                        ready.is_readable() || ready.is_hup() || ready.is_error(),
                        ready.is_writable(),
                    );
                }
            })?;
        }
        Ok(t)
    }

    /// A transport that is already closed (for a stream whose setup failed).
    pub(crate) fn dead() -> Transport {
        Transport {
            st: Rc::new(RefCell::new(State::new(
                None,
                false,
                WeakLoop::dangling(),
                None,
            ))),
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.st.borrow().raw
    }

    /// Runs `f` on the socket, if it is still open.
    pub(crate) fn with_fd<R>(&self, f: impl FnOnce(&OwnedFd) -> R) -> Option<R> {
        self.st.borrow().fd.as_ref().map(f)
    }

    /// io_uring: starts a recv unless one is still in flight (its final CQE re-arms).
    fn arm_recv(&self, lp: &IoLoop) -> io::Result<()> {
        let raw = {
            let st = self.st.borrow();
            if st.recv_op.is_some() || st.fd.is_none() || st.ended || !st.reading {
                return Ok(());
            }
            st.raw
        };
        let weak = Rc::downgrade(&self.st);
        let sink: Sink = Rc::new(move |lp, c| on_recv(&weak, lp, c));
        let op = lp
            .with_uring(|u| u.recv_multishot(raw, sink))
            .unwrap_or_else(|| Err(io::ErrorKind::Unsupported.into()))?;
        self.st.borrow_mut().recv_op = Some(op);
        Ok(())
    }

    /// Starts or stops receiving (backpressure: a stream with enough unread data stops
    /// it). On io_uring stopping cancels the recv; starting again waits for that recv's
    /// final CQE, so that two recvs never run at once.
    pub(crate) fn set_reading(&self, lp: &IoLoop, on: bool) {
        let (uring, recv_op) = {
            let mut st = self.st.borrow_mut();
            if !changes_reading(&st, on) {
                return;
            }
            st.reading = on;
            (st.uring, st.recv_op)
        };
        if !uring {
            update_interest(&self.st, lp);
        } else if !on {
            if let Some(op) = recv_op {
                let _ = lp.with_uring(|u| u.cancel(op));
            }
        } else if let Err(e) = self.arm_recv(lp) {
            report(&self.st, lp, SockEvent::Error(e));
        }
    }

    /// Whether [`set_reading`](Self::set_reading)`(on)` would change anything (checked
    /// before the caller gets hold of the loop).
    pub(crate) fn would_change_reading(&self, on: bool) -> bool {
        changes_reading(&self.st.borrow(), on)
    }

    /// Bytes handed to the kernel so far, partial sends included (a writer's progress).
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.st.borrow().sent_total
    }

    /// Sends all of `buf`. At most one send may be pending at a time.
    pub(crate) fn send(&self, lp: &IoLoop, buf: Vec<u8>) -> SendNow {
        let (uring, raw) = {
            let st = self.st.borrow();
            if st.sink.is_none() {
                drop(buf);
                return SendNow::Failed(io::ErrorKind::NotConnected.into());
            }
            debug_assert!(st.pending.is_none() && !st.send_in_flight);
            (st.uring, st.raw)
        };
        if uring {
            let sink = self.st.borrow().send_sink.clone().expect("send sink");
            match lp.with_uring(|u| u.send(raw, buf, 0, sink)) {
                Some(Ok(op)) => {
                    let mut st = self.st.borrow_mut();
                    st.send_offset = 0;
                    st.send_in_flight = true;
                    st.send_op = Some(op);
                    SendNow::Pending
                }
                Some(Err((e, _))) => SendNow::Failed(e),
                None => SendNow::Failed(io::ErrorKind::Unsupported.into()),
            }
        } else {
            let mut off = 0;
            while off < buf.len() {
                let r = {
                    let st = self.st.borrow();
                    send_from(st.fd.as_ref().expect("open").as_fd(), &buf[off..])
                };
                match r {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mut st = self.st.borrow_mut();
                        st.sent_total += off as u64;
                        st.pending = Some((buf, off));
                        drop(st);
                        update_interest(&self.st, lp);
                        return SendNow::Pending;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return SendNow::Failed(e),
                }
            }
            self.st.borrow_mut().sent_total += buf.len() as u64;
            SendNow::Done(buf)
        }
    }

    /// Closes the socket. Nothing is reported afterwards. A send in flight on io_uring
    /// keeps its buffer until its CQE arrives.
    pub(crate) fn close(&self, lp: &IoLoop) {
        let (fd, uring, ops, sink) = {
            let mut st = self.st.borrow_mut();
            let Some(fd) = st.fd.take() else { return };
            st.reading = false;
            st.pending = None;
            let ops = [st.recv_op.take(), st.send_op.take()];
            (fd, st.uring, ops, st.sink.take())
        };
        if uring {
            // Both ops hold the socket open: cancel them, then close. A cancelled send
            // keeps its buffer until its CQE arrives.
            lp.with_uring(|u| {
                for op in ops.into_iter().flatten() {
                    let _ = u.cancel(op);
                }
                u.close_fd(fd);
            });
        } else {
            lp.remove_handler(fd.as_raw_fd());
            drop(fd);
        }
        // The owner's sink (and what it holds) goes with no transport state borrowed.
        drop(sink);
    }
}

impl State {
    /// Open (receiving) with an fd and a sink; closed without.
    fn new(fd: Option<OwnedFd>, uring: bool, lp: WeakLoop, sink: Option<EventSink>) -> State {
        let open = fd.is_some();
        State {
            raw: fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
            fd,
            uring,
            lp,
            sink,
            reading: open,
            ended: !open,
            interest: if open {
                Interest::READABLE
            } else {
                Interest::NONE
            },
            pending: None,
            recv_op: None,
            send_offset: 0,
            send_in_flight: false,
            send_op: None,
            send_sink: None,
            sent_total: 0,
        }
    }

    /// Receiving is over for good (end of file or an error).
    fn end(&mut self) {
        self.reading = false;
        self.ended = true;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The owner dropped the transport without closing it. On epoll the readable
        // handler holds only a weak reference, so it must be removed here.
        if let (Some(fd), Some(lp)) = (self.fd.take(), self.lp.upgrade()) {
            if self.uring {
                lp.with_uring(|u| u.close_fd(fd));
            } else {
                lp.remove_handler(fd.as_raw_fd());
            }
        }
    }
}

/// Calls the owner's sink with no transport state borrowed.
fn report(st: &Rc<RefCell<State>>, lp: &IoLoop, ev: SockEvent) {
    let sink = st.borrow().sink.clone();
    if let Some(sink) = sink {
        sink(lp, ev);
    }
}

/// epoll: registers the interest the state calls for, if it changed.
fn update_interest(st: &Rc<RefCell<State>>, lp: &IoLoop) {
    let (raw, want) = {
        let s = st.borrow();
        if s.fd.is_none() {
            return;
        }
        let mut want = Interest::NONE;
        if s.reading {
            want = want | Interest::READABLE;
        }
        if s.pending.is_some() {
            want = want | Interest::WRITABLE;
        }
        if want == s.interest {
            return;
        }
        (s.raw, want)
    };
    if lp.update_handler(raw, want).is_ok() {
        st.borrow_mut().interest = want;
    }
}

/// epoll: the socket is readable and/or writable.
fn on_ready(st: &Rc<RefCell<State>>, lp: &IoLoop, readable: bool, writable: bool) {
    if writable && st.borrow().pending.is_some() {
        flush_pending(st, lp);
    }
    if !readable {
        return;
    }
    for _ in 0..READS_PER_EVENT {
        if !st.borrow().reading {
            return;
        }
        let mut buf = lp.with_pool(|p| p.take());
        let room = buf.capacity() - buf.len();
        let r = {
            let s = st.borrow();
            let Some(fd) = s.fd.as_ref() else { return };
            recv_into(fd.as_fd(), &mut buf)
        };
        match r {
            // A short read drained the socket: readiness is level-triggered, so the
            // next wait reports it if more arrives. Trying again here would only buy
            // an EAGAIN, one syscall per request.
            Ok(n) if n > 0 && n < room.min(4096) => {
                report(st, lp, SockEvent::Data(buf));
                return;
            }
            Ok(0) => {
                lp.with_pool(|p| p.give(buf));
                st.borrow_mut().end();
                update_interest(st, lp);
                report(st, lp, SockEvent::Eof);
                return;
            }
            Ok(_) => report(st, lp, SockEvent::Data(buf)),
            Err(e) => {
                lp.with_pool(|p| p.give(buf));
                match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        st.borrow_mut().end();
                        update_interest(st, lp);
                        report(st, lp, SockEvent::Error(e));
                        return;
                    }
                }
            }
        }
    }
}

/// epoll: writes the pending tail; reports `Sent` once it is all out.
fn flush_pending(st: &Rc<RefCell<State>>, lp: &IoLoop) {
    let Some((buf, mut off)) = st.borrow_mut().pending.take() else {
        return;
    };
    while off < buf.len() {
        let r = {
            let s = st.borrow();
            let Some(fd) = s.fd.as_ref() else { return };
            send_from(fd.as_fd(), &buf[off..])
        };
        match r {
            Ok(n) => {
                off += n;
                st.borrow_mut().sent_total += n as u64;
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

/// io_uring: a CQE of the recv op.
fn on_recv(weak: &Weak<RefCell<State>>, lp: &IoLoop, c: Completion) {
    let Some(st) = weak.upgrade() else { return };
    let Completion::Recv { result, more } = c else {
        return;
    };
    if !more {
        st.borrow_mut().recv_op = None;
    }
    match result {
        Ok(data) if data.is_empty() => {
            st.borrow_mut().end();
            report(&st, lp, SockEvent::Eof);
            return;
        }
        Ok(data) => report(&st, lp, SockEvent::Data(data)),
        // Our own cancel (backpressure or close), or the buffer ring ran dry for a
        // moment (its buffers are back by now): nothing to report.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::ENOBUFS)) => {}
        Err(e) => {
            st.borrow_mut().end();
            report(&st, lp, SockEvent::Error(e));
            return;
        }
    }
    // The recv ended (cancelled, out of buffers, or ended by the kernel): start the next
    // one if receiving is still wanted.
    if !more {
        if let Err(e) = (Transport { st: st.clone() }).arm_recv(lp) {
            report(&st, lp, SockEvent::Error(e));
        }
    }
}

/// io_uring: the CQE of a send.
fn on_send_done(weak: &Weak<RefCell<State>>, lp: &IoLoop, c: Completion) {
    let Completion::Send { result, buf } = c else {
        return;
    };
    // Closed or dropped meanwhile: the buffer is simply freed here.
    let Some(st) = weak.upgrade() else { return };
    if st.borrow().fd.is_none() {
        return;
    }
    st.borrow_mut().send_op = None;
    match result {
        Ok(n) => {
            let (raw, off) = {
                let mut s = st.borrow_mut();
                s.send_offset += n;
                s.sent_total += n as u64;
                (s.raw, s.send_offset)
            };
            if off >= buf.len() {
                st.borrow_mut().send_in_flight = false;
                report(&st, lp, SockEvent::Sent(buf));
            } else if n == 0 {
                st.borrow_mut().send_in_flight = false;
                report(&st, lp, SockEvent::Error(io::ErrorKind::WriteZero.into()));
            } else {
                let sink = st.borrow().send_sink.clone().expect("send sink");
                match lp.with_uring(|u| u.send(raw, buf, off, sink)) {
                    Some(Ok(op)) => st.borrow_mut().send_op = Some(op),
                    Some(Err((e, _))) => {
                        st.borrow_mut().send_in_flight = false;
                        report(&st, lp, SockEvent::Error(e));
                    }
                    None => {}
                }
            }
        }
        Err(e) => {
            st.borrow_mut().send_in_flight = false;
            report(&st, lp, SockEvent::Error(e));
        }
    }
}

fn changes_reading(st: &State, on: bool) -> bool {
    st.sink.is_some() && !st.ended && st.reading != on
}
