//! The session store's adaptive sessions and calibrations as SQL tables
//! (`adaptive_sessions`, `calibrations`), and the ability estimates (`abilities`), each read
//! anew whenever a query scans it ([`register_at_scan`]).
//!
//! `adaptive_sessions` is read lazily: a scan asks the store only for the stored fields of
//! the columns the query uses (the session's state JSON, by far the largest, only for
//! `theta`, `se`, `scale_score`, `stop_reason` and `result`, and then parses just its
//! `outcome`), and streams the rows in chunks of [`SESSIONS_CHUNK`], each one short read of
//! the store: a long scan holds no store connection between chunks, so the request path
//! never waits for a whole scan, nor does a paused one (a slow client) hold anything.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::prelude::SessionContext;
use examflow_ingest::lake::query::{ScanTimeSource, ScanTimeTable};
use examflow_ingest::store::{SessionChunk, SessionField, SessionStore, StoredSession};
use serde_json::{Map, Value};

use crate::calibration::CalibratedItem;
use crate::error::ApiError;
use crate::server::AppState;

/// Sessions per chunk of an `adaptive_sessions` scan (one short store read each).
pub const SESSIONS_CHUNK: usize = 1024;

fn fail(e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(format!("building a SQL table: {e}"))
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// The tables of this module, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Abilities,
    Calibrations,
}

impl Table {
    const ALL: [Table; 2] = [Table::Abilities, Table::Calibrations];

    fn name(self) -> &'static str {
        match self {
            Table::Abilities => "abilities",
            Table::Calibrations => "calibrations",
        }
    }

    fn schema(self) -> SchemaRef {
        match self {
            Table::Abilities => examflow_ingest::abilities::abilities_schema(),
            Table::Calibrations => calibrations_schema(),
        }
    }

    async fn batch(self, state: &AppState) -> Result<RecordBatch, ApiError> {
        match self {
            Table::Abilities => Ok(state.lake.abilities.to_batch()),
            Table::Calibrations => calibrations_batch(state).await,
        }
    }
}

/// A table of this module read each time a query scans it.
struct AtScan {
    table: Table,
    state: AppState,
}

impl std::fmt::Debug for AtScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtScan")
            .field("table", &self.table)
            .finish()
    }
}

#[async_trait::async_trait]
impl ScanTimeSource for AtScan {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    async fn batches(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let batch = self.table.batch(&self.state).await.map_err(|e| {
            DataFusionError::Execution(format!("reading {}: {e}", self.table.name()))
        })?;
        Ok(vec![batch])
    }
}

/// Registers `abilities`, `adaptive_sessions` (one row per session; θ, SE and the outcome
/// when finished) and `calibrations` (one row per exam, version and item), each read anew
/// whenever a query scans it: a query pays only for the tables it reads, and a session that
/// lives longer than one query (pgwire) sees current rows.
pub fn register_at_scan(ctx: &SessionContext, state: &AppState) -> Result<(), ApiError> {
    for table in Table::ALL {
        let source = AtScan {
            table,
            state: state.clone(),
        };
        ctx.register_table(table.name(), Arc::new(ScanTimeTable(source)))
            .map_err(fail)?;
    }
    register_sessions(ctx, state.session_store.clone())
}

/// The roster as SQL table `roster`: `email`, then one text column per group column
/// (`campus`, `language`, …; null where the student has no group), read from the store at
/// each scan. The columns are those of the roster when the session is made: every
/// `POST /api/sql` query sees the current ones; pgwire, whose session is made at start,
/// sees columns first imported later after a restart (their rows at once).
pub async fn register_roster(
    ctx: &SessionContext,
    store: Arc<dyn SessionStore>,
) -> Result<(), ApiError> {
    let columns = store.roster_columns().await?;
    let mut fields = vec![text("email", false)];
    fields.extend(columns.iter().map(|c| text(c, true)));
    let source = RosterSource {
        store,
        schema: Arc::new(Schema::new(fields)),
        columns,
    };
    ctx.register_table("roster", Arc::new(ScanTimeTable(source)))
        .map_err(fail)?;
    Ok(())
}

struct RosterSource {
    store: Arc<dyn SessionStore>,
    schema: SchemaRef,
    columns: Vec<String>,
}

impl std::fmt::Debug for RosterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosterSource")
            .field("columns", &self.columns)
            .finish()
    }
}

#[async_trait::async_trait]
impl ScanTimeSource for RosterSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn batches(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let roster = self
            .store
            .roster()
            .await
            .map_err(|e| DataFusionError::Execution(format!("reading roster: {e}")))?;
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            roster.iter().map(|r| r.email.as_str()),
        ))];
        for column in &self.columns {
            arrays.push(Arc::new(StringArray::from_iter(
                roster
                    .iter()
                    .map(|r| r.groups.get(column).map(String::as_str)),
            )));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| DataFusionError::Execution(format!("reading roster: {e}")))?;
        Ok(vec![batch])
    }
}

/// Registers `adaptive_sessions`, read from `store` in chunks whenever a query scans it.
pub fn register_sessions(
    ctx: &SessionContext,
    store: Arc<dyn SessionStore>,
) -> Result<(), ApiError> {
    ctx.register_table("adaptive_sessions", Arc::new(SessionsTable { store }))
        .map_err(fail)?;
    Ok(())
}

fn sessions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("session_id", false),
        text("exam", false),
        text("email", false),
        Field::new("calibration_version", DataType::Int64, false),
        text("status", false),
        Field::new("answered", DataType::Int64, false),
        text("result_id", true),
        text("created_at", false),
        text("updated_at", false),
        Field::new("theta", DataType::Float64, true),
        Field::new("se", DataType::Float64, true),
        Field::new("scale_score", DataType::Float64, true),
        text("stop_reason", true),
        text("result", true),
    ]))
}

fn calibrations_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("exam", false),
        Field::new("version", DataType::Int64, false),
        text("created_at", false),
        text("source", false),
        Field::new("results", DataType::Int64, false),
        text("item", false),
        Field::new("a", DataType::Float64, false),
        Field::new("b", DataType::Float64, false),
        Field::new("c", DataType::Float64, false),
        Field::new("p_value", DataType::Float64, true),
        Field::new("item_responses", DataType::Int64, false),
        Field::new("provisional", DataType::Boolean, false),
    ]))
}

/// The columns of `adaptive_sessions`, in the order of [`sessions_schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionColumn {
    SessionId,
    Exam,
    Email,
    CalibrationVersion,
    Status,
    Answered,
    ResultId,
    CreatedAt,
    UpdatedAt,
    Theta,
    Se,
    ScaleScore,
    StopReason,
    Result,
}

const SESSION_COLUMNS: [SessionColumn; 14] = [
    SessionColumn::SessionId,
    SessionColumn::Exam,
    SessionColumn::Email,
    SessionColumn::CalibrationVersion,
    SessionColumn::Status,
    SessionColumn::Answered,
    SessionColumn::ResultId,
    SessionColumn::CreatedAt,
    SessionColumn::UpdatedAt,
    SessionColumn::Theta,
    SessionColumn::Se,
    SessionColumn::ScaleScore,
    SessionColumn::StopReason,
    SessionColumn::Result,
];

impl SessionColumn {
    /// The stored field the column comes from (`None`: the id, which every scan reads).
    fn field(self) -> Option<SessionField> {
        use SessionColumn as C;
        Some(match self {
            C::SessionId => return None,
            C::Exam => SessionField::Exam,
            C::Email => SessionField::Email,
            C::CalibrationVersion => SessionField::CalibrationVersion,
            C::Status => SessionField::Status,
            C::Answered => SessionField::Answered,
            C::ResultId => SessionField::ResultId,
            C::CreatedAt => SessionField::CreatedAt,
            C::UpdatedAt => SessionField::UpdatedAt,
            C::Theta | C::Se | C::ScaleScore | C::StopReason | C::Result => SessionField::State,
        })
    }

    /// The key of the state's `outcome` the column shows, for the columns read from it.
    fn outcome_key(self) -> Option<&'static str> {
        match self {
            SessionColumn::Theta => Some("theta"),
            SessionColumn::Se => Some("se"),
            SessionColumn::ScaleScore => Some("scale_score"),
            SessionColumn::StopReason => Some("stop_reason"),
            SessionColumn::Result => Some("result"),
            _ => None,
        }
    }
}

/// The stored fields `columns` need, each once.
fn fields_for(columns: &[SessionColumn]) -> Vec<SessionField> {
    let mut fields: Vec<SessionField> = Vec::new();
    for field in columns.iter().filter_map(|c| c.field()) {
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    fields
}

/// A session state's `outcome` (none while the session runs, or when the state cannot be
/// read): only that object is built; the rest of the state is skipped over.
fn outcome_of(state: &str) -> Option<Map<String, Value>> {
    #[derive(serde::Deserialize)]
    struct OutcomeOnly {
        #[serde(default)]
        outcome: Option<Map<String, Value>>,
    }
    serde_json::from_str::<OutcomeOnly>(state).ok()?.outcome
}

/// The `columns` of `sessions` as one batch of `schema` (their projection of
/// [`sessions_schema`]).
fn sessions_batch(
    schema: SchemaRef,
    columns: &[SessionColumn],
    sessions: &[StoredSession],
) -> datafusion::error::Result<RecordBatch> {
    let outcomes: Vec<Option<Map<String, Value>>> =
        if columns.iter().any(|c| c.outcome_key().is_some()) {
            sessions.iter().map(|s| outcome_of(&s.state)).collect()
        } else {
            Vec::new()
        };
    let value = |row: usize, key: &str| outcomes[row].as_ref()?.get(key).filter(|v| !v.is_null());
    let strings = |get: &dyn Fn(&StoredSession) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(sessions.iter().map(get)))
    };
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|column| -> ArrayRef {
            use SessionColumn as C;
            match column {
                C::SessionId => strings(&|s| s.id.as_str()),
                C::Exam => strings(&|s| s.exam.as_str()),
                C::Email => strings(&|s| s.email.as_str()),
                C::CalibrationVersion => Arc::new(Int64Array::from_iter_values(
                    sessions.iter().map(|s| s.calibration_version),
                )),
                C::Status => strings(&|s| s.status.as_str()),
                C::Answered => Arc::new(Int64Array::from_iter_values(
                    sessions.iter().map(|s| s.answered),
                )),
                C::ResultId => Arc::new(StringArray::from_iter(
                    sessions.iter().map(|s| s.result_id.as_deref()),
                )),
                C::CreatedAt => strings(&|s| s.created_at.as_str()),
                C::UpdatedAt => strings(&|s| s.updated_at.as_str()),
                C::Theta | C::Se | C::ScaleScore => {
                    let key = column.outcome_key().unwrap_or_default();
                    Arc::new(Float64Array::from_iter(
                        (0..sessions.len()).map(|row| value(row, key).and_then(Value::as_f64)),
                    ))
                }
                C::StopReason | C::Result => {
                    let key = column.outcome_key().unwrap_or_default();
                    Arc::new(StringArray::from_iter(
                        (0..sessions.len()).map(|row| value(row, key).and_then(Value::as_str)),
                    ))
                }
            }
        })
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(sessions.len()));
    Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
}

/// `adaptive_sessions`: one scan streams the store's sessions in chunks (see the module).
struct SessionsTable {
    store: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for SessionsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionsTable")
    }
}

#[async_trait::async_trait]
impl TableProvider for SessionsTable {
    fn schema(&self) -> SchemaRef {
        sessions_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let (schema, columns) = match projection {
            Some(indices) => (
                Arc::new(sessions_schema().project(indices)?),
                indices.iter().map(|&i| SESSION_COLUMNS[i]).collect(),
            ),
            None => (sessions_schema(), SESSION_COLUMNS.to_vec()),
        };
        let scan = SessionsScan {
            store: self.store.clone(),
            schema: schema.clone(),
            columns,
            limit,
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![Arc::new(scan)],
            None,
            std::iter::empty(),
            false,
            limit,
        )?))
    }
}

/// One scan of `adaptive_sessions`: the projected columns, chunk after chunk.
struct SessionsScan {
    store: Arc<dyn SessionStore>,
    schema: SchemaRef,
    columns: Vec<SessionColumn>,
    limit: Option<usize>,
}

impl std::fmt::Debug for SessionsScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsScan")
            .field("columns", &self.columns)
            .field("limit", &self.limit)
            .finish()
    }
}

/// Where a scan of `adaptive_sessions` is.
struct ScanPosition {
    after: Option<String>,
    /// Rows still wanted (the query's limit), if any.
    left: Option<usize>,
    done: bool,
}

impl PartitionStream for SessionsScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (store, schema, columns) = (
            self.store.clone(),
            self.schema.clone(),
            Arc::new(self.columns.clone()),
        );
        let fields = Arc::new(fields_for(&self.columns));
        let start = ScanPosition {
            after: None,
            left: self.limit,
            done: false,
        };
        let chunks = futures::stream::try_unfold(start, move |at| {
            let (store, schema, columns, fields) = (
                store.clone(),
                schema.clone(),
                columns.clone(),
                fields.clone(),
            );
            async move {
                if at.done || at.left == Some(0) {
                    return Ok(None);
                }
                let want = at
                    .left
                    .map_or(SESSIONS_CHUNK, |left| left.min(SESSIONS_CHUNK));
                let SessionChunk { sessions, next } = store
                    .scan_sessions(at.after, want, &fields)
                    .await
                    .map_err(|e| {
                        DataFusionError::Execution(format!("reading adaptive_sessions: {e}"))
                    })?;
                if sessions.is_empty() {
                    return Ok(None);
                }
                let rows = sessions.len();
                // Parsing states is CPU work: off the async workers, like the store's read.
                let batch = tokio::task::spawn_blocking(move || {
                    sessions_batch(schema, &columns, &sessions)
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
                let position = ScanPosition {
                    done: next.is_none(),
                    after: next,
                    left: at.left.map(|left| left.saturating_sub(rows)),
                };
                Ok(Some((batch, position)))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), chunks))
    }
}

async fn calibrations_batch(state: &AppState) -> Result<RecordBatch, ApiError> {
    let versions = state.session_store.list_calibrations(None).await?;
    let mut rows: Vec<(&str, i64, &str, &str, i64, CalibratedItem)> = Vec::new();
    for v in &versions {
        let items: Vec<CalibratedItem> = serde_json::from_str(&v.params).unwrap_or_default();
        for item in items {
            rows.push((
                &v.exam,
                v.version,
                &v.created_at,
                &v.source,
                v.responses,
                item,
            ));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.5.item.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.5.a))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.5.b))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.5.c))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.5.p_value))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.5.responses as i64),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.5.provisional)),
        )),
    ];
    RecordBatch::try_new(calibrations_schema(), columns).map_err(fail)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;
    use examflow_ingest::store::{ResultStore, SqliteStore};
    use futures::StreamExt;

    use super::*;

    fn session(i: usize, finished: bool) -> StoredSession {
        let outcome = if finished {
            format!(
                r#","outcome":{{"theta":{i}.5,"se":0.25,"scale_score":550.0,"stop_reason":"se","result":"completed"}}"#
            )
        } else {
            String::new()
        };
        StoredSession {
            id: format!("s{i:05}"),
            exam: "geo".into(),
            email: format!("s{i}@example.com"),
            calibration_version: 1,
            status: if finished { "finished" } else { "active" }.into(),
            answered: 3,
            result_id: finished.then(|| format!("r{i}")),
            created_at: "2026-12-01T10:00:00.000Z".into(),
            updated_at: "2026-12-01T10:05:00.000Z".into(),
            // The outcome after a large part the scan skips over.
            state: format!(
                r#"{{"cat":{{"trace":[{}]}},"answers":[]{outcome}}}"#,
                vec!["0.1"; 200].join(",")
            ),
            closes_at: None,
        }
    }

    async fn store_with(n: usize) -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let puts = (0..n).map(|i| store.put_session(session(i, i % 2 == 0)));
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
        (dir, store)
    }

    /// Only what the projection needs is read: the state only for the columns taken from
    /// its outcome, nothing but the id for `count(*)`.
    #[test]
    fn a_scan_reads_only_the_fields_its_columns_need() {
        let of = |names: &[&str]| -> Vec<SessionField> {
            let schema = sessions_schema();
            let columns: Vec<SessionColumn> = names
                .iter()
                .map(|n| SESSION_COLUMNS[schema.index_of(n).unwrap()])
                .collect();
            fields_for(&columns)
        };
        assert_eq!(of(&[]), []);
        assert_eq!(of(&["session_id"]), []);
        assert_eq!(
            of(&["exam", "status"]),
            [SessionField::Exam, SessionField::Status]
        );
        assert_eq!(
            of(&["theta", "se", "result", "answered"]),
            [SessionField::State, SessionField::Answered]
        );
        assert_eq!(
            fields_for(&SESSION_COLUMNS).len(),
            9,
            "closes_at is no column"
        );
    }

    /// Every session once, across chunks; the outcome columns from the state; the other
    /// columns as stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adaptive_sessions_stream_every_session_in_chunks() {
        let n = 2 * SESSIONS_CHUNK + 100;
        let (_dir, store) = store_with(n).await;
        let ctx = SessionContext::new();
        register_sessions(&ctx, store.clone()).unwrap();
        let rows = ctx
            .sql(
                "SELECT count(*) AS n, count(theta) AS finished, sum(answered) AS answered,
                   count(DISTINCT session_id) AS ids, max(se) AS se, min(result) AS result
                 FROM adaptive_sessions",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row = &rows[0];
        let int = |i: usize| {
            row.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        };
        assert_eq!(int(0), n as i64);
        assert_eq!(int(1), n.div_ceil(2) as i64);
        assert_eq!(int(2), 3 * n as i64);
        assert_eq!(int(3), n as i64);
        let one = ctx
            .sql(
                "SELECT theta, stop_reason, result_id, status FROM adaptive_sessions
                 WHERE session_id IN ('s00002', 's00003') ORDER BY session_id",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = &one[0];
        let theta = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!((theta.value(0), theta.is_null(1)), (2.5, true));
        let text = |c: usize, r: usize| {
            let a = batch
                .column(c)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (!a.is_null(r)).then(|| a.value(r).to_string())
        };
        assert_eq!(text(1, 0).as_deref(), Some("se"));
        assert_eq!(text(2, 0).as_deref(), Some("r2"));
        assert_eq!(text(2, 1), None);
        assert_eq!(text(3, 1).as_deref(), Some("active"));
        // A limit stops reading early.
        let limited = ctx
            .sql("SELECT session_id FROM adaptive_sessions LIMIT 5")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(limited.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    }

    /// A scan paused between chunks (a client that stopped reading) holds no connection:
    /// every read connection is idle, and reads and writes of the request path go on.
    /// Deterministic: the scan is a stream polled by the test, nothing runs in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_scan_holds_no_store_connection() {
        let n = SESSIONS_CHUNK + 10;
        let (_dir, store) = store_with(n).await;
        let table = SessionsTable {
            store: store.clone(),
        };
        let ctx = SessionContext::new();
        let plan = table
            .scan(&ctx.state(), Some(&vec![0, 9]), &[], None)
            .await
            .unwrap();
        let mut stream = plan.execute(0, ctx.task_ctx()).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.num_rows(), SESSIONS_CHUNK);
        assert_eq!(first.schema().field(1).name(), "theta");

        // Paused mid-scan.
        let (size, idle) = store.readers();
        assert_eq!(idle, size, "no connection held between chunks");
        store.ping().await.unwrap();
        let mut updated = session(1, true);
        updated.answered = 9;
        store.put_session(updated.clone()).await.unwrap();
        assert_eq!(store.get_session("s00001").await.unwrap(), Some(updated));

        let mut rows = first.num_rows();
        while let Some(batch) = stream.next().await {
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, n);
        assert_eq!(store.readers(), (size, size));
    }
}
