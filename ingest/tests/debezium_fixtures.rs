//! Conformance: every captured Debezium MongoDB envelope in ../shared/fixtures/debezium.

use std::path::PathBuf;

use examflow_ingest::debezium::{ChangeEvent, Operation, parse_change_event};
use examflow_ingest::score_cards::{CardDecision, decide};

fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/debezium");
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} not found (shared fixtures are not beside this clone)",
            dir.display()
        );
        None
    }
}

fn change(key: Option<&[u8]>, value: &[u8]) -> Box<examflow_ingest::debezium::Change> {
    match parse_change_event(key, Some(value)).unwrap() {
        ChangeEvent::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn snapshot_events_with_and_without_schema_agree() {
    let Some(dir) = fixtures() else { return };
    let with =
        std::fs::read_to_string(dir.join("risingwave_2.1.4.Final_snapshot_with_schema.jsonl"))
            .unwrap();
    let without =
        std::fs::read_to_string(dir.join("risingwave_2.1.4.Final_snapshot_no_schema.jsonl"))
            .unwrap();
    let with: Vec<_> = with
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| change(None, l.as_bytes()))
        .collect();
    let without: Vec<_> = without
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| change(None, l.as_bytes()))
        .collect();
    assert_eq!(with.len(), 4);
    assert_eq!(with, without);
    assert_eq!(with[0].op, Operation::Read);
    assert_eq!(with[0].document_id.as_deref(), Some("1001"));
    assert_eq!(
        with[0].after.as_ref().unwrap()["email"],
        "sally.thomas@acme.com"
    );
    assert_eq!(with[0].collection.as_deref(), Some("customers"));
    assert_eq!(with[0].db.as_deref(), Some("inventory"));
    let lines =
        std::fs::read_to_string(dir.join("risingwave_2.1.4.Final_snapshot_no_schema.jsonl"))
            .unwrap();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        assert_eq!(
            decide(None, Some(line.as_bytes())),
            CardDecision::Skip {
                reason: "snapshot read"
            }
        );
    }
}

#[test]
fn older_envelope_with_patch_and_keyvalue_wrapper() {
    let Some(dir) = fixtures() else { return };
    let raw =
        std::fs::read(dir.join("pulsar-hub_0.10.0.Final_op-r_with_schema.value.raw.json")).unwrap();
    let c = change(None, &raw);
    assert_eq!(c.op, Operation::Read);
    assert_eq!(c.document_id.as_deref(), Some("104"));
    assert_eq!(c.after.as_ref().unwrap()["weight"], 1.25);
    let kv =
        std::fs::read(dir.join("pulsar-hub_0.10.0.Final_op-r_with_schema.keyvalue.json")).unwrap();
    let c2 = change(None, &kv);
    assert_eq!(c2, c);
    assert_eq!(
        decide(None, Some(&kv)),
        CardDecision::Skip {
            reason: "snapshot read"
        }
    );
}

#[test]
fn create_event_makes_a_card() {
    let Some(dir) = fixtures() else { return };
    let raw =
        std::fs::read(dir.join("pulsar-hub_1.9.7.Final_op-c_no_schema.value.raw.json")).unwrap();
    let c = change(None, &raw);
    assert_eq!(c.op, Operation::Create);
    assert_eq!(c.document_id.as_deref(), Some("1"));
    assert_eq!(c.ts_ms, Some(1701329265295));
    assert_eq!(c.source_ts_ms, Some(1701329265000));
    match decide(None, Some(&raw)) {
        CardDecision::Send { document_id, card } => {
            assert_eq!(document_id, "1");
            assert_eq!(
                card,
                "Exam-Generator - Score Card\n\nStudent: thebob@example.com\nScore: Score not available\nResult: RESULT NOT AVAILABLE\n\nExam Details:\n"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn delete_and_its_tombstone_send_nothing() {
    let Some(dir) = fixtures() else { return };
    let key =
        std::fs::read(dir.join("risingwave_2.4.2.Final_delete_schema_null.key.json")).unwrap();
    let value =
        std::fs::read(dir.join("risingwave_2.4.2.Final_delete_schema_null.value.json")).unwrap();
    let c = change(Some(&key), &value);
    assert_eq!(c.op, Operation::Delete);
    assert_eq!(c.after, None);
    assert_eq!(c.document_id.as_deref(), Some("65bc9fb6c485f419a7a877fe"));
    assert_eq!(
        decide(Some(&key), Some(&value)),
        CardDecision::Skip { reason: "delete" }
    );
    assert_eq!(
        parse_change_event(Some(&key), None).unwrap(),
        ChangeEvent::Tombstone {
            document_id: Some("65bc9fb6c485f419a7a877fe".into())
        }
    );
    assert_eq!(
        decide(Some(&key), None),
        CardDecision::Skip {
            reason: "tombstone"
        }
    );
}
