//! `IoStream`: Tornado's IOStream, a buffered stream over a connected socket.
//!
//! The same API on both backends (the differences live in `transport.rs`):
//! `read_until`, `read_bytes`, `read_bytes_partial`, `read_until_close`, `write` with a
//! callback once flushed, a close callback, `close`, and the error that closed it.
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
//!   buffer over [`IoStream::set_max_buffer_size`], closes the stream with an
//!   `InvalidData` error; writes beyond [`IoStream::set_max_write_buffer`] close it too.
//!   Below that, [`IoStream::over_high_water`] and [`IoStream::on_drain`] let a writer
//!   wait for a slow reader instead of buffering without limit.
//! - An idle stream holds no buffer: read and write buffers come from the loop's pool
//!   and go back when emptied.
//! - An open stream is kept alive by its loop (a stream nobody holds still delivers its
//!   callbacks) until it is closed: by [`IoStream::close`], by an error, at end of file
//!   (unless [`IoStream::set_close_on_eof`] says otherwise), or when its loop closes.

use crate::ioloop::{Flush, IoLoop, Resource, WeakLoop};
use crate::transport::{SendNow, SockEvent, Transport};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::{Rc, Weak};

/// The callback of a read: the bytes read (delimiter included), or why there are none.
pub type ReadCallback = Box<dyn FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>)>;
/// A callback that gets the loop and the stream (write flushed, drained, closed).
pub type StreamCallback = Box<dyn FnOnce(&IoLoop, &IoStream)>;
/// The callback of [`IoStream::connect`].
pub type ConnectCallback = Box<dyn FnOnce(&IoLoop, io::Result<IoStream>)>;

/// Default [`IoStream::set_max_buffer_size`].
pub const DEFAULT_MAX_BUFFER: usize = 4 * 1024 * 1024;
/// Default [`IoStream::set_high_water_mark`].
pub const DEFAULT_HIGH_WATER: usize = 1024 * 1024;
/// Default [`IoStream::set_max_write_buffer`].
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 64 * 1024 * 1024;
/// A write buffer larger than this is not kept for reuse once flushed.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;
/// With no read pending, receiving pauses once this much is buffered (TCP flow control
/// then slows the peer) and resumes when a read is asked for.
const PAUSE_READING_AT: usize = 64 * 1024;

/// A delimiter, stored inline (no allocation per read).
#[derive(Clone, Copy)]
struct Delim {
    bytes: [u8; 16],
    len: u8,
}

impl Delim {
    fn new(d: &[u8]) -> io::Result<Delim> {
        if d.is_empty() || d.len() > 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a delimiter is 1 to 16 bytes",
            ));
        }
        let mut bytes = [0u8; 16];
        bytes[..d.len()].copy_from_slice(d);
        Ok(Delim {
            bytes,
            len: d.len() as u8,
        })
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

enum ReadKind {
    /// `close`: whether exceeding `max` closes the stream (Tornado) or leaves it open.
    Until {
        delim: Delim,
        max: usize,
        close: bool,
    },
    Bytes(usize),
    Partial(usize),
    UntilClose,
    /// More than this many bytes unread: completes with nothing taken (see
    /// [`IoStream::read_more_by`]).
    More(usize),
}

struct PendingRead {
    kind: ReadKind,
    cb: Reader,
}

/// An owner that takes the result of each read it asks for itself, so asking costs no
/// allocation (the HTTP connection reads every request head this way; a boxed closure
/// per read was about 5% of a pipelined request's instructions). What it reads comes
/// in a small recycled buffer ([`crate::buffer::small_copy`]) when short: give it back
/// with [`crate::buffer::recycle_small`].
pub(crate) trait ReadHandler {
    /// The read asked for with [`IoStream::read_until_within_by`] completed.
    fn on_read(self: Rc<Self>, lp: &IoLoop, s: &IoStream, r: io::Result<Vec<u8>>);
}

/// Who a pending read answers.
enum Reader {
    Once(ReadCallback),
    Handler(Rc<dyn ReadHandler>),
}

impl Reader {
    fn call(self, lp: &IoLoop, s: &IoStream, r: io::Result<Vec<u8>>) {
        match self {
            Reader::Once(f) => f(lp, s, r),
            Reader::Handler(h) => h.on_read(lp, s, r),
        }
    }
}

struct State {
    lp: WeakLoop,
    /// Read buffer: `rbuf[rpos..]` is unread. Empty with no capacity when idle.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Unread bytes already searched for the pending delimiter without a match.
    scanned: usize,
    read: Option<PendingRead>,
    eof: bool,
    /// A read failed because the stream ended: what is left unread can never complete
    /// a read the owner is waiting for, so end of file may close the stream.
    read_past_eof: bool,
    max_buffer: usize,
    /// Bytes not yet handed to the transport.
    out: Vec<u8>,
    /// Bytes handed to the transport and not yet sent (0 when no send is pending).
    sending: usize,
    written: u64,
    flushed: u64,
    write_cbs: VecDeque<(u64, StreamCallback)>,
    high_water: usize,
    max_write: usize,
    drain_cb: Option<StreamCallback>,
    closed: bool,
    error: Option<(io::ErrorKind, String)>,
    close_cb: Option<StreamCallback>,
    close_on_eof: bool,
    dispatching: bool,
    dispatch_scheduled: bool,
    /// A flush is queued on the loop for the end of this step.
    flush_scheduled: bool,
    resource_key: Option<usize>,
    /// Dropped when the stream closes (the acceptor's connection count).
    guard: Option<Box<dyn std::any::Any>>,
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

    /// Connects to `addr` without blocking the loop (TCP_NODELAY set), then calls `cb`
    /// with the stream or the error. The connect is watched through the loop's readiness
    /// on either backend; `timeout` bounds it (a timeout is `TimedOut`).
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::time::Duration;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let lp = IoLoop::new()?;
    /// IoStream::connect(&lp, l.local_addr()?, Duration::from_secs(5), |lp, r| {
    ///     assert!(r.is_ok());
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<F>(
        lp: &IoLoop,
        addr: SocketAddr,
        timeout: std::time::Duration,
        cb: F,
    ) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, io::Result<IoStream>) + 'static,
    {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        sock.set_tcp_nodelay(true)?;
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let fd: OwnedFd = sock.into();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // The handler and the timer share the pending connect; whichever comes first
        // takes it.
        let pending = Rc::new(RefCell::new(Some((fd, Box::new(cb) as ConnectCallback))));
        let p = pending.clone();
        let timer = lp.call_later(timeout, move |lp| {
            if let Some((fd, cb)) = p.borrow_mut().take() {
                lp.remove_handler(std::os::fd::AsRawFd::as_raw_fd(&fd));
                drop(fd);
                cb(lp, Err(io::ErrorKind::TimedOut.into()));
            }
        });
        lp.add_handler(raw, crate::Interest::WRITABLE, move |lp, fd, _ready| {
            let Some((owned, cb)) = pending.borrow_mut().take() else {
                lp.remove_handler(fd);
                return;
            };
            lp.remove_handler(fd);
            lp.remove_timeout(timer);
            let result = match socket2::SockRef::from(&owned).take_error() {
                Ok(None) => IoStream::from_fd(lp, owned),
                Ok(Some(e)) | Err(e) => Err(e),
            };
            cb(lp, result);
        })
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
            let transport = match Transport::new(lp, fd, sink) {
                Ok(t) => t,
                Err(e) => {
                    failed = Some(e);
                    Transport::dead()
                }
            };
            Inner {
                st: RefCell::new(State {
                    lp: lp.downgrade(),
                    rbuf: Vec::new(),
                    rpos: 0,
                    scanned: 0,
                    read: None,
                    eof: false,
                    read_past_eof: false,
                    max_buffer: DEFAULT_MAX_BUFFER,
                    out: Vec::new(),
                    sending: 0,
                    written: 0,
                    flushed: 0,
                    write_cbs: VecDeque::new(),
                    high_water: DEFAULT_HIGH_WATER,
                    max_write: DEFAULT_MAX_WRITE_BUFFER,
                    drain_cb: None,
                    closed: false,
                    error: None,
                    close_cb: None,
                    close_on_eof: true,
                    dispatching: false,
                    dispatch_scheduled: false,
                    flush_scheduled: false,
                    resource_key: None,
                    guard: None,
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

    fn lp(&self) -> Option<IoLoop> {
        self.inner.st.borrow().lp.upgrade()
    }

    // ------------------------------------------------------------------ reads

    fn start_read(&self, kind: ReadKind, cb: Reader) -> io::Result<()> {
        {
            let mut st = self.inner.st.borrow_mut();
            if st.read.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "a read is already pending on this stream",
                ));
            }
            st.scanned = 0;
            st.read = Some(PendingRead { kind, cb });
        }
        if self.inner.transport.would_change_reading(true) {
            if let Some(lp) = self.lp() {
                self.inner.transport.set_reading(&lp, true);
            }
        }
        self.schedule_dispatch();
        Ok(())
    }

    /// Reads up to and including `delimiter` (1 to 16 bytes). If the delimiter is not
    /// within the first `max_bytes` bytes, the callback gets an `InvalidData` error and
    /// the stream closes.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"line one\nline two\n")?;
    /// s.read_until(b"\n", 64, |lp, _, line| {
    ///     assert_eq!(line.unwrap(), b"line one\n");
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until<F>(&self, delimiter: &[u8], max_bytes: usize, cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>) + 'static,
    {
        self.read_until_kind(delimiter, max_bytes, true, Reader::Once(Box::new(cb)))
    }

    /// Like [`read_until`](Self::read_until), but when the delimiter is not within
    /// `max_bytes` the stream stays open and the data stays buffered: the caller can
    /// still answer (an HTTP server sends 431) before it closes.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"a very long line\n")?;
    /// s.read_until_within(b"\n", 4, |lp, s, r| {
    ///     assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    ///     assert!(!s.closed());
    ///     assert_eq!(s.peek(6), b"a very");
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until_within<F>(&self, delimiter: &[u8], max_bytes: usize, cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>) + 'static,
    {
        self.read_until_kind(delimiter, max_bytes, false, Reader::Once(Box::new(cb)))
    }

    fn read_until_kind(
        &self,
        delimiter: &[u8],
        max: usize,
        close: bool,
        cb: Reader,
    ) -> io::Result<()> {
        let delim = Delim::new(delimiter)?;
        self.start_read(ReadKind::Until { delim, max, close }, cb)
    }

    /// Waits until more bytes than those unread now have arrived, or the stream ends
    /// (an error, as for any read), and tells `handler`, with nothing taken from the
    /// buffer: for an owner that decodes in place with [`with_unread`](Self::with_unread).
    pub(crate) fn read_more_by(&self, handler: Rc<dyn ReadHandler>) -> io::Result<()> {
        let unread = self.unread();
        self.start_read(ReadKind::More(unread), Reader::Handler(handler))
    }

    /// Lets `f` look at the unread bytes and consume the first of them: it returns how
    /// many (at most all of them) and a result. For an owner that decodes messages in
    /// place instead of asking for a copy of each. No read may be pending, and `f` must
    /// not use the stream.
    pub(crate) fn with_unread<R>(&self, lp: &IoLoop, f: impl FnOnce(&[u8]) -> (usize, R)) -> R {
        let mut st = self.inner.st.borrow_mut();
        let st = &mut *st;
        debug_assert!(st.read.is_none(), "with_unread while a read is pending");
        let (n, r) = f(&st.rbuf[st.rpos..]);
        consume(st, lp, n);
        r
    }

    /// Bytes handed to the kernel so far, partial sends included: a writer's progress.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.inner.transport.bytes_sent()
    }

    /// A copy of up to `max` unread bytes, without consuming them.
    pub fn peek(&self, max: usize) -> Vec<u8> {
        let st = self.inner.st.borrow();
        let unread = &st.rbuf[st.rpos..];
        unread[..unread.len().min(max)].to_vec()
    }

    /// Shuts down the writing side (the peer reads end of file) once what was written
    /// has been handed to the kernel; reading goes on. For a lingering close: answer,
    /// shut down, drain what the peer still sends, then close.
    pub fn shutdown_write(&self) {
        let _ = self.write_then(b"", |_, s| {
            let _ = s
                .inner
                .transport
                .with_fd(|fd| socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Write));
        });
    }

    /// Reads exactly `n` bytes (`n == 0` completes at once with nothing). `n` above the
    /// stream's maximum buffer size fails with `InvalidInput`.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"abcdef")?;
    /// s.read_bytes(4, |lp, _, got| {
    ///     assert_eq!(got.unwrap(), b"abcd");
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_bytes<F>(&self, n: usize, cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>) + 'static,
    {
        if n > self.inner.st.borrow().max_buffer {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read_bytes above the stream's maximum buffer size",
            ));
        }
        self.start_read(ReadKind::Bytes(n), Reader::Once(Box::new(cb)))
    }

    /// Reads whatever is available, at least one byte and at most `max_bytes`.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"xyz")?;
    /// s.read_bytes_partial(2, |lp, _, got| {
    ///     assert_eq!(got.unwrap(), b"xy");
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_bytes_partial<F>(&self, max_bytes: usize, cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>) + 'static,
    {
        let kind = if max_bytes == 0 {
            ReadKind::Bytes(0)
        } else {
            ReadKind::Partial(max_bytes)
        };
        self.start_read(kind, Reader::Once(Box::new(cb)))
    }

    /// Reads everything until the peer closes (bounded by the maximum buffer size).
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"all of it")?;
    /// drop(b);
    /// s.read_until_close(|lp, _, got| {
    ///     assert_eq!(got.unwrap(), b"all of it");
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until_close<F>(&self, cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>) + 'static,
    {
        self.start_read(ReadKind::UntilClose, Reader::Once(Box::new(cb)))
    }

    /// True while a read is waiting for data.
    pub fn reading(&self) -> bool {
        self.inner.st.borrow().read.is_some()
    }

    // ------------------------------------------------------------------ writes

    /// Queues `data` to be written; it goes out while the loop runs (on epoll usually at
    /// once, on io_uring with the loop's next submit). Errors if the stream is closed, or
    /// (closing it) if the write buffer would pass
    /// [`set_max_write_buffer`](Self::set_max_write_buffer).
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Read;
    /// # use std::time::Duration;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.write(b"hello")?;
    /// lp.call_later(Duration::from_millis(5), |lp| lp.stop());
    /// lp.start()?;
    /// let mut got = [0u8; 5];
    /// b.read_exact(&mut got)?;
    /// assert_eq!(&got, b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        self.write_inner(data, None)
    }

    /// Like [`write`](Self::write), then `cb` once everything written so far has gone
    /// to the kernel. Not called if the stream closes first.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # let lp = IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.write_then(b"bye", |lp, s| { s.close(); lp.stop(); })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_then<F>(&self, data: &[u8], cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, &IoStream) + 'static,
    {
        self.write_inner(data, Some(Box::new(cb)))
    }

    fn write_inner(&self, data: &[u8], cb: Option<StreamCallback>) -> io::Result<()> {
        self.write_with(|out| out.extend_from_slice(data))?;
        if let Some(cb) = cb {
            let mut st = self.inner.st.borrow_mut();
            let at = st.written;
            st.write_cbs.push_back((at, cb));
            drop(st);
            // Due at once if nothing is left to send: the dispatch loop runs it.
            self.schedule_dispatch();
        }
        Ok(())
    }

    /// Appends to the write buffer through `f` (no intermediate copy): how a protocol
    /// serializes a response straight into the stream. Errors as [`write`](Self::write);
    /// the limit is checked after `f` ran, so the buffer passes it by one write at most
    /// before the stream closes.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # let lp = IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.write_with(|out| out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n"))?;
    /// assert_eq!(s.write_buffer_len(), 19);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_with(&self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let lp = self.lp().ok_or(io::ErrorKind::NotConnected)?;
        let over = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                return Err(st.closed_error());
            }
            if st.out.capacity() == 0 {
                st.out = lp.with_pool(|p| p.take());
            }
            let before = st.out.len();
            f(&mut st.out);
            let added = st.out.len() - before;
            st.written += added as u64;
            buffered(&st) > st.max_write
        };
        if over {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "write buffer over its limit (the peer is not reading)",
            );
            let err = io::Error::new(e.kind(), e.to_string());
            self.close_with(&lp, Some(e));
            return Err(err);
        }
        self.schedule_flush(&lp);
        Ok(())
    }

    /// Sends what is buffered once the current step of the loop is over: the writes of
    /// one step (a batch of pipelined responses, say) go out in one send.
    fn schedule_flush(&self, lp: &IoLoop) {
        {
            let mut st = self.inner.st.borrow_mut();
            if st.flush_scheduled || st.sending > 0 || st.closed {
                return;
            }
            st.flush_scheduled = true;
        }
        lp.defer_flush(self.inner.clone());
    }

    /// Hands the queued bytes to the transport.
    fn start_send(&self, lp: &IoLoop) {
        let buf = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed || st.sending > 0 || st.out.is_empty() {
                return;
            }
            let buf = std::mem::take(&mut st.out);
            st.sending = buf.len();
            buf
        };
        match self.inner.transport.send(lp, buf) {
            SendNow::Done(buf) => self.sent(lp, buf),
            SendNow::Pending => {}
            SendNow::Failed(e) => self.close_with(lp, Some(e)),
        }
    }

    /// A send finished: account for it, reuse or return its buffer, send more.
    fn sent(&self, lp: &IoLoop, mut buf: Vec<u8>) {
        let (more, give_back) = {
            let mut st = self.inner.st.borrow_mut();
            st.flushed += st.sending as u64;
            st.sending = 0;
            buf.clear();
            let mut give_back = None;
            if st.out.capacity() == 0 && buf.capacity() <= KEEP_WRITE_BUFFER {
                // Nothing new was queued meanwhile: keep the buffer only while there is
                // more to write; an idle stream returns it to the pool.
                give_back = Some(buf);
            }
            (!st.out.is_empty(), give_back)
        };
        if let Some(buf) = give_back {
            lp.with_pool(|p| p.give(buf));
        }
        if more {
            self.start_send(lp);
        }
        // Only what waits on sends needs the dispatch loop: write and drain callbacks,
        // and a close that waits for the buffer to empty. (Scheduling it regardless cost
        // a boxed callback per keep-alive response.)
        let waiting = {
            let st = self.inner.st.borrow();
            !st.write_cbs.is_empty() || st.drain_cb.is_some() || st.eof || st.closed
        };
        if waiting {
            self.schedule_dispatch();
        }
    }

    /// Bytes written and not yet handed to the kernel.
    pub fn write_buffer_len(&self) -> usize {
        buffered(&self.inner.st.borrow())
    }

    /// True while more than the high-water mark is buffered: a writer should wait for
    /// [`on_drain`](Self::on_drain) before writing more.
    pub fn over_high_water(&self) -> bool {
        let st = self.inner.st.borrow();
        buffered(&st) > st.high_water
    }

    /// Calls `cb` once the write buffer has drained to half the high-water mark or less
    /// (at once, in a later step, if it already has). Replaces an earlier drain callback.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # let lp = IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.set_high_water_mark(64 * 1024);
    /// s.write(&vec![0u8; 16 * 1024])?;
    /// s.on_drain(|lp, s| { assert!(!s.over_high_water()); lp.stop(); });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on_drain<F>(&self, cb: F)
    where
        F: FnOnce(&IoLoop, &IoStream) + 'static,
    {
        self.inner.st.borrow_mut().drain_cb = Some(Box::new(cb));
        self.schedule_dispatch();
    }

    /// Sets the high-water mark of the write buffer (default 1 MiB).
    pub fn set_high_water_mark(&self, bytes: usize) {
        self.inner.st.borrow_mut().high_water = bytes;
    }

    /// Sets the most bytes the write buffer may hold; a write past it closes the stream
    /// (default 64 MiB). A guard against writers that ignore the high-water mark.
    pub fn set_max_write_buffer(&self, bytes: usize) {
        self.inner.st.borrow_mut().max_write = bytes;
    }

    /// Sets the most bytes the read buffer may hold (default 4 MiB); more closes the
    /// stream with an `InvalidData` error.
    pub fn set_max_buffer_size(&self, bytes: usize) {
        self.inner.st.borrow_mut().max_buffer = bytes;
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
        let st = self.inner.st.borrow();
        st.error
            .as_ref()
            .map(|(k, m)| io::Error::new(*k, m.clone()))
    }

    /// Attaches something to drop when the stream closes.
    pub(crate) fn set_guard(&self, guard: Box<dyn std::any::Any>) {
        self.inner.st.borrow_mut().guard = Some(guard);
    }

    fn close_with(&self, lp: &IoLoop, err: Option<io::Error>) {
        let (out, key, guard) = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            st.error = err.map(|e| (e.kind(), e.to_string()));
            st.write_cbs.clear();
            st.drain_cb = None;
            (
                std::mem::take(&mut st.out),
                st.resource_key.take(),
                st.guard.take(),
            )
        };
        self.inner.transport.close(lp);
        drop(guard);
        lp.with_pool(|p| p.give(out));
        self.schedule_dispatch();
        if let Some(key) = key {
            lp.untrack(key);
        }
    }

    // ------------------------------------------------------------------ addresses

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

    /// Bytes received and not yet read.
    pub fn read_buffer_len(&self) -> usize {
        self.unread()
    }

    /// The socket's fd while the stream is open (for socket options).
    pub fn fd(&self) -> RawFd {
        self.inner.transport.fd()
    }

    // ------------------------------------------------------------------ events

    fn on_event(&self, lp: &IoLoop, ev: SockEvent) {
        match ev {
            SockEvent::Data(v) => {
                let too_big = {
                    let mut st = self.inner.st.borrow_mut();
                    let st = &mut *st;
                    if st.rpos == st.rbuf.len() {
                        let old = std::mem::replace(&mut st.rbuf, v);
                        st.rpos = 0;
                        st.scanned = 0;
                        lp.with_pool(|p| p.give(old));
                    } else {
                        st.rbuf.extend_from_slice(&v);
                        lp.with_pool(|p| p.give(v));
                    }
                    st.rbuf.len() - st.rpos > st.max_buffer
                };
                self.dispatch(lp);
                let idle_and_full = {
                    let st = self.inner.st.borrow();
                    st.read.is_none() && st.rbuf.len() - st.rpos >= PAUSE_READING_AT
                };
                if idle_and_full {
                    self.inner.transport.set_reading(lp, false);
                }
                if too_big && self.unread() > self.inner.st.borrow().max_buffer {
                    self.close_with(
                        lp,
                        Some(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "read buffer over its maximum size",
                        )),
                    );
                }
            }
            SockEvent::Eof => {
                self.inner.st.borrow_mut().eof = true;
                self.dispatch(lp);
            }
            SockEvent::Sent(buf) => self.sent(lp, buf),
            SockEvent::Error(e) => self.close_with(lp, Some(e)),
        }
    }

    fn unread(&self) -> usize {
        let st = self.inner.st.borrow();
        st.rbuf.len() - st.rpos
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
            let write_cb = {
                let mut st = self.inner.st.borrow_mut();
                match st.write_cbs.front() {
                    Some((at, _)) if *at <= st.flushed => st.write_cbs.pop_front().map(|x| x.1),
                    _ => None,
                }
            };
            if let Some(cb) = write_cb {
                cb(lp, self);
                continue;
            }
            let drain_cb = {
                let mut st = self.inner.st.borrow_mut();
                if !st.closed && buffered(&st) <= st.high_water / 2 {
                    st.drain_cb.take()
                } else {
                    None
                }
            };
            if let Some(cb) = drain_cb {
                cb(lp, self);
                continue;
            }
            let close_cb = {
                let mut st = self.inner.st.borrow_mut();
                if st.closed && st.read.is_none() {
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
                st.eof
                    && st.close_on_eof
                    && !st.closed
                    && (st.rbuf.len() == st.rpos || st.read_past_eof)
                    && st.read.is_none()
                    && buffered(&st) == 0
            };
            if close_now {
                self.close_with(lp, None);
                continue;
            }
            break;
        }
        self.inner.st.borrow_mut().dispatching = false;
    }

    /// If the pending read can finish (with data or an error), takes it out with its
    /// result.
    fn complete_read(&self, lp: &IoLoop) -> Option<(Reader, io::Result<Vec<u8>>)> {
        let mut fail_close: Option<io::Error> = None;
        let out = {
            let mut st = self.inner.st.borrow_mut();
            let st = &mut *st;
            let read = st.read.as_ref()?;
            let unread = st.rbuf.len() - st.rpos;
            let ended = st.eof || st.closed;
            let outcome: Option<io::Result<usize>> = match &read.kind {
                ReadKind::Bytes(n) => {
                    if unread >= *n {
                        Some(Ok(*n))
                    } else if ended {
                        Some(Err(st.ended_error("before the bytes asked for arrived")))
                    } else {
                        None
                    }
                }
                ReadKind::Partial(max) => {
                    if unread > 0 {
                        Some(Ok(unread.min(*max)))
                    } else if ended {
                        Some(Err(st.ended_error("with nothing to read")))
                    } else {
                        None
                    }
                }
                ReadKind::UntilClose => {
                    if ended {
                        Some(Ok(unread))
                    } else {
                        None
                    }
                }
                ReadKind::More(n) => {
                    if unread > *n {
                        Some(Ok(0))
                    } else if ended {
                        Some(Err(st.ended_error("with nothing more to read")))
                    } else {
                        None
                    }
                }
                ReadKind::Until { delim, max, close } => {
                    let delim = delim.as_slice();
                    let hay = &st.rbuf[st.rpos..];
                    let from = st.scanned.saturating_sub(delim.len() - 1);
                    let exceeded = || {
                        let e = max_exceeded();
                        if *close {
                            e
                        } else {
                            // Same kind, but the stream stays open (see complete_read).
                            io::Error::new(e.kind(), KEEP_OPEN)
                        }
                    };
                    match find_delim(&hay[from..], delim) {
                        Some(i) if from + i + delim.len() <= *max => {
                            Some(Ok(from + i + delim.len()))
                        }
                        Some(_) => Some(Err(exceeded())),
                        None if unread > *max => Some(Err(exceeded())),
                        None => {
                            st.scanned = unread;
                            if ended {
                                Some(Err(st.ended_error("before the delimiter")))
                            } else {
                                None
                            }
                        }
                    }
                }
            };
            let outcome = outcome?;
            let read = st.read.take().expect("checked above");
            st.scanned = 0;
            match outcome {
                Ok(0) => Some((read.cb, Ok(Vec::new()))),
                Ok(n) => {
                    let small = matches!(read.cb, Reader::Handler(_));
                    Some((read.cb, Ok(take_front(st, lp, n, small))))
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        if e.to_string() != KEEP_OPEN {
                            fail_close = Some(io::Error::new(e.kind(), e.to_string()));
                        }
                    } else {
                        st.read_past_eof = true;
                    }
                    Some((read.cb, Err(e)))
                }
            }
        };
        if let Some(e) = fail_close {
            self.close_with(lp, Some(e));
        }
        out
    }
}

/// Where `delim` first occurs in `hay`: memchr for its first byte, then a compare.
/// (`memmem::find` builds a searcher on every call, which costs more than the search
/// itself for a 40-byte request head.) Linear in `hay` for the short delimiters
/// streams use.
fn find_delim(hay: &[u8], delim: &[u8]) -> Option<usize> {
    let (&first, rest) = delim.split_first()?;
    let mut at = 0;
    while at + delim.len() <= hay.len() {
        let i = at + memchr::memchr(first, &hay[at..hay.len() - rest.len()])?;
        // Byte by byte: a call to memcmp for the 3 bytes of "\r\n\r\n" cost more.
        if hay[i + 1..i + delim.len()].iter().eq(rest) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// The message of a `read_until_within` that ran past its limit (the stream stays open).
const KEEP_OPEN: &str = "delimiter not found within max_bytes (stream left open)";

fn max_exceeded() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "delimiter not found within max_bytes",
    )
}

/// Takes the first `n` unread bytes; an emptied buffer goes back to the pool. `small`:
/// copy them into a recycled small buffer (for an owner that gives it back).
fn take_front(st: &mut State, lp: &IoLoop, n: usize, small: bool) -> Vec<u8> {
    let unread = st.rbuf.len() - st.rpos;
    if n == unread && st.rpos == 0 && n * 2 >= st.rbuf.capacity() {
        // All of a mostly full buffer: hand it over instead of copying. (A small read
        // is copied, and the pool-sized buffer goes back to the pool.)
        return std::mem::take(&mut st.rbuf);
    }
    let bytes = &st.rbuf[st.rpos..st.rpos + n];
    let v = if small {
        crate::buffer::small_copy(bytes)
    } else {
        bytes.to_vec()
    };
    consume(st, lp, n);
    v
}

/// Drops the first `n` unread bytes; an emptied buffer goes back to the pool.
fn consume(st: &mut State, lp: &IoLoop, n: usize) {
    st.rpos += n;
    if st.rpos == st.rbuf.len() {
        let old = std::mem::take(&mut st.rbuf);
        st.rpos = 0;
        lp.with_pool(|p| p.give(old));
    } else if st.rpos > 64 * 1024 && st.rpos * 2 > st.rbuf.len() {
        st.rbuf.drain(..st.rpos);
        st.rpos = 0;
    }
}

fn buffered(st: &State) -> usize {
    st.out.len() + st.sending
}

impl State {
    /// The error for a read that cannot finish because the stream ended.
    fn ended_error(&self, what: &str) -> io::Error {
        match &self.error {
            Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
            None => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream closed {what}"),
            ),
        }
    }

    fn closed_error(&self) -> io::Error {
        match &self.error {
            Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
            None => io::Error::new(io::ErrorKind::NotConnected, "stream is closed"),
        }
    }
}

impl Flush for Inner {
    fn flush(self: Rc<Self>, lp: &IoLoop) {
        self.st.borrow_mut().flush_scheduled = false;
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
            st.read = None;
            st.write_cbs.clear();
            st.close_cb = None;
            st.drain_cb = None;
            st.resource_key = None; // the loop is dropping its whole table
            st.guard.take()
        };
        self.transport.close(lp);
        drop(guard);
    }
}

impl fmt::Debug for IoStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.st.borrow();
        f.debug_struct("IoStream")
            .field("fd", &self.inner.transport.fd())
            .field("closed", &st.closed)
            .field("unread", &(st.rbuf.len() - st.rpos))
            .field("write_buffer", &buffered(&st))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::find_delim;

    #[test]
    fn find_delim_agrees_with_a_naive_search() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n"),
            (b"\r\r\n\r\r\n\r\n", b"\r\n\r\n"),
            (b"abc", b"abcd"),
            (b"", b"\n"),
            (b"\n", b"\n"),
            (b"aaab", b"ab"),
            (b"xyz", b"z"),
            (b"no delimiter here", b"\r\n"),
        ];
        for (hay, delim) in cases {
            let naive = hay.windows(delim.len()).position(|w| w == *delim);
            assert_eq!(find_delim(hay, delim), naive, "{hay:?} {delim:?}");
        }
    }
}
