//! `tokio_hello <port> [threads]`: Hello World on hyper 1.x, one current-thread tokio
//! runtime per thread, each with its own SO_REUSEPORT listener (the same shape as
//! coreloop's hello, so the comparison is of the stacks, not of the architecture).

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("Content-Type", "text/html; charset=UTF-8")
        .body(Full::new(Bytes::from_static(b"Hello, world")))
        .unwrap())
}

fn listener(port: u16) -> std::net::TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_nonblocking(true).unwrap();
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into()).unwrap();
    s.listen(1024).unwrap();
    s.into()
}

fn serve(port: u16) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = tokio::net::TcpListener::from_std(listener(port)).unwrap();
        loop {
            let Ok((stream, _)) = l.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(8080);
    let threads: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || serve(port)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
