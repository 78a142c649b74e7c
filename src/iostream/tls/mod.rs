//! TLS on a stream: rustls between the transport and the stream's buffers.
//!
//! rustls is sans-I/O: the stream hands it the ciphertext its transport received
//! (`SockEvent::Data`), puts the plaintext it gives back into the read buffer, and on
//! the write side encrypts what the owner wrote just before it goes to the transport.
//! Everything above (reads, writes, flushed marks, the high-water mark, the write
//! buffer's limit) counts plaintext bytes, as on a plain stream; the transport never
//! knows it carries TLS. An idle TLS stream holds no stream buffer either; rustls keeps
//! its connection state and a small receive buffer.
//!
//! **Handshakes never stall the loop.** A server's answer to a ClientHello (key
//! exchange and signature: some 60 us of CPU with ECDSA P-256 on the development
//! machine, several times that with RSA or in a debug build) is the costly step. It
//! is not run where the ClientHello arrives: the stream holds the bytes and joins its
//! loop's handshake queue (`queue.rs`), which runs servers' handshake steps (this one,
//! and the cheaper check of the client's Finished) within a time budget per turn of the
//! loop, so that a storm of new connections is interleaved with the requests of open
//! ones instead of running ahead of them; or, with
//! [`TlsConfig::handshake_on_pool`], on the runtime's blocking pool (a rustls
//! connection is `Send`), the loop going on meanwhile.
//!
//! Every failure closes the stream with [`StreamError::Tls`](crate::StreamError::Tls)
//! and a [`TlsError`] saying why, counted by cause in the metrics; a handshake not
//! finished within its timeout is one of them.

mod config;
mod queue;
mod stats;

pub use config::{TlsConfig, TlsConnector, DEFAULT_HANDSHAKE_TIMEOUT};
pub(crate) use stats::stats_of;
pub use stats::TlsStats;

use super::error::Failure;
use super::{IoStream, SentCallback, State, StreamError};
use crate::reactor::{IoLoop, TimeoutId};
use rustls::Connection;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Ciphertext held while a ClientHello waits for its turn: more than a ClientHello
/// and the client's next records can need. A peer that sends more is cut.
const MAX_HELD: usize = 64 * 1024;

/// A failed TLS stream lingers at most this long for its alert to go out.
const FAILED_LINGER: Duration = Duration::from_secs(2);

/// Why TLS failed on a stream (inside [`StreamError::Tls`](crate::StreamError::Tls));
/// also the `cause` label of `coreloop_tls_failures_total`.
///
/// ```
/// use coreloop::tls::TlsError;
/// assert_eq!(TlsError::Timeout.as_str(), "timeout");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsError {
    /// The handshake did not finish within the configured timeout.
    Timeout,
    /// The peer sent what is not TLS, or a malformed or undecryptable record.
    BadMessage,
    /// The peer sent a fatal alert.
    Alert,
    /// A certificate did not verify (ours, by the peer, or the peer's, by us).
    Certificate,
    /// No protocol version, cipher suite, key exchange group or application protocol
    /// in common, or no certificate for the name asked for.
    Incompatible,
    /// The peer closed the connection before the handshake finished.
    Eof,
    /// Any other failure.
    Other,
}

impl TlsError {
    /// Every cause, in the order the metrics list them.
    pub const ALL: [TlsError; 7] = [
        TlsError::Timeout,
        TlsError::BadMessage,
        TlsError::Alert,
        TlsError::Certificate,
        TlsError::Incompatible,
        TlsError::Eof,
        TlsError::Other,
    ];

    /// The cause's label (`timeout`, `bad_message`, `alert`, `certificate`,
    /// `incompatible`, `eof`, `other`).
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsError::Timeout => "timeout",
            TlsError::BadMessage => "bad_message",
            TlsError::Alert => "alert",
            TlsError::Certificate => "certificate",
            TlsError::Incompatible => "incompatible",
            TlsError::Eof => "eof",
            TlsError::Other => "other",
        }
    }

    fn index(self) -> usize {
        TlsError::ALL.iter().position(|c| *c == self).unwrap_or(6)
    }

    /// The cause of a rustls error.
    fn of(e: &rustls::Error) -> TlsError {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::DecryptError
            | E::PeerMisbehaved(_)
            | E::PeerSentOversizedRecord => TlsError::BadMessage,
            E::AlertReceived(_) => TlsError::Alert,
            E::InvalidCertificate(_) | E::NoCertificatesPresented | E::BadMaxFragmentSize => {
                TlsError::Certificate
            }
            E::PeerIncompatible(_) | E::NoApplicationProtocol => TlsError::Incompatible,
            _ => TlsError::Other,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsError::Timeout => "the TLS handshake timed out",
            TlsError::BadMessage => "the peer sent a malformed TLS message",
            TlsError::Alert => "the peer sent a fatal TLS alert",
            TlsError::Certificate => "a TLS certificate did not verify",
            TlsError::Incompatible => "no TLS parameters in common with the peer",
            TlsError::Eof => "the peer closed the connection during the TLS handshake",
            TlsError::Other => "TLS failed",
        })
    }
}

/// Where a stream's handshake is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// A server that has not answered the ClientHello yet: bytes are held.
    Hello,
    /// The ClientHello waits in the loop's queue, or its answer runs on the pool.
    Queued,
    /// Handshaking, inline from here on (the cheap steps).
    Handshake,
    /// Open for data.
    Open,
    /// Failed (the stream is closing).
    Failed(TlsError),
}

/// Where the received bytes are in TLS's record framing: a record's 5-byte header
/// and its length. At end of file a record begun and not finished is a truncation.
#[derive(Default)]
struct Records {
    header: [u8; 5],
    have: usize,
    left: usize,
}

impl Records {
    fn see(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.have = 0;
            }
        }
    }

    /// Nothing has been received.
    fn none_yet(&self) -> bool {
        self.header == [0; 5] && !self.partial()
    }

    /// A record has begun and not ended.
    fn partial(&self) -> bool {
        self.have > 0 || self.left > 0
    }
}

/// A stream's TLS state.
pub(super) struct Tls {
    /// `None` while the answer to a ClientHello runs on the blocking pool.
    conn: Option<Connection>,
    phase: Phase,
    /// Ciphertext that came while the ClientHello waited its turn.
    held: Vec<u8>,
    /// When the stream became TLS (the handshake's duration is measured from here).
    started: Instant,
    timer: Option<TimeoutId>,
    /// Answer ClientHellos on the blocking pool instead of the loop's queue.
    on_pool: bool,
    /// The server side.
    server: bool,
    /// A server that has answered the ClientHello (its later handshake steps are
    /// cheap, and run in the loop's queue even with `on_pool`).
    answered: bool,
    /// What waits for the handshake to end.
    waiters: Vec<SentCallback>,
    waker: Option<Waker>,
    records: Records,
    /// close_notify is to go out after what the owner wrote.
    notify: bool,
}

impl Tls {
    fn new(conn: Connection, server: bool, on_pool: bool) -> Tls {
        Tls {
            conn: Some(conn),
            phase: if server {
                Phase::Hello
            } else {
                Phase::Handshake
            },
            held: Vec::new(),
            started: Instant::now(),
            timer: None,
            on_pool,
            server,
            answered: false,
            waiters: Vec::new(),
            waker: None,
            records: Records::default(),
            notify: false,
        }
    }

    /// rustls has ciphertext to send.
    pub(super) fn wants_write(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.wants_write()) || (self.notify && self.open())
    }

    fn open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// The handshake's outcome, once there is one.
    fn outcome(&self) -> Option<Result<(), TlsError>> {
        match self.phase {
            Phase::Open => Some(Ok(())),
            Phase::Failed(e) => Some(Err(e)),
            _ => None,
        }
    }

    /// The loop is closing: the continuations are dropped unrun.
    pub(super) fn forget_waiters(&mut self) {
        self.waiters.clear();
        self.waker = None;
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The plaintext rustls holds, appended to `out`.
fn drain_plaintext(conn: &mut Connection, out: &mut Vec<u8>) {
    let mut reader = conn.reader();
    loop {
        let n = match reader.fill_buf() {
            Ok(chunk) if !chunk.is_empty() => {
                out.extend_from_slice(chunk);
                chunk.len()
            }
            // Empty (close_notify seen), WouldBlock (nothing more for now), or the
            // peer ended without close_notify: the caller looks at the state.
            _ => return,
        };
        reader.consume(n);
    }
}

/// What feeding received ciphertext to rustls gave.
struct Fed {
    plain: Vec<u8>,
    peer_closed: bool,
    error: Option<TlsError>,
}

/// Feeds `data` to rustls: the plaintext it gives, whether the peer sent close_notify,
/// and the error, if it failed.
fn feed(conn: &mut Connection, data: &[u8], plain: Vec<u8>) -> Fed {
    let mut fed = Fed {
        plain,
        peer_closed: false,
        error: None,
    };
    let mut rest = data;
    while !rest.is_empty() {
        match conn.read_tls(&mut rest) {
            // After close_notify nothing more is read: the rest is dropped.
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                fed.error = Some(TlsError::BadMessage);
                return fed;
            }
        }
        match conn.process_new_packets() {
            Ok(state) => {
                drain_plaintext(conn, &mut fed.plain);
                if state.peer_has_closed() {
                    fed.peer_closed = true;
                    break;
                }
            }
            Err(e) => {
                fed.error = Some(TlsError::of(&e));
                return fed;
            }
        }
    }
    fed
}

impl IoStream {
    /// Makes this stream TLS from now on, as the side `conn` is: nothing may have been
    /// read or written on it yet.
    fn start_tls(&self, lp: &IoLoop, mut conn: Connection, on_pool: bool, timeout: Duration) {
        // The stream bounds its own buffers; rustls must not refuse a write part-way.
        conn.set_buffer_limit(None);
        let server = matches!(conn, Connection::Server(_));
        let weak = self.downgrade();
        let timer = lp.call_later(timeout, move |lp| {
            if let Some(s) = weak.upgrade() {
                s.inner.st.borrow_mut().tls.as_mut().map(|t| t.timer.take());
                s.tls_fail(lp, TlsError::Timeout);
            }
        });
        let mut tls = Box::new(Tls::new(conn, server, on_pool));
        tls.timer = Some(timer);
        self.inner.st.borrow_mut().tls = Some(tls);
        // A client speaks first.
        if !server {
            self.schedule_flush(lp);
        }
    }

    /// Ciphertext arrived from the transport.
    pub(super) fn tls_received(&self, lp: &IoLoop, v: Vec<u8>) {
        let mut st = self.inner.st.borrow_mut();
        if st.closed && !st.lingering {
            drop(st);
            return lp.with_pool(|p| p.give(v));
        }
        let tls = st.tls.as_mut().expect("a TLS stream");
        tls.records.see(&v);
        // A server's handshake steps wait for the loop's queue; a client's run here.
        let queued = tls.server && tls.phase == Phase::Handshake;
        match tls.phase {
            Phase::Hello | Phase::Queued => {
                let first = tls.phase == Phase::Hello;
                tls.held.extend_from_slice(&v);
                let over = tls.held.len() > MAX_HELD;
                tls.phase = Phase::Queued;
                drop(st);
                lp.with_pool(|p| p.give(v));
                if over {
                    self.tls_fail(lp, TlsError::BadMessage);
                } else if first {
                    queue::enqueue(lp, self);
                }
            }
            Phase::Failed(_) => {
                drop(st);
                lp.with_pool(|p| p.give(v));
            }
            Phase::Handshake if queued => {
                tls.held.extend_from_slice(&v);
                tls.phase = Phase::Queued;
                drop(st);
                lp.with_pool(|p| p.give(v));
                queue::enqueue(lp, self);
            }
            Phase::Handshake | Phase::Open => {
                drop(st);
                self.tls_feed(lp, &v);
                lp.with_pool(|p| p.give(v));
            }
        }
    }

    /// Runs rustls on received ciphertext: the plaintext goes to the read buffer, what
    /// rustls has to send goes out, and the handshake's end or failure is acted on.
    fn tls_feed(&self, lp: &IoLoop, data: &[u8]) {
        let (fed, opened) = {
            let mut st = self.inner.st.borrow_mut();
            let Some(tls) = st.tls.as_mut() else { return };
            let Some(conn) = tls.conn.as_mut() else {
                return;
            };
            let was_handshaking = conn.is_handshaking();
            let plain = lp.with_pool(|p| p.take());
            let fed = feed(conn, data, plain);
            let opened = fed.error.is_none() && was_handshaking && !conn.is_handshaking();
            (fed, opened)
        };
        if let Some(e) = fed.error {
            lp.with_pool(|p| p.give(fed.plain));
            return self.tls_fail(lp, e);
        }
        if opened {
            self.tls_opened(lp);
        }
        if self.tls_wants_write() {
            // At the end of the step, with what the owner writes meanwhile (the answer
            // to a request that came with the client's Finished goes with the tickets).
            self.schedule_flush(lp);
        }
        if fed.plain.is_empty() {
            lp.with_pool(|p| p.give(fed.plain));
        } else {
            self.received(lp, fed.plain);
        }
        if fed.peer_closed {
            self.at_eof(lp);
        }
    }

    /// Whether the TLS session has records to send (handshake messages, tickets, alerts).
    fn tls_wants_write(&self) -> bool {
        let st = self.inner.st.borrow();
        st.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The handshake finished: count it, wake who waits, send what was written.
    fn tls_opened(&self, lp: &IoLoop) {
        let (timer, resumed, took) = {
            let mut st = self.inner.st.borrow_mut();
            let Some(tls) = st.tls.as_mut() else { return };
            tls.phase = Phase::Open;
            tls.wake();
            let resumed = tls
                .conn
                .as_ref()
                .and_then(|c| c.handshake_kind())
                .is_some_and(|k| k == rustls::HandshakeKind::Resumed);
            (tls.timer.take(), resumed, tls.started.elapsed())
        };
        if let Some(t) = timer {
            lp.remove_timeout(t);
        }
        stats::record_handshake(lp, resumed, took);
        self.schedule_flush(lp);
        self.schedule_dispatch();
    }

    /// TLS failed: the stream closes with the cause (after sending rustls' alert, if it
    /// has one, within a short linger), and the failure is counted once.
    pub(super) fn tls_fail(&self, lp: &IoLoop, cause: TlsError) {
        let (timer, unsent) = {
            let mut st = self.inner.st.borrow_mut();
            let Some(tls) = st.tls.as_mut() else { return };
            if matches!(tls.phase, Phase::Failed(_)) {
                return;
            }
            tls.phase = Phase::Failed(cause);
            tls.held = Vec::new();
            tls.wake();
            let timer = tls.timer.take();
            if st.error.is_none() {
                st.error = Some(Failure::Stream(StreamError::Tls(cause)));
            }
            st.linger = st.linger.min(FAILED_LINGER);
            // What the owner wrote will never be sent.
            let unsent = std::mem::take(&mut st.w.out);
            stats::record_failure(lp, cause);
            (timer, unsent)
        };
        if let Some(t) = timer {
            lp.remove_timeout(t);
        }
        lp.with_pool(|p| p.give(unsent));
        if self.tls_wants_write() {
            self.start_send(lp);
        }
        self.close_gracefully(lp);
        self.schedule_dispatch();
    }

    /// The transport ended (end of file) on a TLS stream: during the handshake that is
    /// a failure, and so is a record cut short (a truncation); otherwise it is the end
    /// of the stream (with or without close_notify, as most servers take it: HTTP
    /// frames its own messages).
    pub(super) fn tls_eof(&self, lp: &IoLoop) {
        // Bytes held for the loop's queue come before the end: run them first.
        let held =
            self.inner.st.borrow().tls.as_ref().is_some_and(|t| {
                t.phase == Phase::Queued && t.conn.is_some() && !t.held.is_empty()
            });
        if held {
            self.answer_hello(lp);
        }
        let cause = self
            .inner
            .st
            .borrow()
            .tls
            .as_ref()
            .and_then(|t| match t.phase {
                Phase::Failed(_) => None,
                Phase::Open if t.records.partial() => Some(TlsError::BadMessage),
                Phase::Open => None,
                // A connection closed before its first byte (a TCP health check,
                // wrk's probe) never began TLS: a close, not a failure.
                _ if t.records.none_yet() => None,
                _ => Some(TlsError::Eof),
            });
        match cause {
            Some(cause) => self.tls_fail(lp, cause),
            None => self.at_eof(lp),
        }
    }

    /// Runs the handshake step held: the answer to the ClientHello, or a later step
    /// (the loop's queue calls this in its turn).
    fn answer_hello(&self, lp: &IoLoop) {
        let (held, on_pool) = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed && !st.lingering {
                return;
            }
            let Some(tls) = st.tls.as_mut() else { return };
            if tls.phase != Phase::Queued {
                return;
            }
            let on_pool = tls.on_pool && !tls.answered;
            tls.answered = true;
            if !on_pool {
                tls.phase = Phase::Handshake;
            }
            (std::mem::take(&mut tls.held), on_pool)
        };
        if on_pool {
            return self.answer_hello_on_pool(lp, held);
        }
        self.tls_feed(lp, &held);
    }

    /// Runs the answer to the ClientHello on the blocking pool; bytes that come
    /// meanwhile are held, and fed once the connection is back.
    fn answer_hello_on_pool(&self, lp: &IoLoop, held: Vec<u8>) {
        let Some(mut conn) = self
            .inner
            .st
            .borrow_mut()
            .tls
            .as_mut()
            .and_then(|t| t.conn.take())
        else {
            return;
        };
        let weak = self.downgrade();
        queue::pool_started(lp);
        lp.call_blocking(move || {
            let fed = feed(&mut conn, &held, Vec::new());
            (conn, fed.error)
        })
        .then(move |lp, r| {
            queue::pool_done(lp);
            let Some(s) = weak.upgrade() else { return };
            let (conn, error) = match r {
                Ok(x) => x,
                // The pool is full or closing: the connection is lost with the job.
                Err(_) => return s.tls_fail(lp, TlsError::Other),
            };
            let held = {
                let mut st = s.inner.st.borrow_mut();
                let Some(tls) = st.tls.as_mut() else { return };
                tls.conn = Some(conn);
                if tls.phase == Phase::Queued {
                    tls.phase = Phase::Handshake;
                }
                std::mem::take(&mut tls.held)
            };
            if let Some(e) = error {
                return s.tls_fail(lp, e);
            }
            s.schedule_flush(lp);
            if !held.is_empty() {
                s.tls_feed(lp, &held);
            }
        });
    }

    /// For the write side: encrypts what the owner wrote (once the handshake is over)
    /// and takes what rustls has to send. Answers the ciphertext and how many plaintext
    /// bytes it carries, or `None` if there is nothing to send now.
    pub(super) fn tls_seal(lp: &IoLoop, st: &mut State) -> io::Result<Option<(Vec<u8>, usize)>> {
        let Some(tls) = st.tls.as_mut() else {
            return Ok(None);
        };
        let open = tls.open();
        let Some(conn) = tls.conn.as_mut() else {
            return Ok(None);
        };
        let mut plain = 0;
        if open && !st.w.out.is_empty() {
            let out = std::mem::take(&mut st.w.out);
            conn.writer().write_all(&out)?;
            plain = out.len();
            lp.with_pool(|p| p.give(out));
        }
        if open && tls.notify {
            tls.notify = false;
            conn.send_close_notify();
        }
        if !conn.wants_write() {
            return Ok(None);
        }
        let mut ct = lp.with_pool(|p| p.take());
        while conn.wants_write() {
            conn.write_tls(&mut ct)?;
        }
        Ok(Some((ct, plain)))
    }

    /// For a graceful close: queues close_notify (once the handshake is over).
    /// It goes behind what was written before the close, once the handshake is over
    /// (`tls_seal` sends it when the write buffer has been sealed).
    pub(super) fn tls_close_notify(st: &mut State) {
        if let Some(tls) = st.tls.as_mut() {
            if !matches!(tls.phase, Phase::Failed(_)) {
                tls.notify = true;
            }
        }
    }

    /// The stream closed: the handshake timer goes.
    pub(super) fn tls_closed(lp: &IoLoop, st: &mut State) {
        if let Some(tls) = st.tls.as_mut() {
            if let Some(t) = tls.timer.take() {
                lp.remove_timeout(t);
            }
            tls.held = Vec::new();
            tls.wake();
        }
    }

    /// A continuation waiting for the handshake that is due, with its outcome.
    pub(super) fn due_handshake_callback(st: &mut State) -> Option<(SentCallback, io::Result<()>)> {
        let dead = st.closed && !st.lingering;
        // (The closed error is made only when it is the outcome: it allocates, and this
        // runs on every dispatch of every stream.)
        let tls = st.tls.as_ref()?;
        if tls.waiters.is_empty() {
            return None;
        }
        let outcome = match tls.outcome() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(StreamError::Tls(e).into()),
            None if dead => Err(st.closed_error()),
            None => return None,
        };
        let tls = st.tls.as_mut().expect("looked at above");
        Some((tls.waiters.remove(0), outcome))
    }

    /// Whether a continuation waits for the handshake.
    pub(super) fn handshake_waited_on(st: &State) -> bool {
        st.tls.as_ref().is_some_and(|t| !t.waiters.is_empty())
    }

    /// Runs `cb` once the handshake has ended.
    pub(super) fn when_handshaken(&self, cb: SentCallback) {
        let mut st = self.inner.st.borrow_mut();
        match st.tls.as_mut() {
            Some(tls) => tls.waiters.push(cb),
            None => {
                drop(st);
                let s = self.clone();
                if let Some(lp) = self.lp() {
                    lp.add_callback(move |lp| cb(lp, &s, Err(not_tls())));
                }
                return;
            }
        }
        drop(st);
        self.schedule_dispatch();
    }

    /// A task's wait for the handshake.
    pub(super) fn poll_handshake(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.inner.st.borrow_mut();
        let dead = st.closed && !st.lingering;
        let closed_error = st.closed_error();
        let Some(tls) = st.tls.as_mut() else {
            return Poll::Ready(Err(not_tls()));
        };
        match tls.outcome() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(e)) => Poll::Ready(Err(StreamError::Tls(e).into())),
            None if dead => Poll::Ready(Err(closed_error)),
            None => {
                tls.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The application protocol the TLS handshake agreed on (ALPN), if any.
    ///
    /// ```
    /// # let lp = coreloop::IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = coreloop::IoStream::new(&lp, a)?;
    /// assert_eq!(s.alpn_protocol(), None); // not TLS
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        let st = self.inner.st.borrow();
        let conn = st.tls.as_ref()?.conn.as_ref()?;
        conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Whether the stream speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.st.borrow().tls.is_some()
    }
}

fn not_tls() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "the stream is not TLS")
}
