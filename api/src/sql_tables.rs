//! The session store's adaptive sessions and calibrations as SQL tables
//! (`adaptive_sessions`, `calibrations`), and the ability estimates (`abilities`): read when
//! a query starts ([`register`]), or each time a query scans them ([`register_at_scan`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use examflow_ingest::lake::query::{ScanTimeSource, ScanTimeTable};
use serde_json::Value;

use crate::calibration::CalibratedItem;
use crate::error::ApiError;
use crate::server::AppState;

/// Most sessions the `adaptive_sessions` table shows (newest first).
const MAX_SESSIONS: usize = 1_000_000;

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
    AdaptiveSessions,
    Calibrations,
}

impl Table {
    const ALL: [Table; 3] = [
        Table::Abilities,
        Table::AdaptiveSessions,
        Table::Calibrations,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Abilities => "abilities",
            Table::AdaptiveSessions => "adaptive_sessions",
            Table::Calibrations => "calibrations",
        }
    }

    fn schema(self) -> SchemaRef {
        match self {
            Table::Abilities => examflow_ingest::abilities::abilities_schema(),
            Table::AdaptiveSessions => sessions_schema(),
            Table::Calibrations => calibrations_schema(),
        }
    }

    async fn batch(self, state: &AppState) -> Result<RecordBatch, ApiError> {
        match self {
            Table::Abilities => Ok(state.lake.abilities.to_batch()),
            Table::AdaptiveSessions => sessions_batch(state).await,
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

async fn sessions_batch(state: &AppState) -> Result<RecordBatch, ApiError> {
    let sessions = state
        .session_store
        .list_sessions(None, MAX_SESSIONS)
        .await?;
    let outcome = |state: &str, key: &str| -> Option<Value> {
        let v: Value = serde_json::from_str(state).ok()?;
        v.get("outcome")
            .and_then(|o| o.get(key))
            .filter(|x| !x.is_null())
            .cloned()
    };
    let float = |key: &str| -> ArrayRef {
        Arc::new(Float64Array::from_iter(
            sessions
                .iter()
                .map(|s| outcome(&s.state, key).and_then(|v| v.as_f64())),
        ))
    };
    let string = |key: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter(sessions.iter().map(|s| {
            outcome(&s.state, key).and_then(|v| v.as_str().map(str::to_string))
        })))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            sessions.iter().map(|s| s.id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            sessions.iter().map(|s| s.exam.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            sessions.iter().map(|s| s.email.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            sessions.iter().map(|s| s.calibration_version),
        )),
        Arc::new(StringArray::from_iter_values(
            sessions.iter().map(|s| s.status.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            sessions.iter().map(|s| s.answered),
        )),
        Arc::new(StringArray::from_iter(
            sessions.iter().map(|s| s.result_id.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            sessions.iter().map(|s| s.created_at.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            sessions.iter().map(|s| s.updated_at.as_str()),
        )),
        float("theta"),
        float("se"),
        float("scale_score"),
        string("stop_reason"),
        string("result"),
    ];
    RecordBatch::try_new(sessions_schema(), columns).map_err(fail)
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
