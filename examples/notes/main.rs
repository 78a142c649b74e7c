//! Notes: a small HTTP JSON API over SQLite, a blocking database driver, whose every
//! query runs on the runtime's blocking pool (`call_blocking`), so that a slow query
//! never stalls the loop and the other requests it serves.
//!
//! `cargo run --release --example notes [-- --port 8890 --db PATH --cores N
//! --backend auto|uring|epoll --metrics PORT --blocking-threads 16]`, then
//!
//! ```sh
//! curl -X POST --data '{"text": "buy milk"}' localhost:8890/notes   # 201 {"id":1,"text":"buy milk"}
//! curl localhost:8890/notes/1                                        # 200 {"id":1,"text":"buy milk"}
//! curl 'localhost:8890/notes?limit=10&q=milk'                        # 200 [{"id":1,"text":"buy milk"}]
//! curl -X DELETE localhost:8890/notes/1                              # 204
//! ```
//!
//! Without `--db` the database is a file in a new temporary directory, removed at exit.
//! `--inline` runs the queries on the loops instead (what the pool avoids: every request
//! on a core waits for each query there) and `--seed N` adds N generated notes at start:
//! both are for `benches/pool_compare.sh`. SIGINT/SIGTERM stop it gracefully.

#[path = "../common/mod.rs"]
mod common;
mod server;

use std::path::PathBuf;

fn main() {
    let mut db: Option<PathBuf> = None;
    let mut threads = None;
    let mut inline = false;
    let mut seed = 0;
    let args = common::server_args_with(
        "notes",
        8890,
        " [--db PATH] [--blocking-threads N] [--inline] [--seed N]",
        |flag, value| {
            match flag {
                "--db" => db = Some(PathBuf::from(value()?)),
                "--blocking-threads" => {
                    let n: usize = value()?
                        .parse()
                        .map_err(|e| format!("--blocking-threads: {e}"))?;
                    if n == 0 {
                        return Err("--blocking-threads must be at least 1".into());
                    }
                    threads = Some(n);
                }
                "--inline" => inline = true,
                "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
                _ => return Ok(false),
            }
            Ok(true)
        },
    );
    // A database of its own in a new temporary directory unless one is named.
    let temp = match &db {
        Some(_) => None,
        None => {
            let dir = std::env::temp_dir().join(format!("coreloop-notes-{}", std::process::id()));
            common::exit_on_error(
                "notes",
                "temporary directory",
                std::fs::create_dir_all(&dir),
            );
            Some(dir)
        }
    };
    let path = db.unwrap_or_else(|| temp.as_ref().unwrap().join("notes.sqlite3"));
    let mut cfg = server::Config::new(path);
    cfg.port = args.port;
    cfg.inline = inline;
    cfg.seed = seed;
    if let Some(n) = threads {
        cfg.blocking_threads = n;
    }
    let notes = common::exit_on_error("notes", "cannot start", server::start(args.runtime(), cfg));
    args.serve_metrics("notes", notes.runtime());
    println!(
        "notes: http://{} ({} cores, queries {}), database {}",
        notes.addr(),
        notes.runtime().shards(),
        if inline {
            "inline on the loops"
        } else {
            "on the blocking pool"
        },
        notes.db().path().display()
    );
    let stopped = notes.wait();
    if let Some(dir) = temp {
        let _ = std::fs::remove_dir_all(dir);
    }
    common::exit_on_error("notes", "stopped by an error", stopped);
    println!("notes: stopped");
}
