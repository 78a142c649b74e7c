//! The Tornado Hello World, in coreloop:
//!
//! ```python
//! class MainHandler(tornado.web.RequestHandler):
//!     def get(self):
//!         self.write("Hello, world")
//!
//! app = tornado.web.Application([(r"/", MainHandler)])
//! app.listen(8888)
//! ```
//!
//! `cargo run --release --example hello [-- --port 8888 --cores N --backend auto|uring|epoll
//! --batch-wait-us U --metrics PORT --no-recording]`: `--metrics` serves Prometheus
//! metrics at `/metrics` on that port (a second server on the same runtime).
//!
//! Serves `Hello, world` on every core (one SO_REUSEPORT listener each). Ctrl-C stops it
//! gracefully: no new connections, requests in flight finish (5 s at most).

mod common;

use coreloop::http::{Application, HttpServer, Route};
use std::net::SocketAddr;
use std::time::Duration;

fn main() {
    let args = common::server_args("hello", 8888);
    let app = Application::new().route(
        "/",
        Route::new().get(|_lp, _req, mut resp| resp.write("Hello, world")),
    );
    let runtime = args.runtime();
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let server = match HttpServer::new(app).listen(runtime, addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hello: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _metrics = args.serve_metrics("hello", server.runtime());
    let backends = server
        .runtime()
        .invoke_on_all(|lp| lp.backend_detail())
        .unwrap_or_default();
    println!(
        "Hello World on http://{} ({} cores: {})",
        server.local_addr(),
        backends.len(),
        backends.first().copied().unwrap_or("?")
    );
    match server.run_until_signal(Duration::from_secs(5)) {
        Ok(0) => println!("stopped"),
        Ok(n) => println!("stopped; {n} connections were cut at the deadline"),
        Err(e) => {
            eprintln!("hello: {e}");
            std::process::exit(1);
        }
    }
}
