//! coreloop: Tornado's IOLoop, thread-per-core.
//!
//! Every core runs its own [`IoLoop`] (fd handlers, a timer heap, a callback queue) on
//! io_uring, or epoll where io_uring is missing, and the loops share nothing on the hot
//! path: they talk by sending callbacks through [`LoopHandle`]s. [`Runtime`] starts one
//! pinned loop per core. On top: SO_REUSEPORT listening on every core ([`TcpServer`],
//! [`Acceptor`]), Tornado's buffered [`IoStream`], and an HTTP/1.1 server
//! ([`http::HttpServer`]).
//!
//! The layers, from the bottom: `poller` (epoll and io_uring), `reactor` ([`IoLoop`]),
//! `runtime` ([`Runtime`]), `iostream` ([`IoStream`] and its per-backend transport),
//! `net` (listeners, acceptors, servers), [`http`]. Each uses only those below it;
//! `docs/ARCHITECTURE.md` in the repository explains each and the measurements behind
//! the choices.
//!
//! | Tornado | coreloop |
//! |---|---|
//! | `IOLoop.current()` | [`IoLoop::current`] |
//! | `add_handler(fd, handler, events)` | [`IoLoop::add_handler`] |
//! | `update_handler` / `remove_handler` | [`IoLoop::update_handler`] / [`IoLoop::remove_handler`] |
//! | `add_timeout` / `call_later` / `call_at` | [`IoLoop::add_timeout`] / [`IoLoop::call_later`] / [`IoLoop::call_at`] |
//! | `remove_timeout` | [`IoLoop::remove_timeout`] |
//! | `add_callback` (thread-safe) | [`IoLoop::add_callback`] (same thread), [`LoopHandle::add_callback`] (any thread) |
//! | `start()` / `stop()` | [`IoLoop::start`] / [`IoLoop::stop`], [`LoopHandle::stop`] |
//!
//! ```
//! use coreloop::{Cores, Runtime};
//! use std::time::Duration;
//!
//! // One loop per core; each arms a timer, and the main thread gathers an answer from each.
//! let rt = Runtime::builder()
//!     .cores(Cores::Count(2))
//!     .on_start(|lp, shard| {
//!         lp.call_later(Duration::from_millis(1), move |_| log::info!("shard {shard} ticked"));
//!     })
//!     .build()?;
//! let shards = rt.call_on_all(|lp| (lp.shard_id(), lp.shard_count())).wait().unwrap();
//! assert_eq!(shards, vec![(0, 2), (1, 2)]);
//! rt.shutdown().unwrap();
//! # Ok::<(), coreloop::RuntimeError>(())
//! ```
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("coreloop runs on Linux only (epoll and io_uring)");

mod buffer;
pub mod http;
mod iostream;
pub mod metrics;
mod net;
mod poller;
mod reactor;
mod runtime;
mod task;

/// TLS on streams, with rustls: [`TlsConfig`](tls::TlsConfig) for servers
/// ([`TcpServer::tls`], [`http::HttpServer::tls`]), [`TlsConnector`](tls::TlsConnector)
/// for clients; a TLS stream is an [`IoStream`] like any other.
pub mod tls {
    pub use crate::iostream::{
        TlsConfig, TlsConnector, TlsError, TlsStats, DEFAULT_HANDSHAKE_TIMEOUT,
    };
}

pub use iostream::{
    Flushing, IoStream, Reading, StreamError, Writing, DEFAULT_HIGH_WATER, DEFAULT_LINGER,
    DEFAULT_MAX_BUFFER, DEFAULT_MAX_WRITE_BUFFER,
};
pub use net::{
    bind_reuseport, Acceptor, ConnOutput, ConnReturn, Connecting, Incoming, ListenOptions,
    ServerHandle, TcpServer, ToConnectAddr,
};
#[doc(hidden)]
pub use net::{AsyncConn, PlainConn};
pub use poller::{Backend, Interest, Ready};
pub use reactor::{
    Call, CallError, CallFuture, IoLoop, LoopClosed, LoopHandle, LoopStats, RemoteCallback,
    TimeoutId, WakeVia, DEFAULT_BUFFER_BUDGET,
};
pub use runtime::{
    shard_of, BlockingConfig, CallTarget, Cores, CoresChosen, Runtime, RuntimeBuilder,
    RuntimeError, SetupResult, ShardError, DEFAULT_BLOCKING_THREADS, DEFAULT_DRAIN_DEADLINE,
};
pub use task::{
    block_on, interval, sleep, sleep_until, spawn, timeout, Elapsed, Interval, JoinError,
    JoinHandle, Sleep,
};

/// The README's Rust examples, compiled and run as doc tests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
