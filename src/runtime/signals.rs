//! SIGINT and SIGTERM: the signals that ask a coreloop program to stop.
//!
//! Handlers are registered through signal-hook (signal-safe registration is subtle, and
//! it is the crate the ecosystem trusts for it); a signal is then read on an ordinary
//! thread, never inside a loop.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io;
use std::thread::JoinHandle;

fn stop_signals() -> io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM])
}

/// A thread that runs a closure at the first SIGINT or SIGTERM.
pub(crate) struct SignalWatcher {
    handle: signal_hook::iterator::Handle,
    thread: JoinHandle<()>,
}

impl SignalWatcher {
    pub(crate) fn start(on_signal: impl FnOnce(i32) + Send + 'static) -> io::Result<SignalWatcher> {
        let mut signals = stop_signals()?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("coreloop-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    on_signal(sig);
                }
            })?;
        Ok(SignalWatcher { handle, thread })
    }

    /// Stops watching and joins the thread.
    pub(crate) fn close(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}
