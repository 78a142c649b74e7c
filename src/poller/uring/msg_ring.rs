//! Waking another loop through its ring: `IORING_OP_MSG_RING` from this loop's ring.
//!
//! A loop that sends work to a sleeping loop on io_uring can post a CQE straight into
//! the other ring instead of writing its eventfd: the other loop's wait ends on that
//! CQE, and it has no eventfd to read back (the eventfd path costs the sender a
//! `write(2)` and the woken loop a `read(2)`). The sender pays one `io_uring_enter`,
//! submitted at once (not with its next wait: the work must not wait for the rest of
//! the sender's iteration).
//!
//! The message's CQE carries [`user_data::WAKER_MSG`] and means nothing but "wake up".
//! The sender's own CQE is skipped on success; a failure (the other ring gone, its
//! completion queue full) comes back tagged with the sender's `tag` for that target, so
//! the loop can fall back to the target's eventfd: no wake-up is ever lost.

use super::ops::user_data;
use super::Uring;
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};

impl<S: Clone> Uring<S> {
    /// A duplicate of this ring's fd, for other loops to message (it keeps the ring's
    /// file open, not the loop: a message to a ring whose loop is gone is never read).
    pub(crate) fn ring_fd(&self) -> io::Result<OwnedFd> {
        self.ring.as_fd().try_clone_to_owned()
    }

    /// Posts a wake-up CQE to the ring `target` and submits at once. `Unsupported` where
    /// the kernel lacks `MSG_RING`; then (or on any error) the caller wakes the eventfd.
    pub(crate) fn wake_ring(&mut self, target: RawFd, tag: u32) -> io::Result<()> {
        if !self.msg_ring {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let mut flags = squeue::Flags::empty();
        if self.ring.params().is_feature_skip_cqe_on_success() {
            flags |= squeue::Flags::SKIP_SUCCESS;
        }
        let sqe = opcode::MsgRingData::new(types::Fd(target), 0, user_data::WAKER_MSG, None)
            .build()
            .flags(flags)
            .user_data(user_data::TAG_WAKE | u64::from(tag));
        // SAFETY: a MSG_RING data SQE refers to no memory of ours.
        unsafe { self.push(&sqe)? };
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // Queued but not submitted (EBUSY: our completion queue is full): the
                // eventfd wakes the target now; the message follows with our next wait.
                Err(e) => return Err(e),
            }
        }
    }

    /// The tags of wake-ups the kernel could not post since the last call.
    pub(crate) fn take_failed_wakes(&mut self, out: &mut Vec<u32>) {
        out.append(&mut self.failed_wakes);
    }
}
