//! `Incoming`: connections accepted on one loop, for a task to take one at a time.

use super::acceptor::Acceptor;
use super::listen::{bind_reuseport, ListenOptions};
use crate::iostream::IoStream;
use crate::reactor::IoLoop;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Accepted connections queue up to this many before accepting holds off (the kernel's
/// backlog keeps the rest).
const QUEUE: usize = 128;

#[derive(Default)]
struct Queue {
    ready: VecDeque<IoStream>,
    waker: Option<Waker>,
    /// The acceptor failed or stopped: nothing more will come.
    ended: bool,
    /// The acceptor, to hold it off while the queue is full (a cycle with its callback,
    /// broken when it stops).
    acceptor: Option<Acceptor>,
}

/// A listener's accepted connections, for tasks: `incoming.accept().await` (the async
/// counterpart of [`Acceptor`], on the same machinery). Connections accepted before
/// anyone asks wait in a bounded queue; dropping an `accept` future loses none of them.
/// Dropping the `Incoming` stops accepting and closes the connections still queued.
///
/// ```
/// use coreloop::{Incoming, IoLoop, IoStream};
/// use std::io::{Read, Write};
/// let lp = IoLoop::new()?;
/// let incoming = Incoming::bind(&lp, "127.0.0.1:0".parse().unwrap())?;
/// let addr = incoming.local_addr()?;
/// let client = std::thread::spawn(move || {
///     let mut c = std::net::TcpStream::connect(addr).unwrap();
///     c.write_all(b"ping\n").unwrap();
///     let mut got = String::new();
///     c.read_to_string(&mut got).unwrap();
///     got
/// });
/// lp.run_until_complete(async move {
///     let s = incoming.accept().await?;
///     let line = s.read_until(b"\n", 64).await?;
///     s.write(&line).await?;
///     s.flush().await?;
///     s.close();
///     Ok::<_, std::io::Error>(())
/// })??;
/// assert_eq!(client.join().unwrap(), "ping\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Incoming {
    queue: Rc<RefCell<Queue>>,
    acceptor: Acceptor,
}

impl Incoming {
    /// Accepts on `listener` (made nonblocking here) on `lp`.
    pub fn start(lp: &IoLoop, listener: TcpListener, opts: ListenOptions) -> io::Result<Incoming> {
        let queue = Rc::new(RefCell::new(Queue::default()));
        let q = queue.clone();
        let acceptor = Acceptor::start(lp, listener, opts, move |_, stream| {
            let (waker, hold) = {
                let mut q = q.borrow_mut();
                q.ready.push_back(stream);
                let hold = (q.ready.len() >= QUEUE)
                    .then(|| q.acceptor.clone())
                    .flatten();
                (q.waker.take(), hold)
            };
            if let Some(w) = waker {
                w.wake();
            }
            if let Some(acc) = hold {
                acc.hold();
            }
        })?;
        queue.borrow_mut().acceptor = Some(acceptor.clone());
        Ok(Incoming { queue, acceptor })
    }

    /// Binds `addr` (SO_REUSEPORT, so every core may have its own) and accepts on it.
    pub fn bind(lp: &IoLoop, addr: SocketAddr) -> io::Result<Incoming> {
        let opts = ListenOptions::default();
        let listener = bind_reuseport(addr, opts.backlog)?;
        Incoming::start(lp, listener, opts)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }

    /// The next accepted connection (TCP_NODELAY set). An error once accepting has
    /// stopped.
    pub async fn accept(&self) -> io::Result<IoStream> {
        std::future::poll_fn(|cx| {
            let (next, resume) = {
                let mut q = self.queue.borrow_mut();
                let next = q.ready.pop_front();
                if next.is_none() {
                    if q.ended {
                        return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                    }
                    q.waker = Some(cx.waker().clone());
                }
                (next, q.ready.len() < QUEUE / 2)
            };
            if resume {
                self.acceptor.resume();
            }
            match next {
                Some(s) => Poll::Ready(Ok(s)),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The acceptor underneath (connection counts, pause state).
    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.acceptor.stop();
        let queued: Vec<IoStream> = {
            let mut q = self.queue.borrow_mut();
            q.ended = true;
            q.acceptor = None;
            q.ready.drain(..).collect()
        };
        for s in queued {
            s.close();
        }
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("queued", &self.queue.borrow().ready.len())
            .field("acceptor", &self.acceptor)
            .finish()
    }
}
