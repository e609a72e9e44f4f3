//! The embedded default store: SQLite (bundled) in WAL mode with `synchronous=FULL`, so a
//! committed transaction is on disk before `insert_result` returns. The result row and its
//! change event (the outbox) are written in one transaction: no event is lost even if the
//! broker is down or the process is killed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};

use super::{DeadLetter, OutboxEvent, ResultFilter, ResultStore, StoredScoreCard};
use crate::debezium::insert_event;
use crate::document::{ResultDocument, format_timestamp};
use crate::error::{IngestError, Result};

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
CREATE TABLE IF NOT EXISTS score_cards (
    document_id TEXT PRIMARY KEY,
    card TEXT NOT NULL,
    created_at TEXT NOT NULL
);
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
}

pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Woken after every insert so outbox consumers need not poll hard.
    pub outbox_notify: Arc<tokio::sync::Notify>,
}

fn now() -> String {
    format_timestamp(Utc::now())
}

impl SqliteStore {
    /// Opens (creating if needed) `examflow.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
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
        let reader = Connection::open(&path).map_err(err)?;
        reader
            .execute_batch("PRAGMA busy_timeout=10000;")
            .map_err(err)?;
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            outbox_notify: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a connection in the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = if write {
            self.writer.clone()
        } else {
            self.reader.clone()
        };
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| IngestError::Task(e.to_string()))?
        .map_err(|source| IngestError::Sqlite { path, source })
    }

    /// Up to `limit` outbox events not yet handled by `reader`, oldest first.
    pub async fn pending_outbox(
        &self,
        reader: OutboxReader,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>> {
        let sql = format!(
            "SELECT seq, key, value FROM outbox WHERE {} IS NULL ORDER BY seq LIMIT ?1",
            reader.column()
        );
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

    /// Records what the in-process score-card consumer made of an outbox event and marks
    /// it handled, in one transaction (exactly once in effect).
    pub async fn complete_card_event(&self, seq: i64, outcome: CardOutcome) -> Result<()> {
        self.with(true, move |c| {
            let tx = c.transaction()?;
            let at = now();
            write_card_outcome(&tx, &outcome, &at)?;
            tx.execute(
                "UPDATE outbox SET carded_at = ?1 WHERE seq = ?2",
                params![at, seq],
            )?;
            tx.commit()
        })
        .await
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

fn row_to_doc(id: String, text: String) -> rusqlite::Result<(String, String)> {
    Ok((id, text))
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
        let text = serde_json::to_string(doc).map_err(|e| IngestError::CorruptDocument {
            id: doc.id.clone(),
            message: e.to_string(),
        })?;
        let ts_ms = Utc::now().timestamp_millis();
        let (key, value) = insert_event(doc, CHANGE_EVENT_DB, CHANGE_EVENT_COLLECTION, ts_ms);
        let doc = doc.clone();
        self.with(true, move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO results (id, email, exam, submitted_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![doc.id, doc.email, doc.exam, doc.submitted_at, text],
            )?;
            tx.execute(
                "INSERT INTO outbox (key, value, created_at) VALUES (?1, ?2, ?3)",
                params![key, value, now()],
            )?;
            // synchronous=FULL: the WAL is fsync'd before commit returns.
            tx.commit()
        })
        .await?;
        self.outbox_notify.notify_waiters();
        Ok(())
    }

    async fn get_result(&self, id: &str) -> Result<Option<ResultDocument>> {
        let id = id.to_string();
        let row = self
            .with(false, move |c| {
                c.query_row("SELECT id, doc FROM results WHERE id = ?1", [id], |r| {
                    row_to_doc(r.get(0)?, r.get(1)?)
                })
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
                    |r| row_to_doc(r.get(0)?, r.get(1)?),
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

#[cfg(test)]
mod tests {
    use super::*;
    use examflow_engine::{Outcome, ScoredSubmission};

    fn doc(email: &str, exam: &str) -> ResultDocument {
        ResultDocument::new(
            email,
            ScoredSubmission {
                exam: exam.into(),
                score: 0,
                total: 0,
                percentage: 0,
                result: Outcome::Failed,
                details: vec![],
            },
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn results_and_outbox_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let a = doc("a@x", "geo");
        let b = doc("b@x", "math");
        store.insert_result(&a).await.unwrap();
        store.insert_result(&b).await.unwrap();
        assert_eq!(store.get_result(&a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(store.get_result("nope").await.unwrap(), None);
        let mine = store
            .list_results(&ResultFilter {
                email: Some("a@x".into()),
                exam: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(mine, vec![a.clone()]);
        let math = store
            .list_results(&ResultFilter {
                email: None,
                exam: Some("math".into()),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(math, vec![b]);

        let pending = store
            .pending_outbox(OutboxReader::Publisher, 10)
            .await
            .unwrap();
        assert_eq!(pending.len(), 2);
        store.mark_published(vec![pending[0].seq]).await.unwrap();
        assert_eq!(
            store
                .count_pending_outbox(OutboxReader::Publisher)
                .await
                .unwrap(),
            1
        );
        // The other reader is independent.
        assert_eq!(
            store
                .count_pending_outbox(OutboxReader::ScoreCards)
                .await
                .unwrap(),
            2
        );
        store
            .complete_card_event(
                pending[0].seq,
                CardOutcome::Card {
                    document_id: a.id.clone(),
                    card: "card".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .count_pending_outbox(OutboxReader::ScoreCards)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.score_cards(10).await.unwrap()[0].document_id, a.id);

        // Reopening sees everything.
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.get_result(&a.id).await.unwrap(), Some(a));
    }
}
