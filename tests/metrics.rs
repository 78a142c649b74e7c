//! Metrics: requests counted and timed, stalls reported with what ran, timer lateness
//! seen, per-core histograms adding up to the merged ones, and a Prometheus exposition
//! that parses (checked by promtool when it is installed, as CI installs it).
mod util;
use util::Listen;

use coreloop::http::{Application, HttpConfig, HttpServer, Route};
use coreloop::metrics::Snapshot;
use coreloop::{Backend, Cores, IoLoop, Runtime};
use coreloop_macros::on_both_backends;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use util::new_loop;

fn server(backend: Backend) -> util::Served {
    named_server(backend, "coreloop")
}

/// A server whose loop threads are `{name}-N` (to tell its logs from other tests').
fn named_server(backend: Backend, name: &str) -> util::Served {
    let app = Application::new()
        .route("/", Route::new().get(|_, _, mut r| r.write("Hello, world")))
        .route(
            "/block/{ms}",
            Route::new().get(|_, req, mut r| {
                let ms: u64 = req.param("ms").unwrap().parse().unwrap();
                std::thread::sleep(Duration::from_millis(ms)); // blocks the loop: a stall
                r.write("blocked");
            }),
        )
        .route("/metrics", coreloop::metrics::route());
    HttpServer::new(app)
        .config(HttpConfig::default())
        .listen(
            Runtime::builder()
                .backend(backend)
                .cores(Cores::Count(2))
                .thread_name(name),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

/// Sends `n` requests on one keep-alive connection, `depth` at a time (pipelined), and
/// reads every answer.
fn requests(s: &util::Served, path: &str, n: usize, depth: usize) {
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    let one = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut sent = 0;
    let mut buf = Vec::new();
    while sent < n {
        let k = depth.min(n - sent);
        c.write_all(one.repeat(k).as_bytes()).unwrap();
        sent += k;
        // Read until this batch's answers are all in.
        let want = sent;
        while String::from_utf8_lossy(&buf)
            .matches("HTTP/1.1 200 OK")
            .count()
            < want
        {
            let mut chunk = [0u8; 4096];
            let got = c.read(&mut chunk).unwrap();
            assert!(got > 0, "closed early");
            buf.extend_from_slice(&chunk[..got]);
        }
    }
}

fn get(s: &util::Served, path: &str) -> String {
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

fn snapshot(s: &util::Served) -> Snapshot {
    s.runtime().stats().wait().unwrap()
}

#[on_both_backends]
#[test]
fn every_request_is_counted_once_and_timed_once(backend: Backend) {
    let s = server(backend);
    requests(&s, "/", 40, 1);
    requests(&s, "/", 64, 16);
    let name = s.local_addr().to_string();
    let h = snapshot(&s)
        .http_total(&name)
        .expect("the server's numbers");
    assert_eq!(h.requests, 104);
    assert_eq!(h.responses, [0, 104, 0, 0, 0]);
    assert_eq!(h.latency_total().len(), 104);
    let route = h
        .latency
        .iter()
        .find(|r| r.route == "/" && r.class == 2)
        .unwrap();
    assert_eq!(route.ns.len(), 104);
    let head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".len() as u64;
    assert_eq!(h.bytes_in, 104 * head);
    assert!(h.bytes_out >= 104 * 100, "{} bytes out", h.bytes_out);
    assert_eq!(h.accepted, 2);
    // The kernel interface per request: on io_uring one SQE per send at most (receives
    // are multishot; 40 keep-alive answers and 4 pipelined batches), none on epoll. A
    // kernel that cannot end a multishot recv at a byte limit (before Linux 6.17) gets
    // a recv per read instead, one more SQE per request at most.
    let sqes = snapshot(&s).total().sqes;
    let detail = s
        .runtime()
        .call_on_all(|lp| lp.backend_detail())
        .wait()
        .unwrap()[0];
    let recvs = if detail.contains("one buffer at a time") {
        44
    } else {
        0
    };
    match backend {
        Backend::Uring => assert!((44..=44 + 40 + recvs).contains(&sqes), "{sqes} SQEs"),
        _ => assert_eq!(sqes, 0),
    }
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn pipelined_responses_of_mixed_routes_and_statuses_are_each_timed_where_they_belong(
    backend: Backend,
) {
    // One read, eight requests: runs of equal (route, status) are recorded together, and
    // a change of route alone, or of status alone, starts a new run (`/block/x` panics
    // in its handler: a 500 on the same route as the 200 before it).
    let s = server(backend);
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
    let paths = [
        "/", "/", "/metrics", "/", "/nope", "/nope", "/block/0", "/block/x",
    ];
    let batch: String = paths.iter().map(|p| req(p)).collect();
    c.write_all(batch.as_bytes()).unwrap();
    let mut buf = Vec::new();
    while String::from_utf8_lossy(&buf).matches("HTTP/1.1 ").count() < paths.len() {
        let mut chunk = [0u8; 4096];
        let got = c.read(&mut chunk).unwrap();
        assert!(got > 0, "closed early");
        buf.extend_from_slice(&chunk[..got]);
    }
    let h = snapshot(&s)
        .http_total(&s.local_addr().to_string())
        .expect("the server's numbers");
    assert_eq!(h.responses, [0, 5, 0, 2, 1]);
    let count = |route: &str, class: u8| {
        h.latency
            .iter()
            .filter(|r| r.route == route && r.class == class)
            .map(|r| r.ns.len())
            .sum::<u64>()
    };
    assert_eq!(
        (count("/", 2), count("/metrics", 2), count("-", 4)),
        (3, 1, 2)
    );
    assert_eq!((count("/block/{ms}", 2), count("/block/{ms}", 5)), (1, 1));
    assert_eq!(h.latency_total().len(), 8);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_request_is_timed_from_its_head_to_its_answer_handed_to_the_kernel(backend: Backend) {
    // The end is stamped once the answer's send reaches the kernel (the step's end on
    // epoll, the next wait on io_uring): after a 30 ms handler, never before it.
    let s = server(backend);
    assert!(get(&s, "/block/30").ends_with("blocked"));
    let h = snapshot(&s)
        .http_total(&s.local_addr().to_string())
        .expect("the server's numbers");
    let r = h
        .latency
        .iter()
        .find(|r| r.route == "/block/{ms}" && r.class == 2)
        .expect("the route's histogram");
    assert_eq!(r.ns.len(), 1);
    let ns = r.ns.max();
    assert!((30_000_000..2_000_000_000).contains(&ns), "{ns} ns");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_handler_that_blocks_its_loop_is_reported_as_a_stall_naming_its_route(backend: Backend) {
    util::capture_logs();
    let threads = format!("stall-{backend:?}");
    let s = named_server(backend, &threads);
    let before = snapshot(&s).total().stalls;
    assert!(get(&s, "/block/200").ends_with("blocked"));
    let snap = snapshot(&s);
    let total = snap.total();
    assert_eq!(total.stalls, before + 1);
    assert!(
        total.stall_ns.max() >= 190_000_000,
        "{:?}",
        total.stall_ns.max()
    );
    let logs = util::logs_of_threads(&format!("{threads}-"));
    let stall: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("stall") && l.contains("/block/{ms}"))
        .collect();
    assert_eq!(stall.len(), 1, "one warning naming the route: {logs:?}");
    assert!(stall[0].contains("WARN"), "{stall:?}");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_timer_due_while_the_loop_was_blocked_shows_its_lateness(backend: Backend) {
    let lp = new_loop(backend);
    lp.call_later(Duration::from_millis(10), |lp| lp.stop());
    lp.add_callback(|_| std::thread::sleep(Duration::from_millis(100)));
    util::run(&lp);
    let s = lp.loop_stats();
    assert_eq!(s.timers, 1);
    let late = s.timer_lag_ns.max();
    assert!(late >= 80_000_000, "the timer was {late} ns late");
    assert_eq!(s.stalls, 1, "the blocking callback is a stall too");
}

#[on_both_backends]
#[test]
fn the_merged_histograms_are_the_per_core_ones_added(backend: Backend) {
    let s = server(backend);
    for _ in 0..6 {
        requests(&s, "/", 10, 2); // new connections: both cores get some
    }
    let snap = snapshot(&s);
    let total = snap.total();
    let per_core: u64 = snap
        .cores
        .iter()
        .map(|c| c.reactor.iteration_ns.len())
        .sum();
    assert_eq!(total.iteration_ns.len(), per_core);
    for bound in [1_000u64, 10_000, 100_000, 1_000_000] {
        let sum: u64 = snap
            .cores
            .iter()
            .map(|c| c.reactor.iteration_ns.count_between(0, bound))
            .sum();
        assert_eq!(
            total.iteration_ns.count_between(0, bound),
            sum,
            "<= {bound} ns"
        );
    }
    assert_eq!(
        total.iterations,
        snap.cores.iter().map(|c| c.reactor.iterations).sum::<u64>()
    );
    let name = s.local_addr().to_string();
    let merged = snap.http_total(&name).unwrap();
    let cores: Vec<_> = snap
        .cores
        .iter()
        .flat_map(|c| c.http.iter().filter(|h| h.server == name))
        .collect();
    assert_eq!(
        merged.requests,
        cores.iter().map(|h| h.requests).sum::<u64>()
    );
    assert_eq!(
        merged.latency_total().len(),
        cores.iter().map(|h| h.latency_total().len()).sum::<u64>()
    );
    assert_eq!(merged.requests, 60);
    s.shutdown().unwrap();
}

/// Checks the exposition's grammar: every sample after its family's TYPE, histogram
/// buckets cumulative and ending in `+Inf` equal to `_count`.
fn check_exposition(text: &str) {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut buckets: HashMap<String, (f64, u64)> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "{name} twice"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no TYPE before it");
        if name.ends_with("_bucket") {
            let le = series
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let key = series
                .replace(&format!(",le=\"{le}\""), "")
                .replace(&format!("le=\"{le}\""), "")
                .replace("{}", "");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let (last_bound, last_count) = buckets.get(&key).copied().unwrap_or((0.0, 0));
            assert!(bound > last_bound, "{line}");
            assert!(value as u64 >= last_count, "not cumulative: {line}");
            buckets.insert(key, (bound, value as u64));
        }
        if name.ends_with("_count") && family != name {
            let key = series.replacen("_count", "_bucket", 1);
            let (b, c) = buckets[&key];
            assert!(
                b.is_infinite() && c == value as u64,
                "{line}: +Inf bucket {c}"
            );
        }
    }
}

#[on_both_backends]
#[test]
fn the_exposition_parses_aggregated_and_per_core(backend: Backend) {
    let promtool = util::require_tool("promtool");
    let s = server(backend);
    requests(&s, "/", 20, 4);
    let _ = get(&s, "/nope");
    assert_eq!(s.runtime().call_blocking(|| 1).wait(), Ok(1));
    for path in ["/metrics", "/metrics?per_core=1"] {
        let r = get(&s, path);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1;
        check_exposition(body);
        assert!(body.contains("coreloop_http_refusals_total{"), "{body}");
        // The runtime's choice of cores, once (not per core).
        assert_eq!(
            body.matches("\ncoreloop_cores_chosen{").count(),
            1,
            "{body}"
        );
        assert!(
            body.contains("\ncoreloop_cores_chosen{reason=\"count\"} 2\n"),
            "{body}"
        );
        // The loop's buffer budget: the bytes buffered (a gauge) and the holds.
        assert!(
            body.contains("# TYPE coreloop_loop_buffered_bytes gauge\n"),
            "{body}"
        );
        assert!(body.contains("coreloop_loop_budget_holds_total"), "{body}");
        assert!(
            body.contains(r#"route="/",class="2xx",le="+Inf"} 20"#) || path.contains("per_core"),
            "{body}"
        );
        if path.contains("per_core") {
            assert!(
                body.contains(r#"coreloop_loop_iterations_total{shard="1"}"#),
                "{body}"
            );
        }
        // The blocking pool: one per runtime, never by shard.
        for line in [
            "coreloop_blocking_jobs_total{outcome=\"done\"} 1\n",
            "coreloop_blocking_jobs_total{outcome=\"rejected\"} 0\n",
            "coreloop_blocking_run_seconds_count 1\n",
            "coreloop_blocking_wait_seconds_bucket{le=\"+Inf\"} 1\n",
            "coreloop_blocking_max_threads 64\n",
            "coreloop_blocking_queue_depth 0\n",
        ] {
            assert!(body.contains(line), "{line}: {body}");
        }
        assert!(body.contains("\ncoreloop_blocking_threads 1\n"), "{body}");
        if let Some(promtool) = &promtool {
            promtool_check(promtool, body);
        }
    }
    s.shutdown().unwrap();
}

/// `promtool check metrics` on `text`.
fn promtool_check(promtool: &std::path::Path, text: &str) {
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{said}"
    );
}

#[on_both_backends]
#[test]
fn with_stall_detection_off_nothing_is_a_stall_and_time_still_counts(backend: Backend) {
    // Off, the loop skips the clock read after each job: timers must still fire, late
    // by the blocking they waited behind, and the busy time must still be counted.
    let lp = new_loop(backend);
    lp.set_stall_threshold(Duration::MAX);
    lp.call_later(Duration::from_millis(10), |lp| lp.stop());
    lp.add_callback(|_| std::thread::sleep(Duration::from_millis(100)));
    util::run(&lp);
    let s = lp.loop_stats();
    assert_eq!((s.callbacks, s.timers, s.stalls), (1, 1, 0));
    let late = s.timer_lag_ns.max();
    assert!(late >= 80_000_000, "the timer was {late} ns late");
    assert!(s.busy >= Duration::from_millis(95), "busy {:?}", s.busy);
}

#[on_both_backends]
#[test]
fn changing_the_stall_threshold_while_running_reports_only_real_stalls(backend: Backend) {
    // A threshold of 50 ms times jobs by the coarse clock, one of 5 ms by the precise
    // clock, and MAX not at all: switching between them between jobs must not make the
    // next job look as long as the ones before it.
    let sleep = |ms| move |_: &IoLoop| std::thread::sleep(Duration::from_millis(ms));
    let lp = new_loop(backend);
    lp.set_stall_threshold(Duration::MAX);
    lp.add_callback(sleep(60)); // not timed
    lp.add_callback(|lp| lp.set_stall_threshold(Duration::from_millis(5)));
    lp.add_callback(|_| {});
    lp.add_callback(sleep(60)); // a stall (precise)
    lp.add_callback(|lp| lp.set_stall_threshold(Duration::from_millis(50)));
    lp.add_callback(|_| {});
    lp.add_callback(sleep(80)); // a stall (coarse)
    lp.add_callback(|lp| lp.set_stall_threshold(Duration::MAX));
    lp.add_callback(|lp| lp.stop());
    util::run(&lp);
    let s = lp.loop_stats();
    assert_eq!(s.stalls, 2);
    assert!(s.stall_ns.min() >= 55_000_000, "{}", s.stall_ns.min());
}

#[on_both_backends]
#[test]
fn with_recording_off_counters_count_and_histograms_stay_empty(backend: Backend) {
    let lp = new_loop(backend);
    lp.set_recording(false);
    lp.call_later(Duration::from_millis(1), |lp| lp.stop());
    lp.add_callback(|_| {});
    util::run(&lp);
    let s = lp.loop_stats();
    assert_eq!((s.callbacks, s.timers), (1, 1));
    assert!(s.iterations >= 1);
    assert_eq!(s.iteration_ns.len() + s.timer_lag_ns.len(), 0);
    assert!(!lp.recording());
    assert!(IoLoop::new().unwrap().recording(), "on by default");
}

#[on_both_backends]
#[test]
fn the_watchdog_reports_a_stuck_loop_while_it_is_still_stuck(backend: Backend) {
    util::capture_logs();
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .thread_name(format!("dog-{backend:?}"))
        .watchdog(Duration::from_millis(100))
        .build()
        .unwrap();
    // The job itself checks, before it ends, that the watchdog has spoken.
    let dog = format!("dog-{backend:?}-watchdog");
    let d = dog.clone();
    let seen_while_stuck = rt
        .call_on(0, move |_| {
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
                let logs = util::logs_of_threads(&d);
                if logs
                    .iter()
                    .any(|l| l.contains("shard 0 has been busy in one job"))
                {
                    return true;
                }
            }
            false
        })
        .wait()
        .unwrap();
    assert!(seen_while_stuck, "no watchdog report within 5 s");
    // Once: the stuck job was reported one time.
    let reports = util::logs_of_threads(&dog).len();
    assert_eq!(reports, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(util::logs_of_threads(&dog).len(), reports);
    rt.shutdown().unwrap();
}
