//! Task costs, coreloop against tokio (current_thread + LocalSet) and async-executor
//! (LocalExecutor), each measured over a batch of operations inside one running
//! executor, per operation:
//!
//! - `spawn_complete`: spawn an empty task and await its handle;
//! - `local_wake`: a task that wakes itself and yields (the wake-up path on the
//!   executor's own thread);
//! - `cross_thread_wake`: a round trip between two threads, each running its
//!   executor: a oneshot sent to the other thread's task, answered with another (the
//!   same futures::channel::oneshot for every executor, so only the executors differ).
//!   An executor without I/O parks its thread on a futex; one with I/O (coreloop
//!   always, tokio with `enable_all`) sleeps in epoll_wait or io_uring_enter, and is
//!   woken through an eventfd (or MSG_RING).
//!
//! `coreloop` is a loop as made by default (stall detection on: the kernel's coarse
//! clock is read after each job); `coreloop_untimed` has stall detection off
//! (`set_stall_threshold(Duration::MAX)`), which saves that read.
use criterion::{criterion_group, criterion_main, Criterion};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Yields once: wakes its own task, returns Pending, then Ready.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn coreloop_loop() -> coreloop::IoLoop {
    coreloop::IoLoop::with_backend(coreloop::Backend::Epoll).unwrap()
}

/// Makes the loop of a bench row.
type MakeLoop = fn() -> coreloop::IoLoop;

/// The coreloop rows of the local benches: a default loop, and one untimed.
const CORELOOP_ROWS: [(&str, MakeLoop); 2] = [
    ("coreloop", coreloop_loop),
    ("coreloop_untimed", coreloop_untimed),
];

/// A loop with stall detection off: no clock read after each job (tokio reads the
/// clock per poll only when its poll-time histogram is on).
fn coreloop_untimed() -> coreloop::IoLoop {
    let lp = coreloop_loop();
    lp.set_stall_threshold(Duration::MAX);
    lp
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn spawn_complete(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_complete");
    for (name, make) in CORELOOP_ROWS {
        g.bench_function(name, |b| {
            let lp = make();
            b.iter_custom(|n| {
                lp.run_until_complete(async move {
                    let lp = coreloop::IoLoop::current().unwrap();
                    let t0 = Instant::now();
                    for _ in 0..n {
                        lp.spawn(async {}).await.unwrap();
                    }
                    t0.elapsed()
                })
                .unwrap()
            });
        });
    }
    g.bench_function("tokio_localset", |b| {
        let rt = tokio_rt();
        let local = tokio::task::LocalSet::new();
        b.iter_custom(|n| {
            local.block_on(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..n {
                    tokio::task::spawn_local(async {}).await.unwrap();
                }
                t0.elapsed()
            })
        });
    });
    g.bench_function("async_executor_local", |b| {
        let ex = async_executor::LocalExecutor::new();
        b.iter_custom(|n| {
            futures_lite::future::block_on(ex.run(async {
                let t0 = Instant::now();
                for _ in 0..n {
                    ex.spawn(async {}).await;
                }
                t0.elapsed()
            }))
        });
    });
    g.finish();
}

fn local_wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_wake");
    for (name, make) in CORELOOP_ROWS {
        g.bench_function(name, |b| {
            let lp = make();
            b.iter_custom(|n| {
                lp.run_until_complete(async move {
                    let t0 = Instant::now();
                    for _ in 0..n {
                        YieldNow(false).await;
                    }
                    t0.elapsed()
                })
                .unwrap()
            });
        });
    }
    g.bench_function("tokio_localset", |b| {
        let rt = tokio_rt();
        let local = tokio::task::LocalSet::new();
        b.iter_custom(|n| {
            local.block_on(&rt, async move {
                let t0 = Instant::now();
                for _ in 0..n {
                    YieldNow(false).await;
                }
                t0.elapsed()
            })
        });
    });
    g.bench_function("async_executor_local", |b| {
        let ex = async_executor::LocalExecutor::new();
        b.iter_custom(|n| {
            futures_lite::future::block_on(ex.run(async {
                let t0 = Instant::now();
                for _ in 0..n {
                    YieldNow(false).await;
                }
                t0.elapsed()
            }))
        });
    });
    g.finish();
}

type Ping = futures::channel::oneshot::Sender<()>;

/// The echo side: for every ping, a pong.
async fn echo(mut rx: futures::channel::mpsc::UnboundedReceiver<Ping>) {
    use futures::StreamExt;
    while let Some(pong) = rx.next().await {
        let _ = pong.send(());
    }
}

/// `n` round trips to the echo side; their time.
async fn ping(tx: &futures::channel::mpsc::UnboundedSender<Ping>, n: u64) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        let (pong, back) = futures::channel::oneshot::channel();
        tx.unbounded_send(pong).unwrap();
        back.await.unwrap();
    }
    t0.elapsed()
}

fn cross_thread_wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread_wake");
    g.measurement_time(Duration::from_secs(8));
    // coreloop's loops always sleep in the poller (epoll_wait or io_uring_enter), so a
    // wake-up is an eventfd write (epoll), or a MSG_RING between io_uring loops.
    for (name, backend) in [
        ("coreloop_epoll", coreloop::Backend::Epoll),
        ("coreloop_uring", coreloop::Backend::Uring),
    ] {
        g.bench_function(name, |b| {
            // One unpinned loop thread for the echo side, as the peers' plain threads.
            let rt = coreloop::Runtime::builder()
                .cores(coreloop::Cores::Count(1))
                .pin(false)
                .backend(backend)
                .build()
                .unwrap();
            let (tx, rx) = futures::channel::mpsc::unbounded();
            rt.handle(0).spawn(move || echo(rx)).detach();
            let lp = coreloop::IoLoop::with_backend(backend).unwrap();
            b.iter_custom(|n| {
                let tx = tx.clone();
                lp.run_until_complete(async move { ping(&tx, n).await })
                    .unwrap()
            });
            drop(tx);
            rt.shutdown().unwrap();
        });
    }
    // tokio with its I/O driver (what a service using tokio's sockets runs): it then
    // sleeps in epoll_wait too; without it, it parks on a futex.
    g.bench_function("tokio_localset_io", |b| {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let io_rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let other = std::thread::spawn(move || {
            let rt = io_rt();
            tokio::task::LocalSet::new().block_on(&rt, echo(rx));
        });
        let rt = io_rt();
        let local = tokio::task::LocalSet::new();
        b.iter_custom(|n| local.block_on(&rt, ping(&tx, n)));
        drop(tx);
        other.join().unwrap();
    });
    g.bench_function("tokio_localset", |b| {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let other = std::thread::spawn(move || {
            let rt = tokio_rt();
            tokio::task::LocalSet::new().block_on(&rt, echo(rx));
        });
        let rt = tokio_rt();
        let local = tokio::task::LocalSet::new();
        b.iter_custom(|n| local.block_on(&rt, ping(&tx, n)));
        drop(tx);
        other.join().unwrap();
    });
    g.bench_function("async_executor_local", |b| {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let other = std::thread::spawn(move || {
            let ex = async_executor::LocalExecutor::new();
            futures_lite::future::block_on(ex.run(echo(rx)));
        });
        let ex = async_executor::LocalExecutor::new();
        b.iter_custom(|n| futures_lite::future::block_on(ex.run(ping(&tx, n))));
        drop(tx);
        other.join().unwrap();
    });
    g.finish();
}

criterion_group!(benches, spawn_complete, local_wake, cross_thread_wake);
criterion_main!(benches);
