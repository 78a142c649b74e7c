//! The blocking pool (`call_blocking`): a blocking call in a handler leaves the other
//! requests on its core answering; a full pool answers `Full` at once and recovers; a
//! panic comes back as an error; stopping answers queued jobs `Closed` and gives
//! running ones the drain deadline; pool threads keep off the loops' cores.
mod util;
use util::Listen;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::metrics::BlockingStats;
use coreloop::{Backend, BlockingConfig, CallError, Cores, Runtime};
use coreloop_macros::on_both_backends;
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

fn runtime(backend: Backend, cfg: BlockingConfig) -> Runtime {
    Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .blocking(cfg)
        .build()
        .unwrap()
}

/// Waits (bounded) until the pool's numbers satisfy `cond`.
fn until(rt: &Runtime, what: &str, cond: impl Fn(&BlockingStats) -> bool) {
    let t0 = Instant::now();
    loop {
        let s = rt.stats().wait().unwrap().blocking;
        if cond(&s) {
            return;
        }
        assert!(t0.elapsed() < util::HANG, "never {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn busy(s: &BlockingStats) -> usize {
    s.threads - s.idle
}

fn send(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    c
}

fn answer(mut c: TcpStream) -> String {
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[on_both_backends]
#[test]
fn a_blocking_call_in_a_handler_leaves_the_other_routes_of_its_core_answering(backend: Backend) {
    // One core: four handlers (async and callback) each make a blocking call of a
    // second; meanwhile a fast route on the same core answers, and nothing stalls.
    let slow = |_| std::thread::sleep(Duration::from_millis(1000));
    let app = Application::new()
        .route("/fast", Route::new().get(|_, _, mut r| r.write("fast")))
        .route(
            "/slow",
            Route::new().get(move |lp, _, mut resp| async move {
                lp.call_blocking(move || slow(())).await?;
                resp.write("slept");
                Ok(resp)
            }),
        )
        .route(
            "/slow_cb",
            Route::new().get(move |lp, _, mut resp| {
                lp.call_blocking(move || slow(())).then(move |_, r| {
                    match r {
                        Ok(()) => resp.write("slept"),
                        Err(e) => resp.set_status(if e == CallError::Full { 503 } else { 500 }),
                    }
                    resp.finish();
                });
            }),
        );
    let s = HttpServer::new(app)
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
    let rt = s.runtime();
    let before = rt.stats().wait().unwrap().total().stalls;
    let slow_ones: Vec<TcpStream> = ["/slow", "/slow_cb", "/slow", "/slow_cb"]
        .iter()
        .map(|p| send(s.local_addr(), p))
        .collect();
    until(rt, "four blocking calls running", |p| busy(p) == 4);
    let t0 = Instant::now();
    let fast = answer(send(s.local_addr(), "/fast"));
    let took = t0.elapsed();
    assert!(
        fast.starts_with("HTTP/1.1 200 OK") && fast.ends_with("fast"),
        "{fast}"
    );
    // The slow answers are still to come: the fast one did not wait for them.
    for c in &slow_ones {
        c.set_nonblocking(true).unwrap();
        let e = (&*c).read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "a slow answer came first");
        c.set_nonblocking(false).unwrap();
    }
    eprintln!("the fast route answered in {took:?} while four blocking calls ran");
    for c in slow_ones {
        let r = answer(c);
        assert!(
            r.starts_with("HTTP/1.1 200 OK") && r.ends_with("slept"),
            "{r}"
        );
    }
    let snap = rt.stats().wait().unwrap();
    assert_eq!(
        snap.total().stalls,
        before,
        "the stall detector saw a stall"
    );
    assert_eq!(snap.blocking.done, 4);
    assert_eq!(snap.blocking.run_ns.len(), 4);
    assert!(snap.blocking.run_ns.min() >= 990_000_000);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_full_pool_answers_full_at_once_and_recovers(backend: Backend) {
    let rt = runtime(
        backend,
        BlockingConfig {
            max_threads: 2,
            queue: 1,
            ..BlockingConfig::default()
        },
    );
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().unwrap();
    let (tx, rx) = mpsc::channel();
    let g = gate.clone();
    rt.handle(0)
        .add_callback(move |lp| {
            for i in 0..4 {
                let (g, tx) = (g.clone(), tx.clone());
                lp.call_blocking(move || {
                    drop(g.read().unwrap());
                    i
                })
                .then(move |_, r| tx.send((i, r)).unwrap());
            }
        })
        .unwrap();
    // Two running, one queued: the fourth is refused while the others wait.
    let refused = rx.recv_timeout(util::HANG).unwrap();
    assert_eq!(refused, (3, Err(CallError::Full)));
    until(&rt, "two running and one queued", |p| {
        busy(p) == 2 && p.queued == 1
    });
    drop(closed);
    let mut rest: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(util::HANG).unwrap())
        .collect();
    rest.sort_by_key(|(i, _)| *i);
    assert_eq!(rest, vec![(0, Ok(0)), (1, Ok(1)), (2, Ok(2))]);
    // Room again.
    assert_eq!(rt.call_blocking(|| 5).wait(), Ok(5));
    let p = rt.stats().wait().unwrap().blocking;
    assert_eq!((p.done, p.rejected, p.max_threads), (4, 1, 2));
    assert!(p.threads <= 2, "{p:?}");
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn threads_start_on_demand_and_retire_when_idle(backend: Backend) {
    let rt = runtime(
        backend,
        BlockingConfig {
            max_threads: 8,
            idle_timeout: Duration::from_millis(100),
            ..BlockingConfig::default()
        },
    );
    assert_eq!(
        rt.stats().wait().unwrap().blocking.threads,
        0,
        "none before use"
    );
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().unwrap();
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let g = gate.clone();
            let c = rt.call_blocking(move || {
                drop(g.read().unwrap());
                i
            });
            std::thread::spawn(move || c.wait())
        })
        .collect();
    until(&rt, "three threads busy", |p| {
        busy(p) == 3 && p.threads == 3
    });
    drop(closed);
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), Ok(i));
    }
    until(&rt, "every thread retired", |p| p.threads == 0);
    // And started again when needed.
    assert_eq!(rt.call_blocking(|| "again").wait(), Ok("again"));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_panicking_job_answers_its_message_and_the_pool_goes_on(backend: Backend) {
    util::capture_logs();
    let rt = runtime(backend, BlockingConfig::default());
    let task = rt.handle(0).spawn(|| async {
        let lp = coreloop::IoLoop::current().unwrap();
        let bad = lp
            .call_blocking(|| -> u32 { panic!("row 7 is corrupt") })
            .await;
        let good = lp.call_blocking(|| 7).await;
        (bad, good)
    });
    let (bad, good) = coreloop::block_on(task).unwrap();
    assert_eq!(bad, Err(CallError::Panicked("row 7 is corrupt".into())));
    assert_eq!(good, Ok(7));
    let p = rt.stats().wait().unwrap().blocking;
    assert_eq!((p.panicked, p.done), (1, 1));
    let logged = util::logs_of_threads("coreloop-blocking");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("row 7 is corrupt")),
        "{logged:?}"
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn stopping_answers_queued_jobs_closed_and_lets_running_ones_finish(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .blocking(BlockingConfig {
            max_threads: 1,
            queue: 4,
            ..BlockingConfig::default()
        })
        .drain_deadline(util::HANG)
        .build()
        .unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let running = rt.call_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        f.store(true, Ordering::SeqCst);
        1
    });
    let running = std::thread::spawn(move || running.wait());
    until(&rt, "one job running", |p| busy(p) == 1);
    let queued: Vec<_> = (0..2)
        .map(|i| {
            let c = rt.call_blocking(move || i);
            std::thread::spawn(move || c.wait())
        })
        .collect();
    until(&rt, "two jobs queued", |p| p.queued == 2);
    rt.shutdown().unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown returned before the running job ended"
    );
    assert_eq!(running.join().unwrap(), Ok(1));
    for q in queued {
        assert_eq!(q.join().unwrap(), Err(CallError::Closed));
    }
}

#[on_both_backends]
#[test]
fn a_job_still_running_at_the_drain_deadline_does_not_hold_the_stop(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .drain_deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let long = rt.call_blocking(move || {
        std::thread::sleep(Duration::from_millis(1500));
        f.store(true, Ordering::SeqCst);
        "late"
    });
    let long = std::thread::spawn(move || long.wait());
    until(&rt, "the job running", |p| busy(p) == 1);
    rt.shutdown().unwrap();
    assert!(
        !finished.load(Ordering::SeqCst),
        "shutdown waited past its deadline"
    );
    // Left to finish on its own; its waiter still gets the value.
    assert_eq!(long.join().unwrap(), Ok("late"));
}

#[on_both_backends]
#[test]
fn a_graceful_drain_lets_a_request_waiting_on_the_pool_finish(backend: Backend) {
    // The servers drain first (the request's blocking call still runs and answers),
    // then the pool closes, then the loops stop.
    let app = Application::new().route(
        "/slow",
        Route::new().get(|lp, _, mut resp| async move {
            let v = lp
                .call_blocking(|| {
                    std::thread::sleep(Duration::from_millis(300));
                    "done"
                })
                .await?;
            resp.write(v);
            Ok(resp)
        }),
    );
    let s = HttpServer::new(app)
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
    let c = send(s.local_addr(), "/slow");
    until(s.runtime(), "the call running", |p| busy(p) == 1);
    let util::Served { rt, server } = s;
    drop(server);
    assert_eq!(rt.drain(util::HANG).unwrap(), 0);
    let r = answer(c);
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && r.ends_with("done"),
        "{r}"
    );
}

#[on_both_backends]
#[test]
fn a_loop_made_alone_uses_the_shared_pool(backend: Backend) {
    let lp = util::new_loop(backend);
    let (tx, rx) = mpsc::channel();
    let me = std::thread::current().id();
    lp.call_blocking(move || std::thread::current().id())
        .then(move |lp, r| {
            tx.send(r).unwrap();
            lp.stop();
        });
    util::run(&lp);
    let ran_on = rx.recv().unwrap().unwrap();
    assert_ne!(ran_on, me, "ran on the loop's thread");
    // Awaited too.
    let v = lp
        .run_until_complete({
            let lp = lp.clone();
            async move { lp.call_blocking(|| 40 + 2).await }
        })
        .unwrap();
    assert_eq!(v, Ok(42));
}

/// A kernel CPU list ("0-2,5") as a set.
fn cpu_set(list: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => {
                out.insert(part.parse().unwrap());
            }
        }
    }
    out
}

#[test]
fn pool_threads_keep_off_the_loops_cores_unless_told() {
    let mine = cpu_set(&util::cpus_allowed());
    if mine.len() < 2 {
        eprintln!("skipped: this process may run on one core only ({mine:?})");
        return;
    }
    let first = *mine.iter().next().unwrap();
    let rt = Runtime::builder()
        .cores(Cores::List(vec![first]))
        .build()
        .unwrap();
    let loop_cpus = cpu_set(&rt.call_on(0, |_| util::cpus_allowed()).wait().unwrap());
    // A thread started from the pinned loop, not from this plain thread.
    let pool_cpus = rt
        .call_on(0, |lp| lp.call_blocking(util::cpus_allowed))
        .wait()
        .unwrap();
    let pool_cpus = cpu_set(&rt_wait(pool_cpus));
    assert_eq!(loop_cpus, BTreeSet::from([first]));
    assert!(!pool_cpus.contains(&first), "pool on {pool_cpus:?}");
    assert_eq!(pool_cpus.len(), mine.len() - 1);
    rt.shutdown().unwrap();

    // Told: on the loop's own core.
    let rt = Runtime::builder()
        .cores(Cores::List(vec![first]))
        .blocking(BlockingConfig {
            cores: Some(vec![first]),
            ..BlockingConfig::default()
        })
        .build()
        .unwrap();
    let pool_cpus = cpu_set(&rt.call_blocking(util::cpus_allowed).wait().unwrap());
    assert_eq!(pool_cpus, BTreeSet::from([first]));
    rt.shutdown().unwrap();
    // Every core has a loop: the pool may use any.
    let rt = Runtime::builder().cores(Cores::All).build().unwrap();
    let pool_cpus = cpu_set(&rt.call_blocking(util::cpus_allowed).wait().unwrap());
    assert_eq!(pool_cpus, mine);
    rt.shutdown().unwrap();
}

/// A call made on a loop and handed out: waited for here.
fn rt_wait<T: Send + 'static>(c: coreloop::Call<T>) -> T {
    c.wait().unwrap()
}

#[test]
fn bad_pool_bounds_fail_the_build() {
    let e = Runtime::builder()
        .cores(Cores::Count(1))
        .blocking(BlockingConfig {
            max_threads: 0,
            ..BlockingConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("max_threads"), "{e}");
    let e = Runtime::builder()
        .cores(Cores::Count(1))
        .blocking(BlockingConfig {
            cores: Some(vec![100_000]),
            ..BlockingConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("100000"), "{e}");
}
