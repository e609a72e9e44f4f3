//! The production store: MongoDB database `exams`, collection `score`, one `insert_one`
//! per result in the seed's document shape. Debezium captures these inserts into Kafka,
//! so this store keeps no outbox. Writes use majority write concern with journaling so a
//! result is durable before the API answers.
//!
//! The same database holds adaptive sessions (`adaptive_sessions`, one document per session,
//! `_id` = session id) and calibration versions (`calibrations`, unique on exam and
//! version), so every server against one MongoDB continues any session and numbers versions
//! once.
//!
//! Finishing a session writes its result and its final state. Where the deployment supports
//! multi-document transactions (a replica set or a sharded cluster, asked once with `hello`
//! on first use), both go in one transaction, so the losing one of two concurrent finishes
//! stores nothing; on a standalone server the result goes first, and a lost race may leave
//! the losing answer's result behind.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use tokio::sync::OnceCell;

use super::{
    ResultFilter, ResultStore, RosterEntry, RosterImport, SessionChunk, SessionField, SessionStore,
    StoredCalibration, StoredSession,
};
use crate::document::{ResultDocument, bson_to_plain_json};
use crate::error::{IngestError, Result};

mod attempts;
mod transactions;

pub const DATABASE: &str = "exams";
pub const COLLECTION: &str = "score";
pub const SESSIONS_COLLECTION: &str = "adaptive_sessions";
pub const CALIBRATIONS_COLLECTION: &str = "calibrations";
pub const ATTEMPTS_COLLECTION: &str = "exam_attempts";
/// The roster: `_id` the email, `groups` an object of group column → group.
pub const ROSTER_COLLECTION: &str = "roster";
/// The roster's group columns: `_id` the name, `position` the order of first import.
pub const ROSTER_COLUMNS_COLLECTION: &str = "roster_columns";

/// How often `add_calibration` tries the next free version before giving up. Each lost
/// race means another writer took a version, so this bounds the writers racing on one
/// exam, not the versions.
const CALIBRATION_INSERT_ATTEMPTS: usize = 32;

/// MongoDB's code for a unique index violation.
const DUPLICATE_KEY: i32 = 11000;

pub struct MongoStore {
    client: Client,
    /// Majority, journaled: for the collections and for transactions.
    concern: WriteConcern,
    collection: Collection<Document>,
    sessions: Collection<Document>,
    calibrations: Collection<Document>,
    attempts: Collection<Document>,
    roster: Collection<Document>,
    roster_columns: Collection<Document>,
    /// Set once the indexes of the session and calibration collections exist. Made on first
    /// use rather than at connect, so a server starts while MongoDB is still coming up (as
    /// for results); a failed attempt is retried by the next call.
    indexes: OnceCell<()>,
    /// Whether the deployment supports multi-document transactions, asked on first use
    /// (like the indexes, so a server may start before MongoDB is up); a failed `hello` is
    /// not remembered, the next call asks again.
    transactions: OnceCell<bool>,
}

impl MongoStore {
    /// Connects to `uri` and uses database `database` (default `exams`): collection `score`
    /// for results, `adaptive_sessions` and `calibrations`.
    pub async fn connect(uri: &str, database: Option<&str>) -> Result<Self> {
        let client = Client::with_uri_str(uri).await?;
        let concern = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        let db = client.database(database.unwrap_or(DATABASE));
        let durable = |name: &str| {
            db.collection_with_options::<Document>(
                name,
                CollectionOptions::builder()
                    .write_concern(concern.clone())
                    .build(),
            )
        };
        Ok(MongoStore {
            collection: durable(COLLECTION),
            sessions: durable(SESSIONS_COLLECTION),
            calibrations: durable(CALIBRATIONS_COLLECTION),
            attempts: durable(ATTEMPTS_COLLECTION),
            roster: durable(ROSTER_COLLECTION),
            roster_columns: durable(ROSTER_COLUMNS_COLLECTION),
            client,
            concern,
            indexes: OnceCell::new(),
            transactions: OnceCell::new(),
        })
    }

    /// Drops the collection (tests only use this on their own database).
    pub async fn drop_collection(&self) -> Result<()> {
        Ok(self.collection.drop().await?)
    }

    /// Drops the session and calibration collections with their indexes (tests only use
    /// this on their own database, before the store's first session or calibration call or
    /// after its last).
    pub async fn drop_session_collections(&self) -> Result<()> {
        self.sessions.drop().await?;
        self.calibrations.drop().await?;
        self.attempts.drop().await?;
        self.roster.drop().await?;
        self.roster_columns.drop().await?;
        Ok(())
    }

    /// Creates the indexes once per store (creating an existing index is a no-op, so
    /// several servers may race here).
    async fn ensure_indexes(&self) -> Result<()> {
        self.indexes
            .get_or_try_init(|| async {
                self.sessions
                    .create_indexes([
                        IndexModel::builder()
                            .keys(doc! {"exam": 1, "created_at": -1, "_id": -1})
                            .build(),
                        IndexModel::builder()
                            .keys(doc! {"created_at": -1, "_id": -1})
                            .build(),
                    ])
                    .await?;
                // The unique index is what makes version numbers safe across servers.
                self.calibrations
                    .create_index(
                        IndexModel::builder()
                            .keys(doc! {"exam": 1, "version": 1})
                            .options(IndexOptions::builder().unique(true).build())
                            .build(),
                    )
                    .await?;
                self.ensure_attempt_indexes().await?;
                self.activate_legacy_calibrations().await?;
                Ok::<_, IngestError>(())
            })
            .await?;
        Ok(())
    }

    /// Versions stored before activation existed have no `activation` field: the latest
    /// was the one in use, so they read as activated in version order.
    async fn activate_legacy_calibrations(&self) -> Result<()> {
        let legacy: Vec<Document> = self
            .calibrations
            .find(doc! {"activation": {"$exists": false}})
            .projection(doc! {"_id": 1, "version": 1})
            .await?
            .try_collect()
            .await?;
        for d in legacy {
            let version = Fields::new(CALIBRATIONS_COLLECTION, &d).int("version")?;
            self.calibrations
                .update_one(
                    doc! {"_id": d.get("_id").cloned().unwrap_or(Bson::Null), "activation": {"$exists": false}},
                    doc! {"$set": {"activation": version}},
                )
                .await?;
        }
        Ok(())
    }

    /// The highest activation of `exam`'s versions, 0 when none was activated.
    async fn max_activation(&self, exam: &str) -> Result<i64> {
        let latest = self
            .calibrations
            .find_one(doc! {"exam": exam, "activation": {"$ne": null}})
            .sort(doc! {"activation": -1})
            .projection(doc! {"activation": 1})
            .await?;
        match latest {
            Some(d) => Fields::new(CALIBRATIONS_COLLECTION, &d).int("activation"),
            None => Ok(0),
        }
    }

    /// The document to insert for `c` as `version`, its activation numbered above the
    /// exam's others when it is to be active.
    async fn calibration_document(&self, c: &StoredCalibration, version: i64) -> Result<Document> {
        let activation = match c.activation {
            Some(_) => Some(self.max_activation(&c.exam).await? + 1),
            None => None,
        };
        Ok(calibration_to_bson(
            &StoredCalibration {
                activation,
                ..c.clone()
            },
            version,
        ))
    }

    /// The highest version of `exam`, 0 when it has none.
    async fn max_calibration_version(&self, exam: &str) -> Result<i64> {
        let latest = self
            .calibrations
            .find_one(doc! {"exam": exam})
            .sort(doc! {"version": -1})
            .projection(doc! {"version": 1})
            .await?;
        match latest {
            Some(d) => Fields::new(CALIBRATIONS_COLLECTION, &d).int("version"),
            None => Ok(0),
        }
    }
}

fn decode(doc: &Document) -> Result<ResultDocument> {
    let id = doc
        .get("_id")
        .map(|v| bson_to_plain_json(v).to_string())
        .unwrap_or_default();
    ResultDocument::from_plain_json(bson_to_plain_json(&Bson::Document(doc.clone())))
        .map_err(|message| IngestError::CorruptDocument { id, message })
}

fn id_filter(id: &str) -> Document {
    match ObjectId::parse_str(id) {
        Ok(oid) => doc! {"_id": oid},
        Err(_) => doc! {"_id": id},
    }
}

#[async_trait]
impl ResultStore for MongoStore {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn insert_result(&self, doc: &ResultDocument) -> Result<()> {
        self.collection.insert_one(doc.to_bson()).await?;
        Ok(())
    }

    async fn get_result(&self, id: &str) -> Result<Option<ResultDocument>> {
        match self.collection.find_one(id_filter(id)).await? {
            Some(doc) => Ok(Some(decode(&doc)?)),
            None => Ok(None),
        }
    }

    async fn list_results(&self, filter: &ResultFilter) -> Result<Vec<ResultDocument>> {
        let mut query = Document::new();
        if let Some(email) = &filter.email {
            query.insert("email", email);
        }
        if let Some(exam) = &filter.exam {
            query.insert("exam", exam);
        }
        let cursor = self
            .collection
            .find(query)
            .sort(doc! {"submitted_at": -1, "_id": -1})
            .limit(filter.limit as i64)
            .await?;
        let docs: Vec<Document> = cursor.try_collect().await?;
        docs.iter().map(decode).collect()
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        Ok(())
    }
}

/// Reads the fields of one stored session or calibration; a missing or mistyped field is a
/// [`IngestError::CorruptRecord`] naming the collection, the record and the field.
struct Fields<'a> {
    collection: &'static str,
    doc: &'a Document,
}

impl<'a> Fields<'a> {
    fn new(collection: &'static str, doc: &'a Document) -> Self {
        Fields { collection, doc }
    }

    fn corrupt(&self, message: String) -> IngestError {
        let id = match self.doc.get("_id") {
            Some(Bson::String(s)) => s.clone(),
            Some(other) => bson_to_plain_json(other).to_string(),
            None => "(no _id)".into(),
        };
        IngestError::CorruptRecord {
            collection: self.collection,
            id,
            message,
        }
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.doc.get(key) {
            Some(Bson::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.corrupt(format!(
                "field {key:?} is {:?}, not a string",
                other.element_type()
            ))),
            None => Err(self.corrupt(format!("field {key:?} is missing"))),
        }
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// An integer, also when written as a 32-bit one (e.g. from the mongo shell).
    fn int(&self, key: &str) -> Result<i64> {
        match self.doc.get(key) {
            Some(Bson::Int64(n)) => Ok(*n),
            Some(Bson::Int32(n)) => Ok(i64::from(*n)),
            Some(other) => Err(self.corrupt(format!(
                "field {key:?} is {:?}, not an integer",
                other.element_type()
            ))),
            None => Err(self.corrupt(format!("field {key:?} is missing"))),
        }
    }
}

fn session_to_bson(s: &StoredSession) -> Document {
    doc! {
        "_id": &s.id,
        "exam": &s.exam,
        "email": &s.email,
        "calibration_version": s.calibration_version,
        "status": &s.status,
        "answered": s.answered,
        "result_id": s.result_id.as_deref().map_or(Bson::Null, |id| Bson::String(id.into())),
        "created_at": &s.created_at,
        "updated_at": &s.updated_at,
        "state": &s.state,
        "closes_at": s.closes_at.as_deref().map_or(Bson::Null, |at| Bson::String(at.into())),
    }
}

fn session_from_bson(doc: &Document) -> Result<StoredSession> {
    let f = Fields::new(SESSIONS_COLLECTION, doc);
    Ok(StoredSession {
        id: f.string("_id")?,
        exam: f.string("exam")?,
        email: f.string("email")?,
        calibration_version: f.int("calibration_version")?,
        status: f.string("status")?,
        answered: f.int("answered")?,
        result_id: f.optional_string("result_id")?,
        created_at: f.string("created_at")?,
        updated_at: f.string("updated_at")?,
        state: f.string("state")?,
        closes_at: f.optional_string("closes_at")?,
    })
}

fn calibration_to_bson(c: &StoredCalibration, version: i64) -> Document {
    doc! {
        "exam": &c.exam,
        "version": version,
        "created_at": &c.created_at,
        "source": &c.source,
        "responses": c.responses,
        "params": &c.params,
        "summary": &c.summary,
        "activation": c.activation.map_or(Bson::Null, Bson::Int64),
    }
}

fn calibration_from_bson(doc: &Document) -> Result<StoredCalibration> {
    let f = Fields::new(CALIBRATIONS_COLLECTION, doc);
    Ok(StoredCalibration {
        exam: f.string("exam")?,
        version: f.int("version")?,
        created_at: f.string("created_at")?,
        source: f.string("source")?,
        responses: f.int("responses")?,
        params: f.string("params")?,
        summary: f.string("summary")?,
        // Missing: stored before activation existed (see `activate_legacy_calibrations`).
        activation: match doc.get("activation") {
            None => Some(f.int("version")?),
            Some(Bson::Null) => None,
            Some(_) => Some(f.int("activation")?),
        },
    })
}

/// MongoDB's error code of a driver error (a command, write or write-concern error), when
/// it has one.
pub(crate) fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    error_code(e) == Some(DUPLICATE_KEY)
}

/// MongoDB's limit 0 means "no limit"; the contract's means none.
fn find_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for MongoStore {
    async fn put_session(&self, session: StoredSession) -> Result<()> {
        self.ensure_indexes().await?;
        self.sessions
            .replace_one(doc! {"_id": &session.id}, session_to_bson(&session))
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn replace_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
    ) -> Result<bool> {
        self.ensure_indexes().await?;
        // One document, filtered on the version read: atomic on the server.
        let replaced = self
            .sessions
            .replace_one(
                doc! {"_id": &session.id, "answered": expected_answered},
                session_to_bson(&session),
            )
            .await?;
        Ok(replaced.matched_count == 1)
    }

    async fn finish_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
        result: &ResultDocument,
    ) -> Result<bool> {
        if self.uses_transactions().await? {
            self.ensure_indexes().await?;
            return self
                .finish_in_transaction(session, expected_answered, result)
                .await;
        }
        // No transactions (a standalone server): the result first, so a crash in between
        // leaves a session that is answered again (and finds its result), never a finished
        // session without one. A lost race leaves the losing answer's result stored.
        match self.collection.insert_one(result.to_bson()).await {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.replace_session_if(session, expected_answered).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<StoredSession>> {
        match self.sessions.find_one(doc! {"_id": id}).await? {
            Some(doc) => Ok(Some(session_from_bson(&doc)?)),
            None => Ok(None),
        }
    }

    async fn list_sessions(
        &self,
        exam: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredSession>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.ensure_indexes().await?;
        let filter = match exam {
            Some(exam) => doc! {"exam": exam},
            None => Document::new(),
        };
        let docs: Vec<Document> = self
            .sessions
            .find(filter)
            .sort(doc! {"created_at": -1, "_id": -1})
            .limit(find_limit(limit))
            .await?
            .try_collect()
            .await?;
        docs.iter().map(session_from_bson).collect()
    }

    async fn due_sessions(&self, now: &str, limit: usize) -> Result<Vec<StoredSession>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.ensure_indexes().await?;
        let docs: Vec<Document> = self
            .sessions
            .find(doc! {"status": "active", "closes_at": {"$ne": Bson::Null, "$lte": now}})
            .sort(doc! {"closes_at": 1})
            .limit(find_limit(limit))
            .await?
            .try_collect()
            .await?;
        docs.iter().map(session_from_bson).collect()
    }

    /// Reads the highest version and inserts the next; when another server took that
    /// number first (duplicate key on the unique index), tries again above it.
    async fn add_calibration(&self, calibration: StoredCalibration) -> Result<i64> {
        self.ensure_indexes().await?;
        let mut tried = 0;
        for _ in 0..CALIBRATION_INSERT_ATTEMPTS {
            // Never below a number already lost, even if the read lags behind.
            let version =
                (self.max_calibration_version(&calibration.exam).await? + 1).max(tried + 1);
            match self
                .calibrations
                .insert_one(self.calibration_document(&calibration, version).await?)
                .await
            {
                Ok(_) => return Ok(version),
                Err(e) if is_duplicate_key(&e) => tried = version,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Contention(format!(
            "no free calibration version for exam {:?} after {CALIBRATION_INSERT_ATTEMPTS} \
             attempts (other servers kept taking the next one)",
            calibration.exam
        )))
    }

    async fn add_calibration_after(
        &self,
        calibration: StoredCalibration,
        after: i64,
    ) -> Result<Option<i64>> {
        self.ensure_indexes().await?;
        // Versions have no gaps, so if a later one exists, `after + 1` does: the unique
        // (exam, version) index turns "someone was first" into a duplicate key.
        match self
            .calibrations
            .insert_one(self.calibration_document(&calibration, after + 1).await?)
            .await
        {
            Ok(_) => Ok(Some(after + 1)),
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_calibration(
        &self,
        exam: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredCalibration>> {
        let filter = match version {
            Some(v) => doc! {"exam": exam, "version": v},
            None => doc! {"exam": exam},
        };
        let found = self
            .calibrations
            .find_one(filter)
            .sort(doc! {"version": -1})
            .await?;
        found.as_ref().map(calibration_from_bson).transpose()
    }

    /// Not one transaction: an import that fails midway keeps the students written before
    /// (importing the same file again completes it).
    async fn import_roster(
        &self,
        columns: Vec<String>,
        entries: Vec<RosterEntry>,
        replace: bool,
    ) -> Result<RosterImport> {
        if replace {
            self.roster.delete_many(doc! {}).await?;
            self.roster_columns.delete_many(doc! {}).await?;
        }
        let mut position = self
            .roster_columns
            .find_one(doc! {})
            .sort(doc! {"position": -1})
            .await?
            .map(|d| Fields::new(ROSTER_COLUMNS_COLLECTION, &d).int("position"))
            .transpose()?
            .unwrap_or(0);
        for name in &columns {
            position += 1;
            // Keeps the first position of a column imported before.
            self.roster_columns
                .update_one(
                    doc! {"_id": name},
                    doc! {"$setOnInsert": {"position": position}},
                )
                .upsert(true)
                .await?;
        }
        let mut outcome = RosterImport::default();
        for entry in entries {
            let mut set = Document::new();
            let mut unset = Document::new();
            for name in &columns {
                match entry.groups.get(name) {
                    Some(v) => set.insert(format!("groups.{name}"), v.as_str()),
                    None => unset.insert(format!("groups.{name}"), ""),
                };
            }
            let mut update = doc! {"$set": set};
            if !unset.is_empty() {
                update.insert("$unset", unset);
            }
            let done = self
                .roster
                .update_one(doc! {"_id": &entry.email}, update)
                .upsert(true)
                .await?;
            if done.upserted_id.is_some() {
                outcome.added += 1;
            } else {
                outcome.updated += 1;
            }
        }
        outcome.students = self.roster.count_documents(doc! {}).await? as usize;
        Ok(outcome)
    }

    async fn roster_columns(&self) -> Result<Vec<String>> {
        let docs: Vec<Document> = self
            .roster_columns
            .find(doc! {})
            .sort(doc! {"position": 1, "_id": 1})
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| Fields::new(ROSTER_COLUMNS_COLLECTION, d).string("_id"))
            .collect()
    }

    async fn roster(&self) -> Result<Vec<RosterEntry>> {
        let docs: Vec<Document> = self
            .roster
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| {
                let f = Fields::new(ROSTER_COLLECTION, d);
                let mut groups = std::collections::BTreeMap::new();
                if let Some(Bson::Document(g)) = d.get("groups") {
                    for (k, v) in g {
                        if let Bson::String(v) = v {
                            groups.insert(k.clone(), v.clone());
                        }
                    }
                }
                Ok(RosterEntry {
                    email: f.string("_id")?,
                    groups,
                })
            })
            .collect()
    }

    async fn get_active_calibration(&self, exam: &str) -> Result<Option<StoredCalibration>> {
        self.ensure_indexes().await?;
        let found = self
            .calibrations
            .find_one(doc! {"exam": exam, "activation": {"$ne": null}})
            .sort(doc! {"activation": -1, "version": -1})
            .await?;
        found.as_ref().map(calibration_from_bson).transpose()
    }

    /// Two activations at once may get the same number; the higher version then wins.
    async fn activate_calibration(&self, exam: &str, version: i64) -> Result<Option<i64>> {
        self.ensure_indexes().await?;
        let Some(found) = self
            .calibrations
            .find_one(doc! {"exam": exam, "version": version})
            .projection(doc! {"activation": 1, "version": 1})
            .await?
        else {
            return Ok(None);
        };
        let highest = self.max_activation(exam).await?;
        let current = match found.get("activation") {
            None | Some(Bson::Null) => None,
            Some(_) => Some(Fields::new(CALIBRATIONS_COLLECTION, &found).int("activation")?),
        };
        if current == Some(highest) {
            return Ok(Some(highest));
        }
        let activation = highest + 1;
        self.calibrations
            .update_one(
                doc! {"exam": exam, "version": version},
                doc! {"$set": {"activation": activation}},
            )
            .await?;
        Ok(Some(activation))
    }

    async fn list_calibrations(&self, exam: Option<String>) -> Result<Vec<StoredCalibration>> {
        let filter = match exam {
            Some(exam) => doc! {"exam": exam},
            None => Document::new(),
        };
        let docs: Vec<Document> = self
            .calibrations
            .find(filter)
            .sort(doc! {"exam": 1, "version": -1})
            .await?
            .try_collect()
            .await?;
        docs.iter().map(calibration_from_bson).collect()
    }

    /// In `_id` order; the position is the last `_id` of the chunk.
    async fn scan_sessions(
        &self,
        after: Option<String>,
        limit: usize,
        fields: &[SessionField],
    ) -> Result<SessionChunk> {
        if limit == 0 {
            return Ok(SessionChunk::default());
        }
        let filter = match after {
            Some(id) => doc! {"_id": {"$gt": id}},
            None => Document::new(),
        };
        let mut projection = doc! {"_id": 1};
        for field in fields {
            projection.insert(field.name(), 1);
        }
        let docs: Vec<Document> = self
            .sessions
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(find_limit(limit))
            .projection(projection)
            .await?
            .try_collect()
            .await?;
        let sessions = docs
            .iter()
            .map(|d| partial_session_from_bson(d, fields))
            .collect::<Result<Vec<_>>>()?;
        let next = (sessions.len() == limit)
            .then(|| sessions.last().map(|s| s.id.clone()))
            .flatten();
        Ok(SessionChunk { sessions, next })
    }
}

/// A session with `_id` and only `fields` read (see [`SessionStore::scan_sessions`]).
fn partial_session_from_bson(doc: &Document, fields: &[SessionField]) -> Result<StoredSession> {
    let f = Fields::new(SESSIONS_COLLECTION, doc);
    let mut s = StoredSession {
        id: f.string("_id")?,
        ..StoredSession::default()
    };
    for field in fields {
        let name = field.name();
        match field {
            SessionField::Exam => s.exam = f.string(name)?,
            SessionField::Email => s.email = f.string(name)?,
            SessionField::CalibrationVersion => s.calibration_version = f.int(name)?,
            SessionField::Status => s.status = f.string(name)?,
            SessionField::Answered => s.answered = f.int(name)?,
            SessionField::ResultId => s.result_id = f.optional_string(name)?,
            SessionField::CreatedAt => s.created_at = f.string(name)?,
            SessionField::UpdatedAt => s.updated_at = f.string(name)?,
            SessionField::State => s.state = f.string(name)?,
            SessionField::ClosesAt => s.closes_at = f.optional_string(name)?,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_calibrations_round_trip_through_bson() {
        let session = StoredSession {
            id: "665f1c0e8b3e4a0012345678".into(),
            exam: "geo".into(),
            email: "a@example.com".into(),
            calibration_version: 2,
            status: "finished".into(),
            answered: 7,
            result_id: Some("665f1c0e8b3e4a0012345679".into()),
            created_at: "2024-05-01T10:00:00.000Z".into(),
            updated_at: "2024-05-01T10:05:00.000Z".into(),
            state: r#"{"cat":{}}"#.into(),
            closes_at: Some("2024-05-01T10:30:00.000Z".into()),
        };
        assert_eq!(
            session_from_bson(&session_to_bson(&session)).unwrap(),
            session
        );
        let active = StoredSession {
            result_id: None,
            closes_at: None,
            ..session
        };
        let stored = session_to_bson(&active);
        assert_eq!(stored.get("result_id"), Some(&Bson::Null));
        assert_eq!(session_from_bson(&stored).unwrap(), active);

        let calibration = StoredCalibration {
            exam: "geo".into(),
            version: 0,
            created_at: "2024-05-01T10:00:00.000Z".into(),
            source: "calibration".into(),
            responses: 120,
            params: "[]".into(),
            summary: "{}".into(),
            activation: None,
        };
        let back = calibration_from_bson(&calibration_to_bson(&calibration, 3)).unwrap();
        assert_eq!(
            back,
            StoredCalibration {
                version: 3,
                ..calibration
            }
        );
    }

    #[test]
    fn a_malformed_record_names_its_collection_id_and_field() {
        let doc = doc! {"_id": "s1", "exam": "geo", "email": "a@x", "calibration_version": "two"};
        let e = session_from_bson(&doc).unwrap_err().to_string();
        assert!(
            e.contains("adaptive_sessions")
                && e.contains("s1")
                && e.contains("calibration_version"),
            "{e}"
        );
        let e = calibration_from_bson(&doc! {"exam": "geo", "version": 1})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("calibrations") && e.contains("created_at"),
            "{e}"
        );
    }
}
