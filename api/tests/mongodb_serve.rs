//! The real `examflow serve --mongodb-uri` against a MongoDB server (the one named by
//! `EXAMFLOW_TEST_MONGODB_URI`; scripts/test-all starts one with scripts/mongo-server),
//! each test on a database of its own: results, adaptive sessions, calibrations,
//! fixed-form attempts and reports over HTTP, checked in MongoDB with the driver.
//! Two servers on one database and kill -9 are in mongodb_replicas.rs.

mod common;

use std::time::Duration;

use common::mongo::{self, MongoServe, int, write_bank};
use common::{Server, answer_key, eventually, sample_banks, wrong_answers};
use mongodb::bson::{Bson, doc, oid::ObjectId};
use serde_json::{Value, json};

/// Answers the pending question of an adaptive session right or wrong.
async fn answer(
    server: &Server,
    token: &str,
    session: &str,
    item: &Value,
    right: bool,
) -> (u16, Value) {
    server
        .post(
            &format!("/api/adaptive/sessions/{session}/answers"),
            Some(token),
            &json!({"item": item, "answer": if right { "right" } else { "wrong" }}),
        )
        .await
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

fn oid(id: &Value) -> ObjectId {
    ObjectId::parse_str(id.as_str().unwrap()).unwrap()
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn results_are_stored_in_mongodb_and_read_back_per_role() {
    let Some(uri) = mongo::test_uri("results_are_stored_in_mongodb_and_read_back_per_role") else {
        return;
    };
    let db = mongo::database_name("results");
    let dir = tempfile::tempdir().unwrap();
    let server = MongoServe::new(&uri, &db, &dir.path().join("data")).start();
    let ada = server.token("ada@example.com", "student");
    let bob = server.token("bob@example.com", "student");
    let educator = server.token("ed@example.com", "educator");
    let key = answer_key(&sample_banks(), "intro-statistics");
    let wrong = wrong_answers(&sample_banks(), "intro-statistics");

    // Ada: 7 of 10 and 3 of 10 on intro-statistics; Bob: everything right on world-geography.
    let mut accepted = Vec::new();
    for right in [7, 3] {
        let answers: Vec<&String> = (0..key.len())
            .map(|i| if i < right { &key[i] } else { &wrong[i] })
            .collect();
        let (status, doc) = server
            .post(
                "/api/exams/intro-statistics/submissions",
                Some(&ada),
                &json!({"answers": answers, "email": "mallory@example.com"}),
            )
            .await;
        assert_eq!(status, 201, "{doc}");
        assert_eq!(
            doc["email"], "ada@example.com",
            "the email comes from the token"
        );
        assert_eq!(doc["score"], right);
        assert_eq!(doc["result"], if right >= 6 { "passed" } else { "failed" });
        accepted.push(doc);
    }
    let geo = answer_key(&sample_banks(), "world-geography");
    let (status, bob_doc) = server
        .post(
            "/api/exams/world-geography/submissions",
            Some(&bob),
            &json!({"answers": geo}),
        )
        .await;
    assert_eq!(status, 201, "{bob_doc}");
    assert_eq!(bob_doc["percentage"], 100);
    accepted.push(bob_doc.clone());

    // Every accepted document is in <db>.score, with its ObjectId and typed fields.
    let client = mongo::client(&uri).await;
    let stored = mongo::find_all(&client, &db, "score", doc! {}).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    for doc in &accepted {
        let row = stored
            .iter()
            .find(|r| r.get_object_id("_id").ok() == Some(oid(&doc["_id"])))
            .unwrap_or_else(|| panic!("{} is not in {db}.score: {stored:?}", doc["_id"]));
        assert_eq!(
            row.get_str("email").unwrap(),
            doc["email"].as_str().unwrap()
        );
        assert_eq!(row.get_str("exam").unwrap(), doc["exam"].as_str().unwrap());
        assert_eq!(Some(int(row, "score")), doc["score"].as_i64());
        assert_eq!(
            row.get_str("result").unwrap(),
            doc["result"].as_str().unwrap()
        );
        assert!(
            matches!(row.get("submitted_at"), Some(Bson::DateTime(_))),
            "submitted_at is a BSON date: {row:?}"
        );
        assert_eq!(
            row.get_array("details").unwrap().len(),
            doc["details"].as_array().unwrap().len()
        );
    }

    // One result by id: its owner and staff see it; another student gets 404.
    let ada_id = accepted[0]["_id"].as_str().unwrap();
    let (status, one) = server
        .get(&format!("/api/results/{ada_id}"), Some(&ada))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, accepted[0]);
    let (status, _) = server
        .get(&format!("/api/results/{ada_id}"), Some(&bob))
        .await;
    assert_eq!(
        status, 404,
        "another student's result does not exist for them"
    );
    let (status, one) = server
        .get(&format!("/api/results/{ada_id}"), Some(&educator))
        .await;
    assert_eq!((status, &one["_id"]), (200, &accepted[0]["_id"]), "{one}");
    let (status, _) = server
        .get(
            &format!("/api/results/{}", ObjectId::new().to_hex()),
            Some(&educator),
        )
        .await;
    assert_eq!(status, 404);

    // Lists: a student sees only their own, staff everything (filters by exam and email).
    let (status, mine) = server.get("/api/results", Some(&ada)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(ids(&mine), ids(&json!(accepted[..2])));
    let (_, mine) = server.get("/api/results", Some(&bob)).await;
    assert_eq!(ids(&mine), ids(&json!([bob_doc])));
    let (status, _) = server
        .get("/api/results?email=ada@example.com", Some(&bob))
        .await;
    assert_eq!(status, 403);
    let (_, all) = server.get("/api/results", Some(&educator)).await;
    assert_eq!(ids(&all), ids(&json!(accepted)));
    let (_, stats) = server
        .get("/api/results?exam=intro-statistics", Some(&educator))
        .await;
    assert_eq!(ids(&stats), ids(&json!(accepted[..2])));
    let (_, bobs) = server
        .get("/api/results?email=bob@example.com", Some(&educator))
        .await;
    assert_eq!(ids(&bobs), ids(&json!([bob_doc])));
    // Newest first.
    let (_, listed) = server
        .get("/api/results?exam=intro-statistics", Some(&ada))
        .await;
    assert_eq!(listed[0]["_id"], accepted[1]["_id"], "{listed}");

    // The server reads MongoDB, not a copy of its own: a document another replica wrote
    // is listed and readable.
    let mut foreign = stored
        .iter()
        .find(|r| r.get_object_id("_id").ok() == Some(oid(&bob_doc["_id"])))
        .unwrap()
        .clone();
    let foreign_id = ObjectId::new();
    foreign.insert("_id", foreign_id);
    foreign.insert("email", "cy@example.com");
    client
        .database(&db)
        .collection::<mongodb::bson::Document>("score")
        .insert_one(foreign)
        .await
        .unwrap();
    let (_, all) = server.get("/api/results", Some(&educator)).await;
    assert_eq!(all.as_array().unwrap().len(), 4, "{all}");
    let cy = server.token("cy@example.com", "student");
    let (status, theirs) = server
        .get(&format!("/api/results/{}", foreign_id.to_hex()), Some(&cy))
        .await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["email"], "cy@example.com");
    assert_eq!(theirs["score"], bob_doc["score"]);
    let (_, mine) = server.get("/api/results", Some(&ada)).await;
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");

    // Nothing of it went to the embedded store (the data dir keeps score cards only).
    let local = rusqlite::Connection::open(server.data_dir.join("examflow.db")).unwrap();
    let embedded: i64 = local
        .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
        .unwrap();
    assert_eq!(embedded, 0, "results went to the embedded store too");
    mongo::drop_database(&client, &db).await;
}

#[tokio::test]
async fn adaptive_sessions_and_calibrations_live_in_mongodb() {
    let Some(uri) = mongo::test_uri("adaptive_sessions_and_calibrations_live_in_mongodb") else {
        return;
    };
    let db = mongo::database_name("adaptive");
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 30);
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.banks = banks;
    serve.config = "[adaptive.policy]\nmax_length = 8\nmin_length = 8\n\
                    [adaptive.exams.algebra]\ncut_score = 0.0\n"
        .into();
    let server = serve.start();
    let client = mongo::client(&uri).await;
    let student = server.token("ada@example.com", "student");
    let educator = server.token("ed@example.com", "educator");

    let (status, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    assert_eq!(status, 201, "{started}");
    let session = started["session"].as_str().unwrap().to_string();
    assert_eq!(started["calibration_version"], 1);
    let rows = mongo::find_all(&client, &db, "adaptive_sessions", doc! {"_id": &session}).await;
    assert_eq!(rows.len(), 1, "the session is in {db}.adaptive_sessions");
    assert_eq!(rows[0].get_str("status").unwrap(), "active");
    assert_eq!(rows[0].get_str("email").unwrap(), "ada@example.com");
    let versions = mongo::find_all(&client, &db, "calibrations", doc! {"exam": "algebra"}).await;
    assert_eq!(
        versions.len(),
        1,
        "version 1 is in {db}.calibrations: {versions:?}"
    );

    // Every answer right, each one stored in MongoDB before its response.
    let mut question = started["question"].clone();
    let done = loop {
        let (status, body) = answer(&server, &student, &session, &question["id"], true).await;
        assert_eq!(status, 200, "{body}");
        let rows = mongo::find_all(&client, &db, "adaptive_sessions", doc! {"_id": &session}).await;
        if body["status"] == "finished" {
            assert_eq!(rows[0].get_str("status").unwrap(), "finished", "{rows:?}");
            break body;
        }
        assert_eq!(
            Some(int(&rows[0], "answered")),
            body["progress"]["answered"].as_i64()
        );
        question = body["question"].clone();
    };
    assert_eq!(done["items_used"], 8, "{done}");
    assert_eq!(done["result"], "passed", "{done}");
    let result_id = done["result_id"].as_str().unwrap().to_string();
    let rows = mongo::find_all(&client, &db, "adaptive_sessions", doc! {"_id": &session}).await;
    assert_eq!(rows[0].get_str("result_id").unwrap(), result_id);
    let stored = mongo::find_all(&client, &db, "score", doc! {}).await;
    assert_eq!(stored.len(), 1, "one result: {stored:?}");
    assert_eq!(stored[0].get_object_id("_id").unwrap().to_hex(), result_id);
    assert_eq!(
        stored[0]
            .get_document("adaptive")
            .unwrap()
            .get_str("session")
            .unwrap(),
        session
    );
    let (status, result) = server
        .get(&format!("/api/results/{result_id}"), Some(&student))
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["adaptive"]["theta"], done["theta"]);
    assert_eq!(result["details"].as_array().unwrap().len(), 8);
    let (status, body) = answer(&server, &student, &session, &question["id"], true).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("session_finished")),
        "{body}"
    );
    let (_, full) = server
        .get(
            &format!("/api/adaptive/sessions/{session}"),
            Some(&educator),
        )
        .await;
    assert_eq!(full["status"], "finished");
    assert_eq!(full["trace"].as_array().unwrap().len(), 8, "{full}");

    // Recalibration: students may not; staff make version 2, stored in MongoDB.
    let (status, _) = server
        .post("/api/exams/algebra/calibrate", Some(&student), &json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, calibration) = server
        .post("/api/exams/algebra/calibrate", Some(&educator), &json!({}))
        .await;
    assert_eq!(status, 201, "{calibration}");
    assert_eq!(calibration["version"], 2);
    assert_eq!(
        calibration["responses"], 1,
        "the adaptive result: {calibration}"
    );
    let versions = mongo::find_all(&client, &db, "calibrations", doc! {"exam": "algebra"}).await;
    let mut numbers: Vec<i64> = versions.iter().map(|v| int(v, "version")).collect();
    numbers.sort();
    assert_eq!(numbers, vec![1, 2], "{versions:?}");
    let v2 = versions.iter().find(|v| int(v, "version") == 2).unwrap();
    assert_eq!(int(v2, "responses"), 1);
    let params: Value = serde_json::from_str(v2.get_str("params").unwrap()).unwrap();
    assert_eq!(
        params, calibration["items"],
        "the stored parameters are the returned ones"
    );
    let (_, listed) = server
        .get("/api/exams/algebra/calibrations", Some(&educator))
        .await;
    let listed: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![2, 1]);
    let (status, one) = server
        .get("/api/exams/algebra/calibrations/2", Some(&educator))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["items"], calibration["items"]);
    // A new session starts on the newest version; the finished one keeps version 1.
    let (_, again) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    assert_eq!(again["calibration_version"], 2, "{again}");
    assert_eq!(result["adaptive"]["calibration_version"], 1);
    mongo::drop_database(&client, &db).await;
}

/// Stored fixed-form results calibrate the exam: 200 submissions simulated from a 2PL
/// model (a = 1.5, b from -2 to 2 in bank order), all read back from MongoDB.
#[tokio::test]
async fn calibration_fits_the_results_stored_in_mongodb() {
    let Some(uri) = mongo::test_uri("calibration_fits_the_results_stored_in_mongodb") else {
        return;
    };
    let db = mongo::database_name("calibrate");
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 6);
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.banks = banks;
    serve.config =
        "[adaptive]\nmin_item_responses = 20\n[limits]\nsubmissions_per_minute = 0\n".into();
    let server = serve.start();
    let educator = server.token("ed@example.com", "educator");
    let students: Vec<String> = (0..4)
        .map(|s| server.token(&format!("s{s}@example.com"), "student"))
        .collect();
    let mut stream = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        stream ^= stream << 13;
        stream ^= stream >> 7;
        stream ^= stream << 17;
        (stream >> 11) as f64 / (1u64 << 53) as f64
    };
    const N: usize = 200;
    for s in 0..N {
        let theta =
            (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
        let answers: Vec<&str> = (0..6)
            .map(|i| {
                let b = -2.0 + 4.0 * i as f64 / 5.0;
                let p = 1.0 / (1.0 + (-1.5 * (theta - b)).exp());
                if uniform() < p { "right" } else { "wrong" }
            })
            .collect();
        let (status, body) = server
            .post(
                "/api/exams/algebra/submissions",
                Some(&students[s % students.len()]),
                &json!({"answers": answers}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let client = mongo::client(&uri).await;
    let stored = client
        .database(&db)
        .collection::<mongodb::bson::Document>("score")
        .count_documents(doc! {"exam": "algebra"})
        .await
        .unwrap();
    assert_eq!(stored, N as u64);

    let (status, calibration) = server
        .post("/api/exams/algebra/calibrate", Some(&educator), &json!({}))
        .await;
    assert_eq!(status, 201, "{calibration}");
    assert_eq!(calibration["version"], 1, "{calibration}");
    assert_eq!(calibration["responses"], N, "{calibration}");
    let items = calibration["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .all(|i| i["responses"] == N && i["provisional"] == false),
        "{calibration}"
    );
    assert_eq!(calibration["summary"]["converged"], true, "{calibration}");
    let b: Vec<f64> = items.iter().map(|i| i["b"].as_f64().unwrap()).collect();
    assert!(
        b.windows(2).all(|w| w[0] < w[1]),
        "difficulties in bank order: {b:?}"
    );
    assert!(b[0] < -1.0 && b[5] > 1.0, "{b:?}");

    let rows = mongo::find_all(&client, &db, "calibrations", doc! {"exam": "algebra"}).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let params: Value = serde_json::from_str(rows[0].get_str("params").unwrap()).unwrap();
    assert_eq!(
        &params, &calibration["items"],
        "the stored parameters are the fitted ones"
    );
    assert_eq!(rows[0].get_str("source").unwrap(), "calibration");
    mongo::drop_database(&client, &db).await;
}

#[tokio::test]
async fn fixed_form_attempts_are_saved_and_submitted_in_mongodb() {
    let Some(uri) = mongo::test_uri("fixed_form_attempts_are_saved_and_submitted_in_mongodb")
    else {
        return;
    };
    let db = mongo::database_name("attempts");
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "quiz", 3);
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.banks = banks;
    let server = serve.start();
    let client = mongo::client(&uri).await;
    let ann = server.token("ann@example.com", "student");
    let bob = server.token("bob@example.com", "student");

    let (status, attempt) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(status, 201, "{attempt}");
    let id = attempt["attempt_id"].as_str().unwrap().to_string();
    assert_eq!(attempt["answers"], json!([null, null, null]));
    let (status, again) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(
        (status, &again["attempt_id"]),
        (200, &attempt["attempt_id"]),
        "{again}"
    );
    let rows = mongo::find_all(&client, &db, "exam_attempts", doc! {}).await;
    assert_eq!(
        rows.len(),
        1,
        "one open attempt in {db}.exam_attempts: {rows:?}"
    );
    assert_eq!(rows[0].get_str("_id").unwrap(), id);
    assert_eq!(rows[0].get_str("status").unwrap(), "open");

    let path = |i: usize| format!("/api/attempts/{id}/answers/{i}");
    let (status, saved) = put(&server, &path(0), &ann, &json!({"answer": "right"})).await;
    assert_eq!(status, 200, "{saved}");
    let (status, _) = put(
        &server,
        &path(1),
        &ann,
        &json!({"answer": 1, "flagged": true}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = put(&server, &path(2), &ann, &json!({"answer": "right"})).await;
    assert_eq!(status, 200);
    let (status, _) = put(&server, &path(2), &ann, &json!({"answer": null})).await;
    assert_eq!(status, 200);
    let (status, _) = put(&server, &path(0), &bob, &json!({"answer": "wrong"})).await;
    assert_eq!(
        status, 404,
        "another student's attempt does not exist for them"
    );
    // Each save is in MongoDB when answered.
    let rows = mongo::find_all(&client, &db, "exam_attempts", doc! {"_id": &id}).await;
    let answers = rows[0].get_array("answers").unwrap();
    assert_eq!(answers[0], Bson::String("right".into()), "{rows:?}");
    assert_eq!(answers[1], Bson::String("wrong".into()), "{rows:?}");
    assert_eq!(answers[2], Bson::Null, "{rows:?}");
    assert_eq!(rows[0].get_array("flags").unwrap()[1], Bson::Boolean(true));
    let (_, seen) = server.get(&format!("/api/attempts/{id}"), Some(&ann)).await;
    assert_eq!(seen["answers"], json!(["right", "wrong", null]), "{seen}");

    let (status, result) = server
        .post(
            &format!("/api/attempts/{id}/submit"),
            Some(&ann),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{result}");
    assert_eq!(
        (result["score"].as_i64(), result["total"].as_i64()),
        (Some(1), Some(3))
    );
    let (status, twice) = server
        .post(
            &format!("/api/attempts/{id}/submit"),
            Some(&ann),
            &json!({}),
        )
        .await;
    assert_eq!((status, &twice["_id"]), (200, &result["_id"]), "{twice}");
    let (status, body) = put(&server, &path(2), &ann, &json!({"answer": "right"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("attempt_closed")),
        "{body}"
    );
    let scores = mongo::find_all(&client, &db, "score", doc! {}).await;
    assert_eq!(scores.len(), 1, "one result: {scores:?}");
    assert_eq!(scores[0].get_object_id("_id").unwrap(), oid(&result["_id"]));
    let rows = mongo::find_all(&client, &db, "exam_attempts", doc! {"_id": &id}).await;
    assert_eq!(rows[0].get_str("status").unwrap(), "submitted", "{rows:?}");
    assert_eq!(
        rows[0].get_str("result_id").unwrap(),
        result["_id"].as_str().unwrap()
    );
    let (_, done) = server.get(&format!("/api/attempts/{id}"), Some(&ann)).await;
    assert_eq!(done["result"]["_id"], result["_id"], "{done}");
    let (status, next) = server
        .post("/api/exams/quiz/attempts", Some(&ann), &json!({}))
        .await;
    assert_eq!(
        status, 201,
        "a new attempt once the last is submitted: {next}"
    );
    assert_ne!(next["attempt_id"], attempt["attempt_id"]);
    mongo::drop_database(&client, &db).await;
}

/// Submits three world-geography results (two passed, one failed), then waits up to
/// `wait` for the educator's report to count them; `Err` holds the last report.
async fn report_counts_three_results(server: &Server, wait: Duration) -> Result<Value, Value> {
    let educator = server.token("ed@example.com", "educator");
    let key = answer_key(&sample_banks(), "world-geography");
    let wrong = wrong_answers(&sample_banks(), "world-geography");
    for (s, answers) in [&key, &wrong, &key].into_iter().enumerate() {
        let token = server.token(&format!("r{s}@example.com"), "student");
        let (status, body) = server
            .post(
                "/api/exams/world-geography/submissions",
                Some(&token),
                &json!({"answers": answers}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let path = "/api/reports/exams/world-geography?format=json";
    // Change capture may lag behind the 201s.
    let counted = eventually(wait, || async {
        let (status, report) = server.get(path, Some(&educator)).await;
        assert_eq!(status, 200, "{report}");
        (report["summary"]["results"] == 3).then_some(report)
    })
    .await;
    let Some(report) = counted else {
        return Err(server.get(path, Some(&educator)).await.1);
    };
    assert_eq!(report["summary"]["takers"], 3, "{report}");
    assert_eq!(report["summary"]["passed"], 2, "{report}");
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    assert_eq!(report["students"].as_array().unwrap().len(), 3, "{report}");
    let (status, list) = server.get("/api/reports/exams", Some(&educator)).await;
    assert_eq!(status, 200, "{list}");
    assert!(list.to_string().contains("world-geography"), "{list}");
    Ok(report)
}

/// KNOWN GAP, left failing on purpose: score reports are computed from the lake's `scores`
/// (change events). A MongoDB-backed `serve` without Kafka captures the changes of
/// `<db>.score` into its own score cards only, never into its lake, so an educator's
/// report counts none of the results stored in MongoDB.
#[tokio::test]
async fn reports_count_results_stored_in_mongodb() {
    let Some(uri) = mongo::test_uri("reports_count_results_stored_in_mongodb") else {
        return;
    };
    let db = mongo::database_name("reports");
    let dir = tempfile::tempdir().unwrap();
    let server = MongoServe::new(&uri, &db, &dir.path().join("data")).start();
    if let Err(report) = report_counts_three_results(&server, Duration::from_secs(20)).await {
        panic!(
            "KNOWN GAP (MongoDB without Kafka): GET /api/reports/exams/NAME does not count \
             results stored in MongoDB. Reports read the lake's `scores`; a MongoDB-backed \
             serve fills it only from Kafka change events (Debezium or examflow's own capture \
             with --kafka-brokers), and without Kafka its change capture feeds score cards \
             only. The 3 results submitted here are not in the report after 20 s: {report}"
        );
    }
    mongo::drop_database(&mongo::client(&uri).await, &db).await;
}

/// With Kafka, the server's change capture of `<db>.score` publishes Debezium-shaped events
/// that its own lake ingest consumes: the report counts results stored in MongoDB.
#[tokio::test(flavor = "multi_thread")]
async fn reports_count_mongodb_results_through_kafka_change_capture() {
    let test = "reports_count_mongodb_results_through_kafka_change_capture";
    let Some(uri) = mongo::test_uri(test) else {
        return;
    };
    let brokers = match std::env::var("EXAMFLOW_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => b,
        _ => {
            eprintln!(
                "\n*** SKIPPED: MongoDB test {test}: EXAMFLOW_TEST_KAFKA_BROKERS is not set ***\n"
            );
            return;
        }
    };
    let db = mongo::database_name("reports_kafka");
    let prefix = common::unique("mrep");
    let dir = tempfile::tempdir().unwrap();
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.config = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{prefix}\"\n\
         email_topic = \"{prefix}-email\"\nscore_card_group = \"{prefix}-cards\"\n\
         session_timeout_ms = 6000\n\
         [ingest]\ngroup_id = \"{prefix}-ingest\"\nattempts_topic = \"{prefix}-exams\"\n"
    );
    let server = serve.start();
    if let Err(report) = report_counts_three_results(&server, Duration::from_secs(60)).await {
        panic!(
            "with Kafka, the report does not count the 3 results stored in MongoDB after 60 s: \
             {report}\nlog:\n{}",
            server.log()
        );
    }
    mongo::drop_database(&mongo::client(&uri).await, &db).await;
}
