//! Adaptive sessions over HTTP against the real server: the whole flow, the 4xx cases,
//! restarts, calibration versions and results.

mod common;

use std::path::{Path, PathBuf};

use common::{Server, ServerOptions, write_bank};
use serde_json::{Value, json};

fn start(dir: &Path, banks: &Path, config: Option<&str>) -> Server {
    let mut options = ServerOptions::new(dir);
    options.banks = banks.to_path_buf();
    if let Some(text) = config {
        let path = dir.join("examflow-test.toml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, text).unwrap();
        options.config_file = Some(path);
    }
    Server::start(options)
}

/// Answers the pending question right or wrong; returns the response.
async fn answer(
    server: &Server,
    token: &str,
    session: &str,
    question: &Value,
    right: bool,
) -> (u16, Value) {
    let option = if right { "right" } else { "wrong" };
    server
        .post(
            &format!("/api/adaptive/sessions/{session}/answers"),
            Some(token),
            &json!({"item": question["id"], "answer": option}),
        )
        .await
}

/// Answers until the session finishes; returns the final response and the items seen.
async fn run_to_end(
    server: &Server,
    token: &str,
    session: &str,
    first: Value,
    right: impl Fn(usize) -> bool,
) -> (Value, Vec<String>) {
    let mut question = first;
    let mut seen = Vec::new();
    let already = question["number"].as_u64().unwrap() as usize - 1;
    for n in already.. {
        assert!(n < already + 500, "the session never finished");
        assert!(
            question.get("correct_answer").is_none(),
            "a question leaks its key: {question}"
        );
        seen.push(question["id"].as_str().unwrap().to_string());
        let (status, body) = answer(server, token, session, &question, right(n)).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "finished" {
            return (body, seen);
        }
        assert_eq!(body["status"], "next", "{body}");
        assert_eq!(body["progress"]["answered"], n + 1);
        question = body["question"].clone();
        assert_eq!(question["number"], n + 2);
    }
    unreachable!()
}

#[tokio::test]
async fn a_student_takes_an_adaptive_exam_and_the_result_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 40, |i| {
        format!("Question {i}: which option is right?")
    });
    let server = start(&dir.path().join("data"), &banks, None);
    let student = server.token("ada@example.com", "student");

    let (status, started) = server
        .post(
            "/api/adaptive/algebra/sessions",
            Some(&student),
            &json!({"max_length": 12}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let session = started["session"].as_str().unwrap().to_string();
    assert_eq!(started["status"], "active");
    assert_eq!(started["calibration_version"], 1);
    assert_eq!(started["progress"], json!({"answered": 0, "max_items": 12}));
    assert_eq!(started["question"]["options"].as_array().unwrap().len(), 4);

    // Every answer right: the estimate climbs well above average.
    let (done, seen) = run_to_end(
        &server,
        &student,
        &session,
        started["question"].clone(),
        |_| true,
    )
    .await;
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an item was given twice: {seen:?}"
    );
    for key in [
        "theta",
        "se",
        "scale_score",
        "items_used",
        "stop_reason",
        "result_id",
        "explanation",
    ] {
        assert!(done.get(key).is_some(), "{key} missing from {done}");
    }
    assert!(
        done.get("passed").is_none(),
        "no cut score, so no pass/fail: {done}"
    );
    assert_eq!(done["result"], "completed");
    let theta = done["theta"].as_f64().unwrap();
    assert!(
        theta > 1.0,
        "all right should be well above average: {done}"
    );
    assert_eq!(done["items_used"].as_u64().unwrap() as usize, seen.len());
    assert!(["se_reached", "max_length"].contains(&done["stop_reason"].as_str().unwrap()));
    assert_eq!(
        done["scale_score"].as_f64().unwrap(),
        (500.0 + 100.0 * theta).round()
    );

    // After the end: 409.
    let (status, body) = answer(&server, &student, &session, &json!({"id": seen[0]}), true).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "session_finished");

    // The result is stored like a fixed-form one.
    let result_id = done["result_id"].as_str().unwrap();
    let (status, result) = server
        .get(&format!("/api/results/{result_id}"), Some(&student))
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["exam"], "algebra");
    assert_eq!(result["total"].as_u64().unwrap() as usize, seen.len());
    assert_eq!(result["score"], result["total"]);
    assert_eq!(result["adaptive"]["session"], session);
    assert_eq!(result["adaptive"]["theta"], done["theta"]);
    assert_eq!(result["details"].as_array().unwrap().len(), seen.len());

    // The student sees progress; an educator also sees the trace.
    let (status, mine) = server
        .get(&format!("/api/adaptive/sessions/{session}"), Some(&student))
        .await;
    assert_eq!(status, 200);
    assert_eq!(mine["status"], "finished");
    assert!(mine.get("trace").is_none(), "{mine}");
    assert_eq!(mine["result"]["theta"], done["theta"]);
    let educator = server.token("ed@example.com", "educator");
    let (status, full) = server
        .get(
            &format!("/api/adaptive/sessions/{session}"),
            Some(&educator),
        )
        .await;
    assert_eq!(status, 200);
    let trace = full["trace"].as_array().unwrap();
    assert_eq!(trace.len(), seen.len());
    assert!(
        trace
            .iter()
            .all(|t| t["correct"] == true && t["se"].as_f64().unwrap() > 0.0)
    );
    // SE shrinks as items accumulate.
    assert!(trace.last().unwrap()["se"].as_f64().unwrap() < trace[0]["se"].as_f64().unwrap());
    assert_eq!(full["email"], "ada@example.com");

    // Every answer wrong: well below average.
    let (_, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    let low_session = started["session"].as_str().unwrap().to_string();
    let (low, _) = run_to_end(
        &server,
        &student,
        &low_session,
        started["question"].clone(),
        |_| false,
    )
    .await;
    assert!(low["theta"].as_f64().unwrap() < -1.0, "{low}");
    assert!(low["scale_score"].as_f64().unwrap() < 400.0);
}

#[tokio::test]
async fn wrong_item_twice_unknown_option_and_someone_elses_session_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 30, |i| {
        format!("Question {i}: which option is right?")
    });
    let server = start(&dir.path().join("data"), &banks, None);
    let ada = server.token("ada@example.com", "student");
    let bob = server.token("bob@example.com", "student");

    let (_, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&ada), &json!({}))
        .await;
    let session = started["session"].as_str().unwrap().to_string();
    let first = started["question"].clone();
    let path = format!("/api/adaptive/sessions/{session}/answers");

    // Not signed in: 401. Someone else: 404 (it does not exist for them), and they cannot
    // read it either.
    let (status, _) = server
        .post(
            &path,
            None,
            &json!({"item": first["id"], "answer": "right"}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .post(
            &path,
            Some(&bob),
            &json!({"item": first["id"], "answer": "right"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("another student"), "{body}");
    let (status, _) = server
        .get(&format!("/api/adaptive/sessions/{session}"), Some(&bob))
        .await;
    assert_eq!(status, 404);

    // An item other than the pending one.
    let (status, body) = server
        .post(
            &path,
            Some(&ada),
            &json!({"item": "0000000000000000", "answer": "right"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "wrong_item");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    // An option that does not exist.
    let (status, body) = server
        .post(
            &path,
            Some(&ada),
            &json!({"item": first["id"], "answer": "maybe"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_option");
    // A malformed body.
    let (status, body) = server
        .post(&path, Some(&ada), &json!({"item": first["id"]}))
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body["error"]["message"].is_string());

    // The same item twice.
    let (status, next) = answer(&server, &ada, &session, &first, true).await;
    assert_eq!(status, 200, "{next}");
    let (status, body) = answer(&server, &ada, &session, &first, true).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_answered");
    // None of that moved the session: the pending question is still the one answered next.
    let (_, state) = server
        .get(&format!("/api/adaptive/sessions/{session}"), Some(&ada))
        .await;
    assert_eq!(state["progress"]["answered"], 1);
    assert_eq!(state["question"]["id"], next["question"]["id"]);

    // Unknown session and exam: 404; options outside the exam's limits: 400.
    let (status, _) = server.get("/api/adaptive/sessions/nope", Some(&ada)).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .post("/api/adaptive/nope/sessions", Some(&ada), &json!({}))
        .await;
    assert_eq!(status, 404);
    for bad in [
        json!({"max_length": 500}),
        json!({"se": 0.01}),
        json!({"rule": "psychic"}),
        json!({"colour": "red"}),
    ] {
        let (status, body) = server
            .post("/api/adaptive/algebra/sessions", Some(&ada), &bad)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // The exam's policy is a floor: shorter or looser than it is 422, naming the limit.
    for (bad, limit) in [
        (json!({"max_length": 1}), "min_length 5"),
        (json!({"min_length": 2}), "min_length 5"),
        (json!({"se": 0.9}), "se_target 0.3"),
    ] {
        let (status, body) = server
            .post("/api/adaptive/algebra/sessions", Some(&ada), &bad)
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "below_exam_policy", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(limit), "{bad}: {message}");
    }
    // Longer or more precise is allowed.
    let (status, body) = server
        .post(
            "/api/adaptive/algebra/sessions",
            Some(&ada),
            &json!({"min_length": 8, "se": 0.25}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Another server (MongoDB deployments run several) stores an answer to the same session
/// between this server's read and its write: this server's answer is refused with 409
/// instead of overwriting the other, and the session goes on from what was stored.
#[tokio::test]
async fn an_answer_stored_meanwhile_by_another_writer_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 30, |i| {
        format!("Question {i}: which option is right?")
    });
    let server = start(&dir.path().join("data"), &banks, None);
    let ada = server.token("ada@example.com", "student");
    let (_, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&ada), &json!({}))
        .await;
    let session = started["session"].as_str().unwrap().to_string();
    let (status, next) = answer(&server, &ada, &session, &started["question"], true).await;
    assert_eq!(status, 200, "{next}");

    // The other writer: the stored row moves on behind this server's back.
    let db = rusqlite::Connection::open(server.data_dir.join("examflow.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let bumped = db
        .execute(
            "UPDATE adaptive_sessions SET answered = answered + 1 WHERE id = ?1",
            [&session],
        )
        .unwrap();
    assert_eq!(bumped, 1);
    drop(db);

    let question = next["question"].clone();
    let (status, body) = answer(&server, &ada, &session, &question, true).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "answered_concurrently", "{body}");
    // The refused answer changed nothing; the session is read again and goes on.
    let (status, state) = server
        .get(&format!("/api/adaptive/sessions/{session}"), Some(&ada))
        .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["question"]["id"], question["id"], "{state}");
    let (status, body) = answer(&server, &ada, &session, &question, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["progress"]["answered"], 2, "{body}");
}

#[tokio::test]
async fn a_session_survives_a_restart_and_keeps_its_calibration_version() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 30, |i| {
        format!("Question {i}: which option is right?")
    });
    let data = dir.path().join("data");
    let config = "[adaptive.policy]\nmax_length = 8\nmin_length = 8\n[adaptive.exams.algebra]\ncut_score = 0.0\n";
    let mut server = start(&data, &banks, Some(config));
    let student = server.token("ada@example.com", "student");
    let educator = server.token("ed@example.com", "educator");

    let (_, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    let session = started["session"].as_str().unwrap().to_string();
    let mut question = started["question"].clone();
    for _ in 0..3 {
        let (status, next) = answer(&server, &student, &session, &question, true).await;
        assert_eq!(status, 200, "{next}");
        question = next["question"].clone();
    }
    let (_, before) = server
        .get(
            &format!("/api/adaptive/sessions/{session}"),
            Some(&educator),
        )
        .await;

    // kill -9, start again on the same data: the session continues where it was.
    server.kill9();
    let server = start(&data, &banks, Some(config));
    let (status, after) = server
        .get(
            &format!("/api/adaptive/sessions/{session}"),
            Some(&educator),
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["trace"], before["trace"]);
    assert_eq!(after["question"]["id"], question["id"]);

    // A recalibration makes version 2; the running session keeps version 1.
    let (status, _) = server
        .post("/api/exams/algebra/calibrate", Some(&student), &json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, calibration) = server
        .post("/api/exams/algebra/calibrate", Some(&educator), &json!({}))
        .await;
    assert_eq!(status, 201, "{calibration}");
    assert_eq!(calibration["version"], 2);
    assert_eq!(calibration["items"].as_array().unwrap().len(), 30);
    let (_, versions) = server
        .get("/api/exams/algebra/calibrations", Some(&educator))
        .await;
    let numbers: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![2, 1]);

    let (done, _) = run_to_end(&server, &student, &session, question, |_| true).await;
    assert_eq!(done["items_used"], 8);
    assert_eq!(done["stop_reason"], "max_length");
    assert_eq!(
        done["passed"], true,
        "cut score 0 and every answer right: {done}"
    );
    assert_eq!(done["result"], "passed");
    // How the decision was made, with the interval it rests on.
    let interval = done["interval"].as_array().unwrap();
    let (low, high) = (interval[0].as_f64().unwrap(), interval[1].as_f64().unwrap());
    let theta = done["theta"].as_f64().unwrap();
    assert!(low < theta && theta < high, "{done}");
    let expected = if low > 0.0 {
        "confidence_interval"
    } else {
        "final_estimate"
    };
    assert_eq!(done["decision_basis"], expected, "{done}");
    let (_, full) = server
        .get(
            &format!("/api/adaptive/sessions/{session}"),
            Some(&educator),
        )
        .await;
    assert_eq!(full["calibration_version"], 1);
    let (_, result) = server
        .get(
            &format!("/api/results/{}", done["result_id"].as_str().unwrap()),
            Some(&educator),
        )
        .await;
    assert_eq!(result["adaptive"]["calibration_version"], 1);
    assert_eq!(result["result"], "passed");

    // Both are SQL tables for analysts.
    let analyst = server.token("ana@example.com", "analyst");
    let (status, rows) = server
        .post(
            "/api/sql",
            Some(&analyst),
            &json!({"sql": format!("SELECT status, answered, calibration_version, stop_reason, result, theta \
                FROM adaptive_sessions WHERE session_id = '{session}'")}),
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows[0]["status"], "finished");
    assert_eq!(rows[0]["answered"], 8);
    assert_eq!(rows[0]["calibration_version"], 1);
    assert_eq!(rows[0]["result"], "passed");
    assert_eq!(rows[0]["theta"], done["theta"]);
    let (status, rows) = server
        .post(
            "/api/sql",
            Some(&analyst),
            &json!({"sql": "SELECT version, count(*) AS items FROM calibrations \
                WHERE exam = 'algebra' GROUP BY version ORDER BY version"}),
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(
        rows,
        json!([{"version": 1, "items": 30}, {"version": 2, "items": 30}])
    );

    // A new session starts on the newest version.
    let (_, again) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    assert_eq!(again["calibration_version"], 2);
}

#[tokio::test]
async fn calibration_uses_stored_responses_once_there_are_enough() {
    let dir = tempfile::tempdir().unwrap();
    let banks: PathBuf = dir.path().join("banks");
    write_bank(&banks, "algebra", 6, |i| {
        format!("Question {i}: which option is right?")
    });
    let server = start(
        &dir.path().join("data"),
        &banks,
        Some("[adaptive]\nmin_item_responses = 20\n"),
    );
    let educator = server.token("ed@example.com", "educator");
    let (_, exam) = server.get("/api/exams/algebra", None).await;
    let questions = exam["questions"].as_array().unwrap().clone();
    // 300 fixed-form submissions simulated from a 2PL model (a = 1.5, b from -2 to 2 in
    // bank order, θ ~ N(0, 1)), with a fixed pseudo-random stream.
    let mut stream = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        stream ^= stream << 13;
        stream ^= stream >> 7;
        stream ^= stream << 17;
        (stream >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = questions.len();
    for s in 0..300usize {
        let token = server.token(&format!("s{s}@example.com"), "student");
        // θ ~ N(0, 1) (Box–Muller), the population the calibration assumes.
        let theta =
            (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
        let answers: Vec<Value> = (0..n)
            .map(|i| {
                let b = -2.0 + 4.0 * i as f64 / (n - 1) as f64;
                let p = 1.0 / (1.0 + (-1.5 * (theta - b)).exp());
                json!(if uniform() < p { "right" } else { "wrong" })
            })
            .collect();
        let (status, body) = server
            .post(
                "/api/exams/algebra/submissions",
                Some(&token),
                &json!({"answers": answers}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, calibration) = server
        .post("/api/exams/algebra/calibrate", Some(&educator), &json!({}))
        .await;
    assert_eq!(status, 201, "{calibration}");
    assert_eq!(calibration["responses"], 300);
    let items = calibration["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["responses"] == 300), "{calibration}");
    assert!(
        items.iter().all(|i| i["provisional"] == false),
        "{calibration}"
    );
    assert_eq!(calibration["summary"]["converged"], true, "{calibration}");
    assert_eq!(calibration["source"], "calibration");
    // The difficulties come back in order and spread like the simulated ones (the
    // engine's recovery is tested against mirt and girth in the psychometrics tests).
    let b: Vec<f64> = items.iter().map(|i| i["b"].as_f64().unwrap()).collect();
    assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    assert!(b[0] < -1.5 && b[n - 1] > 1.5, "{b:?}");
    let (status, one) = server
        .get("/api/exams/algebra/calibrations/1", Some(&educator))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["version"], 1);
    let (status, _) = server
        .get("/api/exams/algebra/calibrations/9", Some(&educator))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn imported_parameters_become_a_version_and_survive_recalibration_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 5, |i| {
        format!("Question {i}: which option is right?")
    });
    let server = start(&dir.path().join("data"), &banks, None);
    let educator = server.token("ed@example.com", "educator");
    let (_, exam) = server.get("/api/exams/algebra", None).await;
    let ids: Vec<String> = exam["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap().to_string())
        .collect();
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .take(4)
        .map(|(i, id)| json!({"item": id, "a": 1.2, "b": i as f64 - 1.5, "c": 0.2}))
        .collect();
    let path = "/api/exams/algebra/calibrations";
    let student = server.token("s@example.com", "student");
    let (status, _) = server
        .post(path, Some(&student), &json!({"items": items}))
        .await;
    assert_eq!(status, 403);
    for bad in [
        json!({"items": [{"item": "nope", "a": 1, "b": 0}]}),
        json!({"items": [{"item": ids[0], "a": -1, "b": 0}]}),
        // Parameters no calibration produces: the estimates would overflow to NaN.
        json!({"items": [{"item": ids[0], "a": 1e300, "b": -1e300}]}),
        json!({"items": [{"item": ids[0], "a": 1, "b": 25}]}),
        json!({"items": [{"item": ids[0], "a": 21, "b": 0}]}),
        // An array of the fields is not the object.
        json!([[[ids[0], 1, 0, 0]]]),
        json!({"items": [{"item": ids[0], "a": 1, "b": 0}, {"item": ids[0], "a": 1, "b": 1}]}),
        json!({"items": []}),
    ] {
        let (status, body) = server.post(path, Some(&educator), &bad).await;
        assert!(status == 400 || status == 422, "{bad}: {status} {body}");
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    let (status, imported) = server
        .post(path, Some(&educator), &json!({"items": items}))
        .await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["version"], 1);
    assert_eq!(imported["source"], "imported");
    let got = imported["items"].as_array().unwrap();
    assert_eq!(got[2]["b"], 0.5);
    assert_eq!(got[2]["provisional"], false);
    assert_eq!(
        got[4]["provisional"], true,
        "the fifth item was not imported"
    );

    // Recalibrating with no responses keeps what was imported.
    let (status, again) = server
        .post("/api/exams/algebra/calibrate", Some(&educator), &json!({}))
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["version"], 2);
    assert_eq!(again["items"][2]["b"], 0.5);
    assert_eq!(again["items"][2]["provisional"], false);
    assert_eq!(again["items"][4]["provisional"], true);
}

/// Ingested attempts whose question ids are items of the bank (given by the bank's `id`
/// field) count as responses: with no stored result at all, 300 attempts in the lake
/// calibrate every item.
#[tokio::test]
async fn calibration_uses_ingested_attempts_whose_questions_are_bank_items() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    calibrate_from_ingested_attempts(
        dir.path(),
        examflow_ingest::lake::LakeLocation::in_data_dir(&data),
        "",
    )
    .await;
}

/// The same with the lake on S3 (`scripts/test-all` starts moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_reads_ingested_attempts_from_a_lake_on_s3() {
    let Some(lake) =
        common::s3::S3Lake::new("calibration_reads_ingested_attempts_from_a_lake_on_s3")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    calibrate_from_ingested_attempts(dir.path(), lake.location(), &lake.config()).await;
}

/// Writes 300 attempts answering a 6-item bank to the lake at `location`, starts a server
/// on it (`config`: more TOML) and checks the calibration they give.
async fn calibrate_from_ingested_attempts(
    root: &Path,
    location: examflow_ingest::lake::LakeLocation,
    config: &str,
) {
    use std::collections::BTreeMap;

    use examflow_ingest::attempts::{Attempt, AttemptBatchBuilder};
    use examflow_ingest::lake::Lake;
    use examflow_ingest::source::SourcePosition;

    let banks: PathBuf = root.join("banks");
    std::fs::create_dir_all(&banks).unwrap();
    let n = 6;
    let ids: Vec<String> = (0..n)
        .map(|i| format!("9f1c0e2a-0000-4000-8000-00000000000{i}"))
        .collect();
    let questions: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"id": id, "question": format!("Question {i}?"),
                   "options": ["right", "wrong"], "correct_answer": "right"})
        })
        .collect();
    std::fs::write(
        banks.join("algebra.json"),
        Value::Array(questions).to_string(),
    )
    .unwrap();
    // 300 attempts answering the bank's questions (2PL, a = 1.5, b from -2 to 2, θ ~ N(0, 1)),
    // plus questions of another exam that must be ignored.
    let mut stream = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        stream ^= stream << 13;
        stream ^= stream >> 7;
        stream ^= stream << 17;
        (stream >> 11) as f64 / (1u64 << 53) as f64
    };
    let data = root.join("data");
    {
        let lake = Lake::open_at(location).await.unwrap();
        let mut builder = AttemptBatchBuilder::new();
        for s in 0..300usize {
            let theta =
                (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            let mut asked: Vec<Value> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let b = -2.0 + 4.0 * i as f64 / (n - 1) as f64;
                    let right = uniform() < 1.0 / (1.0 + (-1.5 * (theta - b)).exp());
                    json!({"id": id, "user_correct": right,
                           "user_result": if right { "correct" } else { "incorrect" },
                           "options": []})
                })
                .collect();
            asked.push(json!({"id": "not-in-the-bank", "user_correct": true, "options": []}));
            let document = json!({
                "keen_id": format!("attempt-{s}"),
                "user_exam_id": format!("user-exam-{s}"),
                "exam_name": "Algebra",
                "started_at": "2026-11-20T10:00:00.000Z",
                "sequences": {"questions": asked},
            });
            let text = document.to_string();
            let attempt = Attempt::parse(text.as_bytes()).unwrap();
            let source = SourcePosition {
                topic: "exams",
                partition: 0,
                offset: s as i64,
                ingested_at_us: 0,
            };
            builder.append(&attempt, &source);
        }
        let batches = builder.finish();
        lake.attempt_questions.push_tail(batches.questions);
        let positions = BTreeMap::from([(("exams".to_string(), 0), 299)]);
        lake.attempt_questions
            .commit_tail("test", &positions, 1)
            .await
            .unwrap();
    }
    let server = start(
        &data,
        &banks,
        Some(&format!("{config}[adaptive]\nmin_item_responses = 20\n")),
    );
    let educator = server.token("ed@example.com", "educator");
    let (status, calibration) = server
        .post("/api/exams/algebra/calibrate", Some(&educator), &json!({}))
        .await;
    assert_eq!(status, 201, "{calibration}");
    assert_eq!(
        calibration["summary"]["ingested_attempts"], 300,
        "{calibration}"
    );
    assert_eq!(calibration["summary"]["stored_results"], 0, "{calibration}");
    let items = calibration["items"].as_array().unwrap();
    assert_eq!(items.len(), n);
    assert!(items.iter().all(|i| i["responses"] == 300), "{calibration}");
    assert!(
        items.iter().all(|i| i["provisional"] == false),
        "{calibration}"
    );
    let by_id: Vec<&str> = items.iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(by_id, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let b: Vec<f64> = items.iter().map(|i| i["b"].as_f64().unwrap()).collect();
    assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    assert!(b[0] < -1.0 && b[n - 1] > 1.0, "{b:?}");
}

/// The schedule recalibrates an exam once it has responses its latest version did not
/// use, and leaves it alone while nothing new arrives.
#[tokio::test]
async fn the_schedule_recalibrates_only_when_new_responses_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let banks: PathBuf = dir.path().join("banks");
    write_bank(&banks, "algebra", 6, |i| {
        format!("Question {i}: which option is right?")
    });
    let server = start(
        &dir.path().join("data"),
        &banks,
        Some("[adaptive]\ncalibrate_interval_secs = 1\n"),
    );
    let educator = server.token("ed@example.com", "educator");
    let versions = || async {
        let (status, list) = server
            .get("/api/exams/algebra/calibrations", Some(&educator))
            .await;
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().len()
    };
    // Version 1 comes with the first session.
    let student = server.token("s0@example.com", "student");
    let (status, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(versions().await, 1);
    // Nothing new: ticks pass without a version.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(versions().await, 1);
    // A submission answering the bank's items is new: the next tick makes version 2.
    let (status, body) = server
        .post(
            "/api/exams/algebra/submissions",
            Some(&student),
            &json!({"answers": ["right", "wrong", "right", "wrong", "right", "wrong"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while versions().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled calibration after a new result"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // And then no more while nothing new arrives.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(versions().await, 2);
}
