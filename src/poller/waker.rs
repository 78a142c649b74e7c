//! The wake-up eventfd shared by a loop and its remote handles.
//!
//! It is owned through an `Arc` by the loop and every `LoopHandle`, so the fd stays open
//! (and its number cannot be reused by an unrelated file) for as long as any thread may
//! write to it. Whether a write is needed at all is decided above, in `handle.rs`. The
//! pollers watch it edge-triggered (epoll's `EPOLLET`, io_uring's multishot poll), so
//! each write is reported once and the counter is never read back.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A nonblocking, close-on-exec eventfd.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the flags are valid constants.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is valid, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Adds one to the counter, which makes the fd readable and ends a poller's wait.
    pub(crate) fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: the pointer is to a live u64 on our stack and the length is its size.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The counter is at its maximum: the loop is certainly going to wake.
                Some(libc::EAGAIN) => return Ok(()),
                _ => return Err(err),
            }
        }
    }

    /// Reads and resets the counter: how many wakes since the last read (for tests).
    #[cfg(test)]
    pub(crate) fn take_count(&self) -> u64 {
        let mut buf: u64 = 0;
        // SAFETY: the pointer is to a live u64 on our stack and the length is its size.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n == 8 {
            buf
        } else {
            0
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
