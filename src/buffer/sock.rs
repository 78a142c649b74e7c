//! Moving bytes between a socket and a `Vec`'s spare capacity, without zeroing it
//! first (the readiness-based transport's reads and writes).

use std::io;
use std::os::fd::AsFd;

/// Receives once from a socket into `buf`'s spare capacity (growing it to at least
/// 4 KiB of spare room first), appending what arrived. `Ok(0)` is end of file.
pub(crate) fn recv_into(fd: impl AsFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(super::BUF_SIZE.max(buf.len()));
    }
    let sock = socket2::SockRef::from(&fd);
    let n = sock.recv(buf.spare_capacity_mut())?;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (it returns how
    // many it wrote, never more than the slice's length).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sends `data` once without raising SIGPIPE; returns how much was sent.
pub(crate) fn send_from(fd: impl AsFd, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_with_flags(data, libc::MSG_NOSIGNAL)
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
