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
//! --batch-wait-us U --metrics PORT --no-recording --upgrade --upgrade-socket PATH
//! --tls-cert PEM --tls-key PEM --tick-ms T]`: `--metrics` serves Prometheus metrics at
//! `/metrics` on that port (a second server on the same runtime); `--tls-cert` and
//! `--tls-key` serve HTTPS with that certificate chain and key, and SIGHUP rereads them
//! (new connections get the new chain); `--tls-on-pool` answers ClientHellos on the
//! blocking pool; `--stall-ms` sets the loops' stall threshold; `--tick-ms` wakes each
//! loop that often (for valgrind on io_uring: `benches/http_instructions.sh`).
//!
//! Serves `Hello, world` on every core (one SO_REUSEPORT listener each). Ctrl-C or
//! SIGTERM stops it gracefully: no new connections, requests in flight finish (5 s at
//! most). `RUST_LOG` sets what is logged (`info` by default).
//!
//! Restarting without dropping a connection: start the new binary with `--upgrade`
//! while the old one runs. It takes the old one's listening sockets over the upgrade
//! socket (`--upgrade-socket`, by default `$XDG_RUNTIME_DIR/coreloop-hello-PORT.sock`,
//! else in the temporary directory), serves on them, and then the old one stops
//! accepting, drains and exits. Without a running instance `--upgrade` starts afresh.

mod common;

use coreloop::http::{Application, HttpServer, Route};
use std::net::SocketAddr;

fn main() {
    let (mut cert, mut key, mut on_pool, mut stall) = (None, None, false, None);
    let args = common::server_args_with(
        "hello",
        8888,
        " [--tls-cert PEM --tls-key PEM [--tls-on-pool]] [--stall-ms MS]",
        |flag, value| {
            match flag {
                "--tls-cert" => cert = Some(value()?),
                "--tls-key" => key = Some(value()?),
                "--tls-on-pool" => on_pool = true,
                "--stall-ms" => {
                    let ms: u64 = value()?.parse().map_err(|e| format!("--stall-ms: {e}"))?;
                    stall = Some(std::time::Duration::from_millis(ms));
                }
                _ => return Ok(false),
            }
            Ok(true)
        },
    );
    let tls = common::tls_config("hello", cert, key).map(|t| t.handshake_on_pool(on_pool));
    let app = Application::new().route(
        "/",
        Route::new().get(|_lp, _req, mut resp| resp.write("Hello, world")),
    );
    let mut builder = args.runtime();
    if let Some(after) = stall {
        builder = builder.stall_threshold(after);
    }
    let rt = common::exit_on_error("hello", "cannot start", builder.build());
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let mut http = HttpServer::new(app);
    if let Some(tls) = &tls {
        http = http.tls(tls.clone());
        common::reload_on_sighup("hello", tls.clone());
    }
    let server = common::exit_on_error(
        "hello",
        &format!("cannot listen on {addr}"),
        http.serve(&rt, addr),
    );
    args.serve_metrics("hello", &rt);
    common::ready("hello", &rt);
    let backends = rt
        .call_on_all(|lp| lp.backend_detail())
        .wait()
        .unwrap_or_default();
    println!(
        "Hello World on {}://{} ({} cores: {})",
        if tls.is_some() { "https" } else { "http" },
        server.local_addr(),
        backends.len(),
        backends.first().copied().unwrap_or("?")
    );
    common::wait("hello", rt);
}
