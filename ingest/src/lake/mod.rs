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
//! Queries also see two views: `scores` (the latest change per document; deletes kept with
//! `deleted = true`) and `score_details` (the questions of each live, undeleted document).

pub mod changes;
pub mod housekeeping;
pub mod query;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

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
        })
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
