//! The score card text of the original exam generator's notification function.
//!
//! It is rendered from a stored result document (plain JSON, after extended-JSON
//! conversion) exactly as the original Python `format_score_card` did, including its
//! fallbacks for missing fields and Python's way of printing values.

use serde_json::Value;

/// Title line of every score card.
pub const SCORE_CARD_TITLE: &str = "Exam-Generator - Score Card";

/// Python's `str()` of a JSON-decoded value, as the original function printed it.
fn py_str(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 => {
                format!("{f:.1}")
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Python truthiness of a JSON-decoded value.
fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn field_or(doc: &Value, key: &str, default: &str) -> String {
    doc.get(key).map_or_else(|| default.to_string(), py_str)
}

/// Renders the score card for one result document.
pub fn format_score_card(doc: &Value) -> String {
    let mut card = card_header(doc);
    card += "Exam Details:\n";
    if let Some(details) = doc.get("details").and_then(Value::as_array) {
        for question in details {
            let user_answer = field_or(question, "user_answer", "N/A");
            let correct_answer = field_or(question, "correct_answer", "N/A");
            let question_text = field_or(question, "question", "N/A");
            let is_correct = if question.get("is_correct").is_some_and(py_truthy) {
                "Correct"
            } else {
                "Incorrect"
            };
            card += &format!("- Question: {question_text}\n");
            card += &format!("  Your Answer: {user_answer} ({is_correct})\n");
            card += &format!("  Correct Answer: {correct_answer}\n\n");
        }
    }
    card
}

/// The card of an exam whose review policy hides the keys: the same header, score and
/// result, and no question, answer or correct answer.
pub fn format_score_card_without_keys(doc: &Value) -> String {
    let mut card = card_header(doc);
    card += "Exam Details: not shown (this exam's review policy hides the answers).\n";
    card
}

/// The title, student, score and result lines of the original template.
fn card_header(doc: &Value) -> String {
    let email = field_or(doc, "email", "No email provided");
    let result = field_or(doc, "result", "Result not available");
    let score = field_or(doc, "score", "Score not available");
    let mut card = format!("{SCORE_CARD_TITLE}\n\n");
    card += &format!("Student: {email}\n");
    card += &format!("Score: {score}\n");
    card += &format!("Result: {}\n\n", result.to_uppercase());
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The original function's template, line for line.
    const EXPECTED: &str = "Exam-Generator - Score Card\n\
\n\
Student: tunisia@gmail.com\n\
Score: 1\n\
Result: FAILED\n\
\n\
Exam Details:\n\
- Question: Which country of those countries located in balkans ?\n\
\x20 Your Answer: Germany (Incorrect)\n\
\x20 Correct Answer: Romania\n\
\n\
- Question: 2+2?\n\
\x20 Your Answer: 4 (Correct)\n\
\x20 Correct Answer: 4\n\
\n";

    #[test]
    fn matches_the_original_template_exactly() {
        let doc = json!({
            "_id": "66a279b8f98a9d0379570575",
            "email": "tunisia@gmail.com",
            "score": 1,
            "result": "failed",
            "details": [
                {"question": "Which country of those countries located in balkans ?", "user_answer": "Germany", "correct_answer": "Romania", "is_correct": false},
                {"question": "2+2?", "user_answer": "4", "correct_answer": "4", "is_correct": true}
            ]
        });
        assert_eq!(format_score_card(&doc), EXPECTED);
        let hidden = format_score_card_without_keys(&doc);
        assert!(hidden.starts_with(&EXPECTED[..EXPECTED.find("Exam Details:").unwrap()]));
        for key in ["Romania", "Germany", "2+2", "Correct Answer"] {
            assert!(!hidden.contains(key), "{key} in {hidden}");
        }
    }

    #[test]
    fn missing_fields_use_the_original_fallbacks() {
        let card = format_score_card(&json!({"details": [{}]}));
        assert_eq!(
            card,
            "Exam-Generator - Score Card\n\nStudent: No email provided\nScore: Score not available\n\
Result: RESULT NOT AVAILABLE\n\nExam Details:\n- Question: N/A\n  Your Answer: N/A (Incorrect)\n  Correct Answer: N/A\n\n"
        );
    }

    #[test]
    fn values_print_as_python_would() {
        assert_eq!(py_str(&json!(3.0)), "3.0");
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!(true)), "True");
        assert!(py_truthy(&json!(1)));
        assert!(!py_truthy(&json!("")));
    }
}
