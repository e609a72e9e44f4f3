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
