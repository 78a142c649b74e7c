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
//! The connection is in one [`Stage`] at a time, and every stage that waits has a
//! deadline, kept by one timer per connection (no timer operation per request): the
//! head (`header_timeout`, for a later request from its first byte; `idle_timeout`
//! before that), the body (`body_timeout`), the handler's response (`handler_timeout`,
//! then 503), and the client reading the answers (`send_timeout`, extended while bytes
//! go out). A refused request (4xx/5xx from the framing rules) is answered and
//! the connection closed, since what follows it cannot be trusted; the close lingers
//! briefly so that the answer is not lost to a reset.

use super::app::Application;
use super::decoder::{Decoder, Event};
use super::head::{BodyKind, Head};
use super::request::Request;
use super::response::{Dropped, Exchange, Parts, Response};
use super::response_head::Heads;
use super::server_conns::ServerConns;
use super::stats;
use super::HttpConfig;
use crate::iostream::{IoStream, ReadHandler};
use crate::net::ServerId;
use crate::reactor::{nanos, panic_message, IoLoop, TimeoutId, WeakLoop};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(2);

/// Where a connection is in the cycle of its requests. Every change goes through
/// [`Conn::enter`], and the connection's deadline follows from it (one timer per
/// connection enforces whichever applies):
///
/// ```text
///   Idle ──first byte──▶ Head ──head with a body──▶ Body ──end──┐
///    ▲                    │                                      ▼
///    │                    └──────────head without body─────▶ Handling ──handler returns──▶ Responding
///    │                                                           │                            │
///    └─────────────────── response finished ◀───────────────────┴────────────────────────────┘
///   any reading stage ──answers over the high-water mark──▶ Paused ──drained──▶ (decode again)
///   a response with `Connection: close`, end of file, a drain ──▶ Closing
///   a framing error, the handler's deadline (503) ──▶ Refused
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the first byte of a request (`idle_timeout`; for the connection's
    /// first request, `header_timeout` from when it opened).
    Idle,
    /// Part of a head has come (`header_timeout`, from its first byte).
    Head,
    /// The head is read and its body is coming (`body_timeout`).
    Body,
    /// The handler is running, further down this stack (under the pump), and its
    /// response is not finished (`handler_timeout`). A response it drops is finished,
    /// as Tornado finishes a synchronous handler's. `streamed`: part of the response
    /// has gone out.
    Handling { streamed: bool },
    /// The handler has returned and its response is not finished yet
    /// (`handler_timeout`); dropped now, it was abandoned (500).
    Responding { streamed: bool },
    /// The answers not yet sent are over the high-water mark: nothing more is decoded
    /// until they drain (`send_timeout`, extended while bytes go out).
    Paused,
    /// The last answer is written; the connection closes once it has gone out
    /// (`send_timeout`, extended while bytes go out).
    Closing,
    /// The connection answered for itself and closes after a short linger: a request
    /// whose framing cannot be trusted, or a handler that missed its deadline (503;
    /// its late response is ignored).
    Refused,
}

impl Stage {
    /// A response is being made (the handler runs, or has it).
    fn responding(self) -> bool {
        matches!(self, Stage::Handling { .. } | Stage::Responding { .. })
    }
}

/// What becomes of a response its handler dropped while the handler's outcome is
/// awaited (a `Result`, a future).
enum Parked {
    /// The handler's outcome is not awaited: a dropped response is finished or
    /// abandoned.
    No,
    /// Awaited: a response dropped now waits here.
    Awaited,
    /// Awaited, and the handler dropped this response meanwhile.
    Holding(Response),
}

/// What a streamed response waiting for the client runs (with the response inside).
type DrainWaiter = Box<dyn FnOnce(&IoLoop)>;

pub(crate) struct Conn {
    /// Itself, for the closures that must not keep it alive (its timer's).
    me: Weak<Conn>,
    stream: IoStream,
    registry: Rc<ServerConns>,
    key: Cell<usize>,
    app: Arc<Application>,
    cfg: Arc<HttpConfig>,
    lp: WeakLoop,
    stage: Cell<Stage>,
    /// The loop's `Date` line and response heads.
    heads: Rc<Heads>,
    /// The parts of the response being made (one at a time), kept from one to the next.
    parts: RefCell<Parts>,
    /// The stage changed since the connection last waited: its deadline is to be set.
    deadline_due: Cell<bool>,
    /// When the stage began (the loop's clock, ns), and how long it may last (`None`:
    /// no limit): past that, the connection is closed (in a responding stage, answered
    /// 503).
    since: Cell<u64>,
    limit: Cell<Option<Duration>>,
    /// The one timer that enforces the deadline, and when it fires (the loop's clock,
    /// ns): never later than the deadline, re-armed lazily when it fires early, and
    /// when a stage has a shorter limit than the one before.
    timer: Cell<Option<(TimeoutId, u64)>>,
    served: Cell<u64>,
    peer: Option<SocketAddr>,
    decoder: RefCell<Decoder>,
    /// The request whose body is being decoded (`Stage::Body`), and whether the
    /// connection stays open after it.
    current: RefCell<Option<(Request, bool)>>,
    /// A streamed response waiting for the write buffer to drain (or the client to go).
    drain_waiter: RefCell<Option<DrainWaiter>>,
    parked: RefCell<Parked>,
    /// The current request's route (by index; `None`: no route matched), and when the
    /// first byte of its head arrived (the loop's clock, ns).
    route: Cell<Option<usize>>,
    started: Cell<u64>,
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
    let registry = ServerConns::of(lp, id);
    if registry.stats.routes_unset() {
        registry.stats.set_routes(app.patterns().to_vec());
    }
    let conn = Rc::new_cyclic(|me| Conn {
        me: me.clone(),
        peer: stream.peer_addr().ok(),
        stream,
        registry,
        key: Cell::new(usize::MAX),
        app,
        cfg,
        lp: lp.downgrade(),
        stage: Cell::new(Stage::Idle),
        heads: lp.local::<Heads>(),
        parts: RefCell::new(Parts::default()),
        deadline_due: Cell::new(true),
        since: Cell::new(lp.now_ns()),
        limit: Cell::new(None),
        timer: Cell::new(None),
        served: Cell::new(0),
        decoder: RefCell::new(Decoder::default()),
        current: RefCell::new(None),
        drain_waiter: RefCell::new(None),
        parked: RefCell::new(Parked::No),
        route: Cell::new(None),
        started: Cell::new(lp.now_ns()),
    });
    // A response waiting for the buffer to drain learns the client went away.
    let weak = Rc::downgrade(&conn);
    conn.stream.set_close_callback(move |lp, _| {
        if let Some(c) = weak.upgrade() {
            c.wake_drain_waiter(lp);
        }
    });
    conn.key.set(conn.registry.join(Rc::downgrade(&conn)));
    conn.next_request(lp);
}

impl Drop for Conn {
    /// The connection's timer and registry entry go with it. (Not in the stream's close
    /// callback: by then the connection is usually gone, and its entries would stay:
    /// the registry's `Weak` would even keep its allocation.)
    fn drop(&mut self) {
        self.registry.leave(self.key.get());
        if let (Some((id, _)), Some(lp)) = (self.timer.take(), self.lp.upgrade()) {
            lp.remove_timeout(id);
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
    /// True once the server is shutting down gracefully: responses close their
    /// connection.
    fn draining(&self) -> bool {
        self.registry.draining()
    }

    /// Moves to `stage`: the one place the stage changes. Its deadline is set when the
    /// connection next goes back to the loop ([`wait`](Self::wait)), not here: a batch
    /// of pipelined requests, each going from `Idle` to `Handling` and back on this
    /// stack, costs one deadline, not two per request. (A response that goes on to be
    /// streamed keeps its deadline.)
    fn enter(&self, stage: Stage) {
        let was = self.stage.replace(stage);
        if !(was.responding() && stage.responding()) {
            self.deadline_due.set(true);
        }
    }

    /// The connection goes back to the loop, waiting in its stage (for bytes, for its
    /// handler's response, for its client): the stage's deadline, from now, if the
    /// stage changed since the last wait.
    fn wait(&self, lp: &IoLoop) {
        if !self.deadline_due.replace(false) {
            return;
        }
        let cfg = &self.cfg;
        let limit = match self.stage.get() {
            Stage::Idle if self.served.get() == 0 => Some(cfg.header_timeout),
            Stage::Idle => Some(cfg.idle_timeout),
            Stage::Head => Some(cfg.header_timeout),
            Stage::Body => Some(cfg.body_timeout),
            Stage::Handling { .. } | Stage::Responding { .. } => cfg.handler_timeout,
            Stage::Paused | Stage::Closing => Some(cfg.send_timeout),
            Stage::Refused => None,
        };
        let before = self.limit.replace(limit);
        self.since.set(lp.now_ns());
        let Some(after) = limit else { return };
        if before == limit && self.timer.get().is_some() {
            return; // the same limit from later: a later deadline, nothing to re-arm
        }
        // The timer fires no later than the last deadline; a limit as long as that
        // one's ends later, so the timer needs nothing (it re-arms itself for what is
        // left when it fires). That is the usual case, which costs no clock arithmetic.
        let timer = self.timer.get();
        if timer.is_some() && before.is_some_and(|b| after >= b) {
            return;
        }
        let deadline = lp.now_ns().saturating_add(nanos(after));
        match timer {
            None => self.arm(lp, after),
            Some((id, at)) if at > deadline => {
                lp.remove_timeout(id);
                self.arm(lp, after);
            }
            Some(_) => {}
        }
    }

    fn arm(&self, lp: &IoLoop, after: Duration) {
        let weak = self.me.clone();
        let id = lp.call_later(after, move |lp| {
            let Some(c) = weak.upgrade() else { return };
            c.timer.set(None);
            match c.effective_deadline() {
                Some(d) if lp.now_ns() >= d => c.expire(lp),
                Some(d) => c.arm(lp, Duration::from_nanos(d - lp.now_ns())),
                None => {}
            }
        });
        let at = lp.now_ns().saturating_add(nanos(after));
        self.timer.set(Some((id, at)));
    }

    /// The deadline, with a send deadline pushed back by progress: a connection
    /// waiting for its client to read is closed `send_timeout` after bytes last went
    /// out (or after it began waiting, if none have since).
    fn effective_deadline(&self) -> Option<u64> {
        let d = self.since.get().saturating_add(nanos(self.limit.get()?));
        if !matches!(self.stage.get(), Stage::Paused | Stage::Closing) {
            return Some(d);
        }
        Some(match self.stream.last_sent_at() {
            Some(t) => d.max(t.saturating_add(nanos(self.cfg.send_timeout))),
            None => d,
        })
    }

    /// The deadline passed: a response the handler has not finished is answered 503
    /// (or cut off, if part of it went out); any other wait ends the connection.
    fn expire(&self, lp: &IoLoop) {
        let limit = self.cfg.handler_timeout.unwrap_or_default();
        match self.stage.get() {
            Stage::Handling { streamed: true } | Stage::Responding { streamed: true } => {
                // Part of the answer is out: all that can be done is to cut it off.
                log::warn!("coreloop: a streamed HTTP response missed its {limit:?} deadline");
                self.enter(Stage::Refused);
                self.wait(lp);
                self.stream.abort();
            }
            Stage::Handling { .. } | Stage::Responding { .. } => {
                log::warn!("coreloop: an HTTP handler missed its {limit:?} deadline: 503");
                self.refuse(lp, 503);
            }
            _ => self.stream.abort(),
        }
    }

    /// Waiting for a request none of which has arrived.
    pub(super) fn idle(&self) -> bool {
        !self.stage.get().responding()
            && self.current.borrow().is_none()
            && self.decoder.borrow().between_requests()
            && self.stream.read_buffer_len() == 0
    }

    /// Takes the next request: at the start, and after each response finished.
    fn next_request(self: &Rc<Self>, lp: &IoLoop) {
        // A response finished by its handler: the pump under the handler goes on.
        let under_pump = matches!(self.stage.get(), Stage::Handling { .. });
        self.enter(Stage::Idle);
        if self.draining() && self.idle() {
            return self.close_after_flush();
        }
        if !under_pump {
            self.pump(lp);
        }
    }

    /// Handles requests while they are buffered (pipelined requests whose responses
    /// finish at once go round this loop, not through a read each), then waits: for
    /// bytes, or for the answers to drain.
    fn pump(self: &Rc<Self>, lp: &IoLoop) {
        loop {
            if self.stream.over_high_water() {
                // The client is not reading its answers: read nothing more until they
                // drain (TCP then slows the client down), and give up if they don't.
                self.enter(Stage::Paused);
                let me = self.clone();
                self.stream.on_drain(move |lp, _| {
                    if me.stage.get() == Stage::Paused {
                        me.enter(Stage::Idle);
                        me.pump(lp);
                    }
                });
                break;
            }
            match self.decode(lp) {
                // The handler finished its response: the next request.
                Turn::Dispatched if self.stage.get() == Stage::Idle => continue,
                _ => break, // the response is not finished yet, or waiting
            }
        }
        self.wait(lp);
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
            // One look at the unread bytes, decoded in place.
            let (n, ev) = self.stream.decode_unread(lp, |buf, since| {
                let mut decoder = self.decoder.borrow_mut();
                if decoder.between_requests() {
                    if buf.is_empty() {
                        // Nothing buffered between requests (keep-alive, after each
                        // answer): straight to waiting.
                        return (0, (0, None));
                    }
                    // A request's latency counts from the first byte of its head.
                    self.started.set(since);
                }
                let (n, ev) = decoder.decode(buf, &self.cfg, &mut slot);
                drop(decoder);
                if let Event::Body(r) = &ev {
                    if let Some((req, _)) = self.current.borrow_mut().as_mut() {
                        req.extra_mut().body.extend_from_slice(&buf[r.clone()]);
                    }
                }
                (n, (n, Some(ev)))
            });
            let Some(ev) = ev else {
                return self.wait_for_bytes();
            };
            if matches!(ev, Event::Head) {
                self.registry.stats.request(n);
            } else if n > 0 {
                self.registry.stats.body_bytes(n);
            }
            match ev {
                Event::NeedMore => {
                    // Part of a head is here: after a request, the next head is timed
                    // from its first byte (empty lines before it do not count).
                    if self.stage.get() == Stage::Idle
                        && (self.stream.read_buffer_len() > 0
                            || !self.decoder.borrow().between_requests())
                    {
                        self.enter(Stage::Head);
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
                    self.enter(Stage::Body);
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
        self.enter(Stage::Handling { streamed: false });
        let mut params = Vec::new();
        let found = self.app.find(req.path_bytes(), &mut params);
        let head = req.is_head();
        self.route.set(found.map(|(i, _)| i));
        let Some((index, route)) = found else {
            self.parts
                .borrow_mut()
                .begin(req.minor_version, keep_alive, head);
            let mut resp = Response::new(self.clone());
            resp.set_status(404);
            resp.write("404: Not Found");
            return resp.finish();
        };
        let Some((handler, via_get)) = route.handler(&req) else {
            self.parts
                .borrow_mut()
                .begin(req.minor_version, keep_alive, head);
            let mut resp = Response::new(self.clone());
            resp.set_status(405);
            resp.set_header("Allow", route.allowed());
            resp.write("405: Method Not Allowed");
            return resp.finish();
        };
        if !params.is_empty() {
            req.extra_mut().params = params;
        }
        (self.parts.borrow_mut()).begin(req.minor_version, keep_alive, head || via_get);
        let resp = Response::new(self.clone());
        if let Some(pattern) = self.app.patterns().get(index) {
            lp.set_activity(pattern);
        }
        let r = catch_unwind(AssertUnwindSafe(|| handler(lp, req, resp)));
        if let Stage::Handling { streamed } = self.stage.get() {
            // It returned with the response unfinished: the response is finished later
            // (or abandoned).
            self.enter(Stage::Responding { streamed });
        }
        if let Err(p) = r {
            // The response was dropped while unwinding and has answered 500.
            log::error!("coreloop: HTTP handler panicked: {}", panic_message(&*p));
        }
    }

    fn wake_drain_waiter(&self, lp: &IoLoop) {
        let f = self.drain_waiter.borrow_mut().take();
        if let Some(f) = f {
            f(lp);
        }
    }

    /// Closes once everything written has gone out, or after `send_timeout` without
    /// progress if the client does not read it.
    pub(super) fn close_after_flush(&self) {
        self.enter(Stage::Closing);
        if let Some(lp) = self.lp.upgrade() {
            self.wait(&lp);
        }
        // The callback keeps the connection, and so its timer, until the stream
        // closes one way or the other (nothing else may hold it by now).
        let me = self.me.upgrade();
        self.stream.flush().then(move |_, s, _| {
            s.abort();
            drop(me);
        });
    }

    /// Answers a request whose framing cannot be trusted, then closes: shut down the
    /// writing side once the answer is out and drain what the client still sends for a
    /// moment, so that closing with unread data does not reset the connection and
    /// destroy the answer in flight.
    fn refuse(&self, lp: &IoLoop, code: u16) {
        self.enter(Stage::Refused);
        self.wait(lp);
        self.registry.stats.refused(code);
        self.heads.refresh(lp.now_ns());
        if self
            .stream
            .write_with(|out| self.heads.write_refusal(out, code))
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

/// What a response needs of its connection (see [`Exchange`]).
impl Exchange for Conn {
    fn parts(&self) -> &RefCell<Parts> {
        &self.parts
    }

    fn finish(&self) {
        let streamed = match self.stage.get() {
            // 503 went out at the handler's deadline; the connection is closing.
            Stage::Refused => return,
            Stage::Handling { streamed } | Stage::Responding { streamed } => streamed,
            _ => false,
        };
        let Some(lp) = self.lp.upgrade() else { return };
        let parts = self.parts.borrow();
        // Shutting down: an answer whose head is still to go is the connection's last.
        let keep_alive = parts.keep_alive() && (streamed || !self.draining());
        self.heads.refresh(lp.now_ns());
        let mut written = 0;
        let r = self.stream.write_on(&lp, |out| {
            let before = out.len();
            parts.write_rest(out, &self.heads, keep_alive);
            written = out.len() - before;
        });
        let status = parts.status();
        drop(parts);
        if r.is_err() {
            return; // the client went away meanwhile
        }
        self.registry.stats.sent(written);
        stats::response_end(
            &lp,
            &self.registry.stats,
            self.route.get(),
            status,
            self.started.get(),
        );
        self.served.set(self.served.get() + 1);
        if !keep_alive {
            self.close_after_flush();
        } else if let Some(me) = self.me.upgrade() {
            me.next_request(&lp);
        }
    }

    fn flush(&self) -> io::Result<()> {
        let lp = self.lp.upgrade().ok_or(io::ErrorKind::NotConnected)?;
        match self.stage.get() {
            Stage::Refused => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the handler's deadline passed: 503 was answered",
                ))
            }
            Stage::Handling { .. } => self.enter(Stage::Handling { streamed: true }),
            Stage::Responding { .. } => self.enter(Stage::Responding { streamed: true }),
            _ => {}
        }
        self.heads.refresh(lp.now_ns());
        let mut written = 0;
        let r = self.stream.write_on(&lp, |out| {
            let before = out.len();
            self.parts.borrow_mut().write_part(out, &self.heads);
            written = out.len() - before;
        });
        self.registry.stats.sent(written);
        r
    }

    fn cut_off(&self) {
        self.enter(Stage::Closing);
        if let Some(lp) = self.lp.upgrade() {
            self.wait(&lp);
        }
        self.stream.abort();
    }

    fn write_room(&self) -> usize {
        self.stream.write_room()
    }

    fn over_high_water(&self) -> bool {
        self.stream.over_high_water()
    }

    fn client_gone(&self) -> bool {
        self.stream.closed() || self.stage.get() == Stage::Refused
    }

    fn when_drained(&self, f: DrainWaiter) {
        *self.drain_waiter.borrow_mut() = Some(f);
        if self.client_gone() {
            if let (Some(lp), Some(me)) = (self.lp.upgrade(), self.me.upgrade()) {
                lp.add_callback(move |lp| me.wake_drain_waiter(lp));
            }
            return;
        }
        let weak = self.me.clone();
        self.stream.on_drain(move |lp, _| {
            if let Some(c) = weak.upgrade() {
                c.wake_drain_waiter(lp);
            }
        });
    }

    fn dropped(&self) -> Dropped {
        match (&*self.parked.borrow(), self.stage.get()) {
            (Parked::No, Stage::Handling { .. }) => Dropped::Finish,
            (Parked::No, _) => Dropped::Abandoned,
            _ => Dropped::Park,
        }
    }

    fn await_outcome(&self, on: bool) -> Option<Response> {
        let to = if on { Parked::Awaited } else { Parked::No };
        match self.parked.replace(to) {
            Parked::Holding(r) => Some(r),
            _ => None,
        }
    }

    fn park(&self, r: Response) {
        let old = self.parked.replace(Parked::Holding(r));
        drop(old);
    }
}
