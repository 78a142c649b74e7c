//! Timer heap costs with many timers pending: add+cancel and add+fire.
//!
//! `cargo bench --bench timers`. Each case first fills the loop with N long timers
//! (1k, 100k, 1M), then measures one more operation at that depth.

use coreloop::{Backend, IoLoop};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn loop_with_pending(n: usize) -> IoLoop {
    let lp = IoLoop::with_backend(Backend::Epoll).expect("loop");
    let far = Instant::now() + Duration::from_secs(3600);
    for i in 0..n {
        lp.add_timeout(far + Duration::from_micros(i as u64), |_| {});
    }
    lp
}

fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");
    for &n in &[1_000usize, 100_000, 1_000_000] {
        let lp = loop_with_pending(n);
        g.bench_with_input(BenchmarkId::new("add_cancel", n), &n, |b, _| {
            let soon = Instant::now() + Duration::from_secs(60);
            b.iter(|| {
                let id = lp.add_timeout(black_box(soon), |_| {});
                lp.remove_timeout(id)
            })
        });
        // add+fire: add a timer that is already due and run one loop iteration, which
        // pops it (and only it: the N pending timers are an hour away).
        g.bench_with_input(BenchmarkId::new("add_fire", n), &n, |b, _| {
            b.iter(|| {
                lp.add_timeout(Instant::now(), |lp| lp.stop());
                lp.start().expect("start");
            })
        });
        assert_eq!(lp.pending_timers(), n);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = timers
}
criterion_main!(benches);
