//! Poison and oversized messages never block a stream (issue 20): an attempt larger than
//! `[kafka] max_message_bytes` in the middle of good ones becomes a dead letter (whole in
//! `dead_letters`, cut to fit on `<topic>.dlq` with its size and hash) and the ingest moves
//! on; a change event larger than the limit does not hold back the outbox relay.

mod common;

use std::time::Duration;

use common::kafka::{
    KeyValue, Record, consume_until, create_topic, create_topic_with, produce, test_brokers,
};
use common::lake::{
    IngestOptions, IngestProcess, generate_attempts, read_attempts, sql, tail, wait_for_count,
    write_ingest_config,
};
use common::{Server, ServerOptions, unique, write_bank};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn header<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An attempt document of about `bytes` bytes (a `padding` field the decoder ignores).
fn padded(template: &Value, keen_id: &str, bytes: usize) -> Vec<u8> {
    let mut doc = template.clone();
    doc["keen_id"] = json!(keen_id);
    doc["padding"] = json!("p".repeat(bytes));
    doc.to_string().into_bytes()
}

#[tokio::test]
async fn two_and_nine_mib_attempts_in_a_stream_of_good_ones() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let file = dir.path().join("attempts.jsonl");
    generate_attempts(&file, 120, 21, 0.0, "lines");
    let attempts = read_attempts(&file);
    let topic = unique("exams-large");
    {
        let (b, t) = (brokers.clone(), topic.clone());
        // Like Kafka, the broker takes up to 1 MiB per message unless the topic says more.
        tokio::task::spawn_blocking(move || {
            create_topic_with(&b, &t, 2, &[("max.message.bytes", "16777216")])
        })
        .await
        .unwrap();
    }
    // The default limit (8 MiB): a 2 MiB attempt is stored, a 9 MiB one is a dead letter.
    let config = write_ingest_config(&dir.path().join("ingest.toml"), 10_000, None);
    let mut ingest = IngestProcess::start_with_config(
        &IngestOptions {
            data_dir: &data_dir,
            brokers: &brokers,
            topics: &[&topic],
            group: &unique("large"),
            commit_interval_ms: 300,
            log_name: "ingest.log",
        },
        &config,
    );
    let good = |range: std::ops::Range<usize>| -> Vec<KeyValue> {
        attempts[range]
            .iter()
            .map(|a| {
                (
                    Some(a["keen_id"].as_str().unwrap().as_bytes().to_vec()),
                    Some(a.to_string().into_bytes()),
                )
            })
            .collect()
    };
    let two_mib = padded(&attempts[0], "large-2mib", 2 << 20);
    let nine_mib = padded(&attempts[0], "large-9mib", 9 << 20);
    let mut messages = good(1..40);
    messages.push((Some(b"large-2mib".to_vec()), Some(two_mib.clone())));
    messages.extend(good(40..80));
    messages.push((Some(b"large-9mib".to_vec()), Some(nine_mib.clone())));
    messages.extend(good(80..120));
    {
        let (b, t) = (brokers.clone(), topic.clone());
        tokio::task::spawn_blocking(move || produce(&b, &t, &messages))
            .await
            .unwrap();
    }

    // Every good attempt and the 2 MiB one are committed; the 9 MiB one is a dead letter.
    let (d, wait) = (data_dir.clone(), Duration::from_secs(90));
    let stored = tokio::task::spawn_blocking(move || {
        wait_for_count(&d, "SELECT count(*) AS n FROM attempts", 120, wait)
    })
    .await
    .unwrap();
    assert_eq!(stored, 120, "log:\n{}", tail(&ingest.log_text(), 40));
    // `dead_letters` commits after the attempt tables in each round: wait for it too.
    let (d, wait) = (data_dir.clone(), Duration::from_secs(30));
    let dead = tokio::task::spawn_blocking(move || {
        wait_for_count(&d, "SELECT count(*) AS n FROM dead_letters", 1, wait)
    })
    .await
    .unwrap();
    assert_eq!(dead, 1, "log:\n{}", tail(&ingest.log_text(), 40));
    let rows = sql(
        &data_dir,
        "SELECT reason, payload_bytes, octet_length(CAST(payload AS VARCHAR)) AS kept FROM dead_letters",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0]["reason"]
            .as_str()
            .unwrap()
            .contains("larger than the limit of 8388608 bytes"),
        "{rows:?}"
    );
    assert_eq!(rows[0]["payload_bytes"], json!(nine_mib.len()));
    assert_eq!(rows[0]["kept"], json!(nine_mib.len()), "kept whole");
    let padding = sql(
        &data_dir,
        "SELECT keen_id FROM attempts WHERE keen_id IN ('large-2mib', 'large-9mib')",
    );
    assert_eq!(padding, vec![json!({"keen_id": "large-2mib"})]);

    // On `<topic>.dlq`: an excerpt, the size and the hash of the whole.
    let dlq = {
        let (b, t) = (brokers.clone(), format!("{topic}.dlq"));
        tokio::task::spawn_blocking(move || {
            consume_until(&b, &t, Duration::from_secs(60), |r| !r.is_empty())
        })
        .await
        .unwrap()
    };
    assert_eq!(dlq.len(), 1, "log:\n{}", tail(&ingest.log_text(), 40));
    let letter = &dlq[0];
    assert_eq!(letter.key.as_deref(), Some("large-9mib"));
    assert_eq!(header(letter, "examflow.payload.truncated"), Some("true"));
    let size = nine_mib.len().to_string();
    assert_eq!(
        header(letter, "examflow.payload.bytes"),
        Some(size.as_str())
    );
    let hash = hex::encode(Sha256::digest(&nine_mib));
    assert_eq!(
        header(letter, "examflow.payload.sha256"),
        Some(hash.as_str())
    );
    let excerpt = letter.value.as_deref().unwrap();
    assert!(excerpt.len() < 64 * 1024 && excerpt.len() >= 1024);
    assert!(nine_mib.starts_with(excerpt.as_bytes()));
    assert!(
        header(letter, "examflow.error")
            .unwrap()
            .contains("larger than the limit")
    );
    assert!(
        !ingest.log_text().contains("produce failed; retrying"),
        "no send is retried forever:\n{}",
        tail(&ingest.log_text(), 40)
    );
    ingest.stop();
}

#[tokio::test]
async fn a_change_event_over_the_limit_does_not_hold_back_the_outbox() {
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    // A result of `huge` is about 1.5 MB (its questions are long), of `tiny` a few KB.
    write_bank(&banks, "huge", 300, |i| {
        format!("Question {i}: {}", "q".repeat(5000))
    });
    write_bank(&banks, "tiny", 3, |i| format!("Tiny question {i}?"));
    let prefix = unique("oversize");
    let topic = format!("{prefix}.exams.score");
    // The change topic and its dead letters exist already with the broker's default limit
    // (1 MiB, as Kafka's), below examflow's own (8 MiB): the broker refuses the large event
    // for good, and its whole payload as a dead letter too.
    {
        let (b, t) = (brokers.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            create_topic(&b, &t, 2);
            create_topic(&b, &format!("{t}.dlq"), 2);
        })
        .await
        .unwrap();
    }
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntopic_prefix = \"{prefix}\"\nemail_topic = \"{prefix}-email\"\n\
             score_card_group = \"{prefix}-cards\"\nsession_timeout_ms = 6000\n\
             [ingest]\nenabled = false\n"
        ),
    )
    .unwrap();
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.kafka_brokers = Some(brokers.clone());
    options.config_file = Some(config);
    options.banks = banks;
    let server = Server::start(options);
    let student = server.token("big@example.com", "student");
    let mut ids = Vec::new();
    for (exam, n) in [("tiny", 3), ("huge", 300), ("tiny", 3)] {
        let (status, doc) = server
            .post(
                &format!("/api/exams/{exam}/submissions"),
                Some(&student),
                &json!({"answers": vec!["right"; n]}),
            )
            .await;
        assert_eq!(status, 201, "{doc}");
        ids.push(doc["_id"].as_str().unwrap().to_string());
    }

    // Both small results reach the change topic.
    let events = {
        let (b, t) = (brokers.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            consume_until(&b, &t, Duration::from_secs(60), |r| r.len() >= 2)
        })
        .await
        .unwrap()
    };
    let keys: Vec<String> = events.iter().filter_map(|e| e.key.clone()).collect();
    assert_eq!(events.len(), 2, "{keys:?}\n{}", server.log());
    for id in [&ids[0], &ids[2]] {
        assert!(
            keys.iter().any(|k| k.contains(id.as_str())),
            "{id}: {keys:?}"
        );
    }
    assert!(!keys.iter().any(|k| k.contains(ids[1].as_str())));

    // The large one: cut to fit on the dead-letter topic, whole in the server's dead letters.
    let dlq = {
        let (b, t) = (brokers.clone(), format!("{topic}.dlq"));
        tokio::task::spawn_blocking(move || {
            consume_until(&b, &t, Duration::from_secs(60), |r| !r.is_empty())
        })
        .await
        .unwrap()
    };
    assert_eq!(dlq.len(), 1, "{}", server.log());
    assert!(dlq[0].key.as_deref().unwrap().contains(ids[1].as_str()));
    assert_eq!(header(&dlq[0], "examflow.payload.truncated"), Some("true"));
    let size: usize = header(&dlq[0], "examflow.payload.bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 1 << 20, "{size}");
    let admin = server.token("ops@example.com", "admin");
    let (status, letters) = server.get("/api/dead-letters", Some(&admin)).await;
    assert_eq!(status, 200, "{letters}");
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["source"], "outbox");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Message size too large")
    );
    let payload = letters[0]["payload"].as_str().unwrap();
    assert_eq!(payload.len(), size, "kept whole");
    assert_eq!(
        header(&dlq[0], "examflow.payload.sha256"),
        Some(hex::encode(Sha256::digest(payload.as_bytes())).as_str())
    );
    let envelope: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(envelope["op"], "c");
}
