//! The proxy example (examples/proxy), run in this process on each backend, end to end:
//! with curl, ab and wrk as clients; hop-by-hop fields removed and X-Forwarded-For,
//! X-Forwarded-Proto and Via added both ways; an upstream down (502, then skipped),
//! slow (504), a client gone (its request cancelled upstream); bad requests refused
//! before they reach an upstream; https upstreams verified (the request passed to
//! another when a certificate fails); the per-upstream numbers in /metrics. Bodies of
//! 100 MB each way are in proxy_big_bodies.rs.
mod util;

#[path = "../examples/proxy/proxy/mod.rs"]
#[allow(dead_code)]
mod proxy;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::tls::{TlsConfig, TlsConnector};
use coreloop::{Backend, Cores, Runtime};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use util::upstream::{free_port, peer_closes, read_request, send, Raw};
use util::Listen;

/// A coreloop upstream: `/` Hello, `/headers` the request's fields, `/echo` the body,
/// `/slow?ms=N` an answer N ms later.
fn upstream(backend: Backend) -> util::Served {
    HttpServer::new(upstream_app())
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

fn upstream_app() -> Application {
    Application::new()
        .route("/", Route::new().get(|_, _, mut r| r.write("Hello, world")))
        .route(
            "/headers",
            Route::new().get(|_, req, mut r| {
                let mut out = String::new();
                for (k, v) in req.headers() {
                    out.push_str(&format!(
                        "{}: {}\n",
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(v)
                    ));
                }
                r.write(out);
            }),
        )
        .route(
            "/echo",
            Route::new().post(|_, req, mut r| r.write(req.body())),
        )
        .route(
            "/slow",
            Route::new().get(|lp, req, mut r| {
                let ms = req
                    .query_arg("ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                lp.call_later(Duration::from_millis(ms), move |_| {
                    r.write("slow");
                    r.finish();
                });
            }),
        )
}

fn start(
    backend: Backend,
    upstreams: &[SocketAddr],
    tweak: impl FnOnce(&mut proxy::Config),
) -> proxy::Proxy {
    let mut cfg = proxy::Config {
        port: 0,
        upstreams: upstreams.iter().map(|&a| a.into()).collect(),
        ..proxy::Config::default()
    };
    tweak(&mut cfg);
    let builder = Runtime::builder().backend(backend).cores(Cores::Count(2));
    proxy::start(builder, cfg).expect("the proxy starts")
}

/// One request on a connection of its own: the status, the head and the body.
fn request(addr: SocketAddr, raw: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(raw).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    split(&got)
}

fn split(got: &[u8]) -> (u16, String, Vec<u8>) {
    let at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&got[..at]).to_string();
    let status = head[9..12].parse().expect("a status");
    (status, head, got[at..].to_vec())
}

fn curl(args: &[&str]) -> Option<(String, String)> {
    let bin = util::require_tool("curl")?;
    let out = Command::new(bin)
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    Some((
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

#[on_both_backends]
#[test]
fn curl_through_the_proxy_sees_the_upstream_and_the_upstream_sees_who_asked(backend: Backend) {
    let up = upstream(backend);
    let p = start(backend, &[up.local_addr()], |_| {});
    let base = format!("http://{}", p.addr());
    let Some((body, _)) = curl(&[&format!("{base}/"), &format!("{base}/")]) else {
        return;
    };
    assert_eq!(body, "Hello, worldHello, world");
    // The upstream's view: hop-by-hop fields (and those Connection names) gone, the
    // client's address, the scheme and the proxy added.
    let (fields, _) = curl(&[
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: secret",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "TE: trailers",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "X-Forwarded-For: 203.0.113.7",
        "-H",
        "X-End-To-End: kept",
        &format!("{base}/headers"),
    ])
    .unwrap();
    for gone in [
        "connection:",
        "x-hop:",
        "keep-alive:",
        "te:",
        "proxy-connection:",
    ] {
        assert!(
            !fields.lines().any(|l| l.starts_with(gone)),
            "{gone} reached the upstream:\n{fields}"
        );
    }
    for kept in [
        "x-end-to-end: kept",
        "x-forwarded-for: 203.0.113.7, 127.0.0.1",
        "x-forwarded-proto: http",
        "via: 1.1 coreloop",
        &format!("host: {}", p.addr()),
    ] {
        assert!(
            fields.lines().any(|l| l == kept),
            "no {kept:?} upstream:\n{fields}"
        );
    }
    // The client's view: the upstream's answer, with Via.
    let (head, _) = curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/")]).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Via: 1.1 coreloop\r\n") && head.contains("Server: coreloop"),
        "{head}"
    );
    // A body up, and back.
    let (echo, _) = curl(&[
        "--data-binary",
        "a body for the upstream",
        &format!("{base}/echo"),
    ])
    .unwrap();
    assert_eq!(echo, "a body for the upstream");
    // Chunked up (curl streams stdin): re-chunked to the upstream, which reads it whole.
    let (echo, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "chunked body",
        &format!("{base}/echo"),
    ])
    .unwrap();
    assert_eq!(echo, "chunked body");
    p.drain(Duration::from_secs(5)).unwrap();
    up.shutdown().unwrap();
}

/// An upstream's hop-by-hop fields do not reach the client either; its chunked (or
/// close-delimited) body reaches an HTTP/1.1 client chunked and an HTTP/1.0 one
/// delimited by the close.
#[on_both_backends]
#[test]
fn answers_lose_their_hop_by_hop_fields_and_keep_their_framing(backend: Backend) {
    let raw = Raw::start(|_, mut c| {
        while let Some(req) = read_request(&mut c) {
            let chunked = String::from_utf8_lossy(&req).starts_with("GET /chunked");
            if chunked {
                send(&mut c, b"HTTP/1.1 200 OK\r\nConnection: X-Up-Hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nVia: 1.1 origin\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
            } else {
                send(&mut c, b"HTTP/1.1 200 OK\r\n\r\nuntil the close");
                return;
            }
        }
    });
    let p = start(backend, &[raw.addr], |_| {});
    let (status, head, body) = request(
        p.addr(),
        b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    for gone in ["X-Up-Hop", "Keep-Alive", "Connection: X-Up-Hop"] {
        assert!(!head.contains(gone), "{gone} reached the client:\n{head}");
    }
    // Via is a list: the upstream's line, then the proxy's (RFC 9110 §5.3, §7.6.3).
    assert!(
        head.contains("X-Kept: yes\r\n")
            && head.contains("Via: 1.1 origin\r\nVia: 1.1 coreloop\r\n"),
        "{head}"
    );
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert_eq!(dechunk(&body), b"hello world");
    // To HTTP/1.0: no chunked coding; the body ends with the connection.
    let (status, head, body) = request(p.addr(), b"GET /chunked HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        !head.contains("Transfer-Encoding") && head.contains("Connection: close\r\n"),
        "{head}"
    );
    assert_eq!(body, b"hello world");
    // A close-delimited answer reaches an HTTP/1.1 client chunked.
    let (_, head, body) = request(
        p.addr(),
        b"GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert_eq!(dechunk(&body), b"until the close");
    p.drain(Duration::from_secs(5)).unwrap();
}

/// A chunked body's bytes (the chunks may be split anywhere: a proxy re-chunks);
/// panics unless it is exactly a chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    assert_eq!(
        coreloop::http::framing::chunked_len(b),
        Ok(Some(b.len())),
        "{:?}",
        String::from_utf8_lossy(b)
    );
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

fn tool(name: &str, args: &[&str]) -> Option<String> {
    let bin = util::require_tool(name)?;
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{name} {args:?}: {out:?}");
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

#[on_both_backends]
#[test]
fn ab_and_wrk_through_the_proxy_get_every_answer(backend: Backend) {
    let up = upstream(backend);
    let p = start(backend, &[up.local_addr()], |_| {});
    let url = format!("http://{}/", p.addr());
    if let Some(out) = tool("ab", &["-q", "-k", "-n", "4000", "-c", "16", &url]) {
        assert!(out.contains("Complete requests:      4000"), "{out}");
        assert!(out.contains("Failed requests:        0"), "{out}");
        assert!(out.contains("Keep-Alive requests:    4000"), "{out}");
    }
    if let Some(out) = tool("wrk", &["-t1", "-c32", "-d2s", &url]) {
        assert!(
            !out.contains("Socket errors") && !out.contains("Non-2xx"),
            "{out}"
        );
        assert!(out.contains("requests in"), "{out}");
    }
    // The proxy kept its upstream connections: far fewer than the requests.
    let snap = p.runtime().stats().wait().unwrap();
    let st = snap.client_total(&up.local_addr().to_string()).unwrap();
    assert!(st.reused * 10 > st.requests * 9, "{st:?}");
    assert!(
        st.errors.iter().all(|(k, _)| k == "cancelled"),
        "{:?}",
        st.errors
    );
    p.drain(Duration::from_secs(5)).unwrap();
    up.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_upstream_that_refuses_is_a_502_and_is_then_skipped(backend: Backend) {
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Alone: every request is answered 502, quickly.
    let p = start(backend, &[down], |_| {});
    let t0 = Instant::now();
    for _ in 0..3 {
        let (status, head, _) = request(
            p.addr(),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 502, "{head}");
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Keep-alive survives a 502 (the request was read whole).
    let mut c = TcpStream::connect(p.addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert_eq!(got.matches("HTTP/1.1 502 Bad Gateway").count(), 2, "{got}");
    p.drain(Duration::from_secs(5)).unwrap();
    // Beside a live one: no request fails (a refused connect goes to the next one),
    // and the refusing one is skipped once it has failed max_fails times.
    let up = upstream(backend);
    let p = start(backend, &[down, up.local_addr()], |cfg| cfg.max_fails = 2);
    for _ in 0..40 {
        let (status, _, body) = request(
            p.addr(),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((status, &body[..]), (200, &b"Hello, world"[..]));
    }
    let snap = p.runtime().stats().wait().unwrap();
    let refused = snap.client_total(&down.to_string()).unwrap();
    // Two cores, each learning on its own: at most max_fails connects each.
    assert!(refused.errors_of("connect") <= 4, "{refused:?}");
    assert!(refused.errors_of("connect") >= 2);
    let text = snap.to_prometheus(false);
    assert!(
        text.contains(&format!(
            "coreloop_http_client_errors_total{{upstream=\"{down}\",kind=\"connect\"}}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "coreloop_http_client_response_seconds_count{{upstream=\"{}\"}}",
        up.local_addr()
    )));
    p.drain(Duration::from_secs(5)).unwrap();
    up.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn https_upstreams_are_verified_and_one_that_fails_verification_is_passed_over(backend: Backend) {
    let certs = util::tls::Certs::new();
    let (cert, key) = certs.server();
    let (other, other_key) = certs.issue("other", &["elsewhere.example"]);
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let serve = |cert: &std::path::Path, key: &std::path::Path| {
        HttpServer::new(upstream_app())
            .tls(TlsConfig::new(cert, key).unwrap())
            .serve(&rt, any)
            .unwrap()
    };
    let (good, bad) = (serve(&cert, &key), serve(&other, &other_key));
    let https = |s: &coreloop::ServerHandle| proxy::upstreams::Target {
        addr: s.local_addr(),
        tls: Some("localhost".to_string()),
    };
    let ca = TlsConnector::with_roots(certs.ca()).unwrap();
    let get = b"GET /headers HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n";
    // With the CA (--upstream-ca): verified, and the upstream sees the client's Host.
    let p = start(backend, &[], |cfg| {
        cfg.upstreams = vec![https(&good)];
        cfg.client.tls = Some(ca.clone());
    });
    let (status, head, body) = request(p.addr(), get);
    assert_eq!(status, 200, "{head}");
    let fields = String::from_utf8_lossy(&body).to_string();
    for kept in ["host: svc", "x-forwarded-proto: http"] {
        assert!(fields.lines().any(|l| l == kept), "{kept}: {fields}");
    }
    p.drain(Duration::from_secs(5)).unwrap();
    // The system's roots (the default) do not know the test's CA: 502, counted.
    let p = start(backend, &[], |cfg| cfg.upstreams = vec![https(&good)]);
    let (status, head, _) = request(p.addr(), get);
    assert_eq!(status, 502, "{head}");
    if TlsConnector::new().is_ok() {
        // (Without system roots the fetch fails before it has a pool to count in.)
        let snap = p.runtime().stats().wait().unwrap();
        let st = snap.client_total(&good.local_addr().to_string()).unwrap();
        assert_eq!((st.errors_of("tls"), st.opened), (1, 0), "{:?}", st.errors);
    }
    p.drain(Duration::from_secs(5)).unwrap();
    // Beside one whose certificate is for another name: its handshake fails, nothing
    // was sent, and the request goes to the other one; no client sees an error.
    let p = start(backend, &[], |cfg| {
        cfg.upstreams = vec![https(&bad), https(&good)];
        cfg.client.tls = Some(ca.clone());
    });
    for _ in 0..6 {
        let (status, head, _) = request(p.addr(), get);
        assert_eq!(status, 200, "{head}");
    }
    let snap = p.runtime().stats().wait().unwrap();
    let st = snap.client_total(&bad.local_addr().to_string()).unwrap();
    assert!(
        st.errors_of("tls") >= 1 && st.opened == 0,
        "{:?}",
        st.errors
    );
    assert_eq!(st.responses, [0; 5]);
    p.drain(Duration::from_secs(5)).unwrap();
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_upstream_that_times_out_is_a_504(backend: Backend) {
    // One that never answers.
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        std::thread::sleep(Duration::from_secs(3));
    });
    let up = upstream(backend);
    let p = start(backend, &[raw.addr], |cfg| {
        cfg.client.head_timeout = Duration::from_millis(300);
    });
    let t0 = Instant::now();
    let (status, _, _) = request(
        p.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 504);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    p.drain(Duration::from_secs(5)).unwrap();
    // A slow one within the deadline is waited for.
    let p = start(backend, &[up.local_addr()], |cfg| {
        cfg.client.head_timeout = Duration::from_millis(1000);
    });
    let (status, _, body) = request(
        p.addr(),
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, &body[..]), (200, &b"slow"[..]));
    let (status, _, _) = request(
        p.addr(),
        b"GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 504);
    p.drain(Duration::from_secs(5)).unwrap();
    up.shutdown().unwrap();
}

/// A client that goes away while its request waits upstream (or while its answer
/// streams) cancels it: the upstream sees its connection close.
#[on_both_backends]
#[test]
fn a_client_that_leaves_cancels_its_request_upstream(backend: Backend) {
    let (tx, rx) = std::sync::mpsc::channel();
    let raw = Raw::start(move |_, mut c| {
        let req = read_request(&mut c).unwrap();
        if String::from_utf8_lossy(&req).starts_with("GET /download") {
            send(
                &mut c,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n",
            );
            let part = vec![b'd'; 64 * 1024];
            let mut sent = 0usize;
            while std::io::Write::write_all(&mut c, &part).is_ok() {
                sent += part.len();
            }
            tx.send(("download", sent < 1_000_000_000)).unwrap();
        } else {
            tx.send(("wait", peer_closes(&mut c, Duration::from_secs(10))))
                .unwrap();
        }
    });
    let p = start(backend, &[raw.addr], |_| {});
    let mut c = TcpStream::connect(p.addr()).unwrap();
    c.write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(15)).unwrap(),
        ("wait", true)
    );
    // Mid-download: the client reads a little, then leaves.
    let mut c = TcpStream::connect(p.addr()).unwrap();
    c.write_all(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = vec![0u8; 1 << 20];
    c.read_exact(&mut some).unwrap();
    drop(c);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(15)).unwrap(),
        ("download", true)
    );
    p.drain(Duration::from_secs(5)).unwrap();
}

/// Requests the proxy's decoder refuses never reach an upstream.
#[on_both_backends]
#[test]
fn bad_requests_are_refused_before_any_upstream(backend: Backend) {
    let raw = Raw::start(|_, mut c| {
        while read_request(&mut c).is_some() {
            send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = start(backend, &[raw.addr], |_| {});
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\nHost: x\n\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ];
    for (req, want) in cases {
        let (status, head, _) = request(p.addr(), req);
        assert_eq!(status, *want, "{:?}", String::from_utf8_lossy(req));
        assert!(head.contains("Connection: close"), "{head}");
    }
    assert_eq!(raw.accepted(), 0, "nothing reached the upstream");
    // Pipelined good requests are answered in order, on one upstream connection.
    let (_, _, _) = ((), (), ());
    let mut c = TcpStream::connect(p.addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 3, "{got}");
    assert_eq!(raw.accepted(), 1);
    p.drain(Duration::from_secs(5)).unwrap();
}
