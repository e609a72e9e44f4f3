//! One MongoDB change-stream event (or snapshot document) as the Debezium MongoDB
//! connector writes it to Kafka (2.x, JsonConverter without schemas): the key
//! `{"id": "<extended JSON of _id>"}`, the value with `after` as a string of relaxed
//! extended JSON, and a tombstone (same key, no value) after every delete.

use mongodb::bson::{Bson, Document, Timestamp};
use serde_json::{Value, json};

/// Where an event came from, for the envelope's `source` block.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Debezium's logical name (`topic.prefix`).
    pub name: String,
    pub db: String,
    pub collection: String,
}

/// Whether an event belongs to the initial snapshot, as Debezium's `source.snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMark {
    /// A streamed change.
    No,
    /// A snapshot read.
    Yes,
    /// The snapshot's last read.
    Last,
}

impl SnapshotMark {
    fn text(self) -> &'static str {
        match self {
            SnapshotMark::No => "false",
            SnapshotMark::Yes => "true",
            SnapshotMark::Last => "last",
        }
    }
}

/// One Kafka record: key, value (`None` is a tombstone), the document id it concerns and
/// its Debezium op (`"tombstone"` for a tombstone), for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub document_id: String,
    pub op: &'static str,
}

/// What a change-stream event turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoded {
    /// Records to send, in order (a delete is followed by its tombstone).
    Records(Vec<Record>),
    /// An event that carries no document change (e.g. `drop`, `invalidate`): its name.
    Ignored(String),
}

/// Relaxed extended JSON text of a BSON value (`{"$oid": ...}`, `{"$date": ...}`, numbers
/// as numbers), as Debezium writes `after` and the key's `id`.
fn extended_json(value: &Bson) -> String {
    value.clone().into_relaxed_extjson().to_string()
}

/// The key Debezium gives a document: `{"id": "<extended JSON of _id>"}`.
pub fn key_of(id: &Bson) -> Vec<u8> {
    json!({ "id": extended_json(id) }).to_string().into_bytes()
}

/// Plain text of a document id (ObjectIds as hex), for logs and card keys.
fn plain_id(id: &Bson) -> String {
    match id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(s) => s.clone(),
        other => extended_json(other),
    }
}

/// When and how an event happened, for the envelope's `source` and `ts_ms`.
struct EventTime {
    /// The change's cluster time (`None` for snapshot reads).
    at: Option<Timestamp>,
    wall_ms: Option<i64>,
    snapshot: SnapshotMark,
    /// When examflow processed it.
    now_ms: i64,
}

fn value_of(
    op: &str,
    after: Option<&Document>,
    update: Option<Value>,
    source: &SourceInfo,
    time: EventTime,
) -> Vec<u8> {
    let EventTime {
        at,
        wall_ms,
        snapshot,
        now_ms,
    } = time;
    let (ts_ms, ord) = match at {
        Some(t) => (i64::from(t.time) * 1000, i64::from(t.increment)),
        None => (now_ms, 1),
    };
    json!({
        "before": null,
        "after": after.map(|d| extended_json(&Bson::Document(d.clone()))),
        "updateDescription": update,
        "source": {
            "version": concat!("examflow-", env!("CARGO_PKG_VERSION")),
            "connector": "mongodb",
            "name": source.name,
            "ts_ms": ts_ms,
            "snapshot": snapshot.text(),
            "db": source.db,
            "sequence": null,
            "collection": source.collection,
            "ord": ord,
            "lsid": null,
            "txnNumber": null,
            "wallTime": wall_ms,
        },
        "op": op,
        "ts_ms": now_ms,
        "transaction": null,
    })
    .to_string()
    .into_bytes()
}

/// A document read by the initial snapshot: `op: "r"`.
pub fn snapshot_record(
    doc: &Document,
    source: &SourceInfo,
    mark: SnapshotMark,
    now_ms: i64,
) -> Record {
    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
    Record {
        key: key_of(&id),
        value: Some(value_of(
            "r",
            Some(doc),
            None,
            source,
            EventTime {
                at: None,
                wall_ms: None,
                snapshot: mark,
                now_ms,
            },
        )),
        document_id: plain_id(&id),
        op: "r",
    }
}

/// A document inserted by examflow itself (the embedded outbox, which has no cluster
/// time): `op: "c"`, key and value; `ts_ms` stands for both times.
pub fn insert_record(doc: &Document, source: &SourceInfo, ts_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
    let value = value_of(
        "c",
        Some(doc),
        None,
        source,
        EventTime {
            at: None,
            wall_ms: None,
            snapshot: SnapshotMark::No,
            now_ms: ts_ms,
        },
    );
    (key_of(&id), value)
}

/// `updateDescription` as Debezium 2.x writes it: `updatedFields` a string of extended
/// JSON, `removedFields` and `truncatedArrays` arrays or null.
fn update_description(event: &Document) -> Option<Value> {
    let description = event.get_document("updateDescription").ok()?;
    let updated = description
        .get_document("updatedFields")
        .ok()
        .map(|d| extended_json(&Bson::Document(d.clone())));
    let list = |key: &str| match description.get(key) {
        Some(Bson::Array(items)) if !items.is_empty() => Value::Array(
            items
                .iter()
                .map(|b| b.clone().into_relaxed_extjson())
                .collect(),
        ),
        _ => Value::Null,
    };
    Some(json!({
        "removedFields": list("removedFields"),
        "updatedFields": updated,
        "truncatedArrays": list("truncatedArrays"),
    }))
}

/// Encodes one raw change-stream event (`fullDocument: updateLookup`).
pub fn change_records(event: &Document, source: &SourceInfo, now_ms: i64) -> Encoded {
    let operation = event.get_str("operationType").unwrap_or("(none)");
    let op = match operation {
        "insert" => "c",
        "update" | "replace" => "u",
        "delete" => "d",
        other => return Encoded::Ignored(other.to_string()),
    };
    let id = event
        .get_document("documentKey")
        .ok()
        .and_then(|k| k.get("_id"))
        .or_else(|| {
            event
                .get_document("fullDocument")
                .ok()
                .and_then(|d| d.get("_id"))
        })
        .cloned()
        .unwrap_or(Bson::Null);
    // For an update, the looked-up document may be gone (deleted since): `after` null,
    // as Debezium sends it.
    let after = match op {
        "d" => None,
        _ => event.get_document("fullDocument").ok(),
    };
    let update = (operation == "update")
        .then(|| update_description(event))
        .flatten();
    let at = event.get_timestamp("clusterTime").ok();
    let wall_ms = event
        .get_datetime("wallTime")
        .ok()
        .map(|d| d.timestamp_millis());
    let key = key_of(&id);
    let document_id = plain_id(&id);
    let mut records = vec![Record {
        key: key.clone(),
        value: Some(value_of(
            op,
            after,
            update,
            source,
            EventTime {
                at,
                wall_ms,
                snapshot: SnapshotMark::No,
                now_ms,
            },
        )),
        document_id: document_id.clone(),
        op,
    }];
    if op == "d" {
        records.push(Record {
            key,
            value: None,
            document_id,
            op: "tombstone",
        });
    }
    Encoded::Records(records)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{DateTime, doc, oid::ObjectId};

    use super::*;
    use crate::debezium::{ChangeEvent, Operation, parse_change_event};
    use crate::score_cards::{CardDecision, decide};

    fn source() -> SourceInfo {
        SourceInfo {
            name: "mongo-trigger-topic".into(),
            db: "exams".into(),
            collection: "score".into(),
        }
    }

    fn result_doc(oid: ObjectId) -> Document {
        doc! {
            "_id": oid,
            "email": "ada@example.com",
            "exam": "geo",
            "score": 1_i64,
            "total": 2_i64,
            "percentage": 50_i64,
            "result": "failed",
            "details": [{"question": "Capital of France?", "user_answer": "Paris", "correct_answer": "Paris", "is_correct": true}],
            "submitted_at": DateTime::from_millis(1_721_924_024_000),
        }
    }

    fn records(encoded: Encoded) -> Vec<Record> {
        match encoded {
            Encoded::Records(r) => r,
            Encoded::Ignored(what) => panic!("ignored {what}"),
        }
    }

    fn change(r: &Record) -> Box<crate::debezium::Change> {
        match parse_change_event(Some(&r.key), r.value.as_deref()).unwrap() {
            ChangeEvent::Change(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_insert_reads_back_as_debezium_create_and_makes_a_card() {
        let oid = ObjectId::new();
        let event = doc! {
            "_id": {"_data": "8263"},
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_721_924_024, increment: 7 },
            "wallTime": DateTime::from_millis(1_721_924_024_123),
            "fullDocument": result_doc(oid),
            "ns": {"db": "exams", "coll": "score"},
            "documentKey": {"_id": oid},
        };
        let rs = records(change_records(&event, &source(), 1_721_924_025_000));
        assert_eq!(rs.len(), 1);
        let key: Value = serde_json::from_slice(&rs[0].key).unwrap();
        assert_eq!(
            key,
            json!({"id": format!("{{\"$oid\":\"{}\"}}", oid.to_hex())})
        );
        let value: Value = serde_json::from_slice(rs[0].value.as_ref().unwrap()).unwrap();
        assert!(
            value["after"].is_string(),
            "after is a string of extended JSON"
        );
        assert_eq!(value["source"]["connector"], "mongodb");
        assert_eq!(value["source"]["name"], "mongo-trigger-topic");
        assert_eq!(value["source"]["ts_ms"], 1_721_924_024_000_i64);
        assert_eq!(value["source"]["ord"], 7);
        assert_eq!(value["source"]["snapshot"], "false");
        assert_eq!(value["ts_ms"], 1_721_924_025_000_i64);
        let c = change(&rs[0]);
        assert_eq!(c.op, Operation::Create);
        assert_eq!(c.document_id.as_deref(), Some(oid.to_hex().as_str()));
        assert_eq!(c.after.as_ref().unwrap()["email"], "ada@example.com");
        assert_eq!(
            c.after.as_ref().unwrap()["submitted_at"],
            "2024-07-25T16:13:44.000Z"
        );
        assert_eq!(c.source_ts_ms, Some(1_721_924_024_000));
        match decide(Some(&rs[0].key), rs[0].value.as_deref()) {
            CardDecision::Send { document_id, card } => {
                assert_eq!(document_id, oid.to_hex());
                assert!(card.contains("Student: ada@example.com"), "{card}");
                assert!(card.contains("Capital of France?"), "{card}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_carries_the_looked_up_document_and_its_description() {
        let oid = ObjectId::new();
        let mut after = result_doc(oid);
        after.insert("score", 2_i64);
        let event = doc! {
            "_id": {"_data": "8264"},
            "operationType": "update",
            "clusterTime": Timestamp { time: 1_721_924_030, increment: 1 },
            "fullDocument": after,
            "documentKey": {"_id": oid},
            "updateDescription": {"updatedFields": {"score": 2_i64}, "removedFields": ["note"], "truncatedArrays": []},
        };
        let rs = records(change_records(&event, &source(), 0));
        let value: Value = serde_json::from_slice(rs[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(value["op"], "u");
        assert_eq!(value["updateDescription"]["updatedFields"], "{\"score\":2}");
        assert_eq!(value["updateDescription"]["removedFields"], json!(["note"]));
        assert_eq!(value["updateDescription"]["truncatedArrays"], Value::Null);
        assert_eq!(change(&rs[0]).after.unwrap()["score"], 2);
        assert!(matches!(
            decide(Some(&rs[0].key), rs[0].value.as_deref()),
            CardDecision::Send { .. }
        ));
    }

    #[test]
    fn an_update_of_a_document_deleted_since_has_a_null_after() {
        let event = doc! {
            "operationType": "update",
            "documentKey": {"_id": "custom-id"},
            "updateDescription": {"updatedFields": {"x": 1}, "removedFields": []},
        };
        let rs = records(change_records(&event, &source(), 0));
        let value: Value = serde_json::from_slice(rs[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(value["after"], Value::Null);
        assert_eq!(change(&rs[0]).document_id.as_deref(), Some("custom-id"));
    }

    #[test]
    fn a_delete_is_followed_by_its_tombstone() {
        let oid = ObjectId::new();
        let event = doc! {
            "operationType": "delete",
            "clusterTime": Timestamp { time: 1, increment: 2 },
            "documentKey": {"_id": oid},
        };
        let rs = records(change_records(&event, &source(), 0));
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].key, rs[1].key);
        assert_eq!(rs[1].value, None);
        let c = change(&rs[0]);
        assert_eq!(c.op, Operation::Delete);
        assert_eq!(c.after, None);
        assert_eq!(c.document_id.as_deref(), Some(oid.to_hex().as_str()));
        assert_eq!(
            parse_change_event(Some(&rs[1].key), None).unwrap(),
            ChangeEvent::Tombstone {
                document_id: Some(oid.to_hex())
            }
        );
        assert_eq!(
            decide(Some(&rs[0].key), rs[0].value.as_deref()),
            CardDecision::Skip { reason: "delete" }
        );
    }

    #[test]
    fn snapshot_reads_are_op_r_and_the_last_is_marked() {
        let doc = doc! {"_id": 1001_i64, "email": "sally@example.com"};
        let r = snapshot_record(&doc, &source(), SnapshotMark::Last, 5);
        let value: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        assert_eq!(value["op"], "r");
        assert_eq!(value["source"]["snapshot"], "last");
        assert_eq!(r.document_id, "1001");
        let c = change(&r);
        assert_eq!(c.op, Operation::Read);
        assert_eq!(c.document_id.as_deref(), Some("1001"));
        assert_eq!(
            decide(Some(&r.key), r.value.as_deref()),
            CardDecision::Skip {
                reason: "snapshot read"
            }
        );
    }

    #[test]
    fn events_without_a_document_change_are_ignored() {
        for op in ["drop", "invalidate", "rename", "dropDatabase"] {
            assert_eq!(
                change_records(&doc! {"operationType": op}, &source(), 0),
                Encoded::Ignored(op.into())
            );
        }
    }
}
