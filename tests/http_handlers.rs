//! Handlers as a user writes them: one registration for callbacks and async blocks, the
//! loop handed to both, `?` and `HttpError` mapped to statuses, a response dropped in
//! an async handler finished, a streamed part over the write limit answered 500, and a
//! default deadline for a response a handler forgets.
mod util;

use coreloop::http::{Application, HttpConfig, HttpError, Response, Route};
use coreloop::Backend;
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::time::Duration;

fn server(backend: Backend, app: Application, cfg: HttpConfig) -> util::Served {
    util::serve_http(backend, app, cfg)
}

/// One request (HTTP/1.0: the server closes after it); the status and the body.
fn get(s: &util::Served, path: &str) -> (u16, String) {
    util::get_status_and_body(s.local_addr(), path)
}

fn parse_id(text: Option<&str>) -> Result<u32, HttpError> {
    text.unwrap_or("")
        .parse()
        .map_err(|_| HttpError::new(400, "the id is not a number"))
}

fn app() -> Application {
    Application::new()
        // A callback that returns a Result.
        .route(
            "/sync/{id}",
            Route::new().get(|_lp, req, mut resp| {
                let id = parse_id(req.param("id"))?;
                if id == 0 {
                    return Err(HttpError::new(404, "no such thing"));
                }
                if id == 13 {
                    // Any error through `?`: a 500.
                    let _unlucky: u32 = "thirteen".parse()?;
                }
                resp.write(format!("sync {id}"));
                Ok(())
            }),
        )
        // An async block with `?`, using the loop it is given across an await.
        .route(
            "/async/{id}",
            Route::new().get(|lp, req, mut resp| async move {
                let id = parse_id(req.param("id"))?;
                coreloop::sleep(Duration::from_millis(1)).await;
                let shard = lp.call_on(id as usize, |far| far.shard_id()).await?;
                resp.write(format!("async on {} asked {shard}", lp.shard_id()));
                Ok(resp)
            }),
        )
        // `?` on any error: a 500, its message logged, not sent.
        .route(
            "/fails",
            Route::new().get(|_lp, _req, _resp| async move {
                std::fs::read("/nonexistent/coreloop/test")?;
                Ok::<(), HttpError>(())
            }),
        )
        // An async handler that fills the response and drops it: finished, as a
        // callback handler's is.
        .route(
            "/dropped",
            Route::new().get(|_lp, _req, mut resp| async move {
                resp.write("written, then dropped");
                coreloop::sleep(Duration::from_millis(1)).await;
                drop(resp);
            }),
        )
        // An async handler that returns the response.
        .route(
            "/returned",
            Route::new().get(|_lp, _req, mut resp| async move {
                resp.set_status(201);
                resp.write("returned");
                resp
            }),
        )
        // A handler that keeps its response and never finishes it.
        .route(
            "/forgotten",
            Route::new().get(|_lp, _req, resp| {
                thread_local!(static KEPT: RefCell<Vec<Response>> = const { RefCell::new(Vec::new()) });
                KEPT.with(|k| k.borrow_mut().push(resp));
            }),
        )
        // A streamed first part over the connection's write limit.
        .route(
            "/too-big",
            Route::new().get(|_lp, _req, mut resp| {
                resp.write(vec![b'x'; 80 << 20]);
                assert!(resp.flush().is_err());
                resp.write("ignored");
                resp.finish();
            }),
        )
}

#[on_both_backends]
#[test]
fn a_callback_returning_a_result_answers_its_errors_status(backend: Backend) {
    let s = server(backend, app(), HttpConfig::default());
    assert_eq!(get(&s, "/sync/7"), (200, "sync 7".into()));
    assert_eq!(get(&s, "/sync/0"), (404, "no such thing".into()));
    assert_eq!(get(&s, "/sync/x"), (400, "the id is not a number".into()));
    assert_eq!(
        get(&s, "/sync/13"),
        (500, "500: Internal Server Error".into())
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_async_handler_gets_the_loop_and_question_mark_answers_errors(backend: Backend) {
    let s = server(backend, app(), HttpConfig::default());
    let (status, body) = get(&s, "/async/1");
    assert_eq!(status, 200);
    assert!(body.ends_with("asked 1"), "{body}");
    assert_eq!(get(&s, "/async/x"), (400, "the id is not a number".into()));
    // No shard 9: the CallError becomes a 500, and the message is not sent.
    assert_eq!(
        get(&s, "/async/9"),
        (500, "500: Internal Server Error".into())
    );
    assert_eq!(
        get(&s, "/fails"),
        (500, "500: Internal Server Error".into())
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_async_handler_may_drop_or_return_its_response(backend: Backend) {
    let s = server(backend, app(), HttpConfig::default());
    assert_eq!(get(&s, "/dropped"), (200, "written, then dropped".into()));
    assert_eq!(get(&s, "/returned"), (201, "returned".into()));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_streamed_part_over_the_write_limit_before_anything_was_sent_answers_500(backend: Backend) {
    let s = server(backend, app(), HttpConfig::default());
    assert_eq!(
        get(&s, "/too-big"),
        (500, "500: Internal Server Error".into())
    );
    assert_eq!(get(&s, "/returned").0, 201, "the server goes on");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_forgotten_response_is_answered_503_at_the_handler_deadline(backend: Backend) {
    assert_eq!(
        HttpConfig::default().handler_timeout,
        Some(Duration::from_secs(60)),
        "a deadline by default, not none"
    );
    let cfg = HttpConfig {
        handler_timeout: Some(Duration::from_millis(200)),
        ..HttpConfig::default()
    };
    let s = server(backend, app(), cfg);
    let t0 = std::time::Instant::now();
    assert_eq!(get(&s, "/forgotten").0, 503);
    assert!(t0.elapsed() >= Duration::from_millis(190));
    s.shutdown().unwrap();
}
