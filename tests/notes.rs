//! The notes example (an HTTP JSON API over SQLite, every query on the blocking pool):
//! the API end to end through curl, bad input answered with JSON errors and never a
//! panic, a database error answered 500 with its cause logged, and wrk against it with
//! no error.
#[path = "util/notes.rs"]
mod notes;
mod util;

use coreloop::Backend;
use coreloop_macros::on_both_backends;
use notes::{curl, http};
use serde_json::{json, Value};
use std::process::Command;

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[on_both_backends]
#[test]
fn the_api_end_to_end_through_curl(backend: Backend) {
    if util::require_tool("curl").is_none() {
        return;
    }
    let n = notes::start(backend, &format!("notes-e2e-{backend:?}"));
    let base = format!("http://{}", n.addr());
    let notes_url = format!("{base}/notes");
    let text = "buy milk, \"2%\" — and ünïcode";
    let body = json!({ "text": text }).to_string();
    let (status, created) = curl(&["-X", "POST", "--data", &body, &notes_url]);
    assert_eq!(status, 201, "{created}");
    let created = parse(&created);
    let id = created["id"].as_i64().expect("an id");
    assert_eq!(created, json!({ "id": id, "text": text }));
    let (_, second) = curl(&[
        "-X",
        "POST",
        "--data",
        r#"{"text": "call mum"}"#,
        &notes_url,
    ]);
    let second_id = parse(&second)["id"].as_i64().unwrap();
    assert!(second_id > id);

    let one = format!("{notes_url}/{id}");
    let (status, got) = curl(&[&one]);
    assert_eq!((status, parse(&got)), (200, created.clone()));
    let (status, all) = curl(&[&notes_url]);
    assert_eq!(status, 200);
    assert_eq!(
        parse(&all),
        json!([created, { "id": second_id, "text": "call mum" }])
    );
    let (status, found) = curl(&[&format!("{notes_url}?q=mum&limit=10")]);
    assert_eq!(
        (status, parse(&found)),
        (200, json!([{ "id": second_id, "text": "call mum" }]))
    );
    let (status, after) = curl(&[&format!("{notes_url}?after={id}")]);
    assert_eq!(
        parse(&after).as_array().map(Vec::len),
        Some(1),
        "{status} {after}"
    );

    let (status, gone) = curl(&["-X", "DELETE", &one]);
    assert_eq!((status, gone.as_str()), (204, ""));
    let (status, missing) = curl(&[&one]);
    assert_eq!(status, 404);
    assert_eq!(parse(&missing), json!({ "error": format!("no note {id}") }));
    let (status, _) = curl(&["-X", "DELETE", &one]);
    assert_eq!(status, 404);

    // Every query ran on the pool, and the loop never stalled.
    let snap = n.runtime().stats().wait().unwrap();
    assert!(snap.blocking.done >= 9, "{:?}", snap.blocking);
    assert_eq!(snap.total().stalls, 0);
    n.stop();
}

#[on_both_backends]
#[test]
fn bad_input_gets_a_json_error_never_a_panic(backend: Backend) {
    util::capture_logs();
    let name = format!("notes-bad-{backend:?}");
    let n = notes::start(backend, &name);
    let a = n.addr();
    let deep = "[".repeat(10_000);
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", "/notes".into(), b"{\"text\": ".to_vec(), 400),
        ("POST", "/notes".into(), b"not json".to_vec(), 400),
        ("POST", "/notes".into(), b"".to_vec(), 400),
        ("POST", "/notes".into(), b"[1, 2]".to_vec(), 400),
        ("POST", "/notes".into(), b"{\"txt\": \"x\"}".to_vec(), 400),
        ("POST", "/notes".into(), b"{\"text\": 5}".to_vec(), 400),
        ("POST", "/notes".into(), b"{\"text\": \"\"}".to_vec(), 400),
        (
            "POST",
            "/notes".into(),
            b"{\"text\": \"\xff\xfe\"}".to_vec(),
            400,
        ),
        ("POST", "/notes".into(), deep.into_bytes(), 400),
        (
            "POST",
            "/notes".into(),
            format!("{{\"text\": \"{}\"}}", "x".repeat(100_000)).into_bytes(),
            413,
        ),
        ("GET", "/notes/abc".into(), vec![], 400),
        ("GET", "/notes/0".into(), vec![], 400),
        ("GET", "/notes/-3".into(), vec![], 400),
        ("GET", "/notes/99999999999999999999".into(), vec![], 400),
        ("GET", "/notes/424242".into(), vec![], 404),
        ("DELETE", "/notes/424242".into(), vec![], 404),
        ("GET", "/notes?limit=0".into(), vec![], 400),
        ("GET", "/notes?limit=5000".into(), vec![], 400),
        ("GET", "/notes?limit=x".into(), vec![], 400),
        ("GET", "/notes?after=-1".into(), vec![], 400),
        ("GET", "/notes?q=%ff".into(), vec![], 400),
        ("GET", format!("/notes?q={}", "a".repeat(300)), vec![], 400),
    ];
    for (method, path, body, want) in &cases {
        let (status, ctype, got) = http(a, method, path, body);
        assert_eq!(status, *want, "{method} {path}: {got}");
        assert_eq!(ctype, "application/json", "{method} {path}");
        let e = parse(&got);
        assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()), "{got}");
    }
    // Refused by the server before any handler runs (its own answers, not JSON): a body
    // past its limit, a target that is not RFC 3986.
    let huge = vec![b'x'; notes::server::MAX_BODY + 1];
    let (status, _, _) = http(a, "POST", "/notes", &huge);
    assert_eq!(status, 413);
    let (status, _, _) = http(a, "GET", "/notes?q=%zz", b"");
    assert_eq!(status, 400);
    // Nothing was stored, nothing panicked, and the server still answers.
    let (status, _, all) = http(a, "GET", "/notes", b"");
    assert_eq!((status, parse(&all)), (200, json!([])));
    let panics: Vec<_> = util::logs_of_threads(&name)
        .into_iter()
        .filter(|l| l.contains("panic"))
        .collect();
    assert!(panics.is_empty(), "{panics:?}");
    n.stop();
}

#[on_both_backends]
#[test]
fn a_database_error_is_a_500_with_the_cause_logged(backend: Backend) {
    util::capture_logs();
    let name = format!("notes-dberr-{backend:?}");
    let n = notes::start(backend, &name);
    let (status, _, _) = http(n.addr(), "POST", "/notes", br#"{"text": "kept"}"#);
    assert_eq!(status, 201);
    // The table goes away behind the server's back.
    let c = rusqlite::Connection::open(n.db_path()).unwrap();
    c.execute_batch("DROP TABLE notes").unwrap();
    for (method, path, body) in [
        ("GET", "/notes/1", &b""[..]),
        ("GET", "/notes", b""),
        ("POST", "/notes", br#"{"text": "lost"}"#),
        ("DELETE", "/notes/1", b""),
    ] {
        let (status, ctype, got) = http(n.addr(), method, path, body);
        assert_eq!(status, 500, "{method} {path}: {got}");
        assert_eq!(ctype, "application/json");
        assert_eq!(parse(&got), json!({ "error": "database error" }));
    }
    let logged: Vec<_> = util::logs_of_threads(&name)
        .into_iter()
        .filter(|l| l.contains("ERROR") && l.contains("no such table: notes"))
        .collect();
    assert_eq!(logged.len(), 4, "{logged:?}");
    n.stop();
}

/// wrk's summary: requests, and any error line.
fn wrk(args: &[&str]) -> (u64, Vec<String>, String) {
    let out = Command::new("wrk").args(args).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk {args:?}: {out:?}");
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count: {text}"));
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(str::to_string)
        .collect();
    (requests, errors, text)
}

#[on_both_backends]
#[test]
fn wrk_against_the_api_sees_no_error(backend: Backend) {
    if util::require_tool("wrk").is_none() {
        return;
    }
    let n = notes::start(backend, &format!("notes-wrk-{backend:?}"));
    let base = format!("http://{}", n.addr());
    let (status, _, _) = http(n.addr(), "POST", "/notes", br#"{"text": "first"}"#);
    assert_eq!(status, 201);
    let script = n.dir.join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"text\": \"from wrk\"}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    let runs: [(&str, Vec<&str>); 2] = [("writes", vec!["-s", script]), ("reads", vec![])];
    let mut written = 0;
    for (what, extra) in runs {
        let url = if what == "reads" {
            format!("{base}/notes/1")
        } else {
            format!("{base}/notes")
        };
        let mut args = vec!["-t1", "-c32", "-d2s", "--timeout", "10s"];
        args.extend(extra);
        args.push(&url);
        let (requests, errors, text) = wrk(&args);
        assert!(requests > 0, "{what}: {text}");
        assert!(errors.is_empty(), "{what}: {errors:?}\n{text}");
        if what == "writes" {
            written = requests;
        }
    }
    // Every write that wrk counted is stored (wrk may have had a few in flight at its end).
    let stored = n
        .runtime()
        .call_blocking({
            let path = n.db_path();
            move || {
                rusqlite::Connection::open(path).and_then(|c| {
                    c.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, u64>(0))
                })
            }
        })
        .wait()
        .unwrap()
        .unwrap();
    assert!(
        stored > written,
        "{stored} stored, {written} written by wrk"
    );
    n.stop();
}
