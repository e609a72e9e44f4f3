//! Several `examflow serve --mongodb-uri` processes on one MongoDB database (sessions
//! continued on another replica, calibration versions numbered once), and durability:
//! results acknowledged with 201 survive kill -9 of the server, and of MongoDB too.
//! MongoDB: the server of `EXAMFLOW_TEST_MONGODB_URI`, or one of the test's own started
//! with `EXAMFLOW_TEST_MONGO_SERVER` (scripts/mongo-server).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use common::mongo::{self, MongoServe, OwnMongo, int, write_bank};
use mongodb::bson::{doc, oid::ObjectId};
use serde_json::{Value, json};

/// Two servers on one database, each with its own data dir but the same token secret
/// (replicas behind one load balancer).
fn two_servers(uri: &str, db: &str, root: &Path, banks: &Path, config: &str) -> (Server, Server) {
    let start = |name: &str| {
        let mut serve = MongoServe::new(uri, db, &root.join(name));
        serve.banks = banks.to_path_buf();
        serve.config = config.to_string();
        serve
    };
    let a = start("a").start();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::copy(root.join("a/jwt-secret"), root.join("b/jwt-secret")).unwrap();
    let b = start("b").start();
    (a, b)
}

/// The exam's calibration versions in MongoDB: (version, responses), by version.
async fn stored_versions(client: &mongodb::Client, db: &str, exam: &str) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = mongo::find_all(client, db, "calibrations", doc! {"exam": exam})
        .await
        .iter()
        .map(|d| (int(d, "version"), int(d, "responses")))
        .collect();
    v.sort();
    v
}

/// Waits until the versions stay the same for `quiet` (both schedules have had ticks).
async fn settled_versions(
    client: &mongodb::Client,
    db: &str,
    exam: &str,
    quiet: Duration,
) -> Vec<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = stored_versions(client, db, exam).await;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "calibrations never settle: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = stored_versions(client, db, exam).await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// Versions 1..=n, each fitted on more responses than the one before (the same responses
/// are never fitted twice by two replicas).
fn assert_numbered_once(versions: &[(i64, i64)]) {
    let numbers: Vec<i64> = versions.iter().map(|v| v.0).collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(
        numbers, expected,
        "versions gap- and duplicate-free: {versions:?}"
    );
    assert!(
        versions.windows(2).all(|w| w[0].1 < w[1].1),
        "a version was added without new responses (two replicas fitted the same ones): \
         {versions:?}"
    );
}

#[tokio::test]
async fn two_servers_continue_one_session_and_number_calibrations_once() {
    let test = "two_servers_continue_one_session_and_number_calibrations_once";
    let Some(uri) = mongo::test_uri(test) else {
        return;
    };
    let db = mongo::database_name("replicas");
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 30);
    let config = "[adaptive]\ncalibrate_interval_secs = 1\n\
                  [adaptive.policy]\nmax_length = 8\nmin_length = 8\n\
                  [limits]\nsubmissions_per_minute = 0\n";
    let (a, b) = two_servers(&uri, &db, dir.path(), &banks, config);
    let client = mongo::client(&uri).await;
    let student = a.token("ada@example.com", "student");
    let educator = a.token("ed@example.com", "educator");

    // Started on A, answered alternately on B and A, finished on whichever comes last.
    let (status, started) = a
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    assert_eq!(status, 201, "{started}");
    let session = started["session"].as_str().unwrap().to_string();
    let path = format!("/api/adaptive/sessions/{session}/answers");
    let mut question = started["question"].clone();
    let mut n = 0;
    let done = loop {
        let server = if n % 2 == 0 { &b } else { &a };
        let (status, body) = server
            .post(
                &path,
                Some(&student),
                &json!({"item": question["id"], "answer": "right"}),
            )
            .await;
        assert_eq!(
            status,
            200,
            "answer {n} on {}: {body}",
            if n % 2 == 0 { "B" } else { "A" }
        );
        n += 1;
        assert_eq!(body["progress"]["answered"], n, "{body}");
        if body["status"] == "finished" {
            break body;
        }
        question = body["question"].clone();
        // The other replica sees the same pending question.
        let other = if n % 2 == 0 { &b } else { &a };
        let (_, state) = other
            .get(&format!("/api/adaptive/sessions/{session}"), Some(&student))
            .await;
        assert_eq!(state["question"]["id"], question["id"], "{state}");
    };
    assert_eq!(n, 8);
    let result_id = done["result_id"].as_str().unwrap();
    for server in [&a, &b] {
        let (status, full) = server
            .get(
                &format!("/api/adaptive/sessions/{session}"),
                Some(&educator),
            )
            .await;
        assert_eq!(status, 200, "{full}");
        assert_eq!(full["status"], "finished");
        assert_eq!(full["trace"].as_array().unwrap().len(), 8, "{full}");
        let (status, result) = server
            .get(&format!("/api/results/{result_id}"), Some(&student))
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["adaptive"]["session"], session);
    }
    let results = mongo::find_all(&client, &db, "score", doc! {"adaptive.session": &session}).await;
    assert_eq!(results.len(), 1, "one result for the session: {results:?}");

    // Two answers to the same pending question at once on both replicas: one counts.
    let (_, second) = a
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    let session2 = second["session"].as_str().unwrap().to_string();
    let path2 = format!("/api/adaptive/sessions/{session2}/answers");
    let body = json!({"item": second["question"]["id"], "answer": "right"});
    let ((s1, r1), (s2, r2)) = tokio::join!(
        a.post(&path2, Some(&student), &body),
        b.post(&path2, Some(&student), &body)
    );
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{r1} {r2}");
    let refused = if s1 == 409 { &r1 } else { &r2 };
    assert!(
        ["answered_concurrently", "already_answered", "wrong_item"]
            .contains(&refused["error"]["code"].as_str().unwrap_or("")),
        "{refused}"
    );
    let rows = mongo::find_all(&client, &db, "adaptive_sessions", doc! {"_id": &session2}).await;
    assert_eq!(int(&rows[0], "answered"), 1, "{rows:?}");

    // Both schedules tick every second: the new responses are fitted once.
    let versions = settled_versions(&client, &db, "algebra", Duration::from_secs(4)).await;
    assert_numbered_once(&versions);
    let before = versions.len();
    let (status, body) = b
        .post(
            "/api/exams/algebra/submissions",
            Some(&student),
            &json!({"answers": vec!["right"; 30]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored_versions(&client, &db, "algebra").await.len() == before {
        assert!(
            Instant::now() < deadline,
            "no scheduled calibration after a new result"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let versions = settled_versions(&client, &db, "algebra", Duration::from_secs(4)).await;
    assert_numbered_once(&versions);
    assert_eq!(
        versions.len(),
        before + 1,
        "one new version for one new result: {versions:?}"
    );

    // Calibrations asked of both at once: each its own number, no gap, no duplicate.
    let path = "/api/exams/algebra/calibrate";
    let empty = json!({});
    let ((s1, c1), (s2, c2)) = tokio::join!(
        a.post(path, Some(&educator), &empty),
        b.post(path, Some(&educator), &empty)
    );
    assert_eq!((s1, s2), (201, 201), "{c1} {c2}");
    let mut made = [
        c1["version"].as_i64().unwrap(),
        c2["version"].as_i64().unwrap(),
    ];
    made.sort();
    let latest = versions.len() as i64;
    assert_eq!(made, [latest + 1, latest + 2], "{c1} {c2}");
    let numbers: Vec<i64> = stored_versions(&client, &db, "algebra")
        .await
        .iter()
        .map(|v| v.0)
        .collect();
    assert_eq!(numbers, (1..=latest + 2).collect::<Vec<_>>());
    mongo::drop_database(&client, &db).await;
}

/// Every accepted document is in `<db>.score` with its fields.
async fn assert_stored(client: &mongodb::Client, db: &str, accepted: &[Value]) {
    let stored = mongo::find_all(client, db, "score", doc! {}).await;
    assert_eq!(stored.len(), accepted.len(), "{stored:?}");
    for doc in accepted {
        let id = ObjectId::parse_str(doc["_id"].as_str().unwrap()).unwrap();
        let row = stored
            .iter()
            .find(|r| r.get_object_id("_id").ok() == Some(id))
            .unwrap_or_else(|| panic!("result {id} acknowledged with 201 is lost"));
        assert_eq!(
            row.get_str("email").unwrap(),
            doc["email"].as_str().unwrap()
        );
        assert_eq!(Some(int(row, "score")), doc["score"].as_i64());
        assert_eq!(row.get_array("details").unwrap().len(), 12);
    }
}

#[tokio::test]
async fn results_survive_kill_9_of_the_server_right_after_201() {
    let Some(uri) = mongo::test_uri("results_survive_kill_9_of_the_server_right_after_201") else {
        return;
    };
    let db = mongo::database_name("kill9");
    let dir = tempfile::tempdir().unwrap();
    let serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    let mut accepted = Vec::new();
    for round in 0..3 {
        let mut server = serve.start();
        let token = server.token(&format!("k{round}@example.com"), "student");
        accepted.extend(server.submit_answer_key(&token, 5).await);
        // SIGKILL immediately after the last 201: no shutdown, no flush.
        server.kill9();
    }
    let client = mongo::client(&uri).await;
    assert_stored(&client, &db, &accepted).await;
    // And a server started again reads them all.
    let server = serve.start();
    let educator = server.token("ed@example.com", "educator");
    for doc in &accepted {
        let (status, stored) = server
            .get(
                &format!("/api/results/{}", doc["_id"].as_str().unwrap()),
                Some(&educator),
            )
            .await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(&stored, doc);
    }
    mongo::drop_database(&client, &db).await;
}

/// 201 means written with `w: majority, j: true`: kill -9 of examflow and of MongoDB right
/// after the last 201, then MongoDB started again on its files, still has every result.
#[tokio::test]
async fn results_survive_kill_9_of_mongodb_too() {
    let Some(mut own) = OwnMongo::start("results_survive_kill_9_of_mongodb_too", &[]) else {
        return;
    };
    let db = mongo::database_name("kill9db");
    let dir = tempfile::tempdir().unwrap();
    let mut server = MongoServe::new(&own.uri, &db, &dir.path().join("data")).start();
    let token = server.token("dur@example.com", "student");
    let accepted = server.submit_answer_key(&token, 10).await;
    own.kill9();
    server.kill9();
    own.restart();
    let client = mongo::client(&own.uri).await;
    assert_stored(&client, &db, &accepted).await;
}

/// On a standalone server (no transactions: the result is written before the session's
/// final state) an adaptive session still finishes with exactly one result.
#[tokio::test]
async fn a_standalone_mongodb_serves_adaptive_sessions() {
    let Some((uri, _own)) = mongo::standalone_uri("a_standalone_mongodb_serves_adaptive_sessions")
    else {
        return;
    };
    let db = mongo::database_name("standalone");
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 20);
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.banks = banks;
    serve.config = "[adaptive.policy]\nmax_length = 5\nmin_length = 5\n".into();
    let server = serve.start();
    let student = server.token("solo@example.com", "student");
    let (status, started) = server
        .post("/api/adaptive/algebra/sessions", Some(&student), &json!({}))
        .await;
    assert_eq!(status, 201, "{started}\n{}", server.log());
    let session = started["session"].as_str().unwrap().to_string();
    let mut question = started["question"].clone();
    let done = loop {
        let (status, body) = server
            .post(
                &format!("/api/adaptive/sessions/{session}/answers"),
                Some(&student),
                &json!({"item": question["id"], "answer": "wrong"}),
            )
            .await;
        assert_eq!(status, 200, "{body}\n{}", server.log());
        if body["status"] == "finished" {
            break body;
        }
        question = body["question"].clone();
    };
    assert_eq!(done["items_used"], 5, "{done}");
    let client = mongo::client(&uri).await;
    let results = mongo::find_all(&client, &db, "score", doc! {}).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        results[0].get_object_id("_id").unwrap().to_hex(),
        done["result_id"].as_str().unwrap()
    );
    let (status, result) = server
        .get(
            &format!("/api/results/{}", done["result_id"].as_str().unwrap()),
            Some(&student),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["score"], 0);
    let rows = mongo::find_all(&client, &db, "adaptive_sessions", doc! {"_id": &session}).await;
    assert_eq!(rows[0].get_str("status").unwrap(), "finished", "{rows:?}");
    mongo::drop_database(&client, &db).await;
}

/// Change capture retries by itself (it never ends), so its failures reach `/readyz` and
/// `/metrics` as reports: on a standalone server, which cannot stream changes, the task is
/// shown failing with the reason, counted, and the server is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_change_capture_shows_in_readyz_and_metrics() {
    let Some((uri, _own)) =
        mongo::standalone_uri("failing_change_capture_shows_in_readyz_and_metrics")
    else {
        return;
    };
    let db = mongo::database_name("cdcfail");
    let dir = tempfile::tempdir().unwrap();
    let server = MongoServe::new(&uri, &db, &dir.path().join("data")).start();
    let failing = common::eventually(std::time::Duration::from_secs(30), || async {
        let (status, body) = server.get("/readyz", None).await;
        let task = &body["tasks"]["change-capture"];
        (status == 503 && task["restarts"].as_u64().unwrap_or(0) >= 1).then_some(body)
    })
    .await;
    let (_, last) = server.get("/readyz", None).await;
    let body = failing.unwrap_or_else(|| panic!("{last}\n{}", server.log()));
    let error = body["tasks"]["change-capture"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("replica set"), "{body}");
    let metrics = server.metrics().await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("examflow_task_failures_total{task=\"change-capture\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}
