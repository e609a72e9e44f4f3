//! Assessment attempts into Arrow record batches for three tables. The document, its value
//! rules and errors are [`examflow_formats::attempts`]'s: [`Attempt::parse`] decodes one
//! message there (a light crate, so it can be fuzzed) and is re-exported here.
//!
//! # Tables
//!
//! Every table ends with the four source columns of [`crate::source::source_fields`].
//! Timestamps are `Timestamp(µs, "UTC")`. Columns are nullable unless marked non-null.
//!
//! `attempts`, one row per document:
//!
//! | column | type | from |
//! |---|---|---|
//! | keen_id, user_exam_id, base_exam_id, exam_name | Utf8 | same keys |
//! | started_at, keen_timestamp, keen_created_at | Timestamp | same keys |
//! | max_attempts | Float64 | `max_attempts` |
//! | certification | Boolean | `certification` |
//! | sequence_id | Utf8 | `sequences.id` |
//! | attempt | Int32 | `sequences.attempt` |
//! | question_count | Int32 non-null | number of questions in the document |
//! | count_total, count_correct, count_incorrect, count_incomplete, count_submitted, count_unanswered | Int32 | `sequences.counts.*`, null when `counts` is missing |
//! | count_all_correct | Boolean | `sequences.counts.all_correct` |
//! | score | Int32 non-null | questions answered correctly ([`Attempt::score`]) |
//! | score_max | Int32 non-null | = question_count |
//! | percentage | Float64 | 100 × score / score_max, null when score_max = 0 |
//! | first_answer_at, last_answer_at | Timestamp | min / max of `options[].at` over the attempt |
//! | duration_seconds | Float64 | last_answer_at − started_at in seconds, null when either is null |
//!
//! `attempt_questions`, one row per question:
//!
//! | column | type | from |
//! |---|---|---|
//! | keen_id, user_exam_id, exam_name | Utf8 | the attempt |
//! | question_index | Int32 non-null | 0-based position in `sequences.questions` |
//! | question_id, user_result | Utf8 | `id`, `user_result` |
//! | user_correct, user_incomplete, user_submitted | Boolean | same keys |
//! | option_count | Int32 non-null | number of options |
//! | options_checked | `List<Utf8>` (item field "element") | ids of the options with `checked` true, in document order (a null item for a checked option without id) |
//! | options_correct | Int32 non-null | options with `correct` true |
//! | first_answer_at, last_answer_at | Timestamp | min / max of the question's `options[].at` |
//!
//! `attempt_options`, one row per option:
//!
//! | column | type | from |
//! |---|---|---|
//! | keen_id, user_exam_id | Utf8 | the attempt |
//! | question_id | Utf8 | the question's `id` |
//! | question_index, option_index | Int32 non-null | 0-based positions |
//! | option_id | Utf8 | `id` |
//! | checked | Boolean | `checked` |
//! | correct | Boolean non-null | `correct`, absent = false |
//! | answered_at | Timestamp | `at` |
//! | submitted | Boolean | `submitted`, absent = null |

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

pub use examflow_formats::attempts::{
    Attempt, AttemptCounts, AttemptError, AttemptOption, AttemptQuestion, DedupKey, UnknownDedupKey,
};

use crate::source::{SourceColumns, SourcePosition, source_fields, timestamp_type};

/// A count as Int32; documents are far too small to overflow it, but saturate regardless.
fn count_i32<T>(items: impl Iterator<Item = T>) -> i32 {
    i32::try_from(items.count()).unwrap_or(i32::MAX)
}

fn index_i32(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn timestamp(name: &str) -> Field {
    Field::new(name, timestamp_type(), true)
}
fn int32(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int32, nullable)
}
fn boolean(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Boolean, nullable)
}
fn float64(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

/// The item field of `options_checked` (Delta Lake's name for list items).
fn list_item_field() -> Field {
    Field::new("element", DataType::Utf8, true)
}

fn with_source(mut fields: Vec<Field>) -> SchemaRef {
    fields.extend(source_fields());
    Arc::new(Schema::new(fields))
}

static ATTEMPTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_source(vec![
        utf8("keen_id"),
        utf8("user_exam_id"),
        utf8("base_exam_id"),
        utf8("exam_name"),
        timestamp("started_at"),
        timestamp("keen_timestamp"),
        timestamp("keen_created_at"),
        float64("max_attempts"),
        boolean("certification", true),
        utf8("sequence_id"),
        int32("attempt", true),
        int32("question_count", false),
        int32("count_total", true),
        int32("count_correct", true),
        int32("count_incorrect", true),
        int32("count_incomplete", true),
        int32("count_submitted", true),
        int32("count_unanswered", true),
        boolean("count_all_correct", true),
        int32("score", false),
        int32("score_max", false),
        float64("percentage"),
        timestamp("first_answer_at"),
        timestamp("last_answer_at"),
        float64("duration_seconds"),
    ])
});

static QUESTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_source(vec![
        utf8("keen_id"),
        utf8("user_exam_id"),
        utf8("exam_name"),
        int32("question_index", false),
        utf8("question_id"),
        utf8("user_result"),
        boolean("user_correct", true),
        boolean("user_incomplete", true),
        boolean("user_submitted", true),
        int32("option_count", false),
        Field::new(
            "options_checked",
            DataType::List(Arc::new(list_item_field())),
            true,
        ),
        int32("options_correct", false),
        timestamp("first_answer_at"),
        timestamp("last_answer_at"),
    ])
});

static OPTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_source(vec![
        utf8("keen_id"),
        utf8("user_exam_id"),
        utf8("question_id"),
        int32("question_index", false),
        int32("option_index", false),
        utf8("option_id"),
        boolean("checked", true),
        boolean("correct", false),
        timestamp("answered_at"),
        boolean("submitted", true),
    ])
});

/// The `attempts` table: one row per document.
pub fn attempts_schema() -> SchemaRef {
    ATTEMPTS_SCHEMA.clone()
}

/// The `attempt_questions` table: one row per question of a document.
pub fn attempt_questions_schema() -> SchemaRef {
    QUESTIONS_SCHEMA.clone()
}

/// The `attempt_options` table: one row per option of a question.
pub fn attempt_options_schema() -> SchemaRef {
    OPTIONS_SCHEMA.clone()
}

/// One finished batch of each table. The three batches cover the same attempts.
#[derive(Debug, Clone)]
pub struct AttemptBatches {
    pub attempts: RecordBatch,
    pub questions: RecordBatch,
    pub options: RecordBatch,
}

fn utc(builder: &mut TimestampMicrosecondBuilder) -> ArrayRef {
    Arc::new(builder.finish().with_timezone("UTC"))
}

#[derive(Debug, Default)]
struct AttemptColumns {
    keen_id: StringBuilder,
    user_exam_id: StringBuilder,
    base_exam_id: StringBuilder,
    exam_name: StringBuilder,
    started_at: TimestampMicrosecondBuilder,
    keen_timestamp: TimestampMicrosecondBuilder,
    keen_created_at: TimestampMicrosecondBuilder,
    max_attempts: Float64Builder,
    certification: BooleanBuilder,
    sequence_id: StringBuilder,
    attempt: Int32Builder,
    question_count: Int32Builder,
    count_total: Int32Builder,
    count_correct: Int32Builder,
    count_incorrect: Int32Builder,
    count_incomplete: Int32Builder,
    count_submitted: Int32Builder,
    count_unanswered: Int32Builder,
    count_all_correct: BooleanBuilder,
    score: Int32Builder,
    score_max: Int32Builder,
    percentage: Float64Builder,
    first_answer_at: TimestampMicrosecondBuilder,
    last_answer_at: TimestampMicrosecondBuilder,
    duration_seconds: Float64Builder,
    source: SourceColumns,
}

impl AttemptColumns {
    fn append(&mut self, a: &Attempt<'_>, source: &SourcePosition<'_>) {
        self.keen_id.append_option(a.keen_id.as_deref());
        self.user_exam_id.append_option(a.user_exam_id.as_deref());
        self.base_exam_id.append_option(a.base_exam_id.as_deref());
        self.exam_name.append_option(a.exam_name.as_deref());
        self.started_at.append_option(a.started_at_us);
        self.keen_timestamp.append_option(a.keen_timestamp_us);
        self.keen_created_at.append_option(a.keen_created_at_us);
        self.max_attempts.append_option(a.max_attempts);
        self.certification.append_option(a.certification);
        self.sequence_id.append_option(a.sequence_id.as_deref());
        self.attempt.append_option(a.attempt);
        let question_count = count_i32(a.questions.iter());
        self.question_count.append_value(question_count);
        let c = a.counts.as_ref();
        self.count_total.append_option(c.and_then(|c| c.total));
        self.count_correct.append_option(c.and_then(|c| c.correct));
        self.count_incorrect
            .append_option(c.and_then(|c| c.incorrect));
        self.count_incomplete
            .append_option(c.and_then(|c| c.incomplete));
        self.count_submitted
            .append_option(c.and_then(|c| c.submitted));
        self.count_unanswered
            .append_option(c.and_then(|c| c.unanswered));
        self.count_all_correct
            .append_option(c.and_then(|c| c.all_correct));
        let score = a.score();
        self.score.append_value(score);
        self.score_max.append_value(question_count);
        self.percentage.append_option(
            (question_count > 0).then(|| 100.0 * f64::from(score) / f64::from(question_count)),
        );
        let (first, last) = a.answer_span_us();
        self.first_answer_at.append_option(first);
        self.last_answer_at.append_option(last);
        let duration = match (a.started_at_us, last) {
            // Both lie within the years 1 to 9999: the difference cannot overflow.
            (Some(start), Some(last)) => Some((last - start) as f64 / 1e6),
            _ => None,
        };
        self.duration_seconds.append_option(duration);
        self.source.append(source);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.keen_id.finish()),
            Arc::new(self.user_exam_id.finish()),
            Arc::new(self.base_exam_id.finish()),
            Arc::new(self.exam_name.finish()),
            utc(&mut self.started_at),
            utc(&mut self.keen_timestamp),
            utc(&mut self.keen_created_at),
            Arc::new(self.max_attempts.finish()),
            Arc::new(self.certification.finish()),
            Arc::new(self.sequence_id.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.question_count.finish()),
            Arc::new(self.count_total.finish()),
            Arc::new(self.count_correct.finish()),
            Arc::new(self.count_incorrect.finish()),
            Arc::new(self.count_incomplete.finish()),
            Arc::new(self.count_submitted.finish()),
            Arc::new(self.count_unanswered.finish()),
            Arc::new(self.count_all_correct.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.score_max.finish()),
            Arc::new(self.percentage.finish()),
            utc(&mut self.first_answer_at),
            utc(&mut self.last_answer_at),
            Arc::new(self.duration_seconds.finish()),
        ];
        columns.extend(self.source.finish());
        columns
    }
}

#[derive(Debug)]
struct QuestionColumns {
    keen_id: StringBuilder,
    user_exam_id: StringBuilder,
    exam_name: StringBuilder,
    question_index: Int32Builder,
    question_id: StringBuilder,
    user_result: StringBuilder,
    user_correct: BooleanBuilder,
    user_incomplete: BooleanBuilder,
    user_submitted: BooleanBuilder,
    option_count: Int32Builder,
    options_checked: ListBuilder<StringBuilder>,
    options_correct: Int32Builder,
    first_answer_at: TimestampMicrosecondBuilder,
    last_answer_at: TimestampMicrosecondBuilder,
    source: SourceColumns,
}

impl Default for QuestionColumns {
    fn default() -> Self {
        QuestionColumns {
            keen_id: StringBuilder::new(),
            user_exam_id: StringBuilder::new(),
            exam_name: StringBuilder::new(),
            question_index: Int32Builder::new(),
            question_id: StringBuilder::new(),
            user_result: StringBuilder::new(),
            user_correct: BooleanBuilder::new(),
            user_incomplete: BooleanBuilder::new(),
            user_submitted: BooleanBuilder::new(),
            option_count: Int32Builder::new(),
            options_checked: ListBuilder::new(StringBuilder::new()).with_field(list_item_field()),
            options_correct: Int32Builder::new(),
            first_answer_at: TimestampMicrosecondBuilder::new(),
            last_answer_at: TimestampMicrosecondBuilder::new(),
            source: SourceColumns::default(),
        }
    }
}

impl QuestionColumns {
    fn append(&mut self, a: &Attempt<'_>, source: &SourcePosition<'_>) {
        for (index, q) in a.questions.iter().enumerate() {
            self.keen_id.append_option(a.keen_id.as_deref());
            self.user_exam_id.append_option(a.user_exam_id.as_deref());
            self.exam_name.append_option(a.exam_name.as_deref());
            self.question_index.append_value(index_i32(index));
            self.question_id.append_option(q.id.as_deref());
            self.user_result.append_option(q.user_result.as_deref());
            self.user_correct.append_option(q.user_correct);
            self.user_incomplete.append_option(q.user_incomplete);
            self.user_submitted.append_option(q.user_submitted);
            self.option_count.append_value(count_i32(q.options.iter()));
            for option in q.options.iter().filter(|o| o.checked == Some(true)) {
                self.options_checked
                    .values()
                    .append_option(option.id.as_deref());
            }
            self.options_checked.append(true);
            self.options_correct
                .append_value(count_i32(q.options.iter().filter(|o| o.correct)));
            let (first, last) = q.answer_span_us();
            self.first_answer_at.append_option(first);
            self.last_answer_at.append_option(last);
            self.source.append(source);
        }
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.keen_id.finish()),
            Arc::new(self.user_exam_id.finish()),
            Arc::new(self.exam_name.finish()),
            Arc::new(self.question_index.finish()),
            Arc::new(self.question_id.finish()),
            Arc::new(self.user_result.finish()),
            Arc::new(self.user_correct.finish()),
            Arc::new(self.user_incomplete.finish()),
            Arc::new(self.user_submitted.finish()),
            Arc::new(self.option_count.finish()),
            Arc::new(self.options_checked.finish()),
            Arc::new(self.options_correct.finish()),
            utc(&mut self.first_answer_at),
            utc(&mut self.last_answer_at),
        ];
        columns.extend(self.source.finish());
        columns
    }
}

#[derive(Debug, Default)]
struct OptionColumns {
    keen_id: StringBuilder,
    user_exam_id: StringBuilder,
    question_id: StringBuilder,
    question_index: Int32Builder,
    option_index: Int32Builder,
    option_id: StringBuilder,
    checked: BooleanBuilder,
    correct: BooleanBuilder,
    answered_at: TimestampMicrosecondBuilder,
    submitted: BooleanBuilder,
    source: SourceColumns,
}

impl OptionColumns {
    fn append(&mut self, a: &Attempt<'_>, source: &SourcePosition<'_>) {
        for (question_index, q) in a.questions.iter().enumerate() {
            for (option_index, o) in q.options.iter().enumerate() {
                self.keen_id.append_option(a.keen_id.as_deref());
                self.user_exam_id.append_option(a.user_exam_id.as_deref());
                self.question_id.append_option(q.id.as_deref());
                self.question_index.append_value(index_i32(question_index));
                self.option_index.append_value(index_i32(option_index));
                self.option_id.append_option(o.id.as_deref());
                self.checked.append_option(o.checked);
                self.correct.append_value(o.correct);
                self.answered_at.append_option(o.answered_at_us);
                self.submitted.append_option(o.submitted);
                self.source.append(source);
            }
        }
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.keen_id.finish()),
            Arc::new(self.user_exam_id.finish()),
            Arc::new(self.question_id.finish()),
            Arc::new(self.question_index.finish()),
            Arc::new(self.option_index.finish()),
            Arc::new(self.option_id.finish()),
            Arc::new(self.checked.finish()),
            Arc::new(self.correct.finish()),
            utc(&mut self.answered_at),
            Arc::new(self.submitted.finish()),
        ];
        columns.extend(self.source.finish());
        columns
    }
}

/// Accumulates rows of the three tables; [`finish`](Self::finish) hands them over as
/// record batches and starts afresh.
#[derive(Debug, Default)]
pub struct AttemptBatchBuilder {
    attempts: AttemptColumns,
    questions: QuestionColumns,
    options: OptionColumns,
    rows: usize,
}

impl AttemptBatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one attempt: a row to `attempts`, one per question and one per option.
    pub fn append(&mut self, attempt: &Attempt<'_>, source: &SourcePosition<'_>) {
        self.attempts.append(attempt, source);
        self.questions.append(attempt, source);
        self.options.append(attempt, source);
        self.rows += 1;
    }

    /// Attempts appended since the last [`finish`](Self::finish).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The rows appended so far as one batch per table; the builder is empty afterwards.
    pub fn finish(&mut self) -> AttemptBatches {
        self.rows = 0;
        AttemptBatches {
            attempts: batch(attempts_schema(), self.attempts.finish()),
            questions: batch(attempt_questions_schema(), self.questions.finish()),
            options: batch(attempt_options_schema(), self.options.finish()),
        }
    }
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    // The columns are built in lockstep from the same rows, in schema order, and non-null
    // columns only ever get values: a mismatch is a bug in this file, covered by its tests.
    RecordBatch::try_new(schema, columns).expect("attempt columns match their schema")
}

#[cfg(test)]
mod tests;
