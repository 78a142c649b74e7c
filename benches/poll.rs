//! Poll round trip on a socketpair: write one byte on one end, and the loop's handler
//! for the other end reads it and stops the loop. One iteration = one write, one wait,
//! one dispatch, one read. `cargo bench --bench poll`.

use coreloop::{Backend, Interest, IoLoop};
use criterion::{criterion_group, criterion_main, Criterion};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn poll_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll_round_trip");
    for backend in [Backend::Epoll, Backend::Uring] {
        let lp = IoLoop::with_backend(backend).expect("loop");
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let fd = b.as_raw_fd();
        lp.add_handler(fd, Interest::READABLE, move |lp, _, _| {
            let mut buf = [0u8; 64];
            let _ = b.read(&mut buf);
            lp.stop();
        })
        .unwrap();
        g.bench_function(format!("{backend:?}"), |bench| {
            bench.iter(|| {
                a.write_all(b"x").unwrap();
                lp.start().expect("start");
            })
        });
        lp.remove_handler(fd);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = poll_round_trip
}
criterion_main!(benches);
