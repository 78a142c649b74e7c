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
//! --connect-timeout SECS --upstream-timeout SECS --max-per-host N (1024)
//! --upstream-ca FILE]`
//!
//! Upstreams are `host:port` (a name is looked up once, at start), or
//! `https://host:port` for one spoken to over TLS: its certificate must be for `host`
//! (sent as SNI) and verify against the system's roots, or those in `--upstream-ca`
//! (nginx's `proxy_ssl_trusted_certificate`; verification is always on). A request
//! that could not be sent to one upstream goes to another only if that one has the
//! same scheme and name. Ctrl-C or SIGTERM stops it gracefully: idle connections
//! close, the others after their answer (5 s at most).

#[path = "../common/mod.rs"]
mod common;
mod proxy;

use proxy::upstreams::Target;
use proxy::Config;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// An upstream: `ip:port`, or `host:port` looked up once at start (as nginx does for a
/// `server` line of an upstream block), before any loop runs; with `https://` before
/// it, over TLS to `host`.
fn upstream(v: &str) -> Result<Target, String> {
    let (hostport, tls) = match v.strip_prefix("https://") {
        Some(rest) => {
            let rest = rest.trim_end_matches('/');
            let host = match rest.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
                None => return Err(format!("--upstream {v}: give the port (https://host:port)")),
            };
            (rest, Some(host.to_ascii_lowercase()))
        }
        None => (v, None),
    };
    let addr = match hostport.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => hostport
            .to_socket_addrs()
            .map_err(|e| format!("--upstream {v}: {e}"))?
            .next()
            .ok_or(format!("--upstream {v}: the name has no address"))?,
    };
    Ok(Target { addr, tls })
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
        " --upstream [https://]HOST:PORT [--upstream ...] [--connect-timeout S] [--upstream-timeout S] [--max-per-host N] [--upstream-ca FILE]",
        |flag, value| {
            match flag {
                "--upstream" => cfg.upstreams.push(upstream(&value()?)?),
                "--connect-timeout" => cfg.client.connect_timeout = secs(flag, value()?)?,
                "--upstream-timeout" => {
                    let t = secs(flag, value()?)?;
                    cfg.client.head_timeout = t;
                    cfg.client.body_timeout = t;
                }
                "--upstream-ca" => {
                    let file = value()?;
                    let tls = coreloop::tls::TlsConnector::with_roots(&file)
                        .map_err(|e| format!("--upstream-ca {file}: {e}"))?;
                    cfg.client.tls = Some(tls);
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
        eprintln!("proxy: give at least one --upstream [https://]HOST:PORT");
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
        "proxy on http://{} to {} ({} cores: {})",
        p.addr(),
        cfg.upstreams
            .iter()
            .map(|t| match &t.tls {
                Some(name) => format!("https://{name} at {}", t.addr),
                None => t.addr.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        backends.len(),
        backends.first().copied().unwrap_or("?")
    );
    common::exit_on_error("proxy", "stopped by an error", p.wait());
    println!("proxy: stopped");
}
