//! The stream for tasks: async reads and writes, and `futures_io`'s `AsyncRead` and
//! `AsyncWrite`, on the same buffers as the callback API.
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

use super::read::ReadKind;
use super::{IoStream, StreamError};
use futures_io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

impl IoStream {
    /// A read of `kind` now, or a waker left for when it may be.
    fn poll_read_kind(&self, cx: &mut Context<'_>, kind: &ReadKind) -> Poll<io::Result<Vec<u8>>> {
        let Some(lp) = self.lp() else {
            return Poll::Ready(Err(StreamError::Closed.into()));
        };
        if self.inner.st.borrow().r.read.is_some() {
            return Poll::Ready(Err(StreamError::ReadPending.into()));
        }
        if let Some(r) = self.try_read(&lp, kind) {
            return Poll::Ready(r);
        }
        self.inner.st.borrow_mut().r.waker = Some(cx.waker().clone());
        // A waiting task has room (receiving may have paused while bytes piled up).
        self.pace_receiving(Some(&lp));
        Poll::Pending
    }

    /// Reads up to and including `delimiter` (1 to 16 bytes), as
    /// [`read_until`](Self::read_until) does: past `max_bytes` without the delimiter it
    /// fails with [`StreamError::TooLong`] and the stream closes. Dropping the future
    /// before it completes takes nothing from the stream.
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::io::Write;
    /// let lp = IoLoop::new()?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"GET / HTTP/1.0\r\n\r\nrest")?;
    /// let head = lp.run_until_complete(async move { s.read_until_async(b"\r\n\r\n", 1024).await })?;
    /// assert_eq!(head?, b"GET / HTTP/1.0\r\n\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn read_until_async(
        &self,
        delimiter: &[u8],
        max_bytes: usize,
    ) -> io::Result<Vec<u8>> {
        let kind = ReadKind::until(delimiter, max_bytes)?;
        let _clear = ClearReader(self);
        std::future::poll_fn(|cx| self.poll_read_kind(cx, &kind)).await
    }

    /// Reads exactly `n` bytes; fails with [`StreamError::Eof`] if the stream ends first
    /// (the bytes that did come stay buffered). `n` above the maximum read buffer size is
    /// [`StreamError::ReadTooLarge`].
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::io::Write;
    /// let lp = IoLoop::new()?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"abcdef")?;
    /// let got = lp.run_until_complete(async move { s.read_exact_async(4).await })?;
    /// assert_eq!(got?, b"abcd");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn read_exact_async(&self, n: usize) -> io::Result<Vec<u8>> {
        let limit = self.inner.st.borrow().r.max_buffer();
        if n > limit {
            return Err(StreamError::ReadTooLarge { limit }.into());
        }
        let _clear = ClearReader(self);
        std::future::poll_fn(|cx| self.poll_read_kind(cx, &ReadKind::Bytes(n))).await
    }

    /// Reads what is available: at least one byte and at most `max_bytes`, or nothing
    /// (an empty `Vec`) once the stream has ended.
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::io::Write;
    /// let lp = IoLoop::new()?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"xyz")?;
    /// drop(b);
    /// let (first, then) = lp.run_until_complete(async move {
    ///     (s.read_some_async(2).await, s.read_some_async(2).await)
    /// })?;
    /// assert_eq!((first?, then?), (b"xy".to_vec(), b"z".to_vec()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn read_some_async(&self, max_bytes: usize) -> io::Result<Vec<u8>> {
        if max_bytes == 0 {
            return Ok(Vec::new());
        }
        let _clear = ClearReader(self);
        let r =
            std::future::poll_fn(|cx| self.poll_read_kind(cx, &ReadKind::Partial(max_bytes))).await;
        match r {
            Err(e) if StreamError::of(&e) == Some(StreamError::Eof) => Ok(Vec::new()),
            r => r,
        }
    }

    /// Writes all of `data`, waiting whenever more than the high-water mark is buffered
    /// (back-pressure: a slow reader slows the writer instead of growing the buffer).
    /// Returns once the last byte is in the write buffer (see
    /// [`flush_async`](Self::flush_async) to wait until it has gone to the kernel).
    /// Dropped part-way, the bytes already handed over are sent, and no more.
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::io::Read;
    /// let lp = IoLoop::new()?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// let reader = std::thread::spawn(move || {
    ///     let mut all = Vec::new();
    ///     b.read_to_end(&mut all).unwrap();
    ///     all.len()
    /// });
    /// lp.run_until_complete(async move {
    ///     s.write_all_async(&vec![7u8; 5 << 20]).await?; // 5 MiB, 1 MiB buffered at most
    ///     s.flush_async().await?;
    ///     s.close();
    ///     Ok::<_, std::io::Error>(())
    /// })??;
    /// assert_eq!(reader.join().unwrap(), 5 << 20);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn write_all_async(&self, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            done += std::future::poll_fn(|cx| self.poll_write_some(cx, &data[done..])).await?;
        }
        Ok(())
    }

    /// Waits until everything written so far has been handed to the kernel.
    pub async fn flush_async(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flushed(cx)).await
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
        Poll::Ready(self.write(&data[..n]).map(|()| n))
    }

    /// Done once nothing written is left to hand to the kernel.
    fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.inner.st.borrow_mut();
        if st.w.buffered() == 0 {
            return Poll::Ready(Ok(()));
        }
        if st.closed {
            return Poll::Ready(Err(st.closed_error()));
        }
        st.w.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A task's read ended (done, failed or dropped): it no longer waits for bytes.
struct ClearReader<'a>(&'a IoStream);

impl Drop for ClearReader<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.inner.st.try_borrow_mut() {
            st.r.waker = None;
        }
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
                self.inner.st.borrow_mut().r.waker = None;
                buf[..bytes.len()].copy_from_slice(&bytes);
                Poll::Ready(Ok(bytes.len()))
            }
            Poll::Ready(Err(e)) => {
                self.inner.st.borrow_mut().r.waker = None;
                if StreamError::of(&e) == Some(StreamError::Eof) {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Ready(Err(e))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `futures_io::AsyncWrite`: writes wait while the stream is over its high-water mark;
/// flush waits until the bytes have gone to the kernel; close flushes, then closes.
impl AsyncWrite for IoStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_some(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flushed(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_flushed(cx) {
            Poll::Ready(r) => {
                self.close();
                Poll::Ready(r)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
