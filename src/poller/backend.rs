//! `Backend`: which kernel interface a loop waits on.

/// Which kernel interface a loop waits on.
///
/// `Auto` (the default) takes io_uring when the kernel has it and allows it, and the
/// opcodes coreloop needs pass a probe; otherwise it falls back to epoll and logs that
/// once per process. The environment variable `CORELOOP_BACKEND=uring|epoll` overrides
/// `Auto` (and only `Auto`: a backend chosen in code is kept).
///
/// ```
/// use coreloop::{Backend, IoLoop};
/// let lp = IoLoop::with_backend(Backend::Epoll)?;
/// assert_eq!(lp.backend(), Backend::Epoll);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// io_uring if available, else epoll; `CORELOOP_BACKEND` may force either.
    #[default]
    Auto,
    /// Linux epoll: readiness, level-triggered.
    Epoll,
    /// Linux io_uring, set up with `SINGLE_ISSUER`, `DEFER_TASKRUN` and `COOP_TASKRUN`
    /// where the kernel has them.
    Uring,
}

impl Backend {
    /// Parses `"auto"`, `"epoll"` or `"uring"` (also `"io_uring"`), ignoring case.
    ///
    /// ```
    /// use coreloop::Backend;
    /// assert_eq!(Backend::parse("uring"), Some(Backend::Uring));
    /// assert_eq!(Backend::parse("kqueue"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Backend::Auto),
            "epoll" => Some(Backend::Epoll),
            "uring" | "io_uring" | "iouring" => Some(Backend::Uring),
            _ => None,
        }
    }

    /// The backend named by `CORELOOP_BACKEND`, if it is set to a known name.
    pub fn from_env() -> Option<Backend> {
        let v = std::env::var("CORELOOP_BACKEND").ok()?;
        let b = Backend::parse(&v);
        if b.is_none() {
            log::warn!("CORELOOP_BACKEND={v:?} is not one of auto, epoll, uring; ignored");
        }
        b
    }
}
