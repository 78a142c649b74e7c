//! Read buffers: a per-loop pool, and reading from a socket into a buffer's spare
//! capacity.
//!
//! A connection holds a read buffer only while it has unread data: buffers come from
//! the loop's pool when data arrives and go back when it is consumed, so an idle
//! connection costs no buffer memory (DESIGN.md, "Streams").

use std::io;
use std::os::fd::AsFd;

/// Capacity of a pooled buffer.
pub(crate) const BUF_SIZE: usize = 16 * 1024;
/// Free buffers a pool keeps; more are freed.
const MAX_FREE: usize = 64;

/// A loop's free read buffers. Single-threaded, like the loop.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
}

impl BufferPool {
    /// An empty buffer with capacity [`BUF_SIZE`].
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    /// Returns a buffer; kept if it is a pool-sized one and the pool is not full.
    pub(crate) fn give(&mut self, mut v: Vec<u8>) {
        if v.capacity() == BUF_SIZE && self.free.len() < MAX_FREE {
            v.clear();
            self.free.push(v);
        }
    }

    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }
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
