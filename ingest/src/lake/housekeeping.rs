//! Keeping the lake small and fast to read: compaction of the many small files that frequent
//! commits leave, and vacuum of the files compaction replaced. Checkpoints are written by the
//! commits themselves (every 20 versions, the tables' `delta.checkpointInterval`).

use std::time::Duration;

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
    let (compacted, metrics) = current.optimize().await?;
    report.files_removed = metrics.num_files_removed;
    report.files_added = metrics.num_files_added;
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::hours(1));
    let (_, vacuumed) = compacted
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await?;
    report.files_vacuumed = vacuumed.files_deleted.len();
    Ok(report)
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
        let table = LakeTable::open_or_create("dead_letters", &path, dead_letters_schema())
            .await
            .unwrap();
        for offset in 0..5i64 {
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
        let files_before = table.committed().get_file_uris().unwrap().count();
        assert_eq!(files_before, 5);
        let report = compact_and_vacuum(&table, Duration::ZERO).await.unwrap();
        assert_eq!(report.files_removed, 5);
        assert_eq!(report.files_added, 1);
        assert_eq!(report.files_vacuumed, 5, "{report:?}");
        table.refresh().await.unwrap();
        assert_eq!(table.committed().get_file_uris().unwrap().count(), 1);
        let parquet_files = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "parquet")
            })
            .count();
        assert_eq!(parquet_files, 1, "vacuum deleted the replaced files");
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
}
