//! Keeping the lake small and fast to read: compaction of the many small files that frequent
//! commits leave, and vacuum of the files compaction replaced. Checkpoints are written by the
//! commits themselves (every 20 versions, the tables' `delta.checkpointInterval`).

use std::sync::Arc;
use std::time::Duration;

use super::durable;
use super::{Lake, LakeTable};

/// What housekeeping did to one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableHousekeeping {
    pub files_removed: u64,
    pub files_added: u64,
    pub files_vacuumed: usize,
}

/// Compacts then vacuums one table. Errors are returned, not fatal to ingest.
pub async fn compact_and_vacuum(
    table: &LakeTable,
    retention: Duration,
) -> Result<TableHousekeeping, deltalake::DeltaTableError> {
    let mut report = TableHousekeeping::default();
    let current = table.committed();
    if current.version().is_none() {
        return Ok(report);
    }
    let before = current.version();
    let (compacted, metrics) = current
        .optimize()
        .with_session_state(Arc::new(plain_types_session()))
        .await?;
    report.files_removed = metrics.num_files_removed;
    report.files_added = metrics.num_files_added;
    // delta-rs writes the compacted files and commits in one call, without fsync: make its
    // files and entry durable before vacuum deletes what they replace and before the next
    // commit builds on them. (Until then, a power loss can leave the entry naming files
    // that are not on disk; opening the table sets such a trailing entry aside, which loses
    // nothing: compaction changes no rows.)
    if let Some(version) = compacted.version().filter(|v| Some(*v) != before) {
        sync_compaction(table, version).map_err(|e| {
            deltalake::DeltaTableError::Generic(format!(
                "fsync of compaction (version {version}) failed: {e}"
            ))
        })?;
    }
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::hours(1));
    let (_, vacuumed) = compacted
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await?;
    report.files_vacuumed = vacuumed.files_deleted.len();
    Ok(report)
}

/// The session compaction reads and writes with: the files it writes keep the tables' own
/// Arrow types (`Utf8`). delta-rs otherwise writes the view types its scan produces
/// (`Utf8View`) into the files' Arrow schema, which some readers of the lake (Daft) refuse.
fn plain_types_session() -> datafusion::execution::SessionState {
    let mut config = datafusion::prelude::SessionConfig::new();
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    datafusion::prelude::SessionContext::new_with_config(config).state()
}

/// fsyncs the files compaction's commit `version` added, their directories and its log entry
/// (a local lake; an object store's puts are durable when they return).
fn sync_compaction(table: &LakeTable, version: u64) -> std::io::Result<()> {
    let Some(dir) = table.dir() else {
        return Ok(());
    };
    let entry = dir.join("_delta_log").join(format!("{version:020}.json"));
    let added = durable::added_files(&std::fs::read(&entry)?);
    let paths: Vec<&str> = added.iter().map(String::as_str).collect();
    durable::sync_data(dir, &paths, table.syncer())?;
    durable::sync_log(dir, version, table.syncer())
}

/// Housekeeping of every table; failures are logged and retried next time.
pub async fn run(lake: &Lake, retention: Duration) {
    for table in lake.tables() {
        match compact_and_vacuum(table, retention).await {
            Ok(report) => {
                if report != TableHousekeeping::default() {
                    tracing::info!(table = table.name(), ?report, "housekeeping");
                }
            }
            Err(e) => tracing::warn!(table = table.name(), error = %e, "housekeeping failed"),
        }
        if let Err(e) = table.refresh().await {
            tracing::warn!(table = table.name(), error = %e, "refresh after housekeeping failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lake::changes::{DeadLetterBuilder, dead_letters_schema};
    use crate::source::SourcePosition;

    #[tokio::test]
    async fn compaction_keeps_rows_and_offsets_and_vacuum_removes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead_letters");
        let table = table_of_small_files(&path, 5).await;
        let files_before = table.committed().get_file_uris().unwrap().count();
        assert_eq!(files_before, 5);
        let report = compact_and_vacuum(&table, Duration::ZERO).await.unwrap();
        assert_eq!(report.files_removed, 5);
        assert_eq!(report.files_added, 1);
        assert_eq!(report.files_vacuumed, 5, "{report:?}");
        table.refresh().await.unwrap();
        assert_eq!(table.committed().get_file_uris().unwrap().count(), 1);
        let mut parquet = parquet_files(&path);
        assert_eq!(parquet.len(), 1, "vacuum deleted the replaced files");
        // The compacted file keeps the table's types in its Arrow schema (no view types).
        let file = std::fs::File::open(parquet.pop().unwrap()).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap();
        let types: Vec<_> = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert!(
            !types
                .iter()
                .any(|t| matches!(t, arrow::datatypes::DataType::Utf8View)),
            "{types:?}"
        );
        assert!(
            types.contains(&arrow::datatypes::DataType::Utf8),
            "{types:?}"
        );
        // The offsets recorded by the commits survive compaction.
        let offsets = table
            .committed_offsets("app", &[("t".to_string(), 0)])
            .await
            .unwrap();
        assert_eq!(offsets.get(&("t".to_string(), 0)), Some(&4));
        // And so do the rows.
        let ctx = crate::lake::query::new_session();
        let committed = table.committed();
        committed.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("dl", committed.table_provider().await.unwrap())
            .unwrap();
        let batches = crate::lake::query::run_sql(&ctx, "SELECT count(*) AS n FROM dl")
            .await
            .unwrap();
        let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
            batches[0].column(0),
        )
        .value(0);
        assert_eq!(n, 5);
    }

    /// A dead-letters table at `path` with one file per offset in `0..commits`.
    async fn table_of_small_files(path: &std::path::Path, commits: i64) -> LakeTable {
        let table = LakeTable::open_or_create(
            "dead_letters",
            &crate::lake::location::TableLocation::local(path).unwrap(),
            dead_letters_schema(),
        )
        .await
        .unwrap();
        for offset in 0..commits {
            let mut rows = DeadLetterBuilder::new();
            rows.append(
                "bad",
                None,
                Some(b"x"),
                &SourcePosition {
                    topic: "t",
                    partition: 0,
                    offset,
                    ingested_at_us: 0,
                },
            );
            table.push_tail(rows.finish());
            let positions = BTreeMap::from([(("t".to_string(), 0), offset)]);
            table.commit_tail("app", &positions, 1).await.unwrap();
        }
        table
    }

    fn parquet_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect()
    }

    #[tokio::test]
    async fn compaction_is_durable_before_vacuum_deletes_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead_letters");
        let table = table_of_small_files(&path, 4).await;
        let before = parquet_files(&path);
        let (sync, seen) = durable::test_syncer(|_| false);
        let table = table.with_syncer(sync);
        let report = compact_and_vacuum(&table, Duration::ZERO).await.unwrap();
        assert_eq!((report.files_removed, report.files_added), (4, 1));
        let after = parquet_files(&path);
        assert_eq!(after.len(), 1);
        assert!(!before.contains(&after[0]));
        let seen = seen.lock().unwrap().clone();
        let entry = path.join("_delta_log").join(format!("{:020}.json", 5));
        for needed in [&after[0], &path, &entry, &path.join("_delta_log")] {
            assert!(
                seen.contains(needed),
                "{} not fsynced: {seen:?}",
                needed.display()
            );
        }
    }

    #[tokio::test]
    async fn a_failed_fsync_of_compaction_fails_housekeeping_and_vacuum_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead_letters");
        let table = table_of_small_files(&path, 3).await;
        let (sync, _) = durable::test_syncer(|p| p.extension().is_some_and(|x| x == "parquet"));
        let table = table.with_syncer(sync);
        let e = compact_and_vacuum(&table, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("fsync of compaction"), "{e}");
        // The replaced files are still there: a torn compaction can be set aside.
        assert_eq!(parquet_files(&path).len(), 4);
    }

    #[tokio::test]
    async fn a_compaction_whose_file_did_not_reach_the_disk_is_set_aside_on_opening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead_letters");
        let table = table_of_small_files(&path, 3).await;
        let before = parquet_files(&path);
        // Retention of an hour: vacuum keeps the replaced files, as after a power loss
        // right after compaction's commit.
        compact_and_vacuum(&table, Duration::from_secs(3600))
            .await
            .unwrap();
        drop(table);
        let compacted: Vec<_> = parquet_files(&path)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        assert_eq!(compacted.len(), 1);
        // Its data never reached the disk: the file is empty (or gone).
        std::fs::write(&compacted[0], b"").unwrap();
        let reopened = LakeTable::open_or_create(
            "dead_letters",
            &crate::lake::location::TableLocation::local(&path).unwrap(),
            dead_letters_schema(),
        )
        .await
        .unwrap();
        assert_eq!(reopened.committed().version(), Some(3));
        assert_eq!(reopened.committed().get_file_uris().unwrap().count(), 3);
        assert!(path.join(durable::TORN_DIR).is_dir());
        let offsets = reopened
            .committed_offsets("app", &[("t".to_string(), 0)])
            .await
            .unwrap();
        assert_eq!(offsets.get(&("t".to_string(), 0)), Some(&2));
    }
}
