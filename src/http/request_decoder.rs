//! The server's request decoder, for a service that drives a connection itself (a
//! reverse proxy that streams request bodies): the same decoder, with the same strict
//! grammar and limits, that [`HttpServer`](super::HttpServer) reads requests with.

use super::decoder::{Decoder, Event};
use super::head::{BodyKind, Head};
use super::request::Request;
use super::response_decoder::BodyLength;
use super::HttpConfig;
use std::ops::Range;

/// A request head, as [`RequestDecoder`] found it.
#[derive(Debug)]
pub struct RequestHead {
    /// The request (its body is not in it: it comes as `Body` events).
    pub request: Request,
    /// How its body is delimited: [`BodyLength::None`], `Length` or `Chunked`.
    pub body: BodyLength,
    /// Whether the connection may carry another request after this one (HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 with `keep-alive`).
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// What [`RequestDecoder::decode`] found.
#[derive(Debug)]
pub enum RequestEvent {
    /// More bytes are needed (what was consumed so far is done with).
    NeedMore,
    /// A request head. Unless its body is [`BodyLength::None`], `Body` events and an
    /// `End` follow.
    Head(RequestHead),
    /// Body bytes (de-chunked): this range of the buffer given to `decode`.
    Body(Range<usize>),
    /// The body (and the trailers) ended: the request is complete.
    End,
    /// The request is refused with this status (400, 413, 414, 431, 501, 505); nothing
    /// after it can be trusted: answer it and close.
    Refused(u16),
}

/// One connection's request decoder: the HTTP server's own, sans-I/O. It is handed
/// the unread bytes, and says how many it consumed and what it found; it never asks to
/// keep more than a head (`max_head`) buffered, and hands body bytes out as they come.
///
/// ```
/// use coreloop::http::framing::{BodyLength, RequestDecoder, RequestEvent};
/// use coreloop::http::HttpConfig;
/// let mut d = RequestDecoder::new(&HttpConfig::default());
/// let buf = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
/// let (n, ev) = d.decode(buf);
/// let RequestEvent::Head(head) = ev else { panic!() };
/// assert_eq!((head.request.path(), head.body), ("/up", BodyLength::Length(3)));
/// let (m, ev) = d.decode(&buf[n..]);
/// assert!(matches!(ev, RequestEvent::Body(r) if &buf[n..][r.clone()] == b"abc"));
/// assert!(matches!(d.decode(&buf[n + m..]).1, RequestEvent::End));
/// // A bare LF is refused, as the server refuses it.
/// let mut d = RequestDecoder::new(&HttpConfig::default());
/// assert!(matches!(d.decode(b"GET / HTTP/1.1\nHost: a\n\n").1, RequestEvent::Refused(400)));
/// ```
#[derive(Debug)]
pub struct RequestDecoder {
    decoder: Decoder,
    cfg: HttpConfig,
}

impl RequestDecoder {
    /// A decoder with `cfg`'s limits (`max_head`, `max_uri`, `max_headers`,
    /// `max_body`).
    pub fn new(cfg: &HttpConfig) -> RequestDecoder {
        let mut cfg = cfg.clone();
        cfg.max_head = cfg.max_head.min(super::MAX_HEAD_LIMIT);
        RequestDecoder {
            decoder: Decoder::default(),
            cfg,
        }
    }

    /// True between requests: no byte of the next head has been seen (empty lines
    /// before a request line do not count).
    pub fn between_requests(&self) -> bool {
        self.decoder.between_requests()
    }

    /// Decodes from the front of `buf` (the unread bytes; what an earlier call consumed
    /// is no longer in it). Returns how many bytes were consumed, and what was found.
    /// Call again after anything but `NeedMore` (or after `NeedMore` once more bytes
    /// have arrived); after `Refused` it answers `Refused` again.
    pub fn decode(&mut self, buf: &[u8]) -> (usize, RequestEvent) {
        let mut slot = None;
        let (n, ev) = self.decoder.decode(buf, &self.cfg, &mut slot);
        let ev = match ev {
            Event::NeedMore => RequestEvent::NeedMore,
            Event::Body(r) => RequestEvent::Body(r),
            Event::End => RequestEvent::End,
            Event::Error(code) => RequestEvent::Refused(code),
            Event::Head => match slot {
                Some(Head {
                    req,
                    body,
                    keep_alive,
                    expect_continue,
                }) => RequestEvent::Head(RequestHead {
                    request: req,
                    body: match body {
                        BodyKind::None => BodyLength::None,
                        BodyKind::Length(n) => BodyLength::Length(n),
                        BodyKind::Chunked => BodyLength::Chunked,
                    },
                    keep_alive,
                    expect_continue,
                }),
                // (the decoder always fills the slot with its Head event)
                None => RequestEvent::Refused(400),
            },
        };
        (n, ev)
    }
}
