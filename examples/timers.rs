//! Timers and cancellation on one loop.
//!
//! `cargo run --release --example timers [-- --backend auto|uring|epoll]`
//!
//! Arms a few one-shot timers, a periodic tick that re-arms itself, cancels one timer
//! before it fires and one from inside another timer, then prints when each fired and how
//! late it was (a timer never fires early; lateness is the loop's lag).

use coreloop::{Backend, IoLoop, TimeoutId};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn backend_from_args() -> Backend {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--backend") {
        Some(i) => args
            .get(i + 1)
            .and_then(|b| Backend::parse(b))
            .unwrap_or_else(|| {
                eprintln!("--backend takes auto, uring or epoll");
                std::process::exit(2)
            }),
        None => Backend::Auto,
    }
}

fn main() -> std::io::Result<()> {
    let lp = IoLoop::with_backend(backend_from_args())?;
    println!("loop on {}", lp.backend_detail());
    let t0 = Instant::now();
    let report = move |name: &str, due: Duration| {
        let at = t0.elapsed();
        println!(
            "{name:<28} due {:>6.2} ms  fired {:>6.2} ms  late {:>6.3} ms",
            due.as_secs_f64() * 1e3,
            at.as_secs_f64() * 1e3,
            (at.saturating_sub(due)).as_secs_f64() * 1e3
        );
    };

    for ms in [30u64, 10, 20] {
        let due = Duration::from_millis(ms);
        lp.call_later(due, move |_| report(&format!("one-shot {ms} ms"), due));
    }

    // Cancelled before it fires: never runs.
    let doomed = lp.call_later(Duration::from_millis(15), |_| unreachable!("cancelled"));
    println!("cancel before firing: {}", lp.remove_timeout(doomed));

    // Cancelled from inside an earlier timer of the same deadline: never runs.
    let victim: Rc<Cell<Option<TimeoutId>>> = Rc::new(Cell::new(None));
    let v = victim.clone();
    let due = Duration::from_millis(25);
    lp.call_later(due, move |lp| {
        let cancelled = lp.remove_timeout(v.get().unwrap());
        report(&format!("canceller (cancelled: {cancelled})"), due);
    });
    victim.set(Some(lp.call_later(due, |_| {
        unreachable!("cancelled by the earlier timer")
    })));

    // A periodic tick, re-armed from its own callback, five times.
    fn tick(lp: &IoLoop, n: u32, t0: Instant, period: Duration) {
        let due = period * n;
        let at = t0.elapsed();
        println!(
            "{:<28} due {:>6.2} ms  fired {:>6.2} ms",
            format!("tick {n}"),
            due.as_secs_f64() * 1e3,
            at.as_secs_f64() * 1e3
        );
        if n < 5 {
            lp.add_timeout(t0 + period * (n + 1), move |lp| tick(lp, n + 1, t0, period));
        }
    }
    let period = Duration::from_millis(8);
    lp.add_timeout(t0 + period, move |lp| tick(lp, 1, t0, period));

    lp.call_later(Duration::from_millis(50), move |lp| {
        println!("pending timers at the end: {}", lp.pending_timers());
        lp.stop();
    });
    lp.start()
}
