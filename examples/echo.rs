//! An echo server on every core.
//!
//! `cargo run --release --example echo -- --port 8889 --cores N --backend auto|uring|epoll`
//!
//! Each connection is an `IoStream`: read what is there (up to 64 KiB), write it back,
//! repeat. A peer that sends faster than it reads is throttled: past the write buffer's
//! high-water mark the server stops reading until the buffer drains. Ctrl-C stops it.

mod common;

use common::echo::echo;
use coreloop::{IoStream, ListenOptions, TcpServer};
use std::net::SocketAddr;

fn main() {
    let args = common::server_args("echo", 8889);
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let builder = args
        .runtime()
        .stop_on_signals(true)
        .on_start(|lp, shard| println!("shard {shard}: {}", lp.backend_detail()));
    let on_conn = |_: &coreloop::IoLoop, s: IoStream| {
        s.set_close_callback(|_, s| {
            if let Some(e) = s.error() {
                eprintln!("echo: connection closed by an error: {e}");
            }
        });
        echo(&s);
    };
    let server = match TcpServer::bind(builder, addr, ListenOptions::default(), on_conn) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("echo server on {}", server.local_addr());
    if let Err(e) = server.wait() {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
