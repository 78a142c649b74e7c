//! `StreamError`: why a stream operation failed, as a value a caller can match.
//!
//! Stream methods keep returning `io::Result` (what the rest of the I/O world speaks);
//! an error the stream itself decided on carries a [`StreamError`] inside, found with
//! [`StreamError::of`]. Errors from the socket are the operating system's, kept by their
//! error number and given back exactly.

use std::fmt;
use std::io;

/// Why a stream refused or failed an operation (the stream's own reasons; socket
/// errors are plain OS errors).
///
/// ```
/// use coreloop::{IoLoop, IoStream, StreamError};
/// use std::io::Write;
/// let lp = IoLoop::new()?;
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let s = IoStream::new(&lp, a)?;
/// b.write_all(b"no newline in sight")?;
/// s.read_until(b"\n", 8).then(|lp, _, r| {
///     let e = r.unwrap_err();
///     assert_eq!(StreamError::of(&e), Some(StreamError::TooLong { max_bytes: 8, closed: true }));
///     lp.stop();
/// });
/// lp.start()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// A delimited read found no delimiter within `max_bytes`. `closed`: the stream
    /// closed (`read_until`); otherwise it stays open with the data still buffered
    /// (`read_until_within`). Kind `InvalidData`.
    TooLong {
        /// The limit the read was given.
        max_bytes: usize,
        /// Whether the stream closed because of it.
        closed: bool,
    },
    /// A read could not finish within the maximum read buffer size
    /// ([`IoStream::set_max_buffer_size`](crate::IoStream::set_max_buffer_size)): the
    /// buffer is full and the read still waits for more. The stream closed. Kind
    /// `InvalidData`.
    ReadBufferFull {
        /// The limit.
        limit: usize,
    },
    /// A write would have passed the write buffer's limit
    /// ([`IoStream::set_max_write_buffer`](crate::IoStream::set_max_write_buffer)): the
    /// peer is not reading. The stream closed. Kind `InvalidData`.
    WriteBufferFull {
        /// The limit.
        limit: usize,
    },
    /// A read asked for more than the maximum read buffer size can ever hold. Kind
    /// `InvalidInput`.
    ReadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The peer ended the stream before a read could complete. Kind `UnexpectedEof`.
    Eof,
    /// The stream is closed (by [`close`](crate::IoStream::close) or at end of file).
    /// Kind `NotConnected`.
    Closed,
    /// A read is already pending on this stream. Kind `ResourceBusy`.
    ReadPending,
    /// A delimiter must be 1 to 16 bytes. Kind `InvalidInput`.
    BadDelimiter,
    /// The stream was closed with bytes still to send, and the peer did not take them
    /// within the stream's linger time
    /// ([`IoStream::set_linger`](crate::IoStream::set_linger)): the connection was cut.
    /// Kind `TimedOut`.
    LingerTimeout,
    /// TLS failed: the handshake (or a record after it) failed, for the reason given;
    /// the stream closed. Kind `TimedOut` for [`TlsError::Timeout`](crate::tls::TlsError::Timeout),
    /// `UnexpectedEof` for [`TlsError::Eof`](crate::tls::TlsError::Eof), `InvalidData`
    /// otherwise.
    Tls(crate::tls::TlsError),
}

impl StreamError {
    /// The stream error inside `e`, if a stream made it.
    pub fn of(e: &io::Error) -> Option<StreamError> {
        e.get_ref()?.downcast_ref::<StreamError>().copied()
    }

    /// The `io::ErrorKind` the error travels as.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StreamError::TooLong { .. }
            | StreamError::ReadBufferFull { .. }
            | StreamError::WriteBufferFull { .. } => io::ErrorKind::InvalidData,
            StreamError::ReadTooLarge { .. } | StreamError::BadDelimiter => {
                io::ErrorKind::InvalidInput
            }
            StreamError::Eof => io::ErrorKind::UnexpectedEof,
            StreamError::Closed => io::ErrorKind::NotConnected,
            StreamError::ReadPending => io::ErrorKind::ResourceBusy,
            StreamError::LingerTimeout => io::ErrorKind::TimedOut,
            StreamError::Tls(crate::tls::TlsError::Timeout) => io::ErrorKind::TimedOut,
            StreamError::Tls(crate::tls::TlsError::Eof) => io::ErrorKind::UnexpectedEof,
            StreamError::Tls(_) => io::ErrorKind::InvalidData,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::TooLong {
                max_bytes,
                closed: true,
            } => write!(f, "delimiter not found within {max_bytes} bytes"),
            StreamError::TooLong { max_bytes, .. } => write!(
                f,
                "delimiter not found within {max_bytes} bytes (stream left open)"
            ),
            StreamError::ReadBufferFull { limit } => {
                write!(f, "read buffer over its maximum size ({limit} bytes)")
            }
            StreamError::WriteBufferFull { limit } => write!(
                f,
                "write buffer over its limit ({limit} bytes): the peer is not reading"
            ),
            StreamError::ReadTooLarge { limit } => write!(
                f,
                "read larger than the stream's maximum buffer size ({limit} bytes)"
            ),
            StreamError::Eof => f.write_str("the peer closed the stream before the read completed"),
            StreamError::Closed => f.write_str("stream is closed"),
            StreamError::ReadPending => f.write_str("a read is already pending on this stream"),
            StreamError::BadDelimiter => f.write_str("a delimiter is 1 to 16 bytes"),
            StreamError::LingerTimeout => f.write_str(
                "closed with bytes unsent, and the peer did not take them within the linger time",
            ),
            StreamError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Why a stream closed, kept so that the same error can be given again to every later
/// call (`io::Error` is not `Clone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Stream(StreamError),
    /// An OS error, by number: rebuilt exactly.
    Os(i32),
    /// Any other error, by kind.
    Kind(io::ErrorKind),
}

impl Failure {
    pub(crate) fn of(e: &io::Error) -> Failure {
        if let Some(se) = StreamError::of(e) {
            Failure::Stream(se)
        } else if let Some(code) = e.raw_os_error() {
            Failure::Os(code)
        } else {
            Failure::Kind(e.kind())
        }
    }

    pub(crate) fn to_error(self) -> io::Error {
        match self {
            Failure::Stream(se) => se.into(),
            Failure::Os(code) => io::Error::from_raw_os_error(code),
            Failure::Kind(kind) => kind.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_give_back_the_same_error() {
        let cases = [
            io::Error::from(StreamError::WriteBufferFull { limit: 10 }),
            io::Error::from_raw_os_error(libc::ECONNRESET),
            io::Error::from(io::ErrorKind::WriteZero),
        ];
        for e in cases {
            let back = Failure::of(&e).to_error();
            assert_eq!(back.kind(), e.kind());
            assert_eq!(back.raw_os_error(), e.raw_os_error());
            assert_eq!(StreamError::of(&back), StreamError::of(&e));
            assert_eq!(back.to_string(), e.to_string());
        }
    }
}
