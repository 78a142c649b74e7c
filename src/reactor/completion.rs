//! Completion ops for the layers above the loop (a stream's sends and receives, an
//! acceptor's accepts), on backends that have them (io_uring): the loop owns the
//! poller, so they go through it. On epoll, [`IoLoop::completes`] is false and the
//! layers above use readiness handlers instead.

use super::IoLoop;
use crate::poller::{Completion, OpId, Submission};
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

/// Where a completion op's results go: called by the loop with no loop state borrowed,
/// once per completion.
pub(crate) type Sink = Rc<dyn Fn(&IoLoop, Completion)>;

impl IoLoop {
    /// Whether this loop's backend runs completion ops (see
    /// [`submit`](Self::submit)).
    pub(crate) fn completes(&self) -> bool {
        self.inner.backend == crate::Backend::Uring
    }

    /// Starts a completion op whose results go to `sink`; `Unsupported` where the
    /// backend has none.
    pub(crate) fn submit(&self, op: Submission, sink: Sink) -> io::Result<OpId> {
        self.inner.poller.borrow_mut().submit(op, sink)
    }

    /// Asks for an op to be cancelled; its last completion still comes.
    pub(crate) fn cancel(&self, op: OpId) {
        self.inner.poller.borrow_mut().cancel(op);
    }

    /// Closes `fd` once the ops queued before have been issued (at once on epoll).
    pub(crate) fn close_fd(&self, fd: OwnedFd) {
        self.inner.poller.borrow_mut().close_fd(fd);
    }
}
