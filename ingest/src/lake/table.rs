//! One Delta table of the lake: its committed snapshot, the in-memory tail of rows not yet
//! committed, and the exactly-once commit.
//!
//! Exactly once: every commit carries one Delta transaction action per Kafka (writer, topic,
//! partition) whose messages it covers, recording the last offset. Before writing, the commit
//! re-reads those versions from the table and drops rows at or below them, so a message
//! replayed after a crash (at any point: before the write, between write and commit, after
//! the commit but before the Kafka offset commit) is stored once. Two writers racing on the
//! same partition collide in Delta's conflict checker (same application id) and the loser
//! retries against the winner's versions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};

use crate::error::{IngestError, Result};
use crate::lake::durable::{self, Syncer};
use crate::lake::location::TableLocation;
use crate::source::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};

/// A Kafka partition, as transaction actions and resume positions name it.
pub type TopicPartition = (String, i32);

/// How many times a commit is retried after losing a race to another writer.
const COMMIT_ATTEMPTS: usize = 8;

/// The committed snapshot plus the tail, swapped together so readers never see a row twice
/// or not at all.
struct Shared {
    committed: DeltaTable,
    tail: Vec<RecordBatch>,
}

pub struct LakeTable {
    name: &'static str,
    /// The table's directory when the lake is local: commits are fsynced there.
    dir: Option<PathBuf>,
    url: url::Url,
    schema: SchemaRef,
    shared: RwLock<Shared>,
    /// Held by a commit from its write to its publish, and by a refresh: a refresh must not
    /// publish a version holding rows the tail still has (queries would count them twice).
    commit_lock: tokio::sync::Mutex<()>,
    /// fsync, replaceable in tests.
    sync: Syncer,
}

/// What one commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    pub version: Option<u64>,
    pub rows_written: usize,
    /// Rows dropped because the table already held their offsets.
    pub rows_already_committed: usize,
    pub files: usize,
    pub bytes: u64,
}

fn delta_error(table: &str, source: DeltaTableError) -> IngestError {
    IngestError::Lake {
        table: table.to_string(),
        source: Box::new(source),
    }
}

/// The table at `location`, with its storage options, not loaded yet.
fn unloaded(location: &TableLocation) -> Result<DeltaTable, DeltaTableError> {
    deltalake::DeltaTableBuilder::from_url(location.url.clone())?
        .with_storage_options(location.options.clone())
        .build()
}

/// Prepares a local table directory: creates it, sets aside entries torn by an unclean
/// stop, and says whether a log is there (loading a directory without one makes the
/// kernel log an error).
fn local_log_present(name: &str, dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir)
        .map_err(|e| IngestError::LakeSetup(format!("cannot create {}: {e}", dir.display())))?;
    let torn = durable::set_aside_torn_entries(dir).map_err(|e| {
        IngestError::LakeSetup(format!(
            "{name}: checking the log in {}: {e}",
            dir.display()
        ))
    })?;
    if !torn.is_empty() {
        tracing::error!(
            table = name,
            versions = ?torn,
            "log entries torn by an unclean stop were set aside in {}; the table opens at the last whole version and ingest reads again from its offsets",
            durable::TORN_DIR
        );
    }
    Ok(std::fs::read_dir(dir.join("_delta_log"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false))
}

/// The application id of a transaction action: one per writer application, topic and
/// partition (`examflow-ingest:exams:3`). Like kafka-delta-ingest's `app_id`, it names the
/// writer, not the consumer group: a second group reading the same topic into the same lake
/// resumes from the same positions instead of writing every row again.
pub fn app_id(app: &str, topic: &str, partition: i32) -> String {
    format!("{app}:{topic}:{partition}")
}

impl LakeTable {
    /// Opens the table at `location`, creating it with `schema` when absent. Safe when
    /// several processes start at once: the loser of the creation race opens the winner's
    /// table.
    pub async fn open_or_create(
        name: &'static str,
        location: &TableLocation,
        schema: SchemaRef,
    ) -> Result<Self> {
        let has_log = match &location.dir {
            Some(dir) => local_log_present(name, dir)?,
            None => true,
        };
        let mut table = if has_log {
            match unloaded(location) {
                Ok(mut table) => match table.load().await {
                    Ok(()) => table,
                    // Object storage: no log yet is found out by loading.
                    Err(DeltaTableError::NotATable(_)) if location.dir.is_none() => table,
                    Err(e) => return Err(delta_error(name, e)),
                },
                Err(e) => return Err(delta_error(name, e)),
            }
        } else {
            unloaded(location).map_err(|e| delta_error(name, e))?
        };
        if table.version().is_none() {
            let columns: StructType = schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| delta_error(name, e.into()))?;
            let created = table
                .create()
                .with_table_name(name)
                .with_columns(columns.fields().cloned())
                .with_save_mode(SaveMode::Ignore)
                .with_configuration_property(TableProperty::CheckpointInterval, Some("20"))
                .await;
            table = match created {
                Ok(table) => {
                    if let Some(dir) = &location.dir {
                        durable::sync_log(dir, 0, &durable::fsync()).map_err(|e| {
                            IngestError::LakeSetup(format!("{name}: fsync of the new table: {e}"))
                        })?;
                    }
                    table
                }
                // Another process created it between our check and our commit.
                Err(_) => {
                    let mut table = unloaded(location).map_err(|e| delta_error(name, e))?;
                    table.load().await.map_err(|e| delta_error(name, e))?;
                    table
                }
            };
        }
        Ok(LakeTable {
            name,
            dir: location.dir.clone(),
            url: location.url.clone(),
            schema,
            shared: RwLock::new(Shared {
                committed: table,
                tail: Vec::new(),
            }),
            commit_lock: tokio::sync::Mutex::new(()),
            sync: durable::fsync(),
        })
    }

    /// The same table with another fsync (tests inject failures with it).
    pub fn with_syncer(mut self, sync: Syncer) -> Self {
        self.sync = sync;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The table's directory, when the lake is on the local disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The table's URL (`file:///…/attempts/` or `s3://bucket/prefix/attempts/`).
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The fsync its commits use (housekeeping's commits use it too).
    pub(crate) fn syncer(&self) -> &Syncer {
        &self.sync
    }

    /// A copy of the committed table (cheap: shares the snapshot) and the tail.
    pub fn live(&self) -> (DeltaTable, Vec<RecordBatch>) {
        let shared = self.shared.read().expect("lake table lock");
        (shared.committed.clone(), shared.tail.clone())
    }

    pub fn committed(&self) -> DeltaTable {
        self.shared
            .read()
            .expect("lake table lock")
            .committed
            .clone()
    }

    /// Makes rows visible to queries before they are committed.
    pub fn push_tail(&self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.shared
                .write()
                .expect("lake table lock")
                .tail
                .push(batch);
        }
    }

    pub fn tail_rows(&self) -> usize {
        let shared = self.shared.read().expect("lake table lock");
        shared.tail.iter().map(RecordBatch::num_rows).sum()
    }

    /// The last committed offset per partition, as recorded by transaction actions.
    pub async fn committed_offsets(
        &self,
        app: &str,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let _commit = self.commit_lock.lock().await;
        let mut table = self.committed();
        table
            .update_incremental(None)
            .await
            .map_err(|e| delta_error(self.name, e))?;
        let versions = self.versions(&table, app, partitions).await?;
        self.publish(table, 0);
        Ok(versions)
    }

    async fn versions(
        &self,
        table: &DeltaTable,
        app: &str,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let mut out = HashMap::new();
        let Ok(snapshot) = table.snapshot() else {
            return Ok(out);
        };
        for (topic, partition) in partitions {
            let version = snapshot
                .transaction_version(table.log_store().as_ref(), app_id(app, topic, *partition))
                .await
                .map_err(|e| delta_error(self.name, e))?;
            if let Some(version) = version {
                out.insert((topic.clone(), *partition), version);
            }
        }
        Ok(out)
    }

    /// Swaps in a newer committed snapshot and drops the first `committed_batches` of the tail.
    fn publish(&self, table: DeltaTable, committed_batches: usize) {
        let mut shared = self.shared.write().expect("lake table lock");
        let newer = match (table.version(), shared.committed.version()) {
            (Some(new), Some(old)) => new >= old,
            (Some(_), None) => true,
            _ => false,
        };
        if newer {
            shared.committed = table;
        }
        let drop = committed_batches.min(shared.tail.len());
        shared.tail.drain(..drop);
    }

    /// Commits the first `batches` of the tail, plus transaction actions advancing every
    /// partition in `positions` (last offset consumed) even when it contributed no rows here.
    pub async fn commit_tail(
        &self,
        app: &str,
        positions: &BTreeMap<TopicPartition, i64>,
        batches: usize,
    ) -> Result<CommitReport> {
        let _commit = self.commit_lock.lock().await;
        let pending: Vec<RecordBatch> = {
            let shared = self.shared.read().expect("lake table lock");
            shared.tail.iter().take(batches).cloned().collect()
        };
        let partitions: Vec<TopicPartition> = positions.keys().cloned().collect();
        let mut last_error = None;
        for _ in 0..COMMIT_ATTEMPTS {
            let mut table = self.committed();
            table
                .update_incremental(None)
                .await
                .map_err(|e| delta_error(self.name, e))?;
            let versions = self.versions(&table, app, &partitions).await?;
            let mut report = CommitReport::default();
            let mut fresh = Vec::with_capacity(pending.len());
            for batch in &pending {
                let kept = drop_committed(batch, &versions);
                report.rows_already_committed += batch.num_rows() - kept.num_rows();
                if kept.num_rows() > 0 {
                    fresh.push(kept);
                }
            }
            let txns: Vec<Transaction> = positions
                .iter()
                .filter(|(tp, offset)| versions.get(*tp).is_none_or(|v| *offset > v))
                .map(|((topic, partition), offset)| {
                    Transaction::new(app_id(app, topic, *partition), *offset)
                })
                .collect();
            if fresh.is_empty() && txns.is_empty() {
                self.publish(table, pending.len());
                return Ok(report);
            }
            let mut adds = Vec::new();
            if !fresh.is_empty() {
                let mut writer =
                    RecordBatchWriter::for_table(&table).map_err(|e| delta_error(self.name, e))?;
                for batch in fresh {
                    report.rows_written += batch.num_rows();
                    writer
                        .write(batch)
                        .await
                        .map_err(|e| delta_error(self.name, e))?;
                }
                adds = writer
                    .flush()
                    .await
                    .map_err(|e| delta_error(self.name, e))?;
                for add in &adds {
                    report.bytes += add.size.max(0) as u64;
                }
                report.files = adds.len();
                // The data must be durable before a log entry names it; after a failed
                // fsync its pages may be gone, so the rows are written again to new files.
                let paths: Vec<&str> = adds.iter().map(|a| a.path.as_str()).collect();
                if let Some(Err(e)) = self
                    .dir
                    .as_deref()
                    .map(|dir| durable::sync_data(dir, &paths, &self.sync))
                {
                    tracing::error!(table = self.name, error = %e, "fsync of new data files failed; writing them again");
                    last_error = Some(format!("fsync of data files: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            }
            let actions = adds.len() + txns.len();
            let snapshot = table.snapshot().map_err(|e| delta_error(self.name, e))?;
            let committed = CommitBuilder::from(
                CommitProperties::default()
                    .with_application_transactions(txns)
                    .with_metadata([(durable::ACTIONS_KEY.to_string(), actions.into())]),
            )
            .with_actions(
                adds.into_iter()
                    .map(deltalake::kernel::Action::Add)
                    .collect(),
            )
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: None,
                    predicate: None,
                },
            )
            .await;
            match committed {
                Ok(done) => {
                    // Its offsets count only once the entry is durable: a failure here fails
                    // the commit (the ingest restarts and reads the table again).
                    if let Some(dir) = &self.dir {
                        durable::sync_log(dir, done.version(), &self.sync).map_err(|e| {
                            IngestError::LakeSetup(format!(
                                "{}: fsync of log entry {} failed: {e}",
                                self.name,
                                done.version()
                            ))
                        })?;
                    }
                    report.version = Some(done.version());
                    let mut table = table;
                    table
                        .update_incremental(Some(done.version()))
                        .await
                        .map_err(|e| delta_error(self.name, e))?;
                    self.publish(table, pending.len());
                    return Ok(report);
                }
                // Another writer committed the same partition first: re-read its versions.
                Err(DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(conflict),
                }) => {
                    tracing::warn!(table = self.name, %conflict, "commit conflict, retrying");
                    last_error = Some(conflict.to_string());
                }
                Err(e) => return Err(delta_error(self.name, e)),
            }
        }
        Err(IngestError::LakeSetup(format!(
            "{}: gave up after {COMMIT_ATTEMPTS} attempts (commit conflicts or failed fsyncs): {}",
            self.name,
            last_error.unwrap_or_default()
        )))
    }

    /// Keeps the tail as it is but forgets it (after a rebalance the rows may belong to a
    /// partition this process no longer owns; they will be read again by the new owner).
    pub fn clear_tail(&self) {
        self.shared.write().expect("lake table lock").tail.clear();
    }

    pub fn tail_batches(&self) -> usize {
        self.shared.read().expect("lake table lock").tail.len()
    }

    /// Reloads the committed snapshot from storage (after housekeeping; commits by other
    /// processes). Waits for a commit of this process in flight.
    pub async fn refresh(&self) -> Result<()> {
        let _commit = self.commit_lock.lock().await;
        let mut table = self.committed();
        table
            .update_incremental(None)
            .await
            .map_err(|e| delta_error(self.name, e))?;
        self.publish(table, 0);
        Ok(())
    }
}

/// Rows whose offset is above the partition's committed version.
fn drop_committed(batch: &RecordBatch, versions: &HashMap<TopicPartition, i64>) -> RecordBatch {
    if versions.is_empty() {
        return batch.clone();
    }
    let (Some(topics), Some(partitions), Some(offsets)) = (
        batch.column_by_name(SOURCE_TOPIC),
        batch.column_by_name(SOURCE_PARTITION),
        batch.column_by_name(SOURCE_OFFSET),
    ) else {
        return batch.clone();
    };
    let topics = topics.as_string::<i32>();
    let partitions = partitions.as_primitive::<Int32Type>();
    let offsets = offsets.as_primitive::<Int64Type>();
    let mut key = (String::new(), 0);
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|row| {
            key.0.clear();
            key.0.push_str(topics.value(row));
            key.1 = partitions.value(row);
            Some(versions.get(&key).is_none_or(|v| offsets.value(row) > *v))
        })
        .collect();
    if keep.true_count() == keep.len() {
        return batch.clone();
    }
    filter_record_batch(batch, &keep).expect("filter with a mask of the batch's length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::changes::DeadLetterBuilder;
    use crate::source::SourcePosition;

    fn local(dir: &Path) -> TableLocation {
        TableLocation::local(dir).unwrap()
    }

    fn dead_letters(offsets: &[(i32, i64)]) -> RecordBatch {
        let mut b = DeadLetterBuilder::new();
        for (partition, offset) in offsets {
            b.append(
                "bad",
                None,
                Some(b"x"),
                &SourcePosition {
                    topic: "t",
                    partition: *partition,
                    offset: *offset,
                    ingested_at_us: 0,
                },
            );
        }
        b.finish()
    }

    #[tokio::test]
    async fn replayed_offsets_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let schema = crate::lake::changes::dead_letters_schema();
        let table = LakeTable::open_or_create(
            "dead_letters",
            &local(&dir.path().join("dl")),
            schema.clone(),
        )
        .await
        .unwrap();
        table.push_tail(dead_letters(&[(0, 0), (0, 1), (1, 0)]));
        let positions = BTreeMap::from([(("t".to_string(), 0), 1), (("t".to_string(), 1), 0)]);
        let first = table.commit_tail("g", &positions, 1).await.unwrap();
        assert_eq!(first.rows_written, 3);
        assert_eq!(table.tail_rows(), 0);

        // A restart replays from offset 0: only offsets above the recorded versions are new.
        table.push_tail(dead_letters(&[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]));
        let positions = BTreeMap::from([(("t".to_string(), 0), 2), (("t".to_string(), 1), 1)]);
        let second = table.commit_tail("g", &positions, 1).await.unwrap();
        assert_eq!(second.rows_written, 2);
        assert_eq!(second.rows_already_committed, 3);

        // A second process opening the same table sees the versions.
        let other =
            LakeTable::open_or_create("dead_letters", &local(&dir.path().join("dl")), schema)
                .await
                .unwrap();
        let offsets = other
            .committed_offsets("g", &[("t".into(), 0), ("t".into(), 1), ("t".into(), 2)])
            .await
            .unwrap();
        assert_eq!(offsets.get(&("t".to_string(), 0)), Some(&2));
        assert_eq!(offsets.get(&("t".to_string(), 1)), Some(&1));
        assert_eq!(offsets.get(&("t".to_string(), 2)), None);
        // Another writer application has its own positions.
        let theirs = other
            .committed_offsets("h", &[("t".into(), 0)])
            .await
            .unwrap();
        assert!(theirs.is_empty());
    }

    fn is_data(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "parquet")
    }

    async fn open(dir: &Path) -> LakeTable {
        let schema = crate::lake::changes::dead_letters_schema();
        LakeTable::open_or_create("dead_letters", &local(dir), schema)
            .await
            .unwrap()
    }

    fn positions(p0: i64) -> BTreeMap<TopicPartition, i64> {
        BTreeMap::from([(("t".to_string(), 0), p0)])
    }

    fn files(table: &LakeTable) -> usize {
        table.committed().get_file_uris().unwrap().count()
    }

    #[tokio::test]
    async fn a_failed_data_fsync_fails_the_attempt_and_the_rows_are_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let failed_once = std::sync::atomic::AtomicBool::new(false);
        let (sync, _) = durable::test_syncer(move |path| {
            is_data(path) && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst)
        });
        let table = open(dir.path()).await.with_syncer(sync);
        table.push_tail(dead_letters(&[(0, 0), (0, 1)]));
        let report = table.commit_tail("g", &positions(1), 1).await.unwrap();
        assert_eq!((report.version, report.rows_written), (Some(1), 2));
        // One file is committed: the one whose fsync failed is named by no log entry.
        assert_eq!(files(&table), 1);
        let parquet = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| is_data(&e.as_ref().unwrap().path()))
            .count();
        assert_eq!(parquet, 2);
    }

    #[tokio::test]
    async fn a_commit_whose_files_cannot_be_made_durable_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (sync, calls) = durable::test_syncer(is_data);
        let table = open(dir.path()).await.with_syncer(sync);
        table.push_tail(dead_letters(&[(0, 0)]));
        let err = table.commit_tail("g", &positions(0), 1).await.unwrap_err();
        assert!(err.to_string().contains("fsync of data files"), "{err}");
        assert!(calls.lock().unwrap().len() >= COMMIT_ATTEMPTS);
        assert_eq!(table.committed().version(), Some(0));
        assert_eq!(table.tail_rows(), 1, "nothing accepted is dropped");
        // The log entry fsync failing fails the commit too (its offsets must not count).
        let (sync, _) = durable::test_syncer(|path| path.extension().is_some_and(|e| e == "json"));
        let table = open(dir.path()).await.with_syncer(sync);
        table.push_tail(dead_letters(&[(0, 0)]));
        let err = table.commit_tail("g", &positions(0), 1).await.unwrap_err();
        assert!(err.to_string().contains("fsync of log entry 1"), "{err}");
    }

    /// Commits offsets 0..=2 of partition 0 in three versions and returns the table's dir.
    async fn three_versions() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let table = open(dir.path()).await;
        for offset in 0..3 {
            table.push_tail(dead_letters(&[(0, offset)]));
            table.commit_tail("g", &positions(offset), 1).await.unwrap();
        }
        assert_eq!(table.committed().version(), Some(3));
        dir
    }

    async fn reopened_offset(dir: &Path) -> (Option<u64>, Option<i64>) {
        let table = open(dir).await;
        let offsets = table
            .committed_offsets("g", &[("t".into(), 0)])
            .await
            .unwrap();
        (
            table.committed().version(),
            offsets.get(&("t".to_string(), 0)).copied(),
        )
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_set_aside_and_the_table_opens_at_the_last_whole_version() {
        let entry = |dir: &Path, v: u64| dir.join(format!("_delta_log/{v:020}.json"));
        // Cut inside a line.
        let dir = three_versions().await;
        let text = std::fs::read(entry(dir.path(), 3)).unwrap();
        std::fs::write(entry(dir.path(), 3), &text[..text.len() / 2]).unwrap();
        assert_eq!(reopened_offset(dir.path()).await, (Some(2), Some(1)));
        assert!(dir.path().join(durable::TORN_DIR).is_dir());
        // Ingest goes on from there: offset 2 is written again, as version 3.
        let table = open(dir.path()).await;
        table.push_tail(dead_letters(&[(0, 2)]));
        let report = table.commit_tail("g", &positions(2), 1).await.unwrap();
        assert_eq!((report.version, report.rows_written), (Some(3), 1));

        // Cut at a line boundary (the last action lost): recognised by the action count.
        let dir = three_versions().await;
        let text = String::from_utf8(std::fs::read(entry(dir.path(), 3)).unwrap()).unwrap();
        let cut = text.rfind('\n').unwrap();
        std::fs::write(entry(dir.path(), 3), &text[..cut]).unwrap();
        assert_eq!(reopened_offset(dir.path()).await, (Some(2), Some(1)));

        // Zero-filled, as a crash can leave a file whose size reached the disk first.
        let dir = three_versions().await;
        let len = std::fs::metadata(entry(dir.path(), 3)).unwrap().len() as usize;
        std::fs::write(entry(dir.path(), 3), vec![0u8; len]).unwrap();
        assert_eq!(reopened_offset(dir.path()).await, (Some(2), Some(1)));
    }
}
