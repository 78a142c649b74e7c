//! The write side of a stream: the write buffer, one send at a time, write callbacks,
//! and back-pressure (the high-water mark and `on_drain`).

use super::error::Failure;
use super::ops::{Flushing, Until, Writing};
use super::transport::SendNow;
use super::{IoStream, SentCallback, StreamCallback, StreamError};
use crate::reactor::IoLoop;
use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll};

/// Default [`IoStream::set_high_water_mark`].
pub const DEFAULT_HIGH_WATER: usize = 1024 * 1024;
/// Default [`IoStream::set_max_write_buffer`].
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 64 * 1024 * 1024;
/// A write buffer larger than this is not kept for reuse once flushed.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

/// The write buffer and what waits on it.
pub(super) struct WriteSide {
    /// Bytes not yet handed to the transport.
    pub(super) out: Vec<u8>,
    /// Bytes handed to the transport and not yet sent (0 when no send is pending).
    sending: usize,
    /// A send is with the transport (on a TLS stream it may carry no bytes of the
    /// owner's: a handshake message, an alert).
    pub(super) in_flight: bool,
    /// Bytes written in all, and bytes sent in all.
    written: u64,
    flushed: u64,
    /// Continuations due once `flushed` reaches their mark (or the stream dies first).
    write_cbs: VecDeque<(u64, SentCallback)>,
    /// Continuations due once the socket has closed.
    close_cbs: Vec<SentCallback>,
    high_water: usize,
    max_write: usize,
    drain_cb: Option<StreamCallback>,
    /// A send is queued for the end of this step.
    pub(super) flush_scheduled: bool,
    /// A task waiting for room below the high-water mark, or for the buffer to empty.
    pub(super) waker: Option<std::task::Waker>,
}

impl Default for WriteSide {
    fn default() -> Self {
        WriteSide {
            out: Vec::new(),
            sending: 0,
            in_flight: false,
            written: 0,
            flushed: 0,
            write_cbs: VecDeque::new(),
            close_cbs: Vec::new(),
            high_water: DEFAULT_HIGH_WATER,
            max_write: DEFAULT_MAX_WRITE_BUFFER,
            drain_cb: None,
            flush_scheduled: false,
            waker: None,
        }
    }
}

impl WriteSide {
    /// Bytes written and not yet handed to the kernel.
    pub(super) fn buffered(&self) -> usize {
        self.out.len() + self.sending
    }

    /// Wakes the task waiting to write or flush, if any.
    pub(super) fn wake_writer(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub(super) fn high_water(&self) -> usize {
        self.high_water
    }

    /// Bytes written in all (a mark `flush` waits for).
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// The first continuation that is due, with its outcome: one whose bytes have all
    /// been sent; once the socket is closed (`dead`), every other one, with `error`
    /// (or `Closed` if bytes were cut off without one).
    pub(super) fn due_write_callback(
        &mut self,
        dead: bool,
        error: Option<Failure>,
    ) -> Option<(SentCallback, io::Result<()>)> {
        let cut =
            || -> io::Error { error.map_or_else(|| StreamError::Closed.into(), Failure::to_error) };
        match self.write_cbs.front() {
            Some((at, _)) if *at <= self.flushed => {
                return self.write_cbs.pop_front().map(|x| (x.1, Ok(())));
            }
            Some(_) if dead => return self.write_cbs.pop_front().map(|x| (x.1, Err(cut()))),
            _ => {}
        }
        if !dead {
            return None;
        }
        let cb = self.close_cbs.pop()?;
        let clean = error.is_none() && self.flushed == self.written;
        Some((cb, if clean { Ok(()) } else { Err(cut()) }))
    }

    /// Something waits for this stream's bytes to go out or for it to close (with a
    /// continuation): it stays open while nobody holds it.
    pub(super) fn waited_on(&self) -> bool {
        !self.write_cbs.is_empty() || !self.close_cbs.is_empty() || self.drain_cb.is_some()
    }

    /// The loop is closing: the continuations are dropped unrun.
    pub(super) fn forget_waiters(&mut self) {
        self.write_cbs.clear();
        self.close_cbs.clear();
    }

    /// Whether what `until` waits for has happened: `Some(outcome)` once it has (or
    /// never can), given whether the socket is closed and why.
    fn reached(&self, until: Until, dead: bool, error: Option<Failure>) -> Option<io::Result<()>> {
        let cut = || error.map_or_else(|| StreamError::Closed.into(), Failure::to_error);
        match until {
            Until::Sent(mark) if mark <= self.flushed => Some(Ok(())),
            Until::Sent(_) => dead.then(|| Err(cut())),
            Until::Closed if dead => Some(if error.is_none() && self.flushed == self.written {
                Ok(())
            } else {
                Err(cut())
            }),
            Until::Closed => None,
            Until::Handshake => None,
        }
    }

    /// The drain callback, if the buffer has drained to half the high-water mark.
    pub(super) fn due_drain_callback(&mut self) -> Option<StreamCallback> {
        if self.buffered() <= self.high_water / 2 {
            self.drain_cb.take()
        } else {
            None
        }
    }

    /// The socket closed: its unsent bytes are returned (for the pool); the
    /// continuations waiting for them are answered by the dispatch loop.
    pub(super) fn on_close(&mut self) -> Vec<u8> {
        self.drain_cb = None;
        self.wake_writer();
        std::mem::take(&mut self.out)
    }
}

impl super::State {
    /// Something waits on sends to finish (the dispatch loop must look after one):
    /// write or drain callbacks, an end of file or a close waiting for the buffer to
    /// empty.
    fn waits_on_sends(&self) -> bool {
        !self.w.write_cbs.is_empty() || self.w.drain_cb.is_some() || self.r.eof || self.closed
    }
}

impl IoStream {
    /// Writes `data`: it is copied into the stream's write buffer now and goes out while
    /// the loop runs (on epoll usually at the end of this step, on io_uring with the
    /// loop's next submit), whether or not anyone waits. The returned [`Writing`] says
    /// when it has gone to the kernel: continue with [`then`](Writing::then), or
    /// `.await` it (with `AsyncWriteExt::write`'s meaning: it answers how many bytes
    /// were written, which is all of them). It answers an error if the stream is closed,
    /// or (closing it, with [`StreamError::WriteBufferFull`]) if the write buffer would
    /// pass [`set_max_write_buffer`](Self::set_max_write_buffer). A
    /// [`close`](Self::close) after it still delivers the bytes.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Read;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.write(b"hello").then(|lp, _, sent| {
    ///     assert_eq!(sent.unwrap(), 5);
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// let mut got = [0u8; 5];
    /// b.read_exact(&mut got)?;
    /// assert_eq!(&got, b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write(&self, data: &[u8]) -> Writing {
        let done = self
            .write_with(|out| out.extend_from_slice(data))
            .map(|()| (self.inner.st.borrow().w.written, data.len()));
        Writing::new(self, done)
    }

    /// Waits until everything written so far has gone to the kernel:
    /// `AsyncWriteExt::flush`'s meaning, for a continuation or a task.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # let lp = IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.write(b"one");
    /// s.write(b"two");
    /// s.flush().then(|lp, s, r| { r.unwrap(); assert_eq!(s.write_buffer_len(), 0); lp.stop(); });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn flush(&self) -> Flushing {
        let mark = self.inner.st.borrow().w.written;
        Flushing::new(self, Until::Sent(mark))
    }

    /// Runs `cb` once what `until` waits for has happened (in a later step; with the
    /// error if it never can).
    pub(super) fn when_sent(&self, until: Until, cb: SentCallback) {
        if let Until::Handshake = until {
            return self.when_handshaken(cb);
        }
        {
            let mut st = self.inner.st.borrow_mut();
            match until {
                Until::Sent(mark) => st.w.write_cbs.push_back((mark, cb)),
                Until::Closed => st.w.close_cbs.push(cb),
                Until::Handshake => unreachable!("handled above"),
            }
        }
        // Due at once if nothing is left to send: the dispatch loop runs it.
        self.schedule_dispatch();
    }

    /// A task's wait for `until`.
    pub(super) fn poll_until(&self, cx: &mut Context<'_>, until: Until) -> Poll<io::Result<()>> {
        if let Until::Handshake = until {
            return self.poll_handshake(cx);
        }
        let mut st = self.inner.st.borrow_mut();
        let dead = st.closed && !st.lingering;
        if let Some(r) = st.w.reached(until, dead, st.error) {
            return Poll::Ready(r);
        }
        st.w.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Appends to the write buffer through `f` (no intermediate copy): how a protocol
    /// serializes a response straight into the stream. Errors as [`write`](Self::write)
    /// does, at once; the limit is checked after `f` ran, so the buffer passes it by one
    /// write at most before the stream closes. [`flush`](Self::flush) waits for the
    /// bytes to go out. The buffer is lent to `f`: `f` may use the stream meanwhile
    /// (what it writes to it lands after `f`'s own bytes).
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # let lp = IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.write_with(|out| out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n"))?;
    /// assert_eq!(s.write_buffer_len(), 19);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_with(&self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let lp = self.lp().ok_or(io::ErrorKind::NotConnected)?;
        self.write_on(&lp, f)
    }

    /// [`write_with`](Self::write_with) for a caller that has the stream's loop at hand.
    pub(crate) fn write_on(&self, lp: &IoLoop, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        // The buffer is taken out while `f` runs, so that nothing of the stream is
        // borrowed meanwhile.
        let mut out = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                return Err(st.closed_error());
            }
            match st.w.out.capacity() {
                0 => lp.with_pool(|p| p.take()),
                _ => std::mem::take(&mut st.w.out),
            }
        };
        let before = out.len();
        f(&mut out);
        let over = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed {
                // (`f` closed it)
                lp.with_pool(|p| p.give(out));
                return Err(st.closed_error());
            }
            let w = &mut st.w;
            w.written += (out.len() - before) as u64;
            if w.out.capacity() != 0 {
                // `f` wrote to the stream itself: those bytes follow.
                out.extend_from_slice(&w.out);
                lp.with_pool(|p| p.give(std::mem::take(&mut w.out)));
            }
            w.out = out;
            (w.buffered() > w.max_write).then_some(w.max_write)
        };
        if let Some(limit) = over {
            let e = StreamError::WriteBufferFull { limit };
            self.close_with(lp, Some(&e.into()));
            return Err(e.into());
        }
        self.schedule_flush(lp);
        Ok(())
    }

    /// Shuts down the writing side (the peer reads end of file) once what was written
    /// has been handed to the kernel; reading goes on. For a lingering close: answer,
    /// shut down, drain what the peer still sends, then close.
    pub fn shutdown_write(&self) {
        self.flush().then(|_, s, _| {
            let _ = s
                .inner
                .transport
                .with_fd(|fd| socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Write));
        });
    }

    /// Sends what is buffered once the current step of the loop is over: the writes of
    /// one step (a batch of pipelined responses, say) go out in one send.
    pub(super) fn schedule_flush(&self, lp: &IoLoop) {
        {
            let mut st = self.inner.st.borrow_mut();
            if st.w.flush_scheduled || (st.closed && !st.lingering) {
                return;
            }
            if st.w.in_flight {
                // The bytes wait behind a send in flight: they count now.
                if st.held.needs_count(st.r.unread() + st.w.buffered()) {
                    drop(st);
                    self.count_buffered(lp);
                }
                return;
            }
            st.w.flush_scheduled = true;
        }
        lp.at_step_end(self.inner.clone());
    }

    /// Hands the queued bytes to the transport.
    pub(super) fn start_send(&self, lp: &IoLoop) {
        let buf = {
            let mut st = self.inner.st.borrow_mut();
            if (st.closed && !st.lingering) || st.w.in_flight {
                return;
            }
            // TLS: what goes out is the ciphertext of what was written.
            let (buf, plain) = if st.tls.is_some() {
                match IoStream::tls_seal(lp, &mut st) {
                    Ok(Some(x)) => x,
                    Ok(None) => return,
                    Err(e) => {
                        drop(st);
                        return self.close_with(lp, Some(&e));
                    }
                }
            } else if st.w.out.is_empty() {
                return;
            } else {
                let buf = std::mem::take(&mut st.w.out);
                let n = buf.len();
                (buf, n)
            };
            st.w.sending = plain;
            st.w.in_flight = true;
            buf
        };
        match self.inner.transport.send(lp, buf) {
            SendNow::Done(buf) => self.sent(lp, buf),
            // The bytes wait for the kernel: they count now (written outside a dispatch,
            // they were not counted yet).
            SendNow::Pending => {
                let count = {
                    let st = self.inner.st.borrow();
                    st.held.needs_count(st.r.unread() + st.w.buffered())
                };
                if count {
                    self.count_buffered(lp);
                }
            }
            SendNow::Failed(e) => self.close_with(lp, Some(&e)),
        }
    }

    /// A send finished: account for it, reuse or return its buffer, send more.
    pub(super) fn sent(&self, lp: &IoLoop, mut buf: Vec<u8>) {
        let (more, give_back, lingered, waiting, count) = {
            let mut st = self.inner.st.borrow_mut();
            let w = &mut st.w;
            w.flushed += w.sending as u64;
            w.sending = 0;
            w.in_flight = false;
            w.wake_writer();
            buf.clear();
            let mut give_back = None;
            if w.out.capacity() == 0 && buf.capacity() <= KEEP_WRITE_BUFFER {
                // Nothing new was queued meanwhile: keep the buffer only while there is
                // more to write; an idle stream returns it to the pool.
                give_back = Some(buf);
            }
            let queued = !w.out.is_empty();
            let more = queued || st.tls.as_ref().is_some_and(|t| t.wants_write());
            (
                more,
                give_back,
                st.lingering && !more && st.all_sent(),
                st.waits_on_sends(),
                st.held.needs_count(st.r.unread() + st.w.buffered()),
            )
        };
        if let Some(buf) = give_back {
            lp.with_pool(|p| p.give(buf));
        }
        let (lingered, waiting, count) = if more {
            self.start_send(lp);
            let st = self.inner.st.borrow();
            (
                st.lingering && st.all_sent(),
                st.waits_on_sends(),
                st.held.needs_count(st.r.unread() + st.w.buffered()),
            )
        } else {
            (lingered, waiting, count)
        };
        // A graceful close ends once the last byte is out.
        if lingered {
            self.close_with(lp, None);
        }
        if count {
            self.count_buffered(lp);
        }
        // Only what waits on sends needs the dispatch loop: write and drain callbacks,
        // and a close that waits for the buffer to empty. (Scheduling it regardless cost
        // a boxed callback per keep-alive response.)
        if waiting || lingered {
            self.schedule_dispatch();
        }
    }

    /// How many more bytes may be written before the buffer passes its limit.
    pub(crate) fn write_room(&self) -> usize {
        let st = self.inner.st.borrow();
        st.w.max_write.saturating_sub(st.w.buffered())
    }

    /// Bytes written and not yet handed to the kernel.
    pub fn write_buffer_len(&self) -> usize {
        self.inner.st.borrow().w.buffered()
    }

    /// When bytes were last handed to the kernel (partial sends included; the loop's
    /// time, ns, [`IoLoop::now_ns`]): a writer's progress.
    pub(crate) fn last_sent_at(&self) -> Option<u64> {
        self.inner.transport.last_sent_at()
    }

    /// True while more than the high-water mark is buffered, or while the stream is held
    /// back by its loop's buffer budget ([`IoLoop::set_buffer_budget`]): a writer should
    /// wait for [`on_drain`](Self::on_drain) before writing more.
    pub fn over_high_water(&self) -> bool {
        let st = self.inner.st.borrow();
        if st.w.buffered() > st.w.high_water || st.held.back {
            return true;
        }
        if !st.held.loop_over_budget() {
            return false;
        }
        // The loop is over its budget: count what this stream holds now, which may hold
        // it back before it writes more.
        drop(st);
        self.held_back_now()
    }

    /// Calls `cb` once the write buffer has drained to half the high-water mark or less
    /// and the stream is not held back by its loop's buffer budget (at once, in a later
    /// step, if so already). Replaces an earlier drain callback.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # let lp = IoLoop::new()?;
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let s = IoStream::new(&lp, a)?;
    /// s.set_high_water_mark(64 * 1024);
    /// s.write(&vec![0u8; 16 * 1024]);
    /// s.on_drain(|lp, s| { assert!(!s.over_high_water()); lp.stop(); });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on_drain<F>(&self, cb: F)
    where
        F: FnOnce(&IoLoop, &IoStream) + 'static,
    {
        self.inner.st.borrow_mut().w.drain_cb = Some(Box::new(cb));
        self.schedule_dispatch();
    }

    /// Sets the high-water mark of the write buffer (default 1 MiB).
    pub fn set_high_water_mark(&self, bytes: usize) {
        self.inner.st.borrow_mut().w.high_water = bytes;
    }

    /// Sets the most bytes the write buffer may hold; a write past it closes the stream
    /// (default 64 MiB). A guard against writers that ignore the high-water mark.
    pub fn set_max_write_buffer(&self, bytes: usize) {
        self.inner.st.borrow_mut().w.max_write = bytes;
    }
}
