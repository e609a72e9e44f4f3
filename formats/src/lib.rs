//! Parsers of untrusted bytes: assessment attempt documents, Debezium change events, result
//! documents (MongoDB extended JSON), SQL requests and the pgwire statement gate. Pure (no
//! I/O) and light (no Arrow, DataFusion, Kafka or MongoDB driver), so they can be fuzzed
//! (`fuzz/`, `scripts/fuzz-parsers`). `examflow-ingest` and the server re-export and use
//! them.

pub mod attempts;
pub mod debezium;
pub mod document;
pub mod sql;

pub use debezium::EnvelopeError;
pub use document::{AdaptiveOutcome, ResultDocument};
