//! The end of an adaptive session: its outcome (θ, SE, scale score, pass/fail with how it
//! was decided, plain words for the student), its result document, storing both with the
//! final state, and the deadline: sessions past deadline + grace finish with the estimate
//! they have (when next read or answered, and by the server's sweep every second).

use chrono::Utc;
use examflow_engine::cat::{Step, StopReason};
use examflow_engine::{Bank, QuestionMark};
use examflow_ingest::document::format_timestamp;
use examflow_ingest::store::StoredSession;
use examflow_ingest::{AdaptiveOutcome, ResultDocument};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Live, SessionState, answered_concurrently, locked, progress_json, state_text};
use crate::calibration::exam_of;
use crate::error::ApiError;
use crate::server::AppState;

/// The final outcome of a session, as answered to the student.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Outcome {
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

/// Whether the stored instant `at` has passed.
pub(super) fn past(at: &Option<String>, now: chrono::DateTime<Utc>) -> bool {
    crate::policy::has_passed(at.as_deref(), now)
}

pub(super) fn seconds_left(state: &SessionState, now: chrono::DateTime<Utc>) -> Option<i64> {
    crate::policy::seconds_until(state.deadline.as_deref(), now)
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
pub(super) async fn expire(app: &AppState, id: &str, live: &mut Live) -> Result<(), ApiError> {
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
pub(super) async fn finish_and_store(
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

pub(super) fn finished_json(id: &str, state: &SessionState, outcome: &Outcome) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }
}
