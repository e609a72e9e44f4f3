//! `POST /api/sql`: read-only SQL over the lake for analysts, educators and admins. Queries
//! see committed data plus the ingest's in-memory tail (rows are visible within the flush
//! interval of arriving). DDL, DML and other statements are refused; rows, memory and time
//! are limited.
//!
//! The result format follows `?format=` or else the `Accept` header:
//!
//! | format | media type | |
//! |---|---|---|
//! | `json` (default) | `application/json` | an array of row objects, at most 100,000 rows (`X-Examflow-Truncated`) |
//! | `ndjson` | `application/x-ndjson` | one row object per line, streamed |
//! | `csv` | `text/csv` | header line, then rows, streamed |
//! | `arrow` | `application/vnd.apache.arrow.stream` | Arrow IPC stream, streamed batch by batch |
//! | `parquet` | `application/vnd.apache.parquet` | a Parquet file, one row group per batch, streamed |
//!
//! Streamed formats carry at most `sql.max_stream_rows` rows (`X-Examflow-Row-Limit`) and
//! are produced as DataFusion yields batches, never all in memory at once.
//!
//! Queries over HTTP and pgwire go through one admission ([`admission`]): a limited number
//! run at once, on one memory pool; past them a query waits briefly, then is answered 503
//! `busy` with `Retry-After`. String functions cannot build values over `[sql]
//! max_value_bytes` ([`value_limits`]).

pub mod admission;
pub mod executor;
pub mod value_limits;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use examflow_formats::sql::SqlRequest;
use examflow_ingest::lake::query::{
    new_session_with_memory_limit, new_session_with_runtime, register_lake, runtime_with_pool,
};
use futures::StreamExt;
use serde::Deserialize;

use self::admission::{Busy, QueryMemory, SqlAdmission, holding};
use self::value_limits::{ValueLimits, with_value_limits};

use crate::auth::Identity;
use crate::error::ApiError;
use crate::server::{ApiJson, ApiQuery, AppState};

/// Most rows a JSON response carries; more sets `X-Examflow-Truncated: true`.
const MAX_JSON_ROWS: usize = 100_000;

#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    NdJson,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::NdJson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn by_name(name: &str) -> Option<Format> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "json" => Format::Json,
            "ndjson" | "jsonl" => Format::NdJson,
            "csv" => Format::Csv,
            "arrow" | "ipc" | "arrow-stream" => Format::Arrow,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }

    fn by_media_type(media: &str) -> Option<Format> {
        Some(match media.trim().to_ascii_lowercase().as_str() {
            "application/json" | "*/*" | "application/*" => Format::Json,
            "application/x-ndjson" | "application/jsonl" => Format::NdJson,
            "text/csv" | "text/*" => Format::Csv,
            "application/vnd.apache.arrow.stream" | "application/vnd.apache.arrow.file" => {
                Format::Arrow
            }
            "application/vnd.apache.parquet" | "application/parquet" | "application/x-parquet" => {
                Format::Parquet
            }
            _ => return None,
        })
    }
}

const SUPPORTED: &str = "json, ndjson, csv, arrow (application/vnd.apache.arrow.stream), parquet";

/// `?format=` wins; else the first supported type of `Accept` by quality; else JSON.
pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(name) = query {
        return Format::by_name(name).ok_or_else(|| {
            ApiError::bad_request(
                "unsupported_format",
                format!("format {name:?} is not supported; use {SUPPORTED}"),
            )
        });
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Format::Json);
    };
    let mut offered: Vec<(f32, &str)> = accept
        .split(',')
        .map(|part| {
            let mut pieces = part.split(';');
            let media = pieces.next().unwrap_or_default().trim();
            let quality = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (quality, media)
        })
        .filter(|(q, m)| *q > 0.0 && !m.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(Format::Json);
    }
    offered.sort_by(|a, b| b.0.total_cmp(&a.0));
    offered
        .iter()
        .find_map(|(_, m)| Format::by_media_type(m))
        .ok_or_else(|| {
            ApiError::NotAcceptable(format!(
                "Accept: {accept} offers no format this endpoint writes; use {SUPPORTED}"
            ))
        })
}

fn invalid_sql(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_sql",
        message: e.to_string(),
    }
}

fn timeout_error(limit: Duration) -> ApiError {
    ApiError::BadRequest {
        code: "query_timeout",
        message: format!("the query ran longer than {} s", limit.as_secs()),
    }
}

/// 503 `busy` for a query that waited for admission in vain.
fn busy_error(admission: &SqlAdmission, busy: Busy) -> ApiError {
    ApiError::Busy {
        message: admission.busy_message(busy),
        retry_after_secs: admission.retry_after_secs(),
    }
}

/// A session with every table: the lake (live), the ability estimates, and the session
/// store's adaptive sessions and calibrations, with student emails as they are (staff).
/// Its queries have a memory pool of their own (`[sql] memory_limit_bytes`), outside the
/// admission of `POST /api/sql` (the score reports' fixed queries).
pub async fn session(state: &AppState) -> Result<SessionContext, ApiError> {
    let ctx = new_session_with_memory_limit(state.config.sql.memory_limit_bytes)?;
    register_tables(&ctx, state).await?;
    Ok(ctx)
}

async fn register_tables(ctx: &SessionContext, state: &AppState) -> Result<(), ApiError> {
    register_lake(ctx, &state.lake, true).await?;
    // Read when a query scans them: building `abilities` alone takes ~0.5 s with 250k
    // users, a cost every query paid when the tables were built up front.
    crate::sql_tables::register_at_scan(ctx, state)?;
    crate::sql_tables::register_roster(ctx, state.session_store.clone()).await?;
    Ok(())
}

/// The session of one admitted query as `identity` may see it: [`session`]'s tables over
/// the query's share of the server's memory, with the value limits of string functions
/// ([`value_limits`]). For analysts (unless `auth.analyst_sees_emails`) every student email
/// is a pseudonym (`crate::pseudonym`); staff see the tables as they are, at no extra cost.
pub async fn session_for(
    state: &AppState,
    identity: &Identity,
    memory: &QueryMemory,
) -> Result<SessionContext, ApiError> {
    let ctx = new_session_with_runtime(runtime_with_pool(memory.pool())?);
    let ctx = with_value_limits(
        ctx,
        &ValueLimits {
            max_value_bytes: state.config.sql.max_value_bytes,
            pool: Some(memory.pool()),
        },
    )
    .map_err(|e| ApiError::Invalid(format!("setting up the SQL session: {e}")))?;
    register_tables(&ctx, state).await?;
    if state.pseudonyms.hides_emails(identity) {
        crate::pseudonym::pseudonymise_session(&ctx, &state.pseudonyms)
            .await
            .map_err(|e| ApiError::Invalid(format!("setting up the analyst's tables: {e}")))?;
    }
    Ok(ctx)
}

pub async fn post_sql(
    State(state): State<AppState>,
    identity: Identity,
    ApiQuery(query): ApiQuery<FormatQuery>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SqlRequest>,
) -> Result<Response, ApiError> {
    identity.require_analytics()?;
    let format = negotiate(query.format.as_deref(), &headers)?;
    let limits = &state.config.sql;
    let admission = &state.sql_admission;
    let slot = admission
        .admit()
        .await
        .map_err(|busy| busy_error(admission, busy))?;
    let memory = admission.query_memory();
    let timeout = Duration::from_secs(limits.timeout_secs.max(1));
    let deadline = tokio::time::Instant::now() + timeout;
    slot.release_at(deadline);
    // Planned, run and encoded on the SQL runtime (`executor`), never on the workers that
    // answer every other request.
    let executor = state.sql_executor.clone();
    let query = Query {
        sql: request.sql,
        format,
        slot,
        memory,
        deadline,
        timeout,
    };
    executor.run(run_query(state, identity, query)).await?
}

/// An admitted query of `POST /api/sql`.
struct Query {
    sql: String,
    format: Format,
    slot: admission::Slot,
    memory: QueryMemory,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

/// Plans and runs `query` (on the SQL runtime); a streamed result is encoded there too.
async fn run_query(
    state: AppState,
    identity: Identity,
    query: Query,
) -> Result<Response, ApiError> {
    let Query {
        sql,
        format,
        slot,
        memory,
        deadline,
        timeout,
    } = query;
    let limits = &state.config.sql;
    let admission = &state.sql_admission;
    // Refused by the server's full pool (other queries), not by its own limit: busy.
    let failed = |e: DataFusionError| {
        if memory.refused_for_server() {
            ApiError::Busy {
                message: format!("{}: {e}", admission.memory_busy_message()),
                retry_after_secs: admission.retry_after_secs(),
            }
        } else {
            invalid_sql(e)
        }
    };
    let hides_emails = state.pseudonyms.hides_emails(&identity);
    let ctx = session_for(&state, &identity, &memory).await?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx
        .sql_with_options(&sql, options)
        .await
        .map_err(invalid_sql)?;
    if hides_emails {
        crate::pseudonym::check_plan_for_analysts(frame.logical_plan()).map_err(|message| {
            ApiError::BadRequest {
                code: "invalid_sql",
                message,
            }
        })?;
    }
    // EXPLAIN must stay the root of its plan: its few rows are not limited.
    let explain = matches!(
        frame.logical_plan(),
        datafusion::logical_expr::LogicalPlan::Explain(_)
            | datafusion::logical_expr::LogicalPlan::Analyze(_)
    );
    let limit = |frame: datafusion::dataframe::DataFrame, rows: usize| {
        if explain {
            Ok(frame)
        } else {
            frame.limit(0, Some(rows)).map_err(invalid_sql)
        }
    };
    if format == Format::Json {
        let frame = limit(frame, MAX_JSON_ROWS + 1)?;
        let stream = tokio::time::timeout_at(deadline, frame.execute_stream())
            .await
            .map_err(|_| timeout_error(timeout))?
            .map_err(failed)?;
        let reservation = MemoryConsumer::new("JSON result").register(&memory.pool());
        let json = json_body(stream, &reservation, deadline)
            .await
            .map_err(|e| match e {
                JsonError::Timeout => timeout_error(timeout),
                JsonError::Query(e) => failed(e),
                JsonError::Encode(message) => ApiError::Invalid(message),
            })?;
        // The query is done (its slot is given back on return); the buffer stays counted
        // until it has been sent.
        return Ok(json_response(json, reservation));
    }
    let frame = limit(frame, limits.max_stream_rows)?;
    let stream = tokio::time::timeout_at(deadline, frame.execute_stream())
        .await
        .map_err(|_| timeout_error(timeout))?
        .map_err(failed)?;
    // Errors before the first byte are still clean 4xx answers; later ones end the body.
    let mut stream = stream;
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Err(_) => return Err(timeout_error(timeout)),
        Ok(Some(Err(e))) => return Err(failed(e)),
        Ok(first) => first.map(|r| r.map_err(failed)).transpose()?,
    };
    let encoder = Encoder::new(format, stream.schema())?;
    // The query holds its slot until its result has been sent or dropped (or its deadline).
    let body = holding(encoded_stream(encoder, first, stream, deadline), slot);
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.media_type())],
        Body::from_stream(state.sql_executor.stream(body)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&limits.max_stream_rows.to_string()) {
        response.headers_mut().insert("x-examflow-row-limit", v);
    }
    Ok(response)
}

/// Batches as JSON row objects (for small results the API reshapes).
pub fn rows_as_json(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut out);
        for batch in batches {
            writer
                .write(batch)
                .map_err(|e| ApiError::Invalid(format!("encoding rows: {e}")))?;
        }
        writer
            .finish()
            .map_err(|e| ApiError::Invalid(format!("encoding rows: {e}")))?;
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out).map_err(|e| ApiError::Invalid(format!("encoding rows: {e}")))
}

enum JsonError {
    Timeout,
    Query(DataFusionError),
    Encode(String),
}

/// A JSON result: the array of row objects, and whether rows were left out.
struct Json {
    body: Vec<u8>,
    truncated: bool,
}

/// The rows of `stream` as one JSON array of at most [`MAX_JSON_ROWS`] objects, built batch
/// by batch into a buffer whose size `reservation` holds (a query's memory pool refuses
/// one that would not fit).
async fn json_body(
    mut stream: SendableRecordBatchStream,
    reservation: &MemoryReservation,
    deadline: tokio::time::Instant,
) -> Result<Json, JsonError> {
    let encode = |e: datafusion::arrow::error::ArrowError| {
        JsonError::Encode(format!("encoding the result: {e}"))
    };
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let mut rows = 0;
    let mut truncated = false;
    while !truncated {
        // `timeout_at` polls the stream first: check the clock too (see `encoded_stream`).
        if tokio::time::Instant::now() >= deadline {
            return Err(JsonError::Timeout);
        }
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| JsonError::Timeout)?;
        let Some(batch) = next else {
            break;
        };
        let batch = batch.map_err(JsonError::Query)?;
        let take = batch.num_rows().min(MAX_JSON_ROWS - rows);
        truncated = take < batch.num_rows();
        if take > 0 {
            writer.write(&batch.slice(0, take)).map_err(encode)?;
            rows += take;
            reservation
                .try_resize(writer.get_ref().capacity())
                .map_err(JsonError::Query)?;
        }
    }
    writer.finish().map_err(encode)?;
    let mut body = writer.into_inner();
    if body.is_empty() {
        body.extend_from_slice(b"[]");
    }
    Ok(Json { body, truncated })
}

/// The JSON response; `reservation` is held until the body has been sent (or dropped).
fn json_response(json: Json, reservation: MemoryReservation) -> Response {
    let length = json.body.len();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(json.body))]);
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(holding(body, reservation)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        "x-examflow-truncated",
        HeaderValue::from_static(if json.truncated { "true" } else { "false" }),
    );
    response
}

/// Turns record batches into bytes of one format, batch by batch.
enum Encoder {
    NdJson,
    Csv { header_written: bool },
    Arrow(Box<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>),
    Parquet(Box<datafusion::parquet::arrow::ArrowWriter<Vec<u8>>>),
}

type EncodeResult = Result<Bytes, std::io::Error>;

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Encoder {
    fn new(format: Format, schema: SchemaRef) -> Result<Encoder, ApiError> {
        let fail =
            |e: &dyn std::fmt::Display| ApiError::Invalid(format!("encoding the result: {e}"));
        Ok(match format {
            Format::Json | Format::NdJson => Encoder::NdJson,
            Format::Csv => Encoder::Csv {
                header_written: false,
            },
            Format::Arrow => Encoder::Arrow(Box::new(
                datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)
                    .map_err(|e| fail(&e))?,
            )),
            Format::Parquet => Encoder::Parquet(Box::new(
                datafusion::parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None)
                    .map_err(|e| fail(&e))?,
            )),
        })
    }

    /// Bytes for one batch (may be empty: Parquet emits a row group per batch).
    fn batch(&mut self, batch: &RecordBatch) -> EncodeResult {
        match self {
            Encoder::NdJson => {
                let mut out = Vec::new();
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
                writer.write(batch).map_err(io_error)?;
                writer.finish().map_err(io_error)?;
                Ok(out.into())
            }
            Encoder::Csv { header_written } => {
                let mut out = Vec::new();
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(!*header_written)
                    .build(&mut out);
                writer.write(&csv_safe_batch(batch)?).map_err(io_error)?;
                drop(writer);
                *header_written = true;
                Ok(out.into())
            }
            Encoder::Arrow(writer) => {
                writer.write(&compact_views(batch)).map_err(io_error)?;
                Ok(std::mem::take(writer.get_mut()).into())
            }
            Encoder::Parquet(writer) => {
                writer.write(batch).map_err(io_error)?;
                writer.flush().map_err(io_error)?;
                Ok(std::mem::take(writer.inner_mut()).into())
            }
        }
    }

    /// Bytes that close the stream (a CSV header when there were no rows, the Arrow
    /// end-of-stream marker, the Parquet footer).
    fn finish(self, schema: &SchemaRef) -> EncodeResult {
        match self {
            Encoder::NdJson => Ok(Bytes::new()),
            Encoder::Csv { header_written } => {
                if header_written {
                    return Ok(Bytes::new());
                }
                let mut out = Vec::new();
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                writer
                    .write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(io_error)?;
                drop(writer);
                Ok(out.into())
            }
            Encoder::Arrow(mut writer) => {
                writer.finish().map_err(io_error)?;
                Ok(std::mem::take(writer.get_mut()).into())
            }
            Encoder::Parquet(writer) => Ok(writer.into_inner().map_err(io_error)?.into()),
        }
    }
}

/// The encoded body: the first batch, then the rest as DataFusion yields them, then the
/// closing bytes; an error (or the deadline) mid-way ends the body with an error.
fn encoded_stream(
    encoder: Encoder,
    first: Option<RecordBatch>,
    stream: SendableRecordBatchStream,
    deadline: tokio::time::Instant,
) -> impl futures::Stream<Item = EncodeResult> + Send {
    let schema = stream.schema();
    let state = (Some(encoder), first, stream, schema);
    futures::stream::unfold(
        state,
        move |(encoder, first, mut stream, schema)| async move {
            let mut encoder = encoder?;
            let next = match first {
                Some(batch) => Some(Ok(batch)),
                // `timeout_at` polls the stream first, so a stream that always has a batch
                // ready would never time out: check the clock explicitly too.
                None if tokio::time::Instant::now() >= deadline => {
                    Some(Err(io_error("the query ran past its time limit")))
                }
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => Some(Err(io_error("the query ran past its time limit"))),
                    Ok(next) => next.map(|r| r.map_err(io_error)),
                },
            };
            match next {
                Some(Ok(batch)) => {
                    let bytes = encoder.batch(&batch);
                    Some((bytes, (Some(encoder), None, stream, schema)))
                }
                Some(Err(e)) => Some((Err(e), (None, None, stream, schema))),
                None => {
                    let bytes = encoder.finish(&schema);
                    Some((bytes, (None, None, stream, schema)))
                }
            }
        },
    )
}

/// The batch with every text cell that a spreadsheet would run as a formula neutralised
/// (`examflow_reports::render::csv_safe`: a `'` before a cell starting with `=`, `+`, `-`,
/// `@`, tab or carriage return), for CSV output. Only string columns (also dictionaries of
/// strings): numbers, dates and the rest are written as they are. Columns with nothing to
/// neutralise are not copied.
pub fn csv_safe_batch(batch: &RecordBatch) -> Result<RecordBatch, std::io::Error> {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Array, ArrayRef, AsArray, LargeStringArray, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::DataType;
    use examflow_reports::render::{csv_needs_guard, csv_safe};

    fn needs<'a>(mut values: impl Iterator<Item = Option<&'a str>>) -> bool {
        values.any(|v| v.is_some_and(csv_needs_guard))
    }
    let mut changed = false;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for original in batch.columns() {
        let column = match original.data_type() {
            DataType::Dictionary(_, value)
                if matches!(
                    value.as_ref(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
            {
                datafusion::arrow::compute::cast(original, value).map_err(io_error)?
            }
            _ => original.clone(),
        };
        let safe: Option<ArrayRef> = match column.data_type() {
            DataType::Utf8 if needs(column.as_string::<i32>().iter()) => Some(Arc::new(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(csv_safe))
                    .collect::<StringArray>(),
            )),
            DataType::LargeUtf8 if needs(column.as_string::<i64>().iter()) => Some(Arc::new(
                column
                    .as_string::<i64>()
                    .iter()
                    .map(|v| v.map(csv_safe))
                    .collect::<LargeStringArray>(),
            )),
            DataType::Utf8View if needs(column.as_string_view().iter()) => Some(Arc::new(
                column
                    .as_string_view()
                    .iter()
                    .map(|v| v.map(csv_safe))
                    .collect::<StringViewArray>(),
            )),
            _ => None,
        };
        let column = safe.unwrap_or(column);
        changed |= !Arc::ptr_eq(&column, original);
        columns.push(column);
    }
    if !changed {
        return Ok(batch.clone());
    }
    let fields: Vec<datafusion::arrow::datatypes::FieldRef> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(field, column)| {
            Arc::new(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(column.data_type().clone()),
            )
        })
        .collect();
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
        fields,
        batch.schema().metadata().clone(),
    ));
    RecordBatch::try_new(schema, columns).map_err(io_error)
}

/// The batch with its top-level string and binary view columns compacted. Scans of the
/// lake's Parquet files return `Utf8View` columns whose data buffers are shared with the
/// decoded pages, and the IPC writer ships every referenced buffer whole: without this an
/// Arrow response was twice the size of the same rows as CSV.
fn compact_views(batch: &RecordBatch) -> RecordBatch {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, ArrayRef, AsArray};
    use datafusion::arrow::datatypes::DataType;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View => Arc::new(column.as_string_view().gc()) as ArrayRef,
            DataType::BinaryView => Arc::new(column.as_binary_view().gc()) as ArrayRef,
            _ => column.clone(),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).unwrap_or_else(|_| batch.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of a view array still points into all of its parent's data buffers; the
    /// compacted batch carries the same values in a far smaller IPC body.
    #[test]
    fn arrow_bodies_carry_only_the_strings_of_their_rows() {
        use std::sync::Arc;

        use datafusion::arrow::array::{Array, AsArray, StringViewArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let long: Vec<String> = (0..10_000)
            .map(|i| format!("a-string-longer-than-twelve-bytes-{i:06}"))
            .collect();
        let parent = StringViewArray::from_iter_values(long.iter());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(parent.slice(0, 10))]).unwrap();
        let ipc = |b: &RecordBatch| {
            let mut w =
                datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
            w.write(b).unwrap();
            w.finish().unwrap();
            w.into_inner().unwrap().len()
        };
        let compact = compact_views(&batch);
        let values = |b: &RecordBatch| -> Vec<String> {
            let c = b.column(0).as_string_view();
            (0..c.len()).map(|i| c.value(i).to_string()).collect()
        };
        assert_eq!(values(&compact), values(&batch));
        assert!(
            ipc(&compact) * 10 < ipc(&batch),
            "{} vs {} bytes",
            ipc(&compact),
            ipc(&batch)
        );
    }

    /// CSV cells of text that start like a formula get a quote; numbers (also negative),
    /// and text that does not, are written as before.
    #[test]
    fn csv_neutralises_text_cells_only() {
        use std::sync::Arc;

        use datafusion::arrow::array::{
            DictionaryArray, Float64Array, Int64Array, StringArray, StringViewArray,
        };
        use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("answer", DataType::Utf8, true),
            Field::new("view", DataType::Utf8View, true),
            Field::new("delta", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new(
                "dict",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
        ]));
        let dict: DictionaryArray<Int32Type> =
            vec!["@a", "b", "@a", "-c", "d"].into_iter().collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("=1+1"),
                    Some("+x"),
                    Some("-1.5"),
                    None,
                    Some("plain = fine"),
                ])),
                Arc::new(StringViewArray::from(vec![
                    "@SUM(A1)",
                    "\tx",
                    "\rx",
                    "ok",
                    "a-string-longer-than-twelve-bytes",
                ])),
                Arc::new(Float64Array::from(vec![-1.5, 2.0, -0.25, 0.0, 1e-3])),
                Arc::new(Int64Array::from(vec![-1, 2, 3, 4, 5])),
                Arc::new(dict),
            ],
        )
        .unwrap();
        let mut encoder = Encoder::new(Format::Csv, batch.schema()).unwrap();
        let text = String::from_utf8(encoder.batch(&batch).unwrap().to_vec()).unwrap();
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        let column = |i: usize| rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>();
        assert_eq!(column(0), ["'=1+1", "'+x", "'-1.5", "", "plain = fine"]);
        assert_eq!(
            column(1),
            [
                "'@SUM(A1)",
                "'\tx",
                "'\rx",
                "ok",
                "a-string-longer-than-twelve-bytes"
            ]
        );
        assert_eq!(column(2), ["-1.5", "2.0", "-0.25", "0.0", "0.001"]);
        assert_eq!(column(3), ["-1", "2", "3", "4", "5"]);
        assert_eq!(column(4), ["'@a", "b", "'@a", "'-c", "d"]);

        // Nothing to neutralise: the very same columns.
        let plain = batch.slice(4, 1);
        let plain = RecordBatch::try_new(
            Arc::new(Schema::new(vec![plain.schema().field(0).clone()])),
            vec![plain.column(0).clone()],
        )
        .unwrap();
        let same = csv_safe_batch(&plain).unwrap();
        assert!(Arc::ptr_eq(same.column(0), plain.column(0)));
    }

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn format_follows_query_then_accept_with_quality() {
        assert_eq!(negotiate(None, &HeaderMap::new()).unwrap(), Format::Json);
        assert_eq!(
            negotiate(Some("csv"), &accept("application/json")).unwrap(),
            Format::Csv
        );
        assert_eq!(
            negotiate(None, &accept("application/vnd.apache.arrow.stream")).unwrap(),
            Format::Arrow
        );
        assert_eq!(
            negotiate(
                None,
                &accept("text/csv;q=0.5, application/vnd.apache.parquet")
            )
            .unwrap(),
            Format::Parquet
        );
        assert_eq!(
            negotiate(None, &accept("text/html, */*;q=0.1")).unwrap(),
            Format::Json
        );
        assert!(negotiate(None, &accept("text/html")).is_err());
        assert!(negotiate(Some("xml"), &HeaderMap::new()).is_err());
    }
}
