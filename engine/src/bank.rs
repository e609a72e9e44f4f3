//! Question banks in the exam generator's format, validated on load.
//!
//! A bank is a JSON array `[{"question": str, "options": [str], "correct_answer": str}]`,
//! each question optionally with `"topic": str` (a content category for adaptive tests);
//! the exam's name is the file stem. Every question gets a stable item id so statistics
//! survive reordering of the file.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::BankError;

/// Largest bank file accepted (a bank of several thousand questions is well below this).
pub const MAX_BANK_BYTES: usize = 16 * 1024 * 1024;

/// One multiple-choice question of a bank, with its stable id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stable id: the question's own `id` when the bank gives one (e.g. the platform's
    /// question id, so ingested attempts' answers match the item), otherwise a hash of the
    /// exam name, the question text and, for repeated texts, the occurrence number of that
    /// text within the bank.
    pub id: String,
    pub question: String,
    pub options: Vec<String>,
    pub correct_answer: String,
    /// Optional content category (for content balancing in adaptive tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl Item {
    /// Index of `correct_answer` among the options (validated to exist on load).
    pub fn correct_index(&self) -> usize {
        self.options
            .iter()
            .position(|o| *o == self.correct_answer)
            .unwrap_or_default()
    }
}

/// A validated exam: its name (the file stem) and its items in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bank {
    pub name: String,
    pub items: Vec<Item>,
}

/// A question as it appears in the file; every field optional so that a missing one gets
/// a precise error instead of serde's generic message.
#[derive(Deserialize)]
struct RawQuestion {
    id: Option<serde_json::Value>,
    question: Option<serde_json::Value>,
    options: Option<serde_json::Value>,
    correct_answer: Option<serde_json::Value>,
    topic: Option<serde_json::Value>,
}

/// An exam name must be usable in a URL path segment and as a file stem.
pub fn validate_exam_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err("exam name must be 1 to 200 characters".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')))
    {
        return Err(format!(
            "exam name contains the character {bad:?}; use letters, digits, '-', '_', '.' or spaces"
        ));
    }
    if name.starts_with('.') {
        return Err("exam name must not start with '.'".into());
    }
    Ok(())
}

/// Longest explicit item id a bank may give.
pub const MAX_ITEM_ID_BYTES: usize = 200;

/// Stable item id: 16 hex digits of SHA-256 over (exam, question text, occurrence).
pub fn item_id(exam: &str, question: &str, occurrence: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(exam.as_bytes());
    hasher.update([0u8]);
    hasher.update(question.as_bytes());
    if occurrence > 0 {
        hasher.update([0u8]);
        hasher.update(occurrence.to_string().as_bytes());
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Bank {
    /// Parses and validates a bank file's bytes. `file` names the file in errors.
    pub fn parse(exam: &str, file: &str, bytes: &[u8]) -> Result<Bank, BankError> {
        let at = |index: Option<usize>, message: String| BankError {
            file: file.to_string(),
            index,
            line: None,
            column: None,
            message,
        };
        validate_exam_name(exam).map_err(|m| at(None, m))?;
        if bytes.len() > MAX_BANK_BYTES {
            return Err(at(
                None,
                format!(
                    "file is {} bytes, larger than the limit of {MAX_BANK_BYTES} bytes",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| at(None, format!("not valid UTF-8 at byte {}", e.valid_up_to())))?;
        let raw: Vec<RawQuestion> = serde_json::from_str(text).map_err(|e| BankError {
            file: file.to_string(),
            index: None,
            line: Some(e.line()),
            column: Some(e.column()),
            message: format!("invalid bank JSON (expected an array of questions): {e}"),
        })?;
        if raw.is_empty() {
            return Err(at(None, "the bank has no questions".into()));
        }
        let mut occurrences: HashMap<String, usize> = HashMap::new();
        let mut ids: HashSet<String> = HashSet::new();
        let mut items = Vec::with_capacity(raw.len());
        for (index, q) in raw.into_iter().enumerate() {
            let err = |m: String| at(Some(index), m);
            let question = match q.question {
                None => return Err(err("missing field \"question\"".into())),
                Some(serde_json::Value::String(s)) => s,
                Some(_) => return Err(err("\"question\" must be a string".into())),
            };
            if question.trim().is_empty() {
                return Err(err("question text is empty".into()));
            }
            let options: Vec<String> = match q.options {
                None => return Err(err("missing field \"options\"".into())),
                Some(serde_json::Value::Array(values)) => values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        serde_json::Value::String(s) => Ok(s),
                        _ => Err(err(format!("option {i} must be a string"))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(err("\"options\" must be an array of strings".into())),
            };
            if options.len() < 2 {
                return Err(err(format!(
                    "a question needs at least 2 options, found {}",
                    options.len()
                )));
            }
            if let Some(i) = options.iter().position(|o| o.trim().is_empty()) {
                return Err(err(format!("option {i} is empty")));
            }
            let mut seen = HashSet::new();
            if let Some(dup) = options.iter().find(|o| !seen.insert(o.as_str())) {
                return Err(err(format!("duplicate option {dup:?}")));
            }
            let correct_answer = match q.correct_answer {
                None => return Err(err("missing field \"correct_answer\"".into())),
                Some(serde_json::Value::String(s)) => s,
                Some(_) => return Err(err("\"correct_answer\" must be a string".into())),
            };
            if !options.contains(&correct_answer) {
                return Err(err(format!(
                    "correct_answer {correct_answer:?} is not among the options"
                )));
            }
            let topic = match q.topic {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s),
                Some(_) => return Err(err("\"topic\" must be a non-empty string".into())),
            };
            let occurrence = occurrences.entry(question.clone()).or_default();
            let id = match q.id {
                None | Some(serde_json::Value::Null) => item_id(exam, &question, *occurrence),
                Some(serde_json::Value::String(s))
                    if !s.trim().is_empty() && s.len() <= MAX_ITEM_ID_BYTES =>
                {
                    s
                }
                Some(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                Some(_) => {
                    return Err(err(format!(
                        "\"id\" must be a non-empty string of at most {MAX_ITEM_ID_BYTES} bytes or an integer"
                    )));
                }
            };
            *occurrence += 1;
            if !ids.insert(id.clone()) {
                return Err(err(format!("id {id:?} is used by an earlier question")));
            }
            items.push(Item {
                id,
                question,
                options,
                correct_answer,
                topic,
            });
        }
        Ok(Bank {
            name: exam.to_string(),
            items,
        })
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Bank, BankError> {
        Bank::parse("demo", "demo.json", json.as_bytes())
    }

    const GOOD: &str = r#"[
        {"question": "2+2?", "options": ["3", "4"], "correct_answer": "4"},
        {"question": "Capital of France?", "options": ["Paris", "Rome", "Oslo"], "correct_answer": "Paris"}
    ]"#;

    #[test]
    fn parses_a_good_bank_with_stable_ids() {
        let bank = parse(GOOD).unwrap();
        assert_eq!(bank.items.len(), 2);
        assert_eq!(bank.items[1].correct_index(), 0);
        assert_eq!(bank.items[0].id, item_id("demo", "2+2?", 0));
        assert_eq!(bank.items[0].id.len(), 16);
        // Reordering the file keeps each question's id.
        let reordered = r#"[
            {"question": "Capital of France?", "options": ["Paris", "Rome", "Oslo"], "correct_answer": "Paris"},
            {"question": "2+2?", "options": ["3", "4"], "correct_answer": "4"}
        ]"#;
        let other = parse(reordered).unwrap();
        assert_eq!(other.items[1].id, bank.items[0].id);
        assert_eq!(other.items[0].id, bank.items[1].id);
        // Another exam with the same question text gets another id.
        assert_ne!(item_id("other", "2+2?", 0), bank.items[0].id);
    }

    #[test]
    fn repeated_question_texts_get_distinct_ids() {
        let bank = parse(
            r#"[{"question": "Q", "options": ["a", "b"], "correct_answer": "a"},
                {"question": "Q", "options": ["c", "d"], "correct_answer": "d"}]"#,
        )
        .unwrap();
        assert_ne!(bank.items[0].id, bank.items[1].id);
    }

    #[test]
    fn explicit_ids_are_kept_checked_and_unique() {
        let bank = parse(
            r#"[{"id": "7a2ed6d3-f492", "question": "Q1", "options": ["a", "b"], "correct_answer": "a"},
                {"id": 42, "question": "Q2", "options": ["a", "b"], "correct_answer": "a"},
                {"question": "Q3", "options": ["a", "b"], "correct_answer": "a"}]"#,
        )
        .unwrap();
        assert_eq!(bank.items[0].id, "7a2ed6d3-f492");
        assert_eq!(bank.items[1].id, "42");
        assert_eq!(bank.items[2].id, item_id("demo", "Q3", 0));
        let twice = error_of(
            r#"[{"id": "x", "question": "Q1", "options": ["a", "b"], "correct_answer": "a"},
                {"id": "x", "question": "Q2", "options": ["a", "b"], "correct_answer": "a"}]"#,
        );
        assert_eq!(twice.index, Some(1));
        assert!(twice.message.contains("earlier question"), "{twice}");
        let empty = error_of(
            r#"[{"id": " ", "question": "Q1", "options": ["a", "b"], "correct_answer": "a"}]"#,
        );
        assert!(empty.message.contains("\"id\""), "{empty}");
        let float = error_of(
            r#"[{"id": 1.5, "question": "Q1", "options": ["a", "b"], "correct_answer": "a"}]"#,
        );
        assert_eq!(float.index, Some(0));
    }

    fn error_of(json: &str) -> BankError {
        parse(json).unwrap_err()
    }

    #[test]
    fn validation_errors_name_the_question_index() {
        let e = error_of(
            r#"[{"question": "ok", "options": ["a","b"], "correct_answer": "a"}, {"options": ["a","b"], "correct_answer": "a"}]"#,
        );
        assert_eq!(e.index, Some(1));
        assert!(e.message.contains("missing field \"question\""), "{e}");
        assert!(e.to_string().contains("demo.json"), "{e}");
        assert!(e.to_string().contains("question 1"), "{e}");

        let e = error_of(r#"[{"question": "q", "options": ["a","a"], "correct_answer": "a"}]"#);
        assert!(e.message.contains("duplicate option"), "{e}");
        let e = error_of(r#"[{"question": "q", "options": ["a",""], "correct_answer": "a"}]"#);
        assert!(e.message.contains("option 1 is empty"), "{e}");
        let e = error_of(r#"[{"question": "q", "options": [], "correct_answer": "a"}]"#);
        assert!(e.message.contains("at least 2 options"), "{e}");
        let e = error_of(r#"[{"question": "q", "options": ["a","b"], "correct_answer": "c"}]"#);
        assert!(e.message.contains("not among the options"), "{e}");
        let e = error_of(r#"[{"question": "  ", "options": ["a","b"], "correct_answer": "a"}]"#);
        assert!(e.message.contains("question text is empty"), "{e}");
        let e = error_of(r#"[{"question": "q", "options": ["a","b"]}]"#);
        assert!(e.message.contains("correct_answer"), "{e}");
        let e = error_of(r#"[{"question": "q", "correct_answer": "a"}]"#);
        assert!(e.message.contains("\"options\""), "{e}");
        let e = error_of(r#"[{"question": "q", "options": ["a", 3], "correct_answer": "a"}]"#);
        assert!(e.message.contains("option 1 must be a string"), "{e}");
        let e = error_of("[]");
        assert!(e.message.contains("no questions"), "{e}");
    }

    #[test]
    fn invalid_json_utf8_and_size_are_reported() {
        let e = error_of("[{\"question\": \"q\",\n  \"options\": [\"a\" \"b\"]}]");
        assert_eq!(e.line, Some(2));
        assert!(e.column.is_some());
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Bank::parse("demo", "demo.json", b"[\xff]").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{e}");
        let big = vec![b' '; MAX_BANK_BYTES + 1];
        let e = Bank::parse("demo", "demo.json", &big).unwrap_err();
        assert!(e.message.contains("larger than the limit"), "{e}");
        let e = Bank::parse("../etc", "x.json", GOOD.as_bytes()).unwrap_err();
        assert!(e.message.contains("exam name"), "{e}");
    }
}
