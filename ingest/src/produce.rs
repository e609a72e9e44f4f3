//! `examflow produce-attempts`: loading an attempts file into Kafka, the way the seed did with
//! `jq '.[]' -c | kafkacat -P -t exams`, but keyed (by `keen_id`, so replays of an attempt
//! land in the same partition) and acknowledged.

use std::time::Duration;

use futures::StreamExt;
use rdkafka::producer::FutureRecord;
use serde_json::value::RawValue;

use crate::error::{IngestError, Result};
use crate::kafka::KafkaSettings;

/// Where a document of an input file failed to parse (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct DocumentSyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn syntax(e: &serde_json::Error, line_offset: usize) -> DocumentSyntaxError {
    DocumentSyntaxError {
        line: e.line() + line_offset,
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The documents of a file holding a JSON array of objects, or one JSON object per line.
/// Each document keeps its exact bytes.
pub fn split_documents(text: &str) -> std::result::Result<Vec<&RawValue>, DocumentSyntaxError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let documents: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| syntax(&e, 0))?;
        return Ok(documents);
    }
    let mut documents = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let document: &RawValue = serde_json::from_str(line).map_err(|e| syntax(&e, index))?;
        documents.push(document);
    }
    Ok(documents)
}

/// The `keen_id` of a document, used as the message key when present.
pub fn document_key(document: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key {
        keen_id: Option<String>,
    }
    serde_json::from_str::<Key>(document.get())
        .ok()
        .and_then(|k| k.keen_id)
}

/// Produces every document to `topic`, at most `in_flight` unacknowledged at a time, calling
/// `progress` after each acknowledgement. Returns the number produced.
pub async fn produce_documents(
    settings: &KafkaSettings,
    topic: &str,
    documents: &[&RawValue],
    in_flight: usize,
    progress: impl Fn(u64),
) -> Result<u64> {
    let producer = settings.producer()?;
    let mut sends = futures::stream::iter(documents.iter().map(|document| {
        let producer = producer.clone();
        let key = document_key(document);
        async move {
            let mut record: FutureRecord<'_, str, str> =
                FutureRecord::to(topic).payload(document.get());
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            producer
                .send(record, Duration::from_secs(60))
                .await
                .map(|_| ())
                .map_err(|(e, _)| IngestError::kafka(format!("producing to {topic}"), e))
        }
    }))
    .buffer_unordered(in_flight.max(1));
    let mut produced = 0u64;
    while let Some(result) = sends.next().await {
        result?;
        produced += 1;
        progress(produced);
    }
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_lines_split_into_documents() {
        let array = "[{\"keen_id\": \"a\"}, {\"keen_id\": \"b\", \"x\": [1, 2]}]";
        let docs = split_documents(array).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].get(), "{\"keen_id\": \"b\", \"x\": [1, 2]}");
        assert_eq!(document_key(docs[0]).as_deref(), Some("a"));
        let lines = "{\"keen_id\": \"a\"}\n\n{\"n\": 1}\n";
        let docs = split_documents(lines).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(document_key(docs[1]), None);
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = split_documents("{\"a\": 1}\n{\"b\": }\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 7), "{err}");
        let err = split_documents("[\n {\"a\": 1},\n {\"b\" 2}\n]").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }
}
