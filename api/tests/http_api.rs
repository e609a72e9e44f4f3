//! The HTTP API against the real server on the embedded default.

mod common;

use std::time::Duration;

use common::{Server, ServerOptions, answer_key, eventually, sample_banks, wrong_answers};
use serde_json::{Value, json};

/// Answers with the first `right` questions correct and the rest wrong.
fn first_right<'a>(key: &'a [String], wrong: &'a [String], right: usize) -> Vec<&'a String> {
    key.iter()
        .zip(wrong)
        .enumerate()
        .map(|(i, (k, w))| if i < right { k } else { w })
        .collect()
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn exams_are_listed_without_answer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (status, exams) = server.get("/api/exams", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = exams
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["intro-statistics", "rust-basics", "world-geography"]
    );
    assert_eq!(exams[2]["questions"], 12);

    let (status, exam) = server.get("/api/exams/world-geography", None).await;
    assert_eq!(status, 200);
    let questions = exam["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 12);
    assert_eq!(questions[0]["id"].as_str().unwrap().len(), 16);
    assert_eq!(questions[0]["options"].as_array().unwrap().len(), 4);
    let text = exam.to_string();
    assert!(
        !text.contains("correct_answer"),
        "answer key leaked: {text}"
    );
    assert!(!text.contains("is_correct"), "answer key leaked: {text}");

    let (status, body) = server.get("/api/exams/no-such-exam", None).await;
    assert_error(status, &body, 404, "not_found");
}

/// The server turns transparent huge pages off for itself (see `api/src/memory.rs`), and
/// runs SQL on threads of its own at a lower priority (`api/src/sql/executor.rs`).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_runs_without_huge_pages_and_sql_on_threads_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let pid = server.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // Kernels before 6.2 have no such line; there is nothing to check then.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    let nice_of = |comm: &str| -> Vec<i64> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let name = std::fs::read_to_string(task.join("comm")).ok()?;
                if name.trim() != comm {
                    return None;
                }
                // A thread may end between the two reads (an idle blocking-pool thread);
                // it is then skipped. Field 19 of stat is the nice value; the name (field
                // 2) may hold spaces.
                let stat = std::fs::read_to_string(task.join("stat")).ok()?;
                let after_name = stat.rsplit_once(')')?.1;
                Some(
                    after_name
                        .split_whitespace()
                        .nth(16)
                        .expect("a stat line has 52 fields")
                        .parse()
                        .expect("the nice value is a number"),
                )
            })
            .collect()
    };
    let sql = nice_of("examflow-sql");
    let api = nice_of("tokio-rt-worker");
    assert!(
        !sql.is_empty() && !api.is_empty(),
        "sql {sql:?}, api {api:?}"
    );
    assert!(
        sql.iter().all(|n| *n >= api[0] + 10 || *n == 19),
        "sql {sql:?}, api {api:?}"
    );
}

#[tokio::test]
async fn submission_is_scored_stored_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let token = server.token("ada@example.com", "student");
    let key = answer_key(&sample_banks(), "intro-statistics");
    let wrong = wrong_answers(&sample_banks(), "intro-statistics");
    // 6 right (text), 4 wrong, one answer given as an option index.
    let mut answers: Vec<Value> = first_right(&key, &wrong, 6)
        .into_iter()
        .map(|a| json!(a))
        .collect();
    answers[0] = json!(1); // "5" is option 1 of "The mean of 2, 4 and 9 is"
    let (status, doc) = server
        .post(
            "/api/exams/intro-statistics/submissions",
            Some(&token),
            &json!({"answers": answers, "email": "mallory@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(
        doc["email"], "ada@example.com",
        "email must come from the token"
    );
    assert_eq!(doc["exam"], "intro-statistics");
    assert_eq!(doc["score"], 6);
    assert_eq!(doc["percentage"], 60);
    assert_eq!(doc["result"], "passed");
    assert_eq!(doc["_id"].as_str().unwrap().len(), 24);
    assert!(doc["submitted_at"].as_str().unwrap().ends_with('Z'));
    let details = doc["details"].as_array().unwrap();
    assert_eq!(details.len(), 10);
    assert_eq!(details[0]["user_answer"], "5");
    assert_eq!(details[0]["is_correct"], true);
    assert_eq!(details[9]["is_correct"], false);
    assert_eq!(details[9]["correct_answer"], key[9]);
    for d in details {
        for k in ["question", "user_answer", "correct_answer", "is_correct"] {
            assert!(d.get(k).is_some(), "detail lacks {k}: {d}");
        }
    }

    let id = doc["_id"].as_str().unwrap();
    let (status, again) = server
        .get(&format!("/api/results/{id}"), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, doc);

    // A failing attempt: 4 of 10.
    let answers = first_right(&key, &wrong, 4);
    let (status, doc) = server
        .post(
            "/api/exams/intro-statistics/submissions",
            Some(&token),
            &json!({"answers": answers}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        (doc["score"].as_u64(), doc["percentage"].as_u64()),
        (Some(4), Some(40))
    );
    assert_eq!(doc["result"], "failed");

    let (status, mine) = server
        .get("/api/results?exam=intro-statistics", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(mine.as_array().unwrap().len(), 2);

    // The embedded store's change feed produces the seed's score card.
    let educator = server.token("ed@example.com", "educator");
    let card = eventually(Duration::from_secs(10), || async {
        let (_, cards) = server.get("/api/score-cards", Some(&educator)).await;
        cards
            .as_array()?
            .iter()
            .find(|c| c["document_id"] == id)
            .map(|c| c["card"].as_str().unwrap().to_string())
    })
    .await
    .expect("score card for the first submission");
    assert!(card.starts_with("Exam-Generator - Score Card\n\nStudent: ada@example.com\nScore: 6\nResult: PASSED\n\nExam Details:\n- Question: The mean of 2, 4 and 9 is\n  Your Answer: 5 (Correct)\n  Correct Answer: 5\n\n"), "{card}");

    let (_, metrics) = (0, server.metrics().await);
    assert!(
        metrics
            .contains("examflow_submissions_total{exam=\"intro-statistics\",result=\"passed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("examflow_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("examflow_score_cards_total 2")
            || metrics.contains("examflow_score_cards_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let token = server.token("bob@example.com", "student");
    let path = "/api/exams/world-geography/submissions";

    let (s, b) = server.post(path, None, &json!({"answers": []})).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = server
        .post(path, Some("not-a-token"), &json!({"answers": []}))
        .await;
    assert_error(s, &b, 401, "unauthorized");
    let forged = common::token(
        tempfile::tempdir().unwrap().path(),
        "bob@example.com",
        "admin",
    );
    let (s, b) = server.get("/api/results", Some(&forged)).await;
    assert_error(s, &b, 401, "unauthorized");

    let (s, b) = server
        .post(path, Some(&token), &json!({"answers": ["Canberra"]}))
        .await;
    assert_error(s, &b, 422, "wrong_answer_count");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected 12"),
        "{b}"
    );
    let mut answers = answer_key(&sample_banks(), "world-geography");
    answers[3] = "Atlantis".into();
    let (s, b) = server
        .post(path, Some(&token), &json!({"answers": answers}))
        .await;
    assert_error(s, &b, 422, "unknown_option");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("answer 3"),
        "{b}"
    );
    let mut answers: Vec<Value> = answer_key(&sample_banks(), "world-geography")
        .into_iter()
        .map(Value::from)
        .collect();
    answers[0] = json!(9);
    let (s, b) = server
        .post(path, Some(&token), &json!({"answers": answers}))
        .await;
    assert_error(s, &b, 422, "unknown_option");

    let (s, b) = server
        .post(
            "/api/exams/nope/submissions",
            Some(&token),
            &json!({"answers": []}),
        )
        .await;
    assert_error(s, &b, 404, "not_found");

    let resp = server
        .client
        .post(server.url(path))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"answers\": [")
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let b: Value = resp.json().await.unwrap();
    assert_error(s, &b, 400, "bad_json");

    let (s, b) = server
        .post(path, Some(&token), &json!({"answer": []}))
        .await;
    assert_error(s, &b, 422, "invalid_body");

    // The server closes the connection after a 413, so this uses a client of its own.
    let huge = json!({"answers": vec!["x".repeat(1000); 2000]});
    let resp = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(&token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let b: Value = resp.json().await.unwrap();
    assert_error(s, &b, 413, "payload_too_large");

    let (s, b) = server.get("/api/score-cards", Some(&token)).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = server.get("/api/admin/banks", Some(&token)).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = server.get("/api/no/such/route", None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = server
        .post("/api/dev-login", None, &json!({"email": "not an email"}))
        .await;
    assert_error(s, &b, 400, "invalid_email");
}

#[tokio::test]
async fn students_see_only_their_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let alice = server.token("alice@example.com", "student");
    let bob = server.token("bob@example.com", "student");
    let educator = server.token("teacher@example.com", "educator");
    let answers = answer_key(&sample_banks(), "rust-basics");
    let (_, doc) = server
        .post(
            "/api/exams/rust-basics/submissions",
            Some(&alice),
            &json!({"answers": answers}),
        )
        .await;
    let id = doc["_id"].as_str().unwrap();
    assert_eq!(doc["score"], 14);

    let (s, b) = server.get(&format!("/api/results/{id}"), Some(&bob)).await;
    assert_eq!(s, 404, "bob must not read alice's result: {b}");
    assert!(!b.to_string().contains("alice"), "{b}");
    let (s, list) = server.get("/api/results", Some(&bob)).await;
    assert_eq!(s, 200);
    assert_eq!(list, json!([]));
    let (s, _) = server
        .get("/api/results?email=alice@example.com", Some(&bob))
        .await;
    assert_eq!(s, 403);

    let (s, b) = server
        .get(&format!("/api/results/{id}"), Some(&educator))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["email"], "alice@example.com");
    let (_, all) = server
        .get("/api/results?exam=rust-basics", Some(&educator))
        .await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    // Dev login gives a student token that works.
    let (s, login) = server
        .post(
            "/api/dev-login",
            None,
            &json!({"email": "Carol@Example.com"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, me) = server.get("/api/me", login["token"].as_str()).await;
    assert_eq!(s, 200);
    assert_eq!(me, json!({"email": "carol@example.com", "role": "student"}));
}

#[tokio::test]
async fn dev_login_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServerOptions::new(dir.path());
    options
        .extra_env
        .push(("EXAMFLOW_DEV_LOGIN".into(), "false".into()));
    let server = Server::start(options);
    let (s, b) = server
        .post("/api/dev-login", None, &json!({"email": "a@b.c"}))
        .await;
    assert_error(s, &b, 403, "forbidden");
}

#[tokio::test]
async fn bad_banks_are_reported_and_the_good_ones_served() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    std::fs::create_dir_all(&banks).unwrap();
    std::fs::write(
        banks.join("good.json"),
        r#"[{"question": "q", "options": ["a", "b"], "correct_answer": "b"}]"#,
    )
    .unwrap();
    std::fs::write(
        banks.join("broken.json"),
        "[{\"question\": \"q\",\n \"options\": [\"a\" \"b\"]}]",
    )
    .unwrap();
    std::fs::write(
        banks.join("wrong-key.json"),
        r#"[{"question": "q", "options": ["a", "b"], "correct_answer": "c"}]"#,
    )
    .unwrap();
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.banks = banks;
    let server = Server::start(options);
    let (_, exams) = server.get("/api/exams", None).await;
    let exams = exams.as_array().unwrap();
    assert_eq!(exams.len(), 1, "{exams:?}");
    assert_eq!(exams[0]["name"], "good");
    assert_eq!(exams[0]["questions"], 1);
    // Each exam carries its delivery policy (the defaults here).
    assert_eq!(exams[0]["policy"]["review"], "immediately");
    assert_eq!(exams[0]["policy"]["open_now"], true);
    let admin = server.token("root@example.com", "admin");
    let (s, listing) = server.get("/api/admin/banks", Some(&admin)).await;
    assert_eq!(s, 200);
    let errors = listing["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{listing}");
    let text = listing.to_string();
    assert!(
        text.contains("broken.json") && text.contains("line 2"),
        "{text}"
    );
    assert!(
        text.contains("wrong-key.json")
            && text.contains("question 0")
            && text.contains("not among the options"),
        "{text}"
    );
}

#[tokio::test]
async fn real_question_banks_load_and_score() {
    let Some(fixtures) = common::shared_fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServerOptions::new(dir.path());
    options.banks = fixtures.join("question-banks");
    let server = Server::start(options);
    let (_, exams) = server.get("/api/exams", None).await;
    let exams = exams.as_array().unwrap();
    assert_eq!(exams.len(), 4, "{exams:?}");
    let token = server.token("fixture@example.com", "student");
    for exam in exams {
        let name = exam["name"].as_str().unwrap();
        let key = answer_key(&fixtures.join("question-banks"), name);
        let (s, doc) = server
            .post(
                &format!("/api/exams/{name}/submissions"),
                Some(&token),
                &json!({"answers": key}),
            )
            .await;
        assert_eq!(s, 201, "{name}: {doc}");
        assert_eq!(doc["percentage"], 100, "{name}");
    }
}

#[tokio::test]
async fn health_docs_and_page_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (s, h) = server.get("/healthz", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"], "sqlite");
    let (s, doc) = server.get("/api/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/", "/api/docs", "/app.js", "/style.css"] {
        let resp = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn item_stats_from_stored_submissions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let key = answer_key(&sample_banks(), "intro-statistics");
    let wrong = wrong_answers(&sample_banks(), "intro-statistics");
    // 40 students; student s answers the first (s % 11) questions right: a Guttman-like
    // pattern where earlier questions are easier.
    for s in 0..40 {
        let token = server.token(&format!("s{s}@example.com"), "student");
        let right = s % 11;
        let answers = first_right(&key, &wrong, right);
        let (status, _) = server
            .post(
                "/api/exams/intro-statistics/submissions",
                Some(&token),
                &json!({"answers": answers}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let student = server.token("s1@example.com", "student");
    let (s, b) = server
        .get("/api/exams/intro-statistics/item-stats", Some(&student))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let educator = server.token("ed@example.com", "educator");
    let (s, stats) = server
        .get("/api/exams/intro-statistics/item-stats", Some(&educator))
        .await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["n_submissions"], 40);
    let items = stats["ctt"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    let p: Vec<f64> = items
        .iter()
        .map(|i| i["p_value"].as_f64().unwrap())
        .collect();
    // Question 0 is answered right by every student with s % 11 >= 1: 36 of 40.
    assert!((p[0] - 36.0 / 40.0).abs() < 1e-9, "{p:?}");
    assert!(
        p.windows(2).all(|w| w[0] >= w[1]),
        "p-values fall with position: {p:?}"
    );
    assert!(stats["ctt"]["alpha"].as_f64().unwrap() > 0.8);
    let irt = &stats["irt"];
    assert_eq!(irt["model"], "2pl", "{irt}");
    let b: Vec<f64> = irt["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["b"].as_f64().unwrap())
        .collect();
    assert!(b.first() < b.last(), "later questions are harder: {b:?}");
    assert_eq!(stats["distractors"].as_array().unwrap().len(), 10);
    let (s, _) = server
        .get("/api/exams/nope/item-stats", Some(&educator))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn malformed_paths_and_queries_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let token = server.token("q@example.com", "educator");
    let (s, b) = server.get("/api/results?limit=lots", Some(&token)).await;
    assert_error(s, &b, 400, "bad_query");
    let (s, b) = server.get("/api/results/%FF%FE", Some(&token)).await;
    assert_error(s, &b, 400, "bad_path");
    let (s, b) = server.get("/api/exams/%00", None).await;
    assert_error(s, &b, 404, "not_found");
    let resp = server
        .client
        .delete(server.url("/api/exams"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "method_not_allowed");
}

/// Request bodies are JSON objects: an array of a struct's fields in order (which serde would
/// read) is refused on every route, and a body past the limit gets the JSON 413 everywhere.
#[tokio::test]
async fn bodies_must_be_objects_and_a_too_large_body_gets_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let student = server.token("shape@example.com", "student");
    let analyst = server.token("data@example.com", "analyst");
    let cases = [
        ("/api/dev-login", None, json!(["x@example.com"])),
        ("/api/sql", Some(&analyst), json!(["SELECT 1 AS one"])),
        (
            "/api/exams/rust-basics/submissions",
            Some(&student),
            json!([["let mut"]]),
        ),
        (
            "/api/adaptive/rust-basics/sessions",
            Some(&student),
            json!([]),
        ),
        (
            "/api/adaptive/rust-basics/sessions",
            Some(&student),
            json!(["random", 10, 5, 0.25]),
        ),
    ];
    for (path, token, body) in cases {
        let (status, answer) = server.post(path, token.map(String::as_str), &body).await;
        assert!(
            status == 400 || status == 422,
            "{path} {body}: {status} {answer}"
        );
        assert!(answer["error"]["code"].is_string(), "{path}: {answer}");
    }
    // An adaptive answer and an attempt's saved answer, given as arrays.
    let (status, session) = server
        .post(
            "/api/adaptive/rust-basics/sessions",
            Some(&student),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["session"].as_str().unwrap();
    let item = session["question"]["id"].clone();
    let (status, answer) = server
        .post(
            &format!("/api/adaptive/sessions/{id}/answers"),
            Some(&student),
            &json!([item, 0]),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {answer}");
    let (status, attempt) = server
        .post(
            "/api/exams/rust-basics/attempts",
            Some(&student),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{attempt}");
    let attempt_id = attempt["attempt_id"].as_str().unwrap();
    let client = reqwest::Client::new();
    let put = |body: String| {
        client
            .put(server.url(&format!("/api/attempts/{attempt_id}/answers/0")))
            .bearer_auth(&student)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = put("[1, true]".into()).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // Past `[server] max_body_bytes` (1 MiB by default): the API's JSON error, not text.
    // One byte past the limit: the server reads all of it before it refuses, so its close
    // cannot race a client still writing (a larger body made that a broken pipe at times).
    let addr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let limit = 1 << 20;
    let mut big = format!("{{\"answer\": \"{}\"}}", "x".repeat(limit));
    big.truncate(limit + 1);
    for (method, path) in [
        ("PUT", format!("/api/attempts/{attempt_id}/answers/0")),
        ("POST", "/api/adaptive/rust-basics/sessions".to_string()),
    ] {
        let (status, body) = raw_json_request(&addr, method, &path, &student, &big).await;
        assert_eq!(status, 413, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    }
}

/// Sends a JSON request over a plain socket (`connection: close`) and reads the whole reply:
/// its status and JSON body.
async fn raw_json_request(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("a reply within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP reply");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
