//! The HTTP client against coreloop's own server: answers from a task and from a
//! callback, keep-alive reuse counted, the pool's limits and queue, streamed bodies
//! both ways with back-pressure, redirects only when asked, HEAD, cancellation, and
//! the client's numbers in the metrics. Hostile upstreams are in
//! http_client_hostile.rs, nginx in http_client_nginx.rs.
mod util;
use util::Listen;

use coreloop::http::{
    Application, ClientConfig, ClientError, ClientRequest, HttpClient, HttpConfig, HttpServer,
    Route,
};
use coreloop::{Backend, Cores, IoLoop, Runtime};
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

fn app() -> Application {
    Application::new()
        .route("/", Route::new().get(|_, _, mut r| r.write("Hello, world")))
        .route(
            "/echo",
            Route::new().post(|_, req, mut r| {
                r.set_header("X-Length", req.body().len().to_string());
                r.write(req.body());
            }),
        )
        .route(
            "/slow",
            Route::new().get(|lp, _, mut r| {
                lp.call_later(Duration::from_millis(100), move |_| {
                    r.write("slow");
                    r.finish();
                });
            }),
        )
        .route(
            "/stream",
            Route::new().get(|lp, req, resp| {
                let parts: u32 = req
                    .query_arg("parts")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10);
                stream_parts(&lp, resp, 0, parts);
            }),
        )
        .route(
            "/redirect/{n}",
            Route::new().get(|_, req, mut r| {
                let n: u32 = req.param("n").unwrap().parse().unwrap();
                r.set_status(302);
                if n == 0 {
                    r.set_header("Location", "/");
                } else {
                    r.set_header("Location", format!("/redirect/{}", n - 1));
                }
            }),
        )
        .route(
            "/see-other",
            Route::new().post(|_, _, mut r| {
                r.set_status(303);
                r.set_header("Location", "/");
            }),
        )
}

/// `parts` parts of 64 KiB, each `part N` then filler, streamed with flow control.
fn stream_parts(lp: &IoLoop, mut resp: coreloop::http::Response, mut i: u32, parts: u32) {
    while i < parts {
        if resp.client_gone() {
            return;
        }
        if resp.over_high_water() {
            return resp.on_drain(move |lp, resp| stream_parts(lp, resp, i, parts));
        }
        let mut part = format!("part {i}\n").into_bytes();
        part.resize(64 * 1024, b'.');
        resp.write(part);
        if resp.flush().is_err() {
            return;
        }
        i += 1;
    }
    let _ = lp;
    resp.finish();
}

fn server(backend: Backend) -> util::Served {
    let cfg = HttpConfig {
        max_body: 64 * 1024 * 1024,
        ..HttpConfig::default()
    };
    HttpServer::new(app())
        .config(cfg)
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

fn accepted(s: &util::Served) -> u64 {
    let snap = s.rt.stats().wait().unwrap();
    snap.http_total(&s.local_addr().to_string())
        .unwrap()
        .accepted
}

#[on_both_backends]
#[test]
fn answers_come_to_a_task_and_to_a_callback(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/", s.local_addr());
    let client = HttpClient::default();
    let (c, u) = (client.clone(), url.clone());
    let (status, body, server_header) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let r = c.fetch(&lp, ClientRequest::get(&u)).await.unwrap();
        (
            r.status(),
            r.body().to_vec(),
            r.header("server").map(str::to_string),
        )
    });
    assert_eq!((status, &body[..]), (200, &b"Hello, world"[..]));
    assert!(server_header.unwrap().starts_with("coreloop"));
    // A callback: the continuation runs on the loop, later.
    let lp = util::new_loop(backend);
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let req = ClientRequest::new("POST", format!("http://{}/echo", s.local_addr())).body("ping");
    client.fetch(&lp, req).then(move |lp, r| {
        let r = r.unwrap();
        *g.borrow_mut() = Some((
            r.status(),
            r.header("x-length").unwrap().to_string(),
            r.body().to_vec(),
        ));
        lp.stop();
    });
    util::run(&lp);
    assert_eq!(
        got.borrow_mut().take().unwrap(),
        (200, "4".to_string(), b"ping".to_vec())
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn keep_alive_reuses_one_connection(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/", s.local_addr());
    let client = HttpClient::default();
    let c = client.clone();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        for _ in 0..20 {
            let r = c.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
            assert_eq!(r.body(), b"Hello, world");
        }
        lp.stats().await.unwrap()
    });
    let st = stats.client_total(&s.local_addr().to_string()).unwrap();
    assert_eq!((st.requests, st.opened, st.reused), (20, 1, 19));
    assert_eq!((st.open, st.idle), (1, 1));
    assert_eq!(st.responses[1], 20);
    assert_eq!(st.latency.len(), 20);
    assert_eq!(accepted(&s), 1, "the server saw one connection");
    // The numbers are in the Prometheus exposition.
    let text = stats.to_prometheus(false);
    let up = s.local_addr().to_string();
    assert!(
        text.contains(&format!(
            "coreloop_http_client_reused_total{{upstream=\"{up}\"}} 19"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "coreloop_http_client_response_seconds_count{{upstream=\"{up}\"}} 20"
    )));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn the_pool_bounds_connections_and_queues_the_rest(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/slow", s.local_addr());
    let cfg = ClientConfig {
        max_per_host: 2,
        max_queued: 5,
        ..ClientConfig::default()
    };
    let client = HttpClient::new(cfg);
    let (answers, full, stats) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        // 2 connections and 5 in the queue: the 8th is refused at once.
        let mut tasks = Vec::new();
        for _ in 0..7 {
            let (c, u, l) = (client.clone(), url.clone(), lp.clone());
            tasks.push(lp.spawn(async move { c.fetch(&l, ClientRequest::get(&u)).await }));
        }
        coreloop::sleep(Duration::from_millis(20)).await;
        let full = client.fetch(&lp, ClientRequest::get(&url)).await;
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap().map(|r| r.body().to_vec()));
        }
        (answers, full, lp.stats().await.unwrap())
    });
    assert!(matches!(full, Err(ClientError::QueueFull)), "{full:?}");
    assert_eq!(answers.len(), 7);
    for a in answers {
        assert_eq!(a.unwrap(), b"slow");
    }
    let st = stats.client_total(&s.local_addr().to_string()).unwrap();
    assert_eq!(st.opened, 2, "never more than max_per_host");
    assert_eq!(st.errors_of("queue_full"), 1);
    assert_eq!(accepted(&s), 2);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_queued_request_waits_at_most_the_connect_timeout(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/slow", s.local_addr());
    let client = HttpClient::new(ClientConfig {
        max_per_host: 1,
        connect_timeout: Duration::from_millis(30),
        ..ClientConfig::default()
    });
    let (first, second) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let (c, u, l) = (client.clone(), url.clone(), lp.clone());
        let first = lp.spawn(async move { c.fetch(&l, ClientRequest::get(&u)).await });
        coreloop::sleep(Duration::from_millis(5)).await;
        let second = client.fetch(&lp, ClientRequest::get(&url)).await;
        (
            first.await.unwrap().map(|r| r.status()),
            second.map(|r| r.status()),
        )
    });
    assert_eq!(first.unwrap(), 200);
    assert!(
        matches!(
            second,
            Err(ClientError::Timeout(coreloop::http::Deadline::Queue))
        ),
        "{second:?}"
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_streamed_response_comes_in_parts(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/stream?parts=200", s.local_addr());
    let client = HttpClient::default();
    let (total, parts, stats) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let resp = client
            .fetch(&lp, ClientRequest::get(&url).stream_response())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.body().to_vec();
        let mut parts = 0;
        while !resp.complete() {
            body.extend_from_slice(&resp.body_part().await.unwrap());
            parts += 1;
        }
        assert!(resp.body_part().await.unwrap().is_empty(), "the end, again");
        drop(resp);
        (body, parts, lp.stats().await.unwrap())
    });
    assert_eq!(total.len(), 200 * 64 * 1024);
    for i in 0..200 {
        let at = i * 64 * 1024;
        assert!(
            total[at..].starts_with(format!("part {i}\n").as_bytes()),
            "part {i}"
        );
    }
    assert!(parts > 1);
    // Read to its end: the connection went back to the pool.
    let st = stats.client_total(&s.local_addr().to_string()).unwrap();
    assert_eq!((st.open, st.idle), (1, 1));
    s.shutdown().unwrap();
}

/// A server writing as fast as it can, a reader asking for parts as fast as it can
/// (parts come while a wait for bytes is pending, and the other way round): every
/// byte, in order, then the connection back in the pool.
#[on_both_backends]
#[test]
fn a_streamed_response_read_to_its_end_at_full_speed(backend: Backend) {
    const TOTAL: usize = 32 * 1024 * 1024;
    let raw = util::upstream::Raw::start(|_, mut c| {
        while util::upstream::read_request(&mut c).is_some() {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n");
            util::upstream::send(&mut c, head.as_bytes());
            let part: Vec<u8> = (0..64 * 1024).map(|i| (i % 253) as u8).collect();
            for _ in 0..TOTAL / part.len() {
                if std::io::Write::write_all(&mut c, &part).is_err() {
                    return;
                }
            }
        }
    });
    util::capture_logs();
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    fn check(at: &mut usize, b: &[u8]) {
        for &x in b {
            assert_eq!(x, ((*at % (64 * 1024)) % 253) as u8, "byte {at}");
            *at += 1;
        }
    }
    // A task awaiting each part.
    let (c, u) = (client.clone(), url.clone());
    util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let resp = c
            .fetch(&lp, ClientRequest::get(&u).stream_response())
            .await
            .unwrap();
        let mut at = 0;
        check(&mut at, resp.body());
        while !resp.complete() {
            check(&mut at, &resp.body_part().await.unwrap());
        }
        assert_eq!(at, TOTAL);
    });
    // Continuations asking for the next part from inside the last one's.
    fn next(resp: coreloop::http::ClientResponse, mut at: usize, done: Rc<RefCell<usize>>) {
        resp.body_part().then(move |lp, part| {
            check(&mut at, &part.unwrap());
            if resp.complete() {
                *done.borrow_mut() = at;
                lp.stop();
            } else {
                next(resp, at, done);
            }
        });
    }
    let lp = util::new_loop(backend);
    let done = Rc::new(RefCell::new(0));
    let d = done.clone();
    client
        .fetch(&lp, ClientRequest::get(&url).stream_response())
        .then(move |_, r| {
            let resp = r.unwrap();
            let mut at = 0;
            check(&mut at, resp.body());
            next(resp, at, d);
        });
    util::run(&lp);
    assert_eq!(*done.borrow(), TOTAL);
    let logs = util::logs_of_this_thread();
    assert!(!logs.iter().any(|l| l.contains("exception in")), "{logs:?}");
}

#[on_both_backends]
#[test]
fn a_streamed_response_is_read_only_as_fast_as_its_reader_asks(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const TOTAL: usize = 256 * 1024 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let s2 = sent.clone();
    let raw = util::upstream::Raw::start(move |_, mut c| {
        util::upstream::read_request(&mut c).unwrap();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n");
        util::upstream::send(&mut c, head.as_bytes());
        let part = vec![b'z'; 64 * 1024];
        while s2.load(Ordering::SeqCst) < TOTAL {
            if std::io::Write::write_all(&mut c, &part).is_err() {
                return;
            }
            s2.fetch_add(part.len(), Ordering::SeqCst);
        }
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    let sent2 = sent.clone();
    let (paused_at, read) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let resp = client
            .fetch(&lp, ClientRequest::get(&url).stream_response())
            .await
            .unwrap();
        let mut read = resp.body().len() + resp.body_part().await.unwrap().len();
        // The reader pauses: the server is held back by TCP, not read without end.
        coreloop::sleep(Duration::from_millis(500)).await;
        let paused_at = sent2.load(Ordering::SeqCst);
        // Then it reads a few parts and drops the response: the download stops.
        for _ in 0..4 {
            read += resp.body_part().await.unwrap().len();
        }
        drop(resp);
        (paused_at, read)
    });
    assert!(
        paused_at < 32 * 1024 * 1024,
        "{paused_at} bytes sent while the reader paused (of {TOTAL})"
    );
    assert!(read > 0);
    // Dropping the response closed the connection: the server's writes fail and it
    // stops well short of the whole body.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        sent.load(Ordering::SeqCst) < TOTAL,
        "the download was not stopped"
    );
}

#[on_both_backends]
#[test]
fn a_streamed_request_body_goes_out_with_back_pressure(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/echo", s.local_addr());
    let client = HttpClient::default();
    let (len_header, body_len, waited) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let fetching = client.fetch(&lp, ClientRequest::new("POST", &url).streamed_body(None));
        let upload = fetching.exchange();
        let (l2, up) = (lp.clone(), upload.clone());
        let writer = lp.spawn(async move {
            let _ = l2;
            let part = vec![b'x'; 100 * 1024];
            let mut waited = 0;
            for _ in 0..100 {
                if up.over_high_water() {
                    waited += 1;
                }
                up.write_body(&part).await.unwrap();
            }
            up.finish_body().unwrap();
            waited
        });
        let resp = fetching.await.unwrap();
        let waited = writer.await.unwrap();
        (
            resp.header("x-length").unwrap().to_string(),
            resp.body().len(),
            waited,
        )
    });
    assert_eq!(len_header, (100 * 100 * 1024).to_string());
    assert_eq!(body_len, 100 * 100 * 1024);
    let _ = waited; // how often the writer waited depends on the machine's speed
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn redirects_are_followed_only_when_asked(backend: Backend) {
    let s = server(backend);
    let base = format!("http://{}", s.local_addr());
    let client = HttpClient::default();
    let (not_followed, followed, too_many, see_other) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let get = |p: &str| ClientRequest::get(format!("{base}{p}"));
        let a = client.fetch(&lp, get("/redirect/2")).await.unwrap();
        let b = client
            .fetch(&lp, get("/redirect/2").follow_redirects(3))
            .await
            .unwrap();
        let c = client
            .fetch(&lp, get("/redirect/5").follow_redirects(2))
            .await;
        let post = ClientRequest::new("POST", format!("{base}/see-other"))
            .body("x")
            .follow_redirects(1);
        let d = client.fetch(&lp, post).await.unwrap();
        (
            (a.status(), a.header("location").unwrap().to_string()),
            (b.status(), b.body().to_vec()),
            c.map(|r| r.status()),
            (d.status(), d.body().to_vec()),
        )
    });
    assert_eq!(not_followed, (302, "/redirect/1".to_string()));
    assert_eq!(followed, (200, b"Hello, world".to_vec()));
    assert!(
        matches!(too_many, Err(ClientError::TooManyRedirects)),
        "{too_many:?}"
    );
    assert_eq!(
        see_other,
        (200, b"Hello, world".to_vec()),
        "303: a GET of the Location"
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_head_request_has_no_body_and_the_connection_goes_on(backend: Backend) {
    let s = server(backend);
    let url = format!("http://{}/", s.local_addr());
    let client = HttpClient::default();
    let (head, get, stats) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let h = client
            .fetch(&lp, ClientRequest::new("HEAD", &url))
            .await
            .unwrap();
        let g = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        (
            (
                h.status(),
                h.header("content-length").unwrap().to_string(),
                h.body().len(),
            ),
            g.body().to_vec(),
            lp.stats().await.unwrap(),
        )
    });
    assert_eq!(head, (200, "12".to_string(), 0));
    assert_eq!(get, b"Hello, world");
    assert_eq!(
        stats
            .client_total(&s.local_addr().to_string())
            .unwrap()
            .opened,
        1
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn bad_requests_fail_with_a_clear_error_before_anything_is_sent(backend: Backend) {
    let client = HttpClient::default();
    let errors = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let mut out = Vec::new();
        for req in [
            ClientRequest::get("ftp://127.0.0.1/"),
            ClientRequest::get("http://127.0.0.1:1/").header("X", "a\r\nb: c"),
            ClientRequest::get("/no/host"),
        ] {
            out.push(client.fetch(&lp, req).await.unwrap_err());
        }
        out
    });
    for e in &errors {
        assert!(matches!(e, ClientError::Invalid(_)), "{e:?}");
    }
}

#[on_both_backends]
#[test]
fn a_refused_connection_is_a_connect_error(backend: Backend) {
    let port = util::upstream::free_port();
    let client = HttpClient::default();
    let e = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        client
            .fetch(&lp, ClientRequest::get(format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err()
    });
    assert!(
        matches!(&e, ClientError::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e:?}"
    );
}

#[on_both_backends]
#[test]
fn a_host_name_is_looked_up_on_the_blocking_pool(backend: Backend) {
    // "vm" is in /etc/hosts here; any name the machine resolves to 127.0.0.1 does.
    let name = ["vm", "localhost.localdomain", "ip6-localhost"]
        .into_iter()
        .find(|n| {
            std::net::ToSocketAddrs::to_socket_addrs(&(*n, 80))
                .is_ok_and(|mut a| a.any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST))
        });
    let Some(name) = name else {
        eprintln!("SKIPPED: no name here resolves to 127.0.0.1 but localhost");
        return;
    };
    let s = server(backend);
    let url = format!("http://{name}:{}/", s.local_addr().port());
    let client = HttpClient::default();
    let c = client.clone();
    let (status, body) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let r = c.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        (r.status(), r.body().to_vec())
    });
    assert_eq!((status, &body[..]), (200, &b"Hello, world"[..]));
    // From a callback: the lookup holds the fetch (nothing else does), and the
    // continuation gets the answer.
    let lp = util::new_loop(backend);
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let url = format!("http://{name}:{}/", s.local_addr().port());
    client
        .fetch(&lp, ClientRequest::get(url))
        .then(move |lp, r| {
            *g.borrow_mut() = Some(r.map(|r| r.status()));
            lp.stop();
        });
    util::run(&lp);
    assert_eq!(got.borrow_mut().take().expect("answered").unwrap(), 200);
    // A name that does not exist is a connect error, not a hang or a panic.
    let c = client.clone();
    let err = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        c.fetch(&lp, ClientRequest::get("http://no-such-host.invalid/"))
            .await
            .unwrap_err()
    });
    assert!(matches!(err, ClientError::Connect(_)), "{err:?}");
    s.shutdown().unwrap();
}
