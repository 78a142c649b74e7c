//! Callback queues: local add_callback throughput, cross-thread add_callback throughput
//! with 1 and 4 sending threads, and the wake-up round trip between two loops.
//!
//! `cargo bench --bench callbacks`.

use coreloop::{Backend, IoLoop, LoopHandle};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const BATCH: u64 = 10_000;

fn local(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_add_callback");
    g.throughput(Throughput::Elements(BATCH));
    for backend in [Backend::Epoll, Backend::Uring] {
        let lp = IoLoop::with_backend(backend).expect("loop");
        g.bench_function(format!("{backend:?}"), |b| {
            b.iter(|| {
                let n = Rc::new(Cell::new(0u64));
                for _ in 0..BATCH {
                    let n = n.clone();
                    lp.add_callback(move |_| n.set(n.get() + 1));
                }
                lp.add_callback(|lp| lp.add_callback(|lp| lp.stop()));
                lp.start().expect("start");
                assert_eq!(n.get(), BATCH);
            })
        });
    }
    g.finish();
}

/// A loop on its own thread; returns its handle and the thread.
fn spawn_loop(backend: Backend) -> (LoopHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let lp = IoLoop::with_backend(backend).expect("loop");
        tx.send(lp.handle()).unwrap();
        lp.start().expect("start");
    });
    (rx.recv().unwrap(), t)
}

/// What one measured batch counts on the loop thread. Leaked, so that a callback
/// captures a single `&'static` and the benchmark measures the channel, the wake-up and
/// the loop, not reference-count traffic of its own.
struct Batch {
    done: AtomicU64,
    target: AtomicU64,
    finished: Mutex<mpsc::Sender<()>>,
}

fn remote(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_add_callback");
    g.throughput(Throughput::Elements(BATCH));
    for backend in [Backend::Epoll, Backend::Uring] {
        for senders in [1u64, 4] {
            let (h, t) = spawn_loop(backend);
            let (fin_tx, fin_rx) = mpsc::channel::<()>();
            let batch: &'static Batch = Box::leak(Box::new(Batch {
                done: AtomicU64::new(0),
                target: AtomicU64::new(0),
                finished: Mutex::new(fin_tx),
            }));
            g.bench_with_input(
                BenchmarkId::new(format!("{backend:?}"), format!("{senders}_senders")),
                &senders,
                |b, &senders| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        let per = BATCH / senders;
                        for _ in 0..iters {
                            batch.done.store(0, Ordering::SeqCst);
                            batch.target.store(per * senders, Ordering::SeqCst);
                            let start = Instant::now();
                            std::thread::scope(|s| {
                                for _ in 0..senders {
                                    let h = h.clone();
                                    s.spawn(move || {
                                        for _ in 0..per {
                                            h.add_callback(move |_| {
                                                let n = batch.done.fetch_add(1, Ordering::Relaxed);
                                                if n + 1 == batch.target.load(Ordering::Relaxed) {
                                                    let _ = batch.finished.lock().unwrap().send(());
                                                }
                                            })
                                            .unwrap();
                                        }
                                    });
                                }
                            });
                            fin_rx.recv().unwrap();
                            total += start.elapsed();
                        }
                        total
                    })
                },
            );
            h.stop().unwrap();
            t.join().unwrap();
        }
    }
    g.finish();
}

/// One round trip: loop A sends a callback to loop B, which sends one back to A.
fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("wake_round_trip");
    for backend in [Backend::Epoll, Backend::Uring] {
        let (b_handle, tb) = spawn_loop(backend);
        let a = IoLoop::with_backend(backend).expect("loop");
        g.bench_function(format!("{backend:?}"), |bench| {
            bench.iter(|| {
                let b2 = b_handle.clone();
                a.call_on(&b2, |_| ()).then(|a, r| {
                    r.unwrap();
                    a.stop()
                });
                a.start().expect("start");
            })
        });
        b_handle.stop().unwrap();
        tb.join().unwrap();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = local, remote, round_trip
}
criterion_main!(benches);
