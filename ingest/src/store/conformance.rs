//! The contract of [`SessionStore`], checked the same way against every implementation:
//! SQLite in its unit tests, MongoDB in `tests/mongo_store.rs`. Public (but hidden) only so
//! that integration tests can reach it; both checks expect a store without sessions or
//! calibrations.

use std::sync::Arc;

use super::{
    AttemptStore, ResultStore, SessionField, SessionStore, StoredAttempt, StoredCalibration,
    StoredSession,
};
use crate::document::ResultDocument;

pub(crate) fn session(id: &str, exam: &str, created_at: &str) -> StoredSession {
    StoredSession {
        id: id.into(),
        exam: exam.into(),
        email: format!("{id}@example.com"),
        calibration_version: 1,
        status: "active".into(),
        answered: 0,
        result_id: None,
        created_at: created_at.into(),
        updated_at: created_at.into(),
        // Quotes, non-ASCII and nesting: the state is opaque text and must come back as is.
        state: format!(r#"{{"cat":{{"grid":[0.1,-2.5e-3]}},"note":"θ \"{id}\" ✓"}}"#),
        closes_at: None,
    }
}

/// A scan in chunks sees every session once, with only the fields asked for.
async fn check_scan(store: &dyn SessionStore, all: &[StoredSession]) {
    let everything = SessionField::ALL;
    let mut seen: Vec<StoredSession> = Vec::new();
    let mut after = None;
    let mut chunks = 0;
    loop {
        let chunk = store
            .scan_sessions(after.clone(), 3, &everything)
            .await
            .unwrap();
        assert!(chunk.sessions.len() <= 3);
        chunks += 1;
        seen.extend(chunk.sessions);
        match chunk.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(chunks < 10, "the scan ends");
    }
    assert_eq!(chunks, 2, "4 sessions in chunks of 3");
    seen.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = all.to_vec();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(seen, expected, "every field of every session, once");

    // Exactly a chunk's worth: one more (empty) chunk ends it.
    let first = store.scan_sessions(None, 4, &[]).await.unwrap();
    assert_eq!(first.sessions.len(), 4);
    let rest = store
        .scan_sessions(first.next.clone(), 4, &[])
        .await
        .unwrap();
    assert_eq!(rest, Default::default());
    assert!(
        store
            .scan_sessions(None, 0, &[])
            .await
            .unwrap()
            .sessions
            .is_empty()
    );

    // Only the fields asked for; the rest empty.
    let chunk = store
        .scan_sessions(None, 10, &[SessionField::Status, SessionField::ResultId])
        .await
        .unwrap();
    assert_eq!(chunk.next, None);
    assert_eq!(chunk.sessions.len(), 4);
    for s in &chunk.sessions {
        let full = expected.iter().find(|e| e.id == s.id).unwrap();
        let want = StoredSession {
            id: full.id.clone(),
            status: full.status.clone(),
            result_id: full.result_id.clone(),
            ..StoredSession::default()
        };
        assert_eq!(s, &want);
    }
}

fn calibration(exam: &str, source: &str, responses: i64) -> StoredCalibration {
    StoredCalibration {
        exam: exam.into(),
        // Ignored by `add_calibration`.
        version: 99,
        created_at: "2024-05-01T10:00:00.000Z".into(),
        source: source.into(),
        responses,
        params: format!(r#"[{{"item":"{exam}-1","a":1.2,"b":-0.4,"c":0.25}}]"#),
        summary: format!(r#"{{"results":{responses}}}"#),
        activation: Some(0),
    }
}

fn ids(sessions: &[StoredSession]) -> Vec<&str> {
    sessions.iter().map(|s| s.id.as_str()).collect()
}

fn versions(calibrations: &[StoredCalibration]) -> Vec<(&str, i64)> {
    calibrations
        .iter()
        .map(|c| (c.exam.as_str(), c.version))
        .collect()
}

/// Sessions: put, get, replace, list order, exam filter and limit. Calibrations: version
/// numbers per exam, latest and specific versions, list order, missing ones.
pub async fn check_session_store(store: &dyn SessionStore) {
    // Sessions.
    assert_eq!(store.get_session("s1").await.unwrap(), None);
    assert!(store.list_sessions(None, 10).await.unwrap().is_empty());
    let s1 = session("s1", "geo", "2024-05-01T10:00:01.000Z");
    let s2 = session("s2", "math", "2024-05-01T10:00:02.000Z");
    let s3 = session("s3", "geo", "2024-05-01T10:00:03.000Z");
    // Same creation time as s3: the id decides, descending.
    let s4 = session("s4", "geo", "2024-05-01T10:00:03.000Z");
    for s in [&s1, &s2, &s3, &s4] {
        store.put_session(s.clone()).await.unwrap();
    }
    assert_eq!(store.get_session("s2").await.unwrap(), Some(s2.clone()));
    assert_eq!(store.get_session("nope").await.unwrap(), None);

    let mut finished = s1.clone();
    finished.status = "finished".into();
    finished.answered = 3;
    finished.result_id = Some("665f1c0e8b3e4a0012345678".into());
    finished.updated_at = "2024-05-01T10:05:00.000Z".into();
    finished.state = r#"{"outcome":{"theta":0.5}}"#.into();
    // A conditional replace from a stale state (3 answers expected, 0 stored) changes
    // nothing; from the stored one it replaces; a missing session is not created.
    assert!(!store.replace_session_if(finished.clone(), 3).await.unwrap());
    assert_eq!(store.get_session("s1").await.unwrap(), Some(s1.clone()));
    assert!(store.replace_session_if(finished.clone(), 0).await.unwrap());
    assert_eq!(
        store.get_session("s1").await.unwrap(),
        Some(finished.clone())
    );
    assert!(
        !store.replace_session_if(finished.clone(), 0).await.unwrap(),
        "the second of two writers from the same state loses"
    );
    let mut ghost = s2.clone();
    ghost.id = "ghost".into();
    assert!(!store.replace_session_if(ghost, 0).await.unwrap());
    assert_eq!(store.get_session("ghost").await.unwrap(), None);
    store.put_session(finished.clone()).await.unwrap();
    assert_eq!(store.get_session("s1").await.unwrap(), Some(finished));

    let all = store.list_sessions(None, 10).await.unwrap();
    assert_eq!(ids(&all), ["s4", "s3", "s2", "s1"], "replacing adds no row");
    assert_eq!(all[1], s3);
    let geo = store.list_sessions(Some("geo".into()), 10).await.unwrap();
    assert_eq!(ids(&geo), ["s4", "s3", "s1"]);
    let newest = store.list_sessions(Some("geo".into()), 2).await.unwrap();
    assert_eq!(ids(&newest), ["s4", "s3"]);
    assert_eq!(ids(&store.list_sessions(None, 1).await.unwrap()), ["s4"]);
    assert!(
        store
            .list_sessions(Some("history".into()), 10)
            .await
            .unwrap()
            .is_empty()
    );
    check_scan(store, &all).await;

    // Calibrations.
    assert_eq!(store.get_calibration("geo", None).await.unwrap(), None);
    assert!(store.list_calibrations(None).await.unwrap().is_empty());
    let geo1 = calibration("geo", "provisional", 0);
    let geo2 = calibration("geo", "calibration", 250);
    let math1 = calibration("math", "imported", 10);
    assert_eq!(store.add_calibration(geo1.clone()).await.unwrap(), 1);
    assert_eq!(store.add_calibration(geo2.clone()).await.unwrap(), 2);
    assert_eq!(store.add_calibration(math1.clone()).await.unwrap(), 1);
    // Each was activated when added, in version order.
    let stored = |mut c: StoredCalibration, version: i64| {
        c.version = version;
        c.activation = Some(version);
        Some(c)
    };
    assert_eq!(
        store.get_calibration("geo", None).await.unwrap(),
        stored(geo2, 2)
    );
    assert_eq!(
        store.get_calibration("geo", Some(1)).await.unwrap(),
        stored(geo1, 1)
    );
    assert_eq!(
        store.get_calibration("math", None).await.unwrap(),
        stored(math1, 1)
    );
    assert_eq!(store.get_calibration("geo", Some(3)).await.unwrap(), None);
    assert_eq!(store.get_calibration("history", None).await.unwrap(), None);
    assert_eq!(
        versions(&store.list_calibrations(None).await.unwrap()),
        [("geo", 2), ("geo", 1), ("math", 1)]
    );
    assert_eq!(
        versions(&store.list_calibrations(Some("geo".into())).await.unwrap()),
        [("geo", 2), ("geo", 1)]
    );
    assert!(
        store
            .list_calibrations(Some("history".into()))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `add_calibration_after` adds only on top of the version it names, once.
pub async fn check_calibration_after(store: &dyn SessionStore) {
    let c = |responses| calibration("after", "calibration", responses);
    assert_eq!(store.add_calibration_after(c(1), 0).await.unwrap(), Some(1));
    assert_eq!(store.add_calibration_after(c(2), 0).await.unwrap(), None);
    assert_eq!(store.add_calibration_after(c(3), 1).await.unwrap(), Some(2));
    assert_eq!(store.add_calibration_after(c(4), 1).await.unwrap(), None);
    assert_eq!(store.add_calibration(c(5)).await.unwrap(), 3);
    assert_eq!(store.add_calibration_after(c(6), 2).await.unwrap(), None);
    let listed = store.list_calibrations(Some("after".into())).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.version, c.responses))
            .collect::<Vec<_>>(),
        [(3, 5), (2, 3), (1, 1)]
    );
}

/// Candidates are stored without becoming active; activation makes any version (a
/// candidate, or an older one to roll back to) the active one until another is activated.
pub async fn check_activation(store: &dyn SessionStore) {
    let exam = "activation";
    let active = |version| async move {
        store
            .get_active_calibration(exam)
            .await
            .unwrap()
            .map(|c| c.version)
            == version
    };
    let candidate = StoredCalibration {
        activation: None,
        ..calibration(exam, "calibration", 1)
    };
    assert_eq!(store.activate_calibration(exam, 1).await.unwrap(), None);
    assert_eq!(store.add_calibration(candidate.clone()).await.unwrap(), 1);
    assert!(active(None).await, "a candidate alone is not active");
    assert_eq!(
        store
            .add_calibration(calibration(exam, "calibration", 2))
            .await
            .unwrap(),
        2
    );
    assert!(active(Some(2)).await);
    assert_eq!(store.add_calibration(candidate.clone()).await.unwrap(), 3);
    assert!(
        active(Some(2)).await,
        "a newer candidate leaves the active version"
    );
    let got = store.get_calibration(exam, Some(3)).await.unwrap().unwrap();
    assert_eq!(got.activation, None);
    // Activating the candidate, then rolling back to version 1 (never active before).
    let third = store.activate_calibration(exam, 3).await.unwrap().unwrap();
    assert!(active(Some(3)).await);
    assert_eq!(
        store.activate_calibration(exam, 3).await.unwrap(),
        Some(third),
        "idempotent"
    );
    let first = store.activate_calibration(exam, 1).await.unwrap().unwrap();
    assert!(first > third);
    assert!(active(Some(1)).await);
    // A new active version is numbered above the rollback.
    assert_eq!(
        store
            .add_calibration(calibration(exam, "calibration", 4))
            .await
            .unwrap(),
        4
    );
    assert!(active(Some(4)).await);
    assert_eq!(store.activate_calibration(exam, 9).await.unwrap(), None);
    assert!(active(Some(4)).await);
    assert_eq!(
        store.get_active_calibration("no-such-exam").await.unwrap(),
        None
    );
}

/// The roster: imports add and update students, keep groups of columns an import does not
/// name, remove a group given as absent, and `replace` starts over.
pub async fn check_roster(store: &dyn SessionStore) {
    use super::RosterEntry;
    let entry = |email: &str, groups: &[(&str, &str)]| RosterEntry {
        email: email.into(),
        groups: groups
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    assert!(store.roster().await.unwrap().is_empty());
    assert!(store.roster_columns().await.unwrap().is_empty());
    let columns = vec!["campus".to_string(), "language".to_string()];
    let first = vec![
        entry(
            "ann@example.com",
            &[("campus", "north"), ("language", "en")],
        ),
        entry("bob@example.com", &[("campus", "south")]),
    ];
    let done = store.import_roster(columns, first, false).await.unwrap();
    assert_eq!((done.added, done.updated, done.students), (2, 0, 2));
    // A second file with another column: Ann moves campus, keeps her language; Cy is new.
    let columns = vec!["cohort".to_string(), "campus".to_string()];
    let second = vec![
        entry(
            "ann@example.com",
            &[("campus", "south"), ("cohort", "2026")],
        ),
        entry("cy@example.com", &[("cohort", "2025")]),
    ];
    let done = store.import_roster(columns, second, false).await.unwrap();
    assert_eq!((done.added, done.updated, done.students), (1, 1, 3));
    assert_eq!(
        store.roster_columns().await.unwrap(),
        ["campus", "language", "cohort"]
    );
    let roster = store.roster().await.unwrap();
    assert_eq!(
        roster,
        [
            entry(
                "ann@example.com",
                &[("campus", "south"), ("cohort", "2026"), ("language", "en")]
            ),
            entry("bob@example.com", &[("campus", "south")]),
            entry("cy@example.com", &[("cohort", "2025")]),
        ]
    );
    let done = store
        .import_roster(
            vec!["campus".into()],
            vec![entry("dee@example.com", &[("campus", "east")])],
            true,
        )
        .await
        .unwrap();
    assert_eq!((done.added, done.students), (1, 1));
    assert_eq!(store.roster_columns().await.unwrap(), ["campus"]);
    assert_eq!(
        store.roster().await.unwrap(),
        [entry("dee@example.com", &[("campus", "east")])]
    );
}

/// Ten calibrations of one exam added at once, spread over `stores` (several stores on
/// one database stand for several servers), get versions 1 to 10, each once.
pub async fn check_concurrent_calibrations(stores: &[Arc<dyn SessionStore>]) {
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let store = stores[n % stores.len()].clone();
            tokio::spawn(async move {
                store
                    .add_calibration(calibration("concurrent", "calibration", n as i64))
                    .await
            })
        })
        .collect();
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (1..=10).collect::<Vec<i64>>());
    let listed = stores[0]
        .list_calibrations(Some("concurrent".into()))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|c| c.version).collect::<Vec<_>>(),
        (1..=10).rev().collect::<Vec<i64>>()
    );
    // Each version holds the calibration that was given that number.
    let mut responses: Vec<i64> = listed.iter().map(|c| c.responses).collect();
    responses.sort_unstable();
    assert_eq!(responses, (0..10).collect::<Vec<i64>>());
}

fn result_of(session: &str, score: u32) -> ResultDocument {
    ResultDocument::new(
        &format!("{session}@example.com"),
        examflow_engine::ScoredSubmission {
            exam: "geo".into(),
            score,
            total: 10,
            percentage: score * 10,
            result: examflow_engine::Outcome::Passed,
            details: vec![],
        },
        chrono::Utc::now(),
    )
}

/// Finishing a session: only over the state it was computed from; the result stored with
/// it; a result already stored under the id (a retry after a crash) kept as it is.
pub async fn check_finish<S: ResultStore + SessionStore>(store: &S) {
    let active = session("f1", "geo", "2024-05-02T10:00:00.000Z");
    store.put_session(active.clone()).await.unwrap();
    let result = result_of("f1", 7);
    let mut finished = active.clone();
    finished.status = "finished".into();
    finished.answered = 3;
    finished.result_id = Some(result.id.clone());
    finished.state = r#"{"outcome":{"theta":1.5}}"#.into();

    assert!(
        !store
            .finish_session_if(finished.clone(), 2, &result)
            .await
            .unwrap(),
        "a stale state does not finish the session"
    );
    assert_eq!(store.get_session("f1").await.unwrap(), Some(active.clone()));
    assert!(
        store
            .finish_session_if(finished.clone(), 0, &result)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_session("f1").await.unwrap(),
        Some(finished.clone())
    );
    assert_eq!(
        store.get_result(&result.id).await.unwrap(),
        Some(result.clone())
    );
    assert!(
        !store
            .finish_session_if(finished.clone(), 0, &result)
            .await
            .unwrap(),
        "finishing twice from the same state: the second loses"
    );

    // The result was stored before a crash, the session's final state not: finishing again
    // keeps the stored result (no second one under the id).
    let again = session("f2", "geo", "2024-05-02T10:00:01.000Z");
    store.put_session(again.clone()).await.unwrap();
    let first = result_of("f2", 4);
    store.insert_result(&first).await.unwrap();
    let mut retried = result_of("f2", 9);
    retried.id = first.id.clone();
    let mut done = again.clone();
    done.status = "finished".into();
    done.answered = 1;
    done.result_id = Some(first.id.clone());
    assert!(
        store
            .finish_session_if(done.clone(), 0, &retried)
            .await
            .unwrap()
    );
    assert_eq!(store.get_session("f2").await.unwrap(), Some(done));
    assert_eq!(store.get_result(&first.id).await.unwrap(), Some(first));
}

fn attempt(id: &str, email: &str, exam: &str, closes_at: Option<&str>) -> StoredAttempt {
    StoredAttempt {
        id: id.into(),
        exam: exam.into(),
        email: email.into(),
        status: "open".into(),
        started_at: format!("2024-05-03T10:00:0{}.000Z", id.len() % 10),
        deadline: closes_at.map(|_| "2024-05-03T10:30:00.000Z".into()),
        closes_at: closes_at.map(str::to_string),
        answers: vec![None; 3],
        flags: vec![false; 3],
        version: 0,
        updated_at: "2024-05-03T10:00:00.000Z".into(),
        result_id: crate::document::new_document_id(),
        submitted_at: None,
        submitted_by: None,
    }
}

/// Fixed-form attempts: one open attempt per student and exam; answers and flags saved
/// one at a time (clearing too), only while open and only for existing questions; the
/// submit only from the version read, with its result; due attempts by `closes_at`; the
/// attempts a student has used (results, open attempts, active adaptive sessions).
pub async fn check_attempt_store<S: AttemptStore + ResultStore + SessionStore>(store: &S) {
    let a1 = attempt(
        "a1",
        "ann@example.com",
        "geo",
        Some("2024-05-03T10:30:30.000Z"),
    );
    let (got, created) = store.open_attempt(a1.clone()).await.unwrap();
    assert!(created);
    assert_eq!(got, a1);
    // A second start of the same exam returns the open attempt.
    let (got, created) = store
        .open_attempt(attempt("a2", "ann@example.com", "geo", None))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(got.id, "a1");
    assert_eq!(store.get_attempt("a2").await.unwrap(), None);
    // Another exam or another student: a new attempt.
    let b1 = attempt("b1", "ann@example.com", "math", None);
    assert!(store.open_attempt(b1.clone()).await.unwrap().1);
    let c1 = attempt(
        "c1",
        "bob@example.com",
        "geo",
        Some("2024-05-03T11:00:00.000Z"),
    );
    assert!(store.open_attempt(c1.clone()).await.unwrap().1);

    // Answers and flags, one question at a time.
    let at = "2024-05-03T10:01:00.000Z";
    assert!(
        store
            .save_attempt_answer("a1", 0, Some(Some("Paris ✓ \"x\"".into())), None, at)
            .await
            .unwrap()
    );
    assert!(
        store
            .save_attempt_answer("a1", 2, None, Some(true), at)
            .await
            .unwrap()
    );
    assert!(
        store
            .save_attempt_answer("a1", 1, Some(Some("B".into())), Some(false), at)
            .await
            .unwrap()
    );
    assert!(
        store
            .save_attempt_answer("a1", 1, Some(None), None, at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save_attempt_answer("a1", 3, Some(Some("C".into())), None, at)
            .await
            .unwrap(),
        "no such question"
    );
    assert!(
        !store
            .save_attempt_answer("nope", 0, Some(Some("C".into())), None, at)
            .await
            .unwrap()
    );
    let saved = store.get_attempt("a1").await.unwrap().unwrap();
    assert_eq!(
        saved.answers,
        [Some("Paris ✓ \"x\"".to_string()), None, None]
    );
    assert_eq!(saved.flags, [false, false, true]);
    assert_eq!(saved.version, 4);
    assert_eq!(saved.updated_at, at);

    // Due attempts: open, with closes_at at or before now.
    let due = store
        .due_attempts("2024-05-03T10:45:00.000Z", 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a1"]
    );
    let due = store
        .due_attempts("2024-05-03T11:00:00.000Z", 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a1", "c1"]
    );
    assert_eq!(
        store
            .due_attempts("2024-05-03T11:00:00.000Z", 1)
            .await
            .unwrap()
            .len(),
        1
    );

    // Used attempts: one open attempt so far, plus an active adaptive session.
    assert_eq!(
        store.attempts_used("ann@example.com", "geo").await.unwrap(),
        1
    );
    let mut s = session("as1", "geo", "2024-05-03T09:00:00.000Z");
    s.email = "ann@example.com".into();
    store.put_session(s).await.unwrap();
    assert_eq!(
        store.attempts_used("ann@example.com", "geo").await.unwrap(),
        2
    );

    // The submit: a stale version changes nothing; the current one stores the result.
    let mut result = result_of("ann", 1);
    result.id = saved.result_id.clone();
    result.email = "ann@example.com".into();
    let mut submitted = saved.clone();
    submitted.status = "submitted".into();
    submitted.submitted_at = Some("2024-05-03T10:20:00.000Z".into());
    submitted.submitted_by = Some("student".into());
    submitted.updated_at = "2024-05-03T10:20:00.000Z".into();
    assert!(
        !store
            .finish_attempt_if(submitted.clone(), 3, &result)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_result(&result.id).await.unwrap(),
        None,
        "a lost submit stores no result"
    );
    assert!(
        store
            .finish_attempt_if(submitted.clone(), 4, &result)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_attempt_if(submitted.clone(), 5, &result)
            .await
            .unwrap(),
        "submitted once"
    );
    let stored = store.get_attempt("a1").await.unwrap().unwrap();
    assert_eq!(stored.status, "submitted");
    assert_eq!(stored.submitted_by.as_deref(), Some("student"));
    assert_eq!(stored.version, 5);
    assert_eq!(stored.answers, saved.answers);
    assert_eq!(store.get_result(&result.id).await.unwrap(), Some(result));
    // A submitted attempt takes no answers and is no longer due; the result counts.
    assert!(
        !store
            .save_attempt_answer("a1", 0, Some(Some("X".into())), None, at)
            .await
            .unwrap()
    );
    let due = store
        .due_attempts("2024-05-03T11:00:00.000Z", 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["c1"]
    );
    assert_eq!(
        store.attempts_used("ann@example.com", "geo").await.unwrap(),
        2
    );
    // Now a new attempt of the same exam can start.
    let a3 = attempt("a3", "ann@example.com", "geo", None);
    assert!(store.open_attempt(a3).await.unwrap().1);
    assert_eq!(
        store.attempts_used("ann@example.com", "geo").await.unwrap(),
        3
    );

    let listed = store
        .list_attempts("ann@example.com", None, 10)
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a1", "a3", "b1"]);
    let geo = store
        .list_attempts("ann@example.com", Some("geo".into()), 10)
        .await
        .unwrap();
    assert_eq!(geo.len(), 2);
    assert!(
        store
            .list_attempts("nobody@example.com", None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Timed adaptive sessions past closes_at are due until they are finished.
    let mut timed = session("ts1", "geo", "2024-05-03T09:00:00.000Z");
    timed.closes_at = Some("2024-05-03T09:30:00.000Z".into());
    store.put_session(timed.clone()).await.unwrap();
    assert!(
        store
            .due_sessions("2024-05-03T09:29:59.000Z", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = store
        .due_sessions("2024-05-03T09:30:00.000Z", 10)
        .await
        .unwrap();
    assert_eq!(due, [timed.clone()], "the untimed sessions are never due");
    let mut ended = timed.clone();
    ended.status = "finished".into();
    ended.answered = 1;
    assert!(store.replace_session_if(ended, 0).await.unwrap());
    assert!(
        store
            .due_sessions("2024-05-03T11:00:00.000Z", 10)
            .await
            .unwrap()
            .is_empty()
    );
}
