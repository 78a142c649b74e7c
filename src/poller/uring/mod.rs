//! The io_uring backend.
//!
//! # Ring setup
//!
//! One ring per loop, used only by the thread that created it. It is set up with
//! `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | SUBMIT_ALL` where the kernel has them
//! (6.1+), else `COOP_TASKRUN | SUBMIT_ALL` (5.19+), else plain: measured with a
//! hand-written responder, without them io_uring cost about 8 us of server CPU per
//! request and about 4.4 us with them (a kernel spinlock on the completion path was the
//! difference; docs/ARCHITECTURE.md, "Backends"). A probe checks the opcodes coreloop
//! uses, and the kernel must support `EXT_ARG` waits (5.11+, for nanosecond timeouts);
//! if either fails, [`Uring::new`] returns an error and `Backend::Auto` falls back to epoll.
//! Everything queued in an iteration is submitted by the one `io_uring_enter` that also
//! waits, so a loop iteration costs one syscall however many fds it re-arms.
//!
//! # Files
//!
//! `ops.rs` is the op table (every SQE's `user_data`) and the completion ops;
//! `fixed.rs` the registered file table; `msg_ring.rs` wake-ups between rings; `bufring.rs` the provided buffers that
//! multishot recvs fill; `batch.rs` when a busy loop gathers completions per wait.
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
//! which needs no level (each write is a wake-up; it is never read back), uses multishot.

mod batch;
mod bufring;
mod fixed;
mod msg_ring;
mod ops;

use super::{event_mask, ready_of_mask, Completion, Event, Interest, Ready, Waker};
use crate::buffer::BufferPool;
use batch::BatchWait;
use bufring::BufRing;
use fixed::FixedFiles;
use io_uring::{cqueue, opcode, squeue, types, EnterFlags, IoUring, Probe};
use ops::{user_data, OpKind, Ops};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SQ_ENTRIES: u32 = 512;
const CQ_ENTRIES: u32 = 8192;

/// A registered fd: the loop's token, its interest, and the poll op armed for it.
#[derive(Clone, Copy)]
struct Reg {
    token: u64,
    interest: Interest,
    armed: Option<u64>,
}

/// An io_uring instance with its registrations and ops in flight; `S` owns a completion
/// op's results (the poller only stores it and hands it back). Invariant: `ring` is
/// only used from the thread that created it (the loop is `!Send`), as
/// `SINGLE_ISSUER` requires.
pub(crate) struct Uring<S: Clone> {
    ring: IoUring,
    bufs: Option<BufRing>,
    ops: Ops<S>,
    regs: Vec<Option<Reg>>,
    rearm: Vec<RawFd>,
    waker: Arc<Waker>,
    waker_armed: bool,
    setup: Described,
    /// The batch wait, and whether the loop is busy enough to use it.
    batch: BatchWait,
    /// The registered file table of the sockets streams use.
    fixed: FixedFiles,
    /// The kernel has `MSG_RING` (wake-ups between rings, `msg_ring.rs`).
    msg_ring: bool,
    /// Tags of this loop's `MSG_RING` wake-ups that failed, for the eventfd fallback.
    failed_wakes: Vec<u32>,
    /// SQEs queued since the ring was made (for the stats).
    sqes: u64,
    /// The kernel stops a multishot recv at a byte limit (Linux 6.17): a stream's recv
    /// is multishot; without it, a recv takes one buffer and is re-armed (see
    /// `Submission::Recv`).
    recv_limit: bool,
}

/// How many completions a batch wait waits for before its time is up.
const BATCH: usize = 64;

/// How a ring is described: its setup flags, with a multishot recv that keeps a byte
/// limit, and without (see [`Uring::recv_limit`]).
type Described = [&'static str; 2];

macro_rules! described {
    ($flags:literal) => {
        [
            concat!("io_uring (", $flags, "; multishot recv with a byte limit)"),
            concat!("io_uring (", $flags, "; recv one buffer at a time)"),
        ]
    };
}

/// Builds a ring with the best flags this kernel accepts; says which it got.
fn build_ring() -> io::Result<(IoUring, Described)> {
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_submit_all();
    if let Ok(ring) = b.build(SQ_ENTRIES) {
        return Ok((
            ring,
            described!("SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | SUBMIT_ALL"),
        ));
    }
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES)
        .setup_coop_taskrun()
        .setup_submit_all();
    if let Ok(ring) = b.build(SQ_ENTRIES) {
        return Ok((ring, described!("COOP_TASKRUN | SUBMIT_ALL")));
    }
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES);
    Ok((b.build(SQ_ENTRIES)?, described!("no setup flags")))
}

impl<S: Clone> Uring<S> {
    pub(crate) fn new(waker: &Arc<Waker>) -> io::Result<Uring<S>> {
        let (mut ring, setup) = build_ring()?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel older than 5.11)",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in ops::NEEDED_OPCODES {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring lacks opcode {name}"),
                ));
            }
        }
        let mut bufs = BufRing::register(&ring)?;
        let recv_limit = ops::probe_recv_limit(&mut ring, &mut bufs);
        log::debug!("coreloop: {}", setup[usize::from(!recv_limit)]);
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
            msg_ring: probe.is_supported(opcode::MsgRingData::CODE),
            failed_wakes: Vec::new(),
            sqes: 0,
            recv_limit,
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

    /// SQEs queued since the ring was made.
    pub(crate) fn sqes(&self) -> u64 {
        self.sqes
    }

    /// The ring's setup flags and how it receives, for logs.
    pub(crate) fn describe(&self) -> &'static str {
        self.setup[usize::from(!self.recv_limit)]
    }

    /// Queues an SQE, submitting first if the queue is full.
    ///
    /// # Safety
    /// Every buffer or pointer the entry refers to must stay valid until its last CQE.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the entry's pointers outlive the op.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.sqes += 1;
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

    fn arm_poll(&mut self, fd: RawFd, interest: Interest) -> io::Result<u64> {
        let ud = self.ops.insert(OpKind::Poll { fd });
        let sqe = opcode::PollAdd::new(types::Fd(fd), event_mask(interest)).build();
        // SAFETY: a poll SQE refers to no memory of ours.
        unsafe { self.submit_tagged(ud, sqe) }
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

    pub(crate) fn poll(
        &mut self,
        events: &mut Vec<Event>,
        completions: &mut Vec<(S, Completion)>,
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
        completions: &mut Vec<(S, Completion)>,
        pool: &mut BufferPool,
    ) {
        let Uring {
            ring,
            bufs,
            ops,
            regs,
            rearm,
            waker_armed,
            failed_wakes,
            ..
        } = self;
        for cqe in ring.completion() {
            let ud = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
            let more = cqueue::more(flags);
            if ud == user_data::WAKER {
                // The multishot poll reports each write once (edge-triggered): the
                // eventfd is never read back.
                if !more {
                    *waker_armed = false;
                }
                continue;
            }
            if ud == user_data::WAKER_MSG {
                continue; // another loop woke us: the CQE was the point
            }
            if ud & user_data::TAG_MASK == user_data::TAG_WAKE {
                if res < 0 {
                    failed_wakes.push(ud as u32);
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
                OpKind::Poll { fd } => {
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
                OpKind::Op {
                    owner,
                    owned,
                    yields,
                } => {
                    // Bytes received into a provided buffer are copied out and the
                    // buffer goes straight back to the kernel.
                    let received = cqueue::buffer_select(flags).map(|bid| {
                        let ring = bufs.as_mut().expect("a provided buffer without a ring");
                        let mut v = pool.take();
                        v.extend_from_slice(ring.data(bid, res.max(0) as usize));
                        ring.recycle(bid);
                        v
                    });
                    let c = ops::completion(res, more, received, owned, yields);
                    completions.push((owner, c));
                }
            }
        }
    }
}

impl<S: Clone> Drop for Uring<S> {
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
    use crate::poller::Submission;
    use std::os::fd::{AsRawFd, OwnedFd};

    /// A ring and its waker, or `None` (and a note) where io_uring is unavailable.
    /// `CORELOOP_REQUIRE_URING` (set by CI) makes its absence a failure instead.
    fn test_ring() -> Option<(Uring<()>, Arc<Waker>)> {
        let waker = Arc::new(Waker::new().expect("eventfd"));
        match Uring::new(&waker) {
            Ok(u) => Some((u, waker)),
            Err(e) if std::env::var_os("CORELOOP_REQUIRE_URING").is_some() => {
                panic!("io_uring unavailable ({e}) and CORELOOP_REQUIRE_URING is set")
            }
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
        if u.fixed.is_empty() {
            return eprintln!("skipped: no registered file table here");
        }
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("pair");
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let fd: OwnedFd = ours.into();
        let raw = fd.as_raw_fd();
        let send = Submission::Send {
            fd: raw,
            buf: b"ping".to_vec(),
            offset: 0,
        };
        assert!(u.submit(send, ()).is_ok());
        assert!(
            u.fixed.is_installed(raw as u32),
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
        let (_, c) = done.pop().expect("a send completion");
        assert_eq!(c.result.expect("send through the table"), 4);
        assert_eq!(c.buf, b"ping", "the send's buffer comes back");
        let mut got = [0u8; 8];
        assert_eq!(peer.read(&mut got).expect("read"), 4);
        assert_eq!(&got[..4], b"ping");
        u.close_fd(fd);
        assert!(!u.fixed.is_installed(raw as u32), "slot cleared");
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

    /// A recv takes no more than its limit from the socket (plus what is left of the
    /// buffer it was filling) and then ends; the rest stays in the kernel. Both ways a
    /// recv is made: multishot with the kernel's byte limit, and one buffer at a time.
    #[test]
    fn a_recv_ends_at_its_limit_and_leaves_the_rest_in_the_socket() {
        use std::io::Write;
        let Some((mut u, _waker)) = test_ring() else {
            return;
        };
        let kernel_limit = u.recv_limit;
        for multishot in [true, false] {
            if multishot && !kernel_limit {
                eprintln!("no multishot recv limit here (Linux 6.17+): one way only");
                continue;
            }
            u.recv_limit = multishot;
            let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("pair");
            peer.write_all(&[7u8; 100_000]).expect("write");
            let fd: OwnedFd = ours.into();
            let limit = 10_000;
            let recv = Submission::Recv {
                fd: fd.as_raw_fd(),
                limit,
            };
            assert!(u.submit(recv, ()).is_ok());
            let (mut events, mut done, mut pool) = (Vec::new(), Vec::new(), BufferPool::default());
            let (mut got, mut ended) = (0, false);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !ended && Instant::now() < deadline {
                u.poll(
                    &mut events,
                    &mut done,
                    &mut pool,
                    Some(Duration::from_millis(10)),
                )
                .expect("poll");
                for (_, c) in done.drain(..) {
                    assert!(c.result.is_ok(), "{:?}", c.result);
                    got += c.buf.len();
                    ended = !c.more;
                }
            }
            assert!(ended, "multishot {multishot}: the recv ended");
            let most = if multishot {
                limit + bufring::SIZE
            } else {
                bufring::SIZE
            };
            assert!(
                got > 0 && got <= most,
                "multishot {multishot}: took {got} bytes for a limit of {limit}"
            );
            u.close_fd(fd);
            u.poll(&mut events, &mut done, &mut pool, Some(Duration::ZERO))
                .expect("poll");
        }
    }

    #[test]
    fn poll_mask_maps_to_ready() {
        let r = ready_of_mask((libc::POLLIN | libc::POLLHUP) as u32);
        assert!(r.is_readable() && r.is_hup() && !r.is_writable());
        assert!(ready_of_mask(libc::POLLNVAL as u32).is_error());
    }
}
