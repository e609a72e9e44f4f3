//! The seed's whole flow with examflow's own change capture instead of Debezium, against a
//! real Kafka-compatible broker and a real MongoDB-compatible server: a student submits →
//! the document is in `exams.score` → its change event is on
//! `<prefix>.exams.score` → its card is on `email-topic` → the lake's `scores` counts it.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{OwnBroker, Record, consume_until, free_port, test_brokers};
use common::mongo::{MongoServe, OwnMongo, client, database_name, drop_database, test_uri};
use common::{Server, answer_key, eventually, sample_banks, unique};
use examflow_ingest::debezium::{ChangeEvent, Operation, parse_change_event};
use examflow_ingest::score_cards::{CardDecision, decide};
use mongodb::bson::{Document, doc, oid::ObjectId};
use serde_json::{Value, json};

/// `[kafka]`, `[ingest]` and `[cdc]` settings giving a test its own topics and groups.
fn kafka_toml(brokers: &str, prefix: &str, cdc_enabled: bool, lease_secs: u64) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{prefix}\"\nemail_topic = \"{prefix}-email\"\n\
         score_card_group = \"{prefix}-cards\"\nsession_timeout_ms = 6000\n\
         [ingest]\ngroup_id = \"{prefix}-ingest\"\ntransaction_app_id = \"{prefix}-ingest\"\n\
         attempts_topic = \"{prefix}-attempts\"\ncommit_interval_ms = 500\n\
         [cdc]\nenabled = {cdc_enabled}\nlease_secs = {lease_secs}\n\
         [limits]\nsubmissions_per_minute = 0\n"
    )
}

/// A running `examflow cdc` (killed with SIGKILL on drop).
struct CdcProcess {
    child: Child,
    log: PathBuf,
}

impl CdcProcess {
    fn start(dir: &Path, uri: &str, database: &str, brokers: &str, prefix: &str) -> CdcProcess {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("cdc.toml");
        std::fs::write(&config, "[cdc]\nlease_secs = 2\n").unwrap();
        let log = dir.join("cdc.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_examflow"))
            .arg("--config")
            .arg(&config)
            .args(["cdc", "--mongodb-uri", uri, "--kafka-brokers", brokers])
            .args(["--database", database, "--topic-prefix", prefix])
            .env("EXAMFLOW_LOG", "info")
            .env_remove("EXAMFLOW_MONGODB_URI")
            .env_remove("EXAMFLOW_KAFKA_BROKERS")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting examflow cdc");
        CdcProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `needle` `times` times.
    fn wait_for_log(&self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "examflow cdc never logged {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(
            exit.success(),
            "examflow cdc exited with {exit}:\n{}",
            self.log()
        );
    }
}

impl Drop for CdcProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads `topic` on a blocking thread until `done`.
async fn consume(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    let (b, t) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || consume_until(&b, &t, timeout, done))
        .await
        .unwrap()
}

/// Every record through the checks the captured Debezium fixtures go through
/// (ingest/tests/debezium_fixtures.rs): the parser understands it, `op`, `source` and the
/// key agree, and the card decision is the one Debezium's event would get.
fn check_like_debezium(record: &Record, db: &str) -> Option<(Operation, String)> {
    let key = record.key.as_deref().expect("every change event has a key");
    let key_json: Value = serde_json::from_str(key).unwrap();
    assert!(key_json["id"].is_string(), "key {key}");
    let Some(value) = record.value.as_deref() else {
        match parse_change_event(Some(key.as_bytes()), None).unwrap() {
            ChangeEvent::Tombstone { document_id } => assert!(document_id.is_some()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(Some(key.as_bytes()), None),
            CardDecision::Skip {
                reason: "tombstone"
            }
        );
        return None;
    };
    let envelope: Value = serde_json::from_str(value).unwrap();
    assert_eq!(envelope["source"]["connector"], "mongodb", "{value}");
    assert_eq!(envelope["source"]["db"], db);
    assert_eq!(envelope["source"]["collection"], "score");
    assert!(envelope["source"]["ord"].is_i64(), "{value}");
    assert!(envelope["source"]["ts_ms"].as_i64().unwrap() > 0, "{value}");
    assert!(envelope["ts_ms"].as_i64().unwrap() > 0, "{value}");
    assert!(
        envelope["after"].is_string() || envelope["after"].is_null(),
        "after is a string of extended JSON: {value}"
    );
    let ChangeEvent::Change(change) =
        parse_change_event(Some(key.as_bytes()), Some(value.as_bytes())).unwrap()
    else {
        panic!("not a change: {value}")
    };
    assert_eq!(change.db.as_deref(), Some(db));
    let id = change.document_id.clone().expect("a document id");
    let decision = decide(Some(key.as_bytes()), Some(value.as_bytes()));
    match change.op {
        Operation::Create | Operation::Update if change.after.is_some() => {
            assert!(
                matches!(decision, CardDecision::Send { ref document_id, .. } if *document_id == id),
                "{decision:?}"
            );
        }
        Operation::Read => assert_eq!(
            decision,
            CardDecision::Skip {
                reason: "snapshot read"
            }
        ),
        Operation::Delete => assert_eq!(decision, CardDecision::Skip { reason: "delete" }),
        _ => {}
    }
    Some((change.op, id))
}

async fn sql_rows(server: &Server, token: &str, sql: &str) -> Value {
    let (status, rows) = server
        .post("/api/sql", Some(token), &json!({ "sql": sql }))
        .await;
    assert_eq!(status, 200, "{rows}");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_flows_from_mongodb_to_a_card_and_the_lake() {
    let Some(uri) = test_uri("cdc seed flow") else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_flow");
    let prefix = unique("cdcflow");
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.config = kafka_toml(&brokers, &prefix, true, 10);
    let server = serve.start();
    let mongo = client(&uri).await;

    let student = server.token("cdc@example.com", "student");
    let (status, doc) = server
        .post(
            "/api/exams/world-geography/submissions",
            Some(&student),
            &json!({"answers": answer_key(&sample_banks(), "world-geography")}),
        )
        .await;
    assert_eq!(status, 201, "{doc}");
    let id = doc["_id"].as_str().unwrap().to_string();
    let oid = ObjectId::parse_str(&id).unwrap();
    let scores = mongo.database(&db).collection::<Document>("score");
    assert!(
        scores.find_one(doc! {"_id": oid}).await.unwrap().is_some(),
        "the result is in {db}.score"
    );

    // Its change event, in Debezium's envelope.
    let topic = format!("{prefix}.exams.score");
    // The server fixed capture's start before it took requests, so the result is a
    // create (the first start's snapshot may also read it: a repeat as `op: "r"`).
    fn is_create(r: &Record) -> bool {
        r.value
            .as_deref()
            .is_some_and(|v| v.contains("\"op\":\"c\""))
    }
    let events = consume(&brokers, &topic, Duration::from_secs(60), |r| {
        r.iter().any(is_create)
    })
    .await;
    let checked: Vec<_> = events.iter().map(|e| check_like_debezium(e, &db)).collect();
    let (create, read) = (
        Some((Operation::Create, id.clone())),
        Some((Operation::Read, id.clone())),
    );
    assert!(
        checked.contains(&create) && checked.iter().all(|c| *c == create || *c == read),
        "change events: {checked:?}\n{}",
        server.log()
    );
    let events: Vec<Record> = events.into_iter().filter(is_create).collect();
    let envelope: Value = serde_json::from_str(events[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(envelope["source"]["name"], prefix.as_str());
    assert_eq!(envelope["source"]["snapshot"], "false");
    let after: Value = serde_json::from_str(envelope["after"].as_str().unwrap()).unwrap();
    assert_eq!(after["_id"]["$oid"], id.as_str());
    assert_eq!(after["email"], "cdc@example.com");

    // Its card on email-topic, keyed by the document id.
    let email_topic = format!("{prefix}-email");
    let cards = consume(&brokers, &email_topic, Duration::from_secs(60), |r| {
        !r.is_empty()
    })
    .await;
    assert_eq!(cards.len(), 1, "score card: {}", server.log());
    assert_eq!(cards[0].key.as_deref(), Some(id.as_str()));
    assert!(
        cards[0]
            .value
            .as_deref()
            .unwrap()
            .starts_with("Exam-Generator - Score Card\n\nStudent: cdc@example.com\n"),
        "{:?}",
        cards[0].value
    );

    // The lake's `scores` counts it.
    let analyst = server.token("ana@example.com", "analyst");
    let counted = eventually(Duration::from_secs(60), || async {
        let rows = sql_rows(
            &server,
            &analyst,
            "SELECT count(*) AS n FROM scores WHERE NOT deleted",
        )
        .await;
        (rows[0]["n"] == 1).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "scores never counted it: {}",
        server.log()
    );

    // An update makes a new card with the new score; a delete sends a delete and its
    // tombstone and no card, and `scores` marks it deleted.
    scores
        .update_one(
            doc! {"_id": oid},
            doc! {"$set": {"score": 1_i64, "percentage": 10_i64, "result": "failed"}},
        )
        .await
        .unwrap();
    scores.delete_one(doc! {"_id": oid}).await.unwrap();
    let events = consume(&brokers, &topic, Duration::from_secs(60), |r| {
        r.iter().any(|e| e.value.is_none())
    })
    .await;
    let ops: Vec<Option<Operation>> = events
        .iter()
        .map(|r| check_like_debezium(r, &db).map(|(op, _)| op))
        .filter(|op| *op != Some(Operation::Read))
        .collect();
    assert_eq!(
        ops,
        vec![
            Some(Operation::Create),
            Some(Operation::Update),
            Some(Operation::Delete),
            None
        ],
        "create, update, delete, tombstone"
    );
    let cards = consume(&brokers, &email_topic, Duration::from_secs(60), |r| {
        r.len() >= 2
    })
    .await;
    // The update's looked-up document may already be gone (deleted right after): then
    // Debezium, and examflow, send `after: null` and there is no card to make.
    let update = events
        .iter()
        .find(|e| {
            e.value
                .as_deref()
                .is_some_and(|v| v.contains("\"op\":\"u\""))
        })
        .unwrap();
    let update: Value = serde_json::from_str(update.value.as_ref().unwrap()).unwrap();
    if update["after"].is_string() {
        assert_eq!(cards.len(), 2, "{cards:?}");
        assert!(
            cards[1]
                .value
                .as_deref()
                .unwrap()
                .contains("Result: FAILED")
        );
    }
    let deleted = eventually(Duration::from_secs(60), || async {
        let rows = sql_rows(
            &server,
            &analyst,
            "SELECT count(*) AS n FROM scores WHERE deleted",
        )
        .await;
        (rows[0]["n"] == 1).then_some(())
    })
    .await;
    assert!(
        deleted.is_some(),
        "scores never saw the delete: {}",
        server.log()
    );
    drop_database(&mongo, &db).await;
}

fn result_document(i: usize) -> Document {
    doc! {
        "email": format!("pre{i}@example.com"),
        "exam": "world-geography",
        "score": (i % 5) as i64,
        "total": 5_i64,
        "percentage": ((i % 5) * 20) as i64,
        "result": if i % 5 >= 3 { "passed" } else { "failed" },
        "details": [],
        "submitted_at": mongodb::bson::DateTime::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefilled_collection_is_snapshot_then_streamed() {
    let Some(uri) = test_uri("cdc snapshot") else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_snapshot");
    let prefix = unique("cdcsnap");
    let mongo = client(&uri).await;
    let scores = mongo.database(&db).collection::<Document>("score");
    scores
        .insert_many((0..25).map(result_document))
        .await
        .unwrap();

    let cdc = CdcProcess::start(dir.path(), &uri, &db, &brokers, &prefix);
    cdc.wait_for_log("snapshot done", 1, Duration::from_secs(60));
    let late = scores.insert_one(result_document(99)).await.unwrap();
    let late_id = late.inserted_id.as_object_id().unwrap().to_hex();

    let topic = format!("{prefix}.exams.score");
    let events = consume(&brokers, &topic, Duration::from_secs(60), |r| r.len() >= 26).await;
    assert_eq!(events.len(), 26, "{}", cdc.log());
    let mut reads = HashSet::new();
    let mut last_marks = 0;
    for e in &events {
        let (op, id) = check_like_debezium(e, &db).unwrap();
        let envelope: Value = serde_json::from_str(e.value.as_ref().unwrap()).unwrap();
        match op {
            Operation::Read => {
                reads.insert(id);
                if envelope["source"]["snapshot"] == "last" {
                    last_marks += 1;
                } else {
                    assert_eq!(envelope["source"]["snapshot"], "true");
                }
            }
            Operation::Create => assert_eq!(id, late_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reads.len(), 25, "every document read once");
    assert_eq!(last_marks, 1, "the snapshot's last read is marked");
    // The position is stored in MongoDB once the snapshot is acknowledged.
    let offsets = mongo
        .database(&db)
        .collection::<Document>("cdc_offsets")
        .find_one(doc! {"_id": &topic})
        .await
        .unwrap()
        .expect("a stored position");
    assert!(
        offsets.contains_key("resume_token") || offsets.contains_key("operation_time"),
        "{offsets}"
    );
    drop_database(&mongo, &db).await;
}

/// Distinct document ids with a card on `topic`.
fn carded(records: &[Record]) -> HashSet<String> {
    records.iter().filter_map(|r| r.key.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_cdc_under_load_loses_no_card() {
    let Some(uri) = test_uri("cdc kill -9 under load") else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_kill");
    let prefix = unique("cdckill");
    // A server as with Debezium (`[cdc] enabled = false`): it stores results and runs the
    // score-card consumer; a separate `examflow cdc` captures.
    let mut serve = MongoServe::new(&uri, &db, &dir.path().join("data"));
    serve.config = kafka_toml(&brokers, &prefix, false, 2);
    let server = std::sync::Arc::new(serve.start());
    let mut cdc = CdcProcess::start(&dir.path().join("cdc"), &uri, &db, &brokers, &prefix);
    cdc.wait_for_log("snapshot done", 1, Duration::from_secs(60));

    const SUBMISSIONS: usize = 1000;
    const CLIENTS: usize = 8;
    let key = answer_key(&sample_banks(), "world-geography");
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|c| server.token(&format!("load{c}@example.com"), "student"))
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let submit = |client: usize, count: usize| {
        let (server, token, key) = (server.clone(), tokens[client].clone(), key.clone());
        let done = done.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..count {
                // Paced so the load spans both kills.
                tokio::time::sleep(Duration::from_millis(40)).await;
                let (status, doc) = server
                    .post(
                        "/api/exams/world-geography/submissions",
                        Some(&token),
                        &json!({ "answers": key }),
                    )
                    .await;
                assert_eq!(status, 201, "{doc}");
                ids.push(doc["_id"].as_str().unwrap().to_string());
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            ids
        })
    };
    let load: Vec<_> = (0..CLIENTS)
        .map(|c| submit(c, SUBMISSIONS / CLIENTS))
        .collect();
    // Kill the capture mid-load, twice, and start it again each time.
    let started = Instant::now();
    let mut done_at_kills = Vec::new();
    for (round, at) in [(1, SUBMISSIONS / 5), (2, SUBMISSIONS * 3 / 5)] {
        while done.load(std::sync::atomic::Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done_at_kills.push(done.load(std::sync::atomic::Ordering::Relaxed));
        cdc.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cdc = CdcProcess::start(&dir.path().join("cdc"), &uri, &db, &brokers, &prefix);
        cdc.wait_for_log("change capture: resuming", round, Duration::from_secs(60));
    }
    let mut ids = HashSet::new();
    for l in load {
        ids.extend(l.await.unwrap());
    }
    assert_eq!(ids.len(), SUBMISSIONS);
    assert!(
        done_at_kills.iter().all(|&n| n > 0 && n < SUBMISSIONS),
        "both kills hit the load mid-way: {done_at_kills:?} of {SUBMISSIONS} submitted"
    );
    eprintln!("submitted at the kills: {done_at_kills:?} of {SUBMISSIONS}");
    assert_eq!(
        cdc.log().matches("taking the initial snapshot").count(),
        1,
        "restarts resume, they do not snapshot again:\n{}",
        cdc.log()
    );

    let expected = ids.clone();
    let cards = consume(
        &brokers,
        &format!("{prefix}-email"),
        Duration::from_secs(180),
        move |r| expected.is_subset(&carded(r)),
    )
    .await;
    let got = carded(&cards);
    let missing: Vec<_> = ids.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {SUBMISSIONS} cards missing after two kill -9 of examflow cdc (e.g. {missing:?}); \
         load took {:?}\n{}",
        ids.difference(&got).count(),
        started.elapsed(),
        cdc.log()
    );
    // Repeats are allowed (at-least-once), but every repeat is the same card.
    let mut by_id: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for c in &cards {
        by_id
            .entry(c.key.clone().unwrap())
            .or_default()
            .insert(c.value.clone().unwrap());
    }
    assert!(by_id.values().all(|v| v.len() == 1), "a repeat differs");
    drop_database(&client(&uri).await, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_through_a_broker_outage() {
    let Some(uri) = test_uri("cdc broker outage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = OwnBroker::start(&dir.path().join("broker"), Some(port));
    let brokers = broker.brokers.clone();
    let db = database_name("cdc_outage");
    let prefix = unique("cdcout");
    let mongo = client(&uri).await;
    let scores = mongo.database(&db).collection::<Document>("score");
    let cdc = CdcProcess::start(&dir.path().join("cdc"), &uri, &db, &brokers, &prefix);
    cdc.wait_for_log("snapshot done", 1, Duration::from_secs(60));

    broker.stop();
    let mut ids = HashSet::new();
    for i in 0..20 {
        let r = scores.insert_one(result_document(i)).await.unwrap();
        ids.insert(r.inserted_id.as_object_id().unwrap().to_hex());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = OwnBroker::start(&dir.path().join("broker"), Some(port));
    let expected = ids.clone();
    let events = consume(
        &broker.brokers,
        &format!("{prefix}.exams.score"),
        Duration::from_secs(120),
        move |r| expected.is_subset(&carded_ids(r)),
    )
    .await;
    let got = carded_ids(&events);
    assert!(
        ids.is_subset(&got),
        "{} of 20 events missing after the broker came back\n{}",
        ids.difference(&got).count(),
        cdc.log()
    );
    drop_database(&mongo, &db).await;
}

/// Document ids of the change events among `records`.
fn carded_ids(records: &[Record]) -> HashSet<String> {
    records
        .iter()
        .filter_map(|r| {
            match parse_change_event(
                r.key.as_deref().map(str::as_bytes),
                r.value.as_deref().map(str::as_bytes),
            ) {
                Ok(ChangeEvent::Change(c)) => c.document_id,
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_position_is_reported_and_followed_by_a_new_snapshot() {
    // A server of this test's own that keeps only a few oplog entries.
    let Some(mongo_server) = OwnMongo::start("cdc lost position", &["--oplog-max-entries", "5"])
    else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_lost");
    let prefix = unique("cdclost");
    let mongo = client(&mongo_server.uri).await;
    let scores = mongo.database(&db).collection::<Document>("score");
    let mut cdc = CdcProcess::start(dir.path(), &mongo_server.uri, &db, &brokers, &prefix);
    cdc.wait_for_log("snapshot done", 1, Duration::from_secs(60));
    scores.insert_one(result_document(0)).await.unwrap();
    let topic = format!("{prefix}.exams.score");
    consume(&brokers, &topic, Duration::from_secs(60), |r| !r.is_empty()).await;
    // Give the saver a moment to store the position after the event, then stop capture.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cdc.kill9();
    for i in 1..=30 {
        scores.insert_one(result_document(i)).await.unwrap();
    }
    let pruned = mongo
        .database("admin")
        .run_command(doc! {"secantusAdmin.pruneOplog": 1})
        .await
        .unwrap();
    assert!(
        pruned.get_i64("pruned").map(|n| n > 0).unwrap_or(true),
        "{pruned}"
    );

    let cdc = CdcProcess::start(dir.path(), &mongo_server.uri, &db, &brokers, &prefix);
    cdc.wait_for_log("snapshot done", 2, Duration::from_secs(60));
    assert!(
        cdc.log().contains("CHANGE CAPTURE LOST ITS POSITION"),
        "loud report:\n{}",
        cdc.log()
    );
    // The new snapshot reads all 31 documents.
    let events = consume(&brokers, &topic, Duration::from_secs(60), |r| {
        r.iter()
            .filter(|e| {
                e.value
                    .as_deref()
                    .is_some_and(|v| v.contains("\"op\":\"r\""))
            })
            .count()
            >= 31
    })
    .await;
    let reads: HashSet<String> = events
        .iter()
        .filter_map(|e| check_like_debezium(e, &db))
        .filter(|(op, _)| *op == Operation::Read)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(reads.len(), 31, "{}", cdc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_without_kafka_makes_cards_in_process() {
    let Some(uri) = test_uri("cdc without Kafka") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_nokafka");
    let server = MongoServe::new(&uri, &db, &dir.path().join("data")).start();
    let student = server.token("nokafka@example.com", "student");
    let (status, doc) = server
        .post(
            "/api/exams/world-geography/submissions",
            Some(&student),
            &json!({"answers": answer_key(&sample_banks(), "world-geography")}),
        )
        .await;
    assert_eq!(status, 201, "{doc}");
    let id = doc["_id"].as_str().unwrap().to_string();
    let educator = server.token("ed@example.com", "educator");
    let card = eventually(Duration::from_secs(30), || async {
        let (_, cards) = server.get("/api/score-cards", Some(&educator)).await;
        cards
            .as_array()?
            .iter()
            .find(|c| c["document_id"] == id.as_str())
            .map(|c| c["card"].as_str().unwrap().to_string())
    })
    .await
    .unwrap_or_else(|| panic!("no card at /api/score-cards: {}", server.log()));
    assert!(
        card.starts_with("Exam-Generator - Score Card\n\nStudent: nokafka@example.com\n"),
        "{card}"
    );
    drop_database(&client(&uri).await, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_refuses_a_standalone_server_with_a_clear_message() {
    let Some(standalone) = OwnMongo::start("cdc on a standalone server", &["--standalone"]) else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_examflow"))
        .args(["cdc", "--mongodb-uri", &standalone.uri])
        .args(["--kafka-brokers", "127.0.0.1:9", "--database", "exams"])
        .env_remove("EXAMFLOW_MONGODB_URI")
        .env_remove("EXAMFLOW_KAFKA_BROKERS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("needs a replica set") && stderr.contains(&standalone.uri),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_capturing_processes_one_captures_and_the_other_takes_over() {
    let Some(uri) = test_uri("cdc lease") else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_lease");
    let prefix = unique("cdclease");
    let mongo = client(&uri).await;
    let scores = mongo.database(&db).collection::<Document>("score");
    let mut first = CdcProcess::start(&dir.path().join("a"), &uri, &db, &brokers, &prefix);
    first.wait_for_log("snapshot done", 1, Duration::from_secs(60));
    let second = CdcProcess::start(&dir.path().join("b"), &uri, &db, &brokers, &prefix);
    second.wait_for_log("on standby", 1, Duration::from_secs(30));

    let mut ids = HashSet::new();
    for i in 0..10 {
        let r = scores.insert_one(result_document(i)).await.unwrap();
        ids.insert(r.inserted_id.as_object_id().unwrap().to_hex());
    }
    let topic = format!("{prefix}.exams.score");
    let expected = ids.clone();
    consume(&brokers, &topic, Duration::from_secs(60), move |r| {
        expected.is_subset(&carded_ids(r))
    })
    .await;
    // Only the lease holder produced: each document once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = consume(&brokers, &topic, Duration::from_secs(5), |_| false).await;
    assert_eq!(events.len(), 10, "one capture, not two: {}", second.log());

    first.kill9();
    for i in 10..20 {
        let r = scores.insert_one(result_document(i)).await.unwrap();
        ids.insert(r.inserted_id.as_object_id().unwrap().to_hex());
    }
    second.wait_for_log("change capture: resuming", 1, Duration::from_secs(30));
    let expected = ids.clone();
    let events = consume(&brokers, &topic, Duration::from_secs(60), move |r| {
        expected.is_subset(&carded_ids(r))
    })
    .await;
    assert!(ids.is_subset(&carded_ids(&events)), "{}", second.log());
    assert!(
        !second.log().contains("taking the initial snapshot"),
        "the standby resumed from the stored position:\n{}",
        second.log()
    );
    drop_database(&mongo, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_saves_its_position_so_a_restart_repeats_nothing() {
    let Some(uri) = test_uri("cdc clean stop") else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let db = database_name("cdc_stop");
    let prefix = unique("cdcstop");
    let mongo = client(&uri).await;
    let scores = mongo.database(&db).collection::<Document>("score");
    let mut cdc = CdcProcess::start(dir.path(), &uri, &db, &brokers, &prefix);
    cdc.wait_for_log("snapshot done", 1, Duration::from_secs(60));
    for i in 0..50 {
        scores.insert_one(result_document(i)).await.unwrap();
    }
    let topic = format!("{prefix}.exams.score");
    consume(&brokers, &topic, Duration::from_secs(60), |r| r.len() >= 50).await;
    cdc.terminate();
    let _cdc = CdcProcess::start(dir.path(), &uri, &db, &brokers, &prefix);
    scores.insert_one(result_document(50)).await.unwrap();
    let events = consume(&brokers, &topic, Duration::from_secs(60), |r| r.len() >= 51).await;
    // Nothing arrives after the 51st: wait a little longer for repeats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events_later = consume(&brokers, &topic, Duration::from_secs(5), |_| false).await;
    assert_eq!(events.len(), 51);
    assert_eq!(
        events_later.len(),
        51,
        "a restart after a clean stop repeats nothing"
    );
    drop_database(&mongo, &db).await;
}
