//! TLS against clients and servers that are not ours, on both backends: curl with
//! `--cacert`, `openssl s_client` (verification, ALPN, resumption), wrk and
//! `h2load --h1` over https; and the client side (`TlsConnector`) against
//! `openssl s_server` and Debian's nginx. Each skips (or, under CI, fails) without its
//! tool.
mod util;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::tls::{TlsConfig, TlsConnector};
use coreloop::{Backend, Cores, IoStream, Runtime, ServerHandle};
use coreloop_macros::on_both_backends;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use util::tls::Certs;

struct Https {
    certs: Certs,
    rt: Runtime,
    server: ServerHandle,
}

fn https(backend: Backend) -> Https {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("Hello, TLS")));
    let server = HttpServer::new(app)
        .tls(TlsConfig::new(&cert, &key).unwrap())
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    Https { certs, rt, server }
}

impl Https {
    fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    fn tls_failures(&self) -> u64 {
        let s = self.rt.stats().wait().unwrap();
        s.cores
            .iter()
            .map(|c| c.tls.failures.iter().sum::<u64>())
            .sum()
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[on_both_backends]
#[test]
fn curl_speaks_https_with_the_ca(backend: Backend) {
    let Some(curl) = util::require_tool("curl") else {
        return;
    };
    let s = https(backend);
    let url = format!("https://localhost:{}/", s.port());
    let resolve = format!("localhost:{}:127.0.0.1", s.port());
    let ca = s.certs.ca();
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(&ca)
        .args(["-w", " %{http_version}", &url, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, TLS 1.1Hello, TLS 1.1",
        "{}",
        text(&out)
    );
    // Without the CA curl refuses the certificate: verification is real.
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, &url])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(s.tls_failures(), 1, "curl's refusal is a failure here too");
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn openssl_s_client_verifies_negotiates_alpn_and_resumes(backend: Backend) {
    let Some(openssl) = util::require_tool("openssl") else {
        return;
    };
    let s = https(backend);
    let connect = format!("127.0.0.1:{}", s.port());
    let mut child = Command::new(&openssl)
        .args(["s_client", "-connect", &connect, "-servername", "localhost"])
        .args(["-verify_return_error", "-alpn", "http/1.1", "-CAfile"])
        .arg(s.certs.ca())
        .args(["-ign_eof", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(all.contains("HTTP/1.1 200 OK"), "{all}");
    assert!(
        all.ends_with("Hello, TLS") || all.contains("\r\n\r\nHello, TLS"),
        "{all}"
    );
    // The session (its ticket came with the answer) resumed by a second s_client.
    let sess = s.certs.dir.join("session.pem");
    let run = |extra: &[&str]| {
        let mut child = Command::new(&openssl)
            .args(["s_client", "-connect", &connect, "-servername", "localhost"])
            .args(["-alpn", "http/1.1", "-ign_eof", "-CAfile"])
            .arg(s.certs.ca())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        text(&child.wait_with_output().unwrap())
    };
    let sess_arg = sess.to_str().unwrap();
    let first = run(&["-sess_out", sess_arg]);
    assert!(first.contains("Verify return code: 0 (ok)"), "{first}");
    assert!(first.contains("ALPN protocol: http/1.1"), "{first}");
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let again = run(&["-sess_in", sess_arg]);
    assert!(again.contains("Reused, TLSv1.3"), "{again}");
    assert!(again.contains("Hello, TLS"), "{again}");
    s.rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn wrk_and_h2load_over_https_see_no_error(backend: Backend) {
    let s = https(backend);
    let url = format!("https://127.0.0.1:{}/", s.port());
    if let Some(wrk) = util::require_tool("wrk") {
        let out = Command::new(wrk)
            .args(["-t1", "-c16", "-d1s", "--timeout", "5s", &url])
            .output()
            .unwrap();
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(!all.contains("Socket errors"), "{all}");
        assert!(!all.contains("Non-2xx"), "{all}");
        assert!(all.contains("requests in"), "{all}");
    }
    if let Some(h2load) = util::require_tool("h2load") {
        let out = Command::new(h2load)
            .args(["--h1", "-n", "2000", "-c", "16", &url])
            .output()
            .unwrap();
        let all = text(&out);
        assert!(all.contains("2000 succeeded, 0 failed, 0 errored"), "{all}");
        assert!(all.contains("Application protocol: http/1.1"), "{all}");
        // New connections each request: full handshakes, all answered.
        let out = Command::new(util::require_tool("h2load").unwrap())
            .args([
                "--h1",
                "-n",
                "200",
                "-c",
                "4",
                "-H",
                "Connection: close",
                &url,
            ])
            .output()
            .unwrap();
        let all = text(&out);
        assert!(all.contains("200 succeeded, 0 failed, 0 errored"), "{all}");
    }
    let st = s.rt.stats().wait().unwrap();
    eprintln!(
        "{:?}",
        st.cores.iter().map(|c| c.tls.failures).collect::<Vec<_>>()
    );
    // (wrk's probe connection, closed before its first byte, is not a failure.)
    assert_eq!(s.tls_failures(), 0);
    s.rt.shutdown().unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts on `port`.
fn wait_listening(port: u16) {
    util::tls::eventually("the server listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// GET / over TLS from a loop on `backend`, through `TlsConnector` trusting `ca`.
fn get_over_tls(backend: Backend, port: u16, ca: &Path) -> std::io::Result<String> {
    let lp = util::new_loop(backend);
    let tls = TlsConnector::with_roots(ca)?.alpn(&[b"http/1.1"]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    lp.run_until_complete({
        let lp = lp.clone();
        async move {
            let s = IoStream::connect(&lp, addr, Duration::from_secs(5)).await?;
            tls.wrap(&lp, &s, "localhost")?;
            s.handshake().await?;
            s.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let all = s.read_until_close().await?;
            Ok(String::from_utf8_lossy(&all).into_owned())
        }
    })?
}

#[on_both_backends]
#[test]
fn the_client_side_talks_to_openssl_s_server(backend: Backend) {
    let Some(openssl) = util::require_tool("openssl") else {
        return;
    };
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let port = free_port();
    let _server = Killed(
        Command::new(openssl)
            .args(["s_server", "-accept", &port.to_string(), "-www", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let page = get_over_tls(backend, port, &certs.ca()).unwrap();
    assert!(page.starts_with("HTTP/1.0 200 ok"), "{page}");
    assert!(page.contains("TLSv1.3"), "{page}");
    // The same server, a CA that did not sign it: refused.
    let other = Certs::new();
    let e = get_over_tls(backend, port, &other.ca()).unwrap_err();
    assert_eq!(
        coreloop::StreamError::of(&e),
        Some(coreloop::StreamError::Tls(
            coreloop::tls::TlsError::Certificate
        ))
    );
}

#[on_both_backends]
#[test]
fn the_client_side_talks_to_nginx_over_tls(backend: Backend) {
    let Some(nginx) = util::require_tool("nginx") else {
        return;
    };
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let port = free_port();
    let conf = certs.dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off;\n\
               client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};\n\
               uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
               server {{ listen 127.0.0.1:{port} ssl; server_name localhost;\n\
                 ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 location / {{ return 200 \"from nginx\"; }} }} }}\n",
            dir = certs.dir.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let _server = Killed(
        Command::new(nginx)
            .arg("-p")
            .arg(&certs.dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    for _ in 0..2 {
        let page = get_over_tls(backend, port, &certs.ca()).unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.ends_with("from nginx"), "{page}");
    }
}
