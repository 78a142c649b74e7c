//! The database: SQLite through rusqlite, a blocking driver. Every query runs on a
//! thread of the blocking pool (or, with `--inline`, on the loop itself, to show what
//! that costs), on that thread's own connection: one connection per thread, opened on
//! first use and kept, so queries on different threads run side by side (WAL mode:
//! readers do not wait for the writer; writers wait for each other up to the busy
//! timeout).

use rusqlite::{params, Connection, OptionalExtension};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A note as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub id: i64,
    pub text: String,
}

impl Note {
    /// `{"id": N, "text": "..."}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "id": self.id, "text": self.text })
    }
}

/// Where the database is; cheap to clone into each query's closure.
#[derive(Clone, Debug)]
pub struct Db {
    path: Arc<PathBuf>,
}

thread_local! {
    /// This thread's connection, and the database it is for.
    static CONN: RefCell<Option<(Arc<PathBuf>, Connection)>> = const { RefCell::new(None) };
}

/// How long a writer waits for another before the query fails (SQLITE_BUSY).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers and one writer at once; NORMAL: durable at checkpoints, as WAL's
    // usual setting.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(c)
}

impl Db {
    /// Opens (creating if needed) the database at `path` and its table.
    pub fn create(path: &Path) -> rusqlite::Result<Db> {
        let c = open(path)?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 text TEXT NOT NULL
             );",
        )?;
        Ok(Db {
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on this thread's connection (opened on first use).
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        CONN.with(|cell| {
            let mut cell = cell.borrow_mut();
            let fresh = match &*cell {
                Some((p, _)) => p != &self.path,
                None => true,
            };
            if fresh {
                *cell = Some((self.path.clone(), open(&self.path)?));
            }
            match &*cell {
                Some((_, c)) => f(c),
                None => unreachable!("opened above"),
            }
        })
    }

    /// Stores a note; it with its new id.
    pub fn insert(&self, text: String) -> rusqlite::Result<Note> {
        self.with(|c| {
            let id: i64 = c
                .prepare_cached("INSERT INTO notes (text) VALUES (?1) RETURNING id")?
                .query_row(params![text], |r| r.get(0))?;
            Ok(Note { id, text })
        })
    }

    /// The note `id`, if there is one.
    pub fn get(&self, id: i64) -> rusqlite::Result<Option<Note>> {
        self.with(|c| {
            c.prepare_cached("SELECT id, text FROM notes WHERE id = ?1")?
                .query_row(params![id], |r| {
                    Ok(Note {
                        id: r.get(0)?,
                        text: r.get(1)?,
                    })
                })
                .optional()
        })
    }

    /// Up to `limit` notes with ids above `after`, by id; with `containing`, only those
    /// whose text contains it (a scan of the table: the slow query of the benchmark).
    pub fn list(
        &self,
        after: i64,
        limit: u32,
        containing: Option<String>,
    ) -> rusqlite::Result<Vec<Note>> {
        self.with(|c| {
            let row = |r: &rusqlite::Row<'_>| {
                Ok(Note {
                    id: r.get(0)?,
                    text: r.get(1)?,
                })
            };
            match containing {
                None => c
                    .prepare_cached(
                        "SELECT id, text FROM notes WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )?
                    .query_map(params![after, limit], row)?
                    .collect(),
                Some(s) => {
                    let pattern = format!("%{}%", like_escape(&s));
                    c.prepare_cached(
                        "SELECT id, text FROM notes WHERE id > ?1 AND text LIKE ?2 ESCAPE '\\' \
                         ORDER BY id LIMIT ?3",
                    )?
                    .query_map(params![after, pattern, limit], row)?
                    .collect()
                }
            }
        })
    }

    /// Deletes note `id`; whether there was one.
    pub fn delete(&self, id: i64) -> rusqlite::Result<bool> {
        self.with(|c| {
            let n = c
                .prepare_cached("DELETE FROM notes WHERE id = ?1")?
                .execute(params![id])?;
            Ok(n > 0)
        })
    }

    /// Adds `n` generated notes in one transaction (a benchmark's data set).
    pub fn seed(&self, n: u64) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute_batch("BEGIN")?;
            {
                let mut ins = c.prepare_cached("INSERT INTO notes (text) VALUES (?1)")?;
                for i in 0..n {
                    ins.execute(params![format!(
                        "note {i}: the quick brown fox jumps over the lazy dog, {} times",
                        i % 97
                    )])?;
                }
            }
            c.execute_batch("COMMIT")
        })
    }
}

/// `s` with LIKE's wildcards (and the escape character) escaped.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
