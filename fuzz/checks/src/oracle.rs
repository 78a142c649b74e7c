//! The differential check against hyper's HTTP/1.1 server.

use coreloop::http::fuzzing::decode_all;
use coreloop::http::HttpConfig;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What either side saw of one request: method, path, query, body.
type Seen = (String, String, String, Vec<u8>);

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
}

/// The whole requests hyper's server hands to its service for `data` sent on one
/// connection (then the client's half-close), in order.
fn hyper_requests(data: &[u8]) -> Vec<Seen> {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    RT.with(|rt| {
        rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        if let Ok(body) = req.into_body().collect().await {
                            let body = body.to_bytes().to_vec();
                            s.lock().unwrap().push((method, path, query, body));
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<hyper::body::Bytes>::new(),
                        ))
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(server), service);
            let client_side = async move {
                let _ = client.write_all(data).await;
                let _ = client.shutdown().await;
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
            };
            let _ = tokio::join!(conn, client_side);
        })
    });
    let v = seen.lock().unwrap().clone();
    v
}

/// Differential check: wherever coreloop's decoder and hyper both accept the i-th
/// request of a byte stream, they agree on its method, path, query and body, so they
/// never disagree on where a request ends. (Either may refuse what the other
/// accepts: coreloop is stricter on line endings, Host and targets; from a refusal on,
/// nothing is compared.)
pub fn against_hyper(data: &[u8]) {
    let ours = decode_all([data], &HttpConfig::default());
    let theirs = hyper_requests(data);
    for (i, (a, b)) in ours.requests.iter().zip(&theirs).enumerate() {
        let a: Seen = (
            a.method.clone(),
            a.path.clone(),
            a.query.clone(),
            a.body.clone(),
        );
        assert_eq!(&a, b, "request {i}: coreloop and hyper disagree");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle is not vacuous: hyper sees pipelined requests, their bodies, and
    /// stops at what it refuses.
    #[test]
    fn hyper_sees_the_requests_coreloop_sees() {
        let data = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
            PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
            GARBAGE\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n";
        let theirs = hyper_requests(data);
        let want: Vec<Seen> = vec![
            ("GET".into(), "/a".into(), "x=1".into(), vec![]),
            ("POST".into(), "/b".into(), "".into(), b"abc".to_vec()),
            ("PUT".into(), "/c".into(), "".into(), b"de".to_vec()),
        ];
        assert_eq!(theirs, want);
        let ours = decode_all([&data[..]], &HttpConfig::default());
        assert_eq!(ours.requests.len(), 3);
        against_hyper(data);
    }
}
