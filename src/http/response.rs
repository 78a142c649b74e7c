//! `Response`: status, headers and body of one answer, written when it is finished;
//! [`Parts`], what it is made of, which its connection keeps; and [`Exchange`], what
//! it needs of that connection.

use super::error::HttpError;
use super::response_head::{reason, Heads, ResponseHead};
use crate::reactor::IoLoop;
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::rc::Rc;

/// The connection a response answers on, as the response sees it: the one way from a
/// [`Response`] to the HTTP connection, which implements it. (Defined here, with what
/// uses it, so that the connection's file depends on this one and not the other way.)
pub(crate) trait Exchange {
    /// The parts of the response being made (a connection makes one at a time, and
    /// keeps them from one response to the next).
    fn parts(&self) -> &RefCell<Parts>;
    /// Ends the response: what is left of it goes out ([`Parts::write_rest`]); then the
    /// connection reads the next request, or closes once the answer has gone out.
    fn finish(&self);
    /// Sends a part of a streamed response ([`Parts::write_part`]): an error if it
    /// cannot be sent (the client has gone, the handler's deadline answered already,
    /// or the output is over its limit, which closes the connection).
    fn flush(&self) -> io::Result<()>;
    /// Cuts off a streamed response that cannot be completed: the connection closes.
    fn cut_off(&self);
    /// Room left in the output before its limit.
    fn write_room(&self) -> usize;
    /// More than the output's high-water mark waits to be sent.
    fn over_high_water(&self) -> bool;
    /// Nothing written now reaches the client (it has gone, or the connection closes).
    fn client_gone(&self) -> bool;
    /// Runs `f` once the output has drained to half its high-water mark, or the client
    /// has gone, whichever comes first.
    fn when_drained(&self, f: Box<dyn FnOnce(&IoLoop)>);
    /// What a response dropped unfinished now means.
    fn dropped(&self) -> Dropped;
    /// From now on (`true`) a response the handler drops waits for the handler's
    /// outcome ([`park`](Self::park)), or no longer (`false`, which returns the one
    /// that waits, if any).
    fn await_outcome(&self, on: bool) -> Option<Response>;
    /// Keeps a response its handler dropped while its outcome is awaited
    /// ([`Dropped::Park`]).
    fn park(&self, r: Response);
}

/// What a response dropped unfinished means, by when it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its handler is running and returns nothing that decides it: it is finished, as
    /// Tornado finishes a synchronous handler's.
    Finish,
    /// Its handler returns something that decides it (a `Result`, a future): it waits
    /// for that.
    Park,
    /// Its handler is done with it: it was abandoned (500).
    Abandoned,
}

/// What a response is made of, kept by its connection: requests on a connection are
/// answered one at a time, so one set of parts serves them all, and a response costs
/// no allocation for itself (its headers' list and a body past 32 bytes keep theirs).
#[derive(Default)]
pub(crate) struct Parts {
    status: u16,
    headers: Vec<(String, String)>,
    body: smallvec::SmallVec<[u8; 32]>,
    head_only: bool,
    keep_alive: bool,
    minor_version: u8,
    /// The head has gone out (streaming): the body follows in chunks (1.1) or raw until
    /// the connection closes (1.0).
    streaming: bool,
}

impl Parts {
    /// The parts of a new response: 200, no headers, no body.
    pub(crate) fn begin(&mut self, minor_version: u8, keep_alive: bool, head_only: bool) {
        self.status = 200;
        self.headers.clear();
        self.body.clear();
        if self.body.spilled() {
            self.body = smallvec::SmallVec::new(); // (a large body's buffer goes)
        }
        self.head_only = head_only;
        self.keep_alive = keep_alive;
        self.minor_version = minor_version;
        self.streaming = false;
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// Whether the response asks to keep the connection open.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn no_body(&self) -> bool {
        self.head_only || matches!(self.status, 100..=199 | 204 | 304)
    }

    /// Appends what is left of the response to `out`: the head (saying `keep_alive`,
    /// as the connection decided) and the body, or the rest of a streamed body.
    pub(crate) fn write_rest(&self, out: &mut Vec<u8>, heads: &Heads, keep_alive: bool) {
        if self.streaming {
            if !self.no_body() {
                if !self.body.is_empty() {
                    self.write_body_part(out);
                }
                if self.minor_version == 1 {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            return;
        }
        self.write_head(out, Some(self.body.len()), keep_alive, heads);
        if !self.no_body() {
            out.extend_from_slice(&self.body);
        }
    }

    /// Appends a part of a streamed response to `out`: its head the first time, then
    /// the body written since the last part, as a chunk (1.1) or raw (1.0).
    pub(crate) fn write_part(&mut self, out: &mut Vec<u8>, heads: &Heads) {
        if !self.streaming {
            self.streaming = true;
            if self.minor_version == 0 {
                self.keep_alive = false; // 1.0 has no chunked coding: the close ends it
            }
            self.write_head(out, None, self.keep_alive, heads);
        }
        if !self.no_body() && !self.body.is_empty() {
            self.write_body_part(out);
        }
        self.body.clear();
    }

    /// Writes the status line and headers; `content_length` `None` means streamed.
    fn write_head(
        &self,
        out: &mut Vec<u8>,
        content_length: Option<usize>,
        keep_alive: bool,
        heads: &Heads,
    ) {
        let head = ResponseHead {
            status: self.status,
            headers: &self.headers,
            keep_alive,
            minor_version: self.minor_version,
            content_length,
        };
        heads.write(&head, out);
    }

    /// Writes the body so far as one chunk (1.1) or raw (1.0, until the close).
    fn write_body_part(&self, out: &mut Vec<u8>) {
        if self.minor_version == 1 {
            let _ = write!(out, "{:x}\r\n", self.body.len());
            out.extend_from_slice(&self.body);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&self.body);
        }
    }

    /// Turns the response into an error answer with `status` (the connection closes
    /// after it, for a 5xx; a 4xx leaves it open).
    fn answer_error(&mut self, status: u16) {
        self.status = status;
        self.headers.clear();
        self.headers
            .push(("Content-Type".into(), "text/plain; charset=UTF-8".into()));
        self.body =
            smallvec::SmallVec::from_slice(format!("{status}: {}", reason(status)).as_bytes());
        if status >= 500 {
            self.keep_alive = false;
        }
    }
}

/// The response to one request. Set the status and headers, write the body, then
/// [`finish`](Response::finish) it, at once or later (keep it in a timer's closure, or
/// in the `then` of an [`IoLoop::call_on`](crate::IoLoop::call_on) to another core).
///
/// Every request gets an answer. **Dropping** a response: one its handler drops before
/// returning is finished (as Tornado finishes a synchronous handler's), and so is one an
/// async handler drops before its future is done; one dropped unfinished later (the
/// closure that held it was dropped, or forgot to finish it) answers 500 and is logged;
/// one dropped while a handler panics answers 500 and closes the connection. A handler
/// returning `Err` has its response answered with the error's status
/// ([`HttpError`]). A response not finished within
/// [`HttpConfig::handler_timeout`](super::HttpConfig::handler_timeout) (60 s by default)
/// is answered 503.
///
/// A streamed response ([`flush`](Response::flush)) has flow control: it can see that
/// the client is not keeping up ([`over_high_water`](Response::over_high_water)) and wait
/// for it ([`on_drain`](Response::on_drain)), and that the client has gone
/// ([`client_gone`](Response::client_gone)); a part that cannot be sent is reported by
/// `flush`.
///
/// The body is sent with a `Content-Length`; HEAD requests and 1xx/204/304 statuses
/// get no body. `Server`, `Date` and (unless set) `Content-Type: text/html;
/// charset=UTF-8` are added, as Tornado does.
///
/// Once finished (or answered for the handler), the methods that change it do nothing.
///
/// ```
/// use coreloop::http::{Application, Route};
/// use std::time::Duration;
/// let app = Application::new().route("/later", Route::new().get(|lp, _req, mut resp| {
///     resp.set_header("Content-Type", "text/plain");
///     lp.call_later(Duration::from_millis(10), move |_| {
///         resp.write("answered later");
///         resp.finish();
///     });
/// }));
/// # let _ = app;
/// ```
pub struct Response {
    /// The connection, until the response is finished (or answered for the handler);
    /// the parts are the connection's.
    ex: Option<Rc<dyn Exchange>>,
}

impl Response {
    /// The response to the connection's current request, whose parts it has just begun
    /// ([`Parts::begin`]).
    pub(crate) fn new(conn: Rc<dyn Exchange>) -> Response {
        Response { ex: Some(conn) }
    }

    /// Runs `f` on the parts, if the response is not finished.
    fn with_parts<R>(&self, f: impl FnOnce(&mut Parts) -> R) -> Option<R> {
        let ex = self.ex.as_ref()?;
        let mut parts = ex.parts().borrow_mut();
        Some(f(&mut parts))
    }

    /// Sends the head and what was written so far, and keeps the response open: the
    /// body is streamed with `Transfer-Encoding: chunked` (to an HTTP/1.0 client, raw
    /// until the connection closes), each later `flush` sending another chunk. Status
    /// and headers are fixed from the first flush on.
    ///
    /// ```
    /// use coreloop::http::{Application, Route};
    /// use std::time::Duration;
    /// let app = Application::new().route("/ticks", Route::new().get(|lp, _, mut resp| {
    ///     resp.write("tick 1\n");
    ///     resp.flush().unwrap();
    ///     lp.call_later(Duration::from_millis(10), move |_| {
    ///         resp.write("tick 2\n");
    ///         resp.finish(); // the last chunk
    ///     });
    /// }));
    /// # let _ = app;
    /// ```
    ///
    /// Returns an error (and logs it) when the part cannot be sent: the client has gone,
    /// or the connection's write buffer would pass its limit (the client is not reading;
    /// the connection closes). A handler that streams much should wait for
    /// [`on_drain`](Self::on_drain) whenever [`over_high_water`](Self::over_high_water).
    pub fn flush(&mut self) -> std::io::Result<()> {
        let Some(ex) = self.ex.as_ref() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the response is finished",
            ));
        };
        let (first, size) = {
            let p = ex.parts().borrow();
            (!p.streaming, p.body.len())
        };
        if first && size + HEAD_ROOM > ex.write_room() {
            // Nothing has gone out yet, and this would pass the connection's write
            // limit: the client gets a 500 rather than a cut connection.
            log::warn!(
                "coreloop: the first part of a streamed HTTP response ({size} bytes) is over the connection's write limit: answering 500"
            );
            let ex = self.ex.take().expect("checked above");
            ex.parts().borrow_mut().answer_error(500);
            ex.finish();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a streamed part of {size} bytes is over the connection's write limit: answered 500"),
            ));
        }
        let sent = ex.flush();
        if let Err(e) = &sent {
            log::warn!("coreloop: part of a streamed HTTP response not sent: {e}");
        }
        sent
    }

    /// True while more than the connection's high-water mark (1 MiB) waits to be sent:
    /// the client is slower than the handler, which should wait for
    /// [`on_drain`](Self::on_drain) before writing more.
    pub fn over_high_water(&self) -> bool {
        self.ex.as_ref().is_some_and(|ex| ex.over_high_water())
    }

    /// True once the client has gone (or the connection is closing): nothing written
    /// now reaches it, and a handler producing a stream can stop.
    pub fn client_gone(&self) -> bool {
        self.ex.as_ref().is_none_or(|ex| ex.client_gone())
    }

    /// Gives the response back to `f` once what was sent so far has drained to half the
    /// high-water mark, or once the client has gone (then
    /// [`client_gone`](Self::client_gone) is true), whichever comes first.
    ///
    /// ```
    /// use coreloop::http::{Application, Response, Route};
    /// use coreloop::IoLoop;
    ///
    /// // A 1,000-part stream that never buffers much more than the high-water mark.
    /// fn send_parts(lp: &IoLoop, mut resp: Response, next: u32) {
    ///     let mut i = next;
    ///     while i < 1000 {
    ///         if resp.client_gone() {
    ///             return; // nobody to send to: stop producing
    ///         }
    ///         if resp.over_high_water() {
    ///             return resp.on_drain(move |lp, resp| send_parts(lp, resp, i));
    ///         }
    ///         resp.write(format!("part {i}\n"));
    ///         if resp.flush().is_err() {
    ///             return;
    ///         }
    ///         i += 1;
    ///     }
    ///     resp.finish();
    /// }
    /// let app = Application::new().route("/parts", Route::new().get(|lp, _, resp| send_parts(&lp, resp, 0)));
    /// # let _ = app;
    /// ```
    pub fn on_drain<F>(self, f: F)
    where
        F: FnOnce(&IoLoop, Response) + 'static,
    {
        let Some(conn) = self.ex.clone() else {
            return;
        };
        conn.when_drained(Box::new(move |lp| f(lp, self)));
    }

    /// Sets the status code (default 200).
    pub fn set_status(&mut self, code: u16) {
        self.with_parts(|p| p.status = code);
    }

    /// The status code so far.
    pub fn status(&self) -> u16 {
        self.with_parts(|p| p.status).unwrap_or(0)
    }

    /// Sets a header, replacing any with the same name (case-insensitive). Headers the
    /// server manages (`Content-Length`, `Transfer-Encoding`, `Connection`, `Date`) are
    /// ignored here. A value with CR or LF is refused (no header injection).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if managed(name) || !valid_header(name, &value) {
            log::warn!("coreloop: header {name:?} refused by set_header");
            return;
        }
        self.with_parts(|p| {
            p.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            p.headers.push((name.to_string(), value));
        });
    }

    /// Adds a header, keeping others with the same name (as `Set-Cookie` needs).
    pub fn add_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if managed(name) || !valid_header(name, &value) {
            log::warn!("coreloop: header {name:?} refused by add_header");
            return;
        }
        self.with_parts(|p| p.headers.push((name.to_string(), value)));
    }

    /// Appends to the body.
    pub fn write(&mut self, data: impl AsRef<[u8]>) {
        let data = data.as_ref();
        self.with_parts(|p| p.body.extend_from_slice(data));
    }

    /// Sends the response. The connection then reads the next request (keep-alive) or
    /// closes once it has gone out.
    pub fn finish(mut self) {
        if let Some(ex) = self.ex.take() {
            ex.finish();
        }
    }

    /// The handler's outcome decides this response: from now on, dropped unfinished, it
    /// waits for that instead of being finished (see [`Answer`]).
    pub(crate) fn answer_later(&self) -> Answer {
        let conn = self.ex.clone();
        if let Some(c) = &conn {
            c.await_outcome(true);
        }
        Answer { conn }
    }
}

/// Room a response head takes at most, for the write-limit check of a first part.
const HEAD_ROOM: usize = 4096;

/// How a handler that returns something (a `Result`, a future) answers its request once
/// that is known: the response it dropped meanwhile waits here (instead of being
/// finished when dropped). Made by the server; a handler never names it.
#[doc(hidden)]
pub struct Answer {
    conn: Option<Rc<dyn Exchange>>,
}

impl Answer {
    /// The handler is done: `Ok` finishes the response (the one returned, or the one it
    /// dropped); `Err` answers the error's status instead, if the response is not
    /// finished yet.
    pub(crate) fn settle(mut self, outcome: Result<Option<Response>, HttpError>) {
        let Some(conn) = self.conn.take() else { return };
        let dropped = conn.await_outcome(false);
        match outcome {
            Ok(returned) => {
                if let Some(r) = returned.or(dropped) {
                    r.finish();
                }
            }
            Err(e) => {
                if e.status() >= 500 {
                    log::warn!("coreloop: HTTP handler failed: {e}");
                } else {
                    log::debug!("coreloop: HTTP handler refused the request: {e}");
                }
                match dropped.and_then(|mut r| r.ex.take()) {
                    Some(ex) => {
                        if ex.parts().borrow().streaming {
                            // Part of the answer is out: all that can be done is to cut
                            // it off.
                            ex.cut_off();
                            return;
                        }
                        {
                            let mut p = ex.parts().borrow_mut();
                            p.answer_error(e.status());
                            if e.status() < 500 && !e.message().is_empty() {
                                p.body = smallvec::SmallVec::from_slice(e.message().as_bytes());
                            }
                        }
                        ex.finish();
                    }
                    None => log::warn!(
                        "coreloop: an HTTP handler returned {e} after its response was finished or given away"
                    ),
                }
            }
        }
    }
}

impl Drop for Answer {
    /// The handler's future was dropped before it was done (its task was cancelled): the
    /// response it dropped, or drops later, answers 500.
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if let Some(r) = conn.await_outcome(false) {
            drop(r); // not in the handler any more: abandoned, 500
        }
    }
}

fn managed(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection", "date"]
        .iter()
        .any(|m| name.eq_ignore_ascii_case(m))
}

fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

impl Drop for Response {
    fn drop(&mut self) {
        let Some(ex) = self.ex.take() else { return };
        let panicking = std::thread::panicking();
        let dropped = ex.dropped();
        if !panicking && dropped == Dropped::Park {
            let conn = ex.clone();
            conn.park(Response { ex: Some(ex) });
            return;
        }
        let abandoned = !panicking && dropped == Dropped::Abandoned;
        if panicking || abandoned {
            let mut p = ex.parts().borrow_mut();
            if abandoned {
                log::warn!(
                    "coreloop: an HTTP response was dropped unfinished after its handler returned \
                     (status {}): answering 500",
                    p.status
                );
            }
            if p.streaming {
                // Part of the answer is out: all that can be done is to cut it off.
                drop(p);
                ex.cut_off();
                return;
            }
            // The work failed: answer 500 and close (the loop logs a panic).
            p.answer_error(500);
        }
        ex.finish();
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status())
            .field("finished", &self.ex.is_none())
            .finish()
    }
}
