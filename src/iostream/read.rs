//! The read side of a stream: the read buffer, the one pending read, and how it
//! completes.

use super::ops::Reading;
use super::{IoStream, State, StreamError, DEFAULT_MAX_BUFFER};
use crate::buffer::BUF_SIZE;
use crate::reactor::IoLoop;
use std::io;
use std::rc::Rc;

/// With no read pending, receiving pauses once this much is buffered (TCP flow control
/// then slows the peer) and resumes when a read is asked for.
pub(super) const PAUSE_READING_AT: usize = 64 * 1024;

/// A delimiter, stored inline (no allocation per read).
#[derive(Clone, Copy)]
pub(super) struct Delim {
    bytes: [u8; 16],
    len: u8,
}

impl Delim {
    fn new(d: &[u8]) -> Result<Delim, StreamError> {
        if d.is_empty() || d.len() > 16 {
            return Err(StreamError::BadDelimiter);
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

#[derive(Clone, Copy)]
pub(super) enum ReadKind {
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

impl ReadKind {
    /// How many more bytes than `unread` a waiting read of this kind needs, as far as
    /// it is known; a read that cannot tell (a delimiter, the end of the stream) takes
    /// a chunk at a time.
    fn need(&self, unread: usize) -> usize {
        match *self {
            ReadKind::Bytes(n) => n.saturating_sub(unread),
            ReadKind::Partial(_) => usize::from(unread == 0),
            ReadKind::More(n) => n.saturating_add(1).saturating_sub(unread),
            ReadKind::Until { .. } | ReadKind::UntilClose => PAUSE_READING_AT,
        }
    }
}

pub(super) struct PendingRead {
    kind: ReadKind,
    cb: Reader,
}

/// An owner that is told itself when the bytes it waits for have come, so waiting
/// costs no allocation (a boxed closure per wait was about 5% of a pipelined HTTP
/// request's instructions). It waits with [`IoStream::read_more_by`] and decodes in
/// place with [`IoStream::decode_unread`]; the HTTP connection works this way.
pub(crate) trait ReadHandler {
    /// The wait asked for with [`IoStream::read_more_by`] ended: `Ok` with nothing
    /// taken (more bytes are unread), or the error that ended the stream.
    fn on_read(self: Rc<Self>, lp: &IoLoop, s: &IoStream, r: io::Result<Vec<u8>>);
}

/// Who a pending read answers.
pub(super) enum Reader {
    Once(super::ReadCallback),
    Handler(Rc<dyn ReadHandler>),
}

impl Reader {
    pub(super) fn call(self, lp: &IoLoop, s: &IoStream, r: io::Result<Vec<u8>>) {
        match self {
            Reader::Once(f) => f(lp, s, r),
            Reader::Handler(h) => h.on_read(lp, s, r),
        }
    }
}

/// The read buffer and the pending read.
pub(super) struct ReadSide {
    /// `rbuf[rpos..]` is unread. Empty with no capacity when idle.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Unread bytes already searched for the pending delimiter without a match.
    scanned: usize,
    pub(super) read: Option<PendingRead>,
    /// A task waiting to read (the async methods, `AsyncRead`): woken when bytes or the
    /// end of the stream arrive.
    pub(super) waker: Option<std::task::Waker>,
    /// The peer will send nothing more.
    pub(super) eof: bool,
    /// When the oldest bytes buffered arrived (when bytes last came into an empty
    /// buffer; the loop's clock, ns): how long a message has been arriving, for latency
    /// measured from its first byte.
    since: u64,
    /// A read failed because the stream ended: what is left unread can never complete
    /// a read the owner is waiting for, so end of file may close the stream.
    read_past_eof: bool,
    max_buffer: usize,
    /// The room last given to the transport.
    told: usize,
}

impl Default for ReadSide {
    fn default() -> Self {
        ReadSide {
            rbuf: Vec::new(),
            rpos: 0,
            scanned: 0,
            read: None,
            waker: None,
            eof: false,
            since: 0,
            read_past_eof: false,
            max_buffer: DEFAULT_MAX_BUFFER,
            told: PAUSE_READING_AT,
        }
    }
}

impl ReadSide {
    pub(super) fn unread(&self) -> usize {
        self.rbuf.len() - self.rpos
    }

    /// Wakes the task waiting to read, if any.
    pub(super) fn wake_reader(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Someone waits for bytes (a pending read, or a task).
    pub(super) fn wanted(&self) -> bool {
        self.read.is_some() || self.waker.is_some()
    }

    /// How many more bytes the stream takes from the socket now: the one rule of
    /// back-pressure on every backend. While nobody reads, up to [`PAUSE_READING_AT`]
    /// unread (a paused reader); while a reader waits, also what its read still needs,
    /// up to one byte past the read buffer's limit (a read that needs more than the
    /// buffer holds fails then, while one of exactly the limit still sees the end of
    /// file that completes it); none after end of file. What the stream has no room
    /// for stays in the kernel, and TCP flow control slows the peer. (Called after the
    /// pending read took what it could: a read that waits needs more than is unread.)
    fn room(&self) -> usize {
        if self.eof {
            return 0;
        }
        let unread = self.unread();
        let ahead = PAUSE_READING_AT.min(self.max_buffer).saturating_sub(unread);
        let need = match &self.read {
            Some(p) => p.kind.need(unread),
            // A task's read is not known here: a chunk at a time.
            None if self.waker.is_some() => PAUSE_READING_AT,
            None => 0,
        };
        let limit = self.max_buffer.saturating_add(1).saturating_sub(unread);
        ahead.max(need).min(limit)
    }

    /// At end of file, everything before it has been read (or can no longer be) and no
    /// read waits: end of file may close the stream.
    pub(super) fn done_at_eof(&self) -> bool {
        self.eof && (self.unread() == 0 || self.read_past_eof) && self.read.is_none()
    }

    /// Takes the first `n` unread bytes; an emptied buffer goes back to the pool.
    fn take_front(&mut self, lp: &IoLoop, n: usize) -> Vec<u8> {
        if n == self.unread() && self.rpos == 0 && n * 2 >= self.rbuf.capacity() {
            // All of a mostly full buffer: hand it over instead of copying. (A small read
            // is copied, and the pool-sized buffer goes back to the pool.)
            return std::mem::take(&mut self.rbuf);
        }
        let v = self.rbuf[self.rpos..self.rpos + n].to_vec();
        self.consume(lp, n);
        v
    }

    /// Lends the read buffer and where its unread bytes start (for a reader that
    /// decodes in place while it uses the stream: `in_place.rs`); `None` if a read is
    /// pending (the bytes are that read's).
    pub(super) fn lend(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.wanted() {
            return None;
        }
        let pos = std::mem::take(&mut self.rpos);
        Some((std::mem::take(&mut self.rbuf), pos))
    }

    /// Takes back the buffer [`lend`](Self::lend) lent, its first `pos + n` bytes read.
    pub(super) fn give_back(&mut self, lp: &IoLoop, buf: Vec<u8>, pos: usize, n: usize) {
        // (Nothing arrives while the buffer is lent: the loop runs the borrower.)
        debug_assert!(
            self.rbuf.is_empty(),
            "bytes arrived while the buffer was lent"
        );
        let arrived = std::mem::replace(&mut self.rbuf, buf);
        self.rbuf.extend_from_slice(&arrived);
        self.rpos = pos;
        self.consume(lp, n);
    }

    /// Drops the first `n` unread bytes; an emptied buffer goes back to the pool, and a
    /// large one left with a few bytes (a big message read, the start of the next one
    /// behind it) gives way to a pool buffer holding them, so that a stream waiting
    /// for the rest does not keep the big message's memory.
    fn consume(&mut self, lp: &IoLoop, n: usize) {
        self.rpos += n;
        if self.rpos == self.rbuf.len() {
            let old = std::mem::take(&mut self.rbuf);
            self.rpos = 0;
            lp.with_pool(|p| p.give(old));
        } else if self.rbuf.capacity() > 4 * BUF_SIZE && self.unread() <= BUF_SIZE / 2 {
            let mut small = lp.with_pool(|p| p.take());
            small.extend_from_slice(&self.rbuf[self.rpos..]);
            self.rbuf = small;
            self.rpos = 0;
        } else if self.rpos > 64 * 1024 && self.rpos * 2 > self.rbuf.len() {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }
}

impl IoStream {
    /// Leaves a pending read (or hands `cb` back with why it cannot).
    pub(super) fn start_read(&self, kind: ReadKind, cb: Reader) -> Result<(), (io::Error, Reader)> {
        let (ready, dispatching) = {
            let mut st = self.inner.st.borrow_mut();
            if st.r.wanted() {
                return Err((StreamError::ReadPending.into(), cb));
            }
            st.r.scanned = 0;
            // Whether what is buffered (or the end of the stream) completes it now; if
            // not, the bytes that will complete it run the dispatch loop when they come.
            let ready = outcome(&mut st, &kind).is_some();
            st.r.read = Some(PendingRead { kind, cb });
            (ready, st.dispatching)
        };
        if ready {
            // Still in a later step than this call (a boxed callback): only when due; the
            // dispatch then gives the transport the room that is left.
            self.schedule_dispatch();
        } else if !dispatching {
            // The bytes that will complete it run the dispatch loop when they come: the
            // transport gets the room for them now (in a dispatch, at its end).
            self.pace_receiving(None);
        }
        Ok(())
    }

    /// Gives the transport the stream's room (see `ReadSide::room`): at the end of each
    /// dispatch (after bytes came, a read started or finished), and when a task starts
    /// waiting. With `lp` (the end of a dispatch), it also counts what the stream
    /// buffers to the loop's budget, which may hold it back; without, the loop is
    /// looked up only if receiving starts or stops.
    pub(super) fn pace_receiving(&self, lp: Option<&IoLoop>) {
        let room = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                return;
            }
            // What the stream buffers is counted to the loop's budget here too (at the
            // end of each dispatch), under the same borrow.
            if let Some(lp) = lp {
                if st.held.needs_count(st.r.unread() + st.w.buffered()) {
                    drop(st);
                    self.count_buffered(lp);
                    st = self.inner.st.borrow_mut();
                }
            }
            // Held back by the loop's buffer budget: no reading ahead (a read that waits
            // still gets its bytes).
            let room = if st.held.back && !st.r.wanted() {
                0
            } else {
                st.r.room()
            };
            if room == st.r.told {
                return; // (the common case: the same room as last time)
            }
            st.r.told = room;
            room
        };
        if !self.inner.transport.set_room(room) {
            return;
        }
        match lp {
            Some(lp) => self.inner.transport.set_reading(lp, room > 0),
            None => {
                if let Some(lp) = self.lp() {
                    self.inner.transport.set_reading(&lp, room > 0);
                }
            }
        }
    }

    /// Reads up to and including `delimiter` (1 to 16 bytes). If the delimiter is not
    /// within the first `max_bytes` bytes, the read fails with
    /// [`StreamError::TooLong`] (kind `InvalidData`) and the stream closes.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"line one\nline two\n")?;
    /// // With a continuation:
    /// s.read_until(b"\n", 64).then(|lp, _, line| {
    ///     assert_eq!(line.unwrap(), b"line one\n");
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// // Awaited:
    /// let next = lp.run_until_complete(async move { s.read_until(b"\n", 64).await })?;
    /// assert_eq!(next?, b"line two\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until(&self, delimiter: &[u8], max_bytes: usize) -> Reading {
        self.read_until_kind(delimiter, max_bytes, true)
    }

    /// Like [`read_until`](Self::read_until), but when the delimiter is not within
    /// `max_bytes` the stream stays open and the data stays buffered: the caller can
    /// still answer (an HTTP server sends 431) before it closes.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream, StreamError};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"a very long line\n")?;
    /// s.read_until_within(b"\n", 4).then(|lp, s, r| {
    ///     let e = r.unwrap_err();
    ///     assert_eq!(StreamError::of(&e), Some(StreamError::TooLong { max_bytes: 4, closed: false }));
    ///     assert!(!s.closed());
    ///     assert_eq!(s.peek(6), b"a very");
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until_within(&self, delimiter: &[u8], max_bytes: usize) -> Reading {
        self.read_until_kind(delimiter, max_bytes, false)
    }

    fn read_until_kind(&self, delimiter: &[u8], max: usize, close: bool) -> Reading {
        let kind = Delim::new(delimiter).map(|delim| ReadKind::Until { delim, max, close });
        Reading::new(self, kind)
    }

    /// Waits until more bytes than those unread now have arrived, or the stream ends
    /// (an error, as for any read), and tells `handler`, with nothing taken from the
    /// buffer: for an owner that decodes in place with [`decode_unread`](Self::decode_unread)
    /// (the crate's own [`read_more`](Self::read_more), with no closure per wait).
    pub(crate) fn read_more_by(&self, handler: Rc<dyn ReadHandler>) -> io::Result<()> {
        let unread = self.inner.st.borrow().r.unread();
        self.start_read(ReadKind::More(unread), Reader::Handler(handler))
            .map_err(|(e, _)| e)
    }

    /// [`with_unread`](Self::with_unread) with the stream borrowed, for an owner whose
    /// decoding does not use the stream (one look at the state, nothing lent): `f`
    /// looks at the unread bytes and consumes the first of them, returning how many (at
    /// most all of them) and a result. `f` also gets when the unread bytes
    /// began to arrive (the loop's time, ns, when bytes last came into an empty read
    /// buffer: for latency measured from a message's first byte). For an owner that decodes
    /// messages in place instead of asking for a copy of each. No read may be pending,
    /// and `f` must not use the stream.
    pub(crate) fn decode_unread<R>(
        &self,
        lp: &IoLoop,
        f: impl FnOnce(&[u8], u64) -> (usize, R),
    ) -> R {
        let mut st = self.inner.st.borrow_mut();
        let r = &mut st.r;
        debug_assert!(r.read.is_none(), "decode_unread while a read is pending");
        let (n, out) = f(&r.rbuf[r.rpos..], r.since);
        if n > 0 {
            r.consume(lp, n);
        }
        out
    }

    /// A copy of up to `max` unread bytes, without consuming them.
    pub fn peek(&self, max: usize) -> Vec<u8> {
        let st = self.inner.st.borrow();
        let unread = &st.r.rbuf[st.r.rpos..];
        unread[..unread.len().min(max)].to_vec()
    }

    /// Reads exactly `n` bytes (`n == 0` completes at once with nothing); fails with
    /// [`StreamError::Eof`] if the stream ends first (the bytes that did come stay
    /// buffered). `n` above the stream's maximum buffer size fails with
    /// [`StreamError::ReadTooLarge`].
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"abcdef")?;
    /// s.read_bytes(4).then(|lp, _, got| {
    ///     assert_eq!(got.unwrap(), b"abcd");
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_bytes(&self, n: usize) -> Reading {
        let limit = self.inner.st.borrow().r.max_buffer;
        let kind = if n > limit {
            Err(StreamError::ReadTooLarge { limit })
        } else {
            Ok(ReadKind::Bytes(n))
        };
        Reading::new(self, kind)
    }

    /// Reads what is there: at least one byte and at most `max_bytes`, or nothing (an
    /// empty `Vec`) once the stream has ended, as `std::io::Read::read` answers 0.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"xyz")?;
    /// drop(b);
    /// let (first, rest, end) = lp.run_until_complete(async move {
    ///     (s.read_some(2).await, s.read_some(2).await, s.read_some(2).await)
    /// })?;
    /// assert_eq!((first?, rest?, end?), (b"xy".to_vec(), b"z".to_vec(), vec![]));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_some(&self, max_bytes: usize) -> Reading {
        let kind = if max_bytes == 0 {
            ReadKind::Bytes(0)
        } else {
            ReadKind::Partial(max_bytes)
        };
        Reading::new(self, Ok(kind))
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
    /// s.read_until_close().then(|lp, _, got| {
    ///     assert_eq!(got.unwrap(), b"all of it");
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until_close(&self) -> Reading {
        Reading::new(self, Ok(ReadKind::UntilClose))
    }

    /// True while a read is waiting for data.
    pub fn reading(&self) -> bool {
        self.inner.st.borrow().r.read.is_some()
    }

    /// Bytes received and not yet read.
    pub fn read_buffer_len(&self) -> usize {
        self.inner.st.borrow().r.unread()
    }

    /// Sets the most bytes the read buffer may hold (default 4 MiB): receiving stops
    /// there (the peer is slowed by TCP flow control, nothing is dropped), and a read
    /// that cannot finish within it fails with [`StreamError::ReadBufferFull`] and
    /// closes the stream.
    pub fn set_max_buffer_size(&self, bytes: usize) {
        self.inner.st.borrow_mut().r.max_buffer = bytes;
        self.pace_receiving(None);
    }

    /// Bytes arrived from the transport: they are kept, whatever the room (the
    /// transport takes at most a chunk past it); the dispatch gives the room anew.
    pub(super) fn received(&self, lp: &IoLoop, v: Vec<u8>) {
        {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                // Closed by its owner, still sending: what the peer sends is dropped.
                drop(st);
                lp.with_pool(|p| p.give(v));
                return;
            }
            let r = &mut st.r;
            if r.rpos == r.rbuf.len() {
                r.since = lp.now_ns();
                let old = std::mem::replace(&mut r.rbuf, v);
                r.rpos = 0;
                r.scanned = 0;
                lp.with_pool(|p| p.give(old));
            } else {
                r.rbuf.extend_from_slice(&v);
                lp.with_pool(|p| p.give(v));
            }
            r.wake_reader();
        }
        self.dispatch(lp);
    }

    /// If the pending read can finish (with data or an error), takes it out with its
    /// result.
    pub(super) fn complete_read(&self, lp: &IoLoop) -> Option<(Reader, io::Result<Vec<u8>>)> {
        let (read, result) = {
            let mut st = self.inner.st.borrow_mut();
            let kind = st.r.read.as_ref()?.kind;
            if let ReadKind::More(n) = kind {
                // (The in-place reader's wait, once per keep-alive request: its bytes
                // came, nothing to take and nothing to check after.)
                if st.r.unread() > n {
                    let read = st.r.read.take().expect("checked above");
                    st.r.scanned = 0;
                    return Some((read.cb, Ok(Vec::new())));
                }
            }
            let outcome = outcome(&mut st, &kind)?;
            let read = st.r.read.take().expect("checked above");
            (read, self.settle(&mut st, lp, outcome))
        };
        self.after_read(lp, &result);
        Some((read.cb, result))
    }

    /// A read of `kind` done now, if the buffer (or the end of the stream) allows: for
    /// an owner that polls instead of leaving a pending read (the async methods).
    pub(super) fn try_read(&self, lp: &IoLoop, kind: &ReadKind) -> Option<io::Result<Vec<u8>>> {
        let result = {
            let mut st = self.inner.st.borrow_mut();
            let outcome = outcome(&mut st, kind)?;
            self.settle(&mut st, lp, outcome)
        };
        self.after_read(lp, &result);
        Some(result)
    }

    /// Takes the bytes of a finished read (or notes why it failed).
    fn settle(
        &self,
        st: &mut State,
        lp: &IoLoop,
        outcome: io::Result<usize>,
    ) -> io::Result<Vec<u8>> {
        st.r.scanned = 0;
        match outcome {
            // Nothing taken (`More`): no buffer either.
            Ok(0) => Ok(Vec::new()),
            Ok(n) => Ok(st.r.take_front(lp, n)),
            Err(e) => {
                if !matches!(StreamError::of(&e), Some(StreamError::TooLong { .. })) {
                    st.r.read_past_eof = true;
                }
                Err(e)
            }
        }
    }

    /// Tornado's `read_until` closes the stream past its limit; so does a read the read
    /// buffer cannot hold.
    fn after_read(&self, lp: &IoLoop, result: &io::Result<Vec<u8>>) {
        if let Err(e) = result {
            if let Some(
                se @ (StreamError::TooLong { closed: true, .. }
                | StreamError::ReadBufferFull { .. }),
            ) = StreamError::of(e)
            {
                self.close_with(lp, Some(&se.into()));
            }
        }
    }
}

/// Whether a read of `kind` can finish now: how many bytes it takes, or why it fails;
/// `None` while it must wait. A read that must wait with more than the read buffer's
/// limit unread can never finish: it fails with [`StreamError::ReadBufferFull`].
fn outcome(st: &mut State, kind: &ReadKind) -> Option<io::Result<usize>> {
    if let ReadKind::More(n) = kind {
        // (The in-place reader's wait, twice per keep-alive request: the same answer as
        // below in a few instructions while the stream is open.)
        let unread = st.r.unread();
        if !st.r.eof && !st.closed && unread <= st.r.max_buffer {
            return (unread > *n).then_some(Ok(0));
        }
    }
    outcome_now(st, kind).or_else(|| {
        let limit = st.r.max_buffer;
        (st.r.unread() > limit).then(|| Err(StreamError::ReadBufferFull { limit }.into()))
    })
}

fn outcome_now(st: &mut State, kind: &ReadKind) -> Option<io::Result<usize>> {
    let ended = st.r.eof || st.closed;
    let ended_error = ended.then(|| st.ended_error());
    let r = &mut st.r;
    let unread = r.unread();
    match kind {
        ReadKind::Bytes(n) => {
            if unread >= *n {
                Some(Ok(*n))
            } else {
                ended_error.map(Err)
            }
        }
        ReadKind::Partial(max) => {
            if unread > 0 {
                Some(Ok(unread.min(*max)))
            } else if ended && st_error_is_eof(&ended_error) {
                Some(Ok(0))
            } else {
                ended_error.map(Err)
            }
        }
        ReadKind::UntilClose => ended.then_some(Ok(unread)),
        ReadKind::More(n) => {
            if unread > *n {
                Some(Ok(0))
            } else {
                ended_error.map(Err)
            }
        }
        ReadKind::Until { delim, max, close } => {
            let delim = delim.as_slice();
            let hay = &r.rbuf[r.rpos..];
            let from = r.scanned.saturating_sub(delim.len() - 1);
            let too_long = StreamError::TooLong {
                max_bytes: *max,
                closed: *close,
            };
            match find_delim(&hay[from..], delim) {
                Some(i) if from + i + delim.len() <= *max => Some(Ok(from + i + delim.len())),
                Some(_) => Some(Err(too_long.into())),
                None if unread > *max => Some(Err(too_long.into())),
                None => {
                    r.scanned = unread;
                    ended_error.map(Err)
                }
            }
        }
    }
}

/// The stream ended cleanly (its peer closed): a partial read answers nothing then.
fn st_error_is_eof(e: &Option<io::Error>) -> bool {
    e.as_ref()
        .is_some_and(|e| StreamError::of(e) == Some(StreamError::Eof))
}

/// Where `delim` first occurs in `hay`: memchr for its first byte, then a compare.
/// (`memmem::find` builds a searcher on every call, which costs more than the search
/// itself for a 40-byte request head.) Linear in `hay` for the short delimiters
/// streams use.
pub(crate) fn find_delim(hay: &[u8], delim: &[u8]) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::{find_delim, ReadSide, BUF_SIZE};
    use crate::reactor::IoLoop;

    #[test]
    fn a_large_buffer_left_with_a_few_bytes_is_given_back() {
        let lp = IoLoop::new().unwrap();
        let big = 4 << 20;
        let filled = |tail: &[u8]| {
            let mut rbuf = vec![b'x'; big];
            rbuf.extend_from_slice(tail);
            ReadSide {
                rbuf,
                ..ReadSide::default()
            }
        };
        // A 4 MiB message read, the first bytes of the next one left.
        let mut r = filled(b"GET /next");
        r.consume(&lp, big);
        assert_eq!(&r.rbuf[r.rpos..], b"GET /next");
        assert_eq!(r.rbuf.capacity(), BUF_SIZE, "a pool buffer");
        // Read in two parts: the same at the end.
        let mut r = filled(b"tail");
        r.consume(&lp, big / 2);
        assert!(r.rbuf.capacity() >= big, "half of it is still unread");
        r.consume(&lp, big / 2);
        assert_eq!(
            (&r.rbuf[r.rpos..], r.rbuf.capacity()),
            (&b"tail"[..], BUF_SIZE)
        );
        // Much still unread: the buffer stays.
        let mut r = filled(&[b'y'; 100_000]);
        r.consume(&lp, big);
        assert_eq!(r.unread(), 100_000);
        assert!(r.rbuf[r.rpos..].iter().all(|&c| c == b'y'));
        // A small buffer is not copied for nothing.
        let mut r = ReadSide {
            rbuf: Vec::with_capacity(BUF_SIZE),
            ..ReadSide::default()
        };
        r.rbuf.extend_from_slice(b"abcdef");
        let at = r.rbuf.as_ptr();
        r.consume(&lp, 2);
        assert_eq!((&r.rbuf[r.rpos..], r.rbuf.as_ptr()), (&b"cdef"[..], at));
    }

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
