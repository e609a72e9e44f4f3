//! The embedded default store: SQLite (bundled) in WAL mode with `synchronous=FULL`, so a
//! committed transaction is on disk before `insert_result` returns. The result row and its
//! change event (the outbox) are written in one transaction: no event is lost even if the
//! broker is down or the process is killed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DeadLetter, OutboxEvent, ResultFilter, ResultStore, RosterEntry, RosterImport, SessionChunk,
    SessionField, SessionStore, StoredCalibration, StoredScoreCard, StoredSession,
};
use crate::debezium::insert_event;
use crate::document::{ResultDocument, format_timestamp};
use crate::error::{IngestError, Result};

mod attempts;
mod readers;

pub use readers::DEFAULT_READERS;
use readers::{Lane, Readers};

/// Database and collection names used in change events, as in production MongoDB.
pub const CHANGE_EVENT_DB: &str = "exams";
pub const CHANGE_EVENT_COLLECTION: &str = "score";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    exam TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_email ON results (email, submitted_at);
CREATE INDEX IF NOT EXISTS results_by_exam ON results (exam, submitted_at);
-- Change events of stored results. `published_at`: sent to Kafka; `carded_at`: handled by
-- the in-process score-card consumer (embedded mode without Kafka).
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    created_at TEXT NOT NULL,
    published_at TEXT,
    carded_at TEXT
);
-- What each consumer has still to handle: without these, finding the first unhandled event
-- walked every handled one (the outbox is never pruned), a read that grew with every result.
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_uncarded ON outbox (seq) WHERE carded_at IS NULL;
CREATE TABLE IF NOT EXISTS score_cards (
    document_id TEXT PRIMARY KEY,
    card TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Adaptive sessions: one row per session, its whole state as JSON, rewritten (durably)
-- after every answer.
CREATE TABLE IF NOT EXISTS adaptive_sessions (
    id TEXT PRIMARY KEY,
    exam TEXT NOT NULL,
    email TEXT NOT NULL,
    calibration_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    answered INTEGER NOT NULL,
    result_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    state TEXT NOT NULL,
    closes_at TEXT
);
CREATE INDEX IF NOT EXISTS adaptive_sessions_by_exam ON adaptive_sessions (exam, created_at);
-- Item parameters of each exam, one row per version; never updated, only added.
CREATE TABLE IF NOT EXISTS calibrations (
    exam TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    responses INTEGER NOT NULL,
    params TEXT NOT NULL,
    summary TEXT NOT NULL,
    -- Order of activation; the highest is the exam's active version; NULL: a candidate.
    activation INTEGER,
    PRIMARY KEY (exam, version)
);
-- The roster: each student's groups (a JSON object, e.g. campus to north), and the
-- group columns in the order they were first imported.
CREATE TABLE IF NOT EXISTS roster (
    email TEXT PRIMARY KEY,
    groups TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS roster_columns (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
-- Fixed-form attempts kept on the server (answers and flags as JSON arrays, one entry per
-- question); at most one open attempt per student and exam.
CREATE TABLE IF NOT EXISTS exam_attempts (
    id TEXT PRIMARY KEY,
    exam TEXT NOT NULL,
    email TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    deadline TEXT,
    closes_at TEXT,
    answers TEXT NOT NULL,
    flags TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    result_id TEXT NOT NULL,
    submitted_at TEXT,
    submitted_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS exam_attempts_open ON exam_attempts (email, exam) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS exam_attempts_due ON exam_attempts (closes_at) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS exam_attempts_by_email ON exam_attempts (email, started_at);
CREATE INDEX IF NOT EXISTS adaptive_sessions_by_email ON adaptive_sessions (email, exam, status);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB,
    created_at TEXT NOT NULL
);
";

/// Which consumer of the outbox is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxReader {
    /// The relay that publishes to Kafka.
    Publisher,
    /// The in-process score-card consumer.
    ScoreCards,
}

impl OutboxReader {
    fn column(self) -> &'static str {
        match self {
            OutboxReader::Publisher => "published_at",
            OutboxReader::ScoreCards => "carded_at",
        }
    }

    /// The oldest events not yet handled (through the consumer's partial index).
    fn pending_sql(self) -> String {
        format!(
            "SELECT seq, key, value FROM outbox WHERE {} IS NULL ORDER BY seq LIMIT ?1",
            self.column()
        )
    }
}

/// A result as written: its row and its change event for the outbox.
struct ResultRow {
    id: String,
    email: String,
    exam: String,
    submitted_at: String,
    doc: String,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl ResultRow {
    fn new(doc: &ResultDocument) -> Result<Self> {
        let text = serde_json::to_string(doc).map_err(|e| IngestError::CorruptDocument {
            id: doc.id.clone(),
            message: e.to_string(),
        })?;
        let ts_ms = Utc::now().timestamp_millis();
        let (key, value) = insert_event(doc, CHANGE_EVENT_DB, CHANGE_EVENT_COLLECTION, ts_ms);
        Ok(ResultRow {
            id: doc.id.clone(),
            email: doc.email.clone(),
            exam: doc.exam.clone(),
            submitted_at: doc.submitted_at.clone(),
            doc: text,
            key,
            value,
        })
    }

    /// Inserts the result and its change event; with `if_absent`, a result already stored
    /// under the id is kept and no second event is made. Returns whether it inserted.
    fn insert(&self, tx: &Connection, if_absent: bool) -> rusqlite::Result<bool> {
        let sql = if if_absent {
            "INSERT INTO results (id, email, exam, submitted_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO results (id, email, exam, submitted_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        let inserted = tx.execute(
            sql,
            params![self.id, self.email, self.exam, self.submitted_at, self.doc],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO outbox (key, value, created_at) VALUES (?1, ?2, ?3)",
            params![self.key, self.value, now()],
        )?;
        Ok(true)
    }
}

/// One result waiting for the group-commit writer.
struct InsertJob {
    row: ResultRow,
    done: tokio::sync::oneshot::Sender<rusqlite::Result<bool>>,
}

/// One adaptive session's new state waiting for the group-commit writer.
struct SessionJob {
    session: StoredSession,
    /// Replace only a stored session with this many answers (none: insert or replace).
    expected_answered: Option<i64>,
    /// A finishing session's result (unless stored already), in the same transaction.
    /// Boxed: most session jobs have none, and the queue holds jobs by value.
    result: Option<Box<ResultRow>>,
    done: tokio::sync::oneshot::Sender<rusqlite::Result<bool>>,
}

/// What the group-commit writer writes.
enum WriteJob {
    Result(InsertJob),
    Session(SessionJob),
    Attempt(attempts::AttemptJob),
}

impl WriteJob {
    /// Writes the job; `false` when a conditional replace found a newer state.
    fn write(&self, tx: &Connection) -> rusqlite::Result<bool> {
        match self {
            WriteJob::Result(job) => {
                job.row.insert(tx, false)?;
            }
            WriteJob::Session(job) => {
                let stored = match job.expected_answered {
                    Some(expected) => replace_session_if(tx, &job.session, expected)?,
                    None => upsert_session(tx, &job.session)?,
                };
                // A lost race writes nothing at all (nor the result).
                if !stored {
                    return Ok(false);
                }
                if let Some(result) = &job.result {
                    result.insert(tx, true)?;
                }
            }
            WriteJob::Attempt(job) => return job.write(tx),
        }
        Ok(true)
    }

    fn answer(self, outcome: rusqlite::Result<bool>) {
        let done = match self {
            WriteJob::Result(job) => job.done,
            WriteJob::Session(job) => job.done,
            WriteJob::Attempt(job) => job.done,
        };
        let _ = done.send(outcome);
    }
}

/// Inserts session `s`, or replaces the stored one with its id (always stored: `true`).
fn upsert_session(tx: &Connection, s: &StoredSession) -> rusqlite::Result<bool> {
    tx.execute(
        "INSERT INTO adaptive_sessions (id, exam, email, calibration_version, status, answered, result_id, created_at, updated_at, state, closes_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, answered = excluded.answered,
           result_id = excluded.result_id, updated_at = excluded.updated_at, state = excluded.state,
           closes_at = excluded.closes_at",
        params![
            s.id,
            s.exam,
            s.email,
            s.calibration_version,
            s.status,
            s.answered,
            s.result_id,
            s.created_at,
            s.updated_at,
            s.state,
            s.closes_at
        ],
    )?;
    Ok(true)
}

/// Replaces session `s` only if it is stored with `expected` answers.
fn replace_session_if(tx: &Connection, s: &StoredSession, expected: i64) -> rusqlite::Result<bool> {
    let changed = tx.execute(
        "UPDATE adaptive_sessions SET status = ?2, answered = ?3, result_id = ?4,
           updated_at = ?5, state = ?6
         WHERE id = ?1 AND answered = ?7",
        params![
            s.id,
            s.status,
            s.answered,
            s.result_id,
            s.updated_at,
            s.state,
            expected
        ],
    )?;
    Ok(changed == 1)
}

/// Most results committed in one transaction (one fsync).
const MAX_GROUP: usize = 256;

/// The group-commit writer: takes every insert queued while the previous commit was
/// being fsync'd and commits them together, each in its own savepoint so one failing
/// insert does not fail the others; every caller is answered only after the commit.
///
/// It shares the store's one write connection (behind its mutex) with the other writers,
/// so writes queue in the process instead of sleeping in SQLite's busy handler.
fn run_group_writer(writer: Arc<Mutex<Connection>>, jobs: std::sync::mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut outcomes: Vec<rusqlite::Result<bool>> = Vec::with_capacity(batch.len());
        let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx = conn.transaction()?;
            for job in &batch {
                let mut sp = tx.savepoint()?;
                match job.write(&sp) {
                    Ok(written) => {
                        sp.commit()?;
                        outcomes.push(Ok(written));
                    }
                    Err(e) => {
                        if sp.rollback().is_err() {
                            // SQLite had already rolled the whole transaction back (disk
                            // full, I/O error): every write of the batch is gone, and this
                            // error, not "no such savepoint", is what failed them.
                            return Err(e);
                        }
                        outcomes.push(Err(e));
                    }
                }
            }
            // synchronous=FULL: the WAL is fsync'd before commit returns.
            tx.commit()
        })();
        drop(conn);
        match committed {
            Ok(()) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    job.answer(outcome);
                }
            }
            Err(e) => {
                for job in batch {
                    job.answer(Err(clone_error(&e)));
                }
            }
        }
    }
}

/// How often the WAL is copied into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Passive checkpoints every [`CHECKPOINT_INTERVAL`] until the store is dropped. Passive:
/// never blocks the writer or readers; frames still in use by a reader wait for the next.
fn run_checkpointer(conn: Connection, alive: std::sync::Weak<Mutex<Connection>>) {
    loop {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        if alive.strong_count() == 0 {
            break;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
        }
    }
    // A last full copy, so the WAL does not outlive the store needlessly.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

pub struct SqliteStore {
    path: PathBuf,
    inserts: std::sync::mpsc::SyncSender<WriteJob>,
    writer: Arc<Mutex<Connection>>,
    readers: Readers,
    /// Woken after every insert so outbox consumers need not poll hard.
    pub outbox_notify: Arc<tokio::sync::Notify>,
}

fn now() -> String {
    format_timestamp(Utc::now())
}

impl SqliteStore {
    /// Opens (creating if needed) `examflow.db` in `data_dir`, with [`DEFAULT_READERS`] read
    /// connections.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with_readers(data_dir, DEFAULT_READERS)
    }

    /// Opens (creating if needed) `examflow.db` in `data_dir`, with `readers` read
    /// connections (at least 2: scans never hold the last one; see the `readers` module).
    pub fn open_with_readers(data_dir: &Path, readers: usize) -> Result<Self> {
        let path = data_dir.join("examflow.db");
        let err = |source| IngestError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let writer = Connection::open(&path).map_err(err)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;",
            )
            .map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        migrate(&writer).map_err(err)?;
        // Checkpoints (WAL → database file, with its own fsync) run on a thread of their own,
        // so no commit waits for one; SQLite's automatic checkpoint would run inside whichever
        // commit crossed the threshold and add its cost to that request's latency.
        let checkpointer = Connection::open(&path).map_err(err)?;
        writer
            .execute_batch("PRAGMA wal_autocheckpoint=0;")
            .map_err(err)?;
        let readers = Readers::open(&path, readers).map_err(err)?;
        let writer = Arc::new(Mutex::new(writer));
        let (inserts, jobs) = std::sync::mpsc::sync_channel(4 * MAX_GROUP);
        let group_writer = writer.clone();
        std::thread::Builder::new()
            .name("examflow-sqlite-writer".into())
            .spawn(move || run_group_writer(group_writer, jobs))
            .map_err(|e| IngestError::Task(format!("starting the SQLite writer: {e}")))?;
        let alive = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("examflow-sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, alive))
            .map_err(|e| IngestError::Task(format!("starting the SQLite checkpointer: {e}")))?;
        Ok(SqliteStore {
            path,
            inserts,
            writer,
            readers,
            outbox_notify: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read connections, and how many of them are idle now.
    pub fn readers(&self) -> (usize, usize) {
        (self.readers.size(), self.readers.idle())
    }

    /// Runs `f` in the blocking pool on the write connection (`write`), or on a read
    /// connection of the request lane.
    async fn with<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let outcome = if write {
            let conn = self.writer.clone();
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut guard)
            })
            .await
        } else {
            self.readers.run(Lane::Request, f).await
        };
        self.sqlite_outcome(outcome)
    }

    /// Runs one chunk of a scan, `f`, on a read connection of the scan lane (never the last
    /// idle one; see the `readers` module).
    async fn scan<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let outcome = self.readers.run(Lane::Scan, f).await;
        self.sqlite_outcome(outcome)
    }

    fn sqlite_outcome<T>(
        &self,
        outcome: std::result::Result<rusqlite::Result<T>, tokio::task::JoinError>,
    ) -> Result<T> {
        outcome
            .map_err(|e| IngestError::Task(e.to_string()))?
            .map_err(|source| IngestError::Sqlite {
                path: self.path.display().to_string(),
                source,
            })
    }

    /// See [`SessionStore::scan_sessions`]. The position is the `rowid`: chunks follow the
    /// table's own order (no index, no sort), and each chunk is one short read.
    pub async fn scan_sessions(
        &self,
        after: Option<String>,
        limit: usize,
        fields: &[SessionField],
    ) -> Result<SessionChunk> {
        let after: i64 = match after {
            None => i64::MIN,
            Some(text) => text.parse().map_err(|_| IngestError::CorruptRecord {
                collection: "adaptive_sessions",
                id: text.clone(),
                message: "not a scan position of the embedded store".into(),
            })?,
        };
        if limit == 0 {
            return Ok(SessionChunk::default());
        }
        let fields = fields.to_vec();
        let mut sql = String::from("SELECT rowid, id");
        for field in &fields {
            sql.push_str(", ");
            sql.push_str(field.name());
        }
        sql.push_str(" FROM adaptive_sessions WHERE rowid > ?1 ORDER BY rowid LIMIT ?2");
        self.scan(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)])?;
            let mut sessions = Vec::new();
            let mut last = after;
            while let Some(r) = rows.next()? {
                last = r.get(0)?;
                let mut s = StoredSession {
                    id: r.get(1)?,
                    ..StoredSession::default()
                };
                for (i, field) in fields.iter().enumerate() {
                    let at = i + 2;
                    match field {
                        SessionField::Exam => s.exam = r.get(at)?,
                        SessionField::Email => s.email = r.get(at)?,
                        SessionField::CalibrationVersion => s.calibration_version = r.get(at)?,
                        SessionField::Status => s.status = r.get(at)?,
                        SessionField::Answered => s.answered = r.get(at)?,
                        SessionField::ResultId => s.result_id = r.get(at)?,
                        SessionField::CreatedAt => s.created_at = r.get(at)?,
                        SessionField::UpdatedAt => s.updated_at = r.get(at)?,
                        SessionField::State => s.state = r.get(at)?,
                        SessionField::ClosesAt => s.closes_at = r.get(at)?,
                    }
                }
                sessions.push(s);
            }
            let next = (sessions.len() == limit).then(|| last.to_string());
            Ok(SessionChunk { sessions, next })
        })
        .await
    }

    /// Queues `job` for the group-commit writer and waits until it is on disk.
    async fn write_durably(
        &self,
        job: WriteJob,
        answer: tokio::sync::oneshot::Receiver<rusqlite::Result<bool>>,
    ) -> Result<bool> {
        let stopped = || IngestError::Task("the SQLite writer has stopped".into());
        // A full queue blocks briefly (back-pressure) off the async runtime.
        let inserts = self.inserts.clone();
        match inserts.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || inserts.send(job).is_ok())
                    .await
                    .map_err(|e| IngestError::Task(e.to_string()))?
                    .then_some(())
                    .ok_or_else(stopped)?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|source| IngestError::Sqlite {
                path: self.path.display().to_string(),
                source,
            })
    }

    /// Queues a session write (see [`SessionJob`]) and waits until it is on disk.
    async fn write_session(
        &self,
        session: StoredSession,
        expected_answered: Option<i64>,
        result: Option<Box<ResultRow>>,
    ) -> Result<bool> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = SessionJob {
            session,
            expected_answered,
            result,
            done,
        };
        self.write_durably(WriteJob::Session(job), answer).await
    }

    /// Writes an adaptive session's state (insert or replace); returns once it is on disk.
    pub async fn put_session(&self, session: StoredSession) -> Result<()> {
        self.write_session(session, None, None).await?;
        Ok(())
    }

    /// See [`SessionStore::replace_session_if`]; group-committed like every session write.
    pub async fn replace_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
    ) -> Result<bool> {
        self.write_session(session, Some(expected_answered), None)
            .await
    }

    /// See [`SessionStore::finish_session_if`]: here one transaction, so either both the
    /// result (with its change event) and the final state are stored, or neither.
    pub async fn finish_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
        result: &ResultDocument,
    ) -> Result<bool> {
        let result = Box::new(ResultRow::new(result)?);
        let finished = self
            .write_session(session, Some(expected_answered), Some(result))
            .await?;
        if finished {
            self.outbox_notify.notify_one();
        }
        Ok(finished)
    }

    pub async fn get_session(&self, id: &str) -> Result<Option<StoredSession>> {
        let id = id.to_string();
        self.with(false, move |c| {
            c.query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM adaptive_sessions WHERE id = ?1"),
                [id],
                session_row,
            )
            .optional()
        })
        .await
    }

    /// Active sessions whose `closes_at` is at or before `now`, oldest first.
    pub async fn due_sessions(&self, now: &str, limit: usize) -> Result<Vec<StoredSession>> {
        let now = now.to_string();
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM adaptive_sessions
                 WHERE status = 'active' AND closes_at IS NOT NULL AND closes_at <= ?1
                 ORDER BY closes_at LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                session_row,
            )?;
            rows.collect()
        })
        .await
    }

    /// Sessions, newest first, optionally of one exam.
    pub async fn list_sessions(
        &self,
        exam: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredSession>> {
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM adaptive_sessions WHERE (?1 IS NULL OR exam = ?1)
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![exam, limit as i64], session_row)?;
            rows.collect()
        })
        .await
    }

    /// Stores a new calibration of `calibration.exam` as the next version (the `version`
    /// field is ignored) and returns that version.
    pub async fn add_calibration(&self, calibration: StoredCalibration) -> Result<i64> {
        self.with(true, move |c| {
            let tx = c.transaction()?;
            let version = latest_calibration_version(&tx, &calibration.exam)? + 1;
            insert_calibration(&tx, &calibration, version)?;
            tx.commit()?;
            Ok(version)
        })
        .await
    }

    /// Stores `calibration` as version `after + 1` if `after` is still the exam's latest
    /// version (see [`SessionStore::add_calibration_after`]).
    pub async fn add_calibration_after(
        &self,
        calibration: StoredCalibration,
        after: i64,
    ) -> Result<Option<i64>> {
        self.with(true, move |c| {
            let tx = c.transaction()?;
            if latest_calibration_version(&tx, &calibration.exam)? != after {
                return Ok(None);
            }
            insert_calibration(&tx, &calibration, after + 1)?;
            tx.commit()?;
            Ok(Some(after + 1))
        })
        .await
    }

    /// One version of an exam's calibration, or its latest when `version` is `None`.
    pub async fn get_calibration(
        &self,
        exam: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredCalibration>> {
        let exam = exam.to_string();
        self.with(false, move |c| {
            c.query_row(
                &format!(
                    "SELECT {CALIBRATION_COLUMNS} FROM calibrations WHERE exam = ?1 AND (?2 IS NULL OR version = ?2)
                     ORDER BY version DESC LIMIT 1"
                ),
                params![exam, version],
                calibration_row,
            )
            .optional()
        })
        .await
    }

    /// The exam's active calibration (highest activation).
    pub async fn get_active_calibration(&self, exam: &str) -> Result<Option<StoredCalibration>> {
        let exam = exam.to_string();
        self.with(false, move |c| {
            c.query_row(
                &format!(
                    "SELECT {CALIBRATION_COLUMNS} FROM calibrations
                     WHERE exam = ?1 AND activation IS NOT NULL
                     ORDER BY activation DESC, version DESC LIMIT 1"
                ),
                params![exam],
                calibration_row,
            )
            .optional()
        })
        .await
    }

    /// Makes `version` the exam's active calibration (see
    /// [`SessionStore::activate_calibration`]).
    pub async fn activate_calibration(&self, exam: &str, version: i64) -> Result<Option<i64>> {
        let exam = exam.to_string();
        self.with(true, move |c| {
            let tx = c.transaction()?;
            let Some(current): Option<Option<i64>> = tx
                .query_row(
                    "SELECT activation FROM calibrations WHERE exam = ?1 AND version = ?2",
                    params![exam, version],
                    |r| r.get(0),
                )
                .optional()?
            else {
                return Ok(None);
            };
            let highest: Option<i64> = tx.query_row(
                "SELECT max(activation) FROM calibrations WHERE exam = ?1",
                [&exam],
                |r| r.get(0),
            )?;
            if let Some(current) = current.filter(|&a| Some(a) == highest) {
                return Ok(Some(current));
            }
            let activation = next_activation(&tx, &exam)?;
            tx.execute(
                "UPDATE calibrations SET activation = ?3 WHERE exam = ?1 AND version = ?2",
                params![exam, version, activation],
            )?;
            tx.commit()?;
            Ok(Some(activation))
        })
        .await
    }

    /// Adds or updates roster students (see [`SessionStore::import_roster`]), in one
    /// transaction.
    pub async fn import_roster(
        &self,
        columns: Vec<String>,
        entries: Vec<RosterEntry>,
        replace: bool,
    ) -> Result<RosterImport> {
        self.with(true, move |c| {
            let tx = c.transaction()?;
            if replace {
                tx.execute_batch("DELETE FROM roster; DELETE FROM roster_columns;")?;
            }
            for name in &columns {
                tx.execute(
                    "INSERT OR IGNORE INTO roster_columns (name, position)
                     SELECT ?1, coalesce(max(position), 0) + 1 FROM roster_columns",
                    [name],
                )?;
            }
            let mut outcome = RosterImport::default();
            {
                let mut read = tx.prepare_cached("SELECT groups FROM roster WHERE email = ?1")?;
                let mut write = tx.prepare_cached(
                    "INSERT INTO roster (email, groups) VALUES (?1, ?2)
                     ON CONFLICT (email) DO UPDATE SET groups = excluded.groups",
                )?;
                for entry in entries {
                    let before: Option<String> =
                        read.query_row([&entry.email], |r| r.get(0)).optional()?;
                    let mut groups: std::collections::BTreeMap<String, String> = match &before {
                        Some(json) => serde_json::from_str(json).unwrap_or_default(),
                        None => Default::default(),
                    };
                    for name in &columns {
                        match entry.groups.get(name) {
                            Some(v) => groups.insert(name.clone(), v.clone()),
                            None => groups.remove(name),
                        };
                    }
                    let json = serde_json::to_string(&groups).unwrap_or_default();
                    write.execute(params![entry.email, json])?;
                    if before.is_some() {
                        outcome.updated += 1;
                    } else {
                        outcome.added += 1;
                    }
                }
            }
            outcome.students =
                tx.query_row("SELECT count(*) FROM roster", [], |r| r.get::<_, i64>(0))? as usize;
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// The roster's group columns, in the order they were first imported.
    pub async fn roster_columns(&self) -> Result<Vec<String>> {
        self.with(false, |c| {
            let mut stmt =
                c.prepare_cached("SELECT name FROM roster_columns ORDER BY position, name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Every roster student, by email.
    pub async fn roster(&self) -> Result<Vec<RosterEntry>> {
        self.with(false, |c| {
            let mut stmt = c.prepare_cached("SELECT email, groups FROM roster ORDER BY email")?;
            let rows = stmt.query_map([], |r| {
                let groups: String = r.get(1)?;
                Ok(RosterEntry {
                    email: r.get(0)?,
                    groups: serde_json::from_str(&groups).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Every calibration, newest first, optionally of one exam.
    pub async fn list_calibrations(&self, exam: Option<String>) -> Result<Vec<StoredCalibration>> {
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CALIBRATION_COLUMNS} FROM calibrations WHERE (?1 IS NULL OR exam = ?1)
                 ORDER BY exam, version DESC"
            ))?;
            let rows = stmt.query_map(params![exam], calibration_row)?;
            rows.collect()
        })
        .await
    }

    /// Up to `limit` outbox events not yet handled by `reader`, oldest first.
    pub async fn pending_outbox(
        &self,
        reader: OutboxReader,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>> {
        let sql = reader.pending_sql();
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(OutboxEvent {
                    seq: r.get(0)?,
                    key: r.get(1)?,
                    value: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Up to `limit` outbox events with a sequence number above `seq`, oldest first (the
    /// lake's feed keeps its own position).
    pub async fn outbox_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxEvent>> {
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, key, value FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![seq, limit as i64], |r| {
                Ok(OutboxEvent {
                    seq: r.get(0)?,
                    key: r.get(1)?,
                    value: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn count_pending_outbox(&self, reader: OutboxReader) -> Result<i64> {
        let sql = format!(
            "SELECT count(*) FROM outbox WHERE {} IS NULL",
            reader.column()
        );
        self.with(false, move |c| c.query_row(&sql, [], |r| r.get(0)))
            .await
    }

    /// Marks events as published to Kafka.
    pub async fn mark_published(&self, seqs: Vec<i64>) -> Result<()> {
        self.with(true, move |c| {
            let tx = c.transaction()?;
            let at = now();
            for seq in seqs {
                tx.execute(
                    "UPDATE outbox SET published_at = ?1 WHERE seq = ?2",
                    params![at, seq],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// Records what the in-process score-card consumer made of outbox events and marks
    /// them handled, all in one transaction (exactly once in effect, one fsync a batch).
    pub async fn complete_card_events(&self, events: Vec<(i64, CardOutcome)>) -> Result<()> {
        self.with(true, move |c| {
            let tx = c.transaction()?;
            let at = now();
            for (seq, outcome) in &events {
                write_card_outcome(&tx, outcome, &at)?;
                tx.execute(
                    "UPDATE outbox SET carded_at = ?1 WHERE seq = ?2",
                    params![at, seq],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// Appends change events captured from MongoDB (key, value) to the outbox in one
    /// transaction, for the in-process score cards and the lake feed (MongoDB without
    /// Kafka). They are marked published: they came from elsewhere and are never relayed.
    pub async fn append_captured(&self, events: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.with(true, move |c| {
            let tx = c.transaction()?;
            let at = now();
            for (key, value) in &events {
                tx.execute(
                    "INSERT INTO outbox (key, value, created_at, published_at) VALUES (?1, ?2, ?3, ?3)",
                    params![key, value, at],
                )?;
            }
            tx.commit()
        })
        .await?;
        self.outbox_notify.notify_one();
        Ok(())
    }

    /// Records a card or dead letter that came from Kafka.
    pub async fn record_card_outcome(&self, outcome: CardOutcome) -> Result<()> {
        self.with(true, move |c| write_card_outcome(c, &outcome, &now()))
            .await
    }

    pub async fn score_cards(&self, limit: usize) -> Result<Vec<StoredScoreCard>> {
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT document_id, card, created_at FROM score_cards ORDER BY created_at DESC, document_id LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(StoredScoreCard {
                    document_id: r.get(0)?,
                    card: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, source, reason, payload, created_at FROM dead_letters ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                let payload: Option<Vec<u8>> = r.get(3)?;
                Ok(DeadLetter {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    reason: r.get(2)?,
                    payload: String::from_utf8_lossy(&payload.unwrap_or_default()).into_owned(),
                    created_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// The result of the score-card decision, as stored.
#[derive(Debug, Clone)]
pub enum CardOutcome {
    Card {
        document_id: String,
        card: String,
    },
    DeadLetter {
        source: String,
        reason: String,
        payload: Vec<u8>,
    },
    Nothing,
}

fn write_card_outcome(c: &Connection, outcome: &CardOutcome, at: &str) -> rusqlite::Result<()> {
    match outcome {
        CardOutcome::Card { document_id, card } => {
            c.execute(
                "INSERT INTO score_cards (document_id, card, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (document_id) DO UPDATE SET card = excluded.card, created_at = excluded.created_at",
                params![document_id, card, at],
            )?;
        }
        CardOutcome::DeadLetter {
            source,
            reason,
            payload,
        } => {
            c.execute(
                "INSERT INTO dead_letters (source, reason, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![source, reason, payload, at],
            )?;
        }
        CardOutcome::Nothing => {}
    }
    Ok(())
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: columns added since.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has_closes_at: bool = c.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('adaptive_sessions') WHERE name = 'closes_at'",
        [],
        |r| r.get(0),
    )?;
    if !has_closes_at {
        c.execute_batch("ALTER TABLE adaptive_sessions ADD COLUMN closes_at TEXT;")?;
    }
    let has_activation: bool = c.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('calibrations') WHERE name = 'activation'",
        [],
        |r| r.get(0),
    )?;
    if !has_activation {
        // Before activation existed the latest version was the one in use: versions read as
        // activated in version order.
        c.execute_batch(
            "ALTER TABLE calibrations ADD COLUMN activation INTEGER;
             UPDATE calibrations SET activation = version;",
        )?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS adaptive_sessions_due ON adaptive_sessions (closes_at)
         WHERE status = 'active';",
    )
}

const SESSION_COLUMNS: &str = "id, exam, email, calibration_version, status, answered, result_id, created_at, updated_at, state, closes_at";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSession> {
    Ok(StoredSession {
        id: r.get(0)?,
        exam: r.get(1)?,
        email: r.get(2)?,
        calibration_version: r.get(3)?,
        status: r.get(4)?,
        answered: r.get(5)?,
        result_id: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        state: r.get(9)?,
        closes_at: r.get(10)?,
    })
}

const CALIBRATION_COLUMNS: &str =
    "exam, version, created_at, source, responses, params, summary, activation";

fn calibration_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCalibration> {
    Ok(StoredCalibration {
        exam: r.get(0)?,
        version: r.get(1)?,
        created_at: r.get(2)?,
        source: r.get(3)?,
        responses: r.get(4)?,
        params: r.get(5)?,
        summary: r.get(6)?,
        activation: r.get(7)?,
    })
}

/// `(id, doc)` of a `results` row.
fn id_and_doc(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn decode(rows: Vec<(String, String)>) -> Result<Vec<ResultDocument>> {
    rows.into_iter()
        .map(|(id, text)| {
            serde_json::from_str(&text).map_err(|e| IngestError::CorruptDocument {
                id,
                message: e.to_string(),
            })
        })
        .collect()
}

#[async_trait]
impl ResultStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn insert_result(&self, doc: &ResultDocument) -> Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = WriteJob::Result(InsertJob {
            row: ResultRow::new(doc)?,
            done,
        });
        self.write_durably(job, answer).await?;
        self.outbox_notify.notify_one();
        Ok(())
    }

    async fn get_result(&self, id: &str) -> Result<Option<ResultDocument>> {
        let id = id.to_string();
        let row = self
            .with(false, move |c| {
                c.query_row(
                    "SELECT id, doc FROM results WHERE id = ?1",
                    [id],
                    id_and_doc,
                )
                .optional()
            })
            .await?;
        Ok(decode(row.into_iter().collect())?.pop())
    }

    async fn list_results(&self, filter: &ResultFilter) -> Result<Vec<ResultDocument>> {
        let filter = filter.clone();
        let rows = self
            .with(false, move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, doc FROM results
                     WHERE (?1 IS NULL OR email = ?1) AND (?2 IS NULL OR exam = ?2)
                     ORDER BY submitted_at DESC, id DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![filter.email, filter.exam, filter.limit as i64],
                    id_and_doc,
                )?;
                rows.collect()
            })
            .await?;
        decode(rows)
    }

    async fn ping(&self) -> Result<()> {
        self.with(false, |c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

/// The trait over the inherent methods (which the outbox and tests also call directly).
/// The latest calibration version of `exam` (0 when it has none).
fn latest_calibration_version(tx: &rusqlite::Transaction, exam: &str) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT coalesce(max(version), 0) FROM calibrations WHERE exam = ?1",
        [exam],
        |r| r.get(0),
    )
}

/// Inserts `calibration` as `version` of its exam (its own `version` field is ignored).
fn insert_calibration(
    tx: &rusqlite::Transaction,
    calibration: &StoredCalibration,
    version: i64,
) -> rusqlite::Result<()> {
    let activation = match calibration.activation {
        Some(_) => Some(next_activation(tx, &calibration.exam)?),
        None => None,
    };
    tx.execute(
        "INSERT INTO calibrations (exam, version, created_at, source, responses, params, summary, activation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            calibration.exam,
            version,
            calibration.created_at,
            calibration.source,
            calibration.responses,
            calibration.params,
            calibration.summary,
            activation
        ],
    )?;
    Ok(())
}

/// One above the exam's highest activation (1 when none).
fn next_activation(tx: &rusqlite::Transaction, exam: &str) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT coalesce(max(activation), 0) + 1 FROM calibrations WHERE exam = ?1",
        [exam],
        |r| r.get(0),
    )
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn put_session(&self, session: StoredSession) -> Result<()> {
        SqliteStore::put_session(self, session).await
    }

    async fn replace_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
    ) -> Result<bool> {
        SqliteStore::replace_session_if(self, session, expected_answered).await
    }

    async fn finish_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
        result: &ResultDocument,
    ) -> Result<bool> {
        SqliteStore::finish_session_if(self, session, expected_answered, result).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<StoredSession>> {
        SqliteStore::get_session(self, id).await
    }

    async fn list_sessions(
        &self,
        exam: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredSession>> {
        SqliteStore::list_sessions(self, exam, limit).await
    }

    async fn due_sessions(&self, now: &str, limit: usize) -> Result<Vec<StoredSession>> {
        SqliteStore::due_sessions(self, now, limit).await
    }

    async fn add_calibration(&self, calibration: StoredCalibration) -> Result<i64> {
        SqliteStore::add_calibration(self, calibration).await
    }

    async fn add_calibration_after(
        &self,
        calibration: StoredCalibration,
        after: i64,
    ) -> Result<Option<i64>> {
        SqliteStore::add_calibration_after(self, calibration, after).await
    }

    async fn get_calibration(
        &self,
        exam: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredCalibration>> {
        SqliteStore::get_calibration(self, exam, version).await
    }

    async fn get_active_calibration(&self, exam: &str) -> Result<Option<StoredCalibration>> {
        SqliteStore::get_active_calibration(self, exam).await
    }

    async fn import_roster(
        &self,
        columns: Vec<String>,
        entries: Vec<RosterEntry>,
        replace: bool,
    ) -> Result<RosterImport> {
        SqliteStore::import_roster(self, columns, entries, replace).await
    }

    async fn roster_columns(&self) -> Result<Vec<String>> {
        SqliteStore::roster_columns(self).await
    }

    async fn roster(&self) -> Result<Vec<RosterEntry>> {
        SqliteStore::roster(self).await
    }

    async fn activate_calibration(&self, exam: &str, version: i64) -> Result<Option<i64>> {
        SqliteStore::activate_calibration(self, exam, version).await
    }

    async fn list_calibrations(&self, exam: Option<String>) -> Result<Vec<StoredCalibration>> {
        SqliteStore::list_calibrations(self, exam).await
    }

    async fn scan_sessions(
        &self,
        after: Option<String>,
        limit: usize,
        fields: &[SessionField],
    ) -> Result<SessionChunk> {
        SqliteStore::scan_sessions(self, after, limit, fields).await
    }
}

#[cfg(test)]
mod tests;
