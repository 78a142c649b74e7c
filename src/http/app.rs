//! `Application`: routes (path patterns with captures) to handlers per HTTP method.

use super::request::Request;
use super::response::Response;
use crate::reactor::IoLoop;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A request handler: gets the loop, the request and the response to fill. It may
/// finish the response at once (or simply return: dropping a response finishes it), or
/// keep it and finish it later, from a timer or from a callback sent back by another
/// core (Tornado's asynchronous handlers). It runs on the core that accepted the
/// connection; the application is shared by every core, hence `Send + Sync`.
pub type Handler = Arc<dyn Fn(&IoLoop, Request, Response) + Send + Sync + 'static>;

/// The handlers of one path, by method.
///
/// ```
/// use coreloop::http::Route;
/// let r = Route::new()
///     .get(|_, _, mut resp| resp.write("list"))
///     .post(|_, req, mut resp| { resp.set_status(201); resp.write(req.body()); });
/// assert_eq!(r.allowed(), "GET, HEAD, POST");
/// ```
#[derive(Clone, Default)]
pub struct Route {
    methods: Vec<(String, Handler)>,
}

impl Route {
    /// A route with no methods yet.
    pub fn new() -> Route {
        Route::default()
    }

    /// Handles `method` (any token, e.g. `"PROPFIND"`) with `h`.
    pub fn method<F>(mut self, method: &str, h: F) -> Route
    where
        F: Fn(&IoLoop, Request, Response) + Send + Sync + 'static,
    {
        let m = method.to_ascii_uppercase();
        self.methods.retain(|(x, _)| *x != m);
        self.methods.push((m, Arc::new(h)));
        self
    }

    /// Handles GET (and HEAD, with the body left out, unless HEAD has its own handler).
    pub fn get<F>(self, h: F) -> Route
    where
        F: Fn(&IoLoop, Request, Response) + Send + Sync + 'static,
    {
        self.method("GET", h)
    }

    /// Handles POST.
    pub fn post<F>(self, h: F) -> Route
    where
        F: Fn(&IoLoop, Request, Response) + Send + Sync + 'static,
    {
        self.method("POST", h)
    }

    /// Handles PUT.
    pub fn put<F>(self, h: F) -> Route
    where
        F: Fn(&IoLoop, Request, Response) + Send + Sync + 'static,
    {
        self.method("PUT", h)
    }

    /// Handles DELETE.
    pub fn delete<F>(self, h: F) -> Route
    where
        F: Fn(&IoLoop, Request, Response) + Send + Sync + 'static,
    {
        self.method("DELETE", h)
    }

    /// Handles `method` with an async handler: `h` gets the request and the response,
    /// and its future resolves to the response (finished then, unless it already was).
    /// The future runs on the connection's loop and need not be `Send`; it is polled at
    /// once, so a handler that does not wait costs no extra turn of the loop. It may
    /// await anything (a sleep, a call to another core, a stream) and stream its answer
    /// across awaits. A panic in it answers 500, as in a callback handler.
    ///
    /// ```
    /// use coreloop::http::{Application, Route};
    /// use std::time::Duration;
    /// let app = Application::new().route("/slow", Route::new().method_async("GET", |_req, mut resp| async move {
    ///     coreloop::sleep(Duration::from_millis(10)).await;
    ///     resp.write("awake");
    ///     resp
    /// }));
    /// # let _ = app;
    /// ```
    pub fn method_async<F, Fut>(self, method: &str, h: F) -> Route
    where
        F: Fn(Request, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        self.method(method, move |lp, req, resp| {
            // Polled here first, inside the dispatch (under its panic guard): a handler
            // that does not wait costs one allocation, not a task. One that waits
            // becomes a task, polled again from the run queue with its own waker (a
            // future registers the waker of its latest poll, so the first poll's no-op
            // waker is never the one that matters).
            let mut fut = Box::pin(h(req, resp));
            let mut cx = Context::from_waker(Waker::noop());
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(resp) => resp.finish(),
                Poll::Pending => lp.spawn(async move { fut.await.finish() }).detach(),
            }
        })
    }

    /// Handles GET (and HEAD) with an async handler; see
    /// [`method_async`](Self::method_async).
    ///
    /// ```
    /// use coreloop::http::{Application, Route};
    /// let app = Application::new().route("/", Route::new().get_async(|_req, mut resp| async move {
    ///     resp.write("Hello, world");
    ///     resp
    /// }));
    /// # let _ = app;
    /// ```
    pub fn get_async<F, Fut>(self, h: F) -> Route
    where
        F: Fn(Request, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        self.method_async("GET", h)
    }

    /// Handles POST with an async handler.
    pub fn post_async<F, Fut>(self, h: F) -> Route
    where
        F: Fn(Request, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        self.method_async("POST", h)
    }

    /// Handles PUT with an async handler.
    pub fn put_async<F, Fut>(self, h: F) -> Route
    where
        F: Fn(Request, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        self.method_async("PUT", h)
    }

    /// Handles DELETE with an async handler.
    pub fn delete_async<F, Fut>(self, h: F) -> Route
    where
        F: Fn(Request, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        self.method_async("DELETE", h)
    }

    /// The handler for `method`, and whether it is GET standing in for HEAD.
    pub(crate) fn handler(&self, method: &str) -> Option<(&Handler, bool)> {
        // Byte by byte: method names are a few bytes, shorter than a call to memcmp.
        let is = |m: &str| m.len() == method.len() && m.bytes().eq(method.bytes());
        if let Some((_, h)) = self.methods.iter().find(|(m, _)| is(m)) {
            return Some((h, false));
        }
        if method == "HEAD" {
            return self
                .methods
                .iter()
                .find(|(m, _)| m == "GET")
                .map(|(_, h)| (h, true));
        }
        None
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
        self.routes.push(route);
        self.patterns
            .push(Box::leak(pattern.to_owned().into_boxed_str()));
        Ok(self)
    }

    /// The route matching `path`; its captures are appended to `captures`. (An out
    /// parameter rather than a returned `Vec`: returning one, empty for most routes,
    /// cost a 16-byte reload of the three words just stored, a failed store forward,
    /// on every request: 1% of a pipelined hello server's CPU in `perf`.)
    pub(crate) fn find(
        &self,
        path: &str,
        captures: &mut Vec<(String, String)>,
    ) -> Option<(usize, &Route)> {
        let m = self.router.at(path).ok()?;
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
