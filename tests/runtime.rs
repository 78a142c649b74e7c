//! Runtime: cores and pinning, setup closures, broadcast and gather, shutdown, and
//! panics reported on join.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, CallError, Cores, Runtime, RuntimeError, ShardError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn cores_here() -> Vec<usize> {
    let n = std::thread::available_parallelism().unwrap().get();
    (0..n).collect()
}

#[on_both_backends]
#[test]
fn one_loop_per_core_by_default_each_pinned(backend: Backend) {
    util::capture_logs();
    let setups = Arc::new(Mutex::new(Vec::new()));
    let s = setups.clone();
    let rt = Runtime::builder()
        .backend(backend)
        .on_start(move |lp, shard| {
            s.lock()
                .unwrap()
                .push((shard, lp.shard_id(), lp.backend(), util::cpus_allowed()));
        })
        .build()
        .unwrap();
    assert_eq!(rt.shards(), cores_here().len());
    // Answers also prove every setup closure ran before (it runs before start()).
    let pins = rt.call_on_all(|_| util::cpus_allowed()).wait().unwrap();
    let expected: Vec<String> = cores_here().iter().map(|c| c.to_string()).collect();
    assert_eq!(pins, expected, "each shard pinned to its own core");
    let mut setups = setups.lock().unwrap().clone();
    setups.sort_by_key(|s| s.0);
    assert_eq!(setups.len(), rt.shards());
    for (i, (shard, id, b, cpus)) in setups.iter().enumerate() {
        assert_eq!((*shard, *id, *b), (i, i, backend));
        assert_eq!(cpus, &i.to_string());
    }
    // Why that many: logged at start, and in the metrics.
    let chosen = rt
        .stats()
        .wait()
        .unwrap()
        .cores_chosen
        .expect("a runtime's choice");
    assert_eq!(chosen.loops, rt.shards());
    assert!(
        matches!(chosen.reason, "affinity" | "cpu_quota"),
        "{chosen:?}"
    );
    let said = format!("coreloop: {} loops ({}): ", rt.shards(), chosen.reason);
    let logs = util::logs_of_this_thread();
    assert!(
        logs.iter()
            .any(|l| l.contains(&said) && l.contains("affinity mask")),
        "{logs:?}"
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn count_and_list_choose_the_cores(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(3))
        .build()
        .unwrap();
    let ids = rt
        .call_on_all(|lp| (lp.shard_id(), lp.shard_count()))
        .wait()
        .unwrap();
    assert_eq!(ids, vec![(0, 3), (1, 3), (2, 3)]);
    rt.shutdown().unwrap();

    let last = *cores_here().last().unwrap();
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::List(vec![last]))
        .build()
        .unwrap();
    assert_eq!(
        rt.call_on_all(|_| util::cpus_allowed()).wait().unwrap(),
        vec![last.to_string()]
    );
    rt.shutdown().unwrap();

    let bad = Runtime::builder()
        .backend(backend)
        .cores(Cores::List(vec![100_000]))
        .build();
    assert!(bad.is_err());
    assert!(Runtime::builder().cores(Cores::Count(0)).build().is_err());
}

#[on_both_backends]
#[test]
fn unpinned_loops_may_run_anywhere(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .pin(false)
        .build()
        .unwrap();
    let all = util::cpus_allowed();
    assert_eq!(
        rt.call_on_all(|_| util::cpus_allowed()).wait().unwrap(),
        vec![all.clone(), all]
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn call_on_all_reaches_every_loop(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(4))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    rt.call_on_all(move |lp| tx.lock().unwrap().send(lp.shard_id()).unwrap())
        .wait()
        .unwrap();
    let mut got: Vec<usize> = (0..4)
        .map(|_| rx.recv_timeout(util::HANG).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3]);
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn loops_talk_to_each_other_with_call_on(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    let other = rt.handle(1).clone();
    let (tx, rx) = mpsc::channel();
    rt.handle(0)
        .add_callback(move |lp| {
            lp.call_on(&other, |b| b.shard_id() * 10 + 7)
                .then(move |a, answer| {
                    tx.send((a.shard_id(), answer)).unwrap();
                });
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(util::HANG).unwrap(), (0, Ok(17)));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn gather_from_inside_a_loop_is_refused(backend: Backend) {
    let rt = Arc::new(
        Runtime::builder()
            .backend(backend)
            .cores(Cores::Count(2))
            .build()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let rt2 = rt.clone();
    rt.handle(0)
        .add_callback(move |_| {
            let r = rt2.call_on_all(|lp| lp.shard_id()).wait();
            // Drop the runtime clone here, before answering, so the test can unwrap it.
            drop(rt2);
            tx.send(matches!(r, Err(CallError::WouldDeadlock))).unwrap();
        })
        .unwrap();
    assert!(rx.recv_timeout(util::HANG).unwrap());
    Arc::try_unwrap(rt).unwrap().shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_panicking_gather_callback_is_reported_and_the_loop_survives(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    let r = rt
        .call_on_all(|lp| {
            if lp.shard_id() == 1 {
                panic!("shard 1 refuses");
            }
            lp.shard_id()
        })
        .wait();
    match r {
        Err(CallError::Panicked(m)) => assert_eq!(m, "shard 1 refuses"),
        other => panic!("expected the panic's message, got {other:?}"),
    }
    // The loop caught the panic and still answers.
    assert_eq!(
        rt.call_on_all(|lp| lp.shard_id()).wait().unwrap(),
        vec![0, 1]
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_panic_or_an_error_in_setup_fails_build_with_its_message(backend: Backend) {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let err = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .on_start(move |_, shard| {
            s.fetch_add(1, Ordering::SeqCst);
            if shard == 1 {
                panic!("setup of shard 1 failed");
            }
        })
        .build()
        .expect_err("a panicking setup must fail build");
    let msg = err.to_string();
    assert!(
        msg.contains("shard 1") && msg.contains("setup of shard 1 failed"),
        "{msg}"
    );
    assert_eq!(started.load(Ordering::SeqCst), 2, "both setups ran");
    // An error returned by a setup, likewise; the message names the shard.
    let err = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .on_start(|_, shard| {
            if shard == 0 {
                Err(format!("no configuration for shard {shard}"))
            } else {
                Ok(())
            }
        })
        .build()
        .expect_err("a failing setup must fail build");
    assert!(
        err.to_string()
            .contains("shard 0: setup failed: no configuration for shard 0"),
        "{err}"
    );
    match err {
        RuntimeError::Shards(f) => assert!(matches!(&f[..], [(0, ShardError::Setup(_))])),
        other => panic!("expected a shard's setup failure, got {other:?}"),
    }
}

#[on_both_backends]
#[test]
fn setup_sees_every_shard_and_builds_per_core_state(backend: Backend) {
    struct Config {
        name: String,
        peers: usize,
    }
    let prefix = String::from("store"); // configuration the state is built from
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .on_start(move |lp, shard| {
            let peers = (0..lp.shard_count())
                .filter(|&i| lp.shard_handle(i).is_some())
                .count();
            lp.set_local(Config {
                name: format!("{prefix}-{shard}"),
                peers,
            });
        })
        .build()
        .unwrap();
    let got = rt
        .call_on_all(|lp| {
            let c = lp.get_local::<Config>().expect("set in setup");
            (c.name.clone(), c.peers)
        })
        .wait()
        .unwrap();
    assert_eq!(got, vec![("store-0".into(), 2), ("store-1".into(), 2)]);
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn shutdown_stops_every_loop_and_closes_the_handles(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    let handles = rt.handles().to_vec();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    rt.call_on_all(move |lp| {
        let t = t.clone();
        lp.call_later(Duration::from_secs(3600), move |_| {
            t.fetch_add(1, Ordering::Relaxed);
        });
    })
    .wait()
    .unwrap();
    rt.shutdown().unwrap();
    for h in &handles {
        assert!(h.is_closed());
        assert!(h.add_callback(|_| {}).is_err());
    }
    assert_eq!(ticks.load(Ordering::Relaxed), 0);
}

#[on_both_backends]
#[test]
fn dropping_a_runtime_stops_it(backend: Backend) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap();
    let h = rt.handle(0).clone();
    drop(rt);
    assert!(h.is_closed());
}
