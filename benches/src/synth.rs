//! Synthetic `attempt_questions` rows written straight into a lake (the SQL and start-up
//! benchmarks): 40 exams × 50 questions, attempts of 30–50 questions answered by simulated
//! students (Rasch), Kafka source columns over 4 partitions, committed in ≈ 1 M-row commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use examflow_ingest::attempts::attempt_questions_schema;
use examflow_ingest::lake::{Lake, TopicPartition};

use crate::Rng;

pub const EXAMS: usize = 40;
pub const QUESTIONS_PER_EXAM: usize = 50;
const PARTITIONS: u64 = 4;
/// Rows per Delta commit (rounded up to whole attempts) and per Arrow batch.
pub const COMMIT_ROWS: usize = 1_000_000;
const BATCH_ROWS: usize = 65_536;
/// 2025-01-01T00:00:00Z in microseconds.
const YEAR_START_US: i64 = 1_735_689_600_000_000;
const YEAR_US: i64 = 365 * 86_400 * 1_000_000;
const SECOND_US: f64 = 1e6;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------- synthetic lake

pub fn exam_names() -> Vec<String> {
    let subjects = [
        "Algebra",
        "Geometry",
        "Statistics",
        "Biology",
        "Chemistry",
        "Physics",
        "World History",
        "Geography",
        "English Literature",
        "Economics",
    ];
    let forms = ["Practice A", "Practice B", "Midterm", "Final"];
    subjects
        .iter()
        .flat_map(|s| forms.iter().map(move |f| format!("{s} {f}")))
        .collect()
}

/// Builders for the columns of `attempt_questions`, in schema order.
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
    source_topic: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
    rows: usize,
}

impl QuestionColumns {
    fn new() -> Self {
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
            options_checked: ListBuilder::new(StringBuilder::new())
                .with_field(Arc::new(Field::new("element", DataType::Utf8, true))),
            options_correct: Int32Builder::new(),
            first_answer_at: TimestampMicrosecondBuilder::new(),
            last_answer_at: TimestampMicrosecondBuilder::new(),
            source_topic: StringBuilder::new(),
            source_partition: Int32Builder::new(),
            source_offset: Int64Builder::new(),
            ingested_at: TimestampMicrosecondBuilder::new(),
            rows: 0,
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        fn utc(b: &mut TimestampMicrosecondBuilder) -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        }
        let columns: Vec<ArrayRef> = vec![
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
            Arc::new(self.source_topic.finish()),
            Arc::new(self.source_partition.finish()),
            Arc::new(self.source_offset.finish()),
            utc(&mut self.ingested_at),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Attempts of simulated students: each takes 30–50 consecutive questions (wrapping) of one
/// exam's 50; right with the Rasch probability of its θ against the question's b, 5%
/// unanswered, 4% partly right ("missed_some").
struct Synth {
    rng: Rng,
    exams: Vec<String>,
    question_ids: Vec<String>,
    /// Option ids per question (4 options; 5 for the "Final" forms).
    option_ids: Vec<Vec<String>>,
    difficulty: Vec<f64>,
}

impl Synth {
    fn new() -> Self {
        let mut rng = Rng(0x5EED_0007_D00D_F00D);
        let exams = exam_names();
        let n = EXAMS * QUESTIONS_PER_EXAM;
        let question_ids: Vec<String> = (0..n).map(|q| (100_000 + q).to_string()).collect();
        let option_ids = (0..n)
            .map(|q| {
                let options = if (q / QUESTIONS_PER_EXAM) % 4 == 3 {
                    5
                } else {
                    4
                };
                (0..options)
                    .map(|k| format!("{}-{}", question_ids[q], k + 1))
                    .collect()
            })
            .collect();
        let difficulty = (0..n).map(|_| rng.normal()).collect();
        Synth {
            rng,
            exams,
            question_ids,
            option_ids,
            difficulty,
        }
    }

    /// Appends the questions of attempt number `attempt` (at most `max_rows`); returns the
    /// rows appended and the attempt's (partition, offset).
    fn append_attempt(
        &mut self,
        cols: &mut QuestionColumns,
        attempt: u64,
        max_rows: usize,
    ) -> (usize, i32, i64) {
        let rng = &mut self.rng;
        let exam = rng.below(EXAMS);
        let theta = rng.normal();
        let questions = (30 + rng.below(21)).min(max_rows);
        let first_q = rng.below(QUESTIONS_PER_EXAM);
        let started = YEAR_START_US + (rng.next() * YEAR_US as f64) as i64;
        let keen_id = format!("{:08x}{:016x}", attempt as u32, splitmix(attempt));
        let user_exam_id = (7_000_000 + attempt).to_string();
        let partition = (attempt % PARTITIONS) as i32;
        let offset = (attempt / PARTITIONS) as i64;
        let ingested_at = started + questions as i64 * 90_000_000 + 1_000_000;
        let mut clock = started + (20.0 * SECOND_US) as i64;
        for index in 0..questions {
            let q = exam * QUESTIONS_PER_EXAM + (first_q + index) % QUESTIONS_PER_EXAM;
            let options = &self.option_ids[q];
            let p = 1.0 / (1.0 + (-(theta - self.difficulty[q])).exp());
            let u = rng.next();
            let result = if u < 0.05 {
                "unanswered"
            } else if u < 0.09 {
                "missed_some"
            } else if rng.next() < p {
                "correct"
            } else {
                "incorrect"
            };
            // Option 1 is the right one; "missed_some" questions have two right options.
            let right_options = if result == "missed_some" { 2 } else { 1 };
            cols.keen_id.append_value(&keen_id);
            cols.user_exam_id.append_value(&user_exam_id);
            cols.exam_name.append_value(&self.exams[exam]);
            cols.question_index.append_value(index as i32);
            cols.question_id.append_value(&self.question_ids[q]);
            cols.user_result.append_value(result);
            cols.user_correct.append_value(result == "correct");
            cols.user_incomplete.append_value(result == "missed_some");
            cols.user_submitted.append_value(result != "unanswered");
            cols.option_count.append_value(options.len() as i32);
            match result {
                "unanswered" => {}
                "incorrect" => cols
                    .options_checked
                    .values()
                    .append_value(&options[1 + rng.below(options.len() - 1)]),
                _ => cols.options_checked.values().append_value(&options[0]),
            }
            cols.options_checked.append(true);
            cols.options_correct.append_value(right_options);
            if result == "unanswered" {
                cols.first_answer_at.append_null();
                cols.last_answer_at.append_null();
            } else {
                let first = clock + (rng.next() * 60.0 * SECOND_US) as i64;
                let last = first + (rng.next() * 15.0 * SECOND_US) as i64;
                cols.first_answer_at.append_value(first);
                cols.last_answer_at.append_value(last);
                clock = last;
            }
            cols.source_topic.append_value("exams");
            cols.source_partition.append_value(partition);
            cols.source_offset.append_value(offset);
            cols.ingested_at.append_value(ingested_at);
            cols.rows += 1;
        }
        (questions, partition, offset)
    }
}

/// Writes `rows` rows into the lake's `attempt_questions`, committing every ≈ 1 M rows.
/// Returns the number of commits.
pub async fn build_lake(lake: &Lake, rows: usize, log: &mut impl FnMut(&str)) -> Result<usize> {
    let table = &lake.attempt_questions;
    let schema = attempt_questions_schema();
    let mut synth = Synth::new();
    let mut attempt = 0u64;
    let mut total = 0usize;
    let mut commits = 0usize;
    while total < rows {
        let target = COMMIT_ROWS.min(rows - total);
        let mut cols = QuestionColumns::new();
        let mut batches = Vec::new();
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut chunk = 0usize;
        while chunk < target {
            let (n, partition, offset) =
                synth.append_attempt(&mut cols, attempt, rows - total - chunk);
            positions.insert(("exams".to_string(), partition), offset);
            attempt += 1;
            chunk += n;
            if cols.rows >= BATCH_ROWS {
                batches.push(cols.finish(&schema)?);
            }
        }
        if cols.rows > 0 {
            batches.push(cols.finish(&schema)?);
        }
        let n_batches = batches.len();
        for batch in batches {
            table.push_tail(batch);
        }
        let report = table
            .commit_tail("sql-bench", &positions, n_batches)
            .await
            .context("committing synthetic rows")?;
        ensure!(
            report.rows_written == chunk,
            "commit wrote {} of {chunk} rows",
            report.rows_written
        );
        total += chunk;
        commits += 1;
        log(&format!(
            "  commit {commits}: {chunk} rows, {} file(s), {:.1} MB (total {total})\n",
            report.files,
            report.bytes as f64 / 1e6
        ));
    }
    Ok(commits)
}
