//! HTTP/1.1 on [`IoStream`](crate::IoStream): an [`Application`] of routes, served by
//! [`HttpServer`] on every core.
//!
//! Requests are decoded by a sans-I/O decoder that makes every framing decision in one
//! place, following RFC 9112 strictly (keep-alive, pipelining, Content-Length and
//! chunked bodies, `Expect: 100-continue`; CRLF is the only line ending). Bad input gets
//! its status code: a malformed request 400 (a bare CR or LF, a missing, repeated or
//! invalid `Host`, Content-Length with Transfer-Encoding or conflicting lengths, a
//! Transfer-Encoding whose final coding is not chunked, one in an HTTP/1.0 request, a
//! target outside RFC 3986's characters or with a fragment or userinfo), another
//! coding under chunked 501, another major HTTP version 505, a header section over the
//! limit 431, a URI over the limit 414, a body over the limit 413, then the connection
//! closes. No route is 404, a method without a handler 405 with `Allow`, a panicking
//! handler 500.
//!
//! Memory per connection is bounded: a client that pipelines requests without reading
//! the answers stops being read once the unsent answers pass the stream's high-water
//! mark, and one that stops reading altogether is closed after
//! [`HttpConfig::send_timeout`].

mod app;
mod client;
mod conn;
mod date;
mod decoder;
mod error;
pub mod framing;
mod head;
mod request;
mod request_decoder;
mod response;
mod response_decoder;
mod response_head;
mod server;
mod server_conns;
mod stats;

/// The request decoder's insides, for the fuzz targets (feature `fuzzing`): not a
/// stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use super::decoder::{decode_all, Decoded, Message, Outcome};
}

pub use app::{Application, AsyncReturn, HandlerReturn, Route};
#[doc(hidden)]
pub use app::{Async, Fallible, Plain};
pub(crate) use client::{by_upstream as client_by_upstream, client_stats};
pub use client::{
    BodyReading, BodyWriting, ClientConfig, ClientError, ClientRequest, ClientResponse,
    ClientStats, Deadline, Exchange, Fetching, HttpClient,
};
pub use error::HttpError;
pub use request::Request;
#[doc(hidden)]
pub use response::Answer;
pub use response::Response;
pub use server::HttpServer;
pub(crate) use server_conns::{server_stats, server_stats_of};
pub(crate) use stats::REFUSALS;
pub use stats::{HttpStats, RouteLatency};

use crate::net::ListenOptions;
use std::time::Duration;

/// The largest request head any configuration allows, bytes (64 KiB less 2: a request
/// refers to its head with 16-bit offsets, which keeps it small).
///
/// ```
/// use coreloop::http::{HttpConfig, MAX_HEAD_LIMIT};
/// let cfg = HttpConfig { max_head: 48 * 1024, ..HttpConfig::default() };
/// assert!(cfg.max_head <= MAX_HEAD_LIMIT);
/// ```
pub const MAX_HEAD_LIMIT: usize = u16::MAX as usize - 1;

/// Limits and timeouts of an [`HttpServer`].
///
/// ```
/// use coreloop::http::HttpConfig;
/// use std::time::Duration;
/// let cfg = HttpConfig { max_body: 1 << 20, idle_timeout: Duration::from_secs(5), ..HttpConfig::default() };
/// assert_eq!(cfg.max_head, 16 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request head (request line and headers), bytes: past it, 431 (or 414 if
    /// the request line alone is too long). At most [`MAX_HEAD_LIMIT`]; a larger value
    /// counts as that.
    pub max_head: usize,
    /// Longest request target, bytes: past it, 414.
    pub max_uri: usize,
    /// Most header fields: past it, 431.
    pub max_headers: usize,
    /// Largest request body, bytes: past it, 413.
    pub max_body: usize,
    /// How long a request head may take to arrive: the first from when the connection
    /// opens, a later one from its first byte. Not extended by progress, so a client
    /// trickling a head is closed at this deadline whatever its rate.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive (from the end of its head; not
    /// extended by progress).
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for the first byte of its next
    /// request (from then on, `header_timeout` bounds the head).
    pub idle_timeout: Duration,
    /// How long a handler may take to finish its response (default 60 s; `None`: no
    /// limit, and a response a handler forgets but keeps hangs its client). Past it the
    /// request is answered 503 (a response already streaming is cut off) and the
    /// connection closes; the late response is ignored.
    pub handler_timeout: Option<Duration>,
    /// How long a connection may go without sending anything while it waits for the
    /// client to read its answers (it answered its last request, or paused reading a
    /// client that pipelines without reading): then it is closed.
    pub send_timeout: Duration,
    /// Whether a connection may carry more than one request (default true). False:
    /// every response says `Connection: close` and the connection closes after it
    /// (Tornado's `no_keep_alive`).
    pub keep_alive: bool,
    /// Trust the headers a proxy in front sets (Tornado's `xheaders`): the client's
    /// address from `X-Real-Ip`, else the last `X-Forwarded-For` value, and the scheme
    /// from `X-Scheme`, else `X-Forwarded-Proto`, become
    /// [`Request::remote_ip`] and [`Request::scheme`]. Only behind a proxy that sets
    /// them: a client reaching the server directly could claim any address. Default
    /// false.
    pub xheaders: bool,
    /// Listening: backlog, per-core connection limit, fd-exhaustion pause.
    pub listen: ListenOptions,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_head: 16 * 1024,
            max_uri: 8 * 1024,
            max_headers: 64,
            max_body: 8 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handler_timeout: Some(Duration::from_secs(60)),
            send_timeout: Duration::from_secs(60),
            keep_alive: true,
            xheaders: false,
            listen: ListenOptions::default(),
        }
    }
}
