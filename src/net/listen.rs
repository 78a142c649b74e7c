//! Listening sockets: `bind_reuseport` and the options of an acceptor.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// How an [`Acceptor`] listens and accepts.
///
/// ```
/// use coreloop::ListenOptions;
/// let opts = ListenOptions { max_connections: 10_000, ..ListenOptions::default() };
/// assert_eq!(opts.backlog, 1024);
/// ```
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// The kernel's queue of connections not yet accepted.
    pub backlog: i32,
    /// Open connections per loop at most; accepting stops while it is reached.
    pub max_connections: usize,
    /// epoll: accepts per readiness event at most (level triggering brings the rest).
    pub accepts_per_event: usize,
    /// How long accepting pauses when the process is out of file descriptors.
    pub fd_exhausted_pause: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            max_connections: 100_000,
            accepts_per_event: 64,
            fd_exhausted_pause: Duration::from_millis(100),
        }
    }
}

/// Binds a nonblocking TCP listener with `SO_REUSEADDR` and `SO_REUSEPORT` (IPv4 or
/// IPv6; an IPv6 listener is IPv6-only, so `[::]` and `0.0.0.0` can share a port).
///
/// ```
/// let a = coreloop::bind_reuseport("127.0.0.1:0".parse().unwrap(), 128)?;
/// let port = a.local_addr()?.port();
/// // A second listener on the same port: the kernel balances between them.
/// let b = coreloop::bind_reuseport(a.local_addr()?, 128)?;
/// assert_eq!(b.local_addr()?.port(), port);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}
