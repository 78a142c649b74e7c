//! Buffers: the loop's pool of read and write buffers, the per-thread small buffers,
//! and socket I/O into a buffer's spare capacity.
//!
//! A connection holds a read buffer only while it has unread data: buffers come from
//! the loop's pool when data arrives and go back when it is consumed, so an idle
//! connection costs no buffer memory (docs/ARCHITECTURE.md, "Memory"). This is a leaf
//! module: it uses nothing else of the crate, so the poller may use it too.

mod pool;
mod small;
mod sock;

pub(crate) use pool::{BufferPool, BUF_SIZE};
pub(crate) use small::{recycle_small, small_copy};
pub(crate) use sock::{recv_into, send_from};
