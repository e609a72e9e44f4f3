//! Other engines read the lake on S3 and count what examflow counts: `examflow ingest` fills
//! a bucket (attempts with replays, a few Debezium change events), then
//! `scripts/other-engines` (Python `deltalake`, polars and DuckDB, in a venv of its own)
//! reads the same tables from S3 and must return the numbers `examflow sql` returns.
//!
//! The lake is one that has run a while: many commits, a checkpoint, compactions whose
//! replaced files are still in the bucket (reading the Parquet objects without the log counts
//! about three times the rows).
//!
//! Daft on a local Ray runtime joins when `EXAMFLOW_TEST_DAFT=1` (Ray is a heavy install;
//! the script can run it alone: `scripts/other-engines --engines daft ...`). Skipped, like the
//! other S3 tests, when `EXAMFLOW_TEST_S3_ENDPOINT` is
//! unset (scripts/test-all sets it).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::kafka::{KeyValue, create_topic, produce, test_brokers};
use common::lake::{
    IngestOptions, IngestProcess, committed_rows, expected_counts, generate_attempts,
    produce_lines, read_attempts, read_keyed_lines, sql_with, tail,
};
use common::s3::S3Lake;
use common::{repo_root, unique};
use serde_json::{Value, json};

/// Attempts produced (plus 10% replays, which the lake must hold once).
const ATTEMPTS: usize = 300;
/// Bursts they are produced in, each committed before the next.
const BURSTS: usize = 24;

/// The numbers every engine computes.
#[derive(Debug, Clone, PartialEq)]
struct Numbers {
    attempts: i64,
    distinct_keen_ids: i64,
    attempt_questions: i64,
    user_correct: i64,
    /// (exam_name, rows), sorted.
    exams: Vec<(Option<String>, i64)>,
    score_changes: i64,
    /// Rows of `scores` not deleted, and the sum of their `score`.
    current_scores: i64,
    current_score_sum: i64,
}

fn int(value: &Value, key: &str) -> Result<i64, String> {
    value[key]
        .as_i64()
        .ok_or_else(|| format!("{key} is not an integer: {}", value[key]))
}

impl Numbers {
    /// What `examflow sql` says.
    fn from_examflow(config: &Path, data_dir: &Path) -> Numbers {
        let row = sql_with(
            Some(config),
            data_dir,
            "SELECT (SELECT count(*) FROM attempts) AS attempts, \
             (SELECT count(DISTINCT keen_id) FROM attempts) AS distinct_keen_ids, \
             (SELECT count(*) FROM attempt_questions) AS attempt_questions, \
             (SELECT sum(CAST(user_correct AS INT)) FROM attempt_questions) AS user_correct, \
             (SELECT count(*) FROM score_changes) AS score_changes, \
             (SELECT count(*) FROM scores WHERE NOT deleted) AS current_scores, \
             (SELECT sum(score) FROM scores WHERE NOT deleted) AS current_score_sum",
        )
        .remove(0);
        let mut exams: Vec<(Option<String>, i64)> = sql_with(
            Some(config),
            data_dir,
            "SELECT exam_name, count(*) AS n FROM attempts GROUP BY exam_name",
        )
        .iter()
        .map(|r| {
            (
                r["exam_name"].as_str().map(str::to_string),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
        exams.sort();
        let get = |key: &str| int(&row, key).unwrap_or_else(|e| panic!("examflow sql: {e}"));
        Numbers {
            attempts: get("attempts"),
            distinct_keen_ids: get("distinct_keen_ids"),
            attempt_questions: get("attempt_questions"),
            user_correct: get("user_correct"),
            exams,
            score_changes: get("score_changes"),
            current_scores: get("current_scores"),
            current_score_sum: get("current_score_sum"),
        }
    }

    /// An engine's `numbers` object from `data/other_engines.py`.
    fn from_engine(numbers: &Value) -> Result<Numbers, String> {
        let mut exams = Vec::new();
        for pair in numbers["exams"]
            .as_array()
            .ok_or_else(|| format!("exams is not a list: {}", numbers["exams"]))?
        {
            let name = pair[0].as_str().map(str::to_string);
            if name.is_none() && !pair[0].is_null() {
                return Err(format!("exam name is not a string: {pair}"));
            }
            let n = pair[1]
                .as_i64()
                .ok_or_else(|| format!("exam count is not an integer: {pair}"))?;
            exams.push((name, n));
        }
        exams.sort();
        Ok(Numbers {
            attempts: int(numbers, "attempts")?,
            distinct_keen_ids: int(numbers, "distinct_keen_ids")?,
            attempt_questions: int(numbers, "attempt_questions")?,
            user_correct: int(numbers, "user_correct")?,
            exams,
            score_changes: int(numbers, "score_changes")?,
            current_scores: int(numbers, "current_scores")?,
            current_score_sum: int(numbers, "current_score_sum")?,
        })
    }
}

/// A Debezium change event of a result document (as api/tests/lake_ingest.rs makes them).
fn change_event(op: &str, id: &str, score: Option<u32>, ts_ms: i64) -> KeyValue {
    let key = json!({"id": format!("{{\"$oid\": \"{id}\"}}")}).to_string();
    let mut payload = json!({"op": op, "ts_ms": ts_ms,
        "source": {"db": "exams", "collection": "score", "ts_ms": ts_ms}});
    if let Some(score) = score {
        let document = json!({"_id": {"$oid": id}, "email": "s@example.com", "exam": "rust",
            "score": score, "total": 4, "percentage": score * 25,
            "result": if score >= 2 { "passed" } else { "failed" },
            "submitted_at": {"$date": ts_ms},
            "details": [{"question": "Q1", "user_answer": "A", "correct_answer": "A",
                         "is_correct": true, "item": "i1"}]});
        payload["after"] = Value::String(document.to_string());
    }
    (
        Some(key.into_bytes()),
        Some(payload.to_string().into_bytes()),
    )
}

/// The change events produced: six rows of `score_changes` (the tombstone adds none). In
/// `scores`, one is updated (3), one deleted, and one updated at the same `changed_at` as its
/// creation (the later offset wins: 4).
fn change_events() -> (Vec<KeyValue>, i64) {
    let (one, two, three) = (
        "65b000000000000000000001",
        "65b000000000000000000002",
        "65b000000000000000000003",
    );
    let t = 1_700_000_000_000;
    let events = vec![
        change_event("c", one, Some(1), t),
        change_event("u", one, Some(3), t + 1000),
        change_event("c", two, Some(4), t + 2000),
        change_event("d", two, None, t + 3000),
        (change_event("d", two, None, 0).0, None), // tombstone
        change_event("c", three, Some(2), t + 4000),
        change_event("u", three, Some(4), t + 4000),
    ];
    (events, 6)
}

#[test]
fn deltalake_polars_and_duckdb_read_the_s3_lake_as_examflow_does() {
    let Some(lake) = S3Lake::new("deltalake_polars_and_duckdb_read_the_s3_lake_as_examflow_does")
    else {
        return;
    };
    let started = Instant::now();
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // Compaction every 8 commits with new rows; what it replaces stays (vacuum keeps files
    // for an hour), so a reader that ignored the log's `remove` actions would count twice.
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        format!(
            "{}[kafka]\nsession_timeout_ms = 6000\n\n[ingest]\nhousekeeping_after_commits = 8\n",
            lake.config()
        ),
    )
    .unwrap();

    // Attempts (with replays) and change events into the bucket through one ingest, in
    // bursts that each get a commit of their own: the tables' logs pass a checkpoint (every
    // 20 versions) and hold compactions, as a lake that has run a while does.
    let attempts_topic = unique("exams-engines");
    let changes_topic = format!("{}.exams.score", unique("cdc-engines"));
    create_topic(&brokers, &attempts_topic, 2);
    create_topic(&brokers, &changes_topic, 1);
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, ATTEMPTS, 31, 0.1, "lines");
    let documents = read_attempts(&file);
    let (attempts, questions, _) = expected_counts(&documents);
    let mut ingest = IngestProcess::start_with_config(
        &IngestOptions {
            data_dir: &data_dir,
            brokers: &brokers,
            topics: &[&attempts_topic, &changes_topic],
            group: &unique("engines"),
            commit_interval_ms: 200,
            log_name: "ingest.log",
        },
        &config,
    );
    let lines = read_keyed_lines(&file);
    assert!(lines.len() > attempts, "the file holds replays");
    let (events, changes) = change_events();
    let never = AtomicBool::new(false);
    let mut produced = 0;
    for (i, burst) in lines.chunks(lines.len().div_ceil(BURSTS)).enumerate() {
        produce_lines(
            &brokers,
            &attempts_topic,
            burst,
            burst.len(),
            Duration::ZERO,
            &never,
        );
        produced += burst.len();
        if i == BURSTS / 2 {
            produce(&brokers, &changes_topic, &events);
        }
        let want = expected_counts(&documents[..produced]).0 as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed_rows(&ingest.log_text(), "attempts") < want {
            assert!(
                Instant::now() < deadline && ingest.is_running(),
                "burst {i}: {want} attempts not committed\n{}",
                tail(&ingest.log_text(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let progress = "SELECT (SELECT count(*) FROM attempts) AS attempts, \
        (SELECT count(*) FROM attempt_questions) AS questions, \
        (SELECT count(*) FROM score_changes) AS changes";
    let want = json!([{"attempts": attempts, "questions": questions, "changes": changes}]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = sql_with(Some(&config), &data_dir, progress);
    while Value::Array(seen.clone()) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        seen = sql_with(Some(&config), &data_dir, progress);
    }
    assert_eq!(
        Value::Array(seen),
        want,
        "the ingest did not fill the lake\n{}",
        tail(&ingest.log_text(), 40)
    );
    ingest.stop();
    let ingested = started.elapsed();

    // The log the engines replay: many entries, a checkpoint, compactions whose replaced
    // files are still in the bucket.
    let log_keys = lake.keys("lake/attempts/_delta_log/");
    let entries = log_keys.iter().filter(|k| k.ends_with(".json")).count();
    let checkpoints = log_keys
        .iter()
        .filter(|k| k.ends_with(".checkpoint.parquet"))
        .count();
    let objects = lake
        .keys("lake/attempts/")
        .iter()
        .filter(|k| !k.contains("/_delta_log/") && k.ends_with(".parquet"))
        .count();
    let compactions = ingest
        .log_text()
        .lines()
        .filter(|l| l.contains(" housekeeping") && l.contains("table=\"attempts\""))
        .count();
    assert!(
        entries > 20 && checkpoints > 0 && compactions > 0,
        "attempts: {entries} log entries, {checkpoints} checkpoints, {compactions} compactions\n{}",
        tail(&ingest.log_text(), 40)
    );

    let examflow = Numbers::from_examflow(&config, &data_dir);
    assert_eq!(examflow.attempts, attempts as i64);
    assert_eq!(examflow.distinct_keen_ids, attempts as i64);
    assert!(examflow.exams.len() > 1, "{examflow:?}");
    assert_eq!(
        (examflow.current_scores, examflow.current_score_sum),
        (2, 7),
        "{examflow:?}"
    );

    // `examflow report` offline, from the bucket: the two current results of exam "rust"
    // (both of one student: every attempt counts with --attempts all).
    let report = Command::new(env!("CARGO_BIN_EXE_examflow"))
        .arg("--config")
        .arg(&config)
        .args(["report", "--exam", "rust", "--format", "json", "-o", "-"])
        .args(["--attempts", "all"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["summary"]["results"], 2, "{report}");

    // The same numbers from the other engines, reading the bucket themselves.
    let daft = std::env::var("EXAMFLOW_TEST_DAFT").is_ok_and(|v| v == "1");
    let engines = if daft {
        "deltalake,polars,duckdb,daft"
    } else {
        "deltalake,polars,duckdb"
    };
    let script = repo_root().join("scripts/other-engines");
    let mut command = Command::new(&script);
    if !daft {
        command.arg("--no-daft");
    }
    let engines_started = Instant::now();
    let out = command
        .args(["--lake-uri", &lake.uri, "--endpoint", &lake.endpoint])
        .args(["--engines", engines])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "scripts/other-engines printed no report (exit {:?}): it installs duckdb, deltalake, \
             polars and pyarrow from PyPI into a venv of its own, so it needs PyPI the first \
             time\nstdout:\n{stdout}\nstderr:\n{}",
            out.status.code(),
            tail(&stderr, 40)
        )
    });

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for engine in engines.split(',') {
        let result = &report["engines"][engine];
        if let Some(error) = result["error"].as_str() {
            // The error's last lines say what went wrong (a Ray traceback is long).
            failures.push(format!("{engine} failed: {}", tail(error, 12)));
            continue;
        }
        match Numbers::from_engine(&result["numbers"]) {
            Ok(numbers) if numbers == examflow => summary.push(format!(
                "{engine} {} {:.1} s",
                result["version"].as_str().unwrap_or("?"),
                result["seconds"].as_f64().unwrap_or(f64::NAN)
            )),
            Ok(numbers) => failures.push(format!(
                "{engine} counts differently:\n  {engine}: {numbers:?}\n  examflow: {examflow:?}"
            )),
            Err(e) => failures.push(format!("{engine} answered {result}: {e}")),
        }
    }
    assert!(
        failures.is_empty() && out.status.success(),
        "{}\nexit {:?}\nstderr:\n{}",
        failures.join("\n"),
        out.status.code(),
        tail(&stderr, 20)
    );
    eprintln!(
        "other engines: {} attempts, {} questions, {} correct, {} exams, {} score changes ({} \
         current scores, {} points) in {} \
         ({entries} log entries, {checkpoints} checkpoints, {compactions} compactions, \
         {objects} Parquet objects in attempts) alike in examflow and {}; ingest {:.1} s, \
         engines {:.1} s",
        examflow.attempts,
        examflow.attempt_questions,
        examflow.user_correct,
        examflow.exams.len(),
        examflow.score_changes,
        examflow.current_scores,
        examflow.current_score_sum,
        lake.uri,
        summary.join(", "),
        ingested.as_secs_f64(),
        engines_started.elapsed().as_secs_f64()
    );
}
