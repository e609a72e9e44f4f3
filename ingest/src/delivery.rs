//! Producing records so that one bad record never blocks a stream: errors are classified
//! (a permanent one is reported, a transient one retried until the broker takes the record),
//! records over `[kafka] max_message_bytes` are refused before they are sent, and dead
//! letters always fit (a too-large payload travels as a truncated excerpt with its size and
//! SHA-256; the `dead_letters` tables keep it whole).

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use sha2::{Digest, Sha256};
use tracing::{error, warn};

/// Bytes of a too-large payload that its dead letter carries.
pub const DEAD_LETTER_EXCERPT_BYTES: usize = 16 * 1024;

/// Room left in a record for its key, headers and framing when checking a payload against
/// `[kafka] max_message_bytes` (the producer's `message.max.bytes` is that plus this).
pub const RECORD_OVERHEAD_BYTES: usize = 64 * 1024;

/// Why a record will never be taken, whatever the retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether an error of the broker or of librdkafka will recur on every retry: the record is
/// too large, the topic name is invalid, or the client is not allowed to write. Everything
/// else (time-outs, leaders moving, brokers down, unknown topics still being created) passes.
pub fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRequiredAcks
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidArgument
    )
}

fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// The size check done before a record is handed to librdkafka.
pub fn check_size(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    max_message_bytes: usize,
) -> Result<(), Refused> {
    let size = payload.map_or(0, <[u8]>::len) + key.map_or(0, <[u8]>::len);
    if size > max_message_bytes {
        return Err(Refused(format!(
            "message of {size} bytes is larger than the limit of {max_message_bytes} bytes ([kafka] max_message_bytes)"
        )));
    }
    Ok(())
}

/// Sends one record, retrying transient errors with back-off until the broker takes it.
/// A record over `max_message_bytes`, or one the broker refuses for good, is returned as
/// [`Refused`] at once: the caller sets it aside and moves on.
pub async fn produce_until_acked(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
    max_message_bytes: usize,
) -> Result<(), Refused> {
    check_size(key, payload, max_message_bytes)?;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return Ok(()),
            Err((e, _)) if code_of(&e).is_some_and(is_permanent) => {
                return Err(Refused(format!(
                    "producing to {topic} failed for good: {e}"
                )));
            }
            Err((e, _)) => {
                warn!(%topic, error = %e, "produce failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Headers of a dead letter: why it was set aside and where it came from.
pub fn dead_letter_headers(reason: &str, origin: Origin<'_>) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "examflow.error",
            value: Some(reason),
        })
        .insert(Header {
            key: "examflow.source.topic",
            value: Some(origin.topic),
        })
        .insert(Header {
            key: "examflow.source.partition",
            value: Some(&origin.partition.to_string()),
        })
        .insert(Header {
            key: "examflow.source.offset",
            value: Some(&origin.offset.to_string()),
        })
}

/// What a dead letter carries of a payload: the whole when it fits in `max_message_bytes`,
/// else its first [`DEAD_LETTER_EXCERPT_BYTES`] with the headers `examflow.payload.truncated`,
/// `examflow.payload.bytes` and `examflow.payload.sha256` (hex) added.
pub fn fitting_payload<'a>(
    key: Option<&[u8]>,
    payload: Option<&'a [u8]>,
    headers: OwnedHeaders,
    max_message_bytes: usize,
) -> (Option<&'a [u8]>, OwnedHeaders) {
    match payload {
        Some(p) if check_size(key, Some(p), max_message_bytes).is_err() => {
            let excerpt = DEAD_LETTER_EXCERPT_BYTES
                .min(max_message_bytes.saturating_sub(key.map_or(0, <[u8]>::len)) / 2);
            let headers = headers
                .insert(Header {
                    key: "examflow.payload.truncated",
                    value: Some("true"),
                })
                .insert(Header {
                    key: "examflow.payload.bytes",
                    value: Some(&p.len().to_string()),
                })
                .insert(Header {
                    key: "examflow.payload.sha256",
                    value: Some(&hex::encode(Sha256::digest(p))),
                });
            (Some(&p[..excerpt.min(p.len())]), headers)
        }
        other => (other, headers),
    }
}

/// Produces a dead letter to `dlq_topic`, cut to fit (see [`fitting_payload`]); when the
/// broker refuses the whole payload for good (its topic takes less than examflow does), the
/// excerpt goes instead. A dead letter refused even so is logged and dropped: the stream
/// must move on, and the caller's `dead_letters` table holds the whole message.
pub async fn produce_dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    reason: &str,
    origin: Origin<'_>,
    max_message_bytes: usize,
) {
    // A key too large to send at all goes without it (the headers still say where from).
    let key = key.filter(|k| k.len() <= max_message_bytes / 2);
    let headers = dead_letter_headers(reason, origin);
    let (fitting, fitting_headers) =
        fitting_payload(key, payload, headers.clone(), max_message_bytes);
    let mut result = produce_until_acked(
        producer,
        dlq_topic,
        key,
        fitting,
        Some(fitting_headers),
        max_message_bytes,
    )
    .await;
    if result.is_err()
        && let Some(whole) = fitting.filter(|p| p.len() > DEAD_LETTER_EXCERPT_BYTES)
    {
        let (excerpt, headers) = fitting_payload(key, Some(whole), headers, whole.len() - 1);
        result = produce_until_acked(
            producer,
            dlq_topic,
            key,
            excerpt,
            Some(headers),
            max_message_bytes,
        )
        .await;
    }
    if let Err(refused) = result {
        error!(topic = %dlq_topic, source_topic = %origin.topic, partition = origin.partition, offset = origin.offset, error = %refused, "a dead letter could not be produced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn header(h: &OwnedHeaders, name: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    #[test]
    fn size_errors_and_refusals_are_permanent_outages_are_not() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            assert!(is_permanent(code), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(!is_permanent(code), "{code:?}");
        }
    }

    #[test]
    fn payloads_over_the_limit_are_refused_before_sending() {
        assert!(check_size(Some(b"k"), Some(&[0; 99]), 100).is_ok());
        let refused = check_size(Some(b"k"), Some(&[0; 100]), 100).unwrap_err();
        assert!(refused.0.contains("101 bytes"), "{refused}");
        assert!(check_size(None, None, 0).is_ok());
    }

    #[test]
    fn dead_letters_carry_the_whole_payload_when_it_fits_else_an_excerpt_size_and_hash() {
        let small = b"{\"a\": 1}".to_vec();
        let (payload, headers) =
            fitting_payload(Some(b"k"), Some(&small), OwnedHeaders::new(), 1 << 20);
        assert_eq!(payload, Some(small.as_slice()));
        assert_eq!(header(&headers, "examflow.payload.truncated"), None);

        let big: Vec<u8> = (0..(3usize << 20)).map(|i| (i % 251) as u8).collect();
        let (payload, headers) =
            fitting_payload(Some(b"k"), Some(&big), OwnedHeaders::new(), 1 << 20);
        let payload = payload.unwrap();
        assert_eq!(payload.len(), DEAD_LETTER_EXCERPT_BYTES);
        assert_eq!(payload, &big[..DEAD_LETTER_EXCERPT_BYTES]);
        assert_eq!(
            header(&headers, "examflow.payload.truncated").as_deref(),
            Some("true")
        );
        assert_eq!(
            header(&headers, "examflow.payload.bytes"),
            Some((3usize << 20).to_string())
        );
        assert_eq!(
            header(&headers, "examflow.payload.sha256"),
            Some(hex::encode(Sha256::digest(&big)))
        );
        // A tiny limit still leaves a record that fits.
        let (payload, _) = fitting_payload(Some(b"key"), Some(&big), OwnedHeaders::new(), 2000);
        assert!(payload.unwrap().len() + 3 <= 2000);
    }
}
