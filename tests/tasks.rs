//! Tasks on the loop: spawned locally or onto another core, awaited from loops and plain
//! threads, cancelled by dropping their handle, panics caught and reported, FIFO with
//! callbacks, woken from threads outside coreloop (std, tokio), and dropped on their own
//! thread when the loop closes. Time (sleep, timeout, interval) and awaiting other cores.
mod util;

use coreloop::{
    block_on, sleep, timeout, Backend, CallError, Cores, Elapsed, IoLoop, JoinError, Runtime,
};
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use util::new_loop;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Records the thread it is dropped on.
struct DropProbe(Arc<Mutex<Option<std::thread::ThreadId>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(std::thread::current().id());
    }
}

#[on_both_backends]
#[test]
fn tasks_and_callbacks_run_in_the_order_they_were_queued(backend: Backend) {
    let lp = new_loop(backend);
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    let out = lp
        .run_until_complete(async move {
            let lp = IoLoop::current().unwrap();
            let (o1, o2, o3) = (o.clone(), o.clone(), o.clone());
            lp.add_callback(move |_| o1.borrow_mut().push("callback 1"));
            let t = lp.spawn(async move { o2.borrow_mut().push("task") });
            lp.add_callback(move |_| o3.borrow_mut().push("callback 2"));
            assert!(o.borrow().is_empty(), "nothing runs inside spawn");
            t.await
        })
        .unwrap();
    assert_eq!(out, Ok(()));
    assert_eq!(*order.borrow(), ["callback 1", "task", "callback 2"]);
}

#[on_both_backends]
#[test]
fn a_panicking_task_is_reported_through_its_handle_and_the_loop_goes_on(backend: Backend) {
    util::capture_logs();
    let lp = new_loop(backend);
    let (bad, good) = lp
        .run_until_complete(async {
            let lp = IoLoop::current().unwrap();
            let bad = lp.spawn(async { panic!("task boom") }).await;
            let good = lp.spawn(async { 5 }).await;
            (bad, good)
        })
        .unwrap();
    assert_eq!(bad, Err::<(), _>(JoinError::Panicked("task boom".into())));
    assert_eq!(good, Ok(5));
    let logs = util::logs_of_this_thread();
    let lines: Vec<_> = logs.iter().filter(|l| l.contains("task boom")).collect();
    assert_eq!(lines.len(), 1, "logged once: {logs:?}");
    assert!(
        lines[0].contains("tests/tasks.rs"),
        "says where it was spawned: {lines:?}"
    );
}

#[on_both_backends]
#[test]
fn dropping_a_handle_cancels_the_task_and_drops_its_future_on_its_loop(backend: Backend) {
    let lp = new_loop(backend);
    let dropped_on = Arc::new(Mutex::new(None));
    let probe = DropProbe(dropped_on.clone());
    let polls = Rc::new(RefCell::new(0));
    let p = polls.clone();
    lp.run_until_complete(async move {
        let lp = IoLoop::current().unwrap();
        let task = lp.spawn(async move {
            let _probe = probe;
            loop {
                *p.borrow_mut() += 1;
                sleep(ms(1)).await;
            }
        });
        sleep(ms(20)).await;
        drop(task);
        sleep(ms(20)).await; // it is not polled again
    })
    .unwrap();
    let n = *polls.borrow();
    assert!(n >= 2, "the task ran before it was cancelled ({n} polls)");
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id()),
        "its future was dropped, on its loop's thread"
    );
    assert_eq!(lp.tasks(), 0);
}

#[on_both_backends]
#[test]
fn a_detached_task_runs_on_and_a_closing_loop_drops_every_task_on_its_thread(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let dropped_on = Arc::new(Mutex::new(None));
    let d = dropped_on.clone();
    let loop_thread = std::thread::spawn(move || {
        let lp = IoLoop::with_backend(backend).unwrap();
        let probe = DropProbe(d);
        lp.spawn(async move {
            let _probe = probe;
            sleep(Duration::from_secs(3600)).await; // still waiting at close
        })
        .detach();
        let t = tx.clone();
        lp.spawn(async move { t.send("detached ran").unwrap() })
            .detach();
        lp.call_later(ms(20), |lp| lp.stop());
        lp.start().unwrap();
        assert_eq!(lp.tasks(), 1);
        lp.close();
        assert_eq!(lp.tasks(), 0);
        tx.send("closed").unwrap();
        std::thread::current().id()
    });
    assert_eq!(rx.recv_timeout(util::HANG).unwrap(), "detached ran");
    assert_eq!(rx.recv_timeout(util::HANG).unwrap(), "closed");
    let tid = loop_thread.join().unwrap();
    assert_eq!(*dropped_on.lock().unwrap(), Some(tid));
}

#[on_both_backends]
#[test]
fn a_task_on_another_core_is_awaited_from_a_loop_and_from_a_plain_thread(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    // From a plain thread.
    let t = rt.handle(1).spawn(|| async {
        sleep(ms(2)).await;
        IoLoop::current().unwrap().shard_id()
    });
    assert_eq!(block_on(t), Ok(1));
    // From a task on core 0, onto core 1, and back.
    let t = rt.handle(0).spawn(|| async {
        let lp = IoLoop::current().unwrap();
        let far = lp.shard_handle(1).unwrap();
        let inner = far.spawn(|| async {
            let here = Rc::new(IoLoop::current().unwrap().shard_id()); // not Send
            *here + 10
        });
        (lp.shard_id(), inner.await)
    });
    assert_eq!(block_on(t), Ok((0, Ok(11))));
    // A panic over there comes back with its message.
    let t = rt.handle(1).spawn(|| async { panic!("far boom") });
    assert_eq!(
        block_on(t),
        Err::<(), _>(JoinError::Panicked("far boom".into()))
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_remote_task_is_cancelled_by_its_handle_and_a_closed_loop_says_cancelled(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap();
    let dropped_on = Arc::new(Mutex::new(None));
    let d = dropped_on.clone();
    let t = rt.handle(0).spawn(move || async move {
        let _probe = DropProbe(d);
        sleep(Duration::from_secs(3600)).await;
    });
    std::thread::sleep(ms(20));
    drop(t);
    let deadline = Instant::now() + util::HANG;
    while dropped_on.lock().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the remote task was not cancelled"
        );
        std::thread::sleep(ms(1));
    }
    assert_ne!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id())
    );
    assert_eq!(rt.call_on(0, |lp| lp.tasks()).wait().unwrap(), 0);
    let h = rt.handle(0).clone();
    rt.shutdown().unwrap();
    assert_eq!(block_on(h.spawn(|| async { 1 })), Err(JoinError::Cancelled));
}

#[on_both_backends]
#[test]
fn sleep_timeout_and_interval_run_on_the_timer_heap(backend: Backend) {
    let lp = new_loop(backend);
    let (slept, late, fast, ticks) = lp
        .run_until_complete(async {
            let t0 = Instant::now();
            sleep(ms(15)).await;
            let slept = t0.elapsed();
            let late = timeout(ms(10), sleep(Duration::from_secs(60))).await;
            let fast = timeout(Duration::from_secs(60), async { "in time" }).await;
            let mut every = coreloop::interval(ms(5));
            let t1 = Instant::now();
            let mut ticks = Vec::new();
            for _ in 0..4 {
                ticks.push(every.tick().await - t1);
            }
            (slept, late, fast, ticks)
        })
        .unwrap();
    assert!(slept >= ms(15), "never early: {slept:?}");
    assert_eq!(late, Err(Elapsed));
    assert_eq!(fast, Ok("in time"));
    for (i, t) in ticks.iter().enumerate() {
        assert!(
            *t >= ms(5 * (i as u64 + 1)) - ms(1),
            "tick {i} due at {t:?}"
        );
    }
    // The cancelled timers were dropped lazily, not leaked.
    assert_eq!(lp.pending_timers(), 0);
}

#[on_both_backends]
#[test]
fn awaiting_other_cores_always_answers(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    let t = rt.handle(0).spawn(|| async {
        let lp = IoLoop::current().unwrap();
        let far = lp.shard_handle(1).unwrap();
        let ok = lp.call_on(&far, |l| l.shard_id()).await;
        let bad = lp
            .call_on(&far, |_| -> u8 { panic!("far call boom") })
            .await;
        let dead = IoLoop::with_backend(Backend::Epoll).unwrap().handle(); // closed at once
        let closed = lp.call_on(&dead, |_| 1u8).await;
        let all = lp.call_on_all(|l| l.shard_id() * 2).await;
        (ok, bad, closed, all)
    });
    let (ok, bad, closed, all) = block_on(t).unwrap();
    assert_eq!(ok, Ok(1));
    assert_eq!(bad, Err(CallError::Panicked("far call boom".into())));
    assert_eq!(closed, Err(CallError::Closed));
    assert_eq!(all, Ok(vec![0, 2]));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn futures_woken_from_outside_coreloop_work(backend: Backend) {
    let lp = new_loop(backend);
    // A futures oneshot completed by a std thread.
    let (tx, rx) = futures::channel::oneshot::channel::<&str>();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(ms(10));
        tx.send("from a std thread").unwrap();
    });
    assert_eq!(lp.run_until_complete(rx).unwrap(), Ok("from a std thread"));
    sender.join().unwrap();
    // A tokio oneshot completed by a task of a tokio runtime.
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    tokio_rt.spawn(async move {
        tokio::time::sleep(ms(10)).await;
        tx.send(7).unwrap();
    });
    assert_eq!(lp.run_until_complete(rx).unwrap(), Ok(7));
    // And the other way round: tokio awaits a coreloop task's handle.
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap();
    let t = rt.handle(0).spawn(|| async {
        sleep(ms(5)).await;
        "from coreloop"
    });
    assert_eq!(tokio_rt.block_on(t), Ok("from coreloop"));
    rt.shutdown().unwrap();
}

#[test]
#[should_panic(expected = "would block it")]
fn block_on_inside_a_running_loop_is_refused() {
    let lp = IoLoop::new().unwrap();
    lp.run_until_complete(async {
        block_on(async {});
    })
    .unwrap();
}
