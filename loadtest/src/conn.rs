//! One thread's connections: send, parse every response, record latencies.
//!
//! Closed loop (wrk): a connection sends `pipeline` requests, reads that many
//! responses, and sends again. Constant rate (wrk2): a connection sends one request
//! when it is due (every `connections / rate` seconds) and measures its latency from
//! that due time, so a stalled server shows in the latency of every request that should
//! have gone out during the stall, not only of the few that were in flight.
//!
//! `--no-keepalive`: each request opens its own connection when it is due, and the
//! server closes it after the answer. `--retry-closed`: a kept-alive connection the
//! server closes between requests is reopened, and a request that met that close
//! before any byte of its answer is sent again once (see `Config::retry_closed`).

use super::report::Totals;
use super::Plan;
use coreloop::http::framing::{BodyLength, ResponseDecoder, ResponseEvent};
use coreloop::{IoLoop, IoStream};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ctx {
    plan: Arc<Plan>,
    stats: RefCell<Totals>,
    stopping: Cell<bool>,
    conns: RefCell<Vec<Rc<Conn>>>,
    /// The last whole response parsed on this thread (see [`Known`]).
    known: RefCell<Known>,
}

/// This loop's share of the test (kept in `IoLoop::local`).
#[derive(Default)]
pub(crate) struct Shard(RefCell<Option<Rc<Ctx>>>);

struct Conn {
    ctx: Rc<Ctx>,
    stream: RefCell<Option<IoStream>>,
    /// When each request in flight was sent (or due, at a constant rate).
    sent: RefCell<VecDeque<Instant>>,
    next_due: Cell<Instant>,
    /// Bumped on every reconnect: callbacks of an older stream are ignored.
    generation: Cell<u64>,
    /// A wait for more bytes is pending (or responses are being parsed: requests sent
    /// meanwhile start no wait of their own).
    reading: Cell<bool>,
    /// Answers received on the current connection: a request sent after one went on
    /// a reused connection.
    answered: Cell<u64>,
    /// The due time of a request waiting on a timer, given back to the schedule if the
    /// connection is reopened before it goes.
    scheduled: Cell<Option<Instant>>,
    /// Requests to send again (by start time) once a new connection is open.
    resend: RefCell<Vec<Instant>>,
}

/// Starts `n` connections on this loop.
pub(crate) fn start_shard(lp: &IoLoop, plan: Arc<Plan>, n: usize) {
    let ctx = Rc::new(Ctx {
        plan: plan.clone(),
        stats: RefCell::new(Totals::new()),
        stopping: Cell::new(false),
        conns: RefCell::new(Vec::new()),
        known: RefCell::new(Known::default()),
    });
    *lp.local::<Shard>().0.borrow_mut() = Some(ctx.clone());
    let now = Instant::now();
    for i in 0..n {
        // Spread the first due times over one interval, so a constant rate starts even.
        let offset = plan
            .interval
            .map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / n.max(1) as f64));
        let c = Rc::new(Conn {
            ctx: ctx.clone(),
            stream: RefCell::new(None),
            sent: RefCell::new(VecDeque::new()),
            next_due: Cell::new(now + offset),
            generation: Cell::new(0),
            reading: Cell::new(false),
            answered: Cell::new(0),
            scheduled: Cell::new(None),
            resend: RefCell::new(Vec::new()),
        });
        ctx.conns.borrow_mut().push(c.clone());
        if plan.no_keepalive {
            c.send(lp, now); // each request opens its connection when due
        } else {
            c.connect(lp);
        }
    }
    // Stop sending at the end; sample requests/s; check timeouts.
    let c2 = ctx.clone();
    let until_stop = plan.stop_at.saturating_duration_since(Instant::now());
    lp.call_later(until_stop, move |_| c2.stopping.set(true));
    tick(lp, ctx, 0);
}

/// Every 100 ms: a requests/s sample, and requests older than the timeout.
fn tick(lp: &IoLoop, ctx: Rc<Ctx>, last_count: u64) {
    let now = lp.time();
    let count = ctx.stats.borrow().requests;
    if now >= ctx.plan.record_from + Duration::from_millis(100) && !ctx.stopping.get() {
        ctx.stats
            .borrow_mut()
            .req_per_sec
            .saturating_record((count - last_count) * 10);
    }
    let timeout = ctx.plan.timeout;
    let late: Vec<Rc<Conn>> = ctx
        .conns
        .borrow()
        .iter()
        .filter(|c| {
            c.sent
                .borrow()
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > timeout)
        })
        .cloned()
        .collect();
    for c in late {
        c.ctx.stats.borrow_mut().timeouts += 1;
        c.reconnect(lp);
    }
    if !ctx.stopping.get()
        || ctx
            .conns
            .borrow()
            .iter()
            .any(|c| !c.sent.borrow().is_empty())
    {
        lp.call_later(Duration::from_millis(100), move |lp| tick(lp, ctx, count));
    }
}

/// Responses so far and errors so far on this loop (for the live line).
pub(crate) fn progress(lp: &IoLoop) -> (u64, u64) {
    let Some(ctx) = lp.local::<Shard>().0.borrow().clone() else {
        return (0, 0);
    };
    let st = ctx.stats.borrow();
    (
        st.requests,
        st.connect_errors + st.read_errors + st.write_errors + st.timeouts,
    )
}

/// Requests in flight on this loop.
pub(crate) fn outstanding(lp: &IoLoop) -> usize {
    let Some(ctx) = lp.local::<Shard>().0.borrow().clone() else {
        return 0;
    };
    ctx.stopping.set(true);
    let n = ctx
        .conns
        .borrow()
        .iter()
        .map(|c| c.sent.borrow().len())
        .sum();
    n
}

/// Closes this loop's connections and hands over what they measured.
pub(crate) fn collect(lp: &IoLoop) -> Totals {
    let Some(ctx) = lp.local::<Shard>().0.borrow_mut().take() else {
        return Totals::new();
    };
    ctx.stopping.set(true);
    for c in ctx.conns.borrow_mut().drain(..) {
        ctx.stats.borrow_mut().unfinished +=
            (c.sent.borrow().len() + c.resend.borrow().len()) as u64;
        c.generation.set(c.generation.get() + 1);
        if let Some(s) = c.stream.borrow_mut().take() {
            s.close();
        }
    }
    let stats = std::mem::replace(&mut *ctx.stats.borrow_mut(), Totals::new());
    stats
}

impl Conn {
    /// Opens the connection without blocking the loop, and starts sending.
    fn connect(self: &Rc<Self>, lp: &IoLoop) {
        if self.ctx.stopping.get() {
            return;
        }
        let me = self.clone();
        let generation = self.generation.get();
        IoStream::connect(lp, self.ctx.plan.addr, self.ctx.plan.timeout).then(move |lp, s| {
            if me.generation.get() != generation {
                return; // superseded meanwhile
            }
            match s {
                Ok(s) => {
                    if let Some((tls, name)) = &me.ctx.plan.tls {
                        // The request waits in the stream for the handshake.
                        if tls.wrap(lp, &s, name).is_err() {
                            return me.connect_failed(lp);
                        }
                    }
                    *me.stream.borrow_mut() = Some(s);
                    me.sent.borrow_mut().clear();
                    me.answered.set(0);
                    let again = std::mem::take(&mut *me.resend.borrow_mut());
                    match again.first() {
                        Some(&start) => me.write(lp, &me.ctx.plan.batch, start, again.len()),
                        None => me.send(lp, Instant::now()),
                    }
                }
                Err(_) => me.connect_failed(lp),
            }
        });
    }

    /// `--no-keepalive`: opens a connection for the request due at `start` and sends
    /// it; a connection that cannot be opened is that request's error.
    fn open(self: &Rc<Self>, lp: &IoLoop, start: Instant) {
        let me = self.clone();
        let generation = self.generation.get();
        IoStream::connect(lp, self.ctx.plan.addr, self.ctx.plan.timeout).then(move |lp, s| {
            if me.generation.get() != generation {
                return;
            }
            match s {
                Ok(s) => {
                    *me.stream.borrow_mut() = Some(s);
                    me.answered.set(0);
                    me.write(lp, &me.ctx.plan.batch, start, 1);
                }
                Err(_) => {
                    me.ctx.stats.borrow_mut().connect_errors += 1;
                    if me.ctx.plan.interval.is_some() {
                        me.send(lp, Instant::now());
                    } else {
                        // A closed loop would spin on a refusing server.
                        let again = me.clone();
                        lp.call_later(Duration::from_millis(10), move |lp| {
                            again.send(lp, Instant::now())
                        });
                    }
                }
            }
        });
    }

    /// Sends the request(s) due at `start`: on this connection, or with
    /// `--no-keepalive` on a new one.
    fn dispatch(self: &Rc<Self>, lp: &IoLoop, start: Instant, count: usize) {
        if self.ctx.plan.no_keepalive {
            self.open(lp, start);
        } else {
            self.write(lp, &self.ctx.plan.batch, start, count);
        }
    }

    fn connect_failed(self: &Rc<Self>, lp: &IoLoop) {
        self.ctx.stats.borrow_mut().connect_errors += 1;
        let me = self.clone();
        lp.call_later(Duration::from_millis(10), move |lp| me.connect(lp));
    }

    fn reconnect(self: &Rc<Self>, lp: &IoLoop) {
        self.drop_stream();
        if self.ctx.plan.no_keepalive {
            self.send(lp, Instant::now());
        } else {
            self.connect(lp);
        }
    }

    /// Forgets the current connection (callbacks of it are ignored from now on) and
    /// what was in flight on it; a request waiting for its due time goes back to the
    /// schedule.
    fn drop_stream(&self) {
        self.generation.set(self.generation.get() + 1);
        self.sent.borrow_mut().clear();
        self.reading.set(false);
        if let Some(due) = self.scheduled.take() {
            self.next_due.set(due);
        }
        if let Some(s) = self.stream.borrow_mut().take() {
            s.close();
        }
    }

    /// Sends the next request(s): at once in a closed loop, when due at a constant rate.
    /// `now`: the clock read when the previous response was taken in, a moment ago
    /// (one clock read per response, not two).
    fn send(self: &Rc<Self>, lp: &IoLoop, now: Instant) {
        if self.ctx.stopping.get() {
            return;
        }
        let plan = &self.ctx.plan;
        match plan.interval {
            None => self.dispatch(lp, now, plan.pipeline),
            Some(iv) => {
                let due = self.next_due.get();
                self.next_due.set(due + iv);
                if due > now {
                    let me = self.clone();
                    let generation = self.generation.get();
                    self.scheduled.set(Some(due));
                    lp.call_later(due - now, move |lp| {
                        if me.generation.get() == generation && !me.ctx.stopping.get() {
                            me.scheduled.set(None);
                            me.dispatch(lp, due, 1);
                        }
                    });
                } else {
                    self.dispatch(lp, due, 1);
                }
            }
        }
    }

    fn write(self: &Rc<Self>, lp: &IoLoop, bytes: &[u8], start: Instant, count: usize) {
        let Some(s) = self.stream.borrow().clone() else {
            return;
        };
        if s.write_with(|out| out.extend_from_slice(bytes)).is_err() {
            if self.may_retry() {
                return self.retry(lp, vec![start; count]);
            }
            self.ctx.stats.borrow_mut().write_errors += 1;
            return self.reconnect(lp);
        }
        self.sent
            .borrow_mut()
            .extend(std::iter::repeat_n(start, count));
        self.read_more(lp, &s);
    }

    /// Waits for bytes, then parses every whole response that has arrived (as wrk does
    /// over its read buffer): one read callback per batch, not two per response. The
    /// responses are parsed where they lie in the stream's buffer; a response cut by a
    /// read stays there for the next look.
    fn read_more(self: &Rc<Self>, _lp: &IoLoop, s: &IoStream) {
        if self.reading.get() {
            return;
        }
        self.reading.set(true);
        let me = self.clone();
        let generation = self.generation.get();
        s.read_more().then(move |lp, s, r| {
            if me.generation.get() != generation {
                return;
            }
            me.reading.set(false);
            match r {
                Ok(_) => me.parse_pending(lp, s),
                // The server closed: a body framed by the close ends here.
                Err(_) => me.at_close(lp, s),
            }
        });
    }

    /// Completes every whole response at the front of the stream's unread bytes.
    fn parse_pending(self: &Rc<Self>, lp: &IoLoop, s: &IoStream) {
        let generation = self.generation.get();
        // Every response in this buffer arrived by now: one clock read for all of them.
        let now = Instant::now();
        // (Requests sent from `complete` meanwhile start no wait: one follows below.)
        self.reading.set(true);
        let garbage = s
            .with_unread(|buf| {
                let mut at = 0;
                while at < buf.len() {
                    let parsed = self
                        .ctx
                        .known
                        .borrow_mut()
                        .parse(&buf[at..], self.ctx.plan.head);
                    match parsed {
                        Parsed::Partial | Parsed::ToClose => break,
                        Parsed::Garbage => return (at, true),
                        Parsed::Whole { status, len, close } => {
                            at += len;
                            self.complete(lp, status, len, close, now);
                            if self.generation.get() != generation {
                                break; // it reconnected
                            }
                        }
                    }
                }
                (at, false)
            })
            .unwrap_or(true);
        if self.generation.get() != generation {
            return;
        }
        self.reading.set(false);
        if garbage {
            return self.failed(lp);
        }
        if !self.sent.borrow().is_empty() {
            self.read_more(lp, s);
        }
    }

    /// The server closed the connection.
    fn at_close(self: &Rc<Self>, lp: &IoLoop, s: &IoStream) {
        let head = self.ctx.plan.head;
        let to_close = s
            .with_unread(|buf| match parse_response(buf, head) {
                Parsed::ToClose => (buf.len(), Some((status_of(buf), buf.len()))),
                _ => (0, None),
            })
            .ok()
            .flatten();
        if let Some((status, len)) = to_close {
            return self.complete(lp, status, len, true, Instant::now());
        }
        self.failed(lp);
    }

    /// A response arrived whole.
    fn complete(
        self: &Rc<Self>,
        lp: &IoLoop,
        status: u16,
        bytes: usize,
        close: bool,
        now: Instant,
    ) {
        let Some(start) = self.sent.borrow_mut().pop_front() else {
            return;
        };
        self.answered.set(self.answered.get() + 1);
        {
            let mut st = self.ctx.stats.borrow_mut();
            if now >= self.ctx.plan.record_from {
                let us = now.saturating_duration_since(start).as_micros() as u64;
                st.latency.saturating_record(us.max(1));
                st.requests += 1;
                st.bytes += bytes as u64;
                if !(200..400).contains(&status) {
                    st.non_2xx_3xx += 1;
                }
            }
        }
        if close {
            if self.ctx.plan.no_keepalive && self.sent.borrow().is_empty() {
                // Done with this connection, as planned; the next request opens one.
                self.drop_stream();
                return self.send(lp, now);
            }
            return self.reconnect(lp);
        }
        if self.sent.borrow().is_empty() {
            if self.ctx.stopping.get() {
                if let Some(s) = self.stream.borrow().clone() {
                    s.close();
                }
            } else {
                self.send(lp, now);
                if self.ctx.plan.retry_closed {
                    // Keep reading while idle, to see the server close the connection
                    // before the next request goes on it.
                    if let Some(s) = self.stream.borrow().clone() {
                        self.read_more(lp, &s);
                    }
                }
            }
        }
    }

    /// The connection broke or sent garbage: a read error if requests were in flight
    /// (unless they may be sent again: `--retry-closed`).
    fn failed(self: &Rc<Self>, lp: &IoLoop) {
        let in_flight = self.sent.borrow().len();
        if in_flight > 0 {
            if self.may_retry()
                && in_flight == self.ctx.plan.pipeline
                && self
                    .stream
                    .borrow()
                    .as_ref()
                    .is_none_or(|s| s.read_buffer_len() == 0)
            {
                let starts = self.sent.borrow().iter().copied().collect();
                return self.retry(lp, starts);
            }
            self.ctx.stats.borrow_mut().read_errors += 1;
        }
        self.reconnect(lp);
    }

    /// Whether a request that met a closed connection may be sent again: with
    /// `--retry-closed`, on a kept-alive connection that had answered before.
    fn may_retry(&self) -> bool {
        let plan = &self.ctx.plan;
        plan.retry_closed && !plan.no_keepalive && self.answered.get() > 0
    }

    /// Sends the requests started at `starts` again on a new connection.
    fn retry(self: &Rc<Self>, lp: &IoLoop, starts: Vec<Instant>) {
        self.ctx.stats.borrow_mut().retried += starts.len() as u64;
        self.drop_stream();
        *self.resend.borrow_mut() = starts;
        self.connect(lp);
    }
}

/// What the front of the receive buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole response yet.
    Partial,
    /// Not HTTP.
    Garbage,
    /// A whole response of `len` bytes.
    Whole {
        /// The status code.
        status: u16,
        /// The response's length, bytes.
        len: usize,
        /// Whether the server closes the connection after it.
        close: bool,
    },
    /// A response whose body runs until the server closes.
    ToClose,
}

/// The bytes of the last whole response parsed, with what parsing found. A load test
/// gets the same response over and over (until the `Date` header ticks), and a
/// response that is byte for byte the same as one already parsed parses the same: the
/// compare checks every byte of it for a fraction of what decoding costs. Anything else
/// is parsed in full, and becomes the one remembered.
#[derive(Default)]
pub(crate) struct Known {
    bytes: Vec<u8>,
    status: u16,
    close: bool,
}

impl Known {
    /// Responses larger than this are always parsed (and not kept).
    const MAX: usize = 4096;

    fn parse(&mut self, buf: &[u8], head: bool) -> Parsed {
        if !self.bytes.is_empty() && buf.starts_with(&self.bytes) {
            return Parsed::Whole {
                status: self.status,
                len: self.bytes.len(),
                close: self.close,
            };
        }
        let parsed = parse_response(buf, head);
        if let Parsed::Whole { status, len, close } = parsed {
            self.bytes.clear();
            if len <= Self::MAX {
                self.bytes.extend_from_slice(&buf[..len]);
                (self.status, self.close) = (status, close);
            }
        }
        parsed
    }
}

fn status_of(buf: &[u8]) -> u16 {
    let mut d = ResponseDecoder::new();
    match d.decode(buf).1 {
        ResponseEvent::Head(h) => h.status(),
        _ => 0,
    }
}

/// Parses the response at the front of `buf` with coreloop's response decoder (the one
/// `coreloop::http::HttpClient` reads answers with): head, then the body by its
/// framing; `head`: it answers a HEAD request, so it has no body whatever its framing
/// headers say (RFC 9110 9.3.2). A 1xx head counts as a response of its own.
pub fn parse_response(buf: &[u8], head: bool) -> Parsed {
    let mut d = ResponseDecoder::new();
    d.answering_head(head);
    let (mut at, mut status, mut close) = (0, 0, false);
    loop {
        let (n, ev) = d.decode(&buf[at..]);
        at += n;
        match ev {
            ResponseEvent::NeedMore => return Parsed::Partial,
            ResponseEvent::Error(_) => return Parsed::Garbage,
            ResponseEvent::Head(h) => {
                (status, close) = (h.status(), !h.keep_alive());
                match h.body() {
                    BodyLength::None => {
                        return Parsed::Whole {
                            status,
                            len: at,
                            close,
                        }
                    }
                    BodyLength::UntilClose => return Parsed::ToClose,
                    BodyLength::Length(_) | BodyLength::Chunked => {}
                }
            }
            ResponseEvent::Body(_) => {}
            ResponseEvent::End => {
                return Parsed::Whole {
                    status,
                    len: at,
                    close,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_from_the_front_of_a_buffer() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let Parsed::Whole {
            status: 200,
            len,
            close: false,
        } = parse_response(two, false)
        else {
            panic!("first response");
        };
        assert_eq!(len, 40);
        assert!(matches!(
            parse_response(&two[len..], false),
            Parsed::Whole { status: 404, .. }
        ));
        assert!(matches!(parse_response(&two[..30], false), Parsed::Partial));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert!(
            matches!(parse_response(chunked, false), Parsed::Whole { len, .. } if len == chunked.len())
        );
        assert!(matches!(
            parse_response(&chunked[..chunked.len() - 2], false),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_response(b"garbage\r\n\r\n", false),
            Parsed::Garbage
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\nbody", false),
            Parsed::ToClose
        ));
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Parsed::Whole { close: true, .. }
        ));
        // A chunk size that would overflow is garbage, not a panic (found by the
        // response_parser fuzz target).
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert!(matches!(parse_response(huge, false), Parsed::Garbage));
        // The answer to HEAD: Content-Length but no body; the next response follows.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert!(matches!(
            parse_response(head, true),
            Parsed::Whole { len: 39, .. }
        ));
        // Taken for a GET answer, 12 bytes of the next response would be its body.
        assert!(matches!(
            parse_response(head, false),
            Parsed::Whole { len: 51, .. }
        ));
    }

    /// What `Known` answers is what parsing answers, whatever came before.
    #[test]
    fn a_remembered_response_parses_as_parsing_would() {
        fn same(a: &Parsed, b: &Parsed) -> bool {
            match (a, b) {
                (Parsed::Partial, Parsed::Partial)
                | (Parsed::Garbage, Parsed::Garbage)
                | (Parsed::ToClose, Parsed::ToClose) => true,
                (
                    Parsed::Whole { status, len, close },
                    Parsed::Whole {
                        status: s2,
                        len: l2,
                        close: c2,
                    },
                ) => (status, len, close) == (s2, l2, c2),
                _ => false,
            }
        }
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".as_slice();
        let inputs: Vec<Vec<u8>> = vec![
            ok.to_vec(),
            [ok, ok].concat(),
            ok[..ok.len() - 1].to_vec(),
            b"HTTP/1.1 500 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nho".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec(),
            b"garbage\r\n\r\n".to_vec(),
        ];
        // Every input after every other: the remembered one never changes the answer.
        for before in &inputs {
            for input in &inputs {
                let mut known = Known::default();
                known.parse(before, false);
                let got = known.parse(input, false);
                assert!(
                    same(&got, &parse_response(input, false)),
                    "{:?} after {:?}",
                    String::from_utf8_lossy(input),
                    String::from_utf8_lossy(before)
                );
            }
        }
        let mut known = Known::default();
        known.parse(ok, false);
        assert_eq!(known.bytes, ok, "a whole response is remembered");
    }
}
