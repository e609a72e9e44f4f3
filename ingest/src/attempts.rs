//! Assessment attempts: one JSON document per Kafka message, decoded strictly and fast into
//! Arrow record batches for three tables.
//!
//! # The document
//!
//! The shape of the public "assessment attempts" course dataset (see
//! `shared/fixtures/README.md`, `data/attempts/README.md`):
//!
//! ```json
//! {"keen_id": "5a6745820eb8ab00016be1f1", "user_exam_id": "6d40…", "base_exam_id": "37f0…",
//!  "exam_name": "…", "started_at": "2018-01-23T14:23:19.082Z",
//!  "keen_timestamp": "1516717442.735266", "keen_created_at": "1516717442.735266",
//!  "max_attempts": "1.0", "certification": "false",
//!  "sequences": {"id": "5b28…", "attempt": 1,
//!    "counts": {"total": 4, "correct": 2, "incorrect": 1, "incomplete": 1,
//!               "submitted": 4, "unanswered": 0, "all_correct": false},
//!    "questions": [{"id": "7a2e…", "user_result": "missed_some", "user_correct": false,
//!      "user_incomplete": true, "user_submitted": true,
//!      "options": [{"id": "49c5…", "checked": true, "correct": true,
//!                   "at": "2018-01-23T14:23:24.670Z", "submitted": 1}, …]}, …]}}
//! ```
//!
//! # Value rules
//!
//! - Numbers and booleans are accepted as JSON values or as strings holding them: booleans
//!   as `true`/`false` or `"true"`/`"false"`; integers as `4`, `"4"` or `"4.0"` (must fit
//!   Int32); floats as numbers or decimal strings (finite only).
//! - Timestamps (`started_at`, `keen_timestamp`, `keen_created_at`, `options[].at`) are
//!   RFC 3339 strings (any offset, converted to UTC), epoch seconds as a decimal string
//!   (`"1516717442.735266"`, parsed exactly; digits past the sixth decimal are dropped), or
//!   epoch seconds as a JSON number (exact to the microsecond for today's epochs with up to
//!   six decimals). Stored as microseconds, UTC; outside the years 1 to 9999 (Delta
//!   Lake's timestamp range) they are refused.
//! - `options[].submitted` is a flag: `1`/`0`, a boolean, or `"1"`/`"0"`/`"true"`/`"false"`.
//! - `options[].correct` absent (or `null`) means false.
//! - Any key may be absent or `null`, which gives a null column, except `sequences`,
//!   `sequences.questions` and `questions[].options`, which must be present and of the
//!   right kind. Unknown keys are ignored (their values must still be valid JSON).
//! - Identifiers and names must be JSON strings.
//!
//! # Errors
//!
//! [`Attempt::parse`] refuses, with an [`AttemptError`] naming the JSON path and the reason
//! (`sequences.questions[2].options[0].checked: expected a boolean or "true"/"false",
//! found "maybe"`): an empty payload; invalid or truncated JSON, or trailing data after the
//! document; a top level that is not an object; a value of the wrong kind; a repeated key;
//! a missing required key. It never panics on any input. A missing de-duplication key is
//! not a parse error: [`Attempt::key`] returns `None` and the pipeline decides
//! ([`Attempt::require_key`] gives the error to dead-letter with).
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
//! | score | Int32 non-null | questions answered correctly (below) |
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
//!
//! # Score
//!
//! A question counts as correct when its `user_result` is `"correct"`, or, when it has no
//! `user_result`, when `user_correct` is true. A question without the `user_*` keys counts
//! as not correct (it is not re-scored from its options).

mod decode;
mod values;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::source::{SourceColumns, SourcePosition, source_fields, timestamp_type};

/// Which top-level field de-duplicates attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DedupKey {
    /// `keen_id`, the event id of the analytics pipeline that recorded the attempt.
    #[default]
    KeenId,
    /// `user_exam_id`, one per started exam.
    UserExamId,
    /// `sequences.id`, the question sequence (shared by attempts of the same exam).
    SequenceId,
}

impl DedupKey {
    pub const ALL: [DedupKey; 3] = [DedupKey::KeenId, DedupKey::UserExamId, DedupKey::SequenceId];

    /// The JSON path of the key in the document, which is also its name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DedupKey::KeenId => "keen_id",
            DedupKey::UserExamId => "user_exam_id",
            DedupKey::SequenceId => "sequences.id",
        }
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A de-duplication key name that is none of `keen_id`, `user_exam_id`, `sequences.id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dedup key {0:?}: expected keen_id, user_exam_id or sequences.id")]
pub struct UnknownDedupKey(pub String);

impl FromStr for DedupKey {
    type Err = UnknownDedupKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DedupKey::ALL
            .into_iter()
            .find(|key| key.as_str() == s)
            .ok_or_else(|| UnknownDedupKey(s.to_owned()))
    }
}

/// Why a document is not a valid attempt: where (a JSON path such as
/// `sequences.questions[2].options[0].checked`, empty for the document as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{}", .path, if .path.is_empty() { "" } else { ": " }, .reason)]
pub struct AttemptError {
    pub path: String,
    pub reason: String,
}

impl AttemptError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        AttemptError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A parsed attempt, borrowing its strings from the message bytes (strings with JSON
/// escapes are copied). Timestamps are microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attempt<'a> {
    pub keen_id: Option<Cow<'a, str>>,
    pub user_exam_id: Option<Cow<'a, str>>,
    pub base_exam_id: Option<Cow<'a, str>>,
    pub exam_name: Option<Cow<'a, str>>,
    pub started_at_us: Option<i64>,
    pub keen_timestamp_us: Option<i64>,
    pub keen_created_at_us: Option<i64>,
    pub max_attempts: Option<f64>,
    pub certification: Option<bool>,
    /// `sequences.id`
    pub sequence_id: Option<Cow<'a, str>>,
    /// `sequences.attempt`
    pub attempt: Option<i32>,
    /// `sequences.counts`; `None` when the document has none.
    pub counts: Option<AttemptCounts>,
    /// `sequences.questions`, in document order.
    pub questions: Vec<AttemptQuestion<'a>>,
}

/// `sequences.counts`, as the document states them (not recomputed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptCounts {
    pub total: Option<i32>,
    pub correct: Option<i32>,
    pub incorrect: Option<i32>,
    pub incomplete: Option<i32>,
    pub submitted: Option<i32>,
    pub unanswered: Option<i32>,
    pub all_correct: Option<bool>,
}

/// One entry of `sequences.questions`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptQuestion<'a> {
    pub id: Option<Cow<'a, str>>,
    pub user_result: Option<Cow<'a, str>>,
    pub user_correct: Option<bool>,
    pub user_incomplete: Option<bool>,
    pub user_submitted: Option<bool>,
    pub options: Vec<AttemptOption<'a>>,
}

/// One entry of `options` of a question.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptOption<'a> {
    pub id: Option<Cow<'a, str>>,
    pub checked: Option<bool>,
    /// Absent in the document means false.
    pub correct: bool,
    /// `at`: when the option was last clicked.
    pub answered_at_us: Option<i64>,
    pub submitted: Option<bool>,
}

impl<'a> Attempt<'a> {
    /// Decodes one document. See the module documentation for the rules.
    pub fn parse(payload: &'a [u8]) -> Result<Attempt<'a>, AttemptError> {
        decode::parse(payload)
    }

    /// The de-duplication key, or `None` when the document lacks it (absent, null or empty).
    pub fn key(&self, key: DedupKey) -> Option<&str> {
        let value = match key {
            DedupKey::KeenId => &self.keen_id,
            DedupKey::UserExamId => &self.user_exam_id,
            DedupKey::SequenceId => &self.sequence_id,
        };
        value.as_deref().filter(|v| !v.is_empty())
    }

    /// The de-duplication key, or the error to dead-letter the document with.
    pub fn require_key(&self, key: DedupKey) -> Result<&str, AttemptError> {
        self.key(key).ok_or_else(|| {
            AttemptError::new(key.as_str(), "de-duplication key is missing or empty")
        })
    }

    /// Questions counted as correct (see the module documentation).
    pub fn score(&self) -> i32 {
        count_i32(self.questions.iter().filter(|q| q.is_correct()))
    }

    /// The earliest and latest `options[].at` of the attempt.
    pub fn answer_span_us(&self) -> (Option<i64>, Option<i64>) {
        span(self.questions.iter().flat_map(|q| &q.options))
    }
}

impl AttemptQuestion<'_> {
    /// `user_result == "correct"`, or `user_correct` when there is no `user_result`.
    pub fn is_correct(&self) -> bool {
        match &self.user_result {
            Some(result) => result == "correct",
            None => self.user_correct == Some(true),
        }
    }

    /// The earliest and latest `at` of the question's options.
    pub fn answer_span_us(&self) -> (Option<i64>, Option<i64>) {
        span(&self.options)
    }
}

fn span<'x, 'a: 'x>(
    options: impl IntoIterator<Item = &'x AttemptOption<'a>>,
) -> (Option<i64>, Option<i64>) {
    options.into_iter().filter_map(|o| o.answered_at_us).fold(
        (None, None),
        |(lo, hi): (Option<i64>, Option<i64>), t| {
            (
                Some(lo.map_or(t, |lo| lo.min(t))),
                Some(hi.map_or(t, |hi| hi.max(t))),
            )
        },
    )
}

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
