//! Name lookup without blocking a loop: `getaddrinfo` (std's `to_socket_addrs`) runs on
//! the blocking pool, as Tornado's default resolver runs it on its executor, bounded by
//! a timeout on the loop's timer heap. A literal address is never looked up.
//!
//! [`IoLoop::resolve`] gives the addresses; [`IoStream::connect`](crate::IoStream::connect)
//! takes the same names and tries each address in turn.

use crate::reactor::{Call, IoLoop};
use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::SocketAddr {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for (&str, u16) {}
    impl Sealed for Vec<std::net::SocketAddr> {}
}

/// Where to connect ([`IoStream::connect`](crate::IoStream::connect)) or what to look up
/// ([`IoLoop::resolve`]): a [`SocketAddr`], a `"host:port"` string (`&str` or `String`;
/// an IPv6 host in brackets, `"[::1]:80"`), a `(host, port)` pair, or a list of
/// addresses (tried in turn, as a name's are). A host that is a literal IP address is
/// used as it is; any other is looked up on the blocking pool.
///
/// ```
/// use coreloop::ToConnectAddr;
/// fn takes(_: impl ToConnectAddr) {}
/// takes("localhost:8080");
/// takes(("example.com", 443));
/// let addr: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
/// takes(addr);
/// takes(vec![addr, "[::1]:80".parse().unwrap()]);
/// ```
pub trait ToConnectAddr: sealed::Sealed {
    #[doc(hidden)]
    /// The addresses, or the host and port to look up, or why the input is neither.
    fn to_target(&self) -> io::Result<Result<Vec<SocketAddr>, (String, u16)>>;
}

impl ToConnectAddr for SocketAddr {
    fn to_target(&self) -> io::Result<Result<Vec<SocketAddr>, (String, u16)>> {
        Ok(Ok(vec![*self]))
    }
}

impl ToConnectAddr for Vec<SocketAddr> {
    fn to_target(&self) -> io::Result<Result<Vec<SocketAddr>, (String, u16)>> {
        if self.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty list of addresses",
            ));
        }
        Ok(Ok(self.clone()))
    }
}

impl ToConnectAddr for &str {
    fn to_target(&self) -> io::Result<Result<Vec<SocketAddr>, (String, u16)>> {
        if let Ok(a) = self.parse::<SocketAddr>() {
            return Ok(Ok(vec![a]));
        }
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self:?} is not host:port"),
            )
        };
        let (host, port) = self.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        (host, port).to_target()
    }
}

impl ToConnectAddr for String {
    fn to_target(&self) -> io::Result<Result<Vec<SocketAddr>, (String, u16)>> {
        self.as_str().to_target()
    }
}

impl ToConnectAddr for (&str, u16) {
    fn to_target(&self) -> io::Result<Result<Vec<SocketAddr>, (String, u16)>> {
        let (host, port) = *self;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty host name",
            ));
        }
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(Ok(vec![SocketAddr::new(ip, port)])),
            Err(_) => Ok(Err((host.to_string(), port))),
        }
    }
}

/// Looks `host` up on `lp`'s blocking pool; `done` runs on `lp` with the addresses (at
/// least one) or the error: the lookup's, `TimedOut` after `timeout`, or the pool's
/// refusal. The lookup itself cannot be cancelled: past the timeout its answer is
/// dropped.
pub(crate) fn lookup(
    lp: &IoLoop,
    host: String,
    port: u16,
    timeout: Duration,
    done: impl FnOnce(&IoLoop, io::Result<Vec<SocketAddr>>) + 'static,
) {
    type Done = Box<dyn FnOnce(&IoLoop, io::Result<Vec<SocketAddr>>)>;
    let waiting: Rc<RefCell<Option<Done>>> = Rc::new(RefCell::new(Some(Box::new(done))));
    let w = waiting.clone();
    let name = host.clone();
    let timer = lp.call_later(timeout, move |lp| {
        let done = w.borrow_mut().take();
        if let Some(done) = done {
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("looking up {name}: no answer within {timeout:?}"),
            );
            done(lp, Err(e));
        }
    });
    lp.call_blocking(move || {
        let found: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("looking up {host}: {e}")))?
            .collect();
        if found.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("looking up {host}: no addresses"),
            ));
        }
        Ok(found)
    })
    .then(move |lp, answer| {
        lp.remove_timeout(timer);
        let done = waiting.borrow_mut().take();
        if let Some(done) = done {
            done(lp, answer.map_err(io::Error::from).and_then(|r| r));
        }
    });
}

impl IoLoop {
    /// Looks up `name` (`"host:port"`, or see [`ToConnectAddr`]) without blocking the
    /// loop: `getaddrinfo` runs on the blocking pool ([`call_blocking`](Self::call_blocking)),
    /// bounded by `timeout` (then the answer is `TimedOut`). A literal address is
    /// answered as it is. The addresses come in `getaddrinfo`'s order of preference.
    ///
    /// The call answers a [`CallError`](crate::CallError) if the pool refused the
    /// lookup (full, closed), and otherwise the lookup's own outcome; `?` turns either
    /// into an `io::Error`. To connect, give the name to
    /// [`IoStream::connect`](crate::IoStream::connect) instead: it looks up and tries
    /// each address in turn.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// let addrs = lp.run_until_complete({
    ///     let lp = lp.clone();
    ///     async move { lp.resolve("localhost:80", Duration::from_secs(5)).await }
    /// })???;
    /// assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    /// // With a continuation:
    /// lp.resolve("no-such-host.invalid:80", Duration::from_secs(5)).then(|lp, answer| {
    ///     assert!(matches!(answer, Ok(Err(_))), "no such name");
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn resolve(
        &self,
        name: impl ToConnectAddr,
        timeout: Duration,
    ) -> Call<io::Result<Vec<SocketAddr>>> {
        let target = name.to_target();
        let handle = self.handle();
        Call::new(move |reply| match target {
            Ok(Ok(addrs)) => reply.send(Ok(Ok(addrs))),
            Err(e) => reply.send(Ok(Err(e))),
            // The lookup is started from the loop (its timer is the loop's); a closed
            // loop drops the callback, and the reply with it answers Closed.
            Ok(Err((host, port))) => {
                let _ = handle.add_callback(move |lp| {
                    lookup(lp, host, port, timeout, move |_, r| reply.send(Ok(r)));
                });
            }
        })
        .made_by(self)
    }
}
