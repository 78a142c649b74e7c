//! `https`: a client's TLS connector (given in its configuration, or one trusting the
//! system's roots, loaded when the client first fetches an `https` URL), and what a
//! failed handshake means for the fetch.
//!
//! Loading the system's roots reads files (a few hundred certificates, parsed): it runs
//! on the blocking pool, once per client (a lock makes loads on several cores wait for
//! the first), and fetches on one loop that ask meanwhile wait for the same load. A
//! failure is not kept: the next `https` fetch tries again (the roots may have been
//! installed since).

use super::error::{ClientError, Deadline};
use super::HttpClient;
use crate::reactor::IoLoop;
use crate::tls::{TlsConnector, TlsError};
use crate::StreamError;
use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

/// A client's connector, shared by its clones on every core.
#[derive(Default)]
pub(super) struct TlsSlot {
    connector: OnceLock<TlsConnector>,
    /// Held by the pool thread loading the system's roots.
    loading: Mutex<()>,
}

impl TlsSlot {
    /// A slot holding `given` (offering ALPN `http/1.1` only: this client speaks
    /// nothing else), or an empty one, filled on first use.
    pub(super) fn new(given: Option<&TlsConnector>) -> TlsSlot {
        let slot = TlsSlot::default();
        if let Some(c) = given {
            let _ = slot.connector.set(for_http(c));
        }
        slot
    }

    /// The connector, if there is one yet.
    pub(super) fn get(&self) -> Option<&TlsConnector> {
        self.connector.get()
    }

    /// The connector, loading the system's roots if there is none (on a pool thread).
    fn load(&self) -> io::Result<TlsConnector> {
        let _one_at_a_time = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self.connector.get() {
            return Ok(c.clone());
        }
        let c = for_http(&TlsConnector::new()?);
        Ok(self.connector.get_or_init(|| c).clone())
    }
}

/// `c` offering `http/1.1` (clones of a connector share its session cache, so this one
/// resumes the sessions of the original, and the other way round).
fn for_http(c: &TlsConnector) -> TlsConnector {
    c.clone().alpn(&[b"http/1.1"])
}

type Waiting = Vec<Box<dyn FnOnce(&IoLoop, Result<TlsConnector, ClientError>)>>;

/// The fetches on this loop waiting for a client's connector, by client.
#[derive(Default)]
struct Loads(RefCell<Vec<(u64, Waiting)>>);

/// Runs `then` with `client`'s connector once it has one: in a later step, after the
/// system's roots are loaded on the blocking pool (the caller has found none yet).
pub(super) fn when_loaded(
    lp: &IoLoop,
    client: &HttpClient,
    then: impl FnOnce(&IoLoop, Result<TlsConnector, ClientError>) + 'static,
) {
    let loads = lp.local::<Loads>();
    {
        let mut list = loads.0.borrow_mut();
        if let Some((_, waiting)) = list.iter_mut().find(|(id, _)| *id == client.id) {
            waiting.push(Box::new(then));
            return;
        }
        list.push((client.id, vec![Box::new(then)]));
    }
    let (slot, id) = (client.tls.clone(), client.id);
    lp.call_blocking(move || slot.load()).then(move |lp, r| {
        let r = match r {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(io::Error::other(e)),
        }
        .map_err(|e| {
            let why =
                format!("https: {e} (ClientConfig::tls takes a connector with the roots to trust)");
            ClientError::Connect(Arc::new(io::Error::new(e.kind(), why)))
        });
        let waiting = {
            let loads = lp.local::<Loads>();
            let mut list = loads.0.borrow_mut();
            let at = list.iter().position(|(c, _)| *c == id);
            at.map(|i| list.swap_remove(i).1).unwrap_or_default()
        };
        for then in waiting {
            then(lp, r.clone());
        }
    });
}

/// What a failed handshake (the error of `IoStream::handshake`) is for the fetch.
pub(super) fn handshake_error(e: io::Error) -> ClientError {
    match StreamError::of(&e) {
        Some(StreamError::Tls(TlsError::Timeout)) => ClientError::Timeout(Deadline::Connect),
        Some(StreamError::Tls(cause)) => ClientError::Tls(cause),
        _ if e.kind() == io::ErrorKind::TimedOut => ClientError::Timeout(Deadline::Connect),
        _ => ClientError::Connect(Arc::new(e)),
    }
}
