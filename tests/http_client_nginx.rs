//! The HTTP client against Debian's nginx, started here on a free port with a
//! generated configuration: keep-alive reuse counted, nginx's own limits on a
//! connection (requests per connection, its idle close) followed without an error,
//! Content-Length and chunked bodies, HEAD, the pool's bound. Skipped (with a line
//! saying so) where nginx is not installed, unless CORELOOP_REQUIRE_TOOLS is set.
mod util;

use coreloop::http::{ClientConfig, ClientRequest, HttpClient};
use coreloop::{Backend, IoLoop};
use coreloop_macros::on_both_backends;
use std::time::Duration;
use util::upstream::Nginx;

/// A megabyte of lines, each saying where it is.
fn big_file() -> Vec<u8> {
    let mut b = Vec::new();
    let mut i = 0;
    while b.len() < 1 << 20 {
        b.extend_from_slice(format!("line {i}\n").as_bytes());
        i += 1;
    }
    b
}

fn nginx(keepalive: &str) -> Option<Nginx> {
    let bin = util::require_tool("nginx")?;
    let block = format!(
        "{keepalive}\n gzip on;\n gzip_types text/plain;\n gzip_min_length 0;\n\
         server {{\n listen 127.0.0.1:{{port}};\n root {{root}};\n\
         location = /hello {{ default_type text/plain; return 200 \"Hello from nginx\"; }}\n}}"
    );
    Some(Nginx::start(&bin, &block, &[("big.txt", &big_file())]))
}

#[on_both_backends]
#[test]
fn keep_alive_to_nginx_is_reused_and_bodies_come_whole(backend: Backend) {
    let Some(ngx) = nginx("keepalive_requests 1000; keepalive_timeout 60s;") else {
        return;
    };
    let base = format!("http://{}", ngx.addr);
    let client = HttpClient::default();
    let up = ngx.addr.to_string();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        for _ in 0..10 {
            let r = client
                .fetch(&lp, ClientRequest::get(format!("{base}/hello")))
                .await
                .unwrap();
            assert_eq!((r.status(), r.body()), (200, &b"Hello from nginx"[..]));
        }
        // A megabyte with its Content-Length, buffered and streamed.
        let r = client
            .fetch(&lp, ClientRequest::get(format!("{base}/big.txt")))
            .await
            .unwrap();
        assert_eq!(
            r.header("content-length"),
            Some(big_file().len().to_string().as_str())
        );
        assert!(r.body() == big_file(), "the file, whole");
        let r = client
            .fetch(
                &lp,
                ClientRequest::get(format!("{base}/big.txt")).stream_response(),
            )
            .await
            .unwrap();
        let mut body = r.body().to_vec();
        while !r.complete() {
            body.extend_from_slice(&r.body_part().await.unwrap());
        }
        assert!(body == big_file(), "the file, streamed");
        drop(r);
        // gzip makes nginx answer chunked.
        let r = client
            .fetch(
                &lp,
                ClientRequest::get(format!("{base}/big.txt")).header("Accept-Encoding", "gzip"),
            )
            .await
            .unwrap();
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert!(r.body().starts_with(&[0x1f, 0x8b]) && r.body().len() > 1000);
        // HEAD: the length, no body.
        let r = client
            .fetch(&lp, ClientRequest::new("HEAD", format!("{base}/big.txt")))
            .await
            .unwrap();
        let len = big_file().len().to_string();
        assert_eq!(
            (r.header("content-length"), r.body().len()),
            (Some(len.as_str()), 0)
        );
        let r = client
            .fetch(&lp, ClientRequest::get(format!("{base}/missing")))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        lp.stats().await.unwrap()
    });
    let st = stats.client_total(&up).unwrap();
    assert_eq!(st.requests, 15);
    assert_eq!((st.opened, st.reused, st.retries), (1, 14, 0), "{st:?}");
    assert_eq!((st.responses[1], st.responses[3]), (14, 1));
}

#[on_both_backends]
#[test]
fn nginx_closing_connections_is_followed_without_errors(backend: Backend) {
    // nginx closes a connection after 3 requests (saying so), and one idle for 1 s.
    let Some(ngx) = nginx("keepalive_requests 3; keepalive_timeout 1s;") else {
        return;
    };
    let url = format!("http://{}/hello", ngx.addr);
    let client = HttpClient::default();
    let up = ngx.addr.to_string();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        for _ in 0..9 {
            let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let after_nine = lp.stats().await.unwrap();
        coreloop::sleep(Duration::from_millis(1500)).await;
        let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        assert_eq!(r.status(), 200);
        (after_nine, lp.stats().await.unwrap())
    });
    let nine = stats.0.client_total(&up).unwrap();
    assert_eq!((nine.opened, nine.reused), (3, 6), "{nine:?}");
    let all = stats.1.client_total(&up).unwrap();
    assert_eq!(
        (all.opened, all.retries),
        (4, 0),
        "a new connection after the idle close"
    );
    assert!(all.errors.is_empty(), "{:?}", all.errors);
}

#[on_both_backends]
#[test]
fn concurrent_fetches_to_nginx_stay_within_the_pool(backend: Backend) {
    let Some(ngx) = nginx("keepalive_requests 1000;") else {
        return;
    };
    let url = format!("http://{}/big.txt", ngx.addr);
    let client = HttpClient::new(ClientConfig {
        max_per_host: 3,
        ..ClientConfig::default()
    });
    let up = ngx.addr.to_string();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let (c, u, l) = (client.clone(), url.clone(), lp.clone());
            tasks.push(lp.spawn(async move { c.fetch(&l, ClientRequest::get(&u)).await }));
        }
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            assert_eq!(r.body().len(), big_file().len());
        }
        lp.stats().await.unwrap()
    });
    let st = stats.client_total(&up).unwrap();
    assert!(st.opened <= 3, "{st:?}");
    assert_eq!(st.responses[1], 30);
}
