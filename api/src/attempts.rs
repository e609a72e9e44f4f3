//! Fixed-form attempts on the server: a student starts an attempt, saves answers one at a
//! time (each durable before its 200), and submits; at deadline + grace the server submits
//! what was saved by itself, even with no client connected and across restarts
//! ([`run_deadlines`]). The result is scored and stored exactly as a one-shot submission
//! (result document, change event, score card, lake) and shown as the exam's `review`
//! policy allows.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use examflow_engine::scoring::score_answers;
use examflow_engine::{AnswerChoice, Bank};
use examflow_ingest::ResultDocument;
use examflow_ingest::document::{format_timestamp, new_document_id};
use examflow_ingest::store::StoredAttempt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::config::ExamPolicy;
use crate::error::ApiError;
use crate::limits::Limited;
use crate::policy::{
    closes_at, conflict, deadline_of, has_passed, parse_instant, result_for, seconds_until,
};
use crate::server::{ApiPath, ApiQuery, AppState};

/// Who submitted an attempt.
const BY_STUDENT: &str = "student";
const BY_DEADLINE: &str = "deadline";

/// How often the server looks for attempts past deadline + grace.
const DEADLINE_SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

fn bank_of(app: &AppState, exam: &str) -> Result<std::sync::Arc<Bank>, ApiError> {
    app.banks
        .get(exam)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("exam {exam:?}")))
}

/// Whether answers may no longer be saved (past deadline + grace).
fn is_past_closing(attempt: &StoredAttempt, now: DateTime<Utc>) -> bool {
    has_passed(attempt.closes_at.as_deref(), now)
}

/// The attempt `id` if `identity` may see it: its student, or staff. Anyone else gets
/// 404, never 403: another student's attempt does not exist for them.
async fn visible_attempt(
    app: &AppState,
    identity: &Identity,
    id: &str,
) -> Result<StoredAttempt, ApiError> {
    let not_found = || ApiError::not_found(format!("attempt {id:?}"));
    let attempt = app.attempts.get_attempt(id).await?.ok_or_else(not_found)?;
    if attempt.email != identity.email && !identity.role.is_staff() {
        return Err(not_found());
    }
    Ok(attempt)
}

/// An attempt as its student sees it; `questions` only when asked (not in listings).
async fn attempt_json(
    app: &AppState,
    identity: &Identity,
    attempt: &StoredAttempt,
    bank: Option<&Bank>,
) -> Result<Value, ApiError> {
    let policy = app.config.exam_policy(&attempt.exam);
    let now = Utc::now();
    let seconds_left = seconds_until(attempt.deadline.as_deref(), now);
    let mut v = json!({
        "attempt_id": attempt.id,
        "exam": attempt.exam,
        "status": attempt.status,
        "started_at": attempt.started_at,
        "deadline": attempt.deadline,
        "closes_at": attempt.closes_at,
        "seconds_left": seconds_left,
        "time_limit_secs": policy.time_limit_secs,
        "grace_secs": policy.grace_secs,
        "answers": attempt.answers,
        "flags": attempt.flags,
        "answered": attempt.answers.iter().filter(|a| a.is_some()).count(),
        "updated_at": attempt.updated_at,
        "submitted_at": attempt.submitted_at,
        "submitted_by": attempt.submitted_by,
        "result_id": (attempt.status == "submitted").then_some(&attempt.result_id),
        "review": crate::policy::review_json(&policy, now),
    });
    if let Some(bank) = bank {
        v["questions"] = questions_json(bank);
    }
    if identity.role.is_staff() {
        v["email"] = json!(attempt.email);
    }
    if attempt.status == "submitted"
        && let Some(doc) = app.store.get_result(&attempt.result_id).await?
    {
        v["result"] = result_for(app, identity, &doc);
    }
    Ok(v)
}

/// The questions with ids and options, never the key.
pub fn questions_json(bank: &Bank) -> Value {
    bank.items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            json!({"id": item.id, "index": index, "question": item.question, "options": item.options})
        })
        .collect()
}

/// `POST /api/exams/{name}/attempts`: the student's open attempt of the exam, or a new one
/// (201) when the window and the attempts left allow.
pub async fn start_attempt(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(exam): ApiPath<String>,
) -> Result<Response, ApiError> {
    let bank = bank_of(&app, &exam)?;
    app.limits
        .take(&app.config.limits, &identity, Limited::Start)?;
    let policy = app.config.exam_policy(&exam);
    // One start at a time per student and exam: resume the open attempt (unless its time
    // is up: then it is submitted first), else check the window and attempts and store.
    let lock = app.gate.lock(&identity.email, &exam).await;
    let newest = app
        .attempts
        .list_attempts(&identity.email, Some(exam.clone()), 1)
        .await?;
    if let Some(open) = newest.into_iter().next().filter(|a| a.status == "open") {
        if !is_past_closing(&open, Utc::now()) {
            drop(lock);
            let body = attempt_json(&app, &identity, &open, Some(&bank)).await?;
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        submit(&app, open, BY_DEADLINE).await?;
    }
    crate::policy::check_start(&app, &identity, &exam, &policy).await?;
    let attempt = new_attempt(&identity, &bank, &policy, Utc::now());
    let (attempt, created) = app.attempts.open_attempt(attempt).await?;
    drop(lock);
    let body = attempt_json(&app, &identity, &attempt, Some(&bank)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/attempts/{}", attempt.id);
    Ok((status, [(header::LOCATION, location)], Json(body)).into_response())
}

fn new_attempt(
    identity: &Identity,
    bank: &Bank,
    policy: &ExamPolicy,
    now: DateTime<Utc>,
) -> StoredAttempt {
    let deadline = deadline_of(policy, now);
    let n = bank.items.len();
    StoredAttempt {
        id: new_document_id(),
        exam: bank.name.clone(),
        email: identity.email.clone(),
        status: "open".into(),
        started_at: format_timestamp(now),
        deadline: deadline.map(format_timestamp),
        closes_at: deadline.map(|d| format_timestamp(closes_at(policy, d))),
        answers: vec![None; n],
        flags: vec![false; n],
        version: 0,
        updated_at: format_timestamp(now),
        result_id: new_document_id(),
        submitted_at: None,
        submitted_by: None,
    }
}

/// `PUT /api/attempts/{id}/answers/{index}` body: `answer` (option text, 0-based option
/// index, or null to clear) and/or `flagged`; a key left out keeps what was saved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveAnswer {
    #[serde(default, deserialize_with = "present")]
    answer: Option<Option<AnswerChoice>>,
    flagged: Option<bool>,
}

/// `Some(None)` for an explicit null, `None` (via `default`) for a missing key.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<AnswerChoice>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// `PUT /api/attempts/{id}/answers/{index}`: saves one answer durably (fsync) before its
/// 200; after deadline + grace: 409 `attempt_closed`.
pub async fn save_answer(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath((id, index)): ApiPath<(String, usize)>,
    crate::server::ApiBody(body): crate::server::ApiBody,
) -> Result<Json<Value>, ApiError> {
    let request: SaveAnswer = crate::server::object_from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("expected {{\"answer\": option text | option index | null, \"flagged\": true | false}}: {e}"),
        )
    })?;
    if request.answer.is_none() && request.flagged.is_none() {
        return Err(ApiError::bad_request(
            "bad_json",
            "give \"answer\" (option text, index or null) and/or \"flagged\"",
        ));
    }
    app.limits
        .take(&app.config.limits, &identity, Limited::Answer)?;
    let attempt = visible_attempt(&app, &identity, &id).await?;
    if attempt.email != identity.email {
        return Err(ApiError::Forbidden(
            "only the student taking an attempt can answer it".into(),
        ));
    }
    let now = Utc::now();
    if attempt.status != "open" || is_past_closing(&attempt, now) {
        return Err(closed(&attempt));
    }
    let bank = bank_of(&app, &attempt.exam)?;
    let item = bank.items.get(index).ok_or_else(|| {
        ApiError::not_found(format!(
            "question {index} of attempt {id:?} (it has {} questions, numbered from 0)",
            bank.items.len()
        ))
    })?;
    let answer = match &request.answer {
        None => None,
        Some(None) => Some(None),
        Some(Some(choice)) => {
            let text = match choice {
                AnswerChoice::Text(t) => item.options.iter().find(|o| *o == t),
                AnswerChoice::Index(i) => item.options.get(*i),
            }
            .ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_option",
                    format!(
                        "{choice:?} is not one of the options of question {index}: {:?}",
                        item.options
                    ),
                )
            })?;
            Some(Some(text.clone()))
        }
    };
    let at = format_timestamp(now);
    let saved = app
        .attempts
        .save_attempt_answer(&id, index, answer.clone(), request.flagged, &at)
        .await?;
    if !saved {
        // Submitted (by the student elsewhere, or at the deadline) since it was read.
        let fresh = app.attempts.get_attempt(&id).await?.unwrap_or(attempt);
        return Err(closed(&fresh));
    }
    let seconds_left = seconds_until(attempt.deadline.as_deref(), now);
    let mut body = json!({
        "attempt_id": id,
        "index": index,
        "saved": true,
        "saved_at": at,
        "seconds_left": seconds_left,
    });
    if let Some(answer) = answer {
        body["answer"] = json!(answer);
    }
    if let Some(flagged) = request.flagged {
        body["flagged"] = json!(flagged);
    }
    Ok(Json(body))
}

fn closed(attempt: &StoredAttempt) -> ApiError {
    let why = match (&attempt.submitted_by, &attempt.closes_at) {
        (Some(by), _) if by == BY_DEADLINE => "it was submitted at its deadline".to_string(),
        (Some(_), _) => "it was submitted".to_string(),
        (None, Some(closes)) => format!("its time ran out at {closes}"),
        (None, None) => "it is closed".to_string(),
    };
    conflict(
        "attempt_closed",
        format!("attempt {:?} takes no more answers: {why}", attempt.id),
    )
}

/// `GET /api/attempts/{id}`: the attempt as saved, to its student on any device (and to
/// staff).
pub async fn get_attempt(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let mut attempt = visible_attempt(&app, &identity, &id).await?;
    if attempt.status == "open" && is_past_closing(&attempt, Utc::now()) {
        submit(&app, attempt, BY_DEADLINE).await?;
        attempt = visible_attempt(&app, &identity, &id).await?;
    } else if attempt.status == "submitted" {
        repair_result(&app, &attempt).await?;
    }
    let bank = app.banks.get(&attempt.exam).cloned();
    Ok(Json(
        attempt_json(&app, &identity, &attempt, bank.as_deref()).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    exam: Option<String>,
    /// Staff only: another student's attempts.
    email: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/attempts?exam=NAME`: the student's attempts, newest first (staff: `&email=`).
pub async fn list_attempts(
    State(app): State<AppState>,
    identity: Identity,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let email = match q.email {
        Some(email) if email != identity.email => {
            identity.require_staff()?;
            email
        }
        _ => identity.email.clone(),
    };
    let attempts = app
        .attempts
        .list_attempts(&email, q.exam, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    let mut out = Vec::with_capacity(attempts.len());
    for attempt in &attempts {
        out.push(attempt_json(&app, &identity, attempt, None).await?);
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /api/attempts/{id}/submit`: scores the saved answers (unanswered count as wrong)
/// and stores the result like a submission; 201 with the result as `review` allows. An
/// attempt submitted already (by a second click, another device or the deadline) answers
/// 200 with that result.
pub async fn submit_attempt(
    State(app): State<AppState>,
    identity: Identity,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let attempt = visible_attempt(&app, &identity, &id).await?;
    if attempt.email != identity.email {
        return Err(ApiError::Forbidden(
            "only the student taking an attempt can submit it".into(),
        ));
    }
    app.limits
        .take(&app.config.limits, &identity, Limited::Submission)?;
    let by = if attempt.status == "open" && is_past_closing(&attempt, Utc::now()) {
        BY_DEADLINE
    } else {
        BY_STUDENT
    };
    let (doc, submitted_now) = submit(&app, attempt, by).await?;
    let status = if submitted_now {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/results/{}", doc.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(result_for(&app, &identity, &doc)),
    )
        .into_response())
}

/// Most tries of a submit that keeps losing to concurrent saves.
const SUBMIT_TRIES: usize = 8;

/// Submits `attempt` with its saved answers; returns the stored result and whether this
/// call submitted it (false: it was submitted already). Only over the version read: an
/// answer saved meanwhile makes it read and score again.
async fn submit(
    app: &AppState,
    mut attempt: StoredAttempt,
    by: &str,
) -> Result<(ResultDocument, bool), ApiError> {
    for _ in 0..SUBMIT_TRIES {
        if attempt.status != "open" {
            return Ok((repair_result(app, &attempt).await?, false));
        }
        let (doc, submitted) = scored(app, &attempt, by, Utc::now())?;
        if app
            .attempts
            .finish_attempt_if(submitted, attempt.version, &doc)
            .await?
        {
            app.metrics
                .submissions
                .with_label_values(&[doc.exam.as_str(), doc.result.as_str()])
                .inc();
            return Ok((doc, true));
        }
        attempt = app
            .attempts
            .get_attempt(&attempt.id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("attempt {:?}", attempt.id)))?;
    }
    Err(conflict(
        "answered_concurrently",
        "answers kept arriving while this attempt was being submitted; submit again",
    ))
}

/// The result of `attempt`'s saved answers, submitted by `by` at `now`, and the attempt as
/// submitted.
fn scored(
    app: &AppState,
    attempt: &StoredAttempt,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(ResultDocument, StoredAttempt), ApiError> {
    let bank = bank_of(app, &attempt.exam)?;
    let answers: Vec<Option<AnswerChoice>> = attempt
        .answers
        .iter()
        .map(|a| a.clone().map(AnswerChoice::Text))
        .collect();
    let scored = score_answers(&bank, &answers)?;
    let mut doc = ResultDocument::new(&attempt.email, scored, now);
    doc.id = attempt.result_id.clone();
    doc.attempt_id = Some(attempt.id.clone());
    doc.submitted_by = Some(by.into());
    let mut submitted = attempt.clone();
    submitted.status = "submitted".into();
    submitted.submitted_at = Some(doc.submitted_at.clone());
    submitted.submitted_by = doc.submitted_by.clone();
    submitted.updated_at = format_timestamp(now);
    Ok((doc, submitted))
}

/// The result of a submitted attempt; stored again from its frozen answers when it is
/// missing (MongoDB: a crash between the submit and the result's insert).
async fn repair_result(
    app: &AppState,
    attempt: &StoredAttempt,
) -> Result<ResultDocument, ApiError> {
    if let Some(doc) = app.store.get_result(&attempt.result_id).await? {
        return Ok(doc);
    }
    let by = attempt.submitted_by.as_deref().unwrap_or(BY_STUDENT);
    let at = attempt
        .submitted_at
        .as_deref()
        .and_then(parse_instant)
        .unwrap_or_else(Utc::now);
    let (doc, _) = scored(app, attempt, by, at)?;
    tracing::warn!(attempt = %attempt.id, "a submitted attempt had no result; stored it again");
    app.store.insert_result(&doc).await?;
    Ok(doc)
}

/// Submits every open attempt past deadline + grace, and finishes every timed adaptive
/// session past it, every second from the start (so attempts that ran out while the
/// server was down are submitted when it comes back).
pub async fn run_deadlines(app: AppState) {
    let mut ticker = tokio::time::interval(DEADLINE_SWEEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        crate::adaptive::finish_due_sessions(&app).await;
        let now = format_timestamp(Utc::now());
        let due = match app.attempts.due_attempts(&now, 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading attempts past their deadline failed; retrying");
                continue;
            }
        };
        for attempt in due {
            let id = attempt.id.clone();
            match submit(&app, attempt, BY_DEADLINE).await {
                Ok((doc, true)) => {
                    tracing::info!(attempt = %id, result = %doc.id, "submitted at the deadline")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(attempt = %id, error = %e, "submitting at the deadline failed")
                }
            }
        }
    }
}
