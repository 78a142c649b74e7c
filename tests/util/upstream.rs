//! Upstreams for the HTTP client's and the proxy's tests: a scripted raw TCP server (a
//! hostile one, as often as not) on std threads, and Debian's nginx with a generated
//! configuration.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A raw TCP server: each connection it accepts goes to the script, with its index
/// (0, 1, ...), on a thread of its own. Stops accepting when dropped.
pub struct Raw {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Raw {
    pub fn start(script: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let i = a.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                std::thread::spawn(move || script(i, s));
            }
        });
        Raw {
            addr,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Reads one request (head, and a Content-Length body) from `s`; `None` at end of
/// file or after 10 s.
pub fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    buf.extend_from_slice(&body);
    Some(buf)
}

/// Writes `bytes` (ignoring a peer that has gone).
pub fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
pub fn reset(s: TcpStream) {
    let sock = socket2::SockRef::from(&s);
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(s);
}

/// Waits until `s`'s peer closes it (or `limit` passes): true if it did.
pub fn peer_closes(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// A port nothing listens on now (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's nginx, started with a configuration made here (`daemon off`, one worker,
/// everything in a temporary directory), on a free port; killed when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Nginx {
    /// nginx serving `http_block` (the inside of `http { }`, where `{port}` is the
    /// port to listen on), with `files` (name, contents) in its directory's `www/`.
    pub fn start(bin: &Path, http_block: &str, files: &[(&str, &[u8])]) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "coreloop-nginx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.join("www").join(name), contents).unwrap();
        }
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{}\n}}\n",
            http_block
                .replace("{port}", &port.to_string())
                .replace("{root}", &format!("{d}/www"))
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .args(["-p", &dir.display().to_string(), "-c"])
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < end,
                "nginx did not listen on {addr}: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr, dir }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
