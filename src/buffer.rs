//! Read buffers: a per-loop pool, and reading from a socket into a buffer's spare
//! capacity.
//!
//! A connection holds a read buffer only while it has unread data: buffers come from
//! the loop's pool when data arrives and go back when it is consumed, so an idle
//! connection costs no buffer memory (DESIGN.md, "Streams").

use std::cell::RefCell;
use std::io;
use std::os::fd::AsFd;

/// Capacity of a pooled buffer.
pub(crate) const BUF_SIZE: usize = 16 * 1024;
/// Free buffers a pool keeps; more are freed.
const MAX_FREE: usize = 64;

/// Free buffers of one size: a loop's read and write buffers ([`BUF_SIZE`]), or a
/// thread's small buffers ([`SMALL_SIZE`]). Single-threaded.
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    size: usize,
    max_free: usize,
}

impl Default for BufferPool {
    /// A loop's pool: [`BUF_SIZE`] buffers, at most [`MAX_FREE`] kept.
    fn default() -> Self {
        BufferPool::new(BUF_SIZE, MAX_FREE)
    }
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `max_free`.
    const fn new(size: usize, max_free: usize) -> Self {
        BufferPool {
            free: Vec::new(),
            size,
            max_free,
        }
    }

    /// An empty buffer with the pool's capacity.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Returns a buffer; kept if it is a pool-sized one and the pool is not full.
    pub(crate) fn give(&mut self, mut v: Vec<u8>) {
        if v.capacity() == self.size && self.free.len() < self.max_free {
            v.clear();
            self.free.push(v);
        }
    }

    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }
}

/// Capacity of a small buffer (most often an HTTP request head).
pub(crate) const SMALL_SIZE: usize = 512;
/// Free small buffers a thread keeps (128 KiB); more are freed.
const MAX_SMALL_FREE: usize = 256;

thread_local! {
    /// This thread's free small buffers. Per thread rather than per loop: a request,
    /// which holds one, may be dropped on any thread.
    static SMALL: RefCell<BufferPool> =
        const { RefCell::new(BufferPool::new(SMALL_SIZE, MAX_SMALL_FREE)) };
}

/// A copy of `bytes` in a small buffer from this thread's pool (a fresh one if it is
/// empty): a request head costs no malloc and free in the steady state. Longer than
/// [`SMALL_SIZE`]: an exact allocation.
pub(crate) fn small_copy(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() > SMALL_SIZE {
        return bytes.to_vec();
    }
    let mut v = SMALL
        .try_with(|p| p.borrow_mut().take())
        .unwrap_or_else(|_| Vec::with_capacity(SMALL_SIZE));
    v.extend_from_slice(bytes);
    v
}

/// Gives a buffer from [`small_copy`] back to this thread's pool (any other, or one
/// past the pool's limit, is freed).
pub(crate) fn recycle_small(v: Vec<u8>) {
    let _ = SMALL.try_with(|p| p.borrow_mut().give(v));
}

/// Receives once from a socket into `buf`'s spare capacity (growing it to at least
/// 4 KiB of spare room first), appending what arrived. `Ok(0)` is end of file.
pub(crate) fn recv_into(fd: impl AsFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(BUF_SIZE.max(buf.len()));
    }
    let sock = socket2::SockRef::from(&fd);
    let n = sock.recv(buf.spare_capacity_mut())?;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (it returns how
    // many it wrote, never more than the slice's length).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sends `data` once without raising SIGPIPE; returns how much was sent.
pub(crate) fn send_from(fd: impl AsFd, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_with_flags(data, libc::MSG_NOSIGNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn small_buffers_are_reused_and_bounded() {
        let a = small_copy(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(a, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(a.capacity(), SMALL_SIZE);
        let at = a.as_ptr();
        recycle_small(a);
        let b = small_copy(b"x");
        assert_eq!(
            (b.as_slice(), b.as_ptr()),
            (&b"x"[..], at),
            "the same buffer, cleared"
        );
        // Too long to be small: exact, and not kept when given back.
        let long = small_copy(&[7; SMALL_SIZE + 1]);
        assert_eq!(long.len(), SMALL_SIZE + 1);
        recycle_small(long);
        assert_eq!(SMALL.with(|p| p.borrow().free_count()), 0);
        // At most MAX_SMALL_FREE are kept.
        let many: Vec<_> = (0..MAX_SMALL_FREE + 10).map(|_| small_copy(b"y")).collect();
        many.into_iter().for_each(recycle_small);
        assert_eq!(SMALL.with(|p| p.borrow().free_count()), MAX_SMALL_FREE);
        recycle_small(b);
    }

    #[test]
    fn pool_reuses_pool_sized_buffers_only() {
        let mut p = BufferPool::default();
        let a = p.take();
        assert_eq!(a.capacity(), BUF_SIZE);
        p.give(a);
        assert_eq!(p.free_count(), 1);
        p.give(Vec::with_capacity(10)); // odd size: dropped
        assert_eq!(p.free_count(), 1);
        let b = p.take();
        assert!(b.is_empty() && b.capacity() == BUF_SIZE);
        for _ in 0..MAX_FREE + 5 {
            p.give(Vec::with_capacity(BUF_SIZE));
        }
        assert_eq!(p.free_count(), MAX_FREE);
    }

    #[test]
    fn recv_into_appends_after_existing_bytes() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"world").unwrap();
        let mut buf = b"hello ".to_vec();
        assert_eq!(recv_into(&b, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"hello world");
        drop(a);
        assert_eq!(recv_into(&b, &mut buf).unwrap(), 0);
    }
}
