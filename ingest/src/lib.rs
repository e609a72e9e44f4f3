//! examflow's data plumbing: result stores (embedded SQLite and MongoDB), Debezium
//! MongoDB change events, Kafka in and out, and the score-card consumer.

pub mod abilities;
pub mod attempts;
pub mod cdc;
pub mod debezium;
pub mod delivery;
pub mod error;
pub mod kafka;
pub mod lake;
pub mod metrics;
pub mod pipeline;
pub mod produce;
pub mod score_cards;
pub mod source;
pub mod store;

pub use error::{EnvelopeError, IngestError};
pub use examflow_formats::document;
pub use examflow_formats::document::{AdaptiveOutcome, ResultDocument};
pub use kafka::KafkaSettings;
pub use metrics::IngestMetrics;
pub use store::{ResultFilter, ResultStore};
