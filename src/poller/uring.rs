//! The io_uring backend.
//!
//! # Ring setup
//!
//! One ring per loop, used only by the thread that created it. It is set up with
//! `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | SUBMIT_ALL` where the kernel has them
//! (6.1+), else `COOP_TASKRUN | SUBMIT_ALL` (5.19+), else plain; DESIGN.md gives the
//! measurement that makes the first set worth it. A probe checks the opcodes coreloop
//! uses, and the kernel must support `EXT_ARG` waits (5.11+, for nanosecond timeouts);
//! if either fails, [`Uring::new`] returns an error and `Backend::Auto` falls back to epoll.
//! Everything queued in an iteration is submitted by the one `io_uring_enter` that also
//! waits, so a loop iteration costs one syscall however many fds it re-arms.
//!
//! # user_data
//!
//! Every SQE carries a `user_data` that says who owns its completions:
//! [`user_data::IGNORE`] (removals, whose CQEs mean nothing to us),
//! [`user_data::WAKER`] (the multishot poll on the wake-up eventfd), or
//! [`user_data::TAG_OP`] with a generation and an index into the op table. An op slot
//! lives until its last CQE (the one without `IORING_CQE_F_MORE`), so a late completion
//! always finds the slot it belongs to, and the generation makes a recycled slot refuse
//! completions meant for its previous owner. Readiness polls are the first kind of op; the
//! completion ops of later layers (accept, recv, send) go in the same table.
//!
//! # Why readiness is a one-shot poll, re-armed
//!
//! A multishot `POLL_ADD` only posts a CQE when the file's wait queue is woken: it is
//! edge-triggered. Tornado's `add_handler` is level-triggered, and code written for it
//! (a handler that accepts one connection or reads one chunk per call, or a C library
//! driven through its fds) would hang on data that arrived together. So a registration
//! is a one-shot poll, re-armed before the next wait if it is still registered; arming
//! checks the current state, which gives exactly epoll's level-triggered behaviour. The
//! re-arm SQE rides in the submit that waits, so it costs no extra syscall. The waker,
//! which is drained on every completion, uses multishot.

use super::batch::BatchWait;
use super::bufring::{self, BufRing};
use super::{event_mask, ready_of_mask, Completion, Event, Interest, Ready, Sink, Waker};
use crate::buffer::BufferPool;
use io_uring::{cqueue, opcode, squeue, types, EnterFlags, IoUring, Probe};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Named `user_data` values and tags.
pub(crate) mod user_data {
    /// SQEs whose completion is of no interest (poll removals, cancellations).
    pub const IGNORE: u64 = 0;
    /// The multishot poll on the loop's wake-up eventfd.
    pub const WAKER: u64 = 1;
    /// Ops in the op table: `TAG_OP | generation << 32 | index`.
    pub const TAG_OP: u64 = 1 << 56;
    /// The bits that hold a tag.
    pub const TAG_MASK: u64 = 0xff << 56;
}

const SQ_ENTRIES: u32 = 512;
const CQ_ENTRIES: u32 = 8192;

/// What an op in flight is for, and what it owns until its last CQE.
enum OpKind {
    /// A one-shot readiness poll on this fd.
    Poll { fd: RawFd },
    /// Multishot accept: each CQE is a new connection.
    Accept { sink: Sink },
    /// Multishot recv into the provided-buffer ring: each CQE is a chunk of data.
    Recv { sink: Sink },
    /// One send; the kernel reads from `buf` until the CQE, so the op owns it.
    Send { sink: Sink, buf: Vec<u8> },
}

/// What a CQE resolved to, taken out of (or, for multishot ops, cloned from) its slot.
enum Done {
    Poll { fd: RawFd },
    Accept(Sink),
    Recv(Sink),
    Send(Sink, Vec<u8>),
}

/// One slot of the op table. `kind` is `Some` while an op is in flight.
struct OpSlot {
    generation: u32,
    kind: Option<OpKind>,
}

/// The op table: slots addressed by `user_data`, reused through a free list.
#[derive(Default)]
struct Ops {
    slots: Vec<OpSlot>,
    free: Vec<u32>,
}

impl Ops {
    fn insert(&mut self, kind: OpKind) -> u64 {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(OpSlot {
                    generation: 0,
                    kind: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.kind = Some(kind);
        user_data::TAG_OP | (u64::from(slot.generation & 0xff_ffff) << 32) | u64::from(idx)
    }

    fn slot(&mut self, ud: u64) -> Option<&mut OpSlot> {
        let idx = (ud & 0xffff_ffff) as usize;
        let gen = ((ud >> 32) & 0xff_ffff) as u32;
        self.slots
            .get_mut(idx)
            .filter(|s| s.generation & 0xff_ffff == gen && s.kind.is_some())
    }

    /// The op a CQE belongs to; frees the slot (handing over what the op owned) when
    /// this is its last CQE.
    fn complete(&mut self, ud: u64, last: bool) -> Option<Done> {
        let slot = self.slot(ud)?;
        if !last {
            return match slot.kind.as_ref()? {
                OpKind::Poll { fd } => Some(Done::Poll { fd: *fd }),
                OpKind::Accept { sink } => Some(Done::Accept(sink.clone())),
                OpKind::Recv { sink } => Some(Done::Recv(sink.clone())),
                // A send has one CQE; a second one would be a kernel bug. Keep the buffer.
                OpKind::Send { .. } => None,
            };
        }
        let kind = slot.kind.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push((ud & 0xffff_ffff) as u32);
        Some(match kind {
            OpKind::Poll { fd } => Done::Poll { fd },
            OpKind::Accept { sink } => Done::Accept(sink),
            OpKind::Recv { sink } => Done::Recv(sink),
            OpKind::Send { sink, buf } => Done::Send(sink, buf),
        })
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A registered fd: the loop's token, its interest, and the poll op armed for it.
#[derive(Clone, Copy)]
struct Reg {
    token: u64,
    interest: Interest,
    armed: Option<u64>,
}

/// An io_uring instance with its registrations. Invariant: `ring` is only used from the
/// thread that created it (the loop is `!Send`), as `SINGLE_ISSUER` requires.
pub(crate) struct Uring {
    ring: IoUring,
    bufs: Option<BufRing>,
    ops: Ops,
    regs: Vec<Option<Reg>>,
    rearm: Vec<RawFd>,
    waker: Arc<Waker>,
    waker_armed: bool,
    setup: &'static str,
    /// The batch wait, and whether the loop is busy enough to use it.
    batch: BatchWait,
    /// The registered file table of the sockets transports use.
    fixed: FixedFiles,
}

/// Largest registered file table a ring asks for (8 bytes of kernel memory per slot).
const FIXED_SLOTS_MAX: usize = 16_384;

/// The ring's registered file table. A socket that sends or receives through the ring
/// (a transport's) is installed at the slot of its fd number the first time it is used,
/// and its recvs and sends name the slot instead of the fd: the kernel then skips the
/// `fget`/`fput` pair (an atomic reference count on a shared cache line) it does per op
/// for a plain fd (`perf` on the hello server under `wrk -c256`: `fget`+`fput` fell from
/// 1.6% of its CPU to 0.3%, the rest being the ring's own fd at each enter).
/// The slot is cleared by [`Uring::close_fd`] before the fd itself is closed, since the
/// table holds its own reference to the socket. Fds past the table (or every fd, where
/// the kernel has no sparse tables) are used as plain fds.
struct FixedFiles {
    /// `numbers[i] == i`: what a FILES_UPDATE SQE installing slot `i` reads, at the
    /// enter that submits it. Lives as long as the ring.
    numbers: Box<[RawFd]>,
    /// Which slots hold a socket.
    installed: Vec<bool>,
}

impl FixedFiles {
    /// Registers a sparse table as large as the fd limit allows (capped), or none.
    fn register(ring: &IoUring, probe: &Probe) -> FixedFiles {
        let none = FixedFiles {
            numbers: Box::new([]),
            installed: Vec::new(),
        };
        if !probe.is_supported(opcode::FilesUpdate::CODE) {
            return none;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return none;
        }
        let n = (lim.rlim_cur as usize).min(FIXED_SLOTS_MAX);
        if n == 0 || ring.submitter().register_files_sparse(n as u32).is_err() {
            return none;
        }
        FixedFiles {
            numbers: (0..n as RawFd).collect(),
            installed: vec![false; n],
        }
    }

    /// The slot `fd` has in the table, if it fits there.
    fn slot(&self, fd: RawFd) -> Option<u32> {
        usize::try_from(fd)
            .ok()
            .filter(|&i| i < self.installed.len())
            .map(|i| i as u32)
    }
}

/// How many completions a batch wait waits for before its time is up.
const BATCH: usize = 64;

/// Builds a ring with the best flags this kernel accepts; says which it got.
fn build_ring() -> io::Result<(IoUring, &'static str)> {
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_submit_all();
    if let Ok(ring) = b.build(SQ_ENTRIES) {
        return Ok((
            ring,
            "io_uring (SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | SUBMIT_ALL)",
        ));
    }
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES)
        .setup_coop_taskrun()
        .setup_submit_all();
    if let Ok(ring) = b.build(SQ_ENTRIES) {
        return Ok((ring, "io_uring (COOP_TASKRUN | SUBMIT_ALL)"));
    }
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES);
    Ok((b.build(SQ_ENTRIES)?, "io_uring (no setup flags)"))
}

/// The opcodes this crate submits; a kernel missing any of them gets epoll instead.
const NEEDED_OPCODES: [(u8, &str); 7] = [
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::PollRemove::CODE, "POLL_REMOVE"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Close::CODE, "CLOSE"),
];

impl Uring {
    pub(crate) fn new(waker: &Arc<Waker>) -> io::Result<Uring> {
        let (ring, setup) = build_ring()?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel older than 5.11)",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in NEEDED_OPCODES {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring lacks opcode {name}"),
                ));
            }
        }
        log::debug!("coreloop: {setup}");
        let bufs = BufRing::register(&ring)?;
        let fixed = FixedFiles::register(&ring, &probe);
        Ok(Uring {
            ring,
            bufs: Some(bufs),
            ops: Ops::default(),
            regs: Vec::new(),
            rearm: Vec::new(),
            waker: waker.clone(),
            waker_armed: false,
            setup,
            batch: BatchWait::default(),
            fixed,
        })
    }

    /// Waits for I/O gather completions for up to `wait` (up to 64 of them) once the
    /// first has come, while the loop is busy (see [`BatchWait`]), if the kernel can
    /// (IORING_FEAT_MIN_TIMEOUT, Linux 6.12); says whether it can. The time counts from
    /// the start of the wait, so a loop that was idle longer than `wait` runs at once;
    /// and a timer due sooner is not delayed.
    pub(crate) fn set_batch_wait(&mut self, wait: Duration) -> bool {
        if !self.ring.params().is_feature_min_timeout() {
            return false;
        }
        self.batch.set(wait);
        true
    }

    /// The ring's setup flags, for logs.
    pub(crate) fn describe(&self) -> &'static str {
        self.setup
    }

    /// Queues an SQE, submitting first if the queue is full.
    ///
    /// # Safety
    /// Every buffer or pointer the entry refers to must stay valid until its last CQE.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the entry's pointers outlive the op.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // A full submission queue means submit and retry, not an error.
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is full: our CQEs wait in the kernel's overflow
                    // list; the next wait flushes them. Nothing can be queued until then.
                    return Err(e);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `sqe` as the op in slot `ud`, freeing the slot if it cannot be queued.
    ///
    /// # Safety
    /// As for [`push`](Self::push): what the SQE points to must live until its last CQE.
    unsafe fn submit_op(&mut self, ud: u64, sqe: squeue::Entry) -> io::Result<u64> {
        // SAFETY: the caller's guarantee.
        if let Err(e) = unsafe { self.push(&sqe.user_data(ud)) } {
            self.ops.complete(ud, true);
            return Err(e);
        }
        Ok(ud)
    }

    /// The table slot a transport's op on `fd` should name, installing the socket there
    /// first (the FILES_UPDATE SQE goes ahead of the op's in the queue, and the kernel
    /// issues SQEs in order); `None`: use the plain fd.
    fn fixed_slot(&mut self, fd: RawFd) -> Option<u32> {
        let slot = self.fixed.slot(fd)?;
        if self.fixed.installed[slot as usize] {
            return Some(slot);
        }
        let ptr = &self.fixed.numbers[slot as usize] as *const RawFd;
        let sqe = opcode::FilesUpdate::new(ptr, 1)
            .offset(slot as i32)
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: `ptr` points into `numbers`, which lives as long as the ring; the
        // kernel reads it when it issues the SQE.
        if unsafe { self.push(&sqe) }.is_err() {
            return None;
        }
        self.fixed.installed[slot as usize] = true;
        Some(slot)
    }

    fn arm_poll(&mut self, fd: RawFd, interest: Interest) -> io::Result<u64> {
        let ud = self.ops.insert(OpKind::Poll { fd });
        let sqe = opcode::PollAdd::new(types::Fd(fd), event_mask(interest)).build();
        // SAFETY: a poll SQE refers to no memory of ours.
        unsafe { self.submit_op(ud, sqe) }
    }

    fn remove_poll(&mut self, ud: u64) -> io::Result<()> {
        let sqe = opcode::PollRemove::new(ud)
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: a poll-remove SQE refers to no memory of ours.
        unsafe { self.push(&sqe) }
    }

    fn reg_mut(&mut self, fd: RawFd) -> Option<&mut Reg> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.regs.get_mut(i))
            .and_then(Option::as_mut)
    }

    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let idx = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        if self.regs.get(idx).is_some_and(Option::is_some) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        // Like epoll_ctl, refuse a closed fd at once rather than on the first wait.
        // SAFETY: F_GETFD takes no pointer and only inspects the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if self.regs.len() <= idx {
            self.regs.resize(idx + 1, None);
        }
        self.regs[idx] = Some(Reg {
            token,
            interest,
            armed: None,
        });
        self.rearm.push(fd);
        Ok(())
    }

    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let reg = self
            .reg_mut(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let old = reg.armed.take();
        reg.token = token;
        reg.interest = interest;
        self.rearm.push(fd);
        if let Some(ud) = old {
            self.remove_poll(ud)?;
        }
        Ok(())
    }

    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(reg) = self.reg_mut(fd).copied() else {
            return Ok(());
        };
        self.regs[fd as usize] = None;
        if let Some(ud) = reg.armed {
            self.remove_poll(ud)?;
        }
        Ok(())
    }

    fn arm_pending(&mut self) -> io::Result<()> {
        if !self.waker_armed {
            let sqe = opcode::PollAdd::new(types::Fd(self.waker.fd()), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(user_data::WAKER);
            // SAFETY: a poll SQE refers to no memory of ours.
            unsafe { self.push(&sqe)? };
            self.waker_armed = true;
        }
        let mut rearm = std::mem::take(&mut self.rearm);
        for fd in rearm.drain(..) {
            let Some(reg) = self.reg_mut(fd).copied() else {
                continue;
            };
            if reg.armed.is_none() {
                let ud = self.arm_poll(fd, reg.interest)?;
                if let Some(r) = self.reg_mut(fd) {
                    r.armed = Some(ud);
                }
            }
        }
        self.rearm = rearm;
        Ok(())
    }

    fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let res = match timeout {
            Some(d) if d.is_zero() => {
                let to_submit = self.ring.submission().len() as u32;
                // GETEVENTS with min_complete 0: submit, and run deferred task work so
                // that finished ops post their CQEs, without waiting.
                // SAFETY: no argument pointer is passed; to_submit is the queue length.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        0,
                        EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
            }
            Some(d) => {
                // Nanosecond timeout: never shorter than asked.
                let ts = types::Timespec::from(d);
                let wait_us = self.batch.next_wait_us();
                let args = types::SubmitArgs::new().timespec(&ts);
                // A batch wait longer than the timeout would make a timer late.
                if wait_us > 0 && u64::from(wait_us) <= d.as_micros() as u64 {
                    let args = args.min_wait_usec(wait_us);
                    self.ring.submitter().submit_with_args(BATCH, &args)
                } else {
                    self.ring.submitter().submit_with_args(1, &args)
                }
            }
            None => match self.batch.next_wait_us() {
                0 => self.ring.submit_and_wait(1),
                wait_us => {
                    let args = types::SubmitArgs::new().min_wait_usec(wait_us);
                    self.ring.submitter().submit_with_args(BATCH, &args)
                }
            },
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------ completion ops

    /// Starts accepting on a listening socket: a multishot accept (every connection or
    /// error is a completion for `sink`) or a single one. Accepted sockets are
    /// nonblocking and close-on-exec.
    pub(crate) fn accept(&mut self, fd: RawFd, multishot: bool, sink: Sink) -> io::Result<u64> {
        let ud = self.ops.insert(OpKind::Accept { sink });
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let sqe = if multishot {
            opcode::AcceptMulti::new(types::Fd(fd)).flags(flags).build()
        } else {
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(flags)
                .build()
        };
        // SAFETY: no address buffer is passed (null pointers): it refers to no memory.
        unsafe { self.submit_op(ud, sqe) }
    }

    /// Starts a multishot recv that takes buffers from the provided-buffer ring; every
    /// chunk of data, the end of file (empty data) or an error is a completion for `sink`.
    pub(crate) fn recv_multishot(&mut self, fd: RawFd, sink: Sink) -> io::Result<u64> {
        let sqe = match self.fixed_slot(fd) {
            Some(i) => opcode::RecvMulti::new(types::Fixed(i), bufring::GROUP),
            None => opcode::RecvMulti::new(types::Fd(fd), bufring::GROUP),
        }
        .build();
        let ud = self.ops.insert(OpKind::Recv { sink });
        // SAFETY: the recv writes only into ring buffers, which live until the ring is
        // unregistered after every op has completed (see Drop).
        unsafe { self.submit_op(ud, sqe) }
    }

    /// Sends `buf[offset..]`. The op owns `buf` until its completion, which hands it back
    /// with the number of bytes sent (possibly fewer than asked).
    pub(crate) fn send(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        offset: usize,
        sink: Sink,
    ) -> Result<u64, (io::Error, Vec<u8>)> {
        let len = (buf.len() - offset).min(u32::MAX as usize) as u32;
        let ptr = buf[offset..].as_ptr();
        let op = match self.fixed_slot(fd) {
            Some(i) => opcode::Send::new(types::Fixed(i), ptr, len),
            None => opcode::Send::new(types::Fd(fd), ptr, len),
        };
        let ud = self.ops.insert(OpKind::Send { sink, buf });
        let sqe = op.flags(libc::MSG_NOSIGNAL).build().user_data(ud);
        // SAFETY: `ptr..ptr+len` lies in the Vec now owned by the op slot; moving a Vec
        // does not move its heap buffer, and the slot keeps it until the CQE arrives.
        if let Err(e) = unsafe { self.push(&sqe) } {
            let buf = match self.ops.complete(ud, true) {
                Some(Done::Send(_, buf)) => buf,
                _ => Vec::new(),
            };
            return Err((e, buf));
        }
        Ok(ud)
    }

    /// Asks the kernel to cancel an op; its last CQE still arrives (with `ECANCELED` or
    /// its result) and releases what it owns.
    pub(crate) fn cancel(&mut self, op: u64) -> io::Result<()> {
        let sqe = opcode::AsyncCancel::new(op)
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: a cancel SQE refers to no memory.
        unsafe { self.push(&sqe) }
    }

    /// Closes `fd` through the ring, after every SQE queued before it has been issued
    /// (an SQE names an fd by number: closing it at once could let a new socket reuse the
    /// number before those SQEs reach the kernel).
    ///
    /// A socket installed in the registered file table leaves it first (by an SQE queued
    /// ahead of the close, or at once if that cannot be queued): the table's reference
    /// would otherwise keep it open after the close.
    pub(crate) fn close_fd(&mut self, fd: OwnedFd) {
        if let Some(slot) = self.fixed.slot(fd.as_raw_fd()) {
            if std::mem::take(&mut self.fixed.installed[slot as usize]) {
                let sqe = opcode::Close::new(types::Fixed(slot))
                    .build()
                    .user_data(user_data::IGNORE);
                // SAFETY: a close SQE refers to no memory.
                if unsafe { self.push(&sqe) }.is_err() {
                    let _ = self.ring.submitter().register_files_update(slot, &[-1]);
                }
            }
        }
        let raw = fd.into_raw_fd();
        let sqe = opcode::Close::new(types::Fd(raw))
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: a close SQE refers to no memory; `raw` is ours to close.
        if unsafe { self.push(&sqe) }.is_err() {
            // SAFETY: the SQE was not queued, so nobody else will close `raw`.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
        }
    }

    pub(crate) fn poll(
        &mut self,
        events: &mut Vec<Event>,
        completions: &mut Vec<(Sink, Completion)>,
        pool: &mut BufferPool,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.arm_pending()?;
        self.enter(timeout)?;
        self.reap(events, completions, pool);
        Ok(())
    }

    /// Turns every CQE available into events and completions.
    fn reap(
        &mut self,
        events: &mut Vec<Event>,
        completions: &mut Vec<(Sink, Completion)>,
        pool: &mut BufferPool,
    ) {
        let Uring {
            ring,
            bufs,
            ops,
            regs,
            rearm,
            waker,
            waker_armed,
            ..
        } = self;
        for cqe in ring.completion() {
            let ud = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
            let more = cqueue::more(flags);
            if ud == user_data::WAKER {
                waker.drain();
                if !more {
                    *waker_armed = false;
                }
                continue;
            }
            if ud & user_data::TAG_MASK != user_data::TAG_OP {
                continue; // IGNORE, or a value no op of ours carries
            }
            let Some(done) = ops.complete(ud, !more) else {
                continue;
            };
            match done {
                Done::Poll { fd } => {
                    let Some(Some(reg)) = regs.get_mut(fd as usize) else {
                        continue; // deregistered meanwhile
                    };
                    if reg.armed != Some(ud) {
                        continue; // a poll that was replaced or removed
                    }
                    reg.armed = None;
                    if res >= 0 {
                        rearm.push(fd);
                        events.push(Event {
                            token: reg.token,
                            ready: ready_of_mask(res as u32),
                        });
                    } else if res != -libc::ECANCELED {
                        // EBADF and the like: report once, do not re-arm a dead fd.
                        events.push(Event {
                            token: reg.token,
                            ready: Ready::ERROR,
                        });
                    }
                }
                Done::Accept(sink) => {
                    let result = if res >= 0 {
                        // SAFETY: a successful accept CQE carries a new fd that nothing
                        // else owns.
                        Ok(unsafe { OwnedFd::from_raw_fd(res) })
                    } else {
                        Err(io::Error::from_raw_os_error(-res))
                    };
                    completions.push((sink, Completion::Accept { result, more }));
                }
                Done::Recv(sink) => {
                    let result = match (res, cqueue::buffer_select(flags)) {
                        (n, Some(bid)) if n >= 0 => {
                            let ring = bufs.as_mut().expect("recv without a buffer ring");
                            let mut v = pool.take();
                            v.extend_from_slice(ring.data(bid, n as usize));
                            ring.recycle(bid);
                            Ok(v)
                        }
                        (0, None) => Ok(Vec::new()), // end of file
                        (n, None) if n >= 0 => Ok(Vec::new()),
                        (n, _) => Err(io::Error::from_raw_os_error(-n)),
                    };
                    completions.push((sink, Completion::Recv { result, more }));
                }
                Done::Send(sink, buf) => {
                    let result = if res >= 0 {
                        Ok(res as usize)
                    } else {
                        Err(io::Error::from_raw_os_error(-res))
                    };
                    completions.push((sink, Completion::Send { result, buf }));
                }
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Ops may own memory the kernel writes into or reads from (send buffers, the
        // buffer ring). Cancel everything and wait for the last CQEs before freeing any
        // of it; if the kernel does not finish in time, leak rather than free memory it
        // may still touch.
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: a cancel SQE refers to no memory.
        let _ = unsafe { self.push(&cancel_all) };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut events = Vec::new();
        let mut completions = Vec::new();
        let mut pool = BufferPool::default();
        while self.ops.in_flight() > 0 && Instant::now() < deadline {
            if self.enter(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            self.reap(&mut events, &mut completions, &mut pool);
            // Sinks are not called: the loop is going away. Dropping the completions
            // closes accepted fds and frees send buffers.
            completions.clear();
            events.clear();
        }
        if self.ops.in_flight() > 0 {
            log::error!(
                "coreloop: {} io_uring ops still in flight at drop; leaking their memory",
                self.ops.in_flight()
            );
            std::mem::forget(std::mem::take(&mut self.ops));
            std::mem::forget(self.bufs.take());
            return;
        }
        if let Some(mut b) = self.bufs.take() {
            b.unregister(&self.ring);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_slots_refuse_completions_after_reuse() {
        let mut ops = Ops::default();
        let a = ops.insert(OpKind::Poll { fd: 3 });
        assert!(ops.complete(a, true).is_some());
        let b = ops.insert(OpKind::Poll { fd: 4 });
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "slot reused");
        assert!(ops.complete(a, true).is_none(), "old user_data must miss");
        assert!(matches!(ops.complete(b, false), Some(Done::Poll { fd: 4 })));
        assert_eq!(ops.in_flight(), 1, "a CQE with F_MORE keeps the slot");
        assert!(ops.complete(b, true).is_some());
        assert_eq!(ops.in_flight(), 0);
    }

    /// A ring and its waker, or `None` (and a note) where io_uring is unavailable.
    fn test_ring() -> Option<(Uring, Arc<Waker>)> {
        let waker = Arc::new(Waker::new().expect("eventfd"));
        match Uring::new(&waker) {
            Ok(u) => Some((u, waker)),
            Err(e) => {
                eprintln!("skipped: no io_uring here ({e})");
                None
            }
        }
    }

    /// Sends and closes through the ring on one end of a socket pair; the peer gets the
    /// bytes, then end of file: the table's reference does not outlive `close_fd`.
    #[test]
    fn transport_sockets_use_the_file_table_and_leave_it_on_close() {
        use std::io::Read;
        let Some((mut u, _waker)) = test_ring() else {
            return;
        };
        if u.fixed.installed.is_empty() {
            return eprintln!("skipped: no registered file table here");
        }
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("pair");
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let fd: OwnedFd = ours.into();
        let raw = fd.as_raw_fd();
        let sink: Sink = std::rc::Rc::new(|_, _| {});
        assert!(u.send(raw, b"ping".to_vec(), 0, sink).is_ok());
        assert!(
            u.fixed.installed[raw as usize],
            "installed at its fd's slot"
        );
        let (mut events, mut done, mut pool) = (Vec::new(), Vec::new(), BufferPool::default());
        let deadline = Instant::now() + Duration::from_secs(5);
        while done.is_empty() && Instant::now() < deadline {
            u.poll(
                &mut events,
                &mut done,
                &mut pool,
                Some(Duration::from_millis(10)),
            )
            .expect("poll");
        }
        match done.pop() {
            Some((_, Completion::Send { result, .. })) => {
                assert_eq!(result.expect("send through the table"), 4)
            }
            _ => panic!("no send completion"),
        }
        let mut got = [0u8; 8];
        assert_eq!(peer.read(&mut got).expect("read"), 4);
        assert_eq!(&got[..4], b"ping");
        u.close_fd(fd);
        assert!(!u.fixed.installed[raw as usize], "slot cleared");
        u.poll(&mut events, &mut done, &mut pool, Some(Duration::ZERO))
            .expect("poll");
        assert_eq!(peer.read(&mut got).expect("end of file"), 0);
    }

    /// A busy loop's wait gathers for the batch wait once a completion has come; a
    /// wait with a sooner timeout (a timer) ends on time all the same.
    #[test]
    fn a_busy_loop_batches_but_not_past_a_timer() {
        let Some((mut u, waker)) = test_ring() else {
            return;
        };
        if !u.set_batch_wait(Duration::from_millis(400)) {
            return eprintln!("skipped: no IORING_FEAT_MIN_TIMEOUT here");
        }
        u.batch.force_busy();
        let (mut events, mut done, mut pool) = (Vec::new(), Vec::new(), BufferPool::default());
        // Nothing comes: the 30 ms timeout ends the wait, not the 400 ms batch.
        let start = Instant::now();
        u.poll(
            &mut events,
            &mut done,
            &mut pool,
            Some(Duration::from_millis(30)),
        )
        .expect("poll");
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(200),
            "timed wait took {took:?}"
        );
        // One wake-up comes at once: the busy loop still waits out its batch.
        waker.wake().expect("wake");
        u.batch.force_busy();
        let start = Instant::now();
        u.poll(&mut events, &mut done, &mut pool, None)
            .expect("poll");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "batch wait took {took:?}"
        );
    }

    #[test]
    fn poll_mask_maps_to_ready() {
        let r = ready_of_mask((libc::POLLIN | libc::POLLHUP) as u32);
        assert!(r.is_readable() && r.is_hup() && !r.is_writable());
        assert!(ready_of_mask(libc::POLLNVAL as u32).is_error());
    }
}
