//! Fixed-form attempts in MongoDB: collection `exam_attempts`, `_id` = attempt id, answers
//! and flags as arrays. A partial unique index on `(email, exam)` of open attempts keeps
//! one open attempt per student and exam across servers; an answer is one `$set` on its
//! array element, filtered on `status: "open"`, so it is atomic on the server and two
//! devices never overwrite each other's answers.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;

use super::{ATTEMPTS_COLLECTION, Fields, MongoStore, find_limit, is_duplicate_key};
use crate::document::ResultDocument;
use crate::error::{IngestError, Result};
use crate::store::{AttemptStore, StoredAttempt};

fn optional(v: &Option<String>) -> Bson {
    v.as_deref().map_or(Bson::Null, |s| Bson::String(s.into()))
}

fn attempt_to_bson(a: &StoredAttempt) -> Document {
    doc! {
        "_id": &a.id,
        "exam": &a.exam,
        "email": &a.email,
        "status": &a.status,
        "started_at": &a.started_at,
        "deadline": optional(&a.deadline),
        "closes_at": optional(&a.closes_at),
        "answers": a.answers.iter().map(optional).collect::<Vec<_>>(),
        "flags": a.flags.iter().map(|f| Bson::Boolean(*f)).collect::<Vec<_>>(),
        "version": a.version,
        "updated_at": &a.updated_at,
        "result_id": &a.result_id,
        "submitted_at": optional(&a.submitted_at),
        "submitted_by": optional(&a.submitted_by),
    }
}

fn attempt_from_bson(doc: &Document) -> Result<StoredAttempt> {
    let f = Fields::new(ATTEMPTS_COLLECTION, doc);
    let array = |key: &str| match doc.get(key) {
        Some(Bson::Array(items)) => Ok(items.clone()),
        _ => Err(f.corrupt(format!("field {key:?} is not an array"))),
    };
    let answers = array("answers")?
        .into_iter()
        .map(|v| match v {
            Bson::Null => Ok(None),
            Bson::String(s) => Ok(Some(s)),
            other => Err(f.corrupt(format!(
                "an answer is {:?}, not a string or null",
                other.element_type()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let flags = array("flags")?
        .into_iter()
        .map(|v| match v {
            Bson::Boolean(b) => Ok(b),
            other => Err(f.corrupt(format!(
                "a flag is {:?}, not a boolean",
                other.element_type()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StoredAttempt {
        id: f.string("_id")?,
        exam: f.string("exam")?,
        email: f.string("email")?,
        status: f.string("status")?,
        started_at: f.string("started_at")?,
        deadline: f.optional_string("deadline")?,
        closes_at: f.optional_string("closes_at")?,
        answers,
        flags,
        version: f.int("version")?,
        updated_at: f.string("updated_at")?,
        result_id: f.string("result_id")?,
        submitted_at: f.optional_string("submitted_at")?,
        submitted_by: f.optional_string("submitted_by")?,
    })
}

impl MongoStore {
    /// Indexes of `exam_attempts` (and the per-student count of adaptive sessions).
    pub(super) async fn ensure_attempt_indexes(&self) -> Result<()> {
        self.attempts
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"email": 1, "exam": 1})
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .partial_filter_expression(doc! {"status": "open"})
                            .name("one_open_attempt".to_string())
                            .build(),
                    )
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"status": 1, "closes_at": 1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"email": 1, "started_at": -1})
                    .build(),
            ])
            .await?;
        self.sessions
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"email": 1, "exam": 1, "status": 1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"status": 1, "closes_at": 1})
                    .build(),
            ])
            .await?;
        Ok(())
    }

    async fn find_attempts(
        &self,
        filter: Document,
        sort: Document,
        limit: usize,
    ) -> Result<Vec<StoredAttempt>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.ensure_indexes().await?;
        let docs: Vec<Document> = self
            .attempts
            .find(filter)
            .sort(sort)
            .limit(find_limit(limit))
            .await?
            .try_collect()
            .await?;
        docs.iter().map(attempt_from_bson).collect()
    }
}

#[async_trait]
impl AttemptStore for MongoStore {
    async fn open_attempt(&self, attempt: StoredAttempt) -> Result<(StoredAttempt, bool)> {
        self.ensure_indexes().await?;
        match self.attempts.insert_one(attempt_to_bson(&attempt)).await {
            Ok(_) => return Ok((attempt, true)),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let open = self
            .attempts
            .find_one(doc! {"email": &attempt.email, "exam": &attempt.exam, "status": "open"})
            .await?
            .ok_or_else(|| {
                // Submitted between the insert and this read: the caller may start again.
                IngestError::Task(format!(
                    "an open attempt of {:?} blocked a new one and was submitted since; try again",
                    attempt.exam
                ))
            })?;
        Ok((attempt_from_bson(&open)?, false))
    }

    async fn get_attempt(&self, id: &str) -> Result<Option<StoredAttempt>> {
        match self.attempts.find_one(doc! {"_id": id}).await? {
            Some(doc) => Ok(Some(attempt_from_bson(&doc)?)),
            None => Ok(None),
        }
    }

    async fn list_attempts(
        &self,
        email: &str,
        exam: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredAttempt>> {
        let mut filter = doc! {"email": email};
        if let Some(exam) = exam {
            filter.insert("exam", exam);
        }
        self.find_attempts(filter, doc! {"started_at": -1, "_id": -1}, limit)
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
        self.ensure_indexes().await?;
        let mut set = doc! {"updated_at": at};
        if let Some(answer) = &answer {
            set.insert(format!("answers.{index}"), optional(answer));
        }
        if let Some(flagged) = flagged {
            set.insert(format!("flags.{index}"), flagged);
        }
        let updated = self
            .attempts
            .update_one(
                doc! {"_id": id, "status": "open", format!("answers.{index}"): {"$exists": true}},
                doc! {"$set": set, "$inc": {"version": 1_i64}},
            )
            .await?;
        Ok(updated.matched_count == 1)
    }

    async fn finish_attempt_if(
        &self,
        attempt: StoredAttempt,
        expected_version: i64,
        result: &ResultDocument,
    ) -> Result<bool> {
        // The submit first, conditional on the version read, so the answers are frozen
        // before the result is made from them; then the result (a duplicate id is a retry).
        // A crash in between leaves a submitted attempt without its result, which the api
        // stores again from the frozen answers when it next reads the attempt.
        let updated = self
            .attempts
            .update_one(
                doc! {"_id": &attempt.id, "status": "open", "version": expected_version},
                doc! {
                    "$set": {
                        "status": &attempt.status,
                        "updated_at": &attempt.updated_at,
                        "submitted_at": optional(&attempt.submitted_at),
                        "submitted_by": optional(&attempt.submitted_by),
                    },
                    "$inc": {"version": 1_i64},
                },
            )
            .await?;
        if updated.matched_count != 1 {
            return Ok(false);
        }
        match self.collection.insert_one(result.to_bson()).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn due_attempts(&self, now: &str, limit: usize) -> Result<Vec<StoredAttempt>> {
        self.find_attempts(
            doc! {"status": "open", "closes_at": {"$ne": Bson::Null, "$lte": now}},
            doc! {"closes_at": 1},
            limit,
        )
        .await
    }

    async fn attempts_used(&self, email: &str, exam: &str) -> Result<i64> {
        self.ensure_indexes().await?;
        let results = self
            .collection
            .count_documents(doc! {"email": email, "exam": exam})
            .await?;
        let open = self
            .attempts
            .count_documents(doc! {"email": email, "exam": exam, "status": "open"})
            .await?;
        let sessions = self
            .sessions
            .count_documents(doc! {"email": email, "exam": exam, "status": "active"})
            .await?;
        Ok(i64::try_from(results + open + sessions).unwrap_or(i64::MAX))
    }
}
