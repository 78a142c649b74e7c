//! Calls between loops always answer: with the value, with the panic's message, or with
//! `Closed` when the target loop is gone (before the call was sent, or before it ran);
//! from a loop (`submit_to`, `submit_to_all`) and from a plain thread (`invoke_on`,
//! `invoke_on_all`).
mod util;

use coreloop::{shard_of, Backend, CallError, Cores, IoLoop, Runtime};
use coreloop_macros::on_both_backends;
use std::sync::mpsc;
use std::time::Duration;
use util::{new_loop, run};

fn runtime(backend: Backend, cores: usize) -> Runtime {
    Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(cores))
        .build()
        .unwrap()
}

/// Runs `f` on shard `shard` of `rt` and waits for what it sends back.
fn on_shard<T: Send + 'static>(
    rt: &Runtime,
    shard: usize,
    f: impl FnOnce(&IoLoop, mpsc::Sender<T>) + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    rt.handle(shard).add_callback(move |lp| f(lp, tx)).unwrap();
    rx.recv_timeout(util::HANG).expect("an answer")
}

#[on_both_backends]
#[test]
fn a_panic_on_the_target_comes_back_with_its_message_and_the_target_goes_on(backend: Backend) {
    let rt = runtime(backend, 2);
    let got = on_shard(&rt, 0, |lp, tx| {
        let far = lp.shard_handle(1).unwrap();
        lp.call_on(&far, |_| -> u32 { panic!("key 7 is corrupt") })
            .then(move |lp, answer| tx.send((lp.shard_id(), answer)).unwrap());
    });
    assert_eq!(
        got,
        (0, Err(CallError::Panicked("key 7 is corrupt".into()))),
        "the continuation runs on the asking loop with the message"
    );
    // The target caught the panic and still serves calls.
    assert_eq!(rt.call_on(1, |lp| lp.shard_id()).wait().unwrap(), 1);
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_closed_target_answers_closed_and_never_in_the_callers_stack(backend: Backend) {
    let lp = new_loop(backend);
    let dead = {
        let other = new_loop(backend);
        other.handle()
    }; // dropped: closed
    let answered = std::rc::Rc::new(std::cell::Cell::new(None));
    let a = answered.clone();
    lp.call_on(&dead, |_| 1u8).then(move |lp, answer| {
        a.set(Some(answer));
        lp.stop();
    });
    assert!(answered.take().is_none(), "not inside submit_to itself");
    run(&lp);
    assert_eq!(answered.take(), Some(Err(CallError::Closed)));
}

#[on_both_backends]
#[test]
fn a_target_that_closes_before_running_the_call_answers_closed(backend: Backend) {
    let lp = new_loop(backend);
    let (tx, rx) = mpsc::channel();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    // A loop that never runs: it queues the call, then closes with it unrun.
    let target = std::thread::spawn(move || {
        let other = IoLoop::with_backend(backend).unwrap();
        tx.send(other.handle()).unwrap();
        close_rx.recv().unwrap();
        other.close();
    });
    let far = rx.recv().unwrap();
    let answered = std::rc::Rc::new(std::cell::Cell::new(None));
    let a = answered.clone();
    lp.call_on(&far, |_| "ran").then(move |lp, answer| {
        a.set(Some(answer));
        lp.stop();
    });
    close_tx.send(()).unwrap();
    run(&lp);
    target.join().unwrap();
    assert_eq!(answered.take(), Some(Err(CallError::Closed)));
}

#[on_both_backends]
#[test]
fn gathering_from_every_core_inside_a_loop_answers_the_first_failure(backend: Backend) {
    let rt = runtime(backend, 2);
    let all = on_shard(&rt, 1, |lp, tx| {
        lp.call_on_all(|far| {
            if far.shard_id() == 0 {
                panic!("shard 0 is full");
            }
            far.shard_id() * 100
        })
        .then(move |lp, all| tx.send((lp.shard_id(), all)).unwrap());
    });
    assert_eq!(all, (1, Err(CallError::Panicked("shard 0 is full".into()))));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn blocking_calls_from_a_plain_thread_answer_every_way(backend: Backend) {
    let rt = runtime(backend, 2);
    assert_eq!(rt.call_on(1, |lp| lp.shard_id() + 40).wait().unwrap(), 41);
    assert_eq!(
        rt.call_on(0, |_| -> () { panic!("refused") }).wait(),
        Err(CallError::Panicked("refused".into()))
    );
    assert_eq!(rt.call_on(2, |_| ()).wait(), Err(CallError::NoSuchShard(2)));
    // A closed shard answers Closed for it, the others answer.
    let h1 = rt.handle(1).clone();
    rt.call_on(1, |lp| lp.close()).wait().unwrap();
    let deadline = std::time::Instant::now() + util::HANG;
    while !h1.is_closed() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        rt.call_on_all(|lp| lp.shard_id()).wait(),
        Err(CallError::Closed)
    );
    assert_eq!(rt.call_on(1, |_| ()).wait(), Err(CallError::Closed));
    assert_eq!(rt.call_on(0, |lp| lp.shard_id()).wait(), Ok(0));
    drop(rt);
}

#[test]
fn keys_map_to_the_same_shard_everywhere_and_spread_evenly() {
    let rt = runtime(Backend::Epoll, 2);
    let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
    let here: Vec<usize> = keys.iter().map(|k| shard_of(k.as_str(), 2)).collect();
    let k2 = keys.clone();
    let there = rt
        .call_on(1, move |lp| {
            k2.iter()
                .map(|k| lp.shard_of(k.as_str()))
                .collect::<Vec<_>>()
        })
        .wait()
        .unwrap();
    assert_eq!(here, there, "every core and thread agrees");
    for shards in [2usize, 3, 8] {
        let mut counts = vec![0usize; shards];
        for k in &keys {
            counts[shard_of(k.as_str(), shards)] += 1;
        }
        let mean = keys.len() / shards;
        for c in &counts {
            assert!(
                c * 10 > mean * 8 && c * 10 < mean * 12,
                "{shards} shards: {counts:?}"
            );
        }
    }
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn two_loops_that_wait_on_each_other_are_refused_instead_of_deadlocking(backend: Backend) {
    let rt = std::sync::Arc::new(runtime(backend, 2));
    let (tx, rx) = mpsc::channel();
    // Each loop, at the same moment, blocks waiting for the other: refused on both.
    for (me, other) in [(0usize, 1usize), (1, 0)] {
        let (rt2, tx) = (rt.clone(), tx.clone());
        rt.handle(me)
            .add_callback(move |_| {
                let r = rt2.call_on(other, |lp| lp.shard_id()).wait();
                tx.send((me, r)).unwrap();
            })
            .unwrap();
    }
    let mut got: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(util::HANG).unwrap())
        .collect();
    got.sort_by_key(|(me, _)| *me);
    assert_eq!(
        got,
        [
            (0, Err(CallError::WouldDeadlock)),
            (1, Err(CallError::WouldDeadlock))
        ]
    );
    // The loops were never blocked: both answer now.
    assert_eq!(rt.call_on_all(|lp| lp.shard_id()).wait(), Ok(vec![0, 1]));
    std::sync::Arc::try_unwrap(rt).unwrap().shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_blocking_wait_in_setup_is_refused(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .on_start(move |lp, _| {
            let r = lp.call_on(0, |lp| lp.shard_id()).wait();
            tx.lock().unwrap().send(r).unwrap();
        })
        .build()
        .unwrap();
    assert_eq!(rx.recv().unwrap(), Err(CallError::WouldDeadlock));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_call_made_by_a_loop_before_it_runs_continues_there(backend: Backend) {
    // The loop is set up (its calls made) before start, as Tornado programs do.
    let lp = new_loop(backend);
    let (htx, hrx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let far = new_loop(backend);
        htx.send(far.handle()).unwrap();
        far.call_later(Duration::from_millis(200), |lp| lp.stop());
        far.start().unwrap();
    });
    let far_handle = hrx.recv().unwrap();
    let got = std::rc::Rc::new(std::cell::Cell::new(None));
    let g = got.clone();
    lp.call_on(&far_handle, |_| 7u8).then(move |lp, r| {
        g.set(Some(r));
        lp.stop();
    });
    run(&lp);
    t.join().unwrap();
    assert_eq!(got.take(), Some(Ok(7)));
}

#[on_both_backends]
#[test]
fn a_call_dropped_before_it_is_waited_on_sends_nothing(backend: Backend) {
    let rt = runtime(backend, 2);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    let call = rt.call_on(1, move |_| {
        r.store(true, std::sync::atomic::Ordering::SeqCst)
    });
    drop(call);
    // A later call on the same loop runs after anything sent before it.
    rt.call_on(1, |_| ()).wait().unwrap();
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "a call is lazy"
    );
    rt.shutdown().unwrap();
}
