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
pub mod outbox;
pub mod query;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::abilities::AbilityTracker;
use crate::attempts::{attempt_options_schema, attempt_questions_schema, attempts_schema};
use crate::error::Result;
use changes::{dead_letters_schema, score_changes_schema, score_detail_changes_schema};
pub use table::{CommitReport, LakeTable, TopicPartition};

/// Names and schemas of the physical tables, in commit order: `attempts` first, because it
/// decides which copy of a replayed attempt is the original (see the pipeline).
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

/// All tables of one data directory.
pub struct Lake {
    root: PathBuf,
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
        let root = Self::dir(data_dir);
        let root = std::path::absolute(&root).unwrap_or(root);
        let mut tables = Vec::new();
        for (name, schema) in table_definitions() {
            tables.push(Arc::new(
                LakeTable::open_or_create(name, &root.join(name), schema).await?,
            ));
        }
        let mut tables = tables.into_iter();
        let mut next = || tables.next().expect("six tables");
        Ok(Lake {
            root,
            attempts: next(),
            attempt_questions: next(),
            attempt_options: next(),
            score_changes: next(),
            score_detail_changes: next(),
            dead_letters: next(),
            abilities: AbilityTracker::new(),
        })
    }

    /// Rebuilds the ability estimates from the committed `attempt_questions` (call before
    /// the ingest starts, so no row is counted twice). Returns the number of users.
    pub async fn rebuild_abilities(&self) -> Result<usize> {
        if self.attempt_questions.committed().version().is_none() {
            return Ok(0);
        }
        let ctx = query::new_session();
        query::register_lake(&ctx, self, false).await?;
        let batches = query::run_sql(
            &ctx,
            "SELECT keen_id, user_exam_id, exam_name, question_id, user_correct, option_count \
             FROM attempt_questions WHERE user_correct IS NOT NULL \
             ORDER BY ingested_at, source_partition, source_offset, question_index",
        )
        .await?;
        for batch in &batches {
            self.abilities.observe(batch);
        }
        Ok(self.abilities.len())
    }

    pub fn root(&self) -> &Path {
        &self.root
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
}
