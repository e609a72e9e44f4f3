//! DataFusion over the lake: every table registered under its name, live (committed snapshot
//! plus the in-memory tail) when asked, and the `scores` / `score_details` views.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{Lake, LakeTable};
use crate::error::{IngestError, Result};

/// `scores`: the latest change of each result document (by change time, then offset).
/// Replaying an event cannot change the answer, so change events are idempotent.
const SCORES_VIEW: &str = "CREATE VIEW scores AS
SELECT document_id, email, exam, score, total, percentage, result, submitted_at, deleted, op,
       changed_at, source_topic, source_partition, source_offset, ingested_at
FROM (
  SELECT *, row_number() OVER (
      PARTITION BY document_id
      ORDER BY changed_at DESC NULLS LAST, source_offset DESC, source_partition DESC) AS change_rank
  FROM score_changes)
WHERE change_rank = 1";

/// `score_details`: the questions of the change that is current in `scores`, unless deleted.
const SCORE_DETAILS_VIEW: &str = "CREATE VIEW score_details AS
SELECT d.document_id, s.email, s.exam, d.question_index, d.item, d.question, d.user_answer,
       d.correct_answer, d.is_correct, d.changed_at, d.source_topic, d.source_partition,
       d.source_offset, d.ingested_at
FROM score_detail_changes d
JOIN scores s
  ON d.document_id = s.document_id AND d.source_topic = s.source_topic
 AND d.source_partition = s.source_partition AND d.source_offset = s.source_offset
WHERE NOT s.deleted";

fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("examflow", "public")
}

/// A session with sensible defaults for examflow's tables.
pub fn new_session() -> SessionContext {
    SessionContext::new_with_config(session_config())
}

/// Like [`new_session`], with queries limited to `bytes` of memory for their operators
/// (a query that needs more fails with DataFusion's resources-exhausted error).
pub fn new_session_with_memory_limit(bytes: usize) -> Result<SessionContext> {
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(bytes, 1.0)
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(
        session_config(),
        runtime,
    ))
}

async fn committed_provider(
    ctx: &SessionContext,
    table: &deltalake::DeltaTable,
    empty: Arc<MemTable>,
) -> Result<Arc<dyn TableProvider>> {
    if table.version().is_none() {
        return Ok(empty);
    }
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| IngestError::LakeSetup(format!("registering the table's storage: {e}")))?;
    table.table_provider().await.map_err(IngestError::Query)
}

async fn register(ctx: &SessionContext, table: &LakeTable, live: bool) -> Result<()> {
    let schema = table.schema();
    let empty = Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?);
    let (committed, tail) = table.live();
    let committed = committed_provider(ctx, &committed, empty).await?;
    let provider = if live && !tail.is_empty() {
        let tail = Arc::new(MemTable::try_new(schema, vec![tail])?);
        let df = ctx.read_table(committed)?.union(ctx.read_table(tail)?)?;
        df.into_view()
    } else {
        committed
    };
    ctx.register_table(table.name(), provider)?;
    Ok(())
}

/// Registers all tables and views. `live` adds each table's uncommitted tail.
pub async fn register_lake(ctx: &SessionContext, lake: &Lake, live: bool) -> Result<()> {
    for table in lake.tables() {
        register(ctx, table, live).await?;
    }
    for view in [SCORES_VIEW, SCORE_DETAILS_VIEW] {
        ctx.sql(view).await?.collect().await?;
    }
    Ok(())
}

/// Runs one query to completion.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}
