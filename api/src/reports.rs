//! Score reports for educators: `GET /api/reports/exams`, `GET /api/reports/exams/{name}`
//! and `examflow report`.
//!
//! DataFusion reads the exam's rows from the lake (the live tables over HTTP, the committed
//! ones offline); the record batches go to polars through the Arrow C Data Interface
//! (`examflow_reports::ffi`, zero copy) and `examflow_reports` computes and renders the report.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use datafusion::datasource::MemTable;
use datafusion::prelude::{JoinType, SessionContext, cast, col, lit};
use examflow_engine::Bank;
use examflow_ingest::store::{MongoStore, SessionStore, SqliteStore, StoredCalibration};
use examflow_reports::{
    AdaptiveSession, CalibrationRef, DifRequest, ExamReport, ItemInfo, ReportInput, ReportOptions,
    render,
};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Identity;
use crate::calibration::CalibratedItem;
use crate::error::ApiError;
use crate::server::{ApiPath, ApiQuery, AppState};

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Csv,
    Html,
}

/// The batches an exam's report is computed from.
struct ReportData {
    results: (SchemaRef, Vec<RecordBatch>),
    answers: (SchemaRef, Vec<RecordBatch>),
    durations: (SchemaRef, Vec<RecordBatch>),
}

fn query_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(format!("reading the report's data: {e}"))
}

async fn collect(
    frame: datafusion::dataframe::DataFrame,
) -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(query_error)?;
    Ok((schema, batches))
}

/// Reads the exam's results, question-level answers and attempt durations.
///
/// The answers are the `score_details` view's rows (the questions of each result's current
/// change), but joined to the results already read instead of through the view: the view
/// works out the current change of every document again (a window over all of
/// `score_changes`). Each answer carries `person`, the row of its result, instead of the
/// `document_id` string, which the report would otherwise read and hash 5 million times.
async fn read_data(ctx: &SessionContext, exam: &str) -> Result<ReportData, ApiError> {
    let results = ctx
        .table("scores")
        .await
        .map_err(query_error)?
        .filter(col("exam").eq(lit(exam)).and(col("deleted").eq(lit(false))))
        .map_err(query_error)?
        .select(vec![
            col("document_id"),
            col("email"),
            col("score"),
            col("total"),
            col("percentage"),
            col("result"),
            cast(col("submitted_at"), DataType::Int64).alias("submitted_at_us"),
            col("source_topic"),
            col("source_partition"),
            col("source_offset"),
        ])
        .map_err(query_error)?;
    let durations = ctx
        .table("attempts")
        .await
        .map_err(query_error)?
        .filter(col("exam_name").eq(lit(exam)))
        .map_err(query_error)?
        .select(vec![
            col("duration_seconds"),
            // For the report's date range (µs since the epoch).
            cast(col("last_answer_at"), DataType::Int64).alias("finished_at_us"),
        ])
        .map_err(query_error)?;
    let (results, durations) = tokio::try_join!(collect(results), collect(durations))?;
    let current = ctx
        .read_table(Arc::new(numbered_changes(&results)?))
        .map_err(query_error)?;
    let answers = ctx
        .table("score_detail_changes")
        .await
        .map_err(query_error)?
        // A change event is one message: its topic, partition and offset single it out,
        // and every question row of it belongs to its document. Hashed on the two
        // integers; the topic is compared only on those candidates.
        .join(
            current,
            JoinType::Inner,
            &["source_partition", "source_offset"],
            &["current_partition", "current_offset"],
            Some(col("source_topic").eq(col("current_topic"))),
        )
        .map_err(query_error)?
        .select(vec![
            col("person"),
            col("item"),
            col("question"),
            col("user_answer"),
            col("correct_answer"),
            col("is_correct"),
        ])
        .map_err(query_error)?;
    let answers = collect(answers).await?;
    Ok(ReportData {
        results,
        answers,
        durations,
    })
}

/// The change each result came from, with `person` = the result's row (0, 1, …) in
/// `results`' batches.
fn numbered_changes(
    (schema, batches): &(SchemaRef, Vec<RecordBatch>),
) -> Result<MemTable, ApiError> {
    let fields = [
        ("source_topic", "current_topic"),
        ("source_partition", "current_partition"),
        ("source_offset", "current_offset"),
    ];
    let mut indices = Vec::with_capacity(fields.len());
    let mut out_fields: Vec<Field> = Vec::with_capacity(fields.len() + 1);
    for (name, alias) in fields {
        let index = schema.index_of(name).map_err(query_error)?;
        indices.push(index);
        out_fields.push(schema.field(index).clone().with_name(alias));
    }
    out_fields.push(Field::new("person", DataType::UInt32, false));
    let out_schema: SchemaRef = Arc::new(Schema::new(out_fields));
    let mut first_row = 0u32;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut columns: Vec<ArrayRef> = indices.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = batch.num_rows() as u32;
        columns
            .push(Arc::new(UInt32Array::from_iter_values(first_row..first_row + rows)) as ArrayRef);
        first_row += rows;
        out.push(RecordBatch::try_new(out_schema.clone(), columns).map_err(query_error)?);
    }
    MemTable::try_new(out_schema, vec![out]).map_err(query_error)
}

/// The bank's questions with the IRT parameters of `calibration`.
fn item_infos(bank: Option<&Bank>, calibration: Option<&StoredCalibration>) -> Vec<ItemInfo> {
    let Some(bank) = bank else {
        return Vec::new();
    };
    let params: Vec<CalibratedItem> = calibration
        .and_then(|c| serde_json::from_str(&c.params).ok())
        .unwrap_or_default();
    let by_id: BTreeMap<&str, &CalibratedItem> =
        params.iter().map(|p| (p.item.as_str(), p)).collect();
    bank.items
        .iter()
        .map(|item| {
            let p = by_id.get(item.id.as_str());
            ItemInfo {
                item: item.id.clone(),
                question: item.question.clone(),
                options: item.options.clone(),
                topic: item.topic.clone(),
                a: p.map(|p| p.a),
                b: p.map(|p| p.b),
                c: p.map(|p| p.c),
                provisional: p.is_some_and(|p| p.provisional),
            }
        })
        .collect()
}

fn no_such_exam(exam: &str) -> ApiError {
    ApiError::not_found(format!(
        "exam {exam:?} (no question bank, stored result or ingested attempt has that name)"
    ))
}

/// Most adaptive sessions of one exam a report reads.
const MAX_REPORT_SESSIONS: usize = 1_000_000;

/// The exam's finished adaptive sessions, for the report's adaptive section.
async fn adaptive_sessions(
    store: &dyn SessionStore,
    exam: &str,
) -> Result<Vec<AdaptiveSession>, ApiError> {
    let rows = store
        .list_sessions(Some(exam.to_string()), MAX_REPORT_SESSIONS)
        .await?;
    Ok(crate::adaptive::report_sessions(&rows))
}

/// Which results count, from `?attempts=&from=&to=` (or the CLI's flags): a bad value is a
/// 400 naming its parameter.
fn report_options(
    attempts: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<ReportOptions, ApiError> {
    ReportOptions::parse(attempts, from, to).map_err(|e| {
        let code = match e.parameter {
            "attempts" => "invalid_attempts",
            "to" => "invalid_to",
            _ if e.message.contains("after") => "from_after_to",
            _ => "invalid_from",
        };
        ApiError::bad_request(code, e.to_string())
    })
}

/// Reads the data and computes the report (the polars work runs off the async workers).
async fn compute(
    ctx: &SessionContext,
    exam: &str,
    bank: Option<Arc<Bank>>,
    calibration: Option<StoredCalibration>,
    options: ReportOptions,
    sessions: Vec<AdaptiveSession>,
    (roster, dif): RosterChoice,
) -> Result<ExamReport, ApiError> {
    let started = std::time::Instant::now();
    let data = read_data(ctx, exam).await?;
    let read = started.elapsed();
    let rows = |d: &(SchemaRef, Vec<RecordBatch>)| -> usize {
        d.1.iter().map(RecordBatch::num_rows).sum()
    };
    if bank.is_none() && rows(&data.results) == 0 && rows(&data.durations) == 0 {
        return Err(no_such_exam(exam));
    }
    let exam = exam.to_string();
    tokio::task::spawn_blocking(move || {
        let frame = |(schema, batches): &(SchemaRef, Vec<RecordBatch>)| {
            examflow_reports::ffi::to_polars(schema, batches)
        };
        let input = ReportInput {
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            results: frame(&data.results)?,
            answers: frame(&data.answers)?,
            durations: frame(&data.durations)?,
            items: item_infos(bank.as_deref(), calibration.as_ref()),
            calibration: calibration.map(|c| CalibrationRef {
                version: c.version,
                source: c.source,
                created_at: c.created_at,
            }),
            exam,
            options,
            adaptive_sessions: sessions,
            roster,
            dif,
        };
        let report = examflow_reports::build_report(input);
        tracing::debug!(
            read_ms = read.as_millis() as u64,
            compute_ms = (started.elapsed() - read).as_millis() as u64,
            "report built"
        );
        report
    })
    .await
    .map_err(|e| ApiError::Invalid(format!("the report task failed: {e}")))?
    .map_err(|e| ApiError::Invalid(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    format: Option<String>,
    table: Option<String>,
    /// `first` (default), `last`, `highest` or `all`: which results of each student count.
    attempts: Option<String>,
    /// Only results submitted at or after (RFC 3339 timestamp or date).
    from: Option<String>,
    /// Only results submitted at or before (a date: to the end of that day).
    to: Option<String>,
    /// Only students of a roster group: `campus:north`.
    group: Option<String>,
    /// A DIF section by this roster column, e.g. `campus`.
    dif: Option<String>,
    /// The DIF reference group (default: the largest).
    dif_reference: Option<String>,
}

/// The roster (when a group or DIF needs it) and the DIF request.
type RosterChoice = (
    std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    Option<DifRequest>,
);

/// The group filter and DIF request from their text, checked against the roster's
/// columns (a column it does not have is a 400 naming the parameter), with the roster
/// they need.
async fn roster_choice(
    store: &dyn SessionStore,
    options: &mut ReportOptions,
    group: Option<&str>,
    dif: Option<&str>,
    dif_reference: Option<&str>,
) -> Result<RosterChoice, ApiError> {
    if let Some(text) = group {
        options.group = Some(
            examflow_reports::parse_group(text)
                .map_err(|e| ApiError::bad_request("invalid_group", e.to_string()))?,
        );
    }
    let dif = dif.map(|column| DifRequest {
        column: column.trim().to_lowercase(),
        reference: dif_reference.map(str::to_string),
    });
    if dif.is_none() && dif_reference.is_some() {
        return Err(ApiError::bad_request(
            "invalid_dif",
            "dif_reference: needs dif=COLUMN",
        ));
    }
    if options.group.is_none() && dif.is_none() {
        return Ok((Default::default(), None));
    }
    let columns = store.roster_columns().await?;
    let known = |column: &str, parameter: &str, code: &'static str| {
        if columns.iter().any(|c| c == column) {
            Ok(())
        } else {
            Err(ApiError::bad_request(
                code,
                format!(
                    "{parameter}: the roster has no column {column:?} (columns: {}; import one \
                     with examflow roster import)",
                    if columns.is_empty() {
                        "none".to_string()
                    } else {
                        columns.join(", ")
                    }
                ),
            ))
        }
    };
    if let Some((column, _)) = &options.group {
        known(column, "group", "invalid_group")?;
    }
    if let Some(d) = &dif {
        known(&d.column, "dif", "invalid_dif")?;
    }
    let roster = store
        .roster()
        .await?
        .into_iter()
        .map(|e| (e.email, e.groups))
        .collect();
    Ok((roster, dif))
}

const FORMATS: &str = "json, csv (a zip of all tables, or one with &table=), html";

/// `?format=` wins; else the first supported type of `Accept` by quality; else JSON.
fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Result<ReportFormat, ApiError> {
    if let Some(name) = query {
        return match name.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(ReportFormat::Json),
            "csv" | "zip" => Ok(ReportFormat::Csv),
            "html" => Ok(ReportFormat::Html),
            _ => Err(ApiError::bad_request(
                "unsupported_format",
                format!("format {name:?} is not supported; use {FORMATS}"),
            )),
        };
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(ReportFormat::Json);
    };
    let mut offered: Vec<(f32, String)> = accept
        .split(',')
        .map(|part| {
            let mut pieces = part.split(';');
            let media = pieces
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let quality = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (quality, media)
        })
        .filter(|(q, m)| *q > 0.0 && !m.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(ReportFormat::Json);
    }
    offered.sort_by(|a, b| b.0.total_cmp(&a.0));
    offered
        .iter()
        .find_map(|(_, media)| match media.as_str() {
            "application/json" | "application/*" | "*/*" => Some(ReportFormat::Json),
            "text/csv" | "application/zip" => Some(ReportFormat::Csv),
            "text/html" | "application/xhtml+xml" | "text/*" => Some(ReportFormat::Html),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::NotAcceptable(format!(
                "Accept: {accept} offers no format this endpoint writes; use {FORMATS}"
            ))
        })
}

/// A file name safe in a header: the exam name with anything but [A-Za-z0-9._-] as `_`.
fn file_stem(exam: &str) -> String {
    exam.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn check_table(table: &str) -> Result<(), ApiError> {
    if render::TABLES.contains(&table) || table == render::DIF_TABLE {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "unknown_table",
            format!(
                "no report table {table:?}; the tables are {}",
                render::TABLES.join(", ")
            ),
        ))
    }
}

fn render_error(e: examflow_reports::ReportError) -> ApiError {
    ApiError::Invalid(e.to_string())
}

/// A rendered report: its bytes, their media type and, for CSV, the file name they go by.
struct Rendered {
    content_type: &'static str,
    body: Vec<u8>,
    file_name: Option<String>,
}

/// The report in `format` (`table`: one CSV table instead of the zip of all), for
/// `GET /api/reports/exams/{name}` and `examflow report`. JSON is indented when `pretty`
/// (files); over HTTP it is compact and written into a buffer sized for the student table
/// up front instead of doubling into it.
fn rendered(
    report: &ExamReport,
    format: ReportFormat,
    table: Option<&str>,
    stem: &str,
    pretty: bool,
) -> Result<Rendered, examflow_reports::ReportError> {
    let (content_type, body, file_name) = match (format, table) {
        (ReportFormat::Json, _) => {
            let mut body = Vec::with_capacity(64 * 1024 + 200 * report.students.len());
            let written = if pretty {
                serde_json::to_writer_pretty(&mut body, report)
            } else {
                serde_json::to_writer(&mut body, report)
            };
            written.map_err(|e| examflow_reports::ReportError::Render {
                what: "JSON report".into(),
                message: e.to_string(),
            })?;
            ("application/json", body, None)
        }
        (ReportFormat::Html, _) => (
            "text/html; charset=utf-8",
            render::html(report).into_bytes(),
            None,
        ),
        (ReportFormat::Csv, Some(table)) => (
            "text/csv; charset=utf-8",
            render::csv_table(report, table)?.into_bytes(),
            Some(format!("{stem}-{table}.csv")),
        ),
        (ReportFormat::Csv, None) => (
            "application/zip",
            render::csv_zip(report)?,
            Some(format!("{stem}-report.zip")),
        ),
    };
    Ok(Rendered {
        content_type,
        body,
        file_name,
    })
}

/// `GET /api/reports/exams/{name}`.
pub async fn get_report(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(exam): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    identity.require_staff()?;
    let format = negotiate(query.format.as_deref(), &headers)?;
    if let Some(table) = &query.table {
        if format != ReportFormat::Csv {
            return Err(ApiError::bad_request(
                "table_needs_csv",
                "?table= selects one CSV table; add format=csv (JSON and HTML hold every table)",
            ));
        }
        check_table(table)?;
    }
    let mut options = report_options(
        query.attempts.as_deref(),
        query.from.as_deref(),
        query.to.as_deref(),
    )?;
    let roster = roster_choice(
        state.session_store.as_ref(),
        &mut options,
        query.group.as_deref(),
        query.dif.as_deref(),
        query.dif_reference.as_deref(),
    )
    .await?;
    // Read, computed and rendered on the SQL runtime, apart from the request workers.
    let executor = state.sql_executor.clone();
    executor
        .run(report_response(
            state,
            exam,
            format,
            query.table,
            options,
            roster,
        ))
        .await?
}

async fn report_response(
    state: AppState,
    exam: String,
    format: ReportFormat,
    table: Option<String>,
    options: ReportOptions,
    roster: RosterChoice,
) -> Result<Response, ApiError> {
    let bank = state.banks.get(&exam).cloned();
    let calibration =
        crate::calibration::active_version(state.session_store.as_ref(), &exam).await?;
    let sessions = adaptive_sessions(state.session_store.as_ref(), &exam).await?;
    let ctx = crate::sql::session(&state).await?;
    let timeout = Duration::from_secs(state.config.sql.timeout_secs.max(1));
    let report = tokio::time::timeout(
        timeout,
        compute(&ctx, &exam, bank, calibration, options, sessions, roster),
    )
    .await
    .map_err(|_| {
        ApiError::bad_request(
            "report_timeout",
            format!("the report took longer than {} s", timeout.as_secs()),
        )
    })??;
    let stem = file_stem(&exam);
    // Rendering a large report (a 100 000-student JSON body is ≈ 18 MB) takes a good part
    // of a second: off the async workers, like the computing.
    let Rendered {
        content_type,
        body,
        file_name,
    } = tokio::task::spawn_blocking(move || {
        rendered(&report, format, table.as_deref(), &stem, false).map_err(render_error)
    })
    .await
    .map_err(|e| ApiError::Invalid(format!("the report task failed: {e}")))??;
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(name) = file_name {
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                .unwrap_or(HeaderValue::from_static("attachment")),
        );
    }
    Ok(response)
}

/// `GET /api/reports/exams`: every exam with a bank, results or attempts, with headline
/// numbers.
pub async fn list_reports(
    State(state): State<AppState>,
    identity: Identity,
) -> Result<Response, ApiError> {
    identity.require_staff()?;
    let executor = state.sql_executor.clone();
    executor.run(exam_list(state)).await?
}

async fn exam_list(state: AppState) -> Result<Response, ApiError> {
    let ctx = crate::sql::session(&state).await?;
    let results = ctx
        .sql(
            "SELECT exam, count(*) AS results, count(DISTINCT email) AS takers,
                    avg(CAST(percentage AS DOUBLE)) AS mean_percentage,
                    sum(CASE WHEN result = 'passed' THEN 1 ELSE 0 END) AS passed,
                    sum(CASE WHEN result = 'failed' THEN 1 ELSE 0 END) AS failed
             FROM scores WHERE NOT deleted AND exam IS NOT NULL GROUP BY exam",
        )
        .await
        .map_err(query_error)?
        .collect()
        .await
        .map_err(query_error)?;
    let attempts = ctx
        .sql(
            "SELECT exam_name AS exam, count(*) AS attempts FROM attempts
             WHERE exam_name IS NOT NULL GROUP BY exam_name",
        )
        .await
        .map_err(query_error)?
        .collect()
        .await
        .map_err(query_error)?;
    let mut exams: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let blank = |exam: &str, has_bank: bool| {
        json!({"exam": exam, "has_bank": has_bank, "results": 0, "takers": 0,
               "mean_percentage": null, "pass_rate": null, "attempts": 0})
    };
    for name in state.banks.exams.keys() {
        exams.insert(name.clone(), blank(name, true));
    }
    for row in crate::sql::rows_as_json(&results)? {
        let Some(exam) = row["exam"].as_str().map(str::to_string) else {
            continue;
        };
        let entry = exams
            .entry(exam.clone())
            .or_insert_with(|| blank(&exam, false));
        let passed = row["passed"].as_f64().unwrap_or(0.0);
        let failed = row["failed"].as_f64().unwrap_or(0.0);
        entry["results"] = row["results"].clone();
        entry["takers"] = row["takers"].clone();
        entry["mean_percentage"] = row["mean_percentage"].clone();
        entry["pass_rate"] = if passed + failed > 0.0 {
            json!(passed / (passed + failed))
        } else {
            serde_json::Value::Null
        };
    }
    for row in crate::sql::rows_as_json(&attempts)? {
        let Some(exam) = row["exam"].as_str().map(str::to_string) else {
            continue;
        };
        exams
            .entry(exam.clone())
            .or_insert_with(|| blank(&exam, false))["attempts"] = row["attempts"].clone();
    }
    Ok(axum::Json(json!({"exams": exams.into_values().collect::<Vec<_>>()})).into_response())
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The exam's name (its bank's `name`, or the exam of its results and attempts).
    #[arg(long)]
    pub exam: String,
    /// html (one page with charts), json, or csv (a zip of all tables, or one with --table).
    #[arg(long, default_value = "html")]
    pub format: ReportFormat,
    /// With --format csv: write only this table (summary, histogram, items, distractors,
    /// trend, students, moodle_questions, moodle_test, adaptive, adaptive_distributions,
    /// adaptive_exposure, adaptive_stop_reasons or adaptive_calibrations) as plain CSV.
    #[arg(long)]
    pub table: Option<String>,
    /// Which results of each student count: first (default), last, highest or all.
    #[arg(long)]
    pub attempts: Option<String>,
    /// Only results submitted at or after this RFC 3339 timestamp or date (2026-12-01).
    #[arg(long)]
    pub from: Option<String>,
    /// Only results submitted at or before this RFC 3339 timestamp or date (a date
    /// includes that whole day).
    #[arg(long)]
    pub to: Option<String>,
    /// Only students of a roster group, e.g. campus:north.
    #[arg(long)]
    pub group: Option<String>,
    /// Add a DIF section by this roster column, e.g. campus.
    #[arg(long)]
    pub dif: Option<String>,
    /// The DIF reference group [default: the largest].
    #[arg(long)]
    pub dif_reference: Option<String>,
    /// Output file ("-" for standard output).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Data directory holding `lake/` and the embedded store [default: examflow-data].
    #[arg(long, env = "EXAMFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the lake's tables live: a path, file:///dir or s3://bucket/prefix
    /// [default: <data-dir>/lake].
    #[arg(long, env = "EXAMFLOW_LAKE_URI")]
    pub lake_uri: Option<String>,
    /// Directory of question banks [default: data/question_banks].
    #[arg(long, env = "EXAMFLOW_BANKS")]
    pub banks: Option<PathBuf>,
}

/// `examflow report`: a report from the committed data in the data dir (safe while a
/// server or ingest runs), with a progress bar on standard error.
pub async fn report_command(
    mut config: crate::config::Config,
    args: ReportArgs,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(table) = &args.table {
        anyhow::ensure!(
            args.format == ReportFormat::Csv,
            "--table selects one CSV table; add --format csv"
        );
        check_table(table).map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    }
    let mut options = report_options(
        args.attempts.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("--{e}"))?;
    if let Some(v) = args.data_dir {
        config.storage.data_dir = v;
    }
    if let Some(v) = args.lake_uri {
        config.storage.lake_uri = Some(v);
    }
    let data_dir = config.storage.data_dir.clone();
    let banks_dir = args.banks.unwrap_or(config.storage.banks_dir.clone());
    let progress = indicatif::ProgressBar::new(4);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:20}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(120));
    progress.set_message("opening the lake and the store");
    let lake = crate::lake_cmd::open_existing_lake(&config, "examflow serve or ingest").await?;
    let ctx = examflow_ingest::lake::query::new_session();
    examflow_ingest::lake::query::register_lake(&ctx, &lake, false).await?;
    let bank = if banks_dir.is_dir() {
        crate::banks::BankRegistry::load(&banks_dir)
            .get(&args.exam)
            .cloned()
    } else {
        None
    };
    // Calibrations and adaptive sessions live where the server keeps them: MongoDB when
    // configured, else the embedded store of the data dir.
    let store: Option<Box<dyn SessionStore>> = if let Some(uri) = &config.storage.mongodb_uri {
        Some(Box::new(
            MongoStore::connect(uri, Some(&config.storage.mongodb_database))
                .await
                .context("connecting to MongoDB")?,
        ))
    } else if data_dir.join("examflow.db").exists() {
        Some(Box::new(SqliteStore::open(&data_dir)?))
    } else {
        None
    };
    let (calibration, sessions, roster) = match &store {
        Some(store) => (
            crate::calibration::active_version(store.as_ref(), &args.exam)
                .await
                .context("reading the active calibration")?,
            adaptive_sessions(store.as_ref(), &args.exam)
                .await
                .context("reading the adaptive sessions")?,
            roster_choice(
                store.as_ref(),
                &mut options,
                args.group.as_deref(),
                args.dif.as_deref(),
                args.dif_reference.as_deref(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("--{e}"))?,
        ),
        None => {
            anyhow::ensure!(
                args.group.is_none() && args.dif.is_none(),
                "--group and --dif need a roster (examflow roster import) in the data dir"
            );
            (None, Vec::new(), (Default::default(), None))
        }
    };
    progress.inc(1);
    progress.set_message(format!(
        "reading and computing the report of {:?}",
        args.exam
    ));
    let report = compute(
        &ctx,
        &args.exam,
        bank,
        calibration,
        options,
        sessions,
        roster,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    progress.inc(1);
    progress.set_message("rendering");
    let bytes = rendered(
        &report,
        args.format,
        args.table.as_deref(),
        &file_stem(&args.exam),
        true,
    )?
    .body;
    progress.inc(1);
    progress.set_message(format!("writing {}", args.output.display()));
    if args.output.as_os_str() == "-" {
        std::io::stdout().write_all(&bytes)?;
    } else {
        std::fs::write(&args.output, &bytes)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    progress.inc(1);
    progress.finish_and_clear();
    eprintln!(
        "report of {:?}: {} results, {} questions → {} ({} bytes)",
        args.exam,
        report.summary.results,
        report.items.len(),
        args.output.display(),
        bytes.len()
    );
    Ok(())
}
