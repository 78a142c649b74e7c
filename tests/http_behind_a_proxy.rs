//! Tornado's options for a server behind a proxy (`HTTPConnection(..., no_keep_alive,
//! xheaders)`): `HttpConfig::keep_alive` false closes every connection after its answer;
//! `HttpConfig::xheaders` takes the client's address and scheme from the headers the
//! proxy sets, and only then.
mod util;
use util::Listen;

use coreloop::http::{Application, HttpConfig, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use std::net::TcpStream;

fn server(backend: Backend, cfg: HttpConfig) -> util::Served {
    let app = Application::new().route(
        "/who",
        Route::new().get(|_, req, mut r| {
            let ip = req.remote_ip().map(|ip| ip.to_string()).unwrap_or_default();
            r.write(format!("{} {ip}", req.scheme()));
        }),
    );
    HttpServer::new(app)
        .config(cfg)
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

/// The body of the answer to a GET /who with `headers`, on a connection of its own.
fn who(s: &util::Served, headers: &str) -> String {
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    let req = format!("GET /who HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    got.split("\r\n\r\n").nth(1).unwrap().to_string()
}

#[on_both_backends]
#[test]
fn xheaders_give_the_clients_address_and_scheme_only_when_trusted(backend: Backend) {
    let trusting = server(
        backend,
        HttpConfig {
            xheaders: true,
            ..HttpConfig::default()
        },
    );
    let cases = [
        ("", "http 127.0.0.1"),
        ("X-Forwarded-For: 10.0.0.1\r\n", "http 10.0.0.1"),
        // The last value is the one the proxy in front added.
        ("X-Forwarded-For: 6.6.6.6, 10.0.0.2\r\n", "http 10.0.0.2"),
        (
            "X-Real-Ip: 10.0.0.3\r\nX-Forwarded-For: 10.0.0.4\r\n",
            "http 10.0.0.3",
        ),
        ("X-Real-Ip: 2001:db8::1\r\n", "http 2001:db8::1"),
        ("X-Forwarded-Proto: https\r\n", "https 127.0.0.1"),
        (
            "X-Scheme: https\r\nX-Forwarded-Proto: http\r\n",
            "https 127.0.0.1",
        ),
        ("X-Forwarded-Proto: gopher\r\n", "http 127.0.0.1"),
        ("X-Forwarded-For: not-an-address\r\n", "http 127.0.0.1"),
    ];
    for (headers, want) in cases {
        assert_eq!(who(&trusting, headers), want, "{headers:?}");
    }
    trusting.shutdown().unwrap();
    // Not trusted by default: the peer's address, whatever the headers claim.
    let plain = server(backend, HttpConfig::default());
    assert_eq!(
        who(
            &plain,
            "X-Real-Ip: 10.0.0.3\r\nX-Forwarded-Proto: https\r\n"
        ),
        "http 127.0.0.1"
    );
    plain.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn keep_alive_off_closes_every_connection_after_its_answer(backend: Backend) {
    let s = server(
        backend,
        HttpConfig {
            keep_alive: false,
            ..HttpConfig::default()
        },
    );
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    // Two requests pipelined: one answer, then the close.
    c.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\nGET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 1, "{got}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    s.shutdown().unwrap();
}
