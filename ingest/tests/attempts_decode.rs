//! The attempts decoder on synthetic data from `data/gen_attempts.py`: every document
//! decodes, row counts match the documents, stated counts agree with the questions, and the
//! committed sample is what the generator prints. Also a speed check (ignored by default):
//!
//! ```text
//! cargo test --release -p examflow-ingest --test attempts_decode -- --ignored --nocapture
//! ```

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use examflow_ingest::attempts::{Attempt, AttemptBatchBuilder, DedupKey};
use examflow_ingest::source::SourcePosition;
use serde_json::Value;

/// The folder holding `data/gen_attempts.py` (the workspace root).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("data/gen_attempts.py").is_file())
        .unwrap_or_else(|| {
            panic!(
                "data/gen_attempts.py not found above {}",
                manifest.display()
            )
        })
        .to_path_buf()
}

/// Runs the generator; `None` (with a printed reason) when there is no `python3`.
fn generate(args: &[&str]) -> Option<Vec<u8>> {
    let root = workspace_root();
    let output = match Command::new("python3")
        .arg(root.join("data/gen_attempts.py"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("SKIPPED: cannot run python3 for data/gen_attempts.py: {e}");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "gen_attempts.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(output.stdout)
}

fn messages(lines: &[u8]) -> Vec<&[u8]> {
    lines
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .collect()
}

fn source(offset: usize) -> SourcePosition<'static> {
    SourcePosition {
        topic: "attempts",
        partition: 0,
        offset: i64::try_from(offset).unwrap(),
        ingested_at_us: 1_700_000_000_000_000,
    }
}

fn i32s(batch: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Int32Type>()
        .iter()
        .collect()
}

#[test]
fn generated_attempts_decode_with_consistent_counts() {
    let Some(out) = generate(&[
        "--count",
        "2000",
        "--seed",
        "7",
        "--format",
        "lines",
        "--duplicate-share",
        "0.05",
    ]) else {
        return;
    };
    let messages = messages(&out);
    assert_eq!(messages.len(), 2100);

    let mut builder = AttemptBatchBuilder::new();
    let (mut questions, mut options, mut scores) = (0, 0, Vec::new());
    let mut keys = std::collections::HashSet::new();
    for (offset, message) in messages.iter().enumerate() {
        let attempt = Attempt::parse(message).unwrap_or_else(|e| panic!("message {offset}: {e}"));
        keys.insert(attempt.key(DedupKey::KeenId).unwrap().to_owned());
        builder.append(&attempt, &source(offset));

        // The expectations, from a plain DOM parse of the same document.
        let doc: Value = serde_json::from_slice(message).unwrap();
        let qs = doc["sequences"]["questions"].as_array().unwrap();
        questions += qs.len();
        options += qs
            .iter()
            .map(|q| q["options"].as_array().unwrap().len())
            .sum::<usize>();
        let correct = qs.iter().filter(|q| q["user_result"] == "correct").count();
        scores.push(Some(i32::try_from(correct).unwrap()));
    }
    assert_eq!(
        keys.len(),
        2000,
        "distinct keen_ids: replays repeat their original's key"
    );

    let batches = builder.finish();
    let (a, q, o) = (&batches.attempts, &batches.questions, &batches.options);
    assert_eq!(
        (a.num_rows(), q.num_rows(), o.num_rows()),
        (messages.len(), questions, options)
    );
    assert_eq!(i32s(a, "score"), scores);

    let question_count = i32s(a, "question_count");
    let [total, correct, incorrect, incomplete, submitted, unanswered] = [
        "count_total",
        "count_correct",
        "count_incorrect",
        "count_incomplete",
        "count_submitted",
        "count_unanswered",
    ]
    .map(|name| i32s(a, name));
    let all_correct = a.column_by_name("count_all_correct").unwrap().as_boolean();
    let mut without_counts = 0;
    for i in 0..a.num_rows() {
        let Some(t) = total[i] else {
            without_counts += 1;
            assert!(correct[i].is_none() && all_correct.is_null(i));
            continue;
        };
        assert_eq!(Some(t), question_count[i], "row {i}");
        assert_eq!(
            correct[i].unwrap() + incorrect[i].unwrap() + incomplete[i].unwrap(),
            t,
            "row {i}"
        );
        assert_eq!(submitted[i].unwrap() + unanswered[i].unwrap(), t, "row {i}");
        assert_eq!(all_correct.value(i), correct[i] == Some(t), "row {i}");
        // Questions without user_* keys are in the counts but never scored correct.
        assert!(scores[i] <= correct[i], "row {i}");
    }
    assert!(
        (10..=100).contains(&without_counts),
        "{without_counts} attempts without counts"
    );

    // Question rows add up to the attempts' question counts, option rows to option counts.
    let sum = |v: Vec<Option<i32>>| v.into_iter().map(|x| i64::from(x.unwrap())).sum::<i64>();
    assert_eq!(sum(question_count), i64::try_from(questions).unwrap());
    assert_eq!(
        sum(i32s(q, "option_count")),
        i64::try_from(options).unwrap()
    );
}

#[test]
fn committed_sample_is_the_generators_output_and_decodes() {
    let path = workspace_root().join("data/attempts/sample-300.json");
    let committed = std::fs::read(&path).unwrap();
    if let Some(fresh) = generate(&["--count", "300", "--seed", "1", "--format", "array"]) {
        assert!(
            fresh == committed,
            "{} is stale: regenerate it (see data/attempts/README.md)",
            path.display()
        );
    }
    let docs: Vec<Value> = serde_json::from_slice(&committed).unwrap();
    assert_eq!(docs.len(), 300);
    let mut builder = AttemptBatchBuilder::new();
    for (offset, doc) in docs.iter().enumerate() {
        let payload = serde_json::to_vec(doc).unwrap();
        builder.append(&Attempt::parse(&payload).unwrap(), &source(offset));
    }
    let batches = builder.finish();
    assert_eq!(batches.attempts.num_rows(), 300);
    let certification = batches.attempts.column_by_name("certification").unwrap();
    assert!(
        certification.null_count() > 0,
        "some documents lack certification"
    );
}

#[test]
#[ignore = "speed check; run in release with --ignored --nocapture"]
fn decode_speed() {
    let Some(out) = generate(&["--count", "20000", "--seed", "3", "--format", "lines"]) else {
        return;
    };
    let messages = messages(&out);
    let bytes: usize = messages.iter().map(|m| m.len()).sum();
    let mb = bytes as f64 / 1e6;
    let best = |run: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed()
            })
            .min()
            .unwrap_or(Duration::MAX)
    };
    let parse_only = best(&|| {
        for message in &messages {
            black_box(Attempt::parse(black_box(message)).unwrap());
        }
    });
    let to_batches = best(&|| {
        let mut builder = AttemptBatchBuilder::new();
        for (offset, message) in messages.iter().enumerate() {
            builder.append(&Attempt::parse(message).unwrap(), &source(offset));
            if builder.rows() == 5000 {
                black_box(builder.finish());
            }
        }
        black_box(builder.finish());
    });
    eprintln!(
        "{} attempts, {mb:.1} MB: parse {:.0} MB/s; parse + append + finish (batches of 5000) {:.0} MB/s, {:.0} attempts/s",
        messages.len(),
        mb / parse_only.as_secs_f64(),
        mb / to_batches.as_secs_f64(),
        messages.len() as f64 / to_batches.as_secs_f64(),
    );
}
