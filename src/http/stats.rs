//! What an HTTP server records on each core: requests, responses by status class,
//! refusals by cause, bytes in and out, connections, and request latency by route and
//! status class, from the first byte of the head to the response handed to the kernel.
//!
//! Written only by the core's own loop. Responses are stamped together, with one clock
//! read, once their sends have reached the kernel (`IoLoop::when_written`): on epoll at
//! the end of the step (each stream's send is a syscall there), so once per batch of
//! pipelined responses; on io_uring just before the loop's next wait, which submits the
//! sends, so once per iteration for every response of it.

use crate::reactor::{new_histogram, IoLoop, LogHistogram, StepEnd};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The statuses refused before any handler ran, counted by cause.
pub(crate) const REFUSALS: [u16; 8] = [400, 408, 413, 414, 431, 501, 503, 505];

/// One HTTP server's numbers on one core (`metrics::Snapshot` holds them for every
/// core, and writes them in Prometheus's format).
#[derive(Clone, Debug)]
pub struct HttpStats {
    /// The server: the address it listens on, or `streams` for connections handed to
    /// `HttpServer::serve_stream`.
    pub server: String,
    /// Requests whose head was read and routed.
    pub requests: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Requests refused before a handler (bad framing, limits, timeouts), by status.
    pub refusals: Vec<(u16, u64)>,
    /// Bytes of request heads and bodies read.
    pub bytes_in: u64,
    /// Bytes of responses written.
    pub bytes_out: u64,
    /// Connections accepted on this core.
    pub accepted: u64,
    /// Connections open now, and how many of them wait for a request.
    pub open: u64,
    /// Open connections waiting for their next request.
    pub idle: u64,
    /// Request latency (nanoseconds) by route pattern and status class.
    pub latency: Vec<RouteLatency>,
}

/// The latency of one route's responses of one status class.
#[derive(Clone, Debug)]
pub struct RouteLatency {
    /// The route pattern (`/user/{id}`), or `-` for requests that matched none.
    pub route: String,
    /// The status class: 1 to 5.
    pub class: u8,
    /// From the first byte of the head to the last byte handed to the kernel, ns.
    pub ns: Histogram<u64>,
}

impl HttpStats {
    /// Adds `o`'s numbers (another core's, of the same server) to these.
    pub fn merge(&mut self, o: &HttpStats) {
        self.requests += o.requests;
        for (a, b) in self.responses.iter_mut().zip(o.responses) {
            *a += b;
        }
        for (code, n) in &o.refusals {
            match self.refusals.iter_mut().find(|(c, _)| c == code) {
                Some((_, m)) => *m += n,
                None => self.refusals.push((*code, *n)),
            }
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.accepted += o.accepted;
        self.open += o.open;
        self.idle += o.idle;
        for r in &o.latency {
            match self
                .latency
                .iter_mut()
                .find(|x| x.route == r.route && x.class == r.class)
            {
                Some(x) => {
                    let _ = x.ns.add(&r.ns);
                }
                None => self.latency.push(r.clone()),
            }
        }
    }

    /// Every route's and class's latency added up.
    pub fn latency_total(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for r in &self.latency {
            let _ = h.add(&r.ns);
        }
        h
    }
}

/// The recorder of one server on one core.
pub(crate) struct Recorder {
    pub(crate) server: RefCell<String>,
    requests: Cell<u64>,
    responses: [Cell<u64>; 5],
    refusals: [Cell<u64>; REFUSALS.len()],
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    /// By route index (`usize::MAX` as the last slot: no route) and class.
    latency: RefCell<Vec<Option<LogHistogram>>>,
    /// The route patterns, by index (a copy from the application).
    routes: RefCell<Vec<&'static str>>,
    /// This loop's list of responses waiting for their end time, and the step-end job
    /// that stamps them (made once: no lookup or allocation per response).
    ends: std::cell::OnceCell<(Rc<Ends>, Rc<dyn StepEnd>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            server: RefCell::new(String::from("streams")),
            requests: Cell::new(0),
            responses: Default::default(),
            refusals: Default::default(),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            latency: RefCell::new(Vec::new()),
            routes: RefCell::new(Vec::new()),
            ends: std::cell::OnceCell::new(),
        }
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

impl Recorder {
    pub(crate) fn routes_unset(&self) -> bool {
        self.routes.borrow().is_empty()
    }

    pub(crate) fn set_routes(&self, routes: Vec<&'static str>) {
        *self.routes.borrow_mut() = routes;
    }

    pub(crate) fn request(&self, head_bytes: usize) {
        bump(&self.requests, 1);
        bump(&self.bytes_in, head_bytes as u64);
    }

    pub(crate) fn body_bytes(&self, n: usize) {
        bump(&self.bytes_in, n as u64);
    }

    pub(crate) fn sent(&self, n: usize) {
        bump(&self.bytes_out, n as u64);
    }

    pub(crate) fn refused(&self, status: u16) {
        if let Some(i) = REFUSALS.iter().position(|&c| c == status) {
            bump(&self.refusals[i], 1);
        }
        self.responded(status);
    }

    pub(crate) fn responded(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        bump(&self.responses[class], 1);
    }

    /// Records one request's latency (route index, or `None`; status; `ns`).
    /// Records `n` responses of `route` and `status` that took `ns` each.
    fn latency(&self, route: Option<usize>, status: u16, ns: u64, n: u64) {
        let routes = self.routes.borrow().len();
        let r = route.filter(|&r| r < routes).unwrap_or(routes);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let idx = r * 5 + class;
        let mut l = self.latency.borrow_mut();
        if l.len() <= idx {
            l.resize_with(idx + 1, || None);
        }
        l[idx]
            .get_or_insert_with(LogHistogram::default)
            .record_n(ns, n);
    }

    /// A copy of the numbers, with the connection counts the caller knows.
    pub(crate) fn snapshot(&self, accepted: u64, open: u64, idle: u64) -> HttpStats {
        let routes = self.routes.borrow();
        let latency = self
            .latency
            .borrow()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let h = h.as_ref()?;
                let route = routes.get(i / 5).map_or("-", |r| r).to_string();
                Some(RouteLatency {
                    route,
                    class: (i % 5 + 1) as u8,
                    ns: h.to_hdr(),
                })
            })
            .collect();
        HttpStats {
            server: self.server.borrow().clone(),
            requests: self.requests.get(),
            responses: std::array::from_fn(|i| self.responses[i].get()),
            refusals: REFUSALS
                .iter()
                .zip(&self.refusals)
                .filter(|(_, n)| n.get() > 0)
                .map(|(c, n)| (*c, n.get()))
                .collect(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            accepted,
            open,
            idle,
            latency,
        }
    }
}

/// Responses waiting for their end time: their server's recorder, route, status and
/// start (the loop's clock, ns), and how many there are (pipelined responses of one
/// read share all four, so a run of them is one entry).
type Pending = (Rc<Recorder>, Option<usize>, u16, u64, u64);

/// Responses of this step waiting for their end time (per loop).
#[derive(Default)]
pub(crate) struct Ends {
    pending: RefCell<Vec<Pending>>,
    scheduled: Cell<bool>,
}

struct EndsStep(Rc<Ends>);

impl StepEnd for EndsStep {
    fn run(self: Rc<Self>, lp: &IoLoop) {
        let ends = &self.0;
        ends.scheduled.set(false);
        let now = lp.stamp();
        // Each entry is a run of equal responses: one subtraction, one histogram update.
        // (Recording touches only the recorder's own cells, never this list.)
        let mut list = ends.pending.borrow_mut();
        for (rec, route, status, start, n) in list.iter() {
            rec.latency(*route, *status, now.saturating_sub(*start), *n);
        }
        list.clear();
    }
}

/// Notes a response handed to its stream now, to be stamped once its send reaches the
/// kernel.
pub(crate) fn response_end(
    lp: &IoLoop,
    rec: &Rc<Recorder>,
    route: Option<usize>,
    status: u16,
    start: u64,
) {
    rec.responded(status);
    if !lp.recording() {
        return;
    }
    let (ends, step) = rec.ends.get_or_init(|| {
        let ends = lp.local::<Ends>();
        let step: Rc<dyn StepEnd> = Rc::new(EndsStep(ends.clone()));
        (ends, step)
    });
    let mut pending = ends.pending.borrow_mut();
    match pending.last_mut() {
        Some((r, ro, st, sa, n))
            if *sa == start && *ro == route && *st == status && Rc::ptr_eq(r, rec) =>
        {
            *n += 1
        }
        _ => pending.push((rec.clone(), route, status, start, 1)),
    }
    drop(pending);
    if !ends.scheduled.replace(true) {
        lp.when_written(step.clone());
    }
}
