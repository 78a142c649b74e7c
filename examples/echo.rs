//! An echo server on every core.
//!
//! `cargo run --release --example echo -- --port 8889 --cores N --backend auto|uring|epoll`
//!
//! Each connection is an `IoStream`: read what is there (up to 64 KiB), write it back,
//! repeat. A peer that sends faster than it reads is throttled: past the write buffer's
//! high-water mark the server stops reading until the buffer drains. Ctrl-C stops it
//! gracefully.

mod common;

use common::echo::echo;
use coreloop::TcpServer;
use std::net::SocketAddr;

fn main() {
    let args = common::server_args("echo", 8889);
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let rt = common::exit_on_error(
        "echo",
        "cannot start",
        args.runtime()
            .on_start(|lp, shard| println!("shard {shard}: {}", lp.backend_detail()))
            .build(),
    );
    let server = TcpServer::new(|_, s| {
        s.set_close_callback(|_, s| {
            if let Some(e) = s.error() {
                eprintln!("echo: connection closed by an error: {e}");
            }
        });
        echo(&s);
    });
    let server = common::exit_on_error(
        "echo",
        &format!("cannot listen on {addr}"),
        server.serve(&rt, addr),
    );
    println!("echo server on {}", server.local_addr());
    common::wait("echo", rt);
}
