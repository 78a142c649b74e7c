//! `Application`: routes (path patterns with captures) to handlers per HTTP method.

use super::error::HttpError;
use super::request::{Request, GET, HEAD, STANDARD_METHODS};
use super::response::{Answer, Response};
use crate::reactor::IoLoop;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A request handler, as the server calls it (every kind of handler becomes one).
pub(crate) type Handler = Arc<dyn Fn(&IoLoop, Request, Response) + Send + Sync + 'static>;

/// The handlers of one path, by method.
///
/// A handler gets the loop, the request and the response to fill; it runs on the core
/// that accepted the connection (the application is shared by every core, hence
/// `Send + Sync`). One registration takes every kind of handler, told apart by what it
/// returns:
///
/// | the handler returns | the response is |
/// |---|---|
/// | `()` | finished when the handler drops it (or later, by whoever the handler gave it to: a timer, a [`Call`](crate::Call)'s continuation) |
/// | `Result<(), HttpError>` | the same on `Ok`; on `Err(e)`, answered with `e`'s status, unless it was finished already |
/// | a future of `Response`, `()`, `Result<Response, HttpError>` or `Result<(), HttpError>` (an `async` block) | the same, once the future is done; it runs on the connection's loop, need not be `Send`, and is polled at once, so one that does not wait costs no extra turn of the loop |
///
/// `?` works in the handlers that return a `Result`: any error becomes a 500 (logged),
/// and [`HttpError::new`] gives another status. A panic answers 500 in every kind.
///
/// ```
/// use coreloop::http::{HttpError, Route};
/// use std::time::Duration;
/// let r = Route::new()
///     .get(|_lp, _req, mut resp| resp.write("list"))
///     .post(|_lp, req, mut resp| { resp.set_status(201); resp.write(req.body()); })
///     .put(|lp, req, mut resp| async move {
///         coreloop::sleep(Duration::from_millis(1)).await;
///         let shard = lp.call_on(0, |far| far.shard_id()).await?; // a CallError is a 500
///         if req.body().is_empty() {
///             return Err(HttpError::new(400, "an empty body"));
///         }
///         resp.write(format!("stored on {shard}"));
///         Ok(resp)
///     });
/// assert_eq!(r.allowed(), "GET, HEAD, POST, PUT");
/// ```
#[derive(Clone, Default)]
pub struct Route {
    methods: Vec<(String, Handler)>,
    /// Where in `methods` each of the standard methods is (by its index in
    /// `STANDARD_METHODS`): found without comparing names.
    standard: [Option<u8>; STANDARD_METHODS.len()],
}

mod sealed {
    pub trait Sealed<M> {}
}

/// What a handler may return (see [`Route`]): `()`, `Result<(), HttpError>`, or a
/// future of `Response`, `()`, `Result<Response, HttpError>` or `Result<(), HttpError>`.
/// `M` tells the kinds apart; it is inferred.
pub trait HandlerReturn<M>: sealed::Sealed<M> + 'static {
    #[doc(hidden)]
    /// Whether the response the handler drops waits for what the handler returns
    /// (instead of being finished as it is dropped).
    const WAITS: bool;
    #[doc(hidden)]
    fn settle(self, lp: &IoLoop, answer: Answer);
}

/// What an async handler's future may resolve to (see [`Route`]).
pub trait AsyncReturn: 'static {
    #[doc(hidden)]
    fn settle(self, answer: Answer);
}

/// The kinds of handler (the `M` of [`HandlerReturn`]).
#[doc(hidden)]
pub enum Plain {}
#[doc(hidden)]
pub enum Fallible {}
#[doc(hidden)]
pub enum Async {}

impl sealed::Sealed<Plain> for () {}
impl HandlerReturn<Plain> for () {
    const WAITS: bool = false;
    fn settle(self, _: &IoLoop, _: Answer) {}
}

impl sealed::Sealed<Fallible> for Result<(), HttpError> {}
impl HandlerReturn<Fallible> for Result<(), HttpError> {
    const WAITS: bool = true;
    fn settle(self, _: &IoLoop, answer: Answer) {
        answer.settle(self.map(|()| None));
    }
}

impl<F: Future + 'static> sealed::Sealed<Async> for F where F::Output: AsyncReturn {}
impl<F: Future + 'static> HandlerReturn<Async> for F
where
    F::Output: AsyncReturn,
{
    const WAITS: bool = true;
    fn settle(self, lp: &IoLoop, answer: Answer) {
        // Polled here first, inside the dispatch (under its panic guard): a handler
        // that does not wait costs one allocation, not a task. One that waits becomes
        // a task, polled again from the run queue with its own waker (a future
        // registers the waker of its latest poll, so the first poll's no-op waker is
        // never the one that matters). The answer goes with the future: a task dropped
        // unfinished answers 500.
        let mut fut = Box::pin(self);
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => out.settle(answer),
            Poll::Pending => lp.spawn(async move { fut.await.settle(answer) }).detach(),
        }
    }
}

impl AsyncReturn for Response {
    fn settle(self, answer: Answer) {
        answer.settle(Ok(Some(self)));
    }
}

impl AsyncReturn for () {
    fn settle(self, answer: Answer) {
        answer.settle(Ok(None));
    }
}

impl AsyncReturn for Result<Response, HttpError> {
    fn settle(self, answer: Answer) {
        answer.settle(self.map(Some));
    }
}

impl AsyncReturn for Result<(), HttpError> {
    fn settle(self, answer: Answer) {
        answer.settle(self.map(|()| None));
    }
}

impl Route {
    /// A route with no methods yet.
    pub fn new() -> Route {
        Route::default()
    }

    /// Handles `method` (any token, e.g. `"PROPFIND"`) with `h`, of any kind (see
    /// [`Route`]).
    pub fn method<F, R, M>(mut self, method: &str, h: F) -> Route
    where
        F: Fn(IoLoop, Request, Response) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
    {
        let m = method.to_ascii_uppercase();
        assert!(
            self.methods.len() < 255,
            "a route handles at most 254 methods"
        );
        let handler: Handler = Arc::new(move |lp: &IoLoop, req: Request, resp: Response| {
            if R::WAITS {
                let answer = resp.answer_later();
                h(lp.clone(), req, resp).settle(lp, answer);
            } else {
                h(lp.clone(), req, resp);
            }
        });
        self.methods.retain(|(x, _)| *x != m);
        self.methods.push((m, handler));
        self.standard = std::array::from_fn(|i| {
            let at = self
                .methods
                .iter()
                .position(|(x, _)| x == STANDARD_METHODS[i]);
            at.map(|at| at as u8)
        });
        self
    }

    /// Handles GET (and HEAD, with the body left out, unless HEAD has its own handler).
    pub fn get<F, R, M>(self, h: F) -> Route
    where
        F: Fn(IoLoop, Request, Response) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
    {
        self.method("GET", h)
    }

    /// Handles POST.
    pub fn post<F, R, M>(self, h: F) -> Route
    where
        F: Fn(IoLoop, Request, Response) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
    {
        self.method("POST", h)
    }

    /// Handles PUT.
    pub fn put<F, R, M>(self, h: F) -> Route
    where
        F: Fn(IoLoop, Request, Response) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
    {
        self.method("PUT", h)
    }

    /// Handles DELETE.
    pub fn delete<F, R, M>(self, h: F) -> Route
    where
        F: Fn(IoLoop, Request, Response) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
    {
        self.method("DELETE", h)
    }

    /// The handler for `req`'s method, and whether it is GET standing in for HEAD.
    pub(crate) fn handler(&self, req: &Request) -> Option<(&Handler, bool)> {
        let at = |i: Option<u8>| i.map(|i| &self.methods[usize::from(i)].1);
        match req.standard_method() {
            Some(HEAD) => match at(self.standard[usize::from(HEAD)]) {
                Some(h) => Some((h, false)),
                None => at(self.standard[usize::from(GET)]).map(|h| (h, true)),
            },
            Some(i) => at(self.standard[usize::from(i)]).map(|h| (h, false)),
            None => {
                let method = req.method();
                let (_, h) = self.methods.iter().find(|(m, _)| m == method)?;
                Some((h, false))
            }
        }
    }

    /// The `Allow` header's value: the methods handled, sorted (HEAD with GET).
    pub fn allowed(&self) -> String {
        let mut m: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        if m.contains(&"GET") && !m.contains(&"HEAD") {
            m.push("HEAD");
        }
        m.sort_unstable();
        m.join(", ")
    }
}

/// Routes to handlers, Tornado's `Application`. Patterns are matchit's: `/user/{id}`
/// captures a segment, `/static/{*path}` the rest of the path; captures are in
/// [`Request::param`].
///
/// ```
/// use coreloop::http::{Application, Route};
/// let app = Application::new()
///     .route("/", Route::new().get(|_, _, mut resp| resp.write("Hello, world")))
///     .route("/user/{id}", Route::new().get(|_, req, mut resp| {
///         let id = req.param("id").unwrap_or("?").to_string();
///         resp.write(format!("user {id}"));
///     }));
/// # let _ = app;
/// ```
#[derive(Clone, Default)]
pub struct Application {
    router: matchit::Router<usize>,
    /// The patterns without captures (most), sorted: a path is looked for among them
    /// by its bytes before the router is asked.
    exact: Vec<(&'static [u8], usize)>,
    routes: Vec<Route>,
    /// The patterns, by route index (kept for the program's life: metrics name routes
    /// by them on every request, without copying).
    patterns: Vec<&'static str>,
}

impl Application {
    /// An application with no routes (every request gets 404).
    pub fn new() -> Application {
        Application::default()
    }

    /// Adds a route. Panics on an invalid or conflicting pattern: routes are fixed at
    /// start-up, so a bad one is a programming error (use [`try_route`](Self::try_route)
    /// to handle it instead).
    pub fn route(self, pattern: &str, route: Route) -> Application {
        match self.try_route(pattern, route) {
            Ok(app) => app,
            Err(e) => panic!("route {pattern:?}: {e}"),
        }
    }

    /// Adds a route, or says why the pattern is invalid or conflicts with another.
    pub fn try_route(mut self, pattern: &str, route: Route) -> Result<Application, String> {
        self.router
            .insert(pattern, self.routes.len())
            .map_err(|e| e.to_string())?;
        let pattern: &'static str = Box::leak(pattern.to_owned().into_boxed_str());
        if !pattern.contains(['{', '}']) {
            // (The router prefers a static segment to a capture, so a path equal to a
            // pattern without captures is routed to that pattern either way.)
            self.exact.push((pattern.as_bytes(), self.routes.len()));
            self.exact.sort_unstable();
        }
        self.routes.push(route);
        self.patterns.push(pattern);
        Ok(self)
    }

    /// The route matching `path`; its captures are appended to `captures`. (An out
    /// parameter rather than a returned `Vec`: returning one, empty for most routes,
    /// cost a 16-byte reload of the three words just stored, a failed store forward,
    /// on every request: 1% of a pipelined hello server's CPU in `perf`.)
    pub(crate) fn find(
        &self,
        path: &[u8],
        captures: &mut Vec<(String, String)>,
    ) -> Option<(usize, &Route)> {
        let exact = if self.exact.len() <= 8 {
            // (A few: one look each, the length first.)
            self.exact.iter().find(|(p, _)| *p == path).map(|(_, i)| *i)
        } else {
            let at = self.exact.binary_search_by(|(p, _)| (*p).cmp(path));
            at.ok().map(|at| self.exact[at].1)
        };
        if let Some(index) = exact {
            return Some((index, &self.routes[index]));
        }
        let m = self.router.at(std::str::from_utf8(path).ok()?).ok()?;
        captures.extend(m.params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Some((*m.value, &self.routes[*m.value]))
    }

    /// The route patterns, by route index.
    pub(crate) fn patterns(&self) -> &[&'static str] {
        &self.patterns
    }
}

impl fmt::Debug for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Application")
            .field("routes", &self.routes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths equal to a pattern without captures are looked up by their bytes; the
    /// router gives the same route for every path.
    #[test]
    fn exact_patterns_route_as_the_router_does() {
        let patterns = [
            "/",
            "/a",
            "/a/b",
            "/{id}",
            "/a/{id}",
            "/b/{*rest}",
            "/b/c",
            "/x{{y}}",
            "/users/me",
            "/users/{name}",
        ];
        let mut app = Application::new();
        let mut router = matchit::Router::new();
        for (i, p) in patterns.iter().enumerate() {
            app = app.route(p, Route::new());
            router.insert(*p, i).unwrap();
        }
        let paths = [
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/a/c",
            "/b",
            "/b/c",
            "/b/c/d",
            "/x{y}",
            "/users/me",
            "/users/you",
            "/users",
            "/zz",
            "",
            "/A",
        ];
        for path in paths {
            let mut caps = Vec::new();
            let got = app.find(path.as_bytes(), &mut caps).map(|(i, _)| i);
            let want = router.at(path).ok().map(|m| *m.value);
            assert_eq!(got, want, "{path:?}");
        }
    }

    /// Standard methods are found by index, others by name; HEAD falls back to GET.
    #[test]
    fn handlers_by_method() {
        use crate::http::head::parse_head;
        let noop = |_: IoLoop, _: Request, _: Response| {};
        let r = Route::new().get(noop).method("propfind", noop).post(noop);
        let cfg = crate::http::HttpConfig::default();
        for (line, want) in [
            ("GET", Some(false)),
            ("HEAD", Some(true)),
            ("POST", Some(false)),
            ("PROPFIND", Some(false)),
            ("PUT", None),
            ("get", None),
            ("PROPFINDX", None),
        ] {
            let head = format!("{line} / HTTP/1.1\r\nHost: x\r\n\r\n");
            let req = parse_head(head.as_bytes(), &cfg)
                .unwrap()
                .into_head(head.as_bytes())
                .req;
            assert_eq!(r.handler(&req).map(|(_, via_get)| via_get), want, "{line}");
        }
        let with_head = r.method("HEAD", noop);
        let head = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
        let req = parse_head(head, &cfg).unwrap().into_head(head).req;
        assert_eq!(with_head.handler(&req).map(|(_, g)| g), Some(false));
    }
}
