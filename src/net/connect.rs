//! Connecting: a nonblocking TCP connect watched through the loop, which becomes an
//! [`IoStream`] once it completes.

use crate::iostream::{ConnectCallback, IoStream};
use crate::poller::Interest;
use crate::reactor::IoLoop;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;

impl IoStream {
    /// Connects to `addr` without blocking the loop (TCP_NODELAY set), then calls `cb`
    /// with the stream or the error. The connect is watched through the loop's readiness
    /// on either backend; `timeout` bounds it (a timeout is `TimedOut`).
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::time::Duration;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let lp = IoLoop::new()?;
    /// IoStream::connect(&lp, l.local_addr()?, Duration::from_secs(5), |lp, r| {
    ///     assert!(r.is_ok());
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<F>(
        lp: &IoLoop,
        addr: SocketAddr,
        timeout: std::time::Duration,
        cb: F,
    ) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, io::Result<IoStream>) + 'static,
    {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        sock.set_tcp_nodelay(true)?;
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let fd: OwnedFd = sock.into();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // The handler and the timer share the pending connect; whichever comes first
        // takes it.
        let pending = Rc::new(RefCell::new(Some((fd, Box::new(cb) as ConnectCallback))));
        let p = pending.clone();
        let timer = lp.call_later(timeout, move |lp| {
            if let Some((fd, cb)) = p.borrow_mut().take() {
                lp.remove_handler(std::os::fd::AsRawFd::as_raw_fd(&fd));
                drop(fd);
                cb(lp, Err(io::ErrorKind::TimedOut.into()));
            }
        });
        lp.add_handler(raw, Interest::WRITABLE, move |lp, fd, _ready| {
            let Some((owned, cb)) = pending.borrow_mut().take() else {
                lp.remove_handler(fd);
                return;
            };
            lp.remove_handler(fd);
            lp.remove_timeout(timer);
            let result = match socket2::SockRef::from(&owned).take_error() {
                Ok(None) => IoStream::from_fd(lp, owned),
                Ok(Some(e)) | Err(e) => Err(e),
            };
            cb(lp, result);
        })
    }
}
