//! Rows of the `score_changes`, `score_detail_changes` and `dead_letters` tables.
//!
//! A Debezium change event of a result document becomes one `score_changes` row (and one
//! `score_detail_changes` row per question). The tables are append-only logs; the views
//! `scores` and `score_details` (see [`super::query`]) show the latest state of each document:
//! updates replace, deletes mark the document deleted.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::DateTime;
use serde_json::Value;

use crate::debezium::{Change, ChangeEvent, Operation};
use crate::source::{SourceColumns, SourcePosition, source_fields, timestamp_type};

/// `score_changes`: one row per change event of a result document.
pub fn score_changes_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("document_id", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("changed_at", timestamp_type(), true),
        Field::new("deleted", DataType::Boolean, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("exam", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
        Field::new("total", DataType::Int64, true),
        Field::new("percentage", DataType::Int64, true),
        Field::new("result", DataType::Utf8, true),
        Field::new("submitted_at", timestamp_type(), true),
        Field::new("document", DataType::Utf8, true),
    ];
    fields.extend(source_fields());
    Arc::new(Schema::new(fields))
}

/// `score_detail_changes`: one row per question of a changed result document.
pub fn score_detail_changes_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("document_id", DataType::Utf8, false),
        Field::new("changed_at", timestamp_type(), true),
        Field::new("question_index", DataType::Int32, false),
        Field::new("item", DataType::Utf8, true),
        Field::new("question", DataType::Utf8, true),
        Field::new("user_answer", DataType::Utf8, true),
        Field::new("correct_answer", DataType::Utf8, true),
        Field::new("is_correct", DataType::Boolean, true),
    ];
    fields.extend(source_fields());
    Arc::new(Schema::new(fields))
}

/// `dead_letters`: every message that could not be understood, with the reason and its bytes.
pub fn dead_letters_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("reason", DataType::Utf8, false),
        Field::new("message_key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("payload_bytes", DataType::Int64, false),
    ];
    fields.extend(source_fields());
    Arc::new(Schema::new(fields))
}

/// What one change-event message contributes to the tables.
#[derive(Debug, PartialEq)]
pub enum ChangeOutcome {
    /// Rows were appended.
    Applied,
    /// Nothing to store (tombstone, truncate).
    Skipped(&'static str),
    /// The message goes to `dead_letters` with this reason.
    Rejected(String),
}

/// Accumulates `score_changes` and `score_detail_changes` rows.
#[derive(Debug, Default)]
pub struct ScoreChangeBuilder {
    document_id: StringBuilder,
    op: StringBuilder,
    changed_at: TimestampMicrosecondBuilder,
    deleted: BooleanBuilder,
    email: StringBuilder,
    exam: StringBuilder,
    score: Int64Builder,
    total: Int64Builder,
    percentage: Int64Builder,
    result: StringBuilder,
    submitted_at: TimestampMicrosecondBuilder,
    document: StringBuilder,
    source: SourceColumns,
    rows: usize,
    details: DetailBuilder,
}

#[derive(Debug, Default)]
struct DetailBuilder {
    document_id: StringBuilder,
    changed_at: TimestampMicrosecondBuilder,
    question_index: Int32Builder,
    item: StringBuilder,
    question: StringBuilder,
    user_answer: StringBuilder,
    correct_answer: StringBuilder,
    is_correct: BooleanBuilder,
    source: SourceColumns,
}

/// Fields of a result document, read leniently: absent is null, a wrong type is an error.
struct ResultFields<'a> {
    email: Option<&'a str>,
    exam: Option<&'a str>,
    score: Option<i64>,
    total: Option<i64>,
    percentage: Option<i64>,
    result: Option<&'a str>,
    submitted_at: Option<i64>,
    details: &'a [Value],
}

fn text_field<'a>(doc: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("after.{key}: expected a string, found {other}")),
    }
}

fn integer_field(doc: &Value, key: &str) -> Result<Option<i64>, String> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("after.{key}: expected an integer, found {n}")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("after.{key}: expected an integer, found {s:?}")),
        Some(other) => Err(format!("after.{key}: expected an integer, found {other}")),
    }
}

/// RFC 3339 text (what examflow converts `$date` to) or epoch milliseconds.
fn timestamp_field(doc: &Value, key: &str) -> Result<Option<i64>, String> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_micros()))
            .map_err(|e| format!("after.{key}: not an RFC 3339 timestamp ({e}): {s:?}")),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|ms| Some(ms * 1000))
            .ok_or_else(|| format!("after.{key}: expected epoch milliseconds, found {n}")),
        Some(other) => Err(format!("after.{key}: expected a timestamp, found {other}")),
    }
}

impl<'a> ResultFields<'a> {
    fn read(doc: &'a Value) -> Result<Self, String> {
        let details = match doc.get("details") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(items)) => items.as_slice(),
            Some(other) => return Err(format!("after.details: expected an array, found {other}")),
        };
        for (index, detail) in details.iter().enumerate() {
            if !detail.is_object() {
                return Err(format!("after.details[{index}]: expected an object"));
            }
            for key in ["item", "question", "user_answer", "correct_answer"] {
                text_field(detail, key)
                    .map_err(|e| e.replacen("after.", &format!("after.details[{index}]."), 1))?;
            }
            if let Some(v) = detail
                .get("is_correct")
                .filter(|v| !v.is_null() && !v.is_boolean())
            {
                return Err(format!(
                    "after.details[{index}].is_correct: expected a boolean, found {v}"
                ));
            }
        }
        Ok(ResultFields {
            email: text_field(doc, "email")?,
            exam: text_field(doc, "exam")?,
            score: integer_field(doc, "score")?,
            total: integer_field(doc, "total")?,
            percentage: integer_field(doc, "percentage")?,
            result: text_field(doc, "result")?,
            submitted_at: timestamp_field(doc, "submitted_at")?,
            details,
        })
    }
}

impl ScoreChangeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds the rows of one parsed change event. `message_time_us` dates events whose
    /// envelope carries no time.
    pub fn append(
        &mut self,
        event: &ChangeEvent,
        message_time_us: Option<i64>,
        source: &SourcePosition<'_>,
    ) -> ChangeOutcome {
        let change: &Change = match event {
            ChangeEvent::Tombstone { .. } => return ChangeOutcome::Skipped("tombstone"),
            ChangeEvent::Change(change) => change,
        };
        let Some(document_id) = change.document_id.as_deref() else {
            return ChangeOutcome::Rejected(format!(
                "{} event without a document id (no after._id and no key id)",
                change.op.code()
            ));
        };
        let changed_at = change
            .source_ts_ms
            .or(change.ts_ms)
            .map(|ms| ms * 1000)
            .or(message_time_us);
        match change.op {
            Operation::Truncate => ChangeOutcome::Skipped("truncate"),
            Operation::Delete => {
                self.push_row(document_id, "d", changed_at, true, None, None, source);
                ChangeOutcome::Applied
            }
            Operation::Create | Operation::Update | Operation::Read => {
                let Some(after) = change.after.as_ref() else {
                    return ChangeOutcome::Rejected(format!(
                        "{} event without the full document in \"after\" \
                         (set the connector's capture mode to look up the full document)",
                        change.op.code()
                    ));
                };
                let fields = match ResultFields::read(after) {
                    Ok(fields) => fields,
                    Err(reason) => return ChangeOutcome::Rejected(reason),
                };
                let json = after.to_string();
                self.push_row(
                    document_id,
                    change.op.code(),
                    changed_at,
                    false,
                    Some(&fields),
                    Some(&json),
                    source,
                );
                for (index, detail) in fields.details.iter().enumerate() {
                    self.details
                        .push(document_id, changed_at, index as i32, detail, source);
                }
                ChangeOutcome::Applied
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push_row(
        &mut self,
        document_id: &str,
        op: &str,
        changed_at: Option<i64>,
        deleted: bool,
        fields: Option<&ResultFields<'_>>,
        document: Option<&str>,
        source: &SourcePosition<'_>,
    ) {
        self.document_id.append_value(document_id);
        self.op.append_value(op);
        self.changed_at.append_option(changed_at);
        self.deleted.append_value(deleted);
        self.email.append_option(fields.and_then(|f| f.email));
        self.exam.append_option(fields.and_then(|f| f.exam));
        self.score.append_option(fields.and_then(|f| f.score));
        self.total.append_option(fields.and_then(|f| f.total));
        self.percentage
            .append_option(fields.and_then(|f| f.percentage));
        self.result.append_option(fields.and_then(|f| f.result));
        self.submitted_at
            .append_option(fields.and_then(|f| f.submitted_at));
        self.document.append_option(document);
        self.source.append(source);
        self.rows += 1;
    }

    /// The `score_changes` and `score_detail_changes` batches; resets the builder.
    pub fn finish(&mut self) -> (RecordBatch, RecordBatch) {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.document_id.finish()) as ArrayRef,
            Arc::new(self.op.finish()),
            Arc::new(self.changed_at.finish().with_timezone("UTC")),
            Arc::new(self.deleted.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.exam.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.total.finish()),
            Arc::new(self.percentage.finish()),
            Arc::new(self.result.finish()),
            Arc::new(self.submitted_at.finish().with_timezone("UTC")),
            Arc::new(self.document.finish()),
        ]
        .into_iter()
        .chain(self.source.finish())
        .collect();
        self.rows = 0;
        let changes = RecordBatch::try_new(score_changes_schema(), columns)
            .expect("score_changes columns match their schema");
        (changes, self.details.finish())
    }
}

impl DetailBuilder {
    fn push(
        &mut self,
        document_id: &str,
        changed_at: Option<i64>,
        index: i32,
        detail: &Value,
        source: &SourcePosition<'_>,
    ) {
        let text = |key: &str| detail.get(key).and_then(Value::as_str);
        self.document_id.append_value(document_id);
        self.changed_at.append_option(changed_at);
        self.question_index.append_value(index);
        self.item.append_option(text("item"));
        self.question.append_option(text("question"));
        self.user_answer.append_option(text("user_answer"));
        self.correct_answer.append_option(text("correct_answer"));
        self.is_correct
            .append_option(detail.get("is_correct").and_then(Value::as_bool));
        self.source.append(source);
    }

    fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.document_id.finish()) as ArrayRef,
            Arc::new(self.changed_at.finish().with_timezone("UTC")),
            Arc::new(self.question_index.finish()),
            Arc::new(self.item.finish()),
            Arc::new(self.question.finish()),
            Arc::new(self.user_answer.finish()),
            Arc::new(self.correct_answer.finish()),
            Arc::new(self.is_correct.finish()),
        ]
        .into_iter()
        .chain(self.source.finish())
        .collect();
        RecordBatch::try_new(score_detail_changes_schema(), columns)
            .expect("score_detail_changes columns match their schema")
    }
}

/// Accumulates `dead_letters` rows.
#[derive(Debug, Default)]
pub struct DeadLetterBuilder {
    reason: StringBuilder,
    key: BinaryBuilder,
    payload: BinaryBuilder,
    payload_bytes: Int64Builder,
    source: SourceColumns,
    rows: usize,
}

impl DeadLetterBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn append(
        &mut self,
        reason: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        source: &SourcePosition<'_>,
    ) {
        self.reason.append_value(reason);
        self.key.append_option(key);
        self.payload.append_option(payload);
        self.payload_bytes
            .append_value(payload.map_or(0, |p| p.len() as i64));
        self.source.append(source);
        self.rows += 1;
    }

    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.reason.finish()) as ArrayRef,
            Arc::new(self.key.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.payload_bytes.finish()),
        ]
        .into_iter()
        .chain(self.source.finish())
        .collect();
        self.rows = 0;
        RecordBatch::try_new(dead_letters_schema(), columns)
            .expect("dead_letters columns match their schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debezium::parse_change_event;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    fn source(offset: i64) -> SourcePosition<'static> {
        SourcePosition {
            topic: "mongo-trigger-topic.exams.score",
            partition: 0,
            offset,
            ingested_at_us: 1_700_000_000_000_000,
        }
    }

    fn event(op: &str, after: Option<&str>) -> ChangeEvent {
        let mut payload = serde_json::json!({"op": op, "ts_ms": 1_700_000_000_123i64,
            "source": {"db": "exams", "collection": "score", "ts_ms": 1_700_000_000_000i64}});
        if let Some(after) = after {
            payload["after"] = Value::String(after.to_string());
        }
        let key = br#"{"id": "{\"$oid\": \"65a000000000000000000001\"}"}"#;
        parse_change_event(Some(key), Some(payload.to_string().as_bytes())).unwrap()
    }

    const AFTER: &str = r#"{"_id": {"$oid": "65a000000000000000000001"}, "email": "a@b.c",
        "exam": "rust", "score": 3, "total": 4, "percentage": 75, "result": "passed",
        "submitted_at": {"$date": 1700000000000},
        "details": [{"question": "Q1", "user_answer": "A", "correct_answer": "A",
                     "is_correct": true, "item": "i1"},
                    {"question": "Q2", "user_answer": "B", "correct_answer": "C",
                     "is_correct": false, "item": "i2"}]}"#;

    #[test]
    fn create_event_gives_a_score_row_and_detail_rows() {
        let mut builder = ScoreChangeBuilder::new();
        let outcome = builder.append(&event("c", Some(AFTER)), None, &source(7));
        assert_eq!(outcome, ChangeOutcome::Applied);
        let (changes, details) = builder.finish();
        assert_eq!(changes.num_rows(), 1);
        assert_eq!(details.num_rows(), 2);
        let id = changes.column(0).as_string::<i32>().value(0);
        assert_eq!(id, "65a000000000000000000001");
        let score = changes
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(score.value(0), 3);
        let submitted = changes
            .column_by_name("submitted_at")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(submitted.value(0), 1_700_000_000_000_000);
        let changed = changes
            .column_by_name("changed_at")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(changed.value(0), 1_700_000_000_000_000, "source.ts_ms wins");
        let correct = details.column_by_name("is_correct").unwrap().as_boolean();
        assert!(correct.value(0) && !correct.value(1));
        let offsets = changes
            .column_by_name("source_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.value(0), 7);
    }

    #[test]
    fn delete_marks_deleted_and_tombstone_is_skipped() {
        let mut builder = ScoreChangeBuilder::new();
        assert_eq!(
            builder.append(&event("d", None), None, &source(1)),
            ChangeOutcome::Applied
        );
        let tombstone = parse_change_event(Some(br#"{"id": "x"}"#), None).unwrap();
        assert_eq!(
            builder.append(&tombstone, None, &source(2)),
            ChangeOutcome::Skipped("tombstone")
        );
        let (changes, details) = builder.finish();
        assert_eq!(changes.num_rows(), 1);
        assert_eq!(details.num_rows(), 0);
        assert!(
            changes
                .column_by_name("deleted")
                .unwrap()
                .as_boolean()
                .value(0)
        );
        assert!(changes.column_by_name("email").unwrap().is_null(0));
    }

    #[test]
    fn wrong_types_and_missing_documents_are_rejected_with_reasons() {
        let mut builder = ScoreChangeBuilder::new();
        let bad_score = r#"{"_id": "x1", "score": "many"}"#;
        match builder.append(&event("c", Some(bad_score)), None, &source(1)) {
            ChangeOutcome::Rejected(reason) => assert!(reason.contains("after.score"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let bad_detail = r#"{"_id": "x1", "details": [{"is_correct": "yes"}]}"#;
        match builder.append(&event("u", Some(bad_detail)), None, &source(2)) {
            ChangeOutcome::Rejected(reason) => {
                assert!(reason.contains("details[0].is_correct"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match builder.append(&event("u", None), None, &source(3)) {
            ChangeOutcome::Rejected(reason) => assert!(reason.contains("after"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(builder.rows(), 0);
    }

    #[test]
    fn dead_letters_keep_reason_and_bytes() {
        let mut builder = DeadLetterBuilder::new();
        builder.append("not JSON", Some(b"k"), Some(b"\xff\x00"), &source(9));
        let batch = builder.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(1).as_binary::<i32>().value(0), b"k");
        assert_eq!(batch.column(2).as_binary::<i32>().value(0), b"\xff\x00");
        assert_eq!(batch.column(3).as_primitive::<Int64Type>().value(0), 2);
        assert!(!batch.column(2).is_null(0));
    }
}
