//! fd handlers: Tornado's `add_handler`, `update_handler`, `remove_handler`, and the
//! dispatch of readiness events to them.
//!
//! A handler is level-triggered on both backends (the poller's contract). Each fd has a
//! slot with a generation, so a token names one registration: an event collected for a
//! handler that was removed (and maybe replaced on the same fd number) meanwhile never
//! reaches the new one.

use super::IoLoop;
use crate::poller::{Event, Interest, Ready};
use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::panic::Location;

type Handler = Box<dyn FnMut(&IoLoop, RawFd, Ready)>;

struct HandlerEntry {
    interest: Interest,
    /// `None` while the handler runs (it is taken out so that it can touch the loop).
    handler: Option<Handler>,
    at: &'static Location<'static>,
}

/// Per-fd slot; the generation outlives removals so that a token names one registration.
#[derive(Default)]
struct FdSlot {
    generation: u32,
    entry: Option<HandlerEntry>,
}

/// The loop's handlers, by fd number, and the events of the last wait.
pub(super) struct Handlers {
    slots: RefCell<Vec<FdSlot>>,
    pub(super) events: RefCell<Vec<Event>>,
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers {
            slots: RefCell::new(Vec::new()),
            events: RefCell::new(Vec::with_capacity(1024)),
        }
    }
}

impl Handlers {
    /// Takes every handler out (the loop is closing); they are dropped by the caller
    /// with nothing borrowed. Returns the fds that were registered, and the handlers.
    pub(super) fn take_all(&self) -> (Vec<RawFd>, Vec<Handler>) {
        let slots = std::mem::take(&mut *self.slots.borrow_mut());
        let mut fds = Vec::new();
        let mut handlers = Vec::new();
        for (fd, slot) in slots.into_iter().enumerate() {
            if let Some(entry) = slot.entry {
                fds.push(fd as RawFd);
                handlers.extend(entry.handler);
            }
        }
        (fds, handlers)
    }
}

const GEN_MASK: u32 = 0xff_ffff;

fn token(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation & GEN_MASK) << 32) | u64::from(fd as u32)
}

impl IoLoop {
    /// Calls `handler` whenever `fd` is ready for what `interest` asks (level-triggered:
    /// again on every iteration while it stays ready), or has an error or hang-up.
    ///
    /// The loop does not own `fd`: remove the handler before closing it. Adding a second
    /// handler for an fd that has one is an `AlreadyExists` error. A handler that panics
    /// is removed (and the panic logged).
    ///
    /// ```
    /// use coreloop::{Interest, IoLoop};
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let lp = IoLoop::new()?;
    /// let (mut a, mut b) = UnixStream::pair()?;
    /// b.set_nonblocking(true)?;
    /// a.write_all(b"ping")?;
    /// lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, ready| {
    ///     assert!(ready.is_readable());
    ///     let mut buf = [0u8; 4];
    ///     b.read_exact(&mut buf).unwrap();
    ///     assert_eq!(&buf, b"ping");
    ///     lp.remove_handler(fd);
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn add_handler<F>(&self, fd: RawFd, interest: Interest, handler: F) -> io::Result<()>
    where
        F: FnMut(&IoLoop, RawFd, Ready) + 'static,
    {
        let at = Location::caller();
        let idx = usize::try_from(fd)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative fd"))?;
        let mut hs = self.inner.handlers.slots.borrow_mut();
        let old_generation = match hs.get(idx) {
            Some(FdSlot { entry: Some(_), .. }) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("fd {fd} already has a handler"),
                ));
            }
            Some(slot) => slot.generation,
            None => 0,
        };
        let generation = old_generation.wrapping_add(1) & GEN_MASK;
        // The poller refuses an fd that is not open before the table grows for it, so a
        // bogus fd number costs no memory.
        self.inner
            .poller
            .borrow_mut()
            .register(fd, token(fd, generation), interest)?;
        if hs.len() <= idx {
            hs.resize_with(idx + 1, FdSlot::default);
        }
        let slot = &mut hs[idx];
        slot.generation = generation;
        slot.entry = Some(HandlerEntry {
            interest,
            handler: Some(Box::new(handler)),
            at,
        });
        Ok(())
    }

    /// Changes what the handler of `fd` is called for. `NotFound` if `fd` has no handler;
    /// asking for the interest it already has costs nothing.
    ///
    /// ```
    /// use coreloop::{Interest, IoLoop};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// let lp = IoLoop::new()?;
    /// let (a, _b) = UnixStream::pair()?;
    /// lp.add_handler(a.as_raw_fd(), Interest::READABLE, |_, _, _| {})?;
    /// lp.update_handler(a.as_raw_fd(), Interest::READABLE | Interest::WRITABLE)?;
    /// lp.remove_handler(a.as_raw_fd());
    /// assert!(lp.update_handler(a.as_raw_fd(), Interest::READABLE).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn update_handler(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let mut hs = self.inner.handlers.slots.borrow_mut();
        let slot = usize::try_from(fd).ok().and_then(|i| hs.get_mut(i));
        let Some(FdSlot {
            generation,
            entry: Some(entry),
        }) = slot
        else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fd {fd} has no handler"),
            ));
        };
        if entry.interest != interest {
            self.inner
                .poller
                .borrow_mut()
                .reregister(fd, token(fd, *generation), interest)?;
            entry.interest = interest;
        }
        Ok(())
    }

    /// Stops calling the handler of `fd`; a no-op if it has none. Safe to call from any
    /// handler, including the one being removed; a removed fd is not dispatched again,
    /// not even for an event already collected in this iteration.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.remove_handler(12345); // unknown fd: nothing happens
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn remove_handler(&self, fd: RawFd) {
        let removed = {
            let mut hs = self.inner.handlers.slots.borrow_mut();
            let Some(entry) = usize::try_from(fd)
                .ok()
                .and_then(|i| hs.get_mut(i))
                .and_then(|s| s.entry.take())
            else {
                return;
            };
            if let Err(e) = self.inner.poller.borrow_mut().deregister(fd) {
                log::warn!("coreloop: removing fd {fd} from the poller: {e}");
            }
            entry
        };
        // The handler (and what it owns) is dropped with no loop state borrowed.
        drop(removed);
    }

    pub(super) fn dispatch(&self, ev: Event) {
        let fd = (ev.token & 0xffff_ffff) as u32 as RawFd;
        let generation = (ev.token >> 32) as u32;
        let taken = {
            let mut hs = self.inner.handlers.slots.borrow_mut();
            let Some(slot) = hs.get_mut(fd as usize) else {
                return;
            };
            if slot.generation != generation {
                return; // removed (and maybe re-added) since the event was collected
            }
            let Some(entry) = slot.entry.as_mut() else {
                return;
            };
            let ready = ev.ready.intersect(entry.interest.mask());
            if ready.is_empty() {
                return;
            }
            entry.handler.take().map(|h| (h, ready, entry.at))
        };
        let Some((mut handler, ready, at)) = taken else {
            return;
        };
        let ok = self.run_guarded("handler", at, || handler(self, fd, ready));
        let (leftover, remove) = {
            let mut hs = self.inner.handlers.slots.borrow_mut();
            match hs.get_mut(fd as usize) {
                // Still the registration we dispatched to: put the handler back, or, if
                // it panicked, remove it (calling it again on a level-triggered fd would
                // only panic again).
                Some(FdSlot {
                    generation: g,
                    entry: Some(entry),
                }) if *g == generation && entry.handler.is_none() => {
                    if ok {
                        entry.handler = Some(handler);
                        (None, false)
                    } else {
                        (Some(handler), true)
                    }
                }
                // It removed (or replaced) itself meanwhile; a newer registration on
                // the same fd is left alone.
                _ => (Some(handler), false),
            }
        };
        if remove {
            self.remove_handler(fd);
        }
        drop(leftover);
    }
}
