//! Echo throughput: 64 connections, each sending a 100-byte message and waiting for it
//! to come back (closed loop), against the echo server on one core, on each backend and
//! in each style (callbacks, and a task per connection with async reads and writes) in
//! one run, R rounds alternating the rows. The server is pinned to CPU 0, the client (a
//! coreloop loop on epoll, the same for every row) to CPU 1.
//!
//! `cargo bench --bench echo_throughput [-- --secs 5 --conns 64 --size 100 --rounds 3]`
//!
//! Prints messages/s and the server thread's CPU time per message (utime+stime of the
//! loop thread from /proc, over the measured seconds only).

#[path = "../examples/common/echo.rs"]
mod echo;

use coreloop::{Backend, Cores, IoLoop, IoStream, Runtime, TcpServer};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime+stime of the calling thread, in clock ticks.
fn thread_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn one_conn(stream: IoStream, msg: Rc<Vec<u8>>, count: Rc<Cell<u64>>) {
    fn round(s: &IoStream, msg: Rc<Vec<u8>>, count: Rc<Cell<u64>>) {
        s.write(&msg);
        let n = msg.len();
        s.read_bytes(n).then(move |_, s, r| {
            if r.is_ok() {
                count.set(count.get() + 1);
                round(s, msg, count);
            }
        });
    }
    round(&stream, msg, count);
}

/// Returns (messages/s, server CPU us per message).
fn run(backend: Backend, style_async: bool, secs: u64, conns: u64, size: u64) -> (f64, f64) {
    let runtime = Runtime::builder()
        .backend(backend)
        .cores(Cores::List(vec![0]))
        .build()
        .expect("runtime");
    let server = TcpServer::new(move |lp, s| {
        if style_async {
            lp.spawn(echo::echo_async(s)).detach();
        } else {
            echo::echo(&s)
        }
    })
    .serve(&runtime, "127.0.0.1:0".parse().unwrap())
    .expect("server");
    let addr = server.local_addr();
    let rt = &runtime;
    let detail = rt.call_on_all(|lp| lp.backend_detail()).wait().unwrap()[0];
    // The client runs on its own thread pinned to CPU 1; this thread stays unpinned, so
    // the next row's runtime may still choose CPU 0.
    let (msgs, elapsed, ticks) = std::thread::scope(|sc| {
        sc.spawn(|| {
            core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
            let lp = IoLoop::with_backend(Backend::Epoll).unwrap();
            let count = Rc::new(Cell::new(0u64));
            let msg = Rc::new(vec![b'm'; size as usize]);
            for _ in 0..conns {
                let s = std::net::TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                one_conn(IoStream::new(&lp, s).unwrap(), msg.clone(), count.clone());
            }
            // Warm up for a second, then measure.
            lp.call_later(Duration::from_secs(1), |lp| lp.stop());
            lp.start().unwrap();
            let ticks0 = rt.call_on_all(|_| thread_ticks()).wait().unwrap()[0];
            let c0 = count.get();
            let t0 = Instant::now();
            lp.call_later(Duration::from_secs(secs), |lp| lp.stop());
            lp.start().unwrap();
            let elapsed = t0.elapsed().as_secs_f64();
            let ticks = rt.call_on_all(|_| thread_ticks()).wait().unwrap()[0] - ticks0;
            lp.close();
            (count.get() - c0, elapsed, ticks)
        })
        .join()
        .unwrap()
    });
    let hz = 100.0;
    let (rate, us) = (msgs as f64 / elapsed, ticks as f64 / hz * 1e6 / msgs as f64);
    println!(
        "| {:<6} | {:<8} | {:>10.0} | {:>8.2} | {} |",
        format!("{backend:?}"),
        if style_async { "async" } else { "callback" },
        rate,
        us,
        detail
    );
    runtime.shutdown().unwrap();
    (rate, us)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that short.
    let bench = std::env::args().any(|a| a == "--bench");
    let secs = arg("--secs", if bench { 5 } else { 1 });
    let conns = arg("--conns", 64);
    let size = arg("--size", 100);
    let rounds = arg("--rounds", if bench { 3 } else { 1 });
    println!("echo: {conns} connections, {size}-byte messages, closed loop, {secs} s per row, {rounds} rounds; server on CPU 0, client on CPU 1");
    println!("| server | style | msgs/s | server us/msg | backend |");
    println!("|---|---|---:|---:|---|");
    let mut ratios = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, backend) in [Backend::Epoll, Backend::Uring].into_iter().enumerate() {
            let (_, cb) = run(backend, false, secs, conns, size);
            let (_, a) = run(backend, true, secs, conns, size);
            ratios[i].push(a / cb);
        }
    }
    for (i, backend) in [Backend::Epoll, Backend::Uring].into_iter().enumerate() {
        println!(
            "{backend:?}: async / callback server CPU per message, median of {rounds} rounds: {:.2} (rounds: {:?})",
            median(ratios[i].clone()),
            ratios[i].iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>()
        );
    }
}
