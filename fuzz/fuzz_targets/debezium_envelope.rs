//! Debezium change events: arbitrary bytes as the message value alone, as the key alone
//! (a tombstone), and split at the first newline into key and value.

#![no_main]

use examflow_formats::debezium::{ChangeEvent, document_id_from_key, parse_change_event};
use examflow_formats::document::{ResultDocument, extended_json_to_plain, format_timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(None, Some(data));
    check(Some(data), None);
    let _ = document_id_from_key(data);
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        check(Some(&data[..newline]), Some(&data[newline + 1..]));
    }
});

fn check(key: Option<&[u8]>, value: Option<&[u8]>) {
    let Ok(event) = parse_change_event(key, value) else {
        return;
    };
    let change = match event {
        ChangeEvent::Tombstone { .. } => return,
        ChangeEvent::Change(change) => change,
    };
    // What consumers rely on: the documents are JSON objects, and the id is the document's.
    for document in [&change.after, &change.before].into_iter().flatten() {
        assert!(document.is_object(), "not a document: {document}");
    }
    if let Some(after) = &change.after
        && let Some(id) = after.get("_id")
    {
        assert!(change.document_id.is_some(), "after has _id {id} but no document id");
    }
    // A result document read from `after` survives the trip through extended JSON that
    // the outbox and change capture make, when its id and time are in canonical form.
    if let Some(after) = change.after.clone()
        && let Ok(doc) = ResultDocument::from_plain_json(after)
        && is_canonical(&doc)
    {
        let ext: serde_json::Value = serde_json::from_str(&doc.to_extended_json()).unwrap();
        let plain = extended_json_to_plain(ext).unwrap();
        assert_eq!(ResultDocument::from_plain_json(plain).unwrap(), doc);
    }
}

/// An id that is not an ObjectId in uppercase hex and a time in RFC 3339 UTC with
/// milliseconds (or no RFC 3339 time at all): the forms `to_bson` writes back unchanged.
fn is_canonical(doc: &ResultDocument) -> bool {
    let object_id = doc.id.len() == 24 && doc.id.bytes().all(|b| b.is_ascii_hexdigit());
    let id_ok = !object_id || !doc.id.bytes().any(|b| b.is_ascii_uppercase());
    let time_ok = match chrono::DateTime::parse_from_rfc3339(&doc.submitted_at) {
        Ok(at) => match chrono::DateTime::from_timestamp_millis(at.timestamp_millis()) {
            Some(utc) => format_timestamp(utc) == doc.submitted_at,
            None => false,
        },
        Err(_) => true,
    };
    id_ok && time_ok
}
