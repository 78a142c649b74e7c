//! `HttpError`: what a handler returns when its work failed, mapped to a status.

use std::fmt;

/// A handler's failure, answered with its status (Tornado's `HTTPError`).
///
/// Handlers that return a `Result` (sync or async) answer `Err(e)` with `e`'s status:
/// `?` turns any error into one (a 500, with the error's message logged), and
/// [`HttpError::new`] gives another status. The body is `"<status>: <reason>"`; for a
/// 4xx status a message, if given, is the body instead (it tells the client what was
/// wrong with its request), while a 5xx message is only logged (it may say things about
/// the server the client should not see).
///
/// ```
/// use coreloop::http::{Application, HttpError, Route};
/// let app = Application::new().route("/n/{id}", Route::new().get(|_lp, req, mut resp| {
///     let id: u64 = req.param("id").unwrap_or("").parse()?; // not a number: 500
///     if id == 0 {
///         return Err(HttpError::new(404, "no note 0"));
///     }
///     resp.write(format!("note {id}"));
///     Ok(())
/// }));
/// # let _ = app;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HttpError {
    status: u16,
    message: String,
}

impl HttpError {
    /// An error answered with `status` (400 to 599; anything else counts as 500).
    pub fn new(status: u16, message: impl Into<String>) -> HttpError {
        HttpError {
            status: if (400..=599).contains(&status) {
                status
            } else {
                500
            },
            message: message.into(),
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Any error becomes a 500 (its message is logged, not sent): what `?` does in a
/// handler. (`HttpError` itself is not a `std::error::Error`, or this could not be.)
impl<E: std::error::Error> From<E> for HttpError {
    fn from(e: E) -> HttpError {
        HttpError::new(500, e.to_string())
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl fmt::Debug for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpError")
            .field("status", &self.status)
            .field("message", &self.message)
            .finish()
    }
}
