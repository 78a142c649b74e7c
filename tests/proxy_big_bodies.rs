//! 100 MB through the proxy example each way, with curl as the client and a raw
//! upstream that streams (so that nothing but the proxy could hold the bodies): both
//! arrive whole and the process's peak memory stays far below one body, so neither
//! side was buffered. Alone in its test binary, so that the peak is this test's.
mod util;

#[path = "../examples/proxy/proxy/mod.rs"]
#[allow(dead_code)]
mod proxy;

use coreloop::{Backend, Cores, Runtime};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;
use util::upstream::{read_request, send, Raw};

const SIZE: usize = 100 * 1024 * 1024;

/// The byte at `i` of the test body (a pattern a shifted copy would not match).
fn byte_at(i: usize) -> u8 {
    (i % 251) as u8
}

/// FNV-1a over `bytes`, continued from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn expected_hash() -> u64 {
    let mut h = 0xcbf29ce484222325;
    let mut buf = vec![0u8; 1 << 20];
    for start in (0..SIZE).step_by(buf.len()) {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = byte_at(start + j);
        }
        h = fnv(h, &buf[..(SIZE - start).min(buf.len())]);
    }
    h
}

/// The peak resident memory of this process so far, MB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    kb / 1024
}

#[on_both_backends]
#[test]
fn a_100_mb_body_each_way_with_bounded_memory(backend: Backend) {
    let Some(curl) = util::require_tool("curl") else {
        return;
    };
    // The upstream: a PUT's body is read and hashed as it comes; a GET is answered
    // with the body, written as it is made.
    let raw = Raw::start(|_, mut c| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if c.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        if head.starts_with("PUT") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("the proxy sends the length it was given");
            let (mut h, mut got) = (0xcbf29ce484222325, 0usize);
            let mut buf = vec![0u8; 64 * 1024];
            while got < len {
                let n = c.read(&mut buf[..(len - got).min(64 * 1024)]).unwrap();
                assert!(n > 0, "the upload was cut at {got}");
                h = fnv(h, &buf[..n]);
                got += n;
            }
            let answer = format!("{got} {h:x}");
            send(
                &mut c,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                )
                .as_bytes(),
            );
        } else {
            send(
                &mut c,
                format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
            );
            let mut buf = vec![0u8; 1 << 20];
            for start in (0..SIZE).step_by(buf.len()) {
                for (j, b) in buf.iter_mut().enumerate() {
                    *b = byte_at(start + j);
                }
                if c.write_all(&buf[..(SIZE - start).min(buf.len())]).is_err() {
                    return;
                }
            }
        }
        let _ = read_request(&mut c);
    });
    let cfg = proxy::Config {
        port: 0,
        upstreams: vec![raw.addr.into()],
        ..proxy::Config::default()
    };
    let p = proxy::start(
        Runtime::builder().backend(backend).cores(Cores::Count(2)),
        cfg,
    )
    .unwrap();
    let url = format!("http://{}/big", p.addr());
    let dir = std::env::temp_dir().join(format!(
        "coreloop-proxy-big-{}-{backend:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let up = dir.join("up");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&up).unwrap());
        let mut buf = vec![0u8; 1 << 20];
        for start in (0..SIZE).step_by(buf.len()) {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = byte_at(start + j);
            }
            f.write_all(&buf[..(SIZE - start).min(buf.len())]).unwrap();
        }
    }
    let want = format!("{SIZE} {:x}", expected_hash());
    // Up: curl sends the file with its length (and Expect: 100-continue, which the
    // proxy answers).
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "120", "-T"])
        .arg(&up)
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    // Down: into a file, hashed here.
    let down = dir.join("down");
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "120", "-o"])
        .arg(&down)
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut f = std::fs::File::open(&down).unwrap();
    let (mut h, mut len) = (0xcbf29ce484222325u64, 0usize);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h = fnv(h, &buf[..n]);
        len += n;
    }
    assert_eq!(format!("{len} {h:x}"), want);
    let _ = std::fs::remove_dir_all(&dir);
    // Both backends' tests run at once in this process: 400 MB went through, and the
    // peak stays well under one body's size.
    let peak = peak_rss_mb();
    assert!(
        peak < 80,
        "peak RSS {peak} MB: a body was held, not streamed"
    );
    p.drain(Duration::from_secs(5)).unwrap();
}
