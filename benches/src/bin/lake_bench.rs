//! Lake ingest benchmark (issue 5): the Kafka → Delta Lake ingest of `examflow-ingest`,
//! measured in one run against baselines measured in the same run. Prints markdown tables.
//!
//! 1. Attempt JSON → Arrow decode, one thread: examflow's decoder (`Attempt::parse` +
//!    `AttemptBatchBuilder`, batches of 5 000 attempts) on generated attempts, against
//!    `arrow::json` (arrow-json's tape decoder) reading the rows examflow produced back from
//!    three flat JSON-lines files (one per table) into batches with the same schemas.
//! 2. End to end, broker → committed Delta tables (`LakeIngest`, commit interval 1 s), against
//!    a bare rdkafka `StreamConsumer` reading the same topic (touching every payload byte).
//! 3. Freshness: produce at a steady rate while `LakeIngest` runs (commit 2 s, flush 100 ms)
//!    and time, for every k-th message, the producer's send → first live SQL query
//!    (`register_lake(live = true)`) that returns its row, and → first query of a second
//!    `Lake` on the same location that sees it committed (what a replica that does not
//!    ingest gets, before its `lake_refresh_ms`).
//!
//! `--s3-endpoint URL` (moto: `scripts/s3-server start DIR`) runs sections 2 and 3 a second
//! time with the lake in a new bucket there.
//!
//! ```text
//! cargo build --release -p examflow-benches --bin lake-bench
//! target/release/lake-bench [--quick] [--only decode|e2e|fresh]
//! ```
//!
//! Sections 2 and 3 need a broker: `EXAMFLOW_TEST_KAFKA_BROKERS` when set, otherwise the
//! harness starts one with `scripts/kafka-broker start DIR` (nisshi) and stops it at the end.
//! Documents come from `data/gen_attempts.py` (python3, standard library only).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::json::{LineDelimitedWriter, ReaderBuilder};
use examflow_benches::{Broker, cpu_line, loadavg};
use examflow_ingest::attempts::{
    Attempt, AttemptBatchBuilder, AttemptBatches, attempt_options_schema, attempt_questions_schema,
    attempts_schema,
};
use examflow_ingest::lake::Lake;
use examflow_ingest::lake::query::{new_session, register_lake, run_sql};
use examflow_ingest::pipeline::{IngestSettings, LakeIngest, LakeMetrics};
use examflow_ingest::produce::{document_key, produce_documents, split_documents};
use examflow_ingest::source::SourcePosition;
use examflow_ingest::{IngestMetrics, KafkaSettings};
use prometheus::Registry;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use tokio::sync::watch;

/// Attempts per finished batch (the decode section; the pipeline flushes by time instead).
const BATCH_ATTEMPTS: usize = 5_000;
const PARTITIONS: i32 = 4;
/// The pipeline's limit (IngestSettings::max_message_bytes default) + 1 KiB, as it sets it.
const FETCH_MESSAGE_MAX_BYTES: usize = (8 << 20) + 1024;
/// `fetch.wait.max.ms` of the information-only bare consumers (librdkafka's default: 500).
const FAST_FETCH_WAIT_MS: u32 = 50;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Decode,
    E2e,
    Fresh,
}

struct Args {
    quick: bool,
    only: Option<Section>,
    /// `fetch.wait.max.ms` given to the ingest under test (`kafka.properties`); None: the
    /// librdkafka default.
    ingest_fetch_wait_ms: Option<u32>,
    /// An S3-compatible endpoint (moto: `scripts/s3-server start DIR`): sections 2 and 3
    /// then also run `LakeIngest` into a lake in a new bucket there.
    s3_endpoint: Option<String>,
}

impl Args {
    fn runs(&self, section: Section) -> bool {
        self.only.is_none_or(|s| s == section)
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        only: None,
        ingest_fetch_wait_ms: None,
        s3_endpoint: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--only" => {
                a.only = Some(
                    match it.next().context("--only decode|e2e|fresh")?.as_str() {
                        "decode" => Section::Decode,
                        "e2e" => Section::E2e,
                        "fresh" => Section::Fresh,
                        other => bail!("--only {other:?}: expected decode, e2e or fresh"),
                    },
                )
            }
            "--ingest-fetch-wait-ms" => {
                let ms = it.next().context("--ingest-fetch-wait-ms N")?;
                a.ingest_fetch_wait_ms = Some(ms.parse().context("--ingest-fetch-wait-ms N")?);
            }
            "--s3-endpoint" => {
                a.s3_endpoint = Some(it.next().context("--s3-endpoint URL")?);
            }
            "-h" | "--help" => {
                println!(
                    "lake-bench [--quick] [--only decode|e2e|fresh] [--ingest-fetch-wait-ms N] \
                     [--s3-endpoint URL]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(a)
}

// ---------------------------------------------------------------- small utilities

/// A name no earlier run used (topics and consumer groups).
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

/// `python3 data/gen_attempts.py --count N --seed S --format lines` → the file's text.
fn generate(dir: &Path, count: usize, seed: u64) -> Result<String> {
    let out = dir.join(format!("attempts-{count}-{seed}.jsonl"));
    examflow_benches::generate_attempt_lines(&out, count, seed)?;
    std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Rows {
    attempts: usize,
    questions: usize,
    options: usize,
}

impl Rows {
    fn of(batches: &[AttemptBatches]) -> Rows {
        let mut r = Rows::default();
        for b in batches {
            r.attempts += b.attempts.num_rows();
            r.questions += b.questions.num_rows();
            r.options += b.options.num_rows();
        }
        r
    }

    fn total(self) -> usize {
        self.attempts + self.questions + self.options
    }

    fn show(self) -> String {
        format!("{} / {} / {}", self.attempts, self.questions, self.options)
    }
}

// ---------------------------------------------------------------- 1. decode

/// examflow's decoder over every document, batches of `BATCH_ATTEMPTS` attempts.
fn decode_ours(docs: &[&str]) -> Result<Vec<AttemptBatches>> {
    let mut builder = AttemptBatchBuilder::new();
    let mut out = Vec::with_capacity(docs.len() / BATCH_ATTEMPTS + 1);
    for (i, doc) in docs.iter().enumerate() {
        let attempt = Attempt::parse(doc.as_bytes()).map_err(|e| anyhow!("document {i}: {e}"))?;
        builder.append(
            &attempt,
            &SourcePosition {
                topic: "exams",
                partition: 0,
                offset: i as i64,
                ingested_at_us: 1_700_000_000_000_000,
            },
        );
        if builder.rows() == BATCH_ATTEMPTS {
            out.push(builder.finish());
        }
    }
    if builder.rows() > 0 {
        out.push(builder.finish());
    }
    Ok(out)
}

/// The batch with every timestamp column cast to Int64 (epoch microseconds).
fn timestamps_as_int(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Timestamp(..)) {
            fields.push(Field::new(
                field.name(),
                DataType::Int64,
                field.is_nullable(),
            ));
            columns.push(cast(column, &DataType::Int64)?);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// One JSON object per row (arrow-json's writer; nulls omitted, its default).
fn json_lines(batches: &[&RecordBatch], int_timestamps: bool) -> Result<Vec<u8>> {
    let mut writer = LineDelimitedWriter::new(Vec::new());
    for batch in batches {
        if int_timestamps {
            writer.write(&timestamps_as_int(batch)?)?;
        } else {
            writer.write(batch)?;
        }
    }
    writer.finish()?;
    Ok(writer.into_inner())
}

fn read_arrow_json(data: &[u8], schema: SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
    let reader = ReaderBuilder::new(schema)
        .with_batch_size(batch_size)
        .build(Cursor::new(data))?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// The three flat files of one variant and the batch size matching examflow's batches.
struct FlatInput {
    name: &'static str,
    files: [(SchemaRef, Vec<u8>, usize); 3],
}

impl FlatInput {
    fn bytes(&self) -> usize {
        self.files.iter().map(|f| f.1.len()).sum()
    }

    fn read(&self) -> Result<[Vec<RecordBatch>; 3]> {
        let [a, q, o] = &self.files;
        Ok([
            read_arrow_json(&a.1, a.0.clone(), a.2)?,
            read_arrow_json(&q.1, q.0.clone(), q.2)?,
            read_arrow_json(&o.1, o.0.clone(), o.2)?,
        ])
    }
}

struct Timed {
    best: Duration,
    median: Duration,
}

fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timed> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(Timed {
        best: times[0],
        median: times[times.len() / 2],
    })
}

fn same_rows(schema: &SchemaRef, ours: &[&RecordBatch], theirs: &[RecordBatch]) -> Result<bool> {
    let ours = concat_batches(schema, ours.iter().copied())?;
    let theirs = concat_batches(schema, theirs)?;
    Ok(ours == theirs)
}

fn section_decode(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let (count, runs) = if args.quick { (2_000, 3) } else { (20_000, 5) };
    let text = generate(tmp, count, 11)?;
    let docs = lines(&text);
    let input_bytes: usize = docs.iter().map(|d| d.len()).sum();

    // Warm-up run, whose output is also the data for the arrow-json files.
    let ours = decode_ours(&docs)?;
    let rows = Rows::of(&ours);
    let ours_t = time_runs(runs, || {
        std::hint::black_box(decode_ours(&docs)?);
        Ok(())
    })?;

    let schemas = [
        attempts_schema(),
        attempt_questions_schema(),
        attempt_options_schema(),
    ];
    let per_table: [Vec<&RecordBatch>; 3] = [
        ours.iter().map(|b| &b.attempts).collect(),
        ours.iter().map(|b| &b.questions).collect(),
        ours.iter().map(|b| &b.options).collect(),
    ];
    let table_rows = [rows.attempts, rows.questions, rows.options];
    let mut variants = Vec::new();
    for (name, int_timestamps) in [
        (
            "timestamps as RFC 3339 strings (arrow-json writer default)",
            false,
        ),
        ("timestamps as epoch-µs integers", true),
    ] {
        let mut files = Vec::new();
        for ((schema, batches), n) in schemas.iter().zip(&per_table).zip(table_rows) {
            let batch_size = n.div_ceil(batches.len().max(1)).max(1);
            files.push((
                schema.clone(),
                json_lines(batches, int_timestamps)?,
                batch_size,
            ));
        }
        let files: [(SchemaRef, Vec<u8>, usize); 3] =
            files.try_into().map_err(|_| anyhow!("three tables"))?;
        variants.push(FlatInput { name, files });
    }

    let mut arrow_rows = Vec::new();
    for v in &variants {
        let read = v.read()?;
        let mut same = true;
        for ((schema, ours), theirs) in schemas.iter().zip(&per_table).zip(&read) {
            same &= same_rows(schema, ours, theirs)?;
        }
        let t = time_runs(runs, || {
            std::hint::black_box(v.read()?);
            Ok(())
        })?;
        arrow_rows.push((v, t, same));
    }

    let serde_t = time_runs(runs, || {
        for d in &docs {
            std::hint::black_box(serde_json::from_str::<serde_json::Value>(d)?);
        }
        Ok(())
    })?;

    writeln!(out, "### 1. Attempt JSON → Arrow decode (one thread)\n")?;
    writeln!(
        out,
        "{count} generated attempts (`data/gen_attempts.py --seed 11`), {:.1} MB of JSON \
         ({:.0} bytes per document); rows: attempts / questions / options = {}. Best and \
         median of {runs} runs after a warm-up, all input in memory, one thread. examflow: \
         `Attempt::parse` on each document + `AttemptBatchBuilder::append`, `finish()` every \
         {BATCH_ATTEMPTS} attempts (the three tables' batches, incl. the four source columns). \
         arrow-json: `arrow::json::ReaderBuilder` with the three table schemas reading three \
         JSON-lines files that `arrow::json::LineDelimitedWriter` wrote from examflow's own \
         batches (flat, already typed rows: the same rows, not the same input; keen_id etc. \
         repeat on every child row, nulls omitted), batch sizes matching examflow's; its \
         output is compared with examflow's batches. MB/s are of each decoder's own input; \
         '× time' compares the time to produce the same rows. serde_json → `Value` of the \
         original documents is a reference (no Arrow output).\n",
        mb(input_bytes),
        input_bytes as f64 / docs.len() as f64,
        rows.show()
    )?;
    writeln!(
        out,
        "| decoder | input | input MB | best s | median s | MB/s (best) | rows/s (best) | × examflow time | same rows as examflow |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|")?;
    let total_rows = rows.total() as f64;
    writeln!(
        out,
        "| examflow `Attempt::parse` + `AttemptBatchBuilder` | nested attempt documents | {:.1} | {:.3} | {:.3} | {:.1} | {:.2} M | 1.00 | – |",
        mb(input_bytes),
        secs(ours_t.best),
        secs(ours_t.median),
        mb(input_bytes) / secs(ours_t.best),
        total_rows / secs(ours_t.best) / 1e6
    )?;
    for (v, t, same) in &arrow_rows {
        writeln!(
            out,
            "| arrow-json `ReaderBuilder` | 3 flat JSON-lines files, {} | {:.1} | {:.3} | {:.3} | {:.1} | {:.2} M | {:.2} | {} |",
            v.name,
            mb(v.bytes()),
            secs(t.best),
            secs(t.median),
            mb(v.bytes()) / secs(t.best),
            total_rows / secs(t.best) / 1e6,
            secs(t.best) / secs(ours_t.best),
            if *same { "yes" } else { "NO" }
        )?;
    }
    writeln!(
        out,
        "| serde_json → `Value` (reference, no Arrow) | nested attempt documents | {:.1} | {:.3} | {:.3} | {:.1} | – | {:.2} | – |",
        mb(input_bytes),
        secs(serde_t.best),
        secs(serde_t.median),
        mb(input_bytes) / secs(serde_t.best),
        secs(serde_t.best) / secs(ours_t.best)
    )?;
    writeln!(
        out,
        "\nTarget: examflow ≥ 150 MB/s per core and faster than arrow-json → {:.1} MB/s ({}), \
         arrow-json takes {:.2}× / {:.2}× examflow's time ({}).\n",
        mb(input_bytes) / secs(ours_t.best),
        if mb(input_bytes) / secs(ours_t.best) >= 150.0 {
            "met"
        } else {
            "NOT met"
        },
        secs(arrow_rows[0].1.best) / secs(ours_t.best),
        secs(arrow_rows[1].1.best) / secs(ours_t.best),
        if arrow_rows.iter().all(|(_, t, _)| t.best > ours_t.best) {
            "met"
        } else {
            "NOT met"
        },
    )?;
    Ok(())
}

// ---------------------------------------------------------------- 2. end to end

/// One read of the topic: from the start of the clock (before the consumer is created) to
/// the first message and to the end (last message read, or last table committed).
struct ReadRun {
    label: String,
    first: Duration,
    all_read: Duration,
    done: Duration,
    bytes: u64,
    note: String,
}

impl ReadRun {
    fn steady(&self) -> Duration {
        self.done.saturating_sub(self.first)
    }
}

/// A consumer with the ingest's settings (`LakeIngest::run`), in a new group;
/// `fetch_wait_ms` overrides librdkafka's `fetch.wait.max.ms` (500 ms), which the ingest
/// cannot.
fn bare_consumer(brokers: &str, group: &str, fetch_wait_ms: Option<u32>) -> Result<StreamConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("group.id", unique(group))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set(
            "fetch.message.max.bytes",
            FETCH_MESSAGE_MAX_BYTES.to_string(),
        );
    if let Some(ms) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", ms.to_string());
    }
    Ok(config.create()?)
}

async fn bare_consume(
    brokers: &str,
    topic: &str,
    n: usize,
    fetch_wait_ms: Option<u32>,
    label: &str,
) -> Result<ReadRun> {
    let start = Instant::now();
    let consumer = bare_consumer(brokers, "bench-bare", fetch_wait_ms)?;
    consumer.subscribe(&[topic])?;
    let mut first = None;
    let mut bytes = 0u64;
    let mut checksum = 0u64;
    for _ in 0..n {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("bare consumer: no message for 60 s")??;
        first.get_or_insert_with(|| start.elapsed());
        if let Some(payload) = message.payload() {
            bytes += payload.len() as u64;
            checksum = payload
                .iter()
                .fold(checksum, |sum, b| sum.wrapping_add(u64::from(*b)));
        }
    }
    let done = start.elapsed();
    std::hint::black_box(checksum);
    Ok(ReadRun {
        label: label.to_string(),
        first: first.unwrap_or(done),
        all_read: done,
        done,
        bytes,
        note: match fetch_wait_ms {
            None => "StreamConsumer, subscribe, every payload byte summed".into(),
            Some(ms) => format!(
                "as above, but fetch.wait.max.ms = {ms} (information: LakeIngest reads it from kafka.properties)"
            ),
        },
    })
}

/// Committed rows of the three attempt tables, by SQL over the committed snapshots.
async fn committed_rows(lake: &Lake) -> Result<Rows> {
    let ctx = new_session();
    register_lake(&ctx, lake, false).await?;
    let mut counts = [0usize; 3];
    for (count, table) in
        counts
            .iter_mut()
            .zip(["attempts", "attempt_questions", "attempt_options"])
    {
        let batches = run_sql(&ctx, &format!("SELECT count(*) FROM {table}")).await?;
        *count = batches.first().map_or(0, |b| {
            b.column(0).as_primitive::<Int64Type>().value(0) as usize
        });
    }
    Ok(Rows {
        attempts: counts[0],
        questions: counts[1],
        options: counts[2],
    })
}

fn lake_settings(topic: &str, commit_interval: Duration) -> IngestSettings {
    IngestSettings {
        group_id: unique("bench-lake"),
        attempts_topic: topic.to_string(),
        changes_topic: String::new(),
        commit_interval,
        // Compaction/vacuum would only add noise to a run of seconds.
        housekeeping_interval: Duration::ZERO,
        housekeeping_after_commits: 0,
        ..IngestSettings::default()
    }
}

async fn lake_consume(
    settings: &KafkaSettings,
    topic: &str,
    expected: Rows,
    commit_interval: Duration,
    label: &str,
    s3_endpoint: Option<&str>,
) -> Result<ReadRun> {
    let dir = tempfile::tempdir()?;
    let lake = Arc::new(match s3_endpoint {
        Some(endpoint) => Lake::open_at(s3_lake(endpoint)?).await?,
        None => Lake::open(dir.path()).await?,
    });
    let registry = Registry::new();
    let lake_metrics = LakeMetrics::new(&registry);
    let metrics = lake_metrics.clone();
    let ingest = LakeIngest::new(
        lake.clone(),
        settings.clone(),
        lake_settings(topic, commit_interval),
        IngestMetrics::new(&registry),
        lake_metrics.clone(),
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let start = Instant::now();
    let topic_owned = topic.to_string();
    let monitor = tokio::spawn(async move {
        let read = |outcome: &str| {
            lake_metrics
                .messages
                .with_label_values(&[topic_owned.as_str(), outcome])
                .get()
        };
        let rows = |table: &str| lake_metrics.rows.with_label_values(&[table]).get() as usize;
        let (mut first, mut all_read) = (None, None);
        let result = loop {
            let messages = (read("stored") + read("duplicate") + read("dead_letter")) as usize;
            if messages > 0 {
                first.get_or_insert_with(|| start.elapsed());
            }
            if messages >= expected.attempts {
                all_read.get_or_insert_with(|| start.elapsed());
            }
            let committed = Rows {
                attempts: rows("attempts"),
                questions: rows("attempt_questions"),
                options: rows("attempt_options"),
            };
            if committed == expected {
                let done = start.elapsed();
                break Ok((first.unwrap_or(done), all_read.unwrap_or(done), done));
            }
            if start.elapsed() > Duration::from_secs(600) {
                break Err(anyhow!(
                    "lake ingest: after 600 s {} of {} rows committed, {messages} messages read",
                    committed.show(),
                    expected.show()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let _ = shutdown.send(true);
        result
    });
    if let Err(e) = ingest.run(shutdown_rx).await {
        monitor.abort();
        return Err(e.into());
    }
    let (first, all_read, done) = monitor.await??;
    let committed = committed_rows(&lake).await?;
    ensure!(
        committed == expected,
        "committed rows {} (SQL count(*)) differ from the expected {}",
        committed.show(),
        expected.show()
    );
    let commits = ["attempts", "attempt_questions", "attempt_options"]
        .iter()
        .map(|t| metrics.commits.with_label_values(&[t]).get().to_string())
        .collect::<Vec<_>>();
    let bytes = metrics.bytes.with_label_values(&[topic]).get();
    Ok(ReadRun {
        label: label.to_string(),
        first,
        all_read,
        done,
        bytes,
        note: format!(
            "done = all 3 tables committed (SQL count(*) checked: {}); commits a/q/o {}",
            committed.show(),
            commits.join("/")
        ),
    })
}

async fn section_e2e(args: &Args, broker: &Broker, tmp: &Path, out: &mut String) -> Result<()> {
    let count = if args.quick { 2_000 } else { 20_000 };
    let commit_interval = Duration::from_secs(1);
    let settings = KafkaSettings {
        brokers: broker.brokers.clone(),
        ..KafkaSettings::default()
    };
    let text = generate(tmp, count, 12)?;
    let docs = lines(&text);
    let expected = Rows::of(&decode_ours(&docs)?);
    let documents = split_documents(&text)?;
    let topic = unique("bench-e2e");
    settings
        .create_topics(std::slice::from_ref(&topic), PARTITIONS)
        .await?;
    let t = Instant::now();
    let produced = produce_documents(&settings, &topic, &documents, 1_000, |_| {}).await?;
    let produce_time = t.elapsed();
    ensure!(produced as usize == count, "produced {produced} of {count}");

    // Alternate the two readers, twice each, on the same topic.
    let mut runs = Vec::new();
    for round in 1..=2 {
        runs.push(
            bare_consume(
                &broker.brokers,
                &topic,
                count,
                None,
                &format!("bare rdkafka consumer (run {round})"),
            )
            .await?,
        );
        runs.push(
            lake_consume(
                &settings,
                &topic,
                expected,
                commit_interval,
                &format!("examflow LakeIngest (run {round})"),
                None,
            )
            .await?,
        );
        if let Some(endpoint) = &args.s3_endpoint {
            runs.push(
                lake_consume(
                    &settings,
                    &topic,
                    expected,
                    commit_interval,
                    &format!("S3: examflow LakeIngest, lake on moto S3 (run {round})"),
                    Some(endpoint),
                )
                .await?,
            );
        }
    }
    runs.push(
        bare_consume(
            &broker.brokers,
            &topic,
            count,
            Some(FAST_FETCH_WAIT_MS),
            "bare rdkafka consumer, short fetch wait",
        )
        .await?,
    );
    let best = |lake: bool| {
        runs.iter()
            .filter(|r| !r.label.ends_with("short fetch wait") && !r.label.starts_with("S3:"))
            .filter(|r| r.label.starts_with("examflow") == lake)
            .min_by_key(|r| r.done)
            .expect("two runs each")
    };
    let (bare, ours) = (best(false), best(true));
    let best_steady = |lake: bool| {
        runs.iter()
            .filter(|r| !r.label.ends_with("short fetch wait") && !r.label.starts_with("S3:"))
            .filter(|r| r.label.starts_with("examflow") == lake)
            .map(ReadRun::steady)
            .min()
            .expect("two runs each")
    };
    let (bare_steady, ours_steady) = (best_steady(false), best_steady(true));

    writeln!(
        out,
        "### 2. End to end: broker → committed Delta tables vs a bare consumer\n"
    )?;
    writeln!(
        out,
        "{count} generated attempts (`--seed 12`, {:.1} MB of payload) produced once, keyed by \
         keen_id, to a fresh topic with {PARTITIONS} partitions (`produce_documents`, 1000 in \
         flight: {:.2} s, {:.0} messages/s). Then, alternating on the same topic, each run \
         with a new consumer group reading from the beginning: a bare rdkafka `StreamConsumer` \
         (same consumer settings as the ingest's), and `LakeIngest` in-process into a fresh \
         temp lake (commit interval {} s, flush 100 ms, housekeeping off, no change topic). \
         Clock starts before the consumer is created (LakeIngest: before `run`, after \
         `Lake::open`; it includes reading the tables' offsets and the consumer-group join); \
         'first msg' is when the first message was received (LakeIngest: its messages \
         metric, polled every 2 ms); LakeIngest is done when the rows counters of `attempts`, \
         `attempt_questions` and `attempt_options` equal the decoded totals ({}); then the \
         committed row counts are checked with SQL. 'steady' = first message → done. Rates \
         are of messages (= attempts) and payload bytes.\n",
        mb(documents.iter().map(|d| d.get().len()).sum()),
        secs(produce_time),
        count as f64 / secs(produce_time),
        commit_interval.as_secs(),
        expected.show()
    )?;
    writeln!(
        out,
        "| reader | first msg s | all read s | done s | msgs/s (from start) | MB/s (from start) | msgs/s (steady) | note |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    for r in &runs {
        writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.0} | {} |",
            r.label,
            secs(r.first),
            secs(r.all_read),
            secs(r.done),
            count as f64 / secs(r.done),
            r.bytes as f64 / 1e6 / secs(r.done),
            count as f64 / secs(r.steady()),
            r.note
        )?;
    }
    writeln!(
        out,
        "\nBest LakeIngest vs best bare consumer: from start {:.0}% of the bare rate \
         ({:.2} s vs {:.2} s), steady (first message → done) {:.0}% ({:.2} s vs {:.2} s). \
         Target ≥ 80%: {}.\n",
        100.0 * secs(bare.done) / secs(ours.done),
        secs(ours.done),
        secs(bare.done),
        100.0 * secs(bare_steady) / secs(ours_steady),
        secs(ours_steady),
        secs(bare_steady),
        if secs(bare.done) / secs(ours.done) >= 0.8 {
            "met (from start)"
        } else {
            "NOT met (from start)"
        }
    )?;
    let on_s3: Vec<&ReadRun> = runs.iter().filter(|r| r.label.starts_with("S3:")).collect();
    if let Some(s3) = on_s3.iter().min_by_key(|r| r.done) {
        let s3_steady = on_s3.iter().map(|r| r.steady()).min().expect("a run");
        writeln!(
            out,
            "Lake on moto S3 (a local S3 emulator: no network latency, no request pricing, \
             in-memory objects) vs the local lake, best of 2 each in the same run: done \
             {:.2} s vs {:.2} s ({:.2}×), steady {:.2} s vs {:.2} s ({:.2}×).\n",
            secs(s3.done),
            secs(ours.done),
            secs(s3.done) / secs(ours.done),
            secs(s3_steady),
            secs(ours_steady),
            secs(s3_steady) / secs(ours_steady),
        )?;
    }
    Ok(())
}

/// A lake in a new bucket of an S3-compatible server (moto takes unsigned bucket creation).
/// A lake in a new bucket of the emulator at `endpoint`.
fn s3_lake(endpoint: &str) -> Result<examflow_ingest::lake::LakeLocation> {
    examflow_benches::s3::Bucket::create(endpoint, "bench")?.lake("lake")
}

// ---------------------------------------------------------------- 3. freshness

/// Sampled keen_id → when the producer handed its message to librdkafka.
type Samples = Arc<Mutex<HashMap<String, Instant>>>;

struct Fresh {
    latencies: Vec<Duration>,
    /// The bare consumers' send → receive latencies of the same samples (the ingest's
    /// consumer settings; `fetch.wait.max.ms` = FAST_FETCH_WAIT_MS).
    bare: Vec<Duration>,
    bare_fast: Vec<Duration>,
    sampled: usize,
    polls: Vec<Duration>,
    warm_up: Duration,
    missing: usize,
    /// Send → first committed-only query of the second `Lake` (refreshed before each query)
    /// that returns the sample.
    replica: Vec<Duration>,
    replica_missing: usize,
    replica_polls: Vec<Duration>,
    produce_wall: Duration,
    delivery_failures: usize,
}

/// Which of `keys` does `SELECT … FROM attempts` return? `live`: committed + this process's
/// tail; otherwise committed only.
async fn visible(lake: &Lake, keys: &[String], live: bool) -> Result<Vec<String>> {
    let ctx = new_session();
    register_lake(&ctx, lake, live).await?;
    let list = keys
        .iter()
        .map(|k| format!("'{}'", k.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let batches = run_sql(
        &ctx,
        &format!("SELECT keen_id FROM attempts WHERE keen_id IN ({list})"),
    )
    .await?;
    let mut seen = Vec::new();
    for b in &batches {
        let column = cast(b.column(0), &DataType::Utf8)?;
        let column = column.as_string::<i32>();
        seen.extend(column.iter().flatten().map(str::to_string));
    }
    Ok(seen)
}

/// A bare consumer on the freshness topic (its own group): for every sampled key, the time
/// from the producer's send to receiving the message. Runs until `stop` is set.
async fn bare_latency(
    brokers: String,
    topic: String,
    fetch_wait_ms: Option<u32>,
    sent: Samples,
    warm_key: String,
    warm_seen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Duration>> {
    let consumer = bare_consumer(&brokers, "bench-bare-fresh", fetch_wait_ms)?;
    consumer.subscribe(&[topic.as_str()])?;
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(received) = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
        else {
            continue;
        };
        let message = received?;
        let at = Instant::now();
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        if key == warm_key {
            warm_seen.store(true, Ordering::Relaxed);
        } else if let Some(sent_at) = sent.lock().expect("sent lock").get(key) {
            latencies.push(at - *sent_at);
        }
    }
    Ok(latencies)
}

/// The replica's view: a second `Lake` on the same location, refreshed from storage before
/// each committed-only query, until `stop` is set.
async fn replica_latency(
    replica: Arc<Lake>,
    samples: Samples,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut latencies = Vec::new();
    let mut polls = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let pending: Vec<String> = samples
            .lock()
            .expect("replica samples lock")
            .keys()
            .cloned()
            .collect();
        if pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        poll_once(
            &replica,
            &samples,
            &pending,
            false,
            &mut latencies,
            &mut polls,
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((latencies, polls))
}

async fn freshness_driver(
    settings: KafkaSettings,
    lake: Arc<Lake>,
    replica: Arc<Lake>,
    topic: String,
    docs: Vec<(String, String)>,
    rate: usize,
    every: usize,
) -> Result<Fresh> {
    let producer = settings.producer()?;
    let samples: Samples = Arc::default();
    let replica_samples: Samples = Arc::default();
    let sent: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (warm_key, warm_doc) = &docs[0];
    // Two baselines: the ingest's consumer settings, and a short fetch wait (information).
    let mut warm_seen = Vec::new();
    let mut bare = Vec::new();
    for fetch_wait_ms in [None, Some(FAST_FETCH_WAIT_MS)] {
        let seen = Arc::new(AtomicBool::new(false));
        warm_seen.push(seen.clone());
        bare.push(tokio::spawn(bare_latency(
            settings.brokers.clone(),
            topic.clone(),
            fetch_wait_ms,
            sent.clone(),
            warm_key.clone(),
            seen,
            stop.clone(),
        )));
    }
    // Warm-up: one attempt, visible (and received by the bare consumer) before the steady
    // phase starts: consumer groups joined, partitions assigned.
    let t = Instant::now();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(warm_key.as_str())
                .payload(warm_doc.as_str()),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow!("producing the warm-up message: {e}"))?;
    loop {
        if warm_seen.iter().all(|seen| seen.load(Ordering::Relaxed))
            && !visible(&lake, std::slice::from_ref(warm_key), true)
                .await?
                .is_empty()
        {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "warm-up message not visible after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warm_up = t.elapsed();
    let replica_stop = Arc::new(AtomicBool::new(false));
    let replica_task = tokio::spawn(replica_latency(
        replica,
        replica_samples.clone(),
        replica_stop.clone(),
    ));

    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let producing = {
        let samples = samples.clone();
        let replica_samples = replica_samples.clone();
        let sent = sent.clone();
        let producer = producer.clone();
        let topic = topic.clone();
        let docs = docs[1..].to_vec();
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(docs.len());
            let mut failures = 0usize;
            for (i, (key, doc)) in docs.iter().enumerate() {
                tokio::time::sleep_until(t0 + period * i as u32).await;
                if (i + 1) % every == 0 {
                    let now = Instant::now();
                    samples
                        .lock()
                        .expect("samples lock")
                        .insert(key.clone(), now);
                    replica_samples
                        .lock()
                        .expect("replica samples lock")
                        .insert(key.clone(), now);
                    sent.lock().expect("sent lock").insert(key.clone(), now);
                }
                match producer.send_result(
                    FutureRecord::to(&topic)
                        .key(key.as_str())
                        .payload(doc.as_str()),
                ) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err(_) => failures += 1,
                }
            }
            let wall = t0.elapsed();
            for d in deliveries {
                if !matches!(d.await, Ok(Ok(_))) {
                    failures += 1;
                }
            }
            (wall, failures)
        })
    };

    let mut producing = producing;
    let mut latencies = Vec::new();
    let mut polls = Vec::new();
    let mut produced = None;
    let mut producer_done_at: Option<Instant> = None;
    loop {
        if produced.is_none() && producing.is_finished() {
            produced = Some((&mut producing).await?);
            producer_done_at = Some(Instant::now());
        }
        let pending: Vec<String> = samples
            .lock()
            .expect("samples lock")
            .keys()
            .cloned()
            .collect();
        if pending.is_empty() {
            if produced.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if producer_done_at.is_some_and(|at| at.elapsed() > Duration::from_secs(30)) {
            break;
        }
        poll_once(&lake, &samples, &pending, true, &mut latencies, &mut polls).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (produce_wall, delivery_failures) = produced.unwrap_or_default();
    let missing = samples.lock().expect("samples lock").len();
    // The replica sees a sample only after the commit that holds it (up to a commit
    // interval after the live query): wait for its last samples, 30 s at most.
    let waited = Instant::now();
    while !replica_samples
        .lock()
        .expect("replica samples lock")
        .is_empty()
        && waited.elapsed() < Duration::from_secs(30)
        && !replica_task.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replica_stop.store(true, Ordering::Relaxed);
    let (replica_latencies, replica_polls) = replica_task.await??;
    let replica_missing = replica_samples.lock().expect("replica samples lock").len();
    // The bare consumer is faster than the lake; give it a moment for its last samples.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut bare_latencies = Vec::new();
    for handle in bare {
        bare_latencies.push(handle.await??);
    }
    let [bare, bare_fast]: [Vec<Duration>; 2] = bare_latencies
        .try_into()
        .map_err(|_| anyhow!("two baselines"))?;
    let sampled = sent.lock().expect("sent lock").len();
    Ok(Fresh {
        latencies,
        bare,
        bare_fast,
        sampled,
        polls,
        warm_up,
        missing,
        replica: replica_latencies,
        replica_missing,
        replica_polls,
        produce_wall,
        delivery_failures,
    })
}

/// One query for the pending samples (`live`: committed + tail; otherwise a refresh and the
/// committed rows, as a replica sees them); records the latency of each one it returns.
async fn poll_once(
    lake: &Lake,
    samples: &Samples,
    pending: &[String],
    live: bool,
    latencies: &mut Vec<Duration>,
    polls: &mut Vec<Duration>,
) -> Result<()> {
    let started = Instant::now();
    if !live {
        // A replica sees only what it re-read from storage.
        lake.attempts.refresh().await?;
    }
    let seen = visible(lake, pending, live).await?;
    let answered = Instant::now();
    polls.push(answered - started);
    let mut samples = samples.lock().expect("samples lock");
    for key in seen {
        if let Some(sent) = samples.remove(&key) {
            latencies.push(answered - sent);
        }
    }
    Ok(())
}

/// One row of the freshness table: `| label | samples | p50 | p90 | p99 | max |` in ms of
/// `sorted` (ascending).
fn latency_row(
    out: &mut String,
    label: &str,
    samples: String,
    sorted: &[Duration],
) -> std::fmt::Result {
    writeln!(
        out,
        "| {label} | {samples} | {} | {} | {} | {} |",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.9)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default())
    )
}

/// Polls the commit counters while the freshness run goes on.
struct CommitWatch {
    task: tokio::task::JoinHandle<()>,
    phases: Arc<Mutex<Vec<Duration>>>,
}

impl CommitWatch {
    fn abort(&self) {
        self.task.abort();
    }

    async fn await_phases(self) -> Vec<Duration> {
        let _ = self.task.await;
        let mut phases = self.phases.lock().expect("commit phases lock").clone();
        phases.sort();
        phases
    }
}

async fn section_fresh(
    args: &Args,
    broker: &Broker,
    tmp: &Path,
    s3_endpoint: Option<&str>,
    out: &mut String,
) -> Result<()> {
    let (rate, seconds, every) = if args.quick {
        (200, 5, 10)
    } else {
        (500, 20, 25)
    };
    let n = rate * seconds;
    let commit_interval = Duration::from_secs(2);
    let settings = KafkaSettings {
        brokers: broker.brokers.clone(),
        ..KafkaSettings::default()
    };
    let mut ingest_kafka = settings.clone();
    if let Some(ms) = args.ingest_fetch_wait_ms {
        ingest_kafka
            .properties
            .insert("fetch.wait.max.ms".into(), ms.to_string());
    }
    let text = generate(tmp, n + 1, 13)?;
    let docs: Vec<(String, String)> = split_documents(&text)?
        .into_iter()
        .map(|d| {
            let key = document_key(d).context("generated attempt without keen_id")?;
            Ok((key, d.get().to_string()))
        })
        .collect::<Result<_>>()?;
    let topic = unique("bench-fresh");
    settings
        .create_topics(std::slice::from_ref(&topic), PARTITIONS)
        .await?;
    let dir = tempfile::tempdir()?;
    let location = match s3_endpoint {
        Some(endpoint) => s3_lake(endpoint)?,
        None => examflow_ingest::lake::LakeLocation::in_data_dir(dir.path()),
    };
    let lake = Arc::new(Lake::open_at(location.clone()).await?);
    let replica = Arc::new(Lake::open_at(location).await?);
    let registry = Registry::new();
    let lake_metrics = LakeMetrics::new(&registry);
    let ingest_settings = lake_settings(&topic, commit_interval);
    let flush_interval = ingest_settings.flush_interval;
    let ingest = LakeIngest::new(
        lake.clone(),
        ingest_kafka,
        ingest_settings,
        IngestMetrics::new(&registry),
        lake_metrics.clone(),
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Commit rounds: the `attempts` commit (first table) and the `dead_letters` commit (last)
    // end when their counters move; between the two the receive loop is busy committing.
    let commit_watch = {
        let commits = lake_metrics.commits.clone();
        let shared: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let out = shared.clone();
        let task = tokio::spawn(async move {
            let count = |t: &str| commits.with_label_values(&[t]).get();
            let (mut first_seen, mut last_seen) = (0, 0);
            let mut first_at = None;
            loop {
                let (first, last) = (count("attempts"), count("dead_letters"));
                if first > first_seen {
                    first_seen = first;
                    first_at = Some(Instant::now());
                }
                if last > last_seen {
                    last_seen = last;
                    if let Some(at) = first_at.take() {
                        shared
                            .lock()
                            .expect("commit phases lock")
                            .push(at.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        CommitWatch { task, phases: out }
    };
    let driver = tokio::spawn({
        let lake = lake.clone();
        let topic = topic.clone();
        async move {
            let result = freshness_driver(settings, lake, replica, topic, docs, rate, every).await;
            let _ = shutdown.send(true);
            result
        }
    });
    if let Err(e) = ingest.run(shutdown_rx).await {
        driver.abort();
        return Err(e.into());
    }
    let fresh = driver.await??;
    commit_watch.abort();
    let commit_phases = commit_watch.await_phases().await;
    let committed = committed_rows(&lake).await?;
    let pipeline = lake_metrics.freshness.with_label_values(&[topic.as_str()]);

    let mut lat = fresh.latencies.clone();
    lat.sort();
    let mut polls = fresh.polls.clone();
    polls.sort();
    let mut replica = fresh.replica.clone();
    replica.sort();
    let mut replica_polls = fresh.replica_polls.clone();
    replica_polls.sort();
    writeln!(
        out,
        "### 3{}. Freshness: produce → visible in a live query{}\n",
        if s3_endpoint.is_some() { "b" } else { "" },
        if s3_endpoint.is_some() {
            ", the lake on S3"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "Lake: {}. `LakeIngest` in-process (commit interval {} s, flush interval {} ms, {}, housekeeping \
         off; commits run in a background task beside the receive loop) on a fresh topic ({PARTITIONS} partitions) and lake. After one warm-up attempt \
         became visible ({:.2} s after its send: group join + assignment), {n} attempts \
         (`--seed 13`) were produced at {rate}/s ({:.2} s actual, examflow's producer: \
         acks=all, linger 2 ms; {} delivery failures), keyed by keen_id; every {every}th is a \
         sample whose send instant (just before `send_result`) is recorded. A poller task \
         repeatedly (10 ms pause between queries) opens a session, `register_lake(live = \
         true)` and runs `SELECT keen_id FROM attempts WHERE keen_id IN (pending samples)`; \
         a sample's latency = answer time of the first query returning it − send instant (an \
         upper bound: it includes up to one poll period). Baselines, in the same run: bare \
         rdkafka `StreamConsumer`s (own groups, joined before the steady phase) reading the \
         topic at the same time, latency = receive − send instant of the same samples; one \
         with the ingest's consumer settings, one with a short `fetch.wait.max.ms`. Replica: \
         a second `Lake` opened on the same location polls the same way, each poll \
         `attempts.refresh()` (re-read the Delta log) then the query over committed rows \
         only; a server that does not ingest gets this plus up to `lake_refresh_ms`. After \
         the run the committed `attempts` hold {} rows (expected {}).\n",
        match s3_endpoint {
            Some(endpoint) => format!("S3 at {endpoint} (a new bucket)"),
            None => "a local temp directory".to_string(),
        },
        commit_interval.as_secs(),
        flush_interval.as_millis(),
        match args.ingest_fetch_wait_ms {
            Some(ms) => format!("kafka.properties fetch.wait.max.ms = {ms}"),
            None => "librdkafka's default fetch.wait.max.ms (500)".to_string(),
        },
        secs(fresh.warm_up),
        secs(fresh.produce_wall),
        fresh.delivery_failures,
        committed.attempts,
        n + 1
    )?;
    writeln!(
        out,
        "| measure | samples | p50 ms | p90 ms | p99 ms | max ms |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    latency_row(
        out,
        "send → first live query that returns it",
        format!("{} (missing: {})", lat.len(), fresh.missing),
        &lat,
    )?;
    latency_row(
        out,
        "replica: send → first committed-only query of a second `Lake` that returns it",
        format!("{} (missing: {})", replica.len(), fresh.replica_missing),
        &replica,
    )?;
    for (label, latencies) in [
        (
            "baseline: send → received by a bare rdkafka consumer (ingest's consumer settings)"
                .to_string(),
            &fresh.bare,
        ),
        (
            format!("information: the same with fetch.wait.max.ms = {FAST_FETCH_WAIT_MS}"),
            &fresh.bare_fast,
        ),
    ] {
        let mut sorted = latencies.clone();
        sorted.sort();
        let samples = format!("{} of {}", sorted.len(), fresh.sampled);
        latency_row(out, &label, samples, &sorted)?;
    }
    latency_row(
        out,
        "duration of one live query (session + register_lake + SELECT)",
        polls.len().to_string(),
        &polls,
    )?;
    latency_row(
        out,
        "duration of one replica poll (refresh + session + register_lake + SELECT)",
        replica_polls.len().to_string(),
        &replica_polls,
    )?;
    latency_row(
        out,
        "commit round, `attempts` committed → `dead_letters` committed (in the background; the receive loop goes on)",
        format!("{} rounds", commit_phases.len()),
        &commit_phases,
    )?;
    let count = pipeline.get_sample_count();
    writeln!(
        out,
        "\nThe pipeline's own `examflow_ingest_freshness_seconds` (Kafka timestamp → flushed to \
         the tail, all {count} messages): mean {:.0} ms.\n",
        if count > 0 {
            pipeline.get_sample_sum() / count as f64 * 1e3
        } else {
            f64::NAN
        }
    )?;
    let p99 = percentile(&lat, 0.99);
    writeln!(
        out,
        "Target p99 < 1 s: {} (p99 {} ms{}).\n",
        if p99 < Duration::from_secs(1) && fresh.missing == 0 {
            "met"
        } else {
            "NOT met"
        },
        ms(p99),
        if fresh.missing > 0 {
            format!(", {} samples never seen within 30 s", fresh.missing)
        } else {
            String::new()
        }
    )?;
    Ok(())
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let mut out = String::new();
    writeln!(
        out,
        "## lake-bench{}\n",
        if args.quick { " (--quick)" } else { "" }
    )?;
    writeln!(out, "- CPU: {}", cpu_line())?;
    writeln!(out, "- load average at start: {}\n", loadavg())?;
    let mut printed = 0;
    let mut progress = |out: &str| {
        eprint!("{}", &out[printed..]);
        printed = out.len();
    };
    if args.runs(Section::Decode) {
        section_decode(&args, tmp.path(), &mut out)?;
        progress(&out);
    }
    if args.runs(Section::E2e) || args.runs(Section::Fresh) {
        let broker = Broker::get()?;
        writeln!(out, "Broker: {}.\n", broker.label)?;
        if args.runs(Section::E2e) {
            section_e2e(&args, &broker, tmp.path(), &mut out).await?;
            writeln!(out, "(load average after section 2: {})\n", loadavg())?;
            progress(&out);
        }
        if args.runs(Section::Fresh) {
            section_fresh(&args, &broker, tmp.path(), None, &mut out).await?;
            progress(&out);
            if let Some(endpoint) = &args.s3_endpoint {
                section_fresh(&args, &broker, tmp.path(), Some(endpoint), &mut out).await?;
            }
        }
    }
    writeln!(out, "(load average at the end: {})", loadavg())?;
    println!("{out}");
    Ok(())
}
