//! The ingest crate's error type: one variant per cause, with the context to act on.

use thiserror::Error;

pub use examflow_formats::EnvelopeError;

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
    /// No broker answered a metadata request in time; `reason` is librdkafka's last
    /// connection error when it had one.
    #[error("Kafka: no broker of {brokers} answered within {millis} ms: {reason}")]
    BrokerUnreachable {
        brokers: String,
        millis: u64,
        reason: String,
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

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
