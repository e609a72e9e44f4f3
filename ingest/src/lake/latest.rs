//! `scores`: the latest change of each result document, as a table computed when scanned.
//!
//! The rule, in SQL (the view this replaces, kept as the reference in the tests):
//!
//! ```sql
//! SELECT … FROM (
//!   SELECT *, row_number() OVER (
//!       PARTITION BY document_id
//!       ORDER BY changed_at DESC NULLS LAST, source_offset DESC, source_partition DESC) AS r
//!   FROM score_changes) WHERE r = 1
//! ```
//!
//! Why not the view: DataFusion's window operator sets up state for every partition, and
//! here nearly every document is a partition of one row; at 110 000 changes it took
//! ≈ 150 ms of a score report's read. One pass over the same columns with a hash map from
//! document to its best change takes ≈ 30 ms (benches/RESULTS.md).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::compute::{cast, interleave};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect,
};
use futures::TryStreamExt;

/// The columns of `scores`, in order; all are columns of `score_changes`.
pub const SCORES_COLUMNS: [&str; 15] = [
    "document_id",
    "email",
    "exam",
    "score",
    "total",
    "percentage",
    "result",
    "submitted_at",
    "deleted",
    "op",
    "changed_at",
    "source_topic",
    "source_partition",
    "source_offset",
    "ingested_at",
];

/// The columns that decide which change is the latest.
const KEY_COLUMNS: [&str; 4] = [
    "document_id",
    "changed_at",
    "source_offset",
    "source_partition",
];

/// `scores` over a `score_changes` provider (committed, live, or resolved at scan).
#[derive(Debug)]
pub struct LatestChanges {
    changes: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// For each column of `schema`, its index in `changes`' schema.
    columns: Vec<usize>,
}

impl LatestChanges {
    pub fn new(changes: Arc<dyn TableProvider>) -> Result<Self> {
        let changes_schema = changes.schema();
        let columns = SCORES_COLUMNS
            .iter()
            .map(|name| changes_schema.index_of(name))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let schema = Arc::new(changes_schema.project(&columns)?);
        Ok(LatestChanges {
            changes,
            schema,
            columns,
        })
    }
}

#[async_trait]
impl TableProvider for LatestChanges {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Filters are not pushed below the choice of the latest change (a filter on `exam`
    /// must not pick an older change); DataFusion applies them above this scan.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let changes_schema = self.changes.schema();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.columns[i]).collect(),
            None => self.columns.clone(),
        };
        // The scan reads the key columns and the wanted ones, each once.
        let mut read: Vec<usize> = Vec::new();
        for name in KEY_COLUMNS {
            read.push(changes_schema.index_of(name)?);
        }
        for &i in &wanted {
            if !read.contains(&i) {
                read.push(i);
            }
        }
        let output: Vec<usize> = wanted
            .iter()
            .map(|i| read.iter().position(|r| r == i).unwrap_or_default())
            .collect();
        let input = self.changes.scan(state, Some(&read), &[], None).await?;
        let schema = Arc::new(input.schema().project(&output)?);
        Ok(Arc::new(LatestChangeExec::new(input, output, schema)))
    }
}

/// Reads all of its input, then answers with the latest change of each document: the
/// input's first four columns are [`KEY_COLUMNS`], `output` picks the answer's columns.
#[derive(Debug)]
pub struct LatestChangeExec {
    input: Arc<dyn ExecutionPlan>,
    output: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl LatestChangeExec {
    fn new(input: Arc<dyn ExecutionPlan>, output: Vec<usize>, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        LatestChangeExec {
            input,
            output,
            schema,
            properties,
        }
    }
}

impl DisplayAs for LatestChangeExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LatestChangeExec: latest change per document_id by changed_at DESC NULLS LAST, \
             source_offset DESC, source_partition DESC"
        )
    }
}

impl ExecutionPlan for LatestChangeExec {
    fn name(&self) -> &str {
        "LatestChangeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| DataFusionError::Internal("LatestChangeExec has one input".into()))?;
        Ok(Arc::new(LatestChangeExec::new(
            input,
            self.output.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "LatestChangeExec has one partition, not {partition}"
            )));
        }
        let (input, output, schema) =
            (self.input.clone(), self.output.clone(), self.schema.clone());
        let answer_schema = schema.clone();
        let batch_size = context.session_config().batch_size().max(1);
        let answer = async move {
            // The changes read count against the query's memory limit.
            let reservation =
                MemoryConsumer::new("LatestChangeExec").register(context.memory_pool());
            let batches = collect(input, context).await?;
            reservation.try_grow(batches.iter().map(RecordBatch::get_array_memory_size).sum())?;
            let answer = latest(&batches, &output, answer_schema, batch_size)?;
            Ok::<_, DataFusionError>(futures::stream::iter(answer.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(answer).try_flatten(),
        )))
    }
}

/// One change's place in the order: greater is later (fields compared in this order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// `changed_at` DESC NULLS LAST: a missing time is earlier than any time.
    changed_at: Option<i64>,
    /// `source_offset` DESC (NULLS FIRST, DataFusion's default for DESC): a missing offset
    /// is later than any offset.
    offset: (bool, i64),
    partition: (bool, i32),
}

/// The latest change of each document among `batches` (columns: [`KEY_COLUMNS`], then
/// others), as batches of up to `batch_size` rows of the `output` columns, in the order the
/// changes were read.
fn latest(
    batches: &[RecordBatch],
    output: &[usize],
    schema: SchemaRef,
    batch_size: usize,
) -> Result<Vec<RecordBatch>> {
    let mut best: HashMap<Option<&str>, (Rank, (usize, usize))> = HashMap::new();
    // Kept alive while `best` borrows the ids.
    let mut ids: Vec<ArrayRef> = Vec::with_capacity(batches.len());
    for batch in batches {
        ids.push(cast(batch.column(0), &DataType::Utf8View)?);
    }
    for (b, batch) in batches.iter().enumerate() {
        let changed_at = cast(batch.column(1), &DataType::Int64)?;
        let changed_at = changed_at.as_primitive::<Int64Type>();
        let offsets = cast(batch.column(2), &DataType::Int64)?;
        let offsets = offsets.as_primitive::<Int64Type>();
        let partitions = cast(batch.column(3), &DataType::Int32)?;
        let partitions = partitions.as_primitive::<Int32Type>();
        let ids = ids[b].as_string_view();
        for row in 0..batch.num_rows() {
            let rank = Rank {
                changed_at: changed_at.is_valid(row).then(|| changed_at.value(row)),
                offset: (offsets.is_null(row), offsets.value(row)),
                partition: (partitions.is_null(row), partitions.value(row)),
            };
            let id = ids.is_valid(row).then(|| ids.value(row));
            let held = best.entry(id).or_insert((rank, (b, row)));
            if rank > held.0 {
                *held = (rank, (b, row));
            }
        }
    }
    let mut rows: Vec<(usize, usize)> = best.into_values().map(|(_, at)| at).collect();
    rows.sort_unstable();
    let arrays: Vec<Vec<&dyn Array>> = output
        .iter()
        .map(|&c| batches.iter().map(|b| b.column(c).as_ref()).collect())
        .collect();
    let mut answer = Vec::with_capacity(rows.len().div_ceil(batch_size));
    for chunk in rows.chunks(batch_size) {
        let columns = arrays
            .iter()
            .map(|column| interleave(column, chunk))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // With no columns (`count(*)`) a batch still has its rows.
        let options = RecordBatchOptions::new().with_row_count(Some(chunk.len()));
        answer.push(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?);
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// The window query `scores` replaces.
    const REFERENCE: &str = "SELECT document_id, email, exam, score, total, percentage, result,
       submitted_at, deleted, op, changed_at, source_topic, source_partition, source_offset,
       ingested_at
FROM (
  SELECT *, row_number() OVER (
      PARTITION BY document_id
      ORDER BY changed_at DESC NULLS LAST, source_offset DESC, source_partition DESC) AS r
  FROM score_changes)
WHERE r = 1";

    /// Changes with every kind of tie: a later time wins over a greater offset; equal
    /// times fall to the offset, then the partition; a missing time loses to any time; a
    /// missing offset wins; a delete and an exam that changes are kept as the latest says.
    const CHANGES: &str = "CREATE VIEW score_changes AS
SELECT column1 AS document_id, column2 AS op, CAST(column3 AS TIMESTAMP) AS changed_at,
       column2 = 'd' AS deleted, column4 AS email, column5 AS exam, column6 AS score,
       CAST(10 AS BIGINT) AS total, column6 * 10 AS percentage, 'passed' AS result,
       CAST(column3 AS TIMESTAMP) AS submitted_at, '{}' AS document,
       column7 AS source_topic, CAST(column8 AS INT) AS source_partition,
       CAST(column9 AS BIGINT) AS source_offset, CAST(NULL AS TIMESTAMP) AS ingested_at
FROM (VALUES
  ('a', 'c', '2025-01-01T00:00:02', 'x@e', 'e1', 1, 't', 0, 5),
  ('a', 'u', '2025-01-01T00:00:03', 'x@e', 'e1', 2, 't', 0, 1),
  ('b', 'c', '2025-01-01T00:00:05', 'y@e', 'e1', 3, 't', 0, 7),
  ('b', 'u', '2025-01-01T00:00:05', 'y@e', 'e1', 4, 't', 1, 8),
  ('c', 'c', NULL, 'z@e', 'e1', 5, 't', 0, 9),
  ('c', 'u', '2025-01-01T00:00:01', 'z@e', 'e1', 6, 't', 0, 2),
  ('d', 'c', NULL, 'w@e', 'e1', 7, 't', 0, 3),
  ('d', 'u', NULL, 'w@e', 'e1', 8, 't', 0, 4),
  ('e', 'c', '2025-01-01T00:00:07', 'v@e', 'e1', 9, 't', 2, 6),
  ('e', 'u', '2025-01-01T00:00:07', 'v@e', 'e1', 1, 't', 3, 6),
  ('f', 'c', '2025-01-01T00:00:01', 'u@e', 'e1', 2, 't', 0, 10),
  ('f', 'u', '2025-01-01T00:00:02', 'u@e', 'e2', 3, 't', 0, 11),
  ('g', 'c', '2025-01-01T00:00:01', 's@e', 'e1', 4, 't', 0, 12),
  ('g', 'd', '2025-01-01T00:00:02', NULL, NULL, NULL, 't', 0, 13),
  ('h', 'c', '2025-01-01T00:00:09', 'r@e', 'e1', 5, 't', 0, NULL),
  ('h', 'u', '2025-01-01T00:00:09', 'r@e', 'e1', 6, 't', 0, 14))";

    async fn text(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn scores_agree_with_the_window_query() {
        // Batches of 3 rows: the answer comes in several.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(3));
        ctx.sql(CHANGES).await.unwrap().collect().await.unwrap();
        let changes = ctx.table_provider("score_changes").await.unwrap();
        ctx.register_table("scores", Arc::new(LatestChanges::new(changes).unwrap()))
            .unwrap();
        let ordered = |from: &str| format!("SELECT * FROM ({from}) ORDER BY document_id");
        let got = text(&ctx, &ordered("SELECT * FROM scores")).await;
        assert_eq!(got, text(&ctx, &ordered(REFERENCE)).await);
        // The winners, spelled out: a later time, then offset, then partition.
        let winners = text(
            &ctx,
            "SELECT document_id, score FROM scores ORDER BY document_id",
        )
        .await;
        for (doc, score) in [
            ("a", "2"),
            ("b", "4"),
            ("c", "6"),
            ("d", "8"),
            ("e", "1"),
            ("f", "3"),
            ("g", ""),
            ("h", "5"),
        ] {
            let line = format!("| {doc}           | {score:<5} |");
            assert!(winners.contains(&line), "{line} not in\n{winners}");
        }
        // Projections, counts and filters above the choice, as the reference gives them.
        for query in [
            "SELECT count(*) AS n FROM {}",
            "SELECT count(*) AS n FROM {} WHERE exam = 'e1'",
            "SELECT exam, sum(score) AS s FROM {} WHERE NOT deleted GROUP BY exam ORDER BY exam",
            "SELECT source_offset, op FROM {} ORDER BY source_offset",
        ] {
            let scores = text(&ctx, &query.replace("{}", "scores")).await;
            let reference = text(&ctx, &query.replace("{}", &format!("({REFERENCE})"))).await;
            assert_eq!(scores, reference, "{query}");
        }
        assert!(
            text(&ctx, "SELECT count(*) FROM scores WHERE exam = 'e1'")
                .await
                .contains("| 6 ")
        );
    }

    #[tokio::test]
    async fn no_changes_no_scores() {
        let ctx = SessionContext::new();
        ctx.sql(&format!("{CHANGES} WHERE false"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let changes = ctx.table_provider("score_changes").await.unwrap();
        ctx.register_table("scores", Arc::new(LatestChanges::new(changes).unwrap()))
            .unwrap();
        assert!(
            text(&ctx, "SELECT count(*) FROM scores")
                .await
                .contains("| 0 ")
        );
        assert!(!text(&ctx, "SELECT * FROM scores").await.contains("| a"));
    }
}
