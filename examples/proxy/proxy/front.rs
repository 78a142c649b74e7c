//! A client's connection to the proxy: its requests are decoded as they come (the HTTP
//! server's decoder, strict), each is sent upstream as soon as its head is in, its body
//! streamed after it, and the answer streamed back; then the next request. One request
//! at a time: pipelined requests wait in the buffer for the answer before them.
//!
//! Back-pressure both ways: reading from the client pauses while the upstream has not
//! taken the body written so far (over its connection's high-water mark); reading the
//! answer from the upstream pauses while the client has not taken what was written to
//! it. Memory per connection pair stays within the two high-water marks.
//!
//! An upstream that refuses (or breaks, or sends garbage) is answered 502, one that
//! times out 504, a full queue 503; a client that goes away cancels its request
//! upstream (the upstream connection closes).

use super::headers::{self, OutBody};
use super::Core;
use coreloop::http::framing::{BodyLength, RequestDecoder, RequestEvent, RequestHead};
use coreloop::http::{ClientError, ClientRequest, ClientResponse, Exchange};
use coreloop::{IoLoop, IoStream, TimeoutId};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The most bytes asked for in one read from a client.
const READ_MAX: usize = 256 * 1024;

/// What the connection's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The first byte of the next request.
    Idle,
    /// The rest of a head.
    Head,
    /// The next bytes of a request body, or the client taking the answer.
    Client,
}

/// The request being forwarded.
struct InFlight {
    exchange: Exchange,
    /// Its body goes through the exchange as it comes (else it went whole, or there is
    /// none).
    streamed: bool,
    /// The client's request has all been read.
    body_done: bool,
    keep_alive: bool,
    minor: u8,
    upstream: usize,
    /// A bodyless (or whole-body) request, kept to try another upstream once if its
    /// connect fails.
    again: Option<ClientRequest>,
    /// The answer's head went to the client.
    answered: bool,
    out: OutBody,
    close: bool,
}

struct St {
    /// Bytes read from the client; `pos` of them decoded.
    buf: Vec<u8>,
    pos: usize,
    decoder: RequestDecoder,
    reading: bool,
    /// Reading waits for the upstream to take the body written so far.
    blocked: bool,
    req: Option<InFlight>,
    closing: bool,
}

pub struct Front {
    id: u64,
    stream: IoStream,
    core: Rc<Core>,
    client_ip: String,
    st: RefCell<St>,
    deadline: Cell<Option<(Instant, Wait)>>,
    timer: Cell<Option<(TimeoutId, Instant)>>,
}

/// Serves a client's connection (the TCP server's handler, on the loop that accepted
/// it).
pub fn serve(lp: &IoLoop, stream: IoStream) {
    let Some(core) = lp.get_local::<Core>() else {
        log::error!("proxy: no per-core state on this loop");
        return;
    };
    let client_ip = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let id = core.next_id.get();
    core.next_id.set(id + 1);
    let f = Rc::new(Front {
        id,
        stream,
        core: core.clone(),
        client_ip,
        st: RefCell::new(St {
            buf: Vec::new(),
            pos: 0,
            decoder: RequestDecoder::new(&core.cfg.http),
            reading: false,
            blocked: false,
            req: None,
            closing: false,
        }),
        deadline: Cell::new(None),
        timer: Cell::new(None),
    });
    core.fronts.borrow_mut().insert(id, Rc::downgrade(&f));
    let weak = Rc::downgrade(&f);
    f.stream.set_close_callback(move |lp, _| {
        if let Some(f) = weak.upgrade() {
            f.client_gone(lp);
        }
    });
    f.set_deadline(lp, Wait::Idle, core.cfg.idle_timeout);
    f.read();
}

/// A graceful stop on this core: idle connections close now, the others after their
/// answer.
pub fn drain(lp: &IoLoop) {
    let Some(core) = lp.get_local::<Core>() else {
        return;
    };
    core.draining.set(true);
    let fronts: Vec<Rc<Front>> = core
        .fronts
        .borrow()
        .values()
        .filter_map(|w| w.upgrade())
        .collect();
    for f in fronts {
        let idle = {
            let st = f.st.borrow();
            st.req.is_none() && st.buf.len() == st.pos
        };
        if idle {
            f.close();
        }
    }
}

impl Front {
    /// Reads from the client, unless something holds reading back.
    fn read(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            let waiting_for_answer = st.req.as_ref().is_some_and(|r| r.body_done);
            if st.reading || st.closing || st.blocked || waiting_for_answer {
                return;
            }
            st.reading = true;
        }
        let me = self.clone();
        self.stream.read_some(READ_MAX).then(move |lp, _, r| {
            me.st.borrow_mut().reading = false;
            match r {
                Ok(bytes) if !bytes.is_empty() => me.received(lp, bytes),
                // The client closed (or broke) its connection.
                _ => me.client_gone(lp),
            }
        });
    }

    fn received(self: &Rc<Self>, lp: &IoLoop, bytes: Vec<u8>) {
        {
            let mut st = self.st.borrow_mut();
            if st.buf.len() == st.pos {
                st.buf = bytes;
                st.pos = 0;
            } else {
                st.buf.extend_from_slice(&bytes);
            }
        }
        if let Some((_, Wait::Client)) = self.deadline.get() {
            // Progress: the body's deadline moves (the timer catches up lazily).
            let at = lp.time() + self.core.cfg.client_timeout;
            self.deadline.set(Some((at, Wait::Client)));
        }
        self.advance(lp);
    }

    /// Decodes what the client sent, and acts on it: a head starts a request
    /// upstream, body bytes follow it, the end of the request waits for its answer.
    fn advance(self: &Rc<Self>, lp: &IoLoop) {
        loop {
            let (ev, at) = {
                let mut st = self.st.borrow_mut();
                let st = &mut *st;
                if st.closing || st.blocked || st.req.as_ref().is_some_and(|r| r.body_done) {
                    return;
                }
                let (n, ev) = st.decoder.decode(&st.buf[st.pos..]);
                let at = st.pos;
                st.pos += n;
                (ev, at)
            };
            match ev {
                RequestEvent::NeedMore => {
                    let partial = {
                        let mut st = self.st.borrow_mut();
                        let pos = st.pos;
                        st.buf.drain(..pos);
                        st.pos = 0;
                        st.req.is_none() && !st.decoder.between_requests()
                    };
                    if partial && self.deadline.get().is_none_or(|(_, w)| w == Wait::Idle) {
                        self.set_deadline(lp, Wait::Head, self.core.cfg.head_timeout);
                    }
                    return self.read();
                }
                RequestEvent::Head(head) => self.start(lp, head),
                RequestEvent::Body(r) => {
                    let blocked = {
                        let st = self.st.borrow();
                        let Some(req) = st.req.as_ref().filter(|r| r.streamed) else {
                            continue; // the body went whole with the head
                        };
                        let writing = req.exchange.write_body(&st.buf[at..][r]);
                        if req.exchange.over_high_water() {
                            Some(writing)
                        } else {
                            None
                        }
                    };
                    if let Some(writing) = blocked {
                        // The upstream has not taken what was written: read nothing
                        // more until it has.
                        self.st.borrow_mut().blocked = true;
                        let me = self.clone();
                        writing.then(move |lp, r| {
                            me.st.borrow_mut().blocked = false;
                            if r.is_ok() {
                                me.advance(lp);
                            }
                        });
                        return;
                    }
                }
                RequestEvent::End => {
                    let mut st = self.st.borrow_mut();
                    if let Some(req) = st.req.as_mut() {
                        req.body_done = true;
                        if req.streamed {
                            let _ = req.exchange.finish_body();
                        }
                    }
                    drop(st);
                    self.clear_deadline();
                    return;
                }
                RequestEvent::Refused(status) => return self.refuse(lp, status),
            }
        }
    }

    /// A request head is in: sends it upstream.
    fn start(self: &Rc<Self>, lp: &IoLoop, head: RequestHead) {
        let core = &self.core;
        self.clear_deadline();
        let Some(i) = core.upstreams.pick(lp.time(), None) else {
            return self.refuse(lp, 503);
        };
        let mut req = {
            let (xff, via) = &mut *core.scratch.borrow_mut();
            let origin = core.upstreams.origin(i);
            headers::upstream_request(&head.request, origin, &self.client_ip, xff, via)
        }
        .stream_response();
        // A body that is all here already goes whole (it can then be sent again to
        // another upstream); a longer one, or a chunked one, is streamed as it comes.
        let streamed = {
            let st = self.st.borrow();
            let here = st.buf.len() - st.pos;
            match head.body {
                BodyLength::None => false,
                BodyLength::Length(n) if n as usize <= here && n <= 64 * 1024 => {
                    req = req.body(&st.buf[st.pos..st.pos + n as usize]);
                    false
                }
                BodyLength::Length(n) => {
                    req = req.streamed_body(Some(n));
                    true
                }
                _ => {
                    req = req.streamed_body(None);
                    true
                }
            }
        };
        let req = req.connect_to(core.upstreams.addr(i));
        let again = (!streamed && core.upstreams.len() > 1).then(|| req.clone());
        if head.expect_continue && streamed {
            // The proxy answers the expectation itself (the upstream gets no Expect).
            let _ = self
                .stream
                .write_with(|out| out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        let fetching = core.client.fetch(lp, req);
        let keep_alive = head.keep_alive && core.cfg.http.keep_alive && !core.draining.get();
        self.st.borrow_mut().req = Some(InFlight {
            exchange: fetching.exchange(),
            streamed,
            body_done: head.body == BodyLength::None,
            keep_alive,
            minor: head.request.minor_version(),
            upstream: i,
            again,
            answered: false,
            out: OutBody::None,
            close: false,
        });
        if streamed {
            self.set_deadline(lp, Wait::Client, core.cfg.client_timeout);
        }
        let me = self.clone();
        fetching.then(move |lp, r| me.upstream_answered(lp, r));
    }

    fn upstream_answered(self: &Rc<Self>, lp: &IoLoop, r: Result<ClientResponse, ClientError>) {
        let Some(i) = self.st.borrow().req.as_ref().map(|r| r.upstream) else {
            return; // the client went away meanwhile
        };
        let upstreams = &self.core.upstreams;
        match r {
            Ok(resp) => {
                upstreams.succeeded(i);
                self.answer(lp, resp);
            }
            Err(ClientError::Cancelled) => {}
            Err(e) => {
                if matches!(
                    e,
                    ClientError::Connect(_)
                        | ClientError::Tls(_)
                        | ClientError::Timeout(_)
                        | ClientError::Connection(_)
                        | ClientError::Malformed(_)
                ) {
                    upstreams.failed(i, lp.time());
                }
                // Nothing was sent (a refused connect, a failed handshake): another
                // upstream may take it.
                let unsent = matches!(e, ClientError::Connect(_) | ClientError::Tls(_));
                if unsent && self.try_another(lp, i) {
                    return;
                }
                log::debug!("proxy: upstream {}: {e}", upstreams.addr(i));
                let status = match e {
                    ClientError::Timeout(_) => 504,
                    ClientError::QueueFull => 503,
                    _ => 502,
                };
                self.answer_error(lp, status);
            }
        }
    }

    /// A request whose connect failed goes to the next upstream that is up, once (it
    /// was not sent: any method may go again), if its URL fits it (the same scheme and
    /// TLS name).
    fn try_another(self: &Rc<Self>, lp: &IoLoop, failed: usize) -> bool {
        let upstreams = &self.core.upstreams;
        let Some(req) = self
            .st
            .borrow_mut()
            .req
            .as_mut()
            .and_then(|r| r.again.take())
        else {
            return false;
        };
        let Some(j) = upstreams.pick(lp.time(), Some(failed)) else {
            return false;
        };
        if upstreams.origin(j) != upstreams.origin(failed) {
            return false;
        }
        let fetching = self
            .core
            .client
            .fetch(lp, req.connect_to(upstreams.addr(j)));
        if let Some(r) = self.st.borrow_mut().req.as_mut() {
            r.upstream = j;
            r.exchange = fetching.exchange();
        }
        let me = self.clone();
        fetching.then(move |lp, r| me.upstream_answered(lp, r));
        true
    }

    /// Sends the answer's head and what came with it, then the rest as it comes.
    fn answer(self: &Rc<Self>, lp: &IoLoop, resp: ClientResponse) {
        let (out, close) = {
            let mut st = self.st.borrow_mut();
            let Some(req) = st.req.as_mut() else { return };
            req.out = headers::out_body(&resp, req.minor);
            // A request not all read yet cannot be followed by another: close after.
            req.close = !req.keep_alive || !req.body_done || req.out == OutBody::UntilClose;
            req.answered = true;
            (req.out, req.close)
        };
        let minor = self.st.borrow().req.as_ref().map_or(1, |r| r.minor);
        let written = self.stream.write_with(|buf| {
            headers::write_response_head(buf, &resp, out, minor, close);
            headers::write_part(buf, resp.body(), out);
        });
        if written.is_err() {
            return; // the client has gone: dropping the answer cancels it upstream
        }
        if resp.complete() {
            return self.end_of_answer(lp);
        }
        self.pump(lp, resp);
    }

    /// Forwards the rest of a streamed answer, part by part, as the client takes it.
    fn pump(self: &Rc<Self>, lp: &IoLoop, resp: ClientResponse) {
        if self.stream.closed() {
            return; // dropping `resp` cancels it upstream
        }
        if self.stream.over_high_water() {
            self.set_deadline(lp, Wait::Client, self.core.cfg.client_timeout);
            let me = self.clone();
            self.stream.on_drain(move |lp, _| {
                me.clear_deadline();
                me.pump(lp, resp);
            });
            return;
        }
        let me = self.clone();
        resp.body_part().then(move |lp, part| match part {
            Ok(part) => {
                let out = me.st.borrow().req.as_ref().map_or(OutBody::None, |r| r.out);
                let written = me
                    .stream
                    .write_with(|buf| headers::write_part(buf, &part, out));
                if written.is_err() {
                    return;
                }
                if part.is_empty() || resp.complete() {
                    me.end_of_answer(lp);
                } else {
                    me.pump(lp, resp);
                }
            }
            Err(e) => {
                // Part of the answer is out: all that can be done is to cut it off.
                log::debug!("proxy: an answer cut off upstream: {e}");
                if !matches!(e, ClientError::Cancelled) {
                    if let Some(i) = me.st.borrow().req.as_ref().map(|r| r.upstream) {
                        me.core.upstreams.failed(i, lp.time());
                    }
                }
                me.abort();
            }
        });
    }

    /// The answer has all gone to the client: the next request, or the close.
    fn end_of_answer(self: &Rc<Self>, lp: &IoLoop) {
        let Some(req) = self.st.borrow_mut().req.take() else {
            return;
        };
        if req.out == OutBody::Chunked {
            let _ = self
                .stream
                .write_with(|buf| buf.extend_from_slice(b"0\r\n\r\n"));
        }
        if req.close || self.core.draining.get() {
            return self.close();
        }
        self.set_deadline(lp, Wait::Idle, self.core.cfg.idle_timeout);
        self.advance(lp);
    }

    /// The proxy's own answer, when the upstream gave none.
    fn answer_error(self: &Rc<Self>, lp: &IoLoop, status: u16) {
        let close = {
            let mut st = self.st.borrow_mut();
            let Some(req) = st.req.as_mut() else { return };
            if req.answered {
                drop(st);
                return self.abort();
            }
            req.answered = true;
            req.out = OutBody::None;
            req.close = !req.keep_alive || !req.body_done;
            req.close
        };
        let _ = self
            .stream
            .write_with(|buf| headers::write_error(buf, status, close));
        self.end_of_answer(lp);
    }

    /// A request the decoder refused: its status, and the close (what follows it cannot
    /// be trusted).
    fn refuse(self: &Rc<Self>, lp: &IoLoop, status: u16) {
        let _ = lp;
        if let Some(req) = self.st.borrow_mut().req.take() {
            req.exchange.cancel();
        }
        let _ = self
            .stream
            .write_with(|buf| headers::write_error(buf, status, true));
        self.close();
    }

    /// The client went away (or broke the connection): its request is cancelled
    /// upstream.
    fn client_gone(self: &Rc<Self>, lp: &IoLoop) {
        let req = {
            let mut st = self.st.borrow_mut();
            st.closing = true;
            st.req.take()
        };
        if let Some(req) = req {
            req.exchange.cancel();
        }
        self.clear_timer(lp);
        self.core.fronts.borrow_mut().remove(&self.id);
        self.stream.close();
    }

    /// Closes once what was written has gone out.
    fn close(&self) {
        self.st.borrow_mut().closing = true;
        self.stream.close();
    }

    /// Closes at once (an answer cut off: the client must not take it for whole).
    fn abort(&self) {
        self.st.borrow_mut().closing = true;
        // Unsent bytes are dropped: a short answer the client can see is short.
        self.stream.set_linger(Duration::ZERO);
        self.stream.close();
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
            if let Some(f) = me.upgrade() {
                f.timer.set(None);
                f.on_timer(lp);
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
            self.deadline.set(None);
            return self.set_deadline(lp, wait, at - lp.time());
        }
        self.deadline.set(None);
        match wait {
            Wait::Idle => self.close(),
            Wait::Head => self.refuse(lp, 408),
            Wait::Client => {
                // A client that stopped sending its body, or reading its answer.
                if let Some(req) = self.st.borrow_mut().req.take() {
                    req.exchange.cancel();
                }
                self.abort();
            }
        }
    }
}
