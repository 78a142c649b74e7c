//! A reverse proxy on every core, built on coreloop's HTTP client: requests read with
//! the HTTP server's own (strict) decoder, forwarded to the upstreams in turn (round
//! robin per core; one that keeps failing is skipped for a while), bodies streamed
//! both ways with back-pressure, hop-by-hop fields removed (RFC 9110 §7.6.1),
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `Via` added. An upstream that refuses
//! gets its client a 502, one that times out a 504; a client that leaves cancels its
//! request upstream. `--metrics PORT` serves the runtime's numbers, with each
//! upstream's latency histogram and error counts (`coreloop_http_client_*`).
//!
//! `cargo run --release --example proxy -- --port 8080 --upstream 127.0.0.1:8888
//! [--upstream 127.0.0.1:8889 ...] [--cores N --backend auto|uring|epoll --metrics PORT
//! --connect-timeout SECS --upstream-timeout SECS --max-per-host N (1024)]`
//!
//! Upstreams are `ip:port` or `localhost:port` (names are not looked up yet). Ctrl-C
//! or SIGTERM stops it gracefully: idle connections close, the others after their
//! answer (5 s at most).

#[path = "../common/mod.rs"]
mod common;
mod proxy;

use proxy::Config;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// An upstream's address: `ip:port`, or `host:port` looked up once at start (as nginx
/// does for a `server` line of an upstream block), before any loop runs.
fn upstream(v: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    v.to_socket_addrs()
        .map_err(|e| format!("--upstream {v}: {e}"))?
        .next()
        .ok_or(format!("--upstream {v}: the name has no address"))
}

fn secs(flag: &str, v: String) -> Result<Duration, String> {
    let s: f64 = v.parse().map_err(|e| format!("{flag}: {e}"))?;
    if !(s > 0.0 && s.is_finite()) {
        return Err(format!("{flag} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn main() {
    let mut cfg = Config::default();
    let args = common::server_args_with(
        "proxy",
        cfg.port,
        " --upstream HOST:PORT [--upstream ...] [--connect-timeout S] [--upstream-timeout S] [--max-per-host N]",
        |flag, value| {
            match flag {
                "--upstream" => cfg.upstreams.push(upstream(&value()?)?),
                "--connect-timeout" => cfg.client.connect_timeout = secs(flag, value()?)?,
                "--upstream-timeout" => {
                    let t = secs(flag, value()?)?;
                    cfg.client.head_timeout = t;
                    cfg.client.body_timeout = t;
                }
                "--max-per-host" => {
                    cfg.client.max_per_host = value()?
                        .parse()
                        .map_err(|e| format!("--max-per-host: {e}"))?
                }
                _ => return Ok(false),
            }
            Ok(true)
        },
    );
    if cfg.upstreams.is_empty() {
        eprintln!("proxy: give at least one --upstream HOST:PORT");
        std::process::exit(2);
    }
    cfg.port = args.port;
    cfg.ip = [0, 0, 0, 0].into();
    let p = common::exit_on_error(
        "proxy",
        "cannot start",
        proxy::start(args.runtime(), cfg.clone()),
    );
    args.serve_metrics("proxy", p.runtime());
    let backends = p
        .runtime()
        .call_on_all(|lp| lp.backend_detail())
        .wait()
        .unwrap_or_default();
    println!(
        "proxy on http://{} to {:?} ({} cores: {})",
        p.addr(),
        cfg.upstreams,
        backends.len(),
        backends.first().copied().unwrap_or("?")
    );
    common::exit_on_error("proxy", "stopped by an error", p.wait());
    println!("proxy: stopped");
}
