//! Change-data capture without Kafka Connect: a MongoDB change stream on the results
//! collection (`exams.score`, `fullDocument: updateLookup`) turned into the Debezium MongoDB
//! connector's events.
//!
//! ```text
//! MongoDB exams.score ──change stream──▶ reader ──batch──▶ sink ──acked──▶ position saved
//!        │ (first start: snapshot, op "r")                 ├─ Kafka <prefix>.exams.score
//!        └──────────────────────────────────────────────── └─ embedded outbox → cards, lake
//! ```
//!
//! A position is saved only after the sink acknowledged every event before it, so a crash
//! repeats events but never skips one. A position the server no longer has (oplog rolled
//! over) is reported loudly and followed by a new snapshot.

pub mod envelope;
pub mod offsets;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::FullDocumentType;
use mongodb::{Client, Collection};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use self::envelope::{Encoded, Record, SnapshotMark, SourceInfo};
use self::offsets::{OffsetStore, Position};
use crate::delivery::{Origin, Refused, produce_dead_letter, produce_until_acked};
use crate::error::{IngestError, Result};
use crate::kafka::KafkaSettings;
use crate::store::SqliteStore;
use crate::store::mongo::error_code;

/// Events handed to the sink together at most.
const BATCH: usize = 1000;
/// Documents per snapshot batch.
const SNAPSHOT_BATCH: usize = 1000;

/// The change stream cannot continue from the saved position: the server no longer has it
/// (`ChangeStreamHistoryLost` 286, `ChangeStreamFatalError` 280, `CappedPositionLost` 136).
fn is_history_lost(e: &mongodb::error::Error) -> bool {
    matches!(error_code(e), Some(286 | 280 | 136))
}

/// The server cannot stream changes at all: it is not a replica set (`IllegalOperation`
/// 40573, or no cluster time).
pub fn needs_replica_set(e: &IngestError) -> bool {
    match e {
        IngestError::Mongo(m) => error_code(m) == Some(40573),
        IngestError::Task(message) => message.contains(NEEDS_REPLICA_SET),
        _ => false,
    }
}

const NEEDS_REPLICA_SET: &str = "change capture needs a replica set";

/// Where capture hands events over. `deliver` returns only when every record is durably
/// taken (the broker acknowledged it, or its card is stored).
#[async_trait]
pub trait ChangeSink: Send + Sync {
    async fn deliver(&self, records: Vec<Record>) -> Result<()>;
}

/// Produces each record to the change-event topic, keyed by document id, retrying until the
/// broker takes it (a broker outage only delays events). A record the broker will never
/// take (over `[kafka] max_message_bytes`, or refused) goes to `<topic>.dlq`, cut to fit,
/// and capture moves on: MongoDB still holds the document.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    max_message_bytes: usize,
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        Ok(KafkaSink {
            producer: settings.producer()?,
            topic: settings.change_event_topic(),
            max_message_bytes: settings.max_message_bytes,
        })
    }
}

#[async_trait]
impl ChangeSink for KafkaSink {
    async fn deliver(&self, records: Vec<Record>) -> Result<()> {
        // Sends are enqueued in order (join_all polls them in order), so events of one
        // document keep their order within its partition.
        let sends = records.iter().map(|r| {
            produce_until_acked(
                &self.producer,
                &self.topic,
                Some(&r.key),
                r.value.as_deref(),
                None,
                self.max_message_bytes,
            )
        });
        let results = futures::future::join_all(sends).await;
        let dlq = KafkaSettings::dead_letter_topic(&self.topic);
        for (record, result) in records.iter().zip(results) {
            if let Err(Refused(reason)) = result {
                warn!(document = %record.document_id, op = record.op, %reason, "change event set aside as a dead letter");
                produce_dead_letter(
                    &self.producer,
                    &dlq,
                    Some(&record.key),
                    record.value.as_deref(),
                    &reason,
                    Origin {
                        topic: "mongodb",
                        partition: 0,
                        offset: -1,
                    },
                    self.max_message_bytes,
                )
                .await;
            }
        }
        Ok(())
    }
}

/// Appends each change event to the server's embedded outbox (MongoDB without Kafka), from
/// where the in-process score-card consumer and the lake feed take it exactly as they take
/// the embedded store's own results. Tombstones carry nothing for either and are left out.
pub struct OutboxSink {
    pub store: Arc<SqliteStore>,
}

#[async_trait]
impl ChangeSink for OutboxSink {
    async fn deliver(&self, records: Vec<Record>) -> Result<()> {
        let events = records
            .into_iter()
            .filter_map(|r| r.value.map(|v| (r.key, v)))
            .collect();
        self.store.append_captured(events).await
    }
}

/// What an operator watches: events per operation, snapshots, lost positions.
#[derive(Clone)]
pub struct CaptureMetrics {
    pub events: IntCounterVec,
    pub snapshots: IntCounter,
    pub history_lost: IntCounter,
    pub capturing: IntGauge,
}

impl CaptureMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = CaptureMetrics {
            events: IntCounterVec::new(
                Opts::new(
                    "examflow_cdc_events_total",
                    "Change events captured from MongoDB and delivered, by Debezium op.",
                ),
                &["op"],
            )
            .expect("valid metric"),
            snapshots: IntCounter::new(
                "examflow_cdc_snapshots_total",
                "Initial snapshots taken of the captured collection.",
            )
            .expect("valid metric"),
            history_lost: IntCounter::new(
                "examflow_cdc_history_lost_total",
                "Saved positions the server no longer had (oplog rolled over); each is \
                 followed by a new snapshot.",
            )
            .expect("valid metric"),
            capturing: IntGauge::new(
                "examflow_cdc_capturing",
                "1 while this process holds the capture lease and captures, 0 on standby.",
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(m.events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.snapshots.clone()),
            Box::new(m.history_lost.clone()),
            Box::new(m.capturing.clone()),
        ] {
            let _ = registry.register(collector);
        }
        m
    }
}

/// One capture: a collection, where its events go and where its position is kept.
pub struct Capture {
    pub client: Client,
    pub source: SourceInfo,
    pub offsets: Arc<dyn OffsetStore>,
    pub sink: Arc<dyn ChangeSink>,
    pub metrics: CaptureMetrics,
    /// How often the lease is renewed (a third of its length) and a standby looks again.
    pub lease_renewal: Duration,
    /// The last position whose events the sink acknowledged, saved by [`Capture::flush`]
    /// at shutdown (the saver writes behind, at most every [`SAVE_INTERVAL`]).
    acknowledged: Arc<std::sync::Mutex<Option<Position>>>,
    /// Told of each failure [`Capture::run`] retries after, and of each recovery.
    health: Option<Arc<dyn CaptureHealth>>,
}

/// Where capture reports the failures it retries by itself (it never ends), so that the
/// server can show and count them like its other background tasks' (`/readyz`, `/metrics`).
pub trait CaptureHealth: Send + Sync {
    /// A failure; capture retries after a back-off.
    fn failed(&self, error: &str);
    /// Capturing again (or on standby behind another process's lease).
    fn recovered(&self);
}

/// Least time between two position writes: a busy stream saves a few times a second, not
/// once per batch (each save is a journaled write on the server).
const SAVE_INTERVAL: Duration = Duration::from_millis(250);

/// A client for capture (the API crate does not depend on the driver itself).
pub async fn connect(uri: &str) -> Result<Client> {
    Ok(Client::with_uri_str(uri).await?)
}

/// Why one round of capture ended.
enum Stop {
    HistoryLost(String),
    LeaseLost,
    Failed(IngestError),
}

impl From<IngestError> for Stop {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Mongo(m) if is_history_lost(&m) => Stop::HistoryLost(m.to_string()),
            IngestError::Contention(_) => Stop::LeaseLost,
            other => Stop::Failed(other),
        }
    }
}

impl From<mongodb::error::Error> for Stop {
    fn from(e: mongodb::error::Error) -> Self {
        Stop::from(IngestError::Mongo(e))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Capture {
    pub fn new(
        client: Client,
        source: SourceInfo,
        offsets: Arc<dyn OffsetStore>,
        sink: Arc<dyn ChangeSink>,
        metrics: CaptureMetrics,
        lease_renewal: Duration,
    ) -> Self {
        Capture {
            client,
            source,
            offsets,
            sink,
            metrics,
            lease_renewal,
            acknowledged: Default::default(),
            health: None,
        }
    }

    /// The same capture, reporting its failures and recoveries to `health`.
    pub fn with_health(mut self, health: Arc<dyn CaptureHealth>) -> Self {
        self.health = Some(health);
        self
    }

    fn report_failure(&self, error: &str) {
        if let Some(health) = &self.health {
            health.failed(error);
        }
    }

    fn report_recovery(&self) {
        if let Some(health) = &self.health {
            health.recovered();
        }
    }

    /// Saves the last acknowledged position now (clean shutdown: a restart repeats
    /// nothing), then gives the lease up.
    pub async fn flush(&self) {
        let last = self
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(position) = last
            && let Err(e) = self.offsets.save(&position).await
        {
            warn!(error = %e, "change capture: saving the last position at shutdown failed (events since the previous one will be sent again)");
        }
        self.offsets.release().await;
    }

    fn collection(&self) -> Collection<Document> {
        self.client
            .database(&self.source.db)
            .collection(&self.source.collection)
    }

    /// Runs until the task is dropped: waits for the lease, captures, and after any failure
    /// starts again with capped back-off from the last saved position.
    pub async fn run(&self) {
        let mut backoff = Duration::from_millis(500);
        let mut standby_logged = false;
        loop {
            match self.offsets.hold().await {
                Ok(true) => standby_logged = false,
                Ok(false) => {
                    self.report_recovery();
                    if !standby_logged {
                        info!(collection = %self.source.collection, "change capture on standby: another process holds the lease");
                        standby_logged = true;
                    }
                    self.metrics.capturing.set(0);
                    tokio::time::sleep(self.lease_renewal).await;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "change capture: cannot reach MongoDB; retrying");
                    self.report_failure(&format!("cannot reach MongoDB: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            self.metrics.capturing.set(1);
            let round = self.capture().await;
            self.metrics.capturing.set(0);
            match round {
                Stop::HistoryLost(message) => {
                    self.metrics.history_lost.inc();
                    error!(
                        db = %self.source.db,
                        collection = %self.source.collection,
                        %message,
                        "CHANGE CAPTURE LOST ITS POSITION: the server no longer holds the \
                         saved resume point (its oplog rolled over while capture was stopped). \
                         Changes made meanwhile were not captured as changes; taking a new \
                         snapshot now (every current document as op \"r\"). Raise the oplog \
                         size or retention to avoid this."
                    );
                    if let Err(e) = self.offsets.clear().await {
                        warn!(error = %e, "change capture: clearing the lost position failed");
                        tokio::time::sleep(backoff).await;
                    }
                }
                Stop::LeaseLost => {
                    warn!("change capture: lease lost to another process; standing by");
                    tokio::time::sleep(self.lease_renewal).await;
                }
                Stop::Failed(e) if needs_replica_set(&e) => {
                    error!(error = %e, retry_in = ?backoff, "change capture cannot run: MongoDB streams changes only on a replica set (a one-member one is enough: mongod --replSet rs0, then rs.initiate())");
                    self.report_failure(&format!(
                        "MongoDB streams changes only on a replica set: {e}"
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Stop::Failed(e) => {
                    warn!(error = %e, retry_in = ?backoff, "change capture stopped; resuming from the saved position");
                    self.report_failure(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Whether the server can stream changes of the collection at all (opens and closes a
    /// change stream); an error for a standalone server, unreachable server, or missing rights.
    pub async fn check(&self) -> Result<()> {
        drop(self.collection().watch().await?);
        Ok(())
    }

    /// Fixes where a first capture starts before the caller accepts writes: with no saved
    /// position, the snapshot is due from the server's time now, so every document written
    /// after this returns reaches the sink as a change (`op: "c"`), not only as a snapshot
    /// read. Nothing to do when another process holds the lease or a position exists.
    pub async fn prepare(&self) -> Result<()> {
        if self.offsets.hold().await? && self.offsets.load().await?.is_none() {
            let start = Position::SnapshotFrom(self.cluster_time().await?);
            self.offsets.save(&start).await?;
        }
        Ok(())
    }

    /// The cluster time of the server now, where a snapshot starts.
    async fn cluster_time(&self) -> Result<Timestamp> {
        let reply = self
            .client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        match reply.get("operationTime").or_else(|| {
            reply
                .get_document("$clusterTime")
                .ok()
                .and_then(|c| c.get("clusterTime"))
        }) {
            Some(Bson::Timestamp(ts)) => Ok(*ts),
            _ => Err(IngestError::Task(format!(
                "MongoDB did not report a cluster time: {NEEDS_REPLICA_SET} (a standalone \
                 mongod has no change streams; start it with --replSet)"
            ))),
        }
    }

    /// Reads every document of the collection as snapshot events; returns how many.
    async fn snapshot(&self) -> Result<u64> {
        info!(db = %self.source.db, collection = %self.source.collection, "change capture: taking the initial snapshot");
        self.metrics.snapshots.inc();
        let mut cursor = self
            .collection()
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .batch_size(SNAPSHOT_BATCH as u32)
            .await?;
        let mut batch: Vec<Document> = Vec::with_capacity(SNAPSHOT_BATCH);
        let mut total = 0u64;
        loop {
            let next = cursor.try_next().await?;
            let last = next.is_none();
            if let Some(doc) = next {
                batch.push(doc);
            }
            // Keep one document back so the snapshot's last read can be marked "last".
            if batch.len() > SNAPSHOT_BATCH || (last && !batch.is_empty()) {
                let keep = if last { None } else { batch.pop() };
                let n = batch.len();
                let now = now_ms();
                let records: Vec<Record> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let mark = if last && i + 1 == n {
                            SnapshotMark::Last
                        } else {
                            SnapshotMark::Yes
                        };
                        envelope::snapshot_record(d, &self.source, mark, now)
                    })
                    .collect();
                self.sink.deliver(records).await?;
                self.metrics
                    .events
                    .with_label_values(&["r"])
                    .inc_by(n as u64);
                total += n as u64;
                batch.clear();
                batch.extend(keep);
            }
            if last {
                break;
            }
        }
        info!(documents = total, "change capture: snapshot done");
        Ok(total)
    }

    /// One round: open the stream where the saved position says (or snapshot first), then
    /// deliver batches until something fails.
    async fn capture(&self) -> Stop {
        match self.capture_inner().await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn capture_inner(&self) -> std::result::Result<std::convert::Infallible, Stop> {
        let collection = self.collection();
        let watch_from = |position: Option<Position>| {
            let mut w = collection
                .watch()
                .full_document(FullDocumentType::UpdateLookup);
            match position {
                Some(Position::After(token)) => {
                    let token: ResumeToken = mongodb::bson::from_document(token)
                        .map_err(|e| IngestError::Task(format!("saved resume token: {e}")))?;
                    w = w.resume_after(token);
                }
                Some(Position::At(ts) | Position::SnapshotFrom(ts)) => {
                    w = w.start_at_operation_time(ts)
                }
                None => {}
            }
            Ok::<_, IngestError>(w)
        };
        let saved = match self.offsets.load().await? {
            Some(position) => position,
            None => {
                let start = Position::SnapshotFrom(self.cluster_time().await?);
                self.offsets.save(&start).await?;
                start
            }
        };
        let stream = match saved {
            Position::SnapshotFrom(start) => {
                // The stream opens at the snapshot's start first, so every change made while
                // the snapshot runs is streamed after it (some twice: repeats are allowed).
                let stream = watch_from(Some(Position::At(start)))?.await?;
                self.snapshot().await?;
                self.offsets.save(&Position::At(start)).await?;
                stream
            }
            position => {
                info!(?position, "change capture: resuming");
                watch_from(Some(position))?.await?
            }
        };
        let mut stream = stream.with_type::<Document>();
        // The stream is open: capturing (again).
        self.report_recovery();

        // The reader keeps the stream busy while the sink delivers the previous batch.
        let (events_tx, mut events) = mpsc::channel::<mongodb::error::Result<Document>>(4 * BATCH);
        let reader = tokio::spawn(async move {
            loop {
                let next = stream.try_next().await;
                let done = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(doc)) => Ok(doc),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                if events_tx.send(item).await.is_err() || done {
                    break;
                }
            }
        });
        let _reader = AbortOnDrop(reader);

        // Positions are written behind delivery: the latest acknowledged one wins.
        let (acked_tx, mut acked) = watch::channel::<Option<Position>>(None);
        let offsets = self.offsets.clone();
        let saver = tokio::spawn(async move {
            while acked.changed().await.is_ok() {
                let position = acked.borrow_and_update().clone();
                if let Some(position) = position {
                    offsets.save(&position).await?;
                    tokio::time::sleep(SAVE_INTERVAL).await;
                }
            }
            Ok::<(), IngestError>(())
        });
        let mut saver = AbortOnDrop(saver);

        let mut renew = tokio::time::interval(self.lease_renewal);
        renew.tick().await;
        loop {
            let first = tokio::select! {
                event = events.recv() => event,
                _ = renew.tick() => {
                    if !self.offsets.hold().await? {
                        return Err(Stop::LeaseLost);
                    }
                    continue;
                }
                saved = &mut saver.0 => {
                    return Err(match saved {
                        Ok(Err(e)) => e.into(),
                        Ok(Ok(())) => Stop::Failed(IngestError::Task("position saver ended".into())),
                        Err(e) => Stop::Failed(IngestError::Task(e.to_string())),
                    });
                }
            };
            let Some(first) = first else {
                return Err(Stop::Failed(IngestError::Task(
                    "the change stream ended (collection dropped or renamed?)".into(),
                )));
            };
            let mut batch = vec![first?];
            while batch.len() < BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event?),
                    Err(_) => break,
                }
            }
            let now = now_ms();
            let mut records = Vec::with_capacity(batch.len());
            for event in &batch {
                match envelope::change_records(event, &self.source, now) {
                    Encoded::Records(r) => records.extend(r),
                    Encoded::Ignored(what) if what == "invalidate" => {
                        warn!(
                            "change capture: the stream was invalidated (collection dropped or renamed); reopening"
                        );
                    }
                    Encoded::Ignored(what) => {
                        info!(operation = %what, "change capture: event without a document change");
                    }
                }
            }
            let labels: Vec<&'static str> = records.iter().map(|r| r.op).collect();
            self.sink.deliver(records).await?;
            for label in labels {
                self.metrics.events.with_label_values(&[label]).inc();
            }
            if let Some(token) = batch.last().and_then(|e| e.get_document("_id").ok()) {
                let position = Position::After(token.clone());
                *self.acknowledged.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(position.clone());
                let _ = acked_tx.send(Some(position));
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
