//! The op table and the completion ops: what each SQE is for, what it owns until its
//! last CQE, and how its CQEs read.
//!
//! Every SQE carries a `user_data` that says who owns its completions:
//! [`user_data::IGNORE`] (removals, cancellations and closes, whose CQEs mean nothing to
//! us), [`user_data::WAKER`] (the multishot poll on the wake-up eventfd), or
//! [`user_data::TAG_OP`] with a generation and an index into the op table. An op slot
//! lives until its last CQE (the one without `IORING_CQE_F_MORE`), so a late completion
//! always finds the slot it belongs to, and the generation makes a recycled slot refuse
//! completions meant for its previous owner.
//!
//! Two kinds of op live in the table: the loop's one-shot readiness polls, and the
//! completion ops of [`Submission`]. Adding a completion op means a `Submission`
//! variant (the backend-neutral contract in `poller/mod.rs`), its SQE and what it owns
//! in [`Uring::submit`] here, and its consumer; the reaping is the same for every op.

use super::bufring::{BufRing, GROUP};
use super::Uring;
use crate::poller::{Completion, OpId, Submission};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Named `user_data` values and tags.
pub(crate) mod user_data {
    /// SQEs whose completion is of no interest (poll removals, cancellations, closes).
    pub const IGNORE: u64 = 0;
    /// The multishot poll on the loop's wake-up eventfd.
    pub const WAKER: u64 = 1;
    /// A wake-up posted by another loop's ring with `MSG_RING` (see `msg_ring.rs`).
    pub const WAKER_MSG: u64 = 2;
    /// The recv of [`probe_recv_limit`](super::probe_recv_limit), while the ring is made.
    pub const PROBE: u64 = 3;
    /// This loop's `MSG_RING` to another ring: `TAG_WAKE | tag` (a CQE only on failure).
    pub const TAG_WAKE: u64 = 2 << 56;
    /// Ops in the op table: `TAG_OP | generation << 32 | index`.
    pub const TAG_OP: u64 = 1 << 56;
    /// The bits that hold a tag.
    pub const TAG_MASK: u64 = 0xff << 56;
}

/// The opcodes this crate submits; a kernel missing any of them gets epoll instead.
pub(super) const NEEDED_OPCODES: [(u8, &str); 7] = [
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::PollRemove::CODE, "POLL_REMOVE"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Close::CODE, "CLOSE"),
];

/// What an op keeps alive for the kernel until its last CQE, handed back with it.
pub(super) enum Owned {
    Nothing,
    /// A send's bytes: the kernel reads them until the CQE.
    Buf(Vec<u8>),
}

/// How a non-negative CQE result reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Yields {
    /// A count (bytes received or sent).
    Count,
    /// A new file descriptor (accept).
    File,
}

/// What an op in flight is for.
pub(super) enum OpKind<S> {
    /// A one-shot readiness poll on this fd (the loop's handlers).
    Poll { fd: RawFd },
    /// A completion op: its owner, what it owns, how its result reads.
    Op {
        owner: S,
        owned: Owned,
        yields: Yields,
    },
}

/// One slot of the op table. `kind` is `Some` while an op is in flight.
struct OpSlot<S> {
    generation: u32,
    kind: Option<OpKind<S>>,
}

/// The op table: slots addressed by `user_data`, reused through a free list.
pub(super) struct Ops<S> {
    slots: Vec<OpSlot<S>>,
    free: Vec<u32>,
}

impl<S> Default for Ops<S> {
    fn default() -> Self {
        Ops {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<S: Clone> Ops<S> {
    pub(super) fn insert(&mut self, kind: OpKind<S>) -> u64 {
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

    fn slot(&mut self, ud: u64) -> Option<&mut OpSlot<S>> {
        let idx = (ud & 0xffff_ffff) as usize;
        let gen = ((ud >> 32) & 0xff_ffff) as u32;
        self.slots
            .get_mut(idx)
            .filter(|s| s.generation & 0xff_ffff == gen && s.kind.is_some())
    }

    /// The op a CQE belongs to; frees the slot (handing over what the op owned) when
    /// this is its last CQE. Before that, a copy of the owner and nothing owned.
    pub(super) fn complete(&mut self, ud: u64, last: bool) -> Option<OpKind<S>> {
        let slot = self.slot(ud)?;
        if !last {
            return Some(match slot.kind.as_ref()? {
                OpKind::Poll { fd } => OpKind::Poll { fd: *fd },
                OpKind::Op { owner, yields, .. } => OpKind::Op {
                    owner: owner.clone(),
                    owned: Owned::Nothing,
                    yields: *yields,
                },
            });
        }
        let kind = slot.kind.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push((ud & 0xffff_ffff) as u32);
        Some(kind)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A CQE of a completion op as the loop sees it: its result, whether more follow, the
/// received bytes (read out of the provided-buffer ring by the caller) or what the op
/// owned, and the accepted file.
pub(super) fn completion(
    res: i32,
    more: bool,
    received: Option<Vec<u8>>,
    owned: Owned,
    yields: Yields,
) -> Completion {
    let mut c = Completion {
        result: if res >= 0 {
            Ok(res as u32)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        },
        more,
        buf: Vec::new(),
        file: None,
    };
    if res >= 0 && yields == Yields::File {
        // SAFETY: a successful accept CQE carries a new fd that nothing else owns.
        c.file = Some(unsafe { OwnedFd::from_raw_fd(res) });
    }
    if let Some(data) = received {
        c.buf = data;
    } else if let Owned::Buf(b) = owned {
        c.buf = b;
    }
    c
}

impl<S: Clone> Uring<S> {
    /// Starts a completion op; see [`Submission`] for what each does.
    pub(crate) fn submit(&mut self, op: Submission, owner: S) -> io::Result<OpId> {
        let (sqe, owned, yields) = match op {
            Submission::Accept { fd, multishot } => {
                let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                let sqe = if multishot {
                    opcode::AcceptMulti::new(types::Fd(fd)).flags(flags).build()
                } else {
                    opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(flags)
                        .build()
                };
                // No address buffer is passed (null pointers): it refers to no memory.
                (sqe, Owned::Nothing, Yields::File)
            }
            Submission::Recv { fd, limit } => {
                let limit = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
                let slot = self.fixed_slot(fd);
                let sqe = if self.recv_limit {
                    let sqe = match slot {
                        Some(i) => opcode::RecvMulti::new(types::Fixed(i), GROUP),
                        None => opcode::RecvMulti::new(types::Fd(fd), GROUP),
                    };
                    with_total_limit(sqe.build(), limit)
                } else {
                    // One buffer at most: a multishot recv could fill every buffer of
                    // the ring before the loop sees the first.
                    let len = limit.min(super::bufring::SIZE as u32);
                    let null = std::ptr::null_mut();
                    match slot {
                        Some(i) => opcode::Recv::new(types::Fixed(i), null, len),
                        None => opcode::Recv::new(types::Fd(fd), null, len),
                    }
                    .buf_group(GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
                };
                // The recv writes only into ring buffers, which live until the ring is
                // unregistered after every op has completed (see Drop).
                (sqe, Owned::Nothing, Yields::Count)
            }
            Submission::Hangup { fd } => {
                let mask = (libc::POLLERR | libc::POLLHUP) as u32;
                let sqe = match self.fixed_slot(fd) {
                    Some(i) => opcode::PollAdd::new(types::Fixed(i), mask),
                    None => opcode::PollAdd::new(types::Fd(fd), mask),
                }
                .build();
                // A poll refers to no memory of ours.
                (sqe, Owned::Nothing, Yields::Count)
            }
            Submission::Send { fd, buf, offset } => {
                let len = (buf.len() - offset).min(u32::MAX as usize) as u32;
                let ptr = buf[offset..].as_ptr();
                let op = match self.fixed_slot(fd) {
                    Some(i) => opcode::Send::new(types::Fixed(i), ptr, len),
                    None => opcode::Send::new(types::Fd(fd), ptr, len),
                };
                // `ptr..ptr+len` lies in the Vec the op slot owns from here on; moving a
                // Vec does not move its heap buffer, and the slot keeps it until the CQE.
                (
                    op.flags(libc::MSG_NOSIGNAL).build(),
                    Owned::Buf(buf),
                    Yields::Count,
                )
            }
        };
        let ud = self.ops.insert(OpKind::Op {
            owner,
            owned,
            yields,
        });
        // SAFETY: what the SQE points to is owned by the op slot (or is the ring's own
        // buffers, or nothing) until its last CQE, as each arm above says.
        if let Err(e) = unsafe { self.push(&sqe.user_data(ud)) } {
            self.ops.complete(ud, true);
            return Err(e);
        }
        Ok(OpId(ud))
    }

    /// Asks the kernel to cancel an op; its last CQE still arrives (with `ECANCELED` or
    /// its result) and releases what it owns.
    pub(crate) fn cancel(&mut self, op: OpId) {
        let sqe = opcode::AsyncCancel::new(op.0)
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: a cancel SQE refers to no memory.
        if let Err(e) = unsafe { self.push(&sqe) } {
            log::warn!("coreloop: cancelling an io_uring op: {e}");
        }
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
            if self.fixed.set_installed(slot, false) {
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

    /// The table slot an op on `fd` should name, installing the socket there first (the
    /// FILES_UPDATE SQE goes ahead of the op's in the queue, and the kernel issues SQEs
    /// in order); `None`: use the plain fd.
    fn fixed_slot(&mut self, fd: RawFd) -> Option<u32> {
        let slot = self.fixed.slot(fd)?;
        if self.fixed.is_installed(slot) {
            return Some(slot);
        }
        let sqe = opcode::FilesUpdate::new(self.fixed.number_ptr(slot), 1)
            .offset(slot as i32)
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: the pointer is into the table's numbers, which live as long as the
        // ring; the kernel reads it when it issues the SQE.
        if unsafe { self.push(&sqe) }.is_err() {
            return None;
        }
        self.fixed.set_installed(slot, true);
        Some(slot)
    }

    /// Queues `sqe` (whose pointers outlive the op) with `user_data` `ud`.
    ///
    /// # Safety
    /// As for [`push`](Self::push).
    pub(super) unsafe fn submit_tagged(&mut self, ud: u64, sqe: squeue::Entry) -> io::Result<u64> {
        // SAFETY: the caller's guarantee.
        if let Err(e) = unsafe { self.push(&sqe.user_data(ud)) } {
            self.ops.complete(ud, true);
            return Err(e);
        }
        Ok(ud)
    }
}

/// Where the kernel's SQE keeps a multishot recv's total byte limit (`optlen`, a `u32`
/// shared with `file_index` and `splice_fd_in`), which the io-uring crate's builder does
/// not set.
const SQE_OPTLEN: usize = 44;

/// A multishot recv that ends (its last CQE without `IORING_CQE_F_MORE`) once `limit`
/// bytes have come: a byte limit the kernel keeps, so that no more than that leaves the
/// socket however many CQEs it posts before the loop looks (Linux 6.17; older kernels
/// refuse the SQE with `EINVAL`, see [`probe_recv_limit`]).
fn with_total_limit(sqe: squeue::Entry, limit: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte
    // `io_uring_sqe` (transmute checks the size), which has no padding, pointers or
    // invariants of its own; the four bytes at SQE_OPTLEN are its `optlen` field in the
    // kernel's ABI, zero as the builder left them.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(sqe) };
    raw[SQE_OPTLEN..SQE_OPTLEN + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: the same bytes back, with one field of the SQE set.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Whether this kernel stops a multishot recv at a byte limit: a recv limited to one
/// byte on a socket pair that holds two must end after its first CQE. Called while the
/// ring is made, before anything else is queued; any CQE it leaves is its own.
pub(super) fn probe_recv_limit(ring: &mut IoUring, bufs: &mut BufRing) -> bool {
    let Ok((ours, mut theirs)) = std::os::unix::net::UnixStream::pair() else {
        return false;
    };
    if theirs.write_all(b"ab").is_err() {
        return false;
    }
    let recv = opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), GROUP).build();
    let sqe = with_total_limit(recv, 1).user_data(user_data::PROBE);
    // SAFETY: the recv writes only into the registered buffer ring, which outlives it
    // (the op ends here: below, or by the cancel, before the socket is dropped).
    if unsafe { ring.submission().push(&sqe) }.is_err() || ring.submit_and_wait(1).is_err() {
        return false;
    }
    let mut verdict = None;
    let mut armed = true;
    for _ in 0..100 {
        for cqe in ring.completion() {
            if cqe.user_data() != user_data::PROBE {
                continue;
            }
            if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                bufs.recycle(bid);
            }
            let more = cqueue::more(cqe.flags());
            armed = more;
            verdict.get_or_insert(cqe.result() > 0 && !more);
        }
        if !armed {
            break;
        }
        // Still armed: the kernel took the SQE and ignored its limit. End it.
        let cancel = opcode::AsyncCancel::new(user_data::PROBE)
            .build()
            .user_data(user_data::IGNORE);
        // SAFETY: a cancel SQE refers to no memory.
        if unsafe { ring.submission().push(&cancel) }.is_ok() {
            let _ = ring.submit_and_wait(1);
        }
    }
    verdict.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_slots_refuse_completions_after_reuse() {
        let mut ops: Ops<()> = Ops::default();
        let a = ops.insert(OpKind::Poll { fd: 3 });
        assert!(ops.complete(a, true).is_some());
        let b = ops.insert(OpKind::Poll { fd: 4 });
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "slot reused");
        assert!(ops.complete(a, true).is_none(), "old user_data must miss");
        assert!(matches!(
            ops.complete(b, false),
            Some(OpKind::Poll { fd: 4 })
        ));
        assert_eq!(ops.in_flight(), 1, "a CQE with F_MORE keeps the slot");
        assert!(ops.complete(b, true).is_some());
        assert_eq!(ops.in_flight(), 0);
    }

    #[test]
    fn a_send_hands_its_buffer_back_on_its_last_cqe_only() {
        let mut ops: Ops<u8> = Ops::default();
        let ud = ops.insert(OpKind::Op {
            owner: 7,
            owned: Owned::Buf(b"abc".to_vec()),
            yields: Yields::Count,
        });
        match ops.complete(ud, false) {
            Some(OpKind::Op {
                owner: 7,
                owned: Owned::Nothing,
                ..
            }) => {}
            _ => panic!("a CQE with F_MORE hands over nothing the op owns"),
        }
        let Some(OpKind::Op { owned, yields, .. }) = ops.complete(ud, true) else {
            panic!("the last CQE finds the op");
        };
        let c = completion(3, false, None, owned, yields);
        assert_eq!((c.result.unwrap(), c.buf.as_slice()), (3, &b"abc"[..]));
        let c = completion(-libc::ECONNRESET, false, None, Owned::Nothing, Yields::File);
        assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
        assert!(c.file.is_none(), "an error carries no file");
    }
}
