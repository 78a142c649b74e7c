//! Small buffers recycled per thread, for short copies that change hands (an HTTP
//! request head travels with its request, maybe to another thread, and is dropped
//! there).

use super::pool::BufferPool;
use std::cell::RefCell;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
