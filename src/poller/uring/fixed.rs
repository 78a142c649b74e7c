//! The ring's registered file table.
//!
//! A socket that sends or receives through the ring (a stream's) is installed at the
//! slot of its fd number the first time it is used, and its recvs and sends name the
//! slot instead of the fd: the kernel then skips the `fget`/`fput` pair (an atomic
//! reference count on a shared cache line) it does per op for a plain fd (`perf` on the
//! hello server under `wrk -c256`: `fget`+`fput` fell from 1.6% of its CPU to 0.3%, the
//! rest being the ring's own fd at each enter). The slot is cleared before the fd itself
//! is closed, since the table holds its own reference to the socket. Fds past the table
//! (or every fd, where the kernel has no sparse tables) are used as plain fds.

use io_uring::{opcode, IoUring, Probe};
use std::os::fd::RawFd;

/// Largest registered file table a ring asks for (8 bytes of kernel memory per slot).
const FIXED_SLOTS_MAX: usize = 16_384;

/// Which slots of the registered table hold a socket.
pub(super) struct FixedFiles {
    /// `numbers[i] == i`: what a FILES_UPDATE SQE installing slot `i` reads, at the
    /// enter that submits it. Lives as long as the ring.
    numbers: Box<[RawFd]>,
    /// Which slots hold a socket.
    installed: Vec<bool>,
}

impl FixedFiles {
    /// Registers a sparse table as large as the fd limit allows (capped), or none.
    pub(super) fn register(ring: &IoUring, probe: &Probe) -> FixedFiles {
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
    pub(super) fn slot(&self, fd: RawFd) -> Option<u32> {
        usize::try_from(fd)
            .ok()
            .filter(|&i| i < self.installed.len())
            .map(|i| i as u32)
    }

    /// Whether `slot` holds a socket.
    pub(super) fn is_installed(&self, slot: u32) -> bool {
        self.installed[slot as usize]
    }

    /// Marks `slot` as holding a socket (or not); says whether it did before.
    pub(super) fn set_installed(&mut self, slot: u32, on: bool) -> bool {
        std::mem::replace(&mut self.installed[slot as usize], on)
    }

    /// Where the number `slot` is kept for the FILES_UPDATE SQE that installs it.
    pub(super) fn number_ptr(&self, slot: u32) -> *const RawFd {
        &self.numbers[slot as usize]
    }

    /// Whether a table was registered at all.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }
}
