//! Debezium MongoDB connector change events: parsing every envelope shape the connector
//! emits (JsonConverter with schemas on or off, `{"schema": null, "payload": ...}`,
//! key/value pairs, tombstones). `examflow-ingest` writes the envelope for examflow's own
//! outbox (`examflow_ingest::debezium::insert_event`).

use serde_json::{Map, Value};

use thiserror::Error;

use crate::document::extended_json_to_plain;

/// Why a Debezium message could not be understood; the reason goes to the dead-letter topic.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("value is not valid UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("value is not a JSON object")]
    NotAnObject,
    #[error("envelope has no \"op\" field")]
    MissingOp,
    #[error("unknown operation {0:?} (expected c, u, d, r or t)")]
    UnknownOp(String),
    #[error("field {field:?} is not valid MongoDB extended JSON: {message}")]
    BadDocument { field: String, message: String },
}

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    /// Snapshot read.
    Read,
    Truncate,
}

impl Operation {
    fn parse(op: &str) -> Result<Self, EnvelopeError> {
        Ok(match op {
            "c" => Operation::Create,
            "u" => Operation::Update,
            "d" => Operation::Delete,
            "r" => Operation::Read,
            "t" => Operation::Truncate,
            other => return Err(EnvelopeError::UnknownOp(other.to_string())),
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Operation::Create => "c",
            Operation::Update => "u",
            Operation::Delete => "d",
            Operation::Read => "r",
            Operation::Truncate => "t",
        }
    }
}

/// One understood change event.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeEvent {
    /// A null or empty value: Kafka's tombstone after a delete, for log compaction.
    Tombstone {
        document_id: Option<String>,
    },
    Change(Box<Change>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: Operation,
    /// The document id (`_id` of `after`, else from the message key), as plain text.
    pub document_id: Option<String>,
    /// The document after the change, converted from extended JSON to plain JSON.
    pub after: Option<Value>,
    pub before: Option<Value>,
    pub db: Option<String>,
    pub collection: Option<String>,
    /// When the connector processed the event.
    pub ts_ms: Option<i64>,
    /// When the change happened in the database.
    pub source_ts_ms: Option<i64>,
}

/// Removes the JsonConverter wrapper `{"schema": ..., "payload": ...}` when present.
fn unwrap_payload(value: Value) -> Value {
    match value {
        Value::Object(mut map)
            if map.contains_key("payload")
                && map.keys().all(|k| k == "schema" || k == "payload") =>
        {
            map.remove("payload").unwrap_or(Value::Null)
        }
        other => other,
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, EnvelopeError> {
    serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))
}

/// Document id from a message key: `{"id": "{\"$oid\": \"...\"}"}` or `{"id": "104"}`,
/// with or without the schema wrapper.
pub fn document_id_from_key(key: &[u8]) -> Option<String> {
    let key = unwrap_payload(parse_json(key).ok()?);
    let id = key.get("id").or_else(|| key.get("_id"))?;
    Some(match id {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(ext @ (Value::Object(_) | Value::Number(_) | Value::String(_))) => {
                plain_id(extended_json_to_plain(ext).ok()?)
            }
            _ => text.clone(),
        },
        other => plain_id(extended_json_to_plain(other.clone()).ok()?),
    })
}

fn plain_id(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// `after`/`before`: a string of extended JSON (Debezium's MongoDB connector), or an
/// already decoded object (some converters), or null.
fn document_field(
    payload: &Map<String, Value>,
    field: &str,
) -> Result<Option<Value>, EnvelopeError> {
    let bad = |message: String| EnvelopeError::BadDocument {
        field: field.to_string(),
        message,
    };
    let ext = match payload.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| bad(e.to_string()))?,
        Some(obj @ Value::Object(_)) => obj.clone(),
        Some(_) => return Err(bad("expected a string of extended JSON or an object".into())),
    };
    if !ext.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    // An object can still be one extended JSON value (`{"$date": 1}`, `{"$oid": "…"}`),
    // which is not a document: consumers read fields of `after` and `before`.
    match extended_json_to_plain(ext).map_err(bad)? {
        document @ Value::Object(_) => Ok(Some(document)),
        _ => Err(bad(
            "an extended JSON value ($date, $oid, …), not a document".into(),
        )),
    }
}

/// Parses one Kafka message (key and value bytes) into a change event.
pub fn parse_change_event(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<ChangeEvent, EnvelopeError> {
    let key_id = key.and_then(document_id_from_key);
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(ChangeEvent::Tombstone {
            document_id: key_id,
        });
    };
    let mut outer = parse_json(value)?;
    if outer.is_null() {
        return Ok(ChangeEvent::Tombstone {
            document_id: key_id,
        });
    }
    // A key/value pair in one message (as Pulsar's KeyValue schema shows it).
    let mut key_id = key_id;
    if let Value::Object(map) = &mut outer
        && map.len() == 2
        && map.contains_key("key")
        && map.contains_key("value")
    {
        let inner_key = map.remove("key").unwrap_or(Value::Null);
        if key_id.is_none() {
            key_id = document_id_from_key(inner_key.to_string().as_bytes());
        }
        outer = map.remove("value").unwrap_or(Value::Null);
        if outer.is_null() {
            return Ok(ChangeEvent::Tombstone {
                document_id: key_id,
            });
        }
    }
    let payload = match unwrap_payload(outer) {
        Value::Object(map) => map,
        Value::Null => {
            return Ok(ChangeEvent::Tombstone {
                document_id: key_id,
            });
        }
        _ => return Err(EnvelopeError::NotAnObject),
    };
    let op = match payload.get("op") {
        Some(Value::String(op)) => Operation::parse(op)?,
        Some(other) => return Err(EnvelopeError::UnknownOp(other.to_string())),
        None => return Err(EnvelopeError::MissingOp),
    };
    let after = document_field(&payload, "after")?;
    let before = document_field(&payload, "before")?;
    let document_id = after
        .as_ref()
        .and_then(|d| d.get("_id"))
        .map(|id| plain_id(id.clone()))
        .or(key_id);
    let source = payload.get("source");
    let text = |k: &str| {
        source
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(ChangeEvent::Change(Box::new(Change {
        op,
        document_id,
        after,
        before,
        db: text("db"),
        collection: text("collection"),
        ts_ms: payload.get("ts_ms").and_then(Value::as_i64),
        source_ts_ms: source.and_then(|s| s.get("ts_ms")).and_then(Value::as_i64),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_event_parses() {
        let value = r#"{"payload": {"before": null, "after": "{\"_id\": {\"$oid\": \"66a279b8f98a9d0379570575\"},\"email\": \"tunisia@gmail.com\",\"score\": 0,\"result\": \"failed\",\"details\": []}", "updateDescription": null, "source": {"version": "2.7.0.Final", "connector": "mongodb", "name": "email-topic", "ts_ms": 1721924024000, "snapshot": "false", "db": "exams", "collection": "score", "ord": 1}, "op": "c", "ts_ms": 1721924024568, "transaction": null}}"#;
        let ChangeEvent::Change(change) = parse_change_event(None, Some(value.as_bytes())).unwrap()
        else {
            panic!("not a change")
        };
        assert_eq!(change.op, Operation::Create);
        assert_eq!(
            change.document_id.as_deref(),
            Some("66a279b8f98a9d0379570575")
        );
        assert_eq!(change.after.unwrap()["email"], "tunisia@gmail.com");
        assert_eq!(change.db.as_deref(), Some("exams"));
        assert_eq!(change.collection.as_deref(), Some("score"));
        assert_eq!(change.ts_ms, Some(1721924024568));
    }

    #[test]
    fn tombstones_and_keys() {
        let key = br#"{"schema":null,"payload":{"id":"{\"$oid\": \"65bc9fb6c485f419a7a877fe\"}"}}"#;
        assert_eq!(
            parse_change_event(Some(key), None).unwrap(),
            ChangeEvent::Tombstone {
                document_id: Some("65bc9fb6c485f419a7a877fe".into())
            }
        );
        assert_eq!(
            document_id_from_key(br#"{"id": "104"}"#).as_deref(),
            Some("104")
        );
        assert!(matches!(
            parse_change_event(None, Some(b"null")).unwrap(),
            ChangeEvent::Tombstone { .. }
        ));
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        assert!(matches!(
            parse_change_event(None, Some(b"{not json")),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(
            parse_change_event(None, Some(b"[1]")),
            Err(EnvelopeError::NotAnObject)
        );
        assert_eq!(
            parse_change_event(None, Some(b"{\"after\": null}")),
            Err(EnvelopeError::MissingOp)
        );
        assert_eq!(
            parse_change_event(None, Some(br#"{"op": "x"}"#)),
            Err(EnvelopeError::UnknownOp("x".into()))
        );
        assert!(matches!(
            parse_change_event(None, Some(br#"{"op": "c", "after": "{oops"}"#)),
            Err(EnvelopeError::BadDocument { .. })
        ));
        assert!(matches!(
            parse_change_event(None, Some(b"\xff\xfe")),
            Err(EnvelopeError::NotJson(_))
        ));
    }

    /// Found with the debezium_envelope fuzz target's invariant (documents are objects):
    /// an `after` (or `before`) that is one extended JSON value, as a string or an object,
    /// used to come out as a plain string or number instead of a document.
    #[test]
    fn extended_json_values_are_not_documents() {
        for value in [
            &br#"{"op":"c","after":"{\"$date\": 1}"}"#[..],
            br#"{"op":"c","after":{"$oid":"66a279b8f98a9d0379570575"}}"#,
            br#"{"op":"u","before":{"$numberLong":"7"}}"#,
        ] {
            let text = String::from_utf8_lossy(value).into_owned();
            assert!(
                matches!(
                    parse_change_event(None, Some(value)),
                    Err(EnvelopeError::BadDocument { .. })
                ),
                "{text}"
            );
        }
        // A document whose fields are such values is fine.
        let value = br#"{"op":"c","after":"{\"_id\": {\"$oid\": \"66a279b8f98a9d0379570575\"}, \"d\": {\"$date\": 1}}"}"#;
        let ChangeEvent::Change(change) = parse_change_event(None, Some(value)).unwrap() else {
            panic!("not a change")
        };
        assert_eq!(change.after.unwrap()["d"], "1970-01-01T00:00:00.001Z");
    }
}
