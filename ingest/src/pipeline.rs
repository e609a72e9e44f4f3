//! The lake ingest pipeline: Kafka topics `exams` (assessment attempts) and
//! `<prefix>.exams.score` (Debezium change events) into the Delta tables of [`crate::lake`].
//!
//! One loop per process: receive → decode → append to the tables' in-memory tails (visible to
//! live queries at once) → every `commit_interval` commit each table with transaction actions
//! recording the last offset per partition → only then commit the Kafka offsets (advisory).
//! On (re)assignment, partitions start after the offsets recorded in the tables, so a crash
//! anywhere neither loses nor doubles rows (see [`crate::lake::table`]).
//!
//! Replays (the same attempt produced twice) are dropped by a de-duplication key (default
//! `keen_id`): the first copy in the `attempts` table wins, the others are counted and skipped
//! in every attempt table. `attempts` is committed before its child tables, so after a crash
//! the winner is still known when the children are written.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::attempts::{Attempt, AttemptBatchBuilder, DedupKey};
use crate::debezium::parse_change_event;
use crate::delivery::{Origin, RECORD_OVERHEAD_BYTES, produce_dead_letter};
use crate::error::{IngestError, Result};
use crate::kafka::KafkaSettings;
use crate::lake::changes::{ChangeOutcome, DeadLetterBuilder, ScoreChangeBuilder};
use crate::lake::query::{new_session, run_sql};
use crate::lake::{Lake, LakeTable, TopicPartition};
use crate::metrics::IngestMetrics;
use crate::source::SourcePosition;

/// Settings of the lake ingest, with their defaults in [`Default`].
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Consumer group. Default `examflow-ingest`.
    pub group_id: String,
    /// Names the writer in the tables' transaction actions (`<app>:<topic>:<partition>`).
    /// Default `examflow-ingest`.
    pub transaction_app_id: String,
    /// Topic of assessment-attempt documents. Default `exams`.
    pub attempts_topic: String,
    /// Topic of Debezium change events of result documents. Default
    /// `mongo-trigger-topic.exams.score`. Empty: not consumed.
    pub changes_topic: String,
    /// How often the tails are committed to Delta. Default 2 s.
    pub commit_interval: Duration,
    /// How often new rows become visible to live queries. Default 100 ms.
    pub flush_interval: Duration,
    /// Messages larger than this are dead letters. Default 8 MiB.
    pub max_message_bytes: usize,
    pub dedup_key: DedupKey,
    /// Also produce dead letters to `<topic>.dlq` (the change topic's are produced by the
    /// score-card consumer when the server runs it).
    pub dead_letter_topics: bool,
    pub change_dead_letter_topic: bool,
    /// Housekeeping (compaction, vacuum) period. Zero: never. Default 10 min.
    pub housekeeping_interval: Duration,
    /// Housekeeping also runs after this many commits that carried new messages, so a busy
    /// lake never holds many more small files per table than this (each one costs every
    /// query and the table's in-memory snapshot). Zero: only by time. Default 100.
    pub housekeeping_after_commits: usize,
    /// Files removed by compaction are deleted after this long. Default 1 h.
    pub vacuum_retention: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            group_id: "examflow-ingest".into(),
            transaction_app_id: "examflow-ingest".into(),
            attempts_topic: "exams".into(),
            changes_topic: "mongo-trigger-topic.exams.score".into(),
            commit_interval: Duration::from_secs(2),
            flush_interval: Duration::from_millis(100),
            max_message_bytes: 8 << 20,
            dedup_key: DedupKey::default(),
            dead_letter_topics: true,
            change_dead_letter_topic: true,
            housekeeping_interval: Duration::from_secs(600),
            housekeeping_after_commits: 100,
            vacuum_retention: Duration::from_secs(3600),
        }
    }
}

/// Metrics of the lake ingest.
#[derive(Clone)]
pub struct LakeMetrics {
    pub rows: IntCounterVec,
    pub bytes: IntCounterVec,
    pub messages: IntCounterVec,
    pub commits: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub freshness: HistogramVec,
    /// Ability estimates updated (one per user per batch of their attempts).
    pub ability_updates: IntCounter,
    /// Users with an ability estimate.
    pub abilities: IntGauge,
}

impl LakeMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = LakeMetrics {
            rows: IntCounterVec::new(
                Opts::new("examflow_lake_rows_total", "Rows committed to lake tables."),
                &["table"],
            )
            .expect("valid metric"),
            bytes: IntCounterVec::new(
                Opts::new("examflow_ingest_bytes_total", "Message bytes read, by topic."),
                &["topic"],
            )
            .expect("valid metric"),
            messages: IntCounterVec::new(
                Opts::new(
                    "examflow_ingest_messages_total",
                    "Messages read, by topic and outcome (stored, duplicate, dead_letter, skipped).",
                ),
                &["topic", "outcome"],
            )
            .expect("valid metric"),
            commits: IntCounterVec::new(
                Opts::new("examflow_lake_commits_total", "Delta commits (batches), by table."),
                &["table"],
            )
            .expect("valid metric"),
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "examflow_lake_dead_letters_total",
                    "Messages the lake ingest set aside in dead_letters, by topic.",
                ),
                &["topic"],
            )
            .expect("valid metric"),
            freshness: HistogramVec::new(
                HistogramOpts::new(
                    "examflow_ingest_freshness_seconds",
                    "From a message's Kafka timestamp to being visible to live queries.",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0]),
                &["topic"],
            )
            .expect("valid metric"),
            ability_updates: IntCounter::new(
                "examflow_ability_updates_total",
                "Per-user ability estimates updated from arriving attempts.",
            )
            .expect("valid metric"),
            abilities: IntGauge::new(
                "examflow_abilities_tracked",
                "Users (user_exam_id) with a current ability estimate.",
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.rows.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.bytes.clone()),
            Box::new(m.messages.clone()),
            Box::new(m.commits.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.freshness.clone()),
            Box::new(m.ability_updates.clone()),
            Box::new(m.abilities.clone()),
        ] {
            let _ = registry.register(c);
        }
        m
    }
}

/// Whether a message was handled already by this process: at or below the last offset it
/// handled of that partition (see the receive loop).
fn is_replay(
    positions: &BTreeMap<TopicPartition, i64>,
    partition: &TopicPartition,
    offset: i64,
) -> bool {
    positions.get(partition).is_some_and(|&last| offset <= last)
}

/// Where each assigned partition starts: one past the lowest offset all its tables hold.
type StartOffsets = Arc<Mutex<HashMap<TopicPartition, i64>>>;

/// Seeks newly assigned partitions to the positions recorded in the tables, and reports
/// consumer lag from librdkafka's statistics.
struct IngestContext {
    starts: StartOffsets,
    metrics: IngestMetrics,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.record_consumer_lag(statistics);
    }
}

impl ConsumerContext for IngestContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let starts = self.starts.lock().expect("start offsets lock").clone();
        let mut positioned = TopicPartitionList::new();
        for element in assigned.elements() {
            let key = (element.topic().to_string(), element.partition());
            let offset = starts
                .get(&key)
                .map_or(Offset::Beginning, |next| Offset::Offset(*next));
            if let Err(e) =
                positioned.add_partition_offset(element.topic(), element.partition(), offset)
            {
                warn!(error = %e, "cannot position partition");
            }
        }
        info!(partitions = ?positioned.to_topic_map(), "assigned; resuming from the lake's offsets");
        if let Err(e) = consumer.assign(&positioned) {
            warn!(error = %e, "re-assigning with the lake's offsets failed");
        }
    }
}

/// First copy of each attempt key: (partition, offset) of the message that is stored.
struct DedupIndex {
    first: HashMap<String, (i32, i64)>,
    /// The `attempts` version the index has read up to.
    version: Option<u64>,
}

impl DedupIndex {
    async fn load(table: &LakeTable, key: DedupKey) -> Result<Self> {
        let committed = CommittedKeys::read(table, key).await?;
        Ok(DedupIndex {
            first: committed.first,
            version: committed.version,
        })
    }

    /// Learns keys another writer committed (the earliest position of a key wins).
    fn merge(&mut self, committed: CommittedKeys) {
        for (key, position) in committed.first {
            keep_earliest(&mut self.first, key, position);
        }
        self.version = committed.version;
    }

    /// True when this message is the stored copy of its key (first seen, or seen at this very
    /// position before a restart).
    fn admit(&mut self, key: &str, partition: i32, offset: i64) -> bool {
        match self.first.get(key) {
            Some(position) => *position == (partition, offset),
            None => {
                self.first.insert(key.to_string(), (partition, offset));
                true
            }
        }
    }
}

/// Records `position` for `key` unless an earlier one is known (the stored copy of a key is
/// its first message).
fn keep_earliest(first: &mut HashMap<String, (i32, i64)>, key: String, position: (i32, i64)) {
    first
        .entry(key)
        .and_modify(|p| *p = (*p).min(position))
        .or_insert(position);
}

/// Every key committed to `attempts`, read in the background after another writer's commit.
struct CommittedKeys {
    version: Option<u64>,
    first: HashMap<String, (i32, i64)>,
}

impl CommittedKeys {
    async fn read(table: &LakeTable, key: DedupKey) -> Result<Self> {
        let committed = table.committed();
        let mut keys = CommittedKeys {
            version: committed.version(),
            first: HashMap::new(),
        };
        if committed.version().is_none() {
            return Ok(keys);
        }
        let ctx = new_session();
        committed
            .update_datafusion_session(&ctx.state())
            .map_err(|e| IngestError::LakeSetup(e.to_string()))?;
        ctx.register_table(
            "attempts",
            committed
                .table_provider()
                .await
                .map_err(IngestError::Query)?,
        )?;
        let column = dedup_column(key);
        let batches = run_sql(
            &ctx,
            &format!("SELECT {column}, source_partition, source_offset FROM attempts"),
        )
        .await?;
        for batch in batches {
            let values = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| IngestError::LakeSetup(e.to_string()))?;
            let values = values.as_string::<i32>();
            let partitions = batch.column(1).as_primitive::<Int32Type>();
            let offsets = batch.column(2).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                if values.is_null(row) {
                    continue;
                }
                let position = (partitions.value(row), offsets.value(row));
                keep_earliest(&mut keys.first, values.value(row).to_string(), position);
            }
        }
        Ok(keys)
    }
}

/// Rows decoded since the last flush to the tails.
#[derive(Default)]
struct Builders {
    attempts: AttemptBatchBuilder,
    scores: ScoreChangeBuilder,
    dead_letters: DeadLetterBuilder,
}

/// How often the ingest saves the ability snapshot (and at every clean stop), so a start
/// replays at most this much of `attempt_questions`.
const ABILITY_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);

/// A dead letter waiting for its `<topic>.dlq` delivery.
type PendingDlq = tokio::task::JoinHandle<()>;

pub struct LakeIngest {
    lake: Arc<Lake>,
    kafka: KafkaSettings,
    settings: IngestSettings,
    metrics: IngestMetrics,
    lake_metrics: LakeMetrics,
}

impl LakeIngest {
    pub fn new(
        lake: Arc<Lake>,
        kafka: KafkaSettings,
        settings: IngestSettings,
        metrics: IngestMetrics,
        lake_metrics: LakeMetrics,
    ) -> Self {
        LakeIngest {
            lake,
            kafka,
            settings,
            metrics,
            lake_metrics,
        }
    }

    fn topics(&self) -> Vec<String> {
        [&self.settings.attempts_topic, &self.settings.changes_topic]
            .into_iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect()
    }

    /// Tables written from a topic, in commit order.
    fn tables_of(&self, topic: &str) -> Vec<&Arc<LakeTable>> {
        if topic == self.settings.attempts_topic {
            vec![
                &self.lake.attempts,
                &self.lake.attempt_questions,
                &self.lake.attempt_options,
                &self.lake.dead_letters,
            ]
        } else {
            vec![
                &self.lake.score_changes,
                &self.lake.score_detail_changes,
                &self.lake.dead_letters,
            ]
        }
    }

    /// The partitions of the topics (broker metadata) and their start offsets, from the
    /// tables' transaction actions.
    async fn start_offsets(
        &self,
        consumer: &StreamConsumer<IngestContext>,
    ) -> Result<(Vec<TopicPartition>, HashMap<TopicPartition, i64>)> {
        let mut partitions = Vec::new();
        for topic in self.topics() {
            let ids = topic_partitions(consumer, &topic);
            partitions.extend(ids.iter().map(|p| (topic.clone(), *p)));
        }
        let starts = self.lake_starts(&partitions).await?;
        Ok((partitions, starts))
    }

    /// One past the lowest offset every table of its topic holds, for each of `partitions`
    /// that all those tables know (re-reads the tables' logs).
    async fn lake_starts(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let mut starts = HashMap::new();
        for topic in self.topics() {
            let tps: Vec<TopicPartition> = partitions
                .iter()
                .filter(|(t, _)| *t == topic)
                .cloned()
                .collect();
            if tps.is_empty() {
                continue;
            }
            let mut lowest: HashMap<TopicPartition, Option<i64>> = HashMap::new();
            for table in self.tables_of(&topic) {
                let versions = table
                    .committed_offsets(&self.settings.transaction_app_id, &tps)
                    .await?;
                for tp in &tps {
                    let v = versions.get(tp).copied();
                    let entry = lowest.entry(tp.clone()).or_insert(v);
                    *entry = match (*entry, v) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                }
            }
            for (tp, version) in lowest {
                if let Some(version) = version {
                    starts.insert(tp, version + 1);
                }
            }
        }
        Ok(starts)
    }

    /// Runs until `shutdown` turns true; commits what it has before returning.
    ///
    /// Delta commits (and housekeeping) run as a background task, one at a time, while this
    /// loop keeps receiving and flushing into the tails: a commit takes hundreds of
    /// milliseconds, and rows arriving meanwhile must still become visible within the flush
    /// interval. Each commit covers a snapshot taken at a flush, so the first `n` tail batches
    /// of every table are exactly the messages up to the snapshot's positions.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        Arc::new(self).run_shared(shutdown).await
    }

    async fn run_shared(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        self.lake_metrics
            .abilities
            .set(self.lake.abilities.len() as i64);
        let starts: StartOffsets = Arc::default();
        let consumer: StreamConsumer<IngestContext> = self
            .kafka
            .client_config()
            .set("group.id", &self.settings.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.kafka.session_timeout_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000")
            // Room for a message past the limit: Kafka returns a batch larger than the fetch
            // size anyway (KIP-74), but some compatible brokers return nothing and the
            // partition would stall; one up to twice the limit still arrives here to become
            // a dead letter.
            .set(
                "fetch.message.max.bytes",
                (2 * self.settings.max_message_bytes + RECORD_OVERHEAD_BYTES)
                    .min(500_000_000)
                    .to_string(),
            )
            .create_with_context(IngestContext {
                starts: starts.clone(),
                metrics: self.metrics.clone(),
            })
            .map_err(|e| IngestError::kafka("creating ingest consumer", e))?;
        let (known_partitions, lake_starts) = self.start_offsets(&consumer).await?;
        *starts.lock().expect("start offsets lock") = lake_starts;
        let topics = self.topics();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| IngestError::kafka(format!("subscribing to {names:?}"), e))?;
        let producer = if self.settings.dead_letter_topics {
            // Brokers that do not auto-create topics would hold dead letters forever.
            for topic in &topics {
                let dlq = KafkaSettings::dead_letter_topic(topic);
                if let Err(e) = self
                    .kafka
                    .create_topics(std::slice::from_ref(&dlq), self.kafka.partitions)
                    .await
                {
                    warn!(topic = %dlq, error = %e, "cannot create the dead-letter topic");
                }
            }
            Some(self.kafka.producer()?)
        } else {
            None
        };
        let mut dedup = DedupIndex::load(&self.lake.attempts, self.settings.dedup_key).await?;
        let mut builders = Builders::default();
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut pending_dlq: Vec<PendingDlq> = Vec::new();
        let mut unflushed_times: Vec<(String, i64)> = Vec::new();
        let mut in_flight: Option<tokio::task::JoinHandle<Result<CommitOutcome>>> = None;
        let mut next_flush = Instant::now() + self.settings.flush_interval;
        let mut next_commit = Instant::now() + self.settings.commit_interval;
        let mut next_ability_snapshot = Instant::now() + ABILITY_SNAPSHOT_INTERVAL;
        let mut next_housekeeping = (!self.settings.housekeeping_interval.is_zero())
            .then(|| Instant::now() + self.settings.housekeeping_interval);
        let mut received_since_commit = false;
        let mut commits_since_housekeeping = 0usize;
        info!(topics = ?topics, group = %self.settings.group_id, lake = %self.lake.location().display(), "lake ingest started");
        loop {
            // While a commit runs, only flushes are due (another commit waits for it).
            let deadline = if in_flight.is_some() {
                next_flush
            } else {
                next_flush.min(next_commit)
            };
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                joined = async { in_flight.as_mut().expect("guarded by the condition").await }, if in_flight.is_some() => {
                    in_flight = None;
                    self.finish_commit(joined, &consumer, &mut dedup, &starts)?;
                    next_commit = Instant::now() + self.settings.commit_interval;
                }
                received = tokio::time::timeout_at(deadline.into(), consumer.recv()) => {
                    match received {
                        Ok(Ok(message)) => {
                            let partition = (message.topic().to_string(), message.partition());
                            // A rebalance that hands this process a partition it already had
                            // seeks it back to the lake's offsets, behind rows still in the
                            // tail: those messages were handled already (they are in the tail
                            // or committed), and handling them again would put two copies of
                            // one offset into one commit.
                            if is_replay(&positions, &partition, message.offset()) {
                                continue;
                            }
                            self.handle(&message, &mut dedup, &mut builders, producer.as_ref(), &mut pending_dlq);
                            received_since_commit = true;
                            positions.insert(partition, message.offset());
                            if let Some(ts) = message.timestamp().to_millis() {
                                unflushed_times.push((message.topic().to_string(), ts));
                            }
                        }
                        Ok(Err(e)) => {
                            warn!(error = %e, "ingest: receive failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(_elapsed) => {}
                    }
                }
            }
            let now = Instant::now();
            if now >= next_flush {
                self.flush(&mut builders, &mut unflushed_times);
                next_flush = now + self.settings.flush_interval;
            }
            if in_flight.is_none() && now >= next_commit {
                self.flush(&mut builders, &mut unflushed_times);
                if received_since_commit {
                    commits_since_housekeeping += 1;
                    received_since_commit = false;
                }
                let after_commits = self.settings.housekeeping_after_commits;
                let housekeeping = next_housekeeping.is_some_and(|at| now >= at)
                    || (after_commits > 0 && commits_since_housekeeping >= after_commits);
                if housekeeping {
                    commits_since_housekeeping = 0;
                    if next_housekeeping.is_some() {
                        next_housekeeping = Some(now + self.settings.housekeeping_interval);
                    }
                }
                let snapshot = now >= next_ability_snapshot;
                if snapshot {
                    next_ability_snapshot = now + ABILITY_SNAPSHOT_INTERVAL;
                }
                let job = self.commit_job(
                    &positions,
                    &known_partitions,
                    &mut pending_dlq,
                    &dedup,
                    housekeeping,
                    snapshot,
                );
                let this = Arc::clone(&self);
                in_flight = Some(tokio::spawn(async move { this.commit(job).await }));
            }
        }
        if let Some(handle) = in_flight.take() {
            let joined = handle.await;
            self.finish_commit(joined, &consumer, &mut dedup, &starts)?;
        }
        self.flush(&mut builders, &mut unflushed_times);
        let job = self.commit_job(
            &positions,
            &known_partitions,
            &mut pending_dlq,
            &dedup,
            false,
            true,
        );
        let outcome = self.commit(job).await;
        self.finish_commit(Ok(outcome), &consumer, &mut dedup, &starts)?;
        info!("lake ingest stopped after a final commit");
        Ok(())
    }

    fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        dedup: &mut DedupIndex,
        builders: &mut Builders,
        producer: Option<&rdkafka::producer::FutureProducer>,
        pending_dlq: &mut Vec<PendingDlq>,
    ) {
        let topic = message.topic();
        let payload = message.payload();
        let source = SourcePosition {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            ingested_at_us: chrono::Utc::now().timestamp_micros(),
        };
        self.lake_metrics
            .bytes
            .with_label_values(&[topic])
            .inc_by(payload.map_or(0, <[u8]>::len) as u64);
        let outcome: std::result::Result<&'static str, String> =
            if payload.is_some_and(|p| p.len() > self.settings.max_message_bytes) {
                Err(format!(
                    "message of {} bytes is larger than the limit of {} bytes",
                    payload.map_or(0, <[u8]>::len),
                    self.settings.max_message_bytes
                ))
            } else if topic == self.settings.attempts_topic {
                match payload.filter(|p| !p.is_empty()) {
                    None => Err("empty message (no attempt document)".to_string()),
                    Some(bytes) => match Attempt::parse(bytes) {
                        Err(e) => Err(format!("attempt: {e}")),
                        Ok(attempt) => match attempt.key(self.settings.dedup_key) {
                            None => Err(format!(
                                "attempt has no de-duplication key {}",
                                self.settings.dedup_key
                            )),
                            Some(key) => {
                                if dedup.admit(key, source.partition, source.offset) {
                                    builders.attempts.append(&attempt, &source);
                                    Ok("stored")
                                } else {
                                    Ok("duplicate")
                                }
                            }
                        },
                    },
                }
            } else {
                let message_time = message.timestamp().to_millis().map(|ms| ms * 1000);
                match parse_change_event(message.key(), payload) {
                    Err(e) => Err(format!("change event: {e}")),
                    Ok(event) => match builders.scores.append(&event, message_time, &source) {
                        ChangeOutcome::Applied => Ok("stored"),
                        ChangeOutcome::Skipped(_) => Ok("skipped"),
                        ChangeOutcome::Rejected(reason) => Err(format!("change event: {reason}")),
                    },
                }
            };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(reason) => {
                builders
                    .dead_letters
                    .append(&reason, message.key(), payload, &source);
                self.lake_metrics
                    .dead_letters
                    .with_label_values(&[topic])
                    .inc();
                let to_topic =
                    topic == self.settings.attempts_topic || self.settings.change_dead_letter_topic;
                if let Some(producer) = producer.filter(|_| to_topic) {
                    pending_dlq.push(spawn_dead_letter(
                        producer,
                        message,
                        reason,
                        self.kafka.max_message_bytes,
                    ));
                }
                "dead_letter"
            }
        };
        self.lake_metrics
            .messages
            .with_label_values(&[topic, outcome])
            .inc();
    }

    /// Moves decoded rows into the tables' tails, where live queries see them.
    fn flush(&self, builders: &mut Builders, times: &mut Vec<(String, i64)>) {
        if builders.attempts.rows() > 0 {
            let batches = builders.attempts.finish();
            self.lake.attempts.push_tail(batches.attempts);
            let updated = self.lake.abilities.observe(&batches.questions);
            self.lake_metrics.ability_updates.inc_by(updated as u64);
            self.lake_metrics
                .abilities
                .set(self.lake.abilities.len() as i64);
            self.lake.attempt_questions.push_tail(batches.questions);
            self.lake.attempt_options.push_tail(batches.options);
        }
        if builders.scores.rows() > 0 {
            let (changes, details) = builders.scores.finish();
            self.lake.score_changes.push_tail(changes);
            self.lake.score_detail_changes.push_tail(details);
        }
        if builders.dead_letters.rows() > 0 {
            self.lake
                .dead_letters
                .push_tail(builders.dead_letters.finish());
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (topic, ts) in times.drain(..) {
            self.lake_metrics
                .freshness
                .with_label_values(&[topic.as_str()])
                .observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
    }

    /// The tables in the order a commit writes them, each with the topic whose positions
    /// its transaction actions record (`None`: every topic).
    fn commit_order(&self) -> [(&Arc<LakeTable>, Option<&str>); 6] {
        let attempts = Some(self.settings.attempts_topic.as_str());
        let changes = Some(self.settings.changes_topic.as_str());
        [
            (&self.lake.attempts, attempts),
            (&self.lake.attempt_questions, attempts),
            (&self.lake.attempt_options, attempts),
            (&self.lake.score_changes, changes),
            (&self.lake.score_detail_changes, changes),
            (&self.lake.dead_letters, None),
        ]
    }

    /// Snapshot for the next commit; call right after a flush.
    fn commit_job(
        &self,
        positions: &BTreeMap<TopicPartition, i64>,
        known_partitions: &[TopicPartition],
        pending_dlq: &mut Vec<PendingDlq>,
        dedup: &DedupIndex,
        housekeeping: bool,
        snapshot_abilities: bool,
    ) -> CommitJob {
        CommitJob {
            positions: positions.clone(),
            tail_batches: self
                .commit_order()
                .map(|(table, _)| table.tail_batches())
                .to_vec(),
            pending_dlq: std::mem::take(pending_dlq),
            known_partitions: known_partitions.to_vec(),
            dedup_version: dedup.version,
            housekeeping,
            abilities: snapshot_abilities
                .then(|| self.lake.abilities.encode_state())
                .flatten(),
        }
    }

    /// Commits the snapshot's tail batches of every table (runs beside the receive loop).
    async fn commit(&self, job: CommitJob) -> Result<CommitOutcome> {
        let CommitJob {
            positions,
            tail_batches,
            pending_dlq,
            known_partitions,
            dedup_version,
            housekeeping,
            abilities,
        } = job;
        let mut outcome = CommitOutcome {
            positions,
            lake_starts: HashMap::new(),
            dedup: None,
        };
        if outcome.positions.is_empty() {
            if housekeeping {
                crate::lake::housekeeping::run(&self.lake, self.settings.vacuum_retention).await;
            }
            return Ok(outcome);
        }
        let positions = &outcome.positions;
        // Dead letters reach their topic before the offsets that covered them are committed.
        for handle in pending_dlq {
            let _ = handle.await;
        }
        let mut own_attempts_version = None;
        for ((table, topic), batches) in self.commit_order().into_iter().zip(tail_batches) {
            let table_positions: BTreeMap<TopicPartition, i64> = positions
                .iter()
                .filter(|((t, _), _)| topic.is_none_or(|topic| t == topic))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            if table_positions.is_empty() {
                continue;
            }
            let report = table
                .commit_tail(&self.settings.transaction_app_id, &table_positions, batches)
                .await?;
            if Arc::ptr_eq(table, &self.lake.attempts) {
                own_attempts_version = report.version;
            }
            if Arc::ptr_eq(table, &self.lake.attempt_questions)
                && let Some(version) = report.version
            {
                self.lake.abilities.note_commit(version);
            }
            if let Some(version) = report.version {
                debug!(
                    table = table.name(),
                    rows = report.rows_written,
                    version,
                    "committed"
                );
                self.lake_metrics
                    .commits
                    .with_label_values(&[table.name()])
                    .inc();
                self.lake_metrics
                    .rows
                    .with_label_values(&[table.name()])
                    .inc_by(report.rows_written as u64);
            }
            if report.rows_already_committed > 0 {
                info!(
                    table = table.name(),
                    rows = report.rows_already_committed,
                    "skipped rows the table already held"
                );
            }
        }
        // Where each partition resumes on a later (re)assignment: the lake's positions, which
        // another process sharing the lake may have advanced past this one's (reading them
        // only at start-up made a process taking over a partition re-read everything the
        // previous owner wrote since). Read before the de-duplication keys below, so the
        // index knows every key stored under these starts.
        let mut partitions = known_partitions;
        for tp in positions.keys() {
            if !partitions.contains(tp) {
                partitions.push(tp.clone());
            }
        }
        outcome.lake_starts = self.lake_starts(&partitions).await?;
        // This commit's own version adds only keys this process admitted; any other version
        // since the index was read is another writer's: learn its keys. (Comparing against
        // "before + 1" missed a single foreign commit whenever this process committed no
        // new `attempts` version itself.)
        let mut known_version = dedup_version;
        if let Some(own) = own_attempts_version
            && dedup_version == Some(own - 1)
        {
            known_version = Some(own);
        }
        outcome.dedup = Some(
            if self.lake.attempts.committed().version() != known_version {
                CommittedKeys::read(&self.lake.attempts, self.settings.dedup_key).await?
            } else {
                CommittedKeys {
                    version: known_version,
                    first: HashMap::new(),
                }
            },
        );
        if let (Some(state), (Some(version), _)) = (abilities, self.lake.abilities.version()) {
            self.lake
                .save_abilities_later(self.lake.abilities.finish_encoding(state, version));
        }
        if housekeeping {
            crate::lake::housekeeping::run(&self.lake, self.settings.vacuum_retention).await;
            // Compaction's versions hold no new rows.
            self.lake
                .abilities
                .set_version(self.lake.attempt_questions.committed().version());
        }
        Ok(outcome)
    }

    /// Applies a finished commit: learns other writers' keys, then commits the Kafka offsets.
    fn finish_commit(
        &self,
        joined: std::result::Result<Result<CommitOutcome>, tokio::task::JoinError>,
        consumer: &StreamConsumer<IngestContext>,
        dedup: &mut DedupIndex,
        starts: &StartOffsets,
    ) -> Result<()> {
        let outcome = joined.map_err(|e| IngestError::Task(format!("lake commit: {e}")))??;
        if let Some(keys) = outcome.dedup {
            dedup.merge(keys);
        }
        if outcome.positions.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        {
            let mut starts = starts.lock().expect("start offsets lock");
            for ((topic, partition), offset) in &outcome.positions {
                let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(offset + 1));
                let entry = starts
                    .entry((topic.clone(), *partition))
                    .or_insert(offset + 1);
                *entry = (*entry).max(offset + 1);
            }
            for (tp, start) in outcome.lake_starts {
                let entry = starts.entry(tp).or_insert(start);
                *entry = (*entry).max(start);
            }
        }
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            // Advisory only: the tables hold the authoritative positions.
            warn!(error = %e, "Kafka offset commit failed");
        }
        Ok(())
    }
}

/// What one background commit covers.
struct CommitJob {
    /// Last offset handled per partition when the snapshot was taken.
    positions: BTreeMap<TopicPartition, i64>,
    /// How many leading tail batches of each table (in `commit_order`) hold those messages.
    tail_batches: Vec<usize>,
    pending_dlq: Vec<PendingDlq>,
    known_partitions: Vec<TopicPartition>,
    /// The `attempts` version the de-duplication index had read up to.
    dedup_version: Option<u64>,
    /// Also compact and vacuum after the commit.
    housekeeping: bool,
    /// The ability tracker's state when the tail was taken, saved as a snapshot once the
    /// commit has made its rows durable (see [`crate::abilities`]).
    abilities: Option<Vec<u8>>,
}

/// What a finished commit tells the receive loop.
struct CommitOutcome {
    positions: BTreeMap<TopicPartition, i64>,
    lake_starts: HashMap<TopicPartition, i64>,
    dedup: Option<CommittedKeys>,
}

/// The `attempts` column holding a de-duplication key.
fn dedup_column(key: DedupKey) -> &'static str {
    match key {
        DedupKey::KeenId => "keen_id",
        DedupKey::UserExamId => "user_exam_id",
        DedupKey::SequenceId => "sequence_id",
    }
}

/// Partition ids of a topic from the broker's metadata (none when the topic is unknown).
fn topic_partitions(consumer: &StreamConsumer<IngestContext>, topic: &str) -> Vec<i32> {
    match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect(),
        Err(e) => {
            warn!(%topic, error = %e, "cannot read topic metadata; starting from the beginning");
            Vec::new()
        }
    }
}

fn spawn_dead_letter(
    producer: &rdkafka::producer::FutureProducer,
    message: &BorrowedMessage<'_>,
    reason: String,
    max_message_bytes: usize,
) -> PendingDlq {
    let producer = producer.clone();
    let topic = KafkaSettings::dead_letter_topic(message.topic());
    let key = message.key().map(<[u8]>::to_vec);
    let payload = message.payload().map(<[u8]>::to_vec);
    let source = (
        message.topic().to_string(),
        message.partition(),
        message.offset(),
    );
    tokio::spawn(async move {
        produce_dead_letter(
            &producer,
            &topic,
            key.as_deref(),
            payload.as_deref(),
            &reason,
            Origin {
                topic: &source.0,
                partition: source.1,
                offset: source.2,
            },
            max_message_bytes,
        )
        .await;
    })
}
