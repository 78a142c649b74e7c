//! Helpers for the notes example's tests: start it in this process on a backend with a
//! database of its own, talk HTTP over a raw socket or through curl and wrk.
#![allow(dead_code)]

#[path = "../../examples/notes/server/mod.rs"]
#[allow(dead_code)]
pub mod server;

use coreloop::{Backend, Cores, Runtime};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The example on one core of `backend`, its database in a directory of its own
/// (removed when this is dropped), its loop threads named `{name}-N`.
pub struct Running {
    pub notes: Option<server::Notes>,
    pub dir: PathBuf,
}

pub fn start(backend: Backend, name: &str) -> Running {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "coreloop-notes-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = server::Config::new(dir.join("notes.sqlite3"));
    cfg.port = 0;
    let builder = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .thread_name(name);
    let notes = server::start(builder, cfg).expect("the notes example starts");
    Running {
        notes: Some(notes),
        dir,
    }
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.notes.as_ref().unwrap().addr()
    }

    pub fn runtime(&self) -> &Runtime {
        self.notes.as_ref().unwrap().runtime()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("notes.sqlite3")
    }

    /// Stops it gracefully; no connection was left to cut.
    pub fn stop(mut self) {
        let cut = self
            .notes
            .take()
            .unwrap()
            .drain(Duration::from_secs(5))
            .unwrap();
        assert_eq!(cut, 0);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.notes.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP/1.1 request with `Connection: close`; the status, the Content-Type and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(crate::util::HANG)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // A refused body may be cut short: the answer is what counts.
    let _ = c.write_all(body);
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, ctype, body.to_string())
}

/// curl with `args`; the status and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("the status line");
    (code.parse().expect("a status"), body.to_string())
}
