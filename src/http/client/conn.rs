//! One connection to a host: it writes a request, reads its answer with the response
//! decoder over the stream's unread bytes in place, and goes back to its pool (or
//! closes) once the answer is complete.
//!
//! Every wait has a deadline, one timer per connection re-armed lazily: the head
//! (`head_timeout` from the end of the request, not extended by progress, so a server
//! trickling a head is cut at the deadline), the body (`body_timeout` without a byte
//! either way), and, idle in the pool, `idle_timeout`. A streamed response is read
//! only while its reader asks for a part: a slow reader slows the server (TCP flow
//! control) and no deadline runs against the server meanwhile.
//!
//! The race every pooling client has: a server closes an idle connection as the
//! client reuses it. The close often arrives before the reuse (the close callback
//! takes the connection out of the pool, and a connection with anything unread is
//! never reused); when it crosses the request, the request failed before any byte of
//! its answer came, and is sent once more on a new connection if it may be
//! (`Flight::retry`).

use super::error::{ClientError, Deadline};
use super::flight::{Flight, Phase};
use super::pool::Pool;
use super::request::Body;
use super::response::ClientResponse;
use crate::http::framing::{
    BodyLength, FramingError, ResponseDecoder, ResponseEvent, ResponseHead,
};
use crate::iostream::{IoStream, ReadHandler};
use crate::reactor::{IoLoop, TimeoutId};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most body bytes one part of a streamed response carries.
const PART_MAX: usize = 256 * 1024;

/// What a connection's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Idle,
    Head,
    Body,
}

/// Where decoded body bytes go.
#[derive(Clone, Copy)]
enum Sink {
    /// The flight's body (a buffered response), up to `max_body`.
    Buffered,
    /// A part for a streamed response's reader, up to this many bytes.
    Part(usize),
}

/// Why a decode stopped.
enum Stop {
    NeedMore,
    Head(ResponseHead),
    /// A part is full.
    Full,
    End,
    Error(ClientError),
}

pub(super) struct Conn {
    pool: Rc<Pool>,
    stream: IoStream,
    decoder: RefCell<ResponseDecoder>,
    flight: RefCell<Option<Rc<Flight>>>,
    /// Responses completed on this connection.
    served: Cell<u32>,
    /// A byte of the current answer has come.
    got_bytes: Cell<bool>,
    /// A wait for bytes is pending on the stream.
    reading: Cell<bool>,
    /// Closed, or given up: never used again.
    dead: Cell<bool>,
    deadline: Cell<Option<(Instant, Wait)>>,
    timer: Cell<Option<(TimeoutId, Instant)>>,
}

impl Conn {
    pub(super) fn new(pool: Rc<Pool>, stream: IoStream) -> Rc<Conn> {
        let cfg = &pool.cfg;
        let decoder = ResponseDecoder::with_limits(cfg.max_head, cfg.max_headers);
        let c = Rc::new(Conn {
            pool,
            stream,
            decoder: RefCell::new(decoder),
            flight: RefCell::new(None),
            served: Cell::new(0),
            got_bytes: Cell::new(false),
            reading: Cell::new(false),
            dead: Cell::new(false),
            deadline: Cell::new(None),
            timer: Cell::new(None),
        });
        let weak = Rc::downgrade(&c);
        c.stream.set_close_callback(move |lp, s| {
            if let Some(c) = weak.upgrade() {
                let e = s
                    .error()
                    .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                c.ended(lp, e);
            }
        });
        c
    }

    /// Idle, open, and with nothing unread (bytes a server sends unasked mean it is
    /// confused, or closing).
    pub(super) fn usable(&self) -> bool {
        !self.dead.get() && !self.stream.closed() && self.stream.read_buffer_len() == 0
    }

    /// Carries `f`: writes its request (head, and the body so far) and waits for the
    /// answer.
    pub(super) fn take(self: &Rc<Self>, lp: &IoLoop, f: Rc<Flight>) {
        let stats = &self.pool.stats;
        if self.served.get() > 0 {
            stats.reused.set(stats.reused.get() + 1);
        }
        self.got_bytes.set(false);
        let (head_request, body_done, wrote) = {
            let mut st = f.st.borrow_mut();
            st.phase = Phase::On(self.clone());
            let early = std::mem::take(&mut st.early_body);
            let st = &*st;
            let wrote = self.stream.write_with(|out| {
                if let Some(p) = &st.prepared {
                    st.req.write_head(p, out);
                }
                if let Body::Fixed(b) = &st.req.body {
                    out.extend_from_slice(b);
                }
                out.extend_from_slice(&early);
            });
            (st.req.method == "HEAD", st.body_done, wrote)
        };
        self.decoder.borrow_mut().answering_head(head_request);
        *self.flight.borrow_mut() = Some(f.clone());
        if let Err(e) = wrote {
            return self.ended(lp, e);
        }
        let cfg = &self.pool.cfg;
        if body_done {
            self.set_deadline(lp, Wait::Head, cfg.head_timeout);
        } else {
            self.set_deadline(lp, Wait::Body, cfg.body_timeout);
            if f.st.borrow().drain.is_some() {
                self.when_drained(&f);
            }
        }
        self.wait_for_bytes(lp);
    }

    /// Writes part of a streamed request body (`frame` appends it, framed); `last`:
    /// the body is finished with it.
    pub(super) fn write_body(
        self: &Rc<Self>,
        lp: &IoLoop,
        frame: impl FnOnce(&mut Vec<u8>),
        last: bool,
    ) -> io::Result<()> {
        self.stream.write_with(frame)?;
        let cfg = &self.pool.cfg;
        let head_in = self
            .flight
            .borrow()
            .as_ref()
            .is_some_and(|f| f.st.borrow().head_in);
        if last && !head_in {
            self.set_deadline(lp, Wait::Head, cfg.head_timeout);
        } else if !last || self.deadline.get().is_some_and(|(_, w)| w == Wait::Body) {
            self.set_deadline(lp, Wait::Body, cfg.body_timeout);
        }
        Ok(())
    }

    /// More than the stream's high-water mark waits to be sent.
    pub(super) fn over_high_water(&self) -> bool {
        self.stream.over_high_water()
    }

    /// Tells `f`'s body writer once the stream has drained.
    pub(super) fn when_drained(&self, f: &Rc<Flight>) {
        let f = Rc::downgrade(f);
        self.stream.on_drain(move |lp, _| {
            if let Some(f) = f.upgrade() {
                f.wake_drain(lp, Ok(()));
            }
        });
    }

    /// A reader asks for the next part of a streamed body: decode in a later step
    /// (never inside the caller's code).
    pub(super) fn want_part(self: &Rc<Self>, lp: &IoLoop) {
        let body_timeout = self.pool.cfg.body_timeout;
        self.set_deadline(lp, Wait::Body, body_timeout);
        let me = self.clone();
        lp.add_callback(move |lp| me.pump(lp));
    }

    /// Back in the pool: closed after `idle_timeout`.
    pub(super) fn idle(self: &Rc<Self>, lp: &IoLoop) {
        self.set_deadline(lp, Wait::Idle, self.pool.cfg.idle_timeout);
    }

    /// Closes an idle connection that will not be used (expired, or unusable).
    pub(super) fn discard(self: &Rc<Self>, lp: &IoLoop) {
        if self.dead.replace(true) {
            return;
        }
        self.clear_timer(lp);
        self.stream.abort();
        self.pool.closed(lp, self);
    }

    /// Its flight failed or was cancelled: the connection cannot be trusted to be at a
    /// message boundary, and closes.
    pub(super) fn abandon(self: &Rc<Self>, lp: &IoLoop) {
        self.flight.borrow_mut().take();
        self.discard(lp);
    }

    fn wait_for_bytes(self: &Rc<Self>, lp: &IoLoop) {
        if self.reading.get() || self.dead.get() {
            return;
        }
        self.reading.set(true);
        if let Err(e) = self
            .stream
            .read_more_by(self.clone() as Rc<dyn ReadHandler>)
        {
            self.reading.set(false);
            self.ended(lp, e);
        }
    }

    /// Decodes what has come, and acts on it, while there is something to do.
    fn pump(self: &Rc<Self>, lp: &IoLoop) {
        loop {
            // A wait for bytes pending means what is buffered was decoded already: the
            // wait calls back when more comes.
            if self.dead.get() || self.reading.get() {
                return;
            }
            let Some(f) = self.flight.borrow().clone() else {
                if self.stream.read_buffer_len() > 0 {
                    self.discard(lp); // bytes nobody asked for
                }
                return;
            };
            let sink = {
                let st = f.st.borrow();
                match (st.head_in, st.req.stream_response && st.redirect.is_none()) {
                    (false, _) | (true, false) => Sink::Buffered,
                    (true, true) if st.part.is_some() => Sink::Part(PART_MAX),
                    // Nobody asks for more yet: nothing is read (back-pressure).
                    (true, true) => return,
                }
            };
            let (stop, part) = self.decode(lp, &f, sink);
            match stop {
                Stop::Head(h) => {
                    if !self.on_head(lp, &f, h) {
                        return;
                    }
                }
                Stop::NeedMore if !part.is_empty() => f.wake_part(lp, Ok(part)),
                Stop::Full => f.wake_part(lp, Ok(part)),
                Stop::NeedMore => return self.wait_for_bytes(lp),
                Stop::End => {
                    if matches!(sink, Sink::Part(_)) {
                        self.end_of_response(lp, &f);
                        f.wake_part(lp, Ok(part));
                    } else {
                        self.end_of_response(lp, &f);
                        self.answer_buffered(lp, &f);
                    }
                    return;
                }
                Stop::Error(e) => return f.fail(lp, e),
            }
        }
    }

    /// Decodes from the stream's unread bytes, in place, into `sink`.
    fn decode(&self, lp: &IoLoop, f: &Flight, sink: Sink) -> (Stop, Vec<u8>) {
        let max_body = self.pool.cfg.max_body;
        let decoded = self.stream.with_unread(|buf| {
            let mut d = self.decoder.borrow_mut();
            let mut part = Vec::new();
            let mut at = 0;
            let stop = loop {
                let (n, ev) = d.decode(&buf[at..]);
                let from = at;
                at += n;
                match ev {
                    ResponseEvent::NeedMore => break Stop::NeedMore,
                    ResponseEvent::Head(h) => break Stop::Head(h),
                    ResponseEvent::End => break Stop::End,
                    ResponseEvent::Error(e) => break Stop::Error(ClientError::Malformed(e)),
                    ResponseEvent::Body(r) => {
                        let bytes = &buf[from..][r];
                        match sink {
                            Sink::Buffered => {
                                let mut st = f.st.borrow_mut();
                                if st.body.len() + bytes.len() > max_body {
                                    break Stop::Error(ClientError::TooLarge { limit: max_body });
                                }
                                st.body.extend_from_slice(bytes);
                            }
                            Sink::Part(max) => {
                                part.extend_from_slice(bytes);
                                if part.len() >= max {
                                    break Stop::Full;
                                }
                            }
                        }
                    }
                }
            };
            (at, (at, (stop, part)))
        });
        let (consumed, out) = match decoded {
            Ok(d) => d,
            // Only when a read is pending, which `decode` is never called under.
            Err(e) => (
                0,
                (
                    Stop::Error(ClientError::Connection(Arc::new(e))),
                    Vec::new(),
                ),
            ),
        };
        if consumed > 0 {
            self.got_bytes.set(true);
            if let Some((_, Wait::Body)) = self.deadline.get() {
                // Progress: the body deadline moves (the timer catches up lazily).
                let at = lp.time() + self.pool.cfg.body_timeout;
                self.deadline.set(Some((at, Wait::Body)));
            }
        }
        out
    }

    /// A head came: false if the flight is answered (or failed) with it, true to go on
    /// reading (the body of a buffered response, or the final head after a 1xx).
    fn on_head(self: &Rc<Self>, lp: &IoLoop, f: &Rc<Flight>, h: ResponseHead) -> bool {
        let status = h.status();
        if status == 101 {
            let e = FramingError::new("101 Switching Protocols: this client does not upgrade");
            f.fail(lp, ClientError::Malformed(e));
            return false;
        }
        if status < 200 {
            return true; // interim (100 Continue, 103 Early Hints): the final one follows
        }
        let stats = &self.pool.stats;
        let started = f.st.borrow().started;
        let ns = crate::reactor::nanos(lp.time().saturating_duration_since(started));
        stats.latency.borrow_mut().saturating_record(ns.max(1));
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        stats.responses[class].set(stats.responses[class].get() + 1);
        // A redirect to follow: its body is read (and dropped) as a buffered one's.
        let redirect = {
            let st = f.st.borrow();
            let location = h
                .header("location")
                .filter(|_| matches!(status, 301 | 302 | 303 | 307 | 308));
            match (location, &st.prepared) {
                (Some(_), _) if st.req.redirects == 0 && st.followed > 0 => {
                    Err(ClientError::TooManyRedirects)
                }
                (Some(l), Some(p)) if st.req.redirects > 0 => st.req.redirected(status, l, p),
                _ => Ok(None),
            }
        };
        let redirect = match redirect {
            Ok(r) => r,
            Err(e) => {
                f.fail(lp, e);
                return false;
            }
        };
        let no_body = h.body() == BodyLength::None;
        let streamed = {
            let mut st = f.st.borrow_mut();
            st.redirect = redirect.map(Box::new);
            st.head_in = true;
            st.keep_alive = h.keep_alive();
            st.head = Some(h);
            st.req.stream_response && st.redirect.is_none()
        };
        if no_body {
            // (HEAD, 204, 304: the decoder is at the next head already.)
            self.end_of_response(lp, f);
            if streamed {
                self.answer_streamed(lp, f, Vec::new(), true);
            } else {
                self.answer_buffered(lp, f);
            }
            return false;
        }
        if !streamed {
            self.set_deadline(lp, Wait::Body, self.pool.cfg.body_timeout);
            return true;
        }
        // Streamed: answered now, with the body bytes that came with the head.
        self.clear_deadline();
        let (stop, part) = self.decode(lp, f, Sink::Part(PART_MAX));
        let complete = match stop {
            Stop::End => true,
            Stop::NeedMore | Stop::Full => false,
            Stop::Error(e) => {
                f.fail(lp, e);
                return false;
            }
            Stop::Head(_) => unreachable!("a body's decode ends at its end"),
        };
        if complete {
            self.end_of_response(lp, f);
        }
        self.answer_streamed(lp, f, part, complete);
        false
    }

    /// The answer to a streamed request: the head and the first part of the body.
    fn answer_streamed(&self, lp: &IoLoop, f: &Rc<Flight>, part: Vec<u8>, complete: bool) {
        let head = f.st.borrow_mut().head.take();
        if let Some(head) = head {
            let flight = (!complete).then(|| f.clone());
            f.answer(lp, Ok(ClientResponse::new(head, part, flight)));
        }
    }

    /// The answer to a buffered request (or the next request of a redirect).
    fn answer_buffered(&self, lp: &IoLoop, f: &Rc<Flight>) {
        let (head, body, redirect) = {
            let mut st = f.st.borrow_mut();
            (
                st.head.take(),
                std::mem::take(&mut st.body),
                st.redirect.take(),
            )
        };
        if let Some(next) = redirect {
            return f.redirect(lp, *next);
        }
        if let Some(head) = head {
            f.answer(lp, Ok(ClientResponse::new(head, body, None)));
        }
    }

    /// The response has all come: the connection lets go of the flight and goes back
    /// to the pool if it can carry another request, else closes.
    fn end_of_response(self: &Rc<Self>, lp: &IoLoop, f: &Rc<Flight>) {
        self.flight.borrow_mut().take();
        self.served.set(self.served.get() + 1);
        self.clear_deadline();
        let keep = {
            let st = f.st.borrow();
            let asked_close = st.prepared.as_ref().is_some_and(|p| p.close);
            st.keep_alive && !asked_close && st.body_done
        };
        let redirecting = f.st.borrow().redirect.is_some();
        if !redirecting {
            f.completed(lp);
        }
        if keep && !self.dead.get() && self.stream.read_buffer_len() == 0 && !self.stream.closed() {
            self.pool.release(lp, self.clone());
        } else {
            self.discard(lp);
        }
    }

    /// The stream ended (closed by the server, reset, an error): the end of a body
    /// delimited by the close, or the end of the flight, retried once if nothing of its
    /// answer came on a connection that had served before.
    fn ended(self: &Rc<Self>, lp: &IoLoop, e: io::Error) {
        if self.dead.get() {
            return;
        }
        let f = self.flight.borrow().clone();
        let Some(f) = f else {
            // Idle: the server closed it.
            self.dead.set(true);
            self.clear_timer(lp);
            self.pool.closed(lp, self);
            return;
        };
        let ev = self.decoder.borrow_mut().eof();
        let head_in = f.st.borrow().head_in;
        if head_in && matches!(ev, ResponseEvent::End) {
            let streamed = f.st.borrow().req.stream_response && f.st.borrow().redirect.is_none();
            self.end_of_response(lp, &f);
            if streamed {
                f.wake_part(lp, Ok(Vec::new()));
            } else {
                self.answer_buffered(lp, &f);
            }
            return;
        }
        self.flight.borrow_mut().take();
        self.discard(lp);
        if !self.got_bytes.get() && self.served.get() > 0 && f.retry(lp) {
            return;
        }
        let err = match ev {
            ResponseEvent::Error(fe) => ClientError::Malformed(fe),
            _ => ClientError::connection(e),
        };
        f.fail(lp, err);
    }

    fn set_deadline(self: &Rc<Self>, lp: &IoLoop, wait: Wait, after: Duration) {
        let at = lp.time() + after;
        self.deadline.set(Some((at, wait)));
        if let Some((id, when)) = self.timer.get() {
            if when <= at {
                return; // fires earlier, and then looks at the deadline
            }
            lp.remove_timeout(id);
        }
        let me = Rc::downgrade(self);
        let id = lp.call_at(at, move |lp| {
            if let Some(c) = me.upgrade() {
                c.timer.set(None);
                c.on_timer(lp);
            }
        });
        self.timer.set(Some((id, at)));
    }

    fn clear_deadline(&self) {
        self.deadline.set(None);
    }

    fn clear_timer(&self, lp: &IoLoop) {
        self.deadline.set(None);
        if let Some((id, _)) = self.timer.take() {
            lp.remove_timeout(id);
        }
    }

    fn on_timer(self: &Rc<Self>, lp: &IoLoop) {
        let Some((at, wait)) = self.deadline.get() else {
            return;
        };
        if lp.time() < at {
            // Moved by progress since the timer was set.
            self.deadline.set(None);
            let left = at - lp.time();
            return self.set_deadline(lp, wait, left);
        }
        self.deadline.set(None);
        let f = self.flight.borrow().clone();
        match (wait, f) {
            (Wait::Idle, _) | (_, None) => self.discard(lp),
            (Wait::Head, Some(f)) => f.fail(lp, ClientError::Timeout(Deadline::Head)),
            (Wait::Body, Some(f)) => f.fail(lp, ClientError::Timeout(Deadline::Body)),
        }
    }
}

impl ReadHandler for Conn {
    fn on_read(self: Rc<Self>, lp: &IoLoop, _s: &IoStream, r: io::Result<Vec<u8>>) {
        self.reading.set(false);
        match r {
            Ok(_) => self.pump(lp),
            Err(e) => self.ended(lp, e),
        }
    }
}
