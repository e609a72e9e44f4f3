//! Exam policies at the door and at the result: the window (`open_at`/`close_at`), the
//! number of attempts, deadlines, and what a student sees of the keys (`review`).
//!
//! Starting anything that counts as an attempt (a fixed-form attempt, an adaptive session,
//! a one-shot submission) goes through [`Gate::admit`], which holds a lock per student and
//! exam while the caller counts and stores, so two starts at the same instant cannot both
//! take the last attempt (exact for one server; with several servers on one MongoDB the
//! count and the insert are separate operations, see README).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use examflow_ingest::ResultDocument;
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::config::{ExamPolicy, ReviewPolicy};
use crate::error::ApiError;
use crate::server::AppState;

/// One lock per (student, exam).
type Locks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// Locks per (student, exam), dropped when nobody holds them.
#[derive(Default)]
pub struct Gate {
    locks: Mutex<Locks>,
}

/// Held while a start is counted and stored (no lock when attempts are unlimited: then
/// nothing is counted, and one student's concurrent submissions still group-commit).
pub struct Admission {
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Gate {
    /// Waits for the student's lock on `exam`, then checks the window and the attempts
    /// left. The caller stores its attempt before dropping the admission.
    pub async fn admit(
        &self,
        app: &AppState,
        identity: &Identity,
        exam: &str,
        policy: &ExamPolicy,
    ) -> Result<Admission, ApiError> {
        let guard = match policy.max_attempts {
            Some(_) => Some(self.lock(&identity.email, exam).await),
            None => None,
        };
        check_start(app, identity, exam, policy).await?;
        Ok(Admission { _guard: guard })
    }

    /// The lock of one student and exam (without any check): for resuming an open attempt.
    pub async fn lock(&self, email: &str, exam: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let slot = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > 10_000 {
                locks.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            locks
                .entry((email.to_string(), exam.to_string()))
                .or_default()
                .clone()
        };
        slot.lock_owned().await
    }
}

/// The window and the attempts left, for a caller holding the student's [`Gate::lock`].
pub async fn check_start(
    app: &AppState,
    identity: &Identity,
    exam: &str,
    policy: &ExamPolicy,
) -> Result<(), ApiError> {
    check_window(policy, Utc::now())?;
    if let Some(max) = policy.max_attempts {
        let used = app.attempts.attempts_used(&identity.email, exam).await?;
        if used >= i64::from(max) {
            return Err(conflict(
                "attempts_exhausted",
                format!(
                    "you have used {used} of {max} attempt{} at exam {exam:?}",
                    if max == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    Ok(())
}

pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Conflict {
        code,
        message: message.into(),
    }
}

/// Refuses a start outside the exam's window.
pub fn check_window(policy: &ExamPolicy, now: DateTime<Utc>) -> Result<(), ApiError> {
    if let Some(open) = policy.open_at
        && now < open
    {
        return Err(conflict(
            "exam_not_open",
            format!("this exam opens at {}", open.to_rfc3339()),
        ));
    }
    if let Some(close) = policy.close_at
        && now >= close
    {
        return Err(conflict(
            "exam_closed",
            format!("this exam closed at {}", close.to_rfc3339()),
        ));
    }
    Ok(())
}

/// When an attempt started at `started` must end: its time limit, or the exam's close,
/// whichever is first (none for an untimed exam without a close).
pub fn deadline_of(policy: &ExamPolicy, started: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let limit = policy.time_limit_secs.map(|secs| {
        started + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
    });
    match (limit, policy.close_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The deadline plus the exam's grace: answers saved until then count.
pub fn closes_at(policy: &ExamPolicy, deadline: DateTime<Utc>) -> DateTime<Utc> {
    deadline + chrono::Duration::seconds(i64::try_from(policy.grace_secs).unwrap_or(0))
}

/// An RFC 3339 instant as stored (deadlines, closes_at, submitted_at).
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the stored instant `at` has passed at `now` (never, without one).
pub fn has_passed(at: Option<&str>, now: DateTime<Utc>) -> bool {
    at.and_then(parse_instant).is_some_and(|t| now > t)
}

/// Whole seconds from `now` to a stored `deadline` (0 once it passed; none when untimed).
pub fn seconds_until(deadline: Option<&str>, now: DateTime<Utc>) -> Option<i64> {
    deadline
        .and_then(parse_instant)
        .map(|d| (d - now).num_seconds().max(0))
}

fn review_name(review: ReviewPolicy) -> &'static str {
    match review {
        ReviewPolicy::Immediately => "immediately",
        ReviewPolicy::AfterClose => "after_close",
        ReviewPolicy::Never => "never",
    }
}

/// What the review policy says about a result, for students.
pub fn review_json(policy: &ExamPolicy, now: DateTime<Utc>) -> Value {
    let shown = policy.shows_keys(now);
    let available_at = match policy.review {
        ReviewPolicy::AfterClose if !shown => policy.close_at.map(|c| c.to_rfc3339()),
        _ => None,
    };
    json!({
        "policy": review_name(policy.review),
        "details_shown": shown,
        "details_available_at": available_at,
    })
}

/// A result as its student may see it: the stored document, without `details` (questions,
/// answers, correctness, keys) while the exam's review policy hides them, plus `review`
/// (left out under `immediately`, so the original behaviour keeps the stored document's
/// shape). Staff views use the stored document as it is.
pub fn student_result(doc: &ResultDocument, policy: &ExamPolicy, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    if policy.review == ReviewPolicy::Immediately {
        return v;
    }
    if !policy.shows_keys(now)
        && let Some(map) = v.as_object_mut()
    {
        map.remove("details");
    }
    v["review"] = review_json(policy, now);
    v
}

/// A result for `identity`: the student view for students, the stored document for staff
/// (with the student's pseudonym instead of the email for analysts).
pub fn result_for(app: &AppState, identity: &Identity, doc: &ResultDocument) -> Value {
    if identity.role.sees_all_results() {
        let mut v = serde_json::to_value(doc).unwrap_or_default();
        if app.pseudonyms.hides_emails(identity) {
            v["email"] = json!(app.pseudonyms.of(&doc.email));
        }
        v
    } else {
        student_result(doc, &app.config.exam_policy(&doc.exam), Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn windows_refuse_before_open_and_from_close() {
        let policy = ExamPolicy {
            open_at: Some(at("2026-12-01T09:00:00Z")),
            close_at: Some(at("2026-12-01T12:00:00Z")),
            ..Default::default()
        };
        let code = |t| match check_window(&policy, at(t)) {
            Err(ApiError::Conflict { code, .. }) => code,
            Err(e) => panic!("{e}"),
            Ok(()) => "ok",
        };
        assert_eq!(code("2026-12-01T08:59:59Z"), "exam_not_open");
        assert_eq!(code("2026-12-01T09:00:00Z"), "ok");
        assert_eq!(code("2026-12-01T11:59:59Z"), "ok");
        assert_eq!(code("2026-12-01T12:00:00Z"), "exam_closed");
    }

    #[test]
    fn the_deadline_is_the_time_limit_or_the_close_whichever_first() {
        let started = at("2026-12-01T11:00:00Z");
        let mut policy = ExamPolicy::default();
        assert_eq!(deadline_of(&policy, started), None);
        policy.time_limit_secs = Some(1800);
        assert_eq!(
            deadline_of(&policy, started),
            Some(at("2026-12-01T11:30:00Z"))
        );
        policy.close_at = Some(at("2026-12-01T11:10:00Z"));
        assert_eq!(
            deadline_of(&policy, started),
            Some(at("2026-12-01T11:10:00Z"))
        );
        policy.time_limit_secs = None;
        assert_eq!(
            deadline_of(&policy, started),
            Some(at("2026-12-01T11:10:00Z"))
        );
        assert_eq!(
            closes_at(&policy, at("2026-12-01T11:10:00Z")),
            at("2026-12-01T11:10:30Z")
        );
    }

    #[test]
    fn students_see_keys_only_as_the_review_policy_allows() {
        let doc = ResultDocument {
            id: "r".into(),
            email: "s@x.org".into(),
            exam: "geo".into(),
            score: 1,
            total: 1,
            percentage: 100,
            result: "passed".into(),
            details: vec![examflow_engine::QuestionMark {
                question: "Capital of France?".into(),
                user_answer: "Paris".into(),
                correct_answer: "Paris".into(),
                is_correct: true,
                item: "i1".into(),
            }],
            submitted_at: "2026-12-01T10:00:00.000Z".into(),
            adaptive: None,
            attempt_id: None,
            submitted_by: None,
        };
        let now = at("2026-12-01T10:00:00Z");
        let shown = student_result(&doc, &ExamPolicy::default(), now);
        assert_eq!(shown["details"][0]["correct_answer"], "Paris");
        assert_eq!(
            shown,
            serde_json::to_value(&doc).unwrap(),
            "the original shape"
        );
        let never = ExamPolicy {
            review: ReviewPolicy::Never,
            ..Default::default()
        };
        let hidden = student_result(&doc, &never, now);
        assert!(hidden.get("details").is_none());
        assert!(!hidden.to_string().contains("Paris"));
        assert_eq!(hidden["score"], 1);
        assert_eq!(hidden["percentage"], 100);
        let after = ExamPolicy {
            review: ReviewPolicy::AfterClose,
            close_at: Some(at("2026-12-01T12:00:00Z")),
            ..Default::default()
        };
        let before_close = student_result(&doc, &after, now);
        assert!(!before_close.to_string().contains("Paris"));
        assert_eq!(
            before_close["review"]["details_available_at"],
            "2026-12-01T12:00:00+00:00"
        );
        let after_close = student_result(&doc, &after, at("2026-12-01T12:00:00Z"));
        assert_eq!(after_close["details"][0]["is_correct"], true);
        assert_eq!(after_close["review"]["details_shown"], true);
    }
}
