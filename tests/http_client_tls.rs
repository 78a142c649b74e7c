//! The HTTP client over https, on both backends, against coreloop's own HTTPS server
//! with certificates the test makes (rcgen): the server's certificate verified with a
//! given root store, the connection reused (one opened for two requests) and kept apart
//! per server name, the session resumed after the pool's idle close, a certificate for
//! another name refused, the system's roots (the default) refusing the private CA, a
//! server that does not speak TLS and one that never answers the ClientHello, redirects
//! from http to https (followed) and back (refused); and one fetch from Debian's nginx
//! over TLS.
mod util;

use coreloop::http::{
    Application, ClientConfig, ClientError, ClientRequest, HttpClient, HttpServer, Route,
};
use coreloop::metrics::Snapshot;
use coreloop::tls::{TlsConfig, TlsConnector, TlsError};
use coreloop::{Backend, Cores, IoLoop, Runtime, ServerHandle};
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;
use util::tls::Certs;

fn app() -> Application {
    Application::new()
        .route("/", Route::new().get(|_, _, mut r| r.write("Hello, TLS")))
        .route(
            "/redirect",
            Route::new().get(|_, req, mut r| {
                r.set_status(302);
                r.set_header("Location", req.query_arg("to").unwrap_or("/").to_string());
            }),
        )
}

/// A runtime of one core serving `app` over TLS with the certificate for `names`, and
/// over plain HTTP (for redirects between the two).
struct Servers {
    certs: Certs,
    rt: Runtime,
    https: ServerHandle,
    http: ServerHandle,
}

fn servers(backend: Backend, names: &[&str]) -> Servers {
    let certs = Certs::new();
    let (cert, key) = certs.issue("server", names);
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let https = HttpServer::new(app())
        .tls(TlsConfig::new(&cert, &key).unwrap())
        .serve(&rt, any)
        .unwrap();
    let http = HttpServer::new(app()).serve(&rt, any).unwrap();
    Servers {
        certs,
        rt,
        https,
        http,
    }
}

impl Servers {
    fn port(&self) -> u16 {
        self.https.local_addr().port()
    }

    /// Connections the HTTPS server accepted.
    fn accepted(&self) -> u64 {
        let snap = self.rt.stats().wait().unwrap();
        snap.http_total(&self.https.local_addr().to_string())
            .map_or(0, |h| h.accepted)
    }
}

/// A client trusting only `ca`.
fn client_with(ca: &Path, cfg: ClientConfig) -> HttpClient {
    HttpClient::new(ClientConfig {
        tls: Some(TlsConnector::with_roots(ca).unwrap()),
        ..cfg
    })
}

/// A client's counts, for a failed assertion's message (not its histogram).
fn brief(st: &coreloop::http::ClientStats) -> String {
    format!(
        "requests {} opened {} reused {} retries {} errors {:?}",
        st.requests, st.opened, st.reused, st.retries, st.errors
    )
}

/// The TLS numbers of a snapshot, summed over its cores.
fn tls_of(s: &Snapshot) -> coreloop::tls::TlsStats {
    let mut t = coreloop::tls::TlsStats::default();
    for c in &s.cores {
        t.merge(&c.tls);
    }
    t
}

/// Fetches `url` with `client` on a new loop of `backend`: the status and body, or
/// the error.
fn fetch(
    backend: Backend,
    client: &HttpClient,
    req: ClientRequest,
) -> Result<(u16, Vec<u8>), ClientError> {
    let c = client.clone();
    util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let r = c.fetch(&lp, req).await?;
        Ok((r.status(), r.body().to_vec()))
    })
}

#[on_both_backends]
#[test]
fn https_verifies_with_the_given_roots_and_reuses_the_connection(backend: Backend) {
    let s = servers(backend, &["localhost", "127.0.0.1"]);
    let client = client_with(&s.certs.ca(), ClientConfig::default());
    let port = s.port();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        for _ in 0..2 {
            let r = client
                .fetch(
                    &lp,
                    ClientRequest::get(format!("https://localhost:{port}/")),
                )
                .await
                .unwrap();
            assert_eq!((r.status(), r.body()), (200, &b"Hello, TLS"[..]));
        }
        // The same address under another name (an IP address: the certificate has
        // it): a pool, and a connection, of its own.
        let r = client
            .fetch(
                &lp,
                ClientRequest::get(format!("https://127.0.0.1:{port}/")),
            )
            .await
            .unwrap();
        assert_eq!(r.body(), b"Hello, TLS");
        lp.stats().await.unwrap()
    });
    let up = s.https.local_addr().to_string();
    let st = stats.client_total(&up).unwrap();
    assert_eq!(st.requests, 3, "{}", brief(&st));
    assert_eq!((st.opened, st.reused), (2, 1), "{}", brief(&st));
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    let t = tls_of(&stats);
    assert_eq!((t.full, t.resumed), (2, 0));
    assert_eq!(t.failures, [0; 7]);
    assert_eq!(s.accepted(), 2);
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_connection_made_after_the_idle_close_resumes_the_session(backend: Backend) {
    let s = servers(backend, &["localhost"]);
    let cfg = ClientConfig {
        idle_timeout: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let client = client_with(&s.certs.ca(), cfg);
    let url = format!("https://localhost:{}/", s.port());
    let up = s.https.local_addr().to_string();
    let (after_close, stats) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        assert_eq!(r.body(), b"Hello, TLS");
        drop(r);
        // The pool closes the idle connection (bounded by run_task's hang bound).
        let after_close = loop {
            coreloop::sleep(Duration::from_millis(20)).await;
            let snap = lp.stats().await.unwrap();
            if snap.client_total(&up).unwrap().open == 0 {
                break snap;
            }
        };
        let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        assert_eq!(r.body(), b"Hello, TLS");
        (after_close, lp.stats().await.unwrap())
    });
    let before = tls_of(&after_close);
    assert_eq!((before.full, before.resumed), (1, 0));
    let st = stats
        .client_total(&s.https.local_addr().to_string())
        .unwrap();
    assert_eq!((st.opened, st.reused), (2, 0), "{}", brief(&st));
    let t = tls_of(&stats);
    assert_eq!((t.full, t.resumed), (1, 1), "the second handshake resumed");
    let text = stats.to_prometheus(false);
    assert!(
        text.contains("coreloop_tls_handshakes_total{kind=\"resumed\"} 1\n"),
        "{text}"
    );
    assert_eq!(s.accepted(), 2);
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_certificate_for_another_name_is_refused(backend: Backend) {
    let s = servers(backend, &["elsewhere.example"]);
    let client = client_with(&s.certs.ca(), ClientConfig::default());
    let port = s.port();
    let (err, stats) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let req = ClientRequest::get(format!("https://localhost:{port}/"));
        let err = client.fetch(&lp, req).await.unwrap_err();
        (err, lp.stats().await.unwrap())
    });
    assert!(
        matches!(err, ClientError::Tls(TlsError::Certificate)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "TLS with the server failed: a TLS certificate did not verify"
    );
    let st = stats
        .client_total(&s.https.local_addr().to_string())
        .unwrap();
    assert_eq!((st.opened, st.errors_of("tls")), (0, 1), "{}", brief(&st));
    assert_eq!(tls_of(&stats).failures_of(TlsError::Certificate), 1);
    // Nothing was sent: the server answered no request.
    let snap = s.rt.stats().wait().unwrap();
    let served = snap.http_total(&s.https.local_addr().to_string());
    assert_eq!(served.map_or(0, |h| h.requests), 0);
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn the_system_roots_refuse_a_private_ca(backend: Backend) {
    let s = servers(backend, &["localhost"]);
    let url = format!("https://localhost:{}/", s.port());
    // The default client: no connector given, the system's roots loaded on first use.
    let client = HttpClient::default();
    let expected = |r: &Result<(u16, Vec<u8>), ClientError>| match (r, TlsConnector::new()) {
        (Err(ClientError::Tls(TlsError::Certificate)), Ok(_)) => true,
        // No roots on this machine: said so, on the fetch.
        (Err(ClientError::Connect(e)), Err(_)) => e.to_string().contains("root certificates"),
        _ => false,
    };
    let r = fetch(backend, &client, ClientRequest::get(&url));
    assert!(expected(&r), "{r:?}");
    // From a callback, on another loop: the continuation is answered after the load
    // (the fetch's only owner is then the load it waits for).
    let lp = util::new_loop(backend);
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    HttpClient::default()
        .fetch(&lp, ClientRequest::get(&url))
        .then(move |lp, r| {
            *g.borrow_mut() = Some(r.map(|r| (r.status(), r.body().to_vec())));
            lp.stop();
        });
    util::run(&lp);
    let r = got.borrow_mut().take().expect("the continuation ran");
    assert!(expected(&r), "{r:?}");
    // With the CA, the same server is fine.
    let ok = fetch(
        backend,
        &client_with(&s.certs.ca(), ClientConfig::default()),
        ClientRequest::get(&url),
    );
    assert_eq!(ok.unwrap(), (200, b"Hello, TLS".to_vec()));
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_server_that_does_not_speak_tls_or_never_answers_is_a_clear_error(backend: Backend) {
    let s = servers(backend, &["localhost"]);
    let client = client_with(
        &s.certs.ca(),
        ClientConfig {
            connect_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        },
    );
    // Plain HTTP where TLS is expected: the server's answer is not TLS.
    let url = format!("https://localhost:{}/", s.http.local_addr().port());
    let r = fetch(backend, &client, ClientRequest::get(url));
    assert!(
        matches!(
            r,
            Err(ClientError::Tls(TlsError::BadMessage | TlsError::Eof))
        ),
        "{r:?}"
    );
    // A server that accepts and never answers the ClientHello: the connect deadline
    // covers the handshake.
    let silent = util::upstream::Raw::start(|_, s| {
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let url = format!("https://localhost:{}/", silent.addr.port());
    let r = fetch(backend, &client, ClientRequest::get(url));
    assert!(
        matches!(
            r,
            Err(ClientError::Timeout(coreloop::http::Deadline::Connect))
        ),
        "{r:?}"
    );
    // A host TLS cannot check a certificate for: refused before connecting.
    let r = fetch(backend, &client, ClientRequest::get("https://[zz::1]/"));
    assert!(matches!(r, Err(ClientError::Invalid(_))), "{r:?}");
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn redirects_go_from_http_to_https_and_not_back(backend: Backend) {
    let s = servers(backend, &["localhost"]);
    let client = client_with(&s.certs.ca(), ClientConfig::default());
    let (http, https) = (s.http.local_addr(), s.port());
    // http to https: followed, verified.
    let req = ClientRequest::get(format!(
        "http://{http}/redirect?to=https://localhost:{https}/"
    ))
    .follow_redirects(2);
    assert_eq!(
        fetch(backend, &client, req).unwrap(),
        (200, b"Hello, TLS".to_vec())
    );
    // A relative redirect on https stays https (over http the TLS port would not
    // answer with this body).
    let req =
        ClientRequest::get(format!("https://localhost:{https}/redirect?to=/")).follow_redirects(1);
    assert_eq!(
        fetch(backend, &client, req).unwrap(),
        (200, b"Hello, TLS".to_vec())
    );
    // https to http: refused, with a reason.
    let req = ClientRequest::get(format!(
        "https://localhost:{https}/redirect?to=http://{http}/"
    ))
    .follow_redirects(2);
    match fetch(backend, &client, req) {
        Err(ClientError::Invalid(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Not asked to follow: the 302 itself.
    let req = ClientRequest::get(format!(
        "https://localhost:{https}/redirect?to=http://{http}/"
    ));
    assert_eq!(fetch(backend, &client, req).unwrap().0, 302);
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn nginx_over_tls_answers_with_the_ca_given(backend: Backend) {
    let Some(bin) = util::require_tool("nginx") else {
        return;
    };
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let block = format!(
        "server {{\n listen 127.0.0.1:{{port}} ssl;\n server_name localhost;\n\
         ssl_certificate {};\n ssl_certificate_key {};\n\
         location = /hello {{ default_type text/plain; return 200 \"Hello from nginx over TLS\"; }}\n}}",
        cert.display(),
        key.display()
    );
    let ngx = util::upstream::Nginx::start(&bin, &block, &[]);
    let url = format!("https://localhost:{}/hello", ngx.addr.port());
    let client = client_with(&certs.ca(), ClientConfig::default());
    let up = ngx.addr.to_string();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        for _ in 0..2 {
            let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
            assert_eq!(
                (r.status(), r.body()),
                (200, &b"Hello from nginx over TLS"[..])
            );
        }
        lp.stats().await.unwrap()
    });
    let st = stats.client_total(&up).unwrap();
    assert_eq!((st.opened, st.reused), (1, 1), "{}", brief(&st));
    assert_eq!(tls_of(&stats).full, 1);
}
