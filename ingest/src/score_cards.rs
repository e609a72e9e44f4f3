//! The score-card consumer's decision for one change event: the same function serves the
//! Kafka consumer (topic `<prefix>.exams.score` → `email-topic`) and the in-process
//! consumer of the embedded store's outbox.

use std::sync::Arc;

use examflow_engine::score_card::{format_score_card, format_score_card_without_keys};

use crate::debezium::{ChangeEvent, Operation, parse_change_event};

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardDecision {
    /// Send this card, keyed by the document id.
    Send { document_id: String, card: String },
    /// Nothing to send (snapshot read, delete, tombstone, truncate), for this reason.
    Skip { reason: &'static str },
    /// The message cannot be understood: set it aside with this reason.
    DeadLetter { reason: String },
}

/// Whether the card of a result of exam `exam` may show the questions, answers and keys
/// (the exam's review policy, as of now).
pub type KeyPolicy = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A policy that shows every exam's keys (the original behaviour).
pub fn show_all_keys() -> KeyPolicy {
    Arc::new(|_| true)
}

/// Decides what the score-card consumer does with one message (keys always shown).
pub fn decide(key: Option<&[u8]>, value: Option<&[u8]>) -> CardDecision {
    decide_with(key, value, &|_| true)
}

/// Decides what the score-card consumer does with one message; the card leaves out the
/// questions, answers and keys when `shows_keys(exam)` is false.
pub fn decide_with(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    shows_keys: &dyn Fn(&str) -> bool,
) -> CardDecision {
    let change = match parse_change_event(key, value) {
        Ok(ChangeEvent::Change(change)) => change,
        Ok(ChangeEvent::Tombstone { .. }) => {
            return CardDecision::Skip {
                reason: "tombstone",
            };
        }
        Err(e) => {
            return CardDecision::DeadLetter {
                reason: e.to_string(),
            };
        }
    };
    match change.op {
        Operation::Create | Operation::Update => {}
        Operation::Read => {
            return CardDecision::Skip {
                reason: "snapshot read",
            };
        }
        Operation::Delete => return CardDecision::Skip { reason: "delete" },
        Operation::Truncate => return CardDecision::Skip { reason: "truncate" },
    }
    let Some(after) = change.after else {
        // An update without the looked-up full document cannot make a card.
        return CardDecision::DeadLetter {
            reason: format!("{} event without an \"after\" document", change.op.code()),
        };
    };
    if !after.is_object() {
        return CardDecision::DeadLetter {
            reason: "\"after\" is not a document".into(),
        };
    }
    let exam = after
        .get("exam")
        .and_then(|e| e.as_str())
        .unwrap_or_default();
    let card = if shows_keys(exam) {
        format_score_card(&after)
    } else {
        format_score_card_without_keys(&after)
    };
    CardDecision::Send {
        document_id: change.document_id.unwrap_or_default(),
        card,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_updates_make_cards_others_do_not() {
        let after = r#"{\"_id\": {\"$oid\": \"66a279b8f98a9d0379570575\"}, \"email\": \"a@b.c\", \"score\": 2, \"result\": \"passed\", \"details\": []}"#;
        for (op, expect_card) in [("c", true), ("u", true), ("r", false), ("d", false)] {
            let value = format!(r#"{{"after": "{after}", "op": "{op}", "ts_ms": 1}}"#);
            let d = decide(None, Some(value.as_bytes()));
            match d {
                CardDecision::Send { document_id, card } => {
                    assert!(expect_card, "{op}");
                    assert_eq!(document_id, "66a279b8f98a9d0379570575");
                    assert!(card.contains("Student: a@b.c\nScore: 2\nResult: PASSED\n"));
                }
                CardDecision::Skip { .. } => assert!(!expect_card, "{op}"),
                CardDecision::DeadLetter { reason } => panic!("{op}: {reason}"),
            }
        }
        assert_eq!(
            decide(Some(b"{\"id\":\"1\"}"), None),
            CardDecision::Skip {
                reason: "tombstone"
            }
        );
        assert!(matches!(
            decide(None, Some(b"garbage")),
            CardDecision::DeadLetter { .. }
        ));
        assert!(matches!(
            decide(None, Some(br#"{"op": "u", "after": null}"#)),
            CardDecision::DeadLetter { .. }
        ));
    }
}
