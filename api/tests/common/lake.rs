//! Lake helpers: synthetic attempts, `examflow produce-attempts`, `examflow ingest` as a child
//! process, and `examflow sql` as JSON.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

use super::repo_root;

/// Writes `count` synthetic attempts (data/gen_attempts.py) to `path`.
pub fn generate_attempts(path: &Path, count: usize, seed: u64, duplicate_share: f64, format: &str) {
    let out = Command::new("python3")
        .arg(repo_root().join("data/gen_attempts.py"))
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .args(["--duplicate-share", &duplicate_share.to_string()])
        .args(["--format", format, "--out"])
        .arg(path)
        .output()
        .expect("running data/gen_attempts.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every document of an attempts file (array or lines).
pub fn read_attempts(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).unwrap()
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Expected counts after de-duplication by keen_id: (attempts, questions, options).
pub fn expected_counts(documents: &[Value]) -> (usize, usize, usize) {
    let mut seen = HashSet::new();
    let (mut attempts, mut questions, mut options) = (0, 0, 0);
    for doc in documents {
        if !seen.insert(doc["keen_id"].as_str().unwrap().to_string()) {
            continue;
        }
        attempts += 1;
        if let Some(qs) = doc["sequences"]["questions"].as_array() {
            questions += qs.len();
            options += qs
                .iter()
                .map(|q| q["options"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
        }
    }
    (attempts, questions, options)
}

pub fn produce_attempts(file: &Path, brokers: &str, topic: &str, partitions: i32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_examflow"))
        .arg("produce-attempts")
        .arg(file)
        .args(["--kafka-brokers", brokers, "--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `examflow ingest`.
pub struct IngestProcess {
    pub child: Child,
    pub log: PathBuf,
}

pub struct IngestOptions<'a> {
    pub data_dir: &'a Path,
    pub brokers: &'a str,
    pub topics: &'a [&'a str],
    pub group: &'a str,
    pub commit_interval_ms: u64,
    pub log_name: &'a str,
}

impl IngestProcess {
    pub fn start(o: &IngestOptions<'_>) -> IngestProcess {
        Self::launch(o, None)
    }

    fn launch(o: &IngestOptions<'_>, config: Option<&Path>) -> IngestProcess {
        std::fs::create_dir_all(o.data_dir).unwrap();
        let log = o.data_dir.join(o.log_name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_examflow"));
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("ingest")
            .args(["--kafka-brokers", o.brokers])
            .arg("--topics")
            .arg(o.topics.join(","))
            .arg("--data-dir")
            .arg(o.data_dir)
            .args(["--group", o.group])
            .args(["--commit-interval-ms", &o.commit_interval_ms.to_string()])
            // The default filter, plus the ingest's per-commit lines (`committed_rows`).
            .env(
                "EXAMFLOW_LOG",
                "info,rdkafka=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn,\
                 deltalake_core=warn,datafusion=warn,examflow_ingest::pipeline=debug",
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting examflow ingest");
        IngestProcess { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the final commit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `examflow sql --format json`, parsed.
pub fn sql(data_dir: &Path, query: &str) -> Vec<Value> {
    sql_with(None, data_dir, query)
}

/// [`sql`] reading a configuration file (e.g. one naming an S3 lake).
pub fn sql_with(config: Option<&Path>, data_dir: &Path, query: &str) -> Vec<Value> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_examflow"));
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let out = command
        .args(["sql", "--format", "json", "--data-dir"])
        .arg(data_dir)
        .arg(query)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "examflow sql {query:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A single integer from `SELECT count(*) AS n ...`.
pub fn count(data_dir: &Path, query: &str) -> i64 {
    sql(data_dir, query)[0]["n"].as_i64().unwrap()
}

/// Polls until `count(query)` equals `expected`, returning the last value seen.
pub fn wait_for_count(data_dir: &Path, query: &str, expected: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count(data_dir, query);
        if n == expected || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

// Helpers of api/tests/lake_failures.rs.

/// Writes an ingest configuration file: a short Kafka session timeout (so a killed member
/// leaves its group quickly) and, optionally, a message size limit.
pub fn write_ingest_config(
    path: &Path,
    session_timeout_ms: u32,
    max_message_bytes: Option<usize>,
) -> PathBuf {
    let mut text = format!("[kafka]\nsession_timeout_ms = {session_timeout_ms}\n");
    if let Some(limit) = max_message_bytes {
        text.push_str(&format!("[ingest]\nmax_message_bytes = {limit}\n"));
    }
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

impl IngestProcess {
    /// Like [`IngestProcess::start`], reading `config` (`examflow --config FILE ingest ...`).
    pub fn start_with_config(o: &IngestOptions<'_>, config: &Path) -> IngestProcess {
        Self::launch(o, Some(config))
    }

    /// `examflow --config CONFIG ingest` of `topics` in `group`, committing every
    /// `commit_interval_ms`, logging to `data_dir/log_name`.
    pub fn start_in_group(
        data_dir: &Path,
        brokers: &str,
        topics: &[&str],
        group: &str,
        log_name: &str,
        config: &Path,
        commit_interval_ms: u64,
    ) -> IngestProcess {
        Self::start_with_config(
            &IngestOptions {
                data_dir,
                brokers,
                topics,
                group,
                commit_interval_ms,
                log_name,
            },
            config,
        )
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The lines of a `--format lines` attempts file with their `keen_id` (the message key
/// `examflow produce-attempts` uses), in file order.
pub fn read_keyed_lines(path: &Path) -> Vec<(Option<String>, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let doc: Value = serde_json::from_str(l).unwrap();
            (doc["keen_id"].as_str().map(str::to_string), l.to_string())
        })
        .collect()
}

/// Partitions of `topic` in the last "assigned" line of an ingest log (None: never assigned).
pub fn last_assignment(log: &str, topic: &str) -> Option<Vec<i32>> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("assigned; resuming"))?;
    let needle = format!("\"{topic}\", ");
    let mut partitions: Vec<i32> = line
        .match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &line[at + needle.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    partitions.sort_unstable();
    Some(partitions)
}

/// The rows an ingest process's log says it committed to `table` (its debug `committed`
/// lines), summed over its whole life.
pub fn committed_rows(log: &str, table: &str) -> u64 {
    let needle = format!("table=\"{table}\"");
    log.lines()
        .filter(|l| l.contains(" committed") && l.contains(&needle))
        .filter_map(|l| {
            let rest = &l[l.find(" rows=")? + " rows=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// The exactly-once invariants of the attempt tables, in one `examflow sql` query: counts,
/// duplicate keys, duplicate source positions, and children written from another copy than
/// the one `attempts` holds.
pub fn attempt_invariants(data_dir: &Path) -> Value {
    attempt_invariants_with(None, data_dir)
}

/// [`attempt_invariants`] reading a configuration file.
pub fn attempt_invariants_with(config: Option<&Path>, data_dir: &Path) -> Value {
    let query = "SELECT \
        (SELECT count(*) FROM attempts) AS attempts, \
        (SELECT count(*) - count(DISTINCT keen_id) FROM attempts) AS duplicate_keen_ids, \
        (SELECT count(*) FROM attempt_questions) AS questions, \
        (SELECT count(*) FROM attempt_options) AS options, \
        (SELECT count(*) FROM (SELECT source_partition, source_offset FROM attempts \
            GROUP BY source_partition, source_offset HAVING count(*) > 1) d) AS duplicate_positions, \
        (SELECT count(*) FROM (SELECT keen_id, question_index FROM attempt_questions \
            GROUP BY keen_id, question_index HAVING count(*) > 1) d) AS duplicate_questions, \
        (SELECT count(*) FROM (SELECT keen_id, question_index, option_index FROM attempt_options \
            GROUP BY keen_id, question_index, option_index HAVING count(*) > 1) d) AS duplicate_options, \
        (SELECT count(*) FROM attempt_questions q LEFT JOIN attempts a \
            ON q.keen_id = a.keen_id AND q.source_partition = a.source_partition \
            AND q.source_offset = a.source_offset WHERE a.keen_id IS NULL) AS orphan_questions, \
        (SELECT count(*) FROM attempt_options o LEFT JOIN attempts a \
            ON o.keen_id = a.keen_id AND o.source_partition = a.source_partition \
            AND o.source_offset = a.source_offset WHERE a.keen_id IS NULL) AS orphan_options, \
        (SELECT count(*) FROM dead_letters) AS dead_letters";
    sql_with(config, data_dir, query).remove(0)
}

/// What [`attempt_invariants`] must return after every attempt of a file arrived once.
pub fn expected_invariants(expected: (usize, usize, usize), dead_letters: usize) -> Value {
    serde_json::json!({
        "attempts": expected.0, "duplicate_keen_ids": 0, "questions": expected.1,
        "options": expected.2, "duplicate_positions": 0, "duplicate_questions": 0,
        "duplicate_options": 0, "orphan_questions": 0, "orphan_options": 0,
        "dead_letters": dead_letters,
    })
}

/// Polls [`attempt_invariants`] until it equals `expected`, returning the last value seen.
pub fn wait_for_invariants(data_dir: &Path, expected: &Value, timeout: Duration) -> Value {
    wait_for_invariants_with(None, data_dir, expected, timeout)
}

/// [`wait_for_invariants`] reading a configuration file.
pub fn wait_for_invariants_with(
    config: Option<&Path>,
    data_dir: &Path,
    expected: &Value,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = attempt_invariants_with(config, data_dir);
        if &seen == expected || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last `lines` lines of a log, for failure messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Produces keyed lines with one producer, `chunk` at a time with `pause` between chunks,
/// until all are sent (or `stop` is set). Returns how many were acknowledged.
pub fn produce_lines(
    brokers: &str,
    topic: &str,
    lines: &[(Option<String>, String)],
    chunk: usize,
    pause: Duration,
    stop: &AtomicBool,
) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut sent = 0;
    for part in lines.chunks(chunk) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for (key, line) in part {
            let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(line);
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        sent += part.len();
        std::thread::sleep(pause);
    }
    sent
}

/// Waits until the last assignments in the logs of `processes` split `partitions` between
/// them, every process owning at least one; returns each one's partitions.
pub fn wait_for_split(
    processes: &[&IngestProcess],
    topic: &str,
    partitions: usize,
    timeout: Duration,
) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        let owned: Vec<Vec<i32>> = processes
            .iter()
            .map(|p| last_assignment(&p.log_text(), topic).unwrap_or_default())
            .collect();
        let mut all: Vec<i32> = owned.iter().flatten().copied().collect();
        all.sort_unstable();
        let complete = all == (0..partitions as i32).collect::<Vec<_>>();
        if (complete && owned.iter().all(|o| !o.is_empty())) || Instant::now() > deadline {
            return owned;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
