//! The lake on S3-compatible object storage (moto, started by `scripts/test-all`): two
//! ingest processes committing to the same tables at once, one of them killed with SIGKILL
//! mid-stream; and two servers on one MongoDB that do not ingest, answering SQL over HTTP
//! and psql from what two ingest processes wrote (attempts from Kafka, results captured
//! from MongoDB).

mod common;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::kafka::{create_topic, test_brokers};
use common::lake::{
    IngestProcess, expected_counts, expected_invariants, generate_attempts, produce_lines,
    read_attempts, read_keyed_lines, sql_with, tail, wait_for_invariants_with, wait_for_split,
};
use common::mongo::{MongoServe, client, database_name, drop_database, test_uri};
use common::psql::{pgwire_port, psql_available, query};
use common::s3::S3Lake;
use common::{eventually, unique};
use serde_json::json;

/// Commit period of the ingests here: short, so the kill lands around commits.
const COMMIT_INTERVAL_MS: u64 = 400;

/// The last lines of every ingest log, for failure messages.
fn logs(processes: &[&IngestProcess]) -> String {
    processes
        .iter()
        .map(|p| format!("==== {} ====\n{}", p.log.display(), tail(&p.log_text(), 25)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn two_ingests_share_an_s3_lake_exactly_once_through_a_kill9() {
    let Some(lake) = S3Lake::new("two_ingests_share_an_s3_lake_exactly_once_through_a_kill9")
    else {
        return;
    };
    let started = Instant::now();
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        format!("{}[kafka]\nsession_timeout_ms = 6000\n", lake.config()),
    )
    .unwrap();
    let topic = unique("exams-s3");
    create_topic(&brokers, &topic, 4);
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 600, 21, 0.1, "lines");
    let group = unique("s3");
    let a = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &group,
        "a.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    let mut b = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &group,
        "b.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    let owned = wait_for_split(&[&a, &b], &topic, 4, Duration::from_secs(45));
    assert!(
        owned.iter().all(|o| !o.is_empty()),
        "the two processes did not split the partitions: {owned:?}\n{}",
        logs(&[&a, &b])
    );

    // Both commit to the same six tables at once (conditional puts decide each version);
    // b dies with SIGKILL mid-stream and c takes its place in the group.
    let lines = read_keyed_lines(&file);
    let never = AtomicBool::new(false);
    let half = lines.len() / 2;
    produce_lines(
        &brokers,
        &topic,
        &lines[..half],
        30,
        Duration::from_millis(150),
        &never,
    );
    b.kill9();
    let c = IngestProcess::start_in_group(
        &data_dir,
        &brokers,
        &[&topic],
        &group,
        "c.log",
        &config,
        COMMIT_INTERVAL_MS,
    );
    produce_lines(
        &brokers,
        &topic,
        &lines[half..],
        30,
        Duration::from_millis(150),
        &never,
    );
    let expected = expected_invariants(expected_counts(&read_attempts(&file)), 0);
    let seen = wait_for_invariants_with(
        Some(&config),
        &data_dir,
        &expected,
        Duration::from_secs(120),
    );
    assert_eq!(seen, expected, "{}", logs(&[&a, &b, &c]));

    // The tables are in the bucket, not on the local disk.
    let parquet = lake
        .keys("lake/attempts/")
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .count();
    let log_entries = lake
        .keys("lake/attempts/_delta_log/")
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .count();
    assert!(parquet > 0 && log_entries > 1, "{parquet} {log_entries}");
    assert!(!data_dir.join("lake").exists());
    for process in [&a, &c] {
        let log = process.log_text();
        assert!(
            !log.lines()
                .any(|l| l.contains("ERROR") && l.contains(" examflow") || l.contains("panicked")),
            "{}",
            tail(&log, 40)
        );
    }
    eprintln!(
        "s3: {} attempts exactly once through two writers and a kill -9; {parquet} Parquet \
         objects, {log_entries} log entries in attempts; {:.1} s",
        expected["attempts"],
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_two_ingests_count_the_same_from_s3() {
    let test = "two_servers_and_two_ingests_count_the_same_from_s3";
    let (Some(lake), Some(uri)) = (S3Lake::new(test), test_uri(test)) else {
        return;
    };
    let started = Instant::now();
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("replicas");
    let topic = format!("{prefix}-attempts");
    // examflow's capture writes `<topic_prefix>.exams.score`, as Debezium would.
    let changes = format!("{prefix}.exams.score");
    {
        let (b, t, c) = (brokers.clone(), topic.clone(), changes.clone());
        tokio::task::spawn_blocking(move || {
            create_topic(&b, &t, 4);
            create_topic(&b, &c, 2);
        })
        .await
        .unwrap();
    }
    let ingest_config = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_config,
        format!("{}[kafka]\nsession_timeout_ms = 6000\n", lake.config()),
    )
    .unwrap();
    // The servers share one MongoDB database and token secret, capture its results to
    // Kafka (one at a time, by lease) and do not ingest: they re-read the lake every
    // 300 ms. Only the two `examflow ingest` processes write it.
    let db = database_name("replicas_s3");
    let server_config = format!(
        "{}[pgwire]\nlisten = \"127.0.0.1:0\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{prefix}\"\n\
         email_topic = \"{prefix}-email\"\nscore_card_group = \"{prefix}-cards\"\n\
         session_timeout_ms = 6000\n[ingest]\nenabled = false\n\
         [cdc]\nenabled = true\nlease_secs = 2\n[limits]\nsubmissions_per_minute = 0\n",
        lake.config()
            .replacen("[storage]\n", "lake_refresh_ms = 300\n", 1)
    );
    let ingest_dir = dir.path().join("ingest");
    let group = unique("replicas");
    let topics = [topic.as_str(), changes.as_str()];
    let a = IngestProcess::start_in_group(
        &ingest_dir,
        &brokers,
        &topics,
        &group,
        "a.log",
        &ingest_config,
        COMMIT_INTERVAL_MS,
    );
    let b = IngestProcess::start_in_group(
        &ingest_dir,
        &brokers,
        &topics,
        &group,
        "b.log",
        &ingest_config,
        COMMIT_INTERVAL_MS,
    );
    let serve = |name: &str| {
        let mut serve = MongoServe::new(&uri, &db, &dir.path().join(name));
        serve.config = server_config.clone();
        serve
    };
    let one = serve("one").start();
    std::fs::create_dir_all(dir.path().join("two")).unwrap();
    std::fs::copy(
        dir.path().join("one/jwt-secret"),
        dir.path().join("two/jwt-secret"),
    )
    .unwrap();
    let servers = [one, serve("two").start()];
    for server in &servers {
        let (status, ready) = server.get("/readyz", None).await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["lake"]["status"], "ok", "{ready}");
        assert_eq!(ready["lake"]["uri"], format!("{}/", lake.uri), "{ready}");
    }

    // Any replica answers any request: a token from one is good on the other, and
    // results submitted to either reach the lake through MongoDB, capture and the ingests.
    let student = servers[0].token("stu@example.com", "student");
    let mut submitted = 0;
    for server in servers.iter().cycle().take(4) {
        submitted += server.submit_answer_key(&student, 1).await.len();
    }

    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 300, 22, 0.0, "lines");
    let (attempts, questions, _) = expected_counts(&read_attempts(&file));
    {
        let (brokers, topic, file) = (brokers.clone(), topic.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let lines = read_keyed_lines(&file);
            produce_lines(
                &brokers,
                &topic,
                &lines,
                50,
                Duration::from_millis(50),
                &AtomicBool::new(false),
            )
        })
        .await
        .unwrap();
    }
    let counts = json!({"sql": "SELECT (SELECT count(*) FROM attempts) AS attempts, \
        (SELECT count(*) FROM attempt_questions) AS questions, \
        (SELECT count(*) FROM scores WHERE NOT deleted) AS scores"});
    let want = json!([{"attempts": attempts, "questions": questions, "scores": submitted}]);
    for server in &servers {
        let analyst = server.token("ana@example.com", "analyst");
        let seen = eventually(Duration::from_secs(90), || async {
            let (status, rows) = server.post("/api/sql", Some(&analyst), &counts).await;
            (status == 200 && rows == want).then_some(rows)
        })
        .await;
        let (_, last) = server.post("/api/sql", Some(&analyst), &counts).await;
        assert!(
            seen.is_some(),
            "{} answers {last}, not {want}\n{}\n{}",
            server.base,
            server.log(),
            logs(&[&a, &b])
        );
    }
    // psql against each server, and the offline `examflow sql`, agree.
    if psql_available() {
        for server in &servers {
            let port = pgwire_port(server);
            let token = server.token("ana@example.com", "analyst");
            let out = tokio::task::spawn_blocking(move || {
                query(
                    port,
                    "ana@example.com",
                    &token,
                    "SELECT count(*) FROM attempts",
                )
            })
            .await
            .unwrap();
            assert_eq!(out, attempts.to_string());
        }
    }
    let mongo = client(&uri).await;
    drop_database(&mongo, &db).await;
    let offline = sql_with(
        Some(&ingest_config),
        &ingest_dir,
        "SELECT count(*) AS n FROM attempt_questions",
    );
    assert_eq!(offline[0]["n"], questions);
    eprintln!(
        "replicas: {attempts} attempts, {questions} questions, {submitted} results alike \
         through 2 servers on one MongoDB (HTTP and psql) from 2 ingests on S3; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
