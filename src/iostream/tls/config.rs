//! TLS configurations: [`TlsConfig`] for servers (certificates from PEM files, chosen
//! by SNI, reloaded without a restart; session tickets; the handshake's timeout) and
//! [`TlsConnector`] for clients (verification on, against the system's roots or a
//! given root store).

use super::IoStream;
use crate::reactor::IoLoop;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Default [`TlsConfig::handshake_timeout`] and [`TlsConnector::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn invalid(what: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A certificate chain and its key, read from PEM files.
fn load_key(cert: &Path, key: &Path) -> io::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(invalid(format!("{}: no certificate", cert.display())));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let certified = CertifiedKey::from_der(chain, der, &provider())
        .map_err(|e| invalid(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(Arc::new(certified))
}

/// The certificates served now; the first is the default.
#[derive(Debug)]
struct Keys(Vec<Arc<CertifiedKey>>);

impl Keys {
    /// The certificate for `name`: the first whose names (subject alternative names,
    /// wildcards included) cover it, else the first (as nginx's default server does).
    fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if self.0.len() > 1 {
            if let Some(name) = name.and_then(|n| ServerName::try_from(n).ok()) {
                let fits = |k: &&Arc<CertifiedKey>| {
                    let Some(der) = k.cert.first() else {
                        return false;
                    };
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                };
                if let Some(k) = self.0.iter().find(fits) {
                    return Some(k.clone());
                }
            }
        }
        self.0.first().cloned()
    }
}

/// Chooses a certificate by SNI among those loaded; `reload` swaps them all at once.
#[derive(Debug)]
struct Resolver {
    files: RwLock<Vec<(PathBuf, PathBuf)>>,
    keys: RwLock<Arc<Keys>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        keys.for_name(hello.server_name())
    }
}

/// A server's TLS: certificate chains and keys (PEM files), one chosen per connection
/// by the name the client asks for (SNI), session resumption by tickets (on), and a
/// handshake timeout. Give it to a server ([`TcpServer::tls`](crate::TcpServer::tls),
/// [`HttpServer::tls`](crate::http::HttpServer::tls)), or make a stream TLS with
/// [`wrap`](Self::wrap).
///
/// [`reload`](Self::reload) rereads the files: connections accepted from then on get
/// the new chain, open ones keep theirs. Clones share the certificates (a reload
/// through one is seen by all) and the session ticket keys; dropping one does nothing
/// to the servers using it.
///
/// ```no_run
/// use coreloop::http::{Application, HttpServer, Route};
/// use coreloop::tls::TlsConfig;
/// use coreloop::Runtime;
/// let tls = TlsConfig::new("/etc/ssl/example.pem", "/etc/ssl/example.key")?
///     .cert("/etc/ssl/other.pem", "/etc/ssl/other.key")?; // chosen by SNI
/// let rt = Runtime::builder().build()?;
/// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("hi")));
/// let server = HttpServer::new(app).tls(tls.clone()).serve(&rt, "0.0.0.0:443".parse().unwrap())?;
/// // Later, after the files were renewed:
/// tls.reload()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
    timeout: Duration,
    on_pool: bool,
}

impl TlsConfig {
    /// A configuration serving the chain in `cert` (PEM, the server's certificate
    /// first) with the private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1). Fails with
    /// `InvalidData` if either does not parse or the key does not match the
    /// certificate. TLS 1.3 and 1.2, rustls' cipher suites, no ALPN (a server that
    /// speaks a protocol sets it: HTTP offers `http/1.1`), session tickets on.
    pub fn new(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<TlsConfig> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let first = load_key(&cert, &key)?;
        let resolver = Arc::new(Resolver {
            files: RwLock::new(vec![(cert, key)]),
            keys: RwLock::new(Arc::new(Keys(vec![first]))),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // Resumption by tickets (TLS 1.3 and 1.2), their keys rotated every 6 hours.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(invalid)?;
        Ok(TlsConfig {
            resolver,
            config: Arc::new(config),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            on_pool: false,
        })
    }

    /// Adds another chain and key, served to clients that ask (SNI) for a name its
    /// certificate covers; the first one given is served to the others.
    pub fn cert(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<TlsConfig> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let loaded = load_key(&cert, &key)?;
        self.resolver
            .files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((cert, key));
        let mut keys = self
            .resolver
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut list = keys.0.clone();
        list.push(loaded);
        *keys = Arc::new(Keys(list));
        drop(keys);
        Ok(self)
    }

    /// Rereads every certificate and key file. Connections accepted from now on get
    /// the new chains; those open keep theirs. If any file fails to load, nothing
    /// changes and the error says which.
    pub fn reload(&self) -> io::Result<()> {
        let files = self
            .resolver
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let keys = files
            .iter()
            .map(|(c, k)| load_key(c, k))
            .collect::<io::Result<Vec<_>>>()?;
        *self
            .resolver
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(Keys(keys));
        Ok(())
    }

    /// How long a client may take to finish the handshake (default 10 s); past it the
    /// connection is closed and counted (`cause="timeout"`).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsConfig {
        self.timeout = timeout;
        self
    }

    /// Answer ClientHellos on the runtime's blocking pool instead of in turns of the
    /// loop (default false). The loop then spends no time on a handshake's costly step,
    /// at the price of a trip to the pool and back per handshake (tens of
    /// microseconds of CPU when the pool runs on another core).
    pub fn handshake_on_pool(mut self, on: bool) -> TlsConfig {
        self.on_pool = on;
        self
    }

    /// The application protocols offered (ALPN), in order of preference; a client that
    /// offers others than these is refused.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> TlsConfig {
        let mut c = (*self.config).clone();
        c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self.config = Arc::new(c);
        self
    }

    /// Whether ALPN protocols are set.
    pub(crate) fn has_alpn(&self) -> bool {
        !self.config.alpn_protocols.is_empty()
    }

    /// Makes `stream`, just accepted, the server side of a TLS connection: the
    /// handshake runs as the client's bytes come, and reads and writes carry plaintext
    /// (what is written meanwhile goes out once the handshake is over).
    /// [`IoStream::handshake`] says when it is. Nothing may have been read or written
    /// on the stream yet.
    pub fn wrap(&self, lp: &IoLoop, stream: &IoStream) -> io::Result<()> {
        let conn = ServerConnection::new(self.config.clone()).map_err(invalid)?;
        stream.start_tls(lp, conn.into(), self.on_pool, self.timeout);
        Ok(())
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "files",
                &*self
                    .resolver
                    .files
                    .read()
                    .unwrap_or_else(|p| p.into_inner()),
            )
            .field("handshake_timeout", &self.timeout)
            .field("handshake_on_pool", &self.on_pool)
            .finish()
    }
}

/// A client's TLS: the roots it trusts (verification is always on), the application
/// protocols it offers, session resumption (on). Make a connected stream TLS with
/// [`wrap`](Self::wrap), giving the name of the server (checked against its
/// certificate, and sent as SNI). Clones share the session cache.
///
/// ```no_run
/// use coreloop::tls::TlsConnector;
/// use coreloop::{IoLoop, IoStream};
/// use std::time::Duration;
/// let tls = TlsConnector::new()?; // the system's roots
/// let lp = IoLoop::new()?;
/// let on = lp.clone();
/// let page = on.run_until_complete(async move {
///     let s = IoStream::connect(&lp, "example.com:443", Duration::from_secs(5)).await?;
///     tls.wrap(&lp, &s, "example.com")?;
///     s.handshake().await?; // optional: a write waits for it anyway
///     s.write(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
///     s.read_until_close().await
/// })??;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    timeout: Duration,
}

impl TlsConnector {
    /// A client that trusts the system's roots (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`). Fails if none can be loaded.
    pub fn new() -> io::Result<TlsConnector> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_string(), |e| e.to_string());
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no system root certificates: {why}"),
            ));
        }
        TlsConnector::with_store(roots)
    }

    /// A client that trusts only the certificates in `pem` (a CA bundle, or a private
    /// CA's certificate).
    pub fn with_roots(pem: impl AsRef<Path>) -> io::Result<TlsConnector> {
        let pem = pem.as_ref();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pem)
            .map_err(|e| invalid(format!("{}: {e}", pem.display())))?
        {
            let cert = cert.map_err(|e| invalid(format!("{}: {e}", pem.display())))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("{}: {e}", pem.display())))?;
        }
        if roots.is_empty() {
            return Err(invalid(format!("{}: no certificate", pem.display())));
        }
        TlsConnector::with_store(roots)
    }

    fn with_store(roots: RootCertStore) -> io::Result<TlsConnector> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector {
            config: Arc::new(config),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// The application protocols offered (ALPN), in order of preference.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> TlsConnector {
        let mut c = (*self.config).clone();
        c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self.config = Arc::new(c);
        self
    }

    /// How long the server may take to finish the handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsConnector {
        self.timeout = timeout;
        self
    }

    /// Makes `stream`, just connected, the client side of a TLS connection to
    /// `server_name` (a DNS name or an IP address: checked against the server's
    /// certificate, and sent as SNI if a name). The ClientHello goes out now; reads
    /// and writes carry plaintext (writes wait for the handshake), and a certificate
    /// that does not verify closes the stream with
    /// [`TlsError::Certificate`](super::TlsError::Certificate).
    pub fn wrap(&self, lp: &IoLoop, stream: &IoStream, server_name: &str) -> io::Result<()> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{server_name}: {e}"))
        })?;
        let conn = ClientConnection::new(self.config.clone(), name).map_err(invalid)?;
        stream.start_tls(lp, conn.into(), false, self.timeout);
        Ok(())
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.timeout)
            .finish()
    }
}
