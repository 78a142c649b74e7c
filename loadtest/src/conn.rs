//! One thread's connections: send, parse every response, record latencies.
//!
//! Closed loop (wrk): a connection sends `pipeline` requests, reads that many
//! responses, and sends again. Constant rate (wrk2): a connection sends one request
//! when it is due (every `connections / rate` seconds) and measures its latency from
//! that due time, so a stalled server shows in the latency of every request that should
//! have gone out during the stall, not only of the few that were in flight.

use super::Plan;
use coreloop::{IoLoop, IoStream};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one thread measured.
pub struct ShardStats {
    pub requests: u64,
    pub bytes: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx_3xx: u64,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Requests per second, sampled every 100 ms.
    pub req_per_sec: Histogram<u64>,
}

impl ShardStats {
    fn new() -> ShardStats {
        ShardStats {
            requests: 0,
            bytes: 0,
            connect_errors: 0,
            read_errors: 0,
            write_errors: 0,
            timeouts: 0,
            non_2xx_3xx: 0,
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            req_per_sec: Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds"),
        }
    }
}

struct Ctx {
    plan: Arc<Plan>,
    stats: RefCell<ShardStats>,
    stopping: Cell<bool>,
    conns: RefCell<Vec<Rc<Conn>>>,
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
}

/// Starts `n` connections on this loop.
pub(crate) fn start_shard(lp: &IoLoop, plan: Arc<Plan>, n: usize) {
    let ctx = Rc::new(Ctx {
        plan: plan.clone(),
        stats: RefCell::new(ShardStats::new()),
        stopping: Cell::new(false),
        conns: RefCell::new(Vec::new()),
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
pub(crate) fn collect(lp: &IoLoop) -> ShardStats {
    let Some(ctx) = lp.local::<Shard>().0.borrow_mut().take() else {
        return ShardStats::new();
    };
    ctx.stopping.set(true);
    for c in ctx.conns.borrow_mut().drain(..) {
        c.generation.set(c.generation.get() + 1);
        if let Some(s) = c.stream.borrow_mut().take() {
            s.close();
        }
    }
    let stats = std::mem::replace(&mut *ctx.stats.borrow_mut(), ShardStats::new());
    stats
}

/// How a response's body is framed.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    fn connect(self: &Rc<Self>, lp: &IoLoop) {
        if self.ctx.stopping.get() {
            return;
        }
        let stream = std::net::TcpStream::connect(self.ctx.plan.addr)
            .and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
            .and_then(|s| IoStream::new(lp, s));
        match stream {
            Ok(s) => {
                *self.stream.borrow_mut() = Some(s);
                self.sent.borrow_mut().clear();
                self.send(lp);
            }
            Err(_) => {
                self.ctx.stats.borrow_mut().connect_errors += 1;
                let me = self.clone();
                lp.call_later(Duration::from_millis(10), move |lp| me.connect(lp));
            }
        }
    }

    fn reconnect(self: &Rc<Self>, lp: &IoLoop) {
        self.generation.set(self.generation.get() + 1);
        self.sent.borrow_mut().clear();
        if let Some(s) = self.stream.borrow_mut().take() {
            s.close();
        }
        self.connect(lp);
    }

    /// Sends the next request(s): at once in a closed loop, when due at a constant rate.
    fn send(self: &Rc<Self>, lp: &IoLoop) {
        if self.ctx.stopping.get() {
            return;
        }
        match self.ctx.plan.interval {
            None => {
                let now = Instant::now();
                self.write(
                    lp,
                    &self.ctx.plan.batch.clone(),
                    now,
                    self.ctx.plan.pipeline,
                );
            }
            Some(iv) => {
                let due = self.next_due.get();
                self.next_due.set(due + iv);
                let now = Instant::now();
                if due > now {
                    let me = self.clone();
                    let generation = self.generation.get();
                    lp.call_later(due - now, move |lp| {
                        if me.generation.get() == generation && !me.ctx.stopping.get() {
                            me.write(lp, &me.ctx.plan.batch.clone(), due, 1);
                        }
                    });
                } else {
                    self.write(lp, &self.ctx.plan.batch.clone(), due, 1);
                }
            }
        }
    }

    fn write(self: &Rc<Self>, lp: &IoLoop, bytes: &[u8], start: Instant, count: usize) {
        let Some(s) = self.stream.borrow().clone() else {
            return;
        };
        if s.write(bytes).is_err() {
            self.ctx.stats.borrow_mut().write_errors += 1;
            return self.reconnect(lp);
        }
        let first = self.sent.borrow().is_empty();
        self.sent
            .borrow_mut()
            .extend(std::iter::repeat_n(start, count));
        if first {
            self.read_response(lp, &s);
        }
    }

    fn read_response(self: &Rc<Self>, lp: &IoLoop, s: &IoStream) {
        let _ = lp;
        let me = self.clone();
        let generation = self.generation.get();
        let r = s.read_until_within(b"\r\n\r\n", 64 * 1024, move |lp, s, head| {
            if me.generation.get() != generation {
                return;
            }
            let head = match head {
                Ok(h) => h,
                Err(_) => return me.failed(lp),
            };
            match parse_head(&head) {
                Some((status, framing, close)) => {
                    me.read_body(lp, s, status, framing, close, head.len())
                }
                None => me.failed(lp), // not HTTP: a read error, as wrk counts it
            }
        });
        if r.is_err() {
            self.failed(lp);
        }
    }

    fn read_body(
        self: &Rc<Self>,
        lp: &IoLoop,
        s: &IoStream,
        status: u16,
        framing: Framing,
        close: bool,
        head_len: usize,
    ) {
        let me = self.clone();
        let generation = self.generation.get();
        let done = move |lp: &IoLoop, body: io::Result<usize>| {
            if me.generation.get() != generation {
                return;
            }
            match body {
                Ok(n) => me.complete(lp, status, head_len + n, close),
                Err(_) => me.failed(lp),
            }
        };
        match framing {
            Framing::Length(0) => done(lp, Ok(0)),
            Framing::Length(n) => {
                if s.read_bytes(n, move |lp, _, b| done(lp, b.map(|b| b.len())))
                    .is_err()
                {
                    self.failed(lp);
                }
            }
            Framing::UntilClose => {
                if s.read_until_close(move |lp, _, b| done(lp, b.map(|b| b.len())))
                    .is_err()
                {
                    self.failed(lp);
                }
            }
            Framing::Chunked => read_chunks(s, 0, Box::new(done)),
        }
    }

    /// A response arrived whole.
    fn complete(self: &Rc<Self>, lp: &IoLoop, status: u16, bytes: usize, close: bool) {
        let Some(start) = self.sent.borrow_mut().pop_front() else {
            return;
        };
        let now = Instant::now();
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
        let Some(s) = self.stream.borrow().clone() else {
            return;
        };
        if !self.sent.borrow().is_empty() {
            self.read_response(lp, &s);
        } else if self.ctx.stopping.get() {
            s.close();
        } else {
            self.send(lp);
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

type BodyDone = Box<dyn FnOnce(&IoLoop, io::Result<usize>)>;

/// Reads a chunked body; `done` gets its decoded length.
fn read_chunks(s: &IoStream, total: usize, done: BodyDone) {
    let r = s.read_until_within(b"\r\n", 1024, move |lp, s, line| {
        let size = line.ok().and_then(|l| {
            let l = l.strip_suffix(b"\r\n")?;
            let hex = l.split(|&b| b == b';').next()?;
            usize::from_str_radix(std::str::from_utf8(hex).ok()?.trim(), 16).ok()
        });
        match size {
            None => done(lp, Err(io::ErrorKind::InvalidData.into())),
            Some(0) => skip_trailers(s, total, done),
            Some(n) => {
                let r = s.read_bytes(n + 2, move |lp, s, data| match data {
                    Ok(d) if d.ends_with(b"\r\n") => read_chunks(s, total + n, done),
                    _ => done(lp, Err(io::ErrorKind::InvalidData.into())),
                });
                if let Err(e) = r {
                    let _ = e; // over the stream's limit: treated as garbage
                }
            }
        }
    });
    let _ = r;
}

fn skip_trailers(s: &IoStream, total: usize, done: BodyDone) {
    let _ = s.read_until_within(b"\r\n", 8192, move |lp, s, line| match line {
        Ok(l) if l == b"\r\n" => done(lp, Ok(total)),
        Ok(_) => skip_trailers(s, total, done),
        Err(e) => done(lp, Err(e)),
    });
}

/// Status, framing and whether the server closes after this response.
fn parse_head(head: &[u8]) -> Option<(u16, Framing, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let status = resp.code?;
    let mut framing = None;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            framing = Some(Framing::Length(n));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            framing = Some(Framing::Chunked);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let framing = match framing {
        Some(f) => f,
        None if matches!(status, 100..=199 | 204 | 304) => Framing::Length(0),
        None => {
            close = true;
            Framing::UntilClose
        }
    };
    Some((status, framing, close))
}
