//! One value per stream operation, waited for two ways: a continuation with `then`
//! (Tornado's callbacks) or `.await` in a task. [`Reading`] is a read (lazy: nothing is
//! taken from the stream until it is given a continuation or polled), [`Writing`] a
//! write and [`Flushing`] a flush or a close (both eager: the bytes are in the stream's
//! buffer, or the close has begun, when the call returns; the value says when they
//! have gone out).

use super::read::{ReadKind, Reader};
use super::{IoStream, StreamError};
use crate::reactor::IoLoop;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A read from an [`IoStream`]: [`read_until`](IoStream::read_until),
/// [`read_bytes`](IoStream::read_bytes), [`read_some`](IoStream::read_some) or
/// [`read_until_close`](IoStream::read_until_close). Give it a continuation with
/// [`then`](Reading::then), or `.await` it in a task; until then nothing is read.
/// Dropping an awaited read before it completes takes nothing from the stream: the
/// bytes that came stay buffered for the next read.
#[must_use = "a read does nothing until it is given a continuation with then() or awaited"]
pub struct Reading {
    stream: IoStream,
    kind: Result<ReadKind, StreamError>,
    /// This read registered as the stream's reader (a task waiting for bytes).
    waiting: bool,
}

impl Reading {
    pub(super) fn new(stream: &IoStream, kind: Result<ReadKind, StreamError>) -> Reading {
        Reading {
            stream: stream.clone(),
            kind,
            waiting: false,
        }
    }

    /// Reads, then runs `then` with the bytes (or why there are none) on the stream's
    /// loop, in a later step than this call. It always runs, unless the loop closes
    /// first: a read that cannot start (another read is pending, a bad delimiter) gets
    /// its error there too. A stream with a read pending is kept open even if no handle
    /// to it is left.
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<Vec<u8>>) + 'static,
    {
        let cb = Reader::Once(Box::new(then));
        let started = match self.kind {
            Ok(kind) => self.stream.start_read(kind, cb),
            Err(e) => Err((e.into(), cb)),
        };
        if let Err((e, cb)) = started {
            let s = self.stream.clone();
            if let Some(lp) = self.stream.lp() {
                lp.add_callback(move |lp| cb.call(lp, &s, Err(e)));
            }
        }
    }
}

impl Future for Reading {
    type Output = io::Result<Vec<u8>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let kind = match self.kind {
            Ok(kind) => kind,
            Err(e) => return Poll::Ready(Err(e.into())),
        };
        let r = self.stream.poll_read_kind(cx, &kind);
        self.waiting = r.is_pending();
        r
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        if self.waiting {
            self.stream.stop_waiting_to_read();
        }
    }
}

impl fmt::Debug for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reading").finish_non_exhaustive()
    }
}

/// What a [`Writing`] or [`Flushing`] waits for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Until {
    /// Every byte written before this mark has gone to the kernel.
    Sent(u64),
    /// The stream has closed, its bytes sent (or cut off).
    Closed,
    /// The TLS handshake has ended.
    Handshake,
}

/// A write to an [`IoStream`] ([`write`](IoStream::write)): the bytes are in the
/// stream's buffer already and go out while the loop runs, whether or not anyone waits.
/// Wait for them to have gone to the kernel with [`then`](Writing::then) or `.await`,
/// which answer with how many bytes were written (all of them), or why they could not
/// be (the stream is closed, or the write would pass its buffer limit).
///
/// Dropping it does not take the bytes back: a write followed by
/// [`close`](IoStream::close) delivers them.
pub struct Writing {
    stream: IoStream,
    state: Result<(u64, usize), io::Error>,
}

impl Writing {
    pub(super) fn new(stream: &IoStream, state: Result<(u64, usize), io::Error>) -> Writing {
        Writing {
            stream: stream.clone(),
            state,
        }
    }

    /// Runs `then` on the stream's loop once the bytes have gone to the kernel (or with
    /// the error that means they will not), in a later step than this call. A stream
    /// with a write waiting is kept open even if no handle to it is left.
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<usize>) + 'static,
    {
        match self.state {
            Ok((mark, n)) => self.stream.when_sent(
                Until::Sent(mark),
                Box::new(move |lp, s, r| then(lp, s, r.map(|()| n))),
            ),
            Err(e) => {
                let s = self.stream.clone();
                if let Some(lp) = self.stream.lp() {
                    lp.add_callback(move |lp| then(lp, &s, Err(e)));
                }
            }
        }
    }
}

impl Future for Writing {
    type Output = io::Result<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (mark, n) = match &mut self.state {
            Ok(x) => *x,
            Err(e) => {
                let e = std::mem::replace(e, StreamError::Closed.into());
                return Poll::Ready(Err(e));
            }
        };
        self.stream
            .poll_until(cx, Until::Sent(mark))
            .map(|r| r.map(|()| n))
    }
}

impl fmt::Debug for Writing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writing").finish_non_exhaustive()
    }
}

/// A flush ([`flush`](IoStream::flush)) or a close ([`close`](IoStream::close)) of an
/// [`IoStream`], begun already: wait for it with [`then`](Flushing::then) or `.await`.
/// A flush is done once everything written before it has gone to the kernel; a close
/// once that has happened and the socket is closed. Either answers the error that cut
/// it short, if one did.
pub struct Flushing {
    stream: IoStream,
    until: Until,
}

impl Flushing {
    pub(super) fn new(stream: &IoStream, until: Until) -> Flushing {
        Flushing {
            stream: stream.clone(),
            until,
        }
    }

    /// Runs `then` on the stream's loop once done, in a later step than this call.
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, &IoStream, io::Result<()>) + 'static,
    {
        self.stream.when_sent(self.until, Box::new(then));
    }
}

impl Future for Flushing {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.stream.poll_until(cx, self.until)
    }
}

impl fmt::Debug for Flushing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flushing")
            .field("until", &self.until)
            .finish()
    }
}
