//! `/readyz` and supervised background tasks: the server reports each dependency and task,
//! answers 503 while one it needs is down, and a task that fails (here: the lake ingest,
//! whose table cannot be committed to) is restarted until it works again, losing nothing.

mod common;

use std::time::{Duration, Instant};

use common::kafka::{create_topic, free_port, test_brokers};
use common::lake::{count, generate_attempts, produce_attempts, wait_for_count};
use common::{Server, ServerOptions, eventually, unique};
use serde_json::Value;

async fn readyz(server: &Server) -> (u16, Value) {
    server.get("/readyz", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_is_ready_and_lists_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"]["status"], "ok");
    assert_eq!(body["lake"]["status"], "ok", "{body}");
    assert!(
        body["lake"]["uri"].as_str().unwrap().ends_with("/lake"),
        "{body}"
    );
    assert_eq!(body["broker"]["status"], "not_configured");
    for task in [
        "score-cards",
        "lake-outbox-feed",
        "calibration-schedule",
        "attempt-deadlines",
    ] {
        assert_eq!(body["tasks"][task]["state"], "running", "{task}: {body}");
        assert_eq!(body["tasks"][task]["restarts"], 0, "{task}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_makes_the_server_not_ready_but_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServerOptions::new(dir.path());
    options.kafka_brokers = Some(format!("127.0.0.1:{}", free_port()));
    let server = Server::start(options);
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["broker"]["status"], "down", "{body}");
    assert!(body["broker"]["error"].as_str().is_some(), "{body}");
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200, "liveness does not depend on the broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lake_ingest_is_restarted_and_loses_nothing() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let attempts_topic = unique("exams");
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntopic_prefix = \"{}\"\nsession_timeout_ms = 6000\n\n[ingest]\n\
             group_id = \"{}\"\nattempts_topic = \"{attempts_topic}\"\ncommit_interval_ms = 300\n",
            unique("ready"),
            unique("ready-ingest"),
        ),
    )
    .unwrap();
    // The topic exists before the ingest subscribes (a consumer sees new topics late).
    {
        let (b, t) = (brokers.clone(), attempts_topic.clone());
        tokio::task::spawn_blocking(move || create_topic(&b, &t, 2))
            .await
            .unwrap();
    }
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(config);
    let server = Server::start(options);

    // The attempts table cannot take a commit: its log directory is a file now.
    let log_dir = server
        .data_dir
        .join("lake")
        .join("attempts")
        .join("_delta_log");
    assert!(log_dir.is_dir(), "{}", log_dir.display());
    let saved = log_dir.with_extension("saved");
    std::fs::rename(&log_dir, &saved).unwrap();
    std::fs::write(&log_dir, b"not a directory").unwrap();

    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 40, 5, 0.0, "lines");
    produce_attempts(&file, &brokers, &attempts_topic, 2);

    let failing = eventually(Duration::from_secs(60), || async {
        let (status, body) = readyz(&server).await;
        let task = &body["tasks"]["lake-ingest"];
        (status == 503 && task["restarts"].as_u64().unwrap_or(0) >= 1).then(|| body.clone())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the ingest's failure never showed at /readyz\n{}",
            server.log()
        )
    });
    let task = &failing["tasks"]["lake-ingest"];
    assert!(task["last_error"].as_str().is_some(), "{failing}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("examflow_task_failures_total{task=\"lake-ingest\"}"),
        "{metrics}"
    );
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200);

    // The disk is back: the restarted ingest commits every attempt, none lost.
    std::fs::remove_file(&log_dir).unwrap();
    std::fs::rename(&saved, &log_dir).unwrap();
    let committed = wait_for_count(
        &server.data_dir,
        "SELECT count(*) AS n FROM attempts",
        40,
        Duration::from_secs(90),
    );
    assert_eq!(committed, 40, "log:\n{}", server.log());
    let ready = eventually(Duration::from_secs(60), || async {
        let (status, body) = readyz(&server).await;
        (status == 200 && body["tasks"]["lake-ingest"]["state"] == "running").then_some(body)
    })
    .await;
    assert!(ready.is_some(), "never ready again:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_and_commits_the_lake_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(ServerOptions::new(dir.path()));
    let student = server.token("drain@example.com", "student");
    server.submit_answer_key(&student, 3).await;
    // At once, before the feed's periodic commit: the stop must commit the tail itself.
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit}\n{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        count(&server.data_dir, "SELECT count(*) AS n FROM scores"),
        3,
        "every result is in the committed lake after the stop\n{}",
        server.log()
    );
    assert!(server.log().contains("lake committed"), "{}", server.log());
}

/// SIGTERM while the broker cannot be reached: Kafka clients stuck in their own timeouts
/// (metadata requests of 10 s each, closing a consumer) do not hold `serve` or `ingest`
/// past `[server] shutdown_timeout_secs` (before: 17 s and over 40 s with a limit of 3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_limit_while_the_broker_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("examflow.toml");
    std::fs::write(&config, "[server]\nshutdown_timeout_secs = 2\n").unwrap();
    // Nothing listens there: every connection is refused.
    let brokers = format!("127.0.0.1:{}", free_port());
    let limit = Duration::from_secs(2);
    let margin = Duration::from_millis(2500);

    let mut options = ServerOptions::new(&dir.path().join("serve"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(config.clone());
    let mut server = Server::start(options);
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["broker"]["status"], "down", "{body}");
    let started = Instant::now();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let exit = server.child.wait().unwrap();
    let took = started.elapsed();
    assert!(exit.success(), "{exit}\n{}", server.log());
    assert!(
        took < limit + margin,
        "serve took {took:?}\n{}",
        server.log()
    );

    let ingest_dir = dir.path().join("ingest");
    std::fs::create_dir_all(&ingest_dir).unwrap();
    let log = std::fs::File::create(ingest_dir.join("ingest.log")).unwrap();
    let mut ingest = std::process::Command::new(env!("CARGO_BIN_EXE_examflow"))
        .arg("--config")
        .arg(&config)
        .args(["ingest", "--kafka-brokers", &brokers, "--data-dir"])
        .arg(&ingest_dir)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Into its start: the lake is open and the consumer asks the broker for metadata.
    let log_text = || std::fs::read_to_string(ingest_dir.join("ingest.log")).unwrap_or_default();
    let opened = eventually(Duration::from_secs(30), || async {
        log_text().contains("ability estimates read").then_some(())
    })
    .await;
    assert!(opened.is_some(), "{}", log_text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &ingest.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let exit = tokio::task::spawn_blocking(move || ingest.wait().unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(exit.success(), "{exit}\n{}", log_text());
    assert!(
        took < limit + margin,
        "ingest took {took:?}\n{}",
        log_text()
    );
    assert!(log_text().contains("stopping now"), "{}", log_text());
}
