//! The io_uring half of an acceptor: an accept op, multishot while the connection
//! limit is far, single near it; pausing cancels it.

use super::{is_exhaustion, AccInner, Mode, Pause};
use crate::poller::{Completion, OpId, Submission};
use crate::reactor::{IoLoop, Sink};
use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};

/// Starts accepting. A multishot accept takes every connection waiting in the backlog
/// inside the kernel before a cancel can stop it, so it is used only while the
/// connection limit is more than twice the backlog away; closer to the limit, one
/// accept at a time keeps the limit exact.
pub(super) fn arm(inner: &Rc<AccInner>, lp: &IoLoop) -> io::Result<()> {
    let Some(fd) = inner.listener_fd() else {
        return Ok(());
    };
    let multishot = {
        let st = inner.st.borrow();
        let room = st.opts.max_connections.saturating_sub(st.conns.len());
        room > 2 * st.opts.backlog.max(1) as usize
    };
    let weak = Rc::downgrade(inner);
    // The op's own id, for its completions to tell whether it is still the current op
    // (a paused and resumed acceptor has a newer one while the old one's last CQE comes).
    let mine = Rc::new(std::cell::Cell::new(None));
    let me = mine.clone();
    let sink: Sink = Rc::new(move |lp, c| on_accept(&weak, me.get(), lp, c));
    let op = lp.submit(Submission::Accept { fd, multishot }, sink)?;
    mine.set(Some(op));
    set_op(inner, Some(op));
    Ok(())
}

fn op_of(inner: &AccInner) -> Option<OpId> {
    match inner.st.borrow().mode {
        Mode::Uring { op } => op,
        Mode::Epoll => None,
    }
}

fn set_op(inner: &AccInner, to: Option<OpId>) {
    if let Mode::Uring { op } = &mut inner.st.borrow_mut().mode {
        *op = to;
    }
}

/// A completion of the accept op `op`.
fn on_accept(weak: &Weak<AccInner>, op: Option<OpId>, lp: &IoLoop, c: Completion) {
    let Some(inner) = weak.upgrade() else { return };
    if inner.st.borrow().pause == Pause::Stopped {
        return after_stop(&inner, lp, c);
    }
    let current = op.is_some() && op_of(&inner) == op;
    if !c.more && current {
        set_op(&inner, None);
    }
    match (c.result, c.file) {
        (Ok(_), Some(fd)) => inner.admit(lp, fd),
        (Ok(_), None) => {}
        (Err(e), _) if e.raw_os_error() == Some(libc::ECANCELED) => return,
        (Err(e), _) if is_exhaustion(&e) => {
            inner.pause_exhausted(lp, &e);
            return;
        }
        (Err(e), _) if e.kind() == io::ErrorKind::ConnectionAborted => {}
        (Err(e), _) => log::warn!("coreloop: accept: {e}"),
    }
    // The accept ended on its own (a single accept, or the kernel ended the multishot):
    // start another while running.
    let rearm = {
        let st = inner.st.borrow();
        st.pause == Pause::Running && st.listener.is_some()
    } && op_of(&inner).is_none();
    if rearm {
        if let Err(e) = arm(&inner, lp) {
            log::error!("coreloop: restarting accept: {e}");
        }
    }
}

/// A completion of the accept op a stop cancelled. A connection it carries was
/// accepted before the cancel took effect: it is out of the listen queue already, so
/// it is served (and drained with the others) rather than closed, which would reset
/// a connection that another process, accepting from the same socket after a
/// hand-over, would otherwise have served. The op's last completion lets the
/// connection handler go.
fn after_stop(inner: &Rc<AccInner>, lp: &IoLoop, c: Completion) {
    let more = c.more;
    if let (Ok(_), Some(fd)) = (c.result, c.file) {
        // (Without a handler left, as for an op a pause had cancelled earlier, it is
        // closed as before.)
        if inner.st.borrow().on_conn.is_some() {
            log::debug!("coreloop: a connection accepted as the acceptor stopped is served");
            inner.admit(lp, fd);
        }
    }
    if !more {
        let cb = {
            let mut st = inner.st.borrow_mut();
            st.cancelling = false;
            st.on_conn.take()
        };
        drop(cb);
    }
}

pub(super) fn pause(inner: &AccInner, lp: &IoLoop) {
    if let Some(op) = op_of(inner) {
        set_op(inner, None);
        lp.cancel(op);
    }
}

pub(super) fn resume(inner: &Rc<AccInner>, lp: &IoLoop) {
    if op_of(inner).is_none() {
        if let Err(e) = arm(inner, lp) {
            log::error!("coreloop: restarting accept: {e}");
        }
    }
}

pub(super) fn stop(lp: &IoLoop, listener: TcpListener, op: Option<OpId>) {
    if let Some(op) = op {
        lp.cancel(op);
    }
    let fd: OwnedFd = listener.into();
    lp.close_fd(fd);
}
