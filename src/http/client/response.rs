//! `ClientResponse`: the answer to a fetch, and `BodyReading`, the next part of a
//! streamed body.

use super::error::ClientError;
use super::flight::{Flight, PartWaiter};
use crate::http::framing::ResponseHead;
use crate::reactor::IoLoop;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The answer to a fetch: its head, and its body (all of it; or, for a request made
/// with [`stream_response`](super::ClientRequest::stream_response), what came with
/// the head, the rest read with [`body_part`](Self::body_part)).
///
/// Dropping a response whose body has not all been read closes its connection (it
/// cannot be reused before the body is read): the way to stop a download.
pub struct ClientResponse {
    head: ResponseHead,
    body: Vec<u8>,
    /// A streamed body not read to its end yet.
    flight: Option<Rc<Flight>>,
}

impl ClientResponse {
    pub(super) fn new(head: ResponseHead, body: Vec<u8>, flight: Option<Rc<Flight>>) -> Self {
        ClientResponse { head, body, flight }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// Every header as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.head.headers()
    }

    /// The head: status line, headers, how the body is framed.
    pub fn head(&self) -> &ResponseHead {
        &self.head
    }

    /// The body (a streamed response: the bytes that came with the head).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the body out (a streamed response: the bytes that came with the head).
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// True once the whole body has been read: always for a buffered response; for a
    /// streamed one, once [`body_part`](Self::body_part) has given its last bytes (or
    /// all of it came with the head).
    pub fn complete(&self) -> bool {
        self.flight.as_ref().is_none_or(|f| f.st.borrow().complete)
    }

    /// The next part of a streamed body: its bytes, or an empty `Vec` at its end (as
    /// [`read_some`](crate::IoStream::read_some) answers), or the error that cut it
    /// short. Nothing is read from the server until a part is asked for. Continue with
    /// [`then`](BodyReading::then) or `.await` it.
    ///
    /// ```no_run
    /// use coreloop::http::{ClientRequest, HttpClient};
    /// # async fn f(lp: coreloop::IoLoop) -> Result<(), coreloop::http::ClientError> {
    /// let client = HttpClient::default();
    /// let req = ClientRequest::get("http://127.0.0.1:8080/big").stream_response();
    /// let resp = client.fetch(&lp, req).await?;
    /// let mut total = resp.body().len();
    /// while !resp.complete() {
    ///     total += resp.body_part().await?.len();
    /// }
    /// println!("{total} bytes");
    /// # Ok(()) }
    /// ```
    pub fn body_part(&self) -> BodyReading {
        BodyReading {
            flight: self.flight.clone(),
            waiting: false,
        }
    }
}

impl Drop for ClientResponse {
    fn drop(&mut self) {
        if let Some(f) = self.flight.take() {
            if let Some(lp) = f.lp.upgrade() {
                f.cancel(&lp);
            }
        }
    }
}

impl fmt::Debug for ClientResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientResponse")
            .field("status", &self.status())
            .field("body", &self.body.len())
            .field("complete", &self.complete())
            .finish()
    }
}

/// The next part of a streamed response body ([`ClientResponse::body_part`]): lazy,
/// given a continuation with [`then`](Self::then) or awaited.
#[must_use = "a body read does nothing until it is given a continuation with then() or awaited"]
pub struct BodyReading {
    flight: Option<Rc<Flight>>,
    waiting: bool,
}

impl BodyReading {
    /// What is there already: the end, a failure, or bytes a task's wake left.
    fn ready(&self) -> Option<Result<Vec<u8>, ClientError>> {
        let Some(f) = &self.flight else {
            return Some(Ok(Vec::new()));
        };
        let mut st = f.st.borrow_mut();
        if !st.body.is_empty() {
            return Some(Ok(std::mem::take(&mut st.body)));
        }
        if let Some(e) = &st.failed {
            return Some(Err(e.clone()));
        }
        st.complete.then(|| Ok(Vec::new()))
    }

    /// Reads the next part, then runs `then` with it on the loop, in a later step.
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, Result<Vec<u8>, ClientError>) + 'static,
    {
        let lp = self
            .flight
            .as_ref()
            .and_then(|f| f.lp.upgrade())
            .or_else(IoLoop::current);
        let Some(lp) = lp else {
            panic!("BodyReading::then off its loop's thread");
        };
        if let Some(r) = self.ready() {
            return lp.add_callback(move |lp| then(lp, r));
        }
        let Some(f) = &self.flight else { return };
        f.st.borrow_mut().part = Some(PartWaiter::Then(Box::new(then)));
        if let Some(c) = f.conn() {
            c.want_part(&lp);
        }
    }
}

impl Future for BodyReading {
    type Output = Result<Vec<u8>, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.ready() {
            self.waiting = false;
            return Poll::Ready(r);
        }
        let Some(f) = self.flight.clone() else {
            return Poll::Ready(Ok(Vec::new()));
        };
        f.st.borrow_mut().part = Some(PartWaiter::Task(cx.waker().clone()));
        if !self.waiting {
            self.waiting = true;
            if let (Some(c), Some(lp)) = (f.conn(), f.lp.upgrade()) {
                c.want_part(&lp);
            }
        }
        Poll::Pending
    }
}

impl Drop for BodyReading {
    fn drop(&mut self) {
        if self.waiting {
            if let Some(f) = &self.flight {
                let mut st = f.st.borrow_mut();
                if matches!(st.part, Some(PartWaiter::Task(_))) {
                    st.part = None;
                }
            }
        }
    }
}

impl fmt::Debug for BodyReading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyReading").finish_non_exhaustive()
    }
}
