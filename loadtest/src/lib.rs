//! A wrk/wrk2-style HTTP/1.1 load generator built on coreloop.
//!
//! ```sh
//! cargo run --release -p loadtest -- -c 256 -d 10s -t 1 --latency http://127.0.0.1:8888/
//! ```
//!
//! wrk's flags keep their meaning (`-c`, `-d`, `-t`, `-H`, `--timeout`, `--latency`).
//! Beyond wrk: `-R/--rate` sends at a constant rate across all connections and measures
//! each latency from when its request was *due* (wrk2's correction for coordinated
//! omission), `--pipeline N`, `--method`, `--body`/`--body-file`, `--warmup`, `--hgrm FILE`
//! (the percentile distribution HdrHistogram's plotter reads), `--plot FILE.svg` (latency by
//! percentile) and `--json`. On a terminal it prints a live line each second.
//!
//! Each thread is a pinned coreloop loop with its own connections and its own
//! HdrHistogram; the histograms are merged at the end. Every response is parsed (status
//! line, Content-Length or chunked framing): a non-2xx/3xx status is counted, and bytes
//! that are not HTTP count as a read error and the connection is reopened.

#![warn(missing_docs)]

mod conn;
mod report;
pub mod server_metrics;

/// The response parser, for the fuzz targets (feature `fuzzing`): not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::conn::{parse_response, Parsed};
}

pub use report::{Report, Totals};

use clap::Parser;
use coreloop::{Backend, Cores, Runtime};
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The command line, with wrk's flags.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadtest",
    version,
    about = "A wrk/wrk2-style HTTP load generator on coreloop"
)]
pub struct Config {
    /// Connections to keep open (across all threads).
    #[arg(short = 'c', long = "connections", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// How long to run (e.g. 10s, 500ms, 2m).
    #[arg(short = 'd', long = "duration", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Threads, each a pinned coreloop loop.
    #[arg(short = 't', long = "threads", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: u64,
    /// Do not pin the threads to cores (by default thread i runs on the i-th core this
    /// process may use: run loadtest under `taskset` to choose them). Unpinned, they
    /// may move to any core, as when loadtest shares a process with the server.
    #[arg(long)]
    pub no_pin: bool,
    /// An extra request header ("Name: value"); may be repeated.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// A response slower than this counts as a timeout (and its connection is reopened).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the latency distribution (and the full percentile spectrum).
    #[arg(long)]
    pub latency: bool,
    /// Constant rate, requests/s across all connections, with latency measured from
    /// when each request was due (wrk2).
    #[arg(short = 'R', long = "rate", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// A new connection for each request (as `ab` without `-k`, or wrk with
    /// `-H "Connection: close"`), opened when the request is due, which is sent with
    /// `Connection: close`; its latency includes the connect.
    #[arg(long)]
    pub no_keepalive: bool,
    /// Take a kept-alive connection that the server closes between requests as a
    /// browser does (RFC 9112 9.3.1): closed while idle, it is reopened without an
    /// error; closed before any byte of the answer to a request sent on it after an
    /// earlier answer, the request is sent again, once, on a new connection (counted
    /// as `retried`, and its latency runs from the first attempt). Without it, either
    /// is a read error, as in wrk. A request on a new connection is never retried.
    #[arg(long)]
    pub retry_closed: bool,
    /// Requests sent back to back on each connection before reading responses.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pipeline: u64,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body, from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Run this long first without recording.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Write the percentile distribution in HdrHistogram's .hgrm format.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Draw latency by percentile (log scale of 1/(1-p)) to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print a JSON summary instead of wrk's layout.
    #[arg(long)]
    pub json: bool,
    /// Event loop backend.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: Backend,
    /// A coreloop server's Prometheus endpoint (http://host:port/metrics): its request
    /// latency histogram is read before and after the run and shown beside the
    /// client's, splitting the latency into the server's work and the rest.
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// https:// URLs: trust only the certificates in this PEM file (default: the
    /// system's roots).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// `http://host[:port][/path]` or `https://host[:port][/path]` (TLS through coreloop's
    /// own client, certificates verified)
    pub url: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "us" => n / 1e6,
        _ => return Err(format!("unknown unit in {s:?} (use us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::parse(s).ok_or_else(|| format!("{s:?} is not auto, uring or epoll"))
}

impl Config {
    /// Parses a command line (the first item is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Config::try_parse_from(args)
    }
}

/// What to connect to and what to send.
pub(crate) struct Plan {
    pub addr: SocketAddr,
    /// https: the client's TLS and the name the server's certificate must carry.
    pub tls: Option<(coreloop::tls::TlsConnector, String)>,
    /// `pipeline` requests back to back.
    pub batch: Vec<u8>,
    pub pipeline: usize,
    /// The requests are HEAD: their answers have no body.
    pub head: bool,
    /// A new connection per request (`--no-keepalive`).
    pub no_keepalive: bool,
    /// `--retry-closed`.
    pub retry_closed: bool,
    pub timeout: Duration,
    /// Per-connection interval between requests in rate mode.
    pub interval: Option<Duration>,
    pub record_from: Instant,
    pub stop_at: Instant,
}

/// A URL's parts: `http://host[:port][/path]` (or https, whose port is 443 by default).
#[cfg(test)]
pub(crate) fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    parse_any_url(url).map(|(host, port, path, _)| (host, port, path))
}

/// A URL's parts, and whether it is https.
fn parse_any_url(url: &str) -> Result<(String, u16, String, bool), String> {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => {
            return Err(format!(
                "{url:?}: only http:// and https:// URLs are supported"
            ))
        }
    };
    let default_port = if tls { 443 } else { 80 };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: bad port {p:?}"))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((host.to_string(), port, path.to_string(), tls))
}

/// Runs the test described by `cfg` and returns what it measured.
///
/// ```
/// use coreloop::http::{Application, HttpServer, Route};
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(1)).build().unwrap();
/// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("hi")));
/// let server = HttpServer::new(app)
///     .serve(&rt, "127.0.0.1:0".parse().unwrap())
///     .unwrap();
/// let url = format!("http://{}/", server.local_addr());
/// let cfg = loadtest::Config::from_args(["loadtest", "-c", "4", "-d", "200ms", &url]).unwrap();
/// let report = loadtest::run(&cfg).unwrap();
/// assert!(report.totals.requests > 0 && report.totals.read_errors == 0);
/// rt.shutdown().unwrap();
/// ```
pub fn run(cfg: &Config) -> Result<Report, String> {
    let (host, port, path, https) = parse_any_url(&cfg.url)?;
    let tls = if https {
        let connector = match &cfg.cacert {
            Some(ca) => coreloop::tls::TlsConnector::with_roots(ca),
            None => coreloop::tls::TlsConnector::new(),
        }
        .map_err(|e| format!("TLS: {e}"))?
        .alpn(&[b"http/1.1"]);
        Some((connector, host.clone()))
    } else {
        None
    };
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    if cfg.connections < cfg.threads {
        return Err("connections must be at least threads (each thread needs one)".into());
    }
    let body = match (&cfg.body, &cfg.body_file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?,
        (None, None) => Vec::new(),
    };
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        cfg.method,
        path,
        authority_header(&host, port)
    );
    for h in &cfg.headers {
        if !h.contains(':') || h.contains('\r') || h.contains('\n') {
            return Err(format!("header {h:?} is not \"Name: value\""));
        }
        req.push_str(h);
        req.push_str("\r\n");
    }
    if cfg.no_keepalive {
        req.push_str("Connection: close\r\n");
    }
    if !body.is_empty()
        || cfg.method.eq_ignore_ascii_case("POST")
        || cfg.method.eq_ignore_ascii_case("PUT")
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut one = req.into_bytes();
    one.extend_from_slice(&body);
    let pipeline = if cfg.rate.is_some() || cfg.no_keepalive {
        1
    } else {
        cfg.pipeline as usize
    };
    let batch = one.repeat(pipeline);

    let start = Instant::now();
    let plan = Arc::new(Plan {
        addr,
        tls,
        batch,
        pipeline,
        head: cfg.method.eq_ignore_ascii_case("HEAD"),
        no_keepalive: cfg.no_keepalive,
        retry_closed: cfg.retry_closed,
        timeout: cfg.timeout,
        interval: cfg
            .rate
            .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r as f64)),
        record_from: start + cfg.warmup,
        stop_at: start + cfg.warmup + cfg.duration,
    });
    let threads = cfg.threads as usize;
    let rt = Runtime::builder()
        .cores(Cores::Count(threads))
        .pin(!cfg.no_pin)
        .backend(cfg.backend)
        .thread_name("loadtest")
        .build()
        .map_err(|e| format!("starting {threads} loops: {e}"))?;
    let per = cfg.connections as usize / threads;
    let extra = cfg.connections as usize % threads;
    let p = plan.clone();
    rt.call_on_all(move |lp| {
        let n = per + usize::from(lp.shard_id() < extra);
        conn::start_shard(lp, p.clone(), n);
    })
    .wait()
    .map_err(|e| e.to_string())?;
    // The server's own histogram, read once recording starts (after the warm-up).
    let server_before = match &cfg.server_metrics {
        Some(url) => {
            std::thread::sleep(plan.record_from.saturating_duration_since(Instant::now()));
            Some(server_metrics::parse(
                &server_metrics::fetch(url)?,
                Some(port),
            ))
        }
        None => None,
    };
    // Wait for the end (the loops stop sending at `stop_at` and drain what is in
    // flight), with one live line a second on a terminal.
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        if now >= plan.stop_at {
            break;
        }
        std::thread::sleep((plan.stop_at - now).min(Duration::from_secs(1)));
        if live {
            let counts = rt
                .call_on_all(conn::progress)
                .wait()
                .map_err(|e| e.to_string())?;
            let (done, errors) = counts.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
            let dt = last.0.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r  {:>6.1}s  {:>10.0} req/s  {:>8} errors   ",
                start.elapsed().as_secs_f64(),
                (done - last.1) as f64 / dt,
                errors
            );
            last = (Instant::now(), done);
        }
    }
    if live {
        eprintln!();
    }
    let drain_until = Instant::now() + cfg.timeout.min(Duration::from_secs(2));
    loop {
        let busy: usize = rt
            .call_on_all(conn::outstanding)
            .wait()
            .map_err(|e| e.to_string())?
            .into_iter()
            .sum();
        if busy == 0 || Instant::now() >= drain_until {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let shards = rt
        .call_on_all(conn::collect)
        .wait()
        .map_err(|e| e.to_string())?;
    let _ = rt.shutdown();
    let mut report = Report::merge(shards, cfg.duration, cfg);
    if let (Some(url), Some(before)) = (&cfg.server_metrics, server_before) {
        let after = server_metrics::parse(&server_metrics::fetch(url)?, Some(port));
        report.server = Some(after.since(&before));
    }
    Ok(report)
}

fn authority_header(host: &str, port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        h
    } else {
        format!("{h}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8888/").unwrap(),
            ("127.0.0.1".into(), 8888, "/".into())
        );
        assert_eq!(parse_url("http://h").unwrap(), ("h".into(), 80, "/".into()));
        assert_eq!(
            parse_url("http://[::1]:9/x?y").unwrap(),
            ("::1".into(), 9, "/x?y".into())
        );
        assert!(parse_url("http:///path").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("ftp://h/").is_err());
        assert_eq!(
            parse_any_url("https://h/x").unwrap(),
            ("h".into(), 443, "/x".into(), true)
        );
        assert!(parse_url("http://h:99999/").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
