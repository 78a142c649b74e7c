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
//! --batch-wait-us U --metrics PORT --no-recording --tick-ms T]`: `--metrics` serves
//! Prometheus metrics at `/metrics` on that port (a second server on the same runtime);
//! `--tick-ms` wakes each loop that often (for valgrind on io_uring:
//! `benches/http_instructions.sh`).
//!
//! Serves `Hello, world` on every core (one SO_REUSEPORT listener each). Ctrl-C or
//! SIGTERM stops it gracefully: no new connections, requests in flight finish (5 s at
//! most). `RUST_LOG` sets what is logged (`info` by default).

mod common;

use coreloop::http::{Application, HttpServer, Route};
use std::net::SocketAddr;

fn main() {
    let args = common::server_args("hello", 8888);
    let app = Application::new().route(
        "/",
        Route::new().get(|_lp, _req, mut resp| resp.write("Hello, world")),
    );
    let rt = args.start("hello");
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let server = common::exit_on_error(
        "hello",
        &format!("cannot listen on {addr}"),
        HttpServer::new(app).serve(&rt, addr),
    );
    args.serve_metrics("hello", &rt);
    let backends = rt
        .call_on_all(|lp| lp.backend_detail())
        .wait()
        .unwrap_or_default();
    println!(
        "Hello World on http://{} ({} cores: {})",
        server.local_addr(),
        backends.len(),
        backends.first().copied().unwrap_or("?")
    );
    common::wait("hello", rt);
}
