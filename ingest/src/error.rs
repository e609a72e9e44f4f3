//! The ingest crate's error type: one variant per cause, with the context to act on.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("embedded store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("Kafka ({context}): {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("stored document {id} is not valid: {message}")]
    CorruptDocument { id: String, message: String },
    /// A stored adaptive session or calibration that cannot be read back.
    #[error("stored {collection} record {id} is not valid: {message}")]
    CorruptRecord {
        collection: &'static str,
        id: String,
        message: String,
    },
    /// A write that lost too many races in a row (e.g. for the next calibration version).
    #[error("{0}")]
    Contention(String),
    #[error("change event: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("lake table {table}: {source}")]
    Lake {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error("lake: {0}")]
    LakeSetup(String),
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("background task failed: {0}")]
    Task(String),
}

impl IngestError {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        IngestError::Kafka {
            context: context.into(),
            source,
        }
    }
}

/// Why a Debezium message could not be understood; the reason goes to the dead-letter topic.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("value is not valid UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("value is not a JSON object")]
    NotAnObject,
    #[error("envelope has no \"op\" field")]
    MissingOp,
    #[error("unknown operation {0:?} (expected c, u, d, r or t)")]
    UnknownOp(String),
    #[error("field {field:?} is not valid MongoDB extended JSON: {message}")]
    BadDocument { field: String, message: String },
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
