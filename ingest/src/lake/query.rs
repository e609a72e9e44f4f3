//! DataFusion over the lake: every table registered under its name, live (committed snapshot
//! plus the in-memory tail) when asked, and the `scores` / `score_details` views.
//!
//! Two ways to be live: [`register_lake`] with `live` takes the snapshot and tail once, when
//! the session is built (one session per query); [`register_lake_at_scan`] registers
//! providers that take them anew each time a query scans the table (a long-lived session,
//! such as the PostgreSQL interface's).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::options::ReadOptions;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

use super::latest::LatestChanges;
use super::{Lake, LakeTable};
use crate::error::{IngestError, Result};

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
/// (a query that needs more fails with DataFusion's resources-exhausted error). Spilling
/// to disk is off: a shared server must not fill its disk with one analyst's sort.
pub fn new_session_with_memory_limit(bytes: usize) -> Result<SessionContext> {
    Ok(SessionContext::new_with_config_rt(
        session_config(),
        limited_runtime(bytes)?,
    ))
}

/// A runtime whose memory pool holds `bytes`, without spilling (see
/// [`new_session_with_memory_limit`]); give each query, or each connection, its own.
pub fn limited_runtime(
    bytes: usize,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    Ok(datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(bytes, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?)
}

/// A runtime over a memory pool of the caller's (e.g. one query's share of a pool the
/// whole server shares), without spilling, like [`limited_runtime`].
pub fn runtime_with_pool(
    pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    Ok(datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?)
}

/// A session like [`new_session`] over a given runtime (see [`runtime_with_pool`]).
pub fn new_session_with_runtime(
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> SessionContext {
    SessionContext::new_with_config_rt(session_config(), runtime)
}

async fn committed_provider(
    ctx: &SessionContext,
    table: &deltalake::DeltaTable,
    empty: Arc<MemTable>,
) -> Result<Arc<dyn TableProvider>> {
    if table.version().is_none() {
        return Ok(empty);
    }
    Ok(Arc::new(
        SnapshotTable::new(&ctx.state(), table.clone()).await?,
    ))
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
    register_views(ctx).await
}

/// `exam_summary`: one row per exam over the current results (deleted ones left out).
const EXAM_SUMMARY_VIEW: &str = "CREATE VIEW exam_summary AS
SELECT exam, count(*) AS results, count(DISTINCT email) AS takers,
       avg(percentage) AS mean_percentage, median(percentage) AS median_percentage,
       stddev(percentage) AS sd_percentage,
       avg(CASE WHEN result = 'passed' THEN 1.0 ELSE 0.0 END) AS pass_rate,
       min(submitted_at) AS first_submitted_at, max(submitted_at) AS last_submitted_at
FROM scores WHERE NOT deleted
GROUP BY exam";

/// `question_difficulty`: per exam and item, the share of right answers (p-value) over
/// the current results.
const QUESTION_DIFFICULTY_VIEW: &str = "CREATE VIEW question_difficulty AS
SELECT exam, item, min(question) AS question, count(*) AS responses,
       avg(CASE WHEN is_correct THEN 1.0 ELSE 0.0 END) AS p_value
FROM score_details
GROUP BY exam, item";

/// `attempt_question_difficulty`: the same for the ingested attempts (answered questions).
const ATTEMPT_QUESTION_DIFFICULTY_VIEW: &str = "CREATE VIEW attempt_question_difficulty AS
SELECT exam_name, question_id, count(*) AS responses,
       avg(CASE WHEN user_correct THEN 1.0 ELSE 0.0 END) AS p_value
FROM attempt_questions WHERE user_correct IS NOT NULL
GROUP BY exam_name, question_id";

/// `student_history`: each student's results in order, numbered per exam.
const STUDENT_HISTORY_VIEW: &str = "CREATE VIEW student_history AS
SELECT email, exam, submitted_at,
       row_number() OVER (PARTITION BY email, exam ORDER BY submitted_at, document_id) AS attempt,
       score, total, percentage, result, document_id
FROM scores WHERE NOT deleted";

async fn register_views(ctx: &SessionContext) -> Result<()> {
    // `scores` first: the views below read it.
    let changes = ctx.table_provider("score_changes").await?;
    ctx.register_table("scores", Arc::new(LatestChanges::new(changes)?))?;
    for view in [
        SCORE_DETAILS_VIEW,
        EXAM_SUMMARY_VIEW,
        QUESTION_DIFFICULTY_VIEW,
        ATTEMPT_QUESTION_DIFFICULTY_VIEW,
        STUDENT_HISTORY_VIEW,
    ] {
        ctx.sql(view).await?.collect().await?;
    }
    Ok(())
}

/// Registers all tables, each resolved when a query scans it (committed snapshot plus tail
/// as they are then), and the views over them: a session that lives long still sees new
/// rows. Two scans of one table in one query may see different moments.
pub async fn register_lake_at_scan(ctx: &SessionContext, lake: &Lake) -> Result<()> {
    for table in lake.tables() {
        let provider = LiveLakeTable::new(ctx, table.clone()).await?;
        ctx.register_table(table.name(), Arc::new(provider))?;
    }
    register_views(ctx).await
}

/// The committed snapshot of a lake table.
///
/// A snapshot that is plain Parquet — no partition columns, no deletion vectors, no column
/// mapping; examflow writes no other kind — is
/// scanned by DataFusion's own Parquet reader: a `ListingTable` over exactly the snapshot's
/// live files, planned as `register_parquet` would. Why: the Delta provider's kernel scan
/// wraps the same reader in per-file bookkeeping (a file-id column, the pushed predicate
/// applied twice) that made a selective count 1.8× slower than DataFusion alone
/// (benches/RESULTS.md). Any other snapshot goes through the Delta provider, which knows
/// those features.
pub struct SnapshotTable {
    table: deltalake::DeltaTable,
    /// The Delta provider's schema: both paths answer with it.
    schema: SchemaRef,
    /// The live files when the snapshot is plain Parquet.
    plain_files: Option<Vec<ListingTableUrl>>,
}

impl SnapshotTable {
    /// `table` must have a version (a committed snapshot).
    pub async fn new(state: &dyn Session, table: deltalake::DeltaTable) -> Result<Self> {
        table
            .update_datafusion_session(state)
            .map_err(|e| IngestError::LakeSetup(format!("registering the table's storage: {e}")))?;
        let schema = table
            .table_provider()
            .await
            .map_err(IngestError::Query)?
            .schema();
        Ok(Self::with_schema(table, schema))
    }

    /// Like [`SnapshotTable::new`] when the Delta provider's schema is already known (a
    /// [`LiveLakeTable`] scan): no provider is built unless the scan falls back to it.
    fn with_schema(table: deltalake::DeltaTable, schema: SchemaRef) -> Self {
        let plain_files = plain_parquet_files(&table);
        SnapshotTable {
            table,
            schema,
            plain_files,
        }
    }

    /// Whether scans read the files with DataFusion's Parquet reader directly.
    pub fn is_plain_parquet(&self) -> bool {
        self.plain_files.is_some()
    }
}

/// The snapshot's live files if it is plain Parquet, else `None`. Plain: no partition
/// columns, no column mapping, no deletion vectors — the features that change how a file's
/// rows become the table's (others, such as `timestampNtz`, concern types, which
/// DataFusion's schema adapter handles). Local files by path; files in object storage by
/// URL, read through the store the table registers with the session.
fn plain_parquet_files(table: &deltalake::DeltaTable) -> Option<Vec<ListingTableUrl>> {
    let snapshot = table.snapshot().ok()?;
    let metadata = snapshot.metadata();
    let column_mapping = metadata
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|mode| mode != "none");
    if column_mapping || !metadata.partition_columns().is_empty() {
        return None;
    }
    let local = table.log_store().root_url().scheme() == "file";
    let mut files = Vec::new();
    for file in snapshot.log_data() {
        if file.deletion_vector_descriptor().is_some() {
            return None;
        }
        // A local store's URI is the file's absolute path; another store's, its URL.
        let uri = table.log_store().to_uri(&file.object_store_path());
        let url = if local {
            url::Url::from_file_path(&uri).ok()?
        } else {
            url::Url::parse(&uri).ok()?
        };
        files.push(ListingTableUrl::try_new(url, None).ok()?);
    }
    // An empty snapshot has no file to read the layout from; the Delta provider handles it.
    (!files.is_empty()).then_some(files)
}

impl std::fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTable")
            .field("version", &self.table.version())
            .field("plain_files", &self.plain_files.as_ref().map(Vec::len))
            .finish()
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters prune files and row groups; DataFusion applies them again above the scan.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // The table's store (an object store's bucket) must be known to this session.
        self.table
            .update_datafusion_session(state)
            .map_err(external)?;
        if let Some(files) = &self.plain_files {
            let options = ParquetReadOptions::default()
                .to_listing_options(state.config(), state.table_options().clone());
            let config = ListingTableConfig::new_with_multi_paths(files.clone())
                .with_listing_options(options)
                .with_schema(self.schema.clone());
            return ListingTable::try_new(config)?
                .scan(state, projection, filters, limit)
                .await;
        }
        let provider = self.table.table_provider().await.map_err(external)?;
        let filters = usable_filters(provider.as_ref(), filters)?;
        provider.scan(state, projection, &filters, limit).await
    }
}

/// Filters given to `provider`'s scan: only those it can use.
fn usable_filters(
    provider: &dyn TableProvider,
    filters: &[Expr],
) -> datafusion::error::Result<Vec<Expr>> {
    let refs: Vec<&Expr> = filters.iter().collect();
    let support = provider.supports_filters_pushdown(&refs)?;
    Ok(filters
        .iter()
        .zip(support)
        .filter(|(_, s)| *s != TableProviderFilterPushDown::Unsupported)
        .map(|(f, _)| f.clone())
        .collect())
}

/// `plan` with its columns cast to the types of `target` where they differ (the Delta scan
/// reads strings as `Utf8View`, the tail holds `Utf8`).
fn conform(
    plan: Arc<dyn ExecutionPlan>,
    target: &SchemaRef,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let same = schema.fields().len() == target.fields().len()
        && schema
            .fields()
            .iter()
            .zip(target.fields())
            .all(|(a, b)| a.data_type() == b.data_type());
    if same {
        return Ok(plan);
    }
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for (i, field) in target.fields().iter().enumerate() {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(schema.field(i).name(), i));
        let expr: Arc<dyn PhysicalExpr> = if schema.field(i).data_type() == field.data_type() {
            column
        } else {
            Arc::new(CastExpr::new(column, field.data_type().clone(), None))
        };
        exprs.push((expr, field.name().clone()));
    }
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A lake table whose scans read the committed snapshot and the tail current at scan time.
pub struct LiveLakeTable {
    table: Arc<LakeTable>,
    /// The Delta provider's schema (what [`register_lake`] shows too); the tail is cast to it.
    schema: SchemaRef,
}

impl LiveLakeTable {
    pub async fn new(ctx: &SessionContext, table: Arc<LakeTable>) -> Result<Self> {
        let committed = table.committed();
        let schema = if committed.version().is_some() {
            SnapshotTable::new(&ctx.state(), committed).await?.schema
        } else {
            table.schema()
        };
        Ok(LiveLakeTable { table, schema })
    }
}

impl std::fmt::Debug for LiveLakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LiveLakeTable")
            .field(&self.table.name())
            .finish()
    }
}

#[async_trait]
impl TableProvider for LiveLakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters may skip files of the committed snapshot; they are applied again above.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let target = match projection {
            Some(columns) => Arc::new(self.schema.project(columns)?),
            None => self.schema.clone(),
        };
        let (committed, tail) = self.table.live();
        let mut plans = Vec::new();
        if committed.version().is_some() {
            // The Delta provider's schema, as at registration (the tail is conformed to it).
            let snapshot = SnapshotTable::with_schema(committed, self.schema.clone());
            let plan = snapshot.scan(state, projection, filters, limit).await?;
            plans.push(conform(plan, &target)?);
        }
        if !tail.is_empty() || plans.is_empty() {
            let tail = MemTable::try_new(self.table.schema(), vec![tail])?;
            let plan = tail.scan(state, projection, &[], limit).await?;
            plans.push(conform(plan, &target)?);
        }
        UnionExec::try_new(plans)
    }
}

/// Rows of a table that is read again each time a query scans it.
#[async_trait]
pub trait ScanTimeSource: std::fmt::Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    async fn batches(&self) -> datafusion::error::Result<Vec<RecordBatch>>;
}

/// A table whose rows come from a [`ScanTimeSource`] when a query scans it.
#[derive(Debug)]
pub struct ScanTimeTable<S>(pub S);

#[async_trait]
impl<S: ScanTimeSource> TableProvider for ScanTimeTable<S> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let table = MemTable::try_new(self.0.schema(), vec![self.0.batches().await?])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// Runs one query to completion.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use arrow::array::{Array, Int64Array};

    use super::*;
    use crate::attempts::{Attempt, AttemptBatchBuilder, AttemptBatches};
    use crate::source::SourcePosition;

    fn batches(texts: &[String], first_offset: usize) -> AttemptBatches {
        let mut builder = AttemptBatchBuilder::new();
        for (i, text) in texts.iter().enumerate() {
            let attempt = Attempt::parse(text.as_bytes()).unwrap();
            let source = SourcePosition {
                topic: "exams",
                partition: 0,
                offset: (first_offset + i) as i64,
                ingested_at_us: 0,
            };
            builder.append(&attempt, &source);
        }
        builder.finish()
    }

    async fn number(ctx: &SessionContext, sql: &str) -> i64 {
        let batches = run_sql(ctx, sql).await.unwrap();
        let column = batches[0].column(0);
        column
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap_or_else(|| panic!("{sql}: {:?}", column.data_type()))
            .value(0)
    }

    /// What a long-lived session registered with [`register_lake_at_scan`] answers equals
    /// what a session built now with [`register_lake`] answers, as rows arrive and commit.
    #[tokio::test]
    async fn scans_see_the_snapshot_and_tail_of_their_moment() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/attempts/sample-300.json");
        let documents: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
        let texts: Vec<String> = documents.iter().take(120).map(|d| d.to_string()).collect();
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).await.unwrap();
        let long_lived = new_session();
        register_lake_at_scan(&long_lived, &lake).await.unwrap();
        let queries = [
            "SELECT count(*) FROM attempts",
            "SELECT count(*) FROM attempts WHERE keen_id IN (SELECT keen_id FROM attempts)",
            "SELECT count(*) FROM attempt_questions q JOIN attempts a ON q.keen_id = a.keen_id",
            "SELECT count(*) FROM attempt_questions WHERE options_checked IS NOT NULL",
        ];
        let agree = |expected_attempts: i64| {
            let (long_lived, lake) = (&long_lived, &lake);
            async move {
                let now = new_session();
                register_lake(&now, lake, true).await.unwrap();
                for sql in queries {
                    assert_eq!(
                        number(long_lived, sql).await,
                        number(&now, sql).await,
                        "{sql}"
                    );
                }
                assert_eq!(number(long_lived, queries[0]).await, expected_attempts);
            }
        };
        agree(0).await;

        // Rows in the tail only.
        let first = batches(&texts[..80], 0);
        let first_rows = first.attempts.num_rows() as i64;
        lake.attempts.push_tail(first.attempts);
        lake.attempt_questions.push_tail(first.questions);
        agree(first_rows).await;

        // Committed, then a newer tail on top.
        let positions = BTreeMap::from([(("exams".to_string(), 0), 79)]);
        lake.attempts
            .commit_tail("app", &positions, 1)
            .await
            .unwrap();
        lake.attempt_questions
            .commit_tail("app", &positions, 1)
            .await
            .unwrap();
        agree(first_rows).await;
        let second = batches(&texts[80..], 80);
        let second_rows = second.attempts.num_rows() as i64;
        lake.attempts.push_tail(second.attempts);
        lake.attempt_questions.push_tail(second.questions);
        agree(first_rows + second_rows).await;
    }

    /// examflow's own snapshots are read by DataFusion's Parquet reader, and every answer
    /// equals the Delta provider's on the same snapshot (projections, filters that prune
    /// and that do not, limits, joins).
    #[tokio::test]
    async fn plain_snapshots_scan_like_the_delta_provider() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/attempts/sample-300.json");
        let documents: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
        let texts: Vec<String> = documents.iter().map(|d| d.to_string()).collect();
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).await.unwrap();
        // Two commits, so the snapshot has more than one file.
        for range in [0..150usize, 150..texts.len()] {
            let part = batches(&texts[range.clone()], range.start);
            lake.attempts.push_tail(part.attempts);
            lake.attempt_questions.push_tail(part.questions);
            let positions = BTreeMap::from([(("exams".to_string(), 0), range.end as i64 - 1)]);
            lake.attempts
                .commit_tail("app", &positions, 1)
                .await
                .unwrap();
            lake.attempt_questions
                .commit_tail("app", &positions, 1)
                .await
                .unwrap();
        }

        let ours = new_session();
        register_lake(&ours, &lake, true).await.unwrap();
        let delta = new_session();
        for table in [&lake.attempts, &lake.attempt_questions] {
            let committed = table.committed();
            committed.update_datafusion_session(&delta.state()).unwrap();
            let snapshot = SnapshotTable::new(&ours.state(), committed.clone())
                .await
                .unwrap();
            assert!(snapshot.is_plain_parquet(), "{}", table.name());
            let files = plain_parquet_files(&committed).unwrap();
            assert_eq!(files.len(), 2, "{}", table.name());
            delta
                .register_table(table.name(), committed.table_provider().await.unwrap())
                .unwrap();
        }
        let queries = [
            "SELECT * FROM attempt_questions ORDER BY keen_id, question_index",
            "SELECT count(*) AS n FROM attempt_questions",
            "SELECT exam_name, count(*) AS n FROM attempt_questions \
             WHERE user_result = 'incorrect' GROUP BY exam_name ORDER BY exam_name",
            "SELECT keen_id, question_id FROM attempt_questions \
             WHERE question_index > 3 AND user_correct ORDER BY keen_id, question_id",
            "SELECT a.keen_id, count(*) AS n FROM attempts a JOIN attempt_questions q \
             ON a.keen_id = q.keen_id GROUP BY a.keen_id ORDER BY a.keen_id",
            "SELECT count(*) AS n FROM (SELECT keen_id FROM attempts LIMIT 7)",
            "SELECT * FROM attempts ORDER BY keen_id",
        ];
        for sql in queries {
            let a = run_sql(&ours, sql).await.unwrap();
            let b = run_sql(&delta, sql).await.unwrap();
            let a = arrow::compute::concat_batches(&a[0].schema(), &a).unwrap();
            let b = arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
            assert!(a.num_rows() > 0, "{sql}");
            assert_eq!(a, b, "{sql}");
        }
        let plan = run_sql(
            &ours,
            "EXPLAIN SELECT count(*) FROM attempt_questions WHERE user_result = 'incorrect'",
        )
        .await
        .unwrap();
        let plan = arrow::util::pretty::pretty_format_batches(&plan)
            .unwrap()
            .to_string();
        assert!(plan.contains("DataSourceExec"), "{plan}");
        assert!(!plan.contains("DeltaScan"), "{plan}");
    }

    /// A snapshot with partition columns is not plain: it goes through the Delta provider,
    /// which adds the partition values back to the rows.
    #[tokio::test]
    async fn partitioned_snapshots_fall_back_to_the_delta_provider() {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        use deltalake::kernel::StructType;
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
        use deltalake::writer::{DeltaWriter, RecordBatchWriter};

        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("exam", DataType::Utf8, false),
            Field::new("score", DataType::Int64, false),
        ]));
        let columns: StructType = schema.as_ref().try_into_kernel().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(columns.fields().cloned())
            .with_partition_columns(["exam"])
            .await
            .unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "a"])),
                Arc::new(Int64Array::from(vec![1, 2, 4])),
            ],
        )
        .unwrap();
        let mut writer = RecordBatchWriter::for_table(&table).unwrap();
        writer.write(batch).await.unwrap();
        writer.flush_and_commit(&mut table).await.unwrap();

        assert!(plain_parquet_files(&table).is_none());
        let ctx = new_session();
        let snapshot = SnapshotTable::new(&ctx.state(), table).await.unwrap();
        assert!(!snapshot.is_plain_parquet());
        ctx.register_table("t", Arc::new(snapshot)).unwrap();
        assert_eq!(
            number(&ctx, "SELECT sum(score) FROM t WHERE exam = 'a'").await,
            5
        );
    }
}
