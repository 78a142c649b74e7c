//! One thread's connections: send, parse every response, record latencies.
//!
//! Closed loop (wrk): a connection sends `pipeline` requests, reads that many
//! responses, and sends again. Constant rate (wrk2): a connection sends one request
//! when it is due (every `connections / rate` seconds) and measures its latency from
//! that due time, so a stalled server shows in the latency of every request that should
//! have gone out during the stall, not only of the few that were in flight.

use super::report::Totals;
use super::Plan;
use coreloop::http::framing;
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
        });
        ctx.conns.borrow_mut().push(c.clone());
        c.connect(lp);
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
        ctx.stats.borrow_mut().unfinished += c.sent.borrow().len() as u64;
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
                    *me.stream.borrow_mut() = Some(s);
                    me.sent.borrow_mut().clear();
                    me.send(lp, Instant::now());
                }
                Err(_) => me.connect_failed(lp),
            }
        });
    }

    fn connect_failed(self: &Rc<Self>, lp: &IoLoop) {
        self.ctx.stats.borrow_mut().connect_errors += 1;
        let me = self.clone();
        lp.call_later(Duration::from_millis(10), move |lp| me.connect(lp));
    }

    fn reconnect(self: &Rc<Self>, lp: &IoLoop) {
        self.generation.set(self.generation.get() + 1);
        self.sent.borrow_mut().clear();
        self.reading.set(false);
        if let Some(s) = self.stream.borrow_mut().take() {
            s.close();
        }
        self.connect(lp);
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
            None => self.write(lp, &plan.batch, now, plan.pipeline),
            Some(iv) => {
                let due = self.next_due.get();
                self.next_due.set(due + iv);
                if due > now {
                    let me = self.clone();
                    let generation = self.generation.get();
                    lp.call_later(due - now, move |lp| {
                        if me.generation.get() == generation && !me.ctx.stopping.get() {
                            me.write(lp, &me.ctx.plan.batch, due, 1);
                        }
                    });
                } else {
                    self.write(lp, &plan.batch, due, 1);
                }
            }
        }
    }

    fn write(self: &Rc<Self>, lp: &IoLoop, bytes: &[u8], start: Instant, count: usize) {
        let Some(s) = self.stream.borrow().clone() else {
            return;
        };
        if s.write_with(|out| out.extend_from_slice(bytes)).is_err() {
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
            return self.reconnect(lp);
        }
        if self.sent.borrow().is_empty() {
            if self.ctx.stopping.get() {
                if let Some(s) = self.stream.borrow().clone() {
                    s.close();
                }
            } else {
                self.send(lp, now);
            }
        }
    }

    /// The connection broke or sent garbage: a read error if requests were in flight.
    fn failed(self: &Rc<Self>, lp: &IoLoop) {
        if !self.sent.borrow().is_empty() {
            self.ctx.stats.borrow_mut().read_errors += 1;
        }
        self.reconnect(lp);
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
/// compare checks every byte of it for a fraction of what httparse costs. Anything else
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
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(_) => resp.code.unwrap_or(0),
        Err(_) => 0,
    }
}

/// Parses the response at the front of `buf`: status line and headers (httparse), then
/// the body by Content-Length or chunked framing (`coreloop::http::framing`, the rules
/// the server reads requests by); `head`: it answers a HEAD request,
/// so it has no body whatever its framing headers say (RFC 9110 9.3.2).
pub fn parse_response(buf: &[u8], head: bool) -> Parsed {
    // Uninitialised slots: zeroing 64 headers cost more than parsing a small response.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Garbage,
    };
    let Some(status) = resp.code else {
        return Parsed::Garbage;
    };
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match framing::content_length(h.value.trim_ascii()).map(usize::try_from) {
                Some(Ok(n)) => length = Some(n),
                _ => return Parsed::Garbage,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if contains_token(h.value, b"close") {
                close = true;
            } else if contains_token(h.value, b"keep-alive") {
                close = false;
            }
        }
    }
    let body = &buf[head_len..];
    let body_len = if head || matches!(status, 100..=199 | 204 | 304) {
        0
    } else if chunked {
        match framing::chunked_len(body) {
            Ok(Some(n)) => n,
            Ok(None) => return Parsed::Partial,
            Err(_) => return Parsed::Garbage,
        }
    } else if let Some(n) = length {
        if body.len() < n {
            return Parsed::Partial;
        }
        n
    } else {
        return Parsed::ToClose;
    };
    Parsed::Whole {
        status,
        len: head_len + body_len,
        close,
    }
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
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
