//! Score-report benchmark (issue 7): `GET /api/reports/exams/{name}` of the release
//! `examflow serve` for an exam with `--results` (default 100 000) results × `--questions`
//! (default 50) questions, against the same report computed by Python polars straight from
//! the Delta tables (`benches/report_baseline.py`: what a data scientist writes today),
//! measured in one run. Prints a markdown table.
//!
//! 1. Builds a data directory whose lake holds the results as Debezium change events would
//!    leave them: `score_changes` (one row per result, plus 10% results of a second exam)
//!    and `score_detail_changes` (one row per question), committed through
//!    `LakeTable::push_tail` + `commit_tail` as the ingest does, and a bank for the exam.
//! 2. Starts `examflow serve --data-dir DIR` (the release binary next to this one) and gets
//!    an educator token from `examflow token`.
//! 3. After one warm-up each, `--reps` times alternating: the report as JSON and as HTML,
//!    timed by the client from the request until the whole body has arrived; and the
//!    Python baseline, timed inside Python around reading the tables and computing (the
//!    interpreter's start is not counted). The baseline's alpha and p-values must equal
//!    examflow's.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/report-bench [--quick] [--results N] [--questions Q] [--reps R] [--data-dir DIR]
//! ```
//! `--quick` = `--results 10000 --reps 3`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use examflow_benches::{Rng, cpu_line, examflow_binary, loadavg, repo_root};
use examflow_ingest::lake::changes::{score_changes_schema, score_detail_changes_schema};
use examflow_ingest::lake::{Lake, TopicPartition};
use serde_json::{Value, json};

const EXAM: &str = "benchmark-exam";
const OTHER_EXAM: &str = "other-exam";
const TOPIC: &str = "mongo-trigger-topic.exams.score";
const PARTITIONS: i64 = 4;
/// Results per Delta commit.
const COMMIT_RESULTS: usize = 10_000;
/// 2025-01-01T00:00:00Z in microseconds; results spread over 60 days.
const START_US: i64 = 1_735_689_600_000_000;
const SPAN_US: i64 = 60 * 86_400 * 1_000_000;
const OPTIONS: [&str; 4] = ["A", "B", "C", "D"];

struct Args {
    results: usize,
    questions: usize,
    reps: usize,
    data_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        results: 100_000,
        questions: 50,
        reps: 5,
        data_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--quick" => {
                args.results = 10_000;
                args.reps = 3;
            }
            "--results" => args.results = value()?.parse()?,
            "--questions" => args.questions = value()?.parse()?,
            "--reps" => args.reps = value()?.parse()?,
            "--data-dir" => args.data_dir = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}; see the doc comment of report_bench.rs"),
        }
    }
    ensure!(args.results > 0 && args.questions > 0 && args.reps > 0);
    Ok(args)
}

/// Column builders of both change tables.
#[derive(Default)]
struct Changes {
    doc_id: StringBuilder,
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
    source: Source,
    d_doc_id: StringBuilder,
    d_changed_at: TimestampMicrosecondBuilder,
    d_index: Int32Builder,
    d_item: StringBuilder,
    d_question: StringBuilder,
    d_user_answer: StringBuilder,
    d_correct_answer: StringBuilder,
    d_is_correct: BooleanBuilder,
    d_source: Source,
}

#[derive(Default)]
struct Source {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
}

impl Source {
    fn append(&mut self, partition: i32, offset: i64, at: i64) {
        self.topic.append_value(TOPIC);
        self.partition.append_value(partition);
        self.offset.append_value(offset);
        self.ingested_at.append_value(at);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            utc(&mut self.ingested_at),
        ]
    }
}

fn utc(b: &mut TimestampMicrosecondBuilder) -> ArrayRef {
    Arc::new(b.finish().with_timezone("UTC"))
}

impl Changes {
    /// One result document `n` and its questions, answered by a Rasch model.
    fn append(&mut self, n: usize, exam: &str, questions: usize, rng: &mut Rng) {
        let partition = (n as i64 % PARTITIONS) as i32;
        let offset = n as i64 / PARTITIONS;
        let at = START_US + (rng.next() * SPAN_US as f64) as i64;
        let id = format!("{n:024x}");
        let theta = rng.normal();
        let mut correct = 0i64;
        for q in 0..questions {
            let b = q as f64 / questions as f64 * 4.0 - 2.0;
            let right = rng.next() < 1.0 / (1.0 + (b - theta).exp());
            let key = q % OPTIONS.len();
            let answer = if right {
                key
            } else {
                (key + 1 + rng.below(OPTIONS.len() - 1)) % OPTIONS.len()
            };
            correct += i64::from(right);
            self.d_doc_id.append_value(&id);
            self.d_changed_at.append_value(at);
            self.d_index.append_value(q as i32);
            self.d_item.append_value(format!("q{q:03}"));
            self.d_question
                .append_value(format!("Question number {q} of the exam?"));
            self.d_user_answer.append_value(OPTIONS[answer]);
            self.d_correct_answer.append_value(OPTIONS[key]);
            self.d_is_correct.append_value(right);
            self.d_source.append(partition, offset, at);
        }
        let percentage = correct * 100 / questions as i64;
        self.doc_id.append_value(&id);
        self.op.append_value("c");
        self.changed_at.append_value(at);
        self.deleted.append_value(false);
        self.email
            .append_value(format!("student{}@example.org", n / 2));
        self.exam.append_value(exam);
        self.score.append_value(correct);
        self.total.append_value(questions as i64);
        self.percentage.append_value(percentage);
        self.result
            .append_value(if percentage >= 60 { "passed" } else { "failed" });
        self.submitted_at.append_value(at);
        self.document.append_null();
        self.source.append(partition, offset, at);
    }

    fn finish(&mut self) -> Result<(RecordBatch, RecordBatch)> {
        let mut scores: Vec<ArrayRef> = vec![
            Arc::new(self.doc_id.finish()),
            Arc::new(self.op.finish()),
            utc(&mut self.changed_at),
            Arc::new(self.deleted.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.exam.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.total.finish()),
            Arc::new(self.percentage.finish()),
            Arc::new(self.result.finish()),
            utc(&mut self.submitted_at),
            Arc::new(self.document.finish()),
        ];
        scores.extend(self.source.finish());
        let mut details: Vec<ArrayRef> = vec![
            Arc::new(self.d_doc_id.finish()),
            utc(&mut self.d_changed_at),
            Arc::new(self.d_index.finish()),
            Arc::new(self.d_item.finish()),
            Arc::new(self.d_question.finish()),
            Arc::new(self.d_user_answer.finish()),
            Arc::new(self.d_correct_answer.finish()),
            Arc::new(self.d_is_correct.finish()),
        ];
        details.extend(self.d_source.finish());
        let batch = |schema: SchemaRef, columns| {
            RecordBatch::try_new(schema, columns).context("building a synthetic batch")
        };
        Ok((
            batch(score_changes_schema(), scores)?,
            batch(score_detail_changes_schema(), details)?,
        ))
    }
}

/// Writes the results of both exams; returns (results of the exam, detail rows in all).
async fn build_lake(data_dir: &Path, args: &Args) -> Result<(usize, usize)> {
    let lake = Lake::open(data_dir).await?;
    let other = args.results / 10;
    let all = args.results + other;
    let mut rng = Rng(42);
    let mut detail_rows = 0;
    let mut n = 0;
    while n < all {
        let mut changes = Changes::default();
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let end = (n + COMMIT_RESULTS).min(all);
        for m in n..end {
            // The other exam's results are interleaved, as on a real topic.
            let exam = if m % 11 == 10 { OTHER_EXAM } else { EXAM };
            changes.append(m, exam, args.questions, &mut rng);
            positions.insert(
                (TOPIC.to_string(), (m as i64 % PARTITIONS) as i32),
                m as i64 / PARTITIONS,
            );
        }
        let (scores, details) = changes.finish()?;
        detail_rows += details.num_rows();
        lake.score_changes.push_tail(scores);
        lake.score_detail_changes.push_tail(details);
        lake.score_changes
            .commit_tail("report-bench", &positions, 1)
            .await?;
        lake.score_detail_changes
            .commit_tail("report-bench", &positions, 1)
            .await?;
        n = end;
    }
    let exam_results = (0..all).filter(|m| m % 11 != 10).count();
    Ok((exam_results, detail_rows))
}

fn write_bank(dir: &Path, questions: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let items: Vec<Value> = (0..questions)
        .map(|q| {
            json!({"id": format!("q{q:03}"), "question": format!("Question number {q} of the exam?"),
                   "options": OPTIONS, "correct_answer": OPTIONS[q % OPTIONS.len()]})
        })
        .collect();
    std::fs::write(
        dir.join(format!("{EXAM}.json")),
        serde_json::to_vec(&items)?,
    )?;
    Ok(())
}

struct Server {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data_dir: &Path, banks: &Path, work: &Path) -> Result<Server> {
        let config = work.join("examflow.toml");
        std::fs::write(
            &config,
            "[sql]\ntimeout_secs = 600\n[adaptive]\ncalibrate_interval_secs = 0\n",
        )?;
        let log = work.join("examflow-serve.log");
        let mut child = Command::new(examflow_binary()?)
            .arg("--config")
            .arg(&config)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--banks")
            .arg(banks)
            .env("EXAMFLOW_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting examflow")?;
        let base = examflow_benches::served_url(&mut child, Some(&log))?;
        let token = Command::new(examflow_binary()?)
            .args([
                "token",
                "--email",
                "teacher@example.org",
                "--role",
                "educator",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .output()?;
        ensure!(token.status.success(), "examflow token failed");
        Ok(Server {
            child,
            base,
            token: String::from_utf8(token.stdout)?.trim().to_string(),
        })
    }

    /// The report in `format`; the time from sending the request to the last body byte.
    async fn report(&self, client: &reqwest::Client, format: &str) -> Result<(Duration, Vec<u8>)> {
        let t = Instant::now();
        let mut resp = client
            .get(format!(
                "{}/api/reports/exams/{EXAM}?format={format}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        let elapsed = t.elapsed();
        ensure!(
            status.is_success(),
            "report: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok((elapsed, body))
    }
}

/// Runs the Python baseline `reps` times in one interpreter; its JSON answer.
fn python_baseline(lake: &Path, reps: usize) -> Result<Value> {
    let script = repo_root().join("benches/report_baseline.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(lake)
        .arg(EXAM)
        .arg(reps.to_string())
        .output()
        .context("running python3 benches/report_baseline.py")?;
    ensure!(
        out.status.success(),
        "report_baseline.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let banks = temp.path().join("banks");
    write_bank(&banks, args.questions)?;
    let t = Instant::now();
    let (exam_results, detail_rows) = if data_dir.join("lake").exists() {
        eprintln!("reusing {}", data_dir.display());
        (0, 0)
    } else {
        build_lake(&data_dir, &args).await?
    };
    eprintln!(
        "lake: {exam_results} results of {EXAM}, {detail_rows} question rows in all, built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let load_before = loadavg();
    let server = Server::start(&data_dir, &banks, temp.path())?;
    let client = reqwest::Client::new();

    let (_, body) = server.report(&client, "json").await?;
    let report: Value = serde_json::from_slice(&body)?;
    let results = report["summary"]["results"].as_u64().unwrap_or(0);
    ensure!(
        exam_results == 0 || results as usize == exam_results,
        "the report counts {results} results, the lake holds {exam_results}"
    );
    server.report(&client, "html").await?;
    let baseline = python_baseline(&data_dir.join("lake"), 1)?;

    let mut json_s = Vec::new();
    let mut html_s = Vec::new();
    let mut json_bytes = 0;
    let mut html_bytes = 0;
    let mut python_s = Vec::new();
    for rep in 0..args.reps {
        let (d, body) = server.report(&client, "json").await?;
        json_s.push(d.as_secs_f64());
        json_bytes = body.len();
        let (d, body) = server.report(&client, "html").await?;
        html_s.push(d.as_secs_f64());
        html_bytes = body.len();
        let py = python_baseline(&data_dir.join("lake"), 1)?;
        python_s.push(py["seconds"][0].as_f64().unwrap_or(f64::NAN));
        eprintln!(
            "rep {}: json {:.3} s, html {:.3} s, python polars {:.3} s",
            rep + 1,
            json_s[rep],
            html_s[rep],
            python_s[rep]
        );
    }

    // The baseline must have computed the same report.
    let alpha = report["reliability"]["alpha"].as_f64().unwrap_or(f64::NAN);
    let py_alpha = baseline["alpha"].as_f64().unwrap_or(f64::NAN);
    ensure!(
        (alpha - py_alpha).abs() < 1e-9,
        "alpha: examflow {alpha}, python {py_alpha}"
    );
    ensure!(
        baseline["results"].as_u64() == Some(results),
        "results: python {}, examflow {results}",
        baseline["results"]
    );
    let mut worst = 0.0f64;
    for item in report["items"].as_array().into_iter().flatten() {
        let id = item["item"].as_str().unwrap_or_default();
        let p = item["p_value"].as_f64().unwrap_or(f64::NAN);
        let py = baseline["p_values"][id].as_f64().unwrap_or(f64::NAN);
        worst = worst.max((p - py).abs());
        let r = item["point_biserial"].as_f64().unwrap_or(f64::NAN);
        let py_r = baseline["point_biserial"][id].as_f64().unwrap_or(f64::NAN);
        worst = worst.max((r - py_r).abs());
    }
    ensure!(worst < 1e-9, "item statistics differ by {worst}");

    let (json_m, html_m, py_m) = (
        median(json_s.clone()),
        median(html_s.clone()),
        median(python_s.clone()),
    );
    println!(
        "## Score report: {results} results × {} questions\n",
        args.questions
    );
    println!("{}, load average at the start: {load_before}\n", cpu_line());
    println!("| what | median s | min s | max s | body | ratio to Python polars |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, v: &[f64], m: f64, body: String| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {m:.3} | {min:.3} | {max:.3} | {body} | {:.2}× |",
            m / py_m
        );
    };
    row(
        "examflow `GET /api/reports/exams/{name}?format=json` (HTTP, whole body)",
        &json_s,
        json_m,
        format!("{:.1} MB", json_bytes as f64 / 1e6),
    );
    row(
        "examflow `?format=html`",
        &html_s,
        html_m,
        format!("{:.1} MB", html_bytes as f64 / 1e6),
    );
    row(
        &format!(
            "Python polars {}: `read_delta` + the same statistics (in-process time)",
            baseline["polars"].as_str().unwrap_or("?")
        ),
        &python_s,
        py_m,
        "–".into(),
    );
    println!(
        "\nreps {}, {} question rows written (both exams; 0 when reused); alpha {alpha:.6} in both; \
         largest p-value/point-biserial difference {worst:.1e}; load average now {}",
        args.reps,
        detail_rows,
        loadavg()
    );
    println!(
        "target ≤ 1 s for the JSON report: {}",
        if json_m <= 1.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
