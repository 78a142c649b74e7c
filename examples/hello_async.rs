//! The Tornado Hello World with an async handler:
//!
//! ```python
//! class MainHandler(tornado.web.RequestHandler):
//!     async def get(self):
//!         self.write("Hello, world")
//! ```
//!
//! `cargo run --release --example hello_async [-- --port 8888 --cores N --backend
//! auto|uring|epoll --batch-wait-us U]`: the same flags as `hello`, and `/` answers
//! exactly as `hello` does. `/later` shows a handler that awaits: a 10 ms sleep on the
//! loop's timer heap, then a call to the next core, and answers with what it learned.

mod common;

use coreloop::http::{Application, HttpServer, Route};
use std::net::SocketAddr;
use std::time::Duration;

fn main() {
    let args = common::server_args("hello_async", 8888);
    let app = Application::new()
        .route(
            "/",
            Route::new().get(|_lp, _req, mut resp| async move {
                resp.write("Hello, world");
                resp
            }),
        )
        .route(
            "/later",
            Route::new().get(|lp, _req, mut resp| async move {
                coreloop::sleep(Duration::from_millis(10)).await;
                let next = (lp.shard_id() + 1) % lp.shard_count();
                // A call that gives no value (the other core is closing) is a 500.
                let far = lp.call_on(next, |far| far.shard_id()).await?;
                resp.write(format!(
                    "slept 10 ms on core {}, then asked core {far}\n",
                    lp.shard_id()
                ));
                Ok(resp)
            }),
        );
    let rt = args.start("hello_async");
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let server = common::exit_on_error(
        "hello_async",
        &format!("cannot listen on {addr}"),
        HttpServer::new(app).serve(&rt, addr),
    );
    args.serve_metrics("hello_async", &rt);
    println!(
        "Hello World (async handlers) on http://{} ({} cores)",
        server.local_addr(),
        rt.shards()
    );
    common::wait("hello_async", rt);
}
