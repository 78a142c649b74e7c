//! Listening sockets a process did not bind itself: those it took over from the
//! instance it replaces (`handover.rs`), and those systemd passed it (socket
//! activation: `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`). A server about to bind an
//! address claims the ones for that address instead (`claim`), so that it accepts from
//! the very sockets, and so the very accept queues, its predecessor (or systemd) holds.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock};

/// Where a group of listening sockets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Handed over by the instance this one replaces: its per-core sockets.
    Handover,
    /// Passed by systemd (or any socket activator following its convention).
    Systemd,
}

/// The listening sockets of one address (one server of the instance replaced, or the
/// sockets systemd passed for one address).
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) addr: SocketAddr,
    pub(crate) listeners: Vec<TcpListener>,
    pub(crate) origin: Origin,
    /// systemd's name for them (`FileDescriptorName=`), if any.
    pub(crate) name: Option<String>,
}

/// Groups not yet claimed by a server, in the order they came (the replaced
/// instance's order of serving).
#[derive(Clone, Default, Debug)]
pub(crate) struct Inherited(Arc<Mutex<Vec<Group>>>);

impl Inherited {
    pub(crate) fn add(&self, group: Group) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(group);
    }

    /// The group a server asking for `addr` takes: the one on that very address, or,
    /// for port 0 (any port), the first one left on the same IP (so that a service
    /// that asks for "any port" gets its predecessor's port again). `exact_only`: no
    /// port-0 match.
    fn claim(&self, addr: SocketAddr, exact_only: bool) -> Option<Group> {
        let mut groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = groups.iter().position(|g| g.addr == addr).or_else(|| {
            (!exact_only && addr.port() == 0)
                .then(|| groups.iter().position(|g| g.addr.ip() == addr.ip()))
                .flatten()
        })?;
        Some(groups.remove(at))
    }

    /// Takes every group no server claimed.
    pub(crate) fn take_all(&self) -> Vec<Group> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The sockets for a server asking for `addr`: those taken over by this runtime
/// (`mine`), else those systemd passed the process on exactly that address.
pub(crate) fn claim(mine: &Inherited, addr: SocketAddr) -> Option<Group> {
    mine.claim(addr, false)
        .or_else(|| systemd_sockets().claim(addr, true))
}

/// The sockets systemd passed this process, read once (the first runtime built reads
/// them, before its loops start: reading clears the variables, as `sd_listen_fds` does,
/// so that children do not take them for theirs).
pub(crate) fn systemd_sockets() -> &'static Inherited {
    static SOCKETS: OnceLock<Inherited> = OnceLock::new();
    SOCKETS.get_or_init(|| {
        let pool = Inherited::default();
        for group in from_listen_fds() {
            log::info!(
                "coreloop: socket activation: {} listening socket(s) on {}{}",
                group.listeners.len(),
                group.addr,
                group
                    .name
                    .as_deref()
                    .map_or(String::new(), |n| format!(" (named {n:?})"))
            );
            pool.add(group);
        }
        pool
    })
}

/// systemd's sockets, grouped by address: TCP listening sockets only (any other kind
/// is logged and left alone).
fn from_listen_fds() -> Vec<Group> {
    // Read before listenfd clears LISTEN_FDS (it leaves LISTEN_FDNAMES).
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut groups: Vec<Group> = Vec::new();
    for i in 0..fds.len() {
        let name = names.get(i).filter(|n| !n.is_empty()).cloned();
        let listener = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                log::warn!(
                    "coreloop: socket activation: descriptor {} left alone: {e}",
                    3 + i
                );
                continue;
            }
        };
        let addr = match checked_listener(&listener) {
            Ok(a) => a,
            Err(e) => {
                log::warn!(
                    "coreloop: socket activation: descriptor {} left alone: {e}",
                    3 + i
                );
                continue;
            }
        };
        match groups.iter_mut().find(|g| g.addr == addr) {
            Some(g) => g.listeners.push(listener),
            None => groups.push(Group {
                addr,
                listeners: vec![listener],
                origin: Origin::Systemd,
                name,
            }),
        }
    }
    groups
}

/// The address of `l` if it is a TCP socket that listens (one that does not listen
/// yet, or a connected one, is refused), made nonblocking and close-on-exec.
pub(crate) fn checked_listener(l: &TcpListener) -> io::Result<SocketAddr> {
    let s = socket2::SockRef::from(l);
    if s.r#type()? != socket2::Type::STREAM || !s.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening TCP socket",
        ));
    }
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    l.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(addr: &str) -> Group {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Group {
            addr: addr.parse().unwrap(),
            listeners: vec![l],
            origin: Origin::Handover,
            name: None,
        }
    }

    #[test]
    fn a_server_claims_its_address_or_for_port_0_the_first_on_its_ip() {
        let pool = Inherited::default();
        pool.add(group("127.0.0.1:7001"));
        pool.add(group("127.0.0.1:7002"));
        pool.add(group("[::1]:7003"));
        let ip = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(
            pool.claim(ip("127.0.0.1:7002"), false).unwrap().addr,
            ip("127.0.0.1:7002")
        );
        assert!(
            pool.claim(ip("127.0.0.1:7002"), false).is_none(),
            "claimed once"
        );
        assert!(pool.claim(ip("127.0.0.1:0"), true).is_none(), "exact only");
        assert_eq!(
            pool.claim(ip("127.0.0.1:0"), false).unwrap().addr,
            ip("127.0.0.1:7001")
        );
        assert!(
            pool.claim(ip("127.0.0.1:0"), false).is_none(),
            "none left on that IP"
        );
        assert!(
            pool.claim(ip("0.0.0.0:7003"), false).is_none(),
            "another address"
        );
        assert_eq!(pool.take_all().len(), 1);
    }

    #[test]
    fn only_listening_tcp_sockets_are_taken() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(checked_listener(&l).unwrap(), l.local_addr().unwrap());
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let bound_only: TcpListener = s.into();
        assert!(checked_listener(&bound_only).is_err());
    }
}
