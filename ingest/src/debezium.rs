//! Debezium MongoDB connector change events: the parser is `examflow_formats::debezium`'s
//! (re-exported here); this module writes the envelope for examflow's own outbox.

pub use examflow_formats::debezium::*;

/// Key and value of the change event for a newly inserted result, in the shape the
/// Debezium MongoDB connector (2.x, JsonConverter without schemas) emits: the embedded
/// store's outbox writes the same envelope as change capture ([`crate::cdc::envelope`]).
pub fn insert_event(
    doc: &crate::document::ResultDocument,
    db: &str,
    collection: &str,
    ts_ms: i64,
) -> (Vec<u8>, Vec<u8>) {
    let source = crate::cdc::envelope::SourceInfo {
        name: "examflow".into(),
        db: db.into(),
        collection: collection.into(),
    };
    crate::cdc::envelope::insert_record(&doc.to_bson(), &source, ts_ms)
}
