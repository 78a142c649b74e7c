//! Listening sockets: `bind_reuseport` and the options of an acceptor.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// How an [`Acceptor`](crate::net::Acceptor) listens and accepts.
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
    /// Let this server share its port with other listeners that opt in too (another
    /// server of this process, or another process of the same user, as in a rolling
    /// restart by hand); the kernel then spreads connections over all of them. Default
    /// false: a port something already listens on is refused with `AddrInUse`, as
    /// Tornado's `listen` does.
    pub share_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            max_connections: 100_000,
            accepts_per_event: 64,
            fd_exhausted_pause: Duration::from_millis(100),
            share_port: false,
        }
    }
}

/// One listener per core on `addr`: the first binds `addr` (port 0 picks a port), the
/// rest bind the port it got. Unless `opts.share_port`, a port that something already
/// listens on is refused first: a socket without `SO_REUSEPORT` is bound to it and
/// released (a port held by any listener, ours or another process's, refuses that
/// bind), and the listeners then take the port it proved free.
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    opts: &ListenOptions,
    n: usize,
) -> io::Result<Vec<TcpListener>> {
    let mut at = addr;
    if !opts.share_port {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            probe.set_only_v6(true)?;
        }
        // SO_REUSEADDR lets the port be taken while old connections of it linger in
        // TIME_WAIT; on Linux it never lets two sockets listen on one port.
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{addr}: {e} (set ListenOptions::share_port to share a port on purpose)"),
            )
        })?;
        if let Some(a) = probe.local_addr()?.as_socket() {
            at = a;
        }
        // Released before the listeners bind: a bound socket without SO_REUSEPORT
        // would refuse them too.
        drop(probe);
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let l = bind_reuseport(at, opts.backlog)?;
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Which listening sockets each of `n` cores accepts from, for sockets a server did
/// not bind itself (`inherited`: taken over from the instance it replaces, or passed
/// by systemd), so that every one of them is accepted from: each socket is an accept
/// queue, and one nobody accepts from would hold its connections until they time out.
/// As many sockets as cores: one each. Fewer: sockets taken over are joined by new
/// ones bound on the same port (they join the port's `SO_REUSEPORT` group, and are
/// handed over in turn at the next restart); systemd's are shared, each core
/// accepting from a copy (systemd holds them across restarts, so a socket of this
/// process's own would lose what is queued in it when it stops). More: a core accepts
/// from several.
pub(crate) fn spread(
    addr: SocketAddr,
    inherited: Vec<TcpListener>,
    bind_more: bool,
    backlog: i32,
    n: usize,
) -> io::Result<Vec<Vec<TcpListener>>> {
    let n = n.max(1);
    let k = inherited.len();
    let mut per_core: Vec<Vec<TcpListener>> = (0..n).map(|_| Vec::new()).collect();
    for (j, l) in inherited.into_iter().enumerate() {
        per_core[j % n].push(l);
    }
    for core in k.min(n)..n {
        let more = if bind_more {
            bind_reuseport(addr, backlog).map_err(|e| {
                log::debug!("coreloop: {addr}: binding another socket beside those taken over: {e}; sharing them");
                e
            })
        } else {
            Err(io::ErrorKind::Unsupported.into())
        };
        let l = match more {
            Ok(l) => l,
            Err(_) => per_core[core % k.max(1)]
                .first()
                .ok_or_else(|| io::Error::other("no socket to share"))?
                .try_clone()?,
        };
        per_core[core].push(l);
    }
    Ok(per_core)
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
