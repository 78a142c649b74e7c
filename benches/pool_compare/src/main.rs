//! Round trips to a blocking pool: `pool_compare MODE N` runs N sequential round trips
//! (a task sends `|| i` to the pool and awaits the value back) after N/10 to warm up,
//! and prints `MODE p50_us p99_us cpu_us_per_op`. CPU is every thread's run time (the
//! sum of /proc/self/task/*/schedstat) over the measured part, divided by N.
//!
//! Modes: `coreloop` (a one-core runtime: the loop pinned to the first core, the pool
//! off it, as by default), `coreloop_same` (the pool told to use the loop's core too),
//! `tokio_mt` (a multi-threaded runtime with one worker; a spawned task awaits
//! `spawn_blocking`), `tokio_ct` (a current-thread runtime). tokio's threads are not
//! pinned: the kernel places them (a woken thread often on its waker's core).

use std::time::{Duration, Instant};

fn cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// Runs `n` round trips timed one by one through `one`.
async fn rounds<F, Fut>(n: usize, mut one: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let v = one(i).await;
        out.push(t0.elapsed());
        assert_eq!(v, i);
    }
    out
}

/// The first CPU this process may run on.
fn first_cpu() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| {
            l.trim()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn report(mode: &str, mut times: Vec<Duration>, cpu: u64) {
    let n = times.len();
    times.sort();
    let q = |p: f64| times[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e6;
    println!(
        "{mode} {:.1} {:.1} {:.2}",
        q(0.50),
        q(0.99),
        cpu as f64 / n as f64 / 1e3
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "coreloop".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let warm = n / 10;
    match mode.as_str() {
        "coreloop" | "coreloop_same" => {
            let first = first_cpu();
            let pool_cores = (mode == "coreloop_same").then(|| vec![first]);
            let rt = coreloop::Runtime::builder()
                .cores(coreloop::Cores::List(vec![first]))
                .blocking(coreloop::BlockingConfig {
                    cores: pool_cores,
                    ..coreloop::BlockingConfig::default()
                })
                .build()
                .expect("a runtime");
            let task = rt.handle(0).spawn(move || async move {
                let lp = coreloop::IoLoop::current().expect("on a loop");
                rounds(warm, |i| {
                    let c = lp.call_blocking(move || i);
                    async move { c.await.expect("an answer") }
                })
                .await;
                let c0 = cpu_ns();
                let t = rounds(n, |i| {
                    let c = lp.call_blocking(move || i);
                    async move { c.await.expect("an answer") }
                })
                .await;
                (t, cpu_ns() - c0)
            });
            let (t, cpu) = coreloop::block_on(task).expect("the task ran");
            report(&mode, t, cpu);
            rt.shutdown().expect("stopped");
        }
        "tokio_mt" | "tokio_ct" => {
            let rt = if mode == "tokio_mt" {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread().build()
            }
            .expect("a runtime");
            let work = async move {
                let one = |i| async move {
                    tokio::task::spawn_blocking(move || i)
                        .await
                        .expect("an answer")
                };
                rounds(warm, one).await;
                let c0 = cpu_ns();
                let t = rounds(n, one).await;
                (t, cpu_ns() - c0)
            };
            let (t, cpu) = if mode == "tokio_mt" {
                rt.block_on(rt.spawn(work)).expect("the task ran")
            } else {
                rt.block_on(work)
            };
            report(&mode, t, cpu);
        }
        other => {
            eprintln!("unknown mode {other:?}: coreloop, coreloop_same, tokio_mt or tokio_ct");
            std::process::exit(2);
        }
    }
}
