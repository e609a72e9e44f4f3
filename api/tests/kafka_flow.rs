//! The seed's flow through a real Kafka-compatible broker: result → change event on
//! `<prefix>.exams.score` → score-card consumer → `email-topic`.

mod common;

use std::time::Duration;

use common::kafka::{OwnBroker, consume_until, free_port, produce, test_brokers};
use common::{Server, ServerOptions, answer_key, sample_banks, unique, wrong_answers};
use serde_json::{Value, json};

/// A config file giving this test its own topics and consumer group.
fn kafka_config(dir: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    let file = dir.join("examflow.toml");
    std::fs::write(
        &file,
        format!(
            "[kafka]\ntopic_prefix = \"{prefix}\"\nemail_topic = \"{prefix}-email\"\nscore_card_group = \"{prefix}-cards\"\nsession_timeout_ms = 6000\n"
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn submission_becomes_a_score_card_on_email_topic() {
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("flow");
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(kafka_config(dir.path(), &prefix));
    let server = Server::start(options);
    let token = server.token("kafka@example.com", "student");
    let mut answers = answer_key(&sample_banks(), "rust-basics");
    let wrong = wrong_answers(&sample_banks(), "rust-basics");
    answers[0] = wrong[0].clone();
    let (status, doc) = server
        .post(
            "/api/exams/rust-basics/submissions",
            Some(&token),
            &json!({"answers": answers}),
        )
        .await;
    assert_eq!(status, 201);
    let id = doc["_id"].as_str().unwrap().to_string();

    // The change event, in the Debezium MongoDB envelope.
    let events = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), format!("{prefix}.exams.score"));
        move || consume_until(&b, &t, Duration::from_secs(60), |r| !r.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "change event: {}", server.log());
    let envelope: Value = serde_json::from_str(events[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(envelope["op"], "c");
    assert_eq!(envelope["source"]["db"], "exams");
    assert_eq!(envelope["source"]["collection"], "score");
    assert!(envelope["ts_ms"].as_i64().unwrap() > 0);
    let after: Value = serde_json::from_str(envelope["after"].as_str().unwrap()).unwrap();
    assert_eq!(after["_id"]["$oid"], id);
    assert_eq!(after["email"], "kafka@example.com");

    // The score card, keyed by the document id.
    let cards = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), format!("{prefix}-email"));
        move || consume_until(&b, &t, Duration::from_secs(60), |r| !r.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(cards.len(), 1, "score card: {}", server.log());
    assert_eq!(cards[0].key.as_deref(), Some(id.as_str()));
    let card = cards[0].value.as_ref().unwrap();
    assert!(
        card.starts_with("Exam-Generator - Score Card\n\nStudent: kafka@example.com\nScore: 13\nResult: PASSED\n\nExam Details:\n- Question: Which keyword declares a mutable binding?\n"),
        "{card}"
    );
    assert!(
        card.contains(&format!(
            "  Your Answer: {} (Incorrect)\n  Correct Answer: let mut\n\n",
            wrong[0]
        )),
        "{card}"
    );
}

#[tokio::test]
async fn outbox_survives_a_broker_outage() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let prefix = unique("outage");
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(kafka_config(dir.path(), &prefix));
    let mut server = Server::start(options);
    let token = server.token("outage@example.com", "student");
    let key = answer_key(&sample_banks(), "world-geography");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, doc) = server
            .post(
                "/api/exams/world-geography/submissions",
                Some(&token),
                &json!({"answers": key}),
            )
            .await;
        assert_eq!(
            status, 201,
            "submissions are accepted while the broker is down: {doc}"
        );
        ids.push(doc["_id"].as_str().unwrap().to_string());
    }
    // Restart the server while the broker is still down: the outbox is on disk.
    server.kill9();
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(kafka_config(dir.path(), &prefix));
    let server = Server::start(options);

    let broker = OwnBroker::start(&dir.path().join("broker"), Some(port));
    let cards = tokio::task::spawn_blocking({
        let (b, t) = (broker.brokers.clone(), format!("{prefix}-email"));
        move || {
            consume_until(&b, &t, Duration::from_secs(90), |r| {
                let keys: std::collections::HashSet<_> =
                    r.iter().filter_map(|x| x.key.clone()).collect();
                keys.len() >= 3
            })
        }
    })
    .await
    .unwrap();
    let keys: std::collections::HashSet<String> =
        cards.iter().filter_map(|c| c.key.clone()).collect();
    for id in &ids {
        assert!(
            keys.contains(id),
            "card for {id} missing after the broker came back: {}",
            server.log()
        );
    }
}

#[tokio::test]
async fn every_fixture_envelope_is_handled_and_garbage_goes_to_the_dead_letter_topic() {
    let Some(fixtures) = common::shared_fixtures() else {
        return;
    };
    let (brokers, _guard) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("fixtures");
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(kafka_config(dir.path(), &prefix));
    let server = Server::start(options);
    let topic = format!("{prefix}.exams.score");

    let deb = fixtures.join("debezium");
    let read = |name: &str| std::fs::read(deb.join(name)).unwrap();
    let mut messages: Vec<common::kafka::KeyValue> = Vec::new();
    for name in [
        "risingwave_2.1.4.Final_snapshot_with_schema.jsonl",
        "risingwave_2.1.4.Final_snapshot_no_schema.jsonl",
    ] {
        for line in String::from_utf8(read(name))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            messages.push((None, Some(line.as_bytes().to_vec())));
        }
    }
    messages.push((
        None,
        Some(read(
            "pulsar-hub_0.10.0.Final_op-r_with_schema.value.raw.json",
        )),
    ));
    messages.push((
        None,
        Some(read(
            "pulsar-hub_0.10.0.Final_op-r_with_schema.keyvalue.json",
        )),
    ));
    let delete_key = read("risingwave_2.4.2.Final_delete_schema_null.key.json");
    messages.push((
        Some(delete_key.clone()),
        Some(read("risingwave_2.4.2.Final_delete_schema_null.value.json")),
    ));
    messages.push((Some(delete_key), None)); // the tombstone after the delete
    messages.push((
        None,
        Some(read("pulsar-hub_1.9.7.Final_op-c_no_schema.value.raw.json")),
    ));
    messages.push((None, Some(b"this is not json".to_vec())));
    messages.push((None, Some(br#"{"op": "z", "after": null}"#.to_vec())));
    produce(&brokers, &topic, &messages);

    // Exactly one create among the fixtures: one card, keyed by its document id.
    let cards = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), format!("{prefix}-email"));
        move || consume_until(&b, &t, Duration::from_secs(60), |r| !r.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(cards.len(), 1, "{}", server.log());
    assert_eq!(cards[0].key.as_deref(), Some("1"));
    assert!(
        cards[0]
            .value
            .as_ref()
            .unwrap()
            .contains("Student: thebob@example.com\n")
    );

    let dead = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), format!("{topic}.dlq"));
        move || consume_until(&b, &t, Duration::from_secs(60), |r| r.len() >= 2)
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 2, "{}", server.log());
    let reason = |value: &str| {
        let record = dead
            .iter()
            .find(|r| r.value.as_deref() == Some(value))
            .unwrap_or_else(|| panic!("{value:?} not in the dead-letter topic: {dead:?}"));
        record
            .headers
            .iter()
            .find(|(k, _)| k == "examflow.error")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Partitions interleave, so the two are looked up by content, not order.
    assert!(
        reason("this is not json").contains("not valid UTF-8 JSON"),
        "{dead:?}"
    );
    assert!(
        reason(r#"{"op": "z", "after": null}"#).contains("unknown operation"),
        "{dead:?}"
    );

    // Nothing more arrives (no cards for snapshots, deletes, tombstones), the consumer keeps
    // going, and the dead letters are counted.
    let more = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), format!("{prefix}-email"));
        move || consume_until(&b, &t, Duration::from_secs(5), |_| false)
    })
    .await
    .unwrap();
    assert_eq!(more.len(), 1);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "examflow_dead_letters_total{{source=\"{topic}\"}} 2"
        )),
        "{metrics}"
    );
}
