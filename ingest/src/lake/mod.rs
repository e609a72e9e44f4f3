//! The lake: examflow's Delta Lake tables under `<data-dir>/lake/<table>`, written by ingest
//! and read with DataFusion.
//!
//! | table | rows | written from |
//! |---|---|---|
//! | `attempts` | one per assessment attempt (de-duplicated by `keen_id` by default) | topic `exams` |
//! | `attempt_questions` | one per question of an attempt | topic `exams` |
//! | `attempt_options` | one per option of a question | topic `exams` |
//! | `score_changes` | one per Debezium change event of a result document | `<prefix>.exams.score` |
//! | `score_detail_changes` | one per question of a changed result document | `<prefix>.exams.score` |
//! | `dead_letters` | one per message that could not be understood | both |
//!
//! Queries also see `scores` (the latest change per document, deletes kept with
//! `deleted = true`; computed when scanned, see [`latest`]) and the view `score_details`
//! (the questions of each live, undeleted document).

pub mod changes;
pub mod durable;
pub mod housekeeping;
pub mod latest;
pub mod location;
pub mod outbox;
pub mod query;
#[cfg(test)]
mod s3_tests;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::abilities::AbilityTracker;
use crate::attempts::{attempt_options_schema, attempt_questions_schema, attempts_schema};
use crate::error::Result;
use changes::{dead_letters_schema, score_changes_schema, score_detail_changes_schema};
pub use location::LakeLocation;
pub use table::{CommitReport, LakeTable, TopicPartition};

/// Names and schemas of the physical tables, in commit order: `attempts` first, because it
/// decides which copy of a replayed attempt is the original (see the pipeline).
/// Writes an ability snapshot ([`AbilityTracker::encode`]) durably: a temporary file,
/// fsync, rename over the old one, fsync of the directory.
pub fn write_ability_snapshot(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("snapshot path has a parent");
    std::fs::create_dir_all(dir)?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!(".snapshot.{}.{n}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

pub fn table_definitions() -> Vec<(&'static str, SchemaRef)> {
    vec![
        ("attempts", attempts_schema()),
        ("attempt_questions", attempt_questions_schema()),
        ("attempt_options", attempt_options_schema()),
        ("score_changes", score_changes_schema()),
        ("score_detail_changes", score_detail_changes_schema()),
        ("dead_letters", dead_letters_schema()),
    ]
}

/// Where the ability snapshot lives, below the lake's root.
const ABILITY_SNAPSHOT: &str = "_abilities/snapshot.bin";

/// All tables of one lake.
pub struct Lake {
    location: LakeLocation,
    pub attempts: Arc<LakeTable>,
    pub attempt_questions: Arc<LakeTable>,
    pub attempt_options: Arc<LakeTable>,
    pub score_changes: Arc<LakeTable>,
    pub score_detail_changes: Arc<LakeTable>,
    pub dead_letters: Arc<LakeTable>,
    /// Per-user ability estimates from the attempts (see [`crate::abilities`]).
    pub abilities: AbilityTracker,
}

impl Lake {
    /// The lake's directory inside a data directory.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("lake")
    }

    /// Opens every table under `<data_dir>/lake`, creating missing ones.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        Self::open_at(LakeLocation::in_data_dir(data_dir)).await
    }

    /// Opens every table at `location` (a directory or an object-store prefix), creating
    /// missing ones.
    pub async fn open_at(location: LakeLocation) -> Result<Self> {
        if !location.is_local() {
            // One clear error for a wrong endpoint, bucket or key, before six tables fail.
            location.check().await?;
        }
        let mut tables = Vec::new();
        for (name, schema) in table_definitions() {
            tables.push(Arc::new(
                LakeTable::open_or_create(name, &location.table(name)?, schema).await?,
            ));
        }
        let mut tables = tables.into_iter();
        let mut next = || tables.next().expect("six tables");
        Ok(Lake {
            location,
            attempts: next(),
            attempt_questions: next(),
            attempt_options: next(),
            score_changes: next(),
            score_detail_changes: next(),
            dead_letters: next(),
            abilities: AbilityTracker::new(),
        })
    }

    /// Where the ability snapshot lives in a local lake (`<lake>/_abilities/snapshot.bin`).
    pub fn ability_snapshot_path(&self) -> Option<PathBuf> {
        match &self.location {
            LakeLocation::Local(root) => Some(root.join(ABILITY_SNAPSHOT)),
            LakeLocation::ObjectStore { .. } => None,
        }
    }

    /// Writes the tracker's snapshot in the background when it has one (logged, not fatal:
    /// without it the next start reads the whole table).
    pub fn save_abilities_later(&self, bytes: Option<Vec<u8>>) {
        let Some(bytes) = bytes else { return };
        let location = self.location.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let size = bytes.len();
            match location.write(ABILITY_SNAPSHOT, bytes).await {
                Ok(()) => tracing::info!(
                    bytes = size,
                    ms = started.elapsed().as_millis() as u64,
                    "ability snapshot saved"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "saving the ability snapshot failed; the next start reads the whole table"
                ),
            }
        });
    }

    /// Rebuilds the ability estimates from the committed `attempt_questions` (call before
    /// the ingest starts, so no row is counted twice): from the ability snapshot when one
    /// is there, replaying only the rows it does not cover, else from the whole table.
    /// Returns the number of users.
    pub async fn rebuild_abilities(&self) -> Result<usize> {
        let Some(version) = self.attempt_questions.committed().version() else {
            self.abilities.set_version(None);
            return Ok(0);
        };
        let covered = self.load_ability_snapshot(version).await;
        let ctx = query::new_session();
        query::register_lake(&ctx, self, false).await?;
        let mut filter = String::from("user_correct IS NOT NULL");
        if let Some(covered) = &covered {
            // Per partition, the rows past what the snapshot holds (row groups whose
            // offsets are all covered are skipped by their statistics).
            let partitions = query::run_sql(
                &ctx,
                "SELECT DISTINCT source_topic, source_partition FROM attempt_questions",
            )
            .await?;
            let mut terms = Vec::new();
            for batch in &partitions {
                let Ok(topics) =
                    arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                else {
                    continue;
                };
                let topics = topics.as_any().downcast_ref::<arrow::array::StringArray>();
                let ids = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<arrow::array::Int32Array>();
                let (Some(topics), Some(ids)) = (topics, ids) else {
                    continue;
                };
                for row in 0..batch.num_rows() {
                    let (topic, partition) = (topics.value(row), ids.value(row));
                    let past = covered
                        .get(&(topic.to_string(), partition))
                        .copied()
                        .unwrap_or(-1);
                    terms.push(format!(
                        "(source_topic = '{}' AND source_partition = {partition} AND source_offset > {past})",
                        topic.replace('\'', "''")
                    ));
                }
            }
            if terms.is_empty() {
                terms.push("false".into());
            }
            filter = format!("{filter} AND ({})", terms.join(" OR "));
        }
        let batches = query::run_sql(
            &ctx,
            &format!(
                "SELECT keen_id, user_exam_id, exam_name, question_id, user_correct, option_count, \
                 source_topic, source_partition, source_offset \
                 FROM attempt_questions WHERE {filter} \
                 ORDER BY ingested_at, source_partition, source_offset, question_index"
            ),
        )
        .await?;
        let replayed: usize = batches.iter().map(|b| b.num_rows()).sum();
        for batch in &batches {
            self.abilities.observe(batch);
        }
        self.abilities.set_version(Some(version));
        if covered.is_none() || replayed > 0 {
            self.save_abilities_later(self.abilities.encode());
        }
        tracing::info!(
            from_snapshot = covered.is_some(),
            replayed_rows = replayed,
            version,
            "ability estimates read"
        );
        Ok(self.abilities.len())
    }

    /// Loads the ability snapshot into the tracker when it is whole and not newer than the
    /// table (a table opened at an older version after a torn entry); returns what it covers.
    async fn load_ability_snapshot(
        &self,
        version: u64,
    ) -> Option<std::collections::HashMap<(String, i32), i64>> {
        let bytes = match self.location.read(ABILITY_SNAPSHOT).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ability snapshot; reading the whole table");
                return None;
            }
        };
        match AbilityTracker::decode(&bytes) {
            Ok(tracker) if tracker.version().0.is_some_and(|v| v <= version) => {
                let covered = tracker.covered();
                self.abilities.replace_with(tracker);
                Some(covered)
            }
            Ok(tracker) => {
                tracing::warn!(snapshot = ?tracker.version().0, table = version, "the ability snapshot is newer than the table; reading the whole table");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the ability snapshot is unusable; reading the whole table");
                None
            }
        }
    }

    /// Where the tables are.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// Every table, in commit order.
    pub fn tables(&self) -> [&Arc<LakeTable>; 6] {
        [
            &self.attempts,
            &self.attempt_questions,
            &self.attempt_options,
            &self.score_changes,
            &self.score_detail_changes,
            &self.dead_letters,
        ]
    }
}

/// Helpers of the lake's tests: the sample attempts as batches of known Kafka positions.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::attempts::{Attempt, AttemptBatchBuilder, AttemptBatches};
    use crate::source::SourcePosition;

    /// `data/attempts/sample-300.json`, one JSON text per attempt.
    pub fn sample_texts() -> Vec<String> {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/attempts/sample-300.json");
        let documents: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
        documents.iter().map(|d| d.to_string()).collect()
    }

    /// `texts[range]` as batches from topic `exams`, partition 0, offsets = indexes.
    pub fn batches_of(texts: &[String], range: std::ops::Range<usize>) -> AttemptBatches {
        let mut builder = AttemptBatchBuilder::new();
        for offset in range {
            let attempt = Attempt::parse(texts[offset].as_bytes()).unwrap();
            let source = SourcePosition {
                topic: "exams",
                partition: 0,
                offset: offset as i64,
                ingested_at_us: offset as i64,
            };
            builder.append(&attempt, &source);
        }
        builder.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::attempts::{Attempt, AttemptBatchBuilder};
    use crate::source::SourcePosition;

    #[tokio::test]
    async fn abilities_are_rebuilt_from_the_committed_questions() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/attempts/sample-300.json");
        let documents: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).await.unwrap();
        let mut builder = AttemptBatchBuilder::new();
        let texts: Vec<String> = documents.iter().map(|d| d.to_string()).collect();
        for (offset, text) in texts.iter().enumerate() {
            let attempt = Attempt::parse(text.as_bytes()).unwrap();
            let source = SourcePosition {
                topic: "exams",
                partition: 0,
                offset: offset as i64,
                ingested_at_us: 0,
            };
            builder.append(&attempt, &source);
        }
        let batches = builder.finish();
        // Live: the ingest hands the questions to the tracker as it flushes them.
        lake.abilities.observe(&batches.questions);
        let live_users = lake.abilities.len();
        assert!(live_users > 0);
        lake.attempt_questions.push_tail(batches.questions);
        let positions = BTreeMap::from([(("exams".to_string(), 0), texts.len() as i64 - 1)]);
        lake.attempt_questions
            .commit_tail("app", &positions, 1)
            .await
            .unwrap();
        // After a restart the estimates come back from the table.
        let reopened = Lake::open(dir.path()).await.unwrap();
        assert!(reopened.abilities.is_empty());
        assert_eq!(reopened.rebuild_abilities().await.unwrap(), live_users);
        let some = lake.abilities.list(None, 1).pop().unwrap();
        let again = reopened.abilities.get(&some.user_exam_id).unwrap();
        assert_eq!(again.responses, some.responses);
        assert_eq!(again.attempts, some.attempts);
    }

    /// Commits `texts[range]` (partition 0, offsets = indexes) to `attempt_questions`.
    async fn commit_attempts(lake: &Lake, texts: &[String], range: std::ops::Range<usize>) {
        lake.attempt_questions
            .push_tail(super::test_support::batches_of(texts, range.clone()).questions);
        let positions = BTreeMap::from([(("exams".to_string(), 0), range.end as i64 - 1)]);
        lake.attempt_questions
            .commit_tail("app", &positions, 1)
            .await
            .unwrap();
    }

    async fn wait_for_snapshot(lake: &Lake, version: u64) {
        for _ in 0..200 {
            if let Ok(bytes) = std::fs::read(lake.ability_snapshot_path().unwrap())
                && AbilityTracker::decode(&bytes).is_ok_and(|t| t.version().0 == Some(version))
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("no ability snapshot of version {version}");
    }

    fn estimates(lake: &Lake) -> Vec<(String, f64, f64, usize, usize)> {
        let mut all: Vec<_> = lake
            .abilities
            .list(None, usize::MAX)
            .into_iter()
            .map(|a| (a.user_exam_id, a.theta, a.se, a.responses, a.attempts))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[tokio::test]
    async fn a_start_reads_the_snapshot_and_replays_only_newer_rows() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/attempts/sample-300.json");
        let documents: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
        let texts: Vec<String> = documents.iter().map(|d| d.to_string()).collect();
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).await.unwrap();
        commit_attempts(&lake, &texts, 0..200).await;
        // The first start reads the whole table and saves a snapshot of version 1.
        let first = Lake::open(dir.path()).await.unwrap();
        first.rebuild_abilities().await.unwrap();
        wait_for_snapshot(&first, 1).await;
        // More rows arrive; the next start takes the snapshot and replays rows 200.. only.
        commit_attempts(&lake, &texts, 200..texts.len()).await;
        let second = Lake::open(dir.path()).await.unwrap();
        second.rebuild_abilities().await.unwrap();
        let covered = second.abilities.covered();
        assert_eq!(
            covered.get(&("exams".to_string(), 0)),
            Some(&(texts.len() as i64 - 1))
        );
        wait_for_snapshot(&second, 2).await;
        // The same estimates as a start that reads the whole table.
        std::fs::remove_file(second.ability_snapshot_path().unwrap()).unwrap();
        let whole = Lake::open(dir.path()).await.unwrap();
        whole.rebuild_abilities().await.unwrap();
        // Every user with the same answers and attempts. An estimate is made with the
        // difficulties known when the user's rows arrive (as the live ingest does): users of
        // the replayed rows match the whole read, the others keep the snapshot's estimate.
        let replayed: std::collections::HashSet<&str> = documents[200..]
            .iter()
            .filter_map(|d| d["user_exam_id"].as_str())
            .collect();
        let snapshot = estimates(&first);
        let (got, want) = (estimates(&second), estimates(&whole));
        assert_eq!(got.len(), want.len());
        let mut compared = [0, 0];
        for (a, b) in got.iter().zip(want.iter()) {
            assert_eq!((&a.0, a.3, a.4), (&b.0, b.3, b.4));
            let expected = if replayed.contains(a.0.as_str()) {
                compared[0] += 1;
                b
            } else {
                compared[1] += 1;
                snapshot.iter().find(|s| s.0 == a.0).unwrap()
            };
            assert!(
                (a.1 - expected.1).abs() < 1e-9 && (a.2 - expected.2).abs() < 1e-9,
                "{a:?} {expected:?}"
            );
        }
        assert!(compared[0] > 0 && compared[1] > 0, "{compared:?}");
        // A snapshot newer than the table (the table rolled back) or damaged is not used.
        wait_for_snapshot(&whole, 2).await;
        let mut bytes = std::fs::read(whole.ability_snapshot_path().unwrap()).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(whole.ability_snapshot_path().unwrap(), &bytes).unwrap();
        let damaged = Lake::open(dir.path()).await.unwrap();
        damaged.rebuild_abilities().await.unwrap();
        assert_eq!(estimates(&damaged).len(), estimates(&whole).len());
    }
}
