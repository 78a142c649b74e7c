//! `IoStream`: Tornado's IOStream, a buffered stream over a connected socket.
//!
//! The same API on both backends (the differences live in `transport/`):
//! `read_until`, `read_bytes`, `read_some`, `read_until_close`, `write`, `flush`,
//! `close`, a close callback, and the error that closed it. Each operation gives one
//! value (`ops.rs`: [`Reading`], [`Writing`], [`Flushing`]) that is given a
//! continuation with `then` (Tornado's callbacks) or awaited in a task. The read side is
//! `read.rs`, the write side `write.rs`, the errors `error.rs`, `AsyncRead`/`AsyncWrite`
//! for tasks `async_io.rs`; this file holds the stream itself, its handles, closing, and
//! the dispatch loop that runs callbacks.
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
//! - A stream closes: by [`IoStream::close`], by an error, at end of file (unless
//!   [`IoStream::set_close_on_eof`] says otherwise), when its loop closes, or when its
//!   last handle is dropped with nothing waiting on it (no read pending, no write or
//!   flush waiting for a continuation, no drain callback). A read pending keeps it open
//!   with no handle left, as a Tornado stream is kept by its callbacks.
//! - Closing is graceful: bytes written before a close (or before the last handle was
//!   dropped) still go out, within the stream's linger time
//!   ([`IoStream::set_linger`], 60 s by default), and then the socket closes; the peer
//!   sends what it likes meanwhile, and it is read and dropped (a socket closed with
//!   unread bytes would reset the connection and could cut off the answer). Only errors,
//!   the linger time, a server's immediate close and the loop closing cut a connection
//!   with bytes unsent.

mod async_io;
mod budget;
mod error;
mod in_place;
mod ops;
mod read;
mod tls;
mod transport;
mod write;

pub use error::StreamError;
pub use ops::{Flushing, Reading, Writing};
pub(crate) use read::ReadHandler;
pub(crate) use tls::stats_of as tls_stats_of;
pub use tls::{TlsConfig, TlsConnector, TlsError, TlsStats, DEFAULT_HANDSHAKE_TIMEOUT};
pub use write::{DEFAULT_HIGH_WATER, DEFAULT_MAX_WRITE_BUFFER};

use crate::reactor::{IoLoop, Resource, StepEnd, TimeoutId, WeakLoop};
use error::Failure;
use read::ReadSide;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;
use transport::{SockEvent, Transport};
use write::WriteSide;

/// The callback of a read: the bytes read (delimiter included), or why there are none.
pub(crate) type ReadCallback = Box<dyn FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>)>;
/// A callback that gets the loop and the stream (drained, closed).
pub(crate) type StreamCallback = Box<dyn FnOnce(&IoLoop, &IoStream)>;
/// What waits for bytes to have gone out (or the stream to have closed): the outcome.
pub(crate) type SentCallback = Box<dyn FnOnce(&IoLoop, &IoStream, io::Result<()>)>;

/// Default [`IoStream::set_max_buffer_size`].
pub const DEFAULT_MAX_BUFFER: usize = 4 * 1024 * 1024;

/// Default [`IoStream::set_linger`].
pub const DEFAULT_LINGER: Duration = Duration::from_secs(60);

struct State {
    r: ReadSide,
    w: WriteSide,
    /// Closed for its owner: reads and writes are refused (the socket may still be
    /// open, `lingering`).
    closed: bool,
    /// Closed with bytes still to send: the socket stays open until they are out or
    /// the linger time has passed.
    lingering: bool,
    linger: Duration,
    /// The timer that cuts a lingering close at the linger time.
    linger_timer: Option<TimeoutId>,
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
    /// TLS between the transport and the buffers, on a TLS stream (`tls/`).
    tls: Option<Box<tls::Tls>>,
}

struct Inner {
    st: RefCell<State>,
    transport: Transport,
    lp: WeakLoop,
    /// The owner's handles alive (clones of the one `new` gave).
    handles: Cell<usize>,
}

/// A buffered, nonblocking stream over a connected socket (Tornado's `IOStream`).
///
/// Cloning gives another handle to the same stream. It is `!Send`: it belongs to the
/// loop that made it.
///
/// Every operation gives one value to wait on, with a continuation (`then`) or
/// `.await`: reads ([`read_until`](Self::read_until), [`read_bytes`](Self::read_bytes),
/// [`read_some`](Self::read_some), [`read_until_close`](Self::read_until_close)) give a
/// [`Reading`]; [`write`](Self::write) a [`Writing`]; [`flush`](Self::flush) and
/// [`close`](Self::close) a [`Flushing`]. The names match `futures`' `AsyncWriteExt`
/// where the meaning does (`write`, `flush`, `close` resolve when the bytes have gone
/// to the kernel), and the stream implements `AsyncRead`/`AsyncWrite`.
///
/// **Dropping**: dropping the last handle closes the stream, gracefully (what was
/// written still goes out, within the [linger time](Self::set_linger)), unless
/// something still waits on it: a read pending, a write or flush with a continuation,
/// a drain callback. Then it closes once that is done, if no handle has been made
/// again meanwhile (the callbacks get `&IoStream`, and may clone it).
///
/// ```
/// use coreloop::{IoLoop, IoStream};
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let lp = IoLoop::new()?;
/// let (ours, mut theirs) = UnixStream::pair()?;
/// let stream = IoStream::new(&lp, ours)?;
/// theirs.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
/// stream.read_until(b"\r\n\r\n", 1024).then(|lp, s, head| {
///     assert_eq!(head.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
///     s.write(b"HTTP/1.0 200 OK\r\n\r\nhi");
///     s.close().then(|lp, _, closed| { closed.unwrap(); lp.stop(); });
/// });
/// drop(stream); // the pending read keeps it open
/// lp.start()?;
/// let mut answer = String::new();
/// theirs.read_to_string(&mut answer)?;
/// assert_eq!(answer, "HTTP/1.0 200 OK\r\n\r\nhi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct IoStream {
    inner: Rc<Inner>,
    /// A handle of the owner's (counted in `handles`), or the stream's own reference
    /// to itself while it runs callbacks (not counted).
    counted: bool,
}

impl Clone for IoStream {
    fn clone(&self) -> IoStream {
        self.inner.handles.set(self.inner.handles.get() + 1);
        IoStream {
            inner: self.inner.clone(),
            counted: true,
        }
    }
}

impl Drop for IoStream {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let left = self.inner.handles.get() - 1;
        self.inner.handles.set(left);
        if left == 0 {
            // The dispatch loop, in a later step, closes it if nothing waits on it. (A
            // handle may be dropped while the stream's state is borrowed further up the
            // stack, when a callback holding it is dropped: nothing here borrows it.)
            if let Some(lp) = self.inner.lp.upgrade() {
                let me = self.internal();
                lp.add_callback(move |lp| me.dispatch(lp));
            }
        }
    }
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
                    IoStream::uncounted(inner).on_event(lp, ev);
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
                    r: ReadSide::default(),
                    w: WriteSide::default(),
                    closed: false,
                    lingering: false,
                    linger_timer: None,
                    linger: DEFAULT_LINGER,
                    error: None,
                    close_cb: None,
                    close_on_eof: true,
                    dispatching: false,
                    dispatch_scheduled: false,
                    resource_key: None,
                    guard: None,
                    held: budget::Held::new(lp),
                    tls: None,
                }),
                transport,
                lp: lp.downgrade(),
                handles: Cell::new(1),
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let key = lp.track(inner.clone());
        inner.st.borrow_mut().resource_key = Some(key);
        Ok(IoStream {
            inner,
            counted: true,
        })
    }

    /// The stream's own reference to itself (not one of the owner's handles).
    fn uncounted(inner: Rc<Inner>) -> IoStream {
        IoStream {
            inner,
            counted: false,
        }
    }

    /// Another reference to this stream that is not one of the owner's handles.
    fn internal(&self) -> IoStream {
        IoStream::uncounted(self.inner.clone())
    }

    /// A reference that does not keep the stream alive.
    pub(crate) fn downgrade(&self) -> WeakStream {
        WeakStream(Rc::downgrade(&self.inner))
    }

    fn lp(&self) -> Option<IoLoop> {
        self.inner.lp.upgrade()
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

    /// Closes the stream, gracefully: a pending read fails, reads and writes are
    /// refused from now on and the close callback runs, but the bytes written before it
    /// still go out (within the [linger time](Self::set_linger)) before the socket
    /// closes. The returned [`Flushing`] says when the socket has closed, and whether all
    /// the bytes went out (`AsyncWriteExt::close` for a task, with the same meaning); it
    /// need not be waited for. Calling it again does nothing more.
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::io::Read;
    /// let lp = IoLoop::new()?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// lp.run_until_complete(async move {
    ///     s.write(b"bye");
    ///     s.close().await // the write above has gone out by now
    /// })??;
    /// let mut got = String::new();
    /// b.read_to_string(&mut got)?;
    /// assert_eq!(got, "bye");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&self) -> Flushing {
        if let Some(lp) = self.lp() {
            self.close_gracefully(&lp);
        }
        Flushing::new(self, ops::Until::Closed)
    }

    /// Closes the stream at once: what was not yet handed to the kernel is dropped.
    pub(crate) fn abort(&self) {
        if let Some(lp) = self.lp() {
            self.close_with(&lp, None);
        }
    }

    /// How long bytes written before a close may wait for the peer to take them
    /// (default [`DEFAULT_LINGER`], 60 s); past it the connection is cut and the close
    /// answers [`StreamError::LingerTimeout`]. What a dropped stream's unsent bytes get
    /// too.
    pub fn set_linger(&self, linger: Duration) {
        self.inner.st.borrow_mut().linger = linger;
    }

    /// True once the stream is closed for its owner (the socket may still be sending
    /// what was written before the close).
    pub fn closed(&self) -> bool {
        self.inner.st.borrow().closed
    }

    /// Closes for the owner now and for the socket once the write buffer is empty (or
    /// the linger time is over).
    fn close_gracefully(&self, lp: &IoLoop) {
        let linger = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                return;
            }
            IoStream::tls_close_notify(&mut st);
            if st.all_sent() {
                None
            } else {
                st.closed = true;
                st.lingering = true;
                st.r.wake_reader();
                st.w.wake_writer();
                Some(st.linger)
            }
        };
        let Some(linger) = linger else {
            return self.close_with(lp, None);
        };
        // Whatever the peer sends meanwhile is read and dropped (a socket closed with
        // unread bytes resets the connection, which can destroy the answer in flight).
        if self.inner.transport.set_room(read::PAUSE_READING_AT) {
            self.inner.transport.set_reading(lp, true);
        }
        let weak = Rc::downgrade(&self.inner);
        let timer = lp.call_later(linger, move |lp| {
            if let Some(inner) = weak.upgrade() {
                let s = IoStream::uncounted(inner);
                s.inner.st.borrow_mut().linger_timer = None;
                if s.inner.st.borrow().lingering {
                    s.close_with(lp, Some(&StreamError::LingerTimeout.into()));
                }
            }
        });
        self.inner.st.borrow_mut().linger_timer = Some(timer);
        if self.is_tls() {
            // close_notify goes out behind what was written.
            self.schedule_flush(lp);
        }
        self.schedule_dispatch();
    }

    /// The error that closed the stream, if an error did.
    pub fn error(&self) -> Option<io::Error> {
        self.inner.st.borrow().error.map(Failure::to_error)
    }

    /// Attaches something to drop when the stream closes.
    pub(crate) fn set_guard(&self, guard: Box<dyn std::any::Any>) {
        self.inner.st.borrow_mut().guard = Some(guard);
    }

    /// Closes the socket now (a graceful close ends here too, once its bytes are out).
    fn close_with(&self, lp: &IoLoop, err: Option<&io::Error>) {
        let (out, key, guard) = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed && !st.lingering {
                return;
            }
            st.closed = true;
            st.lingering = false;
            if st.error.is_none() {
                st.error = err.map(Failure::of);
            }
            st.r.wake_reader();
            if let Some(t) = st.linger_timer.take() {
                lp.remove_timeout(t); // (the timer heap is not the stream's state)
            }
            IoStream::tls_closed(lp, &mut st);
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
        let tls = self.inner.st.borrow().tls.is_some();
        match ev {
            SockEvent::Data(v) if tls => self.tls_received(lp, v),
            SockEvent::Data(v) => self.received(lp, v),
            SockEvent::Eof if tls => self.tls_eof(lp),
            SockEvent::Eof => self.at_eof(lp),
            SockEvent::Sent(buf) => self.sent(lp, buf),
            SockEvent::Error(e) => self.close_with(lp, Some(&e)),
        }
    }

    /// The peer will send nothing more (end of file, or TLS close_notify).
    fn at_eof(&self, lp: &IoLoop) {
        {
            let mut st = self.inner.st.borrow_mut();
            st.r.eof = true;
            st.r.wake_reader();
        }
        self.dispatch(lp);
    }

    /// Waits for the TLS handshake to end: `Ok` once it has, or the error that ended
    /// it (a [`StreamError::Tls`] with the cause, or why the stream closed); an error
    /// at once for a stream that is not TLS. Reads and writes need not wait for it
    /// (they carry plaintext once it is over); this is for a client that wants to
    /// know the server's certificate verified before it goes on.
    pub fn handshake(&self) -> Flushing {
        Flushing::new(self, ops::Until::Handshake)
    }

    /// Runs the dispatch loop now if we are not inside it, else lets it pick up the
    /// work; from outside any event (a call from a timer, say), runs it in the next step.
    fn schedule_dispatch(&self) {
        let mut st = self.inner.st.borrow_mut();
        if st.dispatching || st.dispatch_scheduled {
            return;
        }
        let Some(lp) = self.inner.lp.upgrade() else {
            return;
        };
        st.dispatch_scheduled = true;
        drop(st);
        let me = self.internal();
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
            match self.next_due() {
                Due::Write(cb, result) | Due::Handshake(cb, result) => cb(lp, self, result),
                Due::Drain(cb) | Due::Closed(cb) => cb(lp, self),
                Due::Close => self.close_with(lp, None),
                Due::Release => self.close_gracefully(lp),
                Due::Nothing => break,
            }
        }
        self.inner.st.borrow_mut().dispatching = false;
        self.pace_receiving(Some(lp));
    }
}

/// What the dispatch loop runs next, besides a read (see [`IoStream::next_due`]).
enum Due {
    /// A write or flush continuation, with its outcome.
    Write(SentCallback, io::Result<()>),
    /// A TLS stream's handshake continuation, with its outcome.
    Handshake(SentCallback, io::Result<()>),
    /// The drain callback: the write buffer is down to half the high-water mark.
    Drain(StreamCallback),
    /// The close callback.
    Closed(StreamCallback),
    /// End of file closes the stream now.
    Close,
    /// Nobody holds the stream and nothing waits on it: it closes, gracefully.
    Release,
    Nothing,
}

impl IoStream {
    /// What is due besides a read, in one look at the state, in this order: write
    /// continuations, a TLS handshake's, the drain callback (not while the loop's
    /// buffer budget holds the stream back), the close callback; then whether end of file
    /// closes the stream (Tornado notices end of file only when it reads past the data,
    /// so it closes at the same point: once the owner has read everything that came
    /// before it and everything written has gone out), and whether nobody holds it.
    fn next_due(&self) -> Due {
        let mut st = self.inner.st.borrow_mut();
        let st = &mut *st;
        let dead = st.closed && !st.lingering;
        if let Some((cb, result)) = st.w.due_write_callback(dead, st.error) {
            return Due::Write(cb, result);
        }
        if let Some((cb, result)) = IoStream::due_handshake_callback(st) {
            return Due::Handshake(cb, result);
        }
        if !st.closed && !st.held.back {
            if let Some(cb) = st.w.due_drain_callback() {
                return Due::Drain(cb);
            }
        }
        if st.closed && !st.r.wanted() {
            if let Some(cb) = st.close_cb.take() {
                return Due::Closed(cb);
            }
        }
        if st.close_on_eof && !st.closed && st.r.done_at_eof() && st.all_sent() {
            return Due::Close;
        }
        if self.inner.handles.get() == 0
            && !st.closed
            && !st.r.wanted()
            && !st.w.waited_on()
            && !IoStream::handshake_waited_on(st)
        {
            return Due::Release;
        }
        Due::Nothing
    }
}

/// A stream that may be gone (an acceptor's list of its connections holds these).
#[derive(Clone)]
pub(crate) struct WeakStream(Weak<Inner>);

impl WeakStream {
    /// The stream, if it is still there (a reference of the stream's own, not one of
    /// its owner's handles).
    pub(crate) fn upgrade(&self) -> Option<IoStream> {
        self.0.upgrade().map(IoStream::uncounted)
    }
}

impl State {
    /// Nothing is left to send: the owner's bytes, and on a TLS stream what TLS has
    /// to send (close_notify, an alert).
    fn all_sent(&self) -> bool {
        self.w.buffered() == 0
            && !self.w.in_flight
            && !self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The error for a read that cannot finish because the stream ended.
    fn ended_error(&self) -> io::Error {
        match self.error {
            Some(f) => f.to_error(),
            // The peer ended it, or its owner closed it first.
            None if self.r.eof => StreamError::Eof.into(),
            None => StreamError::Closed.into(),
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
        IoStream::uncounted(self).start_send(lp);
    }
}

impl Resource for Inner {
    fn close_resource(&self, lp: &IoLoop) {
        let guard = {
            let mut st = self.st.borrow_mut();
            if st.closed && !st.lingering {
                return;
            }
            st.closed = true;
            st.lingering = false;
            st.r.read = None;
            st.r.wake_reader();
            st.w.on_close();
            st.w.forget_waiters();
            if let Some(t) = st.tls.as_mut() {
                t.forget_waiters();
            }
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
