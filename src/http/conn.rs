//! One HTTP/1.1 connection: read a head, read its body, run the handler, write the
//! response, and again (keep-alive, pipelining) until it closes.
//!
//! Requests on a connection are handled one at a time: the next head is read only once
//! the current response is finished, so pipelined responses go out in request order;
//! pipelined requests already buffered are served without waiting for the loop.
//! A refused request (4xx/5xx from the framing rules) is answered and the connection
//! closed, since what follows it cannot be trusted; the close lingers briefly so that
//! the answer is not lost to a reset.

use super::app::Application;
use super::request::{parse_chunk_size, parse_head, BodyKind, Head, Refused, Request};
use super::response::{reason, Response};
use super::stats::{self, HttpStats, Recorder};
use super::HttpConfig;
use crate::iostream::{IoStream, ReadHandler, StreamError};
use crate::net::ServerId;
use crate::reactor::{panic_message, IoLoop, TimeoutId, WeakLoop};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(2);

/// The connections of one HTTP server on one loop (for graceful shutdown), and what it
/// records here.
#[derive(Default)]
pub(crate) struct ServerConns {
    draining: Cell<bool>,
    conns: std::cell::RefCell<slab::Slab<std::rc::Weak<Conn>>>,
    /// What this server records on this loop.
    pub(crate) stats: Rc<Recorder>,
    /// Connections accepted (or handed over) on this loop.
    accepted: Cell<u64>,
}

/// This loop's numbers of every HTTP server it serves.
pub(crate) fn server_stats(lp: &IoLoop) -> Vec<HttpStats> {
    let servers: Vec<Rc<ServerConns>> = lp
        .local::<HttpLoop>()
        .0
        .borrow()
        .values()
        .cloned()
        .collect();
    servers
        .iter()
        .map(|sc| {
            let conns = sc.conns.borrow();
            let idle = conns
                .iter()
                .filter_map(|(_, w)| w.upgrade())
                .filter(|c| c.idle.get())
                .count();
            sc.stats
                .snapshot(sc.accepted.get(), conns.len() as u64, idle as u64)
        })
        .collect()
}

/// Names server `id`'s numbers on this loop (by the address it listens on).
pub(crate) fn name_server(lp: &IoLoop, id: ServerId, name: String) {
    *lp.local::<HttpLoop>().server(id).stats.server.borrow_mut() = name;
}

/// Every HTTP server's connections on this loop, by server id.
#[derive(Default)]
pub(crate) struct HttpLoop(
    std::cell::RefCell<std::collections::HashMap<ServerId, Rc<ServerConns>>>,
);

impl HttpLoop {
    fn server(&self, id: ServerId) -> Rc<ServerConns> {
        self.0.borrow_mut().entry(id).or_default().clone()
    }
}

/// Starts the graceful shutdown of server `id` on this loop: connections waiting for
/// a request close now; the others close once their response has gone out.
pub(crate) fn drain(lp: &IoLoop, id: ServerId) {
    let sc = lp.local::<HttpLoop>().server(id);
    sc.draining.set(true);
    let conns: Vec<Rc<Conn>> = sc
        .conns
        .borrow()
        .iter()
        .filter_map(|(_, w)| w.upgrade())
        .collect();
    for c in conns {
        if c.idle.get() && c.stream.read_buffer_len() == 0 {
            c.close_after_flush();
        }
    }
}

/// What a streamed response waiting for the client runs (with the response inside).
type DrainWaiter = Box<dyn FnOnce(&IoLoop)>;

pub(crate) struct Conn {
    stream: IoStream,
    registry: Rc<ServerConns>,
    key: Cell<usize>,
    /// Waiting for the next request head.
    idle: Cell<bool>,
    app: Arc<Application>,
    cfg: Arc<HttpConfig>,
    lp: WeakLoop,
    /// When the connection is closed unless it makes progress (`None`: no limit now).
    deadline: Cell<Option<Instant>>,
    /// The one timer that enforces `deadline`, re-armed lazily when it fires early.
    timer: Cell<Option<TimeoutId>>,
    served: Cell<u64>,
    peer: Option<SocketAddr>,
    /// `read_head` is running its loop (further down this stack).
    reading_heads: Cell<bool>,
    /// Asked for the next head while `reading_heads`: the loop takes it.
    want_head: Cell<bool>,
    /// The handler of the current request is running (further down this stack): a
    /// response it drops unfinished is finished, as Tornado finishes a synchronous
    /// handler's; one dropped later was abandoned (500).
    handling: Cell<bool>,
    /// The current request's handler deadline (`HttpConfig::handler_timeout`).
    handler_timer: Cell<Option<TimeoutId>>,
    /// The handler missed its deadline and 503 went out: the late response is ignored.
    timed_out: Cell<bool>,
    /// Part of the current response went out already (streaming).
    streamed: Cell<bool>,
    /// A streamed response waiting for the write buffer to drain (or the client to go).
    drain_waiter: RefCell<Option<DrainWaiter>>,
    /// The current request's route (by index; `None`: no route matched), and when the
    /// first byte of its head arrived.
    route: Cell<Option<usize>>,
    started: Cell<Instant>,
}

/// Serves HTTP for server `id` on an accepted stream.
pub(crate) fn serve(
    lp: &IoLoop,
    id: ServerId,
    stream: IoStream,
    app: Arc<Application>,
    cfg: Arc<HttpConfig>,
) {
    // The connection decides when to close: a client that half-closes after its request
    // still gets its answer.
    stream.set_close_on_eof(false);
    stream.set_max_buffer_size(cfg.max_body.max(cfg.max_head) + 64 * 1024);
    let registry = lp.local::<HttpLoop>().server(id);
    registry.accepted.set(registry.accepted.get() + 1);
    if registry.stats.routes_unset() {
        registry.stats.set_routes(app.patterns().to_vec());
    }
    let conn = Rc::new(Conn {
        peer: stream.peer_addr().ok(),
        stream,
        registry,
        key: Cell::new(usize::MAX),
        idle: Cell::new(true),
        app,
        cfg,
        lp: lp.downgrade(),
        deadline: Cell::new(None),
        timer: Cell::new(None),
        served: Cell::new(0),
        reading_heads: Cell::new(false),
        want_head: Cell::new(false),
        handling: Cell::new(false),
        handler_timer: Cell::new(None),
        timed_out: Cell::new(false),
        streamed: Cell::new(false),
        drain_waiter: RefCell::new(None),
        route: Cell::new(None),
        started: Cell::new(lp.time()),
    });
    // A response waiting for the buffer to drain learns the client went away.
    let weak = Rc::downgrade(&conn);
    conn.stream.set_close_callback(move |lp, _| {
        if let Some(c) = weak.upgrade() {
            c.wake_drain_waiter(lp);
        }
    });
    conn.key.set(
        conn.registry
            .conns
            .borrow_mut()
            .insert(Rc::downgrade(&conn)),
    );
    conn.read_head(lp);
}

impl Drop for Conn {
    /// The connection's timer and registry entry go with it. (Not in the stream's close
    /// callback: by then the connection is usually gone, and its entries would stay:
    /// the registry's `Weak` would even keep its allocation.)
    fn drop(&mut self) {
        self.registry.conns.borrow_mut().try_remove(self.key.get());
        if let Some(lp) = self.lp.upgrade() {
            for id in [self.timer.take(), self.handler_timer.take()]
                .into_iter()
                .flatten()
            {
                lp.remove_timeout(id);
            }
        }
    }
}

/// The connection reads each request head by itself (no closure allocated per request).
impl ReadHandler for Conn {
    fn on_read(self: Rc<Self>, lp: &IoLoop, _: &IoStream, head: io::Result<Vec<u8>>) {
        self.head_loop(lp, Some(head));
    }
}

impl Conn {
    /// The loop's cached time (for deadlines and the Date header).
    pub(crate) fn now(&self) -> Instant {
        self.lp.upgrade().map_or_else(Instant::now, |lp| lp.time())
    }

    /// Closes the connection unless it makes progress within `after`. Setting a deadline
    /// costs no timer operation: one timer per connection checks it when it fires and
    /// re-arms itself for whatever is left.
    fn set_timer(self: &Rc<Self>, lp: &IoLoop, after: Duration) {
        let deadline = lp.time() + after;
        self.deadline.set(Some(deadline));
        if self.timer.get().is_none() {
            self.arm(lp, after);
        }
    }

    fn arm(self: &Rc<Self>, lp: &IoLoop, after: Duration) {
        let weak = Rc::downgrade(self);
        let id = lp.call_later(after, move |lp| {
            let Some(c) = weak.upgrade() else { return };
            c.timer.set(None);
            match c.deadline.get() {
                Some(d) if lp.time() >= d => c.stream.close(),
                Some(d) => c.arm(lp, d - lp.time()),
                None => {}
            }
        });
        self.timer.set(Some(id));
    }

    fn clear_timer(&self) {
        self.deadline.set(None);
    }

    /// True once the server is shutting down gracefully: responses close their
    /// connection.
    pub(crate) fn draining(&self) -> bool {
        self.registry.draining.get()
    }

    fn read_head(self: &Rc<Self>, lp: &IoLoop) {
        if self.draining() && self.stream.read_buffer_len() == 0 {
            return self.close_after_flush();
        }
        self.idle.set(true);
        let wait = if self.served.get() == 0 {
            self.cfg.header_timeout
        } else {
            self.cfg.idle_timeout
        };
        self.set_timer(lp, wait);
        if self.reading_heads.get() {
            // A response finished inside the loop below: it takes the next head.
            self.want_head.set(true);
            return;
        }
        self.head_loop(lp, None);
    }

    /// Handles heads while they are buffered (pipelined requests whose responses finish
    /// at once go round this loop, not through a pending read each), starting with
    /// `first` if a read delivered one; then waits for the next with a read.
    fn head_loop(self: &Rc<Self>, lp: &IoLoop, first: Option<io::Result<Vec<u8>>>) {
        self.reading_heads.set(true);
        let mut next = first;
        loop {
            let head = match next.take() {
                Some(head) => head,
                None => match self
                    .stream
                    .take_until_now(lp, b"\r\n\r\n", self.cfg.max_head)
                {
                    Some(head) => Ok(head),
                    None => {
                        let r = self.stream.read_until_within_by(
                            b"\r\n\r\n",
                            self.cfg.max_head,
                            self.clone() as Rc<dyn ReadHandler>,
                        );
                        if r.is_err() {
                            self.stream.close();
                        }
                        break;
                    }
                },
            };
            self.want_head.set(false);
            self.on_head_bytes(lp, head);
            if !self.want_head.get() {
                break; // the response is not finished yet, or the connection closes
            }
        }
        self.want_head.set(false);
        self.reading_heads.set(false);
    }

    fn on_head_bytes(self: &Rc<Self>, lp: &IoLoop, head: io::Result<Vec<u8>>) {
        self.clear_timer();
        self.idle.set(false);
        match head {
            Ok(head) => {
                self.started.set(self.stream.unread_since());
                self.registry.stats.request(head.len());
                match parse_head(head, &self.cfg) {
                    Ok(h) => self.on_head(lp, h),
                    Err(Refused(code)) => self.refuse(lp, code),
                }
            }
            Err(e) if matches!(StreamError::of(&e), Some(StreamError::TooLong { .. })) => {
                // Over the head limit: a request line that alone is too long is 414,
                // otherwise the header section is: 431.
                let start = self.stream.peek(self.cfg.max_uri + 32);
                let line_fits = memchr::memmem::find(&start, b"\r\n").is_some();
                self.refuse(lp, if line_fits { 431 } else { 414 });
            }
            // End of file or an error between requests: done, once what was written has
            // gone out.
            Err(_) => self.close_after_flush(),
        }
    }

    fn on_head(self: &Rc<Self>, lp: &IoLoop, h: Head) {
        let Head {
            mut req,
            body,
            keep_alive,
            expect_continue,
        } = h;
        req.peer = self.peer;
        if expect_continue {
            let _ = self.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        match body {
            BodyKind::None => self.dispatch(lp, req, keep_alive),
            BodyKind::Length(n) => {
                self.set_timer(lp, self.cfg.body_timeout);
                let me = self.clone();
                let r = self.stream.read_bytes(n as usize, move |lp, _, data| {
                    me.clear_timer();
                    match data {
                        Ok(data) => {
                            me.registry.stats.body_bytes(data.len());
                            req.extra_mut().body = data;
                            me.dispatch(lp, req, keep_alive);
                        }
                        Err(_) => me.stream.close(),
                    }
                });
                if r.is_err() {
                    self.refuse(lp, 413);
                }
            }
            BodyKind::Chunked => {
                self.set_timer(lp, self.cfg.body_timeout);
                self.read_chunk(req, keep_alive);
            }
        }
    }

    /// Reads one chunk of a chunked body (then the next, then the trailers).
    fn read_chunk(self: &Rc<Self>, mut req: Request, keep_alive: bool) {
        let me = self.clone();
        let r = self
            .stream
            .read_until_within(b"\r\n", 1024, move |lp, s, line| {
                let Ok(line) = line else {
                    return me.refuse_or_close(lp);
                };
                let Some(size) = parse_chunk_size(&line) else {
                    return me.refuse(lp, 400);
                };
                if size == 0 {
                    return me.read_trailers(req, keep_alive, 0);
                }
                if req.body().len() as u64 + size > me.cfg.max_body as u64 {
                    return me.refuse(lp, 413);
                }
                let me2 = me.clone();
                let r = s.read_bytes(size as usize + 2, move |lp, _, data| {
                    let Ok(data) = data else {
                        return me2.refuse_or_close(lp);
                    };
                    if !data.ends_with(b"\r\n") {
                        return me2.refuse(lp, 400);
                    }
                    req.extra_mut()
                        .body
                        .extend_from_slice(&data[..data.len() - 2]);
                    me2.read_chunk(req, keep_alive);
                });
                if r.is_err() {
                    me.refuse(lp, 413);
                }
            });
        if r.is_err() {
            self.stream.close();
        }
    }

    /// Reads (and drops) trailer fields up to the blank line, then dispatches.
    fn read_trailers(self: &Rc<Self>, req: Request, keep_alive: bool, seen: usize) {
        let me = self.clone();
        let max = self.cfg.max_head.saturating_sub(seen).max(2);
        let r = self
            .stream
            .read_until_within(b"\r\n", max, move |lp, _, line| match line {
                Ok(line) if line == b"\r\n" => {
                    me.clear_timer();
                    me.dispatch(lp, req, keep_alive);
                }
                Ok(line) => me.read_trailers(req, keep_alive, seen + line.len()),
                Err(e) if matches!(StreamError::of(&e), Some(StreamError::TooLong { .. })) => {
                    me.refuse(lp, 431)
                }
                Err(_) => me.stream.close(),
            });
        if r.is_err() {
            self.stream.close();
        }
    }

    fn refuse_or_close(self: &Rc<Self>, lp: &IoLoop) {
        if self.stream.closed() {
            return;
        }
        self.refuse(lp, 400);
    }

    /// Routes the request and runs its handler.
    fn dispatch(self: &Rc<Self>, lp: &IoLoop, mut req: Request, keep_alive: bool) {
        let mut params = Vec::new();
        let found = self.app.find(req.path(), &mut params);
        let head = req.method() == "HEAD";
        self.route.set(found.map(|(i, _)| i));
        let Some((index, route)) = found else {
            let mut resp = Response::new(self.clone(), req.minor_version, keep_alive, head);
            resp.set_status(404);
            resp.write("404: Not Found");
            return resp.finish();
        };
        let Some((handler, via_get)) = route.handler(req.method()) else {
            let mut resp = Response::new(self.clone(), req.minor_version, keep_alive, head);
            resp.set_status(405);
            resp.set_header("Allow", route.allowed());
            resp.write("405: Method Not Allowed");
            return resp.finish();
        };
        if !params.is_empty() {
            req.extra_mut().params = params;
        }
        let resp = Response::new(self.clone(), req.minor_version, keep_alive, head || via_get);
        if let Some(pattern) = self.app.patterns().get(index) {
            lp.set_activity(pattern);
        }
        if let Some(limit) = self.cfg.handler_timeout {
            self.arm_handler_deadline(lp, limit);
        }
        self.handling.set(true);
        let r = catch_unwind(AssertUnwindSafe(|| handler(lp, req, resp)));
        self.handling.set(false);
        if let Err(p) = r {
            // The response was dropped while unwinding and has answered 500.
            log::error!("coreloop: HTTP handler panicked: {}", panic_message(&*p));
        }
    }

    /// True while the current request's handler is running (further down this stack).
    pub(crate) fn in_handler(&self) -> bool {
        self.handling.get()
    }

    /// Answers 503 and closes if the current response is not finished within `limit`.
    fn arm_handler_deadline(self: &Rc<Self>, lp: &IoLoop, limit: Duration) {
        let weak = Rc::downgrade(self);
        let id = lp.call_later(limit, move |lp| {
            let Some(c) = weak.upgrade() else { return };
            c.handler_timer.set(None);
            c.timed_out.set(true);
            if c.streamed.get() {
                // Part of the answer is out: all that can be done is to cut it off.
                log::warn!("coreloop: a streamed HTTP response missed its {limit:?} deadline");
                c.stream.close();
            } else {
                log::warn!("coreloop: an HTTP handler missed its {limit:?} deadline: 503");
                c.refuse(lp, 503);
            }
        });
        self.handler_timer.set(Some(id));
    }

    /// The response of the current request is done with (finished, or cut off): its
    /// deadline goes. False if the deadline already answered for it.
    fn end_of_response(&self) -> bool {
        if let (Some(id), Some(lp)) = (self.handler_timer.take(), self.lp.upgrade()) {
            lp.remove_timeout(id);
        }
        self.streamed.set(false);
        !self.timed_out.get()
    }

    /// Called by a finished response: writes its rest through `f` (straight into the
    /// stream's buffer; `f` gets the loop's time for the Date header), then reads the
    /// next request or closes.
    pub(crate) fn respond(
        self: Rc<Self>,
        status: u16,
        f: impl FnOnce(&mut Vec<u8>, Instant),
        close: bool,
    ) {
        if !self.end_of_response() {
            return; // 503 went out at the handler's deadline; the connection is closing
        }
        let lp = self.lp.upgrade();
        let now = lp.as_ref().map_or_else(Instant::now, IoLoop::time);
        let mut written = 0;
        let r = self.stream.write_with(|out| {
            let before = out.len();
            f(out, now);
            written = out.len() - before;
        });
        if r.is_err() {
            return; // the client went away meanwhile
        }
        self.registry.stats.sent(written);
        if let Some(lp) = &lp {
            stats::response_end(
                lp,
                &self.registry.stats,
                self.route.get(),
                status,
                self.started.get(),
            );
        }
        self.served.set(self.served.get() + 1);
        if close {
            self.close_after_flush();
        } else if let Some(lp) = lp {
            self.read_head(&lp);
        }
    }

    /// Writes part of a streamed response: an error if the client has gone, the
    /// handler's deadline answered already, or the write buffer is over its limit (then
    /// the connection closes).
    pub(crate) fn write_part(&self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        if self.timed_out.get() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handler's deadline passed: 503 was answered",
            ));
        }
        self.streamed.set(true);
        let mut written = 0;
        let r = self.stream.write_with(|out| {
            let before = out.len();
            f(out);
            written = out.len() - before;
        });
        self.registry.stats.sent(written);
        r
    }

    /// Closes at once (a streamed response that cannot be completed).
    pub(crate) fn abort(&self) {
        self.end_of_response();
        self.stream.close();
    }

    /// The client has gone (or the connection is closing): nothing more can reach it.
    pub(crate) fn client_gone(&self) -> bool {
        self.stream.closed() || self.timed_out.get()
    }

    /// More than the stream's high-water mark is waiting to be sent.
    pub(crate) fn over_high_water(&self) -> bool {
        self.stream.over_high_water()
    }

    /// Runs `f` once the write buffer has drained below half its high-water mark, or
    /// the client has gone, whichever comes first.
    pub(crate) fn when_drained(self: &Rc<Self>, f: DrainWaiter) {
        *self.drain_waiter.borrow_mut() = Some(f);
        if self.client_gone() {
            if let Some(lp) = self.lp.upgrade() {
                let me = self.clone();
                lp.add_callback(move |lp| me.wake_drain_waiter(lp));
            }
            return;
        }
        let weak = Rc::downgrade(self);
        self.stream.on_drain(move |lp, _| {
            if let Some(c) = weak.upgrade() {
                c.wake_drain_waiter(lp);
            }
        });
    }

    fn wake_drain_waiter(&self, lp: &IoLoop) {
        let f = self.drain_waiter.borrow_mut().take();
        if let Some(f) = f {
            f(lp);
        }
    }

    fn close_after_flush(&self) {
        if self.stream.write_then(b"", |_, s| s.close()).is_err() {
            self.stream.close();
        }
    }

    /// Answers a request whose framing cannot be trusted, then closes: shut down the
    /// writing side once the answer is out and drain what the client still sends for a
    /// moment, so that closing with unread data does not reset the connection and
    /// destroy the answer in flight.
    fn refuse(self: &Rc<Self>, lp: &IoLoop, code: u16) {
        self.clear_timer();
        self.registry.stats.refused(code);
        let body = format!("{code}: {}", reason(code));
        let mut out = Vec::with_capacity(160 + body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {code} {}\r\nServer: coreloop\r\n", reason(code)).as_bytes(),
        );
        super::date::append_date_line(&mut out, lp.time());
        out.extend_from_slice(
            format!(
                "Content-Type: text/plain; charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        if self.stream.write(&out).is_err() {
            return;
        }
        self.stream.shutdown_write();
        let s = self.stream.clone();
        lp.call_later(LINGER, move |_| s.close());
        // Discard what the client still sends until it closes (bounded by the timer).
        fn drain(s: &IoStream) {
            let _ = s.read_bytes_partial(64 * 1024, |_, s, r| match r {
                Ok(_) => drain(s),
                Err(_) => s.close(),
            });
        }
        let s = self.stream.clone();
        // A read may be pending (this runs inside one's callback); start after it.
        lp.add_callback(move |_| drain(&s));
    }
}
