//! The Tornado Hello World, on the reactor alone: every core listens on the same port
//! with SO_REUSEPORT and answers `Hello, world` with `add_handler` and nonblocking I/O.
//!
//! `cargo run --release --example hello [-- --port 8888 --cores N --backend auto|uring|epoll]`
//!
//! This is a readiness-level server written straight on `IoLoop::add_handler`, the way
//! Tornado's IOLoop docstring serves a socket. It splits requests on the blank line,
//! supports keep-alive, pipelining and `Connection: close`, and refuses heads over 16 KiB;
//! it reads no request bodies. The full HTTP/1.1 server (httparse, bodies, limits,
//! timeouts) is `HttpServer`, which replaces this example when it lands.

mod common;

use coreloop::{Interest, IoLoop, Runtime};
use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAX_HEAD: usize = 16 * 1024;
const ACCEPTS_PER_EVENT: usize = 64;
const BODY: &[u8] = b"Hello, world";

thread_local! {
    /// This core's `Date:` header line, rewritten once a second by a timer.
    static DATE: RefCell<String> = RefCell::new(http_date(SystemTime::now()));
}

fn on_start(lp: &IoLoop, port: u16) {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match coreloop::bind_reuseport(addr, 1024) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shard {}: cannot listen on port {port}: {e}", lp.shard_id());
            std::process::exit(1);
        }
    };
    fn tick(lp: &IoLoop) {
        DATE.with(|d| *d.borrow_mut() = http_date(SystemTime::now()));
        lp.call_later(Duration::from_secs(1), tick);
    }
    tick(lp);
    let fd = listener.as_raw_fd();
    lp.add_handler(fd, Interest::READABLE, move |lp, _, _| {
        // At most a bounded number per event, so one busy listener cannot starve the
        // connections; level triggering brings us back for the rest.
        for _ in 0..ACCEPTS_PER_EVENT {
            match listener.accept() {
                Ok((stream, _)) => serve(lp, stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: pause accepting for a moment instead of spinning.
                    eprintln!("accept: {e}; pausing 100 ms");
                    let fd = listener.as_raw_fd();
                    let _ = lp.update_handler(fd, Interest::NONE);
                    lp.call_later(Duration::from_millis(100), move |lp| {
                        let _ = lp.update_handler(fd, Interest::READABLE);
                    });
                    return;
                }
            }
        }
    })
    .expect("register the listener");
    println!(
        "shard {} listening on port {port} ({})",
        lp.shard_id(),
        lp.backend_detail()
    );
}

/// Registers a connection; its handler owns the stream and its buffers.
fn serve(lp: &IoLoop, stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
        return;
    }
    let fd = stream.as_raw_fd();
    let mut conn = Conn {
        stream,
        input: Vec::new(),
        output: Vec::new(),
        closing: false,
    };
    let added = lp.add_handler(fd, Interest::READABLE, move |lp, fd, ready| {
        let keep = conn.on_ready(ready.is_readable() || ready.is_hup(), ready.is_writable());
        match keep {
            Ok(interest) => {
                let _ = lp.update_handler(fd, interest);
            }
            // Removing the handler drops it, and with it the stream: the fd is closed
            // after it has left the poller.
            Err(()) => lp.remove_handler(fd),
        }
    });
    if let Err(e) = added {
        eprintln!("register connection: {e}");
    }
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    closing: bool,
}

impl Conn {
    /// Reads what is there, answers every complete request, writes what it can. Returns
    /// the interest to keep, or `Err` to close.
    fn on_ready(&mut self, readable: bool, writable: bool) -> Result<Interest, ()> {
        if readable && !self.closing {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => {
                        self.closing = true;
                        break;
                    }
                    Ok(n) => self.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Err(()),
                }
            }
            self.answer_complete_requests();
        }
        if (writable || !self.output.is_empty()) && self.flush().is_err() {
            return Err(());
        }
        match (self.output.is_empty(), self.closing) {
            (true, true) => Err(()),
            (false, _) => Ok(Interest::WRITABLE),
            (true, false) => Ok(Interest::READABLE),
        }
    }

    fn answer_complete_requests(&mut self) {
        let mut start = 0;
        while let Some(end) = find_blank_line(&self.input[start..]) {
            let head = &self.input[start..start + end];
            start += end + 4;
            let close = wants_close(head);
            DATE.with(|d| {
                write!(
                    self.output,
                    "HTTP/1.1 200 OK\r\nServer: coreloop\r\nContent-Type: text/html; charset=UTF-8\r\n{}\r\nContent-Length: {}\r\n{}\r\n",
                    d.borrow(),
                    BODY.len(),
                    if close { "Connection: close\r\n" } else { "" }
                )
                .expect("writing to a Vec")
            });
            self.output.extend_from_slice(BODY);
            if close {
                self.closing = true;
                start = self.input.len();
                break;
            }
        }
        self.input.drain(..start);
        if self.input.len() > MAX_HEAD {
            self.output
                .extend_from_slice(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            self.input.clear();
            self.closing = true;
        }
    }

    fn flush(&mut self) -> Result<(), ()> {
        let mut done = 0;
        while done < self.output.len() {
            match self.stream.write(&self.output[done..]) {
                Ok(0) => return Err(()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            }
        }
        self.output.drain(..done);
        Ok(())
    }
}

fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

/// HTTP/1.0 closes unless it asks for keep-alive; HTTP/1.1 closes when it asks to.
fn wants_close(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let http10 = text.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
    let conn = text
        .lines()
        .find_map(|l| l.strip_prefix("connection:"))
        .map(str::trim);
    match conn {
        Some(v) if v.contains("close") => true,
        Some(v) if v.contains("keep-alive") => false,
        _ => http10,
    }
}

/// `Date: Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110, IMF-fixdate).
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "Date: {weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn main() {
    let args = common::server_args("hello", 8888);
    let port = args.port;
    let rt = Runtime::builder()
        .cores(args.cores)
        .backend(args.backend)
        .stop_on_signals(true)
        .on_start(move |lp, _| on_start(lp, port))
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hello: {e}");
            std::process::exit(1);
        }
    };
    match rt.wait() {
        Ok(()) => println!("stopped"),
        Err(e) => {
            eprintln!("hello: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_date_matches_the_rfc_example() {
        let t = super::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(super::http_date(t), "Date: Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
