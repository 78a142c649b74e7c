//! Callback queues: local add_callback throughput, cross-thread add_callback throughput
//! with 1 and 4 sending threads, and the wake-up round trip between two loops.
//!
//! `cargo bench --bench callbacks`.

use coreloop::{Backend, IoLoop, LoopHandle};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
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

fn remote(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_add_callback");
    g.throughput(Throughput::Elements(BATCH));
    for backend in [Backend::Epoll, Backend::Uring] {
        for senders in [1u64, 4] {
            let (h, t) = spawn_loop(backend);
            g.bench_with_input(
                BenchmarkId::new(format!("{backend:?}"), format!("{senders}_senders")),
                &senders,
                |b, &senders| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let done = Arc::new(AtomicU64::new(0));
                            let (fin_tx, fin_rx) = mpsc::channel::<()>();
                            let per = BATCH / senders;
                            let start = Instant::now();
                            std::thread::scope(|s| {
                                for _ in 0..senders {
                                    let h = h.clone();
                                    let done = done.clone();
                                    let fin_tx = fin_tx.clone();
                                    s.spawn(move || {
                                        for _ in 0..per {
                                            let done = done.clone();
                                            let fin_tx = fin_tx.clone();
                                            h.add_callback(move |_| {
                                                if done.fetch_add(1, Ordering::Relaxed) + 1
                                                    == per * senders
                                                {
                                                    let _ = fin_tx.send(());
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
                a.submit_to(&b2, |_| (), |a, ()| a.stop()).unwrap();
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
