//! `POST /api/sql`: read-only SQL over the lake for analysts, educators and admins. Queries
//! see committed data plus the ingest's in-memory tail (rows are visible within the flush
//! interval of arriving). DDL, DML and other statements are refused; results are capped.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use datafusion::execution::context::SQLOptions;
use examflow_ingest::lake::query::{new_session, register_lake};
use serde::Deserialize;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::server::{ApiJson, AppState};

/// Most rows one response carries; more sets `X-Examflow-Truncated: true`.
const MAX_ROWS: usize = 100_000;
/// Longest a query may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    sql: String,
}

fn invalid_sql(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_sql",
        message: e.to_string(),
    }
}

pub async fn post_sql(
    State(state): State<AppState>,
    identity: Identity,
    ApiJson(request): ApiJson<SqlRequest>,
) -> Result<Response, ApiError> {
    identity.require_analytics()?;
    let ctx = new_session();
    register_lake(&ctx, &state.lake, true).await?;
    // Per-user ability estimates from the attempt stream, as of now.
    let abilities = datafusion::datasource::MemTable::try_new(
        examflow_ingest::abilities::abilities_schema(),
        vec![vec![state.lake.abilities.to_batch()]],
    )
    .map_err(invalid_sql)?;
    ctx.register_table("abilities", std::sync::Arc::new(abilities))
        .map_err(invalid_sql)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx
        .sql_with_options(&request.sql, options)
        .await
        .map_err(invalid_sql)?
        .limit(0, Some(MAX_ROWS + 1))
        .map_err(invalid_sql)?;
    let batches = tokio::time::timeout(QUERY_TIMEOUT, frame.collect())
        .await
        .map_err(|_| ApiError::BadRequest {
            code: "query_timeout",
            message: format!("the query ran longer than {} s", QUERY_TIMEOUT.as_secs()),
        })?
        .map_err(invalid_sql)?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let truncated = total > MAX_ROWS;
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::ArrayWriter::new(&mut out);
        let mut left = MAX_ROWS;
        for batch in &batches {
            let take = batch.num_rows().min(left);
            writer
                .write(&batch.slice(0, take))
                .map_err(|e| ApiError::Invalid(format!("encoding the result: {e}")))?;
            left -= take;
        }
        writer
            .finish()
            .map_err(|e| ApiError::Invalid(format!("encoding the result: {e}")))?;
    }
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response();
    response.headers_mut().insert(
        "x-examflow-truncated",
        HeaderValue::from_static(if truncated { "true" } else { "false" }),
    );
    Ok(response)
}
