//! `Backend::Auto` falls back to epoll, logging once, when io_uring is forbidden.
//!
//! This flips the machine-wide sysctl `kernel.io_uring_disabled` to 2 (io_uring_setup
//! then fails with EPERM for everyone), so it is `#[ignore]`d: a normal, parallel test
//! run must never see io_uring vanish. `.ci/run` runs it alone, after everything else:
//! `cargo test --test fallback -- --ignored`. It needs root; elsewhere it says so and
//! passes without checking anything.
mod util;

use coreloop::{Backend, IoLoop};
use std::time::Duration;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Restores the sysctl however the test ends.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(SYSCTL, &self.0).expect("restore kernel.io_uring_disabled");
    }
}

#[test]
#[ignore = "flips a machine-wide sysctl; .ci/run runs it alone"]
fn auto_falls_back_to_epoll_when_io_uring_is_forbidden() {
    let Ok(old) = std::fs::read_to_string(SYSCTL) else {
        eprintln!("no {SYSCTL} on this kernel: nothing to check");
        return;
    };
    if std::fs::write(SYSCTL, old.trim()).is_err() {
        eprintln!("cannot write {SYSCTL} (not root?): nothing to check");
        return;
    }
    util::capture_logs();
    let _restore = Restore(old.trim().to_string());
    std::fs::write(SYSCTL, "2").unwrap();

    // Forced io_uring is an error the caller sees, not a silent switch.
    let err = IoLoop::with_backend(Backend::Uring).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");

    // Auto falls back, and the fallback works.
    for _ in 0..3 {
        let lp = IoLoop::new().unwrap();
        assert_eq!(lp.backend(), Backend::Epoll);
        lp.call_later(Duration::from_millis(1), |lp| lp.stop());
        util::run(&lp);
    }
    let lines: Vec<_> = util::logs_of_this_thread()
        .into_iter()
        .filter(|l| l.contains("falls back to epoll"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line per process: {lines:?}");
}
