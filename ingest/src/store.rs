//! Result stores behind one trait: the embedded default (SQLite, durable before it
//! answers, with a transactional outbox of change events) and MongoDB (production).

use async_trait::async_trait;
use serde::Serialize;

use crate::document::ResultDocument;
use crate::error::Result;

pub mod mongo;
pub mod sqlite;

pub use mongo::MongoStore;
pub use sqlite::SqliteStore;

/// Which results to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter {
    pub email: Option<String>,
    pub exam: Option<String>,
    pub limit: usize,
}

/// Where results live. `insert_result` returns only once the document is durable.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// A short name for logs and /healthz ("sqlite" or "mongodb").
    fn kind(&self) -> &'static str;
    async fn insert_result(&self, doc: &ResultDocument) -> Result<()>;
    async fn get_result(&self, id: &str) -> Result<Option<ResultDocument>>;
    async fn list_results(&self, filter: &ResultFilter) -> Result<Vec<ResultDocument>>;
    /// Cheap round trip for health checks.
    async fn ping(&self) -> Result<()>;
}

/// A score card as kept for `GET /api/score-cards`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredScoreCard {
    pub document_id: String,
    pub card: String,
    pub created_at: String,
}

/// A message the score-card consumer could not understand, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub source: String,
    pub reason: String,
    pub payload: String,
    pub created_at: String,
}

/// A change event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub seq: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// An adaptive session as stored: searchable columns plus the whole state as JSON
/// (the api crate owns its shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredSession {
    pub id: String,
    pub exam: String,
    pub email: String,
    /// The item-parameter version the session runs on (kept for its whole life).
    pub calibration_version: i64,
    /// `active` or `finished`.
    pub status: String,
    pub answered: i64,
    /// The stored result of a finished session.
    pub result_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub state: String,
}

/// One version of an exam's item parameters. `params` and `summary` are JSON (the api
/// crate owns their shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCalibration {
    pub exam: String,
    pub version: i64,
    pub created_at: String,
    /// `provisional` (p-values only), `calibration` (an IRT fit) or `imported`.
    pub source: String,
    /// Number of response records the version was computed from.
    pub responses: i64,
    pub params: String,
    pub summary: String,
}
