//! One HTTP/1.1 connection: decode a request from the stream's buffer, run the
//! handler, write the response, and again (keep-alive, pipelining) until it closes.
//!
//! The decoder (`decoder.rs`) makes every framing decision; this file only drives it:
//! it hands the decoder the unread bytes in place, waits for more when it asks, and
//! maps what it finds to handlers, refusals and timers.
//!
//! Requests on a connection are handled one at a time: the next is decoded only once
//! the current response is finished, so pipelined responses go out in request order;
//! pipelined requests already buffered are served without waiting for the loop. While
//! the answers not yet sent are over the stream's high-water mark, nothing more is
//! decoded or read (a client that pipelines without reading costs a bounded amount of
//! memory); it resumes when they drain.
//!
//! Every wait has a deadline, one timer per connection: the head (`header_timeout`, for
//! a later request from its first byte; `idle_timeout` before that), the body
//! (`body_timeout`), and the client reading the answers (`send_timeout`, extended while
//! bytes go out). A refused request (4xx/5xx from the framing rules) is answered and
//! the connection closed, since what follows it cannot be trusted; the close lingers
//! briefly so that the answer is not lost to a reset.

use super::app::Application;
use super::decoder::{Decoder, Event};
use super::head::{BodyKind, Head};
use super::request::Request;
use super::response::Response;
use super::response_head::write_refusal;
use super::stats::{self, HttpStats, Recorder};
use super::HttpConfig;
use crate::iostream::{IoStream, ReadHandler};
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
    servers.iter().map(|sc| sc.snapshot()).collect()
}

/// This loop's numbers of HTTP server `id`, if it serves here.
pub(crate) fn server_stats_of(lp: &IoLoop, id: ServerId) -> Option<HttpStats> {
    let sc = lp.local::<HttpLoop>().0.borrow().get(&id).cloned()?;
    Some(sc.snapshot())
}

impl ServerConns {
    fn snapshot(&self) -> HttpStats {
        let conns = self.conns.borrow();
        let idle = conns
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .filter(|c| c.idle())
            .count();
        self.stats
            .snapshot(self.accepted.get(), conns.len() as u64, idle as u64)
    }
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
        if c.idle() {
            c.close_after_flush();
        }
    }
}

/// What the connection's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No deadline (a handler is running).
    None,
    /// Waiting for the first byte of the next request (`idle_timeout`).
    Idle,
    /// Waiting for the rest of a head (`header_timeout`).
    Head,
    /// Waiting for the rest of a body (`body_timeout`).
    Body,
    /// Waiting for the client to read (`send_timeout`, extended while bytes go out).
    Send,
    /// Waiting for the handler to finish its response (`handler_timeout`).
    Handler,
}

/// What a streamed response waiting for the client runs (with the response inside).
type DrainWaiter = Box<dyn FnOnce(&IoLoop)>;

pub(crate) struct Conn {
    stream: IoStream,
    registry: Rc<ServerConns>,
    key: Cell<usize>,
    app: Arc<Application>,
    cfg: Arc<HttpConfig>,
    lp: WeakLoop,
    /// When the connection is closed unless it makes progress (`None`: no limit now).
    deadline: Cell<Option<Instant>>,
    phase: Cell<Phase>,
    /// The one timer that enforces `deadline`, re-armed lazily when it fires early,
    /// and when it fires.
    timer: Cell<Option<(TimeoutId, Instant)>>,
    served: Cell<u64>,
    peer: Option<SocketAddr>,
    decoder: RefCell<Decoder>,
    /// The request whose body is being decoded, and whether the connection stays open
    /// after it.
    current: RefCell<Option<(Request, bool)>>,
    /// A request is being handled: its response is not finished.
    busy: Cell<bool>,
    /// `pump` is running (further down this stack).
    pumping: Cell<bool>,
    /// A response finished while pumping: the pump takes the next request.
    want_next: Cell<bool>,
    /// The handler of the current request is running (further down this stack): a
    /// response it drops unfinished is finished, as Tornado finishes a synchronous
    /// handler's; one dropped later was abandoned (500).
    handling: Cell<bool>,

    /// The handler missed its deadline and 503 went out: the late response is ignored.
    timed_out: Cell<bool>,
    /// Part of the current response went out already (streaming).
    streamed: Cell<bool>,
    /// A streamed response waiting for the write buffer to drain (or the client to go).
    drain_waiter: RefCell<Option<DrainWaiter>>,
    /// The current handler returns what decides its response (a `Result`, a future):
    /// a response it drops waits in `parked` for that.
    parking: Cell<bool>,
    parked: RefCell<Option<Response>>,
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
    // The decoder takes body bytes as they come and refuses a head over max_head, so
    // the read buffer holds little more than a head; this is a backstop.
    stream.set_max_buffer_size(cfg.max_head.min(super::MAX_HEAD_LIMIT) + 256 * 1024);
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
        app,
        cfg,
        lp: lp.downgrade(),
        deadline: Cell::new(None),
        phase: Cell::new(Phase::None),
        timer: Cell::new(None),
        served: Cell::new(0),
        decoder: RefCell::new(Decoder::default()),
        current: RefCell::new(None),
        busy: Cell::new(false),
        pumping: Cell::new(false),
        want_next: Cell::new(false),
        handling: Cell::new(false),

        timed_out: Cell::new(false),
        streamed: Cell::new(false),
        drain_waiter: RefCell::new(None),
        parking: Cell::new(false),
        parked: RefCell::new(None),
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
    conn.next_request(lp);
}

impl Drop for Conn {
    /// The connection's timer and registry entry go with it. (Not in the stream's close
    /// callback: by then the connection is usually gone, and its entries would stay:
    /// the registry's `Weak` would even keep its allocation.)
    fn drop(&mut self) {
        self.registry.conns.borrow_mut().try_remove(self.key.get());
        if let Some(lp) = self.lp.upgrade() {
            if let Some((id, _)) = self.timer.take() {
                lp.remove_timeout(id);
            }
        }
    }
}

/// The connection waits for more bytes by itself (no closure allocated per wait).
impl ReadHandler for Conn {
    fn on_read(self: Rc<Self>, lp: &IoLoop, _: &IoStream, more: io::Result<Vec<u8>>) {
        match more {
            Ok(_) => self.pump(lp),
            // End of file or an error: done, once what was written has gone out (a
            // request cut short gets no answer: there is nobody to read it).
            Err(_) => self.close_after_flush(),
        }
    }
}

/// How a turn of decoding ended.
enum Turn {
    /// A request went to its handler.
    Dispatched,
    /// Waiting for bytes, for the answers to drain, or closing.
    Stopped,
}

impl Conn {
    /// The loop's cached time (for deadlines and the Date header).
    pub(crate) fn now(&self) -> Instant {
        self.lp.upgrade().map_or_else(Instant::now, |lp| lp.time())
    }

    /// Closes the connection unless it makes progress within `after`. Setting a later
    /// deadline costs no timer operation: one timer per connection checks it when it
    /// fires and re-arms itself for whatever is left. (An earlier one re-arms it.)
    fn set_timer(self: &Rc<Self>, lp: &IoLoop, phase: Phase, after: Duration) {
        let deadline = lp.time() + after;
        self.deadline.set(Some(deadline));
        self.phase.set(phase);
        match self.timer.get() {
            None => self.arm(lp, after),
            Some((id, at)) if at > deadline => {
                lp.remove_timeout(id);
                self.arm(lp, after);
            }
            Some(_) => {}
        }
    }

    fn arm(self: &Rc<Self>, lp: &IoLoop, after: Duration) {
        let weak = Rc::downgrade(self);
        let id = lp.call_later(after, move |lp| {
            let Some(c) = weak.upgrade() else { return };
            c.timer.set(None);
            match c.effective_deadline() {
                Some(d) if lp.time() >= d && c.phase.get() == Phase::Handler => {
                    c.handler_missed_deadline(lp)
                }
                Some(d) if lp.time() >= d => c.stream.abort(),
                Some(d) => c.arm(lp, d - lp.time()),
                None => {}
            }
        });
        self.timer.set(Some((id, lp.time() + after)));
    }

    /// The deadline, with the send deadline pushed back by progress: a connection
    /// waiting for its client to read is closed `send_timeout` after bytes last went
    /// out (or after it began waiting, if none have since).
    fn effective_deadline(&self) -> Option<Instant> {
        let d = self.deadline.get()?;
        if self.phase.get() != Phase::Send {
            return Some(d);
        }
        Some(match self.stream.last_sent_at() {
            Some(t) => d.max(t + self.cfg.send_timeout),
            None => d,
        })
    }

    fn clear_timer(&self) {
        self.deadline.set(None);
        self.phase.set(Phase::None);
    }

    /// True once the server is shutting down gracefully: responses close their
    /// connection.
    pub(crate) fn draining(&self) -> bool {
        self.registry.draining.get()
    }

    /// Waiting for a request none of which has arrived.
    fn idle(&self) -> bool {
        !self.busy.get()
            && self.current.borrow().is_none()
            && self.decoder.borrow().between_requests()
            && self.stream.read_buffer_len() == 0
    }

    /// Takes the next request: at the start, and after each response finished.
    fn next_request(self: &Rc<Self>, lp: &IoLoop) {
        self.busy.set(false);
        if self.draining() && self.idle() {
            return self.close_after_flush();
        }
        if self.served.get() == 0 {
            self.set_timer(lp, Phase::Head, self.cfg.header_timeout);
        } else {
            self.set_timer(lp, Phase::Idle, self.cfg.idle_timeout);
        }
        if self.pumping.get() {
            // A response finished inside the pump below: it takes the next request.
            self.want_next.set(true);
            return;
        }
        self.pump(lp);
    }

    /// Handles requests while they are buffered (pipelined requests whose responses
    /// finish at once go round this loop, not through a read each), then waits: for
    /// bytes, or for the answers to drain.
    fn pump(self: &Rc<Self>, lp: &IoLoop) {
        self.pumping.set(true);
        loop {
            self.want_next.set(false);
            if self.stream.over_high_water() {
                // The client is not reading its answers: read nothing more until they
                // drain (TCP then slows the client down), and give up if they don't.
                self.set_timer(lp, Phase::Send, self.cfg.send_timeout);
                let me = self.clone();
                self.stream.on_drain(move |lp, _| me.pump(lp));
                break;
            }
            match self.decode(lp) {
                Turn::Dispatched if self.want_next.get() => continue,
                _ => break, // the response is not finished yet, or waiting
            }
        }
        self.want_next.set(false);
        self.pumping.set(false);
    }

    fn wait_for_bytes(self: &Rc<Self>) -> Turn {
        if self
            .stream
            .read_more_by(self.clone() as Rc<dyn ReadHandler>)
            .is_err()
        {
            self.stream.abort();
        }
        Turn::Stopped
    }

    /// Decodes from the stream's buffer until a request is dispatched, more bytes are
    /// needed, or the request is refused.
    fn decode(self: &Rc<Self>, lp: &IoLoop) -> Turn {
        let mut slot = None;
        loop {
            // Between requests with nothing buffered (keep-alive, after each answer):
            // straight to waiting.
            let unread = self.stream.read_buffer_len();
            let between = self.decoder.borrow().between_requests();
            if unread == 0 && between {
                return self.wait_for_bytes();
            }
            if between {
                // A request's latency counts from the first byte of its head.
                self.started.set(self.stream.unread_since());
            }
            let (n, ev) = self.stream.with_unread(lp, |buf| {
                let (n, ev) = self.decoder.borrow_mut().decode(buf, &self.cfg, &mut slot);
                if let Event::Body(r) = &ev {
                    if let Some((req, _)) = self.current.borrow_mut().as_mut() {
                        req.extra_mut().body.extend_from_slice(&buf[r.clone()]);
                    }
                }
                (n, (n, ev))
            });
            if matches!(ev, Event::Head) {
                self.registry.stats.request(n);
            } else if n > 0 {
                self.registry.stats.body_bytes(n);
            }
            match ev {
                Event::NeedMore => {
                    // Part of a head is here: after a request, the next head is timed
                    // from its first byte (empty lines before it do not count).
                    if self.phase.get() == Phase::Idle
                        && (self.stream.read_buffer_len() > 0
                            || !self.decoder.borrow().between_requests())
                    {
                        self.set_timer(lp, Phase::Head, self.cfg.header_timeout);
                    }
                    return self.wait_for_bytes();
                }
                Event::Head => {
                    let Some(Head {
                        mut req,
                        body,
                        keep_alive,
                        expect_continue,
                    }) = slot.take()
                    else {
                        self.stream.abort(); // (a head always comes with its event)
                        return Turn::Stopped;
                    };
                    req.peer = self.peer;
                    if self.cfg.xheaders {
                        req.trust_xheaders();
                    }
                    if body == BodyKind::None {
                        self.dispatch(lp, req, keep_alive);
                        return Turn::Dispatched;
                    }
                    if expect_continue {
                        let _ = self.stream.write_with(|out| {
                            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n")
                        });
                    }
                    self.set_timer(lp, Phase::Body, self.cfg.body_timeout);
                    *self.current.borrow_mut() = Some((req, keep_alive));
                }
                Event::Body(_) => {}
                Event::End => {
                    let Some((req, keep_alive)) = self.current.borrow_mut().take() else {
                        self.stream.abort(); // (the decoder ends only what it began)
                        return Turn::Stopped;
                    };
                    self.dispatch(lp, req, keep_alive);
                    return Turn::Dispatched;
                }
                Event::Error(code) => {
                    self.refuse(lp, code);
                    return Turn::Stopped;
                }
            }
        }
    }

    /// Routes the request and runs its handler.
    fn dispatch(self: &Rc<Self>, lp: &IoLoop, mut req: Request, keep_alive: bool) {
        let keep_alive = keep_alive && self.cfg.keep_alive;
        self.busy.set(true);
        self.clear_timer();
        let mut params = Vec::new();
        let found = self.app.find(req.path(), &mut params);
        let head = req.is_head();
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
        // The handler's deadline is the connection's one timer's (no timer per request:
        // setting a later deadline than the one armed costs no timer operation).
        match self.cfg.handler_timeout {
            Some(limit) => self.set_timer(lp, Phase::Handler, limit),
            None => self.clear_timer(),
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

    /// The handler did not finish its response within `handler_timeout`: 503 and close
    /// (a response already streaming is cut off); the late response is ignored.
    fn handler_missed_deadline(self: &Rc<Self>, lp: &IoLoop) {
        let limit = self.cfg.handler_timeout.unwrap_or_default();
        self.clear_timer();
        self.timed_out.set(true);
        if self.streamed.get() {
            // Part of the answer is out: all that can be done is to cut it off.
            log::warn!("coreloop: a streamed HTTP response missed its {limit:?} deadline");
            self.stream.abort();
        } else {
            log::warn!("coreloop: an HTTP handler missed its {limit:?} deadline: 503");
            self.refuse(lp, 503);
        }
    }

    /// The response of the current request is done with (finished, or cut off): its
    /// deadline goes. False if the deadline already answered for it.
    fn end_of_response(&self) -> bool {
        if self.phase.get() == Phase::Handler {
            self.clear_timer();
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
            self.next_request(&lp);
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
        self.stream.abort();
    }

    /// Room left in the write buffer before its limit.
    pub(crate) fn write_room(&self) -> usize {
        self.stream.write_room()
    }

    /// Whether a response dropped now waits for its handler's outcome.
    pub(crate) fn parking(&self) -> bool {
        self.parking.get()
    }

    pub(crate) fn set_parking(&self, on: bool) {
        self.parking.set(on);
    }

    /// Keeps a response its handler dropped until the handler's outcome decides it.
    pub(crate) fn park(&self, r: Response) {
        let old = self.parked.borrow_mut().replace(r);
        drop(old);
    }

    pub(crate) fn take_parked(&self) -> Option<Response> {
        self.parked.borrow_mut().take()
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

    /// Closes once everything written has gone out, or after `send_timeout` without
    /// progress if the client does not read it.
    fn close_after_flush(self: &Rc<Self>) {
        if let Some(lp) = self.lp.upgrade() {
            self.set_timer(&lp, Phase::Send, self.cfg.send_timeout);
        }
        // The callback keeps the connection, and so its timer, until the stream
        // closes one way or the other (nothing else may hold it by now).
        let me = self.clone();
        self.stream.flush().then(move |_, s, _| {
            s.abort();
            drop(me);
        });
    }

    /// Answers a request whose framing cannot be trusted, then closes: shut down the
    /// writing side once the answer is out and drain what the client still sends for a
    /// moment, so that closing with unread data does not reset the connection and
    /// destroy the answer in flight.
    fn refuse(self: &Rc<Self>, lp: &IoLoop, code: u16) {
        self.clear_timer();
        self.registry.stats.refused(code);
        let now = lp.time();
        if self
            .stream
            .write_with(|out| write_refusal(out, code, now))
            .is_err()
        {
            return;
        }
        self.stream.shutdown_write();
        let s = self.stream.clone();
        lp.call_later(LINGER, move |_| s.abort());
        // Discard what the client still sends until it closes (bounded by the timer),
        // then close once the answers queued before the refusal have gone out: they
        // may still wait for a send to finish (on io_uring they usually do).
        fn drain(s: &IoStream) {
            s.read_some(64 * 1024).then(|_, s, r| match r {
                Ok(got) if !got.is_empty() => drain(s),
                _ => {
                    s.close(); // graceful: what is written still goes out
                }
            });
        }
        let s = self.stream.clone();
        // A read may be pending (this runs inside one's callback); start after it.
        lp.add_callback(move |_| drain(&s));
    }
}
