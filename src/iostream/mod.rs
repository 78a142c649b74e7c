//! `IoStream`: Tornado's IOStream, a buffered stream over a connected socket.
//!
//! The same API on both backends (the differences live in `transport/`):
//! `read_until`, `read_bytes`, `read_bytes_partial`, `read_until_close`, `write` with a
//! callback once flushed, a close callback, `close`, and the error that closed it. The
//! read side is `read.rs`, the write side `write.rs`, the errors `error.rs`, the async
//! methods and `AsyncRead`/`AsyncWrite` for tasks `async_io.rs`; this file holds the
//! stream itself, closing, and the dispatch loop that runs callbacks.
//!
//! # Rules
//!
//! - One read may be pending at a time. Its callback runs on the loop thread, in a later
//!   step than the call that asked for it (never inside `read_*` itself); reads satisfied
//!   by data already buffered run one after another without recursion, so 32 pipelined
//!   requests cost no stack depth.
//! - Data that arrived before the peer closed is delivered before the close is
//!   reported; the close callback runs exactly once, after the pending read's callback
//!   has been given its data or its error.
//! - Memory is bounded: a read whose delimiter is not within its `max_bytes`, or a read
//!   that cannot finish within [`IoStream::set_max_buffer_size`], closes the stream with
//!   an `InvalidData` error (with no read waiting, receiving stops there instead);
//!   writes beyond [`IoStream::set_max_write_buffer`] close it too. Below that,
//!   [`IoStream::over_high_water`] and [`IoStream::on_drain`] let a writer wait for a
//!   slow reader instead of buffering without limit.
//! - Errors the stream decides on carry a [`StreamError`] a caller can match.
//! - An idle stream holds no buffer: read and write buffers come from the loop's pool
//!   and go back when emptied.
//! - An open stream is kept alive by its loop (a stream nobody holds still delivers its
//!   callbacks) until it is closed: by [`IoStream::close`], by an error, at end of file
//!   (unless [`IoStream::set_close_on_eof`] says otherwise), or when its loop closes.

mod async_io;
mod budget;
mod error;
mod read;
mod transport;
mod write;

pub use error::StreamError;
pub(crate) use read::ReadHandler;
pub use write::{DEFAULT_HIGH_WATER, DEFAULT_MAX_WRITE_BUFFER};

use crate::reactor::{IoLoop, Resource, StepEnd, WeakLoop};
use error::Failure;
use read::ReadSide;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use transport::{SockEvent, Transport};
use write::WriteSide;

/// The callback of a read: the bytes read (delimiter included), or why there are none.
pub type ReadCallback = Box<dyn FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>)>;
/// A callback that gets the loop and the stream (write flushed, drained, closed).
pub type StreamCallback = Box<dyn FnOnce(&IoLoop, &IoStream)>;
/// The callback of [`IoStream::connect`].
pub type ConnectCallback = Box<dyn FnOnce(&IoLoop, io::Result<IoStream>)>;

/// Default [`IoStream::set_max_buffer_size`].
pub const DEFAULT_MAX_BUFFER: usize = 4 * 1024 * 1024;

struct State {
    lp: WeakLoop,
    r: ReadSide,
    w: WriteSide,
    closed: bool,
    /// What closed the stream, if an error did.
    error: Option<Failure>,
    close_cb: Option<StreamCallback>,
    close_on_eof: bool,
    /// The dispatch loop is running (further down this stack).
    dispatching: bool,
    /// A turn of the dispatch loop is queued on the loop.
    dispatch_scheduled: bool,
    resource_key: Option<usize>,
    /// Dropped when the stream closes (the acceptor's connection count).
    guard: Option<Box<dyn std::any::Any>>,
    /// What the stream has counted to the loop's buffer budget.
    held: budget::Held,
}

struct Inner {
    st: RefCell<State>,
    transport: Transport,
}

/// A buffered, nonblocking stream over a connected socket (Tornado's `IOStream`).
///
/// Cloning gives another handle to the same stream. It is `!Send`: it belongs to the
/// loop that made it.
///
/// ```
/// use coreloop::{IoLoop, IoStream};
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
///
/// let lp = IoLoop::new()?;
/// let (ours, mut theirs) = UnixStream::pair()?;
/// let stream = IoStream::new(&lp, ours)?;
/// theirs.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
/// stream.read_until(b"\r\n\r\n", 1024, |lp, s, head| {
///     assert_eq!(head.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
///     s.write(b"HTTP/1.0 200 OK\r\n\r\nhi").unwrap();
///     s.close();
///     lp.stop();
/// })?;
/// lp.start()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct IoStream {
    inner: Rc<Inner>,
}

impl IoStream {
    /// Wraps a connected socket (TCP or Unix; made nonblocking here) in a stream on `lp`.
    /// The stream owns the socket from now on and closes it when it closes.
    pub fn new(lp: &IoLoop, socket: impl Into<OwnedFd>) -> io::Result<IoStream> {
        let fd: OwnedFd = socket.into();
        socket2::SockRef::from(&fd).set_nonblocking(true)?;
        IoStream::from_fd(lp, fd)
    }

    /// Wraps a nonblocking connected socket.
    pub(crate) fn from_fd(lp: &IoLoop, fd: OwnedFd) -> io::Result<IoStream> {
        let mut failed = None;
        let inner = Rc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            // Weak: the loop's resource table is what keeps an open stream alive.
            let sink = Rc::new(move |lp: &IoLoop, ev: SockEvent| {
                if let Some(inner) = weak.upgrade() {
                    IoStream { inner }.on_event(lp, ev);
                }
            });
            let room = read::PAUSE_READING_AT; // no reader yet
            let transport = match Transport::new(lp, fd, sink, room) {
                Ok(t) => t,
                Err(e) => {
                    failed = Some(e);
                    Transport::Dead
                }
            };
            Inner {
                st: RefCell::new(State {
                    lp: lp.downgrade(),
                    r: ReadSide::default(),
                    w: WriteSide::default(),
                    closed: false,
                    error: None,
                    close_cb: None,
                    close_on_eof: true,
                    dispatching: false,
                    dispatch_scheduled: false,
                    resource_key: None,
                    guard: None,
                    held: budget::Held::new(lp),
                }),
                transport,
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let key = lp.track(inner.clone());
        inner.st.borrow_mut().resource_key = Some(key);
        Ok(IoStream { inner })
    }

    /// A reference that does not keep the stream alive.
    pub(crate) fn downgrade(&self) -> WeakStream {
        WeakStream(Rc::downgrade(&self.inner))
    }

    fn lp(&self) -> Option<IoLoop> {
        self.inner.st.borrow().lp.upgrade()
    }

    /// Whether end of file closes the stream (default true, as in Tornado): once the
    /// peer has closed its side, everything it sent has been read and everything written
    /// has been sent. With false the stream stays open for writing until the owner
    /// closes it (for answering a peer that half-closes after its request later).
    pub fn set_close_on_eof(&self, on: bool) {
        self.inner.st.borrow_mut().close_on_eof = on;
    }

    // ------------------------------------------------------------------ closing

    /// Runs `cb` once when the stream closes, whatever closes it (after the pending
    /// read's callback). On a closed stream it runs in a later step.
    pub fn set_close_callback<F>(&self, cb: F)
    where
        F: FnOnce(&IoLoop, &IoStream) + 'static,
    {
        self.inner.st.borrow_mut().close_cb = Some(Box::new(cb));
        if self.closed() {
            self.schedule_dispatch();
        }
    }

    /// Closes the stream at once: data not yet handed to the kernel is dropped (use
    /// [`write_then`](Self::write_then) to close after a write has gone out), a pending
    /// read fails, the close callback runs. Calling it again does nothing.
    pub fn close(&self) {
        if let Some(lp) = self.lp() {
            self.close_with(&lp, None);
        }
    }

    /// True once the stream is closed.
    pub fn closed(&self) -> bool {
        self.inner.st.borrow().closed
    }

    /// The error that closed the stream, if an error did.
    pub fn error(&self) -> Option<io::Error> {
        self.inner.st.borrow().error.map(Failure::to_error)
    }

    /// Attaches something to drop when the stream closes.
    pub(crate) fn set_guard(&self, guard: Box<dyn std::any::Any>) {
        self.inner.st.borrow_mut().guard = Some(guard);
    }

    fn close_with(&self, lp: &IoLoop, err: Option<&io::Error>) {
        let (out, key, guard) = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            st.error = err.map(Failure::of);
            st.r.wake_reader();
            (st.w.on_close(), st.resource_key.take(), st.guard.take())
        };
        self.inner.transport.close(lp);
        drop(guard);
        lp.with_pool(|p| p.give(out));
        self.inner.st.borrow_mut().held.clear(lp);
        self.schedule_dispatch();
        if let Some(key) = key {
            lp.untrack(key);
        }
    }

    // ------------------------------------------------------------------ the socket

    /// The peer's address (TCP; an error for other sockets).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock_addr(|s| s.peer_addr())
    }

    /// The local address (TCP; an error for other sockets).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock_addr(|s| s.local_addr())
    }

    fn sock_addr(
        &self,
        f: impl FnOnce(&socket2::SockRef<'_>) -> io::Result<socket2::SockAddr>,
    ) -> io::Result<SocketAddr> {
        let addr = self
            .inner
            .transport
            .with_fd(|fd| f(&socket2::SockRef::from(fd)))
            .ok_or(io::ErrorKind::NotConnected)??;
        addr.as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
    }

    /// Sets `TCP_NODELAY` (accepted connections have it on already).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner
            .transport
            .with_fd(|fd| socket2::SockRef::from(fd).set_tcp_nodelay(on))
            .ok_or(io::ErrorKind::NotConnected)?
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner
            .transport
            .with_fd(|fd| socket2::SockRef::from(fd).tcp_nodelay())
            .ok_or(io::ErrorKind::NotConnected)?
    }

    /// The socket's fd while the stream is open (for socket options).
    pub fn fd(&self) -> RawFd {
        self.inner.transport.fd()
    }

    // ------------------------------------------------------------------ events

    fn on_event(&self, lp: &IoLoop, ev: SockEvent) {
        match ev {
            SockEvent::Data(v) => self.received(lp, v),
            SockEvent::Eof => {
                {
                    let mut st = self.inner.st.borrow_mut();
                    st.r.eof = true;
                    st.r.wake_reader();
                }
                self.dispatch(lp);
            }
            SockEvent::Sent(buf) => self.sent(lp, buf),
            SockEvent::Error(e) => self.close_with(lp, Some(&e)),
        }
    }

    /// Runs the dispatch loop now if we are not inside it, else lets it pick up the
    /// work; from outside any event (a call from a timer, say), runs it in the next step.
    fn schedule_dispatch(&self) {
        let mut st = self.inner.st.borrow_mut();
        if st.dispatching || st.dispatch_scheduled {
            return;
        }
        let Some(lp) = st.lp.upgrade() else { return };
        st.dispatch_scheduled = true;
        drop(st);
        let me = self.clone();
        lp.add_callback(move |lp| {
            me.inner.st.borrow_mut().dispatch_scheduled = false;
            me.dispatch(lp);
        });
    }

    /// The trampoline: completes the pending read while it can, then write and drain
    /// callbacks, then the close callback. User callbacks run with nothing borrowed; one
    /// that starts a new read is served by the next turn of this loop, not by recursion.
    fn dispatch(&self, lp: &IoLoop) {
        {
            let mut st = self.inner.st.borrow_mut();
            if st.dispatching {
                return;
            }
            st.dispatching = true;
        }
        loop {
            if let Some((cb, result)) = self.complete_read(lp) {
                cb.call(lp, self, result);
                continue;
            }
            let write_cb = self.inner.st.borrow_mut().w.due_write_callback();
            if let Some(cb) = write_cb {
                cb(lp, self);
                continue;
            }
            let drain_cb = {
                let mut st = self.inner.st.borrow_mut();
                if st.closed || st.held.back {
                    None
                } else {
                    st.w.due_drain_callback()
                }
            };
            if let Some(cb) = drain_cb {
                cb(lp, self);
                continue;
            }
            let close_cb = {
                let mut st = self.inner.st.borrow_mut();
                if st.closed && !st.r.wanted() {
                    st.close_cb.take()
                } else {
                    None
                }
            };
            if let Some(cb) = close_cb {
                cb(lp, self);
                continue;
            }
            // End of file closes the stream once the owner has read everything that
            // came before it and everything written has gone out (Tornado notices end
            // of file only when it reads past the data, so it closes at the same point).
            let close_now = {
                let st = self.inner.st.borrow();
                st.close_on_eof && !st.closed && st.r.done_at_eof() && st.w.buffered() == 0
            };
            if close_now {
                self.close_with(lp, None);
                continue;
            }
            break;
        }
        self.inner.st.borrow_mut().dispatching = false;
        self.pace_receiving(Some(lp));
    }
}

/// A stream that may be gone (an acceptor's list of its connections holds these).
#[derive(Clone)]
pub(crate) struct WeakStream(Weak<Inner>);

impl WeakStream {
    pub(crate) fn upgrade(&self) -> Option<IoStream> {
        self.0.upgrade().map(|inner| IoStream { inner })
    }
}

impl State {
    /// The error for a read that cannot finish because the stream ended.
    fn ended_error(&self) -> io::Error {
        match self.error {
            Some(f) => f.to_error(),
            None => StreamError::Eof.into(),
        }
    }

    /// The error for an operation on a closed stream.
    fn closed_error(&self) -> io::Error {
        match self.error {
            Some(f) => f.to_error(),
            None => StreamError::Closed.into(),
        }
    }
}

/// A stream's writes of one step go out at the end of the step, in one send.
impl StepEnd for Inner {
    fn run(self: Rc<Self>, lp: &IoLoop) {
        self.st.borrow_mut().w.flush_scheduled = false;
        IoStream { inner: self }.start_send(lp);
    }
}

impl Resource for Inner {
    fn close_resource(&self, lp: &IoLoop) {
        let guard = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            st.r.read = None;
            st.r.wake_reader();
            st.w.on_close();
            st.close_cb = None;
            st.resource_key = None; // the loop is dropping its whole table
            st.guard.take()
        };
        self.transport.close(lp);
        drop(guard);
        self.st.borrow_mut().held.clear(lp);
    }
}

impl fmt::Debug for IoStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.st.borrow();
        f.debug_struct("IoStream")
            .field("fd", &self.inner.transport.fd())
            .field("closed", &st.closed)
            .field("unread", &st.r.unread())
            .field("write_buffer", &st.w.buffered())
            .finish()
    }
}
