//! Where a row came from. Every lake table carries these four columns so that any row can be
//! traced back to its Kafka message, and so that ingest can resume exactly where the table ends.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, TimeUnit};

/// Column names of the source position, in the order they close every table's schema.
pub const SOURCE_TOPIC: &str = "source_topic";
pub const SOURCE_PARTITION: &str = "source_partition";
pub const SOURCE_OFFSET: &str = "source_offset";
pub const INGESTED_AT: &str = "ingested_at";

/// The Kafka message a row was decoded from, and when examflow read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Microseconds since the Unix epoch (UTC).
    pub ingested_at_us: i64,
}

/// The timestamp type used by every table: microseconds, UTC (Delta Lake's `timestamp`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
}

/// The four source columns, appended to the end of every table's schema.
pub fn source_fields() -> Vec<Field> {
    vec![
        Field::new(SOURCE_TOPIC, DataType::Utf8, false),
        Field::new(SOURCE_PARTITION, DataType::Int32, false),
        Field::new(SOURCE_OFFSET, DataType::Int64, false),
        Field::new(INGESTED_AT, timestamp_type(), false),
    ]
}

/// Builders for the source columns; one append per row.
#[derive(Debug, Default)]
pub struct SourceColumns {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
}

impl SourceColumns {
    pub fn append(&mut self, source: &SourcePosition<'_>) {
        self.topic.append_value(source.topic);
        self.partition.append_value(source.partition);
        self.offset.append_value(source.offset);
        self.ingested_at.append_value(source.ingested_at_us);
    }

    /// The finished columns, in [`source_fields`] order.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.ingested_at.finish().with_timezone("UTC")),
        ]
    }
}
