//! Failure tests of the lake ingest (issue 5) against the real broker: SIGKILL under load, a
//! broker restart mid-stream, ten thousand malformed messages, and two processes sharing one
//! consumer group and one lake.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::kafka::{KeyValue, OwnBroker, Record, create_topic, free_port, produce, test_brokers};
use common::lake::{
    IngestOptions, IngestProcess, committed_rows, expected_counts, expected_invariants,
    generate_attempts, last_assignment, produce_lines, read_attempts, read_keyed_lines, sql, tail,
    wait_for_count, wait_for_invariants, wait_for_split, write_ingest_config,
};
use common::unique;
use rdkafka::ClientConfig;
use serde_json::{Value, json};

/// A small deterministic generator (xorshift64*), so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn seed() -> u64 {
    std::env::var("EXAMFLOW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// The number of commits (`NNN.json` files) in a table's Delta log.
fn delta_versions(data_dir: &Path, table: &str) -> usize {
    std::fs::read_dir(data_dir.join("lake").join(table).join("_delta_log"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Every log file of a data directory (name and last lines), for failure messages.
fn all_logs(data_dir: &Path, lines: usize) -> String {
    let mut names: Vec<_> = std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            format!("==== {} ====\n{}", p.display(), tail(&text, lines))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines of every log of a data directory where examflow reports an error, or a panic.
/// (librdkafka's own errors, e.g. "connection refused" while the broker is down, and the
/// delta kernel's "No files in log segment" when it probes a table not created yet, are
/// expected and not counted.)
fn log_problems(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data_dir).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let examflow_error = line.contains("ERROR") && line.contains(" examflow");
            if examflow_error || line.contains("panicked") || line.starts_with("Error:") {
                out.push(format!(
                    "{}: {line}",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    out
}

/// Seconds since midnight of a log line's RFC 3339 timestamp.
fn log_time(line: &str) -> Option<f64> {
    let time = line.get(11..26)?; // HH:MM:SS.ffffff
    let (h, rest) = time.split_once(':')?;
    let (m, s) = rest.split_once(':')?;
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// From a process's "lake ingest started" to its first partition assignment.
fn assigned_after(log: &str) -> Option<Duration> {
    let first = log_time(log.lines().find(|l| l.contains("lake ingest started"))?)?;
    let assigned = log_time(log.lines().find(|l| l.contains("assigned; resuming"))?)?;
    Some(Duration::from_secs_f64((assigned - first).max(0.0)))
}

/// `ingest.max_message_bytes` of the malformed-messages test (valid attempts are under 10 KB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Commit period of every ingest here: short, so kills land before, during and after commits.
const COMMIT_INTERVAL_MS: u64 = 400;

#[test]
fn kill9_ten_times_under_load_loses_and_doubles_nothing() {
    let started = Instant::now();
    let seed = seed();
    eprintln!("seed {seed} (EXAMFLOW_TEST_SEED={seed} repeats the kill moments)");
    let mut rng = Rng(seed);
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let topic = unique("exams-kill9");
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 3000, 11, 0.1, "lines");
    let lines = read_keyed_lines(&file);
    let (attempts, questions, options) = expected_counts(&read_attempts(&file));
    assert!(lines.len() > attempts, "the file holds replays");
    create_topic(&brokers, &topic, 4);
    let config = write_ingest_config(&dir.path().join("ingest.toml"), 6000, None);
    let group = unique("kill9");

    // The producer: 3300 attempts in chunks of 60 over roughly 18 s.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (brokers, topic, stop) = (brokers.clone(), topic.clone(), stop.clone());
        std::thread::spawn(move || {
            produce_lines(
                &brokers,
                &topic,
                &lines,
                60,
                Duration::from_millis(300),
                &stop,
            )
        })
    };
    // Each restart joins a new consumer group: positions come from the lake's transaction
    // actions, not from the group. (In the same group, a restart waits until the killed
    // member's session expires, 6 s, and most kills would land before any assignment.) The
    // last process rejoins the first group, whose stale Kafka offsets the lake's override.
    let start = |group: &str, log_name: &str| {
        IngestProcess::start_in_group(
            &data_dir,
            &brokers,
            &[&topic],
            group,
            log_name,
            &config,
            COMMIT_INTERVAL_MS,
        )
    };
    let mut ingest = start(&group, "ingest-00.log");
    let mut kills = Vec::new();
    for k in 1..=10 {
        let life = Duration::from_millis(rng.range(700, 2500));
        std::thread::sleep(life);
        assert!(
            ingest.is_running(),
            "ingest exited by itself before kill {k}:\n{}",
            all_logs(&data_dir, 40)
        );
        ingest.kill9();
        let assigned = match assigned_after(&ingest.log_text()) {
            Some(after) => format!("assigned {} ms after start", after.as_millis()),
            None => "not yet assigned".to_string(),
        };
        kills.push(format!(
            "kill {k:2} after {:4} ms: attempts table at {:3} commits; {assigned}",
            life.as_millis(),
            delta_versions(&data_dir, "attempts"),
        ));
        let next_group = if k == 10 {
            group.clone()
        } else {
            format!("{group}-{k}")
        };
        ingest = start(&next_group, &format!("ingest-{k:02}.log"));
    }
    let produced = producer.join().unwrap();
    assert_eq!(produced, 3300);
    eprintln!("{}", kills.join("\n"));

    // The last process catches up; everything is there exactly once.
    let expected = expected_invariants((attempts, questions, options), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(60));
    assert_eq!(seen, expected, "logs:\n{}", all_logs(&data_dir, 30));
    // A few more commit intervals change nothing, nor does a clean stop.
    std::thread::sleep(Duration::from_millis(1500));
    ingest.stop();
    let seen = wait_for_invariants(&data_dir, &expected, Duration::ZERO);
    assert_eq!(seen, expected, "logs:\n{}", all_logs(&data_dir, 30));
    let problems = log_problems(&data_dir);
    assert!(
        problems.is_empty(),
        "errors in the logs:\n{}",
        problems.join("\n")
    );
    let replayed = (0..=10)
        .map(|k| {
            std::fs::read_to_string(data_dir.join(format!("ingest-{k:02}.log"))).unwrap_or_default()
        })
        .filter(|log| log.contains("skipped rows the table already held"))
        .count();
    eprintln!(
        "kill9: {attempts} attempts, {questions} questions, {options} options exactly once; \
         {replayed} of 11 processes re-read rows the lake already held; {} attempts commits; {:.1} s",
        delta_versions(&data_dir, "attempts"),
        started.elapsed().as_secs_f64()
    );
}

/// Polls `examflow sql` until `done(count)`, returning the last count.
fn wait_until_count(
    data_dir: &Path,
    query: &str,
    done: impl Fn(i64) -> bool,
    timeout: Duration,
) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = common::lake::count(data_dir, query);
        if done(n) || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until nothing listens on `port` any more (a stopped broker released it).
fn wait_port_free(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} still taken");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn broker_restart_mid_stream_resumes_without_loss() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let port = free_port();
    let broker = OwnBroker::start(&broker_dir, Some(port));
    let brokers = broker.brokers.clone();
    let topic = unique("exams-restart");
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 1500, 12, 0.1, "lines");
    let lines = read_keyed_lines(&file);
    let (attempts, questions, options) = expected_counts(&read_attempts(&file));
    let (first, rest) = lines.split_at(lines.len() / 2);
    create_topic(&brokers, &topic, 4);
    let config = write_ingest_config(&dir.path().join("ingest.toml"), 6000, None);
    let never = AtomicBool::new(false);
    produce_lines(&brokers, &topic, first, 200, Duration::ZERO, &never);

    let mut ingest = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &unique("restart"),
        "ingest.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    // Stop the broker while the first half is still streaming in.
    let before_stop = wait_until_count(
        &data_dir,
        "SELECT count(*) AS n FROM attempts",
        |n| n > 0,
        Duration::from_secs(30),
    );
    assert!(
        before_stop > 0,
        "nothing ingested before the broker stop:\n{}",
        ingest.log_text()
    );
    broker.stop();
    drop(broker);
    let stopped_at = Instant::now();
    wait_port_free(port, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        ingest.is_running(),
        "ingest exited while the broker was down:\n{}",
        ingest.log_text()
    );
    let during_outage = common::lake::count(&data_dir, "SELECT count(*) AS n FROM attempts");
    let broker = OwnBroker::start(&broker_dir, Some(port));
    assert_eq!(broker.brokers, brokers);
    let outage = stopped_at.elapsed();
    produce_lines(&brokers, &topic, rest, 200, Duration::ZERO, &never);

    let expected = expected_invariants((attempts, questions, options), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(60));
    assert_eq!(seen, expected, "log:\n{}", tail(&ingest.log_text(), 60));
    assert!(ingest.is_running(), "ingest exited:\n{}", ingest.log_text());
    ingest.stop();
    let seen = wait_for_invariants(&data_dir, &expected, Duration::ZERO);
    assert_eq!(seen, expected, "log:\n{}", tail(&ingest.log_text(), 60));
    let problems = log_problems(&data_dir);
    assert!(
        problems.is_empty(),
        "errors in the log:\n{}",
        problems.join("\n")
    );
    eprintln!(
        "broker restart: {before_stop} attempts committed before the stop, {during_outage} during \
         the {:.1} s outage, {attempts} at the end, exactly once; {:.1} s",
        outage.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Reads `topic` from the beginning of every partition until `done` says enough or `timeout`,
/// without a consumer group (no rebalance can restart the reading).
fn read_topic(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("dlq-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "262144")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment
            .add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), text(x.value).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                key: text(m.key()),
                value: text(m.payload()),
                headers,
            });
        }
    }
    records
}

/// A header of a consumed record.
fn header(r: &Record, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Where a dead letter came from: its `examflow.source.partition` and `.offset` headers.
fn source_position(r: &Record) -> (String, String) {
    (
        header(r, "examflow.source.partition").unwrap_or_default(),
        header(r, "examflow.source.offset").unwrap_or_default(),
    )
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Kinds of malformed attempt messages: name, how many, and a phrase their reason must hold.
const MALFORMED: &[(&str, usize, &str)] = &[
    ("not-json", 1500, "invalid JSON"),
    ("truncated", 1500, "invalid JSON"),
    ("wrong-type", 1500, "expected"),
    ("not-an-object", 1000, "a JSON object at the top level"),
    ("no-keen-id", 1000, "de-duplication key keen_id"),
    ("empty", 800, "empty"),
    ("tombstone", 200, "empty"),
    ("binary", 1000, "invalid JSON"),
    ("oversize", 50, "larger than the limit"),
    ("repeated-key", 500, "duplicate key"),
    ("trailing-data", 450, "invalid JSON"),
    ("no-sequences", 500, "sequences: required key is missing"),
];

/// The `i`-th malformed message of `kind`, made from a valid `template`: its key
/// (`bad:<kind>:<i>[:<field the reason must name>]`) and payload (None: a tombstone).
fn malformed(kind: &str, i: usize, template: &Value, rng: &mut Rng) -> (String, Option<Vec<u8>>) {
    let mut doc = template.clone();
    doc["keen_id"] = json!(format!("bad-{kind}-{i}"));
    let text = doc.to_string();
    let key = format!("bad:{kind}:{i}");
    let payload = match kind {
        "not-json" => match i % 5 {
            0 => format!("not json #{i}"),
            1 => format!("<attempt id=\"{i}\"/>"),
            2 => format!("keen_id={i}&exam=rust"),
            3 => format!("{{'keen_id': '{i}'}}"),
            _ => format!("{{keen_id: {i}}}"),
        }
        .into_bytes(),
        "truncated" => {
            let cut = 1 + (i * 7919) % (text.len() - 1);
            text.as_bytes()[..cut].to_vec()
        }
        "wrong-type" => {
            let field = match i % 7 {
                0 => {
                    doc["certification"] = json!("maybe");
                    "certification"
                }
                1 => {
                    doc["max_attempts"] = json!("lots");
                    "max_attempts"
                }
                2 => {
                    doc["sequences"]["questions"] = json!("none");
                    "sequences.questions"
                }
                3 => {
                    doc["started_at"] = json!("yesterday");
                    "started_at"
                }
                4 => {
                    doc["sequences"]["attempt"] = json!("first");
                    "sequences.attempt"
                }
                5 => {
                    doc["sequences"]["questions"][0]["options"][0]["checked"] = json!("maybe");
                    "checked"
                }
                _ => {
                    doc["keen_id"] = json!(i);
                    "keen_id"
                }
            };
            return (format!("{key}:{field}"), Some(doc.to_string().into_bytes()));
        }
        "not-an-object" => match i % 5 {
            0 => format!("[{text}]"),
            1 => i.to_string(),
            2 => format!("\"attempt {i}\""),
            3 => "null".to_string(),
            _ => "true".to_string(),
        }
        .into_bytes(),
        "no-keen-id" => {
            match i % 3 {
                0 => {
                    doc.as_object_mut().unwrap().remove("keen_id");
                }
                1 => doc["keen_id"] = Value::Null,
                _ => doc["keen_id"] = json!(""),
            }
            doc.to_string().into_bytes()
        }
        "empty" => Vec::new(),
        "tombstone" => return (key, None),
        "binary" => {
            let len = rng.range(1, 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            bytes[0] |= 0x80; // never a JSON start, never whitespace
            bytes
        }
        "oversize" => {
            doc["padding"] = json!("x".repeat(MAX_MESSAGE_BYTES + 4096));
            doc.to_string().into_bytes()
        }
        "repeated-key" => format!("{{\"keen_id\": \"dup-{i}\", {}", &text[1..]).into_bytes(),
        "trailing-data" => match i % 3 {
            0 => format!("{text} {{\"x\": 1}}"),
            1 => format!("{text} garbage"),
            _ => format!("{text}]"),
        }
        .into_bytes(),
        "no-sequences" => {
            doc.as_object_mut().unwrap().remove("sequences");
            doc.to_string().into_bytes()
        }
        other => panic!("unknown kind {other}"),
    };
    (key, Some(payload))
}

#[test]
fn ten_thousand_malformed_messages_go_to_dead_letters() {
    let started = Instant::now();
    let mut rng = Rng(0x005e_ed0f_bad0);
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let topic = unique("exams-malformed");
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 600, 13, 0.0, "lines");
    let lines = read_keyed_lines(&file);
    let templates: Vec<Value> = read_attempts(&file).split_off(500);
    let valid = &lines[..500];
    assert!(valid.iter().all(|(_, l)| l.len() < MAX_MESSAGE_BYTES / 4));

    // 10,000 malformed messages in a shuffled order of kinds, a valid attempt every 20.
    let mut kinds: Vec<&str> = MALFORMED
        .iter()
        .flat_map(|(kind, n, _)| std::iter::repeat_n(*kind, *n))
        .collect();
    assert_eq!(kinds.len(), 10_000);
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.range(0, i as u64) as usize);
    }
    let mut messages: Vec<KeyValue> = Vec::new();
    let mut bad: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for (i, kind) in kinds.iter().enumerate() {
        if i % 20 == 0 {
            let (key, line) = &valid[i / 20];
            messages.push((
                key.clone().map(String::into_bytes),
                Some(line.clone().into_bytes()),
            ));
        }
        let (key, payload) = malformed(kind, i, &templates[i % templates.len()], &mut rng);
        messages.push((Some(key.clone().into_bytes()), payload.clone()));
        bad.insert(key, payload);
    }
    assert_eq!(bad.len(), 10_000);
    create_topic(&brokers, &topic, 4);
    // A long session: this test kills nothing, and tansu answers no heartbeat while it
    // serves a fetch (see `read_topic`).
    let config = write_ingest_config(
        &dir.path().join("ingest.toml"),
        30_000,
        Some(MAX_MESSAGE_BYTES),
    );
    let mut ingest = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &unique("malformed"),
        "ingest.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    // The ingest creates `<topic>.dlq` before it reads; read it as it fills, while the
    // messages are produced in chunks, as live traffic.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ingest.log_text().contains("lake ingest started") {
        assert!(
            Instant::now() < deadline && ingest.is_running(),
            "ingest did not start:\n{}",
            ingest.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dlq_reader = {
        let (brokers, dlq_topic) = (brokers.clone(), format!("{topic}.dlq"));
        std::thread::spawn(move || {
            // Until every dead letter arrived: a send retried after a time-out may have
            // landed twice (at least once), so count distinct source positions.
            let (mut seen, mut checked) = (HashSet::new(), 0);
            read_topic(&brokers, &dlq_topic, Duration::from_secs(180), |records| {
                for r in &records[checked..] {
                    seen.insert(source_position(r));
                }
                checked = records.len();
                seen.len() >= 10_000
            })
        })
    };
    for chunk in messages.chunks(250) {
        produce(&brokers, &topic, chunk);
        std::thread::sleep(Duration::from_millis(100));
    }

    let wait = Duration::from_secs(90);
    let dead = wait_for_count(
        &data_dir,
        "SELECT count(*) AS n FROM dead_letters",
        10_000,
        wait,
    );
    assert_eq!(dead, 10_000, "log:\n{}", tail(&ingest.log_text(), 60));
    let dead_letters_in = started.elapsed();
    let stored = wait_for_count(&data_dir, "SELECT count(*) AS n FROM attempts", 500, wait);
    assert_eq!(stored, 500, "log:\n{}", tail(&ingest.log_text(), 60));

    // Every dead letter: a malformed message (once), a reason naming what is wrong, the bytes.
    let rows = sql(
        &data_dir,
        "SELECT message_key, reason, payload, payload_bytes FROM dead_letters",
    );
    let mut by_kind: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut reasons: HashMap<String, String> = HashMap::new();
    let mut failures = Vec::new();
    for row in &rows {
        let key = String::from_utf8(unhex(row["message_key"].as_str().unwrap_or(""))).unwrap();
        let reason = row["reason"].as_str().unwrap_or("");
        let parts: Vec<&str> = key.split(':').collect();
        let (kind, phrase) = MALFORMED
            .iter()
            .find(|(k, _, _)| parts.get(1) == Some(k))
            .map(|(k, _, p)| (*k, *p))
            .unwrap_or(("?", "?"));
        let entry = by_kind
            .entry(kind.to_string())
            .or_insert((0, reason.to_string()));
        entry.0 += 1;
        reasons.insert(key.clone(), reason.to_string());
        if !seen.insert(key.clone()) {
            failures.push(format!("{key}: twice in dead_letters"));
        }
        if reason.trim().is_empty() || !reason.contains(phrase) {
            failures.push(format!("{key}: reason {reason:?} lacks {phrase:?}"));
        }
        if let Some(field) = parts.get(3)
            && !reason.contains(field)
        {
            failures.push(format!("{key}: reason {reason:?} does not name {field}"));
        }
        let Some(expected) = bad.get(&key) else {
            failures.push(format!("{key}: not a malformed message"));
            continue;
        };
        let payload = row["payload"].as_str().map(unhex);
        if payload != *expected && !(expected.is_none() && payload.is_none()) {
            failures.push(format!(
                "{key}: payload not kept ({:?} bytes)",
                payload.map(|p| p.len())
            ));
        }
        let length = expected.as_ref().map_or(0, Vec::len) as i64;
        if row["payload_bytes"].as_i64() != Some(length) {
            failures.push(format!(
                "{key}: payload_bytes {} != {length}",
                row["payload_bytes"]
            ));
        }
    }
    let summary: Vec<String> = by_kind
        .iter()
        .map(|(kind, (n, sample))| format!("{kind:>14}: {n:5}  e.g. {sample}"))
        .collect();
    eprintln!("dead letters by kind:\n{}", summary.join("\n"));
    assert!(
        failures.is_empty(),
        "{} problems, first:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
    for (kind, n, _) in MALFORMED {
        assert_eq!(by_kind.get(*kind).map(|e| e.0), Some(*n), "{kind}");
    }

    // The valid attempts all arrived, and the dead letters reached <topic>.dlq with the error.
    let keys = sql(&data_dir, "SELECT keen_id FROM attempts");
    let keys: HashSet<&str> = keys.iter().filter_map(|r| r["keen_id"].as_str()).collect();
    assert!(
        valid
            .iter()
            .all(|(k, _)| keys.contains(k.as_deref().unwrap()))
    );
    let dlq = dlq_reader.join().unwrap();
    let retried = ingest
        .log_text()
        .matches("produce failed; retrying")
        .count();
    eprintln!(
        "dead_letters complete after {:.1} s; {} records read from {topic}.dlq after {:.1} s; \
         {retried} dead-letter sends retried",
        dead_letters_in.as_secs_f64(),
        dlq.len(),
        started.elapsed().as_secs_f64()
    );
    let positions: HashSet<(String, String)> = dlq.iter().map(source_position).collect();
    assert_eq!(
        positions.len(),
        10_000,
        "distinct source positions on {topic}.dlq"
    );
    let without_error = dlq
        .iter()
        .filter(|r| header(r, "examflow.error").is_none_or(|e| e.is_empty()))
        .count();
    assert_eq!(
        without_error, 0,
        "dead letters on {topic}.dlq without examflow.error"
    );
    let other_reason = dlq
        .iter()
        .filter(|r| {
            let key = r.key.clone().unwrap_or_default();
            header(r, "examflow.error") != reasons.get(&key).cloned()
        })
        .count();
    assert_eq!(
        other_reason, 0,
        "examflow.error differs from the dead_letters reason"
    );
    let dlq_keys: HashSet<&str> = dlq.iter().filter_map(|r| r.key.as_deref()).collect();
    assert!(
        bad.keys().all(|k| dlq_keys.contains(k.as_str())),
        "a dead letter is missing from {topic}.dlq"
    );

    // Still alive, and still ingesting.
    assert!(
        ingest.is_running(),
        "ingest exited:\n{}",
        tail(&ingest.log_text(), 60)
    );
    let mut after = templates[0].clone();
    after["keen_id"] = json!(unique("after-the-storm"));
    let key = after["keen_id"].as_str().unwrap().as_bytes().to_vec();
    produce(
        &brokers,
        &topic,
        &[(Some(key), Some(after.to_string().into_bytes()))],
    );
    let stored = wait_for_count(
        &data_dir,
        "SELECT count(*) AS n FROM attempts",
        501,
        Duration::from_secs(30),
    );
    assert_eq!(stored, 501, "log:\n{}", tail(&ingest.log_text(), 60));
    assert!(ingest.is_running());
    ingest.stop();
    assert_eq!(
        common::lake::count(&data_dir, "SELECT count(*) AS n FROM dead_letters"),
        10_000
    );
    eprintln!(
        "malformed: 10000 dead letters, 501 attempts; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn two_processes_in_one_group_share_four_partitions() {
    let started = Instant::now();
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let topic = unique("exams-shared");
    let first = dir.path().join("first.jsonl");
    let second = dir.path().join("second.jsonl");
    generate_attempts(&first, 800, 14, 0.1, "lines");
    generate_attempts(&second, 400, 15, 0.1, "lines");
    create_topic(&brokers, &topic, 4);
    let config = write_ingest_config(&dir.path().join("ingest.toml"), 6000, None);
    let group = unique("shared");
    let mut a = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &group,
        "ingest-a.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    let mut b = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &group,
        "ingest-b.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    let owned = wait_for_split(&[&a, &b], &topic, 4, Duration::from_secs(45));
    assert!(
        owned.iter().all(|o| !o.is_empty()),
        "the two processes did not split the partitions: {owned:?}\n{}",
        all_logs(&data_dir, 30)
    );
    eprintln!(
        "assignment: a {:?}, b {:?} after {:.1} s",
        owned[0],
        owned[1],
        started.elapsed().as_secs_f64()
    );

    let never = AtomicBool::new(false);
    produce_lines(
        &brokers,
        &topic,
        &read_keyed_lines(&first),
        50,
        Duration::from_millis(100),
        &never,
    );
    let mut documents = read_attempts(&first);
    let expected = expected_invariants(expected_counts(&documents), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(60));
    assert_eq!(seen, expected, "logs:\n{}", all_logs(&data_dir, 30));
    // Both wrote, and between them exactly the rows the table holds.
    let now_owned = [
        last_assignment(&a.log_text(), &topic).unwrap_or_default(),
        last_assignment(&b.log_text(), &topic).unwrap_or_default(),
    ];
    if now_owned.to_vec() != owned {
        eprintln!(
            "the assignment moved while producing: now a {:?}, b {:?}",
            now_owned[0], now_owned[1]
        );
    }
    let total = common::lake::count(&data_dir, "SELECT count(*) AS n FROM attempts");
    let by_process = [
        committed_rows(&a.log_text(), "attempts"),
        committed_rows(&b.log_text(), "attempts"),
    ];
    eprintln!(
        "attempts committed: a {}, b {}, table {total}",
        by_process[0], by_process[1]
    );
    assert!(
        by_process.iter().all(|&n| n > 0),
        "one process committed no attempts: {by_process:?}\n{}",
        all_logs(&data_dir, 30)
    );
    assert_eq!(
        by_process.iter().sum::<u64>(),
        total as u64,
        "the processes' commits do not add up to the table"
    );
    assert!(
        a.is_running() && b.is_running(),
        "{}",
        all_logs(&data_dir, 30)
    );

    // b stops (SIGTERM: a final commit, then it leaves the group); a takes over all of b's
    // partitions, and the counts stay exact after more attempts.
    b.stop();
    let stopped_at = Instant::now();
    let owned = wait_for_split(&[&a], &topic, 4, Duration::from_secs(30));
    assert_eq!(
        owned[0],
        vec![0, 1, 2, 3],
        "a did not take over b's partitions within 30 s:\n{}",
        all_logs(&data_dir, 30)
    );
    produce_lines(
        &brokers,
        &topic,
        &read_keyed_lines(&second),
        50,
        Duration::from_millis(100),
        &never,
    );
    documents.extend(read_attempts(&second));
    let expected = expected_invariants(expected_counts(&documents), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(60));
    assert_eq!(seen, expected, "logs:\n{}", all_logs(&data_dir, 30));
    let took_over = stopped_at.elapsed();
    assert_eq!(
        last_assignment(&a.log_text(), &topic),
        Some(vec![0, 1, 2, 3]),
        "a did not take over all partitions:\n{}",
        all_logs(&data_dir, 30)
    );
    // ... resuming them where b left them in the lake, not from the beginning.
    let takeover = a
        .log_text()
        .lines()
        .rfind(|l| l.contains("assigned; resuming"))
        .unwrap_or_default()
        .to_string();
    assert!(
        !takeover.contains("Beginning"),
        "a re-reads partitions b already wrote to the lake: {takeover}"
    );
    assert!(a.is_running(), "{}", all_logs(&data_dir, 30));
    a.stop();
    let seen = wait_for_invariants(&data_dir, &expected, Duration::ZERO);
    assert_eq!(seen, expected);
    assert_eq!(
        committed_rows(&a.log_text(), "attempts") + committed_rows(&b.log_text(), "attempts"),
        common::lake::count(&data_dir, "SELECT count(*) AS n FROM attempts") as u64,
        "the processes' commits do not add up to the table"
    );
    let problems = log_problems(&data_dir);
    assert!(
        problems.is_empty(),
        "errors in the logs:\n{}",
        problems.join("\n")
    );
    eprintln!(
        "two processes: exact counts; a took over and caught up {:.1} s after b stopped; {:.1} s",
        took_over.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Session timeout of the group-membership tests (the ingest's `session.timeout.ms`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

#[test]
fn a_killed_member_is_replaced_within_the_session_timeout_under_load() {
    let started = Instant::now();
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let topic = unique("exams-replace");
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 2400, 17, 0.1, "lines");
    let lines = read_keyed_lines(&file);
    create_topic(&brokers, &topic, 4);
    let config = write_ingest_config(
        &dir.path().join("ingest.toml"),
        SESSION_TIMEOUT.as_millis() as u32,
        None,
    );
    let group = unique("replace");
    let start = |log: &str| {
        IngestProcess::start_in_group(
            &data_dir,
            &brokers,
            &[&topic],
            &group,
            log,
            &config,
            COMMIT_INTERVAL_MS,
        )
    };
    let mut a = start("ingest-a.log");
    let mut b = start("ingest-b.log");
    let owned = wait_for_split(&[&a, &b], &topic, 4, Duration::from_secs(45));
    assert!(
        owned.iter().all(|o| !o.is_empty()),
        "a and b did not split the partitions: {owned:?}\n{}",
        all_logs(&data_dir, 30)
    );

    // Load: 2400 attempts and their replays in chunks of 50 every 200 ms (about 11 s).
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (brokers, topic, stop, lines) = (brokers.clone(), topic.clone(), stop.clone(), lines);
        std::thread::spawn(move || {
            produce_lines(
                &brokers,
                &topic,
                &lines,
                50,
                Duration::from_millis(200),
                &stop,
            )
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    b.kill9();
    let killed_at = Instant::now();
    let mut c = start("ingest-c.log");
    // a and the new member c own all four partitions between them, each at least one.
    let owned = wait_for_split(&[&a, &c], &topic, 4, SESSION_TIMEOUT * 3);
    let covered_after = killed_at.elapsed();
    let mut all: Vec<i32> = owned.iter().flatten().copied().collect();
    all.sort_unstable();
    assert!(
        all == vec![0, 1, 2, 3] && owned.iter().all(|o| !o.is_empty()),
        "a and c do not own the four partitions {:.1} s after b was killed: {owned:?}\n{}",
        covered_after.as_secs_f64(),
        all_logs(&data_dir, 30)
    );
    assert!(
        covered_after <= SESSION_TIMEOUT + Duration::from_secs(5),
        "the partitions were reassigned {:.1} s after the kill (session timeout {} s)",
        covered_after.as_secs_f64(),
        SESSION_TIMEOUT.as_secs()
    );
    let sent = producer.join().unwrap();
    assert_eq!(sent, read_keyed_lines(&file).len());

    // Nothing lost or doubled: b's uncommitted rows are read again from the lake's offsets.
    let expected = expected_invariants(expected_counts(&read_attempts(&file)), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(90));
    assert_eq!(seen, expected, "logs:\n{}", all_logs(&data_dir, 30));
    assert!(
        a.is_running() && c.is_running(),
        "{}",
        all_logs(&data_dir, 30)
    );
    a.stop();
    c.stop();
    let seen = wait_for_invariants(&data_dir, &expected, Duration::ZERO);
    assert_eq!(seen, expected);
    eprintln!(
        "killed member replaced: a {:?}, c {:?} {:.1} s after the kill (session timeout {} s); \
         exact counts; {:.1} s",
        owned[0],
        owned[1],
        covered_after.as_secs_f64(),
        SESSION_TIMEOUT.as_secs(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_torn_last_log_entry_is_set_aside_and_its_rows_ingested_again() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let topic = unique("exams-torn");
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 300, 19, 0.0, "lines");
    create_topic(&brokers, &topic, 2);
    let config = write_ingest_config(&dir.path().join("ingest.toml"), 6000, None);
    let group = unique("torn");
    let start = |log: &str| {
        IngestProcess::start_in_group(
            &data_dir,
            &brokers,
            &[&topic],
            &group,
            log,
            &config,
            COMMIT_INTERVAL_MS,
        )
    };
    let never = AtomicBool::new(false);
    let lines = read_keyed_lines(&file);
    let mut ingest = start("ingest-1.log");
    produce_lines(
        &brokers,
        &topic,
        &lines[..150],
        50,
        Duration::from_millis(400),
        &never,
    );
    let expected_first = expected_invariants(expected_counts(&read_attempts(&file)[..150]), 0);
    let seen = wait_for_invariants(&data_dir, &expected_first, Duration::from_secs(60));
    assert_eq!(seen, expected_first, "{}", all_logs(&data_dir, 30));
    ingest.stop();

    // Power loss in effect: the newest entry of `attempts` cut short.
    let log = data_dir.join("lake/attempts/_delta_log");
    let newest = (0..)
        .map(|v| log.join(format!("{v:020}.json")))
        .take_while(|p| p.exists())
        .last()
        .unwrap();
    let text = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &text[..text.len() * 2 / 3]).unwrap();

    // The ingest starts, sets the entry aside, reads its messages again: exact counts.
    let mut ingest = start("ingest-2.log");
    produce_lines(
        &brokers,
        &topic,
        &lines[150..],
        50,
        Duration::from_millis(100),
        &never,
    );
    let expected = expected_invariants(expected_counts(&read_attempts(&file)), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(60));
    assert_eq!(seen, expected, "{}", all_logs(&data_dir, 30));
    assert!(
        ingest.log_text().contains("torn by an unclean stop"),
        "{}",
        tail(&ingest.log_text(), 30)
    );
    assert!(data_dir.join("lake/attempts/_torn_log").is_dir());
    ingest.stop();
}

/// A rebalance that hands a process back a partition it already had seeks it to the lake's
/// offsets, behind rows still in its uncommitted tail. Those messages come again and must
/// not be stored twice (they were, two copies of one offset in one commit, once commits
/// were slow enough, e.g. on S3).
#[test]
fn a_partition_returned_by_a_rebalance_is_not_stored_twice() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let topic = unique("exams-returned");
    create_topic(&brokers, &topic, 4);
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 200, 31, 0.0, "lines");
    let config = write_ingest_config(&dir.path().join("ingest.toml"), 6000, None);
    let group = unique("returned");
    // Commits far apart: everything a reads stays in its tail across the rebalance.
    let topics = [topic.as_str()];
    let options = |log_name| IngestOptions {
        data_dir: &data_dir,
        brokers: &brokers,
        topics: &topics,
        group: &group,
        commit_interval_ms: 120_000,
        log_name,
    };
    let mut a = IngestProcess::start_with_config(&options("a.log"), &config);
    let owned = wait_for_split(&[&a], &topic, 4, Duration::from_secs(45));
    assert_eq!(owned[0], vec![0, 1, 2, 3], "{}", all_logs(&data_dir, 30));
    let never = AtomicBool::new(false);
    produce_lines(
        &brokers,
        &topic,
        &read_keyed_lines(&file),
        100,
        Duration::ZERO,
        &never,
    );
    std::thread::sleep(Duration::from_secs(3));
    // b joins: a keeps two of its partitions, starting again from the lake (nothing there).
    let mut b = IngestProcess::start_with_config(&options("b.log"), &config);
    let owned = wait_for_split(&[&a, &b], &topic, 4, Duration::from_secs(45));
    assert!(
        owned.iter().all(|o| !o.is_empty()),
        "{owned:?}\n{}",
        all_logs(&data_dir, 30)
    );
    std::thread::sleep(Duration::from_secs(3));
    a.stop();
    b.stop();
    let expected = expected_invariants(expected_counts(&read_attempts(&file)), 0);
    let seen = wait_for_invariants(&data_dir, &expected, Duration::from_secs(10));
    assert_eq!(seen, expected, "{}", all_logs(&data_dir, 30));
}
