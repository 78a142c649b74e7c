//! Command-line flags shared by the server examples: `--port`, `--cores`, `--backend`,
//! `--batch-wait-us`, `--metrics PORT`, `--no-recording`, `--upgrade`,
//! `--upgrade-socket PATH`, `--tick-ms`; the logger; starting the runtime.

#![allow(dead_code)]

pub mod echo;

use coreloop::{Backend, Cores, Runtime};
use std::time::Duration;

/// How long a graceful stop (Ctrl-C, SIGTERM) lets requests in flight finish.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Installs the logger: coreloop's own lines (stalls, refused work, 500s) at `info`
/// unless `RUST_LOG` says otherwise (`RUST_LOG=coreloop=debug`, say).
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
}

pub struct ServerArgs {
    pub port: u16,
    pub cores: Cores,
    pub backend: Backend,
    /// `Runtime::batch_wait` (zero: off).
    pub batch_wait: std::time::Duration,
    /// Serve Prometheus metrics at `/metrics` on this port.
    pub metrics: Option<u16>,
    /// Record histograms (`--no-recording`: counters only, to see what recording costs).
    pub recording: bool,
    /// `--upgrade`: take over from the instance running at `upgrade_socket`.
    pub upgrade: bool,
    /// Where the running instance hands its listening sockets over to a new one.
    pub upgrade_socket: std::path::PathBuf,
    /// `--tick-ms T`: a timer on every loop every T ms, so that no wait for I/O blocks
    /// longer (for valgrind, which holds its lock across a blocking `io_uring_enter`).
    pub tick: Option<Duration>,
}

impl ServerArgs {
    /// A runtime builder with these cores, backend and batch wait, that stops
    /// gracefully on SIGINT and SIGTERM (requests in flight get [`DRAIN_DEADLINE`]),
    /// hands its sockets over to a new instance at the upgrade socket, and with
    /// `--upgrade` takes them over from the running one.
    pub fn runtime(&self) -> coreloop::RuntimeBuilder {
        let b = coreloop::Runtime::builder()
            .cores(self.cores.clone())
            .backend(self.backend)
            .batch_wait(self.batch_wait)
            .recording(self.recording)
            .stop_on_signals(true)
            .drain_deadline(DRAIN_DEADLINE)
            .upgrade_socket(&self.upgrade_socket)
            .take_over(self.upgrade);
        match self.tick {
            Some(every) => b.on_start(move |lp, _| tick(lp, every)),
            None => b,
        }
    }

    /// Starts the runtime of [`runtime`](Self::runtime), or exits with a message.
    pub fn start(&self, name: &str) -> Runtime {
        exit_on_error(name, "cannot start", self.runtime().build())
    }

    /// With `--metrics PORT`: serves `/metrics` on that port, on `rt` beside the example's
    /// own server. Exits with a message if it cannot.
    pub fn serve_metrics(&self, name: &str, rt: &Runtime) -> Option<coreloop::ServerHandle> {
        let port = self.metrics?;
        let app = coreloop::http::Application::new().route("/metrics", coreloop::metrics::route());
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        match coreloop::http::HttpServer::new(app).serve(rt, addr) {
            Ok(h) => {
                println!("metrics on http://{}/metrics", h.local_addr());
                Some(h)
            }
            Err(e) => {
                eprintln!("{name}: cannot serve metrics on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// A timer on `lp` every `every`, for good, that yields the thread: under valgrind,
/// which runs one thread at a time and keeps running a thread blocked in
/// `io_uring_enter`, the yield lets the others run.
fn tick(lp: &coreloop::IoLoop, every: Duration) {
    lp.call_later(every, move |lp| {
        std::thread::yield_now();
        tick(lp, every)
    });
}

/// `r`'s value, or a message (`name: what: error`) and exit status 1.
pub fn exit_on_error<T, E: std::fmt::Display>(name: &str, what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{name}: {what}: {e}");
            std::process::exit(1);
        }
    }
}

/// The TLS configuration of `--tls-cert` and `--tls-key` (both or neither), or exits
/// with a message.
pub fn tls_config(
    name: &str,
    cert: Option<String>,
    key: Option<String>,
) -> Option<coreloop::tls::TlsConfig> {
    match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(exit_on_error(
            name,
            "cannot load the TLS certificate",
            coreloop::tls::TlsConfig::new(cert, key),
        )),
        _ => {
            eprintln!("{name}: --tls-cert and --tls-key go together");
            std::process::exit(2);
        }
    }
}

/// Rereads `tls`'s certificate and key files on every SIGHUP (nginx's `reload`): new
/// connections get the new chain, open ones keep theirs; a file that fails to load is
/// reported and the old chain stays.
pub fn reload_on_sighup(name: &str, tls: coreloop::tls::TlsConfig) {
    let name = name.to_string();
    let mut signals = exit_on_error(
        &name,
        "cannot watch SIGHUP",
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]),
    );
    std::thread::spawn(move || {
        for _ in signals.forever() {
            match tls.reload() {
                Ok(()) => log::info!("{name}: SIGHUP: TLS certificates reloaded"),
                Err(e) => log::error!("{name}: SIGHUP: TLS certificates not reloaded: {e}"),
            }
        }
    });
}

/// Says the service is serving (the instance it took over from, if any, drains now;
/// a newer one can take over from this one from now on).
pub fn ready(name: &str, rt: &Runtime) {
    exit_on_error(name, "cannot serve hand-overs", rt.ready());
}

/// Waits until a signal (or a newer instance taking over) has stopped `rt`
/// gracefully, then says so.
pub fn wait(name: &str, rt: Runtime) {
    ready(name, &rt); // if not said yet
    exit_on_error(name, "stopped by an error", rt.wait());
    println!("{name}: stopped");
}

/// The upgrade socket's default: one per example and port, in the user's runtime
/// directory (`$XDG_RUNTIME_DIR`, private to the user) or else the temporary one.
pub fn default_upgrade_socket(name: &str, port: u16) -> std::path::PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("coreloop-{name}-{port}.sock"))
}

/// Parses `--port P --cores N --backend auto|uring|epoll --batch-wait-us U`; exits with
/// a message on bad input. Installs the logger too.
pub fn server_args(name: &str, default_port: u16) -> ServerArgs {
    server_args_with(name, default_port, "", |_, _| Ok(false))
}

/// A flag's value, asked for by the flag's handler.
pub type Value<'a> = &'a mut dyn FnMut() -> Result<String, String>;

/// [`server_args`] plus an example's own flags: `extra(flag, value)` returns whether it
/// took `flag` (calling `value()` for its value), and `extra_usage` is added to the
/// usage line.
pub fn server_args_with(
    name: &str,
    default_port: u16,
    extra_usage: &str,
    mut extra: impl FnMut(&str, Value<'_>) -> Result<bool, String>,
) -> ServerArgs {
    init_logging();
    match parse(default_port, &mut extra) {
        Ok((mut a, socket)) => {
            a.upgrade_socket = socket.unwrap_or_else(|| default_upgrade_socket(name, a.port));
            a
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            eprintln!(
                "usage: {name} [--port {default_port}] [--cores N] [--backend auto|uring|epoll] \
                 [--batch-wait-us U] [--metrics PORT] [--no-recording] [--upgrade] \
                 [--upgrade-socket PATH] [--tick-ms T]{extra_usage}"
            );
            std::process::exit(2);
        }
    }
}

/// The flags, and `--upgrade-socket` if given.
fn parse(
    default_port: u16,
    extra: &mut dyn FnMut(&str, Value<'_>) -> Result<bool, String>,
) -> Result<(ServerArgs, Option<std::path::PathBuf>), String> {
    let mut args = ServerArgs {
        port: default_port,
        cores: Cores::All,
        backend: Backend::Auto,
        batch_wait: std::time::Duration::ZERO,
        metrics: None,
        recording: true,
        upgrade: false,
        upgrade_socket: std::path::PathBuf::new(),
        tick: None,
    };
    let mut socket = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--cores" => {
                let n: usize = value()?.parse().map_err(|e| format!("--cores: {e}"))?;
                if n == 0 {
                    return Err("--cores must be at least 1".into());
                }
                args.cores = Cores::Count(n);
            }
            "--backend" => {
                let v = value()?;
                args.backend = Backend::parse(&v)
                    .ok_or(format!("--backend takes auto, uring or epoll, not {v:?}"))?;
            }
            "--batch-wait-us" => {
                let us: u64 = value()?
                    .parse()
                    .map_err(|e| format!("--batch-wait-us: {e}"))?;
                args.batch_wait = std::time::Duration::from_micros(us);
            }
            "--metrics" => {
                args.metrics = Some(value()?.parse().map_err(|e| format!("--metrics: {e}"))?)
            }
            "--no-recording" => args.recording = false,
            "--upgrade" => args.upgrade = true,
            "--upgrade-socket" => socket = Some(value()?.into()),
            "--tick-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--tick-ms: {e}"))?;
                args.tick = Some(Duration::from_millis(ms.max(1)));
            }
            "-h" | "--help" => return Err("help".into()),
            other => {
                if !extra(other, &mut value)? {
                    return Err(format!("unknown argument {a:?}"));
                }
            }
        }
    }
    Ok((args, socket))
}
