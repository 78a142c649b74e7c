//! One host's connections on one core (over TLS to one server name, for `https`): the
//! idle ones (reused newest first, so the oldest reach their idle timeout and go), how
//! many are open, the bounded queue of requests waiting for one, and what this host's
//! requests did.
//!
//! A connection is not bound to the request that opened it: whichever request waits
//! longest takes the next connection that is free, new or reused (a request cancelled
//! while its connection was being made leaves it to the queue, or to the idle list).

use super::conn::Conn;
use super::error::{ClientError, Deadline};
use super::flight::{Flight, Phase};
use super::ClientConfig;
use crate::iostream::IoStream;
use crate::reactor::{new_histogram, IoLoop};
use crate::tls::TlsConnector;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// What one host's requests did on one core.
pub(super) struct Recorder {
    pub(super) requests: Cell<u64>,
    pub(super) responses: [Cell<u64>; 5],
    pub(super) errors: RefCell<Vec<(&'static str, u64)>>,
    pub(super) retries: Cell<u64>,
    pub(super) opened: Cell<u64>,
    pub(super) reused: Cell<u64>,
    /// From the start of a fetch (its wait in the queue included) to its response
    /// head, ns.
    pub(super) latency: RefCell<Histogram<u64>>,
}

impl Recorder {
    pub(super) fn error(&self, kind: &'static str) {
        let mut e = self.errors.borrow_mut();
        match e.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => e.push((kind, 1)),
        }
    }
}

pub(super) struct Pool {
    pub(super) addr: SocketAddr,
    pub(super) cfg: Arc<ClientConfig>,
    /// For `https`: the connector and the server's name (SNI, and the name its
    /// certificate must be for).
    tls: Option<(TlsConnector, String)>,
    idle: RefCell<Vec<Rc<Conn>>>,
    /// Connections open or being made.
    open: Cell<usize>,
    queue: RefCell<VecDeque<Rc<Flight>>>,
    pub(super) stats: Recorder,
}

impl Pool {
    pub(super) fn new(
        addr: SocketAddr,
        cfg: Arc<ClientConfig>,
        tls: Option<(TlsConnector, String)>,
    ) -> Pool {
        Pool {
            addr,
            cfg,
            tls,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            stats: Recorder {
                requests: Cell::new(0),
                responses: Default::default(),
                errors: RefCell::new(Vec::new()),
                retries: Cell::new(0),
                opened: Cell::new(0),
                reused: Cell::new(0),
                latency: RefCell::new(new_histogram()),
            },
        }
    }

    /// Connections open (or being made), and how many of them are idle.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.open.get(), self.idle.borrow().len())
    }

    /// Requests waiting for a connection.
    pub(super) fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// A connection for `f`: an idle one, a new one within `max_per_host`, or a place
    /// in the queue within `max_queued`.
    pub(super) fn acquire(self: &Rc<Self>, lp: &IoLoop, f: &Rc<Flight>) {
        loop {
            let Some(c) = self.idle.borrow_mut().pop() else {
                break;
            };
            if c.usable() {
                return c.take(lp, f.clone());
            }
            c.discard(lp);
        }
        if self.open.get() < self.cfg.max_per_host {
            self.open.set(self.open.get() + 1);
            return self.connect(lp, f.clone());
        }
        if self.queue.borrow().len() >= self.cfg.max_queued {
            return f.fail(lp, ClientError::QueueFull);
        }
        self.queue.borrow_mut().push_back(f.clone());
        f.queued(lp);
    }

    /// A new connection for `f` (a retry: not one of the idle ones, which may have been
    /// closed by the server as the failed one was). Over `max_per_host`, it waits at
    /// the head of the queue.
    pub(super) fn reconnect(self: &Rc<Self>, lp: &IoLoop, f: &Rc<Flight>) {
        if self.open.get() < self.cfg.max_per_host {
            self.open.set(self.open.get() + 1);
            return self.connect(lp, f.clone());
        }
        self.queue.borrow_mut().push_front(f.clone());
        f.queued(lp);
    }

    /// Opens a connection for `f` (for `https`, connected and its handshake done: the
    /// request goes out once the server's certificate has verified, and a failure is
    /// told as a connect or TLS error, not as a failed request).
    fn connect(self: &Rc<Self>, lp: &IoLoop, f: Rc<Flight>) {
        f.st.borrow_mut().phase = Phase::Connecting;
        let pool = self.clone();
        let began = lp.time();
        IoStream::connect(lp, self.addr, self.cfg.connect_timeout).then(move |lp, r| {
            let s = match r {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return pool.not_connected(lp, f, ClientError::Timeout(Deadline::Connect))
                }
                Err(e) => return pool.not_connected(lp, f, ClientError::Connect(Arc::new(e))),
            };
            match &pool.tls {
                None => pool.connected(lp, f, s),
                Some(tls) => pool.handshake(lp, f, s, tls, began),
            }
        });
    }

    /// Makes `s` TLS and waits for its handshake, within what is left of
    /// `connect_timeout` since `began`.
    fn handshake(
        self: &Rc<Self>,
        lp: &IoLoop,
        f: Rc<Flight>,
        s: IoStream,
        (connector, name): &(TlsConnector, String),
        began: Instant,
    ) {
        let left = self
            .cfg
            .connect_timeout
            .saturating_sub(lp.time().saturating_duration_since(began))
            .max(std::time::Duration::from_millis(1));
        let connector = connector.clone().handshake_timeout(left);
        if let Err(e) = connector.wrap(lp, &s, name) {
            return self.not_connected(lp, f, ClientError::Connect(Arc::new(e)));
        }
        let pool = self.clone();
        s.handshake().then(move |lp, s, r| match r {
            Ok(()) => pool.connected(lp, f, s.clone()),
            Err(e) => pool.not_connected(lp, f, super::tls::handshake_error(e)),
        });
    }

    /// A new connection, ready: to `f` if it still wants one, else to the queue or
    /// the idle list.
    fn connected(self: &Rc<Self>, lp: &IoLoop, f: Rc<Flight>, s: IoStream) {
        self.stats.opened.set(self.stats.opened.get() + 1);
        let c = Conn::new(self.clone(), s);
        if f.wants_conn() {
            c.take(lp, f);
        } else {
            self.release(lp, c);
        }
    }

    /// Connecting for `f` failed with `e`: `f` fails (unless it has gone), and the
    /// request at the head of the queue gets a try of its own.
    fn not_connected(self: &Rc<Self>, lp: &IoLoop, f: Rc<Flight>, e: ClientError) {
        self.open.set(self.open.get() - 1);
        if f.wants_conn() {
            f.fail(lp, e);
        }
        self.serve_queue(lp);
    }

    /// A connection is free again (its response done, reusable): to the request that
    /// has waited longest, else idle.
    pub(super) fn release(self: &Rc<Self>, lp: &IoLoop, c: Rc<Conn>) {
        let next = self.queue.borrow_mut().pop_front();
        match next {
            Some(f) => {
                f.dequeued(lp);
                c.take(lp, f);
            }
            None => {
                c.idle(lp);
                self.idle.borrow_mut().push(c);
            }
        }
    }

    /// A connection closed (or will not be reused): one fewer open, and a new one for
    /// the queue's head if a request waits.
    pub(super) fn closed(self: &Rc<Self>, lp: &IoLoop, c: &Rc<Conn>) {
        self.idle.borrow_mut().retain(|i| !Rc::ptr_eq(i, c));
        self.open.set(self.open.get().saturating_sub(1));
        self.serve_queue(lp);
    }

    /// Opens a connection for the request at the head of the queue, if one waits and
    /// there is room.
    fn serve_queue(self: &Rc<Self>, lp: &IoLoop) {
        if self.open.get() >= self.cfg.max_per_host {
            return;
        }
        let next = self.queue.borrow_mut().pop_front();
        if let Some(f) = next {
            f.dequeued(lp);
            self.open.set(self.open.get() + 1);
            self.connect(lp, f);
        }
    }

    /// Takes `f` out of the queue (cancelled, or timed out waiting).
    pub(super) fn unqueue(&self, f: &Rc<Flight>) {
        self.queue.borrow_mut().retain(|q| !Rc::ptr_eq(q, f));
    }
}
