//! An HTTP/1.1 client on the loop (Tornado's `AsyncHTTPClient.fetch`): per-core
//! connection pools with keep-alive reuse, deadlines for every wait, streamed bodies
//! both ways with back-pressure.
//!
//! [`HttpClient::fetch`] gives a [`Fetching`]: continue it with
//! [`then`](Fetching::then) on the loop, or `.await` it in a task, for the
//! [`ClientResponse`] or the [`ClientError`] that says why there is none.
//!
//! - **Pools.** Each core has its own connections, per client, host address and (for
//!   `https`) TLS server name (`lp.local`, nothing shared between cores): at most
//!   `max_per_host` open, idle ones reused newest first and closed after
//!   `idle_timeout`, requests beyond that waiting in a queue of at most `max_queued`
//!   (past it: [`ClientError::QueueFull`]; waiting longer than `connect_timeout`: a
//!   timeout).
//! - **Deadlines** ([`ClientConfig`]): connect (and the wait in the queue), head (from
//!   the end of the request to the end of the response head, not extended by
//!   progress), body (the longest pause without a byte either way while the client
//!   waits for one), and the whole fetch. None of them runs while the reader of a
//!   streamed response is not asking for more.
//! - **One retry**, for a request that failed before any byte of its answer on a
//!   reused connection (the server's idle close crossing it, the classic pooling race),
//!   if its method is idempotent and its body can be sent again; on a new connection.
//! - **Framing** by the one response decoder ([`framing::ResponseDecoder`](super::framing::ResponseDecoder)):
//!   Content-Length, chunked and close-delimited bodies, interim 1xx answers skipped, a
//!   malformed answer a [`ClientError::Malformed`] (never a hang: a server that stops
//!   mid-answer meets a deadline), heads, fields and buffered bodies bounded.
//! - **Streaming**: a request body written while the request is in flight
//!   ([`ClientRequest::streamed_body`], [`Exchange::write_body`], which says when to
//!   wait for room); a response body read part by part
//!   ([`ClientRequest::stream_response`], [`ClientResponse::body_part`]), only as fast
//!   as the reader asks.
//! - **Redirects** only when asked ([`ClientRequest::follow_redirects`]).
//! - **https**, verification always on: the server's certificate is checked against
//!   the roots of [`ClientConfig::tls`] (by default the system's, loaded on the
//!   blocking pool when the client first fetches `https`) for the URL's host, sent as
//!   SNI; ALPN `http/1.1`. A certificate that does not verify is
//!   [`ClientError::Tls`]. A pooled TLS connection is reused only for the same host
//!   name, and a later connection resumes the session of an earlier one.
//! - Host names are looked up on the blocking pool (within `connect_timeout`);
//!   [`ClientRequest::connect_to`] gives the address instead.
//!
//! Each core's numbers per upstream ([`ClientStats`]) are part of the runtime's
//! [`Snapshot`](crate::metrics::Snapshot) and of its Prometheus exposition.
//!
//! ```
//! use coreloop::http::{Application, ClientRequest, HttpClient, HttpServer, Route};
//! use coreloop::{Cores, Runtime};
//!
//! let rt = Runtime::builder().cores(Cores::Count(1)).build()?;
//! let app = Application::new()
//!     .route("/", Route::new().get(|_, _, mut resp| resp.write("Hello, world")));
//! let server = HttpServer::new(app).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
//! let url = format!("http://{}/", server.local_addr());
//! let client = HttpClient::default(); // Send + Sync: one for every core
//!
//! // From a task: await it.
//! let (c, u) = (client.clone(), url.clone());
//! let body = coreloop::block_on(rt.handle(0).spawn(move || async move {
//!     let lp = coreloop::IoLoop::current().unwrap();
//!     let resp = c.fetch(&lp, ClientRequest::get(&u)).await?;
//!     Ok::<_, coreloop::http::ClientError>(resp.body().to_vec())
//! }))??;
//! assert_eq!(body, b"Hello, world");
//!
//! // From a callback: a continuation on the loop.
//! let (tx, rx) = std::sync::mpsc::channel();
//! rt.handle(0).add_callback(move |lp| {
//!     client.fetch(lp, ClientRequest::get(&url)).then(move |_, r| {
//!         tx.send(r.map(|resp| resp.status())).unwrap();
//!     });
//! })?;
//! assert_eq!(rx.recv()?.unwrap(), 200);
//! rt.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod error;
mod flight;
mod pool;
mod request;
mod response;
mod stats;
mod tls;

pub use error::{ClientError, Deadline};
pub use request::ClientRequest;
pub use response::{BodyReading, ClientResponse};
pub(crate) use stats::by_upstream;
pub use stats::ClientStats;

use crate::reactor::IoLoop;
use crate::tls::TlsConnector;
use flight::{DrainWaiter, Flight, Waiter};
use pool::Pool;
use request::Body;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Limits and deadlines of an [`HttpClient`]; every core's pools follow them.
///
/// ```
/// use coreloop::http::ClientConfig;
/// use std::time::Duration;
/// let cfg = ClientConfig { max_per_host: 16, head_timeout: Duration::from_secs(5), ..ClientConfig::default() };
/// assert_eq!(cfg.max_queued, 1024);
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Connections to one host (address) per core at most (open or being made).
    /// Default 100.
    pub max_per_host: usize,
    /// Requests waiting for a connection to one host per core at most; past it a fetch
    /// fails at once with [`ClientError::QueueFull`]. Default 1024.
    pub max_queued: usize,
    /// How long an idle connection stays in the pool. Default 30 s.
    pub idle_timeout: Duration,
    /// How long connecting may take, and how long a request may wait in its host's
    /// queue. Default 10 s.
    pub connect_timeout: Duration,
    /// From the end of the request to the end of the response head (not extended by
    /// progress: a head trickled in fails at this deadline). Default 30 s.
    pub head_timeout: Duration,
    /// The longest pause without a byte of a body (received, or of a streamed request
    /// body sent) while the client waits for one. Default 30 s.
    pub body_timeout: Duration,
    /// The whole fetch (queue, connect, request, response); `None`: no limit beyond
    /// the others. A request may set its own ([`ClientRequest::timeout`]). Default
    /// `None`.
    pub total_timeout: Option<Duration>,
    /// Largest response head, bytes. Default 64 KiB.
    pub max_head: usize,
    /// Most header fields in a response head. Default 128.
    pub max_headers: usize,
    /// Largest body of a buffered (not streamed) response, bytes; past it
    /// [`ClientError::TooLarge`]. Default 64 MiB.
    pub max_body: usize,
    /// The TLS connector for `https` URLs: the roots it trusts (verification is
    /// always on) and its session cache, which its clones share (a new connection
    /// resumes an earlier one's session). The client offers ALPN `http/1.1` whatever
    /// the connector's own list, and bounds the handshake by `connect_timeout`.
    /// Default `None`: a connector trusting the system's roots, made when the client
    /// first fetches an `https` URL (a client that never does never reads them).
    pub tls: Option<TlsConnector>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_per_host: 100,
            max_queued: 1024,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            total_timeout: None,
            max_head: crate::http::framing::DEFAULT_MAX_RESPONSE_HEAD,
            max_headers: crate::http::framing::DEFAULT_MAX_RESPONSE_HEADERS,
            max_body: 64 * 1024 * 1024,
            tls: None,
        }
    }
}

/// An HTTP/1.1 client: a configuration, and on every core that fetches with it, that
/// core's pools. `Send + Sync` and cheap to clone: make one for the runtime (or one
/// per loop), and fetch with it on any loop.
#[derive(Clone)]
pub struct HttpClient {
    cfg: Arc<ClientConfig>,
    /// Which pools on each core are this client's.
    id: u64,
    /// The connector for `https`, once there is one.
    tls: Arc<tls::TlsSlot>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new(ClientConfig::default())
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("id", &self.id)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl HttpClient {
    /// A client with `cfg`'s limits and deadlines.
    pub fn new(cfg: ClientConfig) -> HttpClient {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        HttpClient {
            tls: Arc::new(tls::TlsSlot::new(cfg.tls.as_ref())),
            cfg: Arc::new(cfg),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Fetches `req` on `lp` (a connection from `lp`'s pool for its host): continue
    /// with [`then`](Fetching::then), or `.await` it in a task of `lp`. Nothing is sent
    /// until then.
    pub fn fetch(&self, lp: &IoLoop, req: ClientRequest) -> Fetching {
        Fetching {
            flight: Flight::new(lp, self.clone(), req),
            polled: false,
        }
    }
}

/// Every client's pools on one loop, by client, host address and TLS server name (a
/// list: there are few, and a compare of each costs less than hashing the key).
#[derive(Default)]
struct ClientLoop(RefCell<Vec<(PoolKey, Rc<Pool>)>>);

/// A pool's client (its id), host address, and for `https` the server's name: a TLS
/// connection is reused only for the name its certificate was verified for, and never
/// for plain HTTP.
type PoolKey = (u64, SocketAddr, Option<String>);

/// `client`'s pool for `addr` on `lp`; over TLS with the connector to the server
/// named, if `tls` is given.
fn pool_of(
    lp: &IoLoop,
    client: &HttpClient,
    addr: SocketAddr,
    tls: Option<(&TlsConnector, &str)>,
) -> Rc<Pool> {
    let pools = lp.local::<ClientLoop>();
    let mut list = pools.0.borrow_mut();
    let name = tls.map(|(_, n)| n);
    let found = list
        .iter()
        .find(|((id, a, n), _)| *id == client.id && *a == addr && n.as_deref() == name);
    if let Some((_, p)) = found {
        return p.clone();
    }
    let tls = tls.map(|(c, n)| (c.clone(), n.to_string()));
    let p = Rc::new(Pool::new(addr, client.cfg.clone(), tls));
    list.push(((client.id, addr, name.map(str::to_string)), p.clone()));
    p
}

/// This loop's numbers of every upstream it fetched from.
pub(crate) fn client_stats(lp: &IoLoop) -> Vec<ClientStats> {
    let pools: Vec<Rc<Pool>> = lp
        .local::<ClientLoop>()
        .0
        .borrow()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    let each: Vec<ClientStats> = pools.iter().map(|p| ClientStats::of(p)).collect();
    stats::by_upstream(each.iter())
}

/// A fetch ([`HttpClient::fetch`]): give it a continuation with [`then`](Self::then)
/// or `.await` it in a task; until then nothing is sent. An awaited fetch dropped
/// before its answer is cancelled (its connection, if it had one, is closed).
#[must_use = "a fetch does nothing until it is given a continuation with then() or awaited"]
pub struct Fetching {
    flight: Rc<Flight>,
    /// Started by a task's poll: cancelled if dropped unanswered.
    polled: bool,
}

impl Fetching {
    /// Sends the request, then runs `then` with the response or the error on the loop,
    /// in a later step (unless the loop closes first). Every fetch answers, once.
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, Result<crate::http::ClientResponse, ClientError>) + 'static,
    {
        let Some(lp) = self.flight.lp.upgrade() else {
            return;
        };
        self.flight.st.borrow_mut().waiter = Waiter::Then(Box::new(then));
        self.flight.start(&lp);
    }

    /// The fetch in flight, for writing its streamed body and cancelling it (take it
    /// before `then`).
    pub fn exchange(&self) -> Exchange {
        Exchange {
            flight: self.flight.clone(),
        }
    }
}

impl Future for Fetching {
    type Output = Result<ClientResponse, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.polled {
            self.polled = true;
            let Some(lp) = self.flight.lp.upgrade() else {
                return Poll::Ready(Err(ClientError::Cancelled));
            };
            self.flight.st.borrow_mut().waiter = Waiter::Task(Some(cx.waker().clone()), None);
            self.flight.start(&lp);
        }
        let mut st = self.flight.st.borrow_mut();
        match &mut st.waiter {
            Waiter::Task(_, answer @ Some(_)) => Poll::Ready(answer.take().expect("matched")),
            Waiter::Task(w, None) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(Err(ClientError::Cancelled)),
        }
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        if self.polled && !self.flight.st.borrow().answered {
            if let Some(lp) = self.flight.lp.upgrade() {
                self.flight.cancel(&lp);
            }
        }
    }
}

impl fmt::Debug for Fetching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.flight.st.borrow();
        f.debug_struct("Fetching")
            .field("method", &st.req.method)
            .field("url", &st.req.url)
            .finish()
    }
}

/// A fetch in flight ([`Fetching::exchange`]): writes its streamed request body
/// ([`ClientRequest::streamed_body`]), and cancels it. Clone it freely.
///
/// ```
/// use coreloop::http::{Application, ClientRequest, HttpClient, HttpServer, Route};
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(1)).build()?;
/// let app = Application::new().route("/up", Route::new().post(|_, req, mut resp| {
///     resp.write(format!("{} bytes", req.body().len()));
/// }));
/// let server = HttpServer::new(app).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
/// let url = format!("http://{}/up", server.local_addr());
/// let (tx, rx) = std::sync::mpsc::channel();
/// rt.handle(0).add_callback(move |lp| {
///     let fetching = HttpClient::default().fetch(lp, ClientRequest::new("POST", &url).streamed_body(None));
///     let upload = fetching.exchange();
///     fetching.then(move |_, r| tx.send(r.map(|r| r.body().to_vec())).unwrap());
///     // Parts as they are made (chunked: the length was not known).
///     for part in [&b"hello, "[..], b"world"] {
///         let _ = upload.write_body(part); // a BodyWriting: then/await it to wait for room
///     }
///     upload.finish_body().unwrap();
/// })?;
/// assert_eq!(rx.recv()?.unwrap(), b"12 bytes");
/// rt.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Exchange {
    flight: Rc<Flight>,
}

impl Exchange {
    /// Writes part of the streamed request body: buffered at once (sent once a
    /// connection carries the request); the [`BodyWriting`] it gives says when there is
    /// room for more (at once, unless more than the connection's high-water mark waits
    /// to be sent). An error if the request has no streamed body, the body is finished
    /// or would pass its length, or the fetch has failed.
    pub fn write_body(&self, data: &[u8]) -> BodyWriting {
        let error = self.write(data, false).err();
        BodyWriting {
            flight: self.flight.clone(),
            error,
        }
    }

    /// Ends the streamed request body (with its last chunk, if chunked). A body with a
    /// length that is short of it fails the fetch.
    pub fn finish_body(&self) -> Result<(), ClientError> {
        self.write(&[], true)
    }

    /// True while more than the high-water mark (1 MiB) of the body waits to be sent:
    /// wait for the [`BodyWriting`] before writing more.
    pub fn over_high_water(&self) -> bool {
        match self.flight.conn() {
            Some(c) => c.over_high_water(),
            None => self.flight.st.borrow().early_body.len() > crate::DEFAULT_HIGH_WATER,
        }
    }

    /// Cancels the fetch: whoever waits for its answer (or a part of its body) gets
    /// [`ClientError::Cancelled`], and its connection, if it has one, closes. Nothing
    /// happens if it is over.
    pub fn cancel(&self) {
        if let Some(lp) = self.flight.lp.upgrade() {
            self.flight.cancel(&lp);
        }
    }

    fn write(&self, data: &[u8], last: bool) -> Result<(), ClientError> {
        let f = &self.flight;
        let lp = f.lp.upgrade().ok_or(ClientError::Cancelled)?;
        let invalid = |why: &str| Err(ClientError::Invalid(why.to_string()));
        let length = {
            let st = f.st.borrow();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            let Body::Streamed(length) = st.req.body else {
                return invalid("the request has no streamed body");
            };
            if st.body_done {
                return invalid("the body is finished already");
            }
            if st.complete {
                return invalid("the response came before the body was finished");
            }
            let after = st.body_written + data.len() as u64;
            match length {
                Some(n) if after > n => return invalid("more body bytes than its Content-Length"),
                Some(n) if last && after < n => {
                    drop(st);
                    let e =
                        ClientError::Invalid("the body is shorter than its Content-Length".into());
                    f.fail(&lp, e.clone());
                    return Err(e);
                }
                _ => {}
            }
            length
        };
        if data.is_empty() && !last {
            return Ok(());
        }
        let frame = |out: &mut Vec<u8>| {
            if length.is_some() {
                out.extend_from_slice(data);
                return;
            }
            if !data.is_empty() {
                let mut hex = [0u8; 16];
                let n = hex_len(data.len(), &mut hex);
                out.extend_from_slice(&hex[..n]);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            if last {
                out.extend_from_slice(b"0\r\n\r\n");
            }
        };
        {
            let mut st = f.st.borrow_mut();
            st.body_written += data.len() as u64;
            st.body_done = last;
        }
        match f.conn() {
            Some(c) => c
                .write_body(&lp, frame, last)
                .map_err(ClientError::connection),
            None => {
                frame(&mut f.st.borrow_mut().early_body);
                Ok(())
            }
        }
    }
}

/// `n` in hexadecimal, into `out`; the digits' count.
fn hex_len(mut n: usize, out: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 16];
    let mut i = 0;
    loop {
        digits[i] = b"0123456789abcdef"[n & 15];
        i += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for (o, d) in out.iter_mut().zip(digits[..i].iter().rev()) {
        *o = *d;
    }
    i
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange").finish_non_exhaustive()
    }
}

/// A part of a streamed request body written ([`Exchange::write_body`]): the bytes
/// are buffered already; continue with [`then`](Self::then) or `.await` it to wait
/// until there is room for more (it answers at once unless over the high-water mark),
/// or for the error that means no more can be sent. Dropping it drops only the wait.
#[must_use = "ignore it only if you check Exchange::over_high_water yourself"]
pub struct BodyWriting {
    flight: Rc<Flight>,
    error: Option<ClientError>,
}

impl BodyWriting {
    fn ready(&self) -> Option<Result<(), ClientError>> {
        if let Some(e) = &self.error {
            return Some(Err(e.clone()));
        }
        if let Some(e) = &self.flight.st.borrow().failed {
            return Some(Err(e.clone()));
        }
        let exchange = Exchange {
            flight: self.flight.clone(),
        };
        (!exchange.over_high_water()).then_some(Ok(()))
    }

    /// Runs `then` on the loop once there is room for more body (or with the error),
    /// in a later step.
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, Result<(), ClientError>) + 'static,
    {
        let Some(lp) = self.flight.lp.upgrade() else {
            return;
        };
        if let Some(r) = self.ready() {
            return lp.add_callback(move |lp| then(lp, r));
        }
        self.flight.st.borrow_mut().drain = Some(DrainWaiter::Then(Box::new(then)));
        if let Some(c) = self.flight.conn() {
            c.when_drained(&self.flight);
        }
    }
}

impl Future for BodyWriting {
    type Output = Result<(), ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.ready() {
            return Poll::Ready(r);
        }
        self.flight.st.borrow_mut().drain = Some(DrainWaiter::Task(cx.waker().clone()));
        if let Some(c) = self.flight.conn() {
            c.when_drained(&self.flight);
        }
        Poll::Pending
    }
}

impl fmt::Debug for BodyWriting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyWriting")
            .field("error", &self.error)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_goes_to_every_core() {
        fn both<T: Send + Sync>() {}
        both::<super::HttpClient>();
        both::<super::ClientConfig>();
    }

    #[test]
    fn chunk_sizes_in_hex() {
        let mut out = [0u8; 16];
        for n in [0usize, 1, 15, 16, 255, 4096, usize::MAX] {
            let len = super::hex_len(n, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), format!("{n:x}"));
        }
    }
}
