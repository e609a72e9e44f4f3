//! Change capture (`examflow cdc`): insert → change event on the Kafka topic, p50/p99, and
//! events per second at saturation, against a bare change-stream reader (pymongo `watch`
//! with `full_document="updateLookup"`, `python/cdc_watch_baseline.py`) on the same server,
//! in one run. Prints a markdown table with ratios examflow / bare reader.
//!
//!     cargo build --release -p examflow -p examflow-benches --bin examflow --bin cdc_latency
//!     target/release/cdc_latency [--latency-docs N] [--rate R] [--saturation-docs M]
//!         [--batch B] [--rounds K] [--snapshot-docs S] [--fetch-wait-ms W] [--python PY]
//!         [--mongodb-uri URI] [--kafka-brokers H:P]
//!
//! Servers: `--mongodb-uri` (or `EXAMFLOW_TEST_MONGODB_URI`), otherwise the harness runs
//! `scripts/mongo-server start DIR` (SecantusDB, a one-member replica set); `--kafka-brokers`
//! (or `EXAMFLOW_TEST_KAFKA_BROKERS`), otherwise `scripts/kafka-broker start DIR` (nisshi).
//! Both are stopped at the end when the harness started them. Each run uses fresh
//! databases, topic prefix and consumer group.
//!
//! Both readers see the same inserts, made by this harness with the Rust driver: documents
//! shaped like a result (~0.5 kB), each stamped with a phase and sequence number. Per round:
//!
//! 1. latency: `--latency-docs` single `insert_one`s paced at `--rate` per second; the
//!    latency of a document is from just before its `insert_one` to the moment the reader
//!    has its event (examflow: the harness's rdkafka consumer polled the message from the
//!    topic; bare reader: pymongo returned the change). Both clocks are CLOCK_REALTIME of
//!    this machine.
//! 2. live saturation: `--saturation-docs` documents by `insert_many` batches of `--batch`,
//!    back to back; events per second from the first to the last event received.
//! 3. backlog drain: the reader is stopped (examflow: SIGTERM, it keeps its position), the
//!    same number of documents is inserted, and the reader is started again from its
//!    position (bare reader: `start_at_operation_time` taken before the inserts); events per
//!    second from the first to the last event: the reader's own rate, without the inserter.
//!
//! Kafka alone, in examflow's slot with examflow stopped: the same numbers of messages of
//! the same shape and size sent to a topic of the same broker with examflow's producer
//! settings (linger 2 ms, acks=all), paced and each awaited for the latency, in batches of
//! 1000 awaited together (as examflow's sink) for the rate, read by the same consumer: the
//! share of examflow's latency that is the Kafka hop itself.
//!
//! examflow runs only during its own phases and the bare reader only during its own, the
//! order alternating between rounds. Every event is checked: missing or repeated documents
//! are reported under the table.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use examflow_benches::{cpu_line, examflow_binary, loadavg, repo_root};
use examflow_ingest::KafkaSettings;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Client, Collection};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

fn args() -> Vec<String> {
    std::env::args().collect()
}

fn arg_str(name: &str) -> Option<String> {
    let a = args();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- servers

/// A server the harness uses: given, or started by a `scripts/` helper and stopped on drop.
struct Server {
    address: String,
    label: String,
    script: &'static str,
    dir: Option<tempfile::TempDir>,
}

impl Server {
    fn get(
        script: &'static str,
        flag: &str,
        env: &str,
        what: &str,
        extra: &[&str],
    ) -> Result<Server> {
        if let Some(address) =
            arg_str(flag).or_else(|| std::env::var(env).ok().filter(|v| !v.trim().is_empty()))
        {
            return Ok(Server {
                label: format!("{what} at {address} (given)"),
                address,
                script,
                dir: None,
            });
        }
        let dir = tempfile::tempdir()?;
        let path = repo_root().join("scripts").join(script);
        let output = Command::new(&path)
            .arg("start")
            .arg(dir.path())
            .args(extra)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", path.display()))?;
        ensure!(output.status.success(), "{} start failed", path.display());
        let address = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        ensure!(!address.is_empty(), "{script} printed no address");
        Ok(Server {
            label: format!("{what} at {address}, started by the harness (`scripts/{script}`)"),
            address,
            script,
            dir: Some(dir),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(repo_root().join("scripts").join(self.script))
                .arg("stop")
                .arg(dir.path())
                .status();
        }
    }
}

// ---------------------------------------------------------------- events

/// One event received by a reader: which document, when (realtime ns).
#[derive(Clone, Copy)]
struct Received {
    seq: i64,
    at_ns: i64,
}

/// What the harness's consumer has read from the topic, by phase.
#[derive(Default)]
struct Topic {
    by_phase: HashMap<String, Vec<Received>>,
    ops: HashMap<String, usize>,
    unparsed: usize,
}

/// Reads the change-event topic on its own thread (low fetch wait), stamping each message
/// when `poll` returns it.
fn start_consumer(
    brokers: &str,
    topics: &[&str],
    stop: Arc<AtomicBool>,
) -> Result<(Arc<Mutex<Topic>>, std::thread::JoinHandle<()>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("cdc-bench-{}", now_ns()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", arg("--fetch-wait-ms", 1).to_string())
        .set("fetch.min.bytes", "1")
        .set("fetch.error.backoff.ms", "5")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .context("creating consumer")?;
    consumer.subscribe(topics)?;
    let seen = Arc::new(Mutex::new(Topic::default()));
    let out = seen.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let at_ns = now_ns();
            let Ok(message) = message else { continue };
            let parsed = message
                .payload()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                .and_then(|v| {
                    let op = v["op"].as_str()?.to_string();
                    let after: Value = serde_json::from_str(v["after"].as_str()?).ok()?;
                    let phase = after["bench_phase"].as_str()?.to_string();
                    let seq = after["bench_seq"].as_i64()?;
                    Some((op, phase, seq))
                });
            let mut t = out.lock().unwrap();
            match parsed {
                Some((op, phase, seq)) => {
                    *t.ops.entry(op).or_default() += 1;
                    t.by_phase
                        .entry(phase)
                        .or_default()
                        .push(Received { seq, at_ns });
                }
                None => t.unparsed += 1,
            }
        }
    });
    Ok((seen, handle))
}

/// Waits until the topic holds `n` distinct documents of `phase` (or `timeout`); returns
/// the first receipt of each document and how many were repeats.
fn wait_topic(
    topic: &Mutex<Topic>,
    phase: &str,
    n: usize,
    timeout: Duration,
) -> (Vec<Received>, usize) {
    let deadline = Instant::now() + timeout;
    loop {
        let events = topic
            .lock()
            .unwrap()
            .by_phase
            .get(phase)
            .cloned()
            .unwrap_or_default();
        let (first, repeats) = dedup(events);
        if first.len() >= n || Instant::now() > deadline {
            return (first, repeats);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// First receipt per document, and how many receipts were repeats.
fn dedup(events: Vec<Received>) -> (Vec<Received>, usize) {
    let total = events.len();
    let mut first: HashMap<i64, Received> = HashMap::new();
    for e in events {
        first.entry(e.seq).or_insert(e);
    }
    let mut v: Vec<Received> = first.into_values().collect();
    v.sort_by_key(|r| r.seq);
    let repeats = total - v.len();
    (v, repeats)
}

// ---------------------------------------------------------------- documents

fn document(phase: &str, seq: i64) -> Document {
    let answers: Vec<Bson> = (0..12)
        .map(|i| Bson::String(format!("answer {} of question {i}", (seq + i) % 4)))
        .collect();
    doc! {
        "exam": "world-geography",
        "email": format!("student{}@example.com", seq % 500),
        "score": (seq % 13) as i32,
        "total": 12,
        "answers": answers,
        "created_at": DateTime::now(),
        "bench_phase": phase,
        "bench_seq": seq,
    }
}

/// `n` single inserts paced at `rate` per second: (seq, start ns, acknowledged ns).
async fn paced_inserts(
    coll: &Collection<Document>,
    phase: &str,
    n: usize,
    rate: usize,
) -> Result<Vec<(i64, i64, i64)>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let d = document(phase, i as i64);
        let t0 = now_ns();
        coll.insert_one(d).await?;
        out.push((i as i64, t0, now_ns()));
    }
    Ok(out)
}

/// `n` documents by `insert_many` batches back to back: (start ns, end ns).
async fn bulk_inserts(
    coll: &Collection<Document>,
    phase: &str,
    n: usize,
    batch: usize,
) -> Result<(i64, i64)> {
    let docs: Vec<Vec<Document>> = (0..n as i64)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|c| c.iter().map(|&s| document(phase, s)).collect())
        .collect();
    let t0 = now_ns();
    for chunk in docs {
        coll.insert_many(chunk).await?;
    }
    Ok((t0, now_ns()))
}

/// The server's cluster time now (`operationTime` of a ping), as `T,I`.
async fn cluster_time(client: &Client) -> Result<String> {
    let reply = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await?;
    match reply.get("operationTime").or_else(|| {
        reply
            .get_document("$clusterTime")
            .ok()
            .and_then(|c| c.get("clusterTime"))
    }) {
        Some(Bson::Timestamp(ts)) => Ok(format!("{},{}", ts.time, ts.increment)),
        _ => bail!("the server reported no cluster time (not a replica set?)"),
    }
}

// ---------------------------------------------------------------- Kafka alone

/// A value shaped like examflow's (op, `after` as a string, a `source` block), of similar
/// size, for the Kafka-alone floor.
fn floor_value(phase: &str, seq: i64) -> (Vec<u8>, Vec<u8>) {
    let after = serde_json::json!({
        "_id": {"$oid": format!("{seq:024x}")},
        "bench_phase": phase,
        "bench_seq": seq,
        "pad": "x".repeat(420),
    })
    .to_string();
    let value = serde_json::json!({
        "before": null, "after": after, "updateDescription": null,
        "source": {"version": "bench", "connector": "mongodb", "name": "bench",
                   "ts_ms": 0, "snapshot": "false", "db": "bench", "sequence": null,
                   "collection": "score", "ord": 1, "lsid": null, "txnNumber": null,
                   "wallTime": 0},
        "op": "c", "ts_ms": 0, "transaction": null,
    })
    .to_string();
    let key = serde_json::json!({"id": format!("{{\"$oid\":\"{seq:024x}\"}}")}).to_string();
    (key.into_bytes(), value.into_bytes())
}

/// `n` sends paced at `rate` per second, each awaited (acks=all): (seq, start ns, acked ns).
async fn paced_sends(
    producer: &FutureProducer,
    topic: &str,
    phase: &str,
    n: usize,
    rate: usize,
) -> Result<Vec<(i64, i64, i64)>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let (key, value) = floor_value(phase, i as i64);
        let t0 = now_ns();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
        out.push((i as i64, t0, now_ns()));
    }
    Ok(out)
}

/// `n` sends in batches of 1000 awaited together (as examflow's sink delivers a batch):
/// (start ns, all acked ns).
async fn bulk_sends(
    producer: &FutureProducer,
    topic: &str,
    phase: &str,
    n: usize,
) -> Result<(i64, i64)> {
    let records: Vec<_> = (0..n as i64).map(|s| floor_value(phase, s)).collect();
    let t0 = now_ns();
    for chunk in records.chunks(1000) {
        let sends = chunk.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e)?;
        }
    }
    Ok((t0, now_ns()))
}

// ---------------------------------------------------------------- readers

/// The `examflow cdc` process.
struct Examflow {
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
}

impl Examflow {
    fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(examflow_binary()?)
            .args(&self.args)
            .env("EXAMFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting examflow cdc")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM (examflow gives its lease up and keeps its position), then waits.
    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("examflow cdc did not exit within 15 s of SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Examflow {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `python/cdc_watch_baseline.py`, started and waited for `ready` (the stream is open).
struct Watcher {
    child: Child,
}

impl Watcher {
    fn start(
        python: &str,
        uri: &str,
        db: &str,
        phase: &str,
        count: usize,
        start_at: Option<&str>,
    ) -> Result<Watcher> {
        let script = repo_root().join("benches/python/cdc_watch_baseline.py");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .args(["--uri", uri, "--db", db, "--phase", phase])
            .args(["--count", &count.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(t) = start_at {
            cmd.args(["--start-at", t]);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {python} {}", script.display()))?;
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line)?;
        ensure!(
            line.trim() == "ready",
            "the baseline watcher did not start: {line:?}"
        );
        child.stdout = Some(stdout.into_inner());
        Ok(Watcher { child })
    }

    /// Waits for the watcher to have its events; (first receipt per document, repeats).
    fn finish(mut self) -> Result<(Vec<Received>, usize)> {
        let mut text = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)?;
        let status = self.child.wait()?;
        ensure!(status.success(), "the baseline watcher failed: {status}");
        let v: Value = serde_json::from_str(text.trim()).context("watcher output")?;
        let seqs = v["seq"].as_array().context("seq")?;
        let recv = v["recv_ns"].as_array().context("recv_ns")?;
        let events = seqs
            .iter()
            .zip(recv)
            .map(|(s, r)| Received {
                seq: s.as_i64().unwrap_or(-1),
                at_ns: r.as_i64().unwrap_or(0),
            })
            .collect();
        Ok(dedup(events))
    }
}

fn python_version(python: &str) -> String {
    Command::new(python)
        .args([
            "-c",
            "import sys, pymongo; print(f'Python {sys.version.split()[0]}, pymongo {pymongo.version}')",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn default_python() -> String {
    let venv = std::env::var("EXAMFLOW_MONGO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/examflow-mongo-venv")
        });
    let py = venv.join("bin/python");
    if py.exists() {
        py.display().to_string()
    } else {
        "python3".into()
    }
}

// ---------------------------------------------------------------- results

#[derive(Default)]
struct ReaderResults {
    /// insert start → event received, ms.
    latency_ms: Vec<f64>,
    /// insert_one round trip, ms.
    insert_ms: Vec<f64>,
    /// events/s first → last event, per round.
    live_rate: Vec<f64>,
    /// inserts/s achieved by the inserter in the live phase, per round.
    live_insert_rate: Vec<f64>,
    /// last event after the last insert was acknowledged, ms, per round.
    live_tail_ms: Vec<f64>,
    drain_rate: Vec<f64>,
    /// p50 / p99 of each round's latency phase, and p50 of its insert acknowledgements, ms.
    round_pcts: Vec<(f64, f64, f64)>,
    problems: Vec<String>,
    repeats: usize,
}

fn check(r: &mut ReaderResults, what: &str, got: &[Received], repeats: usize, expected: usize) {
    if got.len() < expected {
        let missing: Vec<i64> = {
            let have: std::collections::HashSet<i64> = got.iter().map(|g| g.seq).collect();
            (0..expected as i64)
                .filter(|s| !have.contains(s))
                .take(10)
                .collect()
        };
        r.problems.push(format!(
            "{what}: {} of {expected} documents received (first missing seq: {missing:?})",
            got.len()
        ));
    }
    if repeats > 0 {
        r.problems
            .push(format!("{what}: {repeats} repeated events"));
    }
    r.repeats += repeats;
}

fn latencies(r: &mut ReaderResults, inserts: &[(i64, i64, i64)], got: &[Received]) {
    let by_seq: HashMap<i64, i64> = got.iter().map(|g| (g.seq, g.at_ns)).collect();
    let mut this = Vec::with_capacity(inserts.len());
    let mut acks = Vec::with_capacity(inserts.len());
    for &(seq, t0, ack) in inserts {
        acks.push((ack - t0) as f64 / 1e6);
        if let Some(at) = by_seq.get(&seq) {
            this.push((at - t0) as f64 / 1e6);
        }
    }
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    r.round_pcts.push((
        round2(pct(&this, 0.5)),
        round2(pct(&this, 0.99)),
        round2(pct(&acks, 0.5)),
    ));
    r.insert_ms.extend(acks);
    r.latency_ms.extend(this);
}

/// events/s from the first to the last receipt.
fn rate(got: &[Received]) -> f64 {
    let first = got.iter().map(|g| g.at_ns).min().unwrap_or(0);
    let last = got.iter().map(|g| g.at_ns).max().unwrap_or(0);
    if last <= first {
        return f64::NAN;
    }
    (got.len() as f64 - 1.0) / ((last - first) as f64 / 1e9)
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() as f64 - 1.0) * q).round() as usize]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> Result<()> {
    let latency_docs = arg("--latency-docs", 2000);
    let rate_per_s = arg("--rate", 200).max(1);
    let saturation_docs = arg("--saturation-docs", 20_000);
    let batch = arg("--batch", 500).max(1);
    let rounds = arg("--rounds", 1).max(1);
    let snapshot_docs = arg("--snapshot-docs", 1000);
    let python = arg_str("--python").unwrap_or_else(default_python);
    let wait = |n: usize| Duration::from_secs(60) + Duration::from_millis(n as u64);

    let load_start = loadavg();
    let mongo = Server::get(
        "mongo-server",
        "--mongodb-uri",
        "EXAMFLOW_TEST_MONGODB_URI",
        "SecantusDB 0.7.0b3 (one-member replica set, --sync-on-commit, \
         --oplog-max-entries 5000000)",
        // The default cap (100 000 entries) prunes the oplog during the run, which slows
        // every write of this server several-fold from then on.
        &["--", "--oplog-max-entries", "5000000"],
    )?;
    let broker = Server::get(
        "kafka-broker",
        "--kafka-brokers",
        "EXAMFLOW_TEST_KAFKA_BROKERS",
        "nisshi broker",
        &[],
    )?;
    let run = format!("cdcb{}", now_ns() / 1_000_000 % 100_000_000);
    let db_x = format!("{run}_x");
    let db_b = format!("{run}_b");
    let prefix = run.clone();
    let settings = KafkaSettings {
        brokers: broker.address.clone(),
        topic_prefix: prefix.clone(),
        ..KafkaSettings::default()
    };
    let topic_name = settings.change_event_topic();
    let floor_topic = format!("{prefix}.bench.floor");
    settings
        .create_topics(
            &[
                topic_name.clone(),
                KafkaSettings::dead_letter_topic(&topic_name),
                floor_topic.clone(),
            ],
            settings.partitions,
        )
        .await?;

    let client = Client::with_uri_str(&mongo.address).await?;
    let coll_x: Collection<Document> = client.database(&db_x).collection("score");
    let coll_b: Collection<Document> = client.database(&db_b).collection("score");
    // Warm the driver's pool and both databases.
    coll_x.insert_one(document("warm", 0)).await?;
    coll_b.insert_one(document("warm", 0)).await?;
    // Existing documents for examflow's first-start snapshot.
    if snapshot_docs > 0 {
        bulk_inserts(&coll_x, "snap", snapshot_docs, batch).await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (topic, consumer) =
        start_consumer(&broker.address, &[&topic_name, &floor_topic], stop.clone())?;
    let producer = settings.producer()?;
    let tmp = tempfile::tempdir()?;
    let mut examflow = Examflow {
        child: None,
        log: tmp.path().join("examflow-cdc.log"),
        args: vec![
            "cdc".into(),
            "--mongodb-uri".into(),
            mongo.address.clone(),
            "--kafka-brokers".into(),
            broker.address.clone(),
            "--database".into(),
            db_x.clone(),
            "--topic-prefix".into(),
            prefix.clone(),
        ],
    };
    let started = Instant::now();
    examflow.start()?;
    let mut x = ReaderResults::default();
    let mut b = ReaderResults::default();
    let mut k = ReaderResults::default();
    // The snapshot (op "r"), then one streamed document: capture is live.
    let (snap, snap_rep) = wait_topic(&topic, "snap", snapshot_docs, wait(snapshot_docs));
    check(&mut x, "snapshot", &snap, snap_rep, snapshot_docs);
    coll_x.insert_one(document("ready", 0)).await?;
    let (ready, _) = wait_topic(&topic, "ready", 1, wait(0));
    ensure!(
        !ready.is_empty(),
        "examflow cdc did not deliver a streamed event within 60 s (log: {})",
        examflow.log.display()
    );
    let ready_after = started.elapsed();
    eprintln!(
        "examflow cdc live after {:.1} s (snapshot of {} documents)",
        ready_after.as_secs_f64(),
        snap.len()
    );

    for round in 0..rounds {
        let examflow_first = round % 2 == 0;
        for side in 0..2 {
            let is_examflow = (side == 0) == examflow_first;
            if is_examflow {
                if !examflow.alive() {
                    examflow.start()?;
                    let tag = format!("ready{round}");
                    coll_x.insert_one(document(&tag, 0)).await?;
                    wait_topic(&topic, &tag, 1, wait(0));
                }
                // 1. latency
                let phase = format!("lat{round}");
                let ins = paced_inserts(&coll_x, &phase, latency_docs, rate_per_s).await?;
                let (got, rep) = wait_topic(&topic, &phase, latency_docs, wait(latency_docs));
                check(&mut x, &phase, &got, rep, latency_docs);
                latencies(&mut x, &ins, &got);
                // 2. live saturation
                let phase = format!("live{round}");
                let (t0, t1) = bulk_inserts(&coll_x, &phase, saturation_docs, batch).await?;
                let (got, rep) = wait_topic(&topic, &phase, saturation_docs, wait(saturation_docs));
                check(&mut x, &phase, &got, rep, saturation_docs);
                x.live_rate.push(rate(&got));
                x.live_insert_rate
                    .push(saturation_docs as f64 / ((t1 - t0) as f64 / 1e9));
                let last = got.iter().map(|g| g.at_ns).max().unwrap_or(t1);
                x.live_tail_ms.push((last - t1) as f64 / 1e6);
                // 3. backlog drain: stopped, inserts, started again from its position.
                examflow.stop()?;
                let phase = format!("drain{round}");
                bulk_inserts(&coll_x, &phase, saturation_docs, batch).await?;
                examflow.start()?;
                let (got, rep) = wait_topic(&topic, &phase, saturation_docs, wait(saturation_docs));
                check(&mut x, &phase, &got, rep, saturation_docs);
                x.drain_rate.push(rate(&got));
                examflow.stop()?;
                // Kafka alone (examflow stopped): the same producer settings and consumer.
                let phase = format!("klat{round}");
                let sent =
                    paced_sends(&producer, &floor_topic, &phase, latency_docs, rate_per_s).await?;
                let (got, rep) = wait_topic(&topic, &phase, latency_docs, wait(latency_docs));
                check(&mut k, &phase, &got, rep, latency_docs);
                latencies(&mut k, &sent, &got);
                let phase = format!("klive{round}");
                let (t0, t1) = bulk_sends(&producer, &floor_topic, &phase, saturation_docs).await?;
                let (got, rep) = wait_topic(&topic, &phase, saturation_docs, wait(saturation_docs));
                check(&mut k, &phase, &got, rep, saturation_docs);
                k.live_rate.push(rate(&got));
                k.live_insert_rate
                    .push(saturation_docs as f64 / ((t1 - t0) as f64 / 1e9));
                eprintln!(
                    "round {round} examflow: live {:.0} ev/s, drain {:.0} ev/s",
                    x.live_rate.last().unwrap(),
                    x.drain_rate.last().unwrap()
                );
            } else {
                let phase = format!("lat{round}");
                let w = Watcher::start(&python, &mongo.address, &db_b, &phase, latency_docs, None)?;
                let ins = paced_inserts(&coll_b, &phase, latency_docs, rate_per_s).await?;
                let (got, rep) = w.finish()?;
                check(&mut b, &phase, &got, rep, latency_docs);
                latencies(&mut b, &ins, &got);
                let phase = format!("live{round}");
                let w = Watcher::start(
                    &python,
                    &mongo.address,
                    &db_b,
                    &phase,
                    saturation_docs,
                    None,
                )?;
                let (t0, t1) = bulk_inserts(&coll_b, &phase, saturation_docs, batch).await?;
                let (got, rep) = w.finish()?;
                check(&mut b, &phase, &got, rep, saturation_docs);
                b.live_rate.push(rate(&got));
                b.live_insert_rate
                    .push(saturation_docs as f64 / ((t1 - t0) as f64 / 1e9));
                let last = got.iter().map(|g| g.at_ns).max().unwrap_or(t1);
                b.live_tail_ms.push((last - t1) as f64 / 1e6);
                let phase = format!("drain{round}");
                let at = cluster_time(&client).await?;
                bulk_inserts(&coll_b, &phase, saturation_docs, batch).await?;
                let w = Watcher::start(
                    &python,
                    &mongo.address,
                    &db_b,
                    &phase,
                    saturation_docs,
                    Some(&at),
                )?;
                let (got, rep) = w.finish()?;
                check(&mut b, &phase, &got, rep, saturation_docs);
                b.drain_rate.push(rate(&got));
                eprintln!(
                    "round {round} bare reader: live {:.0} ev/s, drain {:.0} ev/s",
                    b.live_rate.last().unwrap(),
                    b.drain_rate.last().unwrap()
                );
            }
        }
    }
    // Anything delivered late (repeats) shows up in the last look at the topic.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = consumer.join();
    let t = topic.lock().unwrap();
    let mut late_repeats = Vec::new();
    for (phase, events) in &t.by_phase {
        let (_, rep) = dedup(events.clone());
        if rep > 0 {
            late_repeats.push(format!("{phase}: {rep}"));
        }
    }
    late_repeats.sort();
    let ops: Vec<String> = {
        let mut v: Vec<_> = t.ops.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        v.sort();
        v
    };

    // ------------------------------------------------------------ table
    println!("### cdc_latency");
    println!();
    println!("- CPU: {}", cpu_line());
    println!(
        "- load average at start: {load_start}; at end: {}",
        loadavg()
    );
    println!("- MongoDB: {}", mongo.label);
    println!("- Kafka: {}", broker.label);
    println!("- bare reader: {}", python_version(&python));
    println!(
        "- {latency_docs} paced inserts at {rate_per_s}/s per reader and round; saturation \
         {saturation_docs} documents in insert_many batches of {batch}; {rounds} round(s); \
         examflow cdc live {:.1} s after start (first-start snapshot of {} documents)",
        ready_after.as_secs_f64(),
        snap.len()
    );
    println!();
    println!(
        "| measure | bare reader (pymongo watch) | examflow cdc → topic | examflow / bare | \
         Kafka hop alone (produce → consume) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let row = |name: &str, bv: f64, xv: f64, kv: Option<f64>, digits: usize| {
        let kv = kv.map_or("–".to_string(), |v| format!("{v:.digits$}"));
        println!(
            "| {name} | {bv:.digits$} | {xv:.digits$} | {:.2} | {kv} |",
            xv / bv
        );
    };
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        row(
            &format!("insert → event, {name} ms"),
            pct(&b.latency_ms, q),
            pct(&x.latency_ms, q),
            Some(pct(&k.latency_ms, q)),
            2,
        );
    }
    row(
        "insert → event, mean ms",
        mean(&b.latency_ms),
        mean(&x.latency_ms),
        Some(mean(&k.latency_ms)),
        2,
    );
    row(
        "(insert_one acknowledged, p50 ms; Kafka: send acked)",
        pct(&b.insert_ms, 0.5),
        pct(&x.insert_ms, 0.5),
        Some(pct(&k.insert_ms, 0.5)),
        2,
    );
    row(
        "live saturation: events/s, first → last event",
        median(&b.live_rate),
        median(&x.live_rate),
        Some(median(&k.live_rate)),
        0,
    );
    row(
        "(live saturation: inserts/s achieved meanwhile; Kafka: sends/s)",
        median(&b.live_insert_rate),
        median(&x.live_insert_rate),
        Some(median(&k.live_insert_rate)),
        0,
    );
    row(
        "(live saturation: last event after last insert ack, ms)",
        median(&b.live_tail_ms),
        median(&x.live_tail_ms),
        None,
        0,
    );
    row(
        "backlog drain: events/s, first → last event",
        median(&b.drain_rate),
        median(&x.drain_rate),
        None,
        0,
    );
    println!();
    if rounds > 1 {
        println!(
            "Per round (events/s): live bare {:?}, examflow {:?}; drain bare {:?}, examflow {:?}",
            b.live_rate.iter().map(|v| v.round()).collect::<Vec<_>>(),
            x.live_rate.iter().map(|v| v.round()).collect::<Vec<_>>(),
            b.drain_rate.iter().map(|v| v.round()).collect::<Vec<_>>(),
            x.drain_rate.iter().map(|v| v.round()).collect::<Vec<_>>(),
        );
        println!(
            "Per round (insert → event p50, p99, insert ack p50) ms: bare {:?}, examflow {:?}, \
             Kafka alone {:?}",
            b.round_pcts, x.round_pcts, k.round_pcts
        );
        println!();
    }
    println!(
        "Checks: topic events by op {{{}}}, {} unparsed; examflow repeats {} (at the end, all \
         phases, by phase: [{}]), bare reader repeats {}.",
        ops.join(", "),
        t.unparsed,
        x.repeats,
        late_repeats.join(", "),
        b.repeats
    );
    for p in x.problems.iter() {
        println!("- examflow problem: {p}");
    }
    for p in k.problems.iter() {
        println!("- Kafka-alone problem: {p}");
    }
    for p in b.problems.iter() {
        println!("- bare reader problem: {p}");
    }
    if x.problems.is_empty() && b.problems.is_empty() {
        println!("Every inserted document reached each reader; no repeats beyond those listed.");
    }
    eprintln!("examflow cdc log: {}", examflow.log.display());
    let _ = std::fs::copy(
        &examflow.log,
        std::env::temp_dir().join(format!("{run}-cdc.log")),
    );
    eprintln!(
        "(copied to {})",
        std::env::temp_dir()
            .join(format!("{run}-cdc.log"))
            .display()
    );
    Ok(())
}
