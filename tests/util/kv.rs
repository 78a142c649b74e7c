//! Helpers for the key-value example's tests: start it in this process on a backend,
//! talk RESP over a raw socket, run redis-cli and redis-benchmark against it.
#![allow(dead_code)]

#[path = "../../examples/kv/server/mod.rs"]
#[allow(dead_code)]
pub mod server;

use coreloop::{Backend, Cores, Runtime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

pub use server::{Config, Kv};

/// The example on `cores` cores of `backend`, on free ports of 127.0.0.1.
pub fn start_with(backend: Backend, cores: usize, cfg: Config) -> Kv {
    let builder = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(cores));
    server::start(builder, cfg).expect("the kv example starts")
}

/// [`start_with`] the default configuration.
pub fn start(backend: Backend, cores: usize) -> Kv {
    start_with(
        backend,
        cores,
        Config {
            port: 0,
            http_port: 0,
            ..Config::default()
        },
    )
}

/// A key that shard `shard` of `shards` owns, made from `prefix`.
pub fn key_on(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| coreloop::shard_of(k.as_bytes(), shards) == shard)
        .expect("some key maps to every shard")
}

/// A RESP client on a raw socket.
pub struct Client {
    pub r: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(crate::util::HANG)).unwrap();
        Client {
            r: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).expect("send");
    }

    /// Sends a command as a multibulk.
    pub fn cmd(&mut self, args: &[&str]) {
        let bytes = encode(args);
        self.send(&bytes);
    }

    /// One whole reply, as sent.
    pub fn reply(&mut self) -> String {
        let mut out = Vec::new();
        read_reply(&mut self.r, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends a command and returns its reply.
    pub fn call(&mut self, args: &[&str]) -> String {
        self.cmd(args);
        self.reply()
    }

    /// True if the server closed the connection (after everything it sent was read).
    pub fn closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

/// A command as a RESP multibulk.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

/// Reads one reply (nested arrays included) into `out`.
pub fn read_reply(r: &mut impl BufRead, out: &mut Vec<u8>) {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).expect("a reply line");
    assert!(
        line.len() >= 3 && line.ends_with(b"\r\n"),
        "cut reply: {:?}",
        String::from_utf8_lossy(&line)
    );
    out.extend_from_slice(&line);
    let n = || -> i64 {
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]);
        text.parse().expect("a length")
    };
    match line[0] {
        b'+' | b'-' | b':' => {}
        b'$' => {
            if n() >= 0 {
                let mut body = vec![0; n() as usize + 2];
                r.read_exact(&mut body).expect("bulk body");
                out.extend_from_slice(&body);
            }
        }
        b'*' => {
            for _ in 0..n().max(0) {
                read_reply(r, out);
            }
        }
        other => panic!("not a RESP reply: {:?}", other as char),
    }
}

/// Runs `redis-cli -p PORT --no-raw ARGS...` (`cli`: where
/// [`require_tool`](crate::util::require_tool) found it) and returns its output, trimmed.
pub fn redis_cli(cli: &Path, addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(cli)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "--no-raw",
        ])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// An HTTP/1.1 request with `Connection: close`; the status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(crate::util::HANG)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    let status = text[9..12].parse().expect("a status");
    let at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    (status, got[at..].to_vec())
}

/// This process's figure `field` (kB) from /proc/self/status (VmRSS, VmData...).
pub fn vm_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// The core a fresh connection to `kv` landed on (the one whose command count rose).
pub fn core_of(kv: &Kv, c: &mut Client) -> usize {
    let before = kv.stats().unwrap();
    assert_eq!(c.call(&["PING"]), "+PONG\r\n");
    let after = kv.stats().unwrap();
    (0..after.len())
        .find(|&i| after[i].commands > before[i].commands)
        .expect("one core counted the PING")
}
