//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19+) for multishot recv.
//!
//! The kernel picks a buffer from this ring only when data arrives, so a connection
//! waiting for data holds no buffer: 10,000 idle connections share the ring's few
//! hundred KiB. A completion names the buffer it filled; the poller copies the bytes out
//! and gives the buffer straight back to the ring, so buffers are never held by user code.
//!
//! Memory: one page-aligned array of `io_uring_buf` entries (the ring, whose tail the
//! kernel reads) and one slab of `COUNT * SIZE` bytes the kernel writes into. Both stay
//! allocated until the ring is unregistered; [`BufRing::unregister`] must be called before
//! the memory is freed, which `Drop` of the owning `Uring` arranges.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// Buffer group id of the one ring each loop registers.
pub(crate) const GROUP: u16 = 0;
/// Buffers in the ring (a power of two).
const COUNT: u16 = 256;
/// Bytes per buffer.
pub(crate) const SIZE: usize = 4096;

/// Invariant: `ring` points to `COUNT` entries in a page-aligned allocation of
/// `ring_layout`, `bufs` to `COUNT * SIZE` bytes of `bufs_layout`; both live until `Drop`,
/// and the kernel may use them from `register` until `unregister` returns.
pub(crate) struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates and registers the ring on `uring`, with every buffer handed to the kernel.
    pub(crate) fn register(uring: &IoUring) -> io::Result<BufRing> {
        let ring_layout = Layout::from_size_align(
            usize::from(COUNT) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let bufs_layout =
            Layout::from_size_align(usize::from(COUNT) * SIZE, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring.is_null() || bufs.is_null() {
            // SAFETY: each pointer is freed with the layout it was allocated with, if any.
            unsafe {
                if !ring.is_null() {
                    dealloc(ring.cast(), ring_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            tail: 0,
            registered: false,
        };
        for bid in 0..COUNT {
            br.push(bid);
        }
        br.publish();
        // SAFETY: `ring` is page-aligned, holds COUNT initialised entries, and stays valid
        // until `unregister` (called by the owner before `Drop` frees it).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ring as u64, COUNT, GROUP, 0)?;
        }
        br.registered = true;
        Ok(br)
    }

    /// Queues buffer `bid` for the kernel (visible after `publish`).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (COUNT - 1));
        // SAFETY: idx < COUNT, so the entry is inside the ring allocation; the kernel only
        // reads entries between its head and the published tail, and this one is past it.
        let entry = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: bid < COUNT, so the buffer lies inside the `bufs` allocation.
        entry.set_addr(unsafe { self.bufs.add(usize::from(bid) * SIZE) } as u64);
        entry.set_len(SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: `ring` is the first entry of the ring, initialised; the tail field lives
        // in it (the kernel's layout) and is only read by the kernel, written by us.
        let tail = unsafe { BufRingEntry::tail(self.ring) } as *const AtomicU16;
        // SAFETY: the tail is a naturally aligned u16 in memory we own; the kernel reads it
        // with acquire semantics, so a release store publishes the entries written before.
        unsafe { (*tail).store(self.tail, Ordering::Release) };
    }

    /// The first `len` bytes of buffer `bid`, as filled by a completion.
    pub(crate) fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < COUNT && len <= SIZE,
            "buffer {bid} len {len} out of range"
        );
        // SAFETY: in range (checked above); the kernel finished writing this buffer before
        // posting the CQE that named it, and will not touch it until we give it back.
        unsafe { std::slice::from_raw_parts(self.bufs.add(usize::from(bid) * SIZE), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    /// Stops the kernel from using the ring. Idempotent.
    pub(crate) fn unregister(&mut self, uring: &IoUring) {
        if self.registered {
            if let Err(e) = uring.submitter().unregister_buf_ring(GROUP) {
                log::warn!("coreloop: unregistering the buffer ring: {e}");
            }
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still write into the buffers: leaking is safe, freeing is not.
            log::error!("coreloop: buffer ring dropped while registered; leaking it");
            return;
        }
        // SAFETY: allocated in `register` with these layouts; the kernel no longer uses
        // them (unregistered, or the ring fd that registered them is closed).
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
