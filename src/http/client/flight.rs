//! A request in flight: where it is (queued, connecting, on a connection, done), who
//! hears its answer, its streamed request body, and its response body as it comes.
//!
//! Shared (`Rc`) by the caller's values ([`Fetching`](super::Fetching),
//! [`Exchange`](super::Exchange), a streamed [`ClientResponse`](super::ClientResponse))
//! and by the connection carrying it; the connection lets go of it when the response
//! ends or the flight fails, and every path ends one of those ways (or by a deadline).

use super::conn::Conn;
use super::error::{ClientError, Deadline};
use super::pool::Pool;
use super::request::{Body, ClientRequest, Prepared};
use super::response::ClientResponse;
use super::HttpClient;
use crate::http::framing::ResponseHead;
use crate::reactor::{IoLoop, TimeoutId, WeakLoop};
use crate::tls::TlsConnector;
use std::cell::RefCell;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

/// A continuation given `T` or why there is none.
pub(super) type Then<T> = Box<dyn FnOnce(&IoLoop, Result<T, ClientError>)>;

/// Who hears the answer of a fetch.
pub(super) enum Waiter {
    None,
    Then(Then<ClientResponse>),
    /// A task: its waker, and the answer once there.
    Task(Option<Waker>, Option<Result<ClientResponse, ClientError>>),
}

/// Who waits for the next part of a streamed response body.
pub(super) enum PartWaiter {
    Then(Then<Vec<u8>>),
    Task(Waker),
}

/// Who waits for a streamed request body's buffer to drain.
pub(super) enum DrainWaiter {
    Then(Then<()>),
    Task(Waker),
}

#[derive(Clone)]
pub(super) enum Phase {
    New,
    /// Waiting for the host's name to be looked up, or the client's TLS connector to be
    /// loaded.
    Preparing,
    Queued,
    Connecting,
    On(Rc<Conn>),
    Done,
}

pub(super) struct FlightState {
    pub(super) req: ClientRequest,
    pub(super) prepared: Option<Prepared>,
    pub(super) pool: Option<Rc<Pool>>,
    pub(super) phase: Phase,
    pub(super) waiter: Waiter,
    /// The answer went to the waiter (or is in its slot).
    pub(super) answered: bool,
    /// Inside `start`, called from the caller's code: an answer now waits for a later
    /// step.
    starting: bool,
    /// Framed body bytes written before a connection took the request.
    pub(super) early_body: Vec<u8>,
    /// Body bytes (unframed) written so far, and whether the body is finished (true at
    /// once for a request whose body is not streamed).
    pub(super) body_written: u64,
    pub(super) body_done: bool,
    pub(super) drain: Option<DrainWaiter>,
    /// The final response head is in (it says whether the connection may be
    /// reused), and, until it goes into the answer, the head itself.
    pub(super) head_in: bool,
    pub(super) keep_alive: bool,
    pub(super) head: Option<ResponseHead>,
    /// A buffered response's body so far.
    pub(super) body: Vec<u8>,
    pub(super) part: Option<PartWaiter>,
    /// Where to go next (a redirect being followed: its body is read and dropped).
    pub(super) redirect: Option<Box<ClientRequest>>,
    /// The response (head and body) has all come.
    pub(super) complete: bool,
    /// Why the flight ended without a complete response.
    pub(super) failed: Option<ClientError>,
    pub(super) timers: [Option<TimeoutId>; 2],
    pub(super) retried: bool,
    /// Redirects followed so far.
    pub(super) followed: u8,
    pub(super) started: Instant,
}

/// One request and its answer.
pub(super) struct Flight {
    pub(super) lp: WeakLoop,
    pub(super) client: HttpClient,
    pub(super) st: RefCell<FlightState>,
}

const TOTAL: usize = 0;
const QUEUE: usize = 1;

impl Flight {
    pub(super) fn new(lp: &IoLoop, client: HttpClient, req: ClientRequest) -> Rc<Flight> {
        let body_done = !matches!(req.body, Body::Streamed(_));
        Rc::new(Flight {
            lp: lp.downgrade(),
            client,
            st: RefCell::new(FlightState {
                req,
                prepared: None,
                pool: None,
                phase: Phase::New,
                waiter: Waiter::None,
                answered: false,
                starting: false,
                early_body: Vec::new(),
                body_written: 0,
                body_done,
                drain: None,
                head_in: false,
                keep_alive: false,
                head: None,
                body: Vec::new(),
                part: None,
                redirect: None,
                complete: false,
                failed: None,
                timers: [None, None],
                retried: false,
                followed: 0,
                started: lp.time(),
            }),
        })
    }

    /// Starts it (once): prepares the request, loads the client's TLS connector if it
    /// is `https` and the client has none yet, looks its host's name up if it has one
    /// (both on the blocking pool, the lookup within `connect_timeout`), takes its
    /// host's pool, and asks it for a connection.
    pub(super) fn start(self: &Rc<Self>, lp: &IoLoop) {
        let prepared = {
            let mut st = self.st.borrow_mut();
            if !matches!(st.phase, Phase::New) {
                return;
            }
            st.starting = true;
            st.started = lp.time();
            st.req.prepare()
        };
        match prepared {
            Ok(p) => self.proceed(lp, p),
            Err(e) => self.fail(lp, e),
        }
        self.st.borrow_mut().starting = false;
    }

    /// The next step of a prepared request: what it waits for first (the connector,
    /// the name's lookup), or a connection. A wait holds the flight (a fetch given a
    /// continuation has no other owner), and what comes after a cancel is dropped.
    fn proceed(self: &Rc<Self>, lp: &IoLoop, p: Prepared) {
        let connector = match &p.tls {
            None => None,
            Some(_) => match self.client.tls.get() {
                Some(c) => Some(c.clone()),
                None => {
                    self.st.borrow_mut().phase = Phase::Preparing;
                    let me = self.clone();
                    return super::tls::when_loaded(lp, &self.client, move |lp, r| {
                        if me.preparing() {
                            match r {
                                Ok(_) => me.proceed(lp, p),
                                Err(e) => me.fail(lp, e),
                            }
                        }
                    });
                }
            },
        };
        if let Some(host) = p.lookup.clone() {
            self.st.borrow_mut().phase = Phase::Preparing;
            return self.look_up(lp, host, p);
        }
        self.begin(lp, p, connector);
    }

    /// Waiting for the lookup or the connector (not cancelled meanwhile).
    fn preparing(&self) -> bool {
        matches!(self.st.borrow().phase, Phase::Preparing)
    }

    /// Looks the host's name up, then goes on with its first address. (The pools are by
    /// address: every request to the name goes to the address it had when looked up.)
    fn look_up(self: &Rc<Self>, lp: &IoLoop, host: String, mut p: Prepared) {
        let me = self.clone();
        let port = p.addr.port();
        crate::net::lookup(
            lp,
            host,
            port,
            self.client.cfg.connect_timeout,
            move |lp, r| {
                if !me.preparing() {
                    return; // cancelled meanwhile
                }
                match r {
                    Ok(addrs) => {
                        p.addr = addrs[0];
                        p.lookup = None;
                        me.proceed(lp, p);
                    }
                    Err(e) => me.fail(lp, ClientError::Connect(std::sync::Arc::new(e))),
                }
            },
        );
    }

    /// Takes the pool of the prepared request's host (and TLS server name, with the
    /// client's `connector`), arms the total deadline and asks the pool for a
    /// connection.
    fn begin(self: &Rc<Self>, lp: &IoLoop, p: Prepared, connector: Option<TlsConnector>) {
        let starting = std::mem::replace(&mut self.st.borrow_mut().starting, true);
        let tls = match (&connector, &p.tls) {
            (Some(c), Some(name)) => Some((c, name.as_str())),
            _ => None,
        };
        let pool = super::pool_of(lp, &self.client, p.addr, tls);
        pool.stats.requests.set(pool.stats.requests.get() + 1);
        let total = {
            let st = self.st.borrow();
            let armed = st.timers[TOTAL].is_some();
            st.req
                .timeout
                .or(self.client.cfg.total_timeout)
                .filter(|_| !armed)
        };
        {
            let mut st = self.st.borrow_mut();
            st.prepared = Some(p);
            st.pool = Some(pool.clone());
        }
        if let Some(t) = total {
            let me = Rc::downgrade(self);
            let id = lp.call_later(t, move |lp| {
                if let Some(f) = me.upgrade() {
                    f.st.borrow_mut().timers[TOTAL] = None;
                    f.fail(lp, ClientError::Timeout(Deadline::Total));
                }
            });
            self.st.borrow_mut().timers[TOTAL] = Some(id);
        }
        pool.acquire(lp, self);
        self.st.borrow_mut().starting = starting;
    }

    /// Waits in the pool's queue, at most `connect_timeout`.
    pub(super) fn queued(self: &Rc<Self>, lp: &IoLoop) {
        let me = Rc::downgrade(self);
        let id = lp.call_later(self.client.cfg.connect_timeout, move |lp| {
            if let Some(f) = me.upgrade() {
                f.st.borrow_mut().timers[QUEUE] = None;
                f.fail(lp, ClientError::Timeout(Deadline::Queue));
            }
        });
        let mut st = self.st.borrow_mut();
        st.phase = Phase::Queued;
        st.timers[QUEUE] = Some(id);
    }

    /// Leaves the queue: a connection takes it now.
    pub(super) fn dequeued(&self, lp: &IoLoop) {
        if let Some(id) = self.st.borrow_mut().timers[QUEUE].take() {
            lp.remove_timeout(id);
        }
    }

    /// Still waiting for a connection (not cancelled, not failed).
    pub(super) fn wants_conn(&self) -> bool {
        matches!(
            self.st.borrow().phase,
            Phase::Queued | Phase::Connecting | Phase::New
        )
    }

    /// The request failed before any byte of its answer on a connection that had
    /// served before: the server closed it as it was reused (its idle close crossing
    /// the request). Retried once on a new connection if the request may be sent
    /// again; true if it was.
    pub(super) fn retry(self: &Rc<Self>, lp: &IoLoop) -> bool {
        let pool = {
            let mut st = self.st.borrow_mut();
            if st.retried || !st.req.replayable() || st.answered || st.failed.is_some() {
                return false;
            }
            st.retried = true;
            st.phase = Phase::New;
            st.pool.clone()
        };
        let Some(pool) = pool else { return false };
        pool.stats.retries.set(pool.stats.retries.get() + 1);
        pool.reconnect(lp, self);
        true
    }

    /// Follows a redirect: the same flight (its waiter, its total deadline) goes on
    /// with the next request.
    pub(super) fn redirect(self: &Rc<Self>, lp: &IoLoop, next: ClientRequest) {
        {
            let mut st = self.st.borrow_mut();
            st.body_done = !matches!(next.body, Body::Streamed(_));
            st.req = next;
            st.prepared = None;
            st.pool = None;
            st.phase = Phase::New;
            st.head_in = false;
            st.head = None;
            st.body.clear();
            st.retried = false;
            st.followed += 1;
        }
        self.start(lp);
    }

    /// Gives the answer to whoever waits for it (in a later step if the caller's code
    /// is still running `start`).
    pub(super) fn answer(self: &Rc<Self>, lp: &IoLoop, r: Result<ClientResponse, ClientError>) {
        let waiter = {
            let mut st = self.st.borrow_mut();
            if st.answered {
                return;
            }
            if st.starting {
                drop(st);
                let me = self.clone();
                lp.add_callback(move |lp| me.answer(lp, r));
                return;
            }
            st.answered = true;
            std::mem::replace(&mut st.waiter, Waiter::None)
        };
        match waiter {
            Waiter::Then(f) => f(lp, r),
            Waiter::Task(w, _) => {
                self.st.borrow_mut().waiter = Waiter::Task(None, Some(r));
                if let Some(w) = w {
                    w.wake();
                }
            }
            Waiter::None => {}
        }
    }

    /// Ends the flight with `e`: out of the queue, its connection closed (not reused),
    /// its timers gone, the answer (or the reader of a part, or a body writer waiting
    /// for room) told.
    pub(super) fn fail(self: &Rc<Self>, lp: &IoLoop, e: ClientError) {
        let (phase, pool, timers) = {
            let mut st = self.st.borrow_mut();
            if st.failed.is_some() || st.complete {
                return;
            }
            st.failed = Some(e.clone());
            let phase = std::mem::replace(&mut st.phase, Phase::Done);
            (phase, st.pool.clone(), std::mem::take(&mut st.timers))
        };
        for id in timers.into_iter().flatten() {
            lp.remove_timeout(id);
        }
        if let Some(pool) = &pool {
            pool.stats.error(e.kind());
            match &phase {
                Phase::Queued => pool.unqueue(self),
                Phase::On(conn) => conn.abandon(lp),
                _ => {}
            }
        }
        self.answer(lp, Err(e.clone()));
        self.wake_part(lp, Err(e.clone()));
        self.wake_drain(lp, Err(e));
    }

    /// The response has all come (the connection has let go of the flight).
    pub(super) fn completed(&self, lp: &IoLoop) {
        let timers = {
            let mut st = self.st.borrow_mut();
            st.complete = true;
            st.phase = Phase::Done;
            std::mem::take(&mut st.timers)
        };
        for id in timers.into_iter().flatten() {
            lp.remove_timeout(id);
        }
    }

    /// Cancels it (the caller went away): [`ClientError::Cancelled`] for anyone still
    /// waiting; nothing if it is over.
    pub(super) fn cancel(self: &Rc<Self>, lp: &IoLoop) {
        let pending = {
            let st = self.st.borrow();
            !(st.complete || st.failed.is_some() || matches!(st.phase, Phase::New))
        };
        if pending {
            self.fail(lp, ClientError::Cancelled);
        }
    }

    /// Gives a part of a streamed body (or its end, or the error) to its reader.
    pub(super) fn wake_part(&self, lp: &IoLoop, r: Result<Vec<u8>, ClientError>) {
        let waiter = self.st.borrow_mut().part.take();
        match waiter {
            Some(PartWaiter::Then(f)) => f(lp, r),
            Some(PartWaiter::Task(w)) => {
                // The task polls again and finds the bytes (or the end) where they are.
                if let Ok(part) = r {
                    let mut st = self.st.borrow_mut();
                    if st.body.is_empty() {
                        st.body = part;
                    } else {
                        st.body.extend_from_slice(&part);
                    }
                }
                w.wake();
            }
            None => {
                if let Ok(part) = r {
                    self.st.borrow_mut().body.extend_from_slice(&part);
                }
            }
        }
    }

    /// Tells the body writer waiting for room.
    pub(super) fn wake_drain(&self, lp: &IoLoop, r: Result<(), ClientError>) {
        let waiter = self.st.borrow_mut().drain.take();
        match waiter {
            Some(DrainWaiter::Then(f)) => f(lp, r),
            Some(DrainWaiter::Task(w)) => w.wake(),
            None => {}
        }
    }

    /// The connection carrying it, if one does.
    pub(super) fn conn(&self) -> Option<Rc<Conn>> {
        match &self.st.borrow().phase {
            Phase::On(c) => Some(c.clone()),
            _ => None,
        }
    }
}
