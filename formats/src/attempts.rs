//! Assessment attempt documents: one JSON document per Kafka message, decoded strictly
//! and fast, borrowing its strings from the message bytes. `examflow-ingest` turns the
//! parsed [`Attempt`] into Arrow rows of the `attempts`, `attempt_questions` and
//! `attempt_options` tables (the columns are documented there).
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

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
