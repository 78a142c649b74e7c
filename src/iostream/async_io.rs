//! The stream for tasks: what the awaited reads, writes and closes poll, and
//! `futures_io`'s `AsyncRead` and `AsyncWrite`, on the same buffers as the callbacks.
//!
//! A task does not leave a pending read behind: each poll looks at the read buffer,
//! takes what it asked for if it is there, and otherwise leaves a waker to be woken when
//! bytes (or the end of the stream) arrive. So a read future dropped part-way has taken
//! nothing: bytes already received stay in the buffer for the next read. Writes copy
//! into the stream's write buffer, whose sends own their bytes until the kernel is done
//! with them (on io_uring, until the completion), whatever happens to the future: a
//! write future dropped after a partial write has handed over exactly the bytes it
//! reported, and no more. One reader at a time: a callback read and a task cannot both
//! wait for bytes.

use super::ops::Until;
use super::read::ReadKind;
use super::{IoStream, StreamError};
use futures_io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

impl IoStream {
    /// A read of `kind` now, or a waker left for when it may be.
    pub(super) fn poll_read_kind(
        &self,
        cx: &mut Context<'_>,
        kind: &ReadKind,
    ) -> Poll<io::Result<Vec<u8>>> {
        let Some(lp) = self.lp() else {
            return Poll::Ready(Err(StreamError::Closed.into()));
        };
        if self.inner.st.borrow().r.read.is_some() {
            return Poll::Ready(Err(StreamError::ReadPending.into()));
        }
        if let Some(r) = self.try_read(&lp, kind) {
            self.stop_waiting_to_read();
            return Poll::Ready(r);
        }
        self.inner.st.borrow_mut().r.waker = Some(cx.waker().clone());
        // A waiting task has room (receiving may have paused while bytes piled up).
        self.pace_receiving(Some(&lp));
        Poll::Pending
    }

    /// A task's read ended (done, failed or dropped): it no longer waits for bytes.
    pub(super) fn stop_waiting_to_read(&self) {
        if let Ok(mut st) = self.inner.st.try_borrow_mut() {
            st.r.waker = None;
        }
    }

    /// Takes as much of `data` as fits below the high-water mark (at least one chunk),
    /// or leaves a waker for when the buffer drains.
    fn poll_write_some(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = {
            let st = self.inner.st.borrow();
            if st.closed {
                return Poll::Ready(Err(st.closed_error()));
            }
            st.w.high_water().saturating_sub(st.w.buffered())
        };
        if room == 0 {
            self.inner.st.borrow_mut().w.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // At least 16 KiB per step, so a low high-water mark still moves.
        let n = data.len().min(room.max(16 * 1024));
        Poll::Ready(
            self.write_with(|out| out.extend_from_slice(&data[..n]))
                .map(|()| n),
        )
    }
}

/// `futures_io::AsyncRead`: the futures ecosystem's readers (`futures::io::copy`,
/// `BufReader`, framed codecs) work on a stream. Reads what is buffered, or waits; 0 at
/// the end of the stream.
impl AsyncRead for IoStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.poll_read_kind(cx, &ReadKind::Partial(buf.len())) {
            Poll::Ready(Ok(bytes)) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Poll::Ready(Ok(bytes.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `futures_io::AsyncWrite`: a write takes what fits below the high-water mark (and
/// waits while the stream is over it: back-pressure); flush waits until the bytes have
/// gone to the kernel; close is [`IoStream::close`] awaited (the bytes go out, then the
/// socket closes).
impl AsyncWrite for IoStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_some(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mark = self.inner.st.borrow().w.written();
        self.poll_until(cx, Until::Sent(mark))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(lp) = self.lp() {
            self.close_gracefully(&lp);
        }
        self.poll_until(cx, Until::Closed)
    }
}
