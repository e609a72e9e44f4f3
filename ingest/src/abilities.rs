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
use sha2::{Digest, Sha256};

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
    /// Highest source offset observed per (topic, partition): what a snapshot covers.
    covered: HashMap<(String, i32), i64>,
    /// The `attempt_questions` version the state reflects (None: not known).
    version: Option<u64>,
    /// Another process committed rows this tracker did not observe: a snapshot of it would
    /// leave them out, so none is written.
    gapped: bool,
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
        let sources = (
            column::<StringArray>(batch, crate::source::SOURCE_TOPIC, &text),
            column::<Int32Array>(batch, crate::source::SOURCE_PARTITION, &DataType::Int32),
            column::<arrow::array::Int64Array>(
                batch,
                crate::source::SOURCE_OFFSET,
                &DataType::Int64,
            ),
        );
        let now_us = chrono::Utc::now().timestamp_micros();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut touched: Vec<String> = Vec::new();
        for row in 0..batch.num_rows() {
            if let (Some(topics), Some(partitions), Some(offsets)) = &sources
                && !topics.is_null(row)
            {
                let offset = offsets.value(row);
                let entry = inner
                    .covered
                    .entry((topics.value(row).to_string(), partitions.value(row)))
                    .or_insert(offset);
                *entry = (*entry).max(offset);
            }
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

    /// What a snapshot of the tracker covers: the highest offset observed per partition.
    pub fn covered(&self) -> HashMap<(String, i32), i64> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .covered
            .clone()
    }

    /// The `attempt_questions` version the state reflects, and whether it misses rows.
    pub fn version(&self) -> (Option<u64>, bool) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.version, inner.gapped)
    }

    /// Sets the version the state reflects (after reading the table, or housekeeping).
    pub fn set_version(&self, version: Option<u64>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).version = version;
    }

    /// This process committed `version` of `attempt_questions`, holding rows the tracker
    /// has observed: a version between the last one and it was another writer's, whose
    /// rows this tracker missed, and its snapshots would leave them out.
    pub fn note_commit(&self, version: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.version.is_some_and(|last| version != last + 1) {
            inner.gapped = true;
        }
        inner.version = Some(version);
    }

    /// The whole state, for [`AbilityTracker::decode`], as of the version it reflects; None
    /// when that is unknown or the tracker misses rows (see [`AbilityTracker::note_commit`]).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let version = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.version.filter(|_| !inner.gapped)?
        };
        let state = self.encode_state()?;
        self.finish_encoding(state, version)
    }

    /// The state without its version (taken when the rows it holds are about to be
    /// committed; see [`AbilityTracker::finish_encoding`]). None when the tracker misses rows.
    pub fn encode_state(&self) -> Option<Vec<u8>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.gapped {
            return None;
        }
        let mut out = Codec::default();
        out.u32(inner.covered.len() as u32);
        for ((topic, partition), offset) in &inner.covered {
            out.str(topic);
            out.u32(*partition as u32);
            out.u64(*offset as u64);
        }
        let mut names = vec![""; inner.questions.len()];
        for (name, &q) in &inner.question_index {
            names[q as usize] = name;
        }
        out.u32(inner.questions.len() as u32);
        for (name, q) in names.iter().zip(&inner.questions) {
            out.str(name);
            out.u64(q.answered);
            out.u64(q.correct);
            out.u32(q.options);
        }
        out.u32(inner.users.len() as u32);
        for (id, u) in &inner.users {
            out.str(id);
            out.str(u.exam_name.as_deref().unwrap_or("\u{0}"));
            out.u64(u.theta.to_bits());
            out.u64(u.se.to_bits());
            out.u64(u.updated_at_us as u64);
            out.u32(u.responses.len() as u32);
            for &(q, right) in &u.responses {
                out.u32(q << 1 | u32::from(right));
            }
            out.u32(u.attempts.len() as u32);
            for a in &u.attempts {
                out.str(a);
            }
        }
        Some(out.bytes)
    }

    /// A snapshot of `state` as of `version` (the commit that made its rows durable); None
    /// when the tracker has since learnt that it misses rows.
    pub fn finish_encoding(&self, state: Vec<u8>, version: u64) -> Option<Vec<u8>> {
        if self.version().1 {
            return None;
        }
        let mut out = Codec::default();
        out.bytes.reserve(state.len() + 64);
        out.bytes.extend_from_slice(SNAPSHOT_MAGIC);
        out.u64(version);
        out.bytes.extend_from_slice(&state);
        let digest = Sha256::digest(&out.bytes);
        out.bytes.extend_from_slice(&digest);
        Some(out.bytes)
    }

    /// A tracker from [`AbilityTracker::encode`]'s bytes (checked whole by their digest).
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let body_len = bytes
            .len()
            .checked_sub(32)
            .filter(|&n| n >= SNAPSHOT_MAGIC.len())
            .ok_or("too short")?;
        let (body, digest) = bytes.split_at(body_len);
        if Sha256::digest(body)[..] != *digest {
            return Err("digest mismatch (a torn or altered file)".into());
        }
        if &body[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err("not an ability snapshot of this version".into());
        }
        let mut r = Reader {
            bytes: body,
            at: SNAPSHOT_MAGIC.len(),
        };
        let mut inner = Inner {
            version: Some(r.u64()?),
            ..Inner::default()
        };
        for _ in 0..r.u32()? {
            let topic = r.str()?.to_string();
            let partition = r.u32()? as i32;
            inner.covered.insert((topic, partition), r.u64()? as i64);
        }
        for q in 0..r.u32()? {
            inner.question_index.insert(r.str()?.to_string(), q);
            inner.questions.push(QuestionStats {
                answered: r.u64()?,
                correct: r.u64()?,
                options: r.u32()?,
            });
        }
        let questions = inner.questions.len() as u32;
        for _ in 0..r.u32()? {
            let id = r.str()?.to_string();
            let exam = r.str()?;
            let mut u = UserState {
                exam_name: (exam != "\u{0}").then(|| exam.to_string()),
                theta: f64::from_bits(r.u64()?),
                se: f64::from_bits(r.u64()?),
                updated_at_us: r.u64()? as i64,
                ..UserState::default()
            };
            let n = r.u32()? as usize;
            u.responses.reserve(n.min(MAX_RESPONSES_PER_USER));
            for _ in 0..n {
                let v = r.u32()?;
                if v >> 1 >= questions {
                    return Err("a response names an unknown question".into());
                }
                u.responses.push((v >> 1, v & 1 == 1));
            }
            for _ in 0..r.u32()? {
                u.attempts.push(r.str()?.to_string());
            }
            inner.users.insert(id, u);
        }
        if r.at != body.len() {
            return Err("trailing bytes".into());
        }
        Ok(AbilityTracker {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Takes over another tracker's state (a loaded snapshot).
    pub fn replace_with(&self, other: AbilityTracker) {
        let taken = std::mem::take(&mut *other.inner.lock().unwrap_or_else(|p| p.into_inner()));
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = taken;
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

/// First bytes of an ability snapshot (format version 1).
const SNAPSHOT_MAGIC: &[u8] = b"examflow-abilities-1\n";

#[derive(Default)]
struct Codec {
    bytes: Vec<u8>,
}

impl Codec {
    fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("truncated")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> std::result::Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| e.to_string())
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

    #[test]
    fn a_snapshot_restores_the_same_estimates_and_refuses_damage() {
        let t = AbilityTracker::new();
        t.set_version(Some(3));
        let mut rows = Vec::new();
        let names: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            for q in ["q1", "q2", "q3"] {
                rows.push(("k", name.as_str(), q, Some((i + q.len()) % 3 != 0)));
            }
        }
        t.observe(&batch(&rows));
        let bytes = t.encode().unwrap();
        let back = AbilityTracker::decode(&bytes).unwrap();
        assert_eq!(back.list(None, 100), t.list(None, 100));
        assert_eq!(back.version(), (Some(3), false));
        // Both go on the same way from here.
        let more = batch(&[
            ("k2", "u1", "q4", Some(true)),
            ("k2", "new", "q1", Some(false)),
        ]);
        t.observe(&more);
        back.observe(&more);
        let strip = |v: Vec<AbilitySnapshot>| -> Vec<(String, f64, usize)> {
            v.into_iter()
                .map(|a| (a.user_exam_id, a.theta, a.responses))
                .collect()
        };
        let mut a = strip(t.list(None, 100));
        let mut b = strip(back.list(None, 100));
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b);
        // A flipped byte or a cut file is refused.
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(AbilityTracker::decode(&flipped).is_err());
        assert!(AbilityTracker::decode(&bytes[..bytes.len() - 1]).is_err());
        // A tracker that missed another writer's commit writes no snapshot.
        t.note_commit(4);
        assert!(t.encode().is_some());
        t.note_commit(6);
        assert!(t.encode().is_none());
    }
}
