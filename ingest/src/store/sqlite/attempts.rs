//! Fixed-form attempts in the embedded store: table `exam_attempts`, written by the same
//! group-commit writer as results and sessions (every saved answer is on disk before it is
//! acknowledged). An answer is saved with `json_set` on the stored array, so two devices
//! saving different questions of one attempt never overwrite each other's answers.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{ResultRow, SqliteStore, WriteJob};
use crate::document::ResultDocument;
use crate::error::{IngestError, Result};
use crate::store::{AttemptStore, StoredAttempt};

/// One attempt write waiting for the group-commit writer.
pub(super) struct AttemptJob {
    op: AttemptOp,
    pub(super) done: tokio::sync::oneshot::Sender<rusqlite::Result<bool>>,
}

enum AttemptOp {
    /// Insert unless the student has an open attempt of the exam.
    Open(Box<StoredAttempt>),
    Save {
        id: String,
        index: usize,
        answer: Option<Option<String>>,
        flagged: Option<bool>,
        at: String,
    },
    Finish {
        attempt: Box<StoredAttempt>,
        expected_version: i64,
        result: Box<ResultRow>,
    },
}

impl AttemptJob {
    pub(super) fn write(&self, tx: &Connection) -> rusqlite::Result<bool> {
        match &self.op {
            AttemptOp::Open(a) => {
                // The partial unique index on (email, exam) of open attempts decides.
                let inserted = tx.execute(
                    "INSERT INTO exam_attempts (id, exam, email, status, started_at, deadline, closes_at,
                       answers, flags, version, updated_at, result_id, submitted_at, submitted_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT DO NOTHING",
                    params![
                        a.id,
                        a.exam,
                        a.email,
                        a.status,
                        a.started_at,
                        a.deadline,
                        a.closes_at,
                        json_text(&a.answers),
                        json_text(&a.flags),
                        a.version,
                        a.updated_at,
                        a.result_id,
                        a.submitted_at,
                        a.submitted_by
                    ],
                )?;
                Ok(inserted == 1)
            }
            AttemptOp::Save {
                id,
                index,
                answer,
                flagged,
                at,
            } => {
                let path = format!("$[{index}]");
                // `json_set` on a path past the end would append: the length check keeps
                // the arrays one entry per question.
                let changed = tx.execute(
                    "UPDATE exam_attempts SET
                       answers = CASE WHEN ?3 THEN json_set(answers, ?2, ?4) ELSE answers END,
                       flags = CASE WHEN ?5 IS NULL THEN flags ELSE json_set(flags, ?2, json(?5)) END,
                       version = version + 1, updated_at = ?6
                     WHERE id = ?1 AND status = 'open' AND ?7 < json_array_length(answers)",
                    params![
                        id,
                        path,
                        answer.is_some(),
                        answer.clone().flatten(),
                        flagged.map(|f| if f { "true" } else { "false" }),
                        at,
                        *index as i64
                    ],
                )?;
                Ok(changed == 1)
            }
            AttemptOp::Finish {
                attempt,
                expected_version,
                result,
            } => {
                let changed = tx.execute(
                    "UPDATE exam_attempts SET status = ?2, version = version + 1, updated_at = ?3,
                       submitted_at = ?4, submitted_by = ?5
                     WHERE id = ?1 AND status = 'open' AND version = ?6",
                    params![
                        attempt.id,
                        attempt.status,
                        attempt.updated_at,
                        attempt.submitted_at,
                        attempt.submitted_by,
                        expected_version
                    ],
                )?;
                if changed != 1 {
                    return Ok(false);
                }
                result.insert(tx, true)?;
                Ok(true)
            }
        }
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

const ATTEMPT_COLUMNS: &str = "id, exam, email, status, started_at, deadline, closes_at, answers, flags, version, updated_at, result_id, submitted_at, submitted_by";

fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAttempt> {
    let json = |i: usize, text: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("exam_attempts column {i} is not the expected JSON array: {text}").into(),
        )
    };
    let answers: String = r.get(7)?;
    let flags: String = r.get(8)?;
    Ok(StoredAttempt {
        id: r.get(0)?,
        exam: r.get(1)?,
        email: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        deadline: r.get(5)?,
        closes_at: r.get(6)?,
        answers: serde_json::from_str(&answers).map_err(|_| json(7, answers.clone()))?,
        flags: serde_json::from_str(&flags).map_err(|_| json(8, flags.clone()))?,
        version: r.get(9)?,
        updated_at: r.get(10)?,
        result_id: r.get(11)?,
        submitted_at: r.get(12)?,
        submitted_by: r.get(13)?,
    })
}

impl SqliteStore {
    async fn write_attempt(&self, op: AttemptOp) -> Result<bool> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.write_durably(WriteJob::Attempt(AttemptJob { op, done }), answer)
            .await
    }

    async fn open_attempt_of(&self, email: &str, exam: &str) -> Result<Option<StoredAttempt>> {
        let (email, exam) = (email.to_string(), exam.to_string());
        self.with(false, move |c| {
            c.query_row(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM exam_attempts
                     WHERE email = ?1 AND exam = ?2 AND status = 'open'"
                ),
                params![email, exam],
                attempt_row,
            )
            .optional()
        })
        .await
    }
}

#[async_trait]
impl AttemptStore for SqliteStore {
    async fn open_attempt(&self, attempt: StoredAttempt) -> Result<(StoredAttempt, bool)> {
        let (email, exam) = (attempt.email.clone(), attempt.exam.clone());
        if self
            .write_attempt(AttemptOp::Open(Box::new(attempt.clone())))
            .await?
        {
            return Ok((attempt, true));
        }
        // Only this process writes the embedded store, and an open attempt is closed only
        // by a submit: the one that blocked the insert is there to read.
        let open = self.open_attempt_of(&email, &exam).await?.ok_or_else(|| {
            IngestError::Task(format!(
                "an open attempt of {exam:?} blocked a new one but is gone"
            ))
        })?;
        Ok((open, false))
    }

    async fn get_attempt(&self, id: &str) -> Result<Option<StoredAttempt>> {
        let id = id.to_string();
        self.with(false, move |c| {
            c.query_row(
                &format!("SELECT {ATTEMPT_COLUMNS} FROM exam_attempts WHERE id = ?1"),
                [id],
                attempt_row,
            )
            .optional()
        })
        .await
    }

    async fn list_attempts(
        &self,
        email: &str,
        exam: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredAttempt>> {
        let email = email.to_string();
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM exam_attempts WHERE email = ?1 AND (?2 IS NULL OR exam = ?2)
                 ORDER BY started_at DESC, id DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![email, exam, i64::try_from(limit).unwrap_or(i64::MAX)],
                attempt_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn save_attempt_answer(
        &self,
        id: &str,
        index: usize,
        answer: Option<Option<String>>,
        flagged: Option<bool>,
        at: &str,
    ) -> Result<bool> {
        self.write_attempt(AttemptOp::Save {
            id: id.to_string(),
            index,
            answer,
            flagged,
            at: at.to_string(),
        })
        .await
    }

    async fn finish_attempt_if(
        &self,
        attempt: StoredAttempt,
        expected_version: i64,
        result: &ResultDocument,
    ) -> Result<bool> {
        let result = Box::new(ResultRow::new(result)?);
        let finished = self
            .write_attempt(AttemptOp::Finish {
                attempt: Box::new(attempt),
                expected_version,
                result,
            })
            .await?;
        if finished {
            self.outbox_notify.notify_one();
        }
        Ok(finished)
    }

    async fn due_attempts(&self, now: &str, limit: usize) -> Result<Vec<StoredAttempt>> {
        let now = now.to_string();
        self.with(false, move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM exam_attempts
                 WHERE status = 'open' AND closes_at IS NOT NULL AND closes_at <= ?1
                 ORDER BY closes_at LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                attempt_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn attempts_used(&self, email: &str, exam: &str) -> Result<i64> {
        let (email, exam) = (email.to_string(), exam.to_string());
        self.with(false, move |c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM results WHERE email = ?1 AND exam = ?2)
                      + (SELECT count(*) FROM exam_attempts WHERE email = ?1 AND exam = ?2 AND status = 'open')
                      + (SELECT count(*) FROM adaptive_sessions WHERE email = ?1 AND exam = ?2 AND status = 'active')",
                params![email, exam],
                |r| r.get(0),
            )
        })
        .await
    }
}
