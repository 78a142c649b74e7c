//! Moving bytes between one connected socket and its owner (the stream), on the loop's
//! backend: the backend is chosen once, when the transport is made, and each backend's
//! half lives in its own file with its own state.
//!
//! | operation | io_uring (`uring.rs`) | epoll (`epoll.rs`) |
//! |---|---|---|
//! | receive | a recv into the loop's provided-buffer ring that ends after the stream's room (at most 64 KiB), re-armed while the stream has room | a level-triggered readable handler that receives into pooled buffers until `WouldBlock`, while the stream has room |
//! | send | a send op that owns the buffer until its completion; short sends are resubmitted | a nonblocking send at once; what does not fit waits for writability |
//! | close | cancel the ops, then a close queued behind every earlier op | remove the handler, then close |
//!
//! Either way the owner sees the same [`SockEvent`]s, in order, and never a buffer the
//! kernel may still touch: a send buffer is handed back only with its completion, also
//! when the transport was closed meanwhile (then the op frees it).
//!
//! Receiving follows the owner's room ([`Transport::set_room`]): bytes are taken from the
//! kernel only while the owner has room for them, and a transport takes at most one
//! chunk (a provided buffer, a pooled buffer) past it. What the owner has no room for
//! stays in the socket, where TCP flow control slows the peer.

mod epoll;
mod uring;

use crate::reactor::{IoLoop, WeakLoop};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// What a transport reports to its owner.
pub(crate) enum SockEvent {
    /// Bytes arrived (never empty).
    Data(Vec<u8>),
    /// The peer will send nothing more; receiving has stopped.
    Eof,
    /// A send that returned [`SendNow::Pending`] has gone out entirely; the buffer is
    /// handed back for reuse.
    Sent(Vec<u8>),
    /// The socket failed; nothing more will be reported.
    Error(io::Error),
}

/// How a transport reports to its owner.
pub(crate) type EventSink = Rc<dyn Fn(&IoLoop, SockEvent)>;

/// What became of a send at once.
pub(crate) enum SendNow {
    /// Everything went out; the buffer comes back.
    Done(Vec<u8>),
    /// The transport holds the buffer; [`SockEvent::Sent`] or `Error` follows.
    Pending,
    /// The send failed at once (the buffer is dropped).
    Failed(io::Error),
}

/// What both halves keep about their socket.
struct Sock {
    fd: Option<OwnedFd>,
    raw: RawFd,
    lp: WeakLoop,
    /// `None` once closed: nothing is reported after close.
    sink: Option<EventSink>,
    /// Receiving is on (the owner has room, and the socket has not ended).
    reading: bool,
    /// How many more bytes the owner takes now (see [`Transport::set_room`]).
    room: usize,
    /// End of file or an error was reported: receiving never restarts.
    ended: bool,
    /// When bytes were last handed to the kernel (partial sends included; the loop's
    /// time, ns): a writer's progress, for a send timeout. `None` before the first.
    sent_at: Option<u64>,
}

impl Sock {
    fn new(lp: &IoLoop, fd: OwnedFd, sink: EventSink, room: usize) -> Sock {
        Sock {
            raw: fd.as_raw_fd(),
            fd: Some(fd),
            lp: lp.downgrade(),
            sink: Some(sink),
            reading: room > 0,
            room,
            ended: false,
            sent_at: None,
        }
    }

    /// Receiving is over for good (end of file or an error).
    fn end(&mut self) {
        self.reading = false;
        self.ended = true;
    }

    /// Whether asking for `reading == on` changes anything.
    fn changes_reading(&self, on: bool) -> bool {
        self.sink.is_some() && !self.ended && self.reading != on
    }
}

/// One connected socket's I/O. Cheap to clone (shared state); owned by one stream.
#[derive(Clone)]
pub(crate) enum Transport {
    Uring(uring::UringTransport),
    Epoll(epoll::EpollTransport),
    /// A transport that never opened (for a stream whose setup failed).
    Dead,
}

impl Transport {
    /// Takes over `fd` (a nonblocking connected socket) and starts receiving (`room`
    /// bytes at first, see [`set_room`](Self::set_room)), on the half that fits the
    /// loop's backend.
    pub(crate) fn new(
        lp: &IoLoop,
        fd: OwnedFd,
        sink: EventSink,
        room: usize,
    ) -> io::Result<Transport> {
        let sock = Sock::new(lp, fd, sink, room);
        if lp.completes() {
            uring::UringTransport::new(lp, sock).map(Transport::Uring)
        } else {
            epoll::EpollTransport::new(lp, sock).map(Transport::Epoll)
        }
    }

    fn with_sock<R>(&self, f: impl FnOnce(&mut Sock) -> R) -> Option<R> {
        match self {
            Transport::Uring(t) => Some(t.with_sock(f)),
            Transport::Epoll(t) => Some(t.with_sock(f)),
            Transport::Dead => None,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.with_sock(|s| s.raw).unwrap_or(-1)
    }

    /// Runs `f` on the socket, if it is still open.
    pub(crate) fn with_fd<R>(&self, f: impl FnOnce(&OwnedFd) -> R) -> Option<R> {
        self.with_sock(|s| s.fd.as_ref().map(f)).flatten()
    }

    /// Tells the transport how many more bytes its owner takes now (back-pressure: 0
    /// while the owner has no room). Returns whether that starts or stops receiving,
    /// which the caller then does with [`set_reading`](Self::set_reading) (with the
    /// loop: a change of room alone costs no loop reference). A recv armed later takes
    /// no more than the room it was armed with.
    pub(crate) fn set_room(&self, room: usize) -> bool {
        self.with_sock(|s| {
            s.room = room;
            s.changes_reading(room > 0)
        })
        .unwrap_or(false)
    }

    /// Starts or stops receiving, as [`set_room`](Self::set_room) said. On io_uring
    /// stopping cancels the recv; starting again waits for that recv's final
    /// completion, so that two recvs never run at once.
    pub(crate) fn set_reading(&self, lp: &IoLoop, on: bool) {
        match self {
            Transport::Uring(t) => t.set_reading(lp, on),
            Transport::Epoll(t) => t.set_reading(lp, on),
            Transport::Dead => {}
        }
    }

    /// When bytes were last handed to the kernel, partial sends included (the loop's
    /// time then, ns): a writer's progress.
    pub(crate) fn last_sent_at(&self) -> Option<u64> {
        self.with_sock(|s| s.sent_at).flatten()
    }

    /// Sends all of `buf`. At most one send may be pending at a time.
    pub(crate) fn send(&self, lp: &IoLoop, buf: Vec<u8>) -> SendNow {
        match self {
            Transport::Uring(t) => t.send(lp, buf),
            Transport::Epoll(t) => t.send(lp, buf),
            Transport::Dead => SendNow::Failed(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Closes the socket. Nothing is reported afterwards. A send in flight on io_uring
    /// keeps its buffer until its completion arrives.
    pub(crate) fn close(&self, lp: &IoLoop) {
        match self {
            Transport::Uring(t) => t.close(lp),
            Transport::Epoll(t) => t.close(lp),
            Transport::Dead => {}
        }
    }
}
