//! The notebooks (notebooks/*.ipynb) run headless against data this test makes: synthetic
//! attempts written straight into the lake, results submitted over HTTP to the sample
//! banks, two calibrations; then `scripts/run-notebooks` executes every notebook against
//! the real server and fails when a cell fails. The executed notebooks stay in the test's
//! temporary directory (the path is printed).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, ServerOptions, repo_root, sample_banks};
use serde_json::{Value, json};

/// Synthetic attempts written into the lake.
const ATTEMPTS: usize = 400;
/// Results of the calibrated exam before the first and the second calibration.
const FIRST_RESULTS: usize = 160;
const SECOND_RESULTS: usize = 80;
/// Results of a second exam (some students take it twice).
const OTHER_RESULTS: usize = 40;
const EXAM: &str = "intro-statistics";
const OTHER_EXAM: &str = "world-geography";

/// A deterministic stream of uniform numbers in [0, 1) (xorshift64).
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f64 {
        (-2.0 * (1.0 - self.next()).ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()
    }
}

/// Checks that the notebooks' Python packages are importable; panics saying which are
/// missing and how to install them.
fn require_python_packages() {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/run-notebooks"))
        .arg("--check")
        .output()
        .expect("running python3 (needed for the notebooks)");
    assert!(
        out.status.success(),
        "the notebooks need Python packages that are not installed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decodes every attempt of `file` with the ingest's decoder and commits them to the lake of
/// `data_dir` as the Kafka ingest would (two partitions of topic `exams`, three commits per
/// table, each with its transaction actions). Returns the number of attempts.
async fn write_attempts_to_lake(file: &Path, data_dir: &Path) -> usize {
    use examflow_ingest::attempts::{Attempt, AttemptBatchBuilder};
    use examflow_ingest::lake::Lake;
    use examflow_ingest::source::SourcePosition;

    let documents = common::lake::read_attempts(file);
    let payloads: Vec<Vec<u8>> = documents
        .iter()
        .map(|d| serde_json::to_vec(d).unwrap())
        .collect();
    let lake = Lake::open(data_dir).await.unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut next_offset = [0i64; 2];
    let mut index = 0i32;
    for chunk in payloads.chunks(payloads.len().div_ceil(3)) {
        let mut builder = AttemptBatchBuilder::new();
        let mut positions = BTreeMap::new();
        for payload in chunk {
            let attempt = Attempt::parse(payload).expect("a generated attempt decodes");
            let partition = index % 2;
            index += 1;
            let offset = next_offset[partition as usize];
            next_offset[partition as usize] += 1;
            builder.append(
                &attempt,
                &SourcePosition {
                    topic: "exams",
                    partition,
                    offset,
                    ingested_at_us: now_us,
                },
            );
            positions.insert(("exams".to_string(), partition), offset);
        }
        let batches = builder.finish();
        // `attempts` first, then its child tables, as the ingest commits them.
        for (table, batch) in [
            (&lake.attempts, batches.attempts),
            (&lake.attempt_questions, batches.questions),
            (&lake.attempt_options, batches.options),
        ] {
            table.push_tail(batch);
            let report = table
                .commit_tail("examflow-ingest", &positions, 1)
                .await
                .unwrap();
            assert!(report.version.is_some(), "{}: {report:?}", table.name());
        }
    }
    documents.len()
}

/// Signs a student in with the dev login and submits answers: for each question the right
/// option with probability P(θ) of a 2PL item, else a wrong one.
async fn submit_results(
    server: &Server,
    exam: &str,
    students: impl Iterator<Item = String>,
    rng: &mut Uniform,
) -> usize {
    let text = std::fs::read_to_string(sample_banks().join(format!("{exam}.json"))).unwrap();
    let bank: Vec<Value> = serde_json::from_str(&text).unwrap();
    let n = bank.len();
    let mut submitted = 0;
    for email in students {
        let (status, login) = server
            .post("/api/dev-login", None, &json!({ "email": email }))
            .await;
        assert_eq!(status, 200, "{login}");
        let token = login["token"].as_str().unwrap().to_string();
        let theta = rng.normal();
        let answers: Vec<String> = bank
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let b = -1.5 + 3.0 * i as f64 / (n - 1) as f64;
                let a = 0.8 + 0.8 * ((i * 7) % n) as f64 / n as f64;
                let correct = q["correct_answer"].as_str().unwrap();
                if rng.next() < 1.0 / (1.0 + (-a * (theta - b)).exp()) {
                    return correct.to_string();
                }
                let wrong: Vec<&str> = q["options"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap())
                    .filter(|o| *o != correct)
                    .collect();
                wrong[(rng.next() * wrong.len() as f64) as usize].to_string()
            })
            .collect();
        let (status, result) = server
            .post(
                &format!("/api/exams/{exam}/submissions"),
                Some(&token),
                &json!({ "answers": answers }),
            )
            .await;
        assert_eq!(status, 201, "{result}");
        submitted += 1;
    }
    submitted
}

async fn calibrate(server: &Server, token: &str, expected_version: i64) -> Value {
    let (status, calibration) = server
        .post(
            &format!("/api/exams/{EXAM}/calibrate"),
            Some(token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{calibration}");
    assert_eq!(calibration["version"], expected_version, "{calibration}");
    let items = calibration["items"].as_array().unwrap();
    assert!(
        items.iter().any(|i| i["provisional"] == false),
        "no item was fitted: {calibration}"
    );
    calibration
}

async fn sql_count(server: &Server, token: &str, sql: &str) -> Option<u64> {
    let (status, rows) = server
        .post("/api/sql", Some(token), &json!({ "sql": sql }))
        .await;
    (status == 200).then(|| rows[0]["n"].as_u64()).flatten()
}

#[tokio::test]
async fn notebooks_run_against_the_server_and_the_lake() {
    require_python_packages();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("examflow-notebooks-")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    let executed = dir.join("executed");

    // Attempts: generated, then decoded and committed to the lake before the server starts.
    let attempts_file = dir.join("attempts.json");
    common::lake::generate_attempts(&attempts_file, ATTEMPTS, 7, 0.0, "array");
    assert_eq!(
        write_attempts_to_lake(&attempts_file, &data).await,
        ATTEMPTS
    );

    let config = dir.join("examflow-test.toml");
    std::fs::write(&config, "[adaptive]\ncalibrate_interval_secs = 0\n").unwrap();
    let mut options = ServerOptions::new(&data);
    options.config_file = Some(config);
    let server = Server::start(options);
    let educator = server.token("notebooks@example.com", "educator");

    // Results over HTTP, calibrated twice, and a second exam with retakes.
    let mut rng = Uniform(0x2545_f491_4f6c_dd1d);
    let mut results = submit_results(
        &server,
        EXAM,
        (0..FIRST_RESULTS).map(|i| format!("student{i}@example.com")),
        &mut rng,
    )
    .await;
    calibrate(&server, &educator, 1).await;
    results += submit_results(
        &server,
        EXAM,
        (FIRST_RESULTS..FIRST_RESULTS + SECOND_RESULTS).map(|i| format!("student{i}@example.com")),
        &mut rng,
    )
    .await;
    calibrate(&server, &educator, 2).await;
    results += submit_results(
        &server,
        OTHER_EXAM,
        (0..OTHER_RESULTS).map(|i| format!("student{}@example.com", i % (OTHER_RESULTS - 10))),
        &mut rng,
    )
    .await;
    assert_eq!(results, FIRST_RESULTS + SECOND_RESULTS + OTHER_RESULTS);

    // The embedded outbox feeds the results into the lake within about a second.
    let fed = common::eventually(Duration::from_secs(60), || async {
        let scores = sql_count(&server, &educator, "SELECT count(*) AS n FROM scores").await?;
        (scores == results as u64).then_some(())
    })
    .await;
    assert!(
        fed.is_some(),
        "results did not reach the lake\n{}",
        server.log()
    );
    // The Delta table itself (not just the in-memory tail) holds every change event.
    let committed = common::eventually(Duration::from_secs(60), || async {
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, polars as pl; \
                 print(pl.read_delta(sys.argv[1]).height)",
            )
            .arg(data.join("lake/score_changes"))
            .output()
            .ok()?;
        let rows: usize = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (rows == results).then_some(())
    })
    .await;
    assert!(
        committed.is_some(),
        "score_changes was not committed\n{}",
        server.log()
    );
    let setup = started.elapsed();

    let out = Command::new("python3")
        .arg(repo_root().join("scripts/run-notebooks"))
        .arg(&executed)
        .args(["--timeout", "240"])
        .env("EXAMFLOW_URL", &server.base)
        .env("EXAMFLOW_TOKEN", &educator)
        .env("EXAMFLOW_DATA_DIR", &data)
        .env("EXAMFLOW_ATTEMPTS_FILE", &attempts_file)
        .env("EXAMFLOW_EXAM", EXAM)
        .env("EXAMFLOW_EXPECT_ATTEMPTS", ATTEMPTS.to_string())
        .env("EXAMFLOW_EXPECT_RESULTS", results.to_string())
        .env("MPLBACKEND", "Agg")
        .output()
        .expect("running scripts/run-notebooks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "a notebook failed (executed copies in {}):\n{stdout}\n{stderr}\nserver log:\n{}",
        executed.display(),
        server.log()
    );

    // Every notebook was executed and drew its plots.
    let notebooks: Vec<_> = std::fs::read_dir(repo_root().join("notebooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ipynb"))
        .collect();
    assert!(notebooks.len() >= 3, "{notebooks:?}");
    for notebook in &notebooks {
        let name = notebook.file_name().unwrap();
        // The committed notebooks carry no outputs.
        let committed: Value =
            serde_json::from_str(&std::fs::read_to_string(notebook).unwrap()).unwrap();
        for cell in committed["cells"].as_array().unwrap() {
            if cell["cell_type"] == "code" {
                assert!(
                    cell["outputs"].as_array().is_some_and(Vec::is_empty)
                        && cell["execution_count"].is_null(),
                    "{name:?} is committed with outputs: clear them (see notebooks/README.md)"
                );
            }
        }
        let copy: Value =
            serde_json::from_str(&std::fs::read_to_string(executed.join(name)).unwrap()).unwrap();
        let code_cells: Vec<&Value> = copy["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["cell_type"] == "code")
            .collect();
        assert!(
            code_cells.iter().all(|c| c["execution_count"].is_u64()),
            "{name:?}: a code cell did not run"
        );
        let stem = notebook.file_stem().unwrap();
        let figures = std::fs::read_dir(executed.join("figures").join(stem))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(figures > 0, "{name:?} saved no figure");
    }
    // The data is no longer needed; the executed notebooks (and their figures) stay.
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "notebooks test: {:.1} s (setup {:.1} s); executed notebooks in {}",
        started.elapsed().as_secs_f64(),
        setup.as_secs_f64(),
        executed.display()
    );
}
