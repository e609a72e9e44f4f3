//! Real-time ability estimates from the attempt stream: each `user_exam_id`'s θ, kept up to
//! date as its attempts arrive on the `exams` topic.
//!
//! The attempts carry no IRT parameters, so the questions get provisional ones from their
//! running p-values (the engine's [`provisional_params`]: a = 1, c = 1/options, b from the
//! p-value corrected for guessing), and θ is the EAP estimate (N(0, 1) prior) over every
//! answered question of the user's attempts so far. A user's estimate is recomputed when
//! one of their attempts arrives, with the difficulties known at that moment. Questions
//! without a `user_correct` (not answered) are left out. At start the tracker is rebuilt
//! from the committed `attempt_questions` table, so the estimates survive restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use examflow_engine::cat::provisional_params;
use examflow_engine::irt::{ItemParams, eap};
use serde::Serialize;

/// Most answered questions remembered per user (the oldest are dropped beyond it).
const MAX_RESPONSES_PER_USER: usize = 2000;

#[derive(Default)]
struct QuestionStats {
    answered: u64,
    correct: u64,
    options: u32,
}

#[derive(Default)]
struct UserState {
    exam_name: Option<String>,
    /// (question index, correct).
    responses: Vec<(u32, bool)>,
    attempts: Vec<String>,
    theta: f64,
    se: f64,
    updated_at_us: i64,
}

#[derive(Default)]
struct Inner {
    question_index: HashMap<String, u32>,
    questions: Vec<QuestionStats>,
    users: HashMap<String, UserState>,
}

/// One user's current estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbilitySnapshot {
    pub user_exam_id: String,
    pub exam_name: Option<String>,
    pub theta: f64,
    pub se: f64,
    /// Answered questions the estimate uses.
    pub responses: usize,
    pub attempts: usize,
    /// When the estimate last changed (RFC 3339).
    pub updated_at: String,
}

/// Every user's current ability estimate; cheap to share.
#[derive(Default, Clone)]
pub struct AbilityTracker {
    inner: Arc<Mutex<Inner>>,
}

/// Column `name` of `batch` cast to `to` (tables read back may hold strings as
/// `Utf8View`), downcast to `T`.
fn column<T: Clone + 'static>(batch: &RecordBatch, name: &str, to: &DataType) -> Option<T> {
    let array = batch.column_by_name(name)?;
    let cast = if array.data_type() == to {
        array.clone()
    } else {
        arrow::compute::cast(array, to).ok()?
    };
    cast.as_any().downcast_ref::<T>().cloned()
}

impl AbilityTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the rows of an `attempt_questions` batch (decoded or read back from the
    /// table) and updates the estimates of the users in it. Returns how many users' estimates
    /// changed.
    pub fn observe(&self, batch: &RecordBatch) -> usize {
        let text = DataType::Utf8;
        let (Some(users), Some(keys), Some(questions), Some(correct), Some(options)) = (
            column::<StringArray>(batch, "user_exam_id", &text),
            column::<StringArray>(batch, "keen_id", &text),
            column::<StringArray>(batch, "question_id", &text),
            column::<BooleanArray>(batch, "user_correct", &DataType::Boolean),
            column::<Int32Array>(batch, "option_count", &DataType::Int32),
        ) else {
            return 0;
        };
        let exams = column::<StringArray>(batch, "exam_name", &text);
        let now_us = chrono::Utc::now().timestamp_micros();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut touched: Vec<String> = Vec::new();
        for row in 0..batch.num_rows() {
            if users.is_null(row) || questions.is_null(row) || correct.is_null(row) {
                continue;
            }
            let question = questions.value(row);
            let next = inner.questions.len() as u32;
            let q = *inner
                .question_index
                .entry(question.to_string())
                .or_insert(next);
            if q == next {
                inner.questions.push(QuestionStats::default());
            }
            let right = correct.value(row);
            let stats = &mut inner.questions[q as usize];
            stats.answered += 1;
            stats.correct += u64::from(right);
            stats.options = options.value(row).max(0) as u32;
            let user = users.value(row);
            let state = inner.users.entry(user.to_string()).or_default();
            state.responses.push((q, right));
            if state.responses.len() > MAX_RESPONSES_PER_USER {
                state.responses.remove(0);
            }
            let key = keys.value(row);
            if state.attempts.last().map(String::as_str) != Some(key)
                && !state.attempts.iter().any(|k| k == key)
            {
                state.attempts.push(key.to_string());
            }
            if let Some(exams) = &exams
                && !exams.is_null(row)
            {
                state.exam_name = Some(exams.value(row).to_string());
            }
            if touched.last().map(String::as_str) != Some(user) {
                touched.push(user.to_string());
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let Inner {
            questions, users, ..
        } = &mut *inner;
        for user in &touched {
            let Some(state) = users.get_mut(user) else {
                continue;
            };
            let params: Vec<ItemParams> = state
                .responses
                .iter()
                .map(|&(q, _)| question_params(&questions[q as usize]))
                .collect();
            let answers: Vec<u8> = state.responses.iter().map(|&(_, r)| u8::from(r)).collect();
            if let Ok(estimate) = eap(&params, &answers) {
                state.theta = estimate.theta;
                state.se = estimate.se;
                state.updated_at_us = now_us;
            }
        }
        touched.len()
    }

    /// The estimate of one user.
    pub fn get(&self, user_exam_id: &str) -> Option<AbilitySnapshot> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .users
            .get(user_exam_id)
            .map(|s| snapshot(user_exam_id, s))
    }

    /// Up to `limit` estimates, most recently updated first, optionally of one exam.
    pub fn list(&self, exam: Option<&str>, limit: usize) -> Vec<AbilitySnapshot> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(&String, &UserState)> = inner
            .users
            .iter()
            .filter(|(_, s)| exam.is_none_or(|e| s.exam_name.as_deref() == Some(e)))
            .collect();
        all.sort_by(|a, b| b.1.updated_at_us.cmp(&a.1.updated_at_us).then(a.0.cmp(b.0)));
        all.into_iter()
            .take(limit)
            .map(|(id, s)| snapshot(id, s))
            .collect()
    }

    /// Number of users with an estimate.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every estimate as one Arrow batch (the SQL table `abilities`).
    pub fn to_batch(&self) -> RecordBatch {
        let all = self.list(None, usize::MAX);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                all.iter().map(|a| a.user_exam_id.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                all.iter().map(|a| a.exam_name.as_deref()),
            )),
            Arc::new(Float64Array::from_iter_values(all.iter().map(|a| a.theta))),
            Arc::new(Float64Array::from_iter_values(all.iter().map(|a| a.se))),
            Arc::new(UInt32Array::from_iter_values(
                all.iter().map(|a| a.responses as u32),
            )),
            Arc::new(UInt32Array::from_iter_values(
                all.iter().map(|a| a.attempts as u32),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(all.iter().map(|a| {
                    chrono::DateTime::parse_from_rfc3339(&a.updated_at)
                        .map(|t| t.timestamp_micros())
                        .unwrap_or_default()
                }))
                .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(abilities_schema(), columns).expect("abilities batch")
    }
}

/// Schema of the SQL table `abilities`.
pub fn abilities_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_exam_id", DataType::Utf8, false),
        Field::new("exam_name", DataType::Utf8, true),
        Field::new("theta", DataType::Float64, false),
        Field::new("se", DataType::Float64, false),
        Field::new("responses", DataType::UInt32, false),
        Field::new("attempts", DataType::UInt32, false),
        Field::new(
            "updated_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

fn question_params(stats: &QuestionStats) -> ItemParams {
    let p = if stats.answered == 0 {
        0.5
    } else {
        stats.correct as f64 / stats.answered as f64
    };
    provisional_params("q", p, stats.options)
        .unwrap_or_else(|_| ItemParams::new("q", 1.0, 0.0, 0.0))
}

fn snapshot(id: &str, s: &UserState) -> AbilitySnapshot {
    AbilitySnapshot {
        user_exam_id: id.to_string(),
        exam_name: s.exam_name.clone(),
        theta: s.theta,
        se: s.se,
        responses: s.responses.len(),
        attempts: s.attempts.len(),
        updated_at: chrono::DateTime::from_timestamp_micros(s.updated_at_us)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: &[(&str, &str, &str, Option<bool>)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("keen_id", DataType::Utf8, true),
            Field::new("user_exam_id", DataType::Utf8, true),
            Field::new("exam_name", DataType::Utf8, true),
            Field::new("question_id", DataType::Utf8, true),
            Field::new("user_correct", DataType::Boolean, true),
            Field::new("option_count", DataType::Int32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "exam"))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.3))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| 4))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn right_answers_raise_and_wrong_answers_lower_the_estimate() {
        let t = AbilityTracker::new();
        // Background: many users answer q1..q4, half right, so they are medium items.
        let mut rows = Vec::new();
        let names: Vec<String> = (0..40).map(|i| format!("bg{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            for q in ["q1", "q2", "q3", "q4"] {
                rows.push(("k", name.as_str(), q, Some(i % 2 == 0)));
            }
        }
        assert_eq!(t.observe(&batch(&rows)), 40);
        t.observe(&batch(&[
            ("a1", "strong", "q1", Some(true)),
            ("a1", "strong", "q2", Some(true)),
            ("a1", "strong", "q3", Some(true)),
            ("a1", "weak", "q1", Some(false)),
            ("a1", "weak", "q2", Some(false)),
            ("a1", "weak", "q3", None),
        ]));
        let strong = t.get("strong").unwrap();
        let weak = t.get("weak").unwrap();
        assert!(
            strong.theta > 0.3 && weak.theta < -0.3,
            "{strong:?} {weak:?}"
        );
        assert_eq!(weak.responses, 2, "an unanswered question is left out");
        assert!(strong.se < 1.0);
        // A second attempt with more right answers moves the estimate up and counts.
        let before = strong.theta;
        t.observe(&batch(&[("a2", "strong", "q4", Some(true))]));
        let after = t.get("strong").unwrap();
        assert!(after.theta > before);
        assert_eq!(after.attempts, 2);
        assert_eq!(t.to_batch().num_rows(), 42);
        assert_eq!(t.list(Some("exam"), 5).len(), 5);
    }
}
