//! The stored result document (the seed's shape plus examflow's additions) and its
//! conversions to and from BSON / MongoDB extended JSON.

use bson::{Bson, Document, oid::ObjectId};
use chrono::{DateTime, SecondsFormat, Utc};
use examflow_engine::{QuestionMark, ScoredSubmission};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One stored result: `{"_id", "email", "exam", "score", "total", "percentage", "result",
/// "details", "submitted_at"}`, and `adaptive` for a finished adaptive session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDocument {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub exam: String,
    pub score: u32,
    /// Number of questions (an addition to the seed's shape).
    pub total: u32,
    pub percentage: u32,
    /// "passed" or "failed".
    pub result: String,
    pub details: Vec<QuestionMark>,
    /// RFC 3339 UTC with milliseconds.
    pub submitted_at: String,
    /// Set for a finished adaptive session (absent for fixed-form results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveOutcome>,
    /// Set for a submitted fixed-form attempt: its id, and who submitted it (`student`, or
    /// `deadline` when the server submitted it at deadline + grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

/// The ability estimate of a finished adaptive session, stored with its result. `score`,
/// `total` and `details` of the result are the items the session gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveOutcome {
    pub session: String,
    pub theta: f64,
    pub se: f64,
    pub scale_score: f64,
    pub stop_reason: String,
    /// The item-parameter version the session ran on.
    pub calibration_version: i64,
    /// The cut score on the θ scale, when the exam has one (then `result` is passed/failed).
    pub cut_score: Option<f64>,
    /// With a cut score: how the decision was made, `confidence_interval` (the 95%
    /// interval of θ lies on one side of the cut) or `final_estimate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_basis: Option<String>,
    /// The 95% confidence interval of θ, `[low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
}

/// A new MongoDB-style ObjectId in hex: time-ordered and unique without coordination.
pub fn new_document_id() -> String {
    ObjectId::new().to_hex()
}

pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl ResultDocument {
    pub fn new(email: &str, scored: ScoredSubmission, submitted_at: DateTime<Utc>) -> Self {
        ResultDocument {
            id: new_document_id(),
            email: email.to_string(),
            exam: scored.exam,
            score: scored.score,
            total: scored.total,
            percentage: scored.percentage,
            result: scored.result.as_str().to_string(),
            details: scored.details,
            submitted_at: format_timestamp(submitted_at),
            adaptive: None,
            attempt_id: None,
            submitted_by: None,
        }
    }

    /// The document as MongoDB stores it: `_id` an ObjectId, `submitted_at` a BSON date.
    pub fn to_bson(&self) -> Document {
        let mut doc = bson::to_document(self).unwrap_or_default();
        if let Ok(oid) = ObjectId::parse_str(&self.id) {
            doc.insert("_id", oid);
        }
        if let Ok(at) = DateTime::parse_from_rfc3339(&self.submitted_at) {
            doc.insert(
                "submitted_at",
                bson::DateTime::from_millis(at.timestamp_millis()),
            );
        }
        doc
    }

    /// MongoDB relaxed extended JSON text, as Debezium puts it in `after`.
    pub fn to_extended_json(&self) -> String {
        Bson::Document(self.to_bson())
            .into_relaxed_extjson()
            .to_string()
    }

    /// Reads a document back from plain JSON (see [`bson_to_plain_json`]).
    pub fn from_plain_json(value: Value) -> Result<Self, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// Converts BSON to the plain JSON that users see: ObjectIds as hex strings, dates as
/// RFC 3339 strings, 64-bit integers as numbers, decimals and binaries as strings.
pub fn bson_to_plain_json(value: &Bson) -> Value {
    match value {
        Bson::Double(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_plain_json).collect()),
        Bson::Document(doc) => Value::Object(document_to_plain_json(doc)),
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Null | Bson::Undefined | Bson::MaxKey | Bson::MinKey => Value::Null,
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(at) => {
            let millis = at.timestamp_millis();
            match DateTime::<Utc>::from_timestamp_millis(millis) {
                Some(t) => Value::String(format_timestamp(t)),
                None => Value::from(millis),
            }
        }
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Binary(b) => {
            let hex: String = b.bytes.iter().map(|x| format!("{x:02x}")).collect();
            if b.subtype == bson::spec::BinarySubtype::Uuid && hex.len() == 32 {
                // UUIDs read as UUIDs.
                Value::String(format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                ))
            } else {
                Value::String(hex)
            }
        }
        Bson::Timestamp(t) => serde_json::json!({"t": t.time, "i": t.increment}),
        Bson::Symbol(s) | Bson::JavaScriptCode(s) => Value::String(s.clone()),
        other => other.clone().into_relaxed_extjson(),
    }
}

pub fn document_to_plain_json(doc: &Document) -> Map<String, Value> {
    doc.iter()
        .map(|(k, v)| (k.clone(), bson_to_plain_json(v)))
        .collect()
}

/// Rewrites the legacy (v1, "strict mode") extended JSON forms that older Debezium
/// versions emit into the v2 forms the `bson` crate reads: `{"$binary": b64, "$type": t}`,
/// `{"$date": millis}` and `{"$regex": r, "$options": o}`.
fn upgrade_legacy_extended_json(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(upgrade_legacy_extended_json)
                .collect(),
        ),
        Value::Object(map) => {
            if map.len() == 2
                && let (Some(Value::String(b64)), Some(Value::String(subtype))) =
                    (map.get("$binary"), map.get("$type"))
            {
                return serde_json::json!({"$binary": {"base64": b64, "subType": subtype}});
            }
            if map.len() == 1
                && let Some(Value::Number(n)) = map.get("$date")
                && let Some(millis) = n.as_i64()
            {
                return serde_json::json!({"$date": {"$numberLong": millis.to_string()}});
            }
            if map.len() == 2
                && let (Some(Value::String(pattern)), Some(Value::String(options))) =
                    (map.get("$regex"), map.get("$options"))
            {
                return serde_json::json!({"$regularExpression": {"pattern": pattern, "options": options}});
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, upgrade_legacy_extended_json(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// Parses MongoDB extended JSON (v2 canonical or relaxed, or legacy v1, as already
/// decoded JSON) into plain JSON.
pub fn extended_json_to_plain(value: Value) -> Result<Value, String> {
    let bson = Bson::try_from(upgrade_legacy_extended_json(value)).map_err(|e| e.to_string())?;
    Ok(bson_to_plain_json(&bson))
}

#[cfg(test)]
mod tests {
    use super::*;
    use examflow_engine::{Outcome, QuestionMark};

    fn sample() -> ResultDocument {
        let scored = ScoredSubmission {
            exam: "geo".into(),
            score: 1,
            total: 1,
            percentage: 100,
            result: Outcome::Passed,
            details: vec![QuestionMark {
                question: "Q".into(),
                user_answer: "A".into(),
                correct_answer: "A".into(),
                is_correct: true,
                item: "abc".into(),
            }],
        };
        ResultDocument::new("s@example.com", scored, Utc::now())
    }

    #[test]
    fn extended_json_round_trips_to_the_same_document() {
        let doc = sample();
        let ext = doc.to_extended_json();
        assert!(ext.contains("\"$oid\""), "{ext}");
        assert!(ext.contains("\"$date\""), "{ext}");
        let plain = extended_json_to_plain(serde_json::from_str(&ext).unwrap()).unwrap();
        assert_eq!(ResultDocument::from_plain_json(plain).unwrap(), doc);
    }

    #[test]
    fn canonical_extended_json_is_understood() {
        let v: Value = serde_json::from_str(
            r#"{"_id": {"$numberLong": "104"}, "w": {"$numberDouble": "1.5"}, "d": {"$date": {"$numberLong": "0"}}}"#,
        )
        .unwrap();
        let plain = extended_json_to_plain(v).unwrap();
        assert_eq!(plain["_id"], 104);
        assert_eq!(plain["w"], 1.5);
        assert_eq!(plain["d"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn legacy_extended_json_is_understood() {
        let v: Value = serde_json::from_str(
            r#"{"u": {"$binary": "xQezJ8i5QTGDG9NXlVFUEw==", "$type": "04"}, "d": {"$date": 1000}, "r": {"$regex": "^a", "$options": "i"}}"#,
        )
        .unwrap();
        let plain = extended_json_to_plain(v).unwrap();
        assert_eq!(plain["u"], "c507b327-c8b9-4131-831b-d35795515413");
        assert_eq!(plain["d"], "1970-01-01T00:00:01.000Z");
    }
}
