//! The lake ingest against the real broker: attempts (with replays and malformed messages)
//! and Debezium change events into Delta tables, queried with `examflow sql`.

mod common;

use std::time::Duration;

use common::kafka::{KeyValue, OwnBroker, create_topic, produce, test_brokers};
use common::lake::{
    IngestOptions, IngestProcess, count, expected_counts, generate_attempts, produce_attempts,
    read_attempts, sql, wait_for_count,
};
use common::{Server, ServerOptions, eventually, unique};

fn change_event(op: &str, id: &str, after: Option<serde_json::Value>, ts_ms: i64) -> KeyValue {
    let key = serde_json::json!({"id": format!("{{\"$oid\": \"{id}\"}}")}).to_string();
    let mut payload = serde_json::json!({"op": op, "ts_ms": ts_ms,
        "source": {"db": "exams", "collection": "score", "ts_ms": ts_ms}});
    if let Some(after) = after {
        payload["after"] = serde_json::Value::String(after.to_string());
    }
    (
        Some(key.into_bytes()),
        Some(payload.to_string().into_bytes()),
    )
}

fn result_document(id: &str, score: u32) -> serde_json::Value {
    serde_json::json!({"_id": {"$oid": id}, "email": "s@example.com", "exam": "rust",
        "score": score, "total": 4, "percentage": score * 25,
        "result": if score >= 2 { "passed" } else { "failed" },
        "submitted_at": {"$date": 1_700_000_000_000i64},
        "details": [{"question": "Q1", "user_answer": "A", "correct_answer": "A",
                     "is_correct": true, "item": "i1"}]})
}

#[test]
fn attempts_and_change_events_land_once_and_survive_restart_and_replay() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let attempts_topic = unique("exams");
    let changes_topic = format!("{}.exams.score", unique("cdc"));
    let file = dir.path().join("attempts.json");
    generate_attempts(&file, 400, 7, 0.1, "array");
    let documents = read_attempts(&file);
    let (attempts, questions, options) = expected_counts(&documents);
    assert!(documents.len() > attempts, "the file holds replays");

    let out = produce_attempts(&file, &brokers, &attempts_topic, 4);
    assert!(
        out.contains(&format!("produced {}", documents.len())),
        "{out}"
    );
    // Malformed messages: not JSON, truncated, wrong type, no key, empty.
    let bad: Vec<KeyValue> = vec![
        (None, Some(b"not json".to_vec())),
        (
            None,
            Some(br#"{"keen_id": "x", "sequences": {"questions": [{"#.to_vec()),
        ),
        (
            None,
            Some(br#"{"keen_id": "y", "certification": "maybe"}"#.to_vec()),
        ),
        (
            None,
            Some(br#"{"exam_name": "no key", "sequences": {"questions": []}}"#.to_vec()),
        ),
        (None, Some(Vec::new())),
    ];
    produce(&brokers, &attempts_topic, &bad);
    let doc1 = "65a000000000000000000001";
    let doc2 = "65a000000000000000000002";
    let events = vec![
        change_event("c", doc1, Some(result_document(doc1, 1)), 1_700_000_000_000),
        change_event("u", doc1, Some(result_document(doc1, 3)), 1_700_000_001_000),
        change_event("c", doc2, Some(result_document(doc2, 4)), 1_700_000_002_000),
        change_event("d", doc2, None, 1_700_000_003_000),
        (change_event("d", doc2, None, 0).0, None), // tombstone
        (None, Some(b"{\"op\": \"x\"}".to_vec())),
    ];
    create_topic(&brokers, &changes_topic, 2);
    produce(&brokers, &changes_topic, &events);

    let mut ingest = IngestProcess::start(&IngestOptions {
        data_dir: &data_dir,
        brokers: &brokers,
        topics: &[&attempts_topic, &changes_topic],
        group: &unique("lake-test"),
        commit_interval_ms: 300,
        log_name: "ingest.log",
    });
    let wait = Duration::from_secs(60);
    let n = wait_for_count(
        &data_dir,
        "SELECT count(*) AS n FROM attempts",
        attempts as i64,
        wait,
    );
    assert_eq!(n, attempts as i64, "log:\n{}", ingest.log_text());
    let dead = wait_for_count(&data_dir, "SELECT count(*) AS n FROM dead_letters", 6, wait);
    assert_eq!(dead, 6, "log:\n{}", ingest.log_text());
    assert_eq!(
        wait_for_count(
            &data_dir,
            "SELECT count(*) AS n FROM attempt_questions",
            questions as i64,
            wait
        ),
        questions as i64
    );
    assert_eq!(
        wait_for_count(
            &data_dir,
            "SELECT count(*) AS n FROM attempt_options",
            options as i64,
            wait
        ),
        options as i64
    );
    let reasons = sql(
        &data_dir,
        "SELECT reason FROM dead_letters ORDER BY source_offset",
    );
    let reasons: Vec<&str> = reasons
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("certification")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("keen_id")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unknown operation")),
        "{reasons:?}"
    );

    // Updates replace, deletes mark deleted.
    assert_eq!(
        wait_for_count(&data_dir, "SELECT count(*) AS n FROM scores", 2, wait),
        2
    );
    let scores = sql(
        &data_dir,
        "SELECT document_id, score, deleted FROM scores ORDER BY document_id",
    );
    assert_eq!(scores[0]["document_id"], doc1);
    assert_eq!(scores[0]["score"], 3);
    assert_eq!(scores[0]["deleted"], false);
    assert_eq!(scores[1]["deleted"], true);
    assert_eq!(
        count(&data_dir, "SELECT count(*) AS n FROM score_details"),
        1
    );

    // Every row knows its source.
    let sources = sql(
        &data_dir,
        "SELECT count(DISTINCT source_partition) AS n FROM attempts WHERE source_topic IS NOT NULL",
    );
    assert!(sources[0]["n"].as_i64().unwrap() >= 2, "{sources:?}");

    // Restart and replay the whole file: nothing doubles.
    ingest.stop();
    produce_attempts(&file, &brokers, &attempts_topic, 4);
    produce(&brokers, &changes_topic, &events[..2]);
    let mut ingest = IngestProcess::start(&IngestOptions {
        data_dir: &data_dir,
        brokers: &brokers,
        topics: &[&attempts_topic, &changes_topic],
        group: &unique("lake-test-2"),
        commit_interval_ms: 300,
        log_name: "ingest2.log",
    });
    // A new consumer group resumes from the offsets the tables record (not the group's):
    // it reads only the replay, which de-duplication and idempotent changes absorb.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        wait_for_count(
            &data_dir,
            "SELECT count(*) AS n FROM attempts",
            attempts as i64,
            wait
        ),
        attempts as i64,
        "log:\n{}",
        ingest.log_text()
    );
    assert_eq!(
        count(&data_dir, "SELECT count(*) AS n FROM attempt_questions"),
        questions as i64
    );
    let scores = sql(
        &data_dir,
        "SELECT score FROM scores WHERE document_id = '65a000000000000000000001'",
    );
    assert_eq!(scores[0]["score"], 3);
    ingest.stop();
}

/// `serve --kafka-brokers` runs the same ingest; `POST /api/sql` sees rows from the
/// in-memory tail long before the (here: one minute) Delta commit.
#[tokio::test(flavor = "multi_thread")]
async fn server_ingests_and_answers_sql_from_the_live_tail() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let attempts_topic = unique("exams");
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntopic_prefix = \"{}\"\nsession_timeout_ms = 6000\n\n[ingest]\n\
             attempts_topic = \"{attempts_topic}\"\ncommit_interval_ms = 60000\n",
            unique("srv")
        ),
    )
    .unwrap();
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 50, 3, 0.0, "lines");
    produce_attempts(&file, &brokers, &attempts_topic, 2);
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(config);
    let server = Server::start(options);
    let analyst = server.token("ana@example.com", "analyst");
    let body = serde_json::json!({"sql": "SELECT count(*) AS n FROM attempts"});
    let seen = eventually(Duration::from_secs(30), || async {
        let (status, rows) = server.post("/api/sql", Some(&analyst), &body).await;
        (status == 200 && rows[0]["n"] == 50).then_some(rows)
    })
    .await;
    assert!(seen.is_some(), "log:\n{}", server.log());
    // Not committed yet: the committed tables are still empty.
    assert_eq!(
        count(&server.data_dir, "SELECT count(*) AS n FROM attempts"),
        0
    );

    let metrics = server.metrics().await;
    for name in [
        "examflow_ingest_messages_total",
        "examflow_ingest_bytes_total",
        "examflow_ingest_freshness_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(&format!(
            "examflow_ingest_messages_total{{outcome=\"stored\",topic=\"{attempts_topic}\"}} 50"
        )),
        "{metrics}"
    );

    // Ability estimates from the stream: one per user_exam_id with an answered question,
    // in GET /api/abilities, as the SQL table `abilities`, and counted in /metrics.
    let users = serde_json::json!({"sql": "SELECT count(DISTINCT user_exam_id) AS n \
        FROM attempt_questions WHERE user_correct IS NOT NULL"});
    let (_, expected) = server.post("/api/sql", Some(&analyst), &users).await;
    let expected = expected[0]["n"].as_u64().unwrap();
    assert!(expected > 0);
    let (status, abilities) = server.get("/api/abilities?limit=5", Some(&analyst)).await;
    assert_eq!(status, 200, "{abilities}");
    assert_eq!(
        abilities["users"].as_u64().unwrap(),
        expected,
        "{abilities}"
    );
    let first = &abilities["abilities"][0];
    assert!(first["theta"].as_f64().unwrap().abs() < 6.0, "{abilities}");
    assert!(first["se"].as_f64().unwrap() > 0.0, "{abilities}");
    let id = first["user_exam_id"].as_str().unwrap();
    let (status, one) = server
        .get(&format!("/api/abilities?user_exam_id={id}"), Some(&analyst))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["theta"], first["theta"]);
    let (_, table) = server
        .post(
            "/api/sql",
            Some(&analyst),
            &serde_json::json!({"sql": "SELECT count(*) AS n FROM abilities"}),
        )
        .await;
    assert_eq!(table[0]["n"].as_u64().unwrap(), expected, "{table}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!("examflow_abilities_tracked {expected}")),
        "{metrics}"
    );
    assert!(metrics.contains("examflow_ability_updates_total"));

    let student = server.token("stu@example.com", "student");
    let (status, _) = server.get("/api/abilities", Some(&student)).await;
    assert_eq!(status, 403);
    let (status, error) = server.post("/api/sql", Some(&student), &body).await;
    assert_eq!(status, 403, "{error}");
    for bad in [
        "DROP TABLE attempts",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO dead_letters SELECT * FROM dead_letters",
        "SELEC 1",
        "SELECT nope FROM attempts",
    ] {
        let (status, error) = server
            .post("/api/sql", Some(&analyst), &serde_json::json!({"sql": bad}))
            .await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert_eq!(error["error"]["code"], "invalid_sql", "{bad}: {error}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
}

/// Operations named by the table's log entries (`commitInfo.operation`), oldest first.
fn log_operations(table: &std::path::Path) -> Vec<String> {
    let mut entries: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    entries
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["commitInfo"]["operation"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_busy_ingest_compacts_after_the_configured_number_of_commits() {
    // Small files pile up with every commit; housekeeping by time alone (10 min) let a busy
    // lake gather hundreds per table, each one costing every query and the table's snapshot.
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let topic = unique("exams");
    create_topic(&brokers, &topic, 1);
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        "[ingest]\nhousekeeping_after_commits = 4\nhousekeeping_interval_secs = 3600\n",
    )
    .unwrap();
    let mut ingest = IngestProcess::start_with_config(
        &IngestOptions {
            data_dir: &data_dir,
            brokers: &brokers,
            topics: &[&topic],
            group: &unique("compaction-test"),
            commit_interval_ms: 200,
            log_name: "ingest.log",
        },
        &config,
    );
    let file = dir.path().join("attempts.json");
    generate_attempts(&file, 60, 11, 0.0, "lines");
    let documents = read_attempts(&file);
    let (attempts, _, _) = expected_counts(&documents);
    // Ten bursts, each committed before the next is produced: ten commits with new rows.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), documents.len());
    let mut produced = 0usize;
    for burst in lines.chunks(lines.len().div_ceil(10)) {
        let messages: Vec<KeyValue> = burst
            .iter()
            .map(|l| (None, Some(l.as_bytes().to_vec())))
            .collect();
        produce(&brokers, &topic, &messages);
        produced += burst.len();
        let expected = expected_counts(&documents[..produced]).0 as i64;
        let n = wait_for_count(
            &data_dir,
            "SELECT count(*) AS n FROM attempts",
            expected,
            Duration::from_secs(60),
        );
        assert_eq!(n, expected, "log:\n{}", ingest.log_text());
    }
    let table = data_dir.join("lake").join("attempts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ops = loop {
        let ops = log_operations(&table);
        if ops.iter().filter(|o| o.as_str() == "OPTIMIZE").count() >= 2 {
            break ops;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not two compactions after ten commits with new rows: {ops:?}\nlog:\n{}",
            ingest.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Compaction kept every row.
    assert_eq!(
        count(&data_dir, "SELECT count(*) AS n FROM attempts"),
        attempts as i64,
        "{ops:?}"
    );
    ingest.stop();
}

/// A server that leaves the ingest to `examflow ingest` (`[ingest] enabled = false`) on the
/// embedded store: its results reach the lake once, through the change topic, not also
/// straight from its outbox (before: two `score_changes` rows per result, one per source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_ingest_leaves_scores_to_the_change_topic() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let prefix = unique("noingest");
    let changes = format!("{prefix}.exams.score");
    {
        let (b, t) = (brokers.clone(), changes.clone());
        tokio::task::spawn_blocking(move || create_topic(&b, &t, 2))
            .await
            .unwrap();
    }
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntopic_prefix = \"{prefix}\"\nemail_topic = \"{prefix}-email\"\n\
             score_card_group = \"{prefix}-cards\"\nsession_timeout_ms = 6000\n\n\
             [ingest]\nenabled = false\n\n[storage]\nlake_refresh_ms = 200\n"
        ),
    )
    .unwrap();
    let mut options = ServerOptions::new(&data_dir);
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(config.clone());
    let server = Server::start(options);
    let ingest = IngestProcess::start_with_config(
        &IngestOptions {
            data_dir: &data_dir,
            brokers: &brokers,
            topics: &[&changes],
            group: &unique("noingest-group"),
            commit_interval_ms: 300,
            log_name: "ingest.log",
        },
        &config,
    );
    let student = server.token("once@example.com", "student");
    server.submit_answer_key(&student, 2).await;
    let query = "SELECT count(*) AS n FROM score_changes";
    let seen = wait_for_count(&data_dir, query, 2, Duration::from_secs(60));
    assert_eq!(seen, 2, "{}\n{}", server.log(), ingest.log_text());
    // Settled: nothing else arrives from another path.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sources = sql(
        &data_dir,
        "SELECT source_topic, count(*) AS n FROM score_changes GROUP BY source_topic",
    );
    assert_eq!(
        sources,
        vec![serde_json::json!({"source_topic": changes, "n": 2})],
        "{}",
        server.log()
    );
    // The server, which does not ingest, sees them through its refresh of the lake.
    let analyst = server.token("ana@example.com", "analyst");
    let body = serde_json::json!({"sql": "SELECT count(*) AS n FROM scores"});
    let refreshed = eventually(Duration::from_secs(10), || async {
        let (status, rows) = server.post("/api/sql", Some(&analyst), &body).await;
        (status == 200 && rows[0]["n"] == 2).then_some(())
    })
    .await;
    assert!(refreshed.is_some(), "{}", server.log());
}

/// Producers choose their compression (confluent-kafka, the Java client, Debezium's
/// Kafka Connect: zstd, lz4, snappy or gzip): attempts in every codec land.
#[test]
fn attempts_compressed_with_every_codec_land() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let topic = unique("codecs");
    create_topic(&brokers, &topic, 2);
    let mut expected = 0;
    for (seed, codec) in ["zstd", "lz4", "snappy", "gzip"].into_iter().enumerate() {
        let file = dir.path().join(format!("{codec}.jsonl"));
        generate_attempts(&file, 30, 100 + seed as u64, 0.0, "lines");
        expected += expected_counts(&read_attempts(&file)).0;
        let config = dir.path().join(format!("{codec}.toml"));
        std::fs::write(
            &config,
            format!("[kafka.properties]\n\"compression.type\" = \"{codec}\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_examflow"))
            .arg("--config")
            .arg(&config)
            .arg("produce-attempts")
            .arg(&file)
            .args(["--kafka-brokers", &brokers, "--topic", &topic])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut ingest = IngestProcess::start(&IngestOptions {
        data_dir: &data_dir,
        brokers: &brokers,
        topics: &[&topic],
        group: &unique("codecs"),
        commit_interval_ms: 300,
        log_name: "ingest.log",
    });
    let query = "SELECT count(*) AS n FROM attempts";
    let seen = wait_for_count(&data_dir, query, expected as i64, Duration::from_secs(60));
    ingest.stop();
    assert_eq!(seen, expected as i64, "{}", ingest.log_text());
    assert_eq!(
        count(&data_dir, "SELECT count(*) AS n FROM dead_letters"),
        0
    );
}

/// A broker that only speaks TLS, as managed Kafka does: with its CA in
/// `[kafka.properties]`, attempts are produced and ingested; without it, the command fails
/// within seconds and names the certificate problem.
#[test]
fn a_tls_only_broker_works_with_its_ca_and_is_refused_clearly_without() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, ca) = OwnBroker::start_tls(&dir.path().join("broker"));
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 25, 31, 0.0, "lines");
    let expected = expected_counts(&read_attempts(&file)).0;
    let topic = unique("tls");
    let produce_with = |name: &str, properties: &str| {
        let config = dir.path().join(name);
        std::fs::write(&config, format!("[kafka.properties]\n{properties}")).unwrap();
        let started = std::time::Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_examflow"))
            .arg("--config")
            .arg(&config)
            .arg("produce-attempts")
            .arg(&file)
            .args(["--kafka-brokers", &broker.brokers, "--topic", &topic])
            .output()
            .unwrap();
        (config, out, started.elapsed())
    };

    let (_, refused, took) = produce_with("no-ca.toml", "\"security.protocol\" = \"SSL\"\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    // The command's own error line (not librdkafka's log) names the broker and the cause.
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        error.contains("certificate verify failed") && error.contains(&broker.brokers),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}: {stderr}");

    let (config, produced, _) = produce_with(
        "tls.toml",
        &format!(
            "\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n",
            ca.display()
        ),
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let data_dir = dir.path().join("data");
    let mut ingest = IngestProcess::start_with_config(
        &IngestOptions {
            data_dir: &data_dir,
            brokers: &broker.brokers,
            topics: &[&topic],
            group: &unique("tls"),
            commit_interval_ms: 300,
            log_name: "ingest.log",
        },
        &config,
    );
    let seen = wait_for_count(
        &data_dir,
        "SELECT count(*) AS n FROM attempts",
        expected as i64,
        Duration::from_secs(60),
    );
    ingest.stop();
    assert_eq!(seen, expected as i64, "{}", ingest.log_text());
}
