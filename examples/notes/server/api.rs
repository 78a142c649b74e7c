//! The HTTP API: JSON in and out, every query through the blocking pool.
//!
//! - `POST /notes` `{"text": "..."}`: 201 and the note, `{"id": N, "text": "..."}`;
//! - `GET /notes/{id}`: 200 and the note; `DELETE /notes/{id}`: 204;
//! - `GET /notes`: 200 and an array of notes by id, at most `limit` (default 100, at
//!   most 1000) after id `after` (default 0); `q=TEXT` keeps only those containing it.
//!
//! Bad input gets a JSON error, `{"error": "..."}`: 400 (malformed JSON, a missing or
//! empty `text`, a bad id or argument), 404 (no such note), 413 (a body over
//! [`MAX_NOTE_BODY`]); a database error is a 500 with the cause logged; a full pool
//! (every thread busy, the queue at its bound) a 503 with `Retry-After`.

use super::db::{Db, Note};
use coreloop::http::{Application, Request, Response, Route};
use coreloop::{CallError, IoLoop};
use serde_json::Value;
use std::sync::Arc;

/// Largest body of a `POST /notes` the handler takes (larger: 413 with a JSON error).
/// Bodies past the server's own limit (`server::MAX_BODY`) are refused by the server
/// before any handler runs (413, not JSON).
pub const MAX_NOTE_BODY: usize = 64 * 1024;

/// Most notes one `GET /notes` answers.
pub const MAX_LIMIT: u32 = 1000;

/// What the handlers share: the database, and where queries run.
#[derive(Clone, Debug)]
pub struct Api {
    pub db: Db,
    /// Run queries on the loop instead of the pool (a benchmark's comparison: every
    /// other request on the core waits for each query).
    pub inline: bool,
}

/// A failed request: its status and what to tell the client.
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// A status and a JSON body (none for 204).
type Answer = Result<(u16, Option<Value>), ApiError>;

/// The routes.
pub fn app(api: Api) -> Application {
    let api = Arc::new(api);
    let (a, b, c, d) = (api.clone(), api.clone(), api.clone(), api);
    Application::new()
        .route(
            "/notes",
            Route::new()
                .post(move |lp, req, resp| {
                    let api = a.clone();
                    async move { respond(resp, api.create(&lp, &req).await) }
                })
                .get(move |lp, req, resp| {
                    let api = b.clone();
                    async move { respond(resp, api.list(&lp, &req).await) }
                }),
        )
        .route(
            "/notes/{id}",
            Route::new()
                .get(move |lp, req, resp| {
                    let api = c.clone();
                    async move { respond(resp, api.get(&lp, &req).await) }
                })
                .delete(move |lp, req, resp| {
                    let api = d.clone();
                    async move { respond(resp, api.delete(&lp, &req).await) }
                }),
        )
}

/// Writes the answer (or the error, as `{"error": ...}`) into `resp`.
fn respond(mut resp: Response, answer: Answer) -> Response {
    let (status, body) = match answer {
        Ok(ok) => ok,
        Err(e) => {
            if e.status == 503 {
                resp.set_header("Retry-After", "1");
            }
            (e.status, Some(serde_json::json!({ "error": e.message })))
        }
    };
    resp.set_status(status);
    if let Some(body) = body {
        resp.set_header("Content-Type", "application/json");
        resp.write(body.to_string());
    }
    resp
}

impl Api {
    /// Runs `q` on the database: on a pool thread (or inline); a failure is the
    /// answer's error (a database error logged with its cause).
    async fn query<T: Send + 'static>(
        &self,
        lp: &IoLoop,
        q: impl FnOnce(&Db) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let db = self.db.clone();
        let r = if self.inline {
            Ok(q(&db))
        } else {
            lp.call_blocking(move || q(&db)).await
        };
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                log::error!("notes: database error: {e}");
                Err(ApiError::new(500, "database error"))
            }
            Err(CallError::Full) => Err(ApiError::new(503, "the database is busy; try again")),
            Err(CallError::Closed) => Err(ApiError::new(503, "the server is stopping")),
            Err(e) => {
                log::error!("notes: a query failed: {e}");
                Err(ApiError::new(500, "internal error"))
            }
        }
    }

    async fn create(&self, lp: &IoLoop, req: &Request) -> Answer {
        let text = note_text(req.body())?;
        let note = self.query(lp, move |db| db.insert(text)).await?;
        Ok((201, Some(note.to_json())))
    }

    async fn get(&self, lp: &IoLoop, req: &Request) -> Answer {
        let id = note_id(req)?;
        match self.query(lp, move |db| db.get(id)).await? {
            Some(note) => Ok((200, Some(note.to_json()))),
            None => Err(ApiError::new(404, format!("no note {id}"))),
        }
    }

    async fn delete(&self, lp: &IoLoop, req: &Request) -> Answer {
        let id = note_id(req)?;
        if self.query(lp, move |db| db.delete(id)).await? {
            Ok((204, None))
        } else {
            Err(ApiError::new(404, format!("no note {id}")))
        }
    }

    async fn list(&self, lp: &IoLoop, req: &Request) -> Answer {
        let limit = match req.query_arg("limit") {
            None => 100,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::new(
                        400,
                        format!("limit must be a number from 1 to {MAX_LIMIT}"),
                    ))
                }
            },
        };
        let after = match req.query_arg("after") {
            None => 0,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::new(400, "after must be a note id (0 or more)"))?,
        };
        let containing =
            match req.query_arg("q") {
                None => None,
                Some(v) => Some(query_decode(v).filter(|s| s.len() <= 256).ok_or_else(|| {
                    ApiError::new(400, "q must be UTF-8 text of 256 bytes at most")
                })?),
            };
        let notes: Vec<Note> = self
            .query(lp, move |db| db.list(after, limit, containing))
            .await?;
        Ok((
            200,
            Some(Value::Array(notes.iter().map(Note::to_json).collect())),
        ))
    }
}

/// The `text` of a `POST /notes` body.
fn note_text(body: &[u8]) -> Result<String, ApiError> {
    if body.len() > MAX_NOTE_BODY {
        return Err(ApiError::new(
            413,
            format!("the body is over {MAX_NOTE_BODY} bytes"),
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("malformed JSON: {e}")))?;
    let Some(fields) = v.as_object() else {
        return Err(ApiError::new(400, "expected a JSON object"));
    };
    match fields.get("text") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::new(400, "\"text\" is empty")),
        Some(_) => Err(ApiError::new(400, "\"text\" must be a string")),
        None => Err(ApiError::new(400, "missing field \"text\"")),
    }
}

/// The `{id}` of the path: a positive integer.
fn note_id(req: &Request) -> Result<i64, ApiError> {
    req.param("id")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::new(400, "a note id is a positive integer"))
}

/// A query argument's value decoded (`+` is a space, `%XX` a byte); `None` if it is
/// not UTF-8 or has a bad escape.
fn query_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
