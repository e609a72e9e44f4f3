//! Exams you can trust, against the real server: server-side fixed-form attempts (saved
//! answers, resume on another device, submit, deadline submit with no client and across a
//! restart, kill -9 after a saved answer), and the exam policies (window, attempts, review,
//! timed exams, rate limits, 404 for other students' attempts).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, ServerOptions, eventually};
use serde_json::{Value, json};

/// Three questions; the right option is always "Alpha".
const QUESTIONS: usize = 3;

fn write_banks(dir: &Path, exams: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for exam in exams {
        let questions: Vec<Value> = (0..QUESTIONS)
            .map(|i| {
                json!({
                    "question": format!("{exam} question {i}: pick Alpha"),
                    "options": ["Alpha", "Beta", "Gamma"],
                    "correct_answer": "Alpha",
                })
            })
            .collect();
        std::fs::write(
            dir.join(format!("{exam}.json")),
            Value::Array(questions).to_string(),
        )
        .unwrap();
    }
}

const EXAMS: &[&str] = &[
    "quiz", "timed", "once", "hidden", "later", "future", "past", "slow",
];

fn config() -> String {
    "[exams.timed]\ntime_limit_secs = 2\ngrace_secs = 1\n\
     [exams.slow]\ntime_limit_secs = 4\ngrace_secs = 0\n\
     [exams.once]\nmax_attempts = 1\n\
     [exams.hidden]\nreview = \"never\"\n\
     [exams.later]\nreview = \"after_close\"\nclose_at = \"2099-01-01T00:00:00Z\"\n\
     [exams.future]\nopen_at = \"2099-01-01T00:00:00Z\"\n\
     [exams.past]\nclose_at = \"2001-01-01T00:00:00Z\"\n\
     [limits]\nstarts_per_minute = 30\n"
        .to_string()
}

fn start(dir: &Path, config: &str) -> Server {
    let banks = dir.join("banks");
    write_banks(&banks, EXAMS);
    let path = dir.join("examflow-test.toml");
    std::fs::write(&path, config).unwrap();
    let mut options = ServerOptions::new(&dir.join("data"));
    options.banks = banks;
    options.config_file = Some(path);
    Server::start(options)
}

async fn put(server: &Server, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let resp = server
        .client
        .put(server.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The first stored result of `exam` once there is one (the server stores it by itself).
async fn first_result(server: &Server, exam: &str, staff: &str) -> Option<Value> {
    eventually(Duration::from_secs(15), || async {
        let (_, results) = server
            .get(&format!("/api/results?exam={exam}"), Some(staff))
            .await;
        results.as_array().and_then(|r| r.first().cloned())
    })
    .await
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_attempt_is_saved_resumed_anywhere_and_submitted_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config());
    let ann = server.token("ann@example.com", "student");
    // A second device: another token for the same student.
    let ann_phone = server.token("ann@example.com", "student");
    let bob = server.token("bob@example.com", "student");

    let (status, attempt) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201, "{attempt}");
    let id = attempt["attempt_id"].as_str().unwrap().to_string();
    assert_eq!(attempt["deadline"], Value::Null);
    assert_eq!(attempt["questions"].as_array().unwrap().len(), QUESTIONS);
    assert_eq!(attempt["answers"], json!([null, null, null]));
    assert_eq!(attempt["flags"], json!([false, false, false]));
    assert!(
        !attempt.to_string().contains("correct_answer"),
        "no keys in an attempt: {attempt}"
    );
    // Starting again returns the open attempt.
    let (status, again) = server
        .post("/api/exams/quiz/attempts", Some(&ann_phone), &json!({}))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["attempt_id"], attempt["attempt_id"]);

    // Answers by text, by index, flags, and clearing.
    let answer = |i: usize| format!("/api/attempts/{id}/answers/{i}");
    let (status, saved) = put(&server, &answer(0), &ann, &json!({"answer": "Alpha"})).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["saved"], true);
    assert_eq!(saved["answer"], "Alpha");
    let (status, _) = put(
        &server,
        &answer(1),
        &ann_phone,
        &json!({"answer": 1, "flagged": true}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = put(&server, &answer(2), &ann, &json!({"answer": "Gamma"})).await;
    assert_eq!(status, 200);
    let (status, _) = put(&server, &answer(2), &ann, &json!({"answer": null})).await;
    assert_eq!(status, 200);
    // Bad answers: unknown option, no such question, empty body, another student.
    let (status, body) = put(&server, &answer(0), &ann, &json!({"answer": "Delta"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "unknown_option"),
        "{body}"
    );
    let (status, body) = put(&server, &answer(0), &ann, &json!({"answer": 7})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = put(&server, &answer(3), &ann, &json!({"answer": "Alpha"})).await;
    assert_eq!(status, 404);
    let (status, _) = put(&server, &answer(0), &ann, &json!({})).await;
    assert_eq!(status, 400);
    let (status, _) = put(
        &server,
        &answer(0),
        &ann,
        &json!({"answer": "Alpha", "extra": 1}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = put(&server, &answer(0), &bob, &json!({"answer": "Beta"})).await;
    assert_eq!(
        status, 404,
        "another student's attempt does not exist for them: {body}"
    );
    let (status, _) = server.get(&format!("/api/attempts/{id}"), Some(&bob)).await;
    assert_eq!(status, 404);

    // The other device sees exactly what was saved.
    let (status, seen) = server
        .get(&format!("/api/attempts/{id}"), Some(&ann_phone))
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["answers"], json!(["Alpha", "Beta", null]));
    assert_eq!(seen["flags"], json!([false, true, false]));
    assert_eq!(seen["answered"], 2);
    assert_eq!(seen["status"], "open");
    let (_, listed) = server.get("/api/attempts?exam=quiz", Some(&ann)).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (_, none) = server.get("/api/attempts?exam=quiz", Some(&bob)).await;
    assert_eq!(none, json!([]));

    // Submit: scored like a submission (unanswered is wrong), stored once.
    let (status, _) = server
        .post(
            &format!("/api/attempts/{id}/submit"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, result) = server
        .post(
            &format!("/api/attempts/{id}/submit"),
            Some(&ann),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{result}");
    assert_eq!(result["score"], 1);
    assert_eq!(result["total"], 3);
    assert_eq!(result["submitted_by"], "student");
    assert_eq!(result["details"][2]["user_answer"], "");
    assert_eq!(result["details"][2]["is_correct"], false);
    let (status, twice) = server
        .post(
            &format!("/api/attempts/{id}/submit"),
            Some(&ann_phone),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{twice}");
    assert_eq!(twice["_id"], result["_id"]);
    let (status, body) = put(&server, &answer(2), &ann, &json!({"answer": "Alpha"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "attempt_closed"),
        "{body}"
    );
    let (_, results) = server.get("/api/results?exam=quiz", Some(&ann)).await;
    assert_eq!(
        results.as_array().unwrap().len(),
        1,
        "one result: {results}"
    );
    let (_, done) = server.get(&format!("/api/attempts/{id}"), Some(&ann)).await;
    assert_eq!(done["status"], "submitted");
    assert_eq!(done["result"]["_id"], result["_id"]);
    // A new attempt can start once the last one is submitted.
    let (status, next) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201, "{next}");
    assert_ne!(next["attempt_id"], attempt["attempt_id"]);
}

#[tokio::test]
async fn a_timed_attempt_is_submitted_at_its_deadline_with_no_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config());
    let ann = server.token("ann@example.com", "student");
    // A timed exam takes no one-shot submission.
    let (status, body) = server
        .post(
            "/api/exams/timed/submissions",
            Some(&ann),
            &json!({"answers": ["Alpha", "Alpha", "Alpha"]}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "timed_exam_needs_attempt"),
        "{body}"
    );

    let (status, attempt) = server
        .post("/api/exams/timed/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201, "{attempt}");
    assert!(attempt["deadline"].is_string(), "{attempt}");
    assert!(attempt["seconds_left"].as_i64().unwrap() <= 2);
    let id = attempt["attempt_id"].as_str().unwrap().to_string();
    let (status, _) = put(
        &server,
        &format!("/api/attempts/{id}/answers/0"),
        &ann,
        &json!({"answer": "Alpha"}),
    )
    .await;
    assert_eq!(status, 200);

    // No client asks anything: the server submits by itself after deadline + grace.
    let educator = server.token("teacher@example.com", "educator");
    let result = first_result(&server, "timed", &educator)
        .await
        .expect("the attempt was submitted at its deadline");
    assert_eq!(result["submitted_by"], "deadline", "{result}");
    assert_eq!(result["attempt_id"], attempt["attempt_id"]);
    assert_eq!(result["score"], 1, "the saved answer counts: {result}");
    let (status, body) = put(
        &server,
        &format!("/api/attempts/{id}/answers/1"),
        &ann,
        &json!({"answer": "Alpha"}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "attempt_closed"),
        "{body}"
    );
    let (_, seen) = server.get(&format!("/api/attempts/{id}"), Some(&ann)).await;
    assert_eq!(seen["submitted_by"], "deadline");
    assert_eq!(seen["result"]["score"], 1);
}

#[tokio::test]
async fn saved_answers_survive_kill_9_and_the_deadline_passes_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &config());
    let ann = server.token("ann@example.com", "student");
    let (_, quiz) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    let (_, slow) = server
        .post("/api/exams/slow/attempts", Some(&ann), &json!({}))
        .await;
    let quiz_id = quiz["attempt_id"].as_str().unwrap().to_string();
    let slow_id = slow["attempt_id"].as_str().unwrap().to_string();
    for (id, index) in [(&quiz_id, 1), (&slow_id, 2)] {
        let (status, _) = put(
            &server,
            &format!("/api/attempts/{id}/answers/{index}"),
            &ann,
            &json!({"answer": "Alpha", "flagged": true}),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Killed right after the 200s; the slow exam's deadline passes while it is down.
    server.kill9();
    std::thread::sleep(Duration::from_secs(5));
    let server = start(dir.path(), &config());
    let (status, seen) = server
        .get(&format!("/api/attempts/{quiz_id}"), Some(&ann))
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["answers"], json!([null, "Alpha", null]));
    assert_eq!(seen["flags"], json!([false, true, false]));
    assert_eq!(seen["status"], "open");
    // The timed attempt is submitted by the restarted server, with its saved answer.
    let educator = server.token("teacher@example.com", "educator");
    let result = first_result(&server, "slow", &educator)
        .await
        .expect("submitted after the restart");
    assert_eq!(result["submitted_by"], "deadline");
    assert_eq!(result["score"], 1, "{result}");
    assert_eq!(result["details"][2]["user_answer"], "Alpha");
}

#[tokio::test]
async fn windows_attempts_and_rate_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &config().replace("starts_per_minute = 30", "starts_per_minute = 3"),
    );
    let ann = server.token("ann@example.com", "student");
    let all_right = json!({"answers": ["Alpha", "Alpha", "Alpha"]});

    let (status, body) = server
        .post("/api/exams/future/submissions", Some(&ann), &all_right)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "exam_not_open"),
        "{body}"
    );
    let (status, body) = server
        .post("/api/exams/past/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!((status, error_code(&body)), (409, "exam_closed"), "{body}");

    // One attempt: a one-shot submission uses it; nothing else starts afterwards.
    let (status, body) = server
        .post(
            "/api/exams/once/submissions",
            Some(&ann),
            &json!({"answers": ["x"]}),
        )
        .await;
    assert_eq!(
        status, 422,
        "a malformed submission uses no attempt: {body}"
    );
    let (status, body) = server
        .post("/api/exams/once/submissions", Some(&ann), &all_right)
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .post("/api/exams/once/submissions", Some(&ann), &all_right)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "attempts_exhausted"),
        "{body}"
    );
    let (status, body) = server
        .post("/api/exams/once/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "attempts_exhausted"),
        "{body}"
    );
    // Someone else still has theirs; concurrent starts take it once.
    let bob = server.token("bob@example.com", "student");
    let empty = json!({});
    let starts: Vec<_> = (0..3)
        .map(|_| server.post("/api/exams/once/attempts", Some(&bob), &empty))
        .collect();
    let statuses: Vec<u16> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 201].contains(s)),
        "{statuses:?}"
    );

    // Starts per identity per minute: bob has used 3.
    let (status, body) = server
        .post("/api/exams/quiz/attempts", Some(&bob), &json!({}))
        .await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"), "{body}");
    let resp = server
        .client
        .post(server.url("/api/exams/quiz/attempts"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // The limit is bob's, not the server's.
    let (status, _) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn review_policies_hide_keys_from_students_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config());
    let ann = server.token("ann@example.com", "student");
    let educator = server.token("teacher@example.com", "educator");
    let answers = json!({"answers": ["Alpha", "Beta", "Alpha"]});
    for exam in ["hidden", "later"] {
        let (status, result) = server
            .post(
                &format!("/api/exams/{exam}/submissions"),
                Some(&ann),
                &answers,
            )
            .await;
        assert_eq!(status, 201, "{result}");
        assert_eq!(result["score"], 2);
        assert_eq!(result["percentage"], 66);
        assert!(result["result"].is_string());
        assert!(result.get("details").is_none(), "{exam}: {result}");
        let text = result.to_string();
        for leak in ["correct_answer", "is_correct", "pick Alpha"] {
            assert!(!text.contains(leak), "{exam}: {leak} in {text}");
        }
        let id = result["_id"].as_str().unwrap();
        let (_, own) = server.get(&format!("/api/results/{id}"), Some(&ann)).await;
        assert!(!own.to_string().contains("correct_answer"), "{own}");
        let (_, listed) = server
            .get(&format!("/api/results?exam={exam}"), Some(&ann))
            .await;
        assert!(!listed.to_string().contains("correct_answer"), "{listed}");
        // Staff see the stored document.
        let (_, full) = server
            .get(&format!("/api/results/{id}"), Some(&educator))
            .await;
        assert_eq!(full["details"][1]["correct_answer"], "Alpha", "{full}");
    }
    let (_, later) = server.get("/api/results?exam=later", Some(&ann)).await;
    assert_eq!(later[0]["review"]["policy"], "after_close");
    assert_eq!(
        later[0]["review"]["details_available_at"],
        "2099-01-01T00:00:00+00:00"
    );
    // The default shows keys, as before.
    let (_, open) = server
        .post("/api/exams/quiz/submissions", Some(&ann), &answers)
        .await;
    assert_eq!(open["details"][1]["correct_answer"], "Alpha", "{open}");

    // Score cards: none with keys for the hidden exams.
    let cards = eventually(Duration::from_secs(15), || async {
        let (_, cards) = server.get("/api/score-cards", Some(&educator)).await;
        let cards = cards.as_array()?.clone();
        (cards.len() == 3).then_some(cards)
    })
    .await
    .expect("three score cards");
    let with_keys = cards
        .iter()
        .filter(|c| c["card"].as_str().unwrap().contains("Correct Answer"))
        .count();
    assert_eq!(with_keys, 1, "only the quiz card shows keys: {cards:?}");
    for card in &cards {
        let text = card["card"].as_str().unwrap();
        assert!(text.contains("Score: 2"), "{text}");
        if !text.contains("Correct Answer") {
            assert!(!text.contains("pick Alpha"), "{text}");
        }
    }
}

#[tokio::test]
async fn adaptive_sessions_obey_the_window_attempts_and_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config());
    let ann = server.token("ann@example.com", "student");
    let (status, body) = server
        .post("/api/adaptive/past/sessions", Some(&ann), &json!({}))
        .await;
    assert_eq!((status, error_code(&body)), (409, "exam_closed"), "{body}");
    // One attempt at `once`: an adaptive session takes it.
    let (status, session) = server
        .post("/api/adaptive/once/sessions", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201, "{session}");
    let (status, body) = server
        .post("/api/exams/once/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "attempts_exhausted"),
        "{body}"
    );

    // A timed session: after deadline + grace it is finished with the estimate it had.
    let (status, timed) = server
        .post("/api/adaptive/timed/sessions", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201, "{timed}");
    assert!(timed["seconds_left"].as_i64().unwrap() <= 2, "{timed}");
    let id = timed["session"].as_str().unwrap();
    let question = &timed["question"];
    // A second timed session nobody touches again: the server finishes it by itself.
    let (_, untouched) = server
        .post("/api/adaptive/slow/sessions", Some(&ann), &json!({}))
        .await;
    let untouched = untouched["session"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, body) = server
        .post(
            &format!("/api/adaptive/sessions/{id}/answers"),
            Some(&ann),
            &json!({"item": question["id"], "answer": "Alpha"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "attempt_closed"),
        "{body}"
    );
    let (_, seen) = server
        .get(&format!("/api/adaptive/sessions/{id}"), Some(&ann))
        .await;
    assert_eq!(seen["status"], "finished", "{seen}");
    assert_eq!(seen["result"]["stop_reason"], "time_limit");
    assert_eq!(
        seen["result"]["items_used"], 0,
        "the late answer does not count"
    );
    let educator = server.token("teacher@example.com", "educator");
    let (_, results) = server.get("/api/results?exam=timed", Some(&educator)).await;
    assert_eq!(results.as_array().unwrap().len(), 1, "{results}");
    assert_eq!(results[0]["adaptive"]["stop_reason"], "time_limit");
    // The untouched one (4 s, no grace): its result appears without any request to it.
    let result = first_result(&server, "slow", &educator)
        .await
        .expect("the server finished the untouched session");
    assert_eq!(result["adaptive"]["session"], untouched.as_str());
    assert_eq!(result["adaptive"]["stop_reason"], "time_limit");
}

#[tokio::test]
async fn analysts_see_results_and_sessions_by_pseudonym() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config());
    let ann = server.token("ann@example.com", "student");
    let analyst = server.token("ana@example.com", "analyst");
    let educator = server.token("teacher@example.com", "educator");
    let (status, result) = server
        .post(
            "/api/exams/quiz/submissions",
            Some(&ann),
            &json!({"answers": ["Alpha", "Alpha", "Beta"]}),
        )
        .await;
    assert_eq!(status, 201, "{result}");
    let id = result["_id"].as_str().unwrap();
    let (_, session) = server
        .post("/api/adaptive/quiz/sessions", Some(&ann), &json!({}))
        .await;
    let session = session["session"].as_str().unwrap();

    let (status, listed) = server.get("/api/results", Some(&analyst)).await;
    assert_eq!(status, 200, "{listed}");
    let (_, one) = server
        .get(&format!("/api/results/{id}"), Some(&analyst))
        .await;
    let (_, traced) = server
        .get(&format!("/api/adaptive/sessions/{session}"), Some(&analyst))
        .await;
    let pseudonym = one["email"].as_str().unwrap().to_string();
    assert!(pseudonym.starts_with("s_") && pseudonym.len() > 10, "{one}");
    assert_eq!(listed[0]["email"], pseudonym.as_str());
    assert_eq!(
        traced["email"],
        pseudonym.as_str(),
        "the same pseudonym everywhere"
    );
    for body in [&listed, &one, &traced] {
        assert!(!body.to_string().contains("ann@example.com"), "{body}");
    }
    // Probing by email is refused; educators see emails.
    let (status, _) = server
        .get("/api/results?email=ann@example.com", Some(&analyst))
        .await;
    assert_eq!(status, 403);
    let (_, seen) = server
        .get(&format!("/api/results/{id}"), Some(&educator))
        .await;
    assert_eq!(seen["email"], "ann@example.com");
}
