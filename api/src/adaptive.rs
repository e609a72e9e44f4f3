//! Adaptive sessions over HTTP: start, answer one item at a time, inspect.
//!
//! A session's whole state (the engine's [`CatSession`], the answers as given, the
//! outcome) is written durably to the session store (the embedded one, or MongoDB when
//! results go there) before every response, so a session survives a restart and continues
//! exactly where it was. Sessions in use are also kept in memory, each behind its own lock,
//! so concurrent answers to one session are applied one at a time and different sessions
//! never wait for each other. With MongoDB, another server may have answered since, so the
//! stored state is read again on every request.
//!
//! A finished session is stored as a result like a fixed-form submission (`score`/`total`
//! over the items it gave, plus `adaptive` with θ, SE and the scale score), so change
//! events, score cards, reports, SQL and calibration see it. It is stored together with
//! the session's final state (the embedded store: one transaction, one fsync), and only
//! over the state the answer was computed from. Its result id is fixed when the session
//! starts: if the process dies between storing the result and the session's final state
//! (MongoDB: two writes), answering again finds the result instead of storing a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use examflow_engine::Bank;
use examflow_engine::cat::{CatSession, SelectionRule, Step, StopReason};
use examflow_ingest::document::{format_timestamp, new_document_id};
use examflow_ingest::store::StoredSession;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::calibration::exam_of;
use crate::error::ApiError;
use crate::server::{ApiJson, ApiPath, ApiQuery, AppState};

mod finish;
mod options;

pub use finish::finish_due_sessions;
use finish::{Outcome, expire, finish_and_store, finished_json, past, seconds_left};
use options::{rule_name, session_config};

/// What a session may ask for when it starts; each within the exam's policy.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StartRequest {
    /// Selection rule (`mfi`, `kl`, `klp`, `mpwi`, `b_matching`, `random`).
    pub rule: Option<SelectionRule>,
    /// Most items (at most the exam's `max_length`).
    pub max_length: Option<usize>,
    /// Fewest items before an SE stop (at most `max_length`).
    pub min_length: Option<usize>,
    /// SE target (at least the exam's `min_se_target`).
    pub se: Option<f64>,
}

/// An answer: the item it answers and the chosen option's text (or 0-based index).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    pub item: String,
    pub answer: examflow_engine::AnswerChoice,
}

/// One answer as given, kept for the result document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GivenAnswer {
    item: String,
    answer: String,
    correct: bool,
    at: String,
}

/// Everything about a session that is stored as its `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionState {
    cat: CatSession,
    max_length: usize,
    cut_score: Option<f64>,
    scale_mean: f64,
    scale_sd: f64,
    answers: Vec<GivenAnswer>,
    /// The id the finished session's result gets (fixed at the start: idempotent finish).
    result_id: String,
    outcome: Option<Outcome>,
    /// The exam's time limit: the session finishes with its current estimate at
    /// `closes_at` (deadline + grace). None when untimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closes_at: Option<String>,
}

/// A session in memory: its stored row and its decoded state.
struct Live {
    row: StoredSession,
    state: SessionState,
}

/// Sessions in use, each behind its own lock.
#[derive(Default)]
pub struct SessionCache {
    live: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Live>>>>>,
}

impl SessionCache {
    /// The slot of session `id` (empty until loaded).
    fn slot(&self, id: &str, max_cached: usize) -> Arc<tokio::sync::Mutex<Option<Live>>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = live.get(id) {
            return slot.clone();
        }
        if live.len() >= max_cached.max(1) {
            // Forget sessions nobody is using right now; they are on disk.
            live.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        let slot = Arc::new(tokio::sync::Mutex::new(None));
        live.insert(id.to_string(), slot.clone());
        slot
    }

    fn forget(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(id);
    }
}

/// A question as a student sees it: never the key.
fn question_json(exam: &Bank, item_id: &str, number: usize) -> Value {
    match exam.item(item_id) {
        Some(item) => json!({
            "id": item.id,
            "number": number,
            "question": item.question,
            "options": item.options,
        }),
        None => json!({"id": item_id, "number": number}),
    }
}

fn progress_json(state: &SessionState) -> Value {
    json!({"answered": state.answers.len(), "max_items": state.max_length})
}

fn state_text(state: &SessionState) -> String {
    serde_json::to_string(state).unwrap_or_default()
}

/// `POST /api/adaptive/{exam}/sessions`: a new session and its first question.
pub async fn start_session(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(exam_name): ApiPath<String>,
    crate::server::ApiBody(body): crate::server::ApiBody,
) -> Result<Response, ApiError> {
    let exam = exam_of(&app, &exam_name)?;
    app.limits
        .take(&app.config.limits, &identity, crate::limits::Limited::Start)?;
    // The body is optional: none (or blank) takes the exam's defaults.
    let request: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        crate::server::object_from_slice(&body).map_err(|e| {
            ApiError::bad_request("bad_json", format!("invalid session options: {e}"))
        })?
    };
    let policy = app.config.adaptive.policy_of(&exam.name);
    let config = session_config(&policy, &request, exam.items.len())?;
    let exam_policy = app.config.exam_policy(&exam.name);
    let admission = app
        .gate
        .admit(&app, &identity, &exam.name, &exam_policy)
        .await?;
    let (version, bank) = app.calibrations.active(&app, &exam).await?;
    let id = new_document_id();
    let seed = seed_from(&id);
    let (cat, first) = CatSession::start(&bank, &config, seed)
        .map_err(|e| ApiError::bad_request("invalid_session_options", e.to_string()))?;
    let now = format_timestamp(Utc::now());
    let state = SessionState {
        cat,
        max_length: config.stop.max_length,
        cut_score: policy.cut_score,
        scale_mean: app.config.adaptive.scale_mean,
        scale_sd: app.config.adaptive.scale_sd,
        answers: Vec::new(),
        result_id: new_document_id(),
        outcome: None,
        deadline: None,
        closes_at: None,
    };
    let mut state = state;
    if let Some(deadline) = crate::policy::deadline_of(&exam_policy, Utc::now()) {
        state.deadline = Some(format_timestamp(deadline));
        state.closes_at = Some(format_timestamp(crate::policy::closes_at(
            &exam_policy,
            deadline,
        )));
    }
    let row = StoredSession {
        id: id.clone(),
        exam: exam.name.clone(),
        email: identity.email.clone(),
        calibration_version: version,
        status: "active".into(),
        answered: 0,
        result_id: None,
        created_at: now.clone(),
        updated_at: now,
        state: state_text(&state),
        closes_at: state.closes_at.clone(),
    };
    app.session_store.put_session(row.clone()).await?;
    drop(admission);
    let body = json!({
        "session": id,
        "exam": exam.name,
        "status": "active",
        "calibration_version": version,
        "rule": rule_name(config.rule),
        "question": question_json(&exam, &first, 1),
        "progress": progress_json(&state),
        "deadline": state.deadline,
        "seconds_left": seconds_left(&state, Utc::now()),
    });
    let slot = app
        .sessions
        .slot(&id, app.config.adaptive.max_cached_sessions);
    *slot.lock().await = Some(Live { row, state });
    let location = format!("/api/adaptive/sessions/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// A session seed from its id and the clock (the id alone is time-ordered, not random).
fn seed_from(id: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    id.bytes().fold(nanos ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// Session `id`, loaded and locked for this request (an unknown id is not cached).
async fn locked(
    app: &AppState,
    id: &str,
) -> Result<tokio::sync::OwnedMutexGuard<Option<Live>>, ApiError> {
    let slot = app
        .sessions
        .slot(id, app.config.adaptive.max_cached_sessions);
    let mut guard = slot.lock_owned().await;
    if let Err(e) = load(app, id, &mut guard).await {
        drop(guard);
        app.sessions.forget(id);
        return Err(e);
    }
    Ok(guard)
}

/// Loads session `id` into its slot when it is not in memory, or (shared store) when the
/// stored state is newer than the one in memory.
async fn load(app: &AppState, id: &str, slot: &mut Option<Live>) -> Result<(), ApiError> {
    // Only this process writes the embedded store, so its copy in memory is current.
    let shared = app.config.storage.mongodb_uri.is_some();
    if slot.is_some() && !shared {
        return Ok(());
    }
    let not_found = || ApiError::not_found(format!("adaptive session {id:?}"));
    let row = app
        .session_store
        .get_session(id)
        .await?
        .ok_or_else(not_found)?;
    if slot.as_ref().is_some_and(|live| live.row == row) {
        return Ok(());
    }
    let state: SessionState = serde_json::from_str(&row.state).map_err(|e| {
        ApiError::Invalid(format!("stored adaptive session {id} is not valid: {e}"))
    })?;
    *slot = Some(Live { row, state });
    Ok(())
}

fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Conflict {
        code,
        message: message.into(),
    }
}

/// `POST /api/adaptive/sessions/{id}/answers`: records the answer to the pending item;
/// answers the next question or the final result.
pub async fn answer(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<AnswerRequest>,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let mut guard = locked(&app, &id).await?;
    let loaded = started.elapsed();
    let live = guard.as_mut().expect("loaded above");
    if live.row.email != identity.email {
        // Another student's session does not exist for this caller.
        return Err(ApiError::not_found(format!("adaptive session {id:?}")));
    }
    if live.state.outcome.is_none() && past(&live.state.closes_at, Utc::now()) {
        expire(&app, &id, live).await?;
        return Err(conflict(
            "attempt_closed",
            "this adaptive session's time ran out; it finished with the estimate it had \
             (GET /api/adaptive/sessions/{id} shows the result)",
        ));
    }
    app.limits.take(
        &app.config.limits,
        &identity,
        crate::limits::Limited::Answer,
    )?;
    if live.state.outcome.is_some() {
        return Err(conflict(
            "session_finished",
            "this adaptive session has finished; its result is in GET /api/adaptive/sessions/{id}",
        ));
    }
    let pending = live
        .state
        .cat
        .pending_item()
        .unwrap_or_default()
        .to_string();
    if request.item != pending {
        if live.state.answers.iter().any(|a| a.item == request.item) {
            return Err(conflict(
                "already_answered",
                format!(
                    "item {:?} was already answered; the session is waiting for item {pending:?}",
                    request.item
                ),
            ));
        }
        return Err(conflict(
            "wrong_item",
            format!(
                "the session is waiting for an answer to item {pending:?}, not {:?}",
                request.item
            ),
        ));
    }
    let exam = exam_of(&app, &live.row.exam)?;
    let item = exam.item(&pending).ok_or_else(|| {
        ApiError::Invalid(format!(
            "item {pending:?} is no longer in exam {:?}",
            exam.name
        ))
    })?;
    let chosen = match &request.answer {
        examflow_engine::AnswerChoice::Text(t) => item.options.iter().find(|o| *o == t).cloned(),
        examflow_engine::AnswerChoice::Index(i) => item.options.get(*i).cloned(),
    }
    .ok_or_else(|| {
        ApiError::bad_request(
            "unknown_option",
            format!(
                "{:?} is not one of the options of item {pending:?}: {:?}",
                request.answer, item.options
            ),
        )
    })?;
    let correct = chosen == item.correct_answer;
    let bank = app
        .calibrations
        .version(
            app.session_store.as_ref(),
            &exam,
            live.row.calibration_version,
        )
        .await?;
    // Work on a copy: the stored state changes only once the new one is on disk.
    let mut state = live.state.clone();
    let mut step = state
        .cat
        .answer(&bank, &pending, correct)
        .map_err(|e| ApiError::Invalid(format!("adaptive session {id}: {e}")))?;
    let now = Utc::now();
    // An answer in the grace period counts, but no further question is given.
    if matches!(step, Step::Next { .. }) && past(&state.deadline, now) {
        step = state
            .cat
            .finish_now(StopReason::TimeLimit)
            .map_err(|e| ApiError::Invalid(format!("adaptive session {id}: {e}")))?;
    }
    state.answers.push(GivenAnswer {
        item: pending.clone(),
        answer: chosen,
        correct,
        at: format_timestamp(now),
    });
    let mut row = live.row.clone();
    let expected = row.answered;
    row.answered = state.answers.len() as i64;
    row.updated_at = format_timestamp(now);
    let stepped = started.elapsed();
    let body = match step {
        Step::Next { item } => {
            let body = json!({
                "status": "next",
                "session": id,
                "question": question_json(&exam, &item, state.answers.len() + 1),
                "progress": progress_json(&state),
                "seconds_left": seconds_left(&state, now),
            });
            row.state = state_text(&state);
            store_answered(&app, &id, &row, expected).await?;
            body
        }
        finished @ Step::Finished { .. } => {
            let outcome =
                finish_and_store(&app, &id, &exam, &mut row, &mut state, expected, finished)
                    .await?;
            finished_json(&id, &state, &outcome)
        }
    };
    live.state = state;
    live.row = row;
    let took = started.elapsed();
    if took > SLOW_ANSWER {
        // Where a slow answer spent its time: waiting for the session (its lock or a
        // load), the engine step, or the durable write (and, at the end, the result).
        // Debug level: under saturation every answer is slow (`adaptive-load
        // --server-log FILE` turns it on).
        tracing::debug!(
            session = %id,
            total_ms = took.as_secs_f64() * 1e3,
            session_ms = loaded.as_secs_f64() * 1e3,
            step_ms = (stepped - loaded).as_secs_f64() * 1e3,
            store_ms = (took - stepped).as_secs_f64() * 1e3,
            "slow adaptive answer"
        );
    }
    Ok(Json(body))
}

/// Stores the state after one more answer, only over the state it was computed from
/// (`expected` answers): with MongoDB another server may have answered this session since
/// it was read. The loser forgets its copy and answers 409; the student's page reloads the
/// session and sees the answer that won.
async fn store_answered(
    app: &AppState,
    id: &str,
    row: &StoredSession,
    expected: i64,
) -> Result<(), ApiError> {
    if app
        .session_store
        .replace_session_if(row.clone(), expected)
        .await?
    {
        return Ok(());
    }
    Err(answered_concurrently(app, id))
}

/// The loser of two simultaneous answers: its copy of the session is stale.
fn answered_concurrently(app: &AppState, id: &str) -> ApiError {
    app.sessions.forget(id);
    conflict(
        "answered_concurrently",
        "another request answered this adaptive session at the same moment; \
         GET /api/adaptive/sessions/{id} shows where it stands now",
    )
}

/// Answers slower than this are logged (debug) with where the time went: most of the
/// 5 ms p99 budget of issue 6's benchmark.
const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_millis(4);

/// `GET /api/adaptive/sessions/{id}`: progress for its student; for staff also the trace
/// of θ and SE after each item.
pub async fn get_session(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let mut guard = locked(&app, &id).await?;
    let live = guard.as_mut().expect("loaded above");
    let staff = identity.role.sees_all_results();
    if !staff && live.row.email != identity.email {
        return Err(ApiError::not_found(format!("adaptive session {id:?}")));
    }
    if live.state.outcome.is_none() && past(&live.state.closes_at, Utc::now()) {
        expire(&app, &id, live).await?;
    }
    Ok(Json(session_json(&app, live, staff, identity.role)))
}

fn session_json(app: &AppState, live: &Live, staff: bool, role: crate::auth::Role) -> Value {
    let state = &live.state;
    let mut v = json!({
        "session": live.row.id,
        "exam": live.row.exam,
        "status": live.row.status,
        "created_at": live.row.created_at,
        "updated_at": live.row.updated_at,
        "progress": progress_json(state),
    });
    if let Some(outcome) = &state.outcome {
        v["result"] = finished_json(&live.row.id, state, outcome);
    } else {
        v["deadline"] = json!(state.deadline);
        v["seconds_left"] = json!(seconds_left(state, Utc::now()));
        if let Some(pending) = state.cat.pending_item()
            && let Some(exam) = app.banks.get(&live.row.exam)
        {
            v["question"] = question_json(exam, pending, state.answers.len() + 1);
        }
    }
    if staff {
        v["email"] = if app.pseudonyms.hides_emails_from(role) {
            json!(app.pseudonyms.of(&live.row.email))
        } else {
            json!(live.row.email)
        };
        v["calibration_version"] = json!(live.row.calibration_version);
        v["config"] = serde_json::to_value(state.cat.config()).unwrap_or_default();
        v["theta"] = json!(state.cat.theta());
        v["se"] = json!(state.cat.se());
        v["trace"] = state
            .cat
            .trace()
            .iter()
            .zip(&state.answers)
            .enumerate()
            .map(|(n, (t, a))| {
                json!({"number": n + 1, "item": t.item, "answer": a.answer, "correct": t.correct, "theta": t.theta, "se": t.se, "at": a.at})
            })
            .collect();
    }
    v
}

#[derive(Deserialize)]
pub struct ListQuery {
    exam: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/adaptive/sessions?exam=&limit=` (educator, admin): sessions, newest first.
pub async fn list_sessions(
    State(app): State<AppState>,
    identity: Identity,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    let rows = app
        .session_store
        .list_sessions(q.exam, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|r| {
                json!({"session": r.id, "exam": r.exam, "email": r.email, "status": r.status,
                       "answered": r.answered, "calibration_version": r.calibration_version,
                       "result_id": r.result_id, "created_at": r.created_at, "updated_at": r.updated_at})
            })
            .collect(),
    )))
}

#[derive(Deserialize)]
pub struct AbilityQuery {
    user_exam_id: Option<String>,
    exam: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/abilities?user_exam_id=&exam=&limit=` (analyst, educator, admin): the current
/// ability estimates kept from the attempt stream, most recently updated first.
pub async fn abilities(
    State(app): State<AppState>,
    identity: Identity,
    ApiQuery(q): ApiQuery<AbilityQuery>,
) -> Result<Json<Value>, ApiError> {
    identity.require_analytics()?;
    let tracker = &app.lake.abilities;
    if let Some(id) = q.user_exam_id {
        let one = tracker.get(&id).ok_or_else(|| {
            ApiError::not_found(format!("ability estimate for user_exam_id {id:?}"))
        })?;
        return Ok(Json(serde_json::to_value(one).unwrap_or_default()));
    }
    let list = tracker.list(q.exam.as_deref(), q.limit.unwrap_or(100).clamp(1, 10_000));
    Ok(Json(json!({"users": tracker.len(), "abilities": list})))
}

/// What the score report reads of a stored session's state (the rest is skipped).
#[derive(Deserialize)]
struct ReportState {
    #[serde(default)]
    answers: Vec<ReportAnswer>,
    result_id: String,
    outcome: Option<ReportOutcome>,
}

#[derive(Deserialize)]
struct ReportAnswer {
    item: String,
}

#[derive(Deserialize)]
struct ReportOutcome {
    theta: f64,
    se: f64,
    stop_reason: String,
}

/// The finished sessions of `rows` as the score report's adaptive section needs them:
/// final θ and SE, the items given, why it stopped, its calibration version, and the
/// result it stored (the report counts a session when that result is selected).
pub(crate) fn report_sessions(rows: &[StoredSession]) -> Vec<examflow_reports::AdaptiveSession> {
    rows.iter()
        .filter(|row| row.status == "finished")
        .filter_map(|row| {
            let state: ReportState = match serde_json::from_str(&row.state) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(session = %row.id, error = %e, "a stored adaptive session is not readable; the report leaves it out");
                    return None;
                }
            };
            let outcome = state.outcome?;
            Some(examflow_reports::AdaptiveSession {
                session: row.id.clone(),
                result_id: Some(row.result_id.clone().unwrap_or(state.result_id)),
                theta: outcome.theta,
                se: outcome.se,
                items: state.answers.into_iter().map(|a| a.item).collect(),
                stop_reason: outcome.stop_reason,
                calibration_version: row.calibration_version,
            })
        })
        .collect()
}
