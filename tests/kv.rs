//! The sharded key-value example (examples/kv): every command through redis-cli,
//! pipelines over keys on both cores answered in order, expiry on the owner's timers,
//! redis-benchmark without errors, the HTTP API beside RESP on the same runtime, and a
//! graceful stop.
//! Bad input is in kv_bad_input.rs.
#[path = "util/kv.rs"]
mod kv;
mod util;

use coreloop::Backend;
use coreloop_macros::on_both_backends;
use kv::{http, key_on, redis_cli, Client};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

#[on_both_backends]
#[test]
fn every_command_through_redis_cli_gets_rediss_reply(backend: Backend) {
    let Some(cli) = util::require_tool("redis-cli") else {
        return;
    };
    let kv = kv::start(backend, 2);
    let a = kv.resp_addr();
    let (k0, k1) = (key_on("k", 0, 2), key_on("k", 1, 2));
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG"),
        (&["PING", "hi"], "\"hi\""),
        (&["ECHO", "hello world"], "\"hello world\""),
        (&["SET", &k0, "v0"], "OK"),
        (&["SET", &k1, "v1"], "OK"),
        (&["GET", &k0], "\"v0\""),
        (&["GET", &k1], "\"v1\""),
        (&["GET", "missing"], "(nil)"),
        (&["SET", &k1, "x", "NX"], "(nil)"),
        (&["SET", "fresh", "x", "XX"], "(nil)"),
        (&["SET", &k1, "v1b", "XX"], "OK"),
        (&["SET", "fresh", "f", "NX"], "OK"),
        (&["EXISTS", &k0, &k1, "missing", &k0], "(integer) 3"),
        (&["MSET", "m1", "a", "m2", "b", "m3", "c"], "OK"),
        (
            &["MGET", "m1", &k1, "missing", "m3"],
            "1) \"a\"\n2) \"v1b\"\n3) (nil)\n4) \"c\"",
        ),
        (&["INCR", "n"], "(integer) 1"),
        (&["INCRBY", "n", "41"], "(integer) 42"),
        (&["DECR", "n"], "(integer) 41"),
        (&["DECRBY", "n", "-9"], "(integer) 50"),
        (
            &["INCR", &k0],
            "(error) ERR value is not an integer or out of range",
        ),
        (&["DEL", "m1", "m2", "missing"], "(integer) 2"),
        (&["DBSIZE"], "(integer) 5"),
        (&["EXPIRE", &k0, "100"], "(integer) 1"),
        (&["TTL", &k1], "(integer) -1"),
        (&["TTL", "missing"], "(integer) -2"),
        (&["EXPIRE", "missing", "5"], "(integer) 0"),
        (&["SET", "e", "v", "EX", "50"], "OK"),
        (&["CONFIG", "GET", "save"], "1) \"save\"\n2) \"\""),
        (
            &["CONFIG", "GET", "appendonly"],
            "1) \"appendonly\"\n2) \"no\"",
        ),
        (&["COMMAND", "DOCS"], "(empty array)"),
        (&["SELECT", "0"], "OK"),
        (
            &["FOO", "a", "b"],
            "(error) ERR unknown command 'FOO', with args beginning with: 'a' 'b'",
        ),
        (
            &["GET"],
            "(error) ERR wrong number of arguments for 'get' command",
        ),
        (
            &["SET", "k", "v", "EX", "0"],
            "(error) ERR invalid expire time in 'set' command",
        ),
        (&["SET", "k", "v", "NX", "XX"], "(error) ERR syntax error"),
        (
            &["INCRBY", "n", "x"],
            "(error) ERR value is not an integer or out of range",
        ),
        (&["FLUSHALL"], "OK"),
        (&["DBSIZE"], "(integer) 0"),
        (&["GET", &k1], "(nil)"),
    ];
    for (args, want) in cases {
        assert_eq!(redis_cli(&cli, a, args), *want, "redis-cli {args:?}");
        if args[0] == "EXPIRE" && args[1] == k0 {
            // Rounded to the nearest second: 99 once half a second has gone (a slow CI).
            let ttl = redis_cli(&cli, a, &["TTL", &k0]);
            assert!(ttl == "(integer) 100" || ttl == "(integer) 99", "{ttl}");
        }
        if args[0] == "SET" && args[1] == "e" {
            let ttl = redis_cli(&cli, a, &["TTL", "e"]);
            assert!(ttl == "(integer) 50" || ttl == "(integer) 49", "{ttl}");
            assert_eq!(redis_cli(&cli, a, &["SET", "e", "v"]), "OK");
            assert_eq!(redis_cli(&cli, a, &["TTL", "e"]), "(integer) -1");
        }
    }
    let info = redis_cli(&cli, a, &["INFO"]);
    assert!(
        info.contains("redis_version:") && info.contains("kv_cores:2"),
        "{info}"
    );
    kv.drain(Duration::from_secs(5)).unwrap();
}

/// A model of what the server should answer, to check a long pipeline against.
#[derive(Default)]
struct Model(HashMap<String, String>);

impl Model {
    fn answer(&mut self, args: &[&str]) -> String {
        let bulk = |v: Option<&String>| match v {
            Some(v) => format!("${}\r\n{v}\r\n", v.len()),
            None => "$-1\r\n".to_string(),
        };
        match args[0] {
            "SET" => {
                self.0.insert(args[1].into(), args[2].into());
                "+OK\r\n".into()
            }
            "GET" => bulk(self.0.get(args[1])),
            "INCR" => {
                let v = self.0.get(args[1]).map_or(0, |v| v.parse::<i64>().unwrap()) + 1;
                self.0.insert(args[1].into(), v.to_string());
                format!(":{v}\r\n")
            }
            "MGET" => {
                let mut s = format!("*{}\r\n", args.len() - 1);
                for k in &args[1..] {
                    s += &bulk(self.0.get(*k));
                }
                s
            }
            "DEL" => {
                let n = args[1..]
                    .iter()
                    .filter(|k| self.0.remove(**k).is_some())
                    .count();
                format!(":{n}\r\n")
            }
            "PING" => "+PONG\r\n".into(),
            other => unreachable!("{other}"),
        }
    }
}

#[on_both_backends]
#[test]
fn pipelined_commands_on_keys_of_both_cores_are_answered_in_request_order(backend: Backend) {
    let kv = kv::start(backend, 2);
    // Keys on each core: whichever core the connection lands on, half are forwarded.
    let keys: Vec<String> = (0..8)
        .map(|i| key_on(&format!("p{i}_"), i % 2, 2))
        .collect();
    let mut model = Model::default();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for i in 0..600 {
        let k = &keys[i % keys.len()];
        let other = &keys[(i * 7 + 3) % keys.len()];
        let c: Vec<String> = match i % 6 {
            0 => vec!["SET".into(), k.clone(), format!("v{i}")],
            1 => vec!["GET".into(), k.clone()],
            2 => vec!["INCR".into(), format!("{k}_n")],
            3 => vec!["MGET".into(), k.clone(), other.clone(), "nope".into()],
            4 => vec!["PING".into()],
            _ => vec!["DEL".into(), other.clone(), format!("{k}_n")],
        };
        cmds.push(c);
    }
    let mut c = Client::connect(kv.resp_addr());
    let mut bytes = Vec::new();
    let mut want = String::new();
    for cmd in &cmds {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        bytes.extend_from_slice(&kv::encode(&args));
        want += &model.answer(&args);
    }
    c.send(&bytes); // all at once: one pipeline
    let mut got = String::new();
    for _ in 0..cmds.len() {
        got += &c.reply();
    }
    assert_eq!(got, want);
    let forwarded: u64 = kv.stats().unwrap().iter().map(|s| s.forwarded).sum();
    assert!(
        forwarded >= 200,
        "commands went to the other core: {forwarded}"
    );
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn keys_expire_on_their_owners_timer_and_ttl_counts_down(backend: Backend) {
    let kv = kv::start(backend, 2);
    let mut c = Client::connect(kv.resp_addr());
    let (a, b) = (key_on("x", 0, 2), key_on("x", 1, 2));
    assert_eq!(c.call(&["SET", &a, "1", "PX", "150"]), "+OK\r\n");
    assert_eq!(c.call(&["SET", &b, "2", "EX", "100"]), "+OK\r\n");
    assert_eq!(c.call(&["PEXPIRE", &b, "200"]), ":1\r\n");
    assert_eq!(c.call(&["SET", "stays", "3"]), "+OK\r\n");
    let pttl: i64 = c.call(&["PTTL", &a])[1..].trim().parse().unwrap();
    assert!((1..=150).contains(&pttl) || pttl == -2, "PTTL {pttl}"); // -2: already gone
                                                                     // 200 ms rounds to 0 s, as in Redis (or it has expired already, on a slow machine).
    let ttl = c.call(&["TTL", &b]);
    assert!(ttl == ":0\r\n" || ttl == ":-2\r\n", "{ttl}");
    std::thread::sleep(Duration::from_millis(500));
    // Gone without being read: DBSIZE counts keys still held, so the timers ran.
    assert_eq!(c.call(&["DBSIZE"]), ":1\r\n");
    let expiring: u64 = kv.stats().unwrap().iter().map(|s| s.expiring).sum();
    assert_eq!(expiring, 0);
    assert_eq!(c.call(&["GET", &a]), "$-1\r\n");
    assert_eq!(c.call(&["TTL", &b]), ":-2\r\n");
    // Overwriting drops the deadline; EXPIRE with a past time deletes.
    assert_eq!(c.call(&["SET", &a, "v", "PX", "100"]), "+OK\r\n");
    assert_eq!(c.call(&["SET", &a, "w"]), "+OK\r\n");
    assert_eq!(c.call(&["EXPIRE", "stays", "-1"]), ":1\r\n");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(c.call(&["GET", &a]), "$1\r\nw\r\n");
    assert_eq!(c.call(&["EXISTS", "stays"]), ":0\r\n");
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn redis_benchmark_runs_every_test_without_errors(backend: Backend) {
    let Some(benchmark) = util::require_tool("redis-benchmark") else {
        return;
    };
    let kv = kv::start(backend, 2);
    let out = Command::new(benchmark)
        .args(["-h", "127.0.0.1", "-p", &kv.resp_addr().port().to_string()])
        .args(["-t", "ping,set,get,incr,mset", "-n", "20000", "-q"])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "MSET (10 keys)",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{test}: ")) && l.contains("requests per second")),
            "{test} did not finish:\n{text}"
        );
    }
    assert!(
        !text.contains("ERR") && !err.contains("ERR"),
        "{text}\n{err}"
    );
    let stats = kv.stats().unwrap();
    let commands: u64 = stats.iter().map(|s| s.commands).sum();
    assert!(commands >= 6 * 20_000, "{commands} commands");
    assert!(stats.iter().map(|s| s.keys).sum::<u64>() > 0);
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn the_http_api_serves_the_same_keys_and_gathers_stats_from_every_core(backend: Backend) {
    let kv = kv::start(backend, 2);
    let h = kv.http_addr();
    let (k0, k1) = (key_on("h", 0, 2), key_on("h", 1, 2));
    for (k, v) in [(&k0, "zero"), (&k1, "one")] {
        assert_eq!(
            http(h, "PUT", &format!("/kv/{k}"), v.as_bytes()),
            (200, b"OK\n".to_vec())
        );
        assert_eq!(
            http(h, "GET", &format!("/kv/{k}"), b""),
            (200, v.as_bytes().to_vec())
        );
    }
    // Percent-decoded keys, and RESP sees what HTTP wrote (and the reverse).
    assert_eq!(http(h, "PUT", "/kv/a%20b", b"spaced").0, 200);
    let mut c = Client::connect(kv.resp_addr());
    assert_eq!(c.call(&["GET", "a b"]), "$6\r\nspaced\r\n");
    assert_eq!(c.call(&["SET", "from-resp", "r"]), "+OK\r\n");
    assert_eq!(http(h, "GET", "/kv/from-resp", b""), (200, b"r".to_vec()));
    assert_eq!(http(h, "GET", "/kv/missing", b"").0, 404);
    assert_eq!(http(h, "DELETE", &format!("/kv/{k1}"), b"").0, 200);
    assert_eq!(http(h, "DELETE", &format!("/kv/{k1}"), b"").0, 404);
    assert_eq!(http(h, "GET", &format!("/kv/{k1}"), b"").0, 404);
    assert_eq!(http(h, "GET", "/kv/bad%zz", b"").0, 400);
    let (status, body) = http(h, "GET", "/stats", b"");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("{\"core\":0,") && body.contains("{\"core\":1,"),
        "{body}"
    );
    assert!(body.contains("\"keys\":3,"), "{body}");
    let forwarded: u64 = kv.stats().unwrap().iter().map(|s| s.forwarded).sum();
    assert!(forwarded > 0, "some HTTP requests went to the key's owner");
    // The runtime's numbers, with the latency of the routes just used.
    let (status, body) = http(h, "GET", "/metrics", b"");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("coreloop_loop_iterations_total "), "{body}");
    assert!(
        body.contains(r#"route="/kv/{*key}",class="2xx",le="#),
        "{body}"
    );
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn a_graceful_stop_closes_idle_connections_at_once_and_cuts_none(backend: Backend) {
    let kv = kv::start(backend, 2);
    let mut idle = Client::connect(kv.resp_addr());
    assert_eq!(idle.call(&["PING"]), "+PONG\r\n");
    let mut busy = Client::connect(kv.resp_addr());
    for i in 0..50 {
        busy.cmd(&["SET", &key_on(&format!("g{i}_"), i % 2, 2), "v"]);
    }
    for _ in 0..50 {
        assert_eq!(busy.reply(), "+OK\r\n");
    }
    let started = std::time::Instant::now();
    let cut = kv.drain(Duration::from_secs(10)).unwrap();
    assert_eq!(cut, 0, "no connection waited for the deadline");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(idle.closed_by_server());
    assert!(busy.closed_by_server());
}

/// Polls `done` until it holds; fails the test after `util::HANG`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + util::HANG;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[on_both_backends]
#[test]
fn an_idle_connection_and_a_flushed_table_give_their_peak_memory_back(backend: Backend) {
    let kv = kv::start(backend, 2);
    let stats =
        |f: fn(&kv::server::CoreReport) -> u64| kv.stats().unwrap().iter().map(f).sum::<u64>();
    let buffers = || stats(|s| s.input_buffers);
    let mut c = Client::connect(kv.resp_addr());
    // A 100 MB SET, sent in two halves: while it arrives, its connection holds it...
    let mut set = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$104857600\r\n".to_vec();
    set.resize(set.len() + (100 << 20), b'v');
    set.extend_from_slice(b"\r\n");
    let half = set.len() / 2;
    c.send(&set[..half]);
    wait_until("the first half is buffered", || buffers() >= 40 << 20);
    c.send(&set[half..]);
    assert_eq!(c.reply(), "+OK\r\n");
    // ...and once the SET has run, the idle connection gives it back (it kept all of it
    // until it closed).
    wait_until("the input buffer is given back", || buffers() <= 256 << 10);
    assert_eq!(c.call(&["EXISTS", "big"]), ":1\r\n");
    assert_eq!(c.call(&["DEL", "big"]), ":1\r\n");
    assert!(buffers() <= 256 << 10, "{} bytes", buffers());

    // 50,000 keys, then FLUSHALL: the tables shrink back, not just empty.
    let tables = || stats(|s| s.table_capacity);
    let empty = tables();
    for batch in 0..50 {
        let mut cmds = Vec::new();
        for i in 0..1000 {
            cmds.extend_from_slice(&kv::encode(&["SET", &format!("k{batch}:{i}"), "v"]));
        }
        c.send(&cmds);
        for _ in 0..1000 {
            assert_eq!(c.reply(), "+OK\r\n");
        }
    }
    assert_eq!(c.call(&["DBSIZE"]), ":50000\r\n");
    assert!(tables() >= 50_000, "{} entries of room", tables());
    assert_eq!(c.call(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(c.call(&["DBSIZE"]), ":0\r\n");
    assert!(tables() <= empty.max(64), "{} entries of room", tables());
    let info = c.call(&["INFO"]);
    assert!(
        info.contains("kv_table_capacity:") && info.contains("kv_input_buffer_bytes:"),
        "{info}"
    );
    kv.drain(Duration::from_secs(5)).unwrap();
}
