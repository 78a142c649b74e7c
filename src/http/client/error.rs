//! `ClientError`: why a fetch gave no response, as a value a caller (a proxy choosing
//! between 502 and 504) can match.

use crate::http::framing::FramingError;
use crate::tls::TlsError;
use std::fmt;
use std::io;
use std::sync::Arc;

/// Which deadline of a fetch passed (see [`ClientConfig`](super::ClientConfig)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Waiting in the host's queue for a connection (`connect_timeout`).
    Queue,
    /// Connecting (`connect_timeout`).
    Connect,
    /// Waiting for the whole response head once the request was sent (`head_timeout`).
    Head,
    /// Waiting for the next bytes of a body, either way (`body_timeout`).
    Body,
    /// The whole fetch (`total_timeout`, or the request's own).
    Total,
}

/// Why a fetch (or a part of a streamed body) gave nothing.
///
/// ```
/// use coreloop::http::{ClientError, Deadline};
/// use coreloop::tls::TlsError;
/// let e = ClientError::Timeout(Deadline::Head);
/// assert_eq!(e.to_string(), "timed out waiting for the response head");
/// assert!(e.is_timeout());
/// let e = ClientError::Tls(TlsError::Certificate);
/// assert_eq!((e.kind(), e.is_timeout()), ("tls", false));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The request cannot be made as given: a malformed URL, a scheme other than
    /// `http` and `https`, a header value with CR or LF, a body that does not match its
    /// length, a redirect from `https` to `http`.
    Invalid(String),
    /// Connecting failed (refused, unreachable, out of descriptors), the host's name
    /// could not be looked up, or, for `https`, the system's root certificates could
    /// not be loaded.
    Connect(Arc<io::Error>),
    /// The TLS handshake of an `https` fetch failed, for the reason given:
    /// [`TlsError::Certificate`] for a certificate that does not verify (not signed by
    /// a trusted root, expired, or not for the URL's host), [`TlsError::BadMessage`] for
    /// a server that does not speak TLS, [`TlsError::Incompatible`] for no common
    /// parameters. (A handshake past `connect_timeout` is a [`ClientError::Timeout`].)
    Tls(TlsError),
    /// A deadline passed.
    Timeout(Deadline),
    /// Too many requests wait for a connection to this host (`max_queued`).
    QueueFull,
    /// The server's answer is malformed (its framing cannot be trusted).
    Malformed(FramingError),
    /// A buffered response's body is over `max_body` bytes.
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The connection failed or ended before the answer was complete (reset, closed
    /// mid-body).
    Connection(Arc<io::Error>),
    /// The fetch was cancelled ([`Exchange::cancel`](super::Exchange::cancel), a
    /// dropped future or response).
    Cancelled,
    /// More redirects than the request allowed.
    TooManyRedirects,
}

impl ClientError {
    /// True for [`ClientError::Timeout`] (a proxy answers 504 for these, 502 for the
    /// rest).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout(_))
    }

    /// The kind of error, as a short label (`connect`, `tls`, `timeout`, `queue_full`,
    /// `malformed`, `too_large`, `connection`, `cancelled`, `invalid`, `redirects`),
    /// for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Invalid(_) => "invalid",
            ClientError::Connect(_) => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::Timeout(_) => "timeout",
            ClientError::QueueFull => "queue_full",
            ClientError::Malformed(_) => "malformed",
            ClientError::TooLarge { .. } => "too_large",
            ClientError::Connection(_) => "connection",
            ClientError::Cancelled => "cancelled",
            ClientError::TooManyRedirects => "redirects",
        }
    }

    pub(super) fn connection(e: io::Error) -> ClientError {
        ClientError::Connection(Arc::new(e))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Invalid(why) => write!(f, "invalid request: {why}"),
            ClientError::Connect(e) => write!(f, "connecting failed: {e}"),
            ClientError::Tls(e) => write!(f, "TLS with the server failed: {e}"),
            ClientError::Timeout(d) => f.write_str(match d {
                Deadline::Queue => "timed out waiting for a connection in the host's queue",
                Deadline::Connect => "timed out connecting",
                Deadline::Head => "timed out waiting for the response head",
                Deadline::Body => "timed out waiting for body bytes",
                Deadline::Total => "the fetch timed out",
            }),
            ClientError::QueueFull => f.write_str("too many requests wait for this host"),
            ClientError::Malformed(e) => write!(f, "bad response: {e}"),
            ClientError::TooLarge { limit } => {
                write!(f, "response body over the limit ({limit} bytes)")
            }
            ClientError::Connection(e) => write!(f, "connection failed: {e}"),
            ClientError::Cancelled => f.write_str("the fetch was cancelled"),
            ClientError::TooManyRedirects => f.write_str("too many redirects"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) | ClientError::Connection(e) => Some(&**e),
            ClientError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ClientError> for io::Error {
    fn from(e: ClientError) -> io::Error {
        let kind = match &e {
            ClientError::Invalid(_) => io::ErrorKind::InvalidInput,
            ClientError::Connect(e) | ClientError::Connection(e) => e.kind(),
            ClientError::Timeout(_) => io::ErrorKind::TimedOut,
            ClientError::QueueFull => io::ErrorKind::WouldBlock,
            ClientError::Malformed(_) | ClientError::TooLarge { .. } | ClientError::Tls(_) => {
                io::ErrorKind::InvalidData
            }
            ClientError::Cancelled => io::ErrorKind::Interrupted,
            ClientError::TooManyRedirects => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
