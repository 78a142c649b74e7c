//! Networking above the stream: listening sockets (`listen.rs`), accepting on one loop
//! (`acceptor/`, and `incoming.rs` for tasks), a server on every core of a runtime
//! (`server.rs`), connecting (`connect.rs`, continued or awaited) and name lookup
//! (`resolve.rs`, on the blocking pool).
//!
//! Every core binds its own socket to the same address with `SO_REUSEPORT`, so the
//! kernel spreads new connections across cores and no accept lock exists. With port 0,
//! the first core to bind gets a real port and the others bind that one.

mod acceptor;
mod connect;
mod incoming;
mod listen;
mod resolve;
mod server;

pub use acceptor::Acceptor;
pub use connect::Connecting;
pub use incoming::Incoming;
pub use listen::{bind_reuseport, ListenOptions};
pub(crate) use resolve::lookup;
pub use resolve::ToConnectAddr;
pub(crate) use server::{serve_on, server_counts, start_tls, ServerId};
#[doc(hidden)]
pub use server::{AsyncConn, PlainConn};
pub use server::{ConnOutput, ConnReturn, ServerHandle, TcpServer};
