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
use examflow_engine::cat::{
    CatConfig, CatSession, FirstItem, SelectionRule, Step, StopReason, StopRule,
};
use examflow_engine::cat::{ClassificationRule, StartRule};
use examflow_engine::{Bank, QuestionMark};
use examflow_ingest::document::{format_timestamp, new_document_id};
use examflow_ingest::store::StoredSession;
use examflow_ingest::{AdaptiveOutcome, ResultDocument};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::calibration::exam_of;
use crate::config::AdaptivePolicy;
use crate::error::ApiError;
use crate::server::{ApiJson, ApiPath, ApiQuery, AppState};

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

/// The final outcome of a session, as answered to the student.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome {
    theta: f64,
    se: f64,
    scale_score: f64,
    /// Present only when the exam has a cut score.
    #[serde(skip_serializing_if = "Option::is_none")]
    passed: Option<bool>,
    /// `passed`, `failed` or (no cut score) `completed`, as in the stored result.
    result: String,
    items_used: usize,
    correct: usize,
    stop_reason: String,
    /// With a cut score: `confidence_interval` when the 95% interval of θ lies on one side
    /// of the cut, else `final_estimate` (the test ended at its maximum length, time or bank
    /// with the interval still across the cut: θ decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision_basis: Option<String>,
    /// The 95% confidence interval of θ, `[low, high]`.
    #[serde(default)]
    interval: Option<[f64; 2]>,
    explanation: String,
    finished_at: String,
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

/// The engine configuration of a new session: the exam's policy, narrowed by the request.
fn session_config(
    policy: &AdaptivePolicy,
    request: &StartRequest,
    bank_items: usize,
) -> Result<CatConfig, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_session_options", m);
    let rule = request.rule.unwrap_or(policy.rule);
    if !policy.allowed_rules.contains(&rule) {
        return Err(bad(format!(
            "rule {} is not allowed for this exam; allowed: {}",
            rule_name(rule),
            policy
                .allowed_rules
                .iter()
                .map(|r| rule_name(*r))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // The exam's policy is a floor the request can only raise: longer or more precise,
    // never shorter or looser (422 names the limit).
    let below = |m: String| ApiError::Refused {
        code: "below_exam_policy",
        message: m,
    };
    let max_length = request.max_length.unwrap_or(policy.max_length);
    if max_length == 0 || max_length > policy.max_length {
        return Err(bad(format!(
            "max_length {max_length} is outside this exam's limit of 1 to {}",
            policy.max_length
        )));
    }
    if max_length < policy.min_length {
        return Err(below(format!(
            "max_length {max_length} is below this exam's min_length {}: a test cannot be shorter than that",
            policy.min_length
        )));
    }
    let min_length = request.min_length.unwrap_or(policy.min_length);
    if min_length < policy.min_length {
        return Err(below(format!(
            "min_length {min_length} is below this exam's min_length {}",
            policy.min_length
        )));
    }
    if min_length > max_length {
        return Err(bad(format!(
            "min_length {min_length} is larger than max_length {max_length}"
        )));
    }
    // A bank shorter than the limit ends the test when it runs out.
    let max_length = max_length.min(bank_items.max(1));
    let min_length = min_length.min(max_length);
    let se = request.se.unwrap_or(policy.se_target);
    if !se.is_finite() {
        return Err(bad(format!("se {se} is not a number")));
    }
    if se > policy.se_target {
        return Err(below(format!(
            "se {se} is looser than this exam's se_target {}: a session may ask for more precision, not less",
            policy.se_target
        )));
    }
    if se < policy.min_se_target {
        return Err(bad(format!(
            "se {se} is below this exam's smallest SE target {}",
            policy.min_se_target
        )));
    }
    let classification = match (policy.cut_score, policy.stop_on_classification) {
        (Some(cut), true) => Some(ClassificationRule::ci(cut, 1.96)),
        _ => None,
    };
    let config = CatConfig {
        estimator: policy.estimator,
        rule,
        exposure: policy.exposure.clone(),
        content: policy.content.clone(),
        stop: StopRule {
            min_length,
            max_length,
            se: Some(se),
            classification,
        },
        start: StartRule {
            theta: 0.0,
            first_item: FirstItem::RandomMedium { k: 5 },
        },
        ..CatConfig::default()
    };
    config.validate().map_err(|e| bad(e.to_string()))?;
    Ok(config)
}

fn rule_name(rule: SelectionRule) -> String {
    serde_json::to_value(rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
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

/// Plain words for a student about a finished session.
fn explanation(
    outcome_theta: f64,
    se: f64,
    scale_score: f64,
    scale_mean: f64,
    scale_sd: f64,
    passed: Option<bool>,
) -> String {
    let low = (scale_score - 1.96 * se * scale_sd).round();
    let high = (scale_score + 1.96 * se * scale_sd).round();
    let share = 100.0 * normal_cdf(outcome_theta);
    let mut text = format!(
        "Your scale score is {scale_score:.0}. On this scale {scale_mean:.0} is the typical test taker and \
         {scale_sd:.0} points is one standard deviation, so you scored higher than about {share:.0}% of test takers. \
         Each question was chosen to match your answers so far, so the share of questions you got right \
         says little on its own. The score is an estimate: with 95% confidence your true score lies between \
         {low:.0} and {high:.0}."
    );
    match passed {
        Some(true) => text.push_str(" You reached the passing level."),
        Some(false) => text.push_str(" You did not reach the passing level."),
        None => {}
    }
    text
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 via erf; error < 1.5e−7).
fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if z >= 0.0 { erf } else { -erf })
}

fn state_text(state: &SessionState) -> String {
    serde_json::to_string(state).unwrap_or_default()
}

/// `POST /api/adaptive/{exam}/sessions`: a new session and its first question.
pub async fn start_session(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(exam_name): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let exam = exam_of(&app, &exam_name)?;
    app.limits
        .take(&app.config.limits, &identity, crate::limits::Limited::Start)?;
    // The body is optional: none (or blank) takes the exam's defaults.
    let request: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
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
    let (version, bank) = app.calibrations.latest(&app, &exam).await?;
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

/// Whether the instant `at` (RFC 3339) has passed.
fn past(at: &Option<String>, now: chrono::DateTime<Utc>) -> bool {
    at.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| now > t)
}

fn seconds_left(state: &SessionState, now: chrono::DateTime<Utc>) -> Option<i64> {
    state
        .deadline
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|d| (d.with_timezone(&Utc) - now).num_seconds().max(0))
}

/// Finishes the timed sessions past deadline + grace that nobody answers (called every
/// second with the attempts' deadline sweep, also right after a restart).
pub async fn finish_due_sessions(app: &AppState) {
    let now = format_timestamp(Utc::now());
    let due = match app.session_store.due_sessions(&now, 100).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "reading adaptive sessions past their deadline failed");
            return;
        }
    };
    for row in due {
        let id = row.id;
        let finished = async {
            let mut guard = locked(app, &id).await?;
            let live = guard.as_mut().expect("loaded above");
            if live.state.outcome.is_none() && past(&live.state.closes_at, Utc::now()) {
                expire(app, &id, live).await?;
            }
            Ok::<_, ApiError>(())
        }
        .await;
        match finished {
            Ok(()) => tracing::info!(session = %id, "adaptive session finished at its deadline"),
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "finishing an adaptive session at its deadline failed")
            }
        }
    }
}

/// Finishes a session whose time ran out with the estimate it has, stored like any
/// finished session (result, change event, final state).
async fn expire(app: &AppState, id: &str, live: &mut Live) -> Result<(), ApiError> {
    let exam = exam_of(app, &live.row.exam)?;
    let mut state = live.state.clone();
    let finished = state
        .cat
        .finish_now(StopReason::TimeLimit)
        .map_err(|e| ApiError::Invalid(format!("adaptive session {id}: {e}")))?;
    let mut row = live.row.clone();
    let expected = row.answered;
    row.updated_at = format_timestamp(Utc::now());
    finish_and_store(app, id, &exam, &mut row, &mut state, expected, finished).await?;
    live.state = state;
    live.row = row;
    Ok(())
}

/// Finishes the session with `finished` (a [`Step::Finished`]): its outcome, result and
/// final state, stored only over the state with `expected` answers.
async fn finish_and_store(
    app: &AppState,
    id: &str,
    exam: &Bank,
    row: &mut StoredSession,
    state: &mut SessionState,
    expected: i64,
    finished: Step,
) -> Result<Outcome, ApiError> {
    let Step::Finished {
        theta,
        se,
        items_used,
        stop_reason,
        ..
    } = finished
    else {
        return Err(ApiError::Invalid(format!(
            "adaptive session {id}: finishing gave a next question"
        )));
    };
    let (outcome, result) = finish(
        exam,
        row,
        state,
        theta,
        se,
        items_used,
        stop_reason.as_str(),
    );
    row.status = "finished".into();
    row.result_id = Some(state.result_id.clone());
    row.state = state_text(state);
    if !app
        .session_store
        .finish_session_if(row.clone(), expected, &result)
        .await?
    {
        return Err(answered_concurrently(app, id));
    }
    app.metrics
        .submissions
        .with_label_values(&[result.exam.as_str(), result.result.as_str()])
        .inc();
    Ok(outcome)
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

fn finished_json(id: &str, state: &SessionState, outcome: &Outcome) -> Value {
    let mut v = serde_json::to_value(outcome).unwrap_or_default();
    v["status"] = json!("finished");
    v["session"] = json!(id);
    v["result_id"] = json!(state.result_id);
    v["progress"] = progress_json(state);
    v
}

/// The outcome of a finished session and its result document (stored with the session's
/// final state by the caller). The result id was fixed when the session started, so a
/// retry after a crash finds the result already stored instead of adding a second.
fn finish(
    exam: &Bank,
    row: &StoredSession,
    state: &mut SessionState,
    theta: f64,
    se: f64,
    items_used: usize,
    stop_reason: &str,
) -> (Outcome, ResultDocument) {
    let scale_score = (state.scale_mean + state.scale_sd * theta).round();
    let passed = state.cut_score.map(|cut| theta >= cut);
    let result = match passed {
        Some(true) => "passed",
        Some(false) => "failed",
        None => "completed",
    };
    let correct = state.answers.iter().filter(|a| a.correct).count();
    let now = Utc::now();
    let interval = [theta - 1.96 * se, theta + 1.96 * se];
    let decision_basis = state.cut_score.map(|cut| {
        if interval[0] > cut || interval[1] < cut {
            "confidence_interval"
        } else {
            "final_estimate"
        }
        .to_string()
    });
    let outcome = Outcome {
        theta,
        se,
        scale_score,
        passed,
        result: result.into(),
        items_used,
        correct,
        stop_reason: stop_reason.into(),
        decision_basis,
        interval: Some(interval),
        explanation: explanation(
            theta,
            se,
            scale_score,
            state.scale_mean,
            state.scale_sd,
            passed,
        ),
        finished_at: format_timestamp(now),
    };
    let details: Vec<QuestionMark> = state
        .answers
        .iter()
        .map(|a| {
            let item = exam.item(&a.item);
            QuestionMark {
                question: item.map(|i| i.question.clone()).unwrap_or_default(),
                user_answer: a.answer.clone(),
                correct_answer: item.map(|i| i.correct_answer.clone()).unwrap_or_default(),
                is_correct: a.correct,
                item: a.item.clone(),
            }
        })
        .collect();
    let total = details.len() as u32;
    let doc = ResultDocument {
        id: state.result_id.clone(),
        email: row.email.clone(),
        exam: exam.name.clone(),
        score: correct as u32,
        total,
        percentage: (100 * correct as u32 + total / 2)
            .checked_div(total)
            .unwrap_or_default(),
        result: result.into(),
        details,
        submitted_at: format_timestamp(now),
        adaptive: Some(AdaptiveOutcome {
            session: row.id.clone(),
            theta,
            se,
            scale_score,
            stop_reason: stop_reason.into(),
            calibration_version: row.calibration_version,
            cut_score: state.cut_score,
            decision_basis: outcome.decision_basis.clone(),
            interval: outcome.interval,
        }),
        attempt_id: None,
        submitted_by: None,
    };
    state.outcome = Some(outcome.clone());
    (outcome, doc)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_outside_the_policy_are_refused() {
        let policy = AdaptivePolicy::default();
        let ok = session_config(&policy, &StartRequest::default(), 50).unwrap();
        assert_eq!(ok.stop.max_length, policy.max_length);
        assert_eq!(ok.stop.se, Some(policy.se_target));
        let too_long = StartRequest {
            max_length: Some(policy.max_length + 1),
            ..Default::default()
        };
        assert!(
            session_config(&policy, &too_long, 50)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        let too_precise = StartRequest {
            se: Some(0.05),
            ..Default::default()
        };
        assert!(session_config(&policy, &too_precise, 50).is_err());
        let mut narrow = policy.clone();
        narrow.allowed_rules = vec![SelectionRule::Mfi];
        let kl = StartRequest {
            rule: Some(SelectionRule::Kl),
            ..Default::default()
        };
        let e = session_config(&narrow, &kl, 50).unwrap_err().to_string();
        assert!(e.contains("kl") && e.contains("mfi"), "{e}");
        // A short bank caps the length.
        assert_eq!(
            session_config(&policy, &StartRequest::default(), 7)
                .unwrap()
                .stop
                .max_length,
            7
        );
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }
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
