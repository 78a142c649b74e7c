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
use coreloop::IoLoop;
use std::net::SocketAddr;
use std::time::Duration;

fn main() {
    let args = common::server_args("hello_async", 8888);
    let app = Application::new()
        .route(
            "/",
            Route::new().get_async(|_req, mut resp| async move {
                resp.write("Hello, world");
                resp
            }),
        )
        .route(
            "/later",
            Route::new().get_async(|_req, mut resp| async move {
                coreloop::sleep(Duration::from_millis(10)).await;
                let lp = IoLoop::current().expect("handlers run on a loop");
                let next = lp.shard_handle((lp.shard_id() + 1) % lp.shard_count());
                let answer = match next {
                    Some(h) => lp.call_on(&h, |far| far.shard_id()).await,
                    None => Ok(lp.shard_id()),
                };
                match answer {
                    Ok(far) => resp.write(format!(
                        "slept 10 ms on core {}, then asked core {far}\n",
                        lp.shard_id()
                    )),
                    Err(e) => {
                        resp.set_status(503);
                        resp.write(format!("the other core did not answer: {e}\n"));
                    }
                }
                resp
            }),
        );
    let runtime = args.runtime();
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let server = match HttpServer::new(app).listen(runtime, addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hello_async: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _metrics = args.serve_metrics("hello_async", server.runtime());
    println!(
        "Hello World (async handlers) on http://{} ({} cores)",
        server.local_addr(),
        server.runtime().shards()
    );
    match server.run_until_signal(Duration::from_secs(5)) {
        Ok(0) => println!("stopped"),
        Ok(n) => println!("stopped; {n} connections were cut at the deadline"),
        Err(e) => {
            eprintln!("hello_async: {e}");
            std::process::exit(1);
        }
    }
}
