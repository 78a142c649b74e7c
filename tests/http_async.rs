//! Async HTTP handlers: the same answers as callback handlers, handlers that await a
//! sleep and another core, panics answered 500, pipelined requests answered in order
//! whichever handlers waited, and a response streamed across awaits.
mod util;
use util::Listen;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::{sleep, Backend, Cores, IoLoop, Runtime};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn server(backend: Backend, app: Application) -> util::Served {
    HttpServer::new(app)
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(2)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

fn app() -> Application {
    Application::new()
        .route(
            "/sync",
            Route::new().get(|_, _, mut r| r.write("Hello, world")),
        )
        .route(
            "/async",
            Route::new().get(|_lp, _, mut r| async move {
                r.write("Hello, world");
                r
            }),
        )
        .route(
            "/await",
            Route::new().get(|_lp, req, mut r| async move {
                let ms: u64 = req
                    .query_arg("ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5);
                sleep(Duration::from_millis(ms)).await;
                let lp = IoLoop::current().unwrap();
                let far = lp.shard_handle((lp.shard_id() + 1) % 2).unwrap();
                let other = lp.call_on(&far, |l| l.shard_id()).await.unwrap();
                r.write(format!("{} slept {ms} and asked {other}", lp.shard_id()));
                r
            }),
        )
        .route(
            "/panic",
            Route::new().get(|_lp, _, r| async move {
                sleep(Duration::from_millis(1)).await;
                if r.status() == 200 {
                    panic!("async handler boom");
                }
                r
            }),
        )
        .route(
            "/panic-now",
            Route::new().get(|_lp, _, r| async move {
                if r.status() == 200 {
                    panic!("async handler boom before any await");
                }
                r
            }),
        )
        .route(
            // Waits once without anything to wake it but itself: it wakes its waker and
            // returns Pending (a yield), so it must be polled again.
            "/yield",
            Route::new().get(|_lp, _, mut r| async move {
                let mut yielded = false;
                std::future::poll_fn(|cx| {
                    if yielded {
                        std::task::Poll::Ready(())
                    } else {
                        yielded = true;
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    }
                })
                .await;
                r.write("yielded");
                r
            }),
        )
        .route(
            "/stream",
            Route::new().get(|_lp, _, mut r| async move {
                for i in 0..5 {
                    r.write(format!("part {i};"));
                    r.flush().unwrap();
                    sleep(Duration::from_millis(2)).await;
                }
                r
            }),
        )
}

fn exchange(s: &util::Served, req: &str) -> String {
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

/// The response without its Date line (which may differ by a second).
fn without_date(r: &str) -> String {
    r.lines()
        .filter(|l| !l.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[on_both_backends]
#[test]
fn an_async_handler_answers_byte_for_byte_as_a_callback_handler(backend: Backend) {
    let s = server(backend, app());
    for version in ["1.0", "1.1"] {
        let get = |path| {
            exchange(
                &s,
                &format!("GET {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
        };
        assert_eq!(without_date(&get("/async")), without_date(&get("/sync")));
        let head = |path| {
            exchange(
                &s,
                &format!("HEAD {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
        };
        assert_eq!(without_date(&head("/async")), without_date(&head("/sync")));
    }
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn handlers_that_await_answer_and_panics_are_500(backend: Backend) {
    let s = server(backend, app());
    let r = exchange(&s, "GET /await?ms=10 HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains(" slept 10 and asked "), "{r}");
    let r = exchange(&s, "GET /panic HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 500 "), "{r}");
    let r = exchange(&s, "GET /panic-now HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 500 "), "{r}");
    let r = exchange(&s, "GET /yield HTTP/1.0\r\n\r\n");
    assert!(r.ends_with("\r\n\r\nyielded"), "{r}");
    // The server goes on.
    let r = exchange(&s, "GET /async HTTP/1.0\r\n\r\n");
    assert!(r.ends_with("\r\n\r\nHello, world"), "{r}");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn pipelined_requests_to_async_handlers_are_answered_in_order(backend: Backend) {
    let s = server(backend, app());
    let reqs = [
        "/await?ms=30",
        "/async",
        "/await?ms=1",
        "/sync",
        "/await?ms=10",
        "/async",
    ];
    let mut all = String::new();
    for (i, p) in reqs.iter().enumerate() {
        let close = if i == reqs.len() - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        all.push_str(&format!("GET {p} HTTP/1.1\r\nHost: x\r\n{close}\r\n"));
    }
    let out = exchange(&s, &all);
    let bodies: Vec<&str> = out
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    assert_eq!(bodies.len(), 6, "{out}");
    assert!(bodies[0].contains(" slept 30 "), "{bodies:?}");
    assert_eq!(bodies[1], "Hello, world");
    assert!(bodies[2].contains(" slept 1 "), "{bodies:?}");
    assert_eq!(bodies[3], "Hello, world");
    assert!(bodies[4].contains(" slept 10 "), "{bodies:?}");
    assert_eq!(bodies[5], "Hello, world");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_response_streams_across_awaits(backend: Backend) {
    let s = server(backend, app());
    let r = exchange(
        &s,
        "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("Transfer-Encoding: chunked"), "{r}");
    let body = r
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    // Five chunks, then the last chunk.
    for i in 0..5 {
        assert!(body.contains(&format!("7\r\npart {i};\r\n")), "{body:?}");
    }
    assert!(body.ends_with("0\r\n\r\n"), "{body:?}");
    s.shutdown().unwrap();
}
