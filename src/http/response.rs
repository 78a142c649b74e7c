//! `Response`: status, headers and body of one answer, written when it is finished;
//! and [`Exchange`], what it needs of the connection it answers on.

use super::error::HttpError;
use super::response_head::{reason, Heads, ResponseHead};
use crate::reactor::IoLoop;
use std::fmt;
use std::io::{self, Write};
use std::rc::Rc;

/// The connection a response answers on, as the response sees it: the one way from a
/// [`Response`] to the HTTP connection, which implements it. (Defined here, with what
/// uses it, so that the connection's file depends on this one and not the other way.)
pub(crate) trait Exchange {
    /// Ends the response: `write` appends what is left of it to the connection's
    /// output, given the loop's heads (for this second's date) and whether the
    /// connection stays open after it (as `keep_alive` asks, unless the server is
    /// shutting down); then the connection reads the next request, or closes once the
    /// answer has gone out.
    fn finish(
        &self,
        status: u16,
        keep_alive: bool,
        write: &mut dyn FnMut(&mut Vec<u8>, &Heads, bool),
    );
    /// Writes part of a streamed response: an error if it cannot be sent (the client
    /// has gone, the handler's deadline answered already, or the output is over its
    /// limit, which closes the connection).
    fn write_part(&self, write: &mut dyn FnMut(&mut Vec<u8>, &Heads)) -> io::Result<()>;
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

/// The response to one request. Set the status and headers, write the body, then
/// [`finish`](Response::finish) it, at once or later (keep it in a timer's closure, or
/// in the `then` of an [`IoLoop::submit_to`](crate::IoLoop::submit_to) to another core).
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
    st: Option<State>,
}

struct State {
    conn: Rc<dyn Exchange>,
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

impl Response {
    pub(crate) fn new(
        conn: Rc<dyn Exchange>,
        minor_version: u8,
        keep_alive: bool,
        head_only: bool,
    ) -> Response {
        Response {
            st: Some(State {
                conn,
                status: 200,
                headers: Vec::new(),
                body: smallvec::SmallVec::new(),
                head_only,
                keep_alive,
                minor_version,
                streaming: false,
            }),
        }
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
        let Some(st) = self.st.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the response is finished",
            ));
        };
        let no_body = st.head_only || matches!(st.status, 100..=199 | 204 | 304);
        let first = !st.streaming;
        if first && st.body.len() + HEAD_ROOM > st.conn.write_room() {
            // Nothing has gone out yet, and this would pass the connection's write
            // limit: the client gets a 500 rather than a cut connection.
            let size = st.body.len();
            log::warn!(
                "coreloop: the first part of a streamed HTTP response ({size} bytes) is over the connection's write limit: answering 500"
            );
            let mut st = self.st.take().expect("checked above");
            answer_error(&mut st, 500);
            send(st);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a streamed part of {size} bytes is over the connection's write limit: answered 500"),
            ));
        }
        if first {
            st.streaming = true;
            if st.minor_version == 0 {
                st.keep_alive = false; // 1.0 has no chunked coding: the close ends it
            }
        }
        let st = &*st;
        let sent = st.conn.write_part(&mut |out, heads| {
            if first {
                write_head(st, out, None, st.keep_alive, heads);
            }
            if !no_body && !st.body.is_empty() {
                write_body_part(st, out);
            }
        });
        if let Some(st) = self.st.as_mut() {
            st.body.clear();
        }
        if let Err(e) = &sent {
            log::warn!("coreloop: part of a streamed HTTP response not sent: {e}");
        }
        sent
    }

    /// True while more than the connection's high-water mark (1 MiB) waits to be sent:
    /// the client is slower than the handler, which should wait for
    /// [`on_drain`](Self::on_drain) before writing more.
    pub fn over_high_water(&self) -> bool {
        self.st.as_ref().is_some_and(|s| s.conn.over_high_water())
    }

    /// True once the client has gone (or the connection is closing): nothing written
    /// now reaches it, and a handler producing a stream can stop.
    pub fn client_gone(&self) -> bool {
        self.st.as_ref().is_none_or(|s| s.conn.client_gone())
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
        let Some(conn) = self.st.as_ref().map(|s| s.conn.clone()) else {
            return;
        };
        conn.when_drained(Box::new(move |lp| f(lp, self)));
    }

    /// Sets the status code (default 200).
    pub fn set_status(&mut self, code: u16) {
        if let Some(st) = self.st.as_mut() {
            st.status = code;
        }
    }

    /// The status code so far.
    pub fn status(&self) -> u16 {
        self.st.as_ref().map_or(0, |s| s.status)
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
        if let Some(st) = self.st.as_mut() {
            st.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            st.headers.push((name.to_string(), value));
        }
    }

    /// Adds a header, keeping others with the same name (as `Set-Cookie` needs).
    pub fn add_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if managed(name) || !valid_header(name, &value) {
            log::warn!("coreloop: header {name:?} refused by add_header");
            return;
        }
        if let Some(st) = self.st.as_mut() {
            st.headers.push((name.to_string(), value));
        }
    }

    /// Appends to the body.
    pub fn write(&mut self, data: impl AsRef<[u8]>) {
        if let Some(st) = self.st.as_mut() {
            st.body.extend_from_slice(data.as_ref());
        }
    }

    /// Sends the response. The connection then reads the next request (keep-alive) or
    /// closes once it has gone out.
    pub fn finish(mut self) {
        if let Some(st) = self.st.take() {
            send(st);
        }
    }

    /// The handler's outcome decides this response: from now on, dropped unfinished, it
    /// waits for that instead of being finished (see [`Answer`]).
    pub(crate) fn answer_later(&self) -> Answer {
        let conn = self.st.as_ref().map(|s| s.conn.clone());
        if let Some(c) = &conn {
            c.await_outcome(true);
        }
        Answer { conn }
    }
}

/// Room a response head takes at most, for the write-limit check of a first part.
const HEAD_ROOM: usize = 4096;

/// Turns a response into an error answer with `status` (the connection closes after
/// it, for a 5xx; a 4xx leaves it open).
fn answer_error(st: &mut State, status: u16) {
    st.status = status;
    st.headers.clear();
    st.headers
        .push(("Content-Type".into(), "text/plain; charset=UTF-8".into()));
    st.body = smallvec::SmallVec::from_slice(format!("{status}: {}", reason(status)).as_bytes());
    if status >= 500 {
        st.keep_alive = false;
    }
}

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
                match dropped {
                    Some(mut r) => {
                        if let Some(mut st) = r.st.take() {
                            if st.streaming {
                                // Part of the answer is out: all that can be done is to
                                // cut it off.
                                st.conn.cut_off();
                                return;
                            }
                            answer_error(&mut st, e.status());
                            if e.status() < 500 && !e.message().is_empty() {
                                st.body = smallvec::SmallVec::from_slice(e.message().as_bytes());
                            }
                            send(st);
                        }
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

/// Writes the status line and headers; `content_length` `None` means streamed.
fn write_head(
    st: &State,
    out: &mut Vec<u8>,
    content_length: Option<usize>,
    keep_alive: bool,
    heads: &Heads,
) {
    let head = ResponseHead {
        status: st.status,
        headers: &st.headers,
        keep_alive,
        minor_version: st.minor_version,
        content_length,
    };
    heads.write(&head, out);
}

/// Writes the body so far as one chunk (1.1) or raw (1.0, until the close).
fn write_body_part(st: &State, out: &mut Vec<u8>) {
    if st.minor_version == 1 {
        let _ = write!(out, "{:x}\r\n", st.body.len());
        out.extend_from_slice(&st.body);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(&st.body);
    }
}

/// Serializes the rest of the response into the connection's stream.
fn send(st: State) {
    let no_body = st.head_only || matches!(st.status, 100..=199 | 204 | 304);
    // (A streamed response's head went out with its first part: its keep-alive stands.)
    let keep_alive = st.keep_alive;
    st.conn
        .finish(st.status, keep_alive, &mut |out, heads, keep_alive| {
            if st.streaming {
                if !no_body {
                    if !st.body.is_empty() {
                        write_body_part(&st, out);
                    }
                    if st.minor_version == 1 {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                }
            } else {
                write_head(&st, out, Some(st.body.len()), keep_alive, heads);
                if !no_body {
                    out.extend_from_slice(&st.body);
                }
            }
        });
}

impl Drop for Response {
    fn drop(&mut self) {
        let Some(mut st) = self.st.take() else { return };
        let panicking = std::thread::panicking();
        let dropped = st.conn.dropped();
        if !panicking && dropped == Dropped::Park {
            let conn = st.conn.clone();
            conn.park(Response { st: Some(st) });
            return;
        }
        let abandoned = !panicking && dropped == Dropped::Abandoned;
        if abandoned {
            log::warn!(
                "coreloop: an HTTP response was dropped unfinished after its handler returned \
                 (status {}): answering 500",
                st.status
            );
        }
        if (panicking || abandoned) && st.streaming {
            // Part of the answer is out: all that can be done is to cut it off.
            st.conn.cut_off();
            return;
        }
        if panicking || abandoned {
            // The work failed: answer 500 and close (the loop logs a panic).
            answer_error(&mut st, 500);
        }
        send(st);
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status())
            .field("finished", &self.st.is_none())
            .finish()
    }
}
