//! Moving bytes between a socket and a `Vec`'s spare capacity, without zeroing it
//! first (the readiness-based transport's reads and writes).
//!
//! The calls go to the kernel through `syscall(2)`, not libc's `recv` and `send`: those
//! are thread-cancellation points, which libc brackets with two calls that cost as much
//! as the rest of the wrapper (and coreloop never cancels a thread).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// The result of a raw system call: the count, or the error it set.
fn check(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Receives once from a socket into `buf`'s spare capacity (growing it to at least
/// 4 KiB of spare room first), appending what arrived. `Ok(0)` is end of file.
pub(crate) fn recv_into(fd: impl AsFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(super::BUF_SIZE.max(buf.len()));
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel writes at most `spare.len()` bytes into `spare`, memory this
    // Vec owns and that nothing else refers to; the null address arguments ask for no
    // sender address.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd.as_fd().as_raw_fd(),
            spare.as_mut_ptr(),
            spare.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    let n = check(r)?;
    // SAFETY: recvfrom initialised the first `n` bytes of the spare capacity (it returns
    // how many it wrote, never more than the length it was given).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sends `data` once without raising SIGPIPE; returns how much was sent.
pub(crate) fn send_from(fd: impl AsFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `data.len()` bytes from `data`, which outlives
    // the call; a null address sends on the connected socket.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd.as_fd().as_raw_fd(),
            data.as_ptr(),
            data.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    check(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn recv_into_appends_after_existing_bytes() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"world").unwrap();
        let mut buf = b"hello ".to_vec();
        assert_eq!(recv_into(&b, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"hello world");
        drop(a);
        assert_eq!(recv_into(&b, &mut buf).unwrap(), 0);
    }
}
