//! `Interest` (what a handler asks for) and `Ready` (what the kernel reports), and
//! their mapping to the kernel's event bits, which epoll and poll share.

use std::fmt;
use std::ops::BitOr;

/// What a handler wants to hear about: readable, writable, or both.
///
/// Errors and hang-ups are always reported, whatever the interest (as epoll does).
///
/// ```
/// use coreloop::Interest;
/// let both = Interest::READABLE | Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// assert!(!Interest::READABLE.is_writable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// Wake the handler when the fd can be read without blocking.
    pub const READABLE: Interest = Interest(1);
    /// Wake the handler when the fd can be written without blocking.
    pub const WRITABLE: Interest = Interest(2);
    /// Only errors and hang-ups (a handler parked while it has nothing to do).
    pub const NONE: Interest = Interest(0);

    /// True if the interest includes readability.
    pub const fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }

    /// True if the interest includes writability.
    pub const fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }

    /// The readiness bits this interest lets through to a handler.
    pub(crate) fn mask(self) -> Ready {
        let mut r = Ready::ERROR | Ready::HUP;
        if self.is_readable() {
            r = r | Ready::READABLE;
        }
        if self.is_writable() {
            r = r | Ready::WRITABLE;
        }
        r
    }
}

impl BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_readable(), self.is_writable()) {
            (true, true) => f.write_str("READABLE | WRITABLE"),
            (true, false) => f.write_str("READABLE"),
            (false, true) => f.write_str("WRITABLE"),
            (false, false) => f.write_str("NONE"),
        }
    }
}

/// What is ready on an fd, as passed to a handler.
///
/// A handler only sees readable or writable if its [`Interest`] asked for it; `ERROR`
/// and `HUP` are always passed on.
///
/// ```
/// use coreloop::Ready;
/// let r = Ready::READABLE | Ready::HUP;
/// assert!(r.is_readable() && r.is_hup() && !r.is_error());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ready(u8);

impl Ready {
    /// Nothing is ready.
    pub const EMPTY: Ready = Ready(0);
    /// Data (or a pending connection, or end of file) can be read.
    pub const READABLE: Ready = Ready(1);
    /// The fd can be written.
    pub const WRITABLE: Ready = Ready(2);
    /// An error is pending on the fd (`EPOLLERR`/`POLLERR`).
    pub const ERROR: Ready = Ready(4);
    /// The peer hung up or shut down its writing side (`EPOLLHUP`, `EPOLLRDHUP`).
    pub const HUP: Ready = Ready(8);

    /// True if readable.
    pub const fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }
    /// True if writable.
    pub const fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }
    /// True if an error is pending.
    pub const fn is_error(self) -> bool {
        self.0 & 4 != 0
    }
    /// True if the peer hung up.
    pub const fn is_hup(self) -> bool {
        self.0 & 8 != 0
    }
    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub(crate) const fn intersect(self, other: Ready) -> Ready {
        Ready(self.0 & other.0)
    }
}

impl BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Ready::READABLE, "READABLE"),
            (Ready::WRITABLE, "WRITABLE"),
            (Ready::ERROR, "ERROR"),
            (Ready::HUP, "HUP"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.0 & bit.0 != 0 {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("EMPTY")?;
        }
        Ok(())
    }
}

// epoll and poll share their event bits on Linux; one mapping serves both backends.
const _: () = {
    assert!(libc::EPOLLIN as i16 == libc::POLLIN);
    assert!(libc::EPOLLPRI as i16 == libc::POLLPRI);
    assert!(libc::EPOLLOUT as i16 == libc::POLLOUT);
    assert!(libc::EPOLLERR as i16 == libc::POLLERR);
    assert!(libc::EPOLLHUP as i16 == libc::POLLHUP);
    assert!(libc::EPOLLRDHUP as i16 == libc::POLLRDHUP);
};

/// The kernel event mask (epoll or poll: the same bits) for an interest.
pub(crate) fn event_mask(interest: Interest) -> u32 {
    let mut m = 0;
    if interest.is_readable() {
        m |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.is_writable() {
        m |= libc::POLLOUT;
    }
    m as u32
}

/// What a kernel event mask (epoll or poll) says is ready.
pub(crate) fn ready_of_mask(mask: u32) -> Ready {
    let m = mask as i16;
    let mut r = Ready::EMPTY;
    if m & (libc::POLLIN | libc::POLLPRI) != 0 {
        r = r | Ready::READABLE;
    }
    if m & libc::POLLOUT != 0 {
        r = r | Ready::WRITABLE;
    }
    if m & (libc::POLLERR | libc::POLLNVAL) != 0 {
        r = r | Ready::ERROR;
    }
    if m & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
        r = r | Ready::HUP;
    }
    r
}
