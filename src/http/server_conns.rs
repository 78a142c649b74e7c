//! The HTTP servers of one loop: each server's connections here (for its graceful
//! drain, and its open and idle counts) and what it records here. A connection
//! (`conn.rs`) joins its server's entry when it is accepted and leaves it when it is
//! dropped.

use super::conn::Conn;
use super::stats::{HttpStats, Recorder};
use crate::net::ServerId;
use crate::reactor::IoLoop;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// The connections of one HTTP server on one loop (for graceful shutdown), and what it
/// records here.
#[derive(Default)]
pub(crate) struct ServerConns {
    draining: Cell<bool>,
    conns: RefCell<Slab<Weak<Conn>>>,
    /// What this server records on this loop.
    pub(crate) stats: Rc<Recorder>,
    /// Connections accepted (or handed over) on this loop.
    accepted: Cell<u64>,
}

impl ServerConns {
    /// Server `id`'s entry on this loop (made on first use).
    pub(super) fn of(lp: &IoLoop, id: ServerId) -> Rc<ServerConns> {
        lp.local::<HttpLoop>()
            .0
            .borrow_mut()
            .entry(id)
            .or_default()
            .clone()
    }

    /// True once the server is shutting down gracefully: responses close their
    /// connection.
    pub(super) fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Counts an accepted connection in: returns its key for [`leave`](Self::leave).
    pub(super) fn join(&self, conn: Weak<Conn>) -> usize {
        self.accepted.set(self.accepted.get() + 1);
        self.conns.borrow_mut().insert(conn)
    }

    /// The connection under `key` is gone.
    pub(super) fn leave(&self, key: usize) {
        self.conns.borrow_mut().try_remove(key);
    }

    /// Its open connections (a copy: closing one changes the table).
    fn open(&self) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    }

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

/// Every HTTP server's connections on this loop, by server id.
#[derive(Default)]
struct HttpLoop(RefCell<HashMap<ServerId, Rc<ServerConns>>>);

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

/// Names server `id`'s numbers on this loop (by the address it listens on).
pub(crate) fn name_server(lp: &IoLoop, id: ServerId, name: String) {
    *ServerConns::of(lp, id).stats.server.borrow_mut() = name;
}

/// Starts the graceful shutdown of server `id` on this loop: connections waiting for
/// a request close now; the others close once their response has gone out.
pub(crate) fn drain(lp: &IoLoop, id: ServerId) {
    let sc = ServerConns::of(lp, id);
    sc.draining.set(true);
    for c in sc.open() {
        if c.idle() {
            c.close_after_flush();
        }
    }
}
