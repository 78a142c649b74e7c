//! A sharded in-memory key-value server that speaks Redis's protocol (RESP2), with an
//! HTTP API beside it on the same cores: the Seastar / ScyllaDB / Dragonfly pattern on
//! coreloop. `GET /metrics` on the HTTP port (or on `--metrics PORT`) serves the
//! runtime's numbers in Prometheus's format.
//!
//! `cargo run --release --example kv [-- --port 6380 --http-port 8380 --cores N
//! --backend auto|uring|epoll --batch-wait-us U --max-bulk BYTES --upgrade]`, then
//! `redis-cli -p 6380`, `redis-benchmark -p 6380 -t set,get`, or
//! `curl -X PUT --data v localhost:8380/kv/k; curl localhost:8380/kv/k; curl localhost:8380/stats`.
//!
//! Commands: PING, ECHO, GET, SET (EX/PX/NX/XX), DEL, EXISTS, INCR/INCRBY/DECR/DECRBY,
//! MGET, MSET, EXPIRE/PEXPIRE, TTL/PTTL, DBSIZE, FLUSHALL, SELECT 0, QUIT, and the
//! CONFIG GET / COMMAND / INFO replies clients ask for at start-up; multibulk and inline
//! requests. Errors are Redis's, word for word.
//!
//! # Design
//!
//! - **Ownership.** One runtime, one pinned loop per core. Each core owns the keys
//!   `coreloop::shard_of(key, cores)` maps to it, in its own hash map (no locks: only
//!   its loop touches it), built in the runtime's setup (`on_start` + `set_local`).
//! - **Forwarding.** A connection lives on the core that accepted it. A command on a key
//!   this core owns runs at once; one on a key another core owns goes there with
//!   `call_on` and its reply bytes come back (the commands of one read for one core
//!   go together, in one call). MGET, MSET, DEL and EXISTS with keys on
//!   several cores scatter to the owners and gather (so, as in Redis Cluster, MSET is
//!   atomic per core, not across cores); DBSIZE, FLUSHALL and INFO ask every core. A
//!   call that gives no value (the owner panicked or closed) is answered with an error,
//!   never left hanging.
//! - **Order.** Replies to pipelined commands leave in request order: each command takes
//!   a reply slot; slots fill in any order and are flushed in order. Commands on one key
//!   run in request order (the owner receives them through one FIFO queue).
//! - **Speed.** Commands are parsed in place from the read buffer and replies written
//!   straight into the stream's write buffer; the local path allocates nothing per
//!   command (a SET that overwrites a value of the same length reuses it).
//! - **Expiry** runs on the owner's timer heap (one timer per key with a deadline,
//!   cancelled when the key is overwritten, deleted or flushed), plus lazy expiry on
//!   access, as Redis.
//! - **Limits.** A bulk longer than `--max-bulk` (512 MB by default, like Redis) is a
//!   protocol error, and a long bulk is never allocated up front: the buffer grows as
//!   its bytes arrive. Malformed RESP gets Redis's `-ERR Protocol error: ...` and the
//!   connection closes. Reading stops while too many replies wait for other cores or
//!   the write buffer is over its high-water mark (a client that floods and never
//!   reads), and resumes when they drain: memory stays bounded.
//! - **HTTP** on `--http-port`: `GET/PUT/DELETE /kv/{key}` on the same keys (forwarded
//!   the same way) and `GET /stats`, every core's keys and counters gathered with
//!   `call_on_all`.
//! - SIGINT/SIGTERM stop it gracefully: no new connections, replies in flight go out,
//!   then it exits (5 s at most).
//! - `kv --upgrade` replaces a running kv without dropping a connection: it takes over
//!   both ports' listening sockets (over `--upgrade-socket`, by default
//!   `$XDG_RUNTIME_DIR/coreloop-kv-PORT.sock`), serves, and the old one drains and exits.
//!   The keys are not carried over (each process keeps them in memory).
//!
//! `--shard-override local|remote` is a benchmark aid, not a mode to run: every key is
//! owned by the core the command arrived on (`local`) or by the next core (`remote`),
//! to measure what forwarding costs; keys written through one core are then not found
//! through another.

#[path = "../common/mod.rs"]
mod common;
mod server;

use server::{Config, ShardOverride};

fn main() {
    let mut cfg = Config::default();
    let args = common::server_args_with(
        "kv",
        cfg.port,
        " [--http-port 8380] [--max-bulk BYTES] [--shard-override local|remote]",
        |flag, value| {
            match flag {
                "--http-port" => {
                    cfg.http_port = value()?.parse().map_err(|e| format!("--http-port: {e}"))?
                }
                "--max-bulk" => {
                    cfg.max_bulk = value()?.parse().map_err(|e| format!("--max-bulk: {e}"))?
                }
                "--shard-override" => {
                    cfg.shard_override = match value()?.as_str() {
                        "local" => ShardOverride::Local,
                        "remote" => ShardOverride::Remote,
                        "none" => ShardOverride::None,
                        v => {
                            return Err(format!(
                                "--shard-override takes local or remote, not {v:?}"
                            ))
                        }
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        },
    );
    cfg.port = args.port;
    // The runtime stops gracefully on SIGINT/SIGTERM: both servers drain (RESP
    // connections close once the replies to what they sent are out), then the loops stop.
    let kv = common::exit_on_error("kv", "cannot start", server::start(args.runtime(), cfg));
    args.serve_metrics("kv", kv.runtime());
    common::ready("kv", kv.runtime());
    let backend = kv
        .runtime()
        .call_on_all(|lp| lp.backend_detail())
        .wait()
        .unwrap_or_default();
    println!(
        "kv: RESP on {}, HTTP on http://{} ({} cores: {})",
        kv.resp_addr(),
        kv.http_addr(),
        backend.len(),
        backend.first().copied().unwrap_or("?")
    );
    common::exit_on_error("kv", "stopped by an error", kv.wait());
    println!("kv: stopped");
}
