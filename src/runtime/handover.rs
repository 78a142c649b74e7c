//! Zero-downtime restart: the running instance of a service hands its listening sockets
//! to a new instance over a Unix socket (the "upgrade socket"), the new one serves on
//! them, and only then does the old one stop accepting and drain.
//!
//! Why the sockets themselves: each core's `SO_REUSEPORT` socket is its own accept
//! queue, and the connections queued in it are reset when the last descriptor of it
//! closes. A new process that bound sockets of its own would join the port's group
//! beside the old ones, and whatever sat in the old ones' queues when the old process
//! closed them would be lost. Passed with `SCM_RIGHTS`, a descriptor names the very
//! same socket in the new process; the old process closing its own then closes nothing
//! (HAProxy's `expose-fd listeners`, Envoy's hot restart and nginx's binary upgrade do
//! the same).
//!
//! The exchange, one `SOCK_SEQPACKET` message each (text, and descriptors attached):
//!
//! | from | message | descriptors |
//! |---|---|---|
//! | new | `coreloop-upgrade 1 take` | |
//! | old | `listen <server> <addr> <n>` (per server, in chunks) | its per-core listeners |
//! | old | `upgrade-socket` | the upgrade socket itself, so hand-overs go on at its path |
//! | old | `sent <servers> <pid>` | |
//! | new (serving now, [`Runtime::ready`](super::Runtime::ready)) | `ready` | |
//! | old (stops accepting, drains, exits) | `draining <pid>` | |
//!
//! Either side refuses a peer of another user (root excepted): the socket hands out
//! the service's ports. If the new instance goes away before `ready`, the old one
//! serves on as if nothing happened.

use super::inherit::{checked_listener, Group, Inherited, Origin};
use super::{Attached, AttachedServer};
use crate::reactor::LoopHandle;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const HELLO: &str = "coreloop-upgrade 1 take";
/// Descriptors per message (the kernel takes at most 253).
const MAX_FDS: usize = 128;
/// Longest message text.
const MAX_TEXT: usize = 4096;
/// How long either side waits for the other's next message (but the old instance
/// waits for `ready` as long as the new one stays connected: it is building its
/// runtime and servers).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Between stopping accepting and telling the protocol to drain: a connection accepted
/// just before the stop gets the time to send its first request, which is then
/// answered (an HTTP drain closes connections that have not sent one).
const SETTLE: Duration = Duration::from_millis(100);

/// The address of an upgrade socket path: a file, or with a leading `@` a name in
/// Linux's abstract namespace (no file; gone with the last descriptor).
fn sock_addr(path: &Path) -> io::Result<SockAddr> {
    match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => SockAddr::unix(format!("\0{name}")),
        None => SockAddr::unix(path),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("upgrade socket {}: {e}", path.display())))
}

fn is_abstract(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with('@'))
}

fn err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

fn seqpacket() -> io::Result<Socket> {
    Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)
}

/// Sends one message: `text`, with `fds` attached.
fn send(sock: &Socket, text: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(err(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != text.len() {
        return Err(err(io::ErrorKind::WriteZero, "message cut short"));
    }
    Ok(())
}

/// Receives one message: its text and the descriptors attached (close-on-exec). A
/// message whose text or descriptors did not fit is an error (and the descriptors
/// that did arrive are closed).
fn recv(sock: &Socket) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut text = [0u8; MAX_TEXT];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| match io::Error::from(e) {
        e if e.kind() == io::ErrorKind::WouldBlock => {
            err(io::ErrorKind::TimedOut, "no answer in time")
        }
        e => e,
    })?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    if msg
        .flags
        .intersects(ReturnFlags::CTRUNC | ReturnFlags::TRUNC)
    {
        return Err(err(io::ErrorKind::InvalidData, "message too long"));
    }
    if msg.bytes == 0 {
        return Err(err(
            io::ErrorKind::UnexpectedEof,
            "the other side closed the connection",
        ));
    }
    let text = std::str::from_utf8(&text[..msg.bytes])
        .map_err(|_| err(io::ErrorKind::InvalidData, "message is not text"))?;
    Ok((text.trim_end().to_string(), fds))
}

/// The peer's pid, if it runs as this process's user (or as root); an error otherwise.
/// (For the connecting side, the peer is whoever listened on the upgrade socket first,
/// which after a hand-over is an earlier instance: the old one names itself instead.)
fn peer_allowed(sock: &Socket) -> io::Result<u32> {
    let cred = rustix::net::sockopt::socket_peercred(sock)?;
    let me = rustix::process::getuid();
    if cred.uid != me && !cred.uid.is_root() {
        return Err(err(
            io::ErrorKind::PermissionDenied,
            format!(
                "peer pid {} runs as uid {}, not {}",
                cred.pid.as_raw_nonzero(),
                cred.uid.as_raw(),
                me.as_raw()
            ),
        ));
    }
    Ok(cred.pid.as_raw_nonzero().get() as u32)
}

/// Binds the upgrade socket of a fresh start. A file left by an instance that ended
/// without removing it is replaced; a live instance listening there is an error (this
/// one would have to take over from it instead).
pub(crate) fn bind(path: &Path) -> io::Result<Socket> {
    let addr = sock_addr(path)?;
    let s = seqpacket()?;
    if let Err(e) = s.bind(&addr) {
        if e.kind() != io::ErrorKind::AddrInUse {
            return Err(err(
                e.kind(),
                format!("upgrade socket {}: {e}", path.display()),
            ));
        }
        let live = seqpacket()?.connect(&addr).is_ok();
        if live || is_abstract(path) {
            return Err(err(
                io::ErrorKind::AddrInUse,
                format!(
                    "upgrade socket {}: another instance is running and hands over there: \
                     start this one to take over from it, or give it another upgrade socket",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
        s.bind(&addr)?;
    }
    if !is_abstract(path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    s.listen(16)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// What the new instance holds between taking the sockets and being ready.
pub(crate) struct TakenOver {
    conn: Socket,
    upgrade: Socket,
    pid: u32,
}

/// Connects to the instance serving hand-overs at `path` and takes its listening
/// sockets into `into`. `None`: nothing listens there (no instance runs).
pub(crate) fn take_over(path: &Path, into: &Inherited) -> io::Result<Option<TakenOver>> {
    let addr = sock_addr(path)?;
    let conn = seqpacket()?;
    if let Err(e) = conn.connect(&addr) {
        return match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Ok(None),
            _ => Err(err(
                e.kind(),
                format!("upgrade socket {}: {e}", path.display()),
            )),
        };
    }
    peer_allowed(&conn)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    send(&conn, HELLO, &[])?;
    let pid: u32;
    let mut groups: Vec<Group> = Vec::new();
    let mut upgrade = None;
    loop {
        let (text, fds) = recv(&conn)
            .map_err(|e| err(e.kind(), format!("taking over at {}: {e}", path.display())))?;
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let bad = |what: &str| {
            err(
                io::ErrorKind::InvalidData,
                format!("taking over at {}: {what}: {text:?}", path.display()),
            )
        };
        match words.as_slice() {
            ["listen", index, addr, n] => {
                let index: usize = index.parse().map_err(|_| bad("bad server index"))?;
                let addr: SocketAddr = addr.parse().map_err(|_| bad("bad address"))?;
                if n.parse::<usize>().ok() != Some(fds.len()) || fds.is_empty() {
                    return Err(bad("descriptors missing"));
                }
                let mut listeners = Vec::with_capacity(fds.len());
                for fd in fds {
                    let l = TcpListener::from(fd);
                    if checked_listener(&l)? != addr {
                        return Err(bad("a socket not on its address"));
                    }
                    listeners.push(l);
                }
                if index == groups.len() {
                    groups.push(Group {
                        addr,
                        listeners,
                        origin: Origin::Handover,
                        name: None,
                    });
                } else {
                    match groups.get_mut(index) {
                        Some(g) if g.addr == addr => g.listeners.extend(listeners),
                        _ => return Err(bad("servers out of order")),
                    }
                }
            }
            ["upgrade-socket"] => {
                let [fd] = <[OwnedFd; 1]>::try_from(fds).map_err(|_| bad("one descriptor"))?;
                let s = Socket::from(fd);
                if s.r#type()? != Type::SEQPACKET || !s.is_listener()? {
                    return Err(bad("not a listening upgrade socket"));
                }
                s.set_nonblocking(true)?;
                upgrade = Some(s);
            }
            ["sent", n, from] if n.parse::<usize>().ok() == Some(groups.len()) => {
                pid = from.parse().map_err(|_| bad("bad pid"))?;
                break;
            }
            ["error", ..] => {
                return Err(err(
                    io::ErrorKind::Other,
                    format!("{}: {text}", path.display()),
                ))
            }
            _ => return Err(bad("unexpected message")),
        }
    }
    let upgrade = upgrade.ok_or_else(|| {
        err(
            io::ErrorKind::InvalidData,
            format!("pid {pid} sent no upgrade socket"),
        )
    })?;
    let count: usize = groups.iter().map(|g| g.listeners.len()).sum();
    log::info!(
        "coreloop: took {count} listening socket(s) of {} server(s) from pid {pid}",
        groups.len()
    );
    for g in groups {
        into.add(g);
    }
    Ok(Some(TakenOver { conn, upgrade, pid }))
}

impl TakenOver {
    /// Tells the old instance that this one serves; it answers that it drains. Gives
    /// back the upgrade socket, for this instance to serve the next hand-over on, and
    /// whether the old instance confirmed (one gone meanwhile does not).
    pub(crate) fn ready(self) -> (Socket, io::Result<()>) {
        let confirmed = send(&self.conn, "ready", &[]).and_then(|_| {
            let (text, _) = recv(&self.conn)?;
            if text.starts_with("draining") {
                Ok(())
            } else {
                Err(err(
                    io::ErrorKind::InvalidData,
                    format!("unexpected answer {text:?}"),
                ))
            }
        });
        match &confirmed {
            Ok(()) => log::info!(
                "coreloop: serving; pid {} stops accepting and drains",
                self.pid
            ),
            Err(e) => log::warn!("coreloop: serving; pid {} did not confirm: {e}", self.pid),
        }
        (self.upgrade, confirmed)
    }
}

/// What the old instance's hand-over thread needs: the servers to hand over and then
/// drain, and the loops to stop.
pub(crate) struct Ctx {
    pub(crate) attached: Attached,
    pub(crate) loops: Vec<LoopHandle>,
    pub(crate) deadline: Duration,
}

/// The thread that serves hand-overs on the upgrade socket.
pub(crate) struct HandoverServer {
    wake: UnixStream,
    thread: JoinHandle<bool>,
    path: PathBuf,
}

impl HandoverServer {
    pub(crate) fn start(listener: Socket, path: PathBuf, ctx: Ctx) -> io::Result<HandoverServer> {
        let (wake, woken) = UnixStream::pair()?;
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("coreloop-upgrade".into())
            .spawn(move || serve(listener, woken, ctx, &shown))?;
        Ok(HandoverServer { wake, thread, path })
    }

    /// Stops serving hand-overs and joins the thread. The socket's file is removed
    /// unless the sockets were handed over (the new instance serves on it now).
    pub(crate) fn close(self) {
        // (MSG_NOSIGNAL: the thread may have ended, closing the other end.)
        let _ = rustix::net::send(&self.wake, b"x", SendFlags::NOSIGNAL);
        let handed_over = self.thread.join().unwrap_or(false);
        if !handed_over {
            remove_socket_file(&self.path);
        }
    }
}

/// Removes the upgrade socket's file (an instance that ends without handing over).
pub(crate) fn remove_socket_file(path: &Path) {
    if !is_abstract(path) {
        let _ = std::fs::remove_file(path);
    }
}

#[derive(PartialEq)]
enum Ready {
    Sock,
    Wake,
}

/// Waits until `sock` is readable (or closed), or until the thread is told to stop.
fn wait(sock: &Socket, wake: &UnixStream) -> io::Result<Ready> {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut fds = [
            PollFd::new(sock, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if !fds[1].revents().is_empty() {
            return Ok(Ready::Wake);
        }
        if !fds[0].revents().is_empty() {
            return Ok(Ready::Sock);
        }
    }
}

/// The hand-over thread: serves requests until one succeeds (then stops accepting,
/// drains and stops the loops, and answers true) or it is told to stop.
fn serve(listener: Socket, wake: UnixStream, ctx: Ctx, path: &str) -> bool {
    log::debug!("coreloop: hand-overs served at {path}");
    loop {
        match wait(&listener, &wake) {
            Ok(Ready::Wake) => return false,
            Ok(Ready::Sock) => {}
            Err(e) => {
                log::error!("coreloop: upgrade socket {path}: {e}; no more hand-overs");
                return false;
            }
        }
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                log::warn!("coreloop: upgrade socket {path}: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match hand_over(&conn, &listener, &wake, &ctx) {
            Ok(Some(pid)) => {
                finish(&ctx, pid);
                return true;
            }
            Ok(None) => return false,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                log::debug!("coreloop: upgrade socket {path}: a peer left: {e}")
            }
            Err(e) => {
                log::warn!("coreloop: hand-over at {path} failed: {e}; this instance serves on")
            }
        }
    }
}

/// One request: sends every attached server's listeners and the upgrade socket, waits
/// until the new instance serves. `Some(pid)`: it does; `None`: told to stop meanwhile.
fn hand_over(
    conn: &Socket,
    listener: &Socket,
    wake: &UnixStream,
    ctx: &Ctx,
) -> io::Result<Option<u32>> {
    let pid = peer_allowed(conn)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let (hello, _) = recv(conn)?;
    if hello != HELLO {
        let _ = send(conn, "error unknown request", &[]);
        return Err(err(
            io::ErrorKind::InvalidData,
            format!("pid {pid} sent {hello:?}"),
        ));
    }
    let mut groups: Vec<(SocketAddr, Vec<OwnedFd>)> = Vec::new();
    for server in ctx.attached.list() {
        let (addr, fds) = server.listeners().wait().map_err(|e| {
            err(
                io::ErrorKind::Other,
                format!("gathering the listeners: {e}"),
            )
        })?;
        if !fds.is_empty() {
            groups.push((addr, fds));
        }
    }
    for (i, (addr, fds)) in groups.iter().enumerate() {
        for chunk in fds.chunks(MAX_FDS) {
            let chunk: Vec<BorrowedFd<'_>> = chunk.iter().map(|f| f.as_fd()).collect();
            send(conn, &format!("listen {i} {addr} {}", chunk.len()), &chunk)?;
        }
    }
    send(conn, "upgrade-socket", &[listener.as_fd()])?;
    send(
        conn,
        &format!("sent {} {}", groups.len(), std::process::id()),
        &[],
    )?;
    let count: usize = groups.iter().map(|(_, f)| f.len()).sum();
    drop(groups); // our copies: the sockets stay open in the acceptors and in pid's hands
    log::info!(
        "coreloop: handed {count} listening socket(s) to pid {pid}; waiting until it serves"
    );
    // It builds its runtime and servers meanwhile: no deadline, as long as it stays
    // connected (if it dies, the connection closes).
    if wait(conn, wake)? == Ready::Wake {
        return Ok(None);
    }
    let (ready, _) = recv(conn)?;
    if ready != "ready" {
        return Err(err(
            io::ErrorKind::InvalidData,
            format!("pid {pid} sent {ready:?}"),
        ));
    }
    send(conn, &format!("draining {}", std::process::id()), &[])?;
    Ok(Some(pid))
}

/// The new instance serves: stop accepting (it accepts from the same sockets, so
/// nothing queued is lost), let the last accepted connections send their request,
/// drain within the deadline, stop the loops.
fn finish(ctx: &Ctx, pid: u32) {
    log::info!(
        "coreloop: pid {pid} serves now: this instance stops accepting and drains (deadline {:?})",
        ctx.deadline
    );
    let servers: Vec<Arc<dyn AttachedServer>> = ctx.attached.list();
    for s in &servers {
        if let Err(e) = s.stop_accepting().wait() {
            log::warn!("coreloop: stopping accepting: {e}");
        }
    }
    std::thread::sleep(SETTLE);
    let cut = ctx.attached.drain_all(ctx.deadline);
    if cut > 0 {
        log::warn!(
            "coreloop: {cut} connections were still open at the drain deadline and were closed"
        );
    }
    for h in &ctx.loops {
        let _ = h.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor sent is the same socket on the other side: connections queued
    /// before the sender closes its copy are accepted from the received one.
    #[test]
    fn a_listener_sent_is_the_same_socket() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        send(&a, "listen 0 x 1", &[l.as_fd()]).unwrap();
        let (text, mut fds) = recv(&b).unwrap();
        assert_eq!(text, "listen 0 x 1");
        let got = TcpListener::from(fds.pop().unwrap());
        let mut clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        drop(l); // queued in the socket, which the received descriptor keeps open
        for c in &mut clients {
            use std::io::Write;
            c.write_all(b"x").unwrap();
        }
        for _ in 0..3 {
            let (mut s, _) = got.accept().unwrap();
            let mut byte = [0];
            use std::io::Read;
            s.read_exact(&mut byte).unwrap();
            assert_eq!(&byte, b"x");
        }
    }

    #[test]
    fn too_long_or_empty_messages_are_errors() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        send(&a, &"x".repeat(MAX_TEXT + 1), &[]).unwrap();
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
        drop(a);
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
