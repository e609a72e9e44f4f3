//! Wiring: application state, every route in one place, and the serve loop.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use examflow_engine::AnswerChoice;
use examflow_engine::scoring::score_submission;
use examflow_ingest::ResultDocument;
use examflow_ingest::store::{AttemptStore, ResultFilter, ResultStore, SessionStore, SqliteStore};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{Identity, Role, TokenKeys, validate_email};
use crate::banks::BankRegistry;
use crate::config::Config;
use crate::error::{ApiError, error_response};
use crate::metrics::{self, Metrics};
use crate::web;

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub banks: Arc<BankRegistry>,
    pub store: Arc<dyn ResultStore>,
    /// Local state in the data dir: the outbox, score cards and dead letters (and the
    /// results, sessions and calibrations too when there is no MongoDB).
    pub local: Arc<SqliteStore>,
    /// Adaptive sessions and calibration versions: MongoDB when results go there (shared by
    /// every server), else the embedded store.
    pub session_store: Arc<dyn SessionStore>,
    pub tokens: TokenKeys,
    /// Verifies `auth.identity_header` (None when it is not configured).
    pub proxy: Option<Arc<crate::auth::ProxyVerifier>>,
    pub metrics: Metrics,
    /// The lake's tables (filled by the Kafka ingest when Kafka is configured).
    pub lake: Arc<examflow_ingest::lake::Lake>,
    /// Adaptive sessions in use.
    pub sessions: Arc<crate::adaptive::SessionCache>,
    /// CAT banks of the stored calibration versions.
    pub calibrations: Arc<crate::calibration::CalibrationCache>,
    /// Fixed-form attempts: in the store of the results (MongoDB or embedded).
    pub attempts: Arc<dyn AttemptStore>,
    /// One start at a time per student and exam (attempt counting).
    pub gate: Arc<crate::policy::Gate>,
    /// Per-identity rate limits.
    pub limits: Arc<crate::limits::RateLimits>,
    /// Pseudonyms of student emails, and who sees them instead of emails (analysts).
    pub pseudonyms: Arc<crate::pseudonym::Pseudonyms>,
    /// The supervised background tasks, for `/readyz`.
    pub tasks: crate::supervise::Tasks,
    /// Admission of SQL queries, HTTP and pgwire together (`[sql]` limits).
    pub sql_admission: Arc<crate::sql::admission::SqlAdmission>,
    /// The runtime SQL queries run on, apart from the request workers (`[sql] threads`).
    pub sql_executor: Arc<crate::sql::executor::SqlExecutor>,
}

/// Most results one listing returns.
const MAX_LIST: usize = 1000;

/// JSON body extractor whose rejections use the API's error shape (413 for too large). The
/// body must be a JSON object: serde would also read a struct from an array of its fields
/// in order, a form no client means and no document describes.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match Json::<serde_json::value::Map<String, Value>>::from_request(req, state).await {
            Ok(Json(object)) => serde_json::from_value(Value::Object(object))
                .map(ApiJson)
                .map_err(|e| {
                    error_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_body",
                        &format!("Failed to deserialize the JSON body into the target type: {e}"),
                    )
                }),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A raw body whose rejections (413 past `[server] max_body_bytes`) use the API's error shape.
pub struct ApiBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(ApiBody(bytes)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            )),
            Err(r) => Err(error_response(r.status(), "bad_body", &r.body_text())),
        }
    }
}

/// Reads a JSON object (not an array of the fields; see [`ApiJson`]) into `T`.
pub fn object_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let object: serde_json::value::Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
}

/// Path parameters whose rejections use the API's error shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(error_response(r.status(), "bad_path", &r.body_text())),
        }
    }
}

/// Query parameters whose rejections use the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(error_response(r.status(), "bad_query", &r.body_text())),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Response {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ => "bad_json",
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_string(),
        _ => rejection.body_text(),
    };
    error_response(status, code, &message)
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/attempt.js", get(web::attempt_script))
        .route("/adaptive.js", get(web::adaptive_script))
        .route("/reports.js", get(web::reports_script))
        .route("/style.css", get(web::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/openapi.json", get(web::openapi))
        .route("/api/docs", get(web::docs))
        .route(
            "/api/dev-login",
            get(crate::auth::dev_login_status).post(dev_login),
        )
        .route("/api/me", get(me))
        .route("/api/exams", get(list_exams))
        .route("/api/exams/{name}", get(get_exam))
        .route("/api/exams/{name}/submissions", post(submit))
        .route(
            "/api/exams/{name}/attempts",
            post(crate::attempts::start_attempt),
        )
        .route("/api/attempts", get(crate::attempts::list_attempts))
        .route("/api/attempts/{id}", get(crate::attempts::get_attempt))
        .route(
            "/api/attempts/{id}/answers/{index}",
            axum::routing::put(crate::attempts::save_answer),
        )
        .route(
            "/api/attempts/{id}/submit",
            post(crate::attempts::submit_attempt),
        )
        .route("/api/exams/{name}/item-stats", get(item_stats))
        .route("/api/results", get(list_results))
        .route("/api/results/{id}", get(get_result))
        .route("/api/score-cards", get(score_cards))
        .route("/api/dead-letters", get(dead_letters))
        .route("/api/admin/banks", get(admin_banks))
        .route("/api/sql", post(crate::sql::post_sql))
        .route("/api/reports/exams", get(crate::reports::list_reports))
        .route("/api/reports/exams/{name}", get(crate::reports::get_report))
        .route(
            "/api/exams/{name}/calibrate",
            post(crate::calibration::post_calibrate),
        )
        .route(
            "/api/exams/{name}/calibrations",
            get(crate::calibration::list_calibrations).post(crate::calibration::import_calibration),
        )
        .route(
            "/api/exams/{name}/calibrations/{version}",
            get(crate::calibration::get_calibration),
        )
        .route(
            "/api/exams/{name}/calibrations/{version}/activate",
            post(crate::calibration::activate_calibration),
        )
        .route(
            "/api/adaptive/{exam}/sessions",
            post(crate::adaptive::start_session),
        )
        .route(
            "/api/adaptive/sessions",
            get(crate::adaptive::list_sessions),
        )
        .route("/api/abilities", get(crate::adaptive::abilities))
        .route(
            "/api/adaptive/sessions/{id}",
            get(crate::adaptive::get_session),
        )
        .route(
            "/api/adaptive/sessions/{id}/answers",
            post(crate::adaptive::answer),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /api/docs",
    )
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see /api/docs",
    )
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({
            "status": "ok",
            "store": state.store.kind(),
            "kafka": state.config.kafka.enabled(),
            "exams": state.banks.exams.len(),
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Readiness (Kubernetes' readiness probe): each dependency and background task, 503 when
/// one the server needs is down: the store, the lake, the broker when Kafka is configured, or a task
/// waiting to restart after a failure. `/healthz` stays the liveness check.
async fn readyz(State(state): State<AppState>) -> Response {
    const PROBE: std::time::Duration = std::time::Duration::from_secs(2);
    let mut ready = true;
    let store = match tokio::time::timeout(PROBE, state.store.ping()).await {
        Ok(Ok(())) => json!({"status": "ok", "kind": state.store.kind()}),
        Ok(Err(e)) => {
            ready = false;
            json!({"status": "down", "kind": state.store.kind(), "error": e.to_string()})
        }
        Err(_) => {
            ready = false;
            json!({"status": "down", "kind": state.store.kind(), "error": "no answer in 2 s"})
        }
    };
    let broker = if state.config.kafka.enabled() {
        match state.config.kafka.check_broker(PROBE).await {
            Ok(brokers) => json!({"status": "ok", "brokers": brokers}),
            Err(e) => {
                ready = false;
                json!({"status": "down", "error": e.to_string()})
            }
        }
    } else {
        json!({"status": "not_configured"})
    };
    let lake_uri = state.lake.location().display();
    let lake = match tokio::time::timeout(PROBE, state.lake.location().check()).await {
        Ok(Ok(())) => json!({"status": "ok", "uri": lake_uri}),
        Ok(Err(e)) => {
            ready = false;
            json!({"status": "down", "uri": lake_uri, "error": e.to_string()})
        }
        Err(_) => {
            ready = false;
            json!({"status": "down", "uri": lake_uri, "error": "no answer in 2 s"})
        }
    };
    let tasks = state.tasks.snapshot();
    if tasks
        .values()
        .any(|t| t.state == crate::supervise::TaskState::Restarting)
    {
        ready = false;
    }
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": store,
        "lake": lake,
        "broker": broker,
        "tasks": tasks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct DevLogin {
    email: String,
}

async fn dev_login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DevLogin>,
) -> Result<Json<Value>, ApiError> {
    if !state
        .config
        .auth
        .dev_login_enabled(state.config.server.listen)
    {
        return Err(ApiError::Forbidden(
            "dev login is turned off on this server (it is on by default only on a loopback \
             address; set auth.dev_login = true to force it)"
                .into(),
        ));
    }
    let email = body.email.trim().to_lowercase();
    validate_email(&email).map_err(|m| ApiError::bad_request("invalid_email", m))?;
    let token = state
        .tokens
        .issue(&email, Role::Student, state.config.auth.token_ttl_secs)?;
    Ok(Json(
        json!({"token": token, "email": email, "role": "student"}),
    ))
}

async fn me(identity: Identity) -> Json<Identity> {
    Json(identity)
}

async fn list_exams(State(state): State<AppState>) -> Json<Value> {
    let exams: Vec<Value> = state
        .banks
        .exams
        .values()
        .map(|b| json!({"name": b.name, "questions": b.items.len(), "policy": policy_json(&state, &b.name)}))
        .collect();
    Json(Value::Array(exams))
}

/// An exam's delivery policy as clients see it (to show time limits and windows).
fn policy_json(state: &AppState, exam: &str) -> Value {
    let policy = state.config.exam_policy(exam);
    let now = Utc::now();
    let open = crate::policy::check_window(&policy, now).is_ok();
    let mut v = serde_json::to_value(&policy).unwrap_or_default();
    v["open_now"] = json!(open);
    v["timed"] = json!(policy.time_limit_secs.is_some());
    v
}

fn bank_of<'a>(
    state: &'a AppState,
    name: &str,
) -> Result<&'a Arc<examflow_engine::Bank>, ApiError> {
    state
        .banks
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("exam {name:?}")))
}

/// The questions with ids and options, never the answer key.
async fn get_exam(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let bank = bank_of(&state, &name)?;
    let questions = crate::attempts::questions_json(bank);
    Ok(Json(
        json!({"name": bank.name, "questions": questions, "policy": policy_json(&state, &bank.name)}),
    ))
}

#[derive(Deserialize)]
struct Submission {
    answers: Vec<AnswerChoice>,
}

/// `POST /api/exams/{name}/submissions`: a one-shot submission of an untimed exam, within
/// its window and attempts; the response shows what `review` allows.
async fn submit(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Submission>,
) -> Result<Response, ApiError> {
    let bank = bank_of(&state, &name)?;
    let policy = state.config.exam_policy(&bank.name);
    if policy.time_limit_secs.is_some() {
        return Err(crate::policy::conflict(
            "timed_exam_needs_attempt",
            format!(
                "exam {name:?} is timed: start an attempt with POST /api/exams/{name}/attempts"
            ),
        ));
    }
    state.limits.take(
        &state.config.limits,
        &identity,
        crate::limits::Limited::Submission,
    )?;
    // Scored before admission: a malformed submission uses no attempt.
    let scored = score_submission(bank, &body.answers)?;
    let admission = state
        .gate
        .admit(&state, &identity, &bank.name, &policy)
        .await?;
    let doc = ResultDocument::new(&identity.email, scored, Utc::now());
    state.store.insert_result(&doc).await?;
    drop(admission);
    state
        .metrics
        .submissions
        .with_label_values(&[doc.exam.as_str(), doc.result.as_str()])
        .inc();
    let location = format!("/api/results/{}", doc.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(crate::policy::result_for(&state, &identity, &doc)),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ResultQuery {
    exam: Option<String>,
    email: Option<String>,
    limit: Option<usize>,
}

async fn list_results(
    State(state): State<AppState>,
    identity: Identity,
    ApiQuery(query): ApiQuery<ResultQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let email = if identity.role.sees_all_results() {
        if query.email.is_some() && state.pseudonyms.hides_emails(&identity) {
            return Err(ApiError::Forbidden(
                "analysts see students by pseudonym: filter by email is not available \
                 (use POST /api/sql, where emails are pseudonyms too)"
                    .into(),
            ));
        }
        query.email
    } else {
        if query.email.as_ref().is_some_and(|e| *e != identity.email) {
            return Err(ApiError::Forbidden(
                "students can only list their own results".into(),
            ));
        }
        Some(identity.email.clone())
    };
    let filter = ResultFilter {
        email,
        exam: query.exam,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    let docs = state.store.list_results(&filter).await?;
    Ok(Json(
        docs.iter()
            .map(|doc| crate::policy::result_for(&state, &identity, doc))
            .collect(),
    ))
}

async fn get_result(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found(format!("result {id:?}"));
    let doc = state.store.get_result(&id).await?.ok_or_else(not_found)?;
    // Another student's result is reported as not found: its existence is not revealed.
    if !identity.role.sees_all_results() && doc.email != identity.email {
        return Err(not_found());
    }
    Ok(Json(crate::policy::result_for(&state, &identity, &doc)))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn score_cards(
    State(state): State<AppState>,
    identity: Identity,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    let cards = state
        .local
        .score_cards(q.limit.unwrap_or(100).clamp(1, MAX_LIST))
        .await?;
    Ok(Json(serde_json::to_value(cards).unwrap_or_default()))
}

async fn dead_letters(
    State(state): State<AppState>,
    identity: Identity,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    let letters = state
        .local
        .dead_letters(q.limit.unwrap_or(100).clamp(1, MAX_LIST))
        .await?;
    Ok(Json(serde_json::to_value(letters).unwrap_or_default()))
}

async fn admin_banks(
    State(state): State<AppState>,
    identity: Identity,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    let exams: Vec<Value> = state
        .banks
        .exams
        .values()
        .map(|b| json!({"name": b.name, "questions": b.items.len()}))
        .collect();
    Ok(Json(json!({
        "dir": state.banks.dir.display().to_string(),
        "exams": exams,
        "errors": state.banks.errors,
    })))
}

/// Most stored results one item-statistics computation reads.
const MAX_ITEM_STATS_RESULTS: usize = 1_000_000;

async fn item_stats(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    let bank = bank_of(&state, &name)?.clone();
    let filter = ResultFilter {
        email: None,
        exam: Some(name),
        limit: MAX_ITEM_STATS_RESULTS,
    };
    let results = state.store.list_results(&filter).await?;
    let stats = tokio::task::spawn_blocking(move || crate::item_stats::item_stats(&bank, &results))
        .await
        .map_err(|e| ApiError::Invalid(format!("item statistics failed: {e}")))?;
    Ok(Json(stats))
}
