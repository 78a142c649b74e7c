//! `BufferPool`: free buffers of one size, reused instead of freed.

/// Capacity of a loop's pooled buffer.
pub(crate) const BUF_SIZE: usize = 16 * 1024;
/// Free buffers a loop's pool keeps; more are freed.
const MAX_FREE: usize = 64;

/// Free buffers of one size: a loop's read and write buffers ([`BUF_SIZE`]), or a
/// thread's small buffers (`small.rs`). Single-threaded.
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
    pub(crate) const fn new(size: usize, max_free: usize) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
