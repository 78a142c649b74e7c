//! The epoll backend: level-triggered readiness straight from the kernel.

use super::{event_mask, ready_of_mask, Event, Interest, Waker};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// epoll data value of the waker; loop tokens are below 2^56 and never collide with it.
const WAKER_TOKEN: u64 = u64::MAX;
/// How many events one `epoll_wait` may return.
const MAX_EVENTS: usize = 1024;

/// An epoll instance plus its event buffer. Invariant: `epfd` is an open epoll fd owned
/// by this struct, and `buf` has capacity `MAX_EVENTS`.
pub(crate) struct Epoll {
    epfd: OwnedFd,
    buf: Vec<libc::epoll_event>,
    /// Held so that the registered eventfd stays open as long as the epoll set.
    _waker: Arc<Waker>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Milliseconds for epoll_wait, rounded up so that a timer never fires early.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

impl Epoll {
    pub(crate) fn new(waker: &Arc<Waker>) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ep = Epoll {
            epfd,
            buf: Vec::with_capacity(MAX_EVENTS),
            _waker: waker.clone(),
        };
        // Edge-triggered: every write to the eventfd reports once, so it never needs
        // to be read back (a syscall per wake-up saved; the counter cannot overflow in
        // practice, and a write to a full one is a wake-up already pending).
        ep.ctl(
            libc::EPOLL_CTL_ADD,
            waker.fd(),
            WAKER_TOKEN,
            libc::EPOLLIN as u32 | libc::EPOLLET as u32,
        )?;
        Ok(ep)
    }

    fn ctl(&mut self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event that lives across the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, event_mask(interest))
    }

    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, event_mask(interest))
    }

    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0) {
            // Closed before it was removed: the kernel already dropped it from the set.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT)) => Ok(()),
            r => r,
        }
    }

    pub(crate) fn poll(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.buf.clear();
        // SAFETY: `buf` has capacity MAX_EVENTS and the kernel writes at most that many
        // entries into its spare capacity; no signal mask is passed. (Through syscall(2):
        // libc's epoll_wait is a thread-cancellation point, bracketed by two calls that
        // cost as much as the rest of the wrapper.)
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                self.epfd.as_raw_fd(),
                self.buf.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                timeout_ms(timeout),
                std::ptr::null::<libc::sigset_t>(),
                8usize, // (the kernel's sigset size; unused without a mask)
            )
        } as i32;
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.raw_os_error() == Some(libc::EINTR) {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: epoll_wait initialised the first `n` entries (n <= MAX_EVENTS).
        unsafe { self.buf.set_len(n as usize) };
        for ev in &self.buf {
            let token = ev.u64;
            if token != WAKER_TOKEN {
                events.push(Event {
                    token,
                    ready: ready_of_mask(ev.events),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_rounds_up_to_the_next_millisecond() {
        let cases = [
            (None, -1),
            (Some(Duration::ZERO), 0),
            (Some(Duration::from_nanos(1)), 1),
            (Some(Duration::from_micros(999)), 1),
            (Some(Duration::from_millis(1)), 1),
            (Some(Duration::from_micros(1001)), 2),
            (Some(Duration::from_secs(u64::MAX)), libc::c_int::MAX),
        ];
        for (d, want) in cases {
            assert_eq!(timeout_ms(d), want, "{d:?}");
        }
    }

    #[test]
    fn readiness_bits_map_from_epoll() {
        let r = ready_of_mask((libc::EPOLLIN | libc::EPOLLRDHUP) as u32);
        assert!(r.is_readable() && r.is_hup() && !r.is_writable());
        let r = ready_of_mask(libc::EPOLLERR as u32);
        assert!(r.is_error() && !r.is_readable());
        assert_eq!(
            event_mask(Interest::WRITABLE),
            libc::EPOLLOUT as u32,
            "writable interest asks for EPOLLOUT only"
        );
    }
}
